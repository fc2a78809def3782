//! The config's `export` section: the journal's signing key, how often segments are sealed,
//! and where the audit journal is exported (docs/export.md).
//!
//! ```yaml
//! export:
//!   signing_key: /etc/warden/audit.key   # or env:NAME (64 hex digits); default DATA_DIR/audit.key, made at first start
//!   seal_interval: 15m                   # close and sign the open segment this often when it has entries
//!   s3:
//!     bucket: warden-audit               # required
//!     prefix: prod/{node}                # objects are PREFIX/<first:020>.seg and .sig; {node}: this node's name (the default)
//!     endpoint: http://127.0.0.1:9000    # an S3-compatible server; AWS when absent
//!     region: us-east-1
//!     retention: {mode: compliance, days: 365}   # object lock on every upload
//!   postgres:
//!     url: env:WARDEN_POSTGRES_URL       # or the URL itself
//!     node: warden-1                     # default: the cluster name, else the host name
//!     batch: 1000                        # most entries per transaction
//! ```
//!
//! S3 credentials come from the environment (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
//! `AWS_SESSION_TOKEN`), never from the file.

use std::path::PathBuf;

use warden_actors::yaml::{Entry, Node, Reader};
use warden_supervisor::limits::SEAL_INTERVAL_MS_DEFAULT;

use super::{ConfigError, Redacted};
use crate::limits::{EXPORT_BATCH_ENTRIES_DEFAULT, EXPORT_BATCH_ENTRIES_MAX, SEAL_INTERVAL_MS_MIN};

/// The `export` section as read from the file (environment references not yet resolved).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ExportSection {
    /// `signing_key`: a key file, or `env:NAME`.
    pub signing_key: Option<String>,
    /// `seal_interval`, ms.
    pub seal_interval_ms: Option<u64>,
    /// `s3`.
    pub s3: Option<S3Settings>,
    /// `postgres`, its `url` as written.
    pub postgres: Option<PostgresSection>,
}

/// The `export.postgres` section as read.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PostgresSection {
    /// `url`: the connection URL, or `env:NAME`.
    pub url: String,
    /// `node`.
    pub node: Option<String>,
    /// `batch`.
    pub batch: Option<usize>,
}

/// How the journal is sealed and exported, every source applied.
#[derive(Clone, Debug, PartialEq)]
pub struct ExportSettings {
    /// Where the signing key comes from.
    pub signing_key: SigningKeySource,
    /// Close and seal the open segment this often (ms) when it has entries.
    pub seal_interval_ms: u64,
    /// The S3 archive, if configured.
    pub s3: Option<S3Settings>,
    /// The PostgreSQL sink, if configured.
    pub postgres: Option<PostgresSettings>,
}

impl Default for ExportSettings {
    fn default() -> Self {
        Self {
            signing_key: SigningKeySource::DataDir,
            seal_interval_ms: SEAL_INTERVAL_MS_DEFAULT,
            s3: None,
            postgres: None,
        }
    }
}

/// Where the node's Ed25519 signing key comes from.
#[derive(Clone, Debug, PartialEq)]
pub enum SigningKeySource {
    /// `DATA_DIR/audit.key`, made (mode 0600) at first start.
    DataDir,
    /// A key file (64 hex digits), which must exist and be private.
    File(PathBuf),
    /// The value of an environment variable (64 hex digits).
    Env {
        /// The variable's name.
        var: String,
        /// Its value.
        seed: Redacted,
    },
}

/// The `export.s3` section.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct S3Settings {
    /// The bucket.
    pub bucket: String,
    /// The key prefix (no leading or trailing `/`); objects are `PREFIX/<first:020>.seg|.sig`.
    /// `{node}` in it stands for this node's name (the cluster name, else the host name), so
    /// nodes that share one config file (a StatefulSet) keep apart; it is the default.
    pub prefix: String,
    /// An S3-compatible server's URL; `None` is AWS.
    pub endpoint: Option<String>,
    /// The region (default `us-east-1`).
    pub region: String,
    /// Object lock on every upload.
    pub retention: Option<Retention>,
}

/// S3 Object Lock retention for each uploaded object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Retention {
    /// The lock mode.
    pub mode: LockMode,
    /// Days from the upload the object may not be deleted or overwritten.
    pub days: u32,
}

