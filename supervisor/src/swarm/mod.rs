//! The swarm: a supervision tree of pools and agents; each pool is also a ledger account.
//!
//! | file | what |
//! |---|---|
//! | this one | [`Swarm`] and its queries (agents, pools, counts), the shared state |
//! | `error` | [`SwarmError`], [`AgentError`] |
//! | `spec` | [`AgentSpec`], [`Target`] |
//! | `build` | [`SwarmBuilder`] |
//! | `tree` | [`PoolSpec`], pool paths, the internal tree of pools |
//! | `spawn` | spawning an agent (and rolling a spawn back) |
//! | `halt` | operator halts of agents and pools, resume, deadlock halts over wait-for edges |
//! | `cascade` | what follows a halt: cascade rules and contagion breakers |
//! | `restart` | the supervisor actor: restart strategies and escalation after a crash |
//! | `sweep` | the background sweep: silent agents (heartbeats) and expired approvals |
//! | `approvals` | listing and answering steps parked for approval |
//! | `policy` | policy hot reload, and the policy journaled and restored |
//! | `handle` | [`AgentHandle`]: one agent's requests, re-delivered across restarts |
//! | `journaled` | the journal attached: notes, durability, snapshots |
//! | `recovery` | rebuilding a swarm from its journal, and `audit replay` |
//!
//! Order: every listing and sweep goes through agents in a stable order (sorted ids, or the
//! tree's creation order), never a hash map's, so two runs of the same inputs do the same
//! things in the same order.

mod approvals;
mod build;
mod cascade;
mod error;
mod escrow;
mod halt;
mod handle;
mod journaled;
mod policy;
mod recovery;
mod restart;
mod spawn;
mod spec;
mod sweep;
mod tree;

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use dashmap::DashMap;
use parking_lot::{Mutex, RwLock};
use ractor::{ActorCell, ActorId, ActorRef};
use tokio::sync::{mpsc, watch};
use warden_actors::policy::SwappablePolicy;
use warden_actors::{
    AccountSnapshot, AgentCore, AgentId, AgentMsg, Clock, EventBus, EventStream, HaltNotice,
    HaltRecord, KernelConfig,
};

pub use build::SwarmBuilder;
pub use error::{AgentError, SwarmError};
pub use escrow::{escrow_dimension, SwarmLedger};
pub use handle::AgentHandle;
pub use restart::CrashReport;
pub use spec::{AgentSpec, Target};
pub use tree::{parse_pool_path, Breaker, CascadeRule, PoolSpec, RestartPolicy, Scope, Strategy};

use crate::journal::records::{JournalRecorder, Registration};
use crate::journal::Journal;
use crate::limits::RESTART_WAIT_TIMEOUT_MS;
use crate::runtime::Shards;
use crate::waitfor::WaitGraph;
use approvals::ApprovalIndex;
use tree::Tree;

/// One agent as the swarm holds it.
struct AgentEntry {
    core: Arc<AgentCore>,
    /// As registered (journal snapshots repeat it).
    registration: Registration,
    /// Its place in registration order.
    order: u64,
    team: usize,
    shard: usize,
    actor: RwLock<Option<ActorRef<AgentMsg>>>,
    /// Bumped at each restart of its actor (requests wait on it to re-deliver).
    generation: watch::Sender<u64>,
}

impl AgentEntry {
    fn current(&self) -> (Option<ActorRef<AgentMsg>>, u64) {
        (self.actor.read().clone(), *self.generation.borrow())
    }

    /// Waits until the actor was restarted since generation `seen`; false after
    /// [`RESTART_WAIT_TIMEOUT_MS`].
    async fn await_restart(&self, seen: u64) -> bool {
        let mut rx = self.generation.subscribe();
        let wait = rx.wait_for(|g| *g != seen);
        let result =
            tokio::time::timeout(Duration::from_millis(RESTART_WAIT_TIMEOUT_MS), wait).await;
        matches!(result, Ok(Ok(_)))
    }
}

