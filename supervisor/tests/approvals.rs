//! Approvals fail closed: an answer after the deadline is a timeout whether or not the sweep
//! ran; a halt that ends a parked step journals that resolution; an approval given under a
//! newer, stricter policy is judged again and the stricter verdict wins. Every case is then
//! rebuilt from the journal (recovery re-applies the journaled verdict, never judges again),
//! and the agent can read each step's final decision before and after the restart.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use warden_actors::policy::PolicySet;
use warden_actors::{
    ActionClass, AgentId, ApprovalAnswer, Clock, HaltKind, KernelRecord, LedgerDim, ManualClock,
    Step, StepId, StepStatus, Verdict,
};
use warden_supervisor::journal::records::{AgentRecord, Record};
use warden_supervisor::journal::{Entry, Journal, JournalConfig};
use warden_supervisor::{AgentSpec, Swarm};

const V1: &str = "
version: 1
defaults:
  budgets: {steps: 100, tokens: 10000}
  stagnation: {repeat_limit: 0, window: 0}
  approval_timeout: 1m
pools:
  - {path: swarm, limits: {tokens: 50000}}
  - {path: swarm/pay, limits: {tokens: 20000}, cascade: {on: [safety], scope: siblings}}
tools:
  payments.transfer: {action: spend}
rules:
  - {id: big-transfer, match: {tool: payments.transfer, args: {amount: {gt: 1000}}}, decision: require_approval}
";

/// V1 and a rule that denies what V1 sends to a human.
fn v2_deny() -> String {
    format!("{V1}  - {{id: no-big-transfers, match: {{tool: payments.transfer, args: {{amount: {{gt: 1000}}}}}}, decision: deny, message: 'transfers above 1000 are off'}}\n")
}

/// V1 and a rule that halts on it.
fn v2_halt() -> String {
    format!("{V1}  - {{id: frozen, match: {{tool: payments.transfer, args: {{amount: {{gt: 1000}}}}}}, decision: halt, kind: safety, message: 'payments are frozen'}}\n")
}

fn id(s: &str) -> AgentId {
    AgentId::new(s).unwrap()
}