/// An S3 Object Lock mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LockMode {
    /// Users with a special permission may still delete.
    Governance,
    /// No one may delete until the date, not even the account's root.
    Compliance,
}

impl LockMode {
    /// The mode as S3 spells it (`GOVERNANCE`, `COMPLIANCE`).
    pub fn as_s3(self) -> &'static str {
        match self {
            LockMode::Governance => "GOVERNANCE",
            LockMode::Compliance => "COMPLIANCE",
        }
    }
}

/// The `export.postgres` section, resolved.
#[derive(Clone, Debug, PartialEq)]
pub struct PostgresSettings {
    /// The connection URL (it may hold a password: never print it).
    pub url: Redacted,
    /// This node's name in the table (the key is `(node, seq)`).
    pub node: String,
    /// Most entries per transaction.
    pub batch: usize,
}

const KEYS: [&str; 4] = ["signing_key", "seal_interval", "s3", "postgres"];

/// Reads the `export` section, every problem at its line and column.
pub(super) fn read_export(r: &mut Reader, v: &Node) -> Option<ExportSection> {
    let m = r.mapping(v, "export", &KEYS)?;
    let mut s = ExportSection::default();
    for e in m.iter() {
        read_key(r, &mut s, e);
    }
    Some(s)
}

fn read_key(r: &mut Reader, s: &mut ExportSection, e: &Entry<'_>) {
    let v = e.value;
    match e.key() {
        "signing_key" => s.signing_key = nonempty(r, v, "export.signing_key"),
        "seal_interval" => {
            let ms = r.duration_ms(v, "export.seal_interval");
            if ms.is_some_and(|ms| ms < SEAL_INTERVAL_MS_MIN) {
                let why =
                    format!("export.seal_interval must be at least {SEAL_INTERVAL_MS_MIN} ms");
                r.error(v.pos, why, None);
            } else {
                s.seal_interval_ms = ms;
            }
        }
        "s3" => s.s3 = read_s3(r, v),
        _ => s.postgres = read_postgres(r, v),
    }
}

fn nonempty(r: &mut Reader, v: &Node, what: &str) -> Option<String> {
    let t = r.text(v, what)?;
    if t.trim().is_empty() {
        r.error(v.pos, format!("{what} is empty"), None);
        return None;
    }
    Some(t)
}

fn read_s3(r: &mut Reader, v: &Node) -> Option<S3Settings> {
    const S3: [&str; 5] = ["bucket", "prefix", "endpoint", "region", "retention"];
    let m = r.mapping(v, "export.s3", &S3)?;
    let mut s = S3Settings {
        bucket: String::new(),
        prefix: "{node}".into(),
        endpoint: None,
        region: "us-east-1".into(),
        retention: None,
    };
    for e in m.iter() {
        let n = e.value;
        match e.key() {
            "bucket" => s.bucket = bucket(r, n).unwrap_or_default(),
            "prefix" => s.prefix = prefix(r, n).unwrap_or_default(),
            "endpoint" => s.endpoint = endpoint(r, n),
            "region" => s.region = nonempty(r, n, "export.s3.region").unwrap_or_default(),
            _ => s.retention = retention(r, n),
        }
    }
    let hint = "the bucket the segments go to, e.g. bucket: warden-audit".to_string();
    r.require(&m, "bucket", "export.s3", Some(hint))?;
    Some(s)
}

/// An S3 bucket name: 3-63 of a-z, 0-9, `.` and `-`.
fn bucket(r: &mut Reader, n: &Node) -> Option<String> {
    let b = r.text(n, "export.s3.bucket")?;
    let ok = (3..=63).contains(&b.len())
        && b.bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'.' || c == b'-');
    if !ok {
        r.error(
            n.pos,
            format!("`{b}` is not an S3 bucket name: 3-63 of a-z, 0-9, '.' and '-'"),
            None,
        );
        return None;
    }
    Some(b)
}

/// A key prefix, its slashes at the ends trimmed; no empty or dot parts.
fn prefix(r: &mut Reader, n: &Node) -> Option<String> {
    let p = r.text(n, "export.s3.prefix")?;
    let p = p.trim_matches('/').to_string();
    let bad = p
        .split('/')
        .any(|part| part == "." || part == ".." || (part.is_empty() && !p.is_empty()))
        || p.chars().any(|c| c.is_control());
    if bad {
        r.error(
            n.pos,
            format!("export.s3.prefix `{p}` has an empty, `.` or `..` part or a control character"),
            None,
        );
        return None;
    }
    Some(p)
}

