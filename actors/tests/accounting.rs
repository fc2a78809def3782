//! Accounting fails closed (issue 8, section 1): what an agent declares or reports never lets
//! spend go unrecorded. Minimum reservations per tool and action class; a dimension with
//! nothing left refuses every step billed in it; outcomes settle what they do not report as
//! reserved; overrun is counted as used; late outcomes of released steps are charged;
//! sub-micro-dollar amounts never round to 0; every amount is bounded.

use std::sync::Arc;

use proptest::prelude::*;
use serde_json::json;
use warden_actors::policy::PolicySet;
use warden_actors::step::{usd_to_micro, RawUsage};
use warden_actors::{
    Account, ActionClass, AgentId, AgentKernel, Amounts, Budgets, Cost, CustomDim, HaltKind,
    KernelConfig, LedgerDim, Limits, Outcome, SettleError, Step, StepPolicy, Usage, Verdict,
    MAX_RELEASED_STEPS, MAX_STEP_AMOUNT,
};

const USD: u64 = 1_000_000;

fn aid(s: &str) -> AgentId {
    AgentId::new(s).unwrap()
}

fn kernel(
    name: &str,
    parent: &Arc<Account>,
    budgets: Budgets,
    policy: Option<Arc<dyn StepPolicy>>,
) -> AgentKernel {
    let account = parent.child(name, budgets.ledger_limits()).unwrap();
    let config = KernelConfig {
        budgets,
        ..Default::default()
    };
    AgentKernel::new(aid(name), account, &config, policy, 0)
}

fn step(tool: &str, class: ActionClass) -> warden_actors::step::StepBuilder {
    Step::builder(tool, class)
}

fn gpu() -> CustomDim {
    CustomDim::new("gpu_seconds").unwrap()
}

/// The first measured case, in the library: 20 agents step at once on a pool with
/// `cost_usd: 1.00`, each declaring no cost (so each is reserved at the built-in minimum of
/// its action class, $0.01 for `network`), then each reports $0.50. The $9 no budget could
/// cover is overrun, counted in what the pool used, and halts its agents; a 21st agent's
/// zero-cost step on the exhausted pool is denied.
#[test]
fn twenty_agents_declaring_nothing_on_a_one_dollar_pool_cannot_hide_their_spend() {
    let pool = Account::root(
        "swarm",
        Limits::UNLIMITED.with(LedgerDim::CostMicroUsd, Some(USD)),
    );
    let mut agents: Vec<AgentKernel> = (0..20)
        .map(|i| kernel(&format!("a{i}"), &pool, Budgets::default(), None))
        .collect();
    let free = step("llm.chat", ActionClass::Network).build().unwrap();
    let steps: Vec<_> = agents
        .iter_mut()
        .map(|k| {
            let d = k.decide(&free, 1).decision;
            assert!(d.is_allow(), "{d:?}");
            d.step
        })
        .collect();
    let half = Outcome::success().with_usage(Usage::new().cost_micro_usd(USD / 2));
    let mut halted = 0;
    let mut charged = 0;
    let mut overrun = 0;
    for (k, s) in agents.iter_mut().zip(steps) {
        let r = k.settle(s, &half, 2).unwrap();
        charged += r.settlement.charged.get(LedgerDim::CostMicroUsd);
        overrun += r.settlement.overrun.get(LedgerDim::CostMicroUsd);
        if let Some(h) = r.halt {
            assert_eq!(
                (h.kind, h.rule.as_deref()),
                (HaltKind::Exhaustion, Some("budget.overrun"))
            );
            halted += 1;
        }
    }
    // Each step holds the network class's built-in minimum ($0.01: it declares no money and
    // the pool limits money), so after the first report the 19 others no longer fit whole
    // while the rest still hold theirs: 19 halt.
    assert_eq!((charged, overrun, halted), (USD, 9 * USD, 19));
    let snap = pool.snapshot();
    assert_eq!(snap.spent.get(LedgerDim::CostMicroUsd), USD);
    assert_eq!(snap.overrun.get(LedgerDim::CostMicroUsd), 9 * USD);
    assert_eq!(snap.used().get(LedgerDim::CostMicroUsd), 10 * USD);
    assert_eq!(snap.remaining(LedgerDim::CostMicroUsd), Some(0));

    let mut late = kernel("a20", &pool, Budgets::default(), None);
    let d = late.decide(&free, 3).decision;
    assert_eq!(
        (d.decision, d.rule.as_deref()),
        (Verdict::Deny, Some("pool.swarm.cost_usd")),
        "{d:?}"
    );
    // Its undeclared money is reserved at the network class's minimum, which no longer fits.
    assert!(d.reason.contains("needs 10000"), "{}", d.reason);
}

/// With a `min_cost` on the tool, the same 20 concurrent steps are admitted only as far as the
/// pool has room for their minimum: admission itself stops the overspend.
#[test]
fn a_tool_min_cost_admits_only_as_many_steps_as_the_pool_can_hold() {
    let policy: Arc<dyn StepPolicy> = Arc::new(
        PolicySet::parse(
            "version: 1\ntools:\n  llm.chat: {action: network, min_cost: {cost_usd: 0.10}}\n",
        )
        .unwrap(),
    );
    let pool = Account::root(
        "swarm",
        Limits::UNLIMITED.with(LedgerDim::CostMicroUsd, Some(USD)),
    );
    let free = step("llm.chat", ActionClass::Network).build().unwrap();
    let mut allowed = 0;
    let mut kernels = Vec::new(); // alive: a dropped kernel's reservations are released
    for i in 0..20 {
        let mut k = kernel(
            &format!("a{i}"),
            &pool,
            Budgets::default(),
            Some(Arc::clone(&policy)),
        );
        let d = k.decide(&free, 1).decision;
        if d.is_allow() {
            allowed += 1;
        } else {
            assert_eq!(d.rule.as_deref(), Some("pool.swarm.cost_usd"), "{d:?}");
        }
        kernels.push(k);
    }
    assert_eq!(allowed, 10);
    assert_eq!(pool.snapshot().reserved.get(LedgerDim::CostMicroUsd), USD);
}

