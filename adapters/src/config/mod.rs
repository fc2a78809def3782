//! The node's config file (YAML, every key optional) and how it meets the command line and the
//! environment. [`read_config`] reads the file with every problem located (line:column);
//! [`resolve`] applies, in one place, the precedence: flags over the environment
//! (`WARDEN_OPERATOR_TOKEN`) over the file over the defaults, and yields the [`NodeConfig`]
//! that [`crate::http::start`] runs. Relative paths (`data_dir`, `policy`) are taken from
//! the working directory of `warden node`, as flags are, not from the config file's folder.
//!
//! ```yaml
//! listen: 127.0.0.1:7700
//! data_dir: /var/lib/warden
//! policy: /etc/warden/policy.yaml
//! operator_token: "at least 16 characters"
//! fsync: always            # always | batch | off
//! limits: {max_body_bytes: 1048576, max_connections: 4096, max_connections_per_client: 2048,
//!          request_timeout: 30s, journal_bytes: 4294967296, segment_bytes: 67108864}
//! webhooks:
//!   - {url: "https://ops.example/hook", events: [halt, approval_requested], secret: "..."}
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use warden_actors::yaml::{one_of_hint, Diagnostic, Entry, Node, Reader, Source, Value};
use warden_supervisor::journal::FsyncMode;
use warden_supervisor::NodeOptions;

use crate::http::MetricsRender;
use crate::limits::{
    BODY_BYTES_MAX_DEFAULT, BODY_BYTES_MAX_MIN, CONNECTIONS_MAX_DEFAULT, JOURNAL_BYTES_MIN,
    REQUEST_TIMEOUT_MS_DEFAULT, REQUEST_TIMEOUT_MS_MIN, SEGMENT_BYTES_MIN, UPSTREAM_IN_FLIGHT_MAX,
    UPSTREAM_IN_FLIGHT_MAX_DEFAULT, UPSTREAM_TIMEOUT_MS_DEFAULT, WEBHOOKS_MAX,
};
use crate::webhook::WebhookConfig;

mod export;
mod sync;

pub use export::{
    ExportSection, ExportSettings, LockMode, PostgresSection, PostgresSettings, Retention,
    S3Settings, SigningKeySource,
};
pub use sync::SyncSection;

/// Where `warden node` listens when nothing says otherwise.
pub const LISTEN_DEFAULT: &str = "127.0.0.1:7700";
/// The data directory when nothing says otherwise.
pub const DATA_DIR_DEFAULT: &str = "warden-data";
/// The policy a node runs when none is given: the example policy of DESIGN.md.
pub const POLICY_DEFAULT: &str = include_str!("../../../examples/policies/design.yaml");
/// The environment variable that holds the operator token.
pub const OPERATOR_TOKEN_ENV: &str = "WARDEN_OPERATOR_TOKEN";

/// How to run a node, every source applied.
#[derive(Clone)]
pub struct NodeConfig {
    /// Where to listen (port 0 picks a free one).
    pub listen: SocketAddr,
    /// The durable node: data directory, policy, journal.
    pub node: NodeOptions,
    /// The operator token; `None` reads `DATA_DIR/operator.token`, creating it if absent.
    pub operator_token: Option<String>,
    /// Request body limit, bytes.
    pub max_body_bytes: usize,
    /// Connections served at once; more wait to be accepted.
    pub max_connections: usize,
    /// Of those, the most one client (IPv4 address, IPv6 /64) holds at once; past it its new
    /// connections are answered 503 and closed. `None`: half of `max_connections`.
    pub max_connections_per_client: Option<usize>,
    /// How long one request may take (event streams excepted).
    pub request_timeout_ms: u64,
    /// Where to announce halts and approval requests.
    pub webhooks: Vec<WebhookConfig>,
    /// Renders `/metrics`; set by the process that installed the recorder.
    pub metrics: Option<MetricsRender>,
    /// Where the proxy forwards, credentials resolved (read and checked; the proxy that uses
    /// them is the next part of this crate).
    pub upstreams: Vec<Upstream>,
    /// Model prices for the LLM proxy.
    pub prices: Vec<Price>,
    /// Node-to-node sync (the config's `sync` section with `--sync-listen` / `--peer`), with
    /// its certificate files read; `None`: a node on its own.
    pub sync: Option<SyncSettings>,
    /// The journal's signing key, seals and exports (the config's `export` section).
    pub export: ExportSettings,
}

/// How this node syncs with its peers, every source applied.
#[derive(Clone, Debug)]
pub struct SyncSettings {
    /// The QUIC (UDP) address to listen on.
    pub listen: SocketAddr,
    /// The peers' addresses (`host:port`, resolved when the node starts).
    pub peers: Vec<String>,
    /// Every node's name.
    pub members: Vec<String>,
    /// The cluster CA's certificate, PEM.
    pub ca_pem: String,
    /// This node's certificate, PEM.
    pub cert_pem: String,
    /// Its private key, PEM (never logged: `Debug` of this struct shows it as redacted).
    pub key_pem: Redacted,
    /// The replicated pools and their limits.
    pub pools: Vec<warden_sync::replica::ReplicatedPool>,
    /// Timers.
    pub timing: warden_sync::replica::Timing,
    /// How rights move.
    pub tuning: warden_sync::replica::Tuning,
}