fn endpoint(r: &mut Reader, n: &Node) -> Option<String> {
    let url = r.text(n, "export.s3.endpoint")?;
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        let hint = Some("e.g. endpoint: http://127.0.0.1:9000".into());
        r.error(
            n.pos,
            "export.s3.endpoint must be an http:// or https:// URL",
            hint,
        );
        return None;
    }
    Some(url.trim_end_matches('/').to_string())
}

fn retention(r: &mut Reader, n: &Node) -> Option<Retention> {
    let m = r.mapping(n, "export.s3.retention", &["mode", "days"])?;
    let modes = [
        ("governance", LockMode::Governance),
        ("compliance", LockMode::Compliance),
    ];
    let mode = m
        .get("mode")
        .and_then(|v| r.named(v, "export.s3.retention.mode", &modes));
    let days = m.get("days").and_then(|v| {
        let d = r.uint32(v, "export.s3.retention.days")?;
        if d == 0 {
            r.error(v.pos, "export.s3.retention.days must be at least 1", None);
            return None;
        }
        Some(d)
    });
    let hint = || Some("e.g. retention: {mode: compliance, days: 365}".to_string());
    r.require(&m, "mode", "export.s3.retention", hint());
    r.require(&m, "days", "export.s3.retention", hint());
    Some(Retention {
        mode: mode?,
        days: days?,
    })
}

fn read_postgres(r: &mut Reader, v: &Node) -> Option<PostgresSection> {
    let m = r.mapping(v, "export.postgres", &["url", "node", "batch"])?;
    let mut s = PostgresSection::default();
    for e in m.iter() {
        let n = e.value;
        match e.key() {
            "url" => s.url = postgres_url(r, n).unwrap_or_default(),
            "node" => s.node = node_name(r, n),
            _ => {
                s.batch = r
                    .uint_at_least(n, "export.postgres.batch", 1)
                    .filter(|b| {
                        let ok = *b <= EXPORT_BATCH_ENTRIES_MAX as u64;
                        if !ok {
                            let why = format!(
                                "export.postgres.batch is at most {EXPORT_BATCH_ENTRIES_MAX}"
                            );
                            r.error(n.pos, why, None);
                        }
                        ok
                    })
                    .map(|b| b as usize)
            }
        }
    }
    let hint = "e.g. url: env:WARDEN_POSTGRES_URL (postgres://user:password@host/db)".to_string();
    r.require(&m, "url", "export.postgres", Some(hint))?;
    Some(s)
}

fn postgres_url(r: &mut Reader, n: &Node) -> Option<String> {
    let url = nonempty(r, n, "export.postgres.url")?;
    let ok = url.starts_with("env:")
        || url.starts_with("postgres://")
        || url.starts_with("postgresql://");
    if !ok {
        let hint = Some("write postgres://user:password@host:5432/db, or env:NAME to read it from the environment".into());
        r.error(
            n.pos,
            "export.postgres.url must be a postgres:// URL or env:NAME",
            hint,
        );
        return None;
    }
    if !url.starts_with("env:") {
        // Parsed as the sink will parse it (TLS asked for is refused); errors never hold it.
        if let Err(e) = crate::export::postgres::connect_config(&url) {
            r.error(n.pos, e.to_string(), None);
            return None;
        }
    }
    Some(url)
}

fn node_name(r: &mut Reader, n: &Node) -> Option<String> {
    let name = r.text(n, "export.postgres.node")?;
    if !warden_sync::members::valid_name(&name) {
        let why = format!("`{name}` is not a node name: 1-63 of a-z, 0-9 and '-'");
        r.error(n.pos, why, None);
        return None;
    }
    Some(name)
}

