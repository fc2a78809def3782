//! Replicas driven through a simulated network: loss, duplication, reordering, delay,
//! partitions, crashes with restarts from what was persisted, silent nodes and offline nodes.
//! Σ used ≤ limit is checked after every event; after a heal every replica is equal.

use std::cell::RefCell;
use std::collections::BinaryHeap;

use super::*;
use crate::members::Members;

const POOL: &str = "swarm";
const DIM: &str = "cost_usd";

/// The node's ledger for one pool dimension: used and the ceiling the replica sets.
#[derive(Default)]
struct MemLedger {
    used: RefCell<u64>,
    ceiling: RefCell<u64>,
}

impl LocalLedger for MemLedger {
    fn used(&self, _: &str, _: &str) -> u64 {
        *self.used.borrow()
    }
    fn asked(&self, _: &str, _: &str) -> u64 {
        0 // the tests note demand themselves
    }
    fn set_ceiling(&self, _: &str, _: &str, ceiling: u64, strict: bool) -> bool {
        if strict && *self.used.borrow() > ceiling {
            return false;
        }
        *self.ceiling.borrow_mut() = ceiling;
        true
    }
}

impl MemLedger {
    fn reserve(&self, amount: u64) -> bool {
        let mut used = self.used.borrow_mut();
        if *used + amount > *self.ceiling.borrow() {
            return false;
        }
        *used += amount;
        true
    }
    fn release(&self, amount: u64) {
        let mut used = self.used.borrow_mut();
        *used = used.saturating_sub(amount);
    }
}

/// xorshift64*: the tests' only randomness, from a seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn chance(&mut self, permille: u64) -> bool {
        self.below(1000) < permille
    }
}

fn timing() -> Timing {
    Timing {
        gossip_ms: 20,
        retransmit_ms: 200,
        escrow_ms: 50,
        lease_ms: 2_000,
        max_offline_ms: 60_000,
        max_drift_ppm: 10_000,
        margin_ms: 200,
        probe_ms: 500,
    }
}

fn config(n: usize, me: usize, limit: u64, session: u64) -> SyncConfig {
    // Zero-padded: members are numbered in sorted name order, as the tests number them.
    let names: Vec<String> = (0..n).map(|i| format!("n{i:02}")).collect();
    let peers = names.iter().filter(|x| **x != names[me]).cloned();
    SyncConfig {
        members: Members::new(&names[me], peers).unwrap(),
        pools: vec![ReplicatedPool {
            path: POOL.into(),
            limits: vec![(DIM.into(), limit)],
        }],
        timing: timing(),
        tuning: Tuning {
            initial_cap_permille: 500,
            float_window_ms: 2_000,
            min_transfer: 1,
        },
        session,
    }
}

struct Flight {
    at: u64,
    seq: u64,
    from: NodeIx,
    to: NodeIx,
    msg: Message,
}

impl PartialEq for Flight {
    fn eq(&self, o: &Self) -> bool {
        (self.at, self.seq) == (o.at, o.seq)
    }
}
impl Eq for Flight {}
impl PartialOrd for Flight {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Flight {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (o.at, o.seq).cmp(&(self.at, self.seq)) // min-heap
    }
}

/// Network faults, per mille.
#[derive(Clone, Copy, Default)]
struct Faults {
    drop: u64,
    dup: u64,
    max_delay_ms: u64,
}

struct Cluster {
    nodes: Vec<Replica<MemLedger>>,
    /// What each node persisted (its disk), and whether it is running.
    disk: Vec<Option<Escrow>>,
    alive: Vec<bool>,
    side: Vec<u8>,
    net: BinaryHeap<Flight>,
    seq: u64,
    now: u64,
    rng: Rng,
    faults: Faults,
    limit: u64,
    sessions: u64,
    events: Vec<Vec<SyncEvent>>,
    /// Each node's journal checkpoints, for answering probes.
    journals: Vec<std::collections::BTreeMap<u64, [u8; 32]>>,
}

