//! Team specifications: pools, cascade rules, contagion breakers and restart strategies.

use serde::{Deserialize, Serialize};
use warden_actors::{HaltKind, Limits};

/// How far a halt spreads from the agent that halted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// The other agents directly in the same team.
    Siblings,
    /// Every agent in the team, nested teams included (halting a team halts its subtree).
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

/// The contagion breaker: halt the whole team when at least `threshold_pct` percent of its
/// agents (nested teams included) halted within `window_ms`. Cascaded halts do not count, so a
/// cascade alone never trips the breaker.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Breaker {
    /// Share of the team, 1..=100.
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
    /// Restart every child of the team.
    OneForAll,
    /// Restart the child that crashed and every child started after it.
    RestForOne,
}

/// At most `max_restarts` restarts within `within_ms`; one more escalates to the parent team.
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

/// One team: a node of the supervision tree and of the pool tree (they coincide).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TeamSpec {
    /// The path, e.g. `swarm/research`. The first segment is the swarm's root team.
    pub path: String,
    /// The team pool's limits.
    pub limits: Limits,
    /// Which halts spread inside the team.
    pub cascade: Option<CascadeRule>,
    /// The contagion breaker.
    pub breaker: Option<Breaker>,
    /// What happens when an agent actor of this team crashes.
    pub restart: RestartPolicy,
}

impl TeamSpec {
    /// A team at `path` with no limits, no cascade, no breaker and the default restart policy.
    pub fn new(path: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            limits: Limits::UNLIMITED,
            cascade: None,
            breaker: None,
            restart: RestartPolicy::default(),
        }
    }

    /// Sets the pool limits.
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Sets the cascade rule.
    pub fn cascade(mut self, on: impl IntoIterator<Item = HaltKind>, scope: Scope) -> Self {
        self.cascade = Some(CascadeRule {
            on: on.into_iter().collect(),
            scope,
        });
        self
    }

    /// Sets the contagion breaker.
    pub fn breaker(mut self, threshold_pct: u32, window_ms: u64) -> Self {
        self.breaker = Some(Breaker {
            threshold_pct,
            window_ms,
        });
        self
    }

    /// Sets the restart policy.
    pub fn restart(mut self, strategy: Strategy, max_restarts: u32, within_ms: u64) -> Self {
        self.restart = RestartPolicy {
            strategy,
            max_restarts,
            within_ms,
        };
        self
    }
}

/// Splits and checks a team path: non-empty segments of `[A-Za-z0-9._:-]`, at most 15 deep.
pub fn parse_team_path(path: &str) -> Result<Vec<&str>, String> {
    let segments: Vec<&str> = path.split('/').collect();
    if segments.len() >= warden_actors::ledger::MAX_ACCOUNT_DEPTH {
        return Err(format!(
            "team path {path:?} is {} levels deep; the limit is {}",
            segments.len(),
            warden_actors::ledger::MAX_ACCOUNT_DEPTH - 1
        ));
    }
    for seg in &segments {
        warden_actors::AgentId::new(seg).map_err(|e| {
            format!("team path {path:?} has a bad segment {seg:?}: {e}")
                .replace("agent id", "segment")
        })?;
    }
    Ok(segments)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn team_paths_are_checked() {
        assert_eq!(parse_team_path("swarm/a").unwrap(), vec!["swarm", "a"]);
        assert!(parse_team_path("swarm//a").is_err());
        assert!(parse_team_path("swarm/a b").is_err());
        assert!(parse_team_path(&vec!["x"; 20].join("/")).is_err());
    }
}
