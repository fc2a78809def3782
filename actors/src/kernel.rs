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
use crate::record::KernelRecord;
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

/// Default time a step waits for a human before it is denied: 10 minutes.
pub const DEFAULT_APPROVAL_TIMEOUT_MS: u64 = 10 * 60 * 1_000;

/// A policy consulted on every step, before budgets. [`crate::policy::PolicySet`] is the YAML
/// engine; any type that can judge a step can plug in here.
pub trait StepPolicy: Send + Sync + 'static {
    /// Judges one step. Same inputs (and, for rate limits, same earlier calls), same answer.
    fn evaluate(&self, ctx: &PolicyContext<'_>) -> PolicyOutcome;

    /// The least risk this step is charged, in micro-units (e.g. its tool's registered risk);
    /// the step's own `signals.risk` counts when higher.
    fn risk_floor_micro(&self, _step: &Step) -> u64 {
        0
    }

    /// How long a `require_approval` step waits for an answer before it is denied.
    fn approval_timeout_ms(&self) -> u64 {
        DEFAULT_APPROVAL_TIMEOUT_MS
    }

    /// Everything the kernel asks the policy about one step, in one call, so that a policy
    /// swapped concurrently is seen whole (old or new), never mixed.
    fn judge(&self, ctx: &PolicyContext<'_>) -> Judgement {
        Judgement {
            outcome: self.evaluate(ctx),
            risk_floor_micro: self.risk_floor_micro(ctx.step),
            approval_timeout_ms: self.approval_timeout_ms(),
            commit: None,
        }
    }
}

/// Counts a step against its rate limits once the kernel has admitted it; on a miss (a
/// concurrent step took the last slot) it returns the rule and reason, and the step is denied.
pub type RateCommit = Box<dyn FnOnce(u64) -> Result<(), PolicyOutcome> + Send>;

/// A policy's full answer about one step.
pub struct Judgement {
    /// Allow, deny, approval or halt.
    pub outcome: PolicyOutcome,
    /// The least risk charged (micro-units).
    pub risk_floor_micro: u64,
    /// Approval timeout if the outcome asks for approval.
    pub approval_timeout_ms: u64,
    /// Rate limits to count once the step goes ahead.
    pub commit: Option<RateCommit>,
}

impl std::fmt::Debug for Judgement {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Judgement")
            .field("outcome", &self.outcome)
            .field("risk_floor_micro", &self.risk_floor_micro)
            .field("rate_commit", &self.commit.is_some())
            .finish()
    }
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
    /// The time of the decision (Unix milliseconds).
    pub now_ms: u64,
    /// The agent's team path (its pool), e.g. `swarm/research`.
    pub team: &'a str,
    /// The agent's own budget account (for rules on remaining budget).
    pub account: &'a Arc<Account>,
}

/// A policy's answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PolicyOutcome {
    /// No objection: budgets decide.
    Allow,
    /// Park the step until a human approves or denies it.
    RequireApproval {
        /// Rule id.
        rule: Arc<str>,
        /// Message.
        reason: String,
    },
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

/// The kernel's answer to a step, plus the halt or approval request it started, if any.
#[derive(Debug, Clone)]
pub struct Decided {
    /// The decision for the caller.
    pub decision: Decision,
    /// Set when this step halted the agent (not when it was already halted).
    pub new_halt: Option<HaltRecord>,
    /// Set when this step was parked for approval.
    pub new_approval: Option<PendingApproval>,
}

/// A replayed decision's new verdict and rule ([`AgentKernel::replay_decision`]).
pub type Rejudged = (Verdict, Option<Arc<str>>);

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

