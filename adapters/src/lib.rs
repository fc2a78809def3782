//! # warden-adapters: every way agents and operators reach warden over the network
//!
//! The only crate that speaks HTTP, in or out, and the only one that knows the API's JSON
//! shapes (the protocol can change without touching the engine):
//!
//! - [`config`]: the node's config file (located errors) and the one place flags, the
//!   environment and the file meet;
//! - [`http`]: the server ([`http::start`]), the connection limit, the error shape, the
//!   operator and agent authentication, and the wire types ([`http::wire`]);
//! - [`api`]: the `/v1` API and the web page, one router per resource;
//! - [`proxy`]: the enforcement proxy, the one door from agents to their tools (and models);
//! - [`webhook`]: signed outbound announcements of halts and approvals;
//! - [`export`]: the journal's signing key, and its exports (PostgreSQL, an S3 archive);
//! - [`client`]: a typed client of the `/v1` API;
//! - [`limits`]: every bound of the network surface.
//!
//! ```no_run
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! use warden_adapters::config::{NodeConfig, POLICY_DEFAULT};
//!
//! let mut config = NodeConfig::new("127.0.0.1:0".parse().unwrap(), "warden-data", POLICY_DEFAULT.into());
//! config.operator_token = Some("an operator token of 16+ characters".into());
//! let node = warden_adapters::http::start(config).await.unwrap();
//! println!("serving on http://{}", node.addr);
//! node.shutdown().await;
//! # }
//! ```

#![warn(missing_docs)]

pub mod api;
pub mod client;
pub mod config;
pub mod export;
pub mod http;
pub mod limits;
pub mod proxy;
pub mod webhook;

pub use warden_supervisor as supervisor;
