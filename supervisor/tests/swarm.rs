//! Behaviour of the supervision tree: pools, cascades, breakers, restarts, heartbeats,
//! deadlocks. Real actors on real runtime shards; waits are for events, with a bound.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use warden_actors::{
    ActionClass, AgentId, Budgets, Event, HaltKind, LedgerDim, Limits, ManualClock, Outcome,
    PolicyContext, PolicyOutcome, StagnationConfig, Step, StepPolicy, Verdict,
};
use warden_supervisor::{AgentSpec, Layout, PoolSpec, Scope, Strategy, Swarm, SwarmError, Target};

const WAIT: Duration = Duration::from_secs(10);

fn id(s: &str) -> AgentId {
    AgentId::new(s).unwrap()
}

fn read(n: u64, tokens: u64) -> Step {
    Step::builder("web.search", ActionClass::Read)
        .args(json!({ "q": n }))
        .tokens(tokens)
        .build()
        .unwrap()
}

async fn next_matching(
    events: &mut warden_actors::EventStream,
    mut pred: impl FnMut(&Event) -> bool,
) -> Event {
    tokio::time::timeout(WAIT, async {
        loop {
            match events.recv().await {
                Some(Ok(e)) if pred(&e) => return e,
                Some(_) => continue,
                None => panic!("event bus closed"),
            }
        }
    })
    .await
    .expect("event did not arrive in time")
}

async fn spawn_all(swarm: &Swarm, team: &str, names: &[&str]) {
    for n in names {
        swarm
            .spawn_agent(
                AgentSpec::new(id(n))
                    .pool(team)
                    .stagnation(StagnationConfig::OFF),
            )
            .await
            .unwrap();
    }
}

fn halted(swarm: &Swarm, name: &str) -> Option<HaltKind> {
    swarm
        .agent(&id(name))
        .unwrap()
        .snapshot()
        .halt
        .map(|h| h.kind)
}

#[tokio::test]
async fn cascade_to_siblings_halts_the_rest_of_the_team_with_its_cause_chain() {
    let swarm = Swarm::builder()
        .pool(
            PoolSpec::new("swarm/research")
                .cascade([HaltKind::Safety, HaltKind::Overrisk], Scope::Siblings),
        )
        .pool(PoolSpec::new("swarm/ops"))
        .build()
        .await
        .unwrap();
    spawn_all(&swarm, "swarm/research", &["r1", "r2", "r3"]).await;
    spawn_all(&swarm, "swarm/ops", &["o1"]).await;
    let halted_ids = swarm
        .halt_with_kind(id("r1"), HaltKind::Safety, "exfiltration attempt")
        .await
        .unwrap();
    assert_eq!(halted_ids, vec![id("r1"), id("r2"), id("r3")]);
    let r2 = swarm.agent(&id("r2")).unwrap().snapshot().halt.unwrap();
    assert_eq!(r2.kind, HaltKind::Cascade);
    assert_eq!(r2.rule.as_deref(), Some("cascade.siblings"));
    assert_eq!(r2.cause.len(), 1);
    assert_eq!(r2.cause[0].agent, "r1");
    assert_eq!(r2.cause[0].kind, HaltKind::Safety);
    assert_eq!(halted(&swarm, "o1"), None, "other teams are untouched");
    swarm.shutdown().await;
}

#[tokio::test]
async fn halt_kinds_not_listed_in_on_do_not_spread() {
    let swarm = Swarm::builder()
        .pool(PoolSpec::new("swarm/t").cascade([HaltKind::Safety], Scope::Team))
        .build()
        .await
        .unwrap();
    spawn_all(&swarm, "swarm/t", &["a", "b"]).await;
    swarm.halt(id("a"), "operator").await.unwrap();
    assert_eq!(halted(&swarm, "a"), Some(HaltKind::External));
    assert_eq!(halted(&swarm, "b"), None);
    swarm.shutdown().await;
}

