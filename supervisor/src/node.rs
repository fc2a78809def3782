//! The node runtime: `warden node`'s HTTP API over a [`Swarm`].
//!
//! At start the node opens and verifies its journal (`DATA_DIR/journal/`), rebuilds the swarm
//! from it ([`Swarm::recover`]) and attaches it as the write-ahead log: from then on no
//! decision, settlement, halt, resume, approval answer, registration or policy change is
//! answered before its entry is durable ([`crate::wal`]). It serves every endpoint of
//! DESIGN.md's HTTP API with per-agent tokens (kept as digests), an operator token, JSON
//! errors, body limits, server-sent events, the web page at `/`, Prometheus metrics and
//! webhooks ([`crate::webhook`]). The enforcement proxy builds on it.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use dashmap::DashMap;
use parking_lot::RwLock;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use warden_actors::policy::PolicySet;
use warden_actors::{
    AgentId, ApprovalAnswer, Cost, LedgerDim, Outcome, OutcomeStatus, Step, StepId,
};

use crate::journal::Journal;
use crate::swarm::{AgentSpec, Swarm, SwarmError};

/// The API's OpenAPI document (kept in the repository as `docs/openapi.json`).
pub const OPENAPI: &str = include_str!("../../docs/openapi.json");

/// The web page served at `GET /`: one self-contained HTML file (inline CSS and JS, nothing
/// loaded from elsewhere, no build step). It holds no data and needs no token to load; every
/// API call it makes sends the operator token the user gives it.
pub const INDEX_HTML: &str = include_str!("web/index.html");

/// Every route the node serves, as written in the OpenAPI document (a test keeps the two in
/// step).
pub const ROUTES: [&str; 19] = [
    "/",
    "/healthz",
    "/readyz",
    "/metrics",
    "/v1/openapi.json",
    "/v1/agents",
    "/v1/agents/{id}",
    "/v1/agents/{id}/steps",
    "/v1/agents/{id}/steps/{step}/outcome",
    "/v1/agents/{id}/halt",
    "/v1/agents/{id}/resume",
    "/v1/agents/{id}/heartbeat",
    "/v1/pools",
    "/v1/pools/{path}",
    "/v1/approvals",
    "/v1/approvals/{id}",
    "/v1/policy",
    "/v1/events",
    "/v1/audit",
];

/// Histogram buckets for `*_duration_seconds`: 1 µs to 1 s.
const DURATION_BUCKETS: [f64; 13] = [
    1e-6, 2.5e-6, 5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 5e-4, 1e-3, 5e-3, 1e-2, 1e-1, 1.0,
];

/// Journal kept before retention compacts it, by default (4 GiB).
pub const DEFAULT_JOURNAL_BYTES: u64 = 4 << 30;
/// Journal segment size by default (64 MiB).
pub const DEFAULT_SEGMENT_BYTES: u64 = 64 << 20;

/// Largest request body accepted by default (1 MiB).
pub const DEFAULT_MAX_BODY_BYTES: usize = 1 << 20;
/// Most labels per agent, and the longest label key or value.
pub const MAX_LABELS: usize = 32;
/// Longest label key or value.
pub const MAX_LABEL_LEN: usize = 256;

/// How to run a node.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// Where to listen (port 0 picks a free one).
    pub listen: SocketAddr,
    /// The data directory (operator token; the journal later).
    pub data_dir: PathBuf,
    /// The policy YAML text.
    pub policy_text: String,
    /// The operator token; `None` reads `DATA_DIR/operator.token`, creating it if absent.
    pub operator_token: Option<String>,
    /// Request body limit.
    pub max_body_bytes: usize,
    /// Connections served at once; more wait to be accepted.
    pub max_connections: usize,
    /// How long one request may take (event streams excepted).
    pub request_timeout_ms: u64,
    /// Retention: past this many bytes of journal, the node writes a snapshot and removes
    /// the segments before it.
    pub journal_bytes: u64,
    /// Journal segment size.
    pub segment_bytes: u64,
    /// The journal's sync mode.
    pub fsync: crate::journal::FsyncMode,
    /// True when `policy_text` was asked for (a `--policy` flag or the config file): it then
    /// replaces the policy the journal last recorded. The bundled default never does.
    pub policy_explicit: bool,
    /// Where to announce halts and approval requests.
    pub webhooks: Vec<crate::webhook::WebhookConfig>,
}

impl NodeConfig {
    /// A config with the defaults of `warden node`: the given address, data directory and
    /// policy text; operator token from `DATA_DIR/operator.token`; 1 MiB bodies; fsync
    /// always.
    pub fn new(listen: SocketAddr, data_dir: impl Into<PathBuf>, policy_text: String) -> Self {
        Self {
            listen,
            data_dir: data_dir.into(),
            policy_text,
            operator_token: None,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            request_timeout_ms: DEFAULT_REQUEST_TIMEOUT_MS,
            journal_bytes: DEFAULT_JOURNAL_BYTES,
            segment_bytes: DEFAULT_SEGMENT_BYTES,
            fsync: crate::journal::FsyncMode::Always,
            policy_explicit: false,
            webhooks: Vec::new(),
        }
    }
}

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The policy is invalid.
    #[error("{0}")]
    Policy(warden_actors::policy::PolicyErrors),
    /// The swarm could not start.
    #[error(transparent)]
    Swarm(#[from] SwarmError),
    /// The journal could not be opened or replayed.
    #[error("audit journal: {0}")]
    Journal(String),
    /// A file or socket failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The error.
        source: std::io::Error,
    },
}

struct NodeState {
    swarm: Swarm,
    operator_token: String,
    /// agent -> BLAKE3 digest of its token (tokens themselves are never stored).
    agent_tokens: DashMap<AgentId, String>,
    /// token -> agent, so telling a known caller from a stranger is one lookup, not a scan.
    token_owner: DashMap<String, AgentId>,
    labels: DashMap<AgentId, BTreeMap<String, String>>,
    policy_text: RwLock<String>,
    metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
    /// Set at shutdown: long-lived responses (event streams) end so the server can drain.
    shutting_down: tokio::sync::watch::Sender<bool>,
    request_timeout_ms: u64,
    data_dir: PathBuf,
}

/// A stream that ends when the node shuts down.
struct UntilShutdown<S> {
    inner: S,
    stop: std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>,
}

impl<S: futures_core::Stream + Unpin> futures_core::Stream for UntilShutdown<S> {
    type Item = S::Item;
    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<S::Item>> {
        if self.stop.as_mut().poll(cx).is_ready() {
            return std::task::Poll::Ready(None);
        }
        std::pin::Pin::new(&mut self.inner).poll_next(cx)
    }
}

/// A running node: its address, and how to stop it.
pub struct RunningNode {
    /// The address it listens on.
    pub addr: SocketAddr,
    /// Where the operator token came from (printed at start-up).
    pub operator_token_source: String,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
    swarm: Swarm,
    shutting_down: tokio::sync::watch::Sender<bool>,
    journal: Journal,
    webhooks: Option<crate::webhook::Webhooks>,
    retention: tokio::task::JoinHandle<()>,
    /// What recovery rebuilt from the journal at start.
    pub recovered: crate::wal::RecoveryReport,
    /// What opening the journal found (entries verified, torn tail cut).
    pub journal_open: crate::journal::OpenReport,
}

/// How long in-flight requests get to finish at shutdown.
pub const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(10);

