//! The cluster: this node's replica driven over the QUIC transport, wired to the swarm.
//!
//! One task owns the loop: messages from the transport go into the
//! [`warden_sync::Replica`], its outputs go out in order (a `Persist` is journaled and
//! durable before any later `Send` leaves: the write-ahead rule of `warden_sync::replica`), a
//! timer runs its periodic work, and the swarm's own halts and resumes go in as they happen.
//! What the replica reports comes back to the swarm: a halt anywhere halts the agent here, an
//! audited resume that clears its last epoch resumes it, a policy installed elsewhere is
//! installed here, and conflicts and audit alarms become log lines, events and metrics.
//!
//! Halt epochs are `halt time (ms) << 16 | member index`: unique in the cluster, and the
//! same halt seen twice is one epoch.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio::sync::{mpsc, oneshot};
use warden_actors::{AgentId, Event, HaltKind};
use warden_sync::certs::Identity;
use warden_sync::members::Members;
use warden_sync::policy::{PolicyVersion, MAX_POLICY_TEXT_BYTES};
use warden_sync::replica::{ReplicatedPool, SyncConfig, Timing, Tuning};
use warden_sync::transport::{Inbound, PeerState, Transport, TransportConfig};
use warden_sync::wire::{decode_message, encode_message};
use warden_sync::{NodeIx, Output, Replica, SyncEvent};

use crate::swarm::{escrow_dimension, Swarm, SwarmLedger};

/// What a cluster node is started with.
#[derive(Clone, Debug)]
pub struct ClusterOptions {
    /// The QUIC (UDP) address to listen on.
    pub listen: SocketAddr,
    /// The peers' addresses, resolved.
    pub peers: Vec<SocketAddr>,
    /// Every node's name (this one's is in its certificate).
    pub members: Vec<String>,
    /// The cluster CA, this node's certificate and key.
    pub identity: Identity,
    /// The replicated pools.
    pub pools: Vec<ReplicatedPool>,
    /// Timers.
    pub timing: Timing,
    /// How rights move.
    pub tuning: Tuning,
}

/// Why a cluster node could not start.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// The transport (certificates, address) refused to start.
    #[error(transparent)]
    Transport(#[from] warden_sync::transport::TransportError),
    /// The members, pools or certificate do not make a cluster node.
    #[error("{0}")]
    Config(String),
}

/// One peer as `GET /v1/cluster` shows it.
#[derive(Clone, Debug, serde::Serialize)]
pub struct PeerView {
    /// Its node name.
    pub name: String,
    /// `up`, `connecting` or `down`.
    pub state: &'static str,
    /// Its address, when known.
    pub addr: Option<String>,
    /// Our changes it has not acknowledged (ticks).
    pub lag: u64,
    /// Milliseconds since it last sent us anything.
    pub heard_ms_ago: Option<u64>,
    /// Message bytes received from it and sent to it.
    pub bytes_in: u64,
    /// Message bytes sent to it.
    pub bytes_out: u64,
}

/// One replicated pool dimension as `GET /v1/cluster` shows it (ledger units).
#[derive(Clone, Debug, serde::Serialize)]
pub struct RightsView {
    /// The pool.
    pub pool: String,
    /// The dimension.
    pub dimension: String,
    /// The cluster-wide limit.
    pub limit: u64,
    /// Rights this node holds.
    pub held: u64,
    /// Of which reserved or spent here.
    pub used: u64,
    /// The most this node may hold reserved or spent now (its ledger ceiling).
    pub ceiling: u64,
    /// The cap its heir granted (a bound on what it consumes or gives).
    pub cap: u64,
    /// Its epoch (bumped when its heir reclaimed rights from it).
    pub epoch: u32,
    /// Reserved or spent on every node, as last heard.
    pub used_cluster: u64,
    /// Whether this node is preparing to go offline.
    pub offline: bool,
}

