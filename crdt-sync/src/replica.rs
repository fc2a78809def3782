//! The sans-IO replication core: one node's replicated state and its protocol with the peers.
//!
//! Shaped like `quinn-proto`: a [`Replica`] takes messages and the time
//! ([`Replica::on_message`], [`Replica::tick`]) and returns what to do ([`Output`]: persist a
//! state, send a message, close a link); it never opens a socket, reads a clock or spawns a
//! thread, so the simulator drives it deterministically and the QUIC transport is a thin shell.
//!
//! The node's ledger is reached through [`LocalLedger`]: for each replicated pool dimension the
//! replica sets the ledger's **ceiling** (the most the node may hold reserved or spent there:
//! its own rights, `min(cap, inflow − reclaimed) − given`, see [`crate::escrow`]); the ledger
//! admits a reservation only within it, under its own locks, all-or-nothing with the rest of
//! the path. Rights leave the node only after the ledger has lowered the ceiling (which fails
//! when they are in use), so a transfer can never take rights a reservation holds.
//!
//! **Write-ahead rule**: every [`Output::Persist`] must be durable before any later
//! [`Output::Send`] is handed to the transport: a transfer, grant or reclamation this node
//! wrote must survive a crash before a peer can act on it (else a restarted node would hold
//! rights it gave away). A restarted node merges what it persisted ([`Replica::restore_escrow`])
//! before it talks to anyone, and its peers send it everything again.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

use crate::escrow::{Ask, Escrow};
use crate::halts::HaltSet;
use crate::heads::{AuditAlarm, AuditHead, Heads};
use crate::members::{Members, NodeIx};
use crate::policy::{PolicyRegister, PolicyVersion};
use crate::registry::{AgentEntry, Registry, RegistryConflict};
use crate::wire::{Item, ItemKey, Message};

mod config;
mod escrow_work;
mod gossip;
#[cfg(test)]
mod tests;

pub use config::{ReplicatedPool, SyncConfig, Timing, Tuning};

/// Events queued for the node before the oldest are dropped (and counted).
pub const EVENTS_MAX: usize = 10_000;

/// What the replica needs of the node's ledger (the supervisor implements it over its
/// accounts; tests over a map). Amounts are the ledger's integer units.
pub trait LocalLedger {
    /// What the node holds reserved or spent in `pool`'s `dim` now.
    fn used(&self, pool: &str, dim: &str) -> u64;
    /// Everything reservations ever asked of `pool`'s `dim` here, admitted or refused
    /// (cumulative): the demand that moves rights to this node.
    fn asked(&self, pool: &str, dim: &str) -> u64;
    /// Sets the most the node may hold reserved or spent there. With `strict`, fails and
    /// changes nothing when more than `ceiling` is in use (rights about to be given away);
    /// without, always sets it (rights taken back: new reservations wait for room).
    fn set_ceiling(&self, pool: &str, dim: &str, ceiling: u64, strict: bool) -> bool;
}

/// What the driver must do, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// Make this pool dimension's state durable (the journal) before any later `Send`.
    Persist {
        /// The pool.
        pool: String,
        /// The dimension.
        dim: String,
        /// The whole state to record.
        state: Escrow,
    },
    /// Send `msg` to member `to`.
    Send {
        /// The member.
        to: NodeIx,
        /// The message.
        msg: Message,
    },
    /// Close the link to member `to` (it is misconfigured or misbehaves); say `reason`.
    Close {
        /// The member.
        to: NodeIx,
        /// One line for the log.
        reason: String,
    },
}

