//! The PostgreSQL audit sink: export throughput, and what exporting costs the node's decisions.
//!
//! Needs PostgreSQL (Debian's `postgresql`; a throw-away cluster is made in a temp dir, as in
//! tests/export_postgres.rs, run as the `postgres` user when root).
//!
//! 1. **Throughput**: a journal of ENTRIES real-shaped entries (decisions with arguments and
//!    settlements, alternating, as `warden node` writes them) is made first; then the sink
//!    (`warden::adapters::export::postgres::run`, batches of BATCH) exports it into an empty
//!    table, timed from its start until its confirmed mark reaches the journal's head:
//!    entries/s.
//! 2. **Decision latency, exports off vs on**: the real `warden node` binary (fsync always), once
//!    without exports and once with `export.postgres` and `export.s3` (moto's S3 server, from
//!    the venv `.ci/run` makes or `$WARDEN_PYTHON`; PostgreSQL only when it is missing); both
//!    modes close a segment every 4 MiB (so sealing costs the same in both, and the archive
//!    has segments to upload), alternating for ROUNDS rounds of SECONDS each,
//!    in this one run; CLIENTS threads each send `POST /v1/agents/{id}/steps` and wait for the
//!    answer (closed loop, the typed client) as fast as the node answers. Median and p99 of
//!    the round trips, and the decisions per second, per mode.
//!
//! `WARDEN_BENCH_PG_ASYNC_COMMIT=1` turns PostgreSQL's `synchronous_commit` off, a diagnostic:
//! on this machine PostgreSQL's WAL and the node's journal share one disk.
//!
//! Run: `cargo bench --bench export` (200,000 entries, batch 1,000, 3 rounds of 5 s, 8
//! clients) or `cargo bench --bench export -- ENTRIES BATCH ROUNDS SECONDS CLIENTS`, e.g.
//! `-- 20000 1000 1 2 4` for a quick look. ROUNDS 0 skips part 2.

#[path = "../tests/common/mod.rs"]
mod common;

use common::postgres as pg;

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::sync::watch;
use warden::adapters::client::Client;
use warden::adapters::config::Redacted;
use warden::adapters::export::postgres::{self, PostgresSettings};
use warden::adapters::http::wire::RegisterRequest;
use warden::supervisor::journal::{EntryKind, FsyncMode, Journal, JournalConfig};

const OPERATOR: &str = "bench-operator-token-export";

const POLICY: &str = r#"version: 1
defaults:
  budgets: {steps: 1000000000, tokens: 1000000000000}
  stagnation: {repeat_limit: 1000, window: 1000}
pools:
  - {path: swarm, limits: {tokens: 1000000000000}}
tools:
  work: {action: read}
rules:
  - {id: no-rm, match: {tool: work, args: {cmd: {regex: 'rm\s+-rf'}}}, decision: deny}
"#;