/// A secret kept out of `Debug` output.
#[derive(Clone, PartialEq, Eq)]
pub struct Redacted(pub String);

impl std::fmt::Debug for Redacted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

impl NodeConfig {
    /// The most connections one client holds at once: `max_connections_per_client`, else
    /// half of `max_connections` (at least 1).
    pub fn connections_per_client(&self) -> usize {
        self.max_connections_per_client
            .unwrap_or(self.max_connections.div_ceil(2))
            .max(1)
    }

    /// A config with the defaults of `warden node`: the given address, data directory and
    /// policy text; operator token from `DATA_DIR/operator.token`; 1 MiB bodies; fsync
    /// always.
    pub fn new(listen: SocketAddr, data_dir: impl Into<PathBuf>, policy_text: String) -> Self {
        Self {
            listen,
            node: NodeOptions::new(data_dir, policy_text),
            operator_token: None,
            max_body_bytes: BODY_BYTES_MAX_DEFAULT,
            max_connections: CONNECTIONS_MAX_DEFAULT,
            max_connections_per_client: None,
            request_timeout_ms: REQUEST_TIMEOUT_MS_DEFAULT,
            webhooks: Vec::new(),
            metrics: None,
            upstreams: Vec::new(),
            prices: Vec::new(),
            sync: None,
            export: ExportSettings::default(),
        }
    }
}

/// What the command line says (every flag optional).
#[derive(Clone, Debug, Default)]
pub struct Flags {
    /// `--config FILE`.
    pub config: Option<PathBuf>,
    /// `--policy FILE`.
    pub policy: Option<PathBuf>,
    /// `--data DIR`.
    pub data: Option<PathBuf>,
    /// `--listen ADDR`.
    pub listen: Option<SocketAddr>,
    /// `--sync-listen ADDR`.
    pub sync_listen: Option<SocketAddr>,
    /// `--peer ADDR`, repeated.
    pub peers: Vec<String>,
}

/// Why a node's configuration could not be had.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A file could not be read.
    #[error("cannot read {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The config file has errors, each `line:column: message`.
    #[error("{} has {} error(s):\n{}", path.display(), errors.iter().filter(|d| d.is_error()).count(), errors.iter().map(|e| format!("{}:{e}", path.display())).collect::<Vec<_>>().join("\n"))]
    Invalid {
        /// The file.
        path: PathBuf,
        /// Each diagnostic, located.
        errors: Vec<Diagnostic>,
    },
    /// The sync flags or section cannot make a cluster node.
    #[error("sync: {0}")]
    Sync(String),
    /// An `export` value read from the environment cannot be used.
    #[error("{0}")]
    Export(String),
    /// An `export` key refers to an environment variable that is not set.
    #[error(
        "{key}: the environment variable {var} is not set; set it or write the value in the config"
    )]
    MissingExportEnv {
        /// The key (`export.postgres.url`, `export.signing_key`).
        key: String,
        /// The variable.
        var: String,
    },
    /// A credential refers to an environment variable that is not set.
    #[error("upstream `{upstream}`, header `{header}`: the environment variable {var} is not set; set it or write the value in the config")]
    MissingEnv {
        /// The upstream.
        upstream: String,
        /// The header.
        header: String,
        /// The variable.
        var: String,
    },
}

/// A resolved config and a description of where its policy came from (for the start-up line).
pub struct Resolved {
    /// The config to run.
    pub config: NodeConfig,
    /// The policy file, or "the bundled example policy".
    pub policy_source: String,
}

