//! Settling: an allowed step's outcome charges what it really used on the agent's account
//! and every pool above it, refunds the rest, and may halt the agent (failures budget
//! reached, usage beyond what the budgets could cover).

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::budget::{Amounts, LedgerDim};
use crate::decision::{HaltKind, HaltRecord};
use crate::ids::{AgentId, StepId};
use crate::ledger::Settlement;
use crate::record::KernelRecord;
use crate::rules;
use crate::step::{Cost, CostError, Usage};

use super::AgentKernel;

/// Whether a step went well, and what it really used.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    /// Success or failure.
    pub status: OutcomeStatus,
    /// Real usage, per dimension; a dimension it does not name is settled as reserved.
    pub usage: Usage,
    /// The seal of a sealed step ([`Step::sealed`](crate::Step::sealed)); `None` from anyone
    /// else.
    pub seal: Option<u64>,
}

impl Outcome {
    /// A success that used what it reserved.
    pub fn success() -> Self {
        Self {
            status: OutcomeStatus::Success,
            usage: Usage::new(),
            seal: None,
        }
    }

    /// A failure that used what it reserved.
    pub fn failure() -> Self {
        Self {
            status: OutcomeStatus::Failure,
            usage: Usage::new(),
            seal: None,
        }
    }

    /// Reports tokens and money as `actual` gives them (and the custom dimensions it lists;
    /// others settle as reserved).
    pub fn with_actual(mut self, actual: Cost) -> Self {
        self.usage = Usage::from(&actual);
        self
    }

    /// Reports exactly the dimensions `usage` names; the others settle as reserved.
    pub fn with_usage(mut self, usage: Usage) -> Self {
        self.usage = usage;
        self
    }

    /// Carries the seal of the sealed step it settles.
    pub fn with_seal(mut self, seal: u64) -> Self {
        self.seal = Some(seal);
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
    /// No open or released step has that id (never allowed, already settled, or released
    /// so long ago that it is no longer remembered: see
    /// [`MAX_RELEASED_STEPS`](super::MAX_RELEASED_STEPS)).
    #[error("agent {agent} has no open step {step}: it was never allowed, is already settled, or was released (by a lost halt) longer ago than the last {} released steps", super::MAX_RELEASED_STEPS)]
    UnknownStep {
        /// The agent.
        agent: AgentId,
        /// The step.
        step: StepId,
    },
    /// A reported amount is out of range; nothing was settled. Names the field.
    #[error("{0}")]
    BadUsage(String),
    /// The step is sealed by whoever settles it (the enforcement proxy) and the outcome does
    /// not carry its seal; nothing was settled.
    #[error("step {step} of agent {agent} is settled by the proxy that took it, from the upstream's answer")]
    Sealed {
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
    /// The step's reservation had been released (a `lost` halt) before this outcome came:
    /// it was charged with nothing held, as far as the budgets had room, the rest overrun.
    pub late: bool,
}

impl AgentKernel {
    /// Settles every open step as a failure that used its whole reservation, each journaled
    /// as a settlement (before the halt that calls this): a `lost` agent's steps were allowed
    /// and may have run, and a cost nobody reports is not zero. Its outcomes, if they come
    /// after all, are then refused as for any settled step. No halt follows from these
    /// settlements (the caller is halting the agent).
    pub(super) fn settle_open_as_reserved(&mut self, now_ms: u64) {
        let mut open: Vec<(StepId, crate::Reservation)> = self.open.drain().collect();
        open.sort_by_key(|(id, _)| *id);
        for (step, reservation) in open {
            let mark = self.outbox_len();
            let actual = reservation.amounts().clone();
            let s = reservation.settle(&actual);
            self.seals.remove(&step);
            self.consecutive_failures += 1;
            self.push_record(mark, || KernelRecord::Settlement {
                step_id: step,
                status: OutcomeStatus::Failure,
                actual: Some(actual),
                charged: s.charged,
                refunded: s.refunded,
                overrun: s.overrun,
                late: false,
                at_ms: now_ms,
            });
        }
    }

    /// Settles an allowed step with its outcome at `now_ms`. A dimension the outcome does
    /// not report is settled as reserved. A step whose reservation was released while it was
    /// open (a `lost` halt of a journal written before lost halts settled open steps) is
    /// settled *late*: its usage is charged with nothing held, as far as the agent's budget
    /// and pools have room; the rest is overrun.
    pub fn settle(
        &mut self,
        step: StepId,
        outcome: &Outcome,
        now_ms: u64,
    ) -> Result<SettleReport, SettleError> {
        outcome
            .usage
            .check()
            .map_err(|e: CostError| SettleError::BadUsage(e.to_string()))?;
        let mark = self.outbox_len();
        let (report, actual) = self.settle_inner(step, outcome, now_ms)?;
        if self.outbox.is_some() {
            let s = &report.settlement;
            let record = KernelRecord::Settlement {
                step_id: step,
                status: outcome.status,
                actual: Some(actual),
                charged: s.charged.clone(),
                refunded: s.refunded.clone(),
                overrun: s.overrun.clone(),
                late: report.late,
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
    ) -> Result<(SettleReport, Amounts), SettleError> {
        if let Some(&seal) = self.seals.get(&step) {
            if outcome.seal != Some(seal) {
                return Err(SettleError::Sealed {
                    agent: self.id.clone(),
                    step,
                });
            }
        }
        let held = (self.open.get(&step).map(|r| r.amounts())).or_else(|| self.released.held(step));
        if let Some(dim) =
            held.and_then(|h| self.undeclared(outcome.usage.reported_custom(), Some(h)))
        {
            return Err(SettleError::BadUsage(format!(
                "outcome.cost.custom names {}, which this step did not reserve, the policy does not name and no budget on this agent's path limits; check its spelling (nothing was settled)",
                dim.as_str()
            )));
        }
        let (settlement, actual, late) = match self.open.remove(&step) {
            Some(reservation) => {
                let actual = outcome.usage.settle_against(reservation.amounts());
                (reservation.settle(&actual), actual, false)
            }
            None => {
                let held = self
                    .released
                    .take(step)
                    .ok_or_else(|| SettleError::UnknownStep {
                        agent: self.id.clone(),
                        step,
                    })?;
                let actual = outcome.usage.settle_against(&held);
                (self.account.charge(&actual), actual, true)
            }
        };
        self.seals.remove(&step);
        self.last_seen_ms = self.last_seen_ms.max(now_ms);
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
                        "step {step} used more than {} and the pools could cover: {} tokens, {} micro-USD not covered",
                        if late { "its budget (its reservation had been released)" } else { "its budget" },
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
        Ok((
            SettleReport {
                settlement,
                halt,
                late,
            },
            actual,
        ))
    }
}
