//! # warden-sync: replicated state between warden nodes
//!
//! This crate will own what nodes share: shared pools as bounded counters with escrow (each
//! node spends only rights it holds, so Σ spent ≤ limit holds under any partition), the halt set
//! as an add-wins set keyed by (agent, epoch), policy versions as registers, gossiped audit
//! heads, and the QUIC transport (quinn + rustls, mutual TLS) with a versioned wire format.
//!
//! The kernel's [`warden_actors::Amounts`] is the unit it will replicate. Here so far: the
//! wire format ([`codec`]: one frame per message, a protocol version, bincode 2), the cluster's
//! certificates ([`certs`]: `warden certs init|issue`), the QUIC transport ([`transport`]:
//! mutual TLS, Hello, limits, reconnection) and every bound of sync ([`limits`]).

#![warn(missing_docs)]

pub mod certs;
pub mod codec;
pub mod limits;
pub mod transport;
