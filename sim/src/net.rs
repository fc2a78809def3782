//! A message-level network model between nodes, sans-IO: messages and the current virtual
//! time go in, deliveries come out; it never sleeps, reads a clock or opens a socket. It is
//! what multi-node runs (`--nodes K`, the `cluster` module) put between the nodes' replicas.
//!
//! Faults, each drawn from the model's own seeded stream: loss (`drop_pct`), duplication
//! (`duplicate_pct`: a second copy with its own delay), delay (uniform in
//! `[delay_min_ms, delay_max_ms]`), reordering (`reorder_pct`: an extra delay of up to
//! `reorder_extra_ms`, so later messages overtake it), partitions (messages between the two
//! sides are lost, those in flight included, until healed), and clock-rate skew (each node's
//! local clock runs at `1 + skew_ppm / 10^6` of virtual time).

use std::collections::BTreeSet;

use crate::queue::EventQueue;
use crate::rng::Rng;

/// A node's number in the simulated cluster.
pub type NodeIx = u16;

/// How the network misbehaves.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NetConfig {
    /// Share of messages lost, in percent.
    pub drop_pct: u64,
    /// Share of messages delivered twice, in percent.
    pub duplicate_pct: u64,
    /// Shortest delay, ms.
    pub delay_min_ms: u64,
    /// Longest delay, ms.
    pub delay_max_ms: u64,
    /// Share of messages held back further, in percent.
    pub reorder_pct: u64,
    /// Most a held-back message is delayed beyond its draw, ms.
    pub reorder_extra_ms: u64,
}

/// A message on its way.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivery<M> {
    /// Sender.
    pub from: NodeIx,
    /// Receiver.
    pub to: NodeIx,
    /// When it arrives (virtual ms).
    pub at_ms: u64,
    /// The message.
    pub msg: M,
}

/// The network between `nodes` nodes.
#[derive(Debug)]
pub struct Network<M> {
    config: NetConfig,
    rng: Rng,
    in_flight: EventQueue<Delivery<M>>,
    /// Links cut by a partition, as `(low, high)` node pairs.
    cut: BTreeSet<(NodeIx, NodeIx)>,
    skew_ppm: Vec<i64>,
    /// Counters: sent, dropped, duplicated, delivered.
    pub stats: NetStats,
}

/// What the network did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetStats {
    /// Messages handed to [`Network::send`].
    pub sent: u64,
    /// Lost (drop or partition).
    pub dropped: u64,
    /// Extra copies made.
    pub duplicated: u64,
    /// Handed out by [`Network::deliver_due`].
    pub delivered: u64,
}

fn link(a: NodeIx, b: NodeIx) -> (NodeIx, NodeIx) {
    (a.min(b), a.max(b))
}

impl<M: Clone> Network<M> {
    /// A network of `nodes` nodes with no skew.
    pub fn new(nodes: usize, config: NetConfig, rng: Rng) -> Self {
        Self {
            config,
            rng,
            in_flight: EventQueue::default(),
            cut: BTreeSet::new(),
            skew_ppm: vec![0; nodes],
            stats: NetStats::default(),
        }
    }

    /// Sends `msg` from `from` to `to` at `now_ms`: lost, delayed, duplicated as configured.
    pub fn send(&mut self, now_ms: u64, from: NodeIx, to: NodeIx, msg: M) {
        self.stats.sent += 1;
        if self.cut.contains(&link(from, to)) || self.rng.chance(self.config.drop_pct) {
            self.stats.dropped += 1;
            return;
        }
        if self.rng.chance(self.config.duplicate_pct) {
            self.stats.duplicated += 1;
            let at_ms = now_ms + self.delay();
            self.in_flight.push(
                at_ms,
                Delivery {
                    from,
                    to,
                    at_ms,
                    msg: msg.clone(),
                },
            );
        }
        let at_ms = now_ms + self.delay();
        self.in_flight.push(
            at_ms,
            Delivery {
                from,
                to,
                at_ms,
                msg,
            },
        );
    }

    fn delay(&mut self) -> u64 {
        let c = &self.config;
        let (lo, hi, pct, extra) = (
            c.delay_min_ms,
            c.delay_max_ms,
            c.reorder_pct,
            c.reorder_extra_ms,
        );
        let mut d = self.rng.range(lo, hi);
        if self.rng.chance(pct) {
            d += self.rng.range(0, extra);
        }
        d
    }

    /// When the next message arrives, if any is in flight.
    pub fn next_due_ms(&self) -> Option<u64> {
        self.in_flight.peek_time()
    }

    /// Every message due at or before `now_ms`, in arrival order; those crossing a cut link
    /// are lost.
    pub fn deliver_due(&mut self, now_ms: u64) -> Vec<Delivery<M>> {
        let mut out = Vec::new();
        while self.in_flight.peek_time().is_some_and(|t| t <= now_ms) {
            let Some((_, d)) = self.in_flight.pop() else {
                break;
            };
            if self.cut.contains(&link(d.from, d.to)) {
                self.stats.dropped += 1;
                continue;
            }
            self.stats.delivered += 1;
            out.push(d);
        }
        out
    }

