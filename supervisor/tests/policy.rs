//! A YAML policy driving a swarm: `pools:` become the swarm's pools, defaults configure agents, approvals
//! park steps (with wall time paused), and hot reload swaps the policy atomically.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use warden_actors::policy::PolicySet;
use warden_actors::{
    ActionClass, AgentId, ApprovalAnswer, Event, HaltKind, LedgerDim, ManualClock, Outcome, Step,
    Verdict,
};
use warden_supervisor::{AgentSpec, Swarm, SwarmError};

const POLICY: &str = "
version: 1
defaults:
  budgets: {steps: 100, tokens: 10000, wall_time: 10s}
  stagnation: {repeat_limit: 0, window: 0}
  approval_timeout: 1m
pools:
  - {path: swarm, limits: {tokens: 50000}}
  - {path: swarm/pay, limits: {tokens: 20000}, cascade: {on: [safety], scope: siblings}}
tools:
  payments.transfer: {action: spend, risk: 1.0, args: [amount, country]}
  web.search: {action: read}
rules:
  - {id: big-transfer, match: {tool: payments.transfer, args: {amount: {gt: 1000}}}, decision: require_approval}
  - {id: sanctioned, match: {tool: payments.transfer, args: {country: KP}}, decision: halt, kind: safety}
";

fn id(s: &str) -> AgentId {
    AgentId::new(s).unwrap()
}

fn transfer(amount: u64) -> Step {
    Step::builder("payments.transfer", ActionClass::Spend)
        .args(json!({"amount": amount, "country": "FR"}))
        .tokens(100)
        .build()
        .unwrap()
}

async fn swarm_with(clock: Arc<ManualClock>) -> Swarm {
    Swarm::builder()
        .clock(clock)
        .heartbeat_sweep_ms(0)
        .policy_set(PolicySet::parse(POLICY).unwrap())
        .build()
        .await
        .unwrap()
}

#[tokio::test]
async fn pools_become_teams_and_defaults_configure_agents() {
    let swarm = swarm_with(Arc::new(ManualClock::new(0))).await;
    assert_eq!(
        swarm
            .pool("swarm/pay")
            .unwrap()
            .limits
            .get(LedgerDim::Tokens),
        Some(20_000)
    );
    let a = swarm
        .spawn_agent(AgentSpec::new(id("p1")).pool("swarm/pay"))
        .await
        .unwrap();
    assert_eq!(a.snapshot().account.limits.get(LedgerDim::Steps), Some(100));
    assert_eq!(
        a.snapshot().account.limits.get(LedgerDim::Tokens),
        Some(10_000)
    );
    // Unregistered tools are denied by default; registered ones within budget are allowed.
    let rogue = Step::builder("nmap", ActionClass::Network).build().unwrap();
    assert_eq!(
        a.step(rogue).await.unwrap().rule.as_deref(),
        Some("default_decision")
    );
    let d = a.step(transfer(10)).await.unwrap();
    assert!(d.is_allow());
    // The tool's registered risk (1.0) is charged.
    assert_eq!(
        a.snapshot().account.reserved.get(LedgerDim::RiskMicro),
        1_000_000
    );
    swarm.shutdown().await;
}

#[tokio::test]
async fn approval_parks_the_step_then_approve_allows_it() {
    let clock = Arc::new(ManualClock::new(0));
    let swarm = swarm_with(clock.clone()).await;
    let mut events = swarm.events();
    let a = swarm
        .spawn_agent(AgentSpec::new(id("p1")).pool("swarm/pay"))
        .await
        .unwrap();
    let d = a.step(transfer(5_000)).await.unwrap();
    assert_eq!(d.decision, Verdict::RequireApproval);
    assert_eq!(d.approval.as_deref(), Some("p1/s-1"));
    // Its cost is held while it waits.
    assert_eq!(
        swarm
            .pool("swarm/pay")
            .unwrap()
            .reserved
            .get(LedgerDim::Tokens),
        100
    );
    let pending = swarm.approvals();
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].rule.as_ref(), "big-transfer");
    assert_eq!(pending[0].expires_at_ms, 60_000);

    let waiter = {
        let a = a.clone();
        let d = d.clone();
        tokio::spawn(async move { a.await_approval(&d).await })
    };
    let answered = swarm
        .answer_approval("p1/s-1", ApprovalAnswer::Approve { by: "alice".into() })
        .unwrap();
    assert_eq!(answered.decision, Verdict::Allow);
    assert_eq!(answered.reason, "approved by alice");
    let got = tokio::time::timeout(Duration::from_secs(10), waiter)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(got.decision, Verdict::Allow);
    assert!(swarm.approvals().is_empty());
    // The approved step is an open step: it settles like any other.
    a.outcome(d.step, Outcome::success()).await.unwrap();
    assert_eq!(
        swarm
            .pool("swarm/pay")
            .unwrap()
            .spent
            .get(LedgerDim::Tokens),
        100
    );
    // Both ends were announced.
    let mut saw = (false, false);
    while let Ok(Some(Ok(e))) =
        tokio::time::timeout(Duration::from_millis(200), events.recv()).await
    {
        match e {
            Event::ApprovalRequested { approval, .. } if approval == "p1/s-1" => saw.0 = true,
            Event::ApprovalResolved {
                approval, decision, ..
            } if approval == "p1/s-1" => {
                assert_eq!(decision.decision, Verdict::Allow);
                saw.1 = true;
            }
            _ => {}
        }
    }
    assert_eq!(saw, (true, true));
    // Answering twice is refused.
    assert!(matches!(
        swarm.answer_approval("p1/s-1", ApprovalAnswer::Approve { by: "bob".into() }),
        Err(SwarmError::Approval(_))
    ));
    swarm.shutdown().await;
}

