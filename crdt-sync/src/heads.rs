//! Gossiped audit heads: each node's journal head (sequence number, chain hash), so a node
//! whose journal contradicts what it said before is caught by its peers.
//!
//! Three checks, each an [`AuditAlarm`] (event and metric `warden_sync_audit_alarms_total`):
//! - **rewritten**: two different hashes for the same sequence number of one node, whether
//!   heard from the node itself or relayed;
//! - **rewound**: a node's own claim goes below a sequence number it claimed before;
//! - **probe mismatch**: a peer keeps a few of a node's earlier claims and asks the node, from
//!   time to time, for its hash at one of them ([`Heads::probe`]); a different answer means the
//!   journal was rewritten below its head. A node that no longer has the entry (retention
//!   removed its segment) answers "unknown", which is not an alarm.
//!
//! The head register per node is a max by sequence number, a join semilattice; the alarms are
//! local observations, never merged.

use serde::{Deserialize, Serialize};

use crate::members::NodeIx;

/// Earlier claims kept per node for probes.
pub const CLAIMS_KEPT: usize = 16;

/// A journal head.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditHead {
    /// The last entry's sequence number.
    pub seq: u64,
    /// Its chain hash (BLAKE3).
    pub hash: [u8; 32],
}

/// A node whose journal contradicts what it said before.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditAlarm {
    /// The node.
    pub node: NodeIx,
    /// What was seen, for the log line and the event.
    pub reason: String,
}

/// Every node's last known head, and the claims kept for probing.
#[derive(Debug, Clone, Default)]
pub struct Heads {
    heads: Vec<Option<AuditHead>>,
    claims: Vec<Vec<AuditHead>>,
    highest_claim: Vec<u64>,
    next_probe: usize,
}

fn short(hash: &[u8; 32]) -> String {
    hash[..6].iter().map(|b| format!("{b:02x}")).collect()
}

impl Heads {
    /// Heads for `n` members.
    pub fn new(n: usize) -> Self {
        Self {
            heads: vec![None; n],
            claims: vec![Vec::new(); n],
            highest_claim: vec![0; n],
            next_probe: 0,
        }
    }

    /// The last known head of `node`.
    pub fn head(&self, node: NodeIx) -> Option<AuditHead> {
        self.heads.get(usize::from(node)).copied().flatten()
    }

    /// Merges a head of `node` (own, relayed, or the node's own claim). Returns whether the
    /// register moved, or the alarm when it contradicts a head known for the same sequence.
    pub fn merge(&mut self, node: NodeIx, head: AuditHead) -> Result<bool, AuditAlarm> {
        let slot = &mut self.heads[usize::from(node)];
        match slot {
            Some(known) if known.seq == head.seq && known.hash != head.hash => Err(AuditAlarm {
                node,
                reason: format!(
                    "two hashes for entry {}: {} and {}",
                    head.seq,
                    short(&known.hash),
                    short(&head.hash)
                ),
            }),
            Some(known) if known.seq >= head.seq => Ok(false),
            _ => {
                *slot = Some(head);
                Ok(true)
            }
        }
    }

    /// A claim `node` made about itself, directly: merged, checked against its earlier
    /// claims, and kept for probes.
    pub fn claim(&mut self, node: NodeIx, head: AuditHead) -> Result<bool, AuditAlarm> {
        let i = usize::from(node);
        if head.seq < self.highest_claim[i] {
            return Err(AuditAlarm {
                node,
                reason: format!(
                    "its journal went back from entry {} to entry {}",
                    self.highest_claim[i], head.seq
                ),
            });
        }
        if let Some(old) = self.claims[i].iter().find(|c| c.seq == head.seq) {
            if old.hash != head.hash {
                return Err(AuditAlarm {
                    node,
                    reason: format!("entry {} changed hash", head.seq),
                });
            }
        }
        let moved = self.merge(node, head)?;
        if head.seq > self.highest_claim[i] {
            self.highest_claim[i] = head.seq;
            self.keep(i, head);
        }
        Ok(moved)
    }

    /// Keeps a claim: the newest [`CLAIMS_KEPT`], thinned so older ones stay spread out.
    fn keep(&mut self, i: usize, head: AuditHead) {
        let kept = &mut self.claims[i];
        kept.push(head);
        if kept.len() > CLAIMS_KEPT {
            // Drop the one closest to its older neighbour: keeps a spread of ages.
            let at = (1..kept.len() - 1)
                .min_by_key(|&k| kept[k].seq - kept[k - 1].seq)
                .unwrap_or(0);
            kept.remove(at);
        }
    }