#[test]
fn an_exhausted_token_budget_refuses_a_step_declaring_zero_tokens() {
    let pool = Account::root("swarm", Limits::UNLIMITED);
    let mut k = kernel(
        "a1",
        &pool,
        Budgets {
            tokens: Some(100),
            ..Default::default()
        },
        None,
    );
    let s = k
        .decide(
            &step("t", ActionClass::Read).tokens(100).build().unwrap(),
            1,
        )
        .decision;
    k.settle(s.step, &Outcome::success(), 2).unwrap();
    // Used up exactly: a step declaring 0 tokens is billed in tokens all the same.
    let zero = step("t", ActionClass::Read).build().unwrap();
    let d = k.decide(&zero, 3);
    assert_eq!(
        (
            d.decision.decision,
            d.decision.kind,
            d.decision.rule.as_deref()
        ),
        (
            Verdict::Halt,
            Some(HaltKind::Exhaustion),
            Some("budget.tokens")
        )
    );
}

#[test]
fn an_exhausted_token_pool_denies_a_step_declaring_zero_tokens() {
    let pool = Account::root("swarm", Limits::UNLIMITED.with(LedgerDim::Tokens, Some(50)));
    let mut a = kernel("a1", &pool, Budgets::default(), None);
    let mut b = kernel("a2", &pool, Budgets::default(), None);
    let s = a
        .decide(&step("t", ActionClass::Read).tokens(10).build().unwrap(), 1)
        .decision;
    a.settle(
        s.step,
        &Outcome::success().with_usage(Usage::new().tokens(50)),
        2,
    )
    .unwrap();
    let d = b
        .decide(&step("t", ActionClass::Read).build().unwrap(), 3)
        .decision;
    assert_eq!(
        (d.decision, d.rule.as_deref()),
        (Verdict::Deny, Some("pool.swarm.tokens"))
    );
    // Held, not spent: a pool fully reserved by another step denies too.
    let pool = Account::root("swarm", Limits::UNLIMITED.with(LedgerDim::Tokens, Some(50)));
    let mut a = kernel("a1", &pool, Budgets::default(), None);
    let mut b = kernel("a2", &pool, Budgets::default(), None);
    assert!(a
        .decide(&step("t", ActionClass::Read).tokens(50).build().unwrap(), 1)
        .decision
        .is_allow());
    let d = b
        .decide(&step("t", ActionClass::Read).build().unwrap(), 2)
        .decision;
    assert_eq!(d.rule.as_deref(), Some("pool.swarm.tokens"));
}

/// A custom dimension with nothing left refuses steps that declare none of it.
#[test]
fn an_exhausted_custom_dimension_refuses_steps_billed_in_it() {
    let pool = Account::root("swarm", Limits::UNLIMITED.with_custom(gpu(), 0));
    let mut k = kernel("a1", &pool, Budgets::default(), None);
    let d = k
        .decide(&step("t", ActionClass::Read).build().unwrap(), 1)
        .decision;
    assert_eq!(
        (d.decision, d.rule.as_deref()),
        (Verdict::Deny, Some("pool.swarm.gpu_seconds"))
    );
}

/// A custom dimension nothing declares (no policy names it, no budget on the path limits it)
/// is denied in a step and refused in an outcome; one the agent's own budget or a pool above
/// limits, or the policy names, is accepted.
#[test]
fn an_undeclared_custom_dimension_is_denied_and_refused() {
    let tpu = CustomDim::new("tpu").unwrap();
    let pool = Account::root("swarm", Limits::UNLIMITED.with_custom(gpu(), 100));
    let budgets = Budgets {
        custom: vec![(tpu.clone(), 50)],
        ..Default::default()
    };
    let mut k = kernel("a1", &pool, budgets, None);
    let take = |k: &mut AgentKernel, dim: &str, n: u64| {
        let s = step("t", ActionClass::Read)
            .args(json!({ "n": n }))
            .custom(dim, 1);
        k.decide(&s.build().unwrap(), n).decision
    };
    let d = take(&mut k, "gpu_second", 1);
    assert_eq!(
        (d.decision, d.rule.as_deref()),
        (Verdict::Deny, Some("cost.undeclared")),
        "{d:?}"
    );
    assert!(d.reason.contains("gpu_second"), "{}", d.reason);
    for (i, dim) in ["gpu_seconds", "tpu"].into_iter().enumerate() {
        let d = take(&mut k, dim, 2 + i as u64);
        assert_eq!(d.decision, Verdict::Allow, "{dim}: {d:?}");
    }
    // Named only by the policy (a min_cost of another tool): accepted.
    let policy: Arc<dyn StepPolicy> = Arc::new(
        PolicySet::parse(
            "version: 1
default_decision: allow
tools:
  render: {action: execute, min_cost: {custom: {frames: 1}}}
",
        )
        .unwrap(),
    );
    let mut p = kernel("a2", &pool, Budgets::default(), Some(policy));
    assert_eq!(take(&mut p, "frames", 1).decision, Verdict::Allow);
    assert_eq!(
        take(&mut p, "frame", 2).rule.as_deref(),
        Some("cost.undeclared")
    );
    // Outcomes: an undeclared dimension settles nothing; the step stays open.
    let open = take(&mut k, "tpu", 9).step;
    let bad = Outcome::success().with_usage(Usage::new().custom(CustomDim::new("zz").unwrap(), 5));
    match k.settle(open, &bad, 10) {
        Err(SettleError::BadUsage(m)) => assert!(m.contains("zz"), "{m}"),
        other => panic!("expected BadUsage, got {other:?}"),
    }
    let good = Outcome::success().with_usage(Usage::new().custom(tpu.clone(), 5));
    let r = k.settle(open, &good, 11).unwrap();
    assert_eq!(r.settlement.charged.custom(&tpu), 5);
    let snap = pool.snapshot();
    assert!(
        snap.spent
            .custom_entries()
            .iter()
            .all(|(d, _)| d.as_str() != "zz"),
        "{snap:?}"
    );
}