/// Applies every source in one place: flags over the environment (`env` looks a variable up:
/// [`OPERATOR_TOKEN_ENV`], and every `env:NAME` in an upstream's headers) over the config file
/// over the defaults. Reads the config file and the policy file it names.
pub fn resolve(
    flags: Flags,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Resolved, ConfigError> {
    let file = match &flags.config {
        Some(path) => read_config(&read(path)?).map_err(|errors| ConfigError::Invalid {
            path: path.clone(),
            errors,
        })?,
        None => FileConfig::default(),
    };
    let policy = flags.policy.or(file.policy);
    let data = flags
        .data
        .or(file.data_dir)
        .unwrap_or_else(|| PathBuf::from(DATA_DIR_DEFAULT));
    let listen = flags
        .listen
        .or(file.listen)
        .unwrap_or_else(|| LISTEN_DEFAULT.parse().expect("a valid address"));
    let (policy_text, policy_source) = match &policy {
        Some(p) => (read(p)?, p.display().to_string()),
        None => (
            POLICY_DEFAULT.to_string(),
            "the bundled example policy".into(),
        ),
    };
    let mut config = NodeConfig::new(listen, data, policy_text);
    config.node.policy_explicit = policy.is_some();
    config.operator_token = env(OPERATOR_TOKEN_ENV)
        .filter(|t| !t.is_empty())
        .or(file.operator_token);
    if let Some(v) = file.max_body_bytes {
        config.max_body_bytes = v;
    }
    if let Some(v) = file.max_connections {
        config.max_connections = v;
    }
    if let Some(v) = file.max_connections_per_client {
        config.max_connections_per_client = Some(v);
    }
    if let Some(v) = file.request_timeout_ms {
        config.request_timeout_ms = v;
    }
    if let Some(v) = file.fsync {
        config.node.fsync = v;
    }
    if let Some(v) = file.journal_bytes {
        config.node.journal_bytes = v;
    }
    if let Some(v) = file.segment_bytes {
        config.node.segment_bytes = v;
    }
    config.webhooks = file.webhooks;
    config.upstreams = file
        .upstreams
        .into_iter()
        .map(|u| with_credentials(u, env))
        .collect::<Result<_, _>>()?;
    config.prices = file.prices;
    config.sync = resolve_sync(file.sync, flags.sync_listen, flags.peers)?;
    let cluster_name = config.sync.as_ref().and_then(|s| {
        let identity = warden_sync::certs::Identity {
            ca_pem: s.ca_pem.clone(),
            cert_pem: s.cert_pem.clone(),
            key_pem: s.key_pem.0.clone(),
        };
        identity.node_name().ok().map(|n| n.as_str().to_string())
    });
    config.export = export::resolve_export(file.export, cluster_name, env)?;
    Ok(Resolved {
        config,
        policy_source,
    })
}

/// The sync section with `--sync-listen` and `--peer` applied, its PEM files read.
fn resolve_sync(
    section: Option<SyncSection>,
    listen: Option<SocketAddr>,
    peers: Vec<String>,
) -> Result<Option<SyncSettings>, ConfigError> {
    let Some(s) = section else {
        if listen.is_some() || !peers.is_empty() {
            return Err(ConfigError::Sync(
                "--sync-listen and --peer need the config file's `sync` section (members, ca, cert, key, pools); see docs/sync.md".into(),
            ));
        }
        return Ok(None);
    };
    let listen = match (listen, &s.listen) {
        (Some(a), _) => a,
        (None, Some(text)) => text.parse().map_err(|_| {
            ConfigError::Sync(format!(
                "sync.listen {text:?} is not an address like 0.0.0.0:7701"
            ))
        })?,
        (None, None) => {
            return Err(ConfigError::Sync(
                "no address to listen on: set sync.listen or --sync-listen".into(),
            ))
        }
    };
    let mut all_peers = s.peers;
    all_peers.extend(peers);
    let pem = |p: &Option<PathBuf>| read(p.as_ref().expect("required by the reader"));
    Ok(Some(SyncSettings {
        listen,
        peers: all_peers,
        members: s.members,
        ca_pem: pem(&s.ca)?,
        cert_pem: pem(&s.cert)?,
        key_pem: Redacted(pem(&s.key)?),
        pools: s.pools,
        timing: s.timing,
        tuning: s.tuning,
    }))
}

/// Replaces every `env:NAME` in the upstream's header values (NAME: letters, digits and `_`)
/// with the variable's value: `authorization: "Bearer env:OPENAI_API_KEY"`.
fn with_credentials(
    mut u: Upstream,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Upstream, ConfigError> {
    for (header, value) in &mut u.headers {
        let mut out = String::new();
        let mut rest = value.as_str();
        while let Some(at) = rest.find("env:") {
            out.push_str(&rest[..at]);
            let name_len = rest[at + 4..]
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(rest.len() - at - 4);
            let var = &rest[at + 4..at + 4 + name_len];
            let found = env(var).filter(|_| !var.is_empty());
            out.push_str(&found.ok_or_else(|| ConfigError::MissingEnv {
                upstream: u.name.clone(),
                header: header.clone(),
                var: var.to_string(),
            })?);
            rest = &rest[at + 4 + name_len..];
        }
        out.push_str(rest);
        *value = out;
    }
    Ok(u)
}

fn read(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// The node's config file, as written (every key optional; flags override it).
#[derive(Clone, Debug, Default, PartialEq)]
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
    pub fsync: Option<FsyncMode>,
    /// `limits: {max_body_bytes: 1MiB}`
    pub max_body_bytes: Option<usize>,
    /// `limits: {max_connections: 4096}`
    pub max_connections: Option<usize>,
    /// `limits: {max_connections_per_client: 2048}`
    pub max_connections_per_client: Option<usize>,
    /// `limits: {request_timeout: 30s}`
    pub request_timeout_ms: Option<u64>,
    /// `limits: {journal_bytes: 4GiB}`
    pub journal_bytes: Option<u64>,
    /// `limits: {segment_bytes: 64MiB}`
    pub segment_bytes: Option<u64>,
    /// `webhooks: [{url, events, secret}]`
    pub webhooks: Vec<WebhookConfig>,
    /// `upstreams: {name: {url, kind, headers, timeout}}`, in name order.
    pub upstreams: Vec<Upstream>,
    /// `prices: {model: {upstream, input, output, max_output_tokens, reasoning}}`, in model
    /// order.
    pub prices: Vec<Price>,
    /// `sync: {listen, peers, members, ca, cert, key, pools, ...}` (see [`SyncSection`]).
    pub sync: Option<SyncSection>,
    /// `export: {signing_key, seal_interval, s3, postgres}` (see [`ExportSection`]).
    pub export: Option<ExportSection>,
}

/// What an upstream speaks: plain HTTP (a tool), an LLM API, or MCP.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UpstreamKind {
    /// Any HTTP tool (the default).
    Http,
    /// OpenAI's API shapes (`/v1/chat/completions`, `/v1/responses`).
    OpenAi,
    /// Anthropic's (`/v1/messages`).
    Anthropic,
    /// An MCP server (streamable HTTP).
    Mcp,
}

/// Where the proxy forwards a tool's or a model's requests. The credentials in `headers`
/// never leave the node: `Debug` shows header names only.
#[derive(Clone, PartialEq)]
pub struct Upstream {
    /// The name policies and prices refer to.
    pub name: String,
    /// The base URL (`http://` or `https://`).
    pub url: String,
    /// What it speaks.
    pub kind: UpstreamKind,
    /// Headers the proxy adds, as written (`env:NAME` is replaced by the environment's value
    /// when the config is resolved).
    pub headers: Vec<(String, String)>,
    /// How long a forwarded request may wait for the head of the upstream's answer.
    pub timeout_ms: u64,
    /// Most requests forwarded to it at once (`max_in_flight`); past it 503 `upstream_busy`.
    pub max_in_flight: usize,
    /// `write_max_tokens` (default false): Chat Completions requests to it also get
    /// `max_tokens` (clamped), for OpenAI-compatible servers that read only that key.
    pub write_max_tokens: bool,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.headers.iter().map(|(k, _)| k.as_str()).collect();
        f.debug_struct("Upstream")
            .field("name", &self.name)
            .field("url", &self.url)
            .field("kind", &self.kind)
            .field("headers", &names)
            .field("timeout_ms", &self.timeout_ms)
            .field("max_in_flight", &self.max_in_flight)
            .finish()
    }
}

