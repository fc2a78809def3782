//! Journals written by earlier versions stay readable: `tests/data/journal-v1/` is a node data
//! directory (`journal/*.seg`) written by format version 1, committed as it was written. This
//! test verifies its chain, recovers a swarm from it and checks concrete facts (agents,
//! spend, halts, approvals, the policy), and replays it; a change that can no longer read it
//! fails here. See the format version rule in `warden_supervisor::journal::format`.
//!
//! Regenerate (only when adding a new version's directory, never to "fix" this test):
//! `cargo test -p warden-supervisor --test golden_journal -- --ignored write_journal_v1`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use warden_actors::policy::PolicySet;
use warden_actors::{
    ActionClass, AgentId, ApprovalAnswer, Cost, HaltKind, LedgerDim, ManualClock, Outcome, Step,
    Verdict,
};
use warden_supervisor::journal::records::RecoveryClock;
use warden_supervisor::journal::{self, Journal, JournalConfig};
use warden_supervisor::{AgentSpec, Layout, Swarm, Target};

/// The policy the journal starts with (version 1).
const POLICY: &str = r"
version: 1
defaults:
  budgets: {steps: 50, tokens: 5000, cost_usd: 1.00}
  approval_timeout: 10m
pools:
  - {path: swarm, limits: {tokens: 100000, cost_usd: 10}}
  - {path: swarm/research, limits: {tokens: 20000}, cascade: {on: [safety], scope: siblings}}
  - {path: swarm/ops, limits: {tokens: 20000, cost_usd: 5}}
  - {path: swarm/batch, limits: {tokens: 10000}}
tools:
  web.search: {action: read}
  shell: {action: execute}
  payments.transfer: {action: spend}
rules:
  - {id: no-rm-rf, match: {tool: shell, args: {command: {regex: 'rm\s+-rf'}}}, decision: halt, kind: safety}
  - {id: big-transfer, match: {tool: payments.transfer, args: {amount: {gt: 1000}}}, decision: require_approval}
";

/// Version 2: the ops pool gets more tokens.
fn policy_v2() -> String {
    POLICY.replace(
        "swarm/ops, limits: {tokens: 20000,",
        "swarm/ops, limits: {tokens: 30000,",
    )
}

const START_MS: u64 = 1_700_000_000_000;

fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/data/journal-v1")
}

fn aid(s: &str) -> AgentId {
    AgentId::new(s).unwrap()
}

fn search(tokens: u64) -> Step {
    Step::builder("web.search", ActionClass::Read)
        .args(json!({"q": tokens}))
        .tokens(tokens)
        .build()
        .unwrap()
}

fn transfer(amount: u64) -> Step {
    Step::builder("payments.transfer", ActionClass::Spend)
        .args(json!({"amount": amount}))
        .tokens(100)
        .cost_micro_usd(20_000)
        .build()
        .unwrap()
}

/// Waits (at most 10 s) until every halt so far has spread.
async fn settle(swarm: &Swarm) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while swarm.cascades_pending() > 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "cascades still pending after 10 s"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    swarm.durable().await.unwrap();
}