/// `tokens: 0` grants no tokens: every step billed in tokens is denied (not a halt: nothing
/// was used up), and a tool exempt from tokens (`min_cost: {tokens: 0}`) still runs.
#[test]
fn a_zero_token_budget_denies_steps_billed_in_tokens_and_lets_exempt_tools_run() {
    let policy: Arc<dyn StepPolicy> = Arc::new(
        PolicySet::parse(
            "version: 1
tools:
  files.read: {action: read, min_cost: {tokens: 0}}
  llm.chat: {action: network}
",
        )
        .unwrap(),
    );
    let pool = Account::root("swarm", Limits::UNLIMITED);
    let mut k = kernel(
        "a1",
        &pool,
        Budgets {
            tokens: Some(0),
            ..Default::default()
        },
        Some(policy),
    );
    for (i, tokens) in [0, 10].into_iter().enumerate() {
        let llm = step("llm.chat", ActionClass::Network)
            .args(json!({ "i": i }))
            .tokens(tokens)
            .build()
            .unwrap();
        let d = k.decide(&llm, 1).decision;
        assert_eq!(
            (d.decision, d.rule.as_deref()),
            (Verdict::Deny, Some("budget.tokens")),
            "{d:?}"
        );
        assert!(d.reason.contains("budget is 0"), "{}", d.reason);
    }
    assert!(!k.is_halted());
    let read = step("files.read", ActionClass::Read).build().unwrap();
    assert!(k.decide(&read, 2).decision.is_allow());
    // Declaring tokens bills them, exemption or not.
    let greedy = step("files.read", ActionClass::Read)
        .tokens(1)
        .build()
        .unwrap();
    assert_eq!(
        k.decide(&greedy, 3).decision.rule.as_deref(),
        Some("budget.tokens")
    );
}

const MIN_COST_POLICY: &str = "
version: 1
defaults:
  min_cost:
    network: {tokens: 100, cost_usd: 0.0005}
    read: {tokens: 0, cost_usd: 0}
tools:
  llm.chat: {action: network, min_cost: {tokens: 500, cost_usd: 0.001, custom: {gpu_seconds: 2}}}
  web.fetch: {action: network, min_cost: {cost_usd: 0.002}}
  files.read: {action: read}
";

fn min_cost_kernel() -> (AgentKernel, Arc<Account>) {
    let policy: Arc<dyn StepPolicy> = Arc::new(PolicySet::parse(MIN_COST_POLICY).unwrap());
    let pool = Account::root("swarm", Limits::UNLIMITED);
    let k = kernel("a1", &pool, Budgets::default(), Some(policy));
    (k, pool)
}

#[test]
fn a_step_declaring_less_than_its_minimum_is_reserved_at_the_minimum() {
    let (mut k, pool) = min_cost_kernel();
    let cheap = step("llm.chat", ActionClass::Network)
        .tokens(100)
        .build()
        .unwrap();
    assert!(k.decide(&cheap, 1).decision.is_allow());
    let r = pool.snapshot().reserved;
    assert_eq!(r.get(LedgerDim::Tokens), 500);
    assert_eq!(r.get(LedgerDim::CostMicroUsd), 1_000);
    assert_eq!(r.custom(&gpu()), 2);
    // More than the minimum is reserved as declared.
    let big = step("llm.chat", ActionClass::Network)
        .args(json!({"big": true}))
        .tokens(9_000)
        .build()
        .unwrap();
    assert!(k.decide(&big, 2).decision.is_allow());
    assert_eq!(pool.snapshot().reserved.get(LedgerDim::Tokens), 9_500);
}

#[test]
fn a_tool_min_cost_overrides_its_class_default_dimension_by_dimension() {
    let (mut k, pool) = min_cost_kernel();
    // web.fetch names only money: tokens come from the network default.
    let fetch = step("web.fetch", ActionClass::Network).build().unwrap();
    assert!(k.decide(&fetch, 1).decision.is_allow());
    let r = pool.snapshot().reserved;
    assert_eq!(
        (r.get(LedgerDim::Tokens), r.get(LedgerDim::CostMicroUsd)),
        (100, 2_000)
    );
}

#[test]
fn outcomes_settle_the_dimensions_they_do_not_report_as_reserved() {
    let (mut k, pool) = min_cost_kernel();
    let llm = |i: u64| {
        step("llm.chat", ActionClass::Network)
            .args(json!({ "i": i }))
            .build()
            .unwrap()
    };
    // Only tokens reported: money and gpu settle as reserved.
    let s = k.decide(&llm(1), 1).decision.step;
    let r = k
        .settle(
            s,
            &Outcome::success().with_usage(Usage::new().tokens(50)),
            2,
        )
        .unwrap();
    let c = &r.settlement.charged;
    assert_eq!(
        (
            c.get(LedgerDim::Tokens),
            c.get(LedgerDim::CostMicroUsd),
            c.custom(&gpu())
        ),
        (50, 1_000, 2)
    );
    assert_eq!(r.settlement.refunded.get(LedgerDim::Tokens), 450);
    assert_eq!(r.settlement.refunded.get(LedgerDim::CostMicroUsd), 0);
    // Only money: tokens as reserved.
    let s = k.decide(&llm(2), 3).decision.step;
    let r = k
        .settle(
            s,
            &Outcome::success().with_usage(Usage::new().cost_micro_usd(300)),
            4,
        )
        .unwrap();
    let c = &r.settlement.charged;
    assert_eq!(
        (c.get(LedgerDim::Tokens), c.get(LedgerDim::CostMicroUsd)),
        (500, 300)
    );
    // Only a custom dimension.
    let s = k.decide(&llm(3), 5).decision.step;
    let r = k
        .settle(
            s,
            &Outcome::success().with_usage(Usage::new().custom(gpu(), 7)),
            6,
        )
        .unwrap();
    let c = &r.settlement.charged;
    assert_eq!(
        (
            c.get(LedgerDim::Tokens),
            c.get(LedgerDim::CostMicroUsd),
            c.custom(&gpu())
        ),
        (500, 1_000, 7)
    );
    // Nothing reported: everything as reserved. `with_actual(Cost)` reports tokens and money
    // (its customs only as listed).
    let s = k.decide(&llm(4), 7).decision.step;
    let r = k
        .settle(s, &Outcome::success().with_actual(Cost::new(10, 20)), 8)
        .unwrap();
    let c = &r.settlement.charged;
    assert_eq!(
        (
            c.get(LedgerDim::Tokens),
            c.get(LedgerDim::CostMicroUsd),
            c.custom(&gpu())
        ),
        (10, 20, 2)
    );
    let s = k.decide(&llm(5), 9).decision.step;
    let r = k.settle(s, &Outcome::success(), 10).unwrap();
    assert_eq!(r.settlement.charged, pool_reserved_of_llm());
    assert!(pool.snapshot().reserved.is_zero());
}

