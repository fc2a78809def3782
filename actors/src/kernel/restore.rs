//! Recovery and audit replay: [`AgentKernel::restore`] re-applies journaled records as they
//! happened, [`AgentKernel::replay_decision`] re-judges a journaled decision and compares, and
//! [`AgentKernel::export_state`] writes the whole state for a retention snapshot.

use std::sync::Arc;

use crate::budget::Amounts;
use crate::decision::Verdict;
use crate::ids::StepId;
use crate::record::{AgentStateRecord, KernelRecord};
use crate::rules;

use super::{
    AgentKernel, OutcomeStatus, Parked, PendingApproval, DEFAULT_APPROVAL_TIMEOUT_MS,
    MAX_EXPLORED_TRACKED,
};

/// A replayed decision's new verdict and rule ([`AgentKernel::replay_decision`]).
pub type Rejudged = (Verdict, Option<Arc<str>>);

impl AgentKernel {
    /// Re-runs a journaled decision against today's state and policy (`warden audit
    /// replay`): decides the recorded step at its recorded time under its recorded id, and
    /// compares. Returns `None` when the verdict is the same, else the new verdict and rule.
    /// Either way the state then follows the journal (a differing verdict's effects are
    /// undone and the journaled ones applied), so later decisions are judged from the state
    /// the agent really had. A halt the journal did not have is lifted again, but steps it
    /// cancelled stay cancelled. Other records are applied as in [`restore`](Self::restore).
    pub fn replay_decision(&mut self, record: &KernelRecord) -> Result<Option<Rejudged>, String> {
        let KernelRecord::Decision {
            step,
            step_id,
            decision,
            rule,
            kind,
            reserved,
            at_ms,
            ..
        } = record
        else {
            return self.restore(record).map(|()| None);
        };
        self.next_seq = step_id.seq();
        let was_halted = self.halt.is_some();
        let now = self.decide(step, *at_ms).decision;
        let same_amounts = match (now.decision, reserved) {
            (Verdict::Allow, Some(r)) => self.open.get(step_id).map(|x| x.amounts()) == Some(r),
            (Verdict::RequireApproval, Some(r)) => {
                self.parked.get(step_id).map(|p| p.reservation.amounts()) == Some(r)
            }
            _ => true,
        };
        // Same verdict, same amounts, and for anything but a plain allow the same rule and
        // halt kind (a deny by another rule is a different decision).
        let same_reason = now.decision == Verdict::Allow
            || (now.rule.as_deref() == rule.as_deref() && now.kind == *kind);
        if now.decision == *decision && same_amounts && same_reason {
            return Ok(None);
        }
        match now.decision {
            Verdict::Allow => {
                if let Some(r) = self.open.remove(step_id) {
                    r.cancel();
                    self.steps_allowed = self.steps_allowed.saturating_sub(1);
                }
            }
            Verdict::RequireApproval => {
                if let Some(p) = self.parked.remove(step_id) {
                    p.reservation.cancel();
                    self.resume_clock(*at_ms);
                }
            }
            Verdict::Halt if !was_halted => {
                self.halt = None;
                self.take_resolutions();
            }
            _ => {}
        }
        // Apply what the journal says happened (without observing the step twice).
        self.next_seq = step_id.seq();
        self.restore_decision_effects(record);
        Ok(Some((now.decision, now.rule)))
    }

    /// The whole state, for a journal snapshot (retention). `at_ms` is the snapshot's time.
    pub fn export_state(&self, at_ms: u64) -> AgentStateRecord {
        let mut open: Vec<(StepId, Amounts)> = self
            .open
            .iter()
            .map(|(id, r)| (*id, r.amounts().clone()))
            .collect();
        open.sort_by_key(|(id, _)| *id);
        let mut parked: Vec<&Parked> = self.parked.values().collect();
        parked.sort_by_key(|p| p.approval.step_id);
        let parked = parked
            .into_iter()
            .map(|p| KernelRecord::Decision {
                step: p.approval.step.clone(),
                step_id: p.approval.step_id,
                decision: Verdict::RequireApproval,
                rule: Some(p.approval.rule.to_string()),
                kind: None,
                reason: p.approval.reason.clone(),
                reserved: Some(p.reservation.amounts().clone()),
                approval_expires_at_ms: Some(p.approval.expires_at_ms),
                policy_version: Some(p.approval.policy_version),
                at_ms: p.approval.requested_at_ms,
            })
            .collect();
        let mut explored: Vec<u64> = self.explored.keys().copied().collect();
        explored.sort_unstable();
        let own = self.account.snapshot();
        let (recent_steps, recent_progress) = self.stagnation.history();
        AgentStateRecord {
            recent_steps,
            recent_progress,
            at_ms,
            started_at_ms: self.started_at_ms,
            next_seq: self.next_seq,
            steps_allowed: self.steps_allowed,
            consecutive_failures: self.consecutive_failures,
            explored,
            paused_total_ms: self.paused_total_ms,
            paused_since_ms: self.paused_since_ms,
            halt: self.halt.clone(),
            open,
            released: self.released.list(),
            parked,
            spent: own.spent,
            overrun: own.overrun,
            // Kept by the shell, not the kernel: `AgentCore` adds them.
            resolved: Vec::new(),
        }
    }

