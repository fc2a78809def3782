//! Proxied steps a crash left open. The proxy settles its own steps; after a kill -9 nobody
//! would, and their reservations would hold the pools' room for good. At start, after
//! recovery, every open step whose journaled decision shows it went through the proxy (a
//! tool the registry routes to an upstream, or an LLM request: the upstream's name with the
//! LLM step's `api` arg) is settled as a **failure at its whole reservation**: what happened
//! upstream after the crash is unknown, so it is charged as if it all was used, never less.
//!
//! Found by one pass over the journal (only when some agent has open steps). A step whose
//! decision is no longer in the journal (retention removed the segment) is left open.

use std::collections::{BTreeSet, HashMap};

use serde_json::Value;
use warden_actors::{AgentId, Outcome, StepId};
use warden_supervisor::audit::{query, Filter};

use crate::http::AppState;

/// Settles the proxy's orphaned steps; returns how many.
pub async fn settle(state: &AppState) -> usize {
    let mut open: HashMap<AgentId, BTreeSet<StepId>> = HashMap::new();
    for id in state.swarm.agent_ids() {
        if let Some(h) = state.swarm.agent(&id) {
            let ids = h.open_step_ids();
            if !ids.is_empty() {
                open.insert(id, ids.into_iter().collect());
            }
        }
    }
    if open.is_empty() {
        return 0;
    }
    // Every decision: an approved step's is its `require_approval` one (the approval's
    // own record names no tool).
    let filter = Filter::default();
    let mut orphans = Vec::new();
    let scanned = query(&state.data_dir, &filter, |v| {
        let e = &v["entry"];
        let (Some(agent), Some(step)) = (
            e["agent"].as_str().and_then(|a| a.parse::<AgentId>().ok()),
            e["step_id"].as_str().and_then(|s| s.parse::<StepId>().ok()),
        ) else {
            return;
        };
        let decision = e["type"] == "decision" && e["step"].is_object();
        if decision
            && open.get(&agent).is_some_and(|s| s.contains(&step))
            && proxied(state, &e["step"])
        {
            orphans.push((agent, step));
        }
    });
    if scanned.is_err() {
        return 0;
    }
    let n = orphans.len();
    for (agent, step) in orphans {
        if let Some(h) = state.swarm.agent(&agent) {
            let _ = h.outcome(step, Outcome::failure()).await;
        }
    }
    n
}

/// True for a step the proxy took: a tool routed to an upstream, or an LLM request.
fn proxied(state: &AppState, step: &Value) -> bool {
    let tool = step["tool"].as_str().unwrap_or("");
    let llm = state.proxy.route(tool).is_some_and(|r| {
        matches!(
            r.kind,
            crate::config::UpstreamKind::OpenAi | crate::config::UpstreamKind::Anthropic
        )
    }) && step["args"]["api"].is_string()
        && step["args"]["input_digest"].is_string();
    llm || state.proxy.tool_route(tool).is_ok()
}