impl RunningNode {
    /// Stops accepting, ends event streams, gives in-flight requests up to
    /// [`SHUTDOWN_GRACE`] to finish, then stops the swarm.
    pub async fn shutdown(self) {
        let _ = self.shutting_down.send(true);
        let _ = self.stop.send(());
        let mut task = self.task;
        if tokio::time::timeout(SHUTDOWN_GRACE, &mut task)
            .await
            .is_err()
        {
            task.abort();
        }
        self.retention.abort();
        if let Some(w) = self.webhooks {
            w.shutdown().await;
        }
        self.swarm.shutdown().await;
        // Everything acknowledged is already durable; this writes and syncs the rest (a
        // background sweep's timeouts, say) and releases the journal's lock.
        self.journal.shutdown().await;
    }
}

fn random_token() -> String {
    let mut bytes = [0u8; 24];
    getrandom::fill(&mut bytes).expect("the OS random source works");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Shortest operator token accepted.
pub const MIN_TOKEN_LEN: usize = 16;

fn operator_token(config: &NodeConfig) -> Result<(String, String), NodeError> {
    let bad = |what: String| NodeError::Io {
        what,
        source: std::io::Error::new(std::io::ErrorKind::InvalidInput, "refused"),
    };
    if let Some(t) = &config.operator_token {
        if t.len() < MIN_TOKEN_LEN {
            return Err(bad(format!(
                "the operator token is {} characters long; use at least {MIN_TOKEN_LEN}",
                t.len()
            )));
        }
        return Ok((t.clone(), "WARDEN_OPERATOR_TOKEN or the config file".into()));
    }
    let path = config.data_dir.join("operator.token");
    let io = |what: &str| {
        let what = format!("{what} {}", path.display());
        move |source| NodeError::Io { what, source }
    };
    match std::fs::read_to_string(&path) {
        Ok(t) => {
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                let mode = std::fs::metadata(&path)
                    .map_err(io("reading"))?
                    .permissions()
                    .mode();
                if mode & 0o077 != 0 {
                    return Err(bad(format!(
                        "{} is readable by other users (mode {:o}); run chmod 600 on it",
                        path.display(),
                        mode & 0o777
                    )));
                }
            }
            let t = t.trim().to_string();
            if t.len() < MIN_TOKEN_LEN {
                return Err(bad(format!(
                    "{} holds a token shorter than {MIN_TOKEN_LEN} characters; remove the file to get a new one",
                    path.display()
                )));
            }
            Ok((t, path.display().to_string()))
        }
        // Only a missing file is created; any other read failure is an error, never a
        // silent replacement of the operator's token.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            #[cfg(unix)]
            {
                use std::os::unix::fs::DirBuilderExt;
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(&config.data_dir)
                    .map_err(io("creating the data directory for"))?;
            }
            #[cfg(not(unix))]
            std::fs::create_dir_all(&config.data_dir)
                .map_err(io("creating the data directory for"))?;
            let token = random_token();
            use std::io::Write;
            #[cfg(unix)]
            let mut file = {
                use std::os::unix::fs::OpenOptionsExt;
                std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&path)
                    .map_err(io("creating"))?
            };
            #[cfg(not(unix))]
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
                .map_err(io("creating"))?;
            file.write_all(token.as_bytes()).map_err(io("writing"))?;
            file.sync_all().map_err(io("writing"))?;
            Ok((token, format!("{} (new)", path.display())))
        }
        Err(e) => Err(io("reading")(e)),
    }
}

/// Retention: once the journal holds more than `limit` bytes, write a snapshot (the whole
/// state, in a new segment), wait until it is durable, and remove every segment before it.
/// The next compaction waits until the journal has grown by half the limit again, so a
/// snapshot larger than the limit does not loop.
async fn retain(swarm: Swarm, journal: Journal, limit: u64) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut floor = 0u64;
    loop {
        tick.tick().await;
        let size = journal.size_bytes();
        if size <= limit.max(floor) {
            continue;
        }
        // Locking every agent takes a while: off the async workers.
        let s = swarm.clone();
        let begin = match tokio::task::spawn_blocking(move || s.write_snapshot()).await {
            Ok(Ok(begin)) => begin,
            Ok(Err(e)) => {
                tracing_line(&format!(
                    "journal retention: {e}; next try after more growth"
                ));
                floor = size + limit / 2;
                continue;
            }
            Err(_) => return,
        };
        if swarm.durable().await.is_err() {
            return; // the journal failed: the node is failing closed already
        }
        match journal.remove_segments_before(begin) {
            Ok((segments, bytes)) => {
                metrics::counter!("warden_audit_segments_removed_total").increment(segments as u64);
                let left = journal.size_bytes();
                floor = left + limit / 2;
                tracing_line(&format!(
                    "journal retention: snapshot at entry {begin}; removed {segments} segment(s), {bytes} bytes; {left} bytes kept"
                ));
            }
            Err(e) => {
                tracing_line(&format!(
                    "journal retention: removing old segments failed: {e}"
                ));
                floor = size + limit / 2;
            }
        }
    }
}

/// One line on standard error (the node has no logger yet).
fn tracing_line(line: &str) {
    eprintln!("warden node: {line}");
}

/// The hex BLAKE3 digest of a token: the node keeps and journals digests, never tokens.
fn token_digest(token: &str) -> String {
    blake3::hash(token.as_bytes()).to_hex().to_string()
}