/// Writes `tests/data/journal-v1/` anew with the current code. Ignored: the committed
/// journal must stay as it was written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "regenerates the committed golden journal"]
async fn write_journal_v1() {
    let dir = data_dir();
    let _ = std::fs::remove_dir_all(dir.join("journal"));
    let clock = Arc::new(ManualClock::new(START_MS));
    let tick = || clock.advance_ms(1_000);
    let (journal, _) = Journal::open(JournalConfig::new(&dir), |_| {}).unwrap();
    let swarm = Swarm::builder()
        .clock(Arc::clone(&clock) as Arc<dyn warden_actors::Clock>)
        .layout(Layout::Current)
        .heartbeat_sweep_ms(0)
        .policy_set(PolicySet::parse(POLICY).unwrap())
        .build()
        .await
        .unwrap();
    swarm.attach_journal(journal.clone(), Some(POLICY)).unwrap();
    let spawn = |name: &str, team: &str| {
        let spec = AgentSpec::new(aid(name))
            .pool(team)
            .meta(json!({"labels": {"role": team}}));
        let swarm = swarm.clone();
        async move { swarm.spawn_agent(spec).await.unwrap() }
    };
    let r1 = spawn("r1", "swarm/research").await;
    let r2 = spawn("r2", "swarm/research").await;
    let r3 = spawn("r3", "swarm/research").await;
    let o1 = spawn("o1", "swarm/ops").await;
    let o2 = spawn("o2", "swarm/ops").await;
    let b1 = spawn("b1", "swarm/batch").await;
    spawn("b2", "swarm/batch").await;
    tick();

    // Allowed and settled: under, and at, the reservation; a failure.
    let d = r1.step(search(1_000)).await.unwrap();
    r1.outcome(d.step, Outcome::success().with_actual(Cost::new(800, 0)))
        .await
        .unwrap();
    tick();
    let d = r2.step(search(500)).await.unwrap();
    r2.outcome(d.step, Outcome::failure().with_actual(Cost::new(500, 0)))
        .await
        .unwrap();
    tick();
    // Parked for approval and approved, then settled; another left pending.
    let d = o1.step(transfer(5_000)).await.unwrap();
    assert_eq!(d.decision, Verdict::RequireApproval);
    tick();
    let approved = swarm
        .answer_approval(
            d.approval.as_deref().unwrap(),
            ApprovalAnswer::Approve { by: "alice".into() },
        )
        .unwrap();
    o1.outcome(approved.step, Outcome::success()).await.unwrap();
    tick();
    let d = o2.step(transfer(2_000)).await.unwrap();
    assert_eq!(d.decision, Verdict::RequireApproval);
    tick();
    // Allowed and left open.
    assert!(b1.step(search(300)).await.unwrap().is_allow());
    tick();
    // A safety halt that cascades to r3's siblings.
    let rm = Step::builder("shell", ActionClass::Execute)
        .args(json!({"command": "rm -rf /"}))
        .build()
        .unwrap();
    assert!(r3.step(rm).await.unwrap().is_halt());
    settle(&swarm).await;
    tick();

    // A snapshot: a new segment begins; recovery starts there.
    swarm.write_snapshot().unwrap();
    swarm.durable().await.unwrap();
    tick();

    swarm.resume(&aid("r1"), "ops-oncall").await.unwrap();
    tick();
    let d = r1.step(search(200)).await.unwrap();
    r1.outcome(d.step, Outcome::success()).await.unwrap();
    tick();
    swarm.halt(aid("o1"), "drill").await.unwrap();
    tick();
    swarm.reload_policy(&policy_v2()).unwrap();
    tick();
    swarm
        .halt(Target::Pool("swarm/batch".into()), "batch window over")
        .await
        .unwrap();
    settle(&swarm).await;

    println!("{:#?}", facts(&swarm));
    swarm.shutdown().await;
    journal.shutdown().await;
    std::fs::remove_file(dir.join("journal").join("LOCK")).unwrap();
}

