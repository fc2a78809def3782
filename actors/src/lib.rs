//! # warden-actors: the governance kernel for one agent
//!
//! Everything warden decides about a single agent lives here, and nothing here does I/O or
//! reads a clock on its own: time is a parameter, so every decision can be replayed.
//!
//! - [`step`]: the validated [`Step`] an agent asks to take.
//! - [`budget`]: budget dimensions and the integer amounts the ledger counts.
//! - [`ledger`]: hierarchical accounts with atomic, all-or-nothing reservation.
//! - [`kernel`]: [`AgentKernel`], which decides allow / deny / halt and settles outcomes.
//! - [`stagnation`]: repeat and flat-progress detection.
//! - [`decision`]: verdicts, halt kinds, halt records.
//! - [`actor`]: the ractor actor that sequences one agent's messages.
//! - [`event`]: the bounded event bus.
//! - [`record`]: the records of state changes that the journal keeps and recovery re-applies.
//! - [`yaml`]: the located-YAML reader and [`yaml::Diagnostic`] (policies and the node's config).
//! - [`rules`]: every built-in rule id (`budget.tokens`, `heartbeat`, `cascade.siblings`, ...).
//!
//! ```
//! use std::sync::Arc;
//! use warden_actors::{Account, ActionClass, AgentId, AgentKernel, Budgets, KernelConfig,
//!     LedgerDim, Limits, Outcome, Step, Verdict};
//!
//! // A pool with 1,000 tokens, and an agent under it allowed 2 steps.
//! let pool = Account::root("swarm", Limits::UNLIMITED.with(LedgerDim::Tokens, Some(1_000)));
//! let account = pool.child("a1", Budgets { steps: Some(2), ..Default::default() }.ledger_limits()).unwrap();
//! let mut kernel = AgentKernel::new(AgentId::new("a1").unwrap(), account, &KernelConfig::default(), None, 0);
//!
//! let step = Step::builder("web.search", ActionClass::Read).tokens(600).build().unwrap();
//! let first = kernel.decide(&step, 1).decision;
//! assert_eq!(first.decision, Verdict::Allow);
//! // The pool has 400 tokens left: the same step no longer fits and is denied.
//! assert_eq!(kernel.decide(&step, 2).decision.decision, Verdict::Deny);
//! // Settling with the real usage refunds the rest.
//! kernel.settle(first.step, &Outcome::success().with_actual(warden_actors::Cost::new(100, 0)), 3).unwrap();
//! assert_eq!(pool.snapshot().spent.get(LedgerDim::Tokens), 100);
//! ```

#![warn(missing_docs)]

pub mod actor;
pub mod budget;
pub mod clock;
pub mod decision;
pub mod event;
pub mod ids;
pub mod kernel;
pub mod ledger;
pub mod policy;
pub mod pool;
pub mod record;
pub mod rules;
pub mod stagnation;
pub mod step;
pub mod yaml;

pub use actor::{
    spawn_agent_actor, AgentActor, AgentCore, AgentMetrics, AgentMsg, HaltNotice, ParkedSink,
    StepStatus, MAX_UNCOLLECTED_RESOLUTIONS,
};
pub use budget::{
    Amounts, Budgets, CustomDim, Dimension, LedgerDim, Limits, MAX_LIMIT_AMOUNT, MAX_STEP_AMOUNT,
    MICROS_PER_UNIT,
};
pub use clock::{Clock, ManualClock, SystemClock};
pub use decision::{CauseLink, Decision, DecisionEvent, HaltKind, HaltRecord, Verdict};
pub use event::{Event, EventBus, EventError, EventStream};
pub use ids::{AgentId, IdError, StepId};
pub use kernel::{
    AgentKernel, AgentSnapshot, AgentState, ApprovalAnswer, ApprovalError, Decided, Judgement,
    KernelConfig, Outcome, OutcomeStatus, PendingApproval, PolicyContext, PolicyOutcome,
    RateCommit, SettleError, SettleReport, StepPolicy, MAX_RELEASED_STEPS,
    MIN_HEARTBEAT_TIMEOUT_MS,
};
pub use ledger::{
    Account, AccountSnapshot, Billing, Remaining, Reservation, Settlement, Shortfall,
};
pub use pool::{Breaker, CascadeRule, RestartPolicy, Scope, Strategy};
pub use record::{KernelRecord, Recorded, Recorder};
pub use stagnation::StagnationConfig;
pub use step::{ActionClass, Cost, CostError, MinCost, RawUsage, Step, StepError, Usage};
