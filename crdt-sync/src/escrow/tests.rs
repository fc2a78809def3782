use proptest::prelude::*;

use super::*;

#[test]
fn the_limit_is_split_equally_with_the_remainder_to_the_first_members() {
    let e = Escrow::new(10, 3, 1000);
    assert_eq!((e.share(0), e.share(1), e.share(2)), (4, 3, 3));
    assert_eq!(e.total_held(), 10);
    assert_eq!(e.room(0), 4);
}

#[test]
fn the_genesis_cap_bounds_what_a_node_spends_before_its_heir_answers() {
    let mut e = Escrow::new(300, 3, 500);
    assert_eq!(e.room(1), 50);
    e.set_used(1, 50);
    assert_eq!(e.room(1), 0);
    // The heir grants the cap asked for, up to what the ward holds.
    e.set_ask(
        1,
        Ask {
            want_cap: 1_000,
            lease_ms: 60_000,
            ..Ask::default()
        },
    );
    let g = e.grant_for(2, 1, 30_000).unwrap();
    assert_eq!(
        (g.cap, g.lease_ms),
        (1_000, 30_000),
        "no reclamation yet: the cap asked"
    );
    assert!(e.grant_for(0, 1, 30_000).is_none(), "only the heir grants");
    e.write_grant(2, 1, g);
    assert_eq!(e.room(1), 50);
}

#[test]
fn a_transfer_moves_free_rights_and_nothing_more() {
    let mut e = Escrow::new(100, 2, 1000);
    e.set_used(0, 30);
    assert_eq!(
        e.transfer(0, 1, 21),
        Err(EscrowError::NoRoom {
            asked: 21,
            room: 20
        })
    );
    e.transfer(0, 1, 20).unwrap();
    assert_eq!((e.held(0), e.held(1)), (30, 70));
    assert_eq!(e.room(0), 0);
    assert_eq!(e.total_held(), 100);
    assert!(matches!(
        e.transfer(0, 0, 1),
        Err(EscrowError::BadTarget { .. })
    ));
    assert!(matches!(
        e.transfer(0, 7, 1),
        Err(EscrowError::BadTarget { .. })
    ));
}

#[test]
fn reclaim_takes_only_rights_above_the_cap_and_fences_the_epoch() {
    let mut e = Escrow::new(300, 3, 200);
    // Node 0's cap is 20 of its share of 100; its heir is node 1.
    assert_eq!(e.reclaim(1, 0), 80);
    assert_eq!(e.grant(0).epoch, 1);
    assert_eq!(e.held(0), 20);
    assert_eq!(e.held(1), 180);
    assert_eq!(e.reclaim(1, 0), 0, "nothing more above the cap");
    // Node 0 can still consume exactly its cap: the bound holds.
    assert_eq!(e.room(0), 20);
    assert_eq!(e.total_held(), 300);
    // A later ask cannot raise its cap above what it still holds.
    e.set_ask(
        0,
        Ask {
            want_cap: 1_000,
            ..Ask::default()
        },
    );
    assert_eq!(e.grant_for(1, 0, 1).map(|g| g.cap), None);
}

#[test]
fn rebalancing_gives_the_surplus_to_the_node_with_demand() {
    let mut e = Escrow::new(3_000, 3, 1000);
    e.set_ask(
        2,
        Ask {
            demand_per_s: 100,
            want_cap: 3_000,
            ..Ask::default()
        },
    );
    // Nothing moves to a node that could not use it: its cap is still its share.
    assert!(e.rebalance(0, 1, |_| true).is_none());
    let grant = e.grant_for(0, 2, 60_000).unwrap();
    e.write_grant(0, 2, grant);
    let (to, amount) = e.rebalance(0, 1, |_| true).unwrap();
    assert_eq!(to, 2);
    assert!(amount > 500 && amount <= 1_000, "{amount}");
    e.transfer(0, to, amount).unwrap();
    // Node 1 has the same surplus and gives too, but node 0 has nothing left to give.
    assert!(e.rebalance(0, 1, |_| true).is_none());
    // Nobody asks for anything: no ping-pong.
    let idle = Escrow::new(3_000, 3, 1000);
    assert!((0..3).all(|i| idle.rebalance(i, 1, |_| true).is_none()));
}

