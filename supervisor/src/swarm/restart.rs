//! Crash is not halt: when an agent's actor panics, the swarm's supervisor actor restarts it
//! by its pool's strategy (one_for_one, one_for_all, rest_for_one), at most N restarts in T
//! per pool, then escalates to the parent pool; past the root, every agent is halted. ractor
//! has no restart strategies: these are warden's. A restart never gives spent budget back:
//! spending lives in the ledger and governance state in the agent's core, which the new actor
//! takes over.

use std::sync::{Arc, Weak};

use ractor::{Actor, ActorCell, ActorProcessingErr, ActorRef, SupervisionEvent};
use warden_actors::{spawn_agent_actor, AgentId, Event, HaltKind};

use super::tree::{Child, Strategy, Tree};
use super::{Swarm, SwarmError, SwarmInner};

/// What one crash sets off, worked out under the tree lock and carried out after it.
#[derive(Default)]
struct RestartPlan {
    restart: Vec<(AgentId, String)>,
    escalations: Vec<(String, String)>,
    halt_all: Option<String>,
}

/// The swarm's supervisor actor: receives agent actors' failures and applies the pools'
/// restart strategies (ractor has none built in).
pub(super) struct SwarmSupervisor;

impl Actor for SwarmSupervisor {
    type Msg = ();
    type State = Weak<SwarmInner>;
    type Arguments = Weak<SwarmInner>;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        inner: Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(inner)
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<Self::Msg>,
        event: SupervisionEvent,
        inner: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let SupervisionEvent::ActorFailed(cell, err) = event else {
            return Ok(());
        };
        if let Some(inner) = inner.upgrade() {
            inner
                .on_crash(&cell.get_id(), &err, myself.get_cell())
                .await;
        }
        Ok(())
    }
}

impl SwarmInner {
    /// Applies the restart strategies after the actor `actor` failed with `err`.
    async fn on_crash(
        &self,
        actor: &ractor::ActorId,
        err: &impl std::fmt::Display,
        sup: ActorCell,
    ) {
        let Some((_, agent)) = self.by_actor.remove(actor) else {
            return;
        };
        let Ok(entry) = self.entry(&agent) else {
            return;
        };
        let reason = format!("agent {agent} crashed: {err}");
        let plan = self.plan_crash(&agent, entry.team, &reason);
        for (id, team) in &plan.restart {
            self.restart_agent(id, team, &reason, sup.clone()).await;
        }
    }

    /// The governance side of a crash: the restart plan worked out under the tree lock,
    /// escalations announced, and every agent halted if the root gave up.
    fn plan_crash(&self, agent: &AgentId, team: usize, reason: &str) -> RestartPlan {
        let now = self.clock.now_ms();
        let mut plan = RestartPlan::default();
        {
            let mut tree = self.tree.write();
            let failed = Child::Agent(agent.clone());
            self.plan_failure(&mut tree, team, failed, reason, now, &mut plan);
        }
        for (team, why) in &plan.escalations {
            self.events.publish(Event::Escalation {
                team: team.clone(),
                reason: why.clone(),
            });
        }
        if let Some(why) = &plan.halt_all {
            self.halt_all(why, now);
            // The crashed actor still comes back, so its handle keeps getting (halt) answers.
            plan.restart = vec![(agent.clone(), self.root.clone())];
        }
        plan
    }

    /// The root gave up: stop governing by halting everyone (terminal until resume), in the
    /// order of their ids.
    fn halt_all(&self, why: &str, now: u64) {
        for id in self.sorted_ids() {
            let Ok(e) = self.entry(&id) else { continue };
            SwarmInner::halt_agent(
                &e,
                HaltKind::External,
                warden_actors::rules::RESTART_INTENSITY,
                why.to_string(),
                Vec::new(),
                now,
            );
        }
    }