/// The state every clone of a [`Swarm`] (and every [`AgentHandle`]) shares.
struct SwarmInner {
    root: String,
    clock: Arc<dyn Clock>,
    events: EventBus,
    shards: Shards,
    policy: Option<Arc<SwappablePolicy>>,
    tree: RwLock<Tree>,
    approval_agents: Arc<ApprovalIndex>,
    agents: DashMap<AgentId, Arc<AgentEntry>>,
    by_actor: DashMap<ActorId, AgentId>,
    heartbeat_watch: sweep::HeartbeatWatch,
    waits: Mutex<WaitGraph>,
    halts_tx: mpsc::Sender<HaltNotice>,
    supervisor: OnceLock<ActorRef<()>>,
    max_agents: usize,
    count: AtomicUsize,
    /// The write-ahead journal, once attached.
    journal: OnceLock<(Journal, Arc<JournalRecorder>)>,
    /// Background sweeps (heartbeats, approval timeouts) pause while recovery runs.
    sweeps_paused: AtomicBool,
    /// Halts recovery found whose cascades a crash cut off; run when the journal attaches.
    unfinished_cascades: Mutex<Vec<(AgentId, HaltRecord)>>,
    /// The text of the policy in force, when known (journal snapshots repeat it).
    policy_text: Mutex<Option<String>>,
    /// Agents in registration order (journal snapshots write them in this order, so a
    /// parent comes before its children). Changed only under the tree lock, together with
    /// the registration's journal entry.
    registry: Mutex<BTreeMap<u64, Arc<AgentEntry>>>,
    next_registration: AtomicU64,
    /// Halts journaled whose spreading (cascades, breakers) is not yet journaled as done:
    /// added by the recorder under the halted agent's kernel lock, so a snapshot, which
    /// holds every kernel, sees exactly those pending at its point.
    pending_cascades: Arc<Mutex<HashMap<AgentId, HaltRecord>>>,
    /// The escrow states of pools shared between nodes (recovered, then as recorded).
    escrow: Mutex<escrow::EscrowStates>,
    /// The cluster's members the escrow states were split among (recovered, then recorded).
    cluster_members: Mutex<Option<Vec<String>>>,
}

/// A swarm of governed agents. Cheap to clone; every clone is the same swarm.
#[derive(Clone)]
pub struct Swarm {
    inner: Arc<SwarmInner>,
}

impl std::fmt::Debug for Swarm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Swarm")
            .field("root", &self.inner.root)
            .field("agents", &self.inner.agents.len())
            .finish_non_exhaustive()
    }
}

impl Swarm {
    /// Starts building a swarm.
    pub fn builder() -> SwarmBuilder {
        SwarmBuilder::default()
    }

    /// The root pool's path.
    pub fn root(&self) -> &str {
        &self.inner.root
    }

    /// Number of runtime shards.
    pub fn shards(&self) -> usize {
        self.inner.shards.len()
    }

    /// The handle of an existing agent.
    pub fn agent(&self, id: &AgentId) -> Option<AgentHandle> {
        self.inner
            .agents
            .get(id)
            .map(|e| AgentHandle::new(Arc::clone(e.value()), Arc::clone(&self.inner)))
    }

    /// The configuration a new agent gets from the policy's defaults.
    pub fn policy_defaults(&self) -> KernelConfig {
        self.inner.agent_defaults()
    }

    /// Every agent's id, sorted.
    pub fn agent_ids(&self) -> Vec<AgentId> {
        self.inner.sorted_ids()
    }

    /// Number of agents.
    pub fn len(&self) -> usize {
        self.inner.agents.len()
    }

    /// True when the swarm has no agents.
    pub fn is_empty(&self) -> bool {
        self.inner.agents.is_empty()
    }

    /// Subscribes to decisions, halts, resumes, restarts and escalations.
    pub fn events(&self) -> EventStream {
        self.inner.events.subscribe()
    }

    /// Subscribes to every event but decisions: halts, resumes, approvals, restarts and
    /// escalations (a channel of its own: a step never wakes it, and while every subscriber
    /// is of this kind decisions are not even built). The simulator's halt oracle, the
    /// proxy's halt watch and the cluster driver read this way.
    pub fn events_without_decisions(&self) -> EventStream {
        self.inner.events.subscribe_without_decisions()
    }

