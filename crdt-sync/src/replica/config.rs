//! What a replica is configured with: members, replicated pools, timing and tuning.

use crate::members::Members;

/// A pool shared by the cluster, with the limit of each dimension it replicates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicatedPool {
    /// The pool's path (as in the policy: `swarm/research`).
    pub path: String,
    /// Dimension key (`steps`, `tokens`, `cost_usd`, `risk`, or a custom one) and its limit
    /// in ledger units (micro-USD for `cost_usd`).
    pub limits: Vec<(String, u64)>,
}

/// Timers, all milliseconds of the driver's monotonic clock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timing {
    /// How often deltas go out to peers with unacknowledged changes.
    pub gossip_ms: u64,
    /// How long a delta waits for its acknowledgement before it is sent again.
    pub retransmit_ms: u64,
    /// How often demand is sampled and asks, grants, rebalancing and reclamation run.
    pub escrow_ms: u64,
    /// The lease a node asks for in normal operation: how long its heir waits, after last
    /// hearing from it, before reclaiming its rights above its cap.
    pub lease_ms: u64,
    /// The longest lease a node may ask for when preparing to go offline.
    pub max_offline_ms: u64,
    /// The maximum clock-rate drift between two nodes, parts per million.
    pub max_drift_ppm: u64,
    /// Added to the drift-corrected lease before reclaiming.
    pub margin_ms: u64,
    /// How often a peer's earlier audit head is probed.
    pub probe_ms: u64,
}

impl Default for Timing {
    fn default() -> Self {
        Self {
            gossip_ms: 25,
            retransmit_ms: 500,
            escrow_ms: 100,
            lease_ms: 5 * 60 * 1000,
            max_offline_ms: 7 * 24 * 3600 * 1000,
            max_drift_ppm: 10_000,
            margin_ms: 5_000,
            probe_ms: 10_000,
        }
    }
}

impl Timing {
    /// How long an heir waits after last hearing from a ward whose lease is `lease_ms` before
    /// reclaiming: `lease × (1 + ρ)/(1 − ρ) + margin` with ρ = `max_drift_ppm` / 10⁶, so that
    /// even with the heir's clock fast and the ward's slow by ρ the ward's lease has ended.
    pub fn reclaim_wait_ms(&self, lease_ms: u64) -> u64 {
        let rho = self.max_drift_ppm.min(500_000);
        let scaled =
            u128::from(lease_ms) * u128::from(1_000_000 + rho) / u128::from(1_000_000 - rho);
        u64::try_from(scaled)
            .unwrap_or(u64::MAX)
            .saturating_add(self.margin_ms)
    }
}

/// How rights move.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tuning {
    /// Part of its share, per mille, a node may consume before its heir granted it anything
    /// (default: all of it, so a node cut off from the start, or whose heir is gone, still
    /// spends its share; less leaves more for reclamation when a node disappears).
    pub initial_cap_permille: u16,
    /// A node asks for a cap this much of its demand ahead of its use (its float: what it may
    /// spend alone if cut off), milliseconds of demand.
    pub float_window_ms: u64,
    /// The smallest transfer rebalancing makes.
    pub min_transfer: u64,
}

impl Default for Tuning {
    fn default() -> Self {
        Self {
            initial_cap_permille: 1000,
            float_window_ms: 5 * 60 * 1000,
            min_transfer: 1,
        }
    }
}

/// Everything a replica is configured with.
#[derive(Debug, Clone)]
pub struct SyncConfig {
    /// The cluster's members, this node among them.
    pub members: Members,
    /// The replicated pools.
    pub pools: Vec<ReplicatedPool>,
    /// Timers.
    pub timing: Timing,
    /// How rights move.
    pub tuning: Tuning,
    /// This run's session (a fresh random number at every start).
    pub session: u64,
}

impl SyncConfig {
    /// BLAKE3 over what every node must agree on: the member names, the replicated pools and
    /// their limits, and the genesis cap. Exchanged in the Hello.
    pub fn digest(&self) -> [u8; 32] {
        let mut h = blake3::Hasher::new();
        h.update(b"warden-sync cluster v1\n");
        for name in self.members.names() {
            h.update(format!("member {name}\n").as_bytes());
        }
        let mut pools: Vec<_> = self.pools.iter().collect();
        pools.sort_by(|a, b| a.path.cmp(&b.path));
        for pool in pools {
            let mut limits = pool.limits.clone();
            limits.sort();
            for (dim, limit) in limits {
                h.update(format!("pool {} {dim} {limit}\n", pool.path).as_bytes());
            }
        }
        h.update(format!("genesis {}\n", self.tuning.initial_cap_permille).as_bytes());
        *h.finalize().as_bytes()
    }
}
