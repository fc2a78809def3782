//! Recovery round trip: random operations on a journaled swarm (steps that fit or not,
//! outcomes under and over their reservation, reporting every dimension or only some,
//! failures, safety halts that cascade, operator halts and resumes, `lost` halts that
//! release reservations and the late outcomes charged after them, approvals answered or left pending, team halts, snapshots with the
//! segments before them removed), then a fresh swarm rebuilt from the journal must hold
//! exactly the same agents, spend, reservations, halts and pending approvals.

use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;
use serde_json::json;
use warden_actors::policy::PolicySet;
use warden_actors::{
    ActionClass, AgentId, ApprovalAnswer, Cost, HaltKind, Outcome, StepId, Usage, Verdict,
};
use warden_supervisor::journal::records::RecoveryClock;
use warden_supervisor::journal::{Journal, JournalConfig};
use warden_supervisor::{AgentSpec, Swarm, SwarmError, Target};

const POLICY: &str = "
version: 1
defaults:
  budgets: {steps: 40, tokens: 3000, failures: 3}
  stagnation: {repeat_limit: 3, window: 8}
pools:
  - {path: swarm, limits: {tokens: 12000, cost_usd: 0.05}}
  - {path: swarm/a, limits: {tokens: 6000}, cascade: {on: [safety], scope: siblings}}
  - {path: swarm/b, limits: {tokens: 6000}, cascade: {on: [external], scope: subtree}}
tools:
  work: {action: read}
  pay: {action: spend, min_cost: {cost_usd: 0.002}}
  bad: {action: execute}
rules:
  - {id: pay-needs-a-human, match: {tool: pay}, decision: require_approval}
  - {id: bad-is-unsafe, match: {tool: bad}, decision: halt, kind: safety}
";

/// Agents, in spawn order: `b1` is `zb`'s child (its id sorts before its parent's, so a
/// snapshot must keep registration order for the link to survive).
const AGENTS: [(&str, &str); 5] = [
    ("a0", "swarm/a"),
    ("a1", "swarm/a"),
    ("a2", "swarm/a"),
    ("zb", "swarm/b"),
    ("b1", "swarm/b"),
];

#[derive(Clone, Debug)]
enum Op {
    Step {
        agent: usize,
        tool: u8,
        tokens: u64,
    },
    Outcome {
        agent: usize,
        pick: usize,
        used: u64,
        /// 0: tokens and money; 1: tokens only; 2: money only; 3: nothing (as reserved).
        report: u8,
        ok: bool,
    },
    Halt {
        agent: usize,
        lost: bool,
    },
    Resume {
        agent: usize,
    },
    Answer {
        pick: usize,
        approve: bool,
    },
    HaltTeam,
    /// A journal snapshot, then the segments before it removed (retention).
    Compact,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0..5usize, 0..10u8, 0..1500u64).prop_map(|(agent, tool, tokens)| Op::Step { agent, tool, tokens }),
        5 => (0..5usize, 0..8usize, 0..2000u64, 0..4u8, prop::bool::weighted(0.7)).prop_map(|(agent, pick, used, report, ok)| Op::Outcome { agent, pick, used, report, ok }),
        1 => (0..5usize, any::<bool>()).prop_map(|(agent, lost)| Op::Halt { agent, lost }),
        1 => (0..5usize).prop_map(|agent| Op::Resume { agent }),
        1 => (0..8usize, any::<bool>()).prop_map(|(pick, approve)| Op::Answer { pick, approve }),
        1 => Just(Op::HaltTeam),
        1 => Just(Op::Compact),
    ]
}

/// A swarm on POLICY with a fresh journal in `dir` attached (the policy journaled).
async fn journaled_swarm(dir: &std::path::Path) -> (Swarm, Journal) {
    let (journal, _) = Journal::open(JournalConfig::new(dir), |_| {}).unwrap();
    let swarm = Swarm::builder()
        .policy_set(PolicySet::parse(POLICY).unwrap())
        .max_agents(1_000_000)
        .build()
        .await
        .unwrap();
    swarm.attach_journal(journal.clone(), Some(POLICY)).unwrap();
    (swarm, journal)
}

