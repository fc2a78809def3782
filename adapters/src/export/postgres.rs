//! The PostgreSQL audit sink: every journal entry, exactly once, as a row of `warden_audit`
//! (see docs/export.md, "PostgreSQL").
//!
//! The journal stays the source of truth: the sink reads the acknowledged entries from the
//! files (the journal's `Tail`) and never slows a decision down. Falling behind shows as
//! `warden_export_lag_entries{sink="postgres"}` and a log line every
//! [`LAG_LOG_INTERVAL`] while the lag is over [`LAG_LOG_ENTRIES`].
//!
//! ## Exactly once
//! The row key is `(node, seq)`. At every (re)connection the sink reads
//! `max(seq)` of its node and goes on after it; each batch is one transaction
//! (`INSERT ... SELECT FROM unnest(...) ON CONFLICT DO NOTHING`), and the confirmed mark is
//! published only after its commit. Rows are never overwritten: a row already there whose hash
//! differs from the journal's, a first new entry that does not link to the last exported one,
//! or a database ahead of the local journal stops the export (a log line, `warden_export_up`
//! 0, the error counter): another node exports under the same name, or the journal was
//! replaced.
//!
//! ## TLS
//! Not supported yet: the connection is plain TCP (or a Unix socket). A URL that asks for TLS
//! (`sslmode=require`, or any explicit `sslmode` but `disable`) is refused, never downgraded.

use std::convert::Infallible;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::sync::watch;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, NoTls, Statement};
use warden_supervisor::audit::{self, Columns, Filter};
use warden_supervisor::journal::records::Record;
use warden_supervisor::journal::{Entry, EntryKind, Journal, JournalError};

use warden_supervisor::journal::tail::Tail;

use super::{log, Backoff};
pub use crate::config::PostgresSettings;
use crate::limits::EXPORT_POLL_MS;

/// The sink label of every metric.
const SINK: &str = "postgres";
/// A lag over this many entries is logged every [`LAG_LOG_INTERVAL`].
pub const LAG_LOG_ENTRIES: u64 = 10_000;
/// How often a lag over [`LAG_LOG_ENTRIES`] is logged.
pub const LAG_LOG_INTERVAL: Duration = Duration::from_secs(30);
/// Most payload bytes in one INSERT (a batch of large entries is split: PostgreSQL takes at
/// most 1 GiB per parameter).
pub const BATCH_PAYLOAD_BYTES_MAX: usize = 32 << 20;
/// Longest wait for one statement (connecting, one batch's transaction): past it the
/// connection is dropped and made again (a hung server cannot stall the sink forever).
pub const STATEMENT_TIMEOUT: Duration = Duration::from_secs(60);

/// The table and its indexes, created if missing. One row per journal entry of each node.
pub const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS warden_audit (
    node            text        NOT NULL,
    seq             bigint      NOT NULL,
    ts              timestamptz NOT NULL,
    ts_ms           bigint      NOT NULL,
    kind            text        NOT NULL,
    format          smallint    NOT NULL,
    agent           text,
    verdict         text,
    rule            text,
    pool            text,
    tokens          bigint,
    cost_micro_usd  bigint,
    prev_hash       bytea       NOT NULL,
    hash            bytea       NOT NULL,
    payload         bytea       NOT NULL,
    entry           jsonb,
    PRIMARY KEY (node, seq)
);
CREATE INDEX IF NOT EXISTS warden_audit_agent_ts ON warden_audit (agent, ts) WHERE agent IS NOT NULL;
CREATE INDEX IF NOT EXISTS warden_audit_kind_ts ON warden_audit (kind, ts);
CREATE INDEX IF NOT EXISTS warden_audit_ts ON warden_audit (ts);
CREATE INDEX IF NOT EXISTS warden_audit_verdict_ts ON warden_audit (verdict, ts) WHERE verdict IS NOT NULL;
";

/// One batch's INSERT: columns as arrays, unnested; rows already there are left alone (and
/// checked by the caller).
const INSERT: &str = "
INSERT INTO warden_audit (node, seq, ts, ts_ms, kind, format, agent, verdict, rule, pool,
                          tokens, cost_micro_usd, prev_hash, hash, payload, entry)
