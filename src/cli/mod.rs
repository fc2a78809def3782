//! The command groups of the `warden` binary, one module each; `main.rs` holds only the clap
//! definitions and the dispatch.
//!
//! Every handler returns `anyhow::Result`: the binary is the edge where library errors become
//! a message and an exit code (`main.rs` prints `warden: <error>` and exits 2).

pub mod agents;
pub mod approvals;
pub mod audit;
pub mod audit_pg;
pub mod audit_s3;
pub mod certs;
pub mod cluster;
pub mod demo;
pub mod demo_view;
pub mod node;
pub mod policy;
pub mod remote;
pub mod shared;
pub mod sim;
pub mod sim_target;