/// A `lost` halt as journals written before lost halts settled open steps record it, re-applied
/// as recovery does: the open reservations are released and remembered, so late outcomes are
/// charged with nothing held (the legacy path these tests keep working).
fn lost_as_earlier_journals_record_it(k: &mut AgentKernel, at_ms: u64) {
    let record = warden_actors::HaltRecord {
        kind: HaltKind::Lost,
        rule: None,
        reason: "silent".into(),
        at_ms,
        cause: Vec::new(),
    };
    k.restore(&warden_actors::KernelRecord::Halt { record })
        .unwrap();
}

/// A live `lost` halt settles every open step as a failure at its whole reservation,
/// recorded as settlements before the halt, so recovery charges the same; their outcomes are
/// then refused as unknown.
#[test]
fn a_lost_halt_settles_open_steps_at_their_reservation() {
    let pool = Account::root(
        "swarm",
        Limits::UNLIMITED.with(LedgerDim::Tokens, Some(1_000)),
    );
    let mut a = kernel("a1", &pool, Budgets::default(), None);
    a.set_recording(true);
    let t = |n: u64, i: u64| {
        step("t", ActionClass::Read)
            .args(json!({ "i": i }))
            .tokens(n)
            .build()
            .unwrap()
    };
    let s1 = a.decide(&t(400, 1), 1).decision.step;
    a.decide(&t(300, 2), 2);
    a.halt(HaltKind::Lost, None, "silent".into(), Vec::new(), 3);
    let snap = pool.snapshot();
    assert_eq!(
        (
            snap.reserved.get(LedgerDim::Tokens),
            snap.spent.get(LedgerDim::Tokens)
        ),
        (0, 700)
    );
    assert_eq!((a.open_steps(), a.released_steps()), (0, 0));
    let err = a.settle(s1, &Outcome::success(), 4).unwrap_err();
    assert!(matches!(err, SettleError::UnknownStep { .. }), "{err}");
    let records = a.take_records();
    let kinds: Vec<&str> = records
        .iter()
        .map(|r| match r {
            warden_actors::KernelRecord::Decision { .. } => "decision",
            warden_actors::KernelRecord::Settlement { .. } => "settlement",
            warden_actors::KernelRecord::Halt { .. } => "halt",
            _ => "other",
        })
        .collect();
    assert_eq!(
        kinds,
        ["decision", "decision", "settlement", "settlement", "halt"]
    );
    // Recovery from the records charges the same.
    let pool2 = Account::root(
        "swarm",
        Limits::UNLIMITED.with(LedgerDim::Tokens, Some(1_000)),
    );
    let mut b = kernel("a1", &pool2, Budgets::default(), None);
    for r in &records {
        b.restore(r).unwrap();
    }
    assert_eq!(pool2.snapshot(), pool.snapshot());
    assert_eq!(b.account().snapshot(), a.account().snapshot());
    assert_eq!(b.open_steps(), 0);
}

fn pool_reserved_of_llm() -> Amounts {
    let mut a = Amounts::new(1, 500, 1_000, 0);
    a.set_custom(gpu(), 2);
    a
}

#[test]
fn a_late_outcome_after_a_lost_halt_is_charged_as_far_as_there_is_room() {
    let pool = Account::root(
        "swarm",
        Limits::UNLIMITED.with(LedgerDim::Tokens, Some(1_000)),
    );
    let mut a = kernel("a1", &pool, Budgets::default(), None);
    let mut b = kernel("a2", &pool, Budgets::default(), None);
    let t = |n: u64, i: u64| {
        step("t", ActionClass::Read)
            .args(json!({ "i": i }))
            .tokens(n)
            .build()
            .unwrap()
    };
    let s1 = a.decide(&t(400, 1), 1).decision.step;
    let s2 = a.decide(&t(300, 2), 2).decision.step;
    lost_as_earlier_journals_record_it(&mut a, 3);
    assert_eq!(pool.snapshot().reserved.get(LedgerDim::Tokens), 0);
    assert_eq!(a.released_steps(), 2);
    // The released room goes to another agent.
    let sb = b.decide(&t(800, 3), 4).decision.step;
    b.settle(sb, &Outcome::success(), 5).unwrap();
    // Then the lost agent's outcomes arrive after all: charged (200 fit), the rest overrun.
    let r = a
        .settle(
            s1,
            &Outcome::success().with_usage(Usage::new().tokens(350)),
            6,
        )
        .unwrap();
    assert!(r.late);
    assert_eq!(r.settlement.charged.get(LedgerDim::Tokens), 200);
    assert_eq!(r.settlement.overrun.get(LedgerDim::Tokens), 150);
    assert!(r.halt.is_none(), "already halted: the first halt stands");
    // Unreported: settled as it had reserved (300), all overrun now.
    let r = a.settle(s2, &Outcome::failure(), 7).unwrap();
    assert!(r.late);
    assert_eq!(r.settlement.overrun.get(LedgerDim::Tokens), 300);
    let snap = pool.snapshot();
    assert_eq!(snap.spent.get(LedgerDim::Tokens), 1_000);
    assert_eq!(snap.used().get(LedgerDim::Tokens), 1_450);
    assert_eq!(a.account().snapshot().used().get(LedgerDim::Tokens), 650);
    // Once settled, it is unknown.
    assert!(matches!(
        a.settle(s1, &Outcome::success(), 8),
        Err(SettleError::UnknownStep { .. })
    ));
}

