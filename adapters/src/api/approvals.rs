//! Human in the loop: `GET /v1/approvals` (the pending ones, oldest first) and
//! `POST /v1/approvals/{id}` (`{"decision": "approve" | "deny", "reason"?, "by"?}`). Operator
//! only. The answer is journaled before it is acknowledged.

use axum::extract::{Path, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};
use warden_actors::ApprovalAnswer;

use super::agents::check_texts;
use crate::http::auth::Operator;
use crate::http::body::JsonObject;
use crate::http::error::ApiError;
use crate::http::wire::{AnswerRequest, ApprovalView, DecisionView};
use crate::http::AppState;
use crate::limits::PAGE_ENTRIES_MAX;

/// The approval routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/approvals", get(list))
        .route("/v1/approvals/{*id}", post(answer))
}

async fn list(_: Operator, State(state): State<AppState>) -> Json<Value> {
    let list: Vec<ApprovalView> = state
        .swarm
        .approvals()
        .into_iter()
        .take(PAGE_ENTRIES_MAX)
        .map(ApprovalView::from)
        .collect();
    Json(json!({ "approvals": list }))
}

fn answer_of(body: AnswerRequest) -> Result<ApprovalAnswer, ApiError> {
    check_texts(&[("reason", &body.reason), ("by", &body.by)])?;
    let by = body.by.unwrap_or_else(|| "operator".into());
    match body.decision.as_str() {
        "approve" => Ok(ApprovalAnswer::Approve { by }),
        "deny" => Ok(ApprovalAnswer::Deny {
            by,
            reason: body
                .reason
                .unwrap_or_else(|| "denied by an operator".into()),
        }),
        other => Err(ApiError::bad_request(
            "bad_decision",
            format!("decision {other:?} is not approve or deny"),
        )),
    }
}

async fn answer(
    _: Operator,
    State(state): State<AppState>,
    Path(id): Path<String>,
    JsonObject(body): JsonObject<AnswerRequest>,
) -> Result<Json<DecisionView>, ApiError> {
    let decision = state.swarm.answer_approval(&id, answer_of(body)?)?;
    state.swarm.durable().await?;
    Ok(Json(DecisionView::from(&decision)))
}
