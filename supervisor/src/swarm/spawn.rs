//! Spawning an agent: its account under its pool's pool, its kernel, its registration
//! (journaled), its actor on its shard; and taking a registration out again.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use ractor::ActorRef;
use tokio::sync::watch;
use warden_actors::{
    spawn_agent_actor, Account, AgentCore, AgentId, AgentKernel, AgentMetrics, AgentMsg, HaltKind,
    KernelConfig, StepPolicy,
};

use super::{AgentEntry, AgentHandle, AgentSpec, Swarm, SwarmError, SwarmInner};
use crate::journal::records::{Note, Registration};
use crate::journal::EntryKind;
use crate::limits::WAITS_PER_AGENT_MAX;

impl Swarm {
    /// Spawns one governed agent: its own budget account under its pool's pool, a kernel, and
    /// an actor on its shard, linked to the swarm's supervisor.
    pub async fn spawn_agent(&self, spec: AgentSpec) -> Result<AgentHandle, SwarmError> {
        let inner = &self.inner;
        let config = spec.resolve(&inner.agent_defaults());
        inner.check_spec(&spec, &config)?;
        let (team, account, metrics) = inner.open_account(&spec, &config)?;
        if inner.count.fetch_add(1, Ordering::SeqCst) >= inner.max_agents {
            inner.count.fetch_sub(1, Ordering::SeqCst);
            return Err(SwarmError::TooManyAgents(inner.max_agents));
        }
        let entry = inner.new_entry(&spec, &config, team, account, metrics);
        inner.register(&entry)?;
        let actor = inner.start_actor(&entry).await?;
        inner.link(&entry, &spec, actor)?;
        if config.heartbeat_timeout_ms.is_some() {
            inner.heartbeat_watch.watch(spec.id.clone());
        }
        inner.flush().await.map_err(SwarmError::Journal)?;
        Ok(AgentHandle::new(entry, Arc::clone(inner)))
    }
}

impl SwarmInner {
    /// Refuses a spec that cannot be spawned, before anything changes.
    fn check_spec(&self, spec: &AgentSpec, config: &KernelConfig) -> Result<(), SwarmError> {
        let bad = |reason: String| SwarmError::BadSpec {
            agent: spec.id.clone(),
            reason,
        };
        config.stagnation.validate().map_err(bad)?;
        if spec.depends_on.len() > WAITS_PER_AGENT_MAX {
            return Err(bad(format!(
                "declares {} dependencies; the limit is {WAITS_PER_AGENT_MAX}",
                spec.depends_on.len(),
            )));
        }
        for other in spec.parent.iter().chain(spec.depends_on.iter()) {
            if !self.agents.contains_key(other) {
                return Err(bad(format!(
                    "refers to agent {other}, which does not exist (spawn it first)"
                )));
            }
        }
        Ok(())
    }

    /// The agent's pool (which must not be halted), a new account for it under the pool's
    /// pool, and the pool's metrics.
    fn open_account(
        &self,
        spec: &AgentSpec,
        config: &KernelConfig,
    ) -> Result<(usize, Arc<Account>, AgentMetrics), SwarmError> {
        let tree = self.tree.read();
        let path = spec.team.as_deref().unwrap_or(&self.root);
        let idx = tree.team_index(path)?;
        let team = &tree.teams[idx];
        if team.halted {
            return Err(SwarmError::PoolHalted(team.spec.path.clone()));
        }
        let account = team
            .account
            .child(spec.id.as_str(), config.budgets.ledger_limits())
            .map_err(|e| SwarmError::BadSpec {
                agent: spec.id.clone(),
                reason: e.to_string(),
            })?;
        Ok((idx, account, team.metrics.clone()))
    }

    /// The agent's kernel, core and registration, not yet visible to anyone.
    fn new_entry(
        &self,
        spec: &AgentSpec,
        config: &KernelConfig,
        team: usize,
        account: Arc<Account>,
        metrics: AgentMetrics,
    ) -> Arc<AgentEntry> {
        let id = spec.id.clone();
        let now = self.clock.now_ms();
        let policy = self
            .policy
            .as_ref()
            .map(|p| Arc::clone(p) as Arc<dyn StepPolicy>);
        let kernel = AgentKernel::new(id.clone(), account, config, policy, now);
        let core = AgentCore::new(
            kernel,
            Arc::clone(&self.clock),
            self.events.clone(),
            Some(self.halts_tx.clone()),
            metrics,
            Some(Arc::clone(&self.approval_agents) as Arc<dyn warden_actors::ParkedSink>),
        );
        let registration = Registration {
            agent: id.clone(),
            team: self.tree.read().teams[team].spec.path.clone(),
            config: config.clone(),
            parent: spec.parent.clone(),
            depends_on: spec.depends_on.clone(),
            meta: spec.meta.clone(),
            at_ms: now,
        };
        Arc::new(AgentEntry {
            core,
            registration,
            order: self.next_registration.fetch_add(1, Ordering::SeqCst),
            team,
            shard: self.shards.shard_of(id.as_str()),
            actor: parking_lot::RwLock::new(None),
            generation: watch::channel(0).0,
        })
    }