#[test]
fn a_node_preparing_to_go_offline_gets_the_rights_it_wants() {
    let mut e = Escrow::new(3_000, 3, 1000);
    e.set_ask(
        0,
        Ask {
            want_rights: 2_000,
            want_cap: u64::MAX,
            ..Ask::default()
        },
    );
    let grant = e.grant_for(1, 0, 60_000).unwrap();
    e.write_grant(1, 0, grant);
    let (to, amount) = e.rebalance(1, 1, |_| true).unwrap();
    assert_eq!((to, amount), (0, 500));
    assert!(
        e.rebalance(0, 1, |_| true).is_none(),
        "the one going offline keeps all"
    );
}

// ---- merge laws and the bound, over random histories ----

/// An operation one replica performs on its own view.
#[derive(Clone, Debug)]
enum Op {
    Use(u8, u64),
    Release(u8, u64),
    Give(u8, u8, u64),
    Ask(u8, u64, u64),
    Grant(u8),
    Reclaim(u8),
    Rebalance(u8),
    Sync(u8, u8),
    Partition(u8),
    Heal,
}

fn op(n: u8) -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..n, 1..40u64).prop_map(|(i, a)| Op::Use(i, a)),
        2 => (0..n, 1..40u64).prop_map(|(i, a)| Op::Release(i, a)),
        2 => (0..n, 0..n, 1..60u64).prop_map(|(i, j, a)| Op::Give(i, j, a)),
        2 => (0..n, 0..200u64, 0..50u64).prop_map(|(i, c, d)| Op::Ask(i, c, d)),
        3 => (0..n).prop_map(Op::Grant),
        1 => (0..n).prop_map(Op::Reclaim),
        2 => (0..n).prop_map(Op::Rebalance),
        6 => (0..n, 0..n).prop_map(|(i, j)| Op::Sync(i, j)),
        1 => (0..n).prop_map(Op::Partition),
        1 => Just(Op::Heal),
    ]
}

/// Replicas, each the view of one node, and which side of a partition each is on.
struct Cluster {
    views: Vec<Escrow>,
    side: Vec<bool>,
}

impl Cluster {
    fn new(limit: u64, n: usize) -> Self {
        Self {
            views: vec![Escrow::new(limit, n, 300); n],
            side: vec![false; n],
        }
    }

    fn apply(&mut self, op: &Op) {
        let n = self.views.len();
        match *op {
            Op::Use(i, a) => {
                let v = &mut self.views[usize::from(i)];
                if v.room(i.into()) >= a {
                    let used = v.used(i.into()) + a;
                    v.set_used(i.into(), used);
                }
            }
            Op::Release(i, a) => {
                let v = &mut self.views[usize::from(i)];
                let used = v.used(i.into()).saturating_sub(a);
                v.set_used(i.into(), used);
            }
            Op::Give(i, j, a) => {
                let _ = self.views[usize::from(i)].transfer(i.into(), j.into(), a);
            }
            Op::Ask(i, extra, demand) => {
                let v = &mut self.views[usize::from(i)];
                let ask = Ask {
                    demand_per_s: demand,
                    want_cap: v.outflow(i.into()) + extra,
                    want_rights: 0,
                    lease_ms: 1_000,
                };
                v.set_ask(i.into(), ask);
            }
            Op::Grant(ward) => {
                if let Some(h) = heir_of(ward.into(), n) {
                    let v = &mut self.views[usize::from(h)];
                    if let Some(g) = v.grant_for(h, ward.into(), 10_000) {
                        v.write_grant(h, ward.into(), g);
                    }
                }
            }
            Op::Reclaim(ward) => {
                if let Some(h) = heir_of(ward.into(), n) {
                    self.views[usize::from(h)].reclaim(h, ward.into());
                }
            }
            Op::Rebalance(i) => {
                let v = &mut self.views[usize::from(i)];
                if let Some((to, a)) = v.rebalance(i.into(), 1, |_| true) {
                    v.transfer(i.into(), to, a).unwrap();
                }
            }
            Op::Sync(a, b) => {
                let (a, b) = (usize::from(a), usize::from(b));
                if a != b && self.side[a] == self.side[b] {
                    let from = self.views[a].clone();
                    self.views[b].merge(&from);
                }
            }
            Op::Partition(i) => self.side[usize::from(i)] = !self.side[usize::from(i)],
            Op::Heal => self.side.iter_mut().for_each(|s| *s = false),
        }
    }

