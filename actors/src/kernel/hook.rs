//! [`StepPolicy`]: what the kernel asks of a policy about each step, and what a policy
//! answers. [`crate::policy::PolicySet`] is the YAML engine; any type that can judge a step
//! can plug in here.

use std::sync::Arc;

use crate::budget::CustomDim;
use crate::decision::HaltKind;
use crate::ids::AgentId;
use crate::ledger::Account;
use crate::step::{MinCost, Step};

use super::DEFAULT_APPROVAL_TIMEOUT_MS;

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

    /// The least this step is reserved at, per dimension (its tool's `min_cost`, else its
    /// action class's default), and the dimensions a minimum of 0 exempts it from. None by
    /// default: the step is billed in every dimension and reserved at what it declares.
    fn min_cost(&self, _step: &Step) -> MinCost {
        MinCost::default()
    }

    /// Whether the policy names custom dimension `dim` anywhere (agents' budgets, pools'
    /// limits, a `min_cost`). A step may declare, and an outcome report, a custom dimension
    /// only if the policy names it or a budget on the agent's path limits it. None by default.
    fn names_custom(&self, _dim: &CustomDim) -> bool {
        false
    }

    /// How long a `require_approval` step waits for an answer before it is denied.
    fn approval_timeout_ms(&self) -> u64 {
        DEFAULT_APPROVAL_TIMEOUT_MS
    }

    /// The version of the policy in force: a policy that can be replaced while agents run
    /// ([`crate::policy::SwappablePolicy`]) counts its versions; one that never changes
    /// answers 0.
    fn version(&self) -> u64 {
        0
    }

    /// A step parked under policy version `parked_under` was approved. If another version is
    /// in force now, judges the step again under it and returns that version and its
    /// outcome (rate limits are not counted again: the step was counted when it was parked);
    /// `None` when the policy has not changed, so the approval stands.
    fn rejudge_approved(
        &self,
        _ctx: &PolicyContext<'_>,
        _parked_under: u64,
    ) -> Option<(u64, PolicyOutcome)> {
        None
    }

    /// Everything the kernel asks the policy about one step, in one call, so that a policy
    /// swapped concurrently is seen whole (old or new), never mixed.
    fn judge(&self, ctx: &PolicyContext<'_>) -> Judgement {
        Judgement {
            outcome: self.evaluate(ctx),
            risk_floor_micro: self.risk_floor_micro(ctx.step),
            min_cost: self.min_cost(ctx.step),
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
    /// The least reserved in tokens, money and custom dimensions, and what a minimum of 0
    /// exempts.
    pub min_cost: MinCost,
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
            .field("min_cost", &self.min_cost)
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