#[tokio::test]
async fn denied_and_timed_out_approvals_release_their_hold() {
    let clock = Arc::new(ManualClock::new(0));
    let swarm = swarm_with(clock.clone()).await;
    let a = swarm
        .spawn_agent(AgentSpec::new(id("p1")).pool("swarm/pay"))
        .await
        .unwrap();
    let d1 = a.step(transfer(2_000)).await.unwrap();
    let d2 = a.step(transfer(3_000)).await.unwrap();
    assert_eq!(
        swarm.pool("swarm").unwrap().reserved.get(LedgerDim::Tokens),
        200
    );
    let denied = swarm
        .answer_approval(
            d1.approval.as_deref().unwrap(),
            ApprovalAnswer::Deny {
                by: "bob".into(),
                reason: "unknown payee".into(),
            },
        )
        .unwrap();
    assert_eq!(denied.decision, Verdict::Deny);
    assert_eq!(denied.reason, "denied by bob: unknown payee");
    clock.advance_ms(59_999);
    assert!(swarm.sweep_approvals().is_empty());
    clock.advance_ms(1);
    let timed_out = swarm.sweep_approvals();
    assert_eq!(timed_out.len(), 1);
    assert_eq!(timed_out[0].step, d2.step);
    assert_eq!(timed_out[0].decision, Verdict::Deny);
    assert!(timed_out[0].reason.contains("nobody answered"));
    assert_eq!(
        swarm.pool("swarm").unwrap().reserved.get(LedgerDim::Tokens),
        0
    );
    assert_eq!(a.await_approval(&d2).await.unwrap().decision, Verdict::Deny);
    swarm.shutdown().await;
}

#[tokio::test]
async fn wall_time_does_not_run_while_a_step_waits_for_approval() {
    let clock = Arc::new(ManualClock::new(0));
    let swarm = swarm_with(clock.clone()).await;
    let a = swarm
        .spawn_agent(AgentSpec::new(id("p1")).pool("swarm/pay"))
        .await
        .unwrap();
    clock.advance_ms(4_000);
    let d = a.step(transfer(5_000)).await.unwrap();
    // 50 s parked: far past the 10 s wall-time budget if it counted.
    clock.advance_ms(50_000);
    swarm
        .answer_approval(
            d.approval.as_deref().unwrap(),
            ApprovalAnswer::Approve { by: "alice".into() },
        )
        .unwrap();
    clock.advance_ms(5_000);
    let search = Step::builder("web.search", ActionClass::Read)
        .build()
        .unwrap();
    assert!(
        a.step(search.clone()).await.unwrap().is_allow(),
        "9 s active"
    );
    clock.advance_ms(1_000);
    let d = a.step(search).await.unwrap();
    assert_eq!(
        (d.decision, d.rule.as_deref()),
        (Verdict::Halt, Some("budget.wall_time"))
    );
    swarm.shutdown().await;
}

#[tokio::test]
async fn a_halt_cancels_waiting_approvals() {
    let swarm = swarm_with(Arc::new(ManualClock::new(0))).await;
    let a = swarm
        .spawn_agent(AgentSpec::new(id("p1")).pool("swarm/pay"))
        .await
        .unwrap();
    let d = a.step(transfer(5_000)).await.unwrap();
    let bad = Step::builder("payments.transfer", ActionClass::Spend)
        .args(json!({"amount": 5, "country": "KP"}))
        .build()
        .unwrap();
    let h = a.step(bad).await.unwrap();
    assert_eq!(
        (h.decision, h.kind),
        (Verdict::Halt, Some(HaltKind::Safety))
    );
    let final_d = a.await_approval(&d).await.unwrap();
    assert_eq!(final_d.decision, Verdict::Deny);
    assert!(final_d.reason.contains("halted"), "{}", final_d.reason);
    assert!(swarm.approvals().is_empty());
    assert_eq!(
        swarm.pool("swarm").unwrap().reserved.get(LedgerDim::Tokens),
        0
    );
    swarm.shutdown().await;
}