/// Everything recovery must rebuild, in a comparable form.
fn state(swarm: &Swarm) -> Vec<String> {
    let mut out = Vec::new();
    for (name, _) in AGENTS {
        let Some(h) = swarm.agent(&AgentId::new(name).unwrap()) else {
            out.push(format!("{name}: absent"));
            continue;
        };
        let s = h.snapshot();
        out.push(format!(
            "{name}: {:?} halt={:?} decided={} allowed={} open={} released={} parked={} failures={} explored={} overrun={:?} spent={:?} reserved={:?}",
            s.state,
            s.halt.as_ref().map(|h| (h.kind, h.rule.clone(), h.reason.clone())),
            s.steps_decided,
            s.steps_allowed,
            s.open_steps,
            s.released_steps,
            s.pending_approvals,
            s.consecutive_failures,
            s.explored,
            s.account.overrun,
            s.account.spent,
            s.account.reserved,
        ));
    }
    for p in swarm.pools() {
        out.push(format!(
            "pool {}: spent={:?} reserved={:?} overrun={:?} limits={:?}",
            p.name, p.spent, p.reserved, p.overrun, p.limits
        ));
    }
    let mut approvals: Vec<String> = swarm
        .approvals()
        .into_iter()
        .map(|a| format!("approval {} expires {}", a.id, a.expires_at_ms))
        .collect();
    approvals.sort();
    out.extend(approvals);
    for team in ["swarm/a", "swarm/b"] {
        out.push(format!(
            "{team} halted={}",
            swarm.pool_halted(team).unwrap()
        ));
    }
    out.push(format!("policy version {:?}", swarm.policy_version()));
    out
}

/// Polls `done` until it holds, failing the test after 10 s (`what` says what was awaited).
/// Polls because what is awaited has no event of its own (a cascade finished in the halt
/// loop, another task's progress); the bound keeps a lost event from hanging the test.
async fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what} did not happen within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

async fn quiesce(swarm: &Swarm) {
    // Cascades run in the supervisor after the halting call returns: wait until every halt
    // has spread, then make everything durable.
    wait_until("spreading every halt", || swarm.cascades_pending() == 0).await;
    swarm.durable().await.unwrap();
}

