//! The cluster: `GET /v1/cluster` (this node, its peers with their state and lag, its rights
//! per replicated pool) and `POST /v1/cluster/prepare-offline` (take rights along before the
//! link goes). Operator only. A node without a `sync` section answers 404 `no_cluster`.
//!
//! The status is the supervisor's own serde form (`warden_supervisor::cluster::ClusterView`),
//! relayed as events are.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use warden_supervisor::cluster::{Cluster, ClusterView};

use super::agents::duration;
use crate::http::auth::Operator;
use crate::http::body::JsonObject;
use crate::http::error::ApiError;
use crate::http::wire::PrepareOfflineRequest;
use crate::http::AppState;

/// The cluster routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/cluster", get(show))
        .route("/v1/cluster/prepare-offline", post(prepare_offline))
}

fn cluster(state: &AppState) -> Result<&Cluster, ApiError> {
    state.cluster.get().ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "no_cluster",
            "this node does not sync with others (no `sync` section in its config)",
        )
    })
}

async fn show(_: Operator, State(state): State<AppState>) -> Result<Json<ClusterView>, ApiError> {
    Ok(Json(cluster(&state)?.view()))
}

async fn prepare_offline(
    _: Operator,
    State(state): State<AppState>,
    JsonObject(body): JsonObject<PrepareOfflineRequest>,
) -> Result<Json<ClusterView>, ApiError> {
    let c = cluster(&state)?;
    let lease_ms = duration("duration", &body.duration)?;
    let want = match &body.pools {
        None => None,
        Some(pools) => Some(wanted(c, pools)?),
    };
    c.prepare_offline(lease_ms, want);
    Ok(Json(c.view()))
}

/// The rights asked for, per replicated pool and dimension, in ledger units (money and risk
/// in dollars and points, as everywhere in the API).
fn wanted(
    c: &Cluster,
    pools: &BTreeMap<String, BTreeMap<String, f64>>,
) -> Result<BTreeMap<(String, String), u64>, ApiError> {
    let view = c.view();
    let mut out = BTreeMap::new();
    for (pool, dims) in pools {
        for (dim, amount) in dims {
            if !view
                .rights
                .iter()
                .any(|r| &r.pool == pool && &r.dimension == dim)
            {
                return Err(ApiError::bad_request(
                    "unknown_pool",
                    format!("{pool} {dim} is not a replicated pool dimension; GET /v1/cluster lists them"),
                ));
            }
            let field = format!("pools.{pool}.{dim}");
            let units = match dim.as_str() {
                "cost_usd" | "risk" => super::agents::micros(&field, *amount)?,
                _ if amount.is_finite() && *amount >= 0.0 && amount.fract() == 0.0 => {
                    *amount as u64
                }
                _ => {
                    return Err(ApiError::bad_request(
                        "bad_amount",
                        format!("{field} = {amount} must be a whole number of at least 0"),
                    ))
                }
            };
            out.insert((pool.clone(), dim.clone()), units);
        }
    }
    Ok(out)
}