fn transfer(amount: u64) -> Step {
    Step::builder("payments.transfer", ActionClass::Spend)
        .args(json!({ "amount": amount }))
        .tokens(100)
        .build()
        .unwrap()
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("warden-approvals-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// A swarm on V1 with a manual clock, no background sweep, and a journal in `dir` attached
/// (or recovered from it when it holds one).
async fn open(dir: &Path, clock: &Arc<ManualClock>) -> (Swarm, Journal, Vec<Entry>) {
    let mut entries = Vec::new();
    let (journal, _) = Journal::open(JournalConfig::new(dir), |e| entries.push(e.clone())).unwrap();
    let swarm = Swarm::builder()
        .clock(Arc::clone(clock) as Arc<dyn Clock>)
        .heartbeat_sweep_ms(0)
        .policy_set(PolicySet::parse(V1).unwrap())
        .build()
        .await
        .unwrap();
    let fresh = entries.is_empty();
    if !fresh {
        swarm.recover(&entries, None).await.unwrap();
    }
    swarm
        .attach_journal(journal.clone(), fresh.then_some(V1))
        .unwrap();
    (swarm, journal, entries)
}

async fn close(swarm: Swarm, journal: Journal) {
    swarm.durable().await.unwrap();
    swarm.shutdown().await;
    journal.shutdown().await;
}

/// The journal's approval records, in order: (agent, step, answer, verdict, rule, reason).
fn approval_records(entries: &[Entry]) -> Vec<(String, KernelRecord)> {
    entries
        .iter()
        .filter_map(|e| match Record::parse(e).unwrap() {
            Record::Agent(AgentRecord {
                agent,
                record: r @ KernelRecord::Approval { .. },
            }) => Some((agent.to_string(), r)),
            _ => None,
        })
        .collect()
}

fn final_decision(swarm: &Swarm, agent: &str, step: u64) -> warden_actors::Decision {
    match swarm
        .agent(&id(agent))
        .unwrap()
        .step_status(StepId::from_seq(step))
    {
        StepStatus::Final(d) => d,
        other => panic!("{agent}/s-{step} is not resolved: {other:?}"),
    }
}

fn pool_reserved_tokens(swarm: &Swarm) -> u64 {
    swarm
        .pool("swarm/pay")
        .unwrap()
        .reserved
        .get(LedgerDim::Tokens)
}

#[tokio::test]
async fn an_approval_at_or_after_its_deadline_is_a_timeout_even_before_the_sweep_runs() {
    let dir = temp_dir("late");
    let clock = Arc::new(ManualClock::new(1_000));
    let (swarm, journal, _) = open(&dir, &clock).await;
    let a = swarm
        .spawn_agent(AgentSpec::new(id("p1")).pool("swarm/pay"))
        .await
        .unwrap();
    let late = a.step(transfer(5_000)).await.unwrap();
    let in_time = a.step(transfer(6_000)).await.unwrap();
    assert_eq!(late.decision, Verdict::RequireApproval);
    assert_eq!(swarm.approvals()[0].expires_at_ms, 61_000);

    // One millisecond before the deadline an approval is an approval...
    clock.set_ms(60_999);
    let ok = swarm
        .answer_approval("p1/s-2", ApprovalAnswer::Approve { by: "bob".into() })
        .unwrap();
    assert_eq!(ok.decision, Verdict::Allow);
    // ...at the deadline it is too late, though no sweep has run.
    clock.set_ms(61_000);
    let d = swarm
        .answer_approval("p1/s-1", ApprovalAnswer::Approve { by: "alice".into() })
        .unwrap();
    assert_eq!(d.decision, Verdict::Deny);
    assert_eq!(d.rule.as_deref(), Some("big-transfer"));
    assert_eq!(
        d.reason,
        "approval p1/s-1 timed out: nobody answered within 60000 ms; the answer (approved by alice) came 0 ms after the deadline"
    );
    assert!(d.audit_seq.is_some(), "the resolution is journaled");
    let s = a.snapshot();
    assert_eq!((s.open_steps, s.pending_approvals), (1, 0), "only s-2 runs");
    assert_eq!(pool_reserved_tokens(&swarm), 100, "s-1's hold is released");
    assert_eq!(final_decision(&swarm, "p1", 1), d);
    assert_eq!(final_decision(&swarm, "p1", 2).decision, Verdict::Allow);
    assert_eq!(in_time.step, StepId::from_seq(2));
    close(swarm, journal).await;

    // Rebuilt from the journal: the same verdicts, applied as recorded.
    let (swarm, journal, entries) = open(&dir, &clock).await;
    let records = approval_records(&entries);
    assert_eq!(records.len(), 2, "{records:?}");
    match &records[1].1 {
        KernelRecord::Approval {
            answer,
            decision,
            reason,
            ..
        } => {
            assert_eq!(answer, &ApprovalAnswer::Approve { by: "alice".into() });
            assert_eq!(*decision, Verdict::Deny);
            assert_eq!(reason, &d.reason);
        }
        other => panic!("{other:?}"),
    }
    let s = swarm.agent(&id("p1")).unwrap().snapshot();
    assert_eq!((s.open_steps, s.pending_approvals), (1, 0));
    assert_eq!(pool_reserved_tokens(&swarm), 100);
    let after = final_decision(&swarm, "p1", 1);
    assert_eq!(
        (after.decision, &after.reason),
        (Verdict::Deny, &d.reason),
        "the agent reads the same final decision after the restart"
    );
    close(swarm, journal).await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn an_approval_answered_after_a_restart_past_its_deadline_is_a_deny() {
    let dir = temp_dir("restart");
    let clock = Arc::new(ManualClock::new(1_000));
    let (swarm, journal, _) = open(&dir, &clock).await;
    let a = swarm
        .spawn_agent(AgentSpec::new(id("p1")).pool("swarm/pay"))
        .await
        .unwrap();
    assert_eq!(
        a.step(transfer(5_000)).await.unwrap().decision,
        Verdict::RequireApproval
    );
    close(swarm, journal).await;

    // The node was down past the deadline; the first sweep has not run yet.
    clock.set_ms(120_000);
    let (swarm, journal, _) = open(&dir, &clock).await;
    assert_eq!(swarm.approvals().len(), 1, "still parked: no sweep ran");
    let d = swarm
        .answer_approval("p1/s-1", ApprovalAnswer::Approve { by: "alice".into() })
        .unwrap();
    assert_eq!(d.decision, Verdict::Deny);
    assert!(
        d.reason.contains("came 59000 ms after the deadline"),
        "{}",
        d.reason
    );
    assert_eq!(pool_reserved_tokens(&swarm), 0);
    close(swarm, journal).await;

    let (swarm, journal, _) = open(&dir, &clock).await;
    assert!(swarm.approvals().is_empty());
    assert_eq!(swarm.agent(&id("p1")).unwrap().snapshot().open_steps, 0);
    assert_eq!(pool_reserved_tokens(&swarm), 0);
    assert_eq!(final_decision(&swarm, "p1", 1).reason, d.reason);
    close(swarm, journal).await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_halt_that_ends_pending_approvals_journals_each_resolution_with_its_reason() {
    let dir = temp_dir("halt");
    let clock = Arc::new(ManualClock::new(1_000));
    let (swarm, journal, _) = open(&dir, &clock).await;
    let a = swarm
        .spawn_agent(AgentSpec::new(id("p1")).pool("swarm/pay"))
        .await
        .unwrap();
    for amount in [5_000, 7_000] {
        assert_eq!(
            a.step(transfer(amount)).await.unwrap().decision,
            Verdict::RequireApproval
        );
    }
    clock.set_ms(2_000);
    swarm.halt(id("p1"), "drill").await.unwrap();
    let reason = "agent halted (external) while the step waited: drill";
    assert_eq!(final_decision(&swarm, "p1", 1).reason, reason);
    assert_eq!(pool_reserved_tokens(&swarm), 0);
    // Each final decision names its own approval entry.
    let live: Vec<Option<u64>> = [1, 2]
        .iter()
        .map(|s| final_decision(&swarm, "p1", *s).audit_seq)
        .collect();
    close(swarm, journal).await;

    let (swarm, journal, entries) = open(&dir, &clock).await;
    let journaled: Vec<Option<u64>> = entries
        .iter()
        .filter(|e| e.kind.name() == "approval")
        .map(|e| Some(e.seq))
        .collect();
    assert_eq!(live, journaled);
    // Two resolutions, each before the halt's own entry.
    let records = approval_records(&entries);
    assert_eq!(records.len(), 2, "{records:?}");
    for (n, (agent, record)) in records.iter().enumerate() {
        assert_eq!(agent, "p1");
        let KernelRecord::Approval {
            step_id,
            answer,
            decision,
            rule,
            reason: why,
            at_ms,
            ..
        } = record
        else {
            unreachable!()
        };
        assert_eq!(*step_id, StepId::from_seq(n as u64 + 1));
        assert_eq!(
            answer,
            &ApprovalAnswer::Halted {
                kind: HaltKind::External,
                reason: "drill".into()
            }
        );
        assert_eq!(
            (*decision, rule.as_deref(), why.as_str(), *at_ms),
            (Verdict::Deny, Some("big-transfer"), reason, 2_000)
        );
    }
    let seq_of = |what: &str| {
        entries
            .iter()
            .position(|e| e.kind.name() == what)
            .unwrap_or_else(|| panic!("no {what} entry"))
    };
    assert!(seq_of("approval") < seq_of("halt"));
    // Rebuilt: nothing parked, nothing held, the decisions readable.
    let h = swarm.agent(&id("p1")).unwrap();
    assert_eq!(h.snapshot().pending_approvals, 0);
    assert!(h.snapshot().halt.is_some());
    assert_eq!(pool_reserved_tokens(&swarm), 0);
    for step in [1, 2] {
        let d = final_decision(&swarm, "p1", step);
        assert_eq!((d.decision, d.reason.as_str()), (Verdict::Deny, reason));
    }
    close(swarm, journal).await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn an_approval_under_a_stricter_policy_is_denied_by_it_and_says_so() {
    let dir = temp_dir("stricter");
    let clock = Arc::new(ManualClock::new(1_000));
    let (swarm, journal, _) = open(&dir, &clock).await;
    let a = swarm
        .spawn_agent(AgentSpec::new(id("p1")).pool("swarm/pay"))
        .await
        .unwrap();
    a.step(transfer(5_000)).await.unwrap();
    assert_eq!(swarm.reload_policy(&v2_deny()).unwrap().0, 2);
    let d = swarm
        .answer_approval("p1/s-1", ApprovalAnswer::Approve { by: "alice".into() })
        .unwrap();
    assert_eq!(d.decision, Verdict::Deny);
    assert_eq!(d.rule.as_deref(), Some("no-big-transfers"));
    assert_eq!(
        d.reason,
        "approved by alice, but policy version 2, in force since the step was parked under version 1, denies it: transfers above 1000 are off"
    );
    assert_eq!(a.snapshot().open_steps, 0);
    assert_eq!(pool_reserved_tokens(&swarm), 0);
    close(swarm, journal).await;

    let (swarm, journal, entries) = open(&dir, &clock).await;
    let records = approval_records(&entries);
    assert!(
        matches!(&records[..], [(_, KernelRecord::Approval { decision: Verdict::Deny, rule: Some(r), .. })] if r == "no-big-transfers"),
        "{records:?}"
    );
    assert_eq!(swarm.agent(&id("p1")).unwrap().snapshot().open_steps, 0);
    assert_eq!(pool_reserved_tokens(&swarm), 0);
    assert_eq!(final_decision(&swarm, "p1", 1).reason, d.reason);
    close(swarm, journal).await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn an_approval_a_newer_policy_halts_on_halts_the_agent_and_cascades() {
    let dir = temp_dir("halts");
    let clock = Arc::new(ManualClock::new(1_000));
    let (swarm, journal, _) = open(&dir, &clock).await;
    let a = swarm
        .spawn_agent(AgentSpec::new(id("p1")).pool("swarm/pay"))
        .await
        .unwrap();
    swarm
        .spawn_agent(AgentSpec::new(id("p2")).pool("swarm/pay"))
        .await
        .unwrap();
    a.step(transfer(5_000)).await.unwrap();
    swarm.reload_policy(&v2_halt()).unwrap();
    let d = swarm
        .answer_approval("p1/s-1", ApprovalAnswer::Approve { by: "alice".into() })
        .unwrap();
    assert_eq!(
        (d.decision, d.rule.as_deref(), d.kind),
        (Verdict::Halt, Some("frozen"), Some(HaltKind::Safety))
    );
    assert!(
        d.reason
            .contains("halts the agent on it: payments are frozen"),
        "{}",
        d.reason
    );
    let halt = a.snapshot().halt.expect("the agent is halted");
    assert_eq!(
        (halt.kind, halt.rule.as_deref()),
        (HaltKind::Safety, Some("frozen"))
    );
    // The pool's cascade (safety -> siblings) spreads it like any safety halt.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while swarm.agent(&id("p2")).unwrap().snapshot().halt.is_none() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the cascade never came"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    while swarm.cascades_pending() > 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the cascade never finished"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    assert_eq!(a.snapshot().open_steps, 0);
    assert_eq!(pool_reserved_tokens(&swarm), 0);
    close(swarm, journal).await;

    let (swarm, journal, _) = open(&dir, &clock).await;
    let p1 = swarm.agent(&id("p1")).unwrap().snapshot();
    assert_eq!(p1.halt.map(|h| h.kind), Some(HaltKind::Safety));
    assert_eq!(p1.open_steps, 0);
    let p2 = swarm.agent(&id("p2")).unwrap().snapshot();
    assert_eq!(p2.halt.map(|h| h.kind), Some(HaltKind::Cascade));
    let after = final_decision(&swarm, "p1", 1);
    assert_eq!(
        (after.decision, after.kind),
        (Verdict::Halt, Some(HaltKind::Safety))
    );
    close(swarm, journal).await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn an_approval_stands_when_the_newer_policy_is_not_stricter() {
    let dir = temp_dir("looser");
    let clock = Arc::new(ManualClock::new(1_000));
    let (swarm, journal, _) = open(&dir, &clock).await;
    let a = swarm
        .spawn_agent(AgentSpec::new(id("p1")).pool("swarm/pay"))
        .await
        .unwrap();
    a.step(transfer(5_000)).await.unwrap();
    a.step(transfer(6_000)).await.unwrap();
    // Still asks for approval: the human's approval stands.
    swarm
        .reload_policy(&V1.replace(
            "decision: require_approval",
            "decision: require_approval, message: 'a human looks at it'",
        ))
        .unwrap();
    let d = swarm
        .answer_approval("p1/s-1", ApprovalAnswer::Approve { by: "alice".into() })
        .unwrap();
    assert_eq!(
        (d.decision, d.reason.as_str()),
        (Verdict::Allow, "approved by alice")
    );
    // Looser: allows outright.
    swarm
        .reload_policy(&V1.replace("decision: require_approval", "decision: allow"))
        .unwrap();
    let d = swarm
        .answer_approval("p1/s-2", ApprovalAnswer::Approve { by: "bob".into() })
        .unwrap();
    assert_eq!(d.decision, Verdict::Allow);
    assert_eq!(a.snapshot().open_steps, 2);
    close(swarm, journal).await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn the_version_a_step_was_parked_under_survives_a_restart_and_a_snapshot() {
    let dir = temp_dir("version");
    let clock = Arc::new(ManualClock::new(1_000));
    let (swarm, journal, _) = open(&dir, &clock).await;
    let a = swarm
        .spawn_agent(AgentSpec::new(id("p1")).pool("swarm/pay"))
        .await
        .unwrap();
    a.step(transfer(5_000)).await.unwrap();
    swarm.reload_policy(&v2_deny()).unwrap();
    // A snapshot after the reload, and the segments before it gone: the parked step's
    // version must come from the snapshot, not from the policy in force at it.
    let begin = swarm.write_snapshot().unwrap();
    swarm.durable().await.unwrap();
    journal.remove_segments_before(begin).unwrap();
    close(swarm, journal).await;

    let (swarm, journal, _) = open(&dir, &clock).await;
    assert_eq!(swarm.policy_version(), Some(2));
    let d = swarm
        .answer_approval("p1/s-1", ApprovalAnswer::Approve { by: "alice".into() })
        .unwrap();
    assert_eq!(
        (d.decision, d.rule.as_deref()),
        (Verdict::Deny, Some("no-big-transfers")),
        "{}",
        d.reason
    );
    close(swarm, journal).await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn an_agent_reads_and_waits_on_its_parked_step_without_collecting_it() {
    let clock = Arc::new(ManualClock::new(1_000));
    let swarm = Swarm::builder()
        .clock(Arc::clone(&clock) as Arc<dyn Clock>)
        .heartbeat_sweep_ms(0)
        .policy_set(PolicySet::parse(V1).unwrap())
        .build()
        .await
        .unwrap();
    let a = swarm
        .spawn_agent(AgentSpec::new(id("p1")).pool("swarm/pay"))
        .await
        .unwrap();
    let parked = a.step(transfer(5_000)).await.unwrap();
    let small = a.step(transfer(10)).await.unwrap();
    assert_eq!(small.decision, Verdict::Allow);
    match a.step_status(parked.step) {
        StepStatus::Pending {
            decision,
            expires_at_ms,
        } => {
            assert_eq!(decision.decision, Verdict::RequireApproval);
            assert_eq!(decision.approval.as_deref(), Some("p1/s-1"));
            assert_eq!(expires_at_ms, 61_000);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(a.step_status(small.step), StepStatus::NotKept);
    assert_eq!(a.step_status(StepId::from_seq(9)), StepStatus::Unknown);
    // A bounded wait with no answer ends with the current state.
    assert!(matches!(
        a.wait_step_status(parked.step, Duration::from_millis(20))
            .await,
        StepStatus::Pending { .. }
    ));
    // A waiter wakes when the answer comes.
    let waiter = {
        let a = a.clone();
        tokio::spawn(async move {
            a.wait_step_status(parked.step, Duration::from_secs(30))
                .await
        })
    };
    tokio::task::yield_now().await;
    let answered = swarm
        .answer_approval(
            "p1/s-1",
            ApprovalAnswer::Deny {
                by: "ops".into(),
                reason: "no".into(),
            },
        )
        .unwrap();
    let got = tokio::time::timeout(Duration::from_secs(10), waiter)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got, StepStatus::Final(answered.clone()));
    // Reading does not collect: it reads the same again, and await_approval still gets it.
    assert_eq!(
        a.step_status(parked.step),
        StepStatus::Final(answered.clone())
    );
    assert_eq!(a.await_approval(&parked).await.unwrap(), answered);
    swarm.shutdown().await;
}

#[tokio::test]
async fn audit_replay_with_the_same_policy_reproduces_halt_resolutions_without_differences() {
    let dir = temp_dir("replay");
    let clock = Arc::new(ManualClock::new(1_000));
    let (swarm, journal, _) = open(&dir, &clock).await;
    swarm
        .reload_policy(&v2_halt().replace(
            "args: {amount: {gt: 1000}}}, decision: halt",
            "args: {amount: 666}}, decision: halt",
        ))
        .unwrap();
    let a = swarm
        .spawn_agent(AgentSpec::new(id("p1")).pool("swarm/pay"))
        .await
        .unwrap();
    // Two parked steps, then a step the policy halts on: the halt ends both.
    a.step(transfer(5_000)).await.unwrap();
    a.step(transfer(6_000)).await.unwrap();
    assert_eq!(a.step(transfer(666)).await.unwrap().decision, Verdict::Halt);
    close(swarm, journal).await;

    let (swarm, journal, entries) = open(&dir, &clock).await;
    assert_eq!(approval_records(&entries).len(), 2);
    close(swarm, journal).await;
    let replay_clock = Arc::new(ManualClock::new(0));
    let replayer = Swarm::builder()
        .clock(Arc::clone(&replay_clock) as Arc<dyn Clock>)
        .heartbeat_sweep_ms(0)
        .policy_set(PolicySet::parse(V1).unwrap())
        .build()
        .await
        .unwrap();
    let report = replayer
        .replay_journal(&entries, &replay_clock, false)
        .await
        .unwrap();
    assert!(report.differences.is_empty(), "{:?}", report.differences);
    assert_eq!(report.unapplied, 0, "every resolution applies");
    let s = replayer.agent(&id("p1")).unwrap().snapshot();
    assert_eq!((s.pending_approvals, s.open_steps), (0, 0));
    assert!(s.halt.is_some());
    replayer.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn final_decisions_survive_a_snapshot_that_lets_their_records_go() {
    let dir = temp_dir("snapshot");
    let clock = Arc::new(ManualClock::new(1_000));
    let (swarm, journal, _) = open(&dir, &clock).await;
    let a = swarm
        .spawn_agent(AgentSpec::new(id("p1")).pool("swarm/pay"))
        .await
        .unwrap();
    a.step(transfer(5_000)).await.unwrap();
    a.step(transfer(6_000)).await.unwrap();
    let approved = swarm
        .answer_approval("p1/s-1", ApprovalAnswer::Approve { by: "alice".into() })
        .unwrap();
    let denied = swarm
        .answer_approval(
            "p1/s-2",
            ApprovalAnswer::Deny {
                by: "bob".into(),
                reason: "no".into(),
            },
        )
        .unwrap();
    let begin = swarm.write_snapshot().unwrap();
    swarm.durable().await.unwrap();
    journal.remove_segments_before(begin).unwrap();
    close(swarm, journal).await;

    let (swarm, journal, entries) = open(&dir, &clock).await;
    assert!(
        approval_records(&entries).is_empty(),
        "the records are gone"
    );
    assert_eq!(
        final_decision(&swarm, "p1", 1),
        with_remaining_now(&swarm, &approved)
    );
    assert_eq!(final_decision(&swarm, "p1", 2).reason, denied.reason);
    assert_eq!(final_decision(&swarm, "p1", 2).audit_seq, denied.audit_seq);
    close(swarm, journal).await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// `d` with what is left on the path now (a restored decision reports today's remaining).
fn with_remaining_now(swarm: &Swarm, d: &warden_actors::Decision) -> warden_actors::Decision {
    let mut d = d.clone();
    if let StepStatus::Final(now) = swarm.agent(&id("p1")).unwrap().step_status(d.step) {
        d.remaining = now.remaining;
    }
    d
}

/// An approval answered before a restart is read back after it naming the same journal
/// entry (its `audit_seq`), so the answer of a granted step still names what holds it.
#[tokio::test]
async fn an_answered_approval_keeps_its_journal_entry_number_across_a_restart() {
    let dir = temp_dir("approval-seq");
    let clock = Arc::new(ManualClock::new(1_000));
    let (swarm, journal, _) = open(&dir, &clock).await;
    let a = swarm
        .spawn_agent(AgentSpec::new(id("p1")).pool("swarm/pay"))
        .await
        .unwrap();
    let parked = a.step(transfer(5_000)).await.unwrap();
    assert_eq!(parked.decision, Verdict::RequireApproval);
    let answered = swarm
        .answer_approval("p1/s-1", ApprovalAnswer::Approve { by: "ops".into() })
        .unwrap();
    assert_eq!(answered.decision, Verdict::Allow);
    assert!(answered.audit_seq.is_some());
    close(swarm, journal).await;

    let (swarm, journal, _) = open(&dir, &clock).await;
    let again = final_decision(&swarm, "p1", 1);
    assert_eq!(again.decision, Verdict::Allow);
    assert_eq!(again.audit_seq, answered.audit_seq);
    close(swarm, journal).await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn an_agent_keeps_only_its_latest_answered_approvals_uncollected() {
    use warden_actors::MAX_UNCOLLECTED_RESOLUTIONS;
    let policy = V1
        .replace(
            "budgets: {steps: 100, tokens: 10000}",
            "budgets: {steps: 100000}",
        )
        .replace("limits: {tokens: 50000}", "limits: {}")
        .replace("limits: {tokens: 20000}, ", "limits: {}, ");
    let swarm = Swarm::builder()
        .clock(Arc::new(ManualClock::new(1_000)) as Arc<dyn Clock>)
        .heartbeat_sweep_ms(0)
        .policy_set(PolicySet::parse(&policy).unwrap())
        .build()
        .await
        .unwrap();
    let a = swarm
        .spawn_agent(AgentSpec::new(id("p1")).pool("swarm/pay"))
        .await
        .unwrap();
    let mut parked = Vec::new();
    for _ in 0..MAX_UNCOLLECTED_RESOLUTIONS + 3 {
        let d = a.step(transfer(5_000)).await.unwrap();
        assert_eq!(d.decision, Verdict::RequireApproval, "{}", d.reason);
        let deny = ApprovalAnswer::Deny {
            by: "ops".into(),
            reason: "no".into(),
        };
        swarm
            .answer_approval(d.approval.as_deref().unwrap(), deny)
            .unwrap();
        parked.push(d.step);
    }
    // Read over HTTP, nothing collects them: the three oldest are dropped, the rest kept.
    for old in &parked[..3] {
        assert_eq!(a.step_status(*old), StepStatus::NotKept);
    }
    for kept in &parked[3..] {
        assert!(
            matches!(a.step_status(*kept), StepStatus::Final(ref d) if d.decision == Verdict::Deny)
        );
    }
    swarm.shutdown().await;
}
