//! Agents: `POST /v1/agents` (register; operator), `GET /v1/agents` (list, filtered and paged;
//! operator), `GET /v1/agents/{id}` (the agent itself or the operator),
//! `POST /v1/agents/{id}/halt|resume` (operator), `POST /v1/agents/{id}/heartbeat` (the agent).

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use warden_actors::{AgentId, AgentState, Budgets};
use warden_supervisor::{AgentHandle, AgentSpec, SwarmError};

use crate::http::auth::{
    agent_id, random_token, token_digest, AgentCaller, AgentOrOperator, Operator,
};
use crate::http::body::{JsonObject, OptionalJsonObject};
use crate::http::error::ApiError;
use crate::http::wire::{AgentPage, AgentView, BudgetsRequest, ReasonRequest, RegisterRequest};
use crate::http::AppState;
use crate::limits::{
    LABELS_MAX, LABEL_BYTES_MAX, PAGE_ENTRIES_DEFAULT, PAGE_ENTRIES_MAX, TEXT_BYTES_MAX,
};
use warden_supervisor::limits::WAITS_PER_AGENT_MAX;

/// The agent routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/agents", post(register).get(list))
        .route("/v1/agents/{id}", get(show))
        .route("/v1/agents/{id}/halt", post(halt))
        .route("/v1/agents/{id}/resume", post(resume))
        .route("/v1/agents/{id}/heartbeat", post(heartbeat))
}

/// The view of an agent, with its labels.
pub fn view(state: &AppState, h: &AgentHandle) -> AgentView {
    let snap = h.snapshot();
    let labels = state
        .labels
        .get(&snap.id)
        .map(|l| l.clone())
        .unwrap_or_default();
    let mut view = AgentView::new(&snap, h.pool(), labels);
    view.parent = h.parent().cloned();
    view.depends_on = h.depends_on().to_vec();
    view
}

/// The live handle of an agent (404 `unknown_agent`).
pub fn handle(state: &AppState, id: &AgentId) -> Result<AgentHandle, ApiError> {
    Ok(state
        .swarm
        .agent(id)
        .ok_or_else(|| SwarmError::UnknownAgent(id.clone()))?)
}

/// A duration of the API (`30s`, `10m`, `1h`), or 400 `bad_duration` naming the field.
pub fn duration(field: &str, text: &str) -> Result<u64, ApiError> {
    warden_actors::yaml::parse_duration_ms(text).ok_or_else(|| {
        ApiError::bad_request(
            "bad_duration",
            format!(
                "{field} = {text:?} {}; write e.g. 30s, 10m, 1h",
                warden_actors::yaml::duration_problem(text)
            ),
        )
    })
}

/// Dollars (or risk points) to the ledger's micro-units, or 400 `bad_amount` naming the field.
pub fn micros(field: &str, v: f64) -> Result<u64, ApiError> {
    warden_actors::step::usd_to_micro(v).map_err(|_| {
        ApiError::bad_request(
            "bad_amount",
            format!("{field} = {v} must be a number from 0 to 10^9"),
        )
    })
}

/// Refuses a `reason` or `by` longer than [`TEXT_BYTES_MAX`] (they go into the journal and
/// every event).
pub fn check_texts(texts: &[(&str, &Option<String>)]) -> Result<(), ApiError> {
    for (field, t) in texts {
        if t.as_ref().is_some_and(|t| t.len() > TEXT_BYTES_MAX) {
            return Err(ApiError::bad_request(
                "text_too_long",
                format!("{field} is longer than {TEXT_BYTES_MAX} bytes; shorten it"),
            ));
        }
    }
    Ok(())
}

fn check_labels(body: &RegisterRequest) -> Result<(), ApiError> {
    let too_long = |s: &String| s.len() > LABEL_BYTES_MAX;
    if body.labels.len() > LABELS_MAX || body.labels.iter().any(|(k, v)| too_long(k) || too_long(v))
    {
        return Err(ApiError::bad_request(
            "bad_labels",
            format!("at most {LABELS_MAX} labels of at most {LABEL_BYTES_MAX} characters each"),
        ));
    }
    Ok(())
}