    /// Cuts every link between a node of `side_a` and one of `side_b`.
    pub fn partition(&mut self, side_a: &[NodeIx], side_b: &[NodeIx]) {
        for a in side_a {
            for b in side_b {
                if a != b {
                    self.cut.insert(link(*a, *b));
                }
            }
        }
    }

    /// Restores every link.
    pub fn heal(&mut self) {
        self.cut.clear();
    }

    /// Sets `node`'s clock rate: `skew_ppm` parts per million fast (negative: slow).
    pub fn set_skew_ppm(&mut self, node: NodeIx, skew_ppm: i64) {
        if let Some(s) = self.skew_ppm.get_mut(usize::from(node)) {
            *s = skew_ppm;
        }
    }

    /// `node`'s local clock at virtual time `now_ms` (virtual time scaled by its rate).
    pub fn local_ms(&self, node: NodeIx, now_ms: u64) -> u64 {
        let ppm = self.skew_ppm.get(usize::from(node)).copied().unwrap_or(0);
        let scaled = i128::from(now_ms) * (1_000_000 + i128::from(ppm)) / 1_000_000;
        u64::try_from(scaled.max(0)).unwrap_or(u64::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(config: NetConfig) -> Network<u32> {
        Network::new(3, config, Rng::new(42))
    }

    fn all(n: &mut Network<u32>) -> Vec<u32> {
        n.deliver_due(u64::MAX).into_iter().map(|d| d.msg).collect()
    }

    #[test]
    fn a_perfect_network_delivers_everything_in_order() {
        let mut n = net(NetConfig {
            delay_min_ms: 5,
            delay_max_ms: 5,
            ..Default::default()
        });
        for m in 0..10 {
            n.send(m as u64, 0, 1, m);
        }
        assert!(n.deliver_due(4).is_empty());
        assert_eq!(all(&mut n), (0..10).collect::<Vec<_>>());
        assert_eq!(n.stats.delivered, 10);
    }

    #[test]
    fn drop_loses_about_its_share_and_duplicate_copies() {
        let mut n = net(NetConfig {
            drop_pct: 30,
            ..Default::default()
        });
        for m in 0..10_000 {
            n.send(0, 0, 1, m);
        }
        let got = all(&mut n).len();
        assert!((6_500..7_500).contains(&got), "{got}");
        let mut n = net(NetConfig {
            duplicate_pct: 100,
            ..Default::default()
        });
        n.send(0, 0, 1, 7);
        assert_eq!(all(&mut n), [7, 7]);
    }

    #[test]
    fn delays_reorder_messages_within_their_bounds() {
        let config = NetConfig {
            delay_min_ms: 1,
            delay_max_ms: 50,
            reorder_pct: 20,
            reorder_extra_ms: 100,
            ..Default::default()
        };
        let mut n = net(config);
        for m in 0..200 {
            n.send(0, 0, 1, m);
        }
        let ds = n.deliver_due(u64::MAX);
        assert!(ds.iter().all(|d| (1..=150).contains(&d.at_ms)));
        let order: Vec<u32> = ds.iter().map(|d| d.msg).collect();
        assert_ne!(order, (0..200).collect::<Vec<_>>(), "random delays reorder");
    }

    #[test]
    fn a_partition_cuts_both_ways_and_in_flight_until_healed() {
        let mut n = net(NetConfig {
            delay_min_ms: 10,
            delay_max_ms: 10,
            ..Default::default()
        });
        n.send(0, 0, 2, 1); // in flight when the cut comes
        n.partition(&[0, 1], &[2]);
        n.send(1, 2, 0, 2);
        n.send(1, 0, 1, 3); // same side: unaffected
        assert_eq!(all(&mut n), [3]);
        n.heal();
        n.send(20, 2, 0, 4);
        assert_eq!(all(&mut n), [4]);
        assert_eq!(n.stats.dropped, 2);
    }

    #[test]
    fn the_same_seed_gives_the_same_schedule() {
        let config = NetConfig {
            drop_pct: 10,
            duplicate_pct: 10,
            delay_max_ms: 30,
            ..Default::default()
        };
        let run = || {
            let mut n = net(config.clone());
            (0..100).for_each(|m| n.send(m, 0, 1, m as u32));
            n.deliver_due(u64::MAX)
        };
        assert_eq!(run(), run());
    }

    #[test]
    fn skewed_clocks_run_at_their_rate() {
        let mut n = net(NetConfig::default());
        n.set_skew_ppm(1, 1_000); // 0.1% fast
        n.set_skew_ppm(2, -500_000); // half speed
        assert_eq!(n.local_ms(0, 1_000_000), 1_000_000);
        assert_eq!(n.local_ms(1, 1_000_000), 1_001_000);
        assert_eq!(n.local_ms(2, 1_000_000), 500_000);
    }
}