/// Starts a node on the current tokio runtime: opens and verifies the journal, rebuilds the
/// swarm from it, then serves.
pub async fn start(config: NodeConfig) -> Result<RunningNode, NodeError> {
    let configured = PolicySet::parse(&config.policy_text).map_err(NodeError::Policy)?;
    let (operator_token, operator_token_source) = operator_token(&config)?;
    let metrics = metrics_exporter_prometheus::PrometheusBuilder::new()
        .set_buckets_for_metric(
            metrics_exporter_prometheus::Matcher::Suffix("duration_seconds".into()),
            &DURATION_BUCKETS,
        )
        .ok()
        .and_then(|b| b.install_recorder().ok());

    let mut jconfig = crate::journal::JournalConfig::new(&config.data_dir);
    jconfig.fsync = config.fsync;
    jconfig.segment_bytes = config.segment_bytes;
    let mut entries = Vec::new();
    let (journal, journal_open) = Journal::open(jconfig, |e| entries.push(e.clone()))
        .map_err(|e| NodeError::Journal(e.to_string()))?;
    // The policy to run: the one asked for, else the one the journal last recorded, else
    // the configured default.
    let mut last_journaled = None;
    for e in entries.iter().rev() {
        match crate::wal::Record::parse(e) {
            Ok(crate::wal::Record::Policy(p)) => {
                last_journaled = Some(p.text);
                break;
            }
            // A snapshot repeats the policy in force (its policy_change may be gone).
            Ok(crate::wal::Record::Snapshot(item)) => {
                if let crate::wal::SnapshotItem::Policy(p) = *item {
                    last_journaled = Some(p.text);
                    break;
                }
            }
            _ => {}
        }
    }
    let (policy, policy_text) = match (&last_journaled, config.policy_explicit) {
        (Some(text), false) => (
            PolicySet::parse(text).map_err(NodeError::Policy)?,
            text.clone(),
        ),
        _ => (configured, config.policy_text.clone()),
    };
    let clock = Arc::new(crate::wal::RecoveryClock::new());
    let swarm = Swarm::builder()
        .clock(Arc::clone(&clock) as Arc<dyn warden_actors::Clock>)
        .policy_set(policy)
        .build()
        .await?;
    let recovered = swarm
        .recover(&entries, Some(&clock))
        .await
        .map_err(|e| NodeError::Journal(e.to_string()))?;
    drop(entries);
    match &recovered.policy {
        // A fresh journal: record the policy in force.
        None => swarm.attach_journal(journal.clone(), Some(&policy_text))?,
        Some(p) => {
            swarm.attach_journal(journal.clone(), None)?;
            if p.text != policy_text {
                // The policy asked for differs from the journal's: activate (and journal) it,
                // checked against the recovered spend like any reload.
                swarm.reload_policy(&policy_text).map_err(|e| match e {
                    SwarmError::Policy(errors) => NodeError::Policy(errors),
                    other => NodeError::Swarm(other),
                })?;
            }
        }
    }
    swarm
        .durable()
        .await
        .map_err(|e| NodeError::Journal(e.to_string()))?;
    let retention = tokio::spawn(retain(swarm.clone(), journal.clone(), config.journal_bytes));
    let webhooks = (!config.webhooks.is_empty())
        .then(|| crate::webhook::start(config.webhooks.clone(), swarm.events()));
    let state = Arc::new(NodeState {
        swarm: swarm.clone(),
        operator_token,
        agent_tokens: DashMap::new(),
        token_owner: DashMap::new(),
        labels: DashMap::new(),
        policy_text: RwLock::new(policy_text),
        metrics,
        shutting_down: tokio::sync::watch::channel(false).0,
        request_timeout_ms: config.request_timeout_ms,
        data_dir: config.data_dir.clone(),
    });
    for (agent, meta) in &recovered.meta {
        if let Some(digest) = meta["token_blake3"].as_str() {
            state.agent_tokens.insert(agent.clone(), digest.to_string());
            state.token_owner.insert(digest.to_string(), agent.clone());
        }
        if let Ok(labels) =
            serde_json::from_value::<BTreeMap<String, String>>(meta["labels"].clone())
        {
            state.labels.insert(agent.clone(), labels);
        }
    }
    let shutting_down = state.shutting_down.clone();
    let app = router(state, config.max_body_bytes);
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| NodeError::Io {
            what: format!("listening on {}", config.listen),
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| NodeError::Io {
        what: "reading the bound address".into(),
        source,
    })?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let listener = Limited {
        inner: listener,
        permits: Arc::new(tokio::sync::Semaphore::new(config.max_connections.max(1))),
        // Longer than any request may take, so only a connection with nothing going on ends.
        idle: std::time::Duration::from_millis(config.request_timeout_ms.saturating_mul(2)),
    };
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = stopped.await;
            })
            .await;
    });
    Ok(RunningNode {
        addr,
        operator_token_source,
        stop,
        task,
        swarm,
        shutting_down,
        journal,
        webhooks,
        retention,
        recovered,
        journal_open,
    })
}

fn router(state: Arc<NodeState>, max_body_bytes: usize) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/healthz", get(|| async { Json(json!({"status": "ok"})) }))
        .route(
            "/readyz",
            get(|State(state): State<Arc<NodeState>>| async move {
                // Not ready once the journal has failed: the node then acknowledges nothing.
                match state.swarm.journal_failure() {
                    None => Json(json!({"status": "ready"})).into_response(),
                    Some(why) => {
                        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "journal_unavailable", why)
                            .into_response()
                    }
                }
            }),
        )
        .route("/metrics", get(metrics))
        .route("/v1/agents", post(register).get(list_agents))
        .route("/v1/agents/{id}", get(get_agent))
        .route("/v1/agents/{id}/steps", post(step))
        .route("/v1/agents/{id}/steps/{step}/outcome", post(outcome))
        .route("/v1/agents/{id}/halt", post(halt))
        .route("/v1/agents/{id}/resume", post(resume))
        .route("/v1/agents/{id}/heartbeat", post(heartbeat))
        .route("/v1/pools", get(pools))
        .route("/v1/pools/{*path}", get(pool))
        .route("/v1/approvals", get(approvals))
        .route("/v1/approvals/{*id}", post(answer))
        .route("/v1/policy", get(get_policy).put(put_policy))
        .route("/v1/events", get(events))
        .route("/v1/audit", get(audit))
        .route("/v1/openapi.json", get(openapi))
        .fallback(|| async {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                "no such endpoint; see DESIGN.md's HTTP API",
            )
        })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "this endpoint does not take that method; see /v1/openapi.json",
            )
        })
        .layer(axum::middleware::map_response(json_errors))
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(&state),
            deadline,
        ))
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .with_state(state)
}

/// How long one request may take by default, reading its body included (event streams
/// excepted).
pub const DEFAULT_REQUEST_TIMEOUT_MS: u64 = 30_000;

/// Ends a request that takes longer than the request timeout (a client trickling its body,
/// say) with 408. A step whose decision was made but not yet answered is like one whose
/// client went away: journaled, but never acknowledged.
async fn deadline(
    State(state): State<Arc<NodeState>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    if req.uri().path() == "/v1/events" {
        return next.run(req).await;
    }
    let limit = std::time::Duration::from_millis(state.request_timeout_ms);
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(resp) => resp,
        Err(_) => ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "timeout",
            format!(
                "the request took longer than {} ms; send the body at once",
                state.request_timeout_ms
            ),
        )
        .into_response(),
    }
}

/// Most connections served at once by default.
pub const DEFAULT_MAX_CONNECTIONS: usize = 4_096;

/// A listener that holds at most `permits` connections open: at the limit it stops
/// accepting (new connections wait in the kernel's backlog) until one closes. Sets
/// `TCP_NODELAY` on every connection (answers are small and latency matters), and ends a
/// connection that neither reads nor writes for `idle` (so idle clients cannot hold the
/// slots; event streams write a keep-alive every 15 s).
struct Limited {
    inner: tokio::net::TcpListener,
    permits: Arc<tokio::sync::Semaphore>,
    idle: std::time::Duration,
}

/// A connection holding its permit.
struct LimitedIo {
    stream: tokio::net::TcpStream,
    _permit: tokio::sync::OwnedSemaphorePermit,
    idle: std::time::Duration,
    timer: std::pin::Pin<Box<tokio::time::Sleep>>,
}

impl LimitedIo {
    fn touch(&mut self) {
        let at = tokio::time::Instant::now() + self.idle;
        self.timer.as_mut().reset(at);
    }
}

impl axum::serve::Listener for Limited {
    type Io = LimitedIo;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        let permit = Arc::clone(&self.permits)
            .acquire_owned()
            .await
            .expect("the semaphore is never closed");
        loop {
            match self.inner.accept().await {
                Ok((stream, addr)) => {
                    let _ = stream.set_nodelay(true);
                    return (
                        LimitedIo {
                            stream,
                            _permit: permit,
                            idle: self.idle,
                            timer: Box::pin(tokio::time::sleep(self.idle)),
                        },
                        addr,
                    );
                }
                // Out of file descriptors and the like: wait a little, as axum does.
                Err(_) => tokio::time::sleep(std::time::Duration::from_millis(50)).await,
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.inner.local_addr()
    }
}

impl tokio::io::AsyncRead for LimitedIo {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match std::pin::Pin::new(&mut self.stream).poll_read(cx, buf) {
            std::task::Poll::Ready(r) => {
                self.touch();
                std::task::Poll::Ready(r)
            }
            // Idle too long: report end of stream, and the server closes the connection.
            std::task::Poll::Pending
                if std::future::Future::poll(self.timer.as_mut(), cx).is_ready() =>
            {
                std::task::Poll::Ready(Ok(()))
            }
            std::task::Poll::Pending => std::task::Poll::Pending,
        }
    }
}