#[test]
fn a_late_outcome_of_a_resumed_agent_that_overruns_halts_it() {
    let pool = Account::root(
        "swarm",
        Limits::UNLIMITED.with(LedgerDim::Tokens, Some(100)),
    );
    let mut a = kernel("a1", &pool, Budgets::default(), None);
    let s = a
        .decide(&step("t", ActionClass::Read).tokens(10).build().unwrap(), 1)
        .decision
        .step;
    lost_as_earlier_journals_record_it(&mut a, 2);
    a.resume(3);
    let r = a
        .settle(
            s,
            &Outcome::success().with_usage(Usage::new().tokens(150)),
            4,
        )
        .unwrap();
    assert!(r.late);
    assert_eq!(r.settlement.overrun.get(LedgerDim::Tokens), 50);
    assert_eq!(
        r.halt.and_then(|h| h.rule).as_deref(),
        Some("budget.overrun")
    );
}

#[test]
fn released_steps_are_remembered_up_to_the_bound_and_the_oldest_forgotten() {
    let pool = Account::root("swarm", Limits::UNLIMITED);
    let account = pool.child("a1", Limits::UNLIMITED).unwrap();
    let config = KernelConfig {
        max_open_steps: MAX_RELEASED_STEPS + 10,
        ..Default::default()
    };
    let mut k = AgentKernel::new(aid("a1"), account, &config, None, 0);
    let mut ids = Vec::new();
    for i in 0..=MAX_RELEASED_STEPS as u64 {
        let s = step("t", ActionClass::Read)
            .args(json!({ "i": i }))
            .tokens(1)
            .build()
            .unwrap();
        let d = k.decide(&s, 1).decision;
        assert!(d.is_allow(), "{d:?}");
        ids.push(d.step);
    }
    lost_as_earlier_journals_record_it(&mut k, 2);
    assert_eq!(k.released_steps(), MAX_RELEASED_STEPS);
    let err = k.settle(ids[0], &Outcome::success(), 3).unwrap_err();
    assert!(err.to_string().contains("released"), "{err}");
    let last = *ids.last().unwrap();
    assert!(k.settle(ids[1], &Outcome::success(), 3).unwrap().late);
    assert!(k.settle(last, &Outcome::success(), 3).unwrap().late);
    assert_eq!(k.released_steps(), MAX_RELEASED_STEPS - 2);
}

/// Late settlements and released steps are journaled: a kernel rebuilt from the records
/// (recovery re-applies, it does not re-judge) has the same ledger, and the same released
/// steps, even from a state snapshot.
#[test]
fn late_settlements_are_recovered_exactly_from_records_and_snapshots() {
    let pool = Account::root(
        "swarm",
        Limits::UNLIMITED.with(LedgerDim::Tokens, Some(500)),
    );
    let mut a = kernel("a1", &pool, Budgets::default(), None);
    a.set_recording(true);
    let t = |n: u64, i: u64| {
        step("t", ActionClass::Read)
            .args(json!({ "i": i }))
            .tokens(n)
            .build()
            .unwrap()
    };
    let s1 = a.decide(&t(300, 1), 1).decision.step;
    let s2 = a.decide(&t(100, 2), 2).decision.step;
    let s3 = a.decide(&t(50, 3), 3).decision.step;
    lost_as_earlier_journals_record_it(&mut a, 4);
    a.settle(
        s1,
        &Outcome::success().with_usage(Usage::new().tokens(900)),
        5,
    )
    .unwrap();
    let state = a.export_state(6);
    a.settle(s2, &Outcome::success(), 7).unwrap();
    let records = a.take_records();
    assert!(records.iter().any(|r| matches!(
        r,
        warden_actors::KernelRecord::Settlement { late: true, .. }
    )));

    // From the records.
    let pool2 = Account::root(
        "swarm",
        Limits::UNLIMITED.with(LedgerDim::Tokens, Some(500)),
    );
    let mut b = kernel("a1", &pool2, Budgets::default(), None);
    for r in &records {
        b.restore(r).unwrap();
    }
    assert_eq!(pool2.snapshot(), pool.snapshot());
    assert_eq!(b.account().snapshot(), a.account().snapshot());
    assert_eq!(b.released_steps(), 1);
    assert!(b.settle(s3, &Outcome::success(), 8).unwrap().late);

    // From the snapshot taken after s1's late outcome: s2 and s3 are still released.
    let pool3 = Account::root(
        "swarm",
        Limits::UNLIMITED.with(LedgerDim::Tokens, Some(500)),
    );
    let mut c = kernel("a1", &pool3, Budgets::default(), None);
    c.restore(&warden_actors::KernelRecord::State(Box::new(state.clone())))
        .unwrap();
    assert_eq!(state.released.len(), 2);
    assert_eq!(c.released_steps(), 2);
    // A journal written before `released` existed reads as none released.
    let mut old = serde_json::to_value(&state).unwrap();
    old.as_object_mut().unwrap().remove("released");
    let old: warden_actors::record::AgentStateRecord = serde_json::from_value(old).unwrap();
    assert!(old.released.is_empty());
}

#[test]
fn money_below_one_micro_dollar_rounds_up_never_to_zero() {
    assert_eq!(usd_to_micro(0.0).unwrap(), 0);
    assert_eq!(usd_to_micro(1e-9).unwrap(), 1);
    assert_eq!(usd_to_micro(4e-7).unwrap(), 1);
    assert_eq!(usd_to_micro(0.004).unwrap(), 4_000);
    assert_eq!(usd_to_micro(1.5e-6).unwrap(), 2);
    let s: Step = serde_json::from_value(
        json!({"tool": "t", "action": "read", "cost": {"cost_usd": 1e-9}, "signals": {"risk": 1e-9}}),
    )
    .unwrap();
    assert_eq!(s.cost().cost_micro_usd(), 1);
    assert_eq!(s.signals().risk_micro(), 1);
    let u = serde_json::from_value::<RawUsage>(json!({"cost_usd": 3e-8}))
        .unwrap()
        .parse("outcome.cost")
        .unwrap();
    assert_eq!(u.reported_cost_micro_usd(), Some(1));
    // The policy's amounts follow the same rule.
    let p = PolicySet::parse(
        "version: 1\ntools:\n  t: {action: read, min_cost: {cost_usd: 0.0000001}}\n",
    )
    .unwrap();
    assert_eq!(p.doc().tools[0].min_cost.cost_micro_usd, Some(1));
}