SELECT $1, u.seq, timestamptz 'epoch' + least(u.ts_ms, 9000000000000000) * interval '1 millisecond', -- (clamped: about year 287,000)
       u.ts_ms, u.kind, u.format, u.agent, u.verdict, u.rule, u.pool, u.tokens, u.cost,
       u.prev_hash, u.hash, u.payload, u.entry::jsonb
FROM unnest($2::bigint[], $3::bigint[], $4::text[], $5::smallint[], $6::text[], $7::text[],
            $8::text[], $9::text[], $10::bigint[], $11::bigint[], $12::bytea[], $13::bytea[],
            $14::bytea[], $15::text[])
     AS u(seq, ts_ms, kind, format, agent, verdict, rule, pool, tokens, cost, prev_hash, hash,
          payload, entry)
ON CONFLICT (node, seq) DO NOTHING
RETURNING seq";

/// Why the sink or a query failed.
#[derive(Debug, thiserror::Error)]
pub enum PostgresError {
    /// The URL is not usable (unparsable, or it asks for TLS).
    #[error("export.postgres url: {0}")]
    Url(String),
    /// The database said no, or could not be reached (its cause is in the text, not a
    /// source: it would print twice).
    #[error("postgres: {}", with_cause(.0))]
    Db(tokio_postgres::Error),
    /// A statement took longer than [`STATEMENT_TIMEOUT`].
    #[error("postgres: no answer within {0:?}")]
    Timeout(Duration),
    /// The local journal could not be read.
    #[error(transparent)]
    Journal(#[from] JournalError),
    /// The database holds rows this journal did not write: exporting stops (never
    /// overwritten).
    #[error("{0}")]
    Refused(String),
}

/// A client error with its cause (`error connecting to server: Connection refused`): the
/// log lines are one line each, without a chain to walk.
fn with_cause(e: &tokio_postgres::Error) -> String {
    match std::error::Error::source(e) {
        Some(cause) => format!("{e}: {cause}"),
        None => e.to_string(),
    }
}

impl From<tokio_postgres::Error> for PostgresError {
    fn from(e: tokio_postgres::Error) -> Self {
        PostgresError::Db(e)
    }
}

/// Checks a URL (or `key=value` string) and reads it: TLS is refused (see the module docs).
/// Errors never contain the URL.
pub fn connect_config(url: &str) -> Result<tokio_postgres::Config, PostgresError> {
    if let Some(mode) = explicit_sslmode(url) {
        if !mode.eq_ignore_ascii_case("disable") {
            return Err(PostgresError::Url(format!(
                "sslmode={mode}: TLS to PostgreSQL is not supported yet; connect over a trusted network or a Unix socket with sslmode=disable (or no sslmode)"
            )));
        }
    }
    let mut config: tokio_postgres::Config = url
        .parse()
        .map_err(|e: tokio_postgres::Error| PostgresError::Url(e.to_string()))?;
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(Duration::from_secs(5));
    }
    Ok(config)
}

/// The `sslmode` a URL (`?sslmode=...`) or `key=value` string names, if it names one.
fn explicit_sslmode(url: &str) -> Option<String> {
    let lower = url.to_ascii_lowercase();
    let at = lower.find("sslmode")?;
    let rest = lower[at + "sslmode".len()..].trim_start();
    let value = rest.strip_prefix('=')?.trim_start();
    let end = value
        .find(|c: char| c == '&' || c == '#' || c.is_whitespace())
        .unwrap_or(value.len());
    Some(value[..end].to_string())
}

/// Connects (plain, see the module docs); the connection runs on its own task until the
/// client is dropped.
pub async fn connect(config: &tokio_postgres::Config) -> Result<Client, PostgresError> {
    let (client, connection) = timed(config.connect(NoTls)).await??;
    tokio::spawn(async move {
        // Its error reaches the client's next call.
        let _ = connection.await;
    });
    Ok(client)
}

async fn timed<F: std::future::Future>(f: F) -> Result<F::Output, PostgresError> {
    tokio::time::timeout(STATEMENT_TIMEOUT, f)
        .await
        .map_err(|_| PostgresError::Timeout(STATEMENT_TIMEOUT))
}

/// Creates [`SCHEMA`] if missing.
pub async fn ensure_schema(client: &Client) -> Result<(), PostgresError> {
    timed(client.batch_execute(SCHEMA)).await??;
    Ok(())
}

