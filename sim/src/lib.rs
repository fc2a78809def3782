//! # warden-sim: the deterministic swarm simulator
//!
//! This crate will own `warden sim`: thousands of synthetic agents with behaviour models
//! (loopers, spenders, risk-takers), fault models (crashes, partitions, lost heartbeats),
//! scenarios, and invariant checks (no overspend, no allow after halt, replay = recovery), all
//! driven from a seed through the kernel's injected clock, plus load generation against a real
//! node. It is empty until the simulator issue lands.

#![warn(missing_docs)]

pub use warden_adapters as adapters;
