//! `GET /healthz` (the process answers), `GET /readyz` (the node acknowledges decisions: not
//! once its journal has failed) and `GET /metrics` (Prometheus text). The only routes open
//! without a token.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;

use crate::http::error::ApiError;
use crate::http::AppState;

/// `/healthz`, `/readyz`, `/metrics`.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(|| async { Json(json!({"status": "ok"})) }))
        .route("/readyz", get(ready))
        .route("/metrics", get(metrics))
}

async fn ready(State(state): State<AppState>) -> Response {
    match state.swarm.journal_failure() {
        None => Json(json!({"status": "ready"})).into_response(),
        Some(why) => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "journal_unavailable", why)
            .into_response(),
    }
}

async fn metrics(State(state): State<AppState>) -> Response {
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    warden_supervisor::metrics::refresh_gauges(&state.swarm, now_ms);
    match &state.metrics {
        Some(render) => (
            [(
                axum::http::header::CONTENT_TYPE,
                "text/plain; version=0.0.4",
            )],
            render(),
        )
            .into_response(),
        None => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "no_metrics",
            "this process installed no metrics recorder",
        )
        .into_response(),
    }
}