#[test]
fn every_amount_of_a_step_an_outcome_and_a_registration_is_bounded() {
    let over = MAX_STEP_AMOUNT + 1;
    for (cost, field) in [
        (json!({"tokens": over}), "step.cost.tokens"),
        (json!({"cost_micro_usd": over}), "step.cost.cost_micro_usd"),
        (json!({"cost_usd": 2e9}), "step.cost.cost_usd"),
        (
            json!({"custom": {"gpu_seconds": over}}),
            "step.cost.custom.gpu_seconds",
        ),
        (
            json!({"cost_usd": 1.0, "cost_micro_usd": 1}),
            "step.cost has both",
        ),
    ] {
        let e =
            serde_json::from_value::<Step>(json!({"tool": "t", "action": "read", "cost": cost}))
                .unwrap_err()
                .to_string();
        assert!(e.contains(field), "{e} should name {field}");
    }
    assert!(serde_json::from_value::<Step>(
        json!({"tool": "t", "action": "read", "cost": {"tokens": MAX_STEP_AMOUNT}})
    )
    .is_ok());
    let e = step("t", ActionClass::Read)
        .tokens(over)
        .build()
        .unwrap_err();
    assert!(e.to_string().contains("step.cost.tokens"), "{e}");

    for (cost, field) in [
        (json!({"tokens": over}), "outcome.cost.tokens"),
        (
            json!({"cost_micro_usd": over}),
            "outcome.cost.cost_micro_usd",
        ),
        (json!({"cost_usd": -1.0}), "outcome.cost.cost_usd"),
        (json!({"custom": {"tokens": 1}}), "outcome.cost.custom"),
        (
            json!({"cost_usd": 1.0, "cost_micro_usd": 1}),
            "outcome.cost has both",
        ),
    ] {
        let e = serde_json::from_value::<RawUsage>(cost)
            .unwrap()
            .parse("outcome.cost")
            .unwrap_err()
            .to_string();
        assert!(e.contains(field), "{e} should name {field}");
    }
    assert!(serde_json::from_value::<RawUsage>(json!({"token": 1})).is_err());
    // The kernel checks the library's reports too, before changing anything.
    let pool = Account::root("swarm", Limits::UNLIMITED);
    let mut k = kernel("a1", &pool, Budgets::default(), None);
    let s = k
        .decide(&step("t", ActionClass::Read).build().unwrap(), 1)
        .decision
        .step;
    let e = k
        .settle(
            s,
            &Outcome::success().with_usage(Usage::new().tokens(over)),
            2,
        )
        .unwrap_err();
    assert!(matches!(e, SettleError::BadUsage(_)), "{e:?}");
    assert_eq!(k.open_steps(), 1, "nothing settled");

    let budgets = Budgets {
        tokens: Some(warden_actors::MAX_LIMIT_AMOUNT + 1),
        ..Default::default()
    };
    assert!(budgets.check().unwrap_err().contains("tokens"));
    assert!(Budgets {
        tokens: Some(warden_actors::MAX_LIMIT_AMOUNT),
        ..Default::default()
    }
    .check()
    .is_ok());
}

#[test]
fn min_cost_in_a_policy_is_checked_with_line_and_column() {
    let text = "version: 1
defaults:
  min_cost:
    exec: {tokens: 1}
    read: {tokens: -1}
tools:
  t: {action: read, min_cost: {tokens: 1000000000000001, cost_usd: 2000000000, custom: {tokens: 1}, token: 3}}
";
    let errors: Vec<String> = PolicySet::check(text)
        .iter()
        .map(|d| d.to_string())
        .collect();
    let all = errors.join("\n");
    for want in [
        "4:5: error: unknown key `exec` in defaults.min_cost",
        "5:20: error: defaults.min_cost.read.tokens must not be negative",
        "tool t min_cost.tokens = 1000000000000001 is above the largest accepted",
        "tool t min_cost.cost_usd is above the largest accepted",
        "custom dimension \"tokens\" clashes with a built-in dimension",
        "unknown key `token` in tool t min_cost",
    ] {
        assert!(all.contains(want), "missing {want:?} in:\n{all}");
    }
}

// ---------------------------------------------------------------------------------------
// Properties

/// A step's reservation and an outcome that reports a random subset of its dimensions.
#[derive(Clone, Debug)]
struct Split {
    declared: (u64, u64, u64),
    tokens: Option<u64>,
    money: Option<u64>,
    gpu: Option<u64>,
}

fn split() -> impl Strategy<Value = Split> {
    (
        (0..5_000u64, 0..5_000u64, 0..50u64),
        proptest::option::of(0..20_000u64),
        proptest::option::of(0..20_000u64),
        proptest::option::of(0..200u64),
    )
        .prop_map(|(declared, tokens, money, gpu)| Split {
            declared,
            tokens,
            money,
            gpu,
        })
}

