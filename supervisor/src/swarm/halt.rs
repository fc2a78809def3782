//! Halts from outside the agents: an operator (or a parent, a monitor, the simulator) halting
//! an agent or a pool, lifting a halt, and deadlock halts when wait-for edges close a cycle.
//! What a halt sets off afterwards (cascades, breakers) is in `cascade`.

use std::sync::Arc;

use warden_actors::{AgentId, CauseLink, Event, HaltKind, HaltRecord};

use super::{AgentEntry, Swarm, SwarmError, SwarmInner, Target};
use crate::journal::records::Note;

impl Swarm {
    /// Halts an agent or a pool (with its subtree) as `external` (operator or parent), then
    /// applies cascade rules and breakers. Returns every agent halted by this call, cascades
    /// included, in order. Already-halted agents are left as they are.
    pub async fn halt(
        &self,
        target: impl Into<Target>,
        reason: impl Into<String>,
    ) -> Result<Vec<AgentId>, SwarmError> {
        self.halt_with_kind(target, HaltKind::External, reason)
            .await
    }

    /// Like [`Swarm::halt`], with an explicit halt kind (a parent supervisor, a safety monitor,
    /// the simulator's fault models).
    pub async fn halt_with_kind(
        &self,
        target: impl Into<Target>,
        kind: HaltKind,
        reason: impl Into<String>,
    ) -> Result<Vec<AgentId>, SwarmError> {
        let halted = self.halt_inline(target, kind, reason)?;
        // Answered only once the halts are durable (with a journal attached).
        self.inner.flush().await.map_err(SwarmError::Journal)?;
        Ok(halted)
    }

    /// [`Swarm::halt_with_kind`] on the caller's thread, without waiting for the journal:
    /// for a caller that groups its own waits ([`Swarm::durable`]), such as the simulator,
    /// which must not answer anyone about these halts before then.
    pub fn halt_inline(
        &self,
        target: impl Into<Target>,
        kind: HaltKind,
        reason: impl Into<String>,
    ) -> Result<Vec<AgentId>, SwarmError> {
        let reason = reason.into();
        match target.into() {
            Target::Agent(id) => self.inner.halt_one(&id, kind, reason),
            Target::Pool(path) => self.inner.halt_team(&path, kind, &reason),
        }
    }

    /// Lifts an agent's halt (an explicit, announced act: a `resume` event names `by`).
    /// Spend is not given back; failures and stagnation history start afresh.
    pub async fn resume(
        &self,
        id: &AgentId,
        by: impl Into<String>,
    ) -> Result<HaltRecord, SwarmError> {
        let lifted = self.resume_inline(id, by)?;
        self.inner.flush().await.map_err(SwarmError::Journal)?;
        Ok(lifted)
    }

    /// [`Swarm::resume`] on the caller's thread, without waiting for the journal (see
    /// [`Swarm::halt_inline`]).
    pub fn resume_inline(
        &self,
        id: &AgentId,
        by: impl Into<String>,
    ) -> Result<HaltRecord, SwarmError> {
        let entry = self.inner.entry(id)?;
        let now = self.inner.clock.now_ms();
        let by = by.into();
        let lifted = entry
            .core
            .with_kernel(|k| k.resume_by(now, &by))
            .ok_or_else(|| SwarmError::NotHalted(id.clone()))?;
        self.inner.heartbeat_watch.resumed(id);
        self.inner.events.publish(Event::Resume {
            agent: id.clone(),
            by,
            lifted: lifted.clone(),
        });
        Ok(lifted)
    }

    /// Clears a pool's halted mark (and its subtree's), so agents may be spawned into it
    /// again. Agents stay halted until resumed one by one.
    pub fn reopen_pool(&self, path: &str) -> Result<(), SwarmError> {
        let mut tree = self.inner.tree.write();
        let idx = tree.team_index(path)?;
        tree.set_subtree_halted(idx, false);
        self.inner.note(&Note::TeamHalted {
            team: path.to_string(),
            halted: false,
            reason: String::new(),
        });
        Ok(())
    }