/// The cluster as `GET /v1/cluster` shows it.
#[derive(Clone, Debug, serde::Serialize)]
pub struct ClusterView {
    /// This node's name.
    pub node: String,
    /// Every member's name.
    pub members: Vec<String>,
    /// The other members.
    pub peers: Vec<PeerView>,
    /// Rights per replicated pool dimension.
    pub rights: Vec<RightsView>,
    /// Policy versions present (more than one: concurrent edits, a conflict).
    pub policy_versions: Vec<String>,
    /// Audit alarms raised since start.
    pub audit_alarms: u64,
}

struct Shared {
    replica: Mutex<Replica<SwarmLedger>>,
    /// Taken at shutdown (`Transport::shutdown` consumes it: its events then end).
    transport: parking_lot::RwLock<Option<Transport>>,
    /// Where the transport listens (kept after shutdown).
    local_addr: SocketAddr,
    name: String,
    started: Instant,
    offline: Mutex<bool>,
    alarms: std::sync::atomic::AtomicU64,
}

/// A running cluster node. Cheap to clone.
#[derive(Clone)]
pub struct Cluster {
    shared: Arc<Shared>,
    stop: Arc<Mutex<Option<oneshot::Sender<()>>>>,
    task: Arc<Mutex<Option<tokio::task::JoinHandle<()>>>>,
}

impl Cluster {
    /// Starts the transport and the replica over `swarm` (which must have every replicated
    /// pool, journal attached). The replica starts from the escrow states the journal had.
    ///
    /// # Errors
    /// The transport's (certificates, address), or members and pools that do not fit.
    pub async fn start(swarm: Swarm, opts: ClusterOptions) -> Result<Cluster, ClusterError> {
        check_pools(&swarm, &opts.pools)?;
        let mut tcfg = TransportConfig::new(opts.listen, opts.identity.clone());
        tcfg.peers = opts.peers.clone();
        tcfg.seed = seed();
        let (transport, inbound) = Transport::start(tcfg).await?;
        let name = transport.node_name().as_str().to_owned();
        let others = opts.members.iter().filter(|m| **m != name).cloned();
        let members = Members::new(&name, others).map_err(|e| {
            ClusterError::Config(format!(
                "sync.members {:?} with this node `{name}` (its certificate's name): {e}",
                opts.members
            ))
        })?;
        let cfg = SyncConfig {
            members,
            pools: opts.pools,
            timing: opts.timing,
            tuning: opts.tuning,
            session: seed(),
        };
        let gossip = Duration::from_millis(cfg.timing.gossip_ms.max(1));
        let started = Instant::now();
        let names = cfg.members.names().to_vec();
        let mut replica = Replica::new(cfg, SwarmLedger::new(swarm.clone()), 0);
        let states = swarm.escrow_states();
        if !states.is_empty() {
            check_members(&swarm, &names)?;
        }
        for (pool, dim, state) in &states {
            check_shape(&replica, pool, dim, state)?;
            replica.restore_escrow(pool, dim, state);
        }
        if states.is_empty() {
            // Nothing journaled: maybe a first start, maybe a node whose data was lost. Its
            // shared pools wait for a peer's view (what it gave before is known there).
            replica.hold_until_synced();
        }
        swarm
            .record_cluster_members(&names)
            .map_err(|e| ClusterError::Config(format!("journaling the members: {e}")))?;
        let local_addr = transport.local_addr();
        let shared = Arc::new(Shared {
            replica: Mutex::new(replica),
            transport: parking_lot::RwLock::new(Some(transport)),
            local_addr,
            name,
            started,
            offline: Mutex::new(false),
            alarms: Default::default(),
        });
        let (stop_tx, stop_rx) = oneshot::channel();
        let driver = Driver {
            shared: Arc::clone(&shared),
            swarm,
            shared_policy: Mutex::new(None),
            pending: Mutex::new(Vec::new()),
            persist_failed: Default::default(),
        };
        // The counters exist from the start (at 0), so dashboards and alerts see them.
        for name in [
            "warden_sync_policy_conflicts_total",
            "warden_sync_audit_alarms_total",
            "warden_sync_messages_refused_total",
        ] {
            metrics::counter!(name).increment(0);
        }
        let task = tokio::spawn(driver.run(inbound, stop_rx, gossip));
        Ok(Cluster {
            shared,
            stop: Arc::new(Mutex::new(Some(stop_tx))),
            task: Arc::new(Mutex::new(Some(task))),
        })
    }

