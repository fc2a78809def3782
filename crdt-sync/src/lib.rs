//! # warden-sync: replicated state between warden nodes
//!
//! This crate will own what nodes share: shared pools as bounded counters with escrow (each
//! node spends only rights it holds, so Σ spent ≤ limit holds under any partition), the halt set
//! as an add-wins set keyed by (agent, epoch), policy versions as registers, gossiped audit
//! heads, and the QUIC transport (quinn + rustls, mutual TLS) with a versioned wire format.
//!
//! It is empty until the replication issue lands; the kernel's [`warden_actors::Amounts`] is the
//! unit it will replicate.

#![warn(missing_docs)]

/// The version of the replication wire format this build speaks (none is defined yet).
pub const WIRE_VERSION: u16 = 0;
