//! Every built-in rule id: the `rule` that warden itself puts in a decision or a halt record
//! when no policy rule decided (a budget ran out, the agent went silent, an operator halted
//! it, a cascade reached it, ...).
//!
//! These strings are part of warden's contract: they are written to the audit journal,
//! returned by the HTTP API (`"rule"` in decision JSON, halt records, events) and matched by
//! clients, dashboards and `audit query`. They never change; new ones may be added. The list,
//! with when each fires and what it decides, is in `docs/policy.md` ("Built-in rule ids"); a
//! test keeps the two in step.
//!
//! Ids with a variable part (a dimension, a pool path, a cascade scope) are built by the
//! functions below, so the shape lives in one place:
//!
//! ```
//! use warden_actors::{rules, Dimension, Scope};
//! assert_eq!(rules::budget(&Dimension::Tokens), "budget.tokens");
//! assert_eq!(rules::pool("swarm/research", &Dimension::CostUsd), "pool.swarm/research.cost_usd");
//! assert_eq!(rules::cascade(Scope::Siblings), "cascade.siblings");
//! assert!(rules::is_builtin("breaker.swarm/crawl"));
//! assert!(!rules::is_builtin("no-rm-rf"));
//! ```
//!
//! A policy may not reuse these ids for its own rules without confusing readers of the
//! journal; `policy check` does not forbid it today.

use crate::budget::Dimension;
use crate::pool::Scope;

/// Prefix of the agent budget ids, `budget.<dimension>` (see [`budget`]).
pub const BUDGET_PREFIX: &str = "budget.";
/// The agent's `steps` budget is used up (halt `exhaustion`) or too small for the step (deny).
pub const BUDGET_STEPS: &str = "budget.steps";
/// The agent's `tokens` budget is used up (halt `exhaustion`) or too small for the step (deny).
pub const BUDGET_TOKENS: &str = "budget.tokens";
/// The agent's `cost_usd` budget is used up (halt `exhaustion`) or too small for the step
/// (deny).
pub const BUDGET_COST_USD: &str = "budget.cost_usd";
/// The step's risk would exceed the agent's `risk` budget: halt `overrisk`.
pub const BUDGET_RISK: &str = "budget.risk";
/// The agent's active wall time is used up: halt `exhaustion`.
pub const BUDGET_WALL_TIME: &str = "budget.wall_time";
/// The agent reached its budget of consecutive failed outcomes: halt `exhaustion` (at
/// settlement).
pub const BUDGET_FAILURES: &str = "budget.failures";
/// The step would be a new distinct tool beyond the `exploration` budget: deny.
pub const BUDGET_EXPLORATION: &str = "budget.exploration";
/// A settled step used more than its reservation and the agent's budget and pools could
/// cover: halt `exhaustion` (at settlement).
pub const BUDGET_OVERRUN: &str = "budget.overrun";

/// Prefix of the shared pool ids, `pool.<path>.<dimension>` (see [`pool`]).
pub const POOL_PREFIX: &str = "pool.";

/// Too many steps allowed or awaiting approval but not yet settled: deny.
pub const LIMIT_OPEN_STEPS: &str = "limit.open_steps";

/// The same tool and arguments were attempted `repeat_limit` times within the stagnation
/// window: halt `stagnation`.
pub const STAGNATION_REPEAT: &str = "stagnation.repeat";
/// Reported progress has not moved over the stagnation window: halt `stagnation`.
pub const STAGNATION_PROGRESS: &str = "stagnation.progress";

/// No step, outcome or heartbeat within the agent's heartbeat timeout: halt `lost` (open
/// reservations are released).
pub const HEARTBEAT: &str = "heartbeat";
/// The agent is in a wait-for cycle: halt `deadlock` (every agent in the cycle).
pub const DEADLOCK: &str = "deadlock";
/// An operator (or a parent, through the library) halted this agent: halt `external` unless
/// the caller named another kind.
pub const OPERATOR: &str = "operator";
/// A team's restart intensity (`max_restarts` within `within`) was exceeded and nothing above
/// could take over: halt `external`. Not spread by cascades.
pub const RESTART_INTENSITY: &str = "restart.intensity";
/// A pool shared between nodes: this node holds no more of its rights (escrow) for the step,
/// and none reached it in time; denied (fail closed), never halted: rights move here from
/// peers, and a cut-off node asks for them as soon as a peer is reachable.
pub const ESCROW_EXHAUSTED: &str = "escrow.exhausted";

/// Prefix of [`team`] ids.
pub const TEAM_PREFIX: &str = "team.";
/// Prefix of [`breaker`] ids.
pub const BREAKER_PREFIX: &str = "breaker.";
/// Prefix of [`cascade`] ids.
pub const CASCADE_PREFIX: &str = "cascade.";

/// The step's tool is not in the policy's registry: the policy's `default_decision` (deny
/// unless set otherwise).
pub const DEFAULT_DECISION: &str = "default_decision";
/// The step claims another action class than its registered tool's: deny.
pub const REGISTRY_ACTION: &str = "registry.action";
/// The step's args hold a key its registered tool does not declare (`args:` in the
/// registry): deny.
pub const REGISTRY_ARGS: &str = "registry.args";

