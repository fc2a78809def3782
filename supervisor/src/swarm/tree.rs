//! The pool tree: how a pool is declared ([`PoolSpec`], path rules) and the swarm's internal
//! tree. A pool is at once a group of agents in the supervision tree (cascades, breakers and
//! restart strategies act on it) and a ledger account its agents' spend is debited from.
//! (Internally the tree's nodes are still called teams; the journal's serialized names, such
//! as `team_halted` notes and `team.<path>` rule ids, keep that word.)
//!
//! Children are kept in creation order and every walk of the tree follows it, so cascades,
//! pool halts and restarts reach agents in the same order on every run.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;

use warden_actors::{Account, AgentId, AgentMetrics, HaltKind, Limits};

pub use warden_actors::pool::{Breaker, CascadeRule, RestartPolicy, Scope, Strategy};

use super::SwarmError;
use crate::limits::TEAM_PATH_SEGMENTS_MAX;

/// One pool: a node of the supervision tree with its ledger account.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PoolSpec {
    /// The path, e.g. `swarm/research`. The first segment is the swarm's root pool.
    pub path: String,
    /// The pool's limits.
    pub limits: Limits,
    /// Which halts spread inside the pool.
    pub cascade: Option<CascadeRule>,
    /// The contagion breaker.
    pub breaker: Option<Breaker>,
    /// What happens when an agent actor of this pool crashes.
    pub restart: RestartPolicy,
}

impl PoolSpec {
    /// A pool at `path` with no limits, no cascade, no breaker and the default restart policy.
    pub fn new(path: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            limits: Limits::UNLIMITED,
            cascade: None,
            breaker: None,
            restart: RestartPolicy::default(),
        }
    }

    /// Sets the pool limits.
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Sets the cascade rule.
    pub fn cascade(mut self, on: impl IntoIterator<Item = HaltKind>, scope: Scope) -> Self {
        self.cascade = Some(CascadeRule {
            on: on.into_iter().collect(),
            scope,
        });
        self
    }

    /// Sets the contagion breaker.
    pub fn breaker(mut self, threshold_pct: u32, window_ms: u64) -> Self {
        self.breaker = Some(Breaker {
            threshold_pct,
            window_ms,
        });
        self
    }

    /// Sets the restart policy.
    pub fn restart(mut self, strategy: Strategy, max_restarts: u32, within_ms: u64) -> Self {
        self.restart = RestartPolicy {
            strategy,
            max_restarts,
            within_ms,
        };
        self
    }
}

/// Splits and checks a pool path: non-empty segments of `[A-Za-z0-9._:-]`, at most
/// [`TEAM_PATH_SEGMENTS_MAX`] deep.
pub fn parse_pool_path(path: &str) -> Result<Vec<&str>, String> {
    let segments: Vec<&str> = path.split('/').collect();
    if segments.len() > TEAM_PATH_SEGMENTS_MAX {
        return Err(format!(
            "pool path {path:?} is {} levels deep; the limit is {TEAM_PATH_SEGMENTS_MAX}",
            segments.len(),
        ));
    }
    for seg in &segments {
        AgentId::new(seg).map_err(|e| {
            format!("pool path {path:?} has a bad segment {seg:?}: {e}")
                .replace("agent id", "segment")
        })?;
    }
    Ok(segments)
}

/// A member of a pool: an agent, or a nested pool (by index).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Child {
    Agent(AgentId),
    Team(usize),
}

/// One pool's live state.
pub(super) struct Team {
    pub(super) spec: PoolSpec,
    pub(super) parent: Option<usize>,
    pub(super) account: Arc<Account>,
    /// Agents and nested pools, in creation order.
    pub(super) children: Vec<Child>,
    /// Its own agents (not those of nested pools), in creation order.
    pub(super) members: Vec<AgentId>,
    /// Agents in it and its nested pools.
    pub(super) subtree_agents: usize,
    /// Halt times within the breaker's window.
    pub(super) recent_halts: VecDeque<u64>,
    /// Restart times within the restart policy's window.
    pub(super) restarts: VecDeque<u64>,
    pub(super) halted: bool,
    pub(super) metrics: AgentMetrics,
}

