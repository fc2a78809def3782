//! Steps parked until a human answers: the pending approval, the answer, and how an answer
//! turns a parked step into an allowed or denied one.
//!
//! An answer is checked when it arrives, with the time it arrives (a parameter: the kernel
//! reads no clock): one that comes at or after the deadline is a timeout (deny), whatever it
//! says and whether or not the sweep has run. An approval given while another policy version
//! is in force than the one the step was parked under is judged again by the policy in force:
//! if that is stricter, it wins and its rule and reason are the final decision's. Every
//! resolution is journaled with its final verdict, rule and reason ([`KernelRecord::Approval`]),
//! and recovery applies that verdict as recorded.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::decision::{Decision, HaltKind, HaltRecord, RemainingView, Verdict};
use crate::ids::{AgentId, StepId};
use crate::ledger::{Remaining, Reservation};
use crate::record::KernelRecord;
use crate::step::Step;

use super::{AgentKernel, Decided, PolicyContext, PolicyOutcome, MAX_EXPLORED_TRACKED};

/// Default time a step waits for a human before it is denied: 10 minutes.
pub const DEFAULT_APPROVAL_TIMEOUT_MS: u64 = 10 * 60 * 1_000;

/// A step parked until a human answers. Its expected cost is already reserved, so an approval
/// never fails for budget; the agent's wall time does not run while any step waits.
#[derive(Debug, Clone, PartialEq)]
pub struct PendingApproval {
    /// `<agent>/<step>`, unique in a swarm.
    pub id: String,
    /// The agent.
    pub agent: AgentId,
    /// The parked step's id.
    pub step_id: StepId,
    /// The parked step.
    pub step: Step,
    /// The rule that asked for approval.
    pub rule: Arc<str>,
    /// Its message.
    pub reason: String,
    /// When it was parked.
    pub requested_at_ms: u64,
    /// When it is denied if nobody answers; an answer at or after this time is too late.
    pub expires_at_ms: u64,
    /// The policy version it was judged under (0 for a policy that never changes).
    pub policy_version: u64,
}

impl PendingApproval {
    /// The approval id for a step.
    pub fn id_for(agent: &AgentId, step: StepId) -> String {
        format!("{agent}/{step}")
    }
}

/// A human's answer, or the lack of one.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "answer", rename_all = "snake_case")]
pub enum ApprovalAnswer {
    /// Go ahead: the step becomes an allowed, open step.
    Approve {
        /// Who approved.
        by: String,
    },
    /// No: the reservation is released and the step denied.
    Deny {
        /// Who denied.
        by: String,
        /// Why.
        reason: String,
    },
    /// Nobody answered in time: denied.
    Timeout,
    /// The agent was halted while the step waited: denied. The kernel records this itself
    /// when a halt ends a parked step; given as an answer, it denies like `Deny`.
    Halted {
        /// The halt's kind.
        kind: HaltKind,
        /// The halt's reason.
        reason: String,
    },
}

impl ApprovalAnswer {
    /// Who answered, and how, for messages: `approved by ops`.
    fn describe(&self) -> String {
        match self {
            ApprovalAnswer::Approve { by } => format!("approved by {by}"),
            ApprovalAnswer::Deny { by, .. } => format!("denied by {by}"),
            ApprovalAnswer::Timeout => "no answer".into(),
            ApprovalAnswer::Halted { kind, .. } => format!("the agent halted ({kind})"),
        }
    }
}

/// Why an approval could not be answered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApprovalError {
    /// Unknown id, or already answered.
    #[error("no pending approval {0}: it was never requested, was already answered, or timed out")]
    NotPending(String),
}

/// What parking a step needs, besides the step itself.
pub(super) struct Parking {
    /// The rule asking for approval, and its message.
    pub(super) rule: Arc<str>,
    pub(super) reason: String,
    /// The step's reservation, held while it waits.
    pub(super) reservation: Reservation,
    /// What is left on the path after the reservation.
    pub(super) remaining: Remaining,
    /// How long it waits for an answer before it is denied.
    pub(super) timeout_ms: u64,
}

/// A parked step and the reservation it holds.
pub(super) struct Parked {
    pub(super) approval: PendingApproval,
    pub(super) reservation: Reservation,
}

/// How a parked step ends: its final decision, and the halt it sets off (an approval that
/// a newer policy halts on).
struct Resolution {
    decision: Decision,
    halt: Option<HaltRecord>,
}