    /// The next probe to send: a node and one of its earlier claimed sequence numbers,
    /// round-robin over the nodes (never `me`).
    pub fn probe(&mut self, me: NodeIx) -> Option<(NodeIx, u64)> {
        let n = self.claims.len();
        for _ in 0..n {
            let i = self.next_probe % n;
            self.next_probe = self.next_probe.wrapping_add(1);
            if i == usize::from(me) || self.claims[i].is_empty() {
                continue;
            }
            let kept = &self.claims[i];
            let pick = kept[self.next_probe / n % kept.len()];
            return Some((i as NodeIx, pick.seq));
        }
        None
    }

    /// Checks a node's answer to a probe; `None` (it no longer has the entry) passes.
    pub fn check_proof(
        &self,
        node: NodeIx,
        seq: u64,
        hash: Option<[u8; 32]>,
    ) -> Result<(), AuditAlarm> {
        let claimed = self.claims[usize::from(node)].iter().find(|c| c.seq == seq);
        match (claimed, hash) {
            (Some(c), Some(h)) if c.hash != h => Err(AuditAlarm {
                node,
                reason: format!(
                    "entry {seq} now has hash {}, it said {} before",
                    short(&h),
                    short(&c.hash)
                ),
            }),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(seq: u64, b: u8) -> AuditHead {
        AuditHead { seq, hash: [b; 32] }
    }

    #[test]
    fn a_rewritten_rewound_or_probed_journal_raises_an_alarm() {
        let mut heads = Heads::new(2);
        assert_eq!(heads.claim(1, h(10, 1)), Ok(true));
        assert_eq!(heads.claim(1, h(20, 2)), Ok(true));
        assert_eq!(
            heads.merge(1, h(15, 9)),
            Ok(false),
            "a stale relay is no alarm"
        );
        assert!(heads.merge(1, h(20, 3)).is_err(), "two hashes for 20");
        assert!(heads.claim(1, h(12, 4)).is_err(), "went back from 20");
        let (node, seq) = heads.probe(0).unwrap();
        assert_eq!(node, 1);
        assert!([10, 20].contains(&seq));
        assert!(heads.check_proof(1, 10, Some([1; 32])).is_ok());
        assert!(
            heads.check_proof(1, 10, None).is_ok(),
            "removed by retention"
        );
        let alarm = heads.check_proof(1, 10, Some([7; 32])).unwrap_err();
        assert!(alarm.reason.contains("entry 10"), "{}", alarm.reason);
    }

    #[test]
    fn kept_claims_are_bounded_and_spread_out() {
        let mut heads = Heads::new(2);
        for seq in 1..=1_000 {
            heads.claim(1, h(seq, 0)).unwrap();
        }
        let kept = &heads.claims[1];
        assert_eq!(kept.len(), CLAIMS_KEPT);
        assert_eq!(kept.last().unwrap().seq, 1_000);
        assert!(kept[0].seq < 100, "old claims stay: {:?}", kept[0]);
    }
}

#[cfg(test)]
mod laws {
    use proptest::prelude::*;

    use super::*;

    // The head register of one node as a max by sequence number over one true journal
    // (hash = f(seq)): any order of merges gives the same head.
    proptest! {
        #[test]
        fn merge_is_commutative_associative_and_idempotent(seqs in prop::collection::vec(0..100u64, 1..12)) {
            let head = |s: u64| AuditHead { seq: s, hash: [(s % 251) as u8; 32] };
            let fold = |order: &[u64]| {
                let mut h = Heads::new(2);
                for &s in order {
                    h.merge(1, head(s)).unwrap();
                }
                h.head(1)
            };
            let mut reversed = seqs.clone();
            reversed.reverse();
            let mut doubled = seqs.clone();
            doubled.extend(seqs.iter().copied());
            let max = *seqs.iter().max().unwrap();
            prop_assert_eq!(fold(&seqs), Some(head(max)));
            prop_assert_eq!(fold(&reversed), Some(head(max)));
            prop_assert_eq!(fold(&doubled), Some(head(max)));
        }
    }
}
