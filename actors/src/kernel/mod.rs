//! [`AgentKernel`]: the governance state of one agent and the pure function that decides.
//!
//! No I/O and no clock reads: `now_ms` comes in as a parameter, and the only shared state
//! touched is the ledger (in memory). The same sequence of calls with the same times on the
//! same ledger state gives the same decisions.
//!
//! - this file: the kernel's state, [`AgentKernel::decide`], [`AgentKernel::settle`], halts
//!   and resumes;
//! - `hook`: [`StepPolicy`], what the kernel asks of a policy ([`crate::policy::PolicySet`] is
//!   one);
//! - `approvals`: steps parked for a human, and their answers;
//! - `settle`: outcomes of allowed steps, charged and refunded on the ledger;
//! - `restore`: recovery ([`AgentKernel::restore`]), audit replay
//!   ([`AgentKernel::replay_decision`]) and snapshots ([`AgentKernel::export_state`]).

mod approvals;
mod hook;
mod restore;
mod settle;
mod spill;

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::budget::{Amounts, Budgets, CustomDim, Dimension, LedgerDim};
use crate::decision::{CauseLink, Decision, HaltKind, HaltRecord, RemainingView, Verdict};
use crate::ids::{AgentId, StepId};
use crate::ledger::{Account, AccountSnapshot, Remaining, Reservation, Shortfall};
use crate::record::KernelRecord;
use crate::rules;
use crate::stagnation::{StagnationConfig, StagnationDetector, StagnationHit};
use crate::step::{MinCost, Step};

pub use approvals::{ApprovalAnswer, ApprovalError, PendingApproval, DEFAULT_APPROVAL_TIMEOUT_MS};
pub use hook::{Judgement, PolicyContext, PolicyOutcome, RateCommit, StepPolicy};
pub use restore::Rejudged;
pub use settle::{Outcome, OutcomeStatus, SettleError, SettleReport};

use approvals::{Parked, Parking};
use spill::{SpillMap, SpillSet};

/// Default bound on steps allowed but not yet settled, per agent.
pub const DEFAULT_MAX_OPEN_STEPS: usize = 1_024;
/// Released steps remembered per agent: steps whose reservation was given back while they
/// were open (a `lost` halt releases them), so that their late outcomes are still accepted
/// and charged. Past this many, the oldest is forgotten and its outcome is refused as
/// unknown (404 over HTTP), as before this memory existed.
pub const MAX_RELEASED_STEPS: usize = 4_096;
/// The shortest `heartbeat_timeout` a policy or a registration may set (1 s): shorter, an
/// agent would be halted as `lost` before its first heartbeat could arrive.
pub const MIN_HEARTBEAT_TIMEOUT_MS: u64 = 1_000;
/// Distinct tools remembered per agent when exploration is unlimited (only the count matters
/// then, and it saturates here).
pub const MAX_EXPLORED_TRACKED: usize = 4_096;
/// Open steps kept inside the kernel before its map spills to the heap ([`spill`]).
const OPEN_INLINE: usize = 2;
/// Distinct tools kept inside the kernel before its set spills to the heap.
const EXPLORED_INLINE: usize = 8;

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