/// The policy's default budgets with the request's overrides.
fn budgets(mut budgets: Budgets, b: &BudgetsRequest) -> Result<Budgets, ApiError> {
    budgets.steps = b.steps.or(budgets.steps);
    budgets.tokens = b.tokens.or(budgets.tokens);
    if let Some(v) = b.cost_usd {
        budgets.cost_micro_usd = Some(micros("budgets.cost_usd", v)?);
    }
    if let Some(v) = b.risk {
        budgets.risk_micro = Some(micros("budgets.risk", v)?);
    }
    if let Some(w) = &b.wall_time {
        budgets.wall_time_ms = Some(duration("budgets.wall_time", w)?);
    }
    budgets.failures = b.failures.or(budgets.failures);
    budgets.exploration = b.exploration.or(budgets.exploration);
    budgets
        .check()
        .map_err(|e| ApiError::bad_request("bad_amount", e))?;
    Ok(budgets)
}

/// `parent` and `depends_on`: registered agents other than `id` (400 naming the field
/// otherwise), at most [`WAITS_PER_AGENT_MAX`] dependencies, repeats dropped. The swarm
/// checks again when it spawns (as for the library's [`AgentSpec`]).
fn relations(
    state: &AppState,
    id: &AgentId,
    body: &RegisterRequest,
) -> Result<(Option<AgentId>, Vec<AgentId>), ApiError> {
    let registered = |field: &str, code: &'static str, raw: &str| {
        let other = AgentId::new(raw)
            .map_err(|e| ApiError::bad_request("bad_agent_id", format!("{field} {raw:?}: {e}")))?;
        if &other == id {
            return Err(ApiError::bad_request(
                code,
                format!("{field}: agent {id} cannot name itself"),
            ));
        }
        if state.swarm.agent(&other).is_none() {
            return Err(ApiError::bad_request(
                code,
                format!("{field}: {other} is not a registered agent; register it first"),
            ));
        }
        Ok(other)
    };
    let parent = body
        .parent
        .as_deref()
        .map(|p| registered("parent", "unknown_parent", p))
        .transpose()?;
    if body.depends_on.len() > WAITS_PER_AGENT_MAX {
        return Err(ApiError::bad_request(
            "too_many_dependencies",
            format!(
                "depends_on names {} agents; at most {WAITS_PER_AGENT_MAX}",
                body.depends_on.len()
            ),
        ));
    }
    let mut depends_on: Vec<AgentId> = Vec::with_capacity(body.depends_on.len());
    for raw in &body.depends_on {
        let other = registered("depends_on", "unknown_dependency", raw)?;
        if !depends_on.contains(&other) {
            depends_on.push(other);
        }
    }
    Ok((parent, depends_on))
}

fn spec(state: &AppState, id: AgentId, body: &RegisterRequest) -> Result<AgentSpec, ApiError> {
    let (parent, depends_on) = relations(state, &id, body)?;
    let mut spec = AgentSpec::new(id);
    spec.parent = parent;
    spec.depends_on = depends_on;
    if let Some(pool) = &body.pool {
        spec = spec.pool(pool.clone());
    }
    if let Some(b) = &body.budgets {
        spec = spec.budgets(budgets(state.swarm.policy_defaults().budgets, b)?);
    }
    if let Some(h) = &body.heartbeat_timeout {
        let ms = duration("heartbeat_timeout", h)?;
        if ms < warden_actors::MIN_HEARTBEAT_TIMEOUT_MS {
            return Err(ApiError::bad_request(
                "bad_duration",
                format!("heartbeat_timeout = {h:?} is below 1s: the agent would be halted as lost before its first heartbeat; give 1s or more, or leave it out for none"),
            ));
        }
        spec = spec.heartbeat_timeout_ms(ms);
    }
    Ok(spec)
}