impl tokio::io::AsyncWrite for LimitedIo {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let r = std::pin::Pin::new(&mut self.stream).poll_write(cx, buf);
        if r.is_ready() {
            self.touch();
        }
        r
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let r = std::pin::Pin::new(&mut self.stream).poll_write_vectored(cx, bufs);
        if r.is_ready() {
            self.touch();
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

/// The page's own rules for the browser: it loads nothing from elsewhere, talks only to this
/// node, and may not be framed (its buttons answer approvals).
const INDEX_CSP: &str =
    "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; \
    connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

async fn index() -> Response {
    use axum::http::header;
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
            (header::CONTENT_SECURITY_POLICY, INDEX_CSP),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "no-referrer"),
        ],
        INDEX_HTML,
    )
        .into_response()
}

async fn openapi(
    State(state): State<Arc<NodeState>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    require_operator(&state, &headers)?;
    Ok((
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        OPENAPI,
    )
        .into_response())
}

/// Turns any error the framework answers in plain text (a bad path parameter or query string,
/// a body that is not UTF-8, a body over the limit read as text) into the JSON error shape.
async fn json_errors(resp: Response) -> Response {
    let status = resp.status();
    let is_json = resp
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return resp;
    }
    let (parts, body) = resp.into_parts();
    let text = axum::body::to_bytes(body, 4096)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_string())
        .unwrap_or_default();
    let code = match status {
        StatusCode::PAYLOAD_TOO_LARGE => "body_too_large",
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        s if s.is_server_error() => "internal",
        _ => "bad_request",
    };
    let message = if text.is_empty() {
        status.canonical_reason().unwrap_or("error").to_string()
    } else {
        text
    };
    let mut out = ApiError::new(status, code, message).into_response();
    if let Some(allow) = parts.headers.get(axum::http::header::ALLOW) {
        out.headers_mut()
            .insert(axum::http::header::ALLOW, allow.clone());
    }
    out
}

/// A JSON error: `{"error": {"code", "message"}}`.
struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    details: Option<Value>,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            details: None,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = json!({"error": {"code": self.code, "message": self.message}});
        if let Some(d) = self.details {
            body["error"]["details"] = d;
        }
        (self.status, Json(body)).into_response()
    }
}

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> Self {
        let status = r.status();
        let code = match status {
            StatusCode::PAYLOAD_TOO_LARGE => "body_too_large",
            StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
            _ => "bad_json",
        };
        let status = if status == StatusCode::UNPROCESSABLE_ENTITY {
            StatusCode::BAD_REQUEST
        } else {
            status
        };
        ApiError::new(status, code, r.body_text())
    }
}

impl From<SwarmError> for ApiError {
    fn from(e: SwarmError) -> Self {
        let (status, code) = match &e {
            SwarmError::UnknownAgent(_) => (StatusCode::NOT_FOUND, "unknown_agent"),
            SwarmError::DuplicateAgent(_) => (StatusCode::CONFLICT, "duplicate_agent"),
            SwarmError::UnknownTeam { .. } => (StatusCode::BAD_REQUEST, "unknown_pool"),
            SwarmError::NotHalted(_) => (StatusCode::CONFLICT, "not_halted"),
            SwarmError::Approval(_) => (StatusCode::NOT_FOUND, "unknown_approval"),
            SwarmError::TeamHalted(_) => (StatusCode::CONFLICT, "pool_halted"),
            SwarmError::TooManyAgents(_) => (StatusCode::SERVICE_UNAVAILABLE, "too_many_agents"),
            SwarmError::Policy(_) => (StatusCode::BAD_REQUEST, "invalid_policy"),
            SwarmError::Journal(_) => (StatusCode::SERVICE_UNAVAILABLE, "journal_unavailable"),
            _ => (StatusCode::BAD_REQUEST, "bad_request"),
        };
        ApiError::new(status, code, e.to_string())
    }
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
}

/// Constant-time comparison, so a token cannot be guessed byte by byte from timings.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

fn unauthorized() -> ApiError {
    ApiError::new(
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        "missing or wrong token: send Authorization: Bearer <token>",
    )
}

fn require_operator(state: &NodeState, headers: &HeaderMap) -> Result<(), ApiError> {
    match bearer(headers) {
        Some(t) if same(t, &state.operator_token) => Ok(()),
        _ => Err(unauthorized()),
    }
}

fn agent_id(raw: &str) -> Result<AgentId, ApiError> {
    AgentId::new(raw)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_agent_id", e.to_string()))
}

/// The agent itself, with its own token. `operator_too` also admits the operator.
fn require_agent(
    state: &NodeState,
    headers: &HeaderMap,
    id: &AgentId,
    operator_too: bool,
) -> Result<(), ApiError> {
    let token = bearer(headers).ok_or_else(unauthorized)?;
    if operator_too && same(token, &state.operator_token) {
        return Ok(());
    }
    let digest = token_digest(token);
    match state.agent_tokens.get(id) {
        Some(t) if same(&digest, t.value()) => Ok(()),
        Some(_) | None => {
            // Unknown tokens learn nothing (not even whether the agent exists); known callers
            // are told whether the agent is missing or simply not theirs.
            let operator = same(token, &state.operator_token);
            if !operator && !state.token_owner.contains_key(&digest) {
                Err(unauthorized())
            } else if operator && state.swarm.agent(id).is_none() {
                Err(ApiError::new(
                    StatusCode::NOT_FOUND,
                    "unknown_agent",
                    format!("no agent {id}"),
                ))
            } else {
                Err(ApiError::new(
                    StatusCode::FORBIDDEN,
                    "forbidden",
                    format!("this token may not act as agent {id}"),
                ))
            }
        }
    }
}

/// Sets the gauges that describe the swarm now (agents, budgets, approvals) just before a
/// scrape renders them: one pass over pools and agents per scrape, nothing on the hot path.
fn refresh_gauges(swarm: &Swarm) {
    for (pool, running, halted) in swarm.agent_counts() {
        metrics::gauge!("warden_agents", "state" => "running", "pool" => pool.clone())
            .set(running as f64);
        metrics::gauge!("warden_agents", "state" => "halted", "pool" => pool).set(halted as f64);
    }
    for p in swarm.pools() {
        let pool = p.name.to_string();
        for dim in LedgerDim::ALL {
            let d = dim.key();
            metrics::counter!("warden_budget_spent_total", "pool" => pool.clone(), "dimension" => d)
                .absolute(p.spent.get(dim));
            if let Some(limit) = p.limits.get(dim) {
                metrics::gauge!("warden_budget_limit", "pool" => pool.clone(), "dimension" => d)
                    .set(limit as f64);
                metrics::gauge!("warden_budget_remaining", "pool" => pool.clone(), "dimension" => d)
                    .set(p.remaining(dim).unwrap_or(0) as f64);
            }
        }
    }
    metrics::gauge!("warden_approvals_pending").set(swarm.approvals().len() as f64);
}