    /// This node's name.
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// The UDP address the transport listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.shared.local_addr
    }

    /// The cluster now: peers, their state and lag, rights per pool.
    pub fn view(&self) -> ClusterView {
        let r = self.shared.replica.lock();
        let now = self.shared.started.elapsed().as_millis() as u64;
        let transport = self
            .shared
            .transport
            .read()
            .as_ref()
            .map(|t| t.peers())
            .unwrap_or_default();
        let me = r.me();
        let members = r.members().clone();
        let peers = members
            .all()
            .filter(|&i| i != me)
            .map(|i| {
                let name = members.name(i).to_owned();
                let t = transport.iter().find(|p| p.name.as_deref() == Some(&name));
                let (lag, heard) = r.lag(i);
                PeerView {
                    state: match (r.is_up(i), t.map(|p| p.state)) {
                        (true, _) => "up",
                        (false, Some(PeerState::Connecting)) => "connecting",
                        _ => "down",
                    },
                    addr: t.map(|p| p.addr.to_string()),
                    lag,
                    heard_ms_ago: heard.map(|h| now.saturating_sub(h)),
                    bytes_in: t.map_or(0, |p| p.bytes_in),
                    bytes_out: t.map_or(0, |p| p.bytes_out),
                    name,
                }
            })
            .collect();
        let offline = *self.shared.offline.lock();
        let rights = r
            .escrows()
            .map(|(pool, dim, e)| RightsView {
                pool: pool.to_owned(),
                dimension: dim.to_owned(),
                limit: e.limit(),
                held: e.held(me),
                used: e.used(me),
                ceiling: e.ceiling(me),
                cap: e.grant(me).cap,
                epoch: e.grant(me).epoch,
                used_cluster: members.all().map(|i| e.used(i)).sum(),
                offline,
            })
            .collect();
        ClusterView {
            node: self.shared.name.clone(),
            members: members.names().to_vec(),
            peers,
            rights,
            policy_versions: r.policy_versions().into_iter().map(|v| v.digest).collect(),
            audit_alarms: self
                .shared
                .alarms
                .load(std::sync::atomic::Ordering::Relaxed),
        }
    }

    /// Prepares this node to go offline for `lease_ms`: it asks for rights of every
    /// replicated pool (`want`: amounts per (pool, dimension); `None`: what it holds free plus
    /// half of what the others hold free) and a cap over all it holds. Rights arrive as peers
    /// answer; [`Cluster::view`] shows them. `lease_ms` 0 ends the preparation.
    pub fn prepare_offline(&self, lease_ms: u64, want: Option<BTreeMap<(String, String), u64>>) {
        let mut r = self.shared.replica.lock();
        if lease_ms == 0 {
            r.end_offline();
        } else {
            r.prepare_offline(lease_ms, want.as_ref());
        }
        *self.shared.offline.lock() = lease_ms > 0;
    }

    /// Records an agent registered here in the replicated registry (its home is this node).
    /// Another node registering the same id is reported as a conflict (a log line).
    pub fn register(&self, agent: &str, pool: &str) {
        self.shared.replica.lock().register(agent, pool);
    }

    /// An operator halted `agent` again while it was halted here: the kernel records nothing
    /// new, but the cluster gets a new epoch (the wall clock's ms, this member), so a resume
    /// on a node that has not seen this halt does not lift it.
    pub fn halt_again(&self, agent: &str) {
        let ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let mut r = self.shared.replica.lock();
        let me = u64::from(r.me());
        r.halt(agent, (ms << 16) | me);
    }

    /// The halt epochs the cluster holds for `agent` (empty: not halted anywhere that this
    /// node knows of). An agent registered while halted in the cluster is halted at once.
    pub fn halt_epochs(&self, agent: &str) -> Vec<u64> {
        self.shared.replica.lock().halt_epochs(agent)
    }

    /// Stops the loop and the transport.
    pub async fn shutdown(&self) {
        if let Some(stop) = self.stop.lock().take() {
            let _ = stop.send(());
        }
        let task = self.task.lock().take();
        if let Some(task) = task {
            let _ = task.await;
        }
    }
}

