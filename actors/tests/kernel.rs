//! Behaviour of the governance kernel for one agent.

use std::sync::Arc;

use proptest::prelude::*;
use serde_json::json;
use warden_actors::{
    Account, ActionClass, AgentId, AgentKernel, Budgets, Cost, HaltKind, KernelConfig, LedgerDim,
    Limits, Outcome, PolicyContext, PolicyOutcome, StagnationConfig, Step, StepPolicy, Verdict,
};

fn kernel_with(
    budgets: Budgets,
    pool: Limits,
    stagnation: StagnationConfig,
) -> (AgentKernel, Arc<Account>) {
    let root = Account::root("swarm", pool);
    let account = root.child("a1", budgets.ledger_limits()).unwrap();
    let config = KernelConfig {
        budgets,
        stagnation,
        ..Default::default()
    };
    (
        AgentKernel::new(AgentId::new("a1").unwrap(), account, &config, None, 0),
        root,
    )
}

fn step(tool: &str, n: u64, tokens: u64) -> Step {
    Step::builder(tool, ActionClass::Read)
        .args(json!({ "n": n }))
        .tokens(tokens)
        .build()
        .unwrap()
}

#[test]
fn steps_budget_running_out_halts_as_exhaustion() {
    let (mut k, _) = kernel_with(
        Budgets {
            steps: Some(2),
            ..Default::default()
        },
        Limits::UNLIMITED,
        StagnationConfig::OFF,
    );
    assert!(k.decide(&step("t", 1, 0), 1).decision.is_allow());
    assert!(k.decide(&step("t", 2, 0), 2).decision.is_allow());
    let d = k.decide(&step("t", 3, 0), 3);
    assert_eq!(d.decision.decision, Verdict::Halt);
    assert_eq!(d.decision.kind, Some(HaltKind::Exhaustion));
    assert_eq!(d.decision.rule.as_deref(), Some("budget.steps"));
    assert!(d.new_halt.is_some());
}

#[test]
fn a_step_too_big_for_what_is_left_is_denied_but_a_smaller_one_fits() {
    let (mut k, _) = kernel_with(
        Budgets {
            tokens: Some(1_000),
            ..Default::default()
        },
        Limits::UNLIMITED,
        StagnationConfig::OFF,
    );
    assert!(k.decide(&step("t", 1, 700), 1).decision.is_allow());
    let d = k.decide(&step("t", 2, 700), 2).decision;
    assert_eq!(d.decision, Verdict::Deny);
    assert_eq!(d.rule.as_deref(), Some("budget.tokens"));
    assert_eq!(d.remaining.0.get(LedgerDim::Tokens), Some(300));
    assert!(k.decide(&step("t", 3, 300), 3).decision.is_allow());
}

#[test]
fn shared_pool_running_dry_denies_and_names_the_pool() {
    let (mut k, _) = kernel_with(
        Budgets::default(),
        Limits::UNLIMITED.with(LedgerDim::Tokens, Some(500)),
        StagnationConfig::OFF,
    );
    assert!(k.decide(&step("t", 1, 500), 1).decision.is_allow());
    let d = k.decide(&step("t", 2, 1), 2).decision;
    assert_eq!(d.decision, Verdict::Deny);
    assert_eq!(d.rule.as_deref(), Some("pool.swarm.tokens"));
    assert!(
        !k.is_halted(),
        "a dry shared pool denies; it does not halt the agent"
    );
}

#[test]
fn risk_budget_overflow_halts_as_overrisk() {
    let (mut k, _) = kernel_with(
        Budgets {
            risk_micro: Some(1_000_000),
            ..Default::default()
        },
        Limits::UNLIMITED,
        StagnationConfig::OFF,
    );
    let risky = |n| {
        Step::builder("payments.transfer", ActionClass::Spend)
            .args(json!({ "n": n }))
            .risk(0.6)
            .build()
            .unwrap()
    };
    assert!(k.decide(&risky(1), 1).decision.is_allow());
    let d = k.decide(&risky(2), 2).decision;
    assert_eq!(d.kind, Some(HaltKind::Overrisk));
}