impl AgentKernel {
    /// Parks an admitted step until a human answers (its reservation held); while any step
    /// waits, the agent's wall time does not run.
    pub(super) fn park(
        &mut self,
        step: &Step,
        step_id: StepId,
        parking: Parking,
        now_ms: u64,
    ) -> Decided {
        let Parking {
            rule,
            reason,
            reservation,
            remaining,
            timeout_ms,
        } = parking;
        let pending = PendingApproval {
            id: PendingApproval::id_for(&self.id, step_id),
            agent: self.id.clone(),
            step_id,
            step: step.clone(),
            rule: Arc::clone(&rule),
            reason: reason.clone(),
            requested_at_ms: now_ms,
            expires_at_ms: now_ms.saturating_add(timeout_ms),
            policy_version: self.judged_under,
        };
        if self.parked.is_empty() {
            self.paused_since_ms = Some(now_ms);
        }
        self.parked.insert(
            step_id,
            Parked {
                approval: pending.clone(),
                reservation,
            },
        );
        let mut decision = self.decision(
            step_id,
            Verdict::RequireApproval,
            Some(rule),
            None,
            reason,
            remaining,
        );
        decision.approval = Some(pending.id.clone());
        Decided {
            decision,
            new_halt: None,
            new_approval: Some(Box::new(pending)),
        }
    }

    /// Answers a parked step at `now_ms`, the time the answer arrived. Approve, in time: the
    /// step becomes allowed and open (settle it as usual), unless a policy version other
    /// than the one it was parked under is in force and judges it more strictly: then that
    /// verdict is final (a halt halts the agent; see [`halt_record`](Self::halt_record)).
    /// Deny, timeout, halted, or any answer at or after the deadline: its reservation is
    /// released and it is denied. Either way the returned decision is the step's final one,
    /// and it is journaled with its verdict, rule and reason.
    pub fn answer_approval(
        &mut self,
        step: StepId,
        answer: &ApprovalAnswer,
        now_ms: u64,
    ) -> Result<Decision, ApprovalError> {
        let mark = self.outbox_len();
        let parked = self
            .parked
            .remove(&step)
            .ok_or_else(|| ApprovalError::NotPending(PendingApproval::id_for(&self.id, step)))?;
        self.resume_clock(now_ms);
        self.last_seen_ms = self.last_seen_ms.max(now_ms);
        let Resolution { mut decision, halt } = self.resolve(&parked, answer, now_ms);
        self.apply_resolution(parked, decision.decision);
        // What is left once the answer took effect (a denial released the reservation), as
        // a resolution restored after a restart reads it.
        decision.remaining = RemainingView(self.account.remaining_on_path());
        // Before the records of a halt it sets off, so recovery meets them in that order.
        self.push_record(mark, || KernelRecord::Approval {
            step_id: step,
            answer: answer.clone(),
            decision: decision.decision,
            rule: decision.rule.as_deref().map(str::to_string),
            kind: decision.kind,
            reason: decision.reason.clone(),
            at_ms: now_ms,
        });
        if let Some(record) = halt {
            self.apply_halt(record);
        }
        Ok(decision)
    }

    /// The final decision for `answer` at `now_ms` (nothing changed yet).
    fn resolve(&self, parked: &Parked, answer: &ApprovalAnswer, now_ms: u64) -> Resolution {
        let p = &parked.approval;
        let final_decision = |verdict, rule: Arc<str>, kind, reason| {
            let mut d = self.decision(
                p.step_id,
                verdict,
                Some(rule),
                kind,
                reason,
                self.account.remaining_on_path(),
            );
            d.approval = Some(p.id.clone());
            d
        };
        let deny = |reason| Resolution {
            decision: final_decision(Verdict::Deny, Arc::clone(&p.rule), None, reason),
            halt: None,
        };
        let waited_ms = p.expires_at_ms.saturating_sub(p.requested_at_ms);
        let late = !matches!(
            answer,
            ApprovalAnswer::Timeout | ApprovalAnswer::Halted { .. }
        ) && now_ms >= p.expires_at_ms;
        if late {
            return deny(format!(
                "approval {} timed out: nobody answered within {waited_ms} ms; the answer ({}) came {} ms after the deadline",
                p.id,
                answer.describe(),
                now_ms - p.expires_at_ms
            ));
        }
        let by = match answer {
            ApprovalAnswer::Approve { by } => by,
            ApprovalAnswer::Deny { by, reason } => {
                return deny(format!("denied by {by}: {reason}"))
            }
            ApprovalAnswer::Timeout => {
                return deny(format!(
                    "nobody answered approval {} within {waited_ms} ms",
                    p.id
                ))
            }
            ApprovalAnswer::Halted { kind, reason } => {
                return deny(format!(
                    "agent halted ({kind}) while the step waited: {reason}"
                ))
            }
        };
        let approved = || Resolution {
            decision: final_decision(
                Verdict::Allow,
                Arc::clone(&p.rule),
                None,
                format!("approved by {by}"),
            ),
            halt: None,
        };
        let Some((version, outcome)) = self.rejudge(parked, now_ms) else {
            return approved();
        };
        let overruled = |what: &str, reason: &str| {
            format!(
                "approved by {by}, but policy version {version}, in force since the step was parked under version {}, {what} it: {reason}",
                p.policy_version
            )
        };
        match outcome {
            PolicyOutcome::Allow | PolicyOutcome::RequireApproval { .. } => approved(),
            PolicyOutcome::Deny { rule, reason } => Resolution {
                decision: final_decision(Verdict::Deny, rule, None, overruled("denies", &reason)),
                halt: None,
            },
            PolicyOutcome::Halt { rule, kind, reason } => {
                let reason = overruled("halts the agent on", &reason);
                Resolution {
                    halt: Some(HaltRecord {
                        kind,
                        rule: Some(Arc::clone(&rule)),
                        reason: reason.clone(),
                        at_ms: now_ms,
                        cause: Vec::new(),
                    }),
                    decision: final_decision(Verdict::Halt, rule, Some(kind), reason),
                }
            }
        }
    }

