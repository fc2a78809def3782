//! Settling: an allowed step's outcome charges what it really used on the agent's account
//! and every pool above it, refunds the rest, and may halt the agent (failures budget
//! reached, usage beyond what the budgets could cover).

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::budget::LedgerDim;
use crate::decision::{HaltKind, HaltRecord};
use crate::ids::{AgentId, StepId};
use crate::ledger::Settlement;
use crate::record::KernelRecord;
use crate::rules;
use crate::step::Cost;

use super::AgentKernel;

/// Whether a step went well, and what it really used.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    /// Success or failure.
    pub status: OutcomeStatus,
    /// Real usage; `None` charges exactly what was reserved.
    pub actual: Option<Cost>,
}

impl Outcome {
    /// A success that used what it reserved.
    pub fn success() -> Self {
        Self {
            status: OutcomeStatus::Success,
            actual: None,
        }
    }

    /// A failure that used what it reserved.
    pub fn failure() -> Self {
        Self {
            status: OutcomeStatus::Failure,
            actual: None,
        }
    }

    /// Sets the real usage.
    pub fn with_actual(mut self, actual: Cost) -> Self {
        self.actual = Some(actual);
        self
    }
}

/// Success or failure of a step.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutcomeStatus {
    /// It worked.
    Success,
    /// It failed (counts towards the consecutive-failures budget).
    Failure,
}

/// Why an outcome could not be settled.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SettleError {
    /// No open step has that id (never allowed, already settled, or released by a `lost` halt).
    #[error("agent {agent} has no open step {step}: it was never allowed, is already settled, or was released when the agent was halted as lost")]
    UnknownStep {
        /// The agent.
        agent: AgentId,
        /// The step.
        step: StepId,
    },
}

/// The result of settling an outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettleReport {
    /// What was charged, refunded and overrun.
    pub settlement: Settlement,
    /// A halt the outcome caused (failures budget reached, or usage overran the budget).
    pub halt: Option<HaltRecord>,
}

impl AgentKernel {
    /// Settles an allowed step with its outcome at `now_ms`.
    pub fn settle(
        &mut self,
        step: StepId,
        outcome: &Outcome,
        now_ms: u64,
    ) -> Result<SettleReport, SettleError> {
        let mark = self.outbox_len();
        let risk = self
            .open
            .get(&step)
            .map_or(0, |r| r.amounts().get(LedgerDim::RiskMicro));
        let report = self.settle_inner(step, outcome, now_ms)?;
        if self.outbox.is_some() {
            let s = &report.settlement;
            let record = KernelRecord::Settlement {
                step_id: step,
                status: outcome.status,
                actual: outcome.actual.as_ref().map(|c| c.to_amounts(1, risk)),
                charged: s.charged.clone(),
                refunded: s.refunded.clone(),
                overrun: s.overrun.clone(),
                at_ms: now_ms,
            };
            self.push_record(mark, || record);
        }
        Ok(report)
    }

    fn settle_inner(
        &mut self,
        step: StepId,
        outcome: &Outcome,
        now_ms: u64,
    ) -> Result<SettleReport, SettleError> {
        self.last_seen_ms = self.last_seen_ms.max(now_ms);
        let reservation = self
            .open
            .remove(&step)
            .ok_or_else(|| SettleError::UnknownStep {
                agent: self.id.clone(),
                step,
            })?;
        let actual = match &outcome.actual {
            None => reservation.amounts().clone(),
            Some(cost) => cost.to_amounts(1, reservation.amounts().get(LedgerDim::RiskMicro)),
        };
        let settlement = reservation.settle(&actual);
        match outcome.status {
            OutcomeStatus::Success => self.consecutive_failures = 0,
            OutcomeStatus::Failure => self.consecutive_failures += 1,
        }
        let mut halt = None;
        if self.halt.is_none() {
            if !settlement.overrun.is_zero() {
                let record = HaltRecord {
                    kind: HaltKind::Exhaustion,
                    rule: Some(Arc::from(rules::BUDGET_OVERRUN)),
                    reason: format!(
                        "step {step} used more than its budget and the pools could cover: {} tokens, {} micro-USD not covered",
                        settlement.overrun.get(LedgerDim::Tokens),
                        settlement.overrun.get(LedgerDim::CostMicroUsd)
                    ),
                    at_ms: now_ms,
                    cause: Vec::new(),
                };
                self.apply_halt(record.clone());
                halt = Some(record);
            } else if let Some(limit) = self.failures_limit {
                if self.consecutive_failures >= limit {
                    let record = HaltRecord {
                        kind: HaltKind::Exhaustion,
                        rule: Some(Arc::from(rules::BUDGET_FAILURES)),
                        reason: format!("{limit} consecutive failures"),
                        at_ms: now_ms,
                        cause: Vec::new(),
                    };
                    self.apply_halt(record.clone());
                    halt = Some(record);
                }
            }
        }
        Ok(SettleReport { settlement, halt })
    }
}