#[test]
fn halt_is_terminal_until_resume_and_resume_is_explicit() {
    let (mut k, _) = kernel_with(Budgets::default(), Limits::UNLIMITED, StagnationConfig::OFF);
    let rec = k
        .halt(
            HaltKind::Safety,
            None,
            "operator saw rm -rf".into(),
            Vec::new(),
            5,
        )
        .unwrap();
    assert_eq!(rec.kind, HaltKind::Safety);
    for i in 0..50 {
        let d = k.decide(&step("t", i, 0), 10 + i).decision;
        assert_eq!(d.decision, Verdict::Halt);
        assert_eq!(d.kind, Some(HaltKind::Safety));
    }
    // A second halt does not replace the first.
    assert!(k
        .halt(HaltKind::External, None, "again".into(), Vec::new(), 70)
        .is_none());
    let lifted = k.resume(80).unwrap();
    assert_eq!(lifted.kind, HaltKind::Safety);
    assert!(k.decide(&step("t", 99, 0), 81).decision.is_allow());
    assert!(
        k.resume(82).is_none(),
        "resuming a running agent is refused"
    );
}

#[test]
fn repeated_identical_calls_halt_as_stagnation() {
    let (mut k, _) = kernel_with(
        Budgets::default(),
        Limits::UNLIMITED,
        StagnationConfig {
            repeat_limit: 3,
            window: 10,
        },
    );
    let same = step("web.search", 1, 0);
    assert!(k.decide(&same, 1).decision.is_allow());
    assert!(k.decide(&step("other", 1, 0), 2).decision.is_allow());
    assert!(k.decide(&same, 3).decision.is_allow());
    let d = k.decide(&same, 4).decision;
    assert_eq!(d.kind, Some(HaltKind::Stagnation));
    assert_eq!(d.rule.as_deref(), Some("stagnation.repeat"));
}

#[test]
fn flat_progress_halts_as_stagnation() {
    let (mut k, _) = kernel_with(
        Budgets::default(),
        Limits::UNLIMITED,
        StagnationConfig {
            repeat_limit: 0,
            window: 3,
        },
    );
    let s = |n| {
        Step::builder("t", ActionClass::Read)
            .args(json!({"n": n}))
            .progress(0.2)
            .build()
            .unwrap()
    };
    assert!(k.decide(&s(1), 1).decision.is_allow());
    assert!(k.decide(&s(2), 2).decision.is_allow());
    assert_eq!(
        k.decide(&s(3), 3).decision.rule.as_deref(),
        Some("stagnation.progress")
    );
}

#[test]
fn consecutive_failures_halt_and_a_success_resets_the_count() {
    let (mut k, _) = kernel_with(
        Budgets {
            failures: Some(2),
            ..Default::default()
        },
        Limits::UNLIMITED,
        StagnationConfig::OFF,
    );
    let a = k.decide(&step("t", 1, 0), 1).decision.step;
    assert!(k.settle(a, &Outcome::failure(), 2).unwrap().halt.is_none());
    let b = k.decide(&step("t", 2, 0), 3).decision.step;
    assert!(k.settle(b, &Outcome::success(), 4).unwrap().halt.is_none());
    let c = k.decide(&step("t", 3, 0), 5).decision.step;
    assert!(k.settle(c, &Outcome::failure(), 6).unwrap().halt.is_none());
    let d = k.decide(&step("t", 4, 0), 7).decision.step;
    let report = k.settle(d, &Outcome::failure(), 8).unwrap();
    assert_eq!(
        report.halt.unwrap().rule.as_deref(),
        Some("budget.failures")
    );
    assert!(k.is_halted());
}

#[test]
fn wall_time_budget_halts_once_used_up() {
    let (mut k, _) = kernel_with(
        Budgets {
            wall_time_ms: Some(1_000),
            ..Default::default()
        },
        Limits::UNLIMITED,
        StagnationConfig::OFF,
    );
    assert!(k.decide(&step("t", 1, 0), 999).decision.is_allow());
    assert_eq!(
        k.decide(&step("t", 2, 0), 1_000).decision.rule.as_deref(),
        Some("budget.wall_time")
    );
}