/// Every replicated pool must be a pool of the swarm, in dimensions a ledger limits.
fn check_pools(swarm: &Swarm, pools: &[ReplicatedPool]) -> Result<(), ClusterError> {
    for p in pools {
        if swarm.pool(&p.path).is_none() {
            return Err(ClusterError::Config(format!(
                "sync.pools names `{}`, which is not a pool of the policy",
                p.path
            )));
        }
        if let Some((dim, _)) = p.limits.iter().find(|(d, _)| escrow_dimension(d).is_none()) {
            return Err(ClusterError::Config(format!(
                "sync.pools.{}: `{dim}` is not a dimension a pool limits",
                p.path
            )));
        }
    }
    Ok(())
}

/// The members the journal's shared pools were split among must be the config's: another
/// member at an index (a node replaced, a name changed) would take over rows it never wrote.
fn check_members(swarm: &Swarm, names: &[String]) -> Result<(), ClusterError> {
    match swarm.cluster_members() {
        Some(recorded) if recorded != names => Err(ClusterError::Config(format!(
            "the journal holds shared pools split among members {recorded:?}, the config says {names:?}: a replaced or renamed member would take over rights and spending it never had. Keep the members as they were, or share a new pool (a new path) and stop sharing this one"
        ))),
        _ => Ok(()),
    }
}

/// The journal's escrow state of a shared pool must fit the config: the same members and
/// limit. Another shape would start the pool afresh and forget what was spent and given
/// (an overspend), so the node refuses to start instead (fail closed).
fn check_shape(
    replica: &Replica<SwarmLedger>,
    pool: &str,
    dim: &str,
    state: &warden_sync::Escrow,
) -> Result<(), ClusterError> {
    let Some(now) = replica.escrow(pool, dim) else {
        return Ok(()); // no longer shared: its rights stay in the journal, unused
    };
    if now.same_shape(state) {
        return Ok(());
    }
    Err(ClusterError::Config(format!(
        "the journal holds pool {pool} {dim} shared by {} members with limit {}, the config says {} members with limit {}: changing the members or the limit of a shared pool would forget what was spent and given. Keep them as they were, or share a new pool (a new path) and stop sharing this one",
        state.members(),
        state.limit(),
        now.members(),
        now.limit()
    )))
}

/// A seed from the clock and the process: sessions and backoff jitter differ per start.
fn seed() -> u64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    t ^ (u64::from(std::process::id()) << 32) ^ 0x9E37_79B9_7F4A_7C15
}

struct Driver {
    shared: Arc<Shared>,
    swarm: Swarm,
    /// The policy version last offered to the cluster (none yet: `None`).
    shared_policy: Mutex<Option<u64>>,
    /// Answers to probes, sent with the next outputs.
    pending: Mutex<Vec<Output>>,
    /// The journal refused an escrow state (logged once; nothing is sent from then on).
    persist_failed: std::sync::atomic::AtomicBool,
}

