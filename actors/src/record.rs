//! What an agent's kernel changed, as records: the node's write-ahead journal stores them, and
//! recovery applies them again to rebuild the state after a crash.
//!
//! A kernel with recording on ([`AgentKernel::set_recording`](crate::AgentKernel::set_recording))
//! appends one [`KernelRecord`] per state change to an outbox; [`AgentCore`](crate::AgentCore)
//! hands the outbox to its [`Recorder`] while it still holds the kernel lock, so one agent's
//! records reach the recorder in exactly the order the kernel made the changes.
//!
//! Recovery re-applies effects rather than re-deciding: a decision record carries the amounts
//! it reserved, and [`AgentKernel::restore`](crate::AgentKernel::restore) reserves exactly
//! those, whatever the policy or the other agents' order. So the rebuilt ledger is the sum
//! of what was journaled, never a new judgement.

use serde::{Deserialize, Serialize};

use crate::budget::{Amounts, CustomDim, LedgerDim};
use crate::decision::{HaltKind, HaltRecord, Verdict};
use crate::ids::{AgentId, StepId};
use crate::kernel::{ApprovalAnswer, OutcomeStatus};
use crate::step::Step;

/// One change to one agent's governance state.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum KernelRecord {
    /// A step was decided; `allow` and `require_approval` reserved `reserved`.
    Decision {
        /// The step as the agent asked for it (read back leniently: journals of earlier
        /// versions hold args that are not objects; see [`crate::step::deserialize_journaled`]).
        #[serde(deserialize_with = "crate::step::deserialize_journaled")]
        step: Step,
        /// Its id within the agent.
        step_id: StepId,
        /// The verdict.
        decision: Verdict,
        /// The rule that decided, if any.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        rule: Option<String>,
        /// For halts: the kind.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        kind: Option<HaltKind>,
        /// Why (empty for a plain allow).
        #[serde(default, skip_serializing_if = "String::is_empty")]
        reason: String,
        /// What was reserved (allow and require_approval).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reserved: Option<Amounts>,
        /// For require_approval: when the step is denied if nobody answers.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        approval_expires_at_ms: Option<u64>,
        /// For require_approval: the policy version it was judged under (an approval given
        /// under another version judges the step again). Absent: the version in force when
        /// the record is restored.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        policy_version: Option<u64>,
        /// When.
        at_ms: u64,
    },
    /// An allowed step was settled.
    Settlement {
        /// The step.
        step_id: StepId,
        /// Success or failure.
        status: OutcomeStatus,
        /// What it really used: the report, with the dimensions it did not name as reserved
        /// (`None` in journals written before every settlement recorded it: as reserved).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        actual: Option<Amounts>,
        /// What the ledger charged.
        charged: Amounts,
        /// What it gave back.
        refunded: Amounts,
        /// What no pool could cover.
        #[serde(default, skip_serializing_if = "Amounts::is_zero")]
        overrun: Amounts,
        /// The step's reservation had been released (a `lost` halt): nothing was held, and
        /// recovery charges `charged` and `overrun` without a reservation to release.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        late: bool,
        /// When.
        at_ms: u64,
    },
    /// The agent was halted.
    Halt {
        /// The halt.
        record: HaltRecord,
    },
    /// The halt was lifted.
    Resume {
        /// The halt that was lifted.
        lifted: HaltRecord,
        /// Who resumed it.
        #[serde(default, skip_serializing_if = "String::is_empty")]
        by: String,
        /// When.
        at_ms: u64,
    },
    /// The whole state of the agent at a journal snapshot (retention): with its
    /// registration, enough to rebuild the agent without the entries before it.
    State(Box<AgentStateRecord>),
    /// A parked step was resolved: answered by a human, timed out, or ended by a halt. Its
    /// final verdict is applied as recorded (recovery never judges it again): `allow` opens
    /// the step with its reservation, anything else releases the reservation.
    Approval {
        /// The step.
        step_id: StepId,
        /// The answer (`halted` when a halt of the agent ended the wait).
        answer: ApprovalAnswer,
        /// The step's final verdict: not always the answer's (an approval that came after
        /// the deadline is a deny; one given under a newer, stricter policy is that policy's
        /// verdict).
        decision: Verdict,
        /// The rule of the final decision (the one that asked for approval, or the newer
        /// policy's that overruled the approval). Absent in journals written before it was
        /// recorded.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        rule: Option<String>,
        /// For a final `halt` (a newer policy halts on the approved step): the halt's kind.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        kind: Option<HaltKind>,
        /// Why the step ended so (the final decision's reason).
        #[serde(default, skip_serializing_if = "String::is_empty")]
        reason: String,
        /// When.
        at_ms: u64,
    },
}