impl Team {
    fn new(spec: PoolSpec, parent: Option<usize>, account: Arc<Account>) -> Self {
        Self {
            metrics: AgentMetrics::for_pool(&spec.path),
            spec,
            parent,
            account,
            children: Vec::new(),
            members: Vec::new(),
            subtree_agents: 0,
            recent_halts: VecDeque::new(),
            restarts: VecDeque::new(),
            halted: false,
        }
    }
}

/// The pools (index 0 is the root), and the agent links cascades follow.
pub(super) struct Tree {
    pub(super) teams: Vec<Team>,
    pub(super) by_path: HashMap<String, usize>,
    /// Agents each agent spawned (for `subtree` cascades), in spawn order.
    pub(super) spawned_children: HashMap<AgentId, Vec<AgentId>>,
    /// Agents that depend on each agent (for `dependents` cascades), in spawn order.
    pub(super) dependents: HashMap<AgentId, Vec<AgentId>>,
}

impl Tree {
    /// A tree of the root pool alone.
    pub(super) fn with_root(root: PoolSpec) -> Result<Tree, SwarmError> {
        let bad = |reason: String| SwarmError::BadPool {
            path: root.path.clone(),
            reason,
        };
        let segs = parse_pool_path(&root.path).map_err(bad)?;
        if segs.len() != 1 {
            return Err(bad(
                "the root pool's path is a single name, such as `swarm`".into(),
            ));
        }
        let account = Account::root(root.path.as_str(), root.limits.clone());
        let path = root.path.clone();
        Ok(Tree {
            teams: vec![Team::new(root, None, account)],
            by_path: HashMap::from([(path, 0)]),
            spawned_children: HashMap::new(),
            dependents: HashMap::new(),
        })
    }

    /// The root pool's path.
    pub(super) fn root_path(&self) -> &str {
        &self.teams[0].spec.path
    }

    /// Adds a pool under its parent (which must be there already), with its pool account
    /// under the parent's.
    pub(super) fn add_team(&mut self, spec: PoolSpec) -> Result<(), SwarmError> {
        let bad = |reason: String| SwarmError::BadPool {
            path: spec.path.clone(),
            reason,
        };
        let root = self.root_path();
        let segs = parse_pool_path(&spec.path).map_err(bad)?;
        if segs.len() < 2 || segs[0] != root {
            return Err(bad(format!(
                "pool paths start with the root pool, e.g. {root}/research"
            )));
        }
        if self.by_path.contains_key(&spec.path) {
            return Err(bad("declared twice".into()));
        }
        let parent_path = &spec.path[..spec.path.rfind('/').expect("two segments or more")];
        let parent = self
            .by_path
            .get(parent_path)
            .copied()
            .ok_or_else(|| bad(format!("its parent pool {parent_path:?} is not declared")))?;
        if let Some(b) = &spec.breaker {
            if !(1..=100).contains(&b.threshold_pct) || b.window_ms == 0 {
                return Err(bad(
                    "breaker.threshold_pct must be 1..=100 and window_ms above 0".into(),
                ));
            }
        }
        let account = self.teams[parent]
            .account
            .child(spec.path.as_str(), spec.limits.clone())
            .map_err(|e| bad(e.to_string()))?;
        let idx = self.teams.len();
        self.teams[parent].children.push(Child::Team(idx));
        self.by_path.insert(spec.path.clone(), idx);
        self.teams.push(Team::new(spec, Some(parent), account));
        Ok(())
    }

    pub(super) fn team_index(&self, path: &str) -> Result<usize, SwarmError> {
        self.by_path.get(path).copied().ok_or_else(|| {
            let mut known: Vec<&str> = self.by_path.keys().map(|s| s.as_str()).collect();
            known.sort_unstable();
            SwarmError::UnknownPool {
                path: path.to_string(),
                known: known.join(", "),
            }
        })
    }

