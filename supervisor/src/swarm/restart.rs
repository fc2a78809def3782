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
use super::SwarmInner;

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
        let now = self.clock.now_ms();
        let reason = format!("agent {agent} crashed: {err}");
        let mut plan = RestartPlan::default();
        {
            let mut tree = self.tree.write();
            self.plan_failure(
                &mut tree,
                entry.team,
                Child::Agent(agent.clone()),
                &reason,
                now,
                &mut plan,
            );
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
        for (id, team) in &plan.restart {
            self.restart_agent(id, team, &reason, sup.clone()).await;
        }
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