impl Cluster {
    fn new(n: usize, limit: u64, seed: u64) -> Self {
        let nodes = (0..n)
            .map(|i| Replica::new(config(n, i, limit, i as u64), MemLedger::default(), 0))
            .collect();
        let mut c = Self {
            nodes,
            disk: vec![None; n],
            alive: vec![true; n],
            side: vec![0; n],
            net: BinaryHeap::new(),
            seq: 0,
            now: 0,
            rng: Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1),
            faults: Faults::default(),
            limit,
            sessions: n as u64,
            events: vec![Vec::new(); n],
            journals: vec![Default::default(); n],
        };
        c.relink();
        c
    }

    fn linked(&self, a: usize, b: usize) -> bool {
        a != b && self.alive[a] && self.alive[b] && self.side[a] == self.side[b]
    }

    /// Tells every node which links are up (the transport's connect and disconnect).
    fn relink(&mut self) {
        let n = self.nodes.len();
        for a in 0..n {
            for b in 0..n {
                if a == b || !self.alive[a] {
                    continue;
                }
                let up = self.linked(a, b);
                let was = self.nodes[a].is_up(b as NodeIx);
                if up && !was {
                    let out = self.nodes[a].on_connected(b as NodeIx);
                    self.dispatch(a, out);
                } else if !up && was {
                    self.nodes[a].on_disconnected(b as NodeIx);
                }
            }
        }
    }

    fn dispatch(&mut self, from: usize, out: Vec<Output>) {
        for o in out {
            match o {
                Output::Persist { state, .. } => self.disk[from] = Some(state),
                Output::Send { to, msg } => self.send(from, usize::from(to), msg),
                Output::Close { reason, .. } => panic!("node {from} closed a link: {reason}"),
            }
        }
    }

    fn send(&mut self, from: usize, to: usize, msg: Message) {
        if !self.linked(from, to) || self.rng.chance(self.faults.drop) {
            return;
        }
        let copies = if self.rng.chance(self.faults.dup) {
            2
        } else {
            1
        };
        for _ in 0..copies {
            let delay = 1 + self.rng.below(self.faults.max_delay_ms + 1);
            self.seq += 1;
            self.net.push(Flight {
                at: self.now + delay,
                seq: self.seq,
                from: from as NodeIx,
                to: to as NodeIx,
                msg: msg.clone(),
            });
        }
    }

    /// Advances the clock by `ms`, one millisecond at a time: deliveries, then ticks.
    fn run(&mut self, ms: u64) {
        for _ in 0..ms {
            self.now += 1;
            while self.net.peek().is_some_and(|f| f.at <= self.now) {
                let f = self.net.pop().unwrap();
                let (from, to) = (usize::from(f.from), usize::from(f.to));
                if !self.linked(from, to) {
                    continue; // the link went down while it flew
                }
                let out = self.nodes[to].on_message(self.now, f.from, f.msg);
                self.dispatch(to, out);
            }
            if self.now.is_multiple_of(10) {
                for i in 0..self.nodes.len() {
                    if self.alive[i] {
                        let out = self.nodes[i].tick(self.now);
                        self.dispatch(i, out);
                        let (ev, _) = self.nodes[i].drain_events();
                        for e in &ev {
                            if let SyncEvent::Probed { peer, seq } = e {
                                let hash = self.journals[i].get(seq).copied();
                                let out = vec![self.nodes[i].proof(*peer, *seq, hash)];
                                self.dispatch(i, out);
                            }
                        }
                        self.events[i].extend(ev);
                    }
                }
            }
            self.check_bound();
        }
    }

    fn spend(&mut self, node: usize, amount: u64) -> bool {
        if !self.alive[node] {
            return false;
        }
        self.nodes[node].note_demand(POOL, DIM, amount);
        self.nodes[node].ledger().reserve(amount)
    }

    fn used(&self, node: usize) -> u64 {
        *self.nodes[node].ledger().used.borrow()
    }

    fn check_bound(&self) {
        let total: u64 = (0..self.nodes.len()).map(|i| self.used(i)).sum();
        assert!(
            total <= self.limit,
            "overspend at {} ms: Σ used {total} > limit {}",
            self.now,
            self.limit
        );
    }

    /// Crashes `node` (its ledger's used survives, as the journal keeps it) and restarts it
    /// from what it persisted, with a new session.
    fn restart(&mut self, node: usize) {
        let n = self.nodes.len();
        let used = self.used(node);
        self.sessions += 1;
        let cfg = config(n, node, self.limit, self.sessions);
        let ledger = MemLedger::default();
        *ledger.used.borrow_mut() = used;
        let mut r = Replica::new(cfg, ledger, self.now);
        if let Some(state) = &self.disk[node] {
            r.restore_escrow(POOL, DIM, state);
        }
        self.nodes[node] = r;
        for other in 0..n {
            if other != node {
                self.nodes[other].on_disconnected(node as NodeIx);
            }
        }
        self.relink();
    }

    fn set_alive(&mut self, node: usize, alive: bool) {
        self.alive[node] = alive;
        if !alive {
            for other in 0..self.nodes.len() {
                self.nodes[other].on_disconnected(node as NodeIx);
                self.nodes[node].on_disconnected(other as NodeIx);
            }
        }
        self.relink();
    }

    fn partition(&mut self, node: usize, side: u8) {
        self.side[node] = side;
        self.relink();
    }

    fn heal(&mut self) {
        self.side.iter_mut().for_each(|s| *s = 0);
        self.relink();
    }

    fn states_equal(&self) -> bool {
        let live: Vec<_> = (0..self.nodes.len()).filter(|&i| self.alive[i]).collect();
        let first = self.nodes[live[0]].escrow(POOL, DIM).unwrap();
        live.iter()
            .all(|&i| self.nodes[i].escrow(POOL, DIM).unwrap() == first)
    }
}