/// Prepares the batch INSERT [`write_batch`] runs (once per connection).
pub async fn prepare_insert(client: &Client) -> Result<Statement, PostgresError> {
    Ok(timed(client.prepare(INSERT)).await??)
}

/// `text` replaced where PostgreSQL refuses it: NUL (U+0000) becomes U+FFFD. (`text` and
/// `jsonb` cannot hold NUL; the exact bytes are in `payload`.)
fn pg_text(text: &str) -> String {
    text.replace('\0', "\u{FFFD}")
}

/// The payload as `jsonb` text: NUL in any string or key replaced ([`pg_text`]); `None` when
/// it is not JSON.
fn jsonb_text(payload: &[u8]) -> Option<String> {
    fn clean(v: Value) -> Value {
        match v {
            Value::String(s) => Value::String(pg_text(&s)),
            Value::Array(items) => Value::Array(items.into_iter().map(clean).collect()),
            Value::Object(map) => Value::Object(
                map.into_iter()
                    .map(|(k, v)| (pg_text(&k), clean(v)))
                    .collect(),
            ),
            other => other,
        }
    }
    let value: Value = serde_json::from_slice(payload).ok()?;
    serde_json::to_string(&clean(value)).ok()
}

fn sql_int(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// The columns of one batch, as arrays for `unnest`.
#[derive(Default)]
struct Batch {
    seq: Vec<i64>,
    ts_ms: Vec<i64>,
    kind: Vec<&'static str>,
    format: Vec<i16>,
    agent: Vec<Option<String>>,
    verdict: Vec<Option<&'static str>>,
    rule: Vec<Option<String>>,
    pool: Vec<Option<String>>,
    tokens: Vec<Option<i64>>,
    cost: Vec<Option<i64>>,
    prev_hash: Vec<Vec<u8>>,
    hash: Vec<Vec<u8>>,
    payload: Vec<Vec<u8>>,
    entry: Vec<Option<String>>,
}

impl Batch {
    fn push(&mut self, e: &Entry) {
        let c = Record::parse(e)
            .map(|r| audit::columns_of(&r))
            .unwrap_or_default();
        let Columns {
            agent,
            verdict,
            rule,
            pool,
            tokens,
            cost_micro_usd,
        } = c;
        self.seq.push(sql_int(e.seq));
        self.ts_ms.push(sql_int(e.ts_ms));
        self.kind.push(e.kind.name());
        self.format.push(i16::from(e.format));
        self.agent.push(agent.map(|a| pg_text(a.as_str())));
        self.verdict.push(verdict.map(|v| v.name()));
        self.rule.push(rule.as_deref().map(pg_text));
        self.pool.push(pool.as_deref().map(pg_text));
        self.tokens.push(tokens.map(sql_int));
        self.cost.push(cost_micro_usd.map(sql_int));
        self.prev_hash.push(e.prev_hash.to_vec());
        self.hash.push(e.hash.to_vec());
        self.payload.push(e.payload.clone());
        self.entry.push(jsonb_text(&e.payload));
    }

    fn params<'a>(&'a self, node: &'a String) -> [&'a (dyn ToSql + Sync); 15] {
        [
            node,
            &self.seq,
            &self.ts_ms,
            &self.kind,
            &self.format,
            &self.agent,
            &self.verdict,
            &self.rule,
            &self.pool,
            &self.tokens,
            &self.cost,
            &self.prev_hash,
            &self.hash,
            &self.payload,
            &self.entry,
        ]
    }
}

/// Writes `entries` (consecutive, in order) as this node's rows in one transaction. Rows
/// already there are kept if their hash is the journal's; otherwise nothing of the batch is
/// committed and the answer is [`PostgresError::Refused`]. Returns how many rows were new.
pub async fn write_batch(
    client: &mut Client,
    insert: &Statement,
    node: &str,
    entries: &[Entry],
) -> Result<u64, PostgresError> {
    let mut batch = Batch::default();
    entries.iter().for_each(|e| batch.push(e));
    let node = node.to_string();
    let tx = timed(client.transaction()).await??;
    let inserted = timed(tx.query(insert, &batch.params(&node))).await??.len() as u64;
    if inserted < entries.len() as u64 {
        check_existing(&tx, &node, entries).await?;
    }
    timed(tx.commit()).await??;
    Ok(inserted)
}