/// What changed that the node acts on or reports (an event, a log line, a metric).
#[derive(Debug, Clone, PartialEq)]
pub enum SyncEvent {
    /// A peer halted `agent`: halt it here too.
    HaltAdded {
        /// The agent.
        agent: String,
        /// The halt's epoch.
        epoch: u64,
    },
    /// Epochs of `agent` were cleared by an audited resume somewhere.
    HaltCleared {
        /// The agent.
        agent: String,
        /// The epochs cleared.
        epochs: Vec<u64>,
        /// Whether no halt epoch is left (the agent may run again).
        clear: bool,
    },
    /// The cluster's policy is now this version (one value, not ours).
    PolicyChanged(PolicyVersion),
    /// Concurrent policy edits: every version present, until one supersedes them.
    PolicyConflict(Vec<PolicyVersion>),
    /// A peer's journal contradicts what it said before.
    AuditAlarm(AuditAlarm),
    /// Two nodes registered the same agent id.
    RegistryConflict(RegistryConflict),
    /// Rights reached this node.
    RightsReceived {
        /// The pool.
        pool: String,
        /// The dimension.
        dim: String,
        /// How many.
        amount: u64,
    },
    /// This node gave rights away (rebalancing).
    RightsGiven {
        /// The pool.
        pool: String,
        /// The dimension.
        dim: String,
        /// To whom.
        to: NodeIx,
        /// How many.
        amount: u64,
    },
    /// This node took back rights of a silent ward.
    Reclaimed {
        /// The pool.
        pool: String,
        /// The dimension.
        dim: String,
        /// The ward.
        from: NodeIx,
        /// How many.
        amount: u64,
    },
    /// This node's heir reclaimed rights of ours while we were away.
    Fenced {
        /// The pool.
        pool: String,
        /// The dimension.
        dim: String,
        /// Our new epoch.
        epoch: u32,
    },
    /// A peer asks for this node's journal hash at `seq` (a claim it made earlier): answer
    /// with [`Replica::proof`].
    Probed {
        /// The peer.
        peer: NodeIx,
        /// The sequence number.
        seq: u64,
    },
    /// A peer was refused (another cluster shape, a broken message).
    PeerRefused {
        /// The member.
        peer: NodeIx,
        /// Why.
        reason: String,
    },
}

/// The link to one peer.
#[derive(Debug, Clone, Default)]
struct Link {
    /// The transport says it is connected.
    connected: bool,
    /// When our Hello last went out on this connection.
    hello_at_ms: u64,
    /// Its session, once its Hello was accepted on the current connection.
    session: Option<u64>,
    /// Our ticks it acknowledged.
    acked: u64,
    /// Our ticks sent to it (acknowledged or not).
    sent: u64,
    /// When `sent` last moved or a retransmission went out.
    sent_at_ms: u64,
    /// Its ticks received without a gap.
    received_upto: u64,
    /// When it last sent us anything.
    heard_ms: Option<u64>,
}

/// Per pool dimension, what only this node knows: its demand.
#[derive(Debug, Clone, Default)]
struct Demand {
    /// Units asked for since the last sample (by [`Replica::note_demand`]).
    pending: u64,
    /// The ledger's cumulative asked amount at the last sample.
    asked_seen: u64,
    /// The smoothed rate, units per second.
    rate_per_s: u64,
    /// Preparing to go offline: rights wanted and lease asked for.
    offline: Option<(u64, u64)>,
}

/// One node's replicated state and protocol. See the module documentation.
pub struct Replica<L: LocalLedger> {
    cfg: SyncConfig,
    ledger: L,
    escrow: BTreeMap<(String, String), Escrow>,
    demand: BTreeMap<(String, String), Demand>,
    halts: HaltSet,
    policy: PolicyRegister,
    heads: Heads,
    registry: Registry,
    tick: u64,
    by_tick: BTreeMap<u64, ItemKey>,
    tick_of: HashMap<ItemKey, u64>,
    links: Vec<Link>,
    persist: BTreeSet<(String, String)>,
    /// Pool dimensions held at 0 until a peer's state of them arrived (a node that starts
    /// with nothing journaled may be one whose data was lost: its peers know what it gave).
    held_back: BTreeSet<(String, String)>,
    events: VecDeque<SyncEvent>,
    events_dropped: u64,
    started_ms: u64,
    next_escrow_ms: u64,
    next_probe_ms: u64,
}

impl<L: LocalLedger> Replica<L> {
    /// A replica at time `now_ms` (the driver's monotonic clock), with every replicated pool
    /// at its initial split. Sets the ledger's ceilings.
    pub fn new(cfg: SyncConfig, ledger: L, now_ms: u64) -> Self {
        let n = cfg.members.len();
        let mut escrow = BTreeMap::new();
        for pool in &cfg.pools {
            for (dim, limit) in &pool.limits {
                let state = Escrow::new(*limit, n, cfg.tuning.initial_cap_permille);
                escrow.insert((pool.path.clone(), dim.clone()), state);
            }
        }
        let mut r = Self {
            ledger,
            demand: escrow
                .keys()
                .map(|k| (k.clone(), Demand::default()))
                .collect(),
            escrow,
            halts: HaltSet::default(),
            policy: PolicyRegister::default(),
            heads: Heads::new(n),
            registry: Registry::default(),
            tick: 0,
            by_tick: BTreeMap::new(),
            tick_of: HashMap::new(),
            links: vec![Link::default(); n],
            persist: BTreeSet::new(),
            held_back: BTreeSet::new(),
            events: VecDeque::new(),
            events_dropped: 0,
            started_ms: now_ms,
            next_escrow_ms: now_ms,
            next_probe_ms: now_ms + cfg.timing.probe_ms,
            cfg,
        };
        let keys: Vec<_> = r.escrow.keys().cloned().collect();
        for key in keys {
            r.apply_ceiling(&key);
            // In the first delta to every peer, even before anything changed: a peer that
            // holds its pools back until it hears them ([`Replica::hold_until_synced`]) waits
            // for exactly this.
            r.touch(ItemKey::Escrow(key.0, key.1));
        }
        r
    }

