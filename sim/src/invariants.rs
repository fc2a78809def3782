//! The invariants of DESIGN.md, checked while the simulation runs, each with a count of the
//! checks made and the first violation found.
//!
//! | invariant | checked |
//! |---|---|
//! | `pool_bounds`: spent + reserved <= limit, every pool and dimension (overrun is reported beside it, never counted as spend) | after every event (at most 2,000 agents) or every simulated millisecond (more); every agent's own account at each restart and at the end |
//! | `no_allow_after_halt` | every decision, against the halts and resumes the swarm announced (its event bus), not the kernel's own flag |
//! | `replay_reproduces_decisions`: the journal, replayed with its policy (`audit replay`), decides every step as journaled | after each crash recovery, and at the end |
//! | `journaled_before_answered`: every allow (and approval granted) an agent acts on names an acknowledged journal entry, and that entry, a decision of that agent and step, survives every crash | at every answer; after each crash; at the end |
//! | `no_leaked_reservations`: nothing reserved anywhere once every agent has reported its outcomes and every approval is resolved | at the end, after the drain |
//! | `fail_closed`: a hostile step (the adversary's evasive spellings, forbidden tools, injections, impersonations) is never allowed at once | every such decision |

use std::collections::BTreeMap;

use serde::Serialize;
use warden_actors::{AccountSnapshot, LedgerDim};

/// The invariants' names, in report order.
pub const NAMES: [&str; 6] = [
    "pool_bounds",
    "no_allow_after_halt",
    "replay_reproduces_decisions",
    "journaled_before_answered",
    "no_leaked_reservations",
    "fail_closed",
];

/// The invariants of a multi-node run (`warden sim --nodes K`, see `cluster`).
pub const CLUSTER_NAMES: [&str; 6] = [
    "pool_bounds",
    "cluster_no_overspend",
    "cluster_converges",
    "no_allow_after_halt",
    "no_leaked_reservations",
    "fail_closed",
];

/// The test-only invariant that a deliberately broken checker reports.
pub const BROKEN: &str = "test_broken_checker";

/// One invariant's result.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct InvariantResult {
    /// Its name.
    pub name: &'static str,
    /// `pass`, `fail` or `skipped` (a check that cannot apply: replay without a journal).
    pub result: &'static str,
    /// How many times it was checked.
    pub checks: u64,
    /// What failed, or why it was skipped.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// A violation: which invariant, what exactly, and where in the run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Violation {
    /// The invariant.
    pub invariant: &'static str,
    /// What was seen.
    pub detail: String,
    /// Events processed when it was found (the prefix that shows it).
    pub event: u64,
    /// Simulated time then, ms from the start.
    pub at_ms: u64,
}

/// The checks' running state.
#[derive(Debug, Default)]
pub struct Checks {
    counts: BTreeMap<&'static str, u64>,
    skipped: BTreeMap<&'static str, String>,
    /// The first violation.
    pub violation: Option<Violation>,
}

impl Checks {
    /// Counts one check of `name`.
    pub fn count(&mut self, name: &'static str) {
        *self.counts.entry(name).or_default() += 1;
    }

    /// Counts `n` checks of `name` (none: as if never counted).
    pub fn count_n(&mut self, name: &'static str, n: u64) {
        if n > 0 {
            *self.counts.entry(name).or_default() += n;
        }
    }

    /// Marks `name` as not applicable in this run.
    pub fn skip(&mut self, name: &'static str, why: &str) {
        self.skipped.insert(name, why.to_string());
    }

    /// Records a violation (the first one stands).
    pub fn fail(&mut self, name: &'static str, detail: String, event: u64, at_ms: u64) {
        if self.violation.is_none() {
            self.violation = Some(Violation {
                invariant: name,
                detail,
                event,
                at_ms,
            });
        }
    }

    /// Every invariant's result, in [`NAMES`] order (and the broken checker's, if it ran).
    pub fn results(&self) -> Vec<InvariantResult> {
        let mut names: Vec<&'static str> = NAMES.to_vec();
        if self.counts.contains_key(BROKEN) {
            names.push(BROKEN);
        }
        self.results_of(&names)
    }

    /// The results of the invariants `names`, in that order.
    pub fn results_of(&self, names: &[&'static str]) -> Vec<InvariantResult> {
        names
            .iter()
            .copied()
            .map(|name| {
                let failed = self.violation.as_ref().filter(|v| v.invariant == name);
                let (result, detail) = match (failed, self.skipped.get(name)) {
                    (Some(v), _) => ("fail", Some(v.detail.clone())),
                    (None, Some(why)) => ("skipped", Some(why.clone())),
                    (None, None) => ("pass", None),
                };
                InvariantResult {
                    name,
                    result,
                    checks: self.counts.get(name).copied().unwrap_or(0),
                    detail,
                }
            })
            .collect()
    }
}

/// The first dimension where `spent + reserved` exceeds the limit on `account`.
pub fn over_limit(account: &AccountSnapshot) -> Option<String> {
    for dim in LedgerDim::ALL {
        let Some(limit) = account.limits.get(dim) else {
            continue;
        };
        let held = account
            .spent
            .get(dim)
            .saturating_add(account.reserved.get(dim));
        if held > limit {
            return Some(format!(
                "{} {}: spent {} + reserved {} > limit {limit}",
                account.name,
                dim.key(),
                account.spent.get(dim),
                account.reserved.get(dim)
            ));
        }
    }
    None
}

/// The first dimension with something still reserved on `account`.
pub fn still_reserved(account: &AccountSnapshot) -> Option<String> {
    LedgerDim::ALL
        .into_iter()
        .find(|d| account.reserved.get(*d) > 0)
        .map(|d| {
            format!(
                "{} still has {} {} reserved",
                account.name,
                account.reserved.get(d),
                d.key()
            )
        })
}

/// Overspend of one account: Σ over dimensions of what `spent` exceeds the limit by (0
/// whenever the ledger holds).
pub fn overspend(account: &AccountSnapshot) -> u64 {
    LedgerDim::ALL
        .into_iter()
        .filter_map(|d| {
            account
                .limits
                .get(d)
                .map(|l| account.spent.get(d).saturating_sub(l))
        })
        .sum()
}