    /// Makes the agent known: its id taken, its registration journaled, its place in the
    /// registry. Gives the slot taken in `count` back on failure.
    fn register(&self, entry: &Arc<AgentEntry>) -> Result<(), SwarmError> {
        let id = entry.registration.agent.clone();
        match self.agents.entry(id.clone()) {
            dashmap::Entry::Occupied(_) => {
                self.count.fetch_sub(1, Ordering::SeqCst);
                Err(SwarmError::DuplicateAgent(id))
            }
            dashmap::Entry::Vacant(v) => {
                // Registered (journal entry and registry) under the tree lock, which team
                // marks are journaled under and which a snapshot holds for writing: a team
                // halted before this point refuses the agent, one halted after it is
                // journaled after the registration; a registration is in a snapshot or after.
                let tree = self.tree.read();
                if let Some((journal, recorder)) = self.journal.get() {
                    let team = &tree.teams[entry.team];
                    if team.halted {
                        self.count.fetch_sub(1, Ordering::SeqCst);
                        return Err(SwarmError::PoolHalted(team.spec.path.clone()));
                    }
                    let at = entry.registration.at_ms;
                    if let Err(e) =
                        journal.submit_json(EntryKind::AgentRegistered, at, &entry.registration)
                    {
                        self.count.fetch_sub(1, Ordering::SeqCst);
                        return Err(SwarmError::Journal(e.to_string()));
                    }
                    entry
                        .core
                        .attach_recorder(Arc::clone(recorder) as Arc<dyn warden_actors::Recorder>);
                }
                self.registry.lock().insert(entry.order, Arc::clone(entry));
                drop(tree);
                v.insert(Arc::clone(entry));
                Ok(())
            }
        }
    }

    /// Starts the agent's actor on its shard, under the swarm's supervisor.
    async fn start_actor(&self, entry: &AgentEntry) -> Result<ActorRef<AgentMsg>, SwarmError> {
        let id = &entry.registration.agent;
        let sup = self.supervisor_cell();
        let spawned = self
            .shards
            .spawn_on(
                entry.shard,
                spawn_agent_actor(Arc::clone(&entry.core), Some(sup)),
            )
            .await;
        let failed = match spawned {
            Ok(Ok(actor)) => {
                self.by_actor.insert(actor.get_id(), id.clone());
                *entry.actor.write() = Some(actor.clone());
                return Ok(actor);
            }
            Ok(Err(e)) => e.to_string(),
            Err(e) => e.to_string(),
        };
        self.unregister(id);
        Err(SwarmError::Runtime(format!(
            "spawning agent {id}: {failed}"
        )))
    }

    /// Links the running agent into its pool, unless the pool was halted meanwhile: then
    /// the spawn is undone, so no running agent ever sits in a halted pool.
    fn link(
        &self,
        entry: &AgentEntry,
        spec: &AgentSpec,
        actor: ActorRef<AgentMsg>,
    ) -> Result<(), SwarmError> {
        let mut tree = self.tree.write();
        if !tree.teams[entry.team].halted {
            tree.add_agent(entry.team, &spec.id, spec.parent.as_ref(), &spec.depends_on);
            return Ok(());
        }
        let path = tree.teams[entry.team].spec.path.clone();
        drop(tree);
        // Handles taken during the spawn may still exist: halt the kernel so they get
        // halts, and drop any wait-for edges that named the agent.
        let now = self.clock.now_ms();
        entry.core.with_kernel(|k| {
            k.halt(
                HaltKind::Cascade,
                Some(Arc::from(warden_actors::rules::team(&path))),
                format!("pool {path} was halted while the agent was being spawned"),
                Vec::new(),
                now,
            )
        });
        self.waits.lock().forget(&spec.id);
        self.by_actor.remove(&actor.get_id());
        actor.stop(Some("pool halted during spawn".into()));
        self.unregister(&spec.id);
        Err(SwarmError::PoolHalted(path))
    }

    /// Takes a just-registered agent out again (a failed spawn), with a journal note.
    pub(super) fn unregister(&self, id: &AgentId) {
        if let Some((_, e)) = self.agents.remove(id) {
            self.count.fetch_sub(1, Ordering::SeqCst);
            let _tree = self.tree.read();
            self.registry.lock().remove(&e.order);
            self.note(&Note::AgentRemoved { agent: id.clone() });
        }
    }

    /// Recovery: takes out an agent a snapshot restored whose spawn was then rolled back
    /// (an `agent_removed` note after the snapshot).
    pub(super) fn forget(&self, id: &AgentId) {
        let Some((_, e)) = self.agents.remove(id) else {
            return;
        };
        self.count.fetch_sub(1, Ordering::SeqCst);
        {
            let mut tree = self.tree.write();
            self.registry.lock().remove(&e.order);
            tree.remove_agent(e.team, id);
        }
        self.heartbeat_watch.forget(id);
        self.approval_agents.forget(id);
        self.waits.lock().forget(id);
        let actor = e.actor.write().take();
        if let Some(actor) = actor {
            self.by_actor.remove(&actor.get_id());
            actor.stop(Some("registration rolled back".into()));
        }
    }
}