#[test]
fn exploration_budget_denies_new_tools_but_not_known_ones() {
    let (mut k, _) = kernel_with(
        Budgets {
            exploration: Some(2),
            ..Default::default()
        },
        Limits::UNLIMITED,
        StagnationConfig::OFF,
    );
    assert!(k.decide(&step("a", 1, 0), 1).decision.is_allow());
    assert!(k.decide(&step("b", 1, 0), 2).decision.is_allow());
    let d = k.decide(&step("c", 1, 0), 3).decision;
    assert_eq!(d.rule.as_deref(), Some("budget.exploration"));
    assert!(k.decide(&step("a", 2, 0), 4).decision.is_allow());
}

#[test]
fn settling_refunds_the_unused_part_and_overrun_halts() {
    let (mut k, root) = kernel_with(
        Budgets {
            tokens: Some(1_000),
            ..Default::default()
        },
        Limits::UNLIMITED,
        StagnationConfig::OFF,
    );
    let s1 = k.decide(&step("t", 1, 600), 1).decision.step;
    let r = k
        .settle(s1, &Outcome::success().with_actual(Cost::new(200, 0)), 2)
        .unwrap();
    assert_eq!(r.settlement.refunded.get(LedgerDim::Tokens), 400);
    assert_eq!(root.snapshot().spent.get(LedgerDim::Tokens), 200);
    let s2 = k.decide(&step("t", 2, 100), 3).decision.step;
    let r = k
        .settle(s2, &Outcome::success().with_actual(Cost::new(5_000, 0)), 4)
        .unwrap();
    assert_eq!(r.settlement.charged.get(LedgerDim::Tokens), 800);
    assert_eq!(r.settlement.overrun.get(LedgerDim::Tokens), 4_200);
    assert_eq!(r.halt.unwrap().rule.as_deref(), Some("budget.overrun"));
    assert_eq!(k.account().snapshot().spent.get(LedgerDim::Tokens), 1_000);
    // Settling twice is refused with a clear error.
    let err = k.settle(s2, &Outcome::success(), 5).unwrap_err();
    assert!(err.to_string().contains("no open step s-"));
}

#[test]
fn lost_halt_releases_open_reservations_other_halts_keep_them_for_settling() {
    let (mut k, root) = kernel_with(
        Budgets::default(),
        Limits::UNLIMITED.with(LedgerDim::Tokens, Some(1_000)),
        StagnationConfig::OFF,
    );
    let s1 = k.decide(&step("t", 1, 400), 1).decision.step;
    k.halt(HaltKind::Safety, None, "x".into(), Vec::new(), 2);
    assert_eq!(root.snapshot().reserved.get(LedgerDim::Tokens), 400);
    k.settle(s1, &Outcome::success(), 3).unwrap();
    assert_eq!(root.snapshot().spent.get(LedgerDim::Tokens), 400);
    k.resume(4);
    k.decide(&step("t", 2, 300), 5);
    k.halt(HaltKind::Lost, None, "silent".into(), Vec::new(), 6);
    assert_eq!(root.snapshot().reserved.get(LedgerDim::Tokens), 0);
    assert_eq!(root.snapshot().spent.get(LedgerDim::Tokens), 400 + 300);
    assert_eq!(k.open_steps(), 0);
}

#[test]
fn policy_halts_are_applied_before_budgets() {
    let root = Account::root("swarm", Limits::UNLIMITED);
    let account = root.child("a1", Limits::UNLIMITED).unwrap();
    let policy: Arc<dyn StepPolicy> = Arc::new(|ctx: &PolicyContext<'_>| {
        let cmd = ctx
            .step
            .args()
            .get("command")
            .and_then(|c| c.as_str())
            .unwrap_or("");
        if cmd.contains("rm -rf") {
            PolicyOutcome::Halt {
                rule: Arc::from("no-rm-rf"),
                kind: HaltKind::Safety,
                reason: "destructive command".into(),
            }
        } else {
            PolicyOutcome::Allow
        }
    });
    let mut k = AgentKernel::new(
        AgentId::new("a1").unwrap(),
        account,
        &KernelConfig::default(),
        Some(policy),
        0,
    );
    let ls = Step::builder("shell", ActionClass::Execute)
        .args(json!({"command": "ls"}))
        .build()
        .unwrap();
    let rm = Step::builder("shell", ActionClass::Execute)
        .args(json!({"command": "rm -rf /"}))
        .build()
        .unwrap();
    assert!(k.decide(&ls, 1).decision.is_allow());
    let d = k.decide(&rm, 2).decision;
    assert_eq!(
        (d.decision, d.kind, d.rule.as_deref()),
        (Verdict::Halt, Some(HaltKind::Safety), Some("no-rm-rf"))
    );
}