/// Every row of `entries`' range already in the table has the journal's hash.
async fn check_existing(
    tx: &tokio_postgres::Transaction<'_>,
    node: &String,
    entries: &[Entry],
) -> Result<(), PostgresError> {
    let (first, last) = match (entries.first(), entries.last()) {
        (Some(f), Some(l)) => (sql_int(f.seq), sql_int(l.seq)),
        _ => return Ok(()),
    };
    let rows = timed(tx.query(
        "SELECT seq, hash FROM warden_audit WHERE node = $1 AND seq BETWEEN $2 AND $3",
        &[node, &first, &last],
    ))
    .await??;
    for row in rows {
        let seq: i64 = row.get(0);
        let hash: Vec<u8> = row.get(1);
        let ours = entries.iter().find(|e| sql_int(e.seq) == seq);
        if ours.is_some_and(|e| e.hash[..] != hash[..]) {
            return Err(PostgresError::Refused(format!(
                "the database already holds entry {seq} of node {node:?} with another hash: another node exports under this name, or this journal was replaced; not overwriting, export stopped"
            )));
        }
    }
    Ok(())
}

/// The last exported entry of `node`: its seq and hash.
pub async fn last_exported(
    client: &Client,
    node: &str,
) -> Result<Option<(u64, Vec<u8>)>, PostgresError> {
    let row = timed(client.query_opt(
        "SELECT seq, hash FROM warden_audit WHERE node = $1 ORDER BY seq DESC LIMIT 1",
        &[&node],
    ))
    .await??;
    Ok(row.map(|r| (r.get::<_, i64>(0).max(0) as u64, r.get::<_, Vec<u8>>(1))))
}

/// Runs the sink until the process ends: connects (retrying forever, backing off from
/// [`EXPORT_RETRY_MS_MIN`](crate::limits::EXPORT_RETRY_MS_MIN) to
/// [`EXPORT_RETRY_MS_MAX`](crate::limits::EXPORT_RETRY_MS_MAX); one log line when the database goes down, one when it is
/// back), creates the schema, resumes after the node's last exported entry, and exports
/// every acknowledged entry of `journal` (read from `data_dir`), publishing the confirmed
/// seq on `mark` after each commit. Returns only when exporting is refused (a bad URL, rows
/// of another journal: see the module docs), after a log line saying why.
pub async fn run(
    settings: PostgresSettings,
    journal: Journal,
    data_dir: PathBuf,
    mark: watch::Sender<u64>,
) {
    let mut sink = Sink {
        node: settings.node.clone(),
        batch: settings.batch.max(1),
        journal,
        data_dir,
        mark,
        down_since: None,
        lag_logged: None,
        ever_up: false,
    };
    let config = match connect_config(&settings.url.0) {
        Ok(c) => c,
        Err(e) => return sink.refuse(&e),
    };
    set_up(false);
    let mut backoff = Backoff::default();
    loop {
        match sink.session(&config, &mut backoff).await {
            Err(e @ (PostgresError::Refused(_) | PostgresError::Url(_))) => return sink.refuse(&e),
            Err(e) => sink.went_down(&e),
            Ok(never) => match never {},
        }
        tokio::time::sleep(backoff.after_failure()).await;
    }
}

/// The sink's state across connections.
struct Sink {
    node: String,
    batch: usize,
    journal: Journal,
    data_dir: PathBuf,
    mark: watch::Sender<u64>,
    /// Down since (and logged), if it is.
    down_since: Option<Instant>,
    /// When the lag was last logged.
    lag_logged: Option<Instant>,
    /// Connected at least once.
    ever_up: bool,
}

fn set_up(up: bool) {
    metrics::gauge!("warden_export_up", "sink" => SINK).set(if up { 1.0 } else { 0.0 });
}

impl Sink {
    fn refuse(&self, e: &PostgresError) {
        set_up(false);
        metrics::counter!("warden_export_errors_total", "sink" => SINK).increment(1);
        log(SINK, &format!("REFUSED, exporting stopped: {e}"));
    }

    fn went_down(&mut self, e: &PostgresError) {
        set_up(false);
        metrics::counter!("warden_export_errors_total", "sink" => SINK).increment(1);
        if self.down_since.is_none() {
            log(SINK, &format!("down ({e}); retrying"));
            self.down_since = Some(Instant::now());
        }
    }

