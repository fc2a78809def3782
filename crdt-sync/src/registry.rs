//! The replicated agent registry: which node registered each agent (its home, which holds its
//! token and runs its actor) and in which pool.
//!
//! Each entry is written once by its home node. Two nodes registering the same id
//! concurrently is a conflict: merge keeps the entry of the lower node index on every node (a
//! join: the minimum of a total order), and the node that loses learns it and reports it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::members::NodeIx;

/// Where an agent lives.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct AgentEntry {
    /// The node that registered it.
    pub home: NodeIx,
    /// Its pool path.
    pub pool: String,
}

/// A registration that lost to another node's for the same id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryConflict {
    /// The agent id.
    pub agent: String,
    /// The entry kept everywhere.
    pub kept: AgentEntry,
    /// The entry dropped.
    pub dropped: AgentEntry,
}

/// Every agent known to the cluster.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Registry {
    agents: BTreeMap<String, AgentEntry>,
}

impl Registry {
    /// The entry of `agent`.
    pub fn get(&self, agent: &str) -> Option<&AgentEntry> {
        self.agents.get(agent)
    }

    /// How many agents are known.
    pub fn len(&self) -> usize {
        self.agents.len()
    }

    /// Whether no agent is known.
    pub fn is_empty(&self) -> bool {
        self.agents.is_empty()
    }

    /// Merges one entry (a local registration or a peer's). Returns whether it changed, or
    /// the conflict when another entry for the id existed (the lower one is kept).
    pub fn merge(&mut self, agent: &str, entry: AgentEntry) -> Result<bool, RegistryConflict> {
        match self.agents.get_mut(agent) {
            None => {
                self.agents.insert(agent.to_owned(), entry);
                Ok(true)
            }
            Some(known) if *known == entry => Ok(false),
            Some(known) => {
                let (kept, dropped) = if entry < *known {
                    (entry, known.clone())
                } else {
                    (known.clone(), entry)
                };
                *known = kept.clone();
                Err(RegistryConflict {
                    agent: agent.to_owned(),
                    kept,
                    dropped,
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn concurrent_registrations_of_one_id_keep_the_same_entry_everywhere() {
        let a = AgentEntry {
            home: 0,
            pool: "p".into(),
        };
        let b = AgentEntry {
            home: 1,
            pool: "q".into(),
        };
        let (mut x, mut y) = (Registry::default(), Registry::default());
        assert_eq!(x.merge("ag", a.clone()), Ok(true));
        assert_eq!(y.merge("ag", b.clone()), Ok(true));
        assert!(x.merge("ag", b).is_err());
        let conflict = y.merge("ag", a.clone()).unwrap_err();
        assert_eq!(conflict.kept, a);
        assert_eq!(x, y);
        assert_eq!(x.merge("ag", a), Ok(false));
    }
}

#[cfg(test)]
mod laws {
    use proptest::prelude::*;

    use super::*;

    fn entry() -> impl Strategy<Value = (String, AgentEntry)> {
        (0..4u8, 0..3u16, 0..2u8).prop_map(|(a, home, pool)| {
            let entry = AgentEntry {
                home,
                pool: format!("p{pool}"),
            };
            (format!("agent-{a}"), entry)
        })
    }

    fn registry() -> impl Strategy<Value = Registry> {
        prop::collection::vec(entry(), 0..8).prop_map(|entries| {
            let mut r = Registry::default();
            for (a, e) in entries {
                let _ = r.merge(&a, e);
            }
            r
        })
    }

    fn join(x: &Registry, y: &Registry) -> Registry {
        let mut z = x.clone();
        for (a, e) in &y.agents {
            let _ = z.merge(a, e.clone());
        }
        z
    }

    proptest! {
        #[test]
        fn merge_is_commutative_associative_and_idempotent(a in registry(), b in registry(), c in registry()) {
            prop_assert_eq!(join(&a, &b), join(&b, &a));
            prop_assert_eq!(join(&join(&a, &b), &c), join(&a, &join(&b, &c)));
            prop_assert_eq!(join(&a, &a), a);
        }
    }
}