/// The step's `cost.custom` names a dimension that the policy never names and no budget on
/// the agent's path limits (a misspelled dimension would escape its limit): deny.
pub const COST_UNDECLARED: &str = "cost.undeclared";

/// A step of an agent whose halt record names no rule: halt, with the record's kind.
pub const HALTED: &str = "halted";
/// A parked step restored from a journal record that named no rule (journals written before
/// rules were recorded).
pub const APPROVAL: &str = "approval";

/// Every id without a variable part, in the order `docs/policy.md` lists them.
pub const FIXED: [&str; 21] = [
    BUDGET_STEPS,
    BUDGET_TOKENS,
    BUDGET_COST_USD,
    BUDGET_RISK,
    BUDGET_WALL_TIME,
    BUDGET_FAILURES,
    BUDGET_EXPLORATION,
    BUDGET_OVERRUN,
    COST_UNDECLARED,
    LIMIT_OPEN_STEPS,
    STAGNATION_REPEAT,
    STAGNATION_PROGRESS,
    HEARTBEAT,
    DEADLOCK,
    OPERATOR,
    RESTART_INTENSITY,
    ESCROW_EXHAUSTED,
    DEFAULT_DECISION,
    REGISTRY_ACTION,
    REGISTRY_ARGS,
    HALTED,
];

/// Every prefix of an id with a variable part.
pub const PREFIXES: [&str; 5] = [
    BUDGET_PREFIX,
    POOL_PREFIX,
    TEAM_PREFIX,
    BREAKER_PREFIX,
    CASCADE_PREFIX,
];

/// `budget.<dimension>`: the agent's own budget in that dimension (custom dimensions
/// included) is used up (halt `exhaustion`; `overrisk` for `risk`) or too small for the step
/// (deny).
pub fn budget(dim: &Dimension) -> String {
    format!("{BUDGET_PREFIX}{}", dim.name())
}

/// `pool.<path>.<dimension>`, e.g. `pool.swarm/research.tokens`: a shared pool on the agent's
/// path has too little left for the step: deny (other agents' refunds may make room again).
pub fn pool(path: &str, dim: &Dimension) -> String {
    format!("{POOL_PREFIX}{path}.{}", dim.name())
}

/// `team.<path>`: the agent's team (or a team above it) was halted as a whole, by an operator
/// or because it was halted while the agent was being spawned. The halt kind is the team
/// halt's (`external` for an operator's; `cascade` at spawn).
pub fn team(path: &str) -> String {
    format!("{TEAM_PREFIX}{path}")
}

/// `breaker.<path>`: the team's contagion breaker tripped (enough of its agents halted
/// within the window) and halted the whole team: halt `cascade`.
pub fn breaker(path: &str) -> String {
    format!("{BREAKER_PREFIX}{path}")
}

/// `cascade.<scope>`, e.g. `cascade.siblings`: another agent's halt spread to this one under
/// its team's cascade rule: halt `cascade`, with the cause chain.
pub fn cascade(scope: Scope) -> String {
    format!("{CASCADE_PREFIX}{}", scope.name())
}

/// True for an id warden produces itself (any of [`FIXED`], [`APPROVAL`], or an id with one
/// of the [`PREFIXES`]).
pub fn is_builtin(id: &str) -> bool {
    FIXED.contains(&id) || id == APPROVAL || PREFIXES.iter().any(|p| id.starts_with(p))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameterized_ids_keep_their_serialized_shape() {
        assert_eq!(budget(&Dimension::WallTime), BUDGET_WALL_TIME);
        assert_eq!(budget(&Dimension::Steps), BUDGET_STEPS);
        assert_eq!(budget(&Dimension::Tokens), BUDGET_TOKENS);
        assert_eq!(budget(&Dimension::CostUsd), BUDGET_COST_USD);
        assert_eq!(budget(&Dimension::Risk), BUDGET_RISK);
        assert_eq!(budget(&Dimension::Failures), BUDGET_FAILURES);
        assert_eq!(budget(&Dimension::Exploration), BUDGET_EXPLORATION);
        assert_eq!(pool("swarm", &Dimension::Tokens), "pool.swarm.tokens");
        assert_eq!(team("swarm/a"), "team.swarm/a");
        assert_eq!(breaker("swarm/crawl"), "breaker.swarm/crawl");
        assert_eq!(cascade(Scope::Dependents), "cascade.dependents");
    }

    #[test]
    fn the_policy_reference_lists_every_builtin_rule_id() {
        let doc = include_str!("../../docs/policy.md");
        let section = doc
            .split("## Built-in rule ids")
            .nth(1)
            .expect("docs/policy.md has a \"Built-in rule ids\" section");
        for id in FIXED.iter().chain([&APPROVAL]) {
            assert!(
                section.contains(&format!("`{id}`")),
                "{id} is missing from docs/policy.md"
            );
        }
        for shape in [
            "`budget.<dimension>`",
            "`pool.<path>.<dimension>`",
            "`team.<path>`",
            "`breaker.<path>`",
            "`cascade.<scope>`",
        ] {
            assert!(
                section.contains(shape),
                "{shape} is missing from docs/policy.md"
            );
        }
    }
}
