//! Pools: `GET /v1/pools` (every pool, in path order), `GET /v1/pools/{path}` (one; the path
//! may contain slashes: `/v1/pools/swarm/research`), and `POST /v1/pools/{path}` with
//! `{"halted": true, "reason"?}` (an operator halts the pool: every agent in it and below,
//! and no new agent registered into it) or `{"halted": false}` (reopens it: agents may be
//! registered into it again; its halted agents stay halted until each is resumed; 409
//! `parent_halted` while a pool above it is halted). Operator only.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use warden_supervisor::swarm::Target;

use crate::http::auth::Operator;
use crate::http::body::JsonObject;
use crate::http::error::ApiError;
use crate::http::wire::PoolView;
use crate::http::AppState;

/// The pool routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/pools", get(list))
        .route("/v1/pools/{*path}", get(show).post(set_halted))
}

async fn list(_: Operator, State(state): State<AppState>) -> Json<Value> {
    let pools: Vec<PoolView> = state
        .swarm
        .pools()
        .iter()
        .map(|p| view(&state, p))
        .collect();
    Json(json!({ "pools": pools }))
}

fn view(state: &AppState, p: &warden_actors::AccountSnapshot) -> PoolView {
    let mut v = PoolView::from(p);
    v.halted = state.swarm.pool_halted(&p.name).unwrap_or(false);
    v
}

fn unknown(path: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "unknown_pool",
        format!("no pool {path:?}; GET /v1/pools lists them"),
    )
}

async fn show(
    _: Operator,
    State(state): State<AppState>,
    Path(path): Path<String>,
) -> Result<Json<PoolView>, ApiError> {
    let p = state.swarm.pool(&path).ok_or_else(|| unknown(&path))?;
    Ok(Json(view(&state, &p)))
}

/// The nearest pool above `path` that is halted, if any: a pool under a halted one is not
/// reopened alone (its agents would run while the pool above says no).
fn halted_parent(state: &AppState, path: &str) -> Option<String> {
    path.rmatch_indices('/')
        .map(|(i, _)| &path[..i])
        .find(|p| state.swarm.pool_halted(p).unwrap_or(false))
        .map(str::to_string)
}

/// `POST /v1/pools/{path}`'s body.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SetHalted {
    halted: bool,
    #[serde(default)]
    reason: Option<String>,
}

async fn set_halted(
    _: Operator,
    State(state): State<AppState>,
    Path(path): Path<String>,
    JsonObject(body): JsonObject<SetHalted>,
) -> Result<Json<PoolView>, ApiError> {
    super::agents::check_texts(&[("reason", &body.reason)])?;
    if state.swarm.pool(&path).is_none() {
        return Err(unknown(&path));
    }
    if body.halted {
        let reason = body
            .reason
            .unwrap_or_else(|| "halted by the operator".into());
        state.swarm.halt(Target::Pool(path.clone()), reason).await?;
    } else {
        if let Some(parent) = halted_parent(&state, &path) {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "parent_halted",
                format!("pool {parent:?} above {path:?} is halted: reopen it first"),
            ));
        }
        state.swarm.reopen_pool(&path)?;
        // Answered once its journal note is durable, like every other change an operator
        // makes: a reopening acknowledged and then lost in a crash would surprise them.
        state.swarm.durable().await?;
    }
    let p = state.swarm.pool(&path).ok_or_else(|| unknown(&path))?;
    Ok(Json(view(&state, &p)))
}