    fn came_up(&mut self, from: u64) {
        set_up(true);
        let after = match self.down_since.take() {
            Some(since) => format!(" after {:.1} s down", since.elapsed().as_secs_f64()),
            None if self.ever_up => return,
            None => String::new(),
        };
        self.ever_up = true;
        let line = format!(
            "connected{after}, exporting node {:?} from entry {from}",
            self.node
        );
        log(SINK, &line);
    }

    /// One connection's life: ends with the error that ended it.
    async fn session(
        &mut self,
        config: &tokio_postgres::Config,
        backoff: &mut Backoff,
    ) -> Result<Infallible, PostgresError> {
        let mut client = connect(config).await?;
        ensure_schema(&client).await?;
        let insert = prepare_insert(&client).await?;
        let head = self.journal.head().0;
        let last = last_exported(&client, &self.node).await?;
        let next = match &last {
            Some((seq, _)) if *seq > head => {
                return Err(PostgresError::Refused(format!(
                    "the database holds entries of node {:?} up to {seq}, but this node's journal ends at {head}: another node exports under this name, or this journal was replaced",
                    self.node
                )))
            }
            Some((seq, _)) => seq + 1,
            // Nothing exported yet: from the first entry the journal still holds.
            None => Tail::first_kept(&self.data_dir)?.unwrap_or(1).max(1),
        };
        // Confirmed only once known to be this journal's: a mark set from another journal's
        // rows would let retention remove segments never exported.
        if self.owns(&last, head)? {
            self.confirm(next - 1);
        }
        self.came_up(next);
        backoff.reset();
        let mut link = last.map(|(_, hash)| hash);
        let mut tail = Tail::new(&self.data_dir, next);
        loop {
            let head = self.journal.head().0;
            let entries = tail.next_batch(head, self.batch)?;
            if entries.is_empty() {
                self.lagging(head);
                tokio::time::sleep(Duration::from_millis(EXPORT_POLL_MS)).await;
                continue;
            }
            self.check_link(link.take(), &entries[0])?;
            for chunk in by_payload_bytes(&entries) {
                write_batch(&mut client, &insert, &self.node, chunk).await?;
                metrics::counter!("warden_export_entries_total", "sink" => SINK)
                    .increment(chunk.len() as u64);
                self.confirm(chunk.last().expect("not empty").seq);
            }
            self.lagging(head);
        }
    }

    /// Whether the last exported row is this journal's entry: `Ok(true)` when its hash is
    /// the journal's (the entry itself, or the link of the one after it), `Ok(false)` when the
    /// journal no longer holds either (the first batch's link decides), `Refused` when the
    /// hashes differ.
    fn owns(&self, last: &Option<(u64, Vec<u8>)>, head: u64) -> Result<bool, PostgresError> {
        let Some((seq, hash)) = last else {
            return Ok(true);
        };
        let read = |from: u64| Tail::new(&self.data_dir, from).next_batch(head, 1).ok();
        let ours = match read(*seq).and_then(|v| v.into_iter().next()) {
            Some(e) if e.seq == *seq => Some(e.hash),
            _ => read(seq + 1)
                .and_then(|v| v.into_iter().next())
                .map(|e| e.prev_hash),
        };
        match ours {
            Some(h) if h[..] != hash[..] => Err(PostgresError::Refused(format!(
                "the database's entry {seq} of node {:?} has another hash than this journal's: another node exports under this name, or this journal was replaced",
                self.node
            ))),
            Some(_) => Ok(true),
            None => Ok(false),
        }
    }

    /// The first entry after the last exported one links to it.
    fn check_link(&self, last: Option<Vec<u8>>, first: &Entry) -> Result<(), PostgresError> {
        match last {
            Some(hash) if hash[..] != first.prev_hash[..] => Err(PostgresError::Refused(format!(
                "entry {} of this journal does not link to entry {} as the database holds it (node {:?}): another node exports under this name, or this journal was replaced",
                first.seq,
                first.seq - 1,
                self.node
            ))),
            _ => Ok(()),
        }
    }

    fn confirm(&self, seq: u64) {
        self.mark.send_replace(seq);
        metrics::gauge!("warden_export_confirmed_seq", "sink" => SINK).set(seq as f64);
    }