impl KernelRecord {
    /// When the change happened (the kernel's clock).
    pub fn at_ms(&self) -> u64 {
        match self {
            KernelRecord::Decision { at_ms, .. }
            | KernelRecord::Settlement { at_ms, .. }
            | KernelRecord::Resume { at_ms, .. }
            | KernelRecord::Approval { at_ms, .. } => *at_ms,
            KernelRecord::Halt { record } => record.at_ms,
            KernelRecord::State(s) => s.at_ms,
        }
    }
}

/// An agent's governance state, as a snapshot keeps it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AgentStateRecord {
    /// When the snapshot was taken.
    pub at_ms: u64,
    /// When the agent started (wall time counts from here).
    pub started_at_ms: u64,
    /// The next step's sequence number.
    pub next_seq: u64,
    /// Steps allowed so far.
    pub steps_allowed: u64,
    /// Consecutive failures.
    pub consecutive_failures: u32,
    /// Tools tried (their keys).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub explored: Vec<u64>,
    /// Time spent parked before the current pause.
    pub paused_total_ms: u64,
    /// Since when steps are parked, if any are.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paused_since_ms: Option<u64>,
    /// The active halt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub halt: Option<HaltRecord>,
    /// Allowed, unsettled steps and what each holds.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub open: Vec<(StepId, Amounts)>,
    /// Steps whose reservation was released while open (a `lost` halt) and what each had
    /// held, oldest first: their late outcomes are still charged.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub released: Vec<(StepId, Amounts)>,
    /// Steps parked for approval: their decision records (verdict require_approval).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub parked: Vec<KernelRecord>,
    /// The agent's own account: spent.
    pub spent: Amounts,
    /// The agent's own account: overrun.
    #[serde(default, skip_serializing_if = "Amounts::is_zero")]
    pub overrun: Amounts,
    /// Stagnation history: recent step fingerprints, oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub recent_steps: Vec<u64>,
    /// Stagnation history: recent progress values, oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub recent_progress: Vec<f64>,
    /// Final decisions of resolved approvals still kept for the agent to read, oldest first
    /// (the latest [`RESOLUTIONS_IN_SNAPSHOT_MAX`](crate::actor::RESOLUTIONS_IN_SNAPSHOT_MAX)):
    /// the resolution records themselves are in the segments a snapshot lets go.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resolved: Vec<ResolvedRecord>,
}

/// A resolved approval's final decision, as a snapshot keeps it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ResolvedRecord {
    /// The step.
    pub step_id: StepId,
    /// Its final verdict.
    pub decision: Verdict,
    /// The final decision's rule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    /// For a final halt: its kind.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<HaltKind>,
    /// Why.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
    /// The journal sequence number of the resolution.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audit_seq: Option<u64>,
}

/// Takes an agent's records as they happen. Called with the agent's kernel lock held: it must
/// not block (enqueue, don't write).
pub trait Recorder: Send + Sync + 'static {
    /// Records `records` (in order) for `agent`; returns the sequence numbers given to the
    /// first and the last one, if the recorder numbers them.
    fn record(&self, agent: &AgentId, records: Vec<KernelRecord>) -> Option<Recorded>;
}

/// The sequence numbers a [`Recorder`] gave one call's records: the first and the last
/// (others' records may lie between them).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Recorded {
    /// The first record's number.
    pub first: u64,
    /// The last record's number.
    pub last: u64,
}