#[derive(Clone, Debug)]
enum Act {
    Step {
        tool: u8,
        arg: u8,
        tokens: u64,
        risk_pct: u8,
    },
    Settle {
        pick: usize,
        fail: bool,
        used_pct: u8,
    },
    Halt,
    Resume,
    Tick(u64),
}

fn act() -> impl Strategy<Value = Act> {
    prop_oneof![
        6 => (0..4u8, 0..4u8, 0..300u64, 0..40u8)
            .prop_map(|(tool, arg, tokens, risk_pct)| Act::Step { tool, arg, tokens, risk_pct }),
        3 => (any::<usize>(), any::<bool>(), 0..=150u8)
            .prop_map(|(pick, fail, used_pct)| Act::Settle { pick, fail, used_pct }),
        1 => Just(Act::Halt),
        1 => Just(Act::Resume),
        2 => (1..500u64).prop_map(Act::Tick),
    ]
}

/// Runs a script against a fresh kernel and returns every decision (as JSON) in order,
/// checking on the way that no step is allowed while the agent is halted.
fn run(script: &[Act]) -> Vec<serde_json::Value> {
    let budgets = Budgets {
        steps: Some(60),
        tokens: Some(5_000),
        risk_micro: Some(4_000_000),
        failures: Some(4),
        wall_time_ms: Some(20_000),
        exploration: Some(3),
        ..Default::default()
    };
    let (mut k, _) = kernel_with(
        budgets,
        Limits::UNLIMITED.with(LedgerDim::Tokens, Some(8_000)),
        StagnationConfig {
            repeat_limit: 4,
            window: 8,
        },
    );
    let mut now = 0;
    let mut open = Vec::new();
    let mut out = Vec::new();
    for a in script {
        match a {
            Act::Step {
                tool,
                arg,
                tokens,
                risk_pct,
            } => {
                let s = Step::builder(format!("tool{tool}"), ActionClass::Read)
                    .args(json!({ "arg": arg }))
                    .tokens(*tokens)
                    .risk(f64::from(*risk_pct) / 100.0)
                    .build()
                    .unwrap();
                let was_halted = k.is_halted();
                let d = k.decide(&s, now).decision;
                if was_halted {
                    assert_eq!(d.decision, Verdict::Halt, "allowed after halt");
                }
                if d.is_allow() {
                    open.push((d.step, *tokens));
                }
                out.push(serde_json::to_value(&d).unwrap());
            }
            Act::Settle {
                pick,
                fail,
                used_pct,
            } if !open.is_empty() => {
                let (id, tokens) = open.swap_remove(pick % open.len());
                let o = if *fail {
                    Outcome::failure()
                } else {
                    Outcome::success()
                };
                let used = tokens * u64::from(*used_pct) / 100;
                let r = k.settle(id, &o.with_actual(Cost::new(used, 0)), now);
                out.push(json!({"settled": id.to_string(), "ok": r.is_ok(),
                    "halt": r.ok().and_then(|r| r.halt).map(|h| h.rule.map(|r| r.to_string()))}));
            }
            Act::Halt => {
                k.halt(HaltKind::External, None, "test".into(), Vec::new(), now);
            }
            Act::Resume => {
                k.resume(now);
            }
            Act::Tick(ms) => now += ms,
            _ => {}
        }
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, .. ProptestConfig::default() })]

    #[test]
    fn same_input_sequence_gives_same_decisions_and_no_allow_after_halt(
        script in proptest::collection::vec(act(), 1..200)
    ) {
        let first = run(&script);
        let second = run(&script);
        prop_assert_eq!(first, second);
    }
}