#[tokio::test]
async fn hot_reload_swaps_the_policy_and_an_invalid_one_changes_nothing() {
    let swarm = swarm_with(Arc::new(ManualClock::new(0))).await;
    let a = swarm
        .spawn_agent(AgentSpec::new(id("p1")).pool("swarm/pay"))
        .await
        .unwrap();
    assert_eq!(swarm.policy_version(), Some(1));
    assert_eq!(
        a.step(transfer(5_000)).await.unwrap().decision,
        Verdict::RequireApproval
    );

    // Invalid: every error comes back, the old policy stays.
    let broken = POLICY.replace("decision: require_approval", "decison: require_approval");
    let err = swarm.reload_policy(&broken).unwrap_err();
    let SwarmError::Policy(errors) = err else {
        panic!("{err:?}")
    };
    assert!(
        errors
            .errors()
            .next()
            .unwrap()
            .to_string()
            .starts_with("14:86: error: unknown key `decison`"),
        "{errors}"
    );
    assert_eq!(swarm.policy_version(), Some(1));
    assert_eq!(
        a.step(transfer(6_000)).await.unwrap().decision,
        Verdict::RequireApproval
    );

    // Valid: big transfers are now denied outright, and the pool limit grows.
    let stricter = POLICY
        .replace("decision: require_approval", "decision: deny")
        .replace("limits: {tokens: 20000}", "limits: {tokens: 30000}");
    let (version, warnings) = swarm.reload_policy(&stricter).unwrap();
    // Its one warning: budgets limit tokens, but no min_cost says what a step declaring none
    // is reserved at (the built-in minimum applies).
    assert_eq!((version, warnings.len()), (2, 1), "{warnings:?}");
    assert!(
        warnings[0].message.contains("budgets limit tokens"),
        "{warnings:?}"
    );
    assert_eq!(
        a.step(transfer(7_000)).await.unwrap().decision,
        Verdict::Deny
    );
    assert_eq!(
        swarm
            .pool("swarm/pay")
            .unwrap()
            .limits
            .get(LedgerDim::Tokens),
        Some(30_000)
    );

    // A limit below what is already reserved is refused, naming the pool.
    let too_low = POLICY.replace("limits: {tokens: 20000}", "limits: {tokens: 50}");
    let err = swarm.reload_policy(&too_low).unwrap_err().to_string();
    assert!(
        err.contains(
            "pool swarm/pay: new tokens limit 50 is below what is already spent and reserved (200)"
        ),
        "{err}"
    );
    assert_eq!(swarm.policy_version(), Some(2));
    // Pools cannot be added while running.
    let more = POLICY
        .replace("pools:\n", "pools:\n  - {path: swarm/new}\n")
        .replace("  - {path: swarm, limits: {tokens: 50000}}\n", "");
    assert!(swarm.reload_policy(&more).is_err());
    // Nor removed, all at once by leaving `pools:` out.
    let err = swarm.reload_policy("version: 1\n").unwrap_err().to_string();
    assert!(
        err.contains("pool swarm is missing; pools cannot be removed"),
        "{err}"
    );
    assert_eq!(swarm.policy_version(), Some(2));
    swarm.shutdown().await;
}

#[tokio::test]
async fn a_reload_keeps_the_counts_of_unchanged_rate_limits() {
    let with_rate = POLICY.to_string()
        + "  - {id: search-rate, match: {tool: web.search}, rate_limit: {max: 1, per: 1h}}\n";
    let swarm = Swarm::builder()
        .clock(Arc::new(ManualClock::new(0)))
        .heartbeat_sweep_ms(0)
        .policy_set(PolicySet::parse(&with_rate).unwrap())
        .build()
        .await
        .unwrap();
    let a = swarm
        .spawn_agent(AgentSpec::new(id("p1")).pool("swarm/pay"))
        .await
        .unwrap();
    let search = |n: u64| {
        Step::builder("web.search", ActionClass::Read)
            .args(json!({"n": n}))
            .build()
            .unwrap()
    };
    assert!(a.step(search(1)).await.unwrap().is_allow());
    assert_eq!(
        a.step(search(2)).await.unwrap().rule.as_deref(),
        Some("search-rate")
    );
    swarm.reload_policy(&with_rate).unwrap();
    assert_eq!(
        a.step(search(3)).await.unwrap().rule.as_deref(),
        Some("search-rate"),
        "the reload must not hand out a fresh burst"
    );
    // A changed limit starts afresh.
    swarm
        .reload_policy(&with_rate.replace("max: 1, per: 1h", "max: 5, per: 1h"))
        .unwrap();
    assert!(a.step(search(4)).await.unwrap().is_allow());
    swarm.shutdown().await;
}