/// A model's price: USD per million tokens, held as integer micro-USD per million tokens.
/// A model without a price is refused by the LLM proxy (fail closed).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Price {
    /// The model name as clients send it.
    pub model: String,
    /// The upstream (of kind `openai` or `anthropic`) that serves it.
    pub upstream: String,
    /// Input tokens, micro-USD per million.
    pub input_micro_usd_per_mtok: u64,
    /// Output tokens, micro-USD per million.
    pub output_micro_usd_per_mtok: u64,
    /// The most output tokens a request may ask for (what is reserved when it says nothing).
    pub max_output_tokens: u64,
    /// `reasoning` (default true): the model may bill output it does not stream (reasoning
    /// or thinking tokens), so a stream that ends without its usage is charged its whole
    /// output bound; false: such a stream is charged the text it delivered.
    pub reasoning: bool,
}

/// How the config file is read: 1 MiB at most, 64 levels, an empty file is every key absent.
const CONFIG: Source<'static> = Source::new("config file", "config files");
/// The top-level keys.
const KEYS: [&str; 11] = [
    "export",
    "listen",
    "data_dir",
    "policy",
    "operator_token",
    "fsync",
    "limits",
    "webhooks",
    "upstreams",
    "prices",
    "sync",
];

/// Reads a node config file. Every problem is reported, each with its line and column.
///
/// # Errors
/// Every diagnostic (errors and warnings) when any error was found; nothing is half-applied.
pub fn read_config(text: &str) -> Result<FileConfig, Vec<Diagnostic>> {
    let mut r = Reader::new();
    let mut cfg = FileConfig::default();
    let Some(root) = r.parse(text, &CONFIG) else {
        return Err(r.into_diagnostics());
    };
    if let Some(top) = r.mapping(&root, "the config", &KEYS) {
        for e in top.iter() {
            read_key(&mut r, &mut cfg, e);
        }
        check_prices(&mut r, &cfg, top.get("prices"));
    }
    r.finish(cfg).map(|(cfg, _)| cfg)
}

/// One top-level key.
fn read_key(r: &mut Reader, cfg: &mut FileConfig, e: &Entry<'_>) {
    let v = e.value;
    match e.key() {
        "listen" => cfg.listen = r.parsed(v, "listen", "an address like 127.0.0.1:7700"),
        "data_dir" => cfg.data_dir = r.text(v, "data_dir").map(PathBuf::from),
        "policy" => cfg.policy = r.text(v, "policy").map(PathBuf::from),
        "operator_token" => cfg.operator_token = operator_token(r, v),
        "fsync" => {
            let modes = [
                ("always", FsyncMode::Always),
                ("batch", FsyncMode::Batch),
                ("off", FsyncMode::Off),
            ];
            cfg.fsync = r.named(v, "fsync", &modes);
        }
        "limits" => read_limits(r, cfg, v),
        "webhooks" => cfg.webhooks = read_webhooks(r, v),
        "upstreams" => cfg.upstreams = read_upstreams(r, v),
        "prices" => cfg.prices = read_prices(r, v),
        "sync" => cfg.sync = sync::read_sync(r, v),
        _ => cfg.export = export::read_export(r, v),
    }
}

fn operator_token(r: &mut Reader, v: &Node) -> Option<String> {
    let t = r.text(v, "operator_token")?;
    if let Some(problem) = crate::http::auth::token_problem(&t) {
        r.error(
            v.pos,
            format!("operator_token {problem}"),
            Some("leave it out and the node makes one in DATA_DIR/operator.token".into()),
        );
        return None;
    }
    Some(t)
}

