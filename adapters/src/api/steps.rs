//! The agent's own steps: `POST /v1/agents/{id}/steps` (decide and reserve),
//! `GET /v1/agents/{id}/steps/{step}` (a step's final decision; `?wait=30s` long-polls one
//! parked for approval) and `POST /v1/agents/{id}/steps/{step}/outcome` (settle). Only the
//! agent's own token.

use std::time::Duration;

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::value::RawValue;
use warden_actors::{IdError, Outcome, OutcomeStatus, Step, StepId, StepStatus};

use super::agents::{duration, handle};
use crate::http::auth::AgentCaller;
use crate::http::body::JsonObject;
use crate::http::error::ApiError;
use crate::http::wire::{DecisionView, OutcomeRequest, OutcomeView};
use crate::http::AppState;
use crate::limits::step_wait_cap_ms;

/// The step routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/agents/{id}/steps", post(step))
        .route("/v1/agents/{id}/steps/{step}", get(read))
        .route("/v1/agents/{id}/steps/{step}/outcome", post(outcome))
}

/// True for `GET /v1/agents/{id}/steps/{step}`, whose request deadline makes room for its
/// wait.
pub fn is_step_read(method: &axum::http::Method, path: &str) -> bool {
    let mut parts = path.split('/');
    method == axum::http::Method::GET
        && matches!(
            [(); 7].map(|()| parts.next()),
            [
                Some(""),
                Some("v1"),
                Some("agents"),
                Some(_),
                Some("steps"),
                Some(_),
                None
            ]
        )
}

async fn step(
    AgentCaller(id): AgentCaller,
    State(state): State<AppState>,
    body: Result<Json<Box<RawValue>>, JsonRejection>,
) -> Result<Json<DecisionView>, ApiError> {
    // Syntax, size and content type are the extractor's (`bad_json`, ...); the step itself is
    // read from the text by `Step`'s deserializer, the one way JSON becomes a step, so a
    // repeated key in `args` is refused instead of merged into one `Value`.
    let Json(raw) = body?;
    if !raw.get().trim_start().starts_with('{') {
        // Serde's derived readers would take an array as the fields in order.
        return Err(ApiError::bad_request(
            "bad_json",
            "a step is a JSON object ({\"tool\", \"action\", ...})",
        ));
    }
    let step: Step = serde_json::from_str(raw.get())
        .map_err(|e| ApiError::bad_request("bad_step", e.to_string()))?;
    let decision = handle(&state, &id)?.step(step).await?;
    Ok(Json(DecisionView::from(&decision)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReadQuery {
    /// How long to wait for a parked step's answer (`30s`).
    wait: Option<String>,
}

/// A step's decision: the final one once it has one, else (parked for approval) its
/// `require_approval` decision, after waiting up to `?wait=` for the answer. The wait is
/// bounded ([`step_wait_cap_ms`]: 60 s, and the node's request timeout) and ends early at
/// shutdown; at the bound the answer is the current state. 404 `unknown_step` for a step not
/// decided, 404 `decision_not_kept` for one whose decision is not kept (it was never parked:
/// the answer to its `POST` was final).
async fn read(
    AgentCaller(id): AgentCaller,
    State(state): State<AppState>,
    Path((_, step)): Path<(String, String)>,
    q: Result<Query<ReadQuery>, QueryRejection>,
) -> Result<Json<DecisionView>, ApiError> {
    let step: StepId = step
        .parse()
        .map_err(|e: IdError| ApiError::bad_request("bad_step_id", e.to_string()))?;
    let Query(q) = q.map_err(|e| ApiError::bad_query(e, "wait is a duration such as 30s"))?;
    let wait_ms = match &q.wait {
        Some(w) => duration("wait", w)?.min(step_wait_cap_ms(state.request_timeout_ms)),
        None => 0,
    };
    let h = handle(&state, &id)?;
    let mut status = h.step_status(step);
    if wait_ms > 0 && matches!(status, StepStatus::Pending { .. }) {
        let mut shutdown = state.shutting_down.subscribe();
        tokio::select! {
            s = h.wait_step_status(step, Duration::from_millis(wait_ms)) => status = s,
            _ = shutdown.wait_for(|down| *down) => status = h.step_status(step),
        }
    }
    match status {
        StepStatus::Pending { decision, .. } | StepStatus::Final(decision) => {
            Ok(Json(DecisionView::from(&decision)))
        }
        StepStatus::NotKept => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "decision_not_kept",
            format!("step {step} of agent {id} was never parked for approval (or its final decision is no longer kept): the answer to its POST was its final decision"),
        )),
        StepStatus::Unknown => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_step",
            format!("agent {id} has not decided a step {step}"),
        )),
    }
}

/// The outcome as the kernel takes it: the dimensions the report names replace what was
/// reserved, the others settle as reserved.
fn outcome_of(body: &OutcomeRequest) -> Result<Outcome, ApiError> {
    let mut outcome = match body.status {
        OutcomeStatus::Success => Outcome::success(),
        OutcomeStatus::Failure => Outcome::failure(),
    };
    if let Some(c) = &body.cost {
        let usage = c
            .clone()
            .parse("outcome.cost")
            .map_err(|e| ApiError::bad_request("bad_outcome", e.to_string()))?;
        outcome = outcome.with_usage(usage);
    }
    Ok(outcome)
}

async fn outcome(
    AgentCaller(id): AgentCaller,
    State(state): State<AppState>,
    Path((_, step)): Path<(String, String)>,
    JsonObject(body): JsonObject<OutcomeRequest>,
) -> Result<Json<OutcomeView>, ApiError> {
    let step: StepId = step
        .parse()
        .map_err(|e: IdError| ApiError::bad_request("bad_step_id", e.to_string()))?;
    let outcome = outcome_of(&body)?;
    let report = handle(&state, &id)?.outcome(step, outcome).await?;
    Ok(Json(OutcomeView::new(step, &report)))
}
