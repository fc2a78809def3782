//! What a run reports: the final table (`warden sim`) and its JSON form (`--json`).

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;
use warden_actors::{AccountSnapshot, LedgerDim};

use crate::invariants::{InvariantResult, Violation};

/// One pool's limits and totals, per dimension (`steps`, `tokens`, `cost_micro_usd`,
/// `risk_micro`: integers, as the ledger counts).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PoolReport {
    /// The pool's path.
    pub path: String,
    /// Limits (absent: unlimited).
    pub limit: BTreeMap<&'static str, u64>,
    /// Settled spend.
    pub spent: BTreeMap<&'static str, u64>,
    /// Still reserved.
    pub reserved: BTreeMap<&'static str, u64>,
    /// Usage no budget covered (never counted as spend; the agents that caused it halted).
    pub overrun: BTreeMap<&'static str, u64>,
}

impl PoolReport {
    /// From a pool's snapshot.
    pub fn of(a: &AccountSnapshot) -> Self {
        let per = |f: &dyn Fn(LedgerDim) -> Option<u64>| {
            LedgerDim::ALL
                .into_iter()
                .filter_map(|d| f(d).map(|v| (d.key(), v)))
                .collect::<BTreeMap<_, _>>()
        };
        Self {
            path: a.name.to_string(),
            limit: per(&|d| a.limits.get(d)),
            spent: per(&|d| Some(a.spent.get(d))),
            reserved: per(&|d| Some(a.reserved.get(d))),
            overrun: per(&|d| Some(a.overrun.get(d)).filter(|v| *v > 0)),
        }
    }
}

/// Counters of what the run did besides decisions.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Activity {
    /// Outcomes settled.
    pub outcomes: u64,
    /// Outcomes refused (late after a crash, already settled, ...).
    pub outcomes_refused: u64,
    /// Approvals answered by the simulated operators.
    pub approvals_answered: u64,
    /// Approvals denied by the sweep (timeouts).
    pub approvals_timed_out: u64,
    /// Halts lifted by the simulated operators.
    pub resumes: u64,
    /// Wait-for cycles found (deadlocks).
    pub deadlocks: u64,
    /// Requests refused because the journal had failed (fail closed).
    pub refused_journal_down: u64,
    /// Steps a crash left open that no agent knew of, settled as failures after recovery.
    pub orphans_settled: u64,
    /// Node restarts (crashes and disk repairs).
    pub restarts: u64,
    /// Agents restarted by their pools' strategies after simulated actor crashes.
    pub actor_restarts: u64,
    /// Pools that exceeded their restart intensity (escalated to the parent, or, at the root,
    /// every agent halted).
    pub escalations: u64,
    /// Bytes of torn journal tail cut by recovery.
    pub torn_bytes: u64,
    /// Granted approvals an agent read back after a restart without their journal entry's
    /// number (recovery re-applies a resolution without it); each was found in the journal.
    pub resolutions_without_seq: u64,
}

/// The result of one run.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// The seed.
    pub seed: u64,
    /// The scenario's name.
    pub scenario: String,
    /// Governed agents.
    pub agents: usize,
    /// Simulated operators (the `approver` behaviour).
    pub operators: usize,
    /// Nodes (1 until the Sync issue).
    pub nodes: usize,
    /// Simulated time, ms (the drain after the duration included).
    pub simulated_ms: u64,
    /// The run's duration, ms: `simulated_ms` less the drain (outcomes reported and
    /// approvals answered or timed out after the agents stopped), or the time of a violation.
    pub duration_ms: u64,
    /// Wall time of the run, ms.
    pub wall_ms: u64,
    /// Events processed.
    pub events: u64,
    /// Steps decided (every agent-step).
    pub agent_steps: u64,
    /// `agent_steps` per wall-clock second.
    pub agent_steps_per_sec: f64,
    /// Decisions by verdict (`allow`, `deny`, `require_approval`, `halt`).
    pub decisions: BTreeMap<&'static str, u64>,
    /// Decisions other than allow, by the rule that made them (`budget.tokens`,
    /// `pool.swarm/ops.tokens`, `no-rm-rf`, ...).
    pub refusals_by_rule: BTreeMap<String, u64>,
    /// Halts by kind.
    pub halts: BTreeMap<&'static str, u64>,
    /// Every pool, root first.
    pub pools: Vec<PoolReport>,
    /// Σ over pools and dimensions of spend beyond the limit: must be 0.
    pub overspend: u64,
    /// Every invariant with its result.
    pub invariants: Vec<InvariantResult>,
    /// Faults injected, by kind.
    pub faults: BTreeMap<&'static str, u64>,
    /// Everything else the run did.
    pub activity: Activity,
    /// BLAKE3 over every decision (hex): equal for two runs of the same seed and scenario.
    pub digest: String,
    /// The first violation, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub violation: Option<Violation>,
}

