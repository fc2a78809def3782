//! The replicated halt set: an add-wins set of epochs per agent (an `Orswot` of the `crdts`
//! crate, after riak_dt), so a halt anywhere is a halt everywhere.
//!
//! A halt is keyed by (agent, epoch); the node that halts chooses the epoch, unique in the
//! cluster (warden uses `journal seq << 16 | node index`). An audited resume removes exactly
//! the epochs it names — the ones its node had seen — so a halt made concurrently elsewhere
//! (a new epoch) survives it, and a resume racing a re-add of the same epoch loses (add wins).
//! The set is kept per agent, so a change ships only that agent's entry.

use std::collections::BTreeMap;

use crdts::{CmRDT, CvRDT, Orswot};

use crate::members::NodeIx;

/// One agent's halt epochs.
pub type AgentHalts = Orswot<u64, NodeIx>;

/// What merging one agent's entry changed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct HaltChange {
    /// Epochs present now that were not before.
    pub added: Vec<u64>,
    /// Epochs gone now that were present before.
    pub cleared: Vec<u64>,
}

impl HaltChange {
    /// Whether nothing changed.
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.cleared.is_empty()
    }
}

/// Why a peer's halt entry was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the halt entry of agent `{agent}` contradicts this node's (a dot used twice): {detail}")]
pub struct HaltMergeError {
    /// The agent.
    pub agent: String,
    /// What `crdts` reported.
    pub detail: String,
}

/// Every agent's halt epochs.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct HaltSet {
    agents: BTreeMap<String, AgentHalts>,
}

fn epochs(set: &AgentHalts) -> Vec<u64> {
    let mut v: Vec<u64> = set.read().val.into_iter().collect();
    v.sort_unstable();
    v
}

impl HaltSet {
    /// Adds the halt (`agent`, `epoch`) as node `me`. Returns whether it was new.
    pub fn halt(&mut self, me: NodeIx, agent: &str, epoch: u64) -> bool {
        let set = self.agents.entry(agent.to_owned()).or_default();
        if set.contains(&epoch).val {
            return false;
        }
        let op = set.add(epoch, set.read_ctx().derive_add_ctx(me));
        set.apply(op);
        true
    }

    /// Removes exactly `epochs` of `agent` (an audited resume). Returns the epochs removed.
    pub fn resume(&mut self, agent: &str, epochs_named: &[u64]) -> Vec<u64> {
        let Some(set) = self.agents.get_mut(agent) else {
            return Vec::new();
        };
        let mut removed = Vec::new();
        for &epoch in epochs_named {
            let read = set.contains(&epoch);
            if read.val {
                let op = set.rm(epoch, read.derive_rm_ctx());
                set.apply(op);
                removed.push(epoch);
            }
        }
        removed
    }

    /// The epochs that hold `agent` halted, ascending (empty: not halted by the cluster).
    pub fn epochs(&self, agent: &str) -> Vec<u64> {
        self.agents.get(agent).map(epochs).unwrap_or_default()
    }

    /// The entry of one agent, to ship to a peer.
    pub fn entry(&self, agent: &str) -> Option<&AgentHalts> {
        self.agents.get(agent)
    }

    /// Merges a peer's entry for `agent` and says which epochs appeared or went away.
    ///
    /// # Errors
    /// An entry that reuses one of this node's dots for another epoch (only a corrupt or
    /// hostile peer sends one); nothing is merged then.
    pub fn merge_entry(
        &mut self,
        agent: &str,
        theirs: AgentHalts,
    ) -> Result<HaltChange, HaltMergeError> {
        let set = self.agents.entry(agent.to_owned()).or_default();
        set.validate_merge(&theirs).map_err(|e| HaltMergeError {
            agent: agent.to_owned(),
            detail: e.to_string(),
        })?;
        let before = epochs(set);
        set.merge(theirs);
        let after = epochs(set);
        Ok(HaltChange {
            added: after
                .iter()
                .filter(|e| !before.contains(e))
                .copied()
                .collect(),
            cleared: before
                .iter()
                .filter(|e| !after.contains(e))
                .copied()
                .collect(),
        })
    }

    /// The agents with an entry (halted now or once), in id order.
    pub fn agents(&self) -> impl Iterator<Item = &str> {
        self.agents.keys().map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn a_halt_anywhere_is_a_halt_everywhere_and_a_resume_clears_only_what_it_names() {
        let (mut a, mut b) = (HaltSet::default(), HaltSet::default());
        a.halt(0, "x", 10);
        let change = b.merge_entry("x", a.entry("x").unwrap().clone()).unwrap();
        assert_eq!(change.added, [10]);
        // b resumes epoch 10 while a halts again with epoch 11: the new halt survives.
        assert_eq!(b.resume("x", &[10]), [10]);
        a.halt(0, "x", 11);
        let ea = a.entry("x").unwrap().clone();
        let eb = b.entry("x").unwrap().clone();
        let into_a = a.merge_entry("x", eb).unwrap();
        assert_eq!(into_a.cleared, [10]);
        assert_eq!(b.merge_entry("x", ea).unwrap().added, [11]);
        assert_eq!(a.epochs("x"), [11]);
        assert_eq!(b.epochs("x"), [11]);
    }

    #[test]
    fn a_resume_racing_a_re_add_of_the_same_epoch_loses() {
        let (mut a, mut b) = (HaltSet::default(), HaltSet::default());
        a.halt(0, "x", 7);
        b.merge_entry("x", a.entry("x").unwrap().clone()).unwrap();
        b.resume("x", &[7]);
        // Concurrently node 1 adds the same epoch (it learned of the halt independently).
        let mut c = HaltSet::default();
        c.halt(1, "x", 7);
        b.merge_entry("x", c.entry("x").unwrap().clone()).unwrap();
        assert_eq!(b.epochs("x"), [7]);
    }

    fn history() -> impl Strategy<Value = Vec<(u8, bool, u64)>> {
        prop::collection::vec((0..3u8, any::<bool>(), 0..4u64), 0..30)
    }

    /// Replays a history of halts/resumes/exchanges over 3 nodes and returns their sets.
    fn run(ops: &[(u8, bool, u64)]) -> Vec<HaltSet> {
        let mut nodes = vec![HaltSet::default(); 3];
        for (k, &(n, add, e)) in ops.iter().enumerate() {
            let n = usize::from(n);
            if add {
                nodes[n].halt(n as NodeIx, "x", e);
            } else {
                nodes[n].resume("x", &[e]);
            }
            if k % 3 == 0 {
                let from = nodes[(n + 1) % 3].entry("x").cloned();
                if let Some(from) = from {
                    nodes[n].merge_entry("x", from).unwrap();
                }
            }
        }
        nodes
    }

    proptest! {
        #[test]
        fn merge_is_commutative_associative_and_idempotent(ops in history()) {
            let nodes = run(&ops);
            let get = |s: &HaltSet| s.entry("x").cloned().unwrap_or_default();
            let join = |x: &AgentHalts, y: &AgentHalts| { let mut z = x.clone(); z.merge(y.clone()); z };
            let (a, b, c) = (get(&nodes[0]), get(&nodes[1]), get(&nodes[2]));
            prop_assert_eq!(epochs(&join(&a, &b)), epochs(&join(&b, &a)));
            prop_assert_eq!(epochs(&join(&join(&a, &b), &c)), epochs(&join(&a, &join(&b, &c))));
            prop_assert_eq!(epochs(&join(&a, &a)), epochs(&a));
            prop_assert_eq!(join(&join(&a, &b), &c), join(&a, &join(&b, &c)));
        }
    }
}