/// What the test checks, in a form that prints well.
fn facts(swarm: &Swarm) -> Vec<String> {
    let mut out = Vec::new();
    for id in swarm.agent_ids() {
        let s = swarm.agent(&id).unwrap().snapshot();
        out.push(format!(
            "{id}: halt={:?} decided={} allowed={} open={} parked={} spent_tokens={} reserved_tokens={}",
            s.halt.as_ref().map(|h| (h.kind, h.rule.clone())),
            s.steps_decided,
            s.steps_allowed,
            s.open_steps,
            s.pending_approvals,
            s.account.spent.get(LedgerDim::Tokens),
            s.account.reserved.get(LedgerDim::Tokens),
        ));
    }
    for p in swarm.pools() {
        out.push(format!(
            "pool {}: spent tokens={} cost={} reserved tokens={} limit tokens={:?}",
            p.name,
            p.spent.get(LedgerDim::Tokens),
            p.spent.get(LedgerDim::CostMicroUsd),
            p.reserved.get(LedgerDim::Tokens),
            p.limits.get(LedgerDim::Tokens),
        ));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_journal_written_by_format_version_1_is_read_verified_and_recovered() {
    let golden = data_dir();
    // Reading verifies every checksum and the chain, and changes nothing.
    let mut kinds = Vec::new();
    let verified = journal::read_all(&golden, |e| {
        assert_eq!(e.format, 1);
        kinds.push(e.kind.name());
    })
    .unwrap();
    assert_eq!(verified.first_seq, 1);
    assert_eq!(verified.segments, 2, "the snapshot began a second segment");
    assert_eq!(verified.torn_tail_bytes, 0);
    assert_eq!(verified.entries, kinds.len() as u64);
    // The last entry and its hash, as written: a reader that frames or hashes differently
    // fails here.
    let head = verified.head.map(|(seq, hash)| {
        let hex = warden_actors::ids::hex(&hash);
        format!("{seq} {hex}")
    });
    assert_eq!(
        head.as_deref(),
        Some("48 154b07602bce143fffa78e986289a6242d0852424dcc4c65999f005b02c8fcbd")
    );
    assert_eq!(
        kinds.iter().filter(|k| **k == "agent_registered").count(),
        7
    );
    assert_eq!(kinds.iter().filter(|k| **k == "policy_change").count(), 2);

    // Opening writes (a lock file, maybe a cut tail): work on a copy.
    let dir = std::env::temp_dir().join(format!("warden-golden-v1-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("journal")).unwrap();
    for f in std::fs::read_dir(golden.join("journal")).unwrap() {
        let f = f.unwrap();
        std::fs::copy(f.path(), dir.join("journal").join(f.file_name())).unwrap();
    }
    let mut entries = Vec::new();
    let (journal, open) =
        Journal::open(JournalConfig::new(&dir), |e| entries.push(e.clone())).unwrap();
    assert_eq!(open.truncated_bytes, 0);
    assert_eq!(open.verified, verified);
    let clock = Arc::new(RecoveryClock::new());
    let swarm = Swarm::builder()
        .clock(Arc::clone(&clock) as Arc<dyn warden_actors::Clock>)
        .heartbeat_sweep_ms(0)
        .policy_set(PolicySet::parse(POLICY).unwrap())
        .build()
        .await
        .unwrap();
    let report = swarm.recover(&entries, Some(&clock)).await.unwrap();
    assert_eq!(report.agents, 7);
    assert_eq!(report.unfinished_cascades, 0);
    assert_eq!(report.pending_approvals, 1, "o2's transfer still waits");
    assert_eq!(report.policy.as_ref().map(|p| p.version), Some(2));
    assert_eq!(
        report.policy.as_ref().map(|p| p.text.clone()),
        Some(policy_v2())
    );
    assert_eq!(swarm.policy_version(), Some(2));
    assert_eq!(
        report
            .meta
            .iter()
            .find(|(a, _)| a.as_str() == "o2")
            .map(|(_, m)| m.clone()),
        Some(json!({"labels": {"role": "swarm/ops"}}))
    );
    let halt = |name: &str| {
        swarm
            .agent(&aid(name))
            .unwrap()
            .snapshot()
            .halt
            .map(|h| (h.kind, h.rule.as_deref().unwrap_or("").to_string()))
    };
    let halted = |kind, rule: &str| Some((kind, rule.to_string()));
    assert_eq!(halt("r1"), None, "resumed");
    assert_eq!(halt("r2"), halted(HaltKind::Cascade, "cascade.siblings"));
    assert_eq!(halt("r3"), halted(HaltKind::Safety, "no-rm-rf"));
    assert_eq!(halt("o1"), halted(HaltKind::External, "operator"));
    assert_eq!(halt("o2"), None);
    assert_eq!(halt("b1"), halted(HaltKind::External, "team.swarm/batch"));
    assert_eq!(halt("b2"), halted(HaltKind::External, "team.swarm/batch"));
    assert!(swarm.pool_halted("swarm/batch").unwrap());
    assert!(!swarm.pool_halted("swarm/research").unwrap());
    let pool = |path: &str| swarm.pool(path).unwrap();
    // research: 800 + 500 + 200 settled.
    assert_eq!(pool("swarm/research").spent.get(LedgerDim::Tokens), 1_500);
    // ops: the approved transfer's reservation settled as declared; o2's parked one held.
    assert_eq!(pool("swarm/ops").spent.get(LedgerDim::Tokens), 100);
    assert_eq!(pool("swarm/ops").spent.get(LedgerDim::CostMicroUsd), 20_000);
    assert_eq!(pool("swarm/ops").reserved.get(LedgerDim::Tokens), 100);
    assert_eq!(
        pool("swarm/ops").limits.get(LedgerDim::Tokens),
        Some(30_000)
    );
    assert_eq!(pool("swarm").spent.get(LedgerDim::Tokens), 1_600);
    let facts_after = facts(&swarm);
    swarm.shutdown().await;
    journal.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(facts_after, expected_facts());

    // Replay re-judges every decision by the policy of its time: none comes out differently.
    let replayed = warden_supervisor::audit::replay(&golden, None)
        .await
        .unwrap();
    assert!(
        replayed.differences.is_empty(),
        "{:?}",
        replayed.differences
    );
    assert_eq!(replayed.unapplied, 0);
    assert_eq!(replayed.agents, 7);
}

/// The state the generator printed before shutting the swarm down (so recovery rebuilt
/// exactly what the live swarm had).
fn expected_facts() -> Vec<String> {
    EXPECTED.lines().map(str::to_string).collect()
}

const EXPECTED: &str = r#"b1: halt=Some((External, Some("team.swarm/batch"))) decided=1 allowed=1 open=1 parked=0 spent_tokens=0 reserved_tokens=300
b2: halt=Some((External, Some("team.swarm/batch"))) decided=0 allowed=0 open=0 parked=0 spent_tokens=0 reserved_tokens=0
o1: halt=Some((External, Some("operator"))) decided=1 allowed=1 open=0 parked=0 spent_tokens=100 reserved_tokens=0
o2: halt=None decided=1 allowed=0 open=0 parked=1 spent_tokens=0 reserved_tokens=100
r1: halt=None decided=2 allowed=2 open=0 parked=0 spent_tokens=1000 reserved_tokens=0
r2: halt=Some((Cascade, Some("cascade.siblings"))) decided=1 allowed=1 open=0 parked=0 spent_tokens=500 reserved_tokens=0
r3: halt=Some((Safety, Some("no-rm-rf"))) decided=1 allowed=0 open=0 parked=0 spent_tokens=0 reserved_tokens=0
pool swarm: spent tokens=1600 cost=20000 reserved tokens=400 limit tokens=Some(100000)
pool swarm/research: spent tokens=1500 cost=0 reserved tokens=0 limit tokens=Some(20000)
pool swarm/ops: spent tokens=100 cost=20000 reserved tokens=100 limit tokens=Some(30000)
pool swarm/batch: spent tokens=0 cost=0 reserved tokens=300 limit tokens=Some(10000)"#;
