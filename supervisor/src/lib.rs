//! # warden-supervisor: groups of governed agents
//!
//! A [`Swarm`] is a supervision tree (swarm -> pools -> agents, pools may nest) over a pool
//! tree of the same shape. It owns:
//!
//! - **shared pools**: each pool is a ledger account; a spend debits the agent and every pool
//!   above it all-or-nothing ([`warden_actors::ledger`]);
//! - **cascade halts**: per pool, which halt kinds spread and how far ([`Scope`]), plus a
//!   contagion [`Breaker`]; every cascaded halt carries its cause chain;
//! - **restart strategies** for crashed actors (one_for_one, one_for_all, rest_for_one, at most
//!   N in T, then escalate to the parent pool): crash is not halt, and a restart never gives
//!   spent budget back;
//! - **heartbeats** (silent agents are halted as `lost`, their reservations released) and
//!   **deadlock detection** over declared wait-for edges.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! use warden_actors::{ActionClass, AgentId, LedgerDim, Limits, Step};
//! use warden_supervisor::{AgentSpec, Swarm, PoolSpec};
//!
//! let swarm = Swarm::builder()
//!     .pool(PoolSpec::new("swarm/research").limits(Limits::UNLIMITED.with(LedgerDim::Tokens, Some(1_000))))
//!     .build()
//!     .await
//!     .unwrap();
//! let agent = swarm
//!     .spawn_agent(AgentSpec::new(AgentId::new("r1").unwrap()).pool("swarm/research"))
//!     .await
//!     .unwrap();
//! let step = Step::builder("web.search", ActionClass::Read).tokens(800).build().unwrap();
//! assert!(agent.step(step.clone()).await.unwrap().is_allow());
//! // Only 200 tokens are left in swarm/research: the pool denies the second one.
//! assert!(!agent.step(step).await.unwrap().is_allow());
//! swarm.shutdown().await;
//! # }
//! ```

#![warn(missing_docs)]

pub mod audit;
pub mod cluster;
pub mod journal;
pub mod limits;
pub mod metrics;
pub mod node;
pub mod runtime;
pub mod swarm;
pub mod waitfor;

pub use node::{Node, NodeError, NodeOptions, SealOptions};
pub use runtime::Layout;
pub use swarm::{
    escrow_dimension, AgentError, AgentHandle, AgentSpec, Breaker, CascadeRule, CrashReport,
    PoolSpec, RestartPolicy, Scope, Strategy, Swarm, SwarmBuilder, SwarmError, SwarmLedger, Target,
};
pub use waitfor::{WaitError, WaitGraph};
