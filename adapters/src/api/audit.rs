//! `GET /v1/audit` (operator only): journal entries as `warden audit query` prints them,
//! filtered (`agent`, `kind` comma-separated, `decision`, `since`/`until` in Unix ms) and in
//! pages (`after` = the previous page's `next`, `limit` up to 10,000). Reads the journal from
//! disk, verifying the chain as it goes (bounded by retention), on a blocking thread.
//! `GET /v1/audit/keys` (operator only): the public keys that verify the journal's seals.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use warden_actors::Verdict;
use warden_supervisor::audit::Filter;
use warden_supervisor::journal::EntryKind;

use crate::http::auth::{agent_id, Operator};
use crate::http::error::ApiError;
use crate::http::wire::{AuditKey, AuditKeys, AuditPage};
use crate::http::AppState;
use crate::limits::{PAGE_ENTRIES_DEFAULT, PAGE_ENTRIES_MAX};

/// `GET /v1/audit` and `GET /v1/audit/keys`.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/audit", get(audit))
        .route("/v1/audit/keys", get(keys))
}

/// `GET /v1/audit/keys`: the Ed25519 public keys that verify this node's journal seals, the
/// current one first (`warden audit verify --public-key`).
async fn keys(_: Operator, State(state): State<AppState>) -> Json<AuditKeys> {
    let keys = state
        .audit_keys
        .get()
        .map(Vec::as_slice)
        .unwrap_or_default();
    Json(AuditKeys {
        keys: keys
            .iter()
            .enumerate()
            .map(|(i, k)| AuditKey {
                algorithm: "ed25519".into(),
                public_key: k.to_string(),
                current: i == 0,
            })
            .collect(),
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AuditQuery {
    agent: Option<String>,
    /// Comma-separated entry kinds.
    kind: Option<String>,
    decision: Option<Verdict>,
    /// Unix ms, inclusive.
    since: Option<u64>,
    /// Unix ms, exclusive.
    until: Option<u64>,
    /// Entries after this sequence number (the previous page's `next`).
    after: Option<u64>,
    /// Page size (default 1,000, at most 10,000).
    limit: Option<usize>,
}

fn filter(q: &AuditQuery) -> Result<Filter, ApiError> {
    let mut filter = Filter {
        agent: q.agent.as_deref().map(agent_id).transpose()?,
        decision: q.decision,
        since_ms: q.since,
        until_ms: q.until,
        ..Default::default()
    };
    for k in q.kind.iter().flat_map(|k| k.split(',')) {
        let kind = EntryKind::from_name(k)
            .map_err(|why| ApiError::bad_request("bad_query", format!("kind {k:?}: {why}")))?;
        filter.kinds.push(kind);
    }
    Ok(filter)
}

/// One page: the entries after `after`, at most `limit`, and whether more follow.
fn page(
    dir: &std::path::Path,
    filter: &Filter,
    after: u64,
    limit: usize,
) -> Result<AuditPage, String> {
    let mut entries = Vec::new();
    let mut more = false;
    warden_supervisor::audit::query(dir, filter, |v| {
        if v["seq"].as_u64().unwrap_or(0) <= after {
            return;
        }
        if entries.len() < limit {
            entries.push(v);
        } else {
            more = true;
        }
    })
    .map_err(|e| e.to_string())?;
    let next = more
        .then(|| entries.last().and_then(|v| v["seq"].as_u64()))
        .flatten();
    Ok(AuditPage { entries, next })
}

async fn audit(
    _: Operator,
    State(state): State<AppState>,
    q: Result<Query<AuditQuery>, QueryRejection>,
) -> Result<Json<AuditPage>, ApiError> {
    let Query(q) = q.map_err(|e| {
        ApiError::bad_query(
            e,
            "parameters: agent, kind (comma-separated), decision, since, until (Unix ms), after, limit",
        )
    })?;
    let filter = filter(&q)?;
    let limit = q
        .limit
        .unwrap_or(PAGE_ENTRIES_DEFAULT)
        .clamp(1, PAGE_ENTRIES_MAX);
    let after = q.after.unwrap_or(0);
    let dir = state.data_dir.clone();
    let page = tokio::task::spawn_blocking(move || page(&dir, &filter, after, limit))
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?
        .map_err(|e| {
            ApiError::new(
                axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                "journal_unreadable",
                e,
            )
        })?;
    Ok(Json(page))
}
