//! Steps parked until a human answers: the pending approval, the answer, and how an answer
//! turns a parked step into an allowed or denied one.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::decision::{Decision, Verdict};
use crate::ids::{AgentId, StepId};
use crate::ledger::{Remaining, Reservation};
use crate::record::KernelRecord;
use crate::step::Step;

use super::{AgentKernel, Decided, MAX_EXPLORED_TRACKED};

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
    /// When it is denied if nobody answers.
    pub expires_at_ms: u64,
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
            new_approval: Some(pending),
        }
    }

    /// Answers a parked step. Approve: the step becomes allowed and open (settle it as usual).
    /// Deny or timeout: its reservation is released and it is denied. Either way the returned
    /// decision is the step's final one.
    pub fn answer_approval(
        &mut self,
        step: StepId,
        answer: &ApprovalAnswer,
        now_ms: u64,
    ) -> Result<Decision, ApprovalError> {
        let d = self.answer_approval_inner(step, answer, now_ms)?;
        let len = self.outbox_len();
        self.push_record(len, || KernelRecord::Approval {
            step_id: step,
            answer: answer.clone(),
            decision: d.decision,
            at_ms: now_ms,
        });
        Ok(d)
    }

    pub(super) fn answer_approval_inner(
        &mut self,
        step: StepId,
        answer: &ApprovalAnswer,
        now_ms: u64,
    ) -> Result<Decision, ApprovalError> {
        let parked = self
            .parked
            .remove(&step)
            .ok_or_else(|| ApprovalError::NotPending(PendingApproval::id_for(&self.id, step)))?;
        self.resume_clock(now_ms);
        self.last_seen_ms = self.last_seen_ms.max(now_ms);
        let rule = Some(Arc::clone(&parked.approval.rule));
        match answer {
            ApprovalAnswer::Approve { by } => {
                self.open.insert(step, parked.reservation);
                self.steps_allowed += 1;
                let key = parked.approval.step.tool_key();
                if self.exploration_limit.is_some() || self.explored.len() < MAX_EXPLORED_TRACKED {
                    self.explored.insert(key);
                }
                let mut d = self.decision(
                    step,
                    Verdict::Allow,
                    rule,
                    None,
                    format!("approved by {by}"),
                    self.account.remaining_on_path(),
                );
                d.approval = Some(parked.approval.id);
                Ok(d)
            }
            ApprovalAnswer::Deny { by, reason } => {
                parked.reservation.cancel();
                let mut d = self.decision(
                    step,
                    Verdict::Deny,
                    rule,
                    None,
                    format!("denied by {by}: {reason}"),
                    self.account.remaining_on_path(),
                );
                d.approval = Some(parked.approval.id);
                Ok(d)
            }
            ApprovalAnswer::Timeout => {
                parked.reservation.cancel();
                let mut d = self.decision(
                    step,
                    Verdict::Deny,
                    rule,
                    None,
                    format!(
                        "nobody answered approval {} within {} ms",
                        parked.approval.id,
                        parked.approval.expires_at_ms - parked.approval.requested_at_ms
                    ),
                    self.account.remaining_on_path(),
                );
                d.approval = Some(parked.approval.id);
                Ok(d)
            }
        }
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

    /// Final (deny) decisions of parked steps that a halt cancelled, for the shell to deliver
    /// to whoever waits on them.
    pub fn take_halt_denials(&mut self) -> Vec<Decision> {
        std::mem::take(&mut self.halt_denials)
    }

    /// Steps waiting for an answer, oldest first.
    pub fn pending_approvals(&self) -> Vec<PendingApproval> {
        let mut v: Vec<PendingApproval> =
            self.parked.values().map(|p| p.approval.clone()).collect();
        v.sort_by_key(|p| p.step_id);
        v
    }
}
