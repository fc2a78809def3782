//! What to start and what to halt: [`AgentSpec`] and [`Target`].

use warden_actors::{AgentId, Budgets, KernelConfig, StagnationConfig};

/// What to halt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// One agent.
    Agent(AgentId),
    /// A pool and its whole subtree.
    Pool(String),
}

impl From<AgentId> for Target {
    fn from(id: AgentId) -> Self {
        Target::Agent(id)
    }
}

impl From<&AgentId> for Target {
    fn from(id: &AgentId) -> Self {
        Target::Agent(id.clone())
    }
}

/// How to start one agent.
#[derive(Clone, Debug)]
pub struct AgentSpec {
    /// Its id.
    pub id: AgentId,
    /// Its pool path (default: the root pool).
    pub team: Option<String>,
    /// Budgets (default: the policy's `defaults.budgets`, or none without a policy).
    pub budgets: Option<Budgets>,
    /// Stagnation detection (default: the policy's, or 5 repeats in 20 steps).
    pub stagnation: Option<StagnationConfig>,
    /// Halt as `lost` after this much silence (default: the policy's, or never).
    pub heartbeat_timeout_ms: Option<u64>,
    /// Bound on allowed-but-unsettled steps (default 1,024).
    pub max_open_steps: Option<usize>,
    /// The agent that spawned this one (for `subtree` cascades).
    pub parent: Option<AgentId>,
    /// Agents this one depends on (for `dependents` cascades).
    pub depends_on: Vec<AgentId>,
    /// Kept with the agent's registration in the journal and handed back by recovery
    /// (the node keeps its token's hash and labels here).
    pub meta: serde_json::Value,
    /// Recovery: the configuration exactly as journaled, not resolved against today's
    /// defaults.
    pub(super) exact: Option<KernelConfig>,
}

impl AgentSpec {
    /// An agent with id `id` in the root pool, no budgets and default stagnation checks.
    pub fn new(id: AgentId) -> Self {
        Self {
            id,
            team: None,
            budgets: None,
            stagnation: None,
            heartbeat_timeout_ms: None,
            max_open_steps: None,
            parent: None,
            depends_on: Vec::new(),
            meta: serde_json::Value::Null,
            exact: None,
        }
    }

    /// Sets what the journal keeps with the registration.
    pub fn meta(mut self, meta: serde_json::Value) -> Self {
        self.meta = meta;
        self
    }

    /// Puts the agent in pool `path`.
    pub fn pool(mut self, path: impl Into<String>) -> Self {
        self.team = Some(path.into());
        self
    }

    /// Sets its budgets.
    pub fn budgets(mut self, budgets: Budgets) -> Self {
        self.budgets = Some(budgets);
        self
    }

    /// Sets stagnation detection.
    pub fn stagnation(mut self, stagnation: StagnationConfig) -> Self {
        self.stagnation = Some(stagnation);
        self
    }

    /// Halts the agent as `lost` after this much silence.
    pub fn heartbeat_timeout_ms(mut self, timeout_ms: u64) -> Self {
        self.heartbeat_timeout_ms = Some(timeout_ms);
        self
    }

    /// Bounds allowed-but-unsettled steps.
    pub fn max_open_steps(mut self, max: usize) -> Self {
        self.max_open_steps = Some(max);
        self
    }

    /// The kernel configuration: `defaults` overridden by what this spec sets.
    pub fn resolve(&self, defaults: &KernelConfig) -> KernelConfig {
        if let Some(exact) = &self.exact {
            return exact.clone();
        }
        KernelConfig {
            budgets: self
                .budgets
                .clone()
                .unwrap_or_else(|| defaults.budgets.clone()),
            stagnation: self.stagnation.unwrap_or(defaults.stagnation),
            heartbeat_timeout_ms: self.heartbeat_timeout_ms.or(defaults.heartbeat_timeout_ms),
            max_open_steps: self.max_open_steps.unwrap_or(defaults.max_open_steps),
        }
    }

    /// Declares the agent that spawned this one.
    pub fn parent(mut self, parent: AgentId) -> Self {
        self.parent = Some(parent);
        self
    }

    /// Declares a dependency.
    pub fn depends_on(mut self, other: AgentId) -> Self {
        self.depends_on.push(other);
        self
    }
}