/// The kernel's answer to a step, plus the halt or approval request it started, if any.
#[derive(Debug, Clone)]
pub struct Decided {
    /// The decision for the caller.
    pub decision: Decision,
    /// Set when this step halted the agent (not when it was already halted).
    pub new_halt: Option<Box<HaltRecord>>,
    /// Set when this step was parked for approval.
    pub new_approval: Option<Box<PendingApproval>>,
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
    /// Steps whose reservation a `lost` halt released and whose late outcome would still be
    /// charged.
    pub released_steps: usize,
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
    explored: SpillSet<u64, EXPLORED_INLINE>,
    open: SpillMap<StepId, Reservation, OPEN_INLINE>,
    released: Released,
    /// Seals of sealed open (or released) steps: only an outcome with the seal settles them.
    seals: HashMap<StepId, u64>,
    parked: HashMap<StepId, Parked>,
    /// Final decisions of parked steps that a halt ended (or recovery restored), for the
    /// shell to store and hand to whoever waits on them.
    resolutions: Vec<Decision>,
    /// The policy version read just before the current step was judged (a step parked for
    /// approval keeps it: approved under another version, it is judged again).
    judged_under: u64,
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

/// Steps whose reservation was released while they were open, with what each held, oldest
/// first; at most [`MAX_RELEASED_STEPS`].
#[derive(Debug, Default)]
struct Released {
    amounts: HashMap<StepId, Amounts>,
    order: VecDeque<StepId>,
}

impl Released {
    fn remember(&mut self, step: StepId, amounts: Amounts) {
        if self.amounts.insert(step, amounts).is_none() {
            self.order.push_back(step);
        }
        while self.order.len() > MAX_RELEASED_STEPS {
            if let Some(old) = self.order.pop_front() {
                self.amounts.remove(&old);
            }
        }
    }

    fn held(&self, step: StepId) -> Option<&Amounts> {
        self.amounts.get(&step)
    }

    fn take(&mut self, step: StepId) -> Option<Amounts> {
        let amounts = self.amounts.remove(&step)?;
        self.order.retain(|s| *s != step);
        Some(amounts)
    }

