//! The wait-for graph: agents declare whom they wait on; a cycle is a deadlock.

use std::collections::{BTreeSet, HashMap};

use warden_actors::AgentId;

use crate::limits::WAITS_PER_AGENT_MAX;

/// Directed edges `waiter -> awaited`.
#[derive(Debug, Default)]
pub struct WaitGraph {
    edges: HashMap<AgentId, BTreeSet<AgentId>>,
}

/// Why an edge was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WaitError {
    /// An agent cannot wait on itself.
    #[error("agent {0} cannot wait on itself")]
    SelfWait(AgentId),
    /// Too many edges from one agent.
    #[error("agent {0} already waits on {WAITS_PER_AGENT_MAX} agents; release some first")]
    TooMany(AgentId),
}

impl WaitGraph {
    /// Adds `waiter -> awaited`. If that closes a cycle, returns it, starting at `waiter`
    /// (`[waiter, awaited, ..., last]`, where `last` waits on `waiter`).
    pub fn add(
        &mut self,
        waiter: &AgentId,
        awaited: &AgentId,
    ) -> Result<Option<Vec<AgentId>>, WaitError> {
        if waiter == awaited {
            return Err(WaitError::SelfWait(waiter.clone()));
        }
        let out = self.edges.entry(waiter.clone()).or_default();
        if out.len() >= WAITS_PER_AGENT_MAX && !out.contains(awaited) {
            return Err(WaitError::TooMany(waiter.clone()));
        }
        out.insert(awaited.clone());
        Ok(self.path(awaited, waiter).map(|mut path| {
            path.insert(0, waiter.clone());
            path.pop(); // the path ends at `waiter`, already first
            path
        }))
    }

    /// Removes `waiter -> awaited`.
    pub fn remove(&mut self, waiter: &AgentId, awaited: &AgentId) {
        if let Some(out) = self.edges.get_mut(waiter) {
            out.remove(awaited);
            if out.is_empty() {
                self.edges.remove(waiter);
            }
        }
    }

    /// Removes every edge from or to `agent` (it halted: it no longer waits, nor can be waited
    /// on meaningfully).
    pub fn forget(&mut self, agent: &AgentId) {
        self.edges.remove(agent);
        self.edges.retain(|_, out| {
            out.remove(agent);
            !out.is_empty()
        });
    }

    /// A path `from -> ... -> to` (inclusive), depth-first in a deterministic order.
    fn path(&self, from: &AgentId, to: &AgentId) -> Option<Vec<AgentId>> {
        let mut stack: Vec<(AgentId, Vec<AgentId>)> = vec![(from.clone(), vec![from.clone()])];
        let mut seen = BTreeSet::new();
        while let Some((node, path)) = stack.pop() {
            if &node == to {
                return Some(path);
            }
            if !seen.insert(node.clone()) {
                continue;
            }
            if let Some(out) = self.edges.get(&node) {
                for next in out.iter().rev() {
                    if !seen.contains(next) {
                        let mut p = path.clone();
                        p.push(next.clone());
                        stack.push((next.clone(), p));
                    }
                }
            }
        }
        None
    }

    /// Number of edges.
    pub fn len(&self) -> usize {
        self.edges.values().map(|s| s.len()).sum()
    }

    /// True when no agent waits.
    pub fn is_empty(&self) -> bool {
        self.edges.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> AgentId {
        AgentId::new(s).unwrap()
    }

    #[test]
    fn three_agent_cycle_is_found_in_order() {
        let mut g = WaitGraph::default();
        assert_eq!(g.add(&id("a"), &id("b")).unwrap(), None);
        assert_eq!(g.add(&id("b"), &id("c")).unwrap(), None);
        let cycle = g.add(&id("c"), &id("a")).unwrap().unwrap();
        assert_eq!(cycle, vec![id("c"), id("a"), id("b")]);
    }

    #[test]
    fn chains_and_released_edges_are_not_cycles() {
        let mut g = WaitGraph::default();
        g.add(&id("a"), &id("b")).unwrap();
        g.remove(&id("a"), &id("b"));
        assert_eq!(g.add(&id("b"), &id("a")).unwrap(), None);
        assert!(g.add(&id("a"), &id("a")).is_err());
        g.forget(&id("a"));
        assert!(g.is_empty());
    }
}
