//! Pool-level settings: how halts spread (cascade scope and contagion breaker) and how
//! crashed actors restart. The policy language describes them; the supervisor enforces them.

use serde::{Deserialize, Serialize};

use crate::decision::HaltKind;

/// How far a halt spreads from the agent that halted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// The other agents directly in the same pool.
    Siblings,
    /// Every agent in the pool, nested pools included (halting a pool halts its subtree).
    Team,
    /// The agents the halted agent spawned, and theirs, recursively (`AgentSpec::parent`).
    Subtree,
    /// The agents that declared they depend on the halted one, transitively
    /// (`AgentSpec::depends_on`).
    Dependents,
}

impl Scope {
    /// The name used in policies and cause chains.
    pub const fn name(self) -> &'static str {
        match self {
            Scope::Siblings => "siblings",
            Scope::Team => "team",
            Scope::Subtree => "subtree",
            Scope::Dependents => "dependents",
        }
    }
}

/// Which halt kinds spread, and how far.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CascadeRule {
    /// Kinds that spread (e.g. `[safety, overrisk]`).
    pub on: Vec<HaltKind>,
    /// How far.
    pub scope: Scope,
}

/// The contagion breaker: halt the whole pool when at least `threshold_pct` percent of its
/// agents (nested pools included) halted within `window_ms`. Cascaded halts do not count, so a
/// cascade alone never trips the breaker.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Breaker {
    /// Share of the pool, 1..=100.
    pub threshold_pct: u32,
    /// Window in milliseconds.
    pub window_ms: u64,
}

/// Restart strategies for crashed agent actors (crash is not halt).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// Restart only the child that crashed.
    #[default]
    OneForOne,
    /// Restart every child of the pool.
    OneForAll,
    /// Restart the child that crashed and every child started after it.
    RestForOne,
}

/// At most `max_restarts` restarts within `within_ms`; one more escalates to the parent pool.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RestartPolicy {
    /// The strategy.
    pub strategy: Strategy,
    /// Restarts tolerated in the window.
    pub max_restarts: u32,
    /// The window in milliseconds.
    pub within_ms: u64,
}

impl Default for RestartPolicy {
    fn default() -> Self {
        Self {
            strategy: Strategy::OneForOne,
            max_restarts: 3,
            within_ms: 5_000,
        }
    }
}
