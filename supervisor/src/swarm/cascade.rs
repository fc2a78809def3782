//! What follows a halt: wait-for edges dropped, the pool's cascade rule (which halt kinds
//! spread, and how far: siblings, pool, subtree, dependents), and the contagion breakers of
//! the pool and every pool above it. Every cascaded halt names its cause chain.
//!
//! Halts decided inside an actor reach [`halt_loop`] over a bounded channel; halts made by the
//! swarm itself (operator, pool, deadlock, heartbeat) call [`SwarmInner::after_halt`]
//! directly. Either way a `cascade_done` note is journaled once the spreading is done, so
//! recovery can finish a spreading a crash cut short.

use std::collections::VecDeque;
use std::sync::Weak;

use tokio::sync::mpsc;
use warden_actors::{AgentId, CauseLink, HaltKind, HaltNotice, HaltRecord};

use super::tree::{Scope, Tree};
use super::{Swarm, SwarmInner};
use crate::journal::records::Note;

/// Runs what follows each halt an actor reports, in the order reported.
pub(super) async fn halt_loop(inner: Weak<SwarmInner>, mut rx: mpsc::Receiver<HaltNotice>) {
    while let Some(notice) = rx.recv().await {
        let Some(inner) = inner.upgrade() else { return };
        inner.after_halt(notice.agent, notice.record);
    }
}

/// An agent to halt by cascade: (target, rule, reason).
type CascadeHalt = (AgentId, String, String);

impl Swarm {
    /// Halts journaled whose spreading (cascade rules, breakers) is not finished yet: 0 once
    /// every halt so far has spread. Tracked while a journal is attached; a caller that must
    /// see a halt's cascades (a test, the simulator) waits for this to reach 0.
    pub fn cascades_pending(&self) -> usize {
        self.inner.pending_cascades.lock().len()
    }
}

impl SwarmInner {
    /// Everything that follows a halt: wait edges dropped, cascade rules, contagion breakers.
    /// Returns the agents halted by cascade, in order.
    pub(super) fn after_halt(&self, origin: AgentId, record: HaltRecord) -> Vec<AgentId> {
        let at_ms = record.at_ms;
        let cascaded = self.spread_halt(origin.clone(), record);
        // Journaled after every halt it caused: a halt without this note was cut short.
        self.note(&Note::CascadeDone {
            agent: origin.clone(),
            at_ms: Some(at_ms),
        });
        let mut pending = self.pending_cascades.lock();
        if pending.get(&origin).is_some_and(|h| h.at_ms == at_ms) {
            pending.remove(&origin);
        }
        cascaded
    }

    /// Spreads a halt, breadth first: each halted agent's pool rule and breakers may halt
    /// more agents, whose own halts spread in turn.
    fn spread_halt(&self, origin: AgentId, record: HaltRecord) -> Vec<AgentId> {
        let now = self.clock.now_ms();
        let mut cascaded = Vec::new();
        let mut work: VecDeque<(AgentId, HaltRecord)> = VecDeque::from([(origin, record)]);
        while let Some((agent, rec)) = work.pop_front() {
            self.waits.lock().forget(&agent);
            let Ok(entry) = self.entry(&agent) else {
                continue;
            };
            let mut chain = rec.cause.clone();
            chain.push(CauseLink {
                agent: agent.to_string(),
                kind: rec.kind,
                reason: rec.reason.clone(),
            });
            let to_halt = {
                let mut tree = self.tree.write();
                let mut to_halt = cascade_targets(&tree, entry.team, &agent, &rec);
                if rec.kind != HaltKind::Cascade {
                    to_halt.extend(self.trip_breakers(&mut tree, entry.team, now));
                }
                to_halt
            };
            for (target, rule, why) in to_halt {
                let Ok(te) = self.entry(&target) else {
                    continue;
                };
                let new =
                    SwarmInner::halt_agent(&te, HaltKind::Cascade, &rule, why, chain.clone(), now);
                if let Some(new) = new {
                    cascaded.push(target.clone());
                    work.push_back((target, new));
                }
            }
        }
        cascaded
    }

    /// Counts a halt against the breaker of pool `team` and of every pool above it; a pool
    /// whose breaker trips is marked halted (journaled) and all its agents are returned.
    fn trip_breakers(&self, tree: &mut Tree, team: usize, now: u64) -> Vec<CascadeHalt> {
        let mut to_halt = Vec::new();
        let mut t = Some(team);
        while let Some(i) = t {
            t = tree.teams[i].parent;
            let Some(b) = tree.teams[i].spec.breaker else {
                continue;
            };
            let size = tree.teams[i].subtree_agents.max(1);
            let team_state = &mut tree.teams[i];
            team_state.recent_halts.push_back(now);
            while team_state
                .recent_halts
                .front()
                .is_some_and(|t0| now.saturating_sub(*t0) > b.window_ms)
            {
                team_state.recent_halts.pop_front();
            }
            while team_state.recent_halts.len() > size {
                team_state.recent_halts.pop_front();
            }
            let count = team_state.recent_halts.len();
            if team_state.halted || (count as u64) * 100 < u64::from(b.threshold_pct) * size as u64
            {
                continue;
            }
            let path = team_state.spec.path.clone();
            let why = format!(
                "contagion breaker of pool {path}: {count} of {size} agents halted within {} ms (threshold {}%)",
                b.window_ms, b.threshold_pct
            );
            team_state.recent_halts.clear();
            for a in tree.set_subtree_halted(i, true) {
                to_halt.push((a, warden_actors::rules::breaker(&path), why.clone()));
            }
            self.note(&Note::TeamHalted {
                team: path,
                halted: true,
                reason: why,
            });
        }
        to_halt
    }
}

/// The agents the cascade rule of pool `team` halts after `agent`'s halt `rec`, in tree order.
fn cascade_targets(
    tree: &Tree,
    team: usize,
    agent: &AgentId,
    rec: &HaltRecord,
) -> Vec<CascadeHalt> {
    let Some(rule) = &tree.teams[team].spec.cascade else {
        return Vec::new();
    };
    if !rule.on.contains(&rec.kind) {
        return Vec::new();
    }
    let targets = match rule.scope {
        Scope::Siblings => tree.teams[team]
            .members
            .iter()
            .filter(|a| *a != agent)
            .cloned()
            .collect(),
        Scope::Team => {
            let mut v = Vec::new();
            tree.subtree_agents(team, &mut v);
            v.retain(|a| a != agent);
            v
        }
        Scope::Subtree => Tree::transitive(&tree.spawned_children, agent),
        Scope::Dependents => Tree::transitive(&tree.dependents, agent),
    };
    let why = format!(
        "{} halt of {agent} ({}) spread to its {}",
        rec.kind,
        rec.reason,
        rule.scope.name()
    );
    let rule_id = warden_actors::rules::cascade(rule.scope);
    targets
        .into_iter()
        .map(|t| (t, rule_id.clone(), why.clone()))
        .collect()
}
