//! The node's HTTP server: [`start`] opens the durable node ([`warden_supervisor::Node`]),
//! binds the listener and serves every router of [`crate::api`] on it, with the operator
//! token, body and connection limits, a request deadline and JSON errors; [`RunningNode`]
//! shuts it all down gracefully.

pub mod auth;
pub mod body;
pub mod conn_limit;
pub mod error;
pub mod metrics_only;
pub mod serve;
pub mod wire;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use dashmap::DashMap;
use warden_actors::AgentId;
use warden_supervisor::journal::seal::PublicKey;
use warden_supervisor::{Node, NodeError, NodeOptions, SealOptions, Swarm};

use crate::config::NodeConfig;
use crate::limits::{IDLE_TIMEOUTS_PER_CONNECTION, SHUTDOWN_GRACE};
use auth::Auth;
use error::ApiError;

/// Renders the process's metrics in Prometheus' text format. The binary installs the
/// recorder and hands the node this; without it `/metrics` answers 503.
pub type MetricsRender = Arc<dyn Fn() -> String + Send + Sync>;

/// What every handler sees.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

/// The state behind [`AppState`].
pub struct Shared {
    /// The swarm the node governs.
    pub swarm: Swarm,
    /// The operator's and the agents' tokens.
    pub auth: Auth,
    /// Each agent's labels (journaled with its registration).
    pub labels: DashMap<AgentId, BTreeMap<String, String>>,
    /// The metrics renderer, if the process installed a recorder.
    pub metrics: Option<MetricsRender>,
    /// Set at shutdown: long-lived responses (event streams) end so the server can drain.
    pub shutting_down: tokio::sync::watch::Sender<bool>,
    /// How long one request may take.
    pub request_timeout_ms: u64,
    /// The node's data directory (the journal, for `GET /v1/audit`).
    pub data_dir: PathBuf,
    /// The enforcement proxy.
    pub proxy: crate::proxy::Proxy,
    /// Node-to-node sync, when the config has a `sync` section (set once at start).
    pub cluster: std::sync::OnceLock<warden_supervisor::cluster::Cluster>,
    /// The public keys that verify this node's journal seals, the current one first (set
    /// once at start; `GET /v1/audit/keys`).
    pub audit_keys: std::sync::OnceLock<Vec<PublicKey>>,
}

impl std::ops::Deref for AppState {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.0
    }
}

impl AppState {
    /// The state of a node over `swarm`, with the given operator token.
    ///
    /// # Errors
    /// An upstream of the config that the proxy cannot use (a header value not valid in HTTP).
    pub fn new(swarm: Swarm, operator_token: String, config: &NodeConfig) -> Result<Self, String> {
        let proxy = crate::proxy::Proxy::new(config, swarm.clone())?;
        Ok(AppState(Arc::new(Shared {
            proxy,
            swarm,
            auth: Auth::new(operator_token),
            labels: DashMap::new(),
            metrics: config.metrics.clone(),
            shutting_down: tokio::sync::watch::channel(false).0,
            request_timeout_ms: config.request_timeout_ms,
            data_dir: config.node.data_dir.clone(),
            cluster: std::sync::OnceLock::new(),
            audit_keys: std::sync::OnceLock::new(),
        })))
    }

