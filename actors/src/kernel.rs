//! [`AgentKernel`]: the governance state of one agent and the pure function that decides.
//!
//! No I/O and no clock reads: `now_ms` comes in as a parameter, and the only shared state
//! touched is the ledger (in memory). The same sequence of calls with the same times on the
//! same ledger state gives the same decisions.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::budget::{Amounts, Budgets, Dimension, LedgerDim};
use crate::decision::{CauseLink, Decision, HaltKind, HaltRecord, RemainingView, Verdict};
use crate::ids::{AgentId, StepId};
use crate::ledger::{Account, AccountSnapshot, Remaining, Reservation, Settlement, Shortfall};
use crate::stagnation::{StagnationConfig, StagnationDetector, StagnationHit};
use crate::step::{Cost, Step};

/// Default bound on steps allowed but not yet settled, per agent.
pub const DEFAULT_MAX_OPEN_STEPS: usize = 1_024;
/// Distinct tools remembered per agent when exploration is unlimited (only the count matters
/// then, and it saturates here).
pub const MAX_EXPLORED_TRACKED: usize = 4_096;

/// The agent-local part of an agent's configuration.
#[derive(Clone, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KernelConfig {
    /// Budgets; the additive ones become the agent's own ledger account's limits.
    #[serde(default)]
    pub budgets: Budgets,
    /// Stagnation detection.
    #[serde(default)]
    pub stagnation: StagnationConfig,
    /// Silence (no step, outcome or heartbeat) longer than this halts the agent as `lost`.
    #[serde(default)]
    pub heartbeat_timeout_ms: Option<u64>,
    /// Steps allowed but not yet settled; more are denied. 0 means the default (1,024).
    #[serde(default)]
    pub max_open_steps: usize,
}

/// A policy consulted on every step, before budgets. The Policy issue supplies the YAML engine;
/// any type that can judge a step can plug in here.
pub trait StepPolicy: Send + Sync + 'static {
    /// Judges one step. Must be pure: same inputs, same answer.
    fn evaluate(&self, ctx: &PolicyContext<'_>) -> PolicyOutcome;
}

/// What a policy sees.
#[derive(Debug)]
pub struct PolicyContext<'a> {
    /// The agent.
    pub agent: &'a AgentId,
    /// The step.
    pub step: &'a Step,
    /// Consecutive failed outcomes so far.
    pub consecutive_failures: u32,
    /// Steps decided so far (any verdict).
    pub steps_decided: u64,
    /// The time of the decision.
    pub now_ms: u64,
}

/// A policy's answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PolicyOutcome {
    /// No objection: budgets decide.
    Allow,
    /// Refuse this step.
    Deny {
        /// Rule id.
        rule: Arc<str>,
        /// Message.
        reason: String,
    },
    /// Halt the agent.
    Halt {
        /// Rule id.
        rule: Arc<str>,
        /// Halt kind.
        kind: HaltKind,
        /// Message.
        reason: String,
    },
}

impl<F> StepPolicy for F
where
    F: Fn(&PolicyContext<'_>) -> PolicyOutcome + Send + Sync + 'static,
{
    fn evaluate(&self, ctx: &PolicyContext<'_>) -> PolicyOutcome {
        self(ctx)
    }
}

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

/// The kernel's answer to a step, plus the halt it started, if any.
#[derive(Debug, Clone)]
pub struct Decided {
    /// The decision for the caller.
    pub decision: Decision,
    /// Set when this step halted the agent (not when it was already halted).
    pub new_halt: Option<HaltRecord>,
}

/// Is the agent running or halted?
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AgentState {
    /// Steps are judged normally.
    Running,
    /// Every step is answered with halt until an operator resumes it.
    Halted,
}

/// A copy of an agent's governance state, for reports and APIs.
#[derive(Clone, Debug)]
pub struct AgentSnapshot {
    /// The agent.
    pub id: AgentId,
    /// Running or halted.
    pub state: AgentState,
    /// The active halt.
    pub halt: Option<HaltRecord>,
    /// Steps decided (any verdict).
    pub steps_decided: u64,
    /// Steps allowed.
    pub steps_allowed: u64,
    /// Steps allowed and not yet settled.
    pub open_steps: usize,
    /// Consecutive failures.
    pub consecutive_failures: u32,
    /// Distinct tools tried.
    pub explored: usize,
    /// The agent's own account.
    pub account: AccountSnapshot,
    /// Last sign of life.
    pub last_seen_ms: u64,
}

/// The governance state of one agent.
pub struct AgentKernel {
    id: AgentId,
    account: Arc<Account>,
    wall_time_ms: Option<u64>,
    failures_limit: Option<u32>,
    exploration_limit: Option<u32>,
    heartbeat_timeout_ms: Option<u64>,
    max_open_steps: usize,
    stagnation: StagnationDetector,
    policy: Option<Arc<dyn StepPolicy>>,
    started_at_ms: u64,
    last_seen_ms: u64,
    next_seq: u64,
    steps_allowed: u64,
    consecutive_failures: u32,
    explored: HashSet<u64>,
    open: HashMap<StepId, Reservation>,
    halt: Option<HaltRecord>,
}

impl std::fmt::Debug for AgentKernel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentKernel")
            .field("id", &self.id)
            .field("halt", &self.halt)
            .field("open", &self.open.len())
            .finish_non_exhaustive()
    }
}