#[tokio::test]
async fn cascade_to_team_halts_nested_teams_too() {
    let swarm = Swarm::builder()
        .pool(PoolSpec::new("swarm/eng").cascade([HaltKind::Safety], Scope::Team))
        .pool(PoolSpec::new("swarm/eng/web"))
        .pool(PoolSpec::new("swarm/other"))
        .build()
        .await
        .unwrap();
    spawn_all(&swarm, "swarm/eng", &["lead", "e2"]).await;
    spawn_all(&swarm, "swarm/eng/web", &["w1", "w2"]).await;
    spawn_all(&swarm, "swarm/other", &["x"]).await;
    let out = swarm
        .halt_with_kind(id("lead"), HaltKind::Safety, "bad")
        .await
        .unwrap();
    assert_eq!(out.len(), 4);
    for n in ["e2", "w1", "w2"] {
        assert_eq!(halted(&swarm, n), Some(HaltKind::Cascade), "{n}");
    }
    assert_eq!(halted(&swarm, "x"), None);
    swarm.shutdown().await;
}

#[tokio::test]
async fn cascade_to_subtree_follows_spawned_children_recursively() {
    let swarm = Swarm::builder()
        .root(
            PoolSpec::new("swarm").cascade([HaltKind::Overrisk, HaltKind::Cascade], Scope::Subtree),
        )
        .build()
        .await
        .unwrap();
    swarm.spawn_agent(AgentSpec::new(id("boss"))).await.unwrap();
    swarm
        .spawn_agent(AgentSpec::new(id("w1")).parent(id("boss")))
        .await
        .unwrap();
    swarm
        .spawn_agent(AgentSpec::new(id("w1a")).parent(id("w1")))
        .await
        .unwrap();
    swarm.spawn_agent(AgentSpec::new(id("peer"))).await.unwrap();
    swarm
        .halt_with_kind(id("boss"), HaltKind::Overrisk, "risk")
        .await
        .unwrap();
    assert_eq!(halted(&swarm, "w1"), Some(HaltKind::Cascade));
    let w1a = swarm.agent(&id("w1a")).unwrap().snapshot().halt.unwrap();
    assert_eq!(w1a.kind, HaltKind::Cascade);
    let chain: Vec<_> = w1a.cause.iter().map(|c| c.agent.as_str()).collect();
    assert_eq!(
        chain,
        vec!["boss"],
        "subtree reaches grandchildren directly from the origin"
    );
    assert_eq!(halted(&swarm, "peer"), None);
    swarm.shutdown().await;
}

#[tokio::test]
async fn cascade_to_dependents_follows_declared_edges_transitively() {
    let swarm = Swarm::builder()
        .root(PoolSpec::new("swarm").cascade([HaltKind::Safety], Scope::Dependents))
        .build()
        .await
        .unwrap();
    swarm.spawn_agent(AgentSpec::new(id("db"))).await.unwrap();
    swarm
        .spawn_agent(AgentSpec::new(id("api")).depends_on(id("db")))
        .await
        .unwrap();
    swarm
        .spawn_agent(AgentSpec::new(id("ui")).depends_on(id("api")))
        .await
        .unwrap();
    swarm.spawn_agent(AgentSpec::new(id("cron"))).await.unwrap();
    let out = swarm
        .halt_with_kind(id("db"), HaltKind::Safety, "corrupt")
        .await
        .unwrap();
    assert_eq!(out, vec![id("db"), id("api"), id("ui")]);
    assert_eq!(halted(&swarm, "cron"), None);
    swarm.shutdown().await;
}

#[tokio::test]
async fn contagion_breaker_halts_the_team_when_enough_halt_within_the_window() {
    let clock = Arc::new(ManualClock::new(0));
    let swarm = Swarm::builder()
        .clock(clock.clone())
        .pool(PoolSpec::new("swarm/crawl").breaker(50, 1_000))
        .pool(PoolSpec::new("swarm/slow").breaker(50, 1_000))
        .build()
        .await
        .unwrap();
    spawn_all(&swarm, "swarm/crawl", &["c1", "c2", "c3", "c4"]).await;
    spawn_all(&swarm, "swarm/slow", &["s1", "s2", "s3", "s4"]).await;

    // Two of four halts spread over more than the window: no breaker.
    swarm.halt(id("s1"), "x").await.unwrap();
    clock.advance_ms(1_500);
    swarm.halt(id("s2"), "x").await.unwrap();
    assert_eq!(halted(&swarm, "s3"), None);
    assert!(!swarm.pool_halted("swarm/slow").unwrap());

    // Two of four within the window: the breaker halts the whole team.
    swarm.halt(id("c1"), "x").await.unwrap();
    clock.advance_ms(200);
    let out = swarm.halt(id("c2"), "x").await.unwrap();
    assert_eq!(out, vec![id("c2"), id("c3"), id("c4")]);
    let c4 = swarm.agent(&id("c4")).unwrap().snapshot().halt.unwrap();
    assert_eq!(c4.kind, HaltKind::Cascade);
    assert_eq!(c4.rule.as_deref(), Some("breaker.swarm/crawl"));
    assert!(c4.reason.contains("2 of 4"), "{}", c4.reason);
    assert!(swarm.pool_halted("swarm/crawl").unwrap());
    let err = swarm
        .spawn_agent(AgentSpec::new(id("c5")).pool("swarm/crawl"))
        .await
        .unwrap_err();
    assert_eq!(err, SwarmError::PoolHalted("swarm/crawl".into()));
    swarm.reopen_pool("swarm/crawl").unwrap();
    swarm
        .spawn_agent(AgentSpec::new(id("c5")).pool("swarm/crawl"))
        .await
        .unwrap();
    swarm.shutdown().await;
}

