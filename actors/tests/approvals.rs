//! The kernel's side of approvals: the deadline is checked against the answer's own time; the
//! records a resolution makes come in the order recovery needs; and recovery applies a
//! journaled verdict as it is, whatever the policy would say now.

use std::sync::Arc;

use serde_json::json;
use warden_actors::policy::{PolicySet, SwappablePolicy};
use warden_actors::{
    Account, ActionClass, AgentId, AgentKernel, ApprovalAnswer, HaltKind, KernelConfig,
    KernelRecord, Limits, Step, StepId, StepPolicy, Verdict,
};

const ASK: &str = "version: 1\ndefaults:\n  approval_timeout: 1s\ntools:\n  pay: {action: spend}\nrules:\n  - {id: ask, match: {tool: pay}, decision: require_approval}\n";

fn kernel(policy: Option<Arc<dyn StepPolicy>>) -> AgentKernel {
    let root = Account::root("swarm", Limits::UNLIMITED);
    let account = root.child("a1", Limits::UNLIMITED).unwrap();
    let mut k = AgentKernel::new(
        AgentId::new("a1").unwrap(),
        account,
        &KernelConfig::default(),
        policy,
        0,
    );
    k.set_recording(true);
    k
}

fn swappable(text: &str) -> Arc<SwappablePolicy> {
    Arc::new(SwappablePolicy::new(Arc::new(
        PolicySet::parse(text).unwrap(),
    )))
}

fn pay() -> Step {
    Step::builder("pay", ActionClass::Spend)
        .args(json!({"amount": 5}))
        .tokens(10)
        .build()
        .unwrap()
}

fn kinds(records: &[KernelRecord]) -> Vec<&'static str> {
    records
        .iter()
        .map(|r| match r {
            KernelRecord::Decision { .. } => "decision",
            KernelRecord::Settlement { .. } => "settlement",
            KernelRecord::Halt { .. } => "halt",
            KernelRecord::Resume { .. } => "resume",
            KernelRecord::State(_) => "state",
            KernelRecord::Approval { .. } => "approval",
        })
        .collect()
}

#[test]
fn the_deadline_is_checked_against_the_time_the_answer_arrives() {
    let policy = swappable(ASK);
    let mut k = kernel(Some(policy));
    let d = k.decide(&pay(), 1_000).decision;
    assert_eq!(d.decision, Verdict::RequireApproval);
    let d2 = k.decide(&pay(), 1_000).decision;
    assert_eq!(k.pending_approvals()[0].expires_at_ms, 2_000);
    let approve = ApprovalAnswer::Approve { by: "ops".into() };
    assert_eq!(
        k.answer_approval(d.step, &approve, 1_999).unwrap().decision,
        Verdict::Allow
    );
    let late = k.answer_approval(d2.step, &approve, 2_000).unwrap();
    assert_eq!(late.decision, Verdict::Deny);
    assert!(late.reason.contains("timed out"), "{}", late.reason);
    assert_eq!(k.open_steps(), 1);
    // The record keeps what the operator said and what it came to.
    let records = k.take_records();
    let KernelRecord::Approval {
        answer, decision, ..
    } = records.last().unwrap()
    else {
        panic!("{records:?}")
    };
    assert_eq!((answer, *decision), (&approve, Verdict::Deny));
}

#[test]
fn a_halt_records_each_parked_steps_resolution_before_itself() {
    let mut k = kernel(Some(swappable(ASK)));
    k.decide(&pay(), 1);
    k.decide(&pay(), 2);
    k.take_records();
    k.halt(HaltKind::External, None, "drill".into(), Vec::new(), 3);
    let records = k.take_records();
    assert_eq!(kinds(&records), ["approval", "approval", "halt"]);
    for r in &records[..2] {
        let KernelRecord::Approval {
            answer, decision, ..
        } = r
        else {
            unreachable!()
        };
        assert!(
            matches!(answer, ApprovalAnswer::Halted { kind: HaltKind::External, reason } if reason == "drill")
        );
        assert_eq!(*decision, Verdict::Deny);
    }
    assert_eq!(k.take_resolutions().len(), 2, "for whoever waits on them");
}

#[test]
fn an_approval_a_newer_policy_halts_on_records_the_resolution_then_the_halt() {
    let policy = swappable(ASK);
    let mut k = kernel(Some(Arc::clone(&policy) as Arc<dyn StepPolicy>));
    let d = k.decide(&pay(), 1).decision;
    k.decide(&pay(), 1);
    k.take_records();
    policy.store(Arc::new(
        PolicySet::parse(
            &ASK.replace("decision: require_approval", "decision: halt, kind: safety"),
        )
        .unwrap(),
    ));
    let fin = k
        .answer_approval(d.step, &ApprovalAnswer::Approve { by: "ops".into() }, 5)
        .unwrap();
    assert_eq!(
        (fin.decision, fin.kind),
        (Verdict::Halt, Some(HaltKind::Safety))
    );
    assert!(k.is_halted());
    // This step's resolution, the other parked step's (ended by the halt), the halt.
    assert_eq!(kinds(&k.take_records()), ["approval", "approval", "halt"]);
}

#[test]
fn recovery_applies_the_journaled_verdict_whatever_the_policy_says_now() {
    // Journaled by a kernel whose newer policy denied the approved step...
    let policy = swappable(ASK);
    let mut live = kernel(Some(Arc::clone(&policy) as Arc<dyn StepPolicy>));
    let d = live.decide(&pay(), 1).decision;
    policy.store(Arc::new(
        PolicySet::parse(&ASK.replace("decision: require_approval", "decision: deny")).unwrap(),
    ));
    let fin = live
        .answer_approval(d.step, &ApprovalAnswer::Approve { by: "ops".into() }, 5)
        .unwrap();
    assert_eq!(fin.decision, Verdict::Deny);
    let journal = live.take_records();

    // ...rebuilt by a kernel whose policy would allow it: the journal's deny stands.
    let mut rebuilt = kernel(Some(swappable(ASK)));
    for r in &journal {
        rebuilt.restore(r).unwrap();
    }
    assert_eq!(rebuilt.open_steps(), 0);
    assert!(rebuilt.pending_approvals().is_empty());
    let kept = rebuilt.take_resolutions();
    assert_eq!(kept.len(), 1);
    assert_eq!(
        (kept[0].decision, &kept[0].reason),
        (Verdict::Deny, &fin.reason)
    );
    assert_eq!(kept[0].step, StepId::from_seq(1));
}

#[test]
fn a_denied_approval_says_what_is_left_once_its_reservation_is_released() {
    use warden_actors::LedgerDim;
    let root = Account::root(
        "swarm",
        Limits::UNLIMITED.with(LedgerDim::Tokens, Some(100)),
    );
    let account = root.child("a1", Limits::UNLIMITED).unwrap();
    let mut k = AgentKernel::new(
        AgentId::new("a1").unwrap(),
        account,
        &KernelConfig::default(),
        Some(swappable(ASK)),
        0,
    );
    let d = k.decide(&pay(), 1_000).decision;
    assert_eq!(d.decision, Verdict::RequireApproval);
    assert_eq!(
        d.remaining.0.get(LedgerDim::Tokens),
        Some(90),
        "10 held while it waits"
    );
    let deny = ApprovalAnswer::Deny {
        by: "ops".into(),
        reason: "no".into(),
    };
    let denied = k.answer_approval(d.step, &deny, 1_500).unwrap();
    assert_eq!(denied.decision, Verdict::Deny);
    assert_eq!(
        denied.remaining.0.get(LedgerDim::Tokens),
        Some(100),
        "released"
    );
}