    /// The members.
    pub fn members(&self) -> &Members {
        &self.cfg.members
    }

    /// This node's index.
    pub fn me(&self) -> NodeIx {
        self.cfg.members.me()
    }

    /// The config.
    pub fn config(&self) -> &SyncConfig {
        &self.cfg
    }

    /// The ledger the replica sets ceilings on.
    pub fn ledger(&self) -> &L {
        &self.ledger
    }

    /// The state of one replicated pool dimension.
    pub fn escrow(&self, pool: &str, dim: &str) -> Option<&Escrow> {
        self.escrow.get(&(pool.to_owned(), dim.to_owned()))
    }

    /// Every replicated pool dimension, in key order.
    pub fn escrows(&self) -> impl Iterator<Item = (&str, &str, &Escrow)> {
        self.escrow
            .iter()
            .map(|((p, d), e)| (p.as_str(), d.as_str(), e))
    }

    /// Merges a persisted state at start (before any message): the rights this node had.
    /// Unknown pools and states of another shape are ignored (the node refuses to start
    /// before: `supervisor::cluster` checks the shape first).
    pub fn restore_escrow(&mut self, pool: &str, dim: &str, state: &Escrow) {
        let key = (pool.to_owned(), dim.to_owned());
        let Some(mine) = self.escrow.get_mut(&key) else {
            return;
        };
        if mine.same_shape(state) {
            mine.merge(state);
            self.apply_ceiling(&key);
        }
    }

    /// Holds every shared pool at a ceiling of 0 until a peer's state of it has been merged:
    /// for a node that starts with nothing journaled, which may be a node whose data was lost
    /// or wiped (its peers hold the rights it gave away). A cluster of one has no peer to
    /// wait for and is not held.
    pub fn hold_until_synced(&mut self) {
        if self.cfg.members.len() < 2 {
            return;
        }
        self.held_back = self.escrow.keys().cloned().collect();
        let keys: Vec<_> = self.held_back.iter().cloned().collect();
        for key in keys {
            self.apply_ceiling(&key);
        }
    }

    /// Whether shared pools still wait for a peer's state ([`Replica::hold_until_synced`]).
    pub fn held_back(&self) -> bool {
        !self.held_back.is_empty()
    }

    /// The agent's halt epochs known to the cluster.
    pub fn halt_epochs(&self, agent: &str) -> Vec<u64> {
        self.halts.epochs(agent)
    }

    /// The policy versions present (several: a conflict).
    pub fn policy_versions(&self) -> Vec<PolicyVersion> {
        self.policy.values()
    }

    /// The last known audit head of `node`.
    pub fn head(&self, node: NodeIx) -> Option<AuditHead> {
        self.heads.head(node)
    }

    /// The registration of `agent`.
    pub fn agent(&self, agent: &str) -> Option<&AgentEntry> {
        self.registry.get(agent)
    }

    /// Takes the events queued so far (and how many were dropped at [`EVENTS_MAX`]).
    pub fn drain_events(&mut self) -> (Vec<SyncEvent>, u64) {
        let dropped = std::mem::take(&mut self.events_dropped);
        (self.events.drain(..).collect(), dropped)
    }

    // ---- what the node tells the replica ----

    /// The node halted `agent` with `epoch` (unique in the cluster).
    pub fn halt(&mut self, agent: &str, epoch: u64) {
        if self.halts.halt(self.me(), agent, epoch) {
            self.touch(ItemKey::Halts(agent.to_owned()));
        }
    }

    /// An audited resume of `agent` here clears the epochs it names. Returns those removed.
    pub fn resume(&mut self, agent: &str, epochs: &[u64]) -> Vec<u64> {
        let removed = self.halts.resume(agent, epochs);
        if !removed.is_empty() {
            self.touch(ItemKey::Halts(agent.to_owned()));
        }
        removed
    }

    /// The node installed a policy version (an operator's PUT).
    pub fn put_policy(&mut self, version: PolicyVersion) {
        self.policy.write(self.me(), version);
        self.touch(ItemKey::Policy);
    }