/// The JSON shape of [`Amounts`]: one key per built-in dimension that is not zero
/// ([`LedgerDim::key`]), and `custom` for named dimensions.
#[derive(Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct AmountsJson {
    #[serde(default, skip_serializing_if = "is_zero")]
    steps: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    tokens: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    cost_micro_usd: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    risk_micro: u64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    custom: Vec<(CustomDim, u64)>,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

impl Serialize for Amounts {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        AmountsJson {
            steps: self.get(LedgerDim::Steps),
            tokens: self.get(LedgerDim::Tokens),
            cost_micro_usd: self.get(LedgerDim::CostMicroUsd),
            risk_micro: self.get(LedgerDim::RiskMicro),
            custom: self.custom_entries().to_vec(),
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for Amounts {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let j = AmountsJson::deserialize(d)?;
        let mut a = Amounts::new(j.steps, j.tokens, j.cost_micro_usd, j.risk_micro);
        for (dim, v) in j.custom {
            a.set_custom(dim, v);
        }
        Ok(a)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::step::ActionClass;

    /// Journals written before args had to be objects hold arrays, text, numbers and null
    /// there: their decisions still read back (for recovery and replay), args as they were;
    /// a step from an agent with such args is still refused.
    #[test]
    fn journaled_steps_with_args_of_any_shape_still_read_back() {
        for args in [
            serde_json::json!("x"),
            serde_json::json!(["rm", "-rf", "/"]),
            serde_json::json!(5),
            serde_json::json!(null),
        ] {
            let text = format!(
                r#"{{"type":"decision","step":{{"tool":"shell","action":"execute","args":{args},"cost":{{"tokens":0,"cost_micro_usd":0}}}},"step_id":"s-1","decision":"allow","reserved":{{"steps":1}},"at_ms":7}}"#
            );
            let rec: KernelRecord =
                serde_json::from_str(&text).unwrap_or_else(|e| panic!("{args}: {e}"));
            let KernelRecord::Decision { step, .. } = rec else {
                panic!("a decision")
            };
            assert_eq!(step.args(), &args);
            // Written by an earlier version: both dimensions were always written, so declared.
            assert_eq!(step.cost().declared_tokens(), Some(0));
            let from_agent = format!(r#"{{"tool":"shell","action":"execute","args":{args}}}"#);
            assert!(serde_json::from_str::<Step>(&from_agent).is_err(), "{args}");
        }
        let encoded = r#"{"type":"decision","step":{"tool":"t","action":"read","args":"{\"a\": 1}"},"step_id":"s-1","decision":"deny","at_ms":7}"#;
        let rec: KernelRecord = serde_json::from_str(encoded).unwrap();
        let KernelRecord::Decision { step, .. } = rec else {
            panic!("a decision")
        };
        assert_eq!(
            step.args(),
            &serde_json::json!({"a": 1}),
            "decoded as today"
        );
    }

    #[test]
    fn records_round_trip_through_json() {
        let mut reserved = Amounts::new(1, 500, 2_000, 300_000);
        reserved.set_custom(CustomDim::new("gpu_seconds").unwrap(), 7);
        let rec = KernelRecord::Decision {
            step: Step::builder("web.search", ActionClass::Read)
                .tokens(500)
                .build()
                .unwrap(),
            step_id: StepId::from_seq(3),
            decision: Verdict::Allow,
            rule: None,
            kind: None,
            reason: String::new(),
            reserved: Some(reserved),
            approval_expires_at_ms: None,
            policy_version: None,
            at_ms: 42,
        };
        let text = serde_json::to_string(&rec).unwrap();
        assert!(text.contains(r#""type":"decision""#), "{text}");
        let back: KernelRecord = serde_json::from_str(&text).unwrap();
        assert_eq!(back, rec);
        let answer = KernelRecord::Approval {
            step_id: StepId::from_seq(4),
            answer: ApprovalAnswer::Deny {
                by: "ops".into(),
                reason: "no".into(),
            },
            decision: Verdict::Deny,
            rule: Some("big-transfer".into()),
            kind: None,
            reason: "denied by ops: no".into(),
            at_ms: 9,
        };
        let back: KernelRecord =
            serde_json::from_str(&serde_json::to_string(&answer).unwrap()).unwrap();
        assert_eq!(back, answer);
    }
}