/// The section with every `env:NAME` read through `env`, and the defaults applied; the node
/// name (`export.postgres.node`, `{node}` in `export.s3.prefix`) defaults to `cluster_name`,
/// else the host name.
///
/// # Errors
/// [`ConfigError::MissingExportEnv`] for an unset variable, [`ConfigError::Export`] for a
/// variable that holds a PostgreSQL URL the sink cannot use.
pub(super) fn resolve_export(
    section: Option<ExportSection>,
    cluster_name: Option<String>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<ExportSettings, ConfigError> {
    let Some(s) = section else {
        return Ok(ExportSettings::default());
    };
    let lookup = |key: &str, var: &str| {
        env(var)
            .filter(|v| !v.trim().is_empty())
            .ok_or_else(|| ConfigError::MissingExportEnv {
                key: key.to_string(),
                var: var.to_string(),
            })
    };
    let signing_key = match s.signing_key {
        None => SigningKeySource::DataDir,
        Some(k) => match k.strip_prefix("env:") {
            Some(var) => SigningKeySource::Env {
                var: var.to_string(),
                seed: Redacted(lookup("export.signing_key", var)?),
            },
            None => SigningKeySource::File(PathBuf::from(k)),
        },
    };
    // This node's name: the cluster's, else the host's (a StatefulSet pod's name).
    let node = cluster_name.unwrap_or_else(host_name);
    let s3 = s.s3.map(|mut s3| {
        s3.prefix = s3.prefix.replace("{node}", &node);
        s3
    });
    let postgres = match s.postgres {
        None => None,
        Some(p) => Some(PostgresSettings {
            url: Redacted(match p.url.strip_prefix("env:") {
                Some(var) => {
                    let url = lookup("export.postgres.url", var)?;
                    crate::export::postgres::connect_config(&url).map_err(|e| {
                        ConfigError::Export(format!("export.postgres.url: ${var}: {e}"))
                    })?;
                    url
                }
                None => p.url,
            }),
            node: p.node.unwrap_or_else(|| node.clone()),
            batch: p.batch.unwrap_or(EXPORT_BATCH_ENTRIES_DEFAULT),
        }),
    };
    Ok(ExportSettings {
        signing_key,
        seal_interval_ms: s.seal_interval_ms.unwrap_or(SEAL_INTERVAL_MS_DEFAULT),
        s3,
        postgres,
    })
}

/// This machine's host name (Linux's, else `$HOSTNAME`), else `warden`.
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "warden".into())
}

#[cfg(test)]
mod tests {
    use super::super::{read_config, resolve, ConfigError, Flags};
    use super::*;

    fn errors(text: &str) -> Vec<String> {
        read_config(text)
            .unwrap_err()
            .iter()
            .map(|d| format!("{}:{}: {}", d.line, d.col, d.message))
            .collect()
    }