impl Driver {
    async fn run(
        self,
        mut inbound: mpsc::Receiver<Inbound>,
        mut stop: oneshot::Receiver<()>,
        gossip: Duration,
    ) {
        let mut events = self.swarm.events_without_decisions();
        let mut timer = tokio::time::interval(gossip);
        timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let outputs = tokio::select! {
                _ = &mut stop => break,
                msg = inbound.recv() => match msg {
                    Some(m) => self.inbound(m),
                    None => break,
                },
                _ = timer.tick() => {
                    self.drain_local_events(&mut events);
                    self.tick()
                }
            };
            self.deliver(outputs).await;
            self.apply_events();
            let answers = std::mem::take(&mut *self.pending.lock());
            self.deliver(answers).await;
        }
        let transport = self.shared.transport.write().take();
        if let Some(t) = transport {
            t.shutdown().await;
        }
    }

    fn now_ms(&self) -> u64 {
        self.shared.started.elapsed().as_millis() as u64
    }

    fn index(&self, peer: &str) -> Option<NodeIx> {
        self.shared.replica.lock().members().index(peer)
    }

    fn inbound(&self, m: Inbound) -> Vec<Output> {
        match m {
            Inbound::Up { peer, .. } => {
                match self.index(&peer) {
                    Some(i) => self.shared.replica.lock().on_connected(i),
                    None => {
                        eprintln!("warden sync: node `{peer}` connected but is not in sync.members; ignored");
                        Vec::new()
                    }
                }
            }
            Inbound::Down { peer, reason } => {
                if let Some(i) = self.index(&peer) {
                    self.shared.replica.lock().on_disconnected(i);
                    eprintln!("warden sync: peer `{peer}` down: {reason}");
                }
                Vec::new()
            }
            Inbound::Message { peer, body } => {
                let Some(i) = self.index(&peer) else {
                    return Vec::new();
                };
                match decode_message(&body) {
                    Ok(msg) => {
                        let now = self.now_ms();
                        self.shared.replica.lock().on_message(now, i, msg)
                    }
                    Err(e) => {
                        metrics::counter!("warden_sync_messages_refused_total").increment(1);
                        eprintln!("warden sync: a message from `{peer}` was refused: {e}");
                        Vec::new()
                    }
                }
            }
        }
    }

    /// The periodic work, after telling the replica this node's journal head and offering a
    /// policy installed here.
    fn tick(&self) -> Vec<Output> {
        self.share_policy();
        let now = self.now_ms();
        let mut r = self.shared.replica.lock();
        // Checkpoints, not the exact head: a peer may later probe any claim, and checkpoints
        // are what this node keeps hashes of.
        if let Some((seq, hash)) = self.swarm.journal_checkpoint() {
            r.set_head(warden_sync::heads::AuditHead { seq, hash });
        }
        let out = r.tick(now);
        self.publish_metrics(&r);
        out
    }

    /// Reads what the swarm announced since the last tick without waiting (the driver is not
    /// woken by every decision). When the bus lagged, halts may have been missed: every local
    /// agent is then checked (a halted one the cluster does not hold halted gets an epoch).
    fn drain_local_events(&self, events: &mut warden_actors::EventStream) {
        use futures_core::Stream;
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        let mut lagged = false;
        loop {
            match std::pin::Pin::new(&mut *events).poll_next(&mut cx) {
                std::task::Poll::Ready(Some(Ok(ev))) => self.local_event(&ev),
                std::task::Poll::Ready(Some(Err(_))) => lagged = true,
                _ => break,
            }
        }
        if lagged {
            self.share_local_halts();
        }
    }

    /// Every local agent that is halted but holds no halt epoch in the cluster gets one.
    fn share_local_halts(&self) {
        let mut r = self.shared.replica.lock();
        let me = u64::from(r.me());
        for id in self.swarm.agent_ids() {
            let halted = self.swarm.agent(&id).and_then(|h| h.snapshot().halt);
            if let Some(record) = halted {
                if r.halt_epochs(id.as_str()).is_empty() {
                    r.halt(id.as_str(), (record.at_ms << 16) | me);
                }
            }
        }
    }

    /// The swarm's own halts and resumes go into the replica.
    fn local_event(&self, ev: &Event) {
        if !matches!(ev, Event::Halt { .. } | Event::Resume { .. }) {
            return; // decisions and the rest: nothing to share
        }
        let mut r = self.shared.replica.lock();
        let me = u64::from(r.me());
        match ev {
            // Every halt here is an epoch of its own, also one that applies a peer's halt: a
            // resume elsewhere that has not seen it cannot lift it (fail closed; a second
            // resume may be needed). Applying a halt to a halted agent makes no event: no loop.
            Event::Halt { agent, record } => {
                r.halt(agent.as_str(), (record.at_ms << 16) | me);
            }
            Event::Resume { agent, .. } => {
                let epochs = r.halt_epochs(agent.as_str());
                r.resume(agent.as_str(), &epochs);
            }
            _ => {}
        }
    }

    /// A policy installed here that the cluster does not have yet goes into the register.
    fn share_policy(&self) {
        let version = self.swarm.policy_version();
        if version.is_none() || *self.shared_policy.lock() == version {
            return;
        }
        *self.shared_policy.lock() = version;
        let Some((version, text)) = self.swarm.policy_text() else {
            return;
        };
        if text.len() > MAX_POLICY_TEXT_BYTES {
            eprintln!(
                "warden sync: policy version {version} is {} bytes, above the {MAX_POLICY_TEXT_BYTES} bytes sync shares: it stays on this node; install it on every node",
                text.len()
            );
            return;
        }
        let digest = blake3::hash(text.as_bytes()).to_hex().to_string();
        let mut r = self.shared.replica.lock();
        if r.policy_versions().iter().any(|v| v.digest == digest) {
            return;
        }
        let node = r.me();
        r.put_policy(PolicyVersion {
            node,
            version,
            digest,
            text,
        });
    }

    /// Carries out the replica's outputs in order: a state is journaled and durable before
    /// any message after it leaves.
    async fn deliver(&self, outputs: Vec<Output>) {
        for o in outputs {
            match o {
                Output::Persist { pool, dim, state } => {
                    let journaled = self.swarm.record_escrow(&pool, &dim, &state);
                    if journaled.is_err() || self.swarm.durable().await.is_err() {
                        // Nothing may leave that the journal does not hold: stop sending.
                        if !self
                            .persist_failed
                            .swap(true, std::sync::atomic::Ordering::Relaxed)
                        {
                            eprintln!("warden sync: the journal refused an escrow state; sync stops sending");
                        }
                        return;
                    }
                }
                Output::Send { to, msg } => {
                    let name = self.shared.replica.lock().members().name(to).to_owned();
                    match encode_message(&msg) {
                        Ok(bytes) => {
                            if let Some(t) = self.shared.transport.read().as_ref() {
                                let _ = t.send(&name, bytes);
                            }
                        }
                        Err(e) => eprintln!(
                            "warden sync: a message to `{name}` could not be encoded: {e}"
                        ),
                    }
                }
                Output::Close { to, reason } => {
                    let name = self.shared.replica.lock().members().name(to).to_owned();
                    eprintln!("warden sync: peer `{name}` refused: {reason}");
                }
            }
        }
    }

    /// What the replica reports, applied to the swarm.
    fn apply_events(&self) {
        let (events, dropped) = self.shared.replica.lock().drain_events();
        if dropped > 0 {
            eprintln!("warden sync: {dropped} sync events were dropped (queue full)");
        }
        for e in events {
            self.apply(e);
        }
    }

    fn apply(&self, e: SyncEvent) {
        match e {
            SyncEvent::HaltAdded { agent, epoch } => {
                let node = self.member_of_epoch(epoch);
                if let Ok(id) = AgentId::new(&agent) {
                    if self.swarm.agent(&id).is_some() {
                        let why = format!("halted on node {node} (cluster halt)");
                        let _ = self.swarm.halt_inline(id, HaltKind::External, why);
                    }
                }
            }
            SyncEvent::HaltCleared { agent, clear, .. } => {
                if let (true, Ok(id)) = (clear, AgentId::new(&agent)) {
                    if self.swarm.agent(&id).is_some() {
                        let _ = self
                            .swarm
                            .resume_inline(&id, "cluster (resumed on another node)");
                    }
                }
            }
            SyncEvent::PolicyChanged(v) => self.install_policy(v),
            SyncEvent::PolicyConflict(versions) => {
                metrics::counter!("warden_sync_policy_conflicts_total").increment(1);
                let names: Vec<String> = versions
                    .iter()
                    .map(|v| format!("{} (v{} from node {})", &v.digest[..12], v.version, v.node))
                    .collect();
                eprintln!(
                    "warden sync: concurrent policy edits, both kept until one is installed again: {}",
                    names.join(", ")
                );
            }
            SyncEvent::AuditAlarm(a) => {
                self.shared
                    .alarms
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                metrics::counter!("warden_sync_audit_alarms_total").increment(1);
                let node = self.shared.replica.lock().members().name(a.node).to_owned();
                eprintln!("warden sync: AUDIT ALARM: node `{node}`: {}", a.reason);
            }
            SyncEvent::PeerRefused { peer, reason } => {
                let node = self.shared.replica.lock().members().name(peer).to_owned();
                eprintln!("warden sync: peer `{node}` refused: {reason}");
            }
            SyncEvent::RegistryConflict(c) => {
                eprintln!("warden sync: agent `{}` registered on two nodes", c.agent);
            }
            SyncEvent::Probed { peer, seq } => {
                let hash = self.swarm.journal_checkpoint_at(seq);
                let proof = self.shared.replica.lock().proof(peer, seq, hash);
                self.pending.lock().push(proof);
            }
            SyncEvent::RightsReceived { .. }
            | SyncEvent::RightsGiven { .. }
            | SyncEvent::Reclaimed { .. }
            | SyncEvent::Fenced { .. } => {}
        }
    }

    fn member_of_epoch(&self, epoch: u64) -> String {
        let r = self.shared.replica.lock();
        let ix = (epoch & 0xffff) as NodeIx;
        if usize::from(ix) < r.members().len() {
            r.members().name(ix).to_owned()
        } else {
            "?".into()
        }
    }

    /// Installs a policy another node installed, unless it is the one in force.
    fn install_policy(&self, v: PolicyVersion) {
        let current = self.swarm.policy_text().map(|(_, t)| t);
        if current.as_deref() == Some(v.text.as_str()) {
            return;
        }
        match self.swarm.reload_policy(&v.text) {
            Ok((version, _)) => eprintln!(
                "warden sync: installed the policy {} from node {} as version {version}",
                &v.digest[..12],
                v.node
            ),
            Err(e) => eprintln!(
                "warden sync: the policy from node {} was refused: {e}",
                v.node
            ),
        }
    }

    fn publish_metrics(&self, r: &Replica<SwarmLedger>) {
        let me = r.me();
        let (mut up, mut down) = (0u32, 0u32);
        for i in r.members().all().filter(|&i| i != me) {
            if r.is_up(i) {
                up += 1;
            } else {
                down += 1;
            }
        }
        metrics::gauge!("warden_sync_peers", "state" => "up").set(f64::from(up));
        metrics::gauge!("warden_sync_peers", "state" => "down").set(f64::from(down));
        let now = self.now_ms();
        let (mut lag, mut silent_ms) = (0u64, 0u64);
        for i in r.members().all().filter(|&i| i != me) {
            let (l, heard) = r.lag(i);
            lag = lag.max(l);
            silent_ms = silent_ms.max(now.saturating_sub(heard.unwrap_or(0)));
        }
        metrics::gauge!("warden_sync_lag_changes_max").set(lag as f64);
        metrics::gauge!("warden_sync_silence_seconds_max").set(silent_ms as f64 / 1000.0);
        let (bytes_in, bytes_out) = self
            .shared
            .transport
            .read()
            .as_ref()
            .map_or((0, 0), |t| t.bytes_total());
        metrics::counter!("warden_sync_bytes_total", "direction" => "in").absolute(bytes_in);
        metrics::counter!("warden_sync_bytes_total", "direction" => "out").absolute(bytes_out);
        for (pool, dim, e) in r.escrows() {
            // The ledger's keys, as every budget metric (`cost_micro_usd`, `risk_micro`).
            let key = match dim {
                "cost_usd" => "cost_micro_usd",
                "risk" => "risk_micro",
                other => other,
            };
            metrics::gauge!("warden_escrow_rights", "pool" => pool.to_owned(), "dimension" => key.to_owned())
                .set(e.held(me) as f64);
        }
    }
}