    /// A pool's totals.
    pub fn pool(&self, path: &str) -> Option<AccountSnapshot> {
        let tree = self.inner.tree.read();
        tree.by_path
            .get(path)
            .map(|i| tree.teams[*i].account.snapshot())
    }

    /// Every pool's totals, in tree order: the root first, then the pools as declared
    /// (parents before their nested pools).
    pub fn pools(&self) -> Vec<AccountSnapshot> {
        let tree = self.inner.tree.read();
        tree.teams.iter().map(|t| t.account.snapshot()).collect()
    }

    /// Agents per pool: `(team path, running, halted)` for every pool, in tree order (as
    /// [`Swarm::pools`]). One pass over the agents (for metrics scrapes and status pages).
    pub fn agent_counts(&self) -> Vec<(String, u64, u64)> {
        let teams: Vec<String> = {
            let tree = self.inner.tree.read();
            tree.teams.iter().map(|t| t.spec.path.clone()).collect()
        };
        // Sums: the order the agents are visited in does not matter.
        let mut counts = vec![(0u64, 0u64); teams.len()];
        for e in self.inner.agents.iter() {
            let halted = e.value().core.with_kernel(|k| k.is_halted());
            let c = &mut counts[e.value().team];
            if halted {
                c.1 += 1;
            } else {
                c.0 += 1;
            }
        }
        teams
            .into_iter()
            .zip(counts)
            .map(|(t, (r, h))| (t, r, h))
            .collect()
    }

    /// True when the pool is halted (pool halt or contagion breaker).
    pub fn pool_halted(&self, path: &str) -> Result<bool, SwarmError> {
        let tree = self.inner.tree.read();
        Ok(tree.teams[tree.team_index(path)?].halted)
    }

    /// Runs `fut` on the runtime shard of `agent`, so its calls to that agent stay on one
    /// thread (the fast path; see [`crate::runtime`]).
    pub fn spawn_on_shard_of<F>(
        &self,
        agent: &AgentHandle,
        fut: F,
    ) -> tokio::task::JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.inner.shards.spawn_on(agent.entry.shard, fut)
    }

    /// Runs `fut` on shard `shard` (0-based, below [`Swarm::shards`]).
    pub fn spawn_on_shard<F>(&self, shard: usize, fut: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.inner
            .shards
            .spawn_on(shard % self.inner.shards.len(), fut)
    }

    /// Stops every actor and the shard threads. Handles still held get errors afterwards.
    pub async fn shutdown(self) {
        for e in self.inner.agents.iter() {
            if let Some(a) = e.actor.write().take() {
                a.stop(Some("swarm shutdown".into()));
            }
        }
        if let Some(sup) = self.inner.supervisor.get() {
            sup.stop(Some("swarm shutdown".into()));
        }
        let inner = Arc::clone(&self.inner);
        // Joining threads blocks: keep it off the async workers.
        let _ = tokio::task::spawn_blocking(move || inner.shards.stop()).await;
    }
}

impl SwarmInner {
    fn entry(&self, id: &AgentId) -> Result<Arc<AgentEntry>, SwarmError> {
        self.agents
            .get(id)
            .map(|e| Arc::clone(e.value()))
            .ok_or_else(|| SwarmError::UnknownAgent(id.clone()))
    }

    fn agent_defaults(&self) -> KernelConfig {
        self.policy
            .as_ref()
            .and_then(|p| p.policy_set())
            .map(|s| s.agent_config())
            .unwrap_or_default()
    }

    fn supervisor_cell(&self) -> ActorCell {
        self.supervisor
            .get()
            .expect("the supervisor starts before any agent")
            .get_cell()
    }

    /// Every agent's id, sorted (for walks whose order reaches the outside).
    fn sorted_ids(&self) -> Vec<AgentId> {
        sorted(self.agents.iter().map(|e| e.key().clone()))
    }
}

/// The ids of a set, sorted: a hash set's own order differs from run to run.
fn sorted(ids: impl Iterator<Item = AgentId>) -> Vec<AgentId> {
    let mut ids: Vec<AgentId> = ids.collect();
    ids.sort_unstable();
    ids
}