fn usage_of(s: &Split) -> Usage {
    let mut u = Usage::new();
    if let Some(t) = s.tokens {
        u = u.tokens(t);
    }
    if let Some(m) = s.money {
        u = u.cost_micro_usd(m);
    }
    if let Some(g) = s.gpu {
        u = u.custom(gpu(), g);
    }
    u
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, .. ProptestConfig::default() })]

    /// However an outcome splits its report, every dimension it does not report is charged
    /// (as spend or overrun) exactly what was reserved, never less; reported ones what was
    /// reported.
    #[test]
    fn random_splits_of_a_cost_report_never_charge_less_than_reserved_for_unreported_dimensions(
        s in split(),
        pool_tokens in 0..10_000u64,
        pool_money in 0..10_000u64,
    ) {
        let pool = Account::root(
            "swarm",
            Limits::UNLIMITED
                .with(LedgerDim::Tokens, Some(pool_tokens))
                .with(LedgerDim::CostMicroUsd, Some(pool_money))
                .with_custom(gpu(), u64::MAX / 4), // declared, never binding
        );
        let mut k = kernel("a1", &pool, Budgets::default(), None);
        let (t, m, g) = s.declared;
        let st = step("t", ActionClass::Read).tokens(t).cost_micro_usd(m).custom("gpu_seconds", g).build().unwrap();
        let d = k.decide(&st, 1).decision;
        prop_assume!(d.is_allow());
        let r = k.settle(d.step, &Outcome::success().with_usage(usage_of(&s)), 2).unwrap();
        let total = r.settlement.charged.saturating_add(&r.settlement.overrun);
        prop_assert_eq!(total.get(LedgerDim::Tokens), s.tokens.unwrap_or(t));
        prop_assert_eq!(total.get(LedgerDim::CostMicroUsd), s.money.unwrap_or(m));
        prop_assert_eq!(total.custom(&gpu()), s.gpu.unwrap_or(g));
        prop_assert_eq!(total.get(LedgerDim::Steps), 1);
        let snap = pool.snapshot();
        prop_assert!(snap.spent.get(LedgerDim::Tokens) <= pool_tokens);
        prop_assert!(snap.spent.get(LedgerDim::CostMicroUsd) <= pool_money);
    }
}

#[derive(Clone, Debug)]
enum Act {
    Step {
        agent: usize,
        tokens: u64,
        money: u64,
    },
    Outcome {
        agent: usize,
        pick: usize,
        split: Split,
    },
    Lost {
        agent: usize,
    },
    Resume {
        agent: usize,
    },
}

fn act() -> impl Strategy<Value = Act> {
    prop_oneof![
        5 => (0..4usize, 0..400u64, 0..400u64).prop_map(|(agent, tokens, money)| Act::Step { agent, tokens, money }),
        5 => (0..4usize, any::<usize>(), split()).prop_map(|(agent, pick, split)| Act::Outcome { agent, pick, split }),
        1 => (0..4usize).prop_map(|agent| Act::Lost { agent }),
        1 => (0..4usize).prop_map(|agent| Act::Resume { agent }),
    ]
}

fn check_bound(accounts: &[Arc<Account>]) -> Result<(), TestCaseError> {
    for a in accounts {
        let s = a.snapshot();
        for dim in LedgerDim::ALL {
            if let Some(limit) = s.limits.get(dim) {
                prop_assert!(
                    s.spent.get(dim) + s.reserved.get(dim) <= limit,
                    "{}: {} spent + {} reserved > {limit}",
                    s.name,
                    s.spent.get(dim),
                    s.reserved.get(dim)
                );
            }
        }
        if let Some(limit) = s.limits.custom(&gpu()) {
            prop_assert!(s.spent.custom(&gpu()) + s.reserved.custom(&gpu()) <= limit);
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, .. ProptestConfig::default() })]

    /// Random steps, partial outcomes, lost halts (releasing reservations) and late outcomes
    /// over a pool tree: `spent + reserved <= limit` after every act, and at the end what
    /// each pool reports as used (spent + overrun) is exactly what the outcomes charged.
    #[test]
    fn pools_account_for_every_charge_and_never_overspend(
        acts in proptest::collection::vec(act(), 1..150),
        root_tokens in 0..3_000u64,
        team_money in 0..2_000u64,
        gpu_limit in 0..100u64,
    ) {
        let root = Account::root(
            "swarm",
            Limits::UNLIMITED.with(LedgerDim::Tokens, Some(root_tokens)).with_custom(gpu(), gpu_limit),
        );
        let team = root
            .child("swarm/t", Limits::UNLIMITED.with(LedgerDim::CostMicroUsd, Some(team_money)))
            .unwrap();
        let mut agents: Vec<AgentKernel> = (0..4)
            .map(|i| {
                let parent = if i % 2 == 0 { &root } else { &team };
                kernel(
                    &format!("a{i}"),
                    parent,
                    Budgets { tokens: Some(1_500), ..Default::default() },
                    None,
                )
            })
            .collect();
        let mut accounts = vec![Arc::clone(&root), Arc::clone(&team)];
        accounts.extend(agents.iter().map(|k| Arc::clone(k.account())));
        // Steps that may still get an outcome: open, or released by a lost halt.
        let mut outstanding: Vec<Vec<warden_actors::StepId>> = vec![Vec::new(); 4];
        let mut charged_root = Amounts::ZERO;
        let mut charged_team = Amounts::ZERO;
        for (now, a) in acts.into_iter().enumerate() {
            let now = now as u64 + 1;
            match a {
                Act::Step { agent, tokens, money } => {
                    let st = step("t", ActionClass::Read)
                        .args(json!({ "now": now }))
                        .tokens(tokens)
                        .cost_micro_usd(money)
                        .build()
                        .unwrap();
                    let d = agents[agent].decide(&st, now).decision;
                    if d.is_allow() {
                        outstanding[agent].push(d.step);
                    }
                }
                Act::Outcome { agent, pick, split } => {
                    if outstanding[agent].is_empty() {
                        continue;
                    }
                    let at = pick % outstanding[agent].len();
                    let s = outstanding[agent].remove(at);
                    let r = agents[agent]
                        .settle(s, &Outcome::success().with_usage(usage_of(&split)), now)
                        .unwrap();
                    let total = r.settlement.charged.saturating_add(&r.settlement.overrun);
                    charged_root = charged_root.saturating_add(&total);
                    if agent % 2 == 1 {
                        charged_team = charged_team.saturating_add(&total);
                    }
                }
                Act::Lost { agent } => {
                    // Its open steps are settled at their reservation: charged like outcomes.
                    let (root_before, team_before) = (root.snapshot().used(), team.snapshot().used());
                    agents[agent].halt(HaltKind::Lost, None, "silent".into(), Vec::new(), now);
                    outstanding[agent].clear();
                    let root_delta = root.snapshot().used().saturating_sub(&root_before);
                    charged_root = charged_root.saturating_add(&root_delta);
                    let team_delta = team.snapshot().used().saturating_sub(&team_before);
                    charged_team = charged_team.saturating_add(&team_delta);
                }
                Act::Resume { agent } => {
                    agents[agent].resume(now);
                }
            }
            check_bound(&accounts)?;
        }
        prop_assert_eq!(root.snapshot().used(), charged_root);
        prop_assert_eq!(team.snapshot().used(), charged_team);
    }
}