fn main() {
    let args: Vec<u64> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .filter_map(|a| a.parse().ok())
        .collect();
    let arg = |i: usize, default: u64| args.get(i).copied().unwrap_or(default);
    let (entries, batch, rounds, seconds, clients) = (
        arg(0, 200_000),
        arg(1, 1_000) as usize,
        arg(2, 3),
        arg(3, 5),
        arg(4, 8) as usize,
    );
    let Some(pg) = pg::Postgres::start("bench") else {
        std::process::exit(1);
    };
    let dir = std::env::temp_dir().join(format!("warden-export-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();

    if std::env::var("WARDEN_BENCH_PG_ASYNC_COMMIT").as_deref() == Ok("1") {
        // A diagnostic, not the headline: PostgreSQL's commits do not wait for its WAL's
        // fsync, so its disk writes do not queue behind (or ahead of) the node's journal
        // syncs on this machine's one disk.
        pg.psql("ALTER SYSTEM SET synchronous_commit = off");
        pg.psql("SELECT pg_reload_conf()");
        eprintln!("PostgreSQL: synchronous_commit = off (diagnostic)");
    }
    throughput(&pg, &dir.join("journal-data"), entries, batch);
    if rounds > 0 {
        latency(&pg, &dir, rounds, Duration::from_secs(seconds), clients);
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Part 1: the sink's entries/s from a ready journal into an empty table.
fn throughput(pg: &pg::Postgres, data: &Path, entries: u64, batch: usize) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut config = JournalConfig::new(data);
    config.fsync = FsyncMode::Off;
    let journal = Journal::open(config, |_| {}).unwrap().0;
    let made = Instant::now();
    rt.block_on(async {
        for i in 0..entries {
            let (kind, payload) = entry(i);
            journal
                .submit(kind, 1_796_000_000_000 + i, payload)
                .unwrap();
        }
        journal.flush().await.unwrap();
    });
    eprintln!(
        "journal of {entries} entries made in {:.1} s",
        made.elapsed().as_secs_f64()
    );
    let (tx, mark) = watch::channel(0);
    let settings = PostgresSettings {
        url: Redacted(pg.url()),
        node: "bench".into(),
        batch,
    };
    let started = Instant::now();
    let sink = rt.spawn(postgres::run(settings, journal.clone(), data.into(), tx));
    let head = journal.head().0;
    while *mark.borrow() < head {
        std::thread::sleep(Duration::from_millis(5));
    }
    let took = started.elapsed().as_secs_f64();
    sink.abort();
    rt.block_on(journal.shutdown());
    println!(
        "export postgres: {entries} entries, batch {batch}: {:.1} s, {:.0} entries/s",
        took,
        entries as f64 / took
    );
}

/// Entry `i` of the throughput journal: a decision with arguments, or its settlement.
fn entry(i: u64) -> (EntryKind, Vec<u8>) {
    let agent = format!("agent-{}", i / 2 % 1_000);
    let step_id = format!("s-{}", i / 2);
    let at = 1_796_000_000_000 + i;
    let payload = if i.is_multiple_of(2) {
        json!({"agent": agent, "at_ms": at, "decision": "allow", "reserved": {"steps": 1, "tokens": 100},
               "step": {"action": "read", "args": {"path": format!("/data/file-{i}.txt"), "query": "select the rows of the report"},
                        "cost": {"tokens": 100}, "signals": {"risk": 0.0}, "tool": "work"},
               "step_id": step_id, "type": "decision"})
    } else {
        json!({"agent": agent, "at_ms": at, "actual": {"steps": 1, "tokens": 80}, "charged": {"steps": 1, "tokens": 80},
               "refunded": {"tokens": 20}, "status": "success", "step_id": step_id, "type": "settlement"})
    };
    let kind = if i.is_multiple_of(2) {
        EntryKind::Decision
    } else {
        EntryKind::Settlement
    };
    (kind, payload.to_string().into_bytes())
}

/// Part 2: decision round trips with the exports off and on (PostgreSQL, and the S3 archive
/// on moto when it runs), alternating rounds.
fn latency(pg: &pg::Postgres, dir: &Path, rounds: u64, each: Duration, clients: usize) {
    let policy = dir.join("policy.yaml");
    std::fs::write(&policy, POLICY).unwrap();
    let moto = common::moto::python().map(|python| {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let moto = common::moto::Moto::start(&python, port);
        moto.bucket("bench", false);
        moto
    });
    if moto.is_none() {
        eprintln!("no moto (pip install 'moto[server]'): exports on means PostgreSQL only");
    }
    // The credentials moto's raw requests name (it checks no signature).
    std::env::set_var("AWS_ACCESS_KEY_ID", "warden-test");
    std::env::set_var("AWS_SECRET_ACCESS_KEY", "warden-test-secret");
    let mut samples: [Vec<Duration>; 2] = [Vec::new(), Vec::new()];
    let mut decided = [0u64; 2];
    for round in 0..rounds {
        for (mode, on) in [false, true].into_iter().enumerate() {
            let data = dir.join(format!("node-{round}-{mode}"));
            let config = dir.join(format!("node-{round}-{mode}.yaml"));
            // Both modes close a segment every 4 MiB (about every second under this load), so
            // rotation and sealing cost the same in both and the S3 archive has segments to
            // upload; only the exports differ.
            let mut text = "fsync: always\nlimits: {segment_bytes: 4MiB}\n".to_string();
            if on {
                std::env::set_var("WARDEN_BENCH_PG_URL", pg.url());
                text.push_str(&format!(
                    "export:\n  postgres:\n    url: env:WARDEN_BENCH_PG_URL\n    node: bench-{round}\n"
                ));
                if let Some(m) = &moto {
                    text.push_str(&format!(
                        "  s3: {{bucket: bench, prefix: round-{round}, endpoint: \"{}\"}}\n",
                        m.url
                    ));
                }
            }
            std::fs::write(&config, text).unwrap();
            let (mut node, base) = start_node(&data, &policy, &config);
            let got = load(&base, clients, each);
            decided[mode] += got.len() as u64;
            samples[mode].extend(got);
            let _ = node.kill();
            let _ = node.wait();
        }
    }
    for (mode, name) in ["off", "on"].iter().enumerate() {
        let s = &mut samples[mode];
        s.sort();
        let at = |q: f64| s[((s.len() as f64 - 1.0) * q) as usize].as_secs_f64() * 1e3;
        println!(
            "decisions, export {name:>3}: median {:.2} ms, p99 {:.2} ms, {:.0} decisions/s ({} samples, {clients} clients, {rounds} x {:?})",
            at(0.5),
            at(0.99),
            decided[mode] as f64 / (rounds as f64 * each.as_secs_f64()),
            s.len(),
            each
        );
    }
}

fn start_node(data: &Path, policy: &Path, config: &Path) -> (std::process::Child, String) {
    let args = [
        "--policy".as_ref(),
        policy.as_os_str(),
        "--config".as_ref(),
        config.as_os_str(),
    ];
    common::start_node(data, &args, OPERATOR)
}

/// `clients` agents stepping as fast as answered for `each`: every round trip.
fn load(base: &str, clients: usize, each: Duration) -> Vec<Duration> {
    let op = Client::new(base, OPERATOR);
    let threads: Vec<_> = (0..clients)
        .map(|c| {
            let id = format!("a{c}");
            let request = RegisterRequest {
                id: Some(id.clone()),
                pool: Some("swarm".into()),
                ..Default::default()
            };
            let token = op.register(&request).unwrap().token.unwrap();
            let agent = op.with_token(&token);
            std::thread::spawn(move || {
                let mut got = Vec::new();
                let end = Instant::now() + each;
                let mut n = 0u64;
                while Instant::now() < end {
                    let step = json!({"tool": "work", "action": "read", "args": {"n": n}, "cost": {"tokens": 1}});
                    let t = Instant::now();
                    agent.step(&id, &step).unwrap();
                    got.push(t.elapsed());
                    n += 1;
                }
                got
            })
        })
        .collect();
    threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect()
}