const RULE_HALTED: &str = "halted";

impl AgentKernel {
    /// A kernel for agent `id`, whose own budget is the ledger account `account` (a child of
    /// its team's pool). `now_ms` is its start time (wall time counts from here).
    pub fn new(
        id: AgentId,
        account: Arc<Account>,
        config: &KernelConfig,
        policy: Option<Arc<dyn StepPolicy>>,
        now_ms: u64,
    ) -> Self {
        Self {
            id,
            account,
            wall_time_ms: config.budgets.wall_time_ms,
            failures_limit: config.budgets.failures,
            exploration_limit: config.budgets.exploration,
            heartbeat_timeout_ms: config.heartbeat_timeout_ms,
            max_open_steps: if config.max_open_steps == 0 {
                DEFAULT_MAX_OPEN_STEPS
            } else {
                config.max_open_steps
            },
            stagnation: StagnationDetector::new(config.stagnation),
            policy,
            started_at_ms: now_ms,
            last_seen_ms: now_ms,
            next_seq: 1,
            steps_allowed: 0,
            consecutive_failures: 0,
            explored: HashSet::new(),
            open: HashMap::new(),
            halt: None,
        }
    }

    /// The agent.
    pub fn id(&self) -> &AgentId {
        &self.id
    }

    /// The agent's own ledger account.
    pub fn account(&self) -> &Arc<Account> {
        &self.account
    }

    /// The active halt, if any.
    pub fn halt_record(&self) -> Option<&HaltRecord> {
        self.halt.as_ref()
    }

    /// True when halted.
    pub fn is_halted(&self) -> bool {
        self.halt.is_some()
    }

    /// Replaces the policy (hot reload); takes effect at the next step.
    pub fn set_policy(&mut self, policy: Option<Arc<dyn StepPolicy>>) {
        self.policy = policy;
    }

    fn decision(
        &self,
        step: StepId,
        verdict: Verdict,
        rule: Option<Arc<str>>,
        kind: Option<HaltKind>,
        reason: String,
        remaining: Remaining,
    ) -> Decision {
        Decision {
            decision: verdict,
            rule,
            kind,
            reason,
            step,
            approval: None,
            remaining: RemainingView(remaining),
            audit_seq: None,
        }
    }

    fn halt_now(
        &mut self,
        step: StepId,
        kind: HaltKind,
        rule: Arc<str>,
        reason: String,
        now_ms: u64,
    ) -> Decided {
        let record = HaltRecord {
            kind,
            rule: Some(Arc::clone(&rule)),
            reason: reason.clone(),
            at_ms: now_ms,
            cause: Vec::new(),
        };
        self.apply_halt(record.clone());
        Decided {
            decision: self.decision(
                step,
                Verdict::Halt,
                Some(rule),
                Some(kind),
                reason,
                self.account.remaining_on_path(),
            ),
            new_halt: Some(record),
        }
    }

    fn apply_halt(&mut self, record: HaltRecord) {
        if record.kind == HaltKind::Lost {
            // A lost agent will never report its outcomes: give its holds back.
            for (_, reservation) in self.open.drain() {
                reservation.cancel();
            }
        }
        self.halt = Some(record);
    }

