//! The node's metrics that describe state rather than events: the histogram bucket layout
//! every `*_duration_seconds` metric shares, and the gauges refreshed just before a scrape.
//!
//! Library code only *records* through the `metrics` facade; the process that wants them
//! exported (the `warden` binary) installs the recorder, with [`DURATION_BUCKETS`]. Labels are
//! pools and dimensions, never agents: a million agents must not mean a million series.

use warden_actors::LedgerDim;

use crate::Swarm;

/// Histogram buckets for every `*_duration_seconds` metric: 1 µs to 1 s (decisions take about
/// a microsecond in process; a journal commit with fsync takes milliseconds).
pub const DURATION_BUCKETS: [f64; 13] = [
    1e-6, 2.5e-6, 5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 5e-4, 1e-3, 5e-3, 1e-2, 1e-1, 1.0,
];

/// The suffix of the metric names [`DURATION_BUCKETS`] applies to.
pub const DURATION_SUFFIX: &str = "duration_seconds";

/// Sets the gauges that describe the swarm at `now_ms` (milliseconds since the Unix epoch):
/// `warden_agents`, `warden_budget_limit`, `warden_budget_spent_total`,
/// `warden_budget_overrun_total`, `warden_budget_remaining`, `warden_approvals_pending`,
/// `warden_approvals_oldest_age_seconds` (how long the oldest pending approval has waited; 0
/// when none waits) and `warden_ready` (1 while the journal takes entries, 0 once it failed:
/// what `GET /readyz` answers). One pass over pools and agents per scrape, nothing on the
/// decision path. `spent` is what the ledger charged within the limits; `overrun` what was
/// used beyond them (their sum is what was really used).
pub fn refresh_gauges(swarm: &Swarm, now_ms: u64) {
    for (pool, running, halted) in swarm.agent_counts() {
        metrics::gauge!("warden_agents", "state" => "running", "pool" => pool.clone())
            .set(running as f64);
        metrics::gauge!("warden_agents", "state" => "halted", "pool" => pool).set(halted as f64);
    }
    for p in swarm.pools() {
        let pool = p.name.to_string();
        for dim in LedgerDim::ALL {
            let d = dim.key();
            metrics::counter!("warden_budget_spent_total", "pool" => pool.clone(), "dimension" => d)
                .absolute(p.spent.get(dim));
            metrics::counter!("warden_budget_overrun_total", "pool" => pool.clone(), "dimension" => d)
                .absolute(p.overrun.get(dim));
            if let Some(limit) = p.limits.get(dim) {
                metrics::gauge!("warden_budget_limit", "pool" => pool.clone(), "dimension" => d)
                    .set(limit as f64);
                metrics::gauge!("warden_budget_remaining", "pool" => pool.clone(), "dimension" => d)
                    .set(p.remaining(dim).unwrap_or(0) as f64);
            }
        }
        for (dim, overrun) in p.overrun.custom_entries() {
            let d = dim.as_str().to_string();
            metrics::counter!("warden_budget_overrun_total", "pool" => pool.clone(), "dimension" => d)
                .absolute(*overrun);
        }
    }
    let approvals = swarm.approvals();
    metrics::gauge!("warden_approvals_pending").set(approvals.len() as f64);
    metrics::gauge!("warden_approvals_oldest_age_seconds").set(oldest_age_seconds(
        approvals.first().map(|a| a.requested_at_ms),
        now_ms,
    ));
    let ready = swarm.journal_failure().is_none();
    metrics::gauge!("warden_ready").set(if ready { 1.0 } else { 0.0 });
}

/// Seconds from `requested_at_ms` (the oldest pending approval's, if any) to `now_ms`; 0 when
/// nothing waits or the clocks disagree (a request stamped after `now_ms`).
fn oldest_age_seconds(requested_at_ms: Option<u64>, now_ms: u64) -> f64 {
    requested_at_ms.map_or(0.0, |at| now_ms.saturating_sub(at) as f64 / 1000.0)
}

#[cfg(test)]
mod tests {
    use super::oldest_age_seconds;

    #[test]
    fn the_oldest_approval_age_is_zero_without_one_and_never_negative() {
        assert_eq!(oldest_age_seconds(None, 5_000), 0.0);
        assert_eq!(oldest_age_seconds(Some(2_000), 5_500), 3.5);
        assert_eq!(oldest_age_seconds(Some(9_000), 5_000), 0.0);
    }
}