#[tokio::test]
async fn a_halt_decided_inside_an_actor_cascades_too() {
    let policy: Arc<dyn StepPolicy> = Arc::new(|ctx: &PolicyContext<'_>| {
        if ctx.step.tool() == "shell" {
            PolicyOutcome::Halt {
                rule: Arc::from("no-shell"),
                kind: HaltKind::Safety,
                reason: "shell is forbidden".into(),
            }
        } else {
            PolicyOutcome::Allow
        }
    });
    let swarm = Swarm::builder()
        .policy(policy)
        .pool(PoolSpec::new("swarm/t").cascade([HaltKind::Safety], Scope::Siblings))
        .build()
        .await
        .unwrap();
    spawn_all(&swarm, "swarm/t", &["a", "b"]).await;
    let mut events = swarm.events();
    let a = swarm.agent(&id("a")).unwrap();
    let shell = Step::builder("shell", ActionClass::Execute)
        .build()
        .unwrap();
    let d = a.step(shell).await.unwrap();
    assert_eq!(
        (d.decision, d.kind),
        (Verdict::Halt, Some(HaltKind::Safety))
    );
    let e = next_matching(
        &mut events,
        |e| matches!(e, Event::Halt { agent, .. } if agent.as_str() == "b"),
    )
    .await;
    let Event::Halt { record, .. } = e else {
        unreachable!()
    };
    assert_eq!(record.cause[0].agent, "a");
    let b = swarm.agent(&id("b")).unwrap();
    assert_eq!(b.step(read(1, 0)).await.unwrap().decision, Verdict::Halt);
    swarm.shutdown().await;
}

#[tokio::test]
async fn no_allow_after_halt_even_with_steps_in_flight() {
    let swarm = Swarm::builder().build().await.unwrap();
    let agent = swarm
        .spawn_agent(AgentSpec::new(id("busy")).stagnation(StagnationConfig::OFF))
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for w in 0..4u64 {
        let agent = agent.clone();
        tasks.push(tokio::spawn(async move {
            let mut seen_halt = false;
            for i in 0..400u64 {
                let d = agent.step(read(w * 1_000 + i, 1)).await.unwrap();
                if d.decision == Verdict::Halt {
                    seen_halt = true;
                } else {
                    assert!(!seen_halt, "allow after this worker saw the halt");
                }
            }
        }));
    }
    // Halt while the workers are mid-stream.
    tokio::time::timeout(WAIT, async {
        while agent.snapshot().steps_decided < 50 {
            tokio::task::yield_now().await;
        }
    })
    .await
    .unwrap();
    swarm.halt(id("busy"), "stop now").await.unwrap();
    // From here on, nothing is allowed.
    for i in 0..100 {
        assert_eq!(
            agent.step(read(50_000 + i, 1)).await.unwrap().decision,
            Verdict::Halt
        );
    }
    for t in tasks {
        t.await.unwrap();
    }
    let mut events = swarm.events();
    let lifted = swarm.resume(&id("busy"), "alice").await.unwrap();
    assert_eq!(lifted.kind, HaltKind::External);
    let e = next_matching(&mut events, |e| matches!(e, Event::Resume { .. })).await;
    assert!(matches!(e, Event::Resume { by, .. } if by == "alice"));
    assert!(agent.step(read(99_999, 1)).await.unwrap().is_allow());
    assert_eq!(
        swarm.resume(&id("busy"), "alice").await.unwrap_err(),
        SwarmError::NotHalted(id("busy"))
    );
    swarm.shutdown().await;
}