    /// Decides one step at time `now_ms`. An allow reserves the step's expected cost on the
    /// agent's account and every pool above it; the caller must later [settle](Self::settle).
    pub fn decide(&mut self, step: &Step, now_ms: u64) -> Decided {
        let step_id = StepId::from_seq(self.next_seq);
        self.next_seq += 1;
        self.last_seen_ms = self.last_seen_ms.max(now_ms);

        if let Some(h) = &self.halt {
            let reason = format!("agent {} is halted ({}): {}", self.id, h.kind, h.reason);
            let rule = h.rule.clone().or_else(|| Some(Arc::from(RULE_HALTED)));
            let kind = h.kind;
            return Decided {
                decision: self.decision(
                    step_id,
                    Verdict::Halt,
                    rule,
                    Some(kind),
                    reason,
                    self.account.remaining_on_path(),
                ),
                new_halt: None,
            };
        }

        if let Some(limit) = self.wall_time_ms {
            let active = now_ms.saturating_sub(self.started_at_ms);
            if active >= limit {
                return self.halt_now(
                    step_id,
                    HaltKind::Exhaustion,
                    Arc::from("budget.wall_time"),
                    format!("wall time budget of {limit} ms used up ({active} ms active)"),
                    now_ms,
                );
            }
        }

        let policy_outcome = match &self.policy {
            None => PolicyOutcome::Allow,
            Some(policy) => policy.evaluate(&PolicyContext {
                agent: &self.id,
                step,
                consecutive_failures: self.consecutive_failures,
                steps_decided: step_id.seq() - 1,
                now_ms,
            }),
        };
        if let PolicyOutcome::Halt { rule, kind, reason } = policy_outcome {
            return self.halt_now(step_id, kind, rule, reason, now_ms);
        }

        match self
            .stagnation
            .observe(step.fingerprint(), step.signals().progress())
        {
            Some(StagnationHit::Repeat { count }) => {
                return self.halt_now(
                    step_id,
                    HaltKind::Stagnation,
                    Arc::from("stagnation.repeat"),
                    format!(
                        "the same {} call was attempted {count} times within the last {} steps",
                        step.tool(),
                        self.stagnation_window()
                    ),
                    now_ms,
                );
            }
            Some(StagnationHit::FlatProgress { window }) => {
                return self.halt_now(
                    step_id,
                    HaltKind::Stagnation,
                    Arc::from("stagnation.progress"),
                    format!("progress has not moved over the last {window} reports"),
                    now_ms,
                );
            }
            None => {}
        }

        if let PolicyOutcome::Deny { rule, reason } = policy_outcome {
            return self.deny(step_id, rule, reason);
        }

        let new_tool = !self.explored.contains(&step.tool_key());
        if new_tool {
            if let Some(limit) = self.exploration_limit {
                if self.explored.len() >= limit as usize {
                    return self.deny(
                        step_id,
                        Arc::from("budget.exploration"),
                        format!(
                            "exploration budget of {limit} distinct tools used up; {} is new",
                            step.tool()
                        ),
                    );
                }
            }
        }

        if self.open.len() >= self.max_open_steps {
            return self.deny(
                step_id,
                Arc::from("limit.open_steps"),
                format!(
                    "{} steps are allowed but not yet settled (limit {}); report outcomes first",
                    self.open.len(),
                    self.max_open_steps
                ),
            );
        }

        match self.account.reserve(&step.reservation()) {
            Ok((reservation, remaining)) => {
                self.open.insert(step_id, reservation);
                self.steps_allowed += 1;
                if new_tool
                    && (self.exploration_limit.is_some()
                        || self.explored.len() < MAX_EXPLORED_TRACKED)
                {
                    self.explored.insert(step.tool_key());
                }
                Decided {
                    decision: self.decision(
                        step_id,
                        Verdict::Allow,
                        None,
                        None,
                        String::new(),
                        remaining,
                    ),
                    new_halt: None,
                }
            }
            Err(short) => self.shortfall(step_id, short, now_ms),
        }
    }

    fn stagnation_window(&self) -> u32 {
        self.stagnation.config().window
    }

    fn deny(&self, step: StepId, rule: Arc<str>, reason: String) -> Decided {
        Decided {
            decision: self.decision(
                step,
                Verdict::Deny,
                Some(rule),
                None,
                reason,
                self.account.remaining_on_path(),
            ),
            new_halt: None,
        }
    }

