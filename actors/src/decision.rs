//! Decisions, halt kinds and halt records: what the kernel answers and remembers.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::budget::LedgerDim;
use crate::ids::{AgentId, StepId};
use crate::ledger::Remaining;

/// The answer to a step. Ordered by strength: when several checks disagree, the strongest
/// wins (`Halt > Deny > RequireApproval > Allow`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// The step may run; its expected cost is reserved.
    Allow = 0,
    /// The step needs a human's yes first.
    RequireApproval = 1,
    /// The step may not run; the agent may try something else.
    Deny = 2,
    /// The agent is stopped; nothing more is allowed until an operator resumes it.
    Halt = 3,
}

impl Verdict {
    /// The name used in JSON and metrics.
    pub const fn name(self) -> &'static str {
        match self {
            Verdict::Allow => "allow",
            Verdict::RequireApproval => "require_approval",
            Verdict::Deny => "deny",
            Verdict::Halt => "halt",
        }
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why an agent was halted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HaltKind {
    /// A budget ran out (steps, tokens, money, wall time, failures) or usage overran it.
    Exhaustion,
    /// The agent repeats itself or makes no progress.
    Stagnation,
    /// The agent's accumulated risk passed its budget.
    Overrisk,
    /// A safety rule fired.
    Safety,
    /// An operator or a parent supervisor stopped it.
    External,
    /// Another agent's halt spread to it.
    Cascade,
    /// It was part of a wait-for cycle.
    Deadlock,
    /// It stopped sending heartbeats.
    Lost,
}

impl HaltKind {
    /// Every kind, for metrics and parsing.
    pub const ALL: [HaltKind; 8] = [
        HaltKind::Exhaustion,
        HaltKind::Stagnation,
        HaltKind::Overrisk,
        HaltKind::Safety,
        HaltKind::External,
        HaltKind::Cascade,
        HaltKind::Deadlock,
        HaltKind::Lost,
    ];

    /// The name used in JSON, policies and metrics.
    pub const fn name(self) -> &'static str {
        match self {
            HaltKind::Exhaustion => "exhaustion",
            HaltKind::Stagnation => "stagnation",
            HaltKind::Overrisk => "overrisk",
            HaltKind::Safety => "safety",
            HaltKind::External => "external",
            HaltKind::Cascade => "cascade",
            HaltKind::Deadlock => "deadlock",
            HaltKind::Lost => "lost",
        }
    }
}

impl fmt::Display for HaltKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for HaltKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        HaltKind::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| {
                format!(
                    "unknown halt kind {s:?}; expected one of {}",
                    HaltKind::ALL.map(|k| k.name()).join(", ")
                )
            })
    }
}

/// One link of a cascade's cause chain: which agent halted, how, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CauseLink {
    /// The agent (or, for a team-level breaker, the team path) that halted first.
    pub agent: String,
    /// Its halt kind.
    pub kind: HaltKind,
    /// Its reason.
    pub reason: String,
}

/// What the kernel remembers about a halt. A halt is terminal until an explicit resume.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HaltRecord {
    /// The kind.
    pub kind: HaltKind,
    /// The rule that caused it (`budget.tokens`, `stagnation.repeat`, a policy rule id, ...).
    pub rule: Option<Arc<str>>,
    /// A sentence for humans.
    pub reason: String,
    /// When, in the clock's milliseconds.
    pub at_ms: u64,
    /// For cascaded halts: the chain from the original halt to this one, oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cause: Vec<CauseLink>,
}

/// Remaining budget per built-in dimension, as shown in decisions. Only limited dimensions
/// appear; money in dollars is derived from micro-dollars only at this edge.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RemainingView(pub Remaining);

impl Serialize for RemainingView {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let count = self.0 .0.iter().filter(|v| v.is_some()).count();
        let mut map = s.serialize_map(Some(count))?;
        for dim in LedgerDim::ALL {
            if let Some(v) = self.0.get(dim) {
                map.serialize_entry(dim.key(), &v)?;
            }
        }
        map.end()
    }
}

/// The kernel's answer to one step.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Decision {
    /// Allow, deny, require approval or halt.
    pub decision: Verdict,
    /// The rule that decided (`None` for a plain allow within budgets).
    pub rule: Option<Arc<str>>,
    /// For halts: the kind.
    pub kind: Option<HaltKind>,
    /// A sentence for humans (empty for a plain allow).
    pub reason: String,
    /// The step's id within its agent.
    pub step: StepId,
    /// For `require_approval`: the approval to wait for.
    pub approval: Option<String>,
    /// What the agent may still use, minimum over its own budget and every pool above it.
    pub remaining: RemainingView,
    /// The audit journal sequence number, once the node journals decisions.
    pub audit_seq: Option<u64>,
}

impl Decision {
    /// True for `allow`.
    pub fn is_allow(&self) -> bool {
        self.decision == Verdict::Allow
    }

    /// True for `halt`.
    pub fn is_halt(&self) -> bool {
        self.decision == Verdict::Halt
    }
}

/// What an event or a report says about a decision, without the full step.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DecisionEvent {
    /// The agent.
    pub agent: AgentId,
    /// The step's tool.
    pub tool: Arc<str>,
    /// The decision.
    pub decision: Decision,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strongest_verdict_wins_by_ordering() {
        let mut all = [
            Verdict::Allow,
            Verdict::Halt,
            Verdict::RequireApproval,
            Verdict::Deny,
        ];
        all.sort();
        assert_eq!(
            all,
            [
                Verdict::Allow,
                Verdict::RequireApproval,
                Verdict::Deny,
                Verdict::Halt
            ]
        );
        assert_eq!("overrisk".parse::<HaltKind>(), Ok(HaltKind::Overrisk));
        assert!("nope"
            .parse::<HaltKind>()
            .unwrap_err()
            .contains("exhaustion"));
    }
}