    /// Every agent in pool `t` and its nested pools, in creation order.
    pub(super) fn subtree_agents(&self, t: usize, out: &mut Vec<AgentId>) {
        for c in &self.teams[t].children {
            match c {
                Child::Agent(a) => out.push(a.clone()),
                Child::Team(x) => self.subtree_agents(*x, out),
            }
        }
    }

    /// Marks pool `t` and its nested pools halted (or reopens them) and returns the agents of
    /// the subtree.
    pub(super) fn set_subtree_halted(&mut self, t: usize, halted: bool) -> Vec<AgentId> {
        let mut teams = Vec::new();
        self.subtree_teams(t, &mut teams);
        for x in teams {
            self.teams[x].halted = halted;
        }
        let mut agents = Vec::new();
        self.subtree_agents(t, &mut agents);
        agents
    }

    fn subtree_teams(&self, t: usize, out: &mut Vec<usize>) {
        out.push(t);
        for c in &self.teams[t].children {
            if let Child::Team(x) = c {
                self.subtree_teams(*x, out);
            }
        }
    }

    /// Links a new agent into pool `t` (and its counts up to the root), and into the agent
    /// links of its parent and dependencies.
    pub(super) fn add_agent(
        &mut self,
        t: usize,
        id: &AgentId,
        parent: Option<&AgentId>,
        depends_on: &[AgentId],
    ) {
        self.teams[t].children.push(Child::Agent(id.clone()));
        self.teams[t].members.push(id.clone());
        let mut up = Some(t);
        while let Some(i) = up {
            self.teams[i].subtree_agents += 1;
            up = self.teams[i].parent;
        }
        if let Some(p) = parent {
            self.spawned_children
                .entry(p.clone())
                .or_default()
                .push(id.clone());
        }
        for d in depends_on {
            self.dependents
                .entry(d.clone())
                .or_default()
                .push(id.clone());
        }
    }

    /// Takes an agent out of pool `t` (and its counts up to the root).
    pub(super) fn remove_agent(&mut self, t: usize, id: &AgentId) {
        let team = &mut self.teams[t];
        team.members.retain(|a| a != id);
        team.children
            .retain(|c| !matches!(c, Child::Agent(a) if a == id));
        let mut up = Some(t);
        while let Some(i) = up {
            self.teams[i].subtree_agents = self.teams[i].subtree_agents.saturating_sub(1);
            up = self.teams[i].parent;
        }
    }

    /// Everything reachable from `from` in `map`, breadth first (each agent's links in spawn
    /// order), without `from` itself.
    pub(super) fn transitive(map: &HashMap<AgentId, Vec<AgentId>>, from: &AgentId) -> Vec<AgentId> {
        let mut out = Vec::new();
        let mut seen = HashSet::new();
        let mut queue: VecDeque<&AgentId> = VecDeque::from([from]);
        seen.insert(from.clone());
        while let Some(a) = queue.pop_front() {
            if let Some(next) = map.get(a) {
                for n in next {
                    if seen.insert(n.clone()) {
                        out.push(n.clone());
                        queue.push_back(n);
                    }
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn team_paths_are_checked() {
        assert_eq!(parse_pool_path("swarm/a").unwrap(), vec!["swarm", "a"]);
        assert!(parse_pool_path("swarm//a").is_err());
        assert!(parse_pool_path("swarm/a b").is_err());
        assert!(parse_pool_path(&vec!["x"; 20].join("/")).is_err());
        assert!(parse_pool_path(&vec!["x"; TEAM_PATH_SEGMENTS_MAX].join("/")).is_ok());
        assert!(parse_pool_path(&vec!["x"; TEAM_PATH_SEGMENTS_MAX + 1].join("/")).is_err());
    }
}