    /// Sets the lag gauge; logs it every [`LAG_LOG_INTERVAL`] while over [`LAG_LOG_ENTRIES`].
    fn lagging(&mut self, head: u64) {
        let lag = head.saturating_sub(*self.mark.borrow());
        metrics::gauge!("warden_export_lag_entries", "sink" => SINK).set(lag as f64);
        if lag <= LAG_LOG_ENTRIES {
            self.lag_logged = None;
            return;
        }
        if self
            .lag_logged
            .is_none_or(|t| t.elapsed() >= LAG_LOG_INTERVAL)
        {
            let confirmed = *self.mark.borrow();
            let line =
                format!("{lag} entries behind the journal (confirmed {confirmed}, head {head})");
            log(SINK, &line);
            self.lag_logged = Some(Instant::now());
        }
    }
}

/// `entries` cut into runs of at most [`BATCH_PAYLOAD_BYTES_MAX`] payload bytes (at least one
/// entry each).
fn by_payload_bytes(entries: &[Entry]) -> Vec<&[Entry]> {
    let mut chunks = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    for (i, e) in entries.iter().enumerate() {
        if i > start && bytes + e.payload.len() > BATCH_PAYLOAD_BYTES_MAX {
            chunks.push(&entries[start..i]);
            (start, bytes) = (i, 0);
        }
        bytes += e.payload.len();
    }
    if start < entries.len() {
        chunks.push(&entries[start..]);
    }
    chunks
}

/// `warden audit query --postgres`: calls `out` with every matching row of `node` (every
/// node's when `None`) as [`audit::entry_json`] makes it from the exact payload bytes, so the
/// lines are those of `audit query DIR`; in seq order (by node first). The filter runs in SQL
/// on the columns [`audit::columns_of`] filled. Returns how many matched.
pub async fn query(
    url: &str,
    node: Option<&str>,
    filter: &Filter,
    mut out: impl FnMut(Value),
) -> Result<u64, PostgresError> {
    use tokio_stream::StreamExt;
    let client = connect(&connect_config(url)?).await?;
    let (sql, params) = query_sql(node, filter);
    let refs: Vec<&(dyn ToSql + Sync)> = params
        .iter()
        .map(|p| p.as_ref() as &(dyn ToSql + Sync))
        .collect();
    let rows = client.query_raw(&sql, refs).await?;
    let mut rows = std::pin::pin!(rows);
    let mut matched = 0;
    while let Some(row) = rows.next().await {
        let row = row?;
        out(audit::entry_json(&entry_of(&row)?));
        matched += 1;
    }
    Ok(matched)
}

type Param = Box<dyn ToSql + Sync + Send>;

/// The SELECT of [`query`] and its parameters.
fn query_sql(node: Option<&str>, filter: &Filter) -> (String, Vec<Param>) {
    let mut conds: Vec<String> = Vec::new();
    let mut params: Vec<Param> = Vec::new();
    let mut cond = |sql: &str, p: Param| {
        params.push(p);
        conds.push(sql.replace('?', &format!("${}", params.len())));
    };
    if let Some(n) = node {
        cond("node = ?", Box::new(n.to_string()));
    }
    if let Some(a) = &filter.agent {
        cond("agent = ?", Box::new(a.as_str().to_string()));
    }
    if !filter.kinds.is_empty() {
        let kinds: Vec<String> = filter.kinds.iter().map(|k| k.name().into()).collect();
        cond("kind = ANY(?)", Box::new(kinds));
    }
    if let Some(d) = filter.decision {
        cond("verdict = ?", Box::new(d.name().to_string()));
    }
    if let Some(t) = filter.since_ms {
        cond("ts_ms >= ?", Box::new(sql_int(t)));
    }
    if let Some(t) = filter.until_ms {
        cond("ts_ms < ?", Box::new(sql_int(t)));
    }
    let mut sql =
        "SELECT seq, ts_ms, kind, format, prev_hash, hash, payload FROM warden_audit".to_string();
    if !conds.is_empty() {
        sql.push_str(" WHERE ");
        sql.push_str(&conds.join(" AND "));
    }
    sql.push_str(" ORDER BY node, seq");
    (sql, params)
}