/// What one step reserves on a fresh agent under `pool`'s and `budgets`' limits.
fn reserved_by(pool_limits: Limits, budgets: Budgets, policy: Option<&str>, s: Step) -> Amounts {
    let pool = Account::root("swarm", pool_limits);
    let policy = policy.map(|p| Arc::new(PolicySet::parse(p).unwrap()) as Arc<dyn StepPolicy>);
    let mut k = kernel("a1", &pool, budgets, policy);
    let d = k.decide(&s, 1).decision;
    assert!(d.is_allow(), "{d:?}");
    pool.snapshot().reserved
}

/// Invariant 6: a cost the agent does not declare is never taken as zero. With no `min_cost`
/// configured, the tokens and money a step leaves out are reserved at its action class's
/// built-in minimum wherever the agent's budget or a pool above it limits them (with or
/// without a policy); an unlimited dimension is left as declared.
#[test]
fn undeclared_costs_are_reserved_at_the_built_in_minimum_where_a_budget_limits_them() {
    use warden_actors::step::BUILTIN_MIN_COST;
    let money_pool = Limits::UNLIMITED.with(LedgerDim::CostMicroUsd, Some(USD));
    let token_budget = Budgets {
        tokens: Some(1_000_000),
        ..Default::default()
    };
    for class in [
        ActionClass::Read,
        ActionClass::Write,
        ActionClass::Execute,
        ActionClass::Network,
        ActionClass::Spend,
    ] {
        let (tokens, micro) = BUILTIN_MIN_COST[class as usize];
        let nothing = step("t", class).build().unwrap();
        let r = reserved_by(
            money_pool.clone(),
            token_budget.clone(),
            None,
            nothing.clone(),
        );
        assert_eq!(
            (r.get(LedgerDim::Tokens), r.get(LedgerDim::CostMicroUsd)),
            (tokens, micro),
            "{class}"
        );
        // Nothing limits tokens or money: nothing is made up.
        let r = reserved_by(Limits::UNLIMITED, Budgets::default(), None, nothing);
        assert_eq!(
            (r.get(LedgerDim::Tokens), r.get(LedgerDim::CostMicroUsd)),
            (0, 0),
            "{class}"
        );
    }
    // Declared amounts stand, a declared 0 included (the agent said so; its outcome settles
    // what it really used); only the dimension left out gets the minimum.
    let tokens_only = step("t", ActionClass::Network).tokens(7).build().unwrap();
    let r = reserved_by(money_pool.clone(), token_budget.clone(), None, tokens_only);
    assert_eq!(
        (r.get(LedgerDim::Tokens), r.get(LedgerDim::CostMicroUsd)),
        (7, 10_000)
    );
    let free = step("t", ActionClass::Network)
        .tokens(0)
        .cost_micro_usd(0)
        .build()
        .unwrap();
    let r = reserved_by(money_pool.clone(), token_budget.clone(), None, free);
    assert_eq!(
        (r.get(LedgerDim::Tokens), r.get(LedgerDim::CostMicroUsd)),
        (0, 0)
    );
    // A configured minimum wins over the built-in one, and a minimum of 0 exempts.
    let configured = "version: 1\ndefault_decision: allow\ndefaults:\n  min_cost: {network: {tokens: 50}}\ntools:\n  files.read: {action: read, min_cost: {tokens: 0, cost_usd: 0}}\n";
    let nothing = step("llm.chat", ActionClass::Network).build().unwrap();
    let r = reserved_by(
        money_pool.clone(),
        token_budget.clone(),
        Some(configured),
        nothing,
    );
    assert_eq!(
        (r.get(LedgerDim::Tokens), r.get(LedgerDim::CostMicroUsd)),
        (50, 10_000),
        "tokens configured, money from the built-in minimum"
    );
    let exempt = step("files.read", ActionClass::Read).build().unwrap();
    let r = reserved_by(money_pool, token_budget, Some(configured), exempt);
    assert_eq!(
        (r.get(LedgerDim::Tokens), r.get(LedgerDim::CostMicroUsd)),
        (0, 0)
    );
}

/// The case with the minimum: a $0.10 pool admits at most ten undeclared network
/// steps ($0.01 each) at once, where it used to admit all twenty at $0.
#[test]
fn twenty_undeclared_steps_on_a_small_pool_are_admitted_only_as_far_as_their_minimum_fits() {
    let pool = Account::root(
        "swarm",
        Limits::UNLIMITED.with(LedgerDim::CostMicroUsd, Some(USD / 10)),
    );
    let free = step("llm.chat", ActionClass::Network).build().unwrap();
    let mut agents: Vec<AgentKernel> = (0..20)
        .map(|i| kernel(&format!("a{i}"), &pool, Budgets::default(), None))
        .collect();
    let allowed = agents
        .iter_mut()
        .map(|k| k.decide(&free, 1).decision.is_allow())
        .filter(|allowed| *allowed)
        .count();
    assert_eq!(allowed, 10);
    assert_eq!(
        pool.snapshot().reserved.get(LedgerDim::CostMicroUsd),
        USD / 10
    );
}

/// Tool names are identities without case: `Shell` reserves what `shell`'s `min_cost` says.
#[test]
fn a_tool_named_in_another_case_gets_its_registered_min_cost() {
    let policy = "version: 1\ntools:\n  llm.chat: {action: network, min_cost: {tokens: 700, cost_usd: 0.02}}\n";
    for name in ["llm.chat", "LLM.Chat", "LLM.CHAT"] {
        let s = step(name, ActionClass::Network).tokens(1).build().unwrap();
        let r = reserved_by(Limits::UNLIMITED, Budgets::default(), Some(policy), s);
        assert_eq!(
            (r.get(LedgerDim::Tokens), r.get(LedgerDim::CostMicroUsd)),
            (700, 20_000),
            "{name}"
        );
    }
}
