//! # warden-sync: replicated state between warden nodes
//!
//! What nodes share: shared pools as bounded counters with escrow ([`escrow`]: each node
//! spends only rights it holds, so Σ spent ≤ limit holds under any partition), the halt set
//! as an add-wins set keyed by (agent, epoch), policy versions as registers, gossiped audit
//! heads, and the QUIC transport (quinn + rustls, mutual TLS) with a versioned wire format.
//!
//! | module | owns |
//! |---|---|
//! | [`escrow`] | one replicated pool dimension: the bounded counter with rights, caps, reclamation |
//! | [`halts`], [`policy`], [`heads`], [`registry`] | the halt set, the policy register, audit heads, agents |
//! | [`replica`] | the sans-IO protocol core: state, anti-entropy, escrow work, events |
//! | [`wire`] | the messages and their encoding through [`codec`] |
//! | [`codec`] | one frame per message, a protocol version, bincode 2 |
//! | [`certs`] | the cluster CA and node certificates (`warden certs init|issue`) |
//! | [`transport`] | QUIC with mutual TLS, Hello, limits, reconnection |
//! | [`limits`] | every bound of sync |

#![warn(missing_docs)]

pub mod certs;
pub mod codec;
pub mod escrow;
pub mod halts;
pub mod heads;
pub mod limits;
pub mod members;
pub mod policy;
pub mod registry;
pub mod replica;
pub mod transport;
pub mod wire;

pub use escrow::{Ask, Escrow, EscrowError, Grant};
pub use members::{Members, MembersError, NodeIx};
pub use replica::{LocalLedger, Output, Replica, SyncConfig, SyncEvent};
pub use wire::{Item, Message};