impl Report {
    /// True when every invariant held.
    pub fn passed(&self) -> bool {
        self.violation.is_none()
    }
}

fn human(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0..=59 => format!("{}.{:03}s", s, ms % 1000),
        60..=3599 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m{:02}s", s / 3600, s / 60 % 60, s % 60),
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "scenario {}  seed {}  agents {}  operators {}  nodes {}",
            self.scenario, self.seed, self.agents, self.operators, self.nodes
        )?;
        writeln!(
            f,
            "simulated {}{}  wall {}  events {}  agent-steps {}  ({:.0} agent-steps/s)",
            human(self.simulated_ms),
            match self.simulated_ms.saturating_sub(self.duration_ms) {
                0 => String::new(),
                drain => format!(
                    " ({} run + {} drain: outcomes and approvals settled after the agents stopped)",
                    human(self.duration_ms),
                    human(drain)
                ),
            },
            human(self.wall_ms),
            self.events,
            self.agent_steps,
            self.agent_steps_per_sec
        )?;
        writeln!(f, "\ndecisions")?;
        for (k, v) in &self.decisions {
            writeln!(f, "  {k:<18} {v:>12}")?;
        }
        writeln!(f, "\nrefusals by rule (deny, require_approval, halt)")?;
        for (k, v) in &self.refusals_by_rule {
            writeln!(f, "  {k:<30} {v:>12}")?;
        }
        writeln!(f, "\nhalts by kind")?;
        if self.halts.is_empty() {
            writeln!(f, "  (none)")?;
        }
        for (k, v) in &self.halts {
            writeln!(f, "  {k:<18} {v:>12}")?;
        }
        writeln!(f, "\npools: spent / limit (reserved, overrun)")?;
        for p in &self.pools {
            writeln!(f, "  {}", p.path)?;
            for (dim, spent) in &p.spent {
                let limit = p
                    .limit
                    .get(dim)
                    .map_or("unlimited".to_string(), |l| l.to_string());
                let reserved = p.reserved.get(dim).copied().unwrap_or(0);
                let overrun = p.overrun.get(dim).copied().unwrap_or(0);
                writeln!(
                    f,
                    "    {dim:<16} {spent:>14} / {limit:<14} ({reserved}, {overrun})"
                )?;
            }
        }
        writeln!(
            f,
            "\noverspend          {:>12}   (must be 0)",
            self.overspend
        )?;
        if !self.faults.is_empty() {
            let list: Vec<String> = self
                .faults
                .iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect();
            writeln!(f, "faults             {}", list.join(", "))?;
        }
        let a = &self.activity;
        writeln!(
            f,
            "activity           {} outcomes ({} refused), {} approvals answered, {} timed out, {} resumes, {} deadlocks, {} refused while the journal was down, {} restarts ({} torn bytes cut, {} orphans settled), {} actor restarts ({} escalations)",
            a.outcomes, a.outcomes_refused, a.approvals_answered, a.approvals_timed_out, a.resumes,
            a.deadlocks, a.refused_journal_down, a.restarts, a.torn_bytes, a.orphans_settled,
            a.actor_restarts, a.escalations
        )?;
        writeln!(f, "\ninvariants")?;
        for i in &self.invariants {
            let detail = i
                .detail
                .as_deref()
                .map(|d| format!("  ({d})"))
                .unwrap_or_default();
            writeln!(
                f,
                "  {:<30} {:<8} {:>10} checks{detail}",
                i.name, i.result, i.checks
            )?;
        }
        write!(f, "\ndigest {}", self.digest)
    }
}
