//! The PostgreSQL audit sink against a real PostgreSQL (a throw-away cluster, see
//! tests/common/postgres.rs; skipped when PostgreSQL is not installed, failed then under
//! `WARDEN_REQUIRE_EXTERNAL=1`): every journal entry exactly once across a killed database
//! and a restarted sink, rows of another journal refused and never overwritten, hostile
//! payloads exported without stalling, and `audit query --postgres` printing what
//! `audit query DIR` prints.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::postgres::Postgres;
use serde_json::json;
use tokio::sync::watch;
use warden::adapters::config::Redacted;
use warden::adapters::export::postgres::{self, PostgresError, PostgresSettings};
use warden::supervisor::journal::{self, EntryKind, FsyncMode, Journal, JournalConfig};

const OPERATOR: &str = "export-postgres-operator";

fn fresh_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("warden-export-pg-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn settings(pg: &Postgres, node: &str, batch: usize) -> PostgresSettings {
    PostgresSettings {
        url: Redacted(pg.url()),
        node: node.into(),
        batch,
    }
}

/// A journal in `dir` with small segments (rotation under the sink) and no fsync.
fn open_journal(dir: &Path) -> Journal {
    let mut config = JournalConfig::new(dir);
    config.fsync = FsyncMode::Off;
    config.segment_bytes = 64 << 10;
    Journal::open(config, |_| {}).unwrap().0
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// Appends `n` note entries (each a little different) and waits for them.
fn append(rt: &tokio::runtime::Runtime, journal: &Journal, from: u64, n: u64) {
    rt.block_on(async {
        for i in from..from + n {
            let note =
                json!({"type": "team_halted", "team": format!("t/{i}"), "halted": i % 2 == 0});
            journal
                .submit(
                    EntryKind::Note,
                    1_700_000_000_000 + i,
                    note.to_string().into_bytes(),
                )
                .unwrap();
        }
        journal.flush().await.unwrap();
    });
}

/// Waits until the sink's mark reaches the journal's head.
fn wait_exported(mark: &watch::Receiver<u64>, journal: &Journal, bound: Duration) {
    let head = journal.head().0;
    common::wait_until(bound, &format!("the sink to confirm entry {head}"), || {
        *mark.borrow() >= head
    });
}

/// The journal's (seq, hash) list against the table's rows of `node`: equal means every
/// entry is there once, with its hash, and nothing else.
fn assert_rows_match_journal(pg: &Postgres, node: &str, dir: &Path) {
    let mut ours = String::new();
    journal::read_all(dir, |e| {
        ours.push_str(&format!(
            "{}|{}\n",
            e.seq,
            warden::actors::ids::hex(&e.hash)
        ));
    })
    .unwrap();
    let theirs = pg.psql(&format!(
        "SELECT seq, encode(hash, 'hex') FROM warden_audit WHERE node = '{node}' ORDER BY seq"
    ));
    assert_eq!(ours.lines().count(), theirs.lines().count(), "row count");
    assert!(ours == theirs, "rows differ from the journal");
}

#[test]
fn every_entry_exactly_once_across_a_killed_database_and_a_restarted_sink() {
    let Some(mut pg) = Postgres::start("exactly_once") else {
        return;
    };
    let dir = fresh_dir("exactly-once");
    let journal = open_journal(&dir);
    let rt = runtime();
    let (mark_tx, mark) = watch::channel(0);
    let sink = rt.spawn(postgres::run(
        settings(&pg, "n1", 100),
        journal.clone(),
        dir.clone(),
        mark_tx,
    ));
    append(&rt, &journal, 1, 1_500);
    // The database dies under load: the journal keeps taking entries meanwhile.
    pg.kill();
    append(&rt, &journal, 1_501, 1_500);
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        *mark.borrow() < journal.head().0,
        "nothing confirmed while down"
    );
    pg.restart();
    append(&rt, &journal, 3_001, 1_000);
    wait_exported(&mark, &journal, Duration::from_secs(60));
    assert_rows_match_journal(&pg, "n1", &dir);

    // The sink stops (as with a node killed) and starts again: it resumes after the last
    // exported entry; nothing is written twice (the rows still equal the journal's).
    sink.abort();
    append(&rt, &journal, 4_001, 700);
    let (mark_tx, mark) = watch::channel(0);
    let sink = rt.spawn(postgres::run(
        settings(&pg, "n1", 1_000),
        journal.clone(),
        dir.clone(),
        mark_tx,
    ));
    wait_exported(&mark, &journal, Duration::from_secs(60));
    assert_rows_match_journal(&pg, "n1", &dir);
    sink.abort();
    rt.block_on(journal.shutdown());
}