async fn metrics(State(state): State<Arc<NodeState>>) -> Response {
    refresh_gauges(&state.swarm);
    match &state.metrics {
        Some(h) => (
            [(
                axum::http::header::CONTENT_TYPE,
                "text/plain; version=0.0.4",
            )],
            h.render(),
        )
            .into_response(),
        None => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "no_metrics",
            "another metrics recorder is installed in this process",
        )
        .into_response(),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RegisterBody {
    id: Option<String>,
    pool: Option<String>,
    budgets: Option<ApiBudgets>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    heartbeat_timeout: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ApiBudgets {
    steps: Option<u64>,
    tokens: Option<u64>,
    cost_usd: Option<f64>,
    risk: Option<f64>,
    wall_time: Option<String>,
    failures: Option<u32>,
    exploration: Option<u32>,
}

fn duration(field: &str, text: &str) -> Result<u64, ApiError> {
    warden_actors::policy::source::parse_duration_ms(text).ok_or_else(|| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_duration",
            format!("{field} = {text:?} is not a duration; write e.g. 30s, 10m, 1h"),
        )
    })
}

fn micros(field: &str, v: f64) -> Result<u64, ApiError> {
    warden_actors::step::usd_to_micro(v).map_err(|_| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_amount",
            format!("{field} = {v} must be a number from 0 to 10^9"),
        )
    })
}

async fn register(
    State(state): State<Arc<NodeState>>,
    headers: HeaderMap,
    body: Result<Json<RegisterBody>, JsonRejection>,
) -> Result<Response, ApiError> {
    require_operator(&state, &headers)?;
    let Json(body) = body?;
    let id = match &body.id {
        Some(raw) => agent_id(raw)?,
        None => AgentId::new(format!("agent-{}", &random_token()[..12])).expect("valid"),
    };
    if body.labels.len() > MAX_LABELS
        || body
            .labels
            .iter()
            .any(|(k, v)| k.len() > MAX_LABEL_LEN || v.len() > MAX_LABEL_LEN)
    {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_labels",
            format!("at most {MAX_LABELS} labels of at most {MAX_LABEL_LEN} characters each"),
        ));
    }
    let mut spec = AgentSpec::new(id.clone());
    if let Some(pool) = &body.pool {
        spec = spec.team(pool.clone());
    }
    if let Some(b) = &body.budgets {
        let mut budgets = state.swarm.policy_defaults().budgets;
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
        spec = spec.budgets(budgets);
    }
    if let Some(h) = &body.heartbeat_timeout {
        spec = spec.heartbeat_timeout_ms(duration("heartbeat_timeout", h)?);
    }
    // Spawning and issuing the token run as their own task: a client that disconnects
    // mid-request cancels only its wait, never a half-done registration.
    let task_state = Arc::clone(&state);
    let labels = body.labels;
    let token = random_token();
    let digest = token_digest(&token);
    // The journal keeps the token's digest and the labels with the registration, so both
    // survive a restart.
    spec = spec.meta(json!({ "token_blake3": digest, "labels": labels }));
    let done = tokio::spawn(async move {
        let handle = task_state.swarm.spawn_agent(spec).await?;
        task_state.agent_tokens.insert(id.clone(), digest.clone());
        task_state.token_owner.insert(digest, id.clone());
        task_state.labels.insert(id.clone(), labels);
        Ok::<_, SwarmError>((handle, token))
    })
    .await
    .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?;
    let (handle, token) = done?;
    let mut agent = agent_json(&state, &handle.snapshot(), &handle.team());
    agent["token"] = Value::String(token);
    Ok((StatusCode::CREATED, Json(agent)).into_response())
}

/// One JSON key per dimension that has a value (`LedgerDim::key` names them).
fn per_dim(value: impl Fn(LedgerDim) -> Option<u64>) -> Value {
    let map = LedgerDim::ALL
        .into_iter()
        .filter_map(|dim| value(dim).map(|v| (dim.key().to_string(), Value::from(v))))
        .collect();
    Value::Object(map)
}

fn amounts_json(a: &warden_actors::Amounts) -> Value {
    per_dim(|d| Some(a.get(d)))
}

fn limits_json(l: &warden_actors::Limits) -> Value {
    per_dim(|d| l.get(d))
}

fn agent_json(state: &NodeState, s: &warden_actors::AgentSnapshot, pool: &str) -> Value {
    json!({
        "id": s.id,
        "pool": pool,
        "state": s.state,
        "halt": s.halt,
        "steps_decided": s.steps_decided,
        "steps_allowed": s.steps_allowed,
        "open_steps": s.open_steps,
        "pending_approvals": s.pending_approvals,
        "consecutive_failures": s.consecutive_failures,
        "limits": limits_json(&s.account.limits),
        "spent": amounts_json(&s.account.spent),
        "reserved": amounts_json(&s.account.reserved),
        // Of the agent's own budget (pools above it may have less: see a decision's
        // `remaining`, the minimum over the path).
        "remaining": per_dim(|d| s.account.remaining(d)),
        "labels": state.labels.get(&s.id).map(|l| l.clone()).unwrap_or_default(),
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    state: Option<warden_actors::AgentState>,
    pool: Option<String>,
    /// Page size (default 1,000, at most 10,000).
    limit: Option<usize>,
    /// Start after this agent id (the previous page's `next`).
    after: Option<String>,
}

/// Default page size for lists.
pub const DEFAULT_PAGE: usize = 1_000;
/// Largest page size for lists.
pub const MAX_PAGE: usize = 10_000;

async fn list_agents(
    State(state): State<Arc<NodeState>>,
    headers: HeaderMap,
    q: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    require_operator(&state, &headers)?;
    let Query(q) = q.map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_query",
            format!(
                "{}; state is running or halted, pool a pool path",
                e.body_text()
            ),
        )
    })?;
    let limit = q.limit.unwrap_or(DEFAULT_PAGE).clamp(1, MAX_PAGE);
    let mut out = Vec::new();
    let mut next = None;
    for id in state.swarm.agent_ids() {
        if q.after.as_deref().is_some_and(|after| id.as_str() <= after) {
            continue;
        }
        if out.len() == limit {
            next = out
                .last()
                .and_then(|a: &Value| a["id"].as_str())
                .map(str::to_string);
            break;
        }
        let Some(h) = state.swarm.agent(&id) else {
            continue;
        };
        let snap = h.snapshot();
        let pool = h.team();
        if q.state.is_some_and(|s| s != snap.state) {
            continue;
        }
        if q.pool
            .as_deref()
            .is_some_and(|p| pool != p && !pool.starts_with(&format!("{p}/")))
        {
            continue;
        }
        out.push(agent_json(&state, &snap, &pool));
    }
    // `next`: pass it as `after` for the following page; null on the last page.
    Ok(Json(json!({ "agents": out, "next": next })))
}

async fn get_agent(
    State(state): State<Arc<NodeState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id = agent_id(&id)?;
    require_agent(&state, &headers, &id, true)?;
    let h = state
        .swarm
        .agent(&id)
        .ok_or_else(|| SwarmError::UnknownAgent(id.clone()))?;
    Ok(Json(agent_json(&state, &h.snapshot(), &h.team())))
}