#[test]
fn three_nodes_converge_on_one_pool_state() {
    let mut c = Cluster::new(3, 3_000, 1);
    c.run(300);
    assert!(c.spend(0, 100));
    c.run(300);
    assert!(c.states_equal());
    assert_eq!(c.nodes[2].escrow(POOL, DIM).unwrap().used(0), 100);
}

#[test]
fn a_cut_off_node_spends_its_float_and_the_others_theirs_and_after_the_heal_they_agree() {
    let mut c = Cluster::new(3, 3_000, 2);
    c.run(500);
    c.partition(2, 1);
    let (mut majority, mut minority) = (0, 0);
    for _ in 0..400 {
        if c.spend(0, 10) {
            majority += 10;
        }
        if c.spend(2, 10) {
            minority += 10;
        }
        c.run(5);
    }
    assert!(minority > 0 && majority > 0, "{minority} {majority}");
    assert!(majority + minority <= 3_000);
    // The cut-off node denies once its own rights are spent (escrow.exhausted at the node).
    assert!(!c.spend(2, 10) || c.used(2) < 1_000);
    c.heal();
    c.run(1_000);
    assert!(c.states_equal(), "replicas differ after the heal");
}

#[test]
fn demand_moves_rights_ahead_of_need() {
    let mut c = Cluster::new(3, 3_000, 3);
    let mut spent = 0;
    for _ in 0..600 {
        if c.spend(1, 5) {
            spent += 5;
        }
        c.run(10);
    }
    // Node 1's share is 1,000; rebalancing moved the idle nodes' rights to it.
    assert!(spent > 1_500, "spent only {spent}");
    let e = c.nodes[1].escrow(POOL, DIM).unwrap();
    assert!(e.held(1) > 1_500, "held {}", e.held(1));
}

#[test]
fn a_restarted_node_keeps_its_rights_exactly() {
    let mut c = Cluster::new(3, 3_000, 4);
    for _ in 0..200 {
        c.spend(0, 5);
        c.run(10);
    }
    let before = c.nodes[0].escrow(POOL, DIM).unwrap().clone();
    let ceiling_before = *c.nodes[0].ledger().ceiling.borrow();
    // Cut it off so nothing can be re-learned from the peers: only its disk counts.
    c.partition(0, 1);
    c.run(100);
    c.restart(0);
    let after = c.nodes[0].escrow(POOL, DIM).unwrap();
    assert_eq!(after.held(0), before.held(0));
    assert_eq!(after.grant(0), before.grant(0));
    assert_eq!(*c.nodes[0].ledger().ceiling.borrow(), ceiling_before);
    c.heal();
    c.run(1_000);
    assert!(c.states_equal());
}

#[test]
fn the_heir_reclaims_a_silent_nodes_parked_rights_and_nothing_is_overspent() {
    let mut c = Cluster::new(3, 3_000, 5);
    c.run(300);
    c.set_alive(2, false); // n2 is gone; its heir is n0
    let reclaim_at = c.now + timing().reclaim_wait_ms(2_000) + 200;
    c.run(reclaim_at - c.now);
    let reclaimed = c.events[0]
        .iter()
        .any(|e| matches!(e, SyncEvent::Reclaimed { from: 2, .. }));
    assert!(reclaimed, "no reclamation: {:?}", c.events[0]);
    let mut spent = 0;
    for _ in 0..1_000 {
        for node in [0, 1] {
            if c.spend(node, 10) {
                spent += 10;
            }
        }
        c.run(5);
    }
    // n0 spends the reclaimed rights beyond its share; n1, whose heir n2 is gone, stays
    // within the cap it has (the documented limit of heir-granted caps).
    let n0 = c.nodes[0].escrow(POOL, DIM).unwrap();
    assert!(n0.reclaimed(2) > 0);
    assert!(c.used(0) > n0.share(0), "n0 used {}", c.used(0));
    assert_eq!(c.used(0), n0.ceiling(0));
    let cap = c.nodes[0].escrow(POOL, DIM).unwrap().grant(2).cap;
    assert!(
        spent <= 3_000 - cap,
        "spent {spent}, n2 may still spend {cap}"
    );
}