async fn register(
    _: Operator,
    State(state): State<AppState>,
    JsonObject(body): JsonObject<RegisterRequest>,
) -> Result<Response, ApiError> {
    let id = match &body.id {
        Some(raw) => agent_id(raw)?,
        None => AgentId::new(format!("agent-{}", &random_token()[..12])).expect("valid"),
    };
    check_labels(&body)?;
    let token = random_token();
    let digest = token_digest(&token);
    // The journal keeps the token's digest and the labels with the registration, so both
    // survive a restart.
    let spec = spec(&state, id.clone(), &body)?
        .meta(json!({ "token_blake3": digest, "labels": body.labels }));
    // Spawning and issuing the token run as their own task: a client that disconnects
    // mid-request cancels only its wait, never a half-done registration.
    let task_state = state.clone();
    let labels = body.labels;
    let handle = tokio::spawn(async move {
        let handle = task_state.swarm.spawn_agent(spec).await?;
        task_state.auth.insert_digest(id.clone(), digest);
        task_state.labels.insert(id, labels);
        Ok::<_, SwarmError>(handle)
    })
    .await
    .map_err(|e| ApiError::internal(e.to_string()))??;
    if let Some(cluster) = state.cluster.get() {
        cluster.register(handle.id().as_str(), &handle.pool());
        // Halted somewhere in the cluster: registering it here again does not lift that.
        if !cluster.halt_epochs(handle.id().as_str()).is_empty() {
            let why = "halted in the cluster (a halt on another node); an audited resume lifts it";
            state
                .swarm
                .halt(handle.id().clone(), why)
                .await
                .map_err(|e| ApiError::internal(e.to_string()))?;
        }
    }
    let mut agent = view(&state, &handle);
    agent.token = Some(token);
    Ok((StatusCode::CREATED, Json(agent)).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    state: Option<AgentState>,
    pool: Option<String>,
    /// Page size (default 1,000, at most 10,000).
    limit: Option<usize>,
    /// Start after this agent id (the previous page's `next`).
    after: Option<String>,
}

/// True when `pool` is `filter` or under it.
fn in_pool(pool: &str, filter: &str) -> bool {
    pool == filter
        || pool
            .strip_prefix(filter)
            .is_some_and(|r| r.starts_with('/'))
}

async fn list(
    _: Operator,
    State(state): State<AppState>,
    q: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<AgentPage>, ApiError> {
    let Query(q) =
        q.map_err(|e| ApiError::bad_query(e, "state is running or halted, pool a pool path"))?;
    let limit = q
        .limit
        .unwrap_or(PAGE_ENTRIES_DEFAULT)
        .clamp(1, PAGE_ENTRIES_MAX);
    let mut agents: Vec<AgentView> = Vec::new();
    let mut next = None;
    // agent_ids() is sorted, so pages are stable.
    for id in state.swarm.agent_ids() {
        if q.after.as_deref().is_some_and(|after| id.as_str() <= after) {
            continue;
        }
        if agents.len() == limit {
            next = agents.last().map(|a| a.id.to_string());
            break;
        }
        let Some(h) = state.swarm.agent(&id) else {
            continue;
        };
        let agent = view(&state, &h);
        if q.state.is_some_and(|s| s != agent.state)
            || q.pool.as_deref().is_some_and(|p| !in_pool(&agent.pool, p))
        {
            continue;
        }
        agents.push(agent);
    }
    Ok(Json(AgentPage { agents, next }))
}

async fn show(
    AgentOrOperator(id): AgentOrOperator,
    State(state): State<AppState>,
) -> Result<Json<AgentView>, ApiError> {
    Ok(Json(view(&state, &handle(&state, &id)?)))
}

fn reason_body(body: ReasonRequest) -> Result<ReasonRequest, ApiError> {
    check_texts(&[("reason", &body.reason), ("by", &body.by)])?;
    Ok(body)
}

async fn halt(
    _: Operator,
    State(state): State<AppState>,
    axum::extract::Path(id): axum::extract::Path<String>,
    OptionalJsonObject(body): OptionalJsonObject<ReasonRequest>,
) -> Result<Json<Value>, ApiError> {
    let id = agent_id(&id)?;
    let body = reason_body(body)?;
    let reason = body
        .reason
        .unwrap_or_else(|| "halted by an operator".into());
    // Who halted goes into the record (and so the journal and the events).
    let reason = match &body.by {
        Some(by) => format!("{reason} (by {by})"),
        None => reason,
    };
    let halted = state.swarm.halt(id.clone(), reason).await?;
    state.swarm.durable().await?;
    // Already halted here: the kernel makes no new halt, but the cluster gets a new epoch, so
    // a resume elsewhere that has not seen this halt cannot lift it.
    if let (true, Some(cluster)) = (halted.is_empty(), state.cluster.get()) {
        cluster.halt_again(id.as_str());
    }
    Ok(Json(json!({ "halted": halted })))
}

async fn resume(
    _: Operator,
    State(state): State<AppState>,
    axum::extract::Path(id): axum::extract::Path<String>,
    OptionalJsonObject(body): OptionalJsonObject<ReasonRequest>,
) -> Result<Json<Value>, ApiError> {
    let id = agent_id(&id)?;
    let body = reason_body(body)?;
    let lifted = state
        .swarm
        .resume(&id, body.by.unwrap_or_else(|| "operator".into()))
        .await?;
    Ok(Json(json!({ "resumed": id, "lifted": lifted })))
}

async fn heartbeat(
    AgentCaller(id): AgentCaller,
    State(state): State<AppState>,
) -> Result<StatusCode, ApiError> {
    handle(&state, &id)?.heartbeat();
    Ok(StatusCode::NO_CONTENT)
}