#[tokio::test]
async fn hostile_pool_admits_exactly_ten_of_a_thousand_concurrent_steps() {
    let swarm = Swarm::builder()
        .limits(Limits::UNLIMITED.with(LedgerDim::Tokens, Some(10 * 100)))
        .build()
        .await
        .unwrap();
    let mut agents = Vec::new();
    for i in 0..100 {
        agents.push(
            swarm
                .spawn_agent(AgentSpec::new(id(&format!("h{i}"))).stagnation(StagnationConfig::OFF))
                .await
                .unwrap(),
        );
    }
    let mut tasks = Vec::new();
    for i in 0..1_000u64 {
        let a = agents[(i % 100) as usize].clone();
        tasks.push(tokio::spawn(
            async move { a.step(read(i, 100)).await.unwrap() },
        ));
    }
    let mut allowed = 0;
    for t in tasks {
        if t.await.unwrap().is_allow() {
            allowed += 1;
        }
    }
    assert_eq!(allowed, 10);
    let pool = swarm.pool("swarm").unwrap();
    assert_eq!(pool.reserved.get(LedgerDim::Tokens), 1_000);
    swarm.shutdown().await;
}

#[tokio::test]
async fn restart_after_a_crash_does_not_refund_spent_budget() {
    let swarm = Swarm::builder()
        .limits(Limits::UNLIMITED.with(LedgerDim::Tokens, Some(1_000)))
        .build()
        .await
        .unwrap();
    let agent = swarm
        .spawn_agent(
            AgentSpec::new(id("crashy"))
                .budgets(Budgets {
                    tokens: Some(600),
                    ..Default::default()
                })
                .stagnation(StagnationConfig::OFF),
        )
        .await
        .unwrap();
    let d = agent.step(read(1, 500)).await.unwrap();
    agent.outcome(d.step, Outcome::success()).await.unwrap();
    let open = agent.step(read(2, 50)).await.unwrap();
    assert!(open.is_allow());

    let mut events = swarm.events();
    agent.inject_crash("simulated bug");
    next_matching(
        &mut events,
        |e| matches!(e, Event::Restart { agent, .. } if agent.as_str() == "crashy"),
    )
    .await;

    let snap = agent.snapshot();
    assert_eq!(
        snap.account.spent.get(LedgerDim::Tokens),
        500,
        "spend survives the crash"
    );
    assert_eq!(snap.open_steps, 1, "the open reservation survives too");
    assert_eq!(
        swarm.pool("swarm").unwrap().spent.get(LedgerDim::Tokens),
        500
    );
    // Only 50 tokens of the agent's 600 are left (500 spent + 50 reserved).
    let d = agent.step(read(3, 100)).await.unwrap();
    assert_eq!(d.decision, Verdict::Deny);
    assert_eq!(d.rule.as_deref(), Some("budget.tokens"));
    agent.outcome(open.step, Outcome::success()).await.unwrap();
    assert_eq!(agent.snapshot().account.spent.get(LedgerDim::Tokens), 550);
    swarm.shutdown().await;
}

async fn restarted_after_crash(strategy: Strategy, crash: &str) -> Vec<String> {
    let swarm = Swarm::builder()
        .pool(PoolSpec::new("swarm/t").restart(strategy, 10, 60_000))
        .build()
        .await
        .unwrap();
    spawn_all(&swarm, "swarm/t", &["a", "b", "c"]).await;
    let mut events = swarm.events();
    swarm.agent(&id(crash)).unwrap().inject_crash("boom");
    let expected = match strategy {
        Strategy::OneForOne => 1,
        Strategy::OneForAll => 3,
        Strategy::RestForOne => 3 - ["a", "b", "c"].iter().position(|n| *n == crash).unwrap(),
    };
    let mut restarted = Vec::new();
    while restarted.len() < expected {
        let e = next_matching(&mut events, |e| matches!(e, Event::Restart { .. })).await;
        if let Event::Restart { agent, .. } = e {
            restarted.push(agent.to_string());
        }
    }
    // Every agent still answers after the restarts.
    for n in ["a", "b", "c"] {
        let d = swarm.agent(&id(n)).unwrap().step(read(7, 0)).await.unwrap();
        assert!(d.is_allow(), "{n}");
    }
    swarm.shutdown().await;
    restarted.sort();
    restarted
}

#[tokio::test]
async fn one_for_one_restarts_only_the_crashed_agent() {
    assert_eq!(
        restarted_after_crash(Strategy::OneForOne, "b").await,
        vec!["b"]
    );
}