fn read_limits(r: &mut Reader, cfg: &mut FileConfig, v: &Node) {
    const LIMITS: [&str; 6] = [
        "max_body_bytes",
        "max_connections",
        "max_connections_per_client",
        "request_timeout",
        "journal_bytes",
        "segment_bytes",
    ];
    let Some(m) = r.mapping(v, "limits", &LIMITS) else {
        return;
    };
    for e in m.iter() {
        let n = e.value;
        match e.key() {
            "max_body_bytes" => {
                cfg.max_body_bytes =
                    at_least(r, n, "limits.max_body_bytes", BODY_BYTES_MAX_MIN as u64)
                        .map(|b| b as usize)
            }
            "max_connections" => {
                cfg.max_connections = r
                    .uint_at_least(n, "limits.max_connections", 1)
                    .map(|c| c as usize)
            }
            "max_connections_per_client" => {
                cfg.max_connections_per_client = r
                    .uint_at_least(n, "limits.max_connections_per_client", 1)
                    .map(|c| c as usize)
            }
            "request_timeout" => {
                cfg.request_timeout_ms = r
                    .duration_ms(n, "limits.request_timeout")
                    .filter(|ms| duration_at_least(r, n, *ms, REQUEST_TIMEOUT_MS_MIN))
            }
            "journal_bytes" => {
                cfg.journal_bytes = at_least(r, n, "limits.journal_bytes", JOURNAL_BYTES_MIN)
            }
            _ => {
                cfg.segment_bytes = at_least(r, n, "limits.segment_bytes", SEGMENT_BYTES_MIN)
                    .filter(|b| {
                        let max = warden_supervisor::limits::SEGMENT_BYTES_MAX;
                        let ok = *b <= max;
                        if !ok {
                            let why = format!(
                            "limits.segment_bytes must be at most {max} bytes (1 GiB), found {b}"
                        );
                            r.error(n.pos, why, None);
                        }
                        ok
                    })
            }
        }
    }
}

/// A byte size (`4096`, `64KiB`, `1 GiB`) of at least `min`.
fn at_least(r: &mut Reader, n: &Node, what: &str, min: u64) -> Option<u64> {
    let b = r.bytes(n, what)?;
    if b < min {
        r.error(
            n.pos,
            format!("{what} must be at least {min} bytes, found {b}"),
            None,
        );
        return None;
    }
    Some(b)
}

fn duration_at_least(r: &mut Reader, n: &Node, ms: u64, min_ms: u64) -> bool {
    if ms < min_ms {
        r.error(
            n.pos,
            format!("limits.request_timeout must be at least {min_ms}ms"),
            Some("write e.g. 30s".into()),
        );
    }
    ms >= min_ms
}

fn read_webhooks(r: &mut Reader, v: &Node) -> Vec<WebhookConfig> {
    let hint = Some("a list of {url, events, secret}".to_string());
    let Some(items) = r.sequence(v, "webhooks", hint) else {
        return Vec::new();
    };
    if items.len() > WEBHOOKS_MAX {
        r.error(v.pos, format!("at most {WEBHOOKS_MAX} webhooks"), None);
    }
    items
        .iter()
        .filter_map(|item| read_webhook(r, item))
        .collect()
}

fn read_webhook(r: &mut Reader, item: &Node) -> Option<WebhookConfig> {
    let m = r.mapping(item, "a webhook", &["url", "events", "secret"])?;
    let mut hook = WebhookConfig {
        url: String::new(),
        events: vec!["halt".into(), "approval_requested".into()],
        secret: String::new(),
    };
    if let Some(url) = r.require(&m, "url", "a webhook", None) {
        hook.url = r.text(url, "url")?;
    }
    if let Some(secret) = r.require(&m, "secret", "a webhook", None) {
        hook.secret = r.text(secret, "secret")?;
    }
    if let Some(events) = m.get("events") {
        let hint = Some("e.g. [halt, approval_requested]".to_string());
        let list = r.sequence(events, "events", hint)?;
        hook.events = list.iter().filter_map(|e| r.text(e, "an event")).collect();
    }
    match hook.validate() {
        Ok(()) => Some(hook),
        Err(why) => {
            r.error(item.pos, format!("webhook: {why}"), None);
            None
        }
    }
}