    /// Declares that `waiter` waits on `awaited`. If that closes a wait-for cycle, every agent
    /// in the cycle is halted as `deadlock` and the cycle is returned.
    pub fn wait_for(
        &self,
        waiter: &AgentId,
        awaited: &AgentId,
    ) -> Result<Option<Vec<AgentId>>, SwarmError> {
        self.inner.entry(waiter)?;
        self.inner.entry(awaited)?;
        let cycle = self.inner.waits.lock().add(waiter, awaited)?;
        if let Some(cycle) = &cycle {
            self.inner.halt_deadlock(cycle)?;
        }
        Ok(cycle)
    }

    /// Withdraws a wait-for edge.
    pub fn release_wait(&self, waiter: &AgentId, awaited: &AgentId) {
        self.inner.waits.lock().remove(waiter, awaited);
    }
}

impl SwarmInner {
    /// Halts one agent now, if it runs, and announces the halt. The caller then runs
    /// [`SwarmInner::after_halt`] for cascades.
    pub(super) fn halt_agent(
        entry: &AgentEntry,
        kind: HaltKind,
        rule: &str,
        reason: String,
        cause: Vec<CauseLink>,
        now: u64,
    ) -> Option<HaltRecord> {
        let record = entry
            .core
            .with_kernel(|k| k.halt(kind, Some(Arc::from(rule)), reason, cause, now))?;
        entry.core.announce_halt(&record);
        Some(record)
    }

    /// An operator halt of one agent, and what it sets off.
    fn halt_one(
        &self,
        id: &AgentId,
        kind: HaltKind,
        reason: String,
    ) -> Result<Vec<AgentId>, SwarmError> {
        let now = self.clock.now_ms();
        let entry = self.entry(id)?;
        let mut halted = Vec::new();
        if let Some(record) = Self::halt_agent(
            &entry,
            kind,
            warden_actors::rules::OPERATOR,
            reason,
            Vec::new(),
            now,
        ) {
            halted.push(id.clone());
            halted.extend(self.after_halt(id.clone(), record));
        }
        Ok(halted)
    }

    /// A pool halt: the pool and its nested pools marked halted (journaled), then every agent
    /// of the subtree halted in creation order, with what each sets off.
    fn halt_team(
        &self,
        path: &str,
        kind: HaltKind,
        reason: &str,
    ) -> Result<Vec<AgentId>, SwarmError> {
        let now = self.clock.now_ms();
        let agents = {
            let mut tree = self.tree.write();
            let idx = tree.team_index(path)?;
            let agents = tree.set_subtree_halted(idx, true);
            // Journaled under the tree lock, like registrations (see `register`).
            self.note(&Note::TeamHalted {
                team: path.to_string(),
                halted: true,
                reason: reason.to_string(),
            });
            agents
        };
        let link = CauseLink {
            agent: path.to_string(),
            kind,
            reason: reason.to_string(),
        };
        let mut halted = Vec::new();
        for id in agents {
            let Ok(entry) = self.entry(&id) else {
                continue;
            };
            let record = Self::halt_agent(
                &entry,
                kind,
                &warden_actors::rules::team(path),
                format!("pool {path} halted: {reason}"),
                vec![link.clone()],
                now,
            );
            if let Some(record) = record {
                halted.push(id.clone());
                halted.extend(self.after_halt(id, record));
            }
        }
        Ok(halted)
    }

    /// Halts every agent of a wait-for cycle as `deadlock`, in the cycle's order.
    fn halt_deadlock(&self, cycle: &[AgentId]) -> Result<(), SwarmError> {
        let now = self.clock.now_ms();
        let names: Vec<&str> = cycle.iter().map(|a| a.as_str()).collect();
        let reason = format!("wait-for cycle {} -> {}", names.join(" -> "), names[0]);
        let chain: Vec<CauseLink> = cycle
            .iter()
            .map(|a| CauseLink {
                agent: a.to_string(),
                kind: HaltKind::Deadlock,
                reason: "waits in the cycle".into(),
            })
            .collect();
        for a in cycle {
            let entry = self.entry(a)?;
            let record = Self::halt_agent(
                &entry,
                HaltKind::Deadlock,
                warden_actors::rules::DEADLOCK,
                reason.clone(),
                chain.clone(),
                now,
            );
            if let Some(record) = record {
                self.after_halt(a.clone(), record);
            }
        }
        Ok(())
    }
}
