//! The agent's own steps: `POST /v1/agents/{id}/steps` (decide and reserve) and
//! `POST /v1/agents/{id}/steps/{step}/outcome` (settle). Only the agent's own token.

use axum::extract::{Path, State};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::Value;
use warden_actors::{IdError, Outcome, OutcomeStatus, Step, StepId};

use super::agents::handle;
use crate::http::auth::AgentCaller;
use crate::http::body::JsonObject;
use crate::http::error::ApiError;
use crate::http::wire::{DecisionView, OutcomeRequest, OutcomeView};
use crate::http::AppState;

/// The step routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/agents/{id}/steps", post(step))
        .route("/v1/agents/{id}/steps/{step}/outcome", post(outcome))
}

async fn step(
    AgentCaller(id): AgentCaller,
    State(state): State<AppState>,
    JsonObject(raw): JsonObject<Value>,
) -> Result<Json<DecisionView>, ApiError> {
    let step: Step = serde_json::from_value(raw)
        .map_err(|e| ApiError::bad_request("bad_step", e.to_string()))?;
    let decision = handle(&state, &id)?.step(step).await?;
    Ok(Json(DecisionView::from(&decision)))
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