fn read_upstreams(r: &mut Reader, v: &Node) -> Vec<Upstream> {
    let Some(m) = r.mapping(v, "upstreams", &[]) else {
        return Vec::new();
    };
    let mut out: Vec<Upstream> = m.iter().filter_map(|e| read_upstream(r, e)).collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

fn read_upstream(r: &mut Reader, e: &Entry<'_>) -> Option<Upstream> {
    let what = format!("upstream `{}`", e.key());
    if e.key().contains("__") {
        // `__` separates an MCP upstream's name from its tools' names in the gateway.
        r.error(
            e.key_pos,
            format!("upstream name `{}` may not contain `__`", e.key()),
            Some("use `-` or a single `_`".into()),
        );
        return None;
    }
    let m = r.mapping(
        e.value,
        &what,
        &[
            "url",
            "kind",
            "headers",
            "timeout",
            "max_in_flight",
            "write_max_tokens",
        ],
    )?;
    let url_node = r.require(
        &m,
        "url",
        &what,
        Some("e.g. url: http://127.0.0.1:9000".into()),
    )?;
    let url = r.text(url_node, "url")?;
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        r.error(
            url_node.pos,
            format!("url {url:?} must start with http:// or https://"),
            None,
        );
        return None;
    }
    let kinds = [
        ("http", UpstreamKind::Http),
        ("openai", UpstreamKind::OpenAi),
        ("anthropic", UpstreamKind::Anthropic),
        ("mcp", UpstreamKind::Mcp),
    ];
    let kind = match m.get("kind") {
        Some(k) => r.named(k, "kind", &kinds)?,
        None => UpstreamKind::Http,
    };
    if kind == UpstreamKind::Mcp && e.key().contains('.') {
        // Its tools are `mcp.<name>.<tool>` to the policy: server `a.b`'s tool `c` would be
        // server `a`'s tool `b.c`.
        r.error(
            e.key_pos,
            format!("MCP upstream name `{}` may not contain `.`", e.key()),
            Some("its tools are named mcp.<name>.<tool> in the policy; use `-` or `_`".into()),
        );
        return None;
    }
    let timeout_ms = match m.get("timeout") {
        Some(t) => r.duration_ms(t, "timeout")?,
        None => UPSTREAM_TIMEOUT_MS_DEFAULT,
    };
    let headers = match m.get("headers") {
        Some(h) => read_headers(r, h)?,
        None => Vec::new(),
    };
    let max_in_flight = match m.get("max_in_flight") {
        Some(n) => {
            let v = r.uint_at_least(n, "max_in_flight", 1)?;
            if v > UPSTREAM_IN_FLIGHT_MAX as u64 {
                r.error(
                    n.pos,
                    format!(
                        "max_in_flight = {v} is over the most allowed, {UPSTREAM_IN_FLIGHT_MAX}"
                    ),
                    None,
                );
                return None;
            }
            v as usize
        }
        None => UPSTREAM_IN_FLIGHT_MAX_DEFAULT,
    };
    let write_max_tokens = match m.get("write_max_tokens") {
        Some(n) => r.boolean(n, "write_max_tokens")?,
        None => false,
    };
    Some(Upstream {
        name: e.key().to_string(),
        url,
        kind,
        headers,
        timeout_ms,
        max_in_flight,
        write_max_tokens,
    })
}

fn read_headers(r: &mut Reader, h: &Node) -> Option<Vec<(String, String)>> {
    let m = r.mapping(h, "headers", &[])?;
    let mut out = Vec::new();
    for e in m.iter() {
        let name = e.key().to_ascii_lowercase();
        if axum::http::HeaderName::from_bytes(name.as_bytes()).is_err() {
            r.error(
                e.key_pos,
                format!("`{}` is not a header name", e.key()),
                None,
            );
            continue;
        }
        if let Some(value) = r.text(e.value, e.key()) {
            out.push((name, value));
        }
    }
    Some(out)
}

fn read_prices(r: &mut Reader, v: &Node) -> Vec<Price> {
    let Some(m) = r.mapping(v, "prices", &[]) else {
        return Vec::new();
    };
    let mut out: Vec<Price> = m.iter().filter_map(|e| read_price(r, e)).collect();
    out.sort_by(|a, b| a.model.cmp(&b.model));
    out
}

fn read_price(r: &mut Reader, e: &Entry<'_>) -> Option<Price> {
    let what = format!("price of `{}`", e.key());
    let keys = [
        "upstream",
        "input",
        "output",
        "max_output_tokens",
        "reasoning",
    ];
    let m = r.mapping(e.value, &what, &keys)?;
    let field = |r: &mut Reader, key: &str| r.require(&m, key, &what, None);
    let upstream = field(r, "upstream").and_then(|n| r.text(n, "upstream"));
    let input =
        field(r, "input").and_then(|n| r.micros(n, "input", "0.15 (USD per million tokens)"));
    let output =
        field(r, "output").and_then(|n| r.micros(n, "output", "0.60 (USD per million tokens)"));
    let max_output =
        field(r, "max_output_tokens").and_then(|n| r.uint_at_least(n, "max_output_tokens", 1));
    let reasoning = m
        .get("reasoning")
        .map_or(Some(true), |n| r.boolean(n, "reasoning"));
    Some(Price {
        model: e.key().to_string(),
        upstream: upstream?,
        input_micro_usd_per_mtok: input?,
        output_micro_usd_per_mtok: output?,
        max_output_tokens: max_output?,
        reasoning: reasoning?,
    })
}

