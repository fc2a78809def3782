//! `GET /v1/policy` (the YAML text in force, its version in `X-Warden-Policy-Version`) and
//! `PUT /v1/policy` (the body is the new policy's YAML text; the answer is the new version and
//! its warnings, or 400 `invalid_policy` with every error at line:column in `details`, and the
//! old policy stays in force). Operator only.

use axum::extract::State;
use axum::http::{header, HeaderName};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use warden_actors::yaml::{Diagnostic, Severity};
use warden_supervisor::SwarmError;

use crate::http::auth::Operator;
use crate::http::error::ApiError;
use crate::http::wire::PolicyVersionView;
use crate::http::AppState;

/// The policy routes.
pub fn router() -> Router<AppState> {
    Router::new().route("/v1/policy", get(show).put(replace))
}

async fn show(_: Operator, State(state): State<AppState>) -> Result<Response, ApiError> {
    // Version and text are read together: a concurrent reload never mixes them.
    let (version, text) = state
        .swarm
        .policy_text()
        .ok_or_else(|| ApiError::internal("the node holds no policy text"))?;
    Ok((
        [
            (header::CONTENT_TYPE, "application/yaml".to_string()),
            (
                HeaderName::from_static("x-warden-policy-version"),
                version.to_string(),
            ),
        ],
        text,
    )
        .into_response())
}

/// The body as policy text: 400 `invalid_policy` at the line and column of the first byte
/// that is not UTF-8.
fn policy_text(body: &[u8]) -> Result<&str, ApiError> {
    std::str::from_utf8(body).map_err(|e| {
        let at = e.valid_up_to();
        let line = body[..at].iter().filter(|b| **b == b'\n').count() + 1;
        let line_start = body[..at]
            .iter()
            .rposition(|b| *b == b'\n')
            .map_or(0, |i| i + 1);
        let col = std::str::from_utf8(&body[line_start..at]).map_or(1, |s| s.chars().count() + 1);
        let d = Diagnostic {
            severity: Severity::Error,
            line,
            col,
            message: format!("byte {} is not UTF-8", at + 1),
            hint: Some("save the policy as UTF-8".into()),
        };
        let e = ApiError::bad_request(
            "invalid_policy",
            format!("the policy has errors; the previous policy stays active. {d}"),
        );
        match serde_json::to_value([&d]) {
            Ok(details) => e.with_details(details),
            Err(_) => e,
        }
    })
}

async fn replace(
    _: Operator,
    State(state): State<AppState>,
    body: axum::body::Bytes,
) -> Result<Json<PolicyVersionView>, ApiError> {
    let body = policy_text(&body)?;
    match state.swarm.reload_policy(body) {
        Ok((version, warnings)) => {
            state.swarm.durable().await?;
            let warnings = warnings
                .iter()
                .filter_map(|w| serde_json::to_value(w).ok())
                .collect();
            Ok(Json(PolicyVersionView { version, warnings }))
        }
        Err(SwarmError::Policy(errors)) => {
            let first = errors
                .errors()
                .next()
                .map(|d| d.to_string())
                .unwrap_or_default();
            let e = ApiError::bad_request(
                "invalid_policy",
                format!("the policy has errors; the previous policy stays active. {first}"),
            );
            Err(match serde_json::to_value(&errors.diagnostics) {
                Ok(details) => e.with_details(details),
                Err(_) => e,
            })
        }
        Err(other) => Err(other.into()),
    }
}
