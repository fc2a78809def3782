//! Team specifications: pools, cascade rules, contagion breakers and restart strategies.

use warden_actors::{HaltKind, Limits};

pub use warden_actors::team::{Breaker, CascadeRule, RestartPolicy, Scope, Strategy};

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