#[test]
fn a_node_that_prepared_to_go_offline_spends_its_rights_and_no_more() {
    let mut c = Cluster::new(3, 3_000, 6);
    c.run(300);
    c.nodes[2].prepare_offline(30_000, None);
    c.run(1_000);
    let e = c.nodes[2].escrow(POOL, DIM).unwrap().clone();
    let rights = e.ceiling(2);
    assert!(rights > 1_000, "took only {rights} with it");
    c.partition(2, 1);
    let mut spent = 0;
    while c.spend(2, 7) {
        spent += 7;
        c.run(1);
    }
    assert!(
        spent <= rights && rights - spent < 7,
        "spent {spent} of {rights}"
    );
}

#[test]
fn a_halt_anywhere_reaches_every_node_and_an_audited_resume_clears_it() {
    let mut c = Cluster::new(3, 3_000, 7);
    c.run(100);
    c.nodes[1].halt("agent-7", 42 << 16 | 1);
    c.run(300);
    assert_eq!(c.nodes[2].halt_epochs("agent-7"), [42 << 16 | 1]);
    assert!(c.events[2]
        .iter()
        .any(|e| matches!(e, SyncEvent::HaltAdded { agent, .. } if agent == "agent-7")));
    c.nodes[2].resume("agent-7", &[42 << 16 | 1]);
    c.run(300);
    assert!(c.nodes[0].halt_epochs("agent-7").is_empty());
    assert!(c.events[0].iter().any(
        |e| matches!(e, SyncEvent::HaltCleared { clear: true, agent, .. } if agent == "agent-7")
    ));
}

#[test]
fn a_peer_with_another_cluster_shape_is_refused() {
    let mut a = Replica::new(config(2, 0, 1_000, 1), MemLedger::default(), 0);
    let b = Replica::new(config(2, 1, 2_000, 2), MemLedger::default(), 0);
    let hello = Message::Hello {
        node: b.cfg.members.name(1).to_owned(),
        session: 2,
        digest: b.cfg.digest(),
        reply: false,
    };
    let out = a.on_message(1, 1, hello);
    assert!(matches!(&out[..], [Output::Close { to: 1, .. }]), "{out:?}");
    // Nothing it sends afterwards is merged.
    let delta = Message::Delta {
        session: 2,
        from: 0,
        upto: 1,
        items: vec![Item::Halts {
            agent: "x".into(),
            set: Default::default(),
        }],
    };
    let out = a.on_message(2, 1, delta);
    assert!(
        matches!(
            &out[..],
            [Output::Send {
                msg: Message::Hello { reply: true, .. },
                ..
            }]
        ),
        "only a Hello goes back: {out:?}"
    );
    assert!(a.halt_epochs("x").is_empty());
}

#[test]
fn policy_edits_and_audit_heads_replicate_and_contradictions_raise_alarms() {
    let mut c = Cluster::new(3, 3_000, 8);
    c.run(100);
    let pv = |node, text: &str| PolicyVersion {
        node,
        version: 1,
        digest: format!("d{text}"),
        text: text.into(),
    };
    c.nodes[0].put_policy(pv(0, "a"));
    c.nodes[1].put_policy(pv(1, "b"));
    c.run(300);
    assert_eq!(c.nodes[2].policy_versions().len(), 2, "a conflict is kept");
    assert!(c.events[2]
        .iter()
        .any(|e| matches!(e, SyncEvent::PolicyConflict(v) if v.len() == 2)));
    c.nodes[1].set_head(AuditHead {
        seq: 10,
        hash: [1; 32],
    });
    c.run(300);
    assert_eq!(c.nodes[0].head(1).unwrap().seq, 10);
    // n1 restarts with a rewritten journal: same sequence number, another hash.
    c.restart(1);
    c.nodes[1].set_head(AuditHead {
        seq: 10,
        hash: [2; 32],
    });
    c.run(500);
    assert!(c.events[0]
        .iter()
        .any(|e| matches!(e, SyncEvent::AuditAlarm(a) if a.node == 1)));
}