/// A row back as the journal's entry.
fn entry_of(row: &tokio_postgres::Row) -> Result<Entry, PostgresError> {
    let bad = |what: &str| PostgresError::Refused(format!("a row of warden_audit: {what}"));
    let hash32 = |v: Vec<u8>| <[u8; 32]>::try_from(v).map_err(|_| bad("a hash is not 32 bytes"));
    let kind: String = row.get(2);
    let entry = Entry {
        seq: row.get::<_, i64>(0) as u64,
        ts_ms: row.get::<_, i64>(1) as u64,
        kind: EntryKind::from_name(&kind).map_err(|e| bad(&e))?,
        format: u8::try_from(row.get::<_, i16>(3)).map_err(|_| bad("format out of range"))?,
        prev_hash: hash32(row.get(4))?,
        hash: hash32(row.get(5))?,
        payload: row.get(6),
    };
    // The row's hash must be its fields' (as `audit query DIR` checks the chain): a changed
    // payload, time or kind is never printed beside the hash of the entry it replaced.
    if entry.computed_hash() != entry.hash {
        return Err(bad(&format!(
            "entry {}: its hash does not match its seq, ts_ms, kind, prev_hash and payload (the row was changed)",
            entry.seq
        )));
    }
    Ok(entry)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_is_refused_never_downgraded() {
        for url in [
            "postgresql://u@localhost/db?sslmode=require",
            "postgresql://u@localhost/db?application_name=x&sslmode=prefer",
            "host=localhost user=u sslmode = Require",
            "postgresql://u@localhost/db?SSLMODE=verify-full",
        ] {
            let err = connect_config(url).unwrap_err().to_string();
            assert!(
                err.contains("TLS to PostgreSQL is not supported"),
                "{url}: {err}"
            );
        }
        for url in [
            "postgresql://u@localhost/db",
            "postgresql://u@localhost/db?sslmode=disable",
            "host=/tmp user=u sslmode=disable",
        ] {
            assert!(connect_config(url).is_ok(), "{url}");
        }
    }

    #[test]
    fn url_errors_never_show_the_url() {
        let err = connect_config("postgresql://u:s3cret@localhost:notaport/db")
            .unwrap_err()
            .to_string();
        assert!(!err.contains("s3cret"), "{err}");
    }

    #[test]
    fn jsonb_text_replaces_nul_everywhere() {
        let payload = br#"{"a\u0000b":["x\u0000y",{"k":"\u0000"}],"n":1}"#;
        let text = jsonb_text(payload).unwrap();
        assert!(!text.contains("\\u0000"), "{text}");
        assert!(
            text.contains("a\u{FFFD}b") && text.contains("x\u{FFFD}y"),
            "{text}"
        );
        assert_eq!(jsonb_text(b"not json"), None);
    }

    #[test]
    fn batches_are_cut_by_payload_bytes() {
        let entry = |seq, bytes| Entry {
            seq,
            ts_ms: 0,
            kind: EntryKind::Note,
            format: 1,
            prev_hash: [0; 32],
            hash: [0; 32],
            payload: vec![b' '; bytes],
        };
        let half = BATCH_PAYLOAD_BYTES_MAX / 2;
        let entries = vec![entry(1, half), entry(2, half), entry(3, 1), entry(4, 10)];
        let chunks = by_payload_bytes(&entries);
        let lens: Vec<usize> = chunks.iter().map(|c| c.len()).collect();
        assert_eq!(lens, vec![2, 2]);
        let huge = vec![entry(1, BATCH_PAYLOAD_BYTES_MAX * 2), entry(2, 1)];
        assert_eq!(by_payload_bytes(&huge).len(), 2);
        assert!(by_payload_bytes(&[]).is_empty());
    }

    #[test]
    fn filters_become_sql() {
        let filter = Filter {
            agent: Some(warden_actors::AgentId::new("a1").unwrap()),
            kinds: vec![EntryKind::Decision, EntryKind::Halt],
            decision: Some(warden_actors::Verdict::Deny),
            since_ms: Some(5),
            until_ms: Some(9),
        };
        let (sql, params) = query_sql(Some("n1"), &filter);
        assert!(sql.ends_with(
            "WHERE node = $1 AND agent = $2 AND kind = ANY($3) AND verdict = $4 AND ts_ms >= $5 AND ts_ms < $6 ORDER BY node, seq"
        ), "{sql}");
        assert_eq!(params.len(), 6);
        let (sql, params) = query_sql(None, &Filter::default());
        assert!(
            sql.ends_with("FROM warden_audit ORDER BY node, seq"),
            "{sql}"
        );
        assert!(params.is_empty());
    }
}
