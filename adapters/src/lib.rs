//! # warden-adapters: how agents reach warden
//!
//! This crate will own the enforcement proxy that stands between agents and their tools: the
//! HTTP tool proxy (`ANY /proxy/{tool}/...`), the OpenAI-compatible LLM proxy
//! (`POST /v1/chat/completions`, metering tokens, streaming included) and the MCP gateway
//! (`POST /mcp`, governing `tools/call`). `adapters/python/` will hold the Python client and
//! framework middleware. It is empty until the proxy issue lands.

#![warn(missing_docs)]

pub use warden_supervisor as supervisor;