/// One run of the same inputs: agents spawned in a scrambled order, each with a step parked
/// for approval and a heartbeat timeout, then time passes. Returns what the listings and the
/// sweeps said, in their order, and the sweeps' agents.
async fn listings_and_sweeps() -> (Vec<String>, Vec<String>, Vec<String>) {
    let clock = Arc::new(ManualClock::new(0));
    let swarm = swarm_with(clock.clone()).await;
    for i in 0..40 {
        let name = format!("a{:02}", (i * 17) % 40);
        let a = swarm
            .spawn_agent(
                AgentSpec::new(id(&name))
                    .pool("swarm/pay")
                    .heartbeat_timeout_ms(120_000),
            )
            .await
            .unwrap();
        let d = a.step(transfer(2_000)).await.unwrap();
        assert_eq!(d.decision, Verdict::RequireApproval);
    }
    let mut listed = vec![format!("{:?}", swarm.agent_ids())];
    listed.push(format!(
        "{:?}",
        swarm
            .approvals()
            .into_iter()
            .map(|a| a.id)
            .collect::<Vec<_>>()
    ));
    listed.push(format!(
        "{:?}",
        swarm
            .pools()
            .into_iter()
            .map(|p| p.name)
            .collect::<Vec<_>>()
    ));
    listed.push(format!("{:?}", swarm.agent_counts()));
    clock.advance_ms(60_000);
    let timed_out: Vec<String> = swarm
        .sweep_approvals()
        .into_iter()
        .map(|d| d.approval.expect("a timed-out approval names itself"))
        .collect();
    // Silent for longer than the heartbeat timeout after the last sign of life.
    clock.advance_ms(120_001);
    let lost: Vec<String> = swarm
        .sweep_heartbeats()
        .into_iter()
        .map(|a| a.to_string())
        .collect();
    swarm.shutdown().await;
    (listed, timed_out, lost)
}

#[tokio::test]
async fn listings_and_sweeps_come_in_the_same_order_in_two_identical_runs() {
    let first = listings_and_sweeps().await;
    let second = listings_and_sweeps().await;
    assert_eq!(first, second);
    let (_, timed_out, lost) = first;
    // The order is the agents' ids, not a hash map's (which differs between two swarms).
    let expected: Vec<String> = (0..40).map(|i| format!("a{i:02}")).collect();
    assert_eq!(lost, expected);
    let agents: Vec<&str> = timed_out
        .iter()
        .map(|a| a.split('/').next().unwrap())
        .collect();
    assert_eq!(agents, expected);
}

/// Two operators reloading at once must never leave a version served with the other's text:
/// the swarm owns both and hands them out together.
#[test]
fn concurrent_reloads_never_pair_a_version_with_another_text() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let swarm = rt
        .block_on(
            Swarm::builder()
                .policy_set(PolicySet::parse(POLICY).unwrap())
                .build(),
        )
        .unwrap();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let seen = std::thread::scope(|s| {
        let writers: Vec<_> = (0..4)
            .map(|w| {
                let swarm = swarm.clone();
                s.spawn(move || {
                    (0..50)
                        .map(|i| {
                            let text = POLICY
                                .replace("steps: 100", &format!("steps: {}", 1_000 + w * 100 + i));
                            let (version, _) = swarm.reload_policy(&text).unwrap();
                            (version, text)
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let reader = {
            let (swarm, stop) = (swarm.clone(), Arc::clone(&stop));
            s.spawn(move || {
                let mut seen = Vec::new();
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    if let Some(pair) = swarm.policy_text() {
                        seen.push(pair);
                    }
                }
                seen
            })
        };
        let installed: Vec<(u64, String)> = writers
            .into_iter()
            .flat_map(|w| w.join().unwrap())
            .collect();
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        (installed, reader.join().unwrap())
    });
    let (installed, read) = seen;
    let by_version: std::collections::HashMap<u64, &String> =
        installed.iter().map(|(v, t)| (*v, t)).collect();
    assert_eq!(by_version.len(), 200, "every reload got its own version");
    assert!(!read.is_empty());
    for (version, text) in &read {
        if let Some(expected) = by_version.get(version) {
            assert_eq!(
                text, *expected,
                "version {version} served with another text"
            );
        }
    }
    let (last, text) = swarm.policy_text().unwrap();
    assert_eq!(by_version[&last], &text);
    rt.block_on(swarm.shutdown());
}
