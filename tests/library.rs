//! The facade's public API end to end: two teams, a cascade, a pool running dry, events.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use warden::{
    ActionClass, AgentId, AgentSpec, Budgets, Event, HaltKind, LedgerDim, Limits, Outcome,
    PolicyContext, PolicyOutcome, PoolSpec, Scope, StagnationConfig, Step, StepPolicy, Swarm,
    Verdict,
};

fn id(s: &str) -> AgentId {
    AgentId::new(s).unwrap()
}

#[tokio::test]
async fn two_teams_show_a_cascade_and_a_pool_running_dry() {
    let policy: Arc<dyn StepPolicy> = Arc::new(|ctx: &PolicyContext<'_>| {
        if ctx.step.tool() == "payments.transfer" {
            PolicyOutcome::Halt {
                rule: Arc::from("no-payments"),
                kind: HaltKind::Safety,
                reason: "payments are off limits".into(),
            }
        } else {
            PolicyOutcome::Allow
        }
    });
    let swarm = Swarm::builder()
        .policy(policy)
        .pool(PoolSpec::new("swarm/ops").cascade([HaltKind::Safety], Scope::Siblings))
        .pool(
            PoolSpec::new("swarm/research")
                .limits(Limits::UNLIMITED.with(LedgerDim::CostMicroUsd, Some(30_000))),
        )
        .build()
        .await
        .unwrap();
    let mut events = swarm.events();
    let ops1 = swarm
        .spawn_agent(AgentSpec::new(id("ops1")).pool("swarm/ops"))
        .await
        .unwrap();
    let ops2 = swarm
        .spawn_agent(AgentSpec::new(id("ops2")).pool("swarm/ops"))
        .await
        .unwrap();
    let r1 = swarm
        .spawn_agent(
            AgentSpec::new(id("r1"))
                .pool("swarm/research")
                .budgets(Budgets {
                    cost_micro_usd: Some(1_000_000),
                    ..Default::default()
                })
                .stagnation(StagnationConfig::OFF),
        )
        .await
        .unwrap();

    // The pool pays for three $0.01 calls, then runs dry.
    let mut verdicts = Vec::new();
    for i in 0..4 {
        let step = Step::builder("llm.chat", ActionClass::Network)
            .args(json!({"turn": i}))
            .cost_micro_usd(10_000)
            .build()
            .unwrap();
        let d = r1.step(step).await.unwrap();
        if d.is_allow() {
            r1.outcome(d.step, Outcome::success()).await.unwrap();
        }
        verdicts.push(d.decision);
    }
    assert_eq!(
        verdicts,
        [
            Verdict::Allow,
            Verdict::Allow,
            Verdict::Allow,
            Verdict::Deny
        ]
    );
    assert_eq!(
        swarm
            .pool("swarm/research")
            .unwrap()
            .spent
            .get(LedgerDim::CostMicroUsd),
        30_000
    );
    assert_eq!(
        swarm
            .pool("swarm")
            .unwrap()
            .spent
            .get(LedgerDim::CostMicroUsd),
        30_000
    );

    // A safety halt in ops spreads to its sibling and leaves research alone.
    let pay = Step::builder("payments.transfer", ActionClass::Spend)
        .build()
        .unwrap();
    assert_eq!(ops1.step(pay).await.unwrap().decision, Verdict::Halt);
    let halt = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let Some(Ok(Event::Halt { agent, record })) = events.recv().await {
                if agent.as_str() == "ops2" {
                    return record;
                }
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(halt.kind, HaltKind::Cascade);
    assert_eq!(halt.cause[0].agent, "ops1");
    assert_eq!(
        ops2.snapshot().halt.map(|h| h.kind),
        Some(HaltKind::Cascade)
    );
    assert_eq!(r1.snapshot().halt, None);
    swarm.shutdown().await;
}