#[tokio::test]
async fn one_for_all_restarts_every_agent_of_the_team() {
    assert_eq!(
        restarted_after_crash(Strategy::OneForAll, "b").await,
        vec!["a", "b", "c"]
    );
}

#[tokio::test]
async fn rest_for_one_restarts_the_crashed_agent_and_those_started_after_it() {
    assert_eq!(
        restarted_after_crash(Strategy::RestForOne, "b").await,
        vec!["b", "c"]
    );
}

#[tokio::test]
async fn too_many_restarts_escalate_to_the_parent_and_then_halt_at_the_root() {
    let clock = Arc::new(ManualClock::new(0));
    let swarm = Swarm::builder()
        .clock(clock.clone())
        .root(PoolSpec::new("swarm").restart(Strategy::OneForOne, 0, 60_000))
        .pool(PoolSpec::new("swarm/t").restart(Strategy::OneForOne, 1, 60_000))
        .build()
        .await
        .unwrap();
    spawn_all(&swarm, "swarm/t", &["a", "b"]).await;
    let mut events = swarm.events();
    let a = swarm.agent(&id("a")).unwrap();
    a.inject_crash("first");
    next_matching(&mut events, |e| matches!(e, Event::Restart { .. })).await;
    a.inject_crash("second");
    let e = next_matching(&mut events, |e| matches!(e, Event::Escalation { .. })).await;
    assert!(
        matches!(&e, Event::Escalation { team, .. } if team == "swarm/t"),
        "{e:?}"
    );
    let e = next_matching(&mut events, |e| matches!(e, Event::Escalation { .. })).await;
    assert!(
        matches!(&e, Event::Escalation { team, .. } if team == "swarm"),
        "{e:?}"
    );
    // The root halts every agent in map order: wait for both halts before looking.
    for n in ["a", "b"] {
        if halted(&swarm, n).is_none() {
            next_matching(
                &mut events,
                |e| matches!(e, Event::Halt { agent, .. } if agent.as_str() == n),
            )
            .await;
        }
    }
    for n in ["a", "b"] {
        let rec = swarm.agent(&id(n)).unwrap().snapshot().halt.unwrap();
        assert_eq!(rec.kind, HaltKind::External);
        assert_eq!(rec.rule.as_deref(), Some("restart.intensity"));
    }
    // The crashed actor came back and answers: with a halt.
    next_matching(
        &mut events,
        |e| matches!(e, Event::Restart { agent, .. } if agent.as_str() == "a"),
    )
    .await;
    assert_eq!(a.step(read(1, 0)).await.unwrap().decision, Verdict::Halt);
    swarm.shutdown().await;
}

#[tokio::test]
async fn a_three_agent_wait_cycle_halts_all_three_as_deadlock() {
    let swarm = Swarm::builder().build().await.unwrap();
    spawn_all(&swarm, "swarm", &["a", "b", "c", "d"]).await;
    assert_eq!(swarm.wait_for(&id("a"), &id("b")).unwrap(), None);
    assert_eq!(swarm.wait_for(&id("b"), &id("c")).unwrap(), None);
    assert_eq!(swarm.wait_for(&id("d"), &id("a")).unwrap(), None);
    let cycle = swarm.wait_for(&id("c"), &id("a")).unwrap().unwrap();
    assert_eq!(cycle, vec![id("c"), id("a"), id("b")]);
    for n in ["a", "b", "c"] {
        let rec = swarm.agent(&id(n)).unwrap().snapshot().halt.unwrap();
        assert_eq!(rec.kind, HaltKind::Deadlock, "{n}");
        assert!(rec.reason.contains("c -> a -> b -> c"), "{}", rec.reason);
    }
    assert_eq!(
        halted(&swarm, "d"),
        None,
        "waiting on a deadlocked agent is not a deadlock"
    );
    assert!(matches!(
        swarm.wait_for(&id("d"), &id("d")),
        Err(SwarmError::Wait(_))
    ));
    swarm.shutdown().await;
}

