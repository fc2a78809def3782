//! What can go wrong, for a swarm operation ([`SwarmError`]) and for one agent's request
//! ([`AgentError`]). Each error names the agent or pool and says what to do.

use warden_actors::policy::PolicyErrors;
use warden_actors::{AgentId, ApprovalError, SettleError, StepId};

use crate::limits::RESTART_WAIT_TIMEOUT_MS;
use crate::waitfor::WaitError;

/// Errors from swarm operations. Each names the agent or pool and says what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SwarmError {
    /// The id is taken.
    #[error("agent {0} already exists in this swarm; pick another id")]
    DuplicateAgent(AgentId),
    /// No such agent.
    #[error("no agent {0} in this swarm")]
    UnknownAgent(AgentId),
    /// No such pool.
    #[error("no pool {path:?} in this swarm; known pools: {known}")]
    UnknownPool {
        /// The path asked for.
        path: String,
        /// The pools there are.
        known: String,
    },
    /// A pool spec was refused.
    #[error("pool {path:?}: {reason}")]
    BadPool {
        /// The pool.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// The pool is halted; nothing new may start in it.
    #[error("pool {0} is halted; reopen it (`POST /v1/pools/{0}` with `{{\"halted\": false}}`, or `Swarm::reopen_pool`) before spawning agents into it")]
    PoolHalted(String),
    /// An agent spec was refused.
    #[error("agent {agent}: {reason}")]
    BadSpec {
        /// The agent.
        agent: AgentId,
        /// What is wrong.
        reason: String,
    },
    /// The swarm is full.
    #[error("the swarm already holds its limit of {0} agents; raise SwarmBuilder::max_agents")]
    TooManyAgents(usize),
    /// Resume of an agent that runs.
    #[error("agent {0} is not halted")]
    NotHalted(AgentId),
    /// An approval id that is not pending.
    #[error(transparent)]
    Approval(#[from] ApprovalError),
    /// A policy reload was refused; the old policy stays in force.
    #[error("{0}")]
    Policy(PolicyErrors),
    /// A wait-for edge was refused.
    #[error(transparent)]
    Wait(#[from] WaitError),
    /// The actor runtime failed.
    #[error("audit journal: {0}")]
    Journal(String),
    /// Recovery found an entry it cannot apply.
    #[error("recovery: {0}")]
    Recovery(String),
    /// The runtime failed.
    #[error("runtime: {0}")]
    Runtime(String),
}

/// Errors from an agent's requests.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AgentError {
    /// The actor stopped while it held the request. The request may or may not have been
    /// applied; the agent's snapshot shows its open steps.
    #[error("agent {0}'s actor stopped while handling the request (it is being restarted); check the agent's open steps before retrying")]
    Interrupted(AgentId),
    /// The actor did not come back in time.
    #[error("agent {0}'s actor is down and was not restarted within {RESTART_WAIT_TIMEOUT_MS} ms")]
    Unavailable(AgentId),
    /// The outcome could not be settled.
    #[error(transparent)]
    Settle(#[from] SettleError),
    /// No final decision came for a step awaited as an approval.
    #[error("agent {0} has no approval outcome for step {1}: it was not parked, its answer was already collected, or no answer came in time")]
    NotAwaiting(AgentId, StepId),
    /// The decision was made but could not be made durable: it must not be acted on.
    #[error("the audit journal did not record the decision ({0}); do not act on it")]
    Journal(String),
}