    /// The join of every view: what the cluster knows.
    fn joined(&self) -> Escrow {
        let mut all = self.views[0].clone();
        for v in &self.views[1..] {
            all.merge(v);
        }
        all
    }

    fn check_bound(&self) -> Result<(), TestCaseError> {
        let all = self.joined();
        // Each node's own used is the truth about what it holds reserved or spent.
        let spent: u128 = (0..self.views.len())
            .map(|i| u128::from(self.views[i].used(i as NodeIx)))
            .sum();
        prop_assert!(spent <= u128::from(all.limit()), "Σ used {spent} > limit");
        for i in 0..self.views.len() as NodeIx {
            let own = &self.views[usize::from(i)];
            prop_assert!(
                own.outflow(i) <= all.inflow(i).saturating_sub(all.reclaimed(i)),
                "node {i} consumed beyond the rights it really holds"
            );
        }
        prop_assert_eq!(all.total_held(), u128::from(all.limit()));
        Ok(())
    }
}

/// Three views of one history (each entry has one writer, so only views of the same history
/// may be merged), each taken at a random moment.
fn three_views() -> impl Strategy<Value = [Escrow; 3]> {
    (prop::collection::vec(op(3), 0..60), 0..60usize, 0..60usize).prop_map(|(ops, s1, s2)| {
        let mut c = Cluster::new(1_000, 3);
        let mut early = [c.views[0].clone(), c.views[1].clone()];
        for (k, o) in ops.iter().enumerate() {
            c.apply(o);
            if k == s1 {
                early[0] = c.views[1].clone();
            }
            if k == s2 {
                early[1] = c.views[2].clone();
            }
        }
        [c.views[0].clone(), early[0].clone(), early[1].clone()]
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn merge_is_commutative_associative_and_idempotent(
        views in three_views()
    ) {
        let [a, b, c] = views;
        let join = |x: &Escrow, y: &Escrow| { let mut z = x.clone(); z.merge(y); z };
        prop_assert_eq!(join(&a, &b), join(&b, &a));
        prop_assert_eq!(join(&join(&a, &b), &c), join(&a, &join(&b, &c)));
        prop_assert_eq!(join(&a, &a), a.clone());
        let mut again = join(&a, &b);
        prop_assert!(!again.merge(&b), "merging what is known changes nothing");
    }

    #[test]
    fn no_schedule_of_spends_transfers_partitions_and_reclaims_overspends(
        n in 3usize..=5, ops in prop::collection::vec(op(5), 1..300)
    ) {
        let mut c = Cluster::new(1_000, n);
        for o in ops.iter().filter(|o| touches_only(o, n)) {
            c.apply(o);
            c.check_bound()?;
        }
        // Heal and gossip all around: every view becomes the same.
        c.apply(&Op::Heal);
        for _ in 0..2 {
            for a in 0..n as u8 {
                for b in 0..n as u8 {
                    c.apply(&Op::Sync(a, b));
                }
            }
        }
        let first = c.views[0].clone();
        for v in &c.views[1..] {
            prop_assert_eq!(v, &first);
        }
    }
}

fn touches_only(op: &Op, n: usize) -> bool {
    let ok = |i: u8| usize::from(i) < n;
    match *op {
        Op::Use(i, _) | Op::Release(i, _) | Op::Ask(i, _, _) => ok(i),
        Op::Grant(i) | Op::Reclaim(i) | Op::Rebalance(i) | Op::Partition(i) => ok(i),
        Op::Give(i, j, _) | Op::Sync(i, j) => ok(i) && ok(j),
        Op::Heal => true,
    }
}
