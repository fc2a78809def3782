//! The messages nodes exchange (encoded by the codec module, one frame each).
//!
//! Anti-entropy is delta-state (Almeida, Shoker, Baquero, "Delta state replicated data types",
//! 2018) with acknowledgements: every change to a replicated item takes the next value of the
//! sender's local **tick**; a [`Message::Delta`] carries the current state of every item whose
//! last change lies in `(from, upto]`, and the receiver acknowledges the highest `upto` up to
//! which it has received every delta without a gap. Unacknowledged ranges are sent again after
//! a timeout. Items are join-semilattice states (or their per-key parts), so receiving one
//! twice, late or out of order changes nothing.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::codec::{self, CodecError};

use crate::escrow::Escrow;
use crate::halts::AgentHalts;
use crate::heads::AuditHead;
use crate::members::NodeIx;
use crate::policy::PolicyRegister;
use crate::registry::AgentEntry;

/// One message between two nodes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Message {
    /// The first message on every connection, both ways.
    Hello {
        /// The sender's node name (also in its certificate).
        node: String,
        /// The sender's session: a new one at every start, so ticks restart safely.
        session: u64,
        /// BLAKE3 of the cluster's shape (members, replicated pools and limits): peers with
        /// another shape refuse to sync rather than split budgets two ways.
        digest: [u8; 32],
        /// "Send me your Hello": set when a message arrived on a link whose Hello is missing.
        reply: bool,
    },
    /// Every item that changed in `(from, upto]` of the sender's ticks.
    Delta {
        /// The sender's session.
        session: u64,
        /// Exclusive start of the range.
        from: u64,
        /// Inclusive end of the range.
        upto: u64,
        /// The items, each with its whole current state.
        items: Vec<Item>,
    },
    /// Everything up to `upto` of the receiver's session `session` was received.
    Ack {
        /// The session acknowledged (the receiver's of the deltas).
        session: u64,
        /// The tick acknowledged.
        upto: u64,
    },
    /// "What is your journal's hash at `seq`?" (see [`crate::heads`]).
    Probe {
        /// The sequence number asked about.
        seq: u64,
    },
    /// The answer to a probe; `None` when the entry is no longer kept.
    Proof {
        /// The sequence number asked about.
        seq: u64,
        /// The chain hash there.
        hash: Option<[u8; 32]>,
    },
}

/// One replicated item.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Item {
    /// One replicated pool dimension.
    Escrow {
        /// The pool's path.
        pool: String,
        /// The dimension's key (`steps`, `tokens`, `cost_usd`, `risk` or a custom one).
        dim: String,
        /// Its state.
        state: Escrow,
    },
    /// One agent's halt epochs.
    Halts {
        /// The agent id.
        agent: String,
        /// Its entry.
        set: AgentHalts,
    },
    /// The policy register.
    Policy(PolicyRegister),
    /// A node's audit head.
    Head {
        /// Whose.
        node: NodeIx,
        /// The head.
        head: AuditHead,
    },
    /// One agent's registration.
    Agent {
        /// The agent id.
        id: String,
        /// Where it lives.
        entry: AgentEntry,
    },
}

/// Where an item lives in a replica: the key changes are tracked by.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ItemKey {
    /// A pool dimension.
    Escrow(String, String),
    /// An agent's halts.
    Halts(String),
    /// The policy register.
    Policy,
    /// A node's head.
    Head(NodeIx),
    /// An agent's registration.
    Agent(String),
}

impl Item {
    /// A generous estimate of the item's encoded size, bytes (every integer at its widest
    /// varint, every dot with a whole clock), used to split deltas below the message limit.
    pub fn size_hint(&self) -> usize {
        match self {
            Item::Escrow { pool, dim, state } => {
                let n = state.members();
                64 + pool.len() + dim.len() + n * n * 10 + n * 80
            }
            Item::Halts { agent, set } => {
                let clock = set.clock().iter().count();
                let epochs = set.read().val.len();
                64 + agent.len() + (clock + 1) * 12 * (2 + 2 * epochs)
            }
            Item::Policy(reg) => {
                reg.values()
                    .iter()
                    .map(|v| 256 + v.text.len() + v.digest.len())
                    .sum::<usize>()
                    + 64
            }
            Item::Head { .. } => 64,
            Item::Agent { id, entry } => 64 + id.len() + entry.pool.len(),
        }
    }
}

/// Encodes a message as one codec frame (bincode through serde: the replicated types, and the
/// `crdts` types inside them, are serde types).
///
/// # Errors
/// [`CodecError::TooLarge`] past the message limit, [`CodecError::Encode`].
pub fn encode_message(msg: &Message) -> Result<Bytes, CodecError> {
    codec::encode(&bincode::serde::Compat(msg))
}

/// Decodes one codec frame into a message. Nothing a peer sends can panic here: every
/// length is checked against the frame (see `codec`), and a message that decodes but has
/// the wrong shape for this node is refused later, before it is merged.
///
/// # Errors
/// Every [`CodecError`]: size, magic, version, malformed body, trailing bytes.
pub fn decode_message(frame: &[u8]) -> Result<Message, CodecError> {
    codec::decode::<bincode::serde::Compat<Message>>(frame).map(|c| c.0)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::escrow::Escrow;

    fn sample() -> Message {
        Message::Delta {
            session: 7,
            from: 1,
            upto: 9,
            items: vec![
                Item::Escrow {
                    pool: "swarm".into(),
                    dim: "tokens".into(),
                    state: Escrow::new(1_000, 3, 1000),
                },
                Item::Halts {
                    agent: "a1".into(),
                    set: AgentHalts::default(),
                },
            ],
        }
    }

    #[test]
    fn a_message_survives_the_codec() {
        let msg = sample();
        let frame = encode_message(&msg).unwrap();
        assert_eq!(decode_message(&frame).unwrap(), msg);
    }

    proptest! {
        #[test]
        fn garbage_and_damaged_frames_never_panic(
            bytes in prop::collection::vec(any::<u8>(), 0..2048),
            flip in any::<prop::sample::Index>(),
            cut in any::<prop::sample::Index>(),
        ) {
            let _ = decode_message(&bytes);
            let frame = encode_message(&sample()).unwrap().to_vec();
            let mut flipped = frame.clone();
            let i = flip.index(flipped.len());
            flipped[i] ^= 0x5a;
            let _ = decode_message(&flipped);
            let _ = decode_message(&frame[..cut.index(frame.len())]);
            let mut framed = frame[..crate::codec::HEADER_BYTES].to_vec();
            framed.extend_from_slice(&bytes);
            let _ = decode_message(&framed);
        }
    }
}
