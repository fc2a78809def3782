//! The agent's own steps: `POST /v1/agents/{id}/steps` (decide and reserve) and
//! `POST /v1/agents/{id}/steps/{step}/outcome` (settle). Only the agent's own token.

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::value::RawValue;
use warden_actors::{Cost, IdError, Outcome, OutcomeStatus, Step, StepId};

use super::agents::{handle, micros};
use crate::http::auth::AgentCaller;
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
    body: Result<Json<Box<RawValue>>, JsonRejection>,
) -> Result<Json<DecisionView>, ApiError> {
    // Syntax, size and content type are the extractor's (`bad_json`, ...); the step itself is
    // read from the text by `Step`'s deserializer, the one way JSON becomes a step, so a
    // repeated key in `args` is refused instead of merged into one `Value`.
    let Json(raw) = body?;
    let step: Step = serde_json::from_str(raw.get())
        .map_err(|e| ApiError::bad_request("bad_step", e.to_string()))?;
    let decision = handle(&state, &id)?.step(step).await?;
    Ok(Json(DecisionView::from(&decision)))
}

/// The outcome as the kernel takes it.
fn outcome_of(body: &OutcomeRequest) -> Result<Outcome, ApiError> {
    let mut outcome = match body.status {
        OutcomeStatus::Success => Outcome::success(),
        OutcomeStatus::Failure => Outcome::failure(),
    };
    if let Some(c) = &body.cost {
        let usd = match c.cost_usd {
            Some(v) => micros("cost.cost_usd", v)?,
            None => 0,
        };
        outcome = outcome.with_actual(Cost::new(c.tokens, usd));
    }
    Ok(outcome)
}

async fn outcome(
    AgentCaller(id): AgentCaller,
    State(state): State<AppState>,
    Path((_, step)): Path<(String, String)>,
    body: Result<Json<OutcomeRequest>, JsonRejection>,
) -> Result<Json<OutcomeView>, ApiError> {
    let step: StepId = step
        .parse()
        .map_err(|e: IdError| ApiError::bad_request("bad_step_id", e.to_string()))?;
    let Json(body) = body?;
    let outcome = outcome_of(&body)?;
    let report = handle(&state, &id)?.outcome(step, outcome).await?;
    Ok(Json(OutcomeView::new(step, &report)))
}