struct Parked {
    approval: PendingApproval,
    reservation: Reservation,
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
    /// Steps waiting for approval.
    pub pending_approvals: usize,
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
    parked: HashMap<StepId, Parked>,
    halt_denials: Vec<Decision>,
    paused_total_ms: u64,
    paused_since_ms: Option<u64>,
    halt: Option<HaltRecord>,
    /// Records of state changes, when recording is on (see [`crate::record`]).
    outbox: Option<Vec<KernelRecord>>,
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
            parked: HashMap::new(),
            halt_denials: Vec::new(),
            paused_total_ms: 0,
            paused_since_ms: None,
            halt: None,
            outbox: None,
        }
    }

    /// Turns recording of state changes on or off (see [`crate::record`]).
    pub fn set_recording(&mut self, on: bool) {
        match (on, self.outbox.is_some()) {
            (true, false) => self.outbox = Some(Vec::new()),
            (false, true) => self.outbox = None,
            _ => {}
        }
    }

    /// True when recording is on.
    pub fn is_recording(&self) -> bool {
        self.outbox.is_some()
    }

    /// The records made since the last call, oldest first (empty when recording is off).
    pub fn take_records(&mut self) -> Vec<KernelRecord> {
        match &mut self.outbox {
            Some(v) if !v.is_empty() => std::mem::take(v),
            _ => Vec::new(),
        }
    }

    fn push_record(&mut self, at: usize, record: impl FnOnce() -> KernelRecord) {
        if let Some(v) = &mut self.outbox {
            let at = at.min(v.len());
            v.insert(at, record());
        }
    }

    fn outbox_len(&self) -> usize {
        self.outbox.as_ref().map_or(0, Vec::len)
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
            new_approval: None,
        }
    }

    fn apply_halt(&mut self, record: HaltRecord) {
        if record.kind == HaltKind::Lost {
            // A lost agent will never report its outcomes: give its holds back.
            for (_, reservation) in self.open.drain() {
                reservation.cancel();
            }
        }
        // A halted agent runs nothing new: parked steps are denied and their holds released.
        // (Their ids stay unknown afterwards; answering one reports it as not pending.)
        let now = record.at_ms;
        let mut parked: Vec<(StepId, Parked)> = self.parked.drain().collect();
        parked.sort_by_key(|(id, _)| *id);
        for (step, p) in parked {
            p.reservation.cancel();
            let mut d = self.decision(
                step,
                Verdict::Deny,
                Some(Arc::clone(&p.approval.rule)),
                None,
                format!(
                    "agent halted ({}) while the step waited: {}",
                    record.kind, record.reason
                ),
                self.account.remaining_on_path(),
            );
            d.approval = Some(p.approval.id);
            self.halt_denials.push(d);
        }
        self.resume_clock(now);
        let len = self.outbox_len();
        self.push_record(len, || KernelRecord::Halt {
            record: record.clone(),
        });
        self.halt = Some(record);
    }

    /// Active time: since start, less the time spent with at least one step parked.
    fn active_ms(&self, now_ms: u64) -> u64 {
        let paused_now = self
            .paused_since_ms
            .map_or(0, |since| now_ms.saturating_sub(since));
        now_ms
            .saturating_sub(self.started_at_ms)
            .saturating_sub(self.paused_total_ms + paused_now)
    }

    fn resume_clock(&mut self, now_ms: u64) {
        if self.parked.is_empty() {
            if let Some(since) = self.paused_since_ms.take() {
                self.paused_total_ms += now_ms.saturating_sub(since);
            }
        }
    }

    /// Decides one step at time `now_ms`. An allow reserves the step's expected cost on the
    /// agent's account and every pool above it; the caller must later [settle](Self::settle).
    pub fn decide(&mut self, step: &Step, now_ms: u64) -> Decided {
        let mark = self.outbox_len();
        let decided = self.decide_inner(step, now_ms);
        if self.outbox.is_some() {
            let d = &decided.decision;
            let reserved = match d.decision {
                Verdict::Allow => self.open.get(&d.step).map(|r| r.amounts().clone()),
                Verdict::RequireApproval => self
                    .parked
                    .get(&d.step)
                    .map(|p| p.reservation.amounts().clone()),
                _ => None,
            };
            let record = KernelRecord::Decision {
                step: step.clone(),
                step_id: d.step,
                decision: d.decision,
                rule: d.rule.as_deref().map(str::to_string),
                kind: d.kind,
                reason: d.reason.clone(),
                reserved,
                approval_expires_at_ms: decided.new_approval.as_ref().map(|p| p.expires_at_ms),
                at_ms: now_ms,
            };
            // Before any halt the decision caused, so the journal reads in causal order.
            self.push_record(mark, || record);
        }
        decided
    }

    fn decide_inner(&mut self, step: &Step, now_ms: u64) -> Decided {
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
                new_approval: None,
            };
        }

        if let Some(limit) = self.wall_time_ms {
            let active = self.active_ms(now_ms);
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

        let judgement = match &self.policy {
            None => Judgement {
                outcome: PolicyOutcome::Allow,
                risk_floor_micro: 0,
                approval_timeout_ms: DEFAULT_APPROVAL_TIMEOUT_MS,
                commit: None,
            },
            Some(policy) => {
                let team = self.account.parent().map_or("", |p| &**p.name());
                policy.judge(&PolicyContext {
                    agent: &self.id,
                    step,
                    consecutive_failures: self.consecutive_failures,
                    steps_decided: step_id.seq() - 1,
                    now_ms,
                    team,
                    account: &self.account,
                })
            }
        };
        let Judgement {
            outcome: policy_outcome,
            risk_floor_micro,
            approval_timeout_ms,
            commit: rate_commit,
        } = judgement;
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

        if self.open.len() + self.parked.len() >= self.max_open_steps {
            return self.deny(
                step_id,
                Arc::from("limit.open_steps"),
                format!(
                    "{} steps are allowed or awaiting approval but not yet settled (limit {}); report outcomes first",
                    self.open.len() + self.parked.len(),
                    self.max_open_steps
                ),
            );
        }

        let mut amounts = step.reservation();
        if risk_floor_micro > amounts.get(LedgerDim::RiskMicro) {
            amounts.set(LedgerDim::RiskMicro, risk_floor_micro);
        }
        let mut approval = match policy_outcome {
            PolicyOutcome::RequireApproval { rule, reason } => Some((rule, reason)),
            _ => None,
        };
        let reserved = self.account.reserve(&amounts);
        if let (Ok(_), Some(commit)) = (&reserved, rate_commit) {
            // Budgets admitted the step: only now does it count against its rate limits. A
            // limit found full at this point (another agent took the last slot) applies the
            // same verdict its rule gives when evaluation sees it full.
            match commit(now_ms) {
                Ok(()) => {}
                Err(PolicyOutcome::Halt { rule, kind, reason }) => {
                    drop(reserved); // releases the reservation
                    return self.halt_now(step_id, kind, rule, reason, now_ms);
                }
                Err(PolicyOutcome::RequireApproval { rule, reason }) => {
                    approval = Some((rule, reason)); // parks below, with the reservation held
                }
                Err(PolicyOutcome::Deny { rule, reason }) => {
                    drop(reserved);
                    return self.deny(step_id, rule, reason);
                }
                Err(PolicyOutcome::Allow) => {}
            }
        }
        match reserved {
            Ok((reservation, remaining)) if approval.is_some() => {
                let (rule, reason) = approval.expect("checked");
                let timeout = approval_timeout_ms;
                let pending = PendingApproval {
                    id: PendingApproval::id_for(&self.id, step_id),
                    agent: self.id.clone(),
                    step_id,
                    step: step.clone(),
                    rule: Arc::clone(&rule),
                    reason: reason.clone(),
                    requested_at_ms: now_ms,
                    expires_at_ms: now_ms.saturating_add(timeout),
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
                    new_approval: None,
                }
            }
            Err(short) => self.shortfall(step_id, short, now_ms),
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

    fn answer_approval_inner(
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
            new_approval: None,
        }
    }

    /// A step that does not fit. On the agent's own account, when no settlement of running
    /// steps could make room (tokens and money are judged on spend alone, since settlements
    /// may refund; steps and risk are charged as reserved): risk halts as `overrisk`, a
    /// used-up dimension halts as `exhaustion`. Otherwise the step is denied:
    /// refunds of running steps, or a smaller step, may still fit. On a shared pool: denied,
    /// since other agents' refunds may make room again.
    fn shortfall(&mut self, step: StepId, short: Shortfall, now_ms: u64) -> Decided {
        let own = short.depth == self.account.depth();
        let dim = short.dimension.name().to_string();
        // Steps and risk are always charged exactly as reserved, so what is reserved is as
        // good as spent; tokens, money and custom dimensions may be refunded at settlement.
        let settled_room = match short.dimension {
            Dimension::Steps | Dimension::Risk => short.available,
            _ => short.unspent,
        };
        if own && short.dimension == Dimension::Risk && short.requested > settled_room {
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
        if own && short.dimension != Dimension::Risk && settled_room == 0 {
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
        self.resume_by(now_ms, "")
    }

    /// [`resume`](Self::resume), naming who lifted the halt (for the record).
    pub fn resume_by(&mut self, now_ms: u64, by: &str) -> Option<HaltRecord> {
        let old = self.halt.take()?;
        self.consecutive_failures = 0;
        self.stagnation.reset();
        self.last_seen_ms = self.last_seen_ms.max(now_ms);
        let len = self.outbox_len();
        self.push_record(len, || KernelRecord::Resume {
            lifted: old.clone(),
            by: by.to_string(),
            at_ms: now_ms,
        });
        Some(old)
    }

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
                self.take_halt_denials();
            }
            _ => {}
        }
        // Apply what the journal says happened (without observing the step twice).
        self.next_seq = step_id.seq();
        self.restore_decision_effects(record);
        Ok(Some((now.decision, now.rule)))
    }

    /// The whole state, for a journal snapshot (retention). `at_ms` is the snapshot's time.
    pub fn export_state(&self, at_ms: u64) -> crate::record::AgentStateRecord {
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
                at_ms: p.approval.requested_at_ms,
            })
            .collect();
        let mut explored: Vec<u64> = self.explored.iter().copied().collect();
        explored.sort_unstable();
        let own = self.account.snapshot();
        let (recent_steps, recent_progress) = self.stagnation.history();
        crate::record::AgentStateRecord {
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
            parked,
            spent: own.spent,
            overrun: own.overrun,
        }
    }

    fn restore_state(&mut self, s: &crate::record::AgentStateRecord) {
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
        for p in &s.parked {
            self.restore_decision_effects(p);
        }
        // After the parked steps, which set a pause of their own.
        self.paused_total_ms = s.paused_total_ms;
        self.paused_since_ms = s.paused_since_ms;
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
                    self.explored.insert(step.tool_key());
                }
            }
            Verdict::RequireApproval => {
                let reservation = self.account.restore_reservation(&reserve());
                let rule: Arc<str> = Arc::from(rule.as_deref().unwrap_or("approval"));
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
                at_ms,
                ..
            } => {
                self.last_seen_ms = self.last_seen_ms.max(*at_ms);
                let reservation = self
                    .open
                    .remove(step_id)
                    .ok_or_else(|| format!("settlement of step {step_id}, which is not open"))?;
                // Exactly what was charged then (a halt it caused has its own record).
                let account = Arc::clone(reservation.account());
                account.restore_settlement(reservation, charged, overrun);
                match status {
                    OutcomeStatus::Success => self.consecutive_failures = 0,
                    OutcomeStatus::Failure => self.consecutive_failures += 1,
                }
                Ok(())
            }
            KernelRecord::Halt { record } => {
                if self.halt.is_none() {
                    self.apply_halt(record.clone());
                }
                self.take_halt_denials();
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
                at_ms,
                ..
            } => self
                .answer_approval_inner(*step_id, answer, *at_ms)
                .map(|_| ())
                .map_err(|e| e.to_string()),
        }
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
            pending_approvals: self.parked.len(),
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