#[test]
fn a_budget_held_by_running_steps_denies_rather_than_halts() {
    let (mut k, _) = kernel_with(
        Budgets {
            tokens: Some(1_000),
            ..Default::default()
        },
        Limits::UNLIMITED,
        StagnationConfig::OFF,
    );
    // Reserves the whole budget but will use little of it.
    let big = k.decide(&step("t", 1, 1_000), 1).decision;
    assert!(big.is_allow());
    let d = k.decide(&step("t", 2, 1), 2).decision;
    assert_eq!(
        (d.decision, d.rule.as_deref()),
        (Verdict::Deny, Some("budget.tokens"))
    );
    assert!(!k.is_halted(), "the refund may make room: no halt yet");
    k.settle(
        big.step,
        &Outcome::success().with_actual(Cost::new(10, 0)),
        3,
    )
    .unwrap();
    assert!(k.decide(&step("t", 3, 1), 4).decision.is_allow());
}

/// Tool names are identities without case: an agent cannot dodge the repeat check (or count
/// one tool as several) by changing the case of the tool name.
#[test]
fn repeats_spelled_in_another_case_are_the_same_call() {
    let (mut k, _) = kernel_with(
        Budgets {
            exploration: Some(2),
            ..Default::default()
        },
        Limits::UNLIMITED,
        StagnationConfig {
            repeat_limit: 3,
            window: 10,
        },
    );
    assert!(k.decide(&step("shell", 1, 0), 1).decision.is_allow());
    assert!(k.decide(&step("Shell", 1, 0), 2).decision.is_allow());
    // Still one tool: a second distinct one fits the exploration budget of 2.
    assert!(k.decide(&step("other", 9, 0), 3).decision.is_allow());
    let d = k.decide(&step("SHELL", 1, 0), 4).decision;
    assert_eq!(d.rule.as_deref(), Some("stagnation.repeat"), "{d:?}");
    assert_eq!(
        step("sHeLl", 1, 0).fingerprint(),
        step("shell", 1, 0).fingerprint()
    );
    assert_eq!(
        step("sHeLl", 1, 0).tool_key(),
        step("shell", 1, 0).tool_key()
    );
}

#[test]
fn a_sealed_step_settles_only_with_its_seal() {
    let (mut k, _) = kernel_with(
        Budgets {
            tokens: Some(1_000),
            ..Default::default()
        },
        Limits::UNLIMITED,
        StagnationConfig::OFF,
    );
    let s = k.decide(&step("llm", 1, 500).sealed(42), 1).decision.step;
    let cheap = Outcome::success().with_usage(warden_actors::Usage::new().tokens(0));
    let err = k.settle(s, &cheap, 2).unwrap_err();
    assert!(
        matches!(err, warden_actors::SettleError::Sealed { .. }),
        "{err}"
    );
    let forged = cheap.clone().with_seal(41);
    assert!(
        k.settle(s, &forged, 3).is_err(),
        "a wrong seal settles nothing"
    );
    assert_eq!(k.snapshot().open_steps, 1);
    let real = Outcome::success()
        .with_usage(warden_actors::Usage::new().tokens(480))
        .with_seal(42);
    k.settle(s, &real, 4).unwrap();
    assert_eq!(k.snapshot().account.spent.get(LedgerDim::Tokens), 480);
    // Unsealed steps settle as before.
    let t = k.decide(&step("t", 2, 10), 5).decision.step;
    k.settle(t, &Outcome::success(), 6).unwrap();
}

/// An agent whose proxied request is in flight (a sealed open step) is waiting on the node,
/// not silent: it is not lost, however long the upstream takes; once that step settles, the
/// silence counts again.
#[test]
fn an_agent_with_a_proxied_step_in_flight_is_not_lost() {
    let root = Account::root("swarm", Limits::UNLIMITED);
    let account = root.child("a1", Limits::UNLIMITED).unwrap();
    let config = KernelConfig {
        heartbeat_timeout_ms: Some(1_000),
        ..Default::default()
    };
    let mut k = AgentKernel::new(AgentId::new("a1").unwrap(), account, &config, None, 0);
    let sealed = step("t", 1, 10).sealed(42);
    let s = k.decide(&sealed, 10).decision.step;
    assert!(!k.is_lost(60_000), "the proxy carries its request");
    k.settle(s, &Outcome::success().with_seal(42), 60_000)
        .unwrap();
    assert!(!k.is_lost(60_500));
    assert!(k.is_lost(61_001), "silent again after its request");
    // An unsealed open step (the agent reports its own outcome) does not count.
    k.decide(&step("t", 2, 10), 61_001);
    assert!(k.is_lost(62_002));
}