    /// Takes back each recovered agent's token digest and labels from its registration's
    /// `meta`.
    fn restore(&self, meta: &[(AgentId, serde_json::Value)]) {
        for (agent, meta) in meta {
            if let Some(digest) = meta["token_blake3"].as_str() {
                self.auth.insert_digest(agent.clone(), digest.to_string());
            }
            if let Ok(labels) = serde_json::from_value(meta["labels"].clone()) {
                self.labels.insert(agent.clone(), labels);
            }
        }
    }
}

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The durable node could not open (policy, journal, recovery).
    #[error(transparent)]
    Node(#[from] NodeError),
    /// The operator token is missing, weak or exposed.
    #[error(transparent)]
    Token(#[from] auth::TokenError),
    /// The config's upstreams cannot be used.
    #[error("upstreams: {0}")]
    Proxy(String),
    /// The journal's signing key is missing, unreadable or exposed.
    #[error(transparent)]
    AuditKey(#[from] crate::export::KeyError),
    /// Sync could not start (certificates, address, members, pools).
    #[error("sync: {0}")]
    Cluster(String),
    /// The listener could not be bound.
    #[error("listening on {addr}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// The error.
        source: std::io::Error,
    },
}

/// A running node: its address, and how to stop it.
pub struct RunningNode {
    /// The address it listens on.
    pub addr: SocketAddr,
    /// Where the operator token came from (printed at start-up).
    pub operator_token_source: String,
    /// The durable node (recovery report, journal report, swarm).
    pub node: Node,
    /// The public key that verifies this node's journal seals.
    pub audit_key: PublicKey,
    /// Where the signing key came from (printed at start-up).
    pub audit_key_source: String,
    exports: crate::export::Exports,
    state: AppState,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
    webhooks: Option<crate::webhook::Webhooks>,
}

impl RunningNode {
    /// Stops accepting, ends event streams, gives in-flight requests up to
    /// [`SHUTDOWN_GRACE`] to finish, then stops webhooks, the swarm and the journal.
    pub async fn shutdown(self) {
        let _ = self.state.shutting_down.send(true);
        let _ = self.stop.send(());
        let mut task = self.task;
        if tokio::time::timeout(SHUTDOWN_GRACE, &mut task)
            .await
            .is_err()
        {
            task.abort();
        }
        if let Some(w) = self.webhooks {
            w.shutdown().await;
        }
        if let Some(c) = self.state.cluster.get() {
            c.shutdown().await;
        }
        self.exports.shutdown().await;
        self.node.shutdown().await;
    }

    /// The cluster this node syncs with, if it has a `sync` section.
    pub fn cluster(&self) -> Option<&warden_supervisor::cluster::Cluster> {
        self.state.cluster.get()
    }
}

/// Starts a node on the current tokio runtime: the operator token, the durable node (journal,
/// recovery), webhooks, then the HTTP server on `config.listen`.
///
/// # Errors
/// [`StartError`] says which part failed; nothing is served then.
pub async fn start(config: NodeConfig) -> Result<RunningNode, StartError> {
    // The address first: a node that cannot listen must not touch its journal (no
    // node_started note, no policy change of a start that never served).
    let listen_error = |source| StartError::Listen {
        addr: config.listen,
        source,
    };
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(listen_error)?;
    let addr = listener.local_addr().map_err(listen_error)?;
    let (operator_token, operator_token_source) =
        auth::operator_token(config.operator_token.as_deref(), &config.node.data_dir)?;
    let (key, audit_key_source) =
        crate::export::signing_key(&config.export.signing_key, &config.node.data_dir)?;
    let audit_key = key.public_key();
    let (marks, export_marks) = crate::export::Marks::new(&config.export);
    let node = Node::open(NodeOptions {
        seal: Some(SealOptions {
            key,
            interval_ms: config.export.seal_interval_ms,
        }),
        export_marks,
        ..config.node.clone()
    })
    .await?;
    let state = match AppState::new(node.swarm().clone(), operator_token, &config) {
        Ok(s) => s,
        Err(e) => {
            node.shutdown().await;
            return Err(StartError::Proxy(e));
        }
    };
    state.restore(&node.recovered.meta);
    let _ = state.audit_keys.set(node.audit_keys());
    let orphans = crate::proxy::orphans::settle(&state).await;
    if orphans > 0 {
        eprintln!("warden node: settled {orphans} proxied steps a crash left open, each at its whole reservation");
    }
    if let Some(sync) = &config.sync {
        match start_cluster(node.swarm(), sync).await {
            Ok(c) => {
                let _ = state.cluster.set(c);
            }
            Err(e) => {
                node.shutdown().await;
                return Err(StartError::Cluster(e));
            }
        }
    }
    let exports = crate::export::Exports::start(
        &config.export,
        node.journal().clone(),
        config.node.data_dir.clone(),
        marks,
    );
    // Hooks that take no decisions do not make every step publish one.
    let decisions = config
        .webhooks
        .iter()
        .any(|h| h.events.iter().any(|e| e == "decision"));
    let webhooks = (!config.webhooks.is_empty()).then(|| {
        let swarm = node.swarm();
        let events = match decisions {
            true => swarm.events(),
            false => swarm.events_without_decisions(),
        };
        crate::webhook::start(config.webhooks.clone(), events)
    });
    // Longer than any request may take, so only a connection with nothing going on ends: a
    // proxied call may wait up to its upstream's timeout for the answer's head and again for
    // a whole answer's body.
    let slowest_upstream = config
        .upstreams
        .iter()
        .map(|u| u.timeout_ms)
        .max()
        .unwrap_or(0);
    let idle = Duration::from_millis(
        config
            .request_timeout_ms
            .saturating_mul(IDLE_TIMEOUTS_PER_CONNECTION as u64)
            .max(
                slowest_upstream
                    .saturating_mul(2)
                    .saturating_add(config.request_timeout_ms),
            ),
    );
    let listener = conn_limit::Limited::new(listener, config.max_connections, idle)
        .per_client(config.connections_per_client());
    // Counters that may stay at 0 for long exist from the start, so queries on them read 0,
    // not "no data".
    metrics::counter!("warden_proxy_settle_errors_total").increment(0);
    let app = crate::api::router(state.clone(), config.max_body_bytes);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let header_read = Duration::from_millis(config.request_timeout_ms);
    let task = tokio::spawn(serve::serve(listener, app, header_read, stopped));
    Ok(RunningNode {
        addr,
        operator_token_source,
        node,
        audit_key,
        audit_key_source,
        exports,
        state,
        stop,
        task,
        webhooks,
    })
}

/// How long a node waits at start for its peers' names to resolve (pods and containers of a
/// cluster start together; their names appear in DNS as they are created).
const PEER_RESOLVE_MS_MAX: u64 = 60_000;

/// Resolves `host:port`, retrying every second up to [`PEER_RESOLVE_MS_MAX`]: past it the
/// start fails naming the peer (the operator sees it, not a silent partition).
async fn resolve_peer(peer: &str) -> Result<SocketAddr, String> {
    let started = std::time::Instant::now();
    loop {
        let err = match tokio::net::lookup_host(peer).await {
            Ok(mut addrs) => match addrs.next() {
                Some(a) => return Ok(a),
                None => "it resolves to nothing".to_owned(),
            },
            Err(e) => e.to_string(),
        };
        if started.elapsed() > Duration::from_millis(PEER_RESOLVE_MS_MAX) {
            return Err(format!("peer {peer:?}: {err} (write host:port)"));
        }
        if started.elapsed() < Duration::from_secs(1) {
            eprintln!("warden node: waiting for peer {peer:?} to resolve: {err}");
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Starts sync over the node's swarm, its peers' names resolved first.
async fn start_cluster(
    swarm: &Swarm,
    sync: &crate::config::SyncSettings,
) -> Result<warden_supervisor::cluster::Cluster, String> {
    let mut peers = Vec::new();
    for p in &sync.peers {
        peers.push(resolve_peer(p).await?);
    }
    let opts = warden_supervisor::cluster::ClusterOptions {
        listen: sync.listen,
        peers,
        members: sync.members.clone(),
        identity: warden_sync::certs::Identity {
            ca_pem: sync.ca_pem.clone(),
            cert_pem: sync.cert_pem.clone(),
            key_pem: sync.key_pem.0.clone(),
        },
        pools: sync.pools.clone(),
        timing: sync.timing.clone(),
        tuning: sync.tuning.clone(),
    };
    warden_supervisor::cluster::Cluster::start(swarm.clone(), opts)
        .await
        .map_err(|e| e.to_string())
}

/// Ends a request that takes longer than the request timeout (a client trickling its body,
/// say) with 408. A step whose decision was made but not yet answered is like one whose
/// client went away: journaled, but never acknowledged. Event streams are exempt; a step read
/// (`GET /v1/agents/{id}/steps/{step}`) gets its longest wait on top.
pub async fn deadline(
    State(state): State<AppState>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    if req.uri().path() == "/v1/events" || crate::proxy::is_proxied(req.uri().path()) {
        // Event streams run for long; proxied requests have their upstream's deadline and
        // their own limit on the body's arrival.
        return next.run(req).await;
    }
    let mut limit = Duration::from_millis(state.request_timeout_ms);
    if crate::api::steps::is_step_read(req.method(), req.uri().path()) {
        // A step read may wait for an approval's answer: room for that wait too.
        limit += Duration::from_millis(crate::limits::step_wait_cap_ms(state.request_timeout_ms));
    }
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(resp) => resp,
        Err(_) => ApiError::new(
            axum::http::StatusCode::REQUEST_TIMEOUT,
            "timeout",
            format!(
                "the request took longer than {} ms; send the body at once",
                state.request_timeout_ms
            ),
        )
        .into_response(),
    }
}