    /// A step that does not fit. On the agent's own account: risk halts as `overrisk`; a
    /// dimension with nothing left halts as `exhaustion`; otherwise the step is denied (a
    /// smaller one may still fit). On a shared pool: denied, since other agents' refunds may
    /// make room again.
    fn shortfall(&mut self, step: StepId, short: Shortfall, now_ms: u64) -> Decided {
        let own = short.depth == self.account.depth();
        let dim = short.dimension.name().to_string();
        if own && short.dimension == Dimension::Risk {
            return self.halt_now(
                step,
                HaltKind::Overrisk,
                Arc::from("budget.risk"),
                format!(
                    "risk budget would be exceeded: step risk {} micro, {} micro left",
                    short.requested, short.available
                ),
                now_ms,
            );
        }
        if own && short.available == 0 {
            return self.halt_now(
                step,
                HaltKind::Exhaustion,
                Arc::from(format!("budget.{dim}")),
                format!("{dim} budget used up"),
                now_ms,
            );
        }
        let (rule, reason) = if own {
            (
                format!("budget.{dim}"),
                format!(
                    "step needs {} {dim} but only {} is left in the agent's budget",
                    short.requested, short.available
                ),
            )
        } else {
            (
                format!("pool.{}.{dim}", short.account),
                format!(
                    "pool {} has {} {dim} left; the step needs {}",
                    short.account, short.available, short.requested
                ),
            )
        };
        self.deny(step, Arc::from(rule), reason)
    }

    /// Settles an allowed step with its outcome at `now_ms`.
    pub fn settle(
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
                    rule: Some(Arc::from("budget.overrun")),
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
                        rule: Some(Arc::from("budget.failures")),
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

    /// Halts the agent from outside (operator, parent, cascade, deadlock, heartbeat).
    /// Returns the new record, or `None` if it was already halted (the first halt stands).
    pub fn halt(
        &mut self,
        kind: HaltKind,
        rule: Option<Arc<str>>,
        reason: String,
        cause: Vec<CauseLink>,
        now_ms: u64,
    ) -> Option<HaltRecord> {
        if self.halt.is_some() {
            return None;
        }
        let record = HaltRecord {
            kind,
            rule,
            reason,
            at_ms: now_ms,
            cause,
        };
        self.apply_halt(record.clone());
        Some(record)
    }

    /// Lifts a halt. Returns the halt that was lifted, or `None` if the agent was running.
    /// Failure count and stagnation history start afresh; spend does not.
    pub fn resume(&mut self, now_ms: u64) -> Option<HaltRecord> {
        let old = self.halt.take()?;
        self.consecutive_failures = 0;
        self.stagnation.reset();
        self.last_seen_ms = self.last_seen_ms.max(now_ms);
        Some(old)
    }

    /// Records a sign of life.
    pub fn heartbeat(&mut self, now_ms: u64) {
        self.last_seen_ms = self.last_seen_ms.max(now_ms);
    }

    /// True when the agent has a heartbeat timeout, is running, and has been silent longer.
    pub fn is_lost(&self, now_ms: u64) -> bool {
        match self.heartbeat_timeout_ms {
            Some(timeout) if self.halt.is_none() => {
                now_ms.saturating_sub(self.last_seen_ms) > timeout
            }
            _ => false,
        }
    }

    /// The heartbeat timeout, if any.
    pub fn heartbeat_timeout_ms(&self) -> Option<u64> {
        self.heartbeat_timeout_ms
    }

    /// Steps allowed and not yet settled.
    pub fn open_steps(&self) -> usize {
        self.open.len()
    }

    /// A copy of the state.
    pub fn snapshot(&self) -> AgentSnapshot {
        AgentSnapshot {
            id: self.id.clone(),
            state: if self.halt.is_some() {
                AgentState::Halted
            } else {
                AgentState::Running
            },
            halt: self.halt.clone(),
            steps_decided: self.next_seq - 1,
            steps_allowed: self.steps_allowed,
            open_steps: self.open.len(),
            consecutive_failures: self.consecutive_failures,
            explored: self.explored.len(),
            account: self.account.snapshot(),
            last_seen_ms: self.last_seen_ms,
        }
    }

    /// Total reserved by this agent's open steps.
    pub fn open_reserved(&self) -> Amounts {
        self.open
            .values()
            .fold(Amounts::ZERO, |acc, r| acc.saturating_add(r.amounts()))
    }
}