    /// Works out, under the tree lock, which agents a crash restarts, walking up the tree when
    /// a pool exceeds its restart intensity.
    fn plan_failure(
        &self,
        tree: &mut Tree,
        team: usize,
        failed: Child,
        reason: &str,
        now: u64,
        plan: &mut RestartPlan,
    ) {
        let t = &mut tree.teams[team];
        let policy = t.spec.restart;
        t.restarts.push_back(now);
        while t
            .restarts
            .front()
            .is_some_and(|t0| now.saturating_sub(*t0) > policy.within_ms)
        {
            t.restarts.pop_front();
        }
        if t.restarts.len() > policy.max_restarts as usize {
            t.restarts.clear();
            let path = t.spec.path.clone();
            let why = format!(
                "pool {path} exceeded {} restarts within {} ms ({reason})",
                policy.max_restarts, policy.within_ms
            );
            plan.escalations.push((path, why.clone()));
            match t.parent {
                Some(p) => self.plan_failure(tree, p, Child::Team(team), &why, now, plan),
                None => plan.halt_all = Some(why),
            }
            return;
        }
        let children: Vec<Child> = match policy.strategy {
            Strategy::OneForOne => vec![failed],
            Strategy::OneForAll => t.children.clone(),
            Strategy::RestForOne => {
                let from = t.children.iter().position(|c| *c == failed).unwrap_or(0);
                t.children[from..].to_vec()
            }
        };
        let path = t.spec.path.clone();
        for c in children {
            match c {
                Child::Agent(a) => plan.restart.push((a, path.clone())),
                Child::Team(x) => {
                    let mut agents = Vec::new();
                    tree.subtree_agents(x, &mut agents);
                    tree.teams[x].restarts.clear();
                    plan.restart
                        .extend(agents.into_iter().map(|a| (a, path.clone())));
                }
            }
        }
    }

    async fn restart_agent(&self, id: &AgentId, team: &str, reason: &str, sup: ActorCell) {
        let Ok(entry) = self.entry(id) else { return };
        let old = entry.actor.write().take();
        if let Some(old) = old {
            self.by_actor.remove(&old.get_id());
            // Finish what is queued, refuse what comes after; callers re-deliver to the new
            // actor.
            let _ = old.drain();
        }
        let core = Arc::clone(&entry.core);
        let spawned = self
            .shards
            .spawn_on(entry.shard, spawn_agent_actor(core, Some(sup)))
            .await;
        if let Ok(Ok(actor)) = spawned {
            self.by_actor.insert(actor.get_id(), id.clone());
            *entry.actor.write() = Some(actor);
            entry.generation.send_modify(|g| *g += 1);
            self.events.publish(Event::Restart {
                agent: id.clone(),
                team: team.to_string(),
                reason: reason.to_string(),
            });
        }
    }
}

/// What a crash set off ([`Swarm::crash_inline`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CrashReport {
    /// The agents restarted, with the pool whose strategy restarted them.
    pub restarted: Vec<(AgentId, String)>,
    /// Pools that exceeded their restart intensity, with why.
    pub escalations: Vec<(String, String)>,
    /// Whether the root gave up and every agent was halted (`restart.intensity`).
    pub halted_all: bool,
}

impl Swarm {
    /// The governance side of an agent's actor crashing, on the caller's thread: the pools'
    /// restart strategies and intensities applied exactly as for a real crash (escalation,
    /// halting everyone past the root), `restart` events announced, but no actor respawned —
    /// for the simulator, whose agents decide inline ([`AgentHandle::step_inline`]) and whose
    /// actors hold no state of their own (their core survives a restart anyway).
    ///
    /// # Errors
    /// An unknown agent.
    ///
    /// [`AgentHandle::step_inline`]: crate::AgentHandle::step_inline
    pub fn crash_inline(&self, agent: &AgentId, reason: &str) -> Result<CrashReport, SwarmError> {
        let entry = self.inner.entry(agent)?;
        let reason = format!("agent {agent} crashed: {reason}");
        let plan = self.inner.plan_crash(agent, entry.team, &reason);
        for (id, team) in &plan.restart {
            self.inner.events.publish(Event::Restart {
                agent: id.clone(),
                team: team.clone(),
                reason: reason.clone(),
            });
        }
        Ok(CrashReport {
            restarted: plan.restart,
            escalations: plan.escalations,
            halted_all: plan.halt_all.is_some(),
        })
    }
}