#[tokio::test]
async fn a_silent_agent_is_halted_as_lost_and_its_reservations_released() {
    let clock = Arc::new(ManualClock::new(0));
    let swarm = Swarm::builder()
        .clock(clock.clone())
        .heartbeat_sweep_ms(0)
        .limits(Limits::UNLIMITED.with(LedgerDim::Tokens, Some(1_000)))
        .build()
        .await
        .unwrap();
    let quiet = swarm
        .spawn_agent(AgentSpec::new(id("quiet")).heartbeat_timeout_ms(1_000))
        .await
        .unwrap();
    let chatty = swarm
        .spawn_agent(AgentSpec::new(id("chatty")).heartbeat_timeout_ms(1_000))
        .await
        .unwrap();
    assert!(quiet.step(read(1, 400)).await.unwrap().is_allow());
    assert_eq!(
        swarm.pool("swarm").unwrap().reserved.get(LedgerDim::Tokens),
        400
    );
    clock.advance_ms(800);
    chatty.heartbeat();
    // The heartbeat is a message: wait until the actor has applied it.
    tokio::time::timeout(WAIT, async {
        while chatty.snapshot().last_seen_ms != 800 {
            tokio::task::yield_now().await;
        }
    })
    .await
    .unwrap();
    clock.advance_ms(400);
    assert_eq!(swarm.sweep_heartbeats(), vec![id("quiet")]);
    let rec = quiet.snapshot().halt.unwrap();
    assert_eq!(rec.kind, HaltKind::Lost);
    assert_eq!(
        swarm.pool("swarm").unwrap().reserved.get(LedgerDim::Tokens),
        0
    );
    assert_eq!(chatty.snapshot().halt, None);
    swarm.shutdown().await;
}

/// The sweep visits only agents that may be lost by now, so what it knows of each must
/// follow signs of life after a visit, halts and resumes.
#[tokio::test]
async fn the_sweep_follows_heartbeats_halts_and_resumes_between_visits() {
    let clock = Arc::new(ManualClock::new(0));
    let swarm = Swarm::builder()
        .clock(clock.clone())
        .heartbeat_sweep_ms(0)
        .build()
        .await
        .unwrap();
    for n in ["a", "b", "c"] {
        let spec = AgentSpec::new(id(n)).heartbeat_timeout_ms(1_000);
        swarm.spawn_agent(spec).await.unwrap();
    }
    clock.set_ms(500);
    assert!(swarm.sweep_heartbeats().is_empty());
    swarm
        .halt_inline(Target::Agent(id("a")), HaltKind::External, "operator")
        .unwrap();
    clock.set_ms(900);
    swarm.heartbeat_inline(&id("c")).unwrap();
    clock.set_ms(1_500);
    assert_eq!(
        swarm.sweep_heartbeats(),
        vec![id("b")],
        "a is halted (not lost), c was seen at 900"
    );
    swarm.resume_inline(&id("a"), "operator").unwrap();
    clock.set_ms(2_400);
    assert_eq!(
        swarm.sweep_heartbeats(),
        vec![id("c")],
        "a was resumed at 1500"
    );
    clock.set_ms(2_600);
    assert_eq!(swarm.sweep_heartbeats(), vec![id("a")]);
    clock.set_ms(10_000);
    assert!(swarm.sweep_heartbeats().is_empty(), "all three are halted");
    swarm.shutdown().await;
}

#[tokio::test]
async fn the_background_sweep_finds_lost_agents_on_its_own() {
    let swarm = Swarm::builder()
        .heartbeat_sweep_ms(20)
        .build()
        .await
        .unwrap();
    let mut events = swarm.events();
    swarm
        .spawn_agent(AgentSpec::new(id("gone")).heartbeat_timeout_ms(50))
        .await
        .unwrap();
    let e = next_matching(&mut events, |e| matches!(e, Event::Halt { .. })).await;
    assert!(
        matches!(e, Event::Halt { agent, record } if agent.as_str() == "gone" && record.kind == HaltKind::Lost)
    );
    swarm.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_current_runtime_layout_governs_the_same_way() {
    let swarm = Swarm::builder()
        .layout(Layout::Current)
        .limits(Limits::UNLIMITED.with(LedgerDim::Tokens, Some(100)))
        .build()
        .await
        .unwrap();
    assert_eq!(swarm.shards(), 1);
    let a = swarm.spawn_agent(AgentSpec::new(id("a"))).await.unwrap();
    assert!(a.step(read(1, 60)).await.unwrap().is_allow());
    assert_eq!(
        a.step(read(2, 60)).await.unwrap().rule.as_deref(),
        Some("pool.swarm.tokens")
    );
    swarm.shutdown().await;
}

#[tokio::test]
async fn bad_specs_get_clear_errors_and_change_nothing() {
    let err = Swarm::builder()
        .pool(PoolSpec::new("swarm/a/b"))
        .build()
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("parent pool \"swarm/a\" is not declared"),
        "{err}"
    );
    let err = Swarm::builder()
        .pool(PoolSpec::new("other/x"))
        .build()
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("start with the root pool"),
        "{err}"
    );

    let swarm = Swarm::builder()
        .pool(PoolSpec::new("swarm/a"))
        .build()
        .await
        .unwrap();
    let err = swarm
        .spawn_agent(AgentSpec::new(id("x")).pool("swarm/nope"))
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("known pools: swarm, swarm/a"),
        "{err}"
    );
    swarm.spawn_agent(AgentSpec::new(id("x"))).await.unwrap();
    assert_eq!(
        swarm
            .spawn_agent(AgentSpec::new(id("x")))
            .await
            .unwrap_err(),
        SwarmError::DuplicateAgent(id("x"))
    );
    let err = swarm
        .spawn_agent(AgentSpec::new(id("y")).parent(id("ghost")))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("ghost"), "{err}");
    let err = swarm
        .spawn_agent(AgentSpec::new(id("z")).stagnation(StagnationConfig {
            repeat_limit: 9,
            window: 3,
        }))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("window"), "{err}");
    assert_eq!(swarm.len(), 1);
    swarm.shutdown().await;
}

