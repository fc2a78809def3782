//! # warden-sync: replicated state between warden nodes
//!
//! What nodes share: shared pools as bounded counters with escrow ([`escrow`]: each node
//! spends only rights it holds, so Σ spent ≤ limit holds under any partition), the halt set
//! as an add-wins set keyed by (agent, epoch), policy versions as registers, gossiped audit
//! heads, and the QUIC transport (quinn + rustls, mutual TLS) with a versioned wire format.

#![warn(missing_docs)]

pub mod escrow;
pub mod halts;
pub mod heads;
pub mod members;
pub mod policy;
pub mod registry;
pub mod replica;
pub mod wire;

pub use escrow::{Ask, Escrow, EscrowError, Grant};
pub use members::{Members, MembersError, NodeIx};
pub use replica::{LocalLedger, Output, Replica, SyncConfig, SyncEvent};
pub use wire::{Item, Message};

/// The version of the replication wire format this build speaks (none is defined yet).
pub const WIRE_VERSION: u16 = 0;