    #[test]
    fn a_full_export_section_reads_and_resolves_with_the_environment() {
        let text = "export:\n  signing_key: env:AUDIT_KEY\n  seal_interval: 2s\n  s3: {bucket: warden-audit, prefix: /prod/w1/, endpoint: 'http://127.0.0.1:9000/', retention: {mode: compliance, days: 30}}\n  postgres: {url: env:PG_URL, node: w-1, batch: 500}\n";
        let file = read_config(text).unwrap();
        let s3 = file.export.as_ref().unwrap().s3.clone().unwrap();
        assert_eq!(s3.prefix, "prod/w1");
        assert_eq!(s3.endpoint.as_deref(), Some("http://127.0.0.1:9000"));
        assert_eq!(s3.region, "us-east-1");
        let retention = s3.retention.unwrap();
        assert_eq!((retention.mode.as_s3(), retention.days), ("COMPLIANCE", 30));
        let env = |v: &str| match v {
            "AUDIT_KEY" => Some("ab".repeat(32)),
            "PG_URL" => Some("postgres://u:secret@127.0.0.1/db".into()),
            _ => None,
        };
        let e = resolve_export(file.export.clone(), None, &env).unwrap();
        assert_eq!(e.seal_interval_ms, 2_000);
        let pg = e.postgres.unwrap();
        assert_eq!((pg.node.as_str(), pg.batch), ("w-1", 500));
        assert_eq!(pg.url.0, "postgres://u:secret@127.0.0.1/db");
        let two = read_config("export: {s3: {bucket: b-1, prefix: 'audit/{node}/'}}").unwrap();
        let s3 = resolve_export(two.export, Some("warden-2".into()), &|_| None)
            .unwrap()
            .s3
            .unwrap();
        assert_eq!(s3.prefix, "audit/warden-2", "{{node}} is this node's name");
        assert!(
            !format!("{pg:?}").contains("secret"),
            "the URL is never printed"
        );
        assert!(
            matches!(e.signing_key, SigningKeySource::Env { ref var, .. } if var == "AUDIT_KEY")
        );
        // An unset variable is an error naming the key and the variable.
        let none = |_: &str| None;
        assert_eq!(
            resolve_export(file.export.clone(), None, &none)
                .unwrap_err()
                .to_string(),
            "export.signing_key: the environment variable AUDIT_KEY is not set; set it or write the value in the config"
        );
        // A variable holding a URL the sink cannot use (TLS asked for) stops the start too,
        // without printing the URL.
        let tls = |v: &str| match v {
            "AUDIT_KEY" => Some("ab".repeat(32)),
            _ => Some("postgres://u:secret@h/db?sslmode=require".into()),
        };
        let e = resolve_export(file.export, None, &tls)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("$PG_URL") && e.contains("sslmode=require"),
            "{e}"
        );
        assert!(!e.contains("secret"), "{e}");
    }

    #[test]
    fn defaults_seal_every_15_minutes_with_the_data_dir_key_and_export_nothing() {
        let e = resolve_export(None, None, &|_| None).unwrap();
        assert_eq!(e, ExportSettings::default());
        assert_eq!(e.signing_key, SigningKeySource::DataDir);
        assert_eq!(e.seal_interval_ms, 15 * 60 * 1_000);
        let only_pg = read_config("export: {postgres: {url: 'postgres://h/db'}}")
            .unwrap()
            .export;
        let pg = resolve_export(only_pg.clone(), Some("node-b".into()), &|_| None)
            .unwrap()
            .postgres
            .unwrap();
        assert_eq!((pg.node.as_str(), pg.batch), ("node-b", 1_000));
        let pg = resolve_export(only_pg, None, &|_| None)
            .unwrap()
            .postgres
            .unwrap();
        assert!(!pg.node.is_empty(), "the host name");
    }

    #[test]
    fn bad_export_keys_are_located() {
        let m = errors(
            "export:\n  s3: {prefix: a}\n  postgres: {url: 'mysql://x', batch: 0}\n  sign_key: x\n",
        );
        assert!(
            m.contains(&"2:7: export.s3 needs `bucket`".to_string()),
            "{m:?}"
        );
        assert!(
            m.iter()
                .any(|l| l.starts_with("3:19: export.postgres.url must be")),
            "{m:?}"
        );
        assert!(
            m.iter()
                .any(|l| l.starts_with("3:39: export.postgres.batch")),
            "{m:?}"
        );
        assert!(
            m.iter()
                .any(|l| l.starts_with("4:3: unknown key `sign_key`")),
            "{m:?}"
        );
        let m = errors("export: {s3: {bucket: Bad_Bucket, prefix: 'a//b', endpoint: 'ftp://x', retention: {mode: forever}}}");
        assert_eq!(m.len(), 5, "{m:?}");
        assert!(m[0].contains("not an S3 bucket name"), "{m:?}");
        assert!(m[1].contains("empty, `.` or `..` part"), "{m:?}");
        assert!(m[2].contains("http:// or https://"), "{m:?}");
        assert!(m[3].contains("needs `days`"), "{m:?}");
        assert!(m[4].contains("mode `forever`"), "{m:?}");
        let m = errors(
            "export: {postgres: {url: 'postgres://h/db', node: 'Bad Name'}, signing_key: ''}",
        );
        assert_eq!(m.len(), 2, "{m:?}");
        let m = errors("export:\n  postgres: {url: 'postgres://u:pw@h/db?sslmode=verify-full'}\n");
        assert_eq!(m.len(), 1, "{m:?}");
        assert!(
            m[0].starts_with("2:19: export.postgres url: sslmode=verify-full: TLS to PostgreSQL is not supported yet"),
            "{m:?}"
        );
        assert!(!m[0].contains("pw@"), "{m:?}");
    }

    #[test]
    fn an_unset_postgres_url_variable_stops_the_start_with_its_name() {
        let dir = std::env::temp_dir().join(format!("warden-export-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("node.yaml");
        std::fs::write(&file, "export: {postgres: {url: env:NOPE_PG_URL}}\n").unwrap();
        let flags = Flags {
            config: Some(file),
            ..Default::default()
        };
        let Err(e) = resolve(flags, &|_| None) else {
            panic!("an unset variable must stop the start");
        };
        assert!(matches!(e, ConfigError::MissingExportEnv { .. }));
        assert_eq!(
            e.to_string(),
            "export.postgres.url: the environment variable NOPE_PG_URL is not set; set it or write the value in the config"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