    /// The node's journal head moved.
    pub fn set_head(&mut self, head: AuditHead) {
        if let Ok(true) = self.heads.merge(self.me(), head) {
            self.touch(ItemKey::Head(self.me()));
        }
    }

    /// The node registered `agent` in `pool`.
    pub fn register(&mut self, agent: &str, pool: &str) {
        let entry = AgentEntry {
            home: self.me(),
            pool: pool.to_owned(),
        };
        match self.registry.merge(agent, entry) {
            Ok(true) => self.touch(ItemKey::Agent(agent.to_owned())),
            Ok(false) => {}
            Err(conflict) => self.event(SyncEvent::RegistryConflict(conflict)),
        }
    }

    /// A step asked for `amount` in `pool`'s `dim` (admitted or not): the demand that moves
    /// rights here before they run out.
    pub fn note_demand(&mut self, pool: &str, dim: &str, amount: u64) {
        if let Some(d) = self.demand.get_mut(&(pool.to_owned(), dim.to_owned())) {
            d.pending = d.pending.saturating_add(amount);
        }
    }

    /// Prepares to go offline: asks for `want` rights of every replicated pool dimension
    /// named (when `None`: what it holds free plus half of what the others hold free) and a cap
    /// over all this node holds, with a lease of `lease_ms` (bounded by the config's
    /// `max_offline_ms`). Takes effect through the heir and the donors at the next ticks.
    pub fn prepare_offline(
        &mut self,
        lease_ms: u64,
        want: Option<&BTreeMap<(String, String), u64>>,
    ) {
        let n = self.cfg.members.len() as u64;
        let lease_ms = lease_ms.min(self.cfg.timing.max_offline_ms);
        for (key, d) in self.demand.iter_mut() {
            let e = &self.escrow[key];
            let mine = e.available(self.cfg.members.me());
            let others: u64 = (0..n as NodeIx).map(|i| e.available(i)).sum::<u64>() - mine;
            let asked = match want {
                Some(w) => match w.get(key) {
                    Some(&a) => a,
                    None => continue,
                },
                None => mine + others / 2,
            };
            d.offline = Some((asked.max(1), lease_ms));
        }
    }

    /// Back online: stop asking for offline rights.
    pub fn end_offline(&mut self) {
        self.demand.values_mut().for_each(|d| d.offline = None);
    }

    // ---- internals shared by the submodules ----

    fn event(&mut self, e: SyncEvent) {
        if self.events.len() >= EVENTS_MAX {
            self.events.pop_front();
            self.events_dropped += 1;
        }
        self.events.push_back(e);
    }

    /// Records that `key` changed: it takes the next tick.
    fn touch(&mut self, key: ItemKey) {
        self.tick += 1;
        if let Some(old) = self.tick_of.insert(key.clone(), self.tick) {
            self.by_tick.remove(&old);
        }
        self.by_tick.insert(self.tick, key);
    }

    /// Sets the ledger's ceiling of `key` from the escrow (never strict: raising, or rights
    /// taken back).
    fn apply_ceiling(&mut self, key: &(String, String)) {
        let ceiling = match self.held_back.contains(key) {
            true => 0,
            false => self.escrow[key].ceiling(self.me()),
        };
        self.ledger.set_ceiling(&key.0, &key.1, ceiling, false);
    }

    fn item(&self, key: &ItemKey) -> Option<Item> {
        Some(match key {
            ItemKey::Escrow(p, d) => Item::Escrow {
                pool: p.clone(),
                dim: d.clone(),
                state: self.escrow.get(&(p.clone(), d.clone()))?.clone(),
            },
            ItemKey::Halts(a) => Item::Halts {
                agent: a.clone(),
                set: self.halts.entry(a)?.clone(),
            },
            ItemKey::Policy => Item::Policy(self.policy.clone()),
            ItemKey::Head(n) => Item::Head {
                node: *n,
                head: self.heads.head(*n)?,
            },
            ItemKey::Agent(a) => Item::Agent {
                id: a.clone(),
                entry: self.registry.get(a)?.clone(),
            },
        })
    }
}

/// The escrow key of an item's pool and dimension.
fn escrow_key(pool: &str, dim: &str) -> (String, String) {
    (pool.to_owned(), dim.to_owned())
}

impl Ask {
    fn differs_much(&self, other: &Ask, slack: u64) -> bool {
        self.want_rights != other.want_rights
            || self.lease_ms != other.lease_ms
            || self.want_cap.abs_diff(other.want_cap) > slack
            || self.demand_per_s.abs_diff(other.demand_per_s) > other.demand_per_s / 4 + 1
    }
}