    /// Oldest first.
    fn list(&self) -> Vec<(StepId, Amounts)> {
        self.order
            .iter()
            .filter_map(|s| self.amounts.get(s).map(|a| (*s, a.clone())))
            .collect()
    }
}

/// What the policy said about a step that passed the checks before admission.
struct Admission {
    /// The rule and message asking for approval, if any.
    approval: Option<(Arc<str>, String)>,
    risk_floor_micro: u64,
    min_cost: MinCost,
    approval_timeout_ms: u64,
    rate_commit: Option<RateCommit>,
    /// The step's tool was not tried before.
    new_tool: bool,
}

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
            explored: SpillSet::default(),
            open: SpillMap::default(),
            released: Released::default(),
            seals: HashMap::new(),
            parked: HashMap::new(),
            resolutions: Vec::new(),
            judged_under: 0,
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
            new_halt: Some(Box::new(record)),
            new_approval: None,
        }
    }

    fn apply_halt(&mut self, record: HaltRecord) {
        if record.kind == HaltKind::Lost {
            // Journals written before a lost halt settled its open steps (see
            // `settle_open_as_reserved`): their holds were given back, and what each held
            // remembered, so an outcome that arrived after all was still charged. Recovery
            // and replay of such journals do the same; a live lost halt finds nothing open.
            let mut open: Vec<(StepId, Reservation)> = self.open.drain().collect();
            open.sort_by_key(|(id, _)| *id);
            for (step, reservation) in open {
                self.released.remember(step, reservation.amounts().clone());
                reservation.cancel();
            }
        }
        // A halted agent runs nothing new: parked steps are denied and their holds released,
        // each resolution journaled before the halt (recovery re-applies them in that order).
        // Their ids stay unknown afterwards; answering one reports it as not pending.
        let now = record.at_ms;
        let mut parked: Vec<(StepId, Parked)> = self.parked.drain().collect();
        parked.sort_by_key(|(id, _)| *id);
        for (step, p) in parked {
            p.reservation.cancel();
            let reason = format!(
                "agent halted ({}) while the step waited: {}",
                record.kind, record.reason
            );
            let mut d = self.decision(
                step,
                Verdict::Deny,
                Some(Arc::clone(&p.approval.rule)),
                None,
                reason.clone(),
                self.account.remaining_on_path(),
            );
            d.approval = Some(p.approval.id);
            let len = self.outbox_len();
            self.push_record(len, || KernelRecord::Approval {
                step_id: step,
                answer: ApprovalAnswer::Halted {
                    kind: record.kind,
                    reason: record.reason.clone(),
                },
                decision: Verdict::Deny,
                rule: Some(p.approval.rule.to_string()),
                kind: None,
                reason,
                at_ms: now,
            });
            self.resolutions.push(d);
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
                policy_version: decided.new_approval.as_ref().map(|p| p.policy_version),
                at_ms: now_ms,
            };
            // Before any halt the decision caused, so the journal reads in causal order.
            self.push_record(mark, || record);
        }
        decided
    }

    /// The checks in order: an earlier one that answers decides. The order is part of the
    /// contract (replay depends on it): halted, wall time, policy halt, stagnation (which
    /// observes every step that gets this far), policy deny, exploration, open steps, then
    /// admission by the budgets and rate limits.
    fn decide_inner(&mut self, step: &Step, now_ms: u64) -> Decided {
        let step_id = StepId::from_seq(self.next_seq);
        self.next_seq += 1;
        self.last_seen_ms = self.last_seen_ms.max(now_ms);

        if let Some(h) = &self.halt {
            let reason = format!("agent {} is halted ({}): {}", self.id, h.kind, h.reason);
            let rule = h.rule.clone().or_else(|| Some(Arc::from(rules::HALTED)));
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
                    Arc::from(rules::BUDGET_WALL_TIME),
                    format!("wall time budget of {limit} ms used up ({active} ms active)"),
                    now_ms,
                );
            }
        }

        // Read before judging: if the policy is swapped in between, a parked step is judged
        // once more when approved, never once less.
        self.judged_under = self.policy.as_ref().map_or(0, |p| p.version());
        let Judgement {
            outcome,
            risk_floor_micro,
            min_cost,
            approval_timeout_ms,
            commit: rate_commit,
        } = self.judge(step, step_id, now_ms);
        if let PolicyOutcome::Halt { rule, kind, reason } = outcome {
            return self.halt_now(step_id, kind, rule, reason, now_ms);
        }
        if let Some(halted) = self.observe_stagnation(step, step_id, now_ms) {
            return halted;
        }
        let approval = match outcome {
            PolicyOutcome::Deny { rule, reason } => return self.deny(step_id, rule, reason),
            PolicyOutcome::RequireApproval { rule, reason } => Some((rule, reason)),
            PolicyOutcome::Allow | PolicyOutcome::Halt { .. } => None,
        };

        if let Some(dim) = self.undeclared(step.cost().custom(), None) {
            let reason = format!(
                "cost.custom names {}, a dimension the policy does not name and no budget on this agent's path limits; check its spelling, or declare it (budgets.custom, a pool's limits.custom or a min_cost)",
                dim.as_str()
            );
            return self.deny(step_id, Arc::from(rules::COST_UNDECLARED), reason);
        }
        let new_tool = !self.explored.contains_key(&step.tool_key());
        if let Some(denied) = self.over_limits(step, step_id, new_tool) {
            return denied;
        }
        let admission = Admission {
            approval,
            risk_floor_micro,
            min_cost,
            approval_timeout_ms,
            rate_commit,
            new_tool,
        };
        self.admit(step, step_id, admission, now_ms)
    }

    /// What the policy would answer to `step` at `now_ms`, without deciding it: nothing is
    /// counted (steps, rate limits, stagnation), reserved or recorded. For what an agent is
    /// shown (the MCP gateway's tool listing), never for a step it takes.
    pub fn judge_only(&self, step: &Step, now_ms: u64) -> PolicyOutcome {
        self.judge(step, StepId::from_seq(self.next_seq), now_ms)
            .outcome
    }

    /// Asks the policy (none: allow).
    fn judge(&self, step: &Step, step_id: StepId, now_ms: u64) -> Judgement {
        let Some(policy) = &self.policy else {
            return Judgement {
                outcome: PolicyOutcome::Allow,
                risk_floor_micro: 0,
                min_cost: MinCost::default(),
                approval_timeout_ms: DEFAULT_APPROVAL_TIMEOUT_MS,
                commit: None,
            };
        };
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

    /// Feeds the step to the stagnation detector; a hit halts the agent.
    fn observe_stagnation(&mut self, step: &Step, step_id: StepId, now_ms: u64) -> Option<Decided> {
        let hit = self
            .stagnation
            .observe(step.fingerprint(), step.signals().progress())?;
        let (rule, reason) = match hit {
            StagnationHit::Repeat { count } => (
                rules::STAGNATION_REPEAT,
                format!(
                    "the same {} call was attempted {count} times within the last {} steps",
                    step.tool(),
                    self.stagnation_window()
                ),
            ),
            StagnationHit::FlatProgress { window } => (
                rules::STAGNATION_PROGRESS,
                format!("progress has not moved over the last {window} reports"),
            ),
        };
        Some(self.halt_now(
            step_id,
            HaltKind::Stagnation,
            Arc::from(rule),
            reason,
            now_ms,
        ))
    }

    /// The first custom dimension of `dims` that nothing declares: the policy does not name
    /// it, no budget on the agent's path limits it, and `held` (a step's reservation) holds
    /// none of it. Such a dimension would be accounted without limit, and a misspelled one
    /// would let a cost escape the dimension that limits it.
    fn undeclared<'a>(
        &self,
        dims: &'a [(CustomDim, u64)],
        held: Option<&Amounts>,
    ) -> Option<&'a CustomDim> {
        dims.iter().map(|(d, _)| d).find(|d| {
            held.is_none_or(|h| h.custom(d) == 0)
                && !self.policy.as_ref().is_some_and(|p| p.names_custom(d))
                && !self.account.bounds_custom_on_path(d)
        })
    }

    /// The agent-local limits that deny without touching the ledger: distinct tools
    /// (exploration) and steps not yet settled.
    fn over_limits(&self, step: &Step, step_id: StepId, new_tool: bool) -> Option<Decided> {
        if let (true, Some(limit)) = (new_tool, self.exploration_limit) {
            if self.explored.len() >= limit as usize {
                return Some(self.deny(
                    step_id,
                    Arc::from(rules::BUDGET_EXPLORATION),
                    format!(
                        "exploration budget of {limit} distinct tools used up; {} is new",
                        step.tool()
                    ),
                ));
            }
        }
        let unsettled = self.open.len() + self.parked.len();
        if unsettled >= self.max_open_steps {
            return Some(self.deny(
                step_id,
                Arc::from(rules::LIMIT_OPEN_STEPS),
                format!(
                    "{unsettled} steps are allowed or awaiting approval but not yet settled (limit {}); report outcomes first",
                    self.max_open_steps
                ),
            ));
        }
        None
    }

    /// Reserves the step's cost on the agent's account and every pool above it, then counts
    /// it against its rate limits; the step is then allowed and open, or parked for approval.
    fn admit(
        &mut self,
        step: &Step,
        step_id: StepId,
        admission: Admission,
        now_ms: u64,
    ) -> Decided {
        let Admission {
            mut approval,
            risk_floor_micro,
            min_cost,
            approval_timeout_ms,
            rate_commit,
            new_tool,
        } = admission;
        let mut amounts = step.reservation();
        if risk_floor_micro > amounts.get(LedgerDim::RiskMicro) {
            amounts.set(LedgerDim::RiskMicro, risk_floor_micro);
        }
        // A step declaring less than its tool's (or action class's) minimum is reserved at
        // the minimum; every dimension not exempted by a minimum of 0 bills it, so a
        // dimension with nothing left refuses it whatever it declares; and tokens or money it
        // does not declare, with no minimum configured, are reserved at the built-in floor
        // where a budget on its path limits them (never as zero).
        min_cost.raise(&mut amounts);
        let reserved = self
            .account
            .reserve_billed(&amounts, &min_cost.billing(step));
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
        let (reservation, remaining) = match reserved {
            Ok(ok) => ok,
            Err(short) => return self.shortfall(step_id, short, now_ms),
        };
        if let Some((rule, reason)) = approval {
            let parked = Parking {
                rule,
                reason,
                reservation,
                remaining,
                timeout_ms: approval_timeout_ms,
            };
            return self.park(step, step_id, parked, now_ms);
        }
        self.open.insert(step_id, reservation);
        self.seal(step_id, step.seal());
        self.steps_allowed += 1;
        if new_tool
            && (self.exploration_limit.is_some() || self.explored.len() < MAX_EXPLORED_TRACKED)
        {
            self.explored.insert_key(step.tool_key());
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
                Arc::from(rules::BUDGET_RISK),
                format!(
                    "risk budget would be exceeded: step risk {} micro, {} micro left",
                    short.requested, short.available
                ),
                now_ms,
            );
        }
        // A budget of 0 grants nothing to use up: such steps are denied, and the agent may
        // still take steps not billed in that dimension.
        if own && short.dimension != Dimension::Risk && settled_room == 0 && short.limit > 0 {
            return self.halt_now(
                step,
                HaltKind::Exhaustion,
                Arc::from(rules::budget(&short.dimension)),
                format!("{dim} budget used up"),
                now_ms,
            );
        }
        let (rule, reason) = if own {
            let reason = if short.limit == 0 {
                format!("the agent's {dim} budget is 0; every step billed in {dim} is refused")
            } else if short.requested == 0 {
                format!(
                    "the agent's {dim} budget has nothing left for now; the step declares no {dim} but is billed in it"
                )
            } else {
                format!(
                    "step needs {} {dim} but only {} is left in the agent's budget",
                    short.requested, short.available
                )
            };
            (rules::budget(&short.dimension), reason)
        } else if short.escrow {
            let reason = format!(
                "this node holds {} {dim} of the rights to pool {} (shared between nodes); the step needs {}; rights move here from peers as they can",
                short.available, short.account, short.requested
            );
            (rules::ESCROW_EXHAUSTED.to_owned(), reason)
        } else {
            let reason = if short.requested == 0 {
                format!(
                    "pool {} has no {dim} left; the step declares none but is billed in it",
                    short.account
                )
            } else {
                format!(
                    "pool {} has {} {dim} left; the step needs {}",
                    short.account, short.available, short.requested
                )
            };
            (rules::pool(&short.account, &short.dimension), reason)
        };
        self.deny(step, Arc::from(rule), reason)
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
        if kind == HaltKind::Lost {
            self.settle_open_as_reserved(now_ms);
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

    /// Records a sign of life.
    pub fn heartbeat(&mut self, now_ms: u64) {
        self.last_seen_ms = self.last_seen_ms.max(now_ms);
    }

    /// The last sign of life (a step, an outcome, a heartbeat, a resume), ms. Never goes
    /// back: `last_seen_ms() + heartbeat_timeout_ms()` is the earliest time the agent can be
    /// found lost.
    pub fn last_seen_ms(&self) -> u64 {
        self.last_seen_ms
    }

    /// True when the agent has a heartbeat timeout, is running, and has been silent longer.
    pub fn is_lost(&self, now_ms: u64) -> bool {
        match self.heartbeat_timeout_ms {
            // A sealed open step is one the node's proxy is carrying for the agent right now
            // (bounded by the upstream's timeout): the agent is waiting on the node, not gone.
            Some(timeout) if self.halt.is_none() && self.seals.is_empty() => {
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

    /// Records the seal of a step just opened. Bounded: past twice the open steps' limit,
    /// seals of steps no longer open or released are dropped.
    fn seal(&mut self, step: StepId, seal: Option<u64>) {
        let Some(seal) = seal else { return };
        if self.seals.len() >= 2 * (self.max_open_steps + MAX_RELEASED_STEPS) {
            let released: std::collections::HashSet<StepId> =
                self.released.order.iter().copied().collect();
            let open = &self.open;
            self.seals
                .retain(|k, _| open.contains_key(k) || released.contains(k));
        }
        self.seals.insert(step, seal);
    }

    /// The ids of the steps allowed and not yet settled, in step order.
    pub fn open_step_ids(&self) -> Vec<StepId> {
        let mut ids: Vec<StepId> = self.open.keys().copied().collect();
        ids.sort_by_key(|s| s.seq());
        ids
    }

    /// Steps whose reservation was released while open (a `lost` halt) and whose late
    /// outcome would still be accepted.
    pub fn released_steps(&self) -> usize {
        self.released.order.len()
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
            released_steps: self.released.order.len(),
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