    /// An approved step judged again by the policy in force, if that is another version than
    /// the one it was parked under.
    fn rejudge(&self, parked: &Parked, now_ms: u64) -> Option<(u64, PolicyOutcome)> {
        let policy = self.policy.as_ref()?;
        let step = &parked.approval.step;
        let team = self.account.parent().map_or("", |p| &**p.name());
        let ctx = PolicyContext {
            agent: &self.id,
            step,
            consecutive_failures: self.consecutive_failures,
            steps_decided: parked.approval.step_id.seq() - 1,
            now_ms,
            team,
            account: &self.account,
        };
        policy.rejudge_approved(&ctx, parked.approval.policy_version)
    }

    /// The effect of a final verdict on a parked step (already taken out of `parked`): an
    /// allow opens it with its reservation, anything else releases the reservation.
    fn apply_resolution(&mut self, parked: Parked, verdict: Verdict) {
        if verdict != Verdict::Allow {
            parked.reservation.cancel();
            return;
        }
        self.open
            .insert(parked.approval.step_id, parked.reservation);
        self.seal(parked.approval.step_id, parked.approval.step.seal());
        self.steps_allowed += 1;
        let key = parked.approval.step.tool_key();
        if self.exploration_limit.is_some() || self.explored.len() < MAX_EXPLORED_TRACKED {
            self.explored.insert_key(key);
        }
    }

    /// Recovery: applies a journaled resolution as recorded (its verdict, not judged again)
    /// and keeps its final decision for whoever asks after the restart.
    pub(super) fn restore_approval(
        &mut self,
        step: StepId,
        answer: &ApprovalAnswer,
        verdict: Verdict,
        (rule, kind, reason): (Option<&str>, Option<HaltKind>, &str),
        at_ms: u64,
    ) -> Result<(), ApprovalError> {
        let Some(parked) = self.parked.remove(&step) else {
            // A halt's resolution of a step the halt already ended (`audit replay` judged the
            // halting decision again, and its halt denied the step): nothing left to apply.
            if matches!(answer, ApprovalAnswer::Halted { .. }) && self.halt.is_some() {
                return Ok(());
            }
            return Err(ApprovalError::NotPending(PendingApproval::id_for(
                &self.id, step,
            )));
        };
        self.resume_clock(at_ms);
        self.last_seen_ms = self.last_seen_ms.max(at_ms);
        // Journals written before the rule and reason were recorded: the answer's own.
        let rule: Arc<str> = rule.map_or_else(|| Arc::clone(&parked.approval.rule), Arc::from);
        let reason = if reason.is_empty() {
            answer.describe()
        } else {
            reason.to_string()
        };
        let id = parked.approval.id.clone();
        self.apply_resolution(parked, verdict);
        let mut d = self.decision(
            step,
            verdict,
            Some(rule),
            kind,
            reason,
            self.account.remaining_on_path(),
        );
        d.approval = Some(id);
        self.resolutions.push(d);
        Ok(())
    }

    /// Parked steps whose time is up at `now_ms`.
    pub fn expired_approvals(&self, now_ms: u64) -> Vec<StepId> {
        let mut v: Vec<StepId> = self
            .parked
            .iter()
            .filter(|(_, p)| p.approval.expires_at_ms <= now_ms)
            .map(|(id, _)| *id)
            .collect();
        v.sort_unstable();
        v
    }

    /// Final decisions of parked steps that a halt ended, or that recovery restored, for the
    /// shell to keep and deliver to whoever waits on them.
    pub fn take_resolutions(&mut self) -> Vec<Decision> {
        std::mem::take(&mut self.resolutions)
    }

    /// Steps waiting for an answer, oldest first.
    pub fn pending_approvals(&self) -> Vec<PendingApproval> {
        let mut v: Vec<PendingApproval> =
            self.parked.values().map(|p| p.approval.clone()).collect();
        v.sort_by_key(|p| p.step_id);
        v
    }

    /// A parked step's current decision (`require_approval`, with what is left on the path
    /// now) and its deadline, if it is parked.
    pub fn parked_decision(&self, step: StepId) -> Option<(Decision, u64)> {
        let p = self.parked.get(&step)?;
        let mut d = self.decision(
            step,
            Verdict::RequireApproval,
            Some(Arc::clone(&p.approval.rule)),
            None,
            p.approval.reason.clone(),
            self.account.remaining_on_path(),
        );
        d.approval = Some(p.approval.id.clone());
        Some((d, p.approval.expires_at_ms))
    }

    /// True when step `step` has been decided (whatever its verdict).
    pub fn has_decided(&self, step: StepId) -> bool {
        step.seq() < self.next_seq
    }
}