/// Each price names an upstream that exists and speaks an LLM API: checked on the YAML
/// itself, after every key is read (prices may come before upstreams), for every price that
/// names an upstream, even one with other errors; each error is at the `upstream:` value.
fn check_prices(r: &mut Reader, cfg: &FileConfig, prices: Option<&Node>) {
    let Some(Value::Map(entries)) = prices.map(|n| &n.value) else {
        return;
    };
    let names: Vec<&str> = cfg.upstreams.iter().map(|u| u.name.as_str()).collect();
    for (model, price) in entries {
        let (Some(model), Value::Map(fields)) = (model.as_str(), &price.value) else {
            continue;
        };
        let Some(named) = fields
            .iter()
            .find_map(|(k, v)| (k.as_str() == Some("upstream")).then_some(v))
        else {
            continue;
        };
        let Some(upstream) = named.as_str() else {
            continue;
        };
        match cfg.upstreams.iter().find(|u| u.name == upstream) {
            None => r.error(
                named.pos,
                format!("price of `{model}`: no upstream `{upstream}`"),
                Some(one_of_hint(upstream, &names)),
            ),
            Some(u) if !matches!(u.kind, UpstreamKind::OpenAi | UpstreamKind::Anthropic) => r
                .error(
                    named.pos,
                    format!("price of `{model}`: upstream `{upstream}` is not an LLM API"),
                    Some("give that upstream `kind: openai` or `kind: anthropic`".into()),
                ),
            Some(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn messages(errs: &[Diagnostic]) -> Vec<String> {
        errs.iter()
            .map(|d| format!("{}:{}: {}", d.line, d.col, d.message))
            .collect()
    }

    #[test]
    fn config_files_are_read_with_located_errors() {
        let ok = read_config("listen: 127.0.0.1:9000\ndata_dir: /tmp/w\nfsync: batch\nlimits: {max_body_bytes: 4096, request_timeout: 2s, journal_bytes: 1GiB}\n").unwrap();
        assert_eq!(ok.listen, Some("127.0.0.1:9000".parse().unwrap()));
        assert_eq!(ok.fsync, Some(FsyncMode::Batch));
        assert_eq!(ok.max_body_bytes, Some(4096));
        assert_eq!(ok.request_timeout_ms, Some(2_000));
        assert_eq!(ok.journal_bytes, Some(1 << 30));
        let errs =
            read_config("listne: x\nfsync: sometimes\nexport: {seal_interval: 10ms}\nlimits: {max_body_bytes: 10}\n")
                .unwrap_err();
        let m = messages(&errs);
        assert_eq!(m[0], "1:1: unknown key `listne` in the config");
        assert_eq!(errs[0].hint.as_deref(), Some("did you mean `listen`?"));
        assert_eq!(m[1], "2:8: fsync `sometimes` is not known");
        assert_eq!(m[2], "3:25: export.seal_interval must be at least 1000 ms");
        assert_eq!(
            m[3],
            "4:26: limits.max_body_bytes must be at least 1024 bytes, found 10"
        );
        assert!(messages(&read_config("listen: [\n").unwrap_err())[0].contains("YAML"));
        assert!(read_config("").unwrap() == FileConfig::default());
    }

    #[test]
    fn connections_per_client_default_to_half_of_the_connections() {
        let file = read_config("limits: {max_connections: 10, max_connections_per_client: 3}\n");
        assert_eq!(file.unwrap().max_connections_per_client, Some(3));
        let zero = read_config("limits: {max_connections_per_client: 0}\n").unwrap_err();
        let m = &messages(&zero)[0];
        assert!(
            m.starts_with("1:38: limits.max_connections_per_client"),
            "{m}"
        );
        let mut c = NodeConfig::new("127.0.0.1:0".parse().unwrap(), "/tmp/w", String::new());
        assert_eq!(c.connections_per_client(), 2_048);
        c.max_connections = 1;
        assert_eq!(c.connections_per_client(), 1);
        c.max_connections_per_client = Some(7);
        assert_eq!(c.connections_per_client(), 7);
    }

    #[test]
    fn the_sync_section_is_read_with_every_problem_located() {
        let ok = read_config(
            "sync:\n  listen: 0.0.0.0:7701\n  peers: [\"b:7701\"]\n  members: [a, b]\n  ca: c/ca.pem\n  cert: c/a.pem\n  key: c/a.key\n  pools: {swarm: {cost_usd: 2.5, tokens: 100}}\n  lease: 1m\n  initial_cap_permille: 500\n",
        )
        .unwrap();
        let s = ok.sync.unwrap();
        assert_eq!(s.members, ["a", "b"]);
        assert_eq!(s.pools[0].path, "swarm");
        assert_eq!(
            s.pools[0].limits,
            [
                ("cost_usd".to_owned(), 2_500_000),
                ("tokens".to_owned(), 100)
            ]
        );
        assert_eq!(s.timing.lease_ms, 60_000);
        assert_eq!(s.tuning.initial_cap_permille, 500);
        let errs = read_config(
            "sync:\n  members: [a, A, a]\n  pools: {swarm: {wall_time: 5, tokens: -1}}\n  leese: 1m\n  initial_cap_permille: 1001\n",
        )
        .unwrap_err();
        let m = messages(&errs);
        assert!(
            m.iter()
                .any(|x| x.starts_with("2:16: member `A` is not a node name")),
            "{m:?}"
        );
        assert!(
            m.iter()
                .any(|x| x.starts_with("2:19: member `a` is listed twice")),
            "{m:?}"
        );
        assert!(
            m.iter()
                .any(|x| x.starts_with("3:19: `wall_time` is not a dimension")),
            "{m:?}"
        );
        assert!(
            m.iter().any(|x| x.starts_with("3:41:")),
            "a negative limit: {m:?}"
        );
        assert!(
            m.iter()
                .any(|x| x.starts_with("4:3: unknown key `leese` in sync")),
            "{m:?}"
        );
        assert!(
            m.iter()
                .any(|x| x.contains("initial_cap_permille is at most 1000")),
            "{m:?}"
        );
        assert!(m.iter().any(|x| x.contains("sync needs `ca`")), "{m:?}");
    }

    #[test]
    fn upstreams_and_prices_are_read_and_checked_against_each_other() {
        let text = r#"
upstreams:
  search: {url: "http://127.0.0.1:9000", headers: {X-Api-Key: "env:SEARCH_API_KEY"}, timeout: 5s}
  openai: {url: "http://127.0.0.1:9100/v1", kind: openai, headers: {authorization: "Bearer env:OPENAI_API_KEY"}}
prices:
  gpt-4o-mini: {upstream: openai, input: 0.15, output: 0.60, max_output_tokens: 16384}
"#;
        let cfg = read_config(text).unwrap();
        assert_eq!(cfg.upstreams.len(), 2);
        let openai = &cfg.upstreams[0];
        assert_eq!(
            (openai.name.as_str(), openai.kind),
            ("openai", UpstreamKind::OpenAi)
        );
        assert_eq!(openai.timeout_ms, UPSTREAM_TIMEOUT_MS_DEFAULT);
        let search = &cfg.upstreams[1];
        assert_eq!(
            search.headers,
            [("x-api-key".to_string(), "env:SEARCH_API_KEY".to_string())]
        );
        assert_eq!(search.timeout_ms, 5_000);
        assert_eq!(
            cfg.prices,
            [Price {
                model: "gpt-4o-mini".into(),
                upstream: "openai".into(),
                input_micro_usd_per_mtok: 150_000,
                output_micro_usd_per_mtok: 600_000,
                max_output_tokens: 16_384,
                reasoning: true,
            }]
        );
        // Credentials never show in Debug output.
        let shown = format!("{cfg:?}");
        assert!(
            shown.contains("x-api-key") && !shown.contains("env:SEARCH"),
            "{shown}"
        );

        let bad = "upstreams:\n  search: {url: \"ftp://x\"}\n  tool: {url: \"http://x\"}\nprices:\n  m1: {upstream: tool, input: 1, output: 1, max_output_tokens: 10}\n  m2: {upstream: nope, input: -1, output: 1, max_output_tokens: 10}\n";
        let m = messages(&read_config(bad).unwrap_err());
        assert!(
            m.iter().any(|e| e.starts_with("2:17: url \"ftp://x\"")),
            "{m:?}"
        );
        let local = read_config(
            "upstreams:\n  vllm: {url: \"http://x\", kind: openai, write_max_tokens: true}\n",
        )
        .unwrap();
        assert!(local.upstreams[0].write_max_tokens);
        let dotted = "upstreams:\n  fs.v2: {url: \"http://x\", kind: mcp}\n";
        let d = messages(&read_config(dotted).unwrap_err());
        assert_eq!(d, ["2:3: MCP upstream name `fs.v2` may not contain `.`"]);
        let r = messages(&read_config("prices:\n  m: {upstream: o, input: 1, output: 1, max_output_tokens: 9, reasoning: maybe}\n").unwrap_err());
        assert!(
            r.iter()
                .any(|e| e.starts_with("2:74: reasoning must be true or false")),
            "{r:?}"
        );
        assert!(
            m.iter()
                .any(|e| e.starts_with("6:31:") && e.contains("input")),
            "{m:?}"
        );
        assert!(
            m.iter()
                .any(|e| e == "5:18: price of `m1`: upstream `tool` is not an LLM API"),
            "{m:?}"
        );
        // m2 has a bad input too: its unknown upstream is still reported, at its own place.
        assert!(
            m.iter()
                .any(|e| e == "6:18: price of `m2`: no upstream `nope`"),
            "{m:?}"
        );
    }

    #[test]
    fn resolve_applies_flags_over_env_over_file_and_fills_credentials() {
        let dir = std::env::temp_dir().join(format!("warden-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("node.yaml");
        std::fs::write(
            &file,
            "listen: 127.0.0.1:9001\ndata_dir: /tmp/from-file\noperator_token: from-file-0123456789\nupstreams:\n  openai: {url: \"http://x\", kind: openai, headers: {authorization: \"Bearer env:KEY\"}}\n",
        )
        .unwrap();
        let flags = Flags {
            config: Some(file.clone()),
            data: Some("/tmp/from-flag".into()),
            ..Default::default()
        };
        let env = |k: &str| match k {
            "KEY" => Some("sk-123".to_string()),
            OPERATOR_TOKEN_ENV => Some("from-env-0123456789".to_string()),
            _ => None,
        };
        let r = resolve(flags.clone(), &env).unwrap();
        assert_eq!(r.config.listen, "127.0.0.1:9001".parse().unwrap());
        assert_eq!(r.config.node.data_dir, PathBuf::from("/tmp/from-flag"));
        assert_eq!(
            r.config.operator_token.as_deref(),
            Some("from-env-0123456789")
        );
        assert_eq!(r.config.upstreams[0].headers[0].1, "Bearer sk-123");
        assert_eq!(r.policy_source, "the bundled example policy");
        assert!(!r.config.node.policy_explicit);
        let missing = resolve(flags, &|_| None).err().unwrap().to_string();
        assert!(missing.contains("KEY is not set"), "{missing}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