async fn run(ops: Vec<Op>, case: u64) -> Result<(), TestCaseError> {
    let dir =
        std::env::temp_dir().join(format!("warden-sup-recovery-{}-{case}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let (swarm, journal) = journaled_swarm(&dir).await;
    for (name, team) in AGENTS {
        let mut spec = AgentSpec::new(AgentId::new(name).unwrap()).pool(team);
        if name == "b1" {
            spec = spec.parent(AgentId::new("zb").unwrap());
        }
        swarm.spawn_agent(spec).await.unwrap();
    }
    let mut open: Vec<Vec<StepId>> = vec![Vec::new(); AGENTS.len()];
    let mut parked: Vec<String> = Vec::new();
    for op in ops {
        match op {
            Op::Step {
                agent,
                tool,
                tokens,
            } => {
                let h = swarm
                    .agent(&AgentId::new(AGENTS[agent].0).unwrap())
                    .unwrap();
                let (name, class) = match tool {
                    0 => ("bad", ActionClass::Execute),
                    1 | 2 => ("pay", ActionClass::Spend),
                    _ => ("work", ActionClass::Read),
                };
                let step = warden_actors::Step::builder(name, class)
                    // Few distinct args: repeats happen, and stagnation halts with them.
                    .args(json!({ "n": tokens % 5 }))
                    .tokens(tokens)
                    .build()
                    .unwrap();
                let d = h.step(step).await.unwrap();
                match d.decision {
                    Verdict::Allow => open[agent].push(d.step),
                    Verdict::RequireApproval => parked.push(d.approval.clone().unwrap()),
                    _ => {}
                }
            }
            Op::Outcome {
                agent,
                pick,
                used,
                report,
                ok,
            } => {
                if open[agent].is_empty() {
                    continue;
                }
                let at = pick % open[agent].len();
                let step = open[agent].remove(at);
                let h = swarm
                    .agent(&AgentId::new(AGENTS[agent].0).unwrap())
                    .unwrap();
                let outcome = if ok {
                    Outcome::success()
                } else {
                    Outcome::failure()
                };
                let outcome = match report {
                    0 => outcome.with_actual(Cost::new(used, used)),
                    1 => outcome.with_usage(Usage::new().tokens(used)),
                    2 => outcome.with_usage(Usage::new().cost_micro_usd(used)),
                    _ => outcome,
                };
                h.outcome(step, outcome).await.unwrap();
            }
            Op::Halt { agent, lost } => {
                let kind = if lost {
                    HaltKind::Lost
                } else {
                    HaltKind::External
                };
                let id = AgentId::new(AGENTS[agent].0).unwrap();
                let halted = swarm.halt_with_kind(id.clone(), kind, "drill").await;
                // A lost halt settles the agent's open steps at their reservation.
                if lost && halted.is_ok_and(|h| h.contains(&id)) {
                    open[agent].clear();
                }
            }
            Op::Resume { agent } => {
                let _ = swarm
                    .resume(&AgentId::new(AGENTS[agent].0).unwrap(), "ops")
                    .await;
            }
            Op::Answer { pick, approve } => {
                if parked.is_empty() {
                    continue;
                }
                let at = pick % parked.len();
                let id = parked.remove(at);
                let answer = if approve {
                    ApprovalAnswer::Approve { by: "alice".into() }
                } else {
                    ApprovalAnswer::Deny {
                        by: "bob".into(),
                        reason: "no".into(),
                    }
                };
                if let Ok(d) = swarm.answer_approval(&id, answer) {
                    if d.decision == Verdict::Allow {
                        let agent = AGENTS
                            .iter()
                            .position(|(n, _)| id.starts_with(&format!("{n}/")))
                            .unwrap();
                        open[agent].push(d.step);
                    }
                }
            }
            Op::Compact => {
                let begin = swarm.write_snapshot().unwrap();
                swarm.durable().await.unwrap();
                journal.remove_segments_before(begin).unwrap();
            }
            Op::HaltTeam => {
                let _ = swarm
                    .halt(Target::Pool("swarm/b".into()), "team drill")
                    .await;
            }
        }
        quiesce(&swarm).await;
    }
    quiesce(&swarm).await;
    let before = state(&swarm);
    swarm.shutdown().await;
    journal.shutdown().await;

    let mut entries = Vec::new();
    let (journal, _) =
        Journal::open(JournalConfig::new(&dir), |e| entries.push(e.clone())).unwrap();
    let clock = Arc::new(RecoveryClock::new());
    let rebuilt = Swarm::builder()
        .clock(Arc::clone(&clock) as Arc<dyn warden_actors::Clock>)
        .policy_set(PolicySet::parse(POLICY).unwrap())
        .build()
        .await
        .unwrap();
    let report = rebuilt.recover(&entries, Some(&clock)).await;
    let after = state(&rebuilt);
    rebuilt.shutdown().await;
    journal.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
    let report = report.map_err(|e| TestCaseError::fail(e.to_string()))?;
    prop_assert_eq!(report.agents, AGENTS.len());
    for (b, a) in before.iter().zip(after.iter()) {
        prop_assert_eq!(b, a);
    }
    prop_assert_eq!(before.len(), after.len());
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn a_swarm_rebuilt_from_its_journal_equals_the_original(ops in prop::collection::vec(op(), 1..60)) {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        static CASE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let case = CASE.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        rt.block_on(run(ops, case))?;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cascade_cut_off_by_a_crash_is_finished_when_the_journal_attaches() {
    use warden_actors::{HaltKind, HaltRecord, KernelConfig, KernelRecord};
    use warden_supervisor::journal::records::{
        AgentRecord, Note, PolicyRecord, Record, Registration,
    };
    use warden_supervisor::journal::EntryKind;

    let dir = std::env::temp_dir().join(format!("warden-sup-cut-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    // The journal a node leaves when it dies right after a0's safety halt, before the
    // supervisor spread it to a0's siblings (swarm/a cascades safety halts to siblings).
    let (journal, _) = Journal::open(JournalConfig::new(&dir), |_| {}).unwrap();
    let policy = PolicyRecord {
        version: 1,
        hash: PolicyRecord::hash_of(POLICY),
        text: POLICY.into(),
        by: String::new(),
    };
    journal
        .append_json(EntryKind::PolicyChange, 1_000, &policy)
        .await
        .unwrap();
    for (name, team) in [("a0", "swarm/a"), ("a1", "swarm/a"), ("b0", "swarm/b")] {
        let reg = Registration {
            agent: AgentId::new(name).unwrap(),
            team: team.into(),
            config: KernelConfig::default(),
            parent: None,
            depends_on: Vec::new(),
            meta: serde_json::Value::Null,
            at_ms: 1_001,
        };
        journal
            .append_json(EntryKind::AgentRegistered, 1_001, &reg)
            .await
            .unwrap();
    }
    let halt = HaltRecord {
        kind: HaltKind::Safety,
        rule: Some("bad-is-unsafe".into()),
        reason: "rule bad-is-unsafe matched".into(),
        at_ms: 1_002,
        cause: Vec::new(),
    };
    let rec = AgentRecord {
        agent: AgentId::new("a0").unwrap(),
        record: KernelRecord::Halt {
            record: halt.clone(),
        },
    };
    journal
        .append_json(EntryKind::Halt, 1_002, &rec)
        .await
        .unwrap();
    journal.shutdown().await;

    let recover = |dir: std::path::PathBuf| async move {
        let mut entries = Vec::new();
        let (journal, _) =
            Journal::open(JournalConfig::new(&dir), |e| entries.push(e.clone())).unwrap();
        let swarm = Swarm::builder()
            .policy_set(PolicySet::parse(POLICY).unwrap())
            .build()
            .await
            .unwrap();
        let report = swarm.recover(&entries, None).await.unwrap();
        (swarm, journal, report, entries)
    };
    let (swarm, journal, report, _) = recover(dir.clone()).await;
    assert_eq!(report.unfinished_cascades, 1);
    let halted = |s: &Swarm, n: &str| s.agent(&AgentId::new(n).unwrap()).unwrap().snapshot().halt;
    assert!(
        halted(&swarm, "a1").is_none(),
        "not spread before the journal attaches"
    );
    swarm.attach_journal(journal.clone(), None).unwrap();
    swarm.durable().await.unwrap();
    let a1 = halted(&swarm, "a1").expect("the cascade is finished");
    assert_eq!(a1.kind, HaltKind::Cascade);
    assert_eq!(a1.cause[0].agent, "a0");
    assert!(halted(&swarm, "b0").is_none(), "other teams are untouched");
    swarm.shutdown().await;
    journal.shutdown().await;

    // Journaled: the next recovery finds nothing left to finish and a1 halted.
    let (swarm, journal, report, entries) = recover(dir.clone()).await;
    assert_eq!(report.unfinished_cascades, 0);
    assert_eq!(
        halted(&swarm, "a1").map(|h| h.kind),
        Some(HaltKind::Cascade)
    );
    assert!(entries.iter().any(|e| matches!(
        Record::parse(e),
        Ok(Record::Note(Note::CascadeDone { agent, .. })) if agent.as_str() == "a0"
    )));
    swarm.shutdown().await;
    journal.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

fn aid(s: &str) -> AgentId {
    AgentId::new(s).unwrap()
}

async fn reopen(
    dir: &std::path::Path,
) -> (
    Swarm,
    Journal,
    warden_supervisor::journal::records::RecoveryReport,
) {
    let mut entries = Vec::new();
    let (journal, _) = Journal::open(JournalConfig::new(dir), |e| entries.push(e.clone())).unwrap();
    let clock = Arc::new(RecoveryClock::new());
    let swarm = Swarm::builder()
        .clock(Arc::clone(&clock) as Arc<dyn warden_actors::Clock>)
        .policy_set(PolicySet::parse(POLICY).unwrap())
        .max_agents(1_000_000)
        .build()
        .await
        .unwrap();
    let report = swarm.recover(&entries, Some(&clock)).await.unwrap();
    (swarm, journal, report)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registrations_racing_snapshots_are_all_recovered() {
    let dir = std::env::temp_dir().join(format!("warden-sup-race-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let (swarm, journal) = journaled_swarm(&dir).await;
    for i in 0..1_000 {
        swarm
            .spawn_agent(AgentSpec::new(aid(&format!("base{i}"))).pool("swarm/a"))
            .await
            .unwrap();
    }
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (s2, st) = (swarm.clone(), Arc::clone(&stop));
    let spawner = tokio::spawn(async move {
        let mut i = 0;
        while !st.load(std::sync::atomic::Ordering::SeqCst) {
            s2.spawn_agent(AgentSpec::new(aid(&format!("new{i}"))).pool("swarm/b"))
                .await
                .unwrap();
            i += 1;
        }
        i
    });
    let mut last = 0;
    for _ in 0..20 {
        let s = swarm.clone();
        last = tokio::task::spawn_blocking(move || s.write_snapshot().unwrap())
            .await
            .unwrap();
        // Registrations race the next snapshot: let at least one land after this one.
        let after = swarm.len();
        wait_until("a registration after the snapshot", || swarm.len() > after).await;
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let spawned = spawner.await.unwrap();
    swarm.durable().await.unwrap();
    journal.remove_segments_before(last).unwrap();
    let before = swarm.len();
    assert!(spawned > 0);
    swarm.shutdown().await;
    journal.shutdown().await;
    let (rebuilt, journal, report) = reopen(&dir).await;
    assert_eq!(
        report.agents, before,
        "every registration is in a snapshot or after it"
    );
    assert_eq!(rebuilt.len(), before);
    rebuilt.shutdown().await;
    journal.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_keeps_parents_whose_ids_sort_after_their_children() {
    let dir = std::env::temp_dir().join(format!("warden-sup-parent-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let (swarm, journal) = journaled_swarm(&dir).await;
    swarm
        .spawn_agent(AgentSpec::new(aid("zparent")).pool("swarm/b"))
        .await
        .unwrap();
    swarm
        .spawn_agent(
            AgentSpec::new(aid("achild"))
                .pool("swarm/b")
                .parent(aid("zparent")),
        )
        .await
        .unwrap();
    let begin = swarm.write_snapshot().unwrap();
    swarm.durable().await.unwrap();
    journal.remove_segments_before(begin).unwrap();
    swarm.shutdown().await;
    journal.shutdown().await;
    let (rebuilt, journal, _) = reopen(&dir).await;
    rebuilt.attach_journal(journal.clone(), None).unwrap();
    rebuilt.halt(aid("zparent"), "drill").await.unwrap();
    let child = rebuilt.agent(&aid("achild")).unwrap().snapshot().halt;
    assert_eq!(
        child.map(|h| h.kind),
        Some(warden_actors::HaltKind::Cascade),
        "swarm/b spreads external halts to the subtree"
    );
    rebuilt.shutdown().await;
    journal.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_restarted_on_a_compacted_journal_keeps_the_journal_policy() {
    use warden_supervisor::journal::records::Record;
    let dir = std::env::temp_dir().join(format!("warden-sup-pol-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let (swarm, journal) = journaled_swarm(&dir).await;
    // A hot reload, then a snapshot that lets the policy_change entries go.
    let reloaded = POLICY.replace("budgets: {steps: 40,", "budgets: {steps: 41,");
    swarm.reload_policy(&reloaded).unwrap();
    let begin = swarm.write_snapshot().unwrap();
    swarm.durable().await.unwrap();
    journal.remove_segments_before(begin).unwrap();
    swarm.shutdown().await;
    journal.shutdown().await;

    // Restarted without an explicit policy (the bundled default would be POLICY).
    let opts = warden_supervisor::NodeOptions::new(&dir, POLICY);
    let node = warden_supervisor::Node::open(opts).await.unwrap();
    assert!(node.policy_from_journal);
    assert_eq!(
        node.recovered.policy.as_ref().map(|p| p.text.as_str()),
        Some(reloaded.as_str())
    );
    node.shutdown().await;
    let mut changes = 0;
    warden_supervisor::journal::read_all(&dir, |e| {
        if let Ok(Record::Policy(_)) = Record::parse(e) {
            changes += 1;
        }
    })
    .unwrap();
    assert_eq!(
        changes, 0,
        "the restart must not switch back to the configured default"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Concurrent reloads are journaled in version order, so a restart runs the newest policy,
/// never an older one that happened to be journaled last.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_reloads_are_journaled_in_version_order() {
    use warden_supervisor::journal::records::Record;
    let dir = std::env::temp_dir().join(format!("warden-sup-reload-order-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let (swarm, journal) = journaled_swarm(&dir).await;
    std::thread::scope(|s| {
        for w in 0..4 {
            let swarm = swarm.clone();
            s.spawn(move || {
                for i in 0..25 {
                    let steps = format!("budgets: {{steps: {},", 100 + w * 100 + i);
                    let text = POLICY.replace("budgets: {steps: 40,", &steps);
                    swarm.reload_policy(&text).unwrap();
                }
            });
        }
    });
    swarm.durable().await.unwrap();
    let (last, last_text) = swarm.policy_text().unwrap();
    swarm.shutdown().await;
    journal.shutdown().await;
    let mut versions = Vec::new();
    let mut journaled_last = None;
    warden_supervisor::journal::read_all(&dir, |e| {
        if let Ok(Record::Policy(p)) = Record::parse(e) {
            versions.push(p.version);
            journaled_last = Some(p.text);
        }
    })
    .unwrap();
    assert_eq!(versions.len(), 101, "the first policy and 100 reloads");
    assert!(
        versions.windows(2).all(|w| w[0] < w[1]),
        "policy_change entries out of version order: {versions:?}"
    );
    assert_eq!(versions.last(), Some(&last));
    assert_eq!(journaled_last.as_deref(), Some(last_text.as_str()));
    let _ = std::fs::remove_dir_all(&dir);
}

/// A policy under the policy size limit whose journal record would not fit in an entry (JSON
/// escapes every quote) is refused like any invalid policy: the old one stays in force, its
/// pools' limits too (the new one raises one), and the journal keeps working.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_too_large_to_journal_is_refused_and_changes_nothing() {
    let dir = std::env::temp_dir().join(format!("warden-sup-big-policy-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let (swarm, journal) = journaled_swarm(&dir).await;
    let before = swarm.policy_text().unwrap();
    let comment = format!("# {}\n", "\"".repeat(100));
    let limits = swarm.pool("swarm/a").unwrap().limits;
    let raised = POLICY.replace(
        "swarm/a, limits: {tokens: 6000}",
        "swarm/a, limits: {tokens: 999999}",
    );
    assert_ne!(raised, POLICY);
    let big = format!("{raised}{}", comment.repeat(8_500));
    assert!(big.len() < 1 << 20, "under the policy limit");
    let err = swarm.reload_policy(&big).unwrap_err();
    assert!(matches!(err, SwarmError::Policy(_)), "{err}");
    assert!(err.to_string().contains("once journaled"), "{err}");
    assert_eq!(swarm.journal_failure(), None, "the journal keeps working");
    assert_eq!(
        swarm.policy_text().unwrap(),
        before,
        "the old policy stays in force"
    );
    assert_eq!(
        swarm.pool("swarm/a").unwrap().limits,
        limits,
        "its pools' limits too"
    );
    swarm.durable().await.unwrap();
    swarm.shutdown().await;
    journal.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// A journal written before step args had to be JSON objects holds decisions with args that
/// are text or arrays: recovery still rebuilds from them (their reservations held), and audit
/// replay judges them again without failing (a step from an agent with such args is refused).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decisions_journaled_with_args_that_are_not_objects_still_recover_and_replay() {
    use warden_actors::KernelConfig;
    use warden_supervisor::journal::records::{PolicyRecord, Registration};
    use warden_supervisor::journal::EntryKind;

    let dir = std::env::temp_dir().join(format!("warden-sup-legacy-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let (journal, _) = Journal::open(JournalConfig::new(&dir), |_| {}).unwrap();
    let policy = PolicyRecord {
        version: 1,
        hash: PolicyRecord::hash_of(POLICY),
        text: POLICY.into(),
        by: String::new(),
    };
    journal
        .append_json(EntryKind::PolicyChange, 1_000, &policy)
        .await
        .unwrap();
    let reg = Registration {
        agent: aid("a0"),
        team: "swarm/a".into(),
        config: KernelConfig::default(),
        parent: None,
        depends_on: Vec::new(),
        meta: serde_json::Value::Null,
        at_ms: 1_001,
    };
    journal
        .append_json(EntryKind::AgentRegistered, 1_001, &reg)
        .await
        .unwrap();
    // As the older version wrote them: both cost dimensions always present.
    for (seq, args) in [(1, r#""x""#), (2, r#"["a", 1]"#)] {
        let payload = format!(
            r#"{{"agent":"a0","type":"decision","step":{{"tool":"work","action":"read","args":{args},"cost":{{"tokens":100,"cost_micro_usd":0}},"signals":{{"risk":0.0}}}},"step_id":"s-{seq}","decision":"allow","reserved":{{"steps":1,"tokens":100}},"at_ms":1002}}"#
        );
        journal
            .append(EntryKind::Decision, 1_002, payload.into_bytes())
            .await
            .unwrap();
    }
    journal.shutdown().await;

    let (swarm, journal, report) = reopen(&dir).await;
    assert_eq!(report.agents, 1);
    let s = swarm.agent(&aid("a0")).unwrap().snapshot();
    assert_eq!((s.steps_allowed, s.open_steps), (2, 2));
    assert_eq!(
        s.account.reserved.get(warden_actors::LedgerDim::Tokens),
        200
    );
    swarm.shutdown().await;
    journal.shutdown().await;

    let replayed = warden_supervisor::audit::replay(&dir, None).await.unwrap();
    assert!(
        replayed.differences.is_empty(),
        "{:?}",
        replayed.differences
    );
    assert_eq!(replayed.agents, 1);
    let _ = std::fs::remove_dir_all(&dir);
}

/// `step_here` (the proxy's path: decided on the caller's thread) answers only once the
/// decision's entry is in the journal's file, and a step settled on the caller's thread
/// recovers like one settled through the actor.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_decision_on_the_callers_thread_is_journaled_before_it_is_answered() {
    use warden_supervisor::journal::records::Record;
    let dir = std::env::temp_dir().join(format!("warden-sup-here-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let (swarm, journal) = journaled_swarm(&dir).await;
    let id = AgentId::new("a0").unwrap();
    swarm
        .spawn_agent(AgentSpec::new(id.clone()).pool("swarm/a"))
        .await
        .unwrap();
    let h = swarm.agent(&id).unwrap();
    let mut decided = Vec::new();
    for i in 0..3 {
        let step = warden_actors::Step::builder("work", ActionClass::Read)
            .args(json!({ "page": i }))
            .tokens(700)
            .build()
            .unwrap();
        let d = h.step_here(&step).await.unwrap();
        assert_eq!(d.decision, Verdict::Allow);
        // Read the file now, without flushing: the entry must already be there.
        let mut found = false;
        warden_supervisor::journal::read_all(&dir, |e| {
            found |= Some(e.seq) == d.audit_seq && matches!(Record::parse(e), Ok(Record::Agent(_)));
        })
        .unwrap();
        assert!(
            found,
            "decision {} answered before its entry was written",
            d.step
        );
        decided.push(d.step);
    }
    h.outcome_inline(
        decided[0],
        &Outcome::success().with_usage(Usage::new().tokens(100)),
    )
    .unwrap();
    swarm.durable().await.unwrap();
    let before = state(&swarm);
    swarm.shutdown().await;
    journal.shutdown().await;
    let opts = warden_supervisor::NodeOptions::new(&dir, POLICY);
    let node = warden_supervisor::Node::open(opts).await.unwrap();
    assert_eq!(state(node.swarm()), before);
    node.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// A store whose segment syncs block while its gate is closed: holds the journal's writer
/// mid-group, so entries pile up in its queue.
#[derive(Clone, Debug, Default)]
struct GatedStorage {
    inner: warden_supervisor::journal::MemStorage,
    /// (closed, writers blocked now).
    gate: Arc<(std::sync::Mutex<(bool, usize)>, std::sync::Condvar)>,
}

impl GatedStorage {
    fn close(&self) {
        self.gate.0.lock().unwrap().0 = true;
    }

    fn open(&self) {
        self.gate.0.lock().unwrap().0 = false;
        self.gate.1.notify_all();
    }

    fn blocked(&self) -> bool {
        self.gate.0.lock().unwrap().1 > 0
    }

    fn wrap(
        &self,
        s: Box<dyn warden_supervisor::journal::SegmentWriter>,
    ) -> Box<dyn warden_supervisor::journal::SegmentWriter> {
        Box::new(GatedSegment {
            inner: s,
            gate: Arc::clone(&self.gate),
        })
    }
}

struct GatedSegment {
    inner: Box<dyn warden_supervisor::journal::SegmentWriter>,
    gate: Arc<(std::sync::Mutex<(bool, usize)>, std::sync::Condvar)>,
}

impl warden_supervisor::journal::SegmentWriter for GatedSegment {
    fn append(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.inner.append(bytes)
    }
    fn sync(&mut self) -> std::io::Result<()> {
        let mut g = self.gate.0.lock().unwrap();
        g.1 += 1;
        while g.0 {
            g = self.gate.1.wait(g).unwrap();
        }
        g.1 -= 1;
        drop(g);
        self.inner.sync()
    }
    fn truncate(&mut self, len: u64) -> std::io::Result<()> {
        self.inner.truncate(len)
    }
    fn size_bytes(&self) -> std::io::Result<u64> {
        self.inner.size_bytes()
    }
}

impl warden_supervisor::journal::Storage for GatedStorage {
    fn location(&self) -> std::path::PathBuf {
        self.inner.location()
    }
    fn lock(&self) -> std::io::Result<Box<dyn Send>> {
        self.inner.lock()
    }
    fn segments(&self) -> std::io::Result<Vec<u64>> {
        self.inner.segments()
    }
    fn read(&self, first_seq: u64) -> std::io::Result<Vec<u8>> {
        self.inner.read(first_seq)
    }
    fn size_bytes(&self, first_seq: u64) -> std::io::Result<u64> {
        self.inner.size_bytes(first_seq)
    }
    fn create(
        &self,
        first_seq: u64,
        header: &[u8],
    ) -> std::io::Result<Box<dyn warden_supervisor::journal::SegmentWriter>> {
        Ok(self.wrap(self.inner.create(first_seq, header)?))
    }
    fn open(
        &self,
        first_seq: u64,
    ) -> std::io::Result<Box<dyn warden_supervisor::journal::SegmentWriter>> {
        Ok(self.wrap(self.inner.open(first_seq)?))
    }
    fn remove(&self, first_seq: u64) -> std::io::Result<()> {
        self.inner.remove(first_seq)
    }
    fn sync_dir(&self) -> std::io::Result<()> {
        self.inner.sync_dir()
    }
}

/// `step_here` on an agent with no record yet (just registered, or just recovered): if its
/// decision's entry is refused (here: the journal's queue is full, so the submit itself
/// fails the journal), the step must be refused, never answered as an allow that the
/// journal does not hold.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_decision_whose_entry_is_refused_is_not_answered_on_the_callers_thread() {
    use warden_supervisor::journal::EntryKind;
    let store = GatedStorage::default();
    let mut cfg = JournalConfig::new("gated");
    cfg.queue = 64;
    let (journal, _) = Journal::open_in(Arc::new(store.clone()), cfg, |_| {}).unwrap();
    let swarm = Swarm::builder()
        .policy_set(PolicySet::parse(POLICY).unwrap())
        .build()
        .await
        .unwrap();
    swarm.attach_journal(journal.clone(), Some(POLICY)).unwrap();
    let id = AgentId::new("a0").unwrap();
    let h = swarm
        .spawn_agent(AgentSpec::new(id.clone()).pool("swarm/a"))
        .await
        .unwrap();
    // The writer blocks syncing one entry; the queue fills up behind it.
    store.close();
    journal.submit(EntryKind::Note, 1, b"{}".to_vec()).unwrap();
    let waited = std::time::Instant::now();
    while !store.blocked() {
        assert!(
            waited.elapsed() < Duration::from_secs(10),
            "the writer never synced"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    for _ in 0..64 {
        journal.submit(EntryKind::Note, 1, b"{}".to_vec()).unwrap();
    }
    assert!(swarm.journal_failure().is_none());
    let step = warden_actors::Step::builder("work", ActionClass::Read)
        .tokens(100)
        .build()
        .unwrap();
    let answer = h.step_here(&step).await;
    store.open();
    assert!(
        swarm.journal_failure().is_some(),
        "the refused entry fails the journal"
    );
    assert!(
        answer.is_err(),
        "a decision the journal refused was answered: {answer:?}"
    );
    swarm.shutdown().await;
    journal.shutdown().await;
}