async fn step(
    State(state): State<Arc<NodeState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Result<Json<Value>, JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    let id = agent_id(&id)?;
    require_agent(&state, &headers, &id, false)?;
    let Json(raw) = body?;
    let step: Step = serde_json::from_value(raw)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_step", e.to_string()))?;
    let h = state
        .swarm
        .agent(&id)
        .ok_or_else(|| SwarmError::UnknownAgent(id.clone()))?;
    let decision = h.step(step).await.map_err(agent_error)?;
    Ok(Json(serde_json::to_value(&decision).unwrap_or(Value::Null)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OutcomeBody {
    status: OutcomeStatus,
    #[serde(default)]
    cost: Option<OutcomeCost>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OutcomeCost {
    #[serde(default)]
    tokens: u64,
    cost_usd: Option<f64>,
}

async fn outcome(
    State(state): State<Arc<NodeState>>,
    headers: HeaderMap,
    Path((id, step)): Path<(String, String)>,
    body: Result<Json<OutcomeBody>, JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    let id = agent_id(&id)?;
    require_agent(&state, &headers, &id, false)?;
    let step: StepId = step.parse().map_err(|e: warden_actors::IdError| {
        ApiError::new(StatusCode::BAD_REQUEST, "bad_step_id", e.to_string())
    })?;
    let Json(body) = body?;
    let mut outcome = match body.status {
        OutcomeStatus::Success => Outcome::success(),
        OutcomeStatus::Failure => Outcome::failure(),
    };
    if let Some(c) = body.cost {
        let usd = match c.cost_usd {
            Some(v) => micros("cost.cost_usd", v)?,
            None => 0,
        };
        outcome = outcome.with_actual(Cost::new(c.tokens, usd));
    }
    let h = state
        .swarm
        .agent(&id)
        .ok_or_else(|| SwarmError::UnknownAgent(id.clone()))?;
    match h.outcome(step, outcome).await {
        Ok(report) => Ok(Json(json!({
            "step": step,
            "charged": amounts_json(&report.settlement.charged),
            "refunded": amounts_json(&report.settlement.refunded),
            "overrun": amounts_json(&report.settlement.overrun),
            "halt": report.halt,
        }))),
        Err(crate::swarm::AgentError::Settle(e)) => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_step",
            e.to_string(),
        )),
        Err(e) => Err(agent_error(e)),
    }
}

fn agent_error(e: crate::swarm::AgentError) -> ApiError {
    let code = match e {
        crate::swarm::AgentError::Journal(_) => "journal_unavailable",
        _ => "agent_unavailable",
    };
    ApiError::new(StatusCode::SERVICE_UNAVAILABLE, code, e.to_string())
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ReasonBody {
    reason: Option<String>,
    by: Option<String>,
}

/// Longest `reason` or `by` accepted (they go into the journal and every event).
pub const MAX_TEXT_LEN: usize = 4_096;

fn check_texts(texts: &[(&str, &Option<String>)]) -> Result<(), ApiError> {
    for (field, t) in texts {
        if t.as_ref().is_some_and(|t| t.len() > MAX_TEXT_LEN) {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "text_too_long",
                format!("{field} is longer than {MAX_TEXT_LEN} bytes; shorten it"),
            ));
        }
    }
    Ok(())
}

async fn halt(
    State(state): State<Arc<NodeState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Result<Json<ReasonBody>, JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    require_operator(&state, &headers)?;
    let id = agent_id(&id)?;
    let Json(body) = body?;
    check_texts(&[("reason", &body.reason), ("by", &body.by)])?;
    let reason = body
        .reason
        .unwrap_or_else(|| "halted by an operator".into());
    // Who halted goes into the record (and so the journal and the events).
    let reason = match &body.by {
        Some(by) => format!("{reason} (by {by})"),
        None => reason,
    };
    let halted = state.swarm.halt(id, reason).await?;
    state.swarm.durable().await?;
    Ok(Json(json!({ "halted": halted })))
}

async fn resume(
    State(state): State<Arc<NodeState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Result<Json<ReasonBody>, JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    require_operator(&state, &headers)?;
    let id = agent_id(&id)?;
    let Json(body) = body?;
    check_texts(&[("reason", &body.reason), ("by", &body.by)])?;
    let lifted = state
        .swarm
        .resume(&id, body.by.unwrap_or_else(|| "operator".into()))
        .await?;
    Ok(Json(json!({ "resumed": id, "lifted": lifted })))
}

async fn heartbeat(
    State(state): State<Arc<NodeState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let id = agent_id(&id)?;
    require_agent(&state, &headers, &id, false)?;
    let h = state
        .swarm
        .agent(&id)
        .ok_or_else(|| SwarmError::UnknownAgent(id.clone()))?;
    h.heartbeat();
    Ok(StatusCode::NO_CONTENT)
}

fn pool_json(p: &warden_actors::AccountSnapshot) -> Value {
    let remaining = per_dim(|d| p.remaining(d));
    json!({
        "path": p.name,
        "limits": limits_json(&p.limits),
        "spent": amounts_json(&p.spent),
        "reserved": amounts_json(&p.reserved),
        "remaining": remaining,
    })
}

async fn pools(
    State(state): State<Arc<NodeState>>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    require_operator(&state, &headers)?;
    let pools: Vec<Value> = state.swarm.pools().iter().map(pool_json).collect();
    Ok(Json(json!({ "pools": pools })))
}

async fn pool(
    State(state): State<Arc<NodeState>>,
    headers: HeaderMap,
    Path(path): Path<String>,
) -> Result<Json<Value>, ApiError> {
    require_operator(&state, &headers)?;
    let p = state.swarm.pool(&path).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_pool",
            format!("no pool {path:?}"),
        )
    })?;
    Ok(Json(pool_json(&p)))
}

#[derive(Serialize)]
struct ApprovalView {
    id: String,
    agent: AgentId,
    step: StepId,
    tool: String,
    args: Value,
    rule: String,
    reason: String,
    requested_at_ms: u64,
    expires_at_ms: u64,
}

async fn approvals(
    State(state): State<Arc<NodeState>>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    require_operator(&state, &headers)?;
    let list: Vec<ApprovalView> = state
        .swarm
        .approvals()
        .into_iter()
        .map(|p| ApprovalView {
            id: p.id,
            agent: p.agent,
            step: p.step_id,
            tool: p.step.tool().to_string(),
            args: p.step.args().clone(),
            rule: p.rule.to_string(),
            reason: p.reason,
            requested_at_ms: p.requested_at_ms,
            expires_at_ms: p.expires_at_ms,
        })
        .take(MAX_PAGE)
        .collect();
    Ok(Json(json!({ "approvals": list })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AnswerBody {
    decision: String,
    reason: Option<String>,
    by: Option<String>,
}

async fn answer(
    State(state): State<Arc<NodeState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Result<Json<AnswerBody>, JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    require_operator(&state, &headers)?;
    let Json(body) = body?;
    check_texts(&[("reason", &body.reason), ("by", &body.by)])?;
    let by = body.by.unwrap_or_else(|| "operator".into());
    let answer = match body.decision.as_str() {
        "approve" => ApprovalAnswer::Approve { by },
        "deny" => ApprovalAnswer::Deny {
            by,
            reason: body
                .reason
                .unwrap_or_else(|| "denied by an operator".into()),
        },
        other => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_decision",
                format!("decision {other:?} is not approve or deny"),
            ))
        }
    };
    let decision = state.swarm.answer_approval(&id, answer)?;
    state.swarm.durable().await?;
    Ok(Json(serde_json::to_value(&decision).unwrap_or(Value::Null)))
}

