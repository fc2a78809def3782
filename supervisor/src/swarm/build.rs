//! [`SwarmBuilder`]: pools, clock, layout, policy and bounds, then [`SwarmBuilder::build`].

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize};
use std::sync::{Arc, OnceLock};

use dashmap::DashMap;
use parking_lot::{Mutex, RwLock};
use ractor::Actor;
use tokio::sync::mpsc;
use warden_actors::policy::{PolicySet, SwappablePolicy};
use warden_actors::{Clock, EventBus, Limits, StepPolicy, SystemClock};

use super::approvals::ApprovalIndex;
use super::restart::SwarmSupervisor;
use super::tree::{PoolSpec, Tree};
use super::{cascade, sweep, Swarm, SwarmError, SwarmInner};
use crate::limits::{
    AGENTS_MAX_DEFAULT, EVENTS_BUFFERED_DEFAULT, HALT_QUEUE_NOTICES_MAX, SWEEP_INTERVAL_MS_DEFAULT,
};
use crate::runtime::{Layout, Shards};
use crate::waitfor::WaitGraph;

/// Builds a [`Swarm`].
pub struct SwarmBuilder {
    root: PoolSpec,
    teams: Vec<PoolSpec>,
    clock: Arc<dyn Clock>,
    layout: Layout,
    event_capacity: usize,
    heartbeat_sweep_ms: u64,
    policy: Option<Arc<SwappablePolicy>>,
    max_agents: usize,
}

impl Default for SwarmBuilder {
    fn default() -> Self {
        Self {
            root: PoolSpec::new("swarm"),
            teams: Vec::new(),
            clock: Arc::new(SystemClock::new()),
            layout: Layout::default(),
            event_capacity: EVENTS_BUFFERED_DEFAULT,
            heartbeat_sweep_ms: SWEEP_INTERVAL_MS_DEFAULT,
            policy: None,
            max_agents: AGENTS_MAX_DEFAULT,
        }
    }
}

impl SwarmBuilder {
    /// The root pool (its path is the swarm's name, `swarm` by default).
    pub fn root(mut self, root: PoolSpec) -> Self {
        self.root = root;
        self
    }

    /// Shorthand: the root pool's limits.
    pub fn limits(mut self, limits: Limits) -> Self {
        self.root.limits = limits;
        self
    }

    /// Adds a pool. Its parent (the path minus its last segment) must be the root or another
    /// pool; order does not matter.
    pub fn pool(mut self, team: PoolSpec) -> Self {
        self.teams.push(team);
        self
    }

    /// The clock (default: the system clock). Tests and the simulator pass a manual clock.
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Where actors run (default: one single-worker shard per core).
    pub fn layout(mut self, layout: Layout) -> Self {
        self.layout = layout;
        self
    }

    /// How far an event subscriber may fall behind (default 16,384 events).
    pub fn event_capacity(mut self, capacity: usize) -> Self {
        self.event_capacity = capacity;
        self
    }

    /// How often silent agents are looked for (default 250 ms; 0 turns the background sweep
    /// off, leaving [`Swarm::sweep_heartbeats`] to the caller).
    pub fn heartbeat_sweep_ms(mut self, every_ms: u64) -> Self {
        self.heartbeat_sweep_ms = every_ms;
        self
    }

    /// A policy consulted on every step of every agent (any [`StepPolicy`]).
    pub fn policy(mut self, policy: Arc<dyn StepPolicy>) -> Self {
        self.policy = Some(Arc::new(SwappablePolicy::from_policy(policy)));
        self
    }

    /// A compiled YAML policy: its rules judge every step, its pools become the swarm's pools
    /// (the root pool is the root pool), and its defaults configure agents spawned without
    /// their own settings. Replace it later with [`Swarm::reload_policy`].
    pub fn policy_set(mut self, set: PolicySet) -> Self {
        let doc = set.doc();
        for pool in &doc.pools {
            let mut team = PoolSpec::new(pool.path.clone()).limits(pool.limits.clone());
            team.cascade = pool.cascade.clone();
            team.breaker = pool.breaker;
            if let Some(r) = pool.restart {
                team.restart = r;
            }
            if pool.path.contains('/') {
                self.teams.push(team);
            } else {
                self.root = team;
            }
        }
        self.policy = Some(Arc::new(SwappablePolicy::new(Arc::new(set))));
        self
    }

    /// Most agents the swarm accepts (default 2,000,000).
    pub fn max_agents(mut self, max: usize) -> Self {
        self.max_agents = max;
        self
    }

    /// Checks the pools, starts the runtime shards and the supervisor.
    pub async fn build(self) -> Result<Swarm, SwarmError> {
        let mut tree = Tree::with_root(self.root)?;
        let mut teams = self.teams;
        // Parents before their nested teams; otherwise as declared (a stable sort).
        teams.sort_by_key(|t| t.path.matches('/').count());
        for spec in teams {
            tree.add_team(spec)?;
        }
        let shards = Shards::start(self.layout).map_err(|e| SwarmError::Runtime(e.to_string()))?;
        let (halts_tx, halts_rx) = mpsc::channel(HALT_QUEUE_NOTICES_MAX);
        let inner = Arc::new(SwarmInner {
            root: tree.root_path().to_string(),
            clock: self.clock,
            events: EventBus::new(self.event_capacity),
            shards,
            policy: self.policy,
            tree: RwLock::new(tree),
            approval_agents: Arc::new(ApprovalIndex::default()),
            agents: DashMap::new(),
            by_actor: DashMap::new(),
            heartbeat_watch: Default::default(),
            waits: Mutex::new(WaitGraph::default()),
            halts_tx,
            supervisor: OnceLock::new(),
            max_agents: self.max_agents,
            count: AtomicUsize::new(0),
            journal: OnceLock::new(),
            sweeps_paused: AtomicBool::new(false),
            unfinished_cascades: Mutex::new(Vec::new()),
            policy_text: Mutex::new(None),
            registry: Mutex::new(BTreeMap::new()),
            next_registration: AtomicU64::new(0),
            pending_cascades: Arc::new(Mutex::new(HashMap::new())),
            escrow: Mutex::new(Default::default()),
            cluster_members: Mutex::new(None),
        });

        let weak = Arc::downgrade(&inner);
        let sup = inner
            .shards
            .spawn_on(0, async move {
                Actor::spawn(None, SwarmSupervisor, weak)
                    .await
                    .map(|(r, _)| r)
            })
            .await
            .map_err(|e| SwarmError::Runtime(e.to_string()))?
            .map_err(|e| SwarmError::Runtime(e.to_string()))?;
        let _ = inner.supervisor.set(sup);

        let weak = Arc::downgrade(&inner);
        inner.shards.spawn_on(0, cascade::halt_loop(weak, halts_rx));
        if self.heartbeat_sweep_ms > 0 {
            let weak = Arc::downgrade(&inner);
            inner
                .shards
                .spawn_on(0, sweep::sweep_loop(weak, self.heartbeat_sweep_ms));
        }
        Ok(Swarm { inner })
    }
}