/// The simulator's seam: the same strategies and intensities on the caller's thread, with no
/// actor respawned — one_for_all restarts the whole pool, the intensity escalates to the
/// parent, and past the root every agent is halted.
#[tokio::test]
async fn crash_inline_applies_the_strategies_and_intensities_of_a_real_crash() {
    let clock = Arc::new(ManualClock::new(0));
    let swarm = Swarm::builder()
        .clock(clock.clone())
        .root(PoolSpec::new("swarm").restart(Strategy::OneForOne, 0, 60_000))
        .pool(PoolSpec::new("swarm/t").restart(Strategy::OneForAll, 1, 60_000))
        .build()
        .await
        .unwrap();
    spawn_all(&swarm, "swarm/t", &["a", "b", "c"]).await;
    let first = swarm.crash_inline(&id("b"), "boom").unwrap();
    let mut restarted: Vec<String> = first.restarted.iter().map(|(a, _)| a.to_string()).collect();
    restarted.sort();
    assert_eq!(restarted, ["a", "b", "c"]);
    assert!(first.escalations.is_empty() && !first.halted_all);
    // A second crash within the window: swarm/t exceeds 1 restart, escalates to the root,
    // which allows none: everyone is halted with restart.intensity.
    let second = swarm.crash_inline(&id("a"), "boom").unwrap();
    assert_eq!(second.escalations.len(), 2, "{:?}", second.escalations);
    assert!(second.halted_all);
    let d = swarm
        .agent(&id("c"))
        .unwrap()
        .step(read(7, 0))
        .await
        .unwrap();
    assert_eq!(d.decision, Verdict::Halt);
    assert!(swarm.crash_inline(&id("nobody"), "boom").is_err());
    swarm.shutdown().await;
}

#[tokio::test]
async fn a_subscriber_without_decisions_sees_halts_and_no_decision_is_built_for_it() {
    let swarm = Swarm::builder().build().await.unwrap();
    spawn_all(&swarm, "swarm", &["quiet"]).await;
    let mut rare = swarm.events_without_decisions();
    let a = swarm.agent(&id("quiet")).unwrap();
    for i in 0..5 {
        assert_eq!(a.step(read(i, 1)).await.unwrap().decision, Verdict::Allow);
    }
    swarm.halt(id("quiet"), "stop").await.unwrap();
    // The first event it gets is the halt: the five decisions never reached it.
    let first = tokio::time::timeout(Duration::from_secs(5), rare.recv())
        .await
        .expect("an event within 5 s")
        .expect("the bus is open")
        .expect("no lag");
    assert!(
        matches!(first, Event::Halt { ref agent, .. } if agent.as_str() == "quiet"),
        "{first:?}"
    );
    // A subscriber to everything sees decisions too.
    let mut all = swarm.events();
    let b = swarm.agent(&id("quiet")).unwrap();
    let _ = b.step(read(9, 1)).await.unwrap();
    let e = tokio::time::timeout(Duration::from_secs(5), all.recv())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(matches!(e, Event::Decision(_)), "{e:?}");
    swarm.shutdown().await;
}