/// Server-sent events: every decision, halt, resume, approval and restart, as JSON, with the
/// event type as the SSE event name. A subscriber that falls more than the bus capacity behind
/// gets a `lagged` event with the number it missed, then continues.
async fn events(
    State(state): State<Arc<NodeState>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    require_operator(&state, &headers)?;
    use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
    use tokio_stream::StreamExt;
    let stream = state.swarm.events().map(|item| {
        let event = match item {
            Ok(e) => {
                let data = serde_json::to_value(&e).unwrap_or(Value::Null);
                let name = data["type"].as_str().unwrap_or("event").to_string();
                SseEvent::default().event(name).data(data.to_string())
            }
            Err(warden_actors::EventError::Lagged(n)) => SseEvent::default()
                .event("lagged")
                .data(json!({"missed": n}).to_string()),
        };
        Ok::<_, std::convert::Infallible>(event)
    });
    let mut rx = state.shutting_down.subscribe();
    let stream = UntilShutdown {
        inner: stream,
        stop: Box::pin(async move {
            let _ = rx.wait_for(|down| *down).await;
        }),
    };
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AuditQuery {
    agent: Option<String>,
    /// Comma-separated entry kinds.
    kind: Option<String>,
    decision: Option<warden_actors::Verdict>,
    /// Unix ms, inclusive.
    since: Option<u64>,
    /// Unix ms, exclusive.
    until: Option<u64>,
    /// Entries after this sequence number (the previous page's `next`).
    after: Option<u64>,
    /// Page size (default 1,000, at most 10,000).
    limit: Option<usize>,
}

/// `GET /v1/audit`: journal entries as `warden audit query` prints them, filtered, in pages
/// (`after` = the previous page's `next`). Reads the journal from disk, verifying the chain
/// as it goes (bounded by retention), on a blocking thread.
async fn audit(
    State(state): State<Arc<NodeState>>,
    headers: HeaderMap,
    q: Result<Query<AuditQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    require_operator(&state, &headers)?;
    let Query(q) = q.map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_query",
            format!(
                "{}; parameters: agent, kind (comma-separated), decision, since, until (Unix ms), after, limit",
                e.body_text()
            ),
        )
    })?;
    let mut filter = crate::audit::Filter {
        agent: q.agent.as_deref().map(agent_id).transpose()?,
        decision: q.decision,
        since_ms: q.since,
        until_ms: q.until,
        ..Default::default()
    };
    for k in q.kind.iter().flat_map(|k| k.split(',')) {
        let kind: crate::journal::EntryKind = serde_json::from_value(Value::String(k.trim().into()))
            .map_err(|_| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "bad_query",
                    format!("kind {k:?}: expected agent_registered, decision, settlement, halt, resume, approval, policy_change, note or snapshot"),
                )
            })?;
        filter.kinds.push(kind);
    }
    let limit = q.limit.unwrap_or(DEFAULT_PAGE).clamp(1, MAX_PAGE);
    let after = q.after.unwrap_or(0);
    let dir = state.data_dir.clone();
    let page = tokio::task::spawn_blocking(move || {
        let mut out = Vec::new();
        let mut more = false;
        let r = crate::audit::query(&dir, &filter, |v| {
            if v["seq"].as_u64().unwrap_or(0) <= after {
                return;
            }
            if out.len() < limit {
                out.push(v);
            } else {
                more = true;
            }
        });
        r.map(|_| (out, more))
    })
    .await
    .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?
    .map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "journal_unreadable",
            e.to_string(),
        )
    })?;
    let (entries, more) = page;
    let next = more
        .then(|| entries.last().and_then(|v| v["seq"].as_u64()))
        .flatten();
    Ok(Json(json!({ "entries": entries, "next": next })))
}

async fn get_policy(
    State(state): State<Arc<NodeState>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    require_operator(&state, &headers)?;
    let version = state.swarm.policy_version().unwrap_or(0).to_string();
    Ok((
        [
            (
                axum::http::header::CONTENT_TYPE,
                "application/yaml".to_string(),
            ),
            (
                axum::http::HeaderName::from_static("x-warden-policy-version"),
                version,
            ),
        ],
        state.policy_text.read().clone(),
    )
        .into_response())
}

async fn put_policy(
    State(state): State<Arc<NodeState>>,
    headers: HeaderMap,
    body: String,
) -> Result<Json<Value>, ApiError> {
    require_operator(&state, &headers)?;
    match state.swarm.reload_policy(&body) {
        Ok((version, warnings)) => {
            *state.policy_text.write() = body;
            state.swarm.durable().await?;
            Ok(Json(json!({
                "version": version,
                "warnings": warnings,
            })))
        }
        Err(SwarmError::Policy(errors)) => {
            let mut e = ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_policy",
                format!(
                    "the policy has errors; the previous policy stays active. {}",
                    errors
                        .errors()
                        .next()
                        .map(|d| d.to_string())
                        .unwrap_or_default()
                ),
            );
            e.details = serde_json::to_value(&errors.diagnostics).ok();
            Err(e)
        }
        Err(other) => Err(other.into()),
    }
}

/// The node's config file, as written (every key optional; flags override it).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FileConfig {
    /// `listen: 127.0.0.1:7700`
    pub listen: Option<SocketAddr>,
    /// `data_dir: /var/lib/warden`
    pub data_dir: Option<PathBuf>,
    /// `policy: /etc/warden/policy.yaml`
    pub policy: Option<PathBuf>,
    /// `operator_token: ...`
    pub operator_token: Option<String>,
    /// `fsync: always | batch | off` (for the journal).
    pub fsync: Option<crate::journal::FsyncMode>,
    /// `limits: {max_body_bytes: 1048576}`
    pub max_body_bytes: Option<usize>,
    /// `limits: {max_connections: 4096}`
    pub max_connections: Option<usize>,
    /// `limits: {request_timeout: 30s}`
    pub request_timeout_ms: Option<u64>,
    /// `limits: {journal_bytes: 4294967296}`
    pub journal_bytes: Option<u64>,
    /// `limits: {segment_bytes: 67108864}`
    pub segment_bytes: Option<u64>,
    /// `webhooks: [{url, events, secret}]`
    pub webhooks: Vec<crate::webhook::WebhookConfig>,
}

/// Keys DESIGN.md reserves for the config file that this version does not read yet.
const NOT_YET: [&str; 3] = ["sync", "upstreams", "prices"];

