//! # warden: a supervisor for swarms of AI agents
//!
//! Every governed agent gets an actor that holds its budgets (steps, tokens, money, risk, wall
//! time, failures, exploration, custom dimensions) and decides, for each step the agent wants
//! to take, **allow**, **deny**, **require_approval** or **halt**. Teams share hierarchical
//! pools that can never be overspent, halts cascade by rule, crashed actors are restarted
//! without refunding anything.
//!
//! This crate is the facade: it re-exports the public API of the workspace crates.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! use warden::{ActionClass, AgentId, AgentSpec, Budgets, Outcome, Step, Swarm, Verdict};
//!
//! let swarm = Swarm::builder().build().await.unwrap();
//! let agent = swarm
//!     .spawn_agent(AgentSpec::new(AgentId::new("coder").unwrap())
//!         .budgets(Budgets { steps: Some(10), tokens: Some(5_000), ..Default::default() }))
//!     .await
//!     .unwrap();
//! let step = Step::builder("shell", ActionClass::Execute)
//!     .args(serde_json::json!({"command": "cargo test"}))
//!     .tokens(1_200)
//!     .build()
//!     .unwrap();
//! let decision = agent.step(step).await.unwrap();
//! assert_eq!(decision.decision, Verdict::Allow);
//! agent.outcome(decision.step, Outcome::success()).await.unwrap();
//! swarm.shutdown().await;
//! # }
//! ```

#![warn(missing_docs)]

pub use warden_actors as actors;
pub use warden_adapters as adapters;
pub use warden_sim as sim;
pub use warden_supervisor as supervisor;
pub use warden_sync as sync;

pub mod prometheus;

pub use warden_actors::{
    ActionClass, AgentId, AgentSnapshot, AgentState, Amounts, Budgets, CauseLink, Clock, Cost,
    CustomDim, Decision, Dimension, Event, EventError, EventStream, HaltKind, HaltRecord,
    KernelConfig, LedgerDim, Limits, ManualClock, Outcome, OutcomeStatus, PolicyContext,
    PolicyOutcome, StagnationConfig, Step, StepError, StepId, StepPolicy, StepStatus, SystemClock,
    Verdict,
};
pub use warden_supervisor::{
    AgentError, AgentHandle, AgentSpec, Breaker, CascadeRule, Layout, PoolSpec, RestartPolicy,
    Scope, Strategy, Swarm, SwarmBuilder, SwarmError, Target,
};

/// The README's examples are compiled as doc tests, so the README stays true.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
