//! The node's config file (YAML, every key optional) and how it meets the command line and the
//! environment. [`read_config`] reads the file with every problem located (line:column);
//! [`resolve`] applies, in one place, the precedence: flags over the environment
//! (`WARDEN_OPERATOR_TOKEN`) over the file over the defaults, and yields the [`NodeConfig`]
//! that [`crate::http::start`] runs.
//!
//! ```yaml
//! listen: 127.0.0.1:7700
//! data_dir: /var/lib/warden
//! policy: /etc/warden/policy.yaml
//! operator_token: "at least 16 characters"
//! fsync: always            # always | batch | off
//! limits: {max_body_bytes: 1048576, max_connections: 4096, request_timeout: 30s,
//!          journal_bytes: 4294967296, segment_bytes: 67108864}
//! webhooks:
//!   - {url: "https://ops.example/hook", events: [halt, approval_requested], secret: "..."}
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use warden_supervisor::journal::FsyncMode;
use warden_supervisor::NodeOptions;

use crate::http::MetricsRender;
use crate::limits::{
    BODY_BYTES_MAX_DEFAULT, BODY_BYTES_MAX_MIN, CONNECTIONS_MAX_DEFAULT, OPERATOR_TOKEN_LEN_MIN,
    REQUEST_TIMEOUT_MS_DEFAULT, REQUEST_TIMEOUT_MS_MIN, WEBHOOKS_MAX,
};
use crate::webhook::WebhookConfig;

/// Where `warden node` listens when nothing says otherwise.
pub const LISTEN_DEFAULT: &str = "127.0.0.1:7700";
/// The data directory when nothing says otherwise.
pub const DATA_DIR_DEFAULT: &str = "warden-data";
/// The policy a node runs when none is given: the example policy of DESIGN.md.
pub const POLICY_DEFAULT: &str = include_str!("../../examples/policies/design.yaml");
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
    /// How long one request may take (event streams excepted).
    pub request_timeout_ms: u64,
    /// Where to announce halts and approval requests.
    pub webhooks: Vec<WebhookConfig>,
    /// Renders `/metrics`; set by the process that installed the recorder.
    pub metrics: Option<MetricsRender>,
}

impl NodeConfig {
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
            request_timeout_ms: REQUEST_TIMEOUT_MS_DEFAULT,
            webhooks: Vec::new(),
            metrics: None,
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
}

/// Why a node's configuration could not be had.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The config file has errors, each `line:column: message`.
    #[error("{} has {} error(s):\n{}", path.display(), errors.len(), errors.iter().map(|e| format!("{}:{e}", path.display())).collect::<Vec<_>>().join("\n"))]
    Invalid {
        /// The file.
        path: PathBuf,
        /// Each error, located.
        errors: Vec<String>,
    },
}

/// A resolved config and a description of where its policy came from (for the start-up line).
pub struct Resolved {
    /// The config to run.
    pub config: NodeConfig,
    /// The policy file, or "the bundled example policy".
    pub policy_source: String,
}

/// Applies every source in one place: flags over the environment's operator token
/// (`env_token`, the value of [`OPERATOR_TOKEN_ENV`]) over the config file over the defaults.
/// Reads the config file and the policy file it names.
pub fn resolve(flags: Flags, env_token: Option<String>) -> Result<Resolved, ConfigError> {
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
    config.operator_token = env_token.filter(|t| !t.is_empty()).or(file.operator_token);
    if let Some(v) = file.max_body_bytes {
        config.max_body_bytes = v;
    }
    if let Some(v) = file.max_connections {
        config.max_connections = v;
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
    Ok(Resolved {
        config,
        policy_source,
    })
}

fn read(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })
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
    pub fsync: Option<FsyncMode>,
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
    pub webhooks: Vec<WebhookConfig>,
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
                Some(t) if t.len() >= OPERATOR_TOKEN_LEN_MIN => cfg.operator_token = Some(t),
                _ => errors.push(format!("{}: operator_token must be text of at least 16 characters", at(v))),
            },
            "fsync" => match text_of(v).as_deref() {
                Some("always") => cfg.fsync = Some(FsyncMode::Always),
                Some("batch") => cfg.fsync = Some(FsyncMode::Batch),
                Some("off") => cfg.fsync = Some(FsyncMode::Off),
                _ => errors.push(format!("{}: fsync must be always, batch or off", at(v))),
            },
            "limits" => match &v.data {
                Data::Mapping(m) => {
                    for (lk, lv) in m.iter() {
                        match (text_of(lk).as_deref(), &lv.data) {
                            (Some("max_body_bytes"), Data::Value(Scalar::Integer(n))) if *n >= BODY_BYTES_MAX_MIN as i64 => {
                                cfg.max_body_bytes = Some(*n as usize)
                            }
                            (Some("max_body_bytes"), _) => {
                                errors.push(format!("{}: limits.max_body_bytes must be a number of at least 1024", at(lv)))
                            }
                            (Some("request_timeout"), _) => match text_of(lv)
                                .as_deref()
                                .and_then(warden_actors::policy::source::parse_duration_ms)
                            {
                                Some(ms) if ms >= REQUEST_TIMEOUT_MS_MIN => cfg.request_timeout_ms = Some(ms),
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
                    if items.len() > WEBHOOKS_MAX {
                        errors.push(format!(
                            "{}: at most {} webhooks",
                            at(v),
                            WEBHOOKS_MAX
                        ));
                    }
                    for item in items {
                        let Data::Mapping(m) = &item.data else {
                            errors.push(format!("{}: a webhook is a mapping with url, events and secret", at(item)));
                            continue;
                        };
                        let mut hook = WebhookConfig {
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
    fn config_files_are_read_with_located_errors() {
        let ok = read_config("listen: 127.0.0.1:9000\ndata_dir: /tmp/w\nfsync: batch\nlimits: {max_body_bytes: 4096}\n").unwrap();
        assert_eq!(ok.listen, Some("127.0.0.1:9000".parse().unwrap()));
        assert_eq!(ok.fsync, Some(FsyncMode::Batch));
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