/// Reads a node config file. Every problem is reported with its line and column.
pub fn read_config(text: &str) -> Result<FileConfig, Vec<String>> {
    use saphyr::{
        LoadableYamlNode, MarkedYamlOwned as Node, ScalarOwned as Scalar, YamlDataOwned as Data,
    };
    let at = |n: &Node| format!("{}:{}", n.span.start.line(), n.span.start.col() + 1);
    let docs = Node::load_from_str(text).map_err(|e| {
        vec![format!(
            "{}:{}: YAML syntax: {}",
            e.marker().line(),
            e.marker().col() + 1,
            e.info()
        )]
    })?;
    let mut cfg = FileConfig::default();
    let Some(root) = docs.first() else {
        return Ok(cfg);
    };
    let Data::Mapping(map) = &root.data else {
        return Err(vec![format!(
            "{}: the config must be a mapping of keys to values",
            at(root)
        )]);
    };
    let mut errors = Vec::new();
    let text_of = |v: &Node| match &v.data {
        Data::Value(Scalar::String(s)) => Some(s.clone()),
        _ => None,
    };
    const KEYS: [&str; 7] = [
        "listen",
        "data_dir",
        "policy",
        "operator_token",
        "fsync",
        "limits",
        "webhooks",
    ];
    for (k, v) in map.iter() {
        let Some(key) = text_of(k) else {
            errors.push(format!("{}: keys must be text", at(k)));
            continue;
        };
        match key.as_str() {
            "listen" => match text_of(v).and_then(|s| s.parse().ok()) {
                Some(a) => cfg.listen = Some(a),
                None => errors.push(format!("{}: listen must be an address like 127.0.0.1:7700", at(v))),
            },
            "data_dir" | "policy" => match text_of(v) {
                Some(p) if key == "data_dir" => cfg.data_dir = Some(p.into()),
                Some(p) => cfg.policy = Some(p.into()),
                None => errors.push(format!("{}: {key} must be a path", at(v))),
            },
            "operator_token" => match text_of(v) {
                Some(t) if t.len() >= 16 => cfg.operator_token = Some(t),
                _ => errors.push(format!("{}: operator_token must be text of at least 16 characters", at(v))),
            },
            "fsync" => match text_of(v).as_deref() {
                Some("always") => cfg.fsync = Some(crate::journal::FsyncMode::Always),
                Some("batch") => cfg.fsync = Some(crate::journal::FsyncMode::Batch),
                Some("off") => cfg.fsync = Some(crate::journal::FsyncMode::Off),
                _ => errors.push(format!("{}: fsync must be always, batch or off", at(v))),
            },
            "limits" => match &v.data {
                Data::Mapping(m) => {
                    for (lk, lv) in m.iter() {
                        match (text_of(lk).as_deref(), &lv.data) {
                            (Some("max_body_bytes"), Data::Value(Scalar::Integer(n))) if *n >= 1024 => {
                                cfg.max_body_bytes = Some(*n as usize)
                            }
                            (Some("max_body_bytes"), _) => {
                                errors.push(format!("{}: limits.max_body_bytes must be a number of at least 1024", at(lv)))
                            }
                            (Some("request_timeout"), _) => match text_of(lv)
                                .as_deref()
                                .and_then(warden_actors::policy::source::parse_duration_ms)
                            {
                                Some(ms) if ms >= 100 => cfg.request_timeout_ms = Some(ms),
                                _ => errors.push(format!(
                                    "{}: limits.request_timeout must be a duration of at least 100ms, like 30s",
                                    at(lv)
                                )),
                            },
                            (Some("max_connections"), Data::Value(Scalar::Integer(n))) if *n >= 1 => {
                                cfg.max_connections = Some(*n as usize)
                            }
                            (Some("max_connections"), _) => errors.push(format!(
                                "{}: limits.max_connections must be a positive number",
                                at(lv)
                            )),
                            (Some("journal_bytes"), Data::Value(Scalar::Integer(n))) if *n >= 65_536 => {
                                cfg.journal_bytes = Some(*n as u64)
                            }
                            (Some("journal_bytes"), _) => errors.push(format!(
                                "{}: limits.journal_bytes must be a number of at least 65536 (bytes of journal kept before a snapshot lets older segments go)",
                                at(lv)
                            )),
                            (Some("segment_bytes"), Data::Value(Scalar::Integer(n))) if *n >= 4_096 => {
                                cfg.segment_bytes = Some(*n as u64)
                            }
                            (Some("segment_bytes"), _) => errors.push(format!(
                                "{}: limits.segment_bytes must be a number of at least 4096",
                                at(lv)
                            )),
                            (other, _) => errors.push(format!(
                                "{}: unknown key `{}` in limits; expected max_body_bytes, max_connections, request_timeout, journal_bytes or segment_bytes",
                                at(lk),
                                other.unwrap_or("?")
                            )),
                        }
                    }
                }
                _ => errors.push(format!("{}: limits must be a mapping", at(v))),
            },
            "webhooks" => match &v.data {
                Data::Sequence(items) => {
                    if items.len() > crate::webhook::MAX_WEBHOOKS {
                        errors.push(format!(
                            "{}: at most {} webhooks",
                            at(v),
                            crate::webhook::MAX_WEBHOOKS
                        ));
                    }
                    for item in items {
                        let Data::Mapping(m) = &item.data else {
                            errors.push(format!("{}: a webhook is a mapping with url, events and secret", at(item)));
                            continue;
                        };
                        let mut hook = crate::webhook::WebhookConfig {
                            url: String::new(),
                            events: vec!["halt".into(), "approval_requested".into()],
                            secret: String::new(),
                        };
                        for (hk, hv) in m.iter() {
                            match text_of(hk).as_deref() {
                                Some("url") => hook.url = text_of(hv).unwrap_or_default(),
                                Some("secret") => hook.secret = text_of(hv).unwrap_or_default(),
                                Some("events") => match &hv.data {
                                    Data::Sequence(evs) => {
                                        hook.events = evs.iter().filter_map(&text_of).collect();
                                    }
                                    _ => errors.push(format!("{}: events is a list such as [halt, approval_requested]", at(hv))),
                                },
                                other => errors.push(format!(
                                    "{}: unknown key `{}` in a webhook; expected url, events, secret",
                                    at(hk),
                                    other.unwrap_or("?")
                                )),
                            }
                        }
                        match hook.validate() {
                            Ok(()) => cfg.webhooks.push(hook),
                            Err(why) => errors.push(format!("{}: webhook: {why}", at(item))),
                        }
                    }
                }
                _ => errors.push(format!("{}: webhooks must be a list of {{url, events, secret}}", at(v))),
            },
            k if NOT_YET.contains(&k) => errors.push(format!(
                "{}: `{k}` is part of the config format but this version of warden does not support it yet; remove it",
                at(k_node(k, map))
            )),
            other => {
                let hint = KEYS
                    .iter()
                    .map(|c| (strsim::levenshtein(other, c), *c))
                    .filter(|(d, _)| *d <= 2)
                    .min()
                    .map_or(format!("expected one of: {}", KEYS.join(", ")), |(_, c)| format!("did you mean `{c}`?"));
                errors.push(format!("{}: unknown key `{other}`; {hint}", at(k)));
            }
        }
    }
    if errors.is_empty() {
        Ok(cfg)
    } else {
        Err(errors)
    }
}

fn k_node<'a>(
    key: &str,
    map: &'a saphyr::AnnotatedMappingOwned<saphyr::MarkedYamlOwned>,
) -> &'a saphyr::MarkedYamlOwned {
    map.keys()
        .find(|k| matches!(&k.data, saphyr::YamlDataOwned::Value(saphyr::ScalarOwned::String(s)) if s == key))
        .expect("the key is in the map")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_openapi_document_is_valid_json_and_names_every_route() {
        let doc: serde_json::Value =
            serde_json::from_str(OPENAPI).expect("docs/openapi.json is JSON");
        assert_eq!(doc["openapi"], "3.1.0");
        for route in ROUTES {
            assert!(
                doc["paths"].get(route).is_some(),
                "{route} is missing from docs/openapi.json"
            );
        }
        let documented = doc["paths"].as_object().unwrap().len();
        let served: std::collections::BTreeSet<&str> = ROUTES.iter().copied().collect();
        assert_eq!(
            documented,
            served.len(),
            "docs/openapi.json documents routes the node does not serve"
        );
    }

    #[test]
    fn config_files_are_read_with_located_errors() {
        let ok = read_config("listen: 127.0.0.1:9000\ndata_dir: /tmp/w\nfsync: batch\nlimits: {max_body_bytes: 4096}\n").unwrap();
        assert_eq!(ok.listen, Some("127.0.0.1:9000".parse().unwrap()));
        assert_eq!(ok.fsync, Some(crate::journal::FsyncMode::Batch));
        assert_eq!(ok.max_body_bytes, Some(4096));
        let errs = read_config("listne: x\nfsync: sometimes\nprices: []\n").unwrap_err();
        assert_eq!(errs[0], "1:1: unknown key `listne`; did you mean `listen`?");
        assert_eq!(errs[1], "2:8: fsync must be always, batch or off");
        assert!(
            errs[2].starts_with("3:1: `prices` is part of the config format"),
            "{}",
            errs[2]
        );
        assert!(read_config("listen: [\n").unwrap_err()[0].contains("YAML syntax"));
    }
}