    fn restore_state(&mut self, s: &AgentStateRecord) {
        self.started_at_ms = s.started_at_ms;
        self.next_seq = s.next_seq;
        self.steps_allowed = s.steps_allowed;
        self.consecutive_failures = s.consecutive_failures;
        self.explored = s.explored.iter().copied().collect();
        self.stagnation
            .restore_history(&s.recent_steps, &s.recent_progress);
        self.halt = s.halt.clone();
        self.last_seen_ms = self.last_seen_ms.max(s.at_ms);
        self.account.restore_totals(&s.spent, &s.overrun);
        for (id, amounts) in &s.open {
            let r = self.account.restore_reservation(amounts);
            self.open.insert(*id, r);
        }
        for (id, amounts) in &s.released {
            self.released.remember(*id, amounts.clone());
        }
        for p in &s.parked {
            self.restore_decision_effects(p);
        }
        // After the parked steps, which set a pause of their own.
        self.paused_total_ms = s.paused_total_ms;
        self.paused_since_ms = s.paused_since_ms;
        for r in &s.resolved {
            let mut d = self.decision(
                r.step_id,
                r.decision,
                r.rule.as_deref().map(Arc::from),
                r.kind,
                r.reason.clone(),
                self.account.remaining_on_path(),
            );
            d.approval = Some(PendingApproval::id_for(&self.id, r.step_id));
            d.audit_seq = r.audit_seq;
            self.resolutions.push(d);
        }
    }

    /// Applies a journaled change again (recovery). Effects are applied as recorded, not
    /// judged again: a decision reserves exactly what it reserved then, a settlement charges
    /// what it charged. Stagnation history is rebuilt from decisions; rate limits are not
    /// (they start afresh). Records for steps it does not know are reported, not applied.
    pub fn restore(&mut self, record: &KernelRecord) -> Result<(), String> {
        match record {
            KernelRecord::Decision { step, decision, .. } => {
                if *decision != Verdict::Halt {
                    self.stagnation
                        .observe(step.fingerprint(), step.signals().progress());
                }
                self.restore_decision_effects(record);
                Ok(())
            }
            _ => self.restore_other(record),
        }
    }

    fn restore_decision_effects(&mut self, record: &KernelRecord) {
        let KernelRecord::Decision {
            step,
            step_id,
            decision,
            rule,
            reason,
            reserved,
            approval_expires_at_ms,
            policy_version,
            at_ms,
            ..
        } = record
        else {
            return;
        };
        self.next_seq = self.next_seq.max(step_id.seq() + 1);
        self.last_seen_ms = self.last_seen_ms.max(*at_ms);
        let reserve = || reserved.clone().unwrap_or_else(|| step.reservation());
        match decision {
            Verdict::Allow => {
                let r = self.account.restore_reservation(&reserve());
                self.open.insert(*step_id, r);
                self.steps_allowed += 1;
                if self.exploration_limit.is_some() || self.explored.len() < MAX_EXPLORED_TRACKED {
                    self.explored.insert_key(step.tool_key());
                }
            }
            Verdict::RequireApproval => {
                let reservation = self.account.restore_reservation(&reserve());
                let rule: Arc<str> = Arc::from(rule.as_deref().unwrap_or(rules::APPROVAL));
                let approval = PendingApproval {
                    id: PendingApproval::id_for(&self.id, *step_id),
                    agent: self.id.clone(),
                    step_id: *step_id,
                    step: step.clone(),
                    rule,
                    reason: reason.clone(),
                    requested_at_ms: *at_ms,
                    expires_at_ms: approval_expires_at_ms
                        .unwrap_or(at_ms.saturating_add(DEFAULT_APPROVAL_TIMEOUT_MS)),
                    // Journals written before versions were recorded: the version in force
                    // at this point of the replay, which is the one it was judged under.
                    policy_version: policy_version
                        .unwrap_or_else(|| self.policy.as_ref().map_or(0, |p| p.version())),
                };
                if self.parked.is_empty() {
                    self.paused_since_ms = Some(*at_ms);
                }
                self.parked.insert(
                    *step_id,
                    Parked {
                        approval,
                        reservation,
                    },
                );
            }
            Verdict::Deny | Verdict::Halt => {}
        }
    }

    fn restore_other(&mut self, record: &KernelRecord) -> Result<(), String> {
        match record {
            KernelRecord::Decision { .. } => Ok(()),
            KernelRecord::Settlement {
                step_id,
                status,
                charged,
                overrun,
                late,
                at_ms,
                ..
            } => {
                self.last_seen_ms = self.last_seen_ms.max(*at_ms);
                // Exactly what was charged then (a halt it caused has its own record).
                if *late {
                    self.released.take(*step_id).ok_or_else(|| {
                        format!("late settlement of step {step_id}, which was not released")
                    })?;
                    self.account.restore_charge(charged, overrun);
                } else {
                    let reservation = self.open.remove(step_id).ok_or_else(|| {
                        format!("settlement of step {step_id}, which is not open")
                    })?;
                    let account = Arc::clone(reservation.account());
                    account.restore_settlement(reservation, charged, overrun);
                }
                match status {
                    OutcomeStatus::Success => self.consecutive_failures = 0,
                    OutcomeStatus::Failure => self.consecutive_failures += 1,
                }
                Ok(())
            }
            KernelRecord::Halt { record } => {
                // Steps still parked here (journals written before halts journaled their
                // resolutions) are denied as the halt denied them then; their decisions are
                // kept like those of journaled resolutions.
                if self.halt.is_none() {
                    self.apply_halt(record.clone());
                }
                Ok(())
            }
            KernelRecord::Resume { at_ms, .. } => {
                self.resume(*at_ms);
                Ok(())
            }
            KernelRecord::State(s) => {
                self.restore_state(s);
                Ok(())
            }
            KernelRecord::Approval {
                step_id,
                answer,
                decision,
                rule,
                kind,
                reason,
                at_ms,
            } => self
                .restore_approval(
                    *step_id,
                    answer,
                    *decision,
                    (rule.as_deref(), *kind, reason),
                    *at_ms,
                )
                .map_err(|e| e.to_string()),
        }
    }
}
