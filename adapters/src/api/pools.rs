//! Pools: `GET /v1/pools` (every pool, in path order) and `GET /v1/pools/{path}` (one;
//! the path may contain slashes: `/v1/pools/swarm/research`). Operator only.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};

use crate::http::auth::Operator;
use crate::http::error::ApiError;
use crate::http::wire::PoolView;
use crate::http::AppState;

/// The pool routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/pools", get(list))
        .route("/v1/pools/{*path}", get(show))
}

async fn list(_: Operator, State(state): State<AppState>) -> Json<Value> {
    let pools: Vec<PoolView> = state.swarm.pools().iter().map(PoolView::from).collect();
    Json(json!({ "pools": pools }))
}

async fn show(
    _: Operator,
    State(state): State<AppState>,
    Path(path): Path<String>,
) -> Result<Json<PoolView>, ApiError> {
    let p = state.swarm.pool(&path).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_pool",
            format!("no pool {path:?}; GET /v1/pools lists them"),
        )
    })?;
    Ok(Json(PoolView::from(&p)))
}