#[test]
fn rows_of_another_journal_are_refused_and_never_overwritten() {
    let Some(pg) = Postgres::start("refused") else {
        return;
    };
    let rt = runtime();
    // Journal A exported as "n1" up to entry 20.
    let dir_a = fresh_dir("refused-a");
    let a = open_journal(&dir_a);
    append(&rt, &a, 1, 20);
    let (tx, mark) = watch::channel(0);
    let sink = rt.spawn(postgres::run(
        settings(&pg, "n1", 7),
        a.clone(),
        dir_a.clone(),
        tx,
    ));
    wait_exported(&mark, &a, Duration::from_secs(30));
    sink.abort();
    let before =
        pg.psql("SELECT count(*), md5(string_agg(hash::text, ',' ORDER BY seq)) FROM warden_audit");

    // Journal B (other entries) under the same name, longer: its entry 21 does not link to
    // A's 20. Shorter: the database is ahead of it. Both refuse: the task ends.
    let dir_b = fresh_dir("refused-b");
    let b = open_journal(&dir_b);
    append(&rt, &b, 1_000, 30);
    let dir_c = fresh_dir("refused-c");
    let c = open_journal(&dir_c);
    append(&rt, &c, 2_000, 5);
    for (journal, dir) in [(&b, &dir_b), (&c, &dir_c)] {
        let (tx, mark) = watch::channel(0);
        let run = postgres::run(settings(&pg, "n1", 7), journal.clone(), dir.clone(), tx);
        rt.block_on(async { tokio::time::timeout(Duration::from_secs(30), run).await })
            .expect("the sink refuses and ends");
        // Nothing confirmed: retention must not remove segments on another journal's rows.
        assert_eq!(*mark.borrow(), 0);
    }
    // A batch that overlaps rows of another hash: nothing of it is committed.
    let mut entries = Vec::new();
    journal::read_all(&dir_b, |e| {
        if e.seq >= 15 {
            entries.push(e.clone());
        }
    })
    .unwrap();
    let refused = rt.block_on(async {
        let mut client = postgres::connect(&postgres::connect_config(&pg.url()).unwrap())
            .await
            .unwrap();
        let insert = postgres::prepare_insert(&client).await.unwrap();
        postgres::write_batch(&mut client, &insert, "n1", &entries).await
    });
    assert!(
        matches!(&refused, Err(PostgresError::Refused(why)) if why.contains("another hash")),
        "{refused:?}"
    );
    let after =
        pg.psql("SELECT count(*), md5(string_agg(hash::text, ',' ORDER BY seq)) FROM warden_audit");
    assert_eq!(before, after, "the table is untouched");
    // B under its own name is welcome.
    let (tx, mark) = watch::channel(0);
    let sink = rt.spawn(postgres::run(
        settings(&pg, "n2", 7),
        b.clone(),
        dir_b.clone(),
        tx,
    ));
    wait_exported(&mark, &b, Duration::from_secs(30));
    assert_rows_match_journal(&pg, "n2", &dir_b);
    assert_rows_match_journal(&pg, "n1", &dir_a);
    sink.abort();
}