/// Random schedules: spends and releases everywhere, loss, duplication, reordering, delays,
/// partitions, crashes with restarts, silent nodes. `WARDEN_SYNC_SOAK` sets how many (CI
/// runs the default; docs/sync.md gives the soak's count and wall time).
#[test]
fn no_random_schedule_overspends_and_every_heal_converges() {
    let schedules: u64 = std::env::var("WARDEN_SYNC_SOAK")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(40);
    for seed in 0..schedules {
        soak_one(seed);
    }
}

fn soak_one(seed: u64) {
    let n = 3 + (seed % 3) as usize;
    let mut c = Cluster::new(n, 1_000 + seed % 997, seed);
    c.faults = Faults {
        drop: c.rng.below(300),
        dup: c.rng.below(200),
        max_delay_ms: c.rng.below(80),
    };
    for _ in 0..400 {
        let node = c.rng.below(n as u64) as usize;
        match c.rng.below(100) {
            0..=59 => {
                let amount = 1 + c.rng.below(30);
                c.spend(node, amount);
            }
            60..=79 => {
                let amount = c.rng.below(20);
                c.nodes[node].ledger().release(amount);
            }
            80..=87 => {
                let side = c.rng.below(2) as u8;
                c.partition(node, side);
            }
            88..=90 => c.heal(),
            91..=93 if c.alive[node] => c.restart(node),
            94..=95 => {
                let alive = !c.alive[node];
                c.set_alive(node, alive);
            }
            96 if c.alive[node] => c.nodes[node].prepare_offline(5_000, None),
            _ => {}
        }
        let step = 1 + c.rng.below(40);
        c.run(step);
    }
    // Heal everything, stop the faults: every replica converges.
    c.faults = Faults::default();
    (0..n).for_each(|i| c.alive[i] = true);
    c.heal();
    c.run(3_000);
    if !c.states_equal() {
        for i in 0..n {
            eprintln!(
                "n{i} alive {} {:?}",
                c.alive[i],
                c.nodes[i].escrow(POOL, DIM).unwrap()
            );
        }
    }
    assert!(
        c.states_equal(),
        "seed {seed}: replicas differ after the heal"
    );
}

#[test]
fn a_journal_rewritten_below_its_claims_is_caught_by_a_probe() {
    let mut c = Cluster::new(3, 3_000, 9);
    c.run(100);
    let h = |b: u8| AuditHead {
        seq: 256,
        hash: [b; 32],
    };
    c.journals[1].insert(256, [1; 32]);
    c.nodes[1].set_head(h(1));
    c.run(300);
    // n1 goes on to a later checkpoint, but its journal now holds another entry 256.
    c.journals[1].insert(256, [9; 32]);
    c.nodes[1].set_head(AuditHead {
        seq: 512,
        hash: [2; 32],
    });
    c.run(3_000); // probes every 500 ms
    let alarm = c.events[0]
        .iter()
        .chain(&c.events[2])
        .find_map(|e| match e {
            SyncEvent::AuditAlarm(a) if a.node == 1 => Some(a.reason.clone()),
            _ => None,
        });
    assert!(
        alarm.is_some_and(|r| r.contains("entry 256")),
        "no probe alarm"
    );
}

#[test]
fn a_node_that_lost_its_data_spends_nothing_until_a_peer_tells_it_what_it_gave() {
    let mut c = Cluster::new(3, 3_000, 10);
    // n0 gives n1 rights (demand on n1), then loses everything it had persisted.
    for _ in 0..100 {
        c.spend(1, 10);
        c.run(10);
    }
    let gave = c.nodes[2].escrow(POOL, DIM).unwrap().held(0);
    c.partition(0, 1);
    c.run(50);
    c.disk[0] = None;
    c.restart(0);
    c.nodes[0].hold_until_synced();
    assert!(c.nodes[0].held_back());
    assert!(!c.spend(0, 1), "held at 0 while cut off");
    c.heal();
    c.run(500);
    assert!(!c.nodes[0].held_back(), "a peer's state arrived");
    assert_eq!(c.nodes[0].escrow(POOL, DIM).unwrap().held(0), gave);
    assert!(c.spend(0, 1));
}