/// `warden ARGS...`: exit code, stdout, stderr.
fn warden(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(common::warden_bin())
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

const POLICY: &str = r#"version: 1
defaults:
  budgets: {steps: 1000000, tokens: 1000000000}
pools:
  - {path: swarm, limits: {tokens: 100000000}}
tools:
  work: {action: read}
  shell: {action: execute}
  payments.transfer: {action: spend}
rules:
  - {id: no-shell, match: {tool: shell}, decision: deny}
  - {id: transfers-need-a-human, match: {tool: payments.transfer}, decision: require_approval}
"#;

/// A real node's journal with decisions of every verdict, settlements, a halt, an approval
/// answer and hostile arguments (NUL, a large string, odd unicode); the node is stopped.
fn real_journal(dir: &Path) -> u64 {
    let policy = dir.with_extension("policy.yaml");
    std::fs::write(&policy, POLICY).unwrap();
    let (mut child, base) =
        common::start_node(dir, &["--policy".as_ref(), policy.as_os_str()], OPERATOR);
    let op = common::client(&base, Some(OPERATOR));
    let a = op.with_token(&common::register(&op, "a", "swarm"));
    let b = op.with_token(&common::register(&op, "b", "swarm"));
    let t0 = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let hostile = [
        json!({"text": "nul\u{0}inside", "k\u{0}ey": ["\u{0}"]}),
        json!({"big": "x".repeat(200_000)}),
        json!({"odd": "\u{202E}rtl \u{FEFF}bom \u{FFFF} e\u{301} 🦀 \u{10FFFF}"}),
    ];
    for (n, args) in hostile.iter().enumerate() {
        let step =
            json!({"tool": "work", "action": "read", "args": args, "cost": {"tokens": 10 + n}});
        let d = a.step("a", &step).unwrap();
        let outcome = warden::adapters::http::wire::OutcomeRequest {
            status: warden_actors::OutcomeStatus::Success,
            cost: None,
        };
        a.outcome("a", d.step, &outcome).unwrap();
    }
    let shell = json!({"tool": "shell", "action": "execute", "args": {"cmd": "rm -rf /"}});
    assert_eq!(b.step("b", &shell).unwrap().decision.name(), "deny");
    let parked = b
        .step(
            "b",
            &json!({"tool": "payments.transfer", "action": "spend", "args": {"amount": 5}}),
        )
        .unwrap();
    let answer = warden::adapters::http::wire::AnswerRequest {
        decision: "deny".into(),
        reason: Some("no".into()),
        by: Some("carol".into()),
    };
    op.answer(&parked.approval.unwrap(), &answer).unwrap();
    let drill = warden::adapters::http::wire::ReasonRequest {
        reason: Some("drill".into()),
        by: None,
    };
    op.halt("b", &drill).unwrap();
    let _ = child.kill();
    let _ = child.wait();
    t0
}

#[test]
fn hostile_payloads_export_and_audit_query_postgres_prints_what_the_files_print() {
    let Some(pg) = Postgres::start("query") else {
        return;
    };
    let dir = fresh_dir("query");
    let t0 = real_journal(&dir);
    let rt = runtime();
    let journal = open_journal(&dir);
    let (tx, mark) = watch::channel(0);
    let sink = rt.spawn(postgres::run(
        settings(&pg, "n1", 3),
        journal.clone(),
        dir.clone(),
        tx,
    ));
    wait_exported(&mark, &journal, Duration::from_secs(30));
    sink.abort();
    rt.block_on(journal.shutdown());
    assert_rows_match_journal(&pg, "n1", &dir);
    // The exact bytes in `payload`; NUL replaced in `entry` only; columns filled.
    let mut payloads = String::new();
    journal::read_all(&dir, |e| {
        payloads.push_str(&format!(
            "{}|{}\n",
            e.seq,
            warden::actors::ids::hex(&e.payload)
        ));
    })
    .unwrap();
    assert_eq!(
        payloads,
        pg.psql("SELECT seq, encode(payload, 'hex') FROM warden_audit ORDER BY seq")
    );
    let nul = pg.psql(
        "SELECT entry->'step'->'args'->>'text', agent, verdict FROM warden_audit WHERE kind = 'decision' AND entry->'step'->'args' ? 'text'",
    );
    assert_eq!(nul.trim(), "nul\u{FFFD}inside|a|allow");
    assert_eq!(
        pg.psql("SELECT rule, verdict FROM warden_audit WHERE agent = 'b' AND kind = 'decision' ORDER BY seq").trim(),
        "no-shell|deny\ntransfers-need-a-human|require_approval"
    );
    assert_eq!(
        pg.psql("SELECT sum(tokens) FROM warden_audit WHERE agent = 'a' AND kind = 'decision'")
            .trim(),
        "33"
    );

    let url = pg.url();
    let since = t0.to_string();
    let filters: [&[&str]; 7] = [
        &[],
        &["--agent", "a"],
        &["--agent", "b", "--kind", "decision"],
        &["--kind", "settlement", "--kind", "halt"],
        &["--decision", "deny"],
        &["--since", &since, "--until", "99999999999999"],
        &["--decision", "require_approval", "--agent", "b"],
    ];
    let dir_arg = dir.to_str().unwrap();
    std::env::set_var("EXPORT_PG_TEST_URL", &url);
    for filter in filters {
        let (code, files, _) = warden(&[&["audit", "query", dir_arg][..], filter].concat());
        assert_eq!(code, 0);
        let pg_args = [
            "audit",
            "query",
            "--postgres",
            "env:EXPORT_PG_TEST_URL",
            "--node",
            "n1",
        ];
        let (code, rows, err) = warden(&[&pg_args[..], filter].concat());
        assert_eq!(code, 0, "{err}");
        assert!(
            !files.is_empty() || filter.len() > 1,
            "{filter:?} matched nothing"
        );
        assert!(files == rows, "{filter:?}: the lines differ");
    }
    // Every node's rows without --node: the same here (one node).
    let (_, all, _) = warden(&["audit", "query", "--postgres", &url]);
    assert_eq!(all, warden(&["audit", "query", dir_arg]).1);
}

#[test]
fn audit_query_postgres_errors_are_clear_and_never_show_the_url() {
    let (code, _, err) = warden(&[
        "audit",
        "query",
        "--postgres",
        "postgresql://warden:s3cret@127.0.0.1:1/postgres",
    ]);
    assert_ne!(code, 0);
    assert!(err.contains("audit query --postgres"), "{err}");
    assert!(!err.contains("s3cret"), "{err}");
    let (code, _, err) = warden(&[
        "audit",
        "query",
        "--postgres",
        "postgresql://warden:s3cret@127.0.0.1:1/postgres?sslmode=require",
    ]);
    assert_ne!(code, 0);
    assert!(
        err.contains("TLS to PostgreSQL is not supported yet"),
        "{err}"
    );
    assert!(!err.contains("s3cret"), "{err}");
    let (code, _, err) = warden(&["audit", "query", "--postgres", "x", "/tmp"]);
    assert_ne!(code, 0, "DIR and --postgres together are refused: {err}");
}

/// `warden node` on `dir` exporting to `pg` as `name` (segments sealed every second, so the
/// sink follows rotations).
fn exporting_node(dir: &Path, pg: &Postgres, name: &str) -> (std::process::Child, String) {
    let policy = dir.with_extension("policy.yaml");
    std::fs::write(&policy, POLICY).unwrap();
    let config = dir.with_extension("yaml");
    let text = format!(
        "fsync: always\nexport:\n  seal_interval: 1s\n  postgres:\n    url: '{}'\n    node: {name}\n    batch: 50\n",
        pg.url()
    );
    std::fs::write(&config, text).unwrap();
    let args = [
        "--policy".as_ref(),
        policy.as_os_str(),
        "--config".as_ref(),
        config.as_os_str(),
    ];
    common::start_node(dir, &args, OPERATOR)
}

/// Agents stepping (and settling) over HTTP until `stop`, or until the node stops answering;
/// the count of decisions so far.
fn load(
    base: &str,
    agents: &[(String, String)],
    stop: &std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> (
    std::sync::Arc<std::sync::atomic::AtomicU64>,
    Vec<std::thread::JoinHandle<()>>,
) {
    use std::sync::atomic::{AtomicU64, Ordering};
    let decided = std::sync::Arc::new(AtomicU64::new(0));
    let threads = agents
        .iter()
        .cloned()
        .map(|(id, token)| {
            let (stop, decided) = (stop.clone(), decided.clone());
            let me = common::client(base, Some(&token));
            std::thread::spawn(move || {
                let mut n = 0u64;
                while !stop.load(Ordering::SeqCst) {
                    n += 1;
                    let step = json!({"tool": "work", "action": "read", "args": {"n": n}, "cost": {"tokens": 3}});
                    let Ok(d) = me.step(&id, &step) else { return };
                    decided.fetch_add(1, Ordering::SeqCst);
                    let outcome = warden::adapters::http::wire::OutcomeRequest {
                        status: warden_actors::OutcomeStatus::Success,
                        cost: None,
                    };
                    if me.outcome(&id, d.step, &outcome).is_err() {
                        return;
                    }
                }
            })
        })
        .collect();
    (decided, threads)
}

/// Waits until the table's rows of `node` are exactly the journal's entries (the node may
/// still be running: the journal is read beside it).
fn wait_rows_match_journal(pg: &Postgres, node: &str, dir: &Path, bound: Duration) {
    let rows = |pg: &Postgres| {
        pg.psql(&format!(
            "SELECT seq, encode(hash, 'hex') FROM warden_audit WHERE node = '{node}' ORDER BY seq"
        ))
    };
    let journaled = || {
        let mut ours = String::new();
        journal::read_all(dir, |e| {
            ours.push_str(&format!(
                "{}|{}\n",
                e.seq,
                warden::actors::ids::hex(&e.hash)
            ));
        })
        .unwrap();
        ours
    };
    common::wait_until(bound, "the table to hold every journal entry once", || {
        rows(pg) == journaled()
    });
}

#[test]
fn a_node_under_load_exports_everything_once_across_a_killed_database_and_a_kill_9() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let Some(mut pg) = Postgres::start("node") else {
        return;
    };
    let dir = fresh_dir("node");
    let (mut node, base) = exporting_node(&dir, &pg, "w1");
    let op = common::client(&base, Some(OPERATOR));
    let agents: Vec<(String, String)> = (0..8)
        .map(|i| {
            let id = format!("agent-{i}");
            let token = common::register(&op, &id, "swarm");
            (id, token)
        })
        .collect();
    let stop = Arc::new(AtomicBool::new(false));
    let (decided, threads) = load(&base, &agents, &stop);
    std::thread::sleep(Duration::from_millis(1_500));

    // PostgreSQL dies under load: the node keeps deciding.
    pg.kill();
    let before = decided.load(Ordering::SeqCst);
    std::thread::sleep(Duration::from_secs(3));
    let during = decided.load(Ordering::SeqCst) - before;
    assert!(during > 0, "no decision while PostgreSQL was down");
    pg.restart();
    std::thread::sleep(Duration::from_secs(1));

    // The node is killed under load (the sink may be behind), and started again.
    let _ = node.kill();
    let _ = node.wait();
    threads.into_iter().for_each(|t| t.join().unwrap());
    let (mut node, base) = exporting_node(&dir, &pg, "w1");
    let (_, threads) = load(&base, &agents, &stop);
    std::thread::sleep(Duration::from_secs(1));
    stop.store(true, Ordering::SeqCst);
    threads.into_iter().for_each(|t| t.join().unwrap());

    wait_rows_match_journal(&pg, "w1", &dir, Duration::from_secs(60));
    let total: u64 = pg
        .psql("SELECT count(*) FROM warden_audit")
        .trim()
        .parse()
        .unwrap();
    assert!(total > during, "{total} rows");
    let op = common::client(&base, Some(OPERATOR));
    let (_, metrics) = common::call(&op, "GET", "/metrics", common::Body::None);
    let text = metrics.as_str().unwrap_or_default();
    for line in [
        "warden_export_up{sink=\"postgres\"} 1",
        "warden_export_lag_entries{sink=\"postgres\"} 0",
    ] {
        assert!(text.contains(line), "/metrics lacks {line}:\n{text}");
    }
    let _ = node.kill();
    let _ = node.wait();
}

#[test]
fn audit_query_postgres_refuses_a_row_changed_in_the_database() {
    let Some(pg) = Postgres::start("changed_row") else {
        return;
    };
    let dir = fresh_dir("changed-row");
    let journal = open_journal(&dir);
    let rt = runtime();
    let (tx, mark) = watch::channel(0);
    let sink = rt.spawn(postgres::run(
        settings(&pg, "n1", 100),
        journal.clone(),
        dir.clone(),
        tx,
    ));
    append(&rt, &journal, 1, 20);
    wait_exported(&mark, &journal, Duration::from_secs(30));
    sink.abort();
    rt.block_on(journal.shutdown());
    let url = pg.url();
    let (code, before, _) = warden(&["audit", "query", "--postgres", &url, "--node", "n1"]);
    assert_eq!(code, 0);
    // Someone with write access to the table changes what entry 7 says, keeping its hash.
    pg.psql(
        r#"UPDATE warden_audit SET payload = convert_to('{"type":"team_halted","team":"t/x","halted":false}', 'UTF8') WHERE node = 'n1' AND seq = 7"#,
    );
    let (code, after, err) = warden(&["audit", "query", "--postgres", &url, "--node", "n1"]);
    assert_ne!(code, 0, "a changed row is printed as the entry: {after}");
    assert!(err.contains("entry 7") && err.contains("hash"), "{err}");
    assert!(before.lines().count() == 20);
}
