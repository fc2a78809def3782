//! Accounting fails closed, end to end (issue 8, section 1): the real `warden node` binary on
//! an ephemeral port, agents talking to it over HTTP through the typed client. Each measured
//! case of the issue is here: 20 agents declaring no cost on a $1 pool, a step declaring 0
//! tokens on an exhausted budget, a `tokens: 0` registration, partial outcomes, a late
//! outcome after a `lost` halt, sub-micro-dollar amounts and the bounds at the edge.

mod common;

use std::time::Duration;

use common::{Body, Client};
use serde_json::{json, Value};
use warden::adapters::http::wire::{
    BudgetsRequest, CostRequest, OutcomeRequest, PoolView, RegisterRequest,
};
use warden_actors::{AgentState, HaltKind, OutcomeStatus, Verdict};

const OPERATOR: &str = "test-operator-token-accounting";
const USD: u64 = 1_000_000;

const POLICY: &str = "
version: 1
pools:
  - {path: swarm, limits: {cost_usd: 1.00}}
  - {path: swarm/llm, limits: {tokens: 100000, custom: {gpu_seconds: 1000}}}
tools:
  llm.chat: {action: network}
  llm.metered: {action: network, min_cost: {tokens: 500, cost_usd: 0.001, custom: {gpu_seconds: 2}}}
  files.read: {action: read, min_cost: {tokens: 0, cost_usd: 0, custom: {gpu_seconds: 0}}}
";

struct Node {
    child: std::process::Child,
    op: Client,
    dir: std::path::PathBuf,
}

impl Node {
    fn start(name: &str) -> Node {
        let dir =
            std::env::temp_dir().join(format!("warden-accounting-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let policy = dir.join("policy.yaml");
        std::fs::write(&policy, POLICY).unwrap();
        let data = dir.join("data");
        let (child, base) =
            common::start_node(&data, &["--policy".as_ref(), policy.as_os_str()], OPERATOR);
        let op = common::client(&base, Some(OPERATOR));
        Node { child, op, dir }
    }

    /// Registers `id` in `pool` with `request`'s other fields; returns the agent's client.
    fn agent(&self, id: &str, pool: &str, mut request: RegisterRequest) -> Client {
        request.id = Some(id.to_string());
        request.pool = Some(pool.to_string());
        let view = self.op.register(&request).unwrap();
        self.op.with_token(&view.token.unwrap())
    }

    fn pool(&self, path: &str) -> PoolView {
        self.op.pool(path).unwrap()
    }

    /// Kills the node (SIGKILL) and starts it again on the same data.
    fn restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let policy = self.dir.join("policy.yaml");
        let (child, base) = common::start_node(
            &self.dir.join("data"),
            &["--policy".as_ref(), policy.as_os_str()],
            OPERATOR,
        );
        self.child = child;
        self.op = common::client(&base, Some(OPERATOR));
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn outcome(cost: Value) -> Body {
    Body::Json(json!({"status": "success", "cost": cost}))
}

fn post_outcome(agent: &Client, id: &str, step: &str, body: Body) -> (u16, Value) {
    common::call(
        agent,
        "POST",
        &format!("/v1/agents/{id}/steps/{step}/outcome"),
        body,
    )
}

#[test]
fn twenty_agents_declaring_no_cost_on_a_one_dollar_pool_show_all_they_spent() {
    let node = Node::start("twenty");
    let agents: Vec<(String, Client)> = (0..20)
        .map(|i| {
            let id = format!("a{i}");
            let client = node.agent(&id, "swarm", RegisterRequest::default());
            (id, client)
        })
        .collect();
    // All at once, each declaring no cost: the pool has room, so each is admitted.
    let steps: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = agents
            .iter()
            .map(|(id, c)| {
                s.spawn(move || {
                    let d = c
                        .step(id, &json!({"tool": "llm.chat", "action": "network"}))
                        .unwrap();
                    assert_eq!(d.decision, Verdict::Allow, "{d:?}");
                    d.step.to_string()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    // Each then reports $0.50.
    let answers: Vec<Value> = std::thread::scope(|s| {
        let handles: Vec<_> = agents
            .iter()
            .zip(&steps)
            .map(|((id, c), step)| {
                s.spawn(move || {
                    let (status, v) = post_outcome(c, id, step, outcome(json!({"cost_usd": 0.5})));
                    assert_eq!(status, 200, "{v}");
                    v
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let sum = |key: &str| -> u64 {
        answers
            .iter()
            .map(|a| a[key]["cost_micro_usd"].as_u64().unwrap())
            .sum()
    };
    assert_eq!((sum("charged"), sum("overrun")), (USD, 9 * USD));
    let halted = answers.iter().filter(|a| !a["halt"].is_null()).count();
    // Each step held the network class's built-in minimum ($0.01: it declared no money and
    // the pool limits money), so after the first report the others no longer fit whole: 19
    // halt.
    assert_eq!(halted, 19);

    // The pool shows what was really used, not only what fitted.
    let pool = node.pool("swarm");
    assert_eq!(pool.spent["cost_micro_usd"], USD, "{pool:?}");
    assert_eq!(pool.overrun["cost_micro_usd"], 9 * USD, "{pool:?}");
    assert_eq!(pool.used["cost_micro_usd"], 10 * USD, "{pool:?}");
    assert_eq!(pool.remaining["cost_micro_usd"], 0, "{pool:?}");
    let overran = agents
        .iter()
        .map(|(id, _)| node.op.agent(id).unwrap())
        .find(|a| a.state == AgentState::Halted)
        .unwrap();
    // It used $0.50; what its minimum held and the pool's room covered is spent, the rest
    // overrun.
    assert_eq!(overran.used["cost_micro_usd"], USD / 2, "{overran:?}");
    assert!(overran.overrun["cost_micro_usd"] > 0, "{overran:?}");
    assert_eq!(
        overran.spent["cost_micro_usd"] + overran.overrun["cost_micro_usd"],
        USD / 2,
        "{overran:?}"
    );
    let halt = overran.halt.unwrap();
    assert_eq!(
        (halt.kind, halt.rule.as_deref()),
        (HaltKind::Exhaustion, Some("budget.overrun"))
    );
    let (_, metrics) = common::call(&node.op, "GET", "/metrics", Body::None);
    let metrics = metrics.as_str().unwrap();
    let line = r#"warden_budget_overrun_total{pool="swarm",dimension="cost_micro_usd"} 9000000"#;
    assert!(metrics.contains(line), "/metrics lacks {line}:\n{metrics}");

    // A 21st agent's zero-cost step on the exhausted pool is refused.
    let late = node.agent("a20", "swarm", RegisterRequest::default());
    let d = late
        .step("a20", &json!({"tool": "llm.chat", "action": "network"}))
        .unwrap();
    assert_eq!(
        (d.decision, d.rule.as_deref()),
        (Verdict::Deny, Some("pool.swarm.cost_usd")),
        "{d:?}"
    );
}

#[test]
fn exhausted_and_zero_token_budgets_refuse_steps_declaring_zero_tokens() {
    let node = Node::start("zero");
    let budgets = |tokens: u64| RegisterRequest {
        budgets: Some(BudgetsRequest {
            tokens: Some(tokens),
            ..Default::default()
        }),
        ..Default::default()
    };
    // Registered with tokens: 0: steps billed in tokens are denied (not halted), a tool
    // exempt from tokens runs.
    let none = node.agent("none", "swarm/llm", budgets(0));
    let d = none
        .step("none", &json!({"tool": "llm.chat", "action": "network"}))
        .unwrap();
    assert_eq!(
        (d.decision, d.rule.as_deref()),
        (Verdict::Deny, Some("budget.tokens")),
        "{d:?}"
    );
    let d = none
        .step("none", &json!({"tool": "files.read", "action": "read"}))
        .unwrap();
    assert_eq!(d.decision, Verdict::Allow, "{d:?}");

    // A budget used up exactly: a step declaring 0 tokens halts it as exhaustion.
    let used = node.agent("used", "swarm/llm", budgets(100));
    let d = used
        .step(
            "used",
            &json!({"tool": "llm.chat", "action": "network", "cost": {"tokens": 100}}),
        )
        .unwrap();
    let settled = used
        .outcome(
            "used",
            d.step,
            &OutcomeRequest {
                status: OutcomeStatus::Success,
                cost: None,
            },
        )
        .unwrap();
    assert_eq!(settled.charged["tokens"], 100);
    let d = used
        .step(
            "used",
            &json!({"tool": "llm.chat", "action": "network", "cost": {"tokens": 0}}),
        )
        .unwrap();
    assert_eq!(
        (d.decision, d.kind, d.rule.as_deref()),
        (
            Verdict::Halt,
            Some(HaltKind::Exhaustion),
            Some("budget.tokens")
        ),
        "{d:?}"
    );
}

#[test]
fn outcomes_report_any_dimension_and_settle_the_rest_as_reserved() {
    let node = Node::start("partial");
    let a = node.agent("p1", "swarm/llm", RegisterRequest::default());
    let calls = std::cell::Cell::new(0);
    let metered = || {
        // Different args each time: the same call repeated would halt as stagnation.
        calls.set(calls.get() + 1);
        let d = a
            .step(
                "p1",
                &json!({"tool": "llm.metered", "action": "network", "args": {"n": calls.get()}}),
            )
            .unwrap();
        assert_eq!(d.decision, Verdict::Allow, "{d:?}");
        d.step.to_string()
    };
    // Reserved at the tool's minimum: 500 tokens, $0.001, 2 gpu_seconds.
    let s = metered();
    let view = node.op.agent("p1").unwrap();
    assert_eq!(
        (
            view.reserved["tokens"],
            view.reserved["cost_micro_usd"],
            view.reserved["gpu_seconds"]
        ),
        (500, 1_000, 2),
        "{view:?}"
    );
    // Only tokens: money and gpu as reserved.
    let (status, r) = post_outcome(&a, "p1", &s, outcome(json!({"tokens": 50})));
    assert_eq!(status, 200, "{r}");
    assert_eq!(
        (
            &r["charged"]["tokens"],
            &r["charged"]["cost_micro_usd"],
            &r["charged"]["gpu_seconds"]
        ),
        (&json!(50), &json!(1_000), &json!(2)),
        "{r}"
    );
    assert_eq!(r["refunded"]["tokens"], 450, "{r}");
    assert_eq!(r["late"], false, "{r}");
    // Only cost_usd: tokens as reserved.
    let s = metered();
    let (_, r) = post_outcome(&a, "p1", &s, outcome(json!({"cost_usd": 0.0003})));
    assert_eq!(
        (&r["charged"]["tokens"], &r["charged"]["cost_micro_usd"]),
        (&json!(500), &json!(300)),
        "{r}"
    );
    // cost_micro_usd and a custom dimension, as steps accept them.
    let s = metered();
    let (status, r) = post_outcome(
        &a,
        "p1",
        &s,
        outcome(json!({"cost_micro_usd": 7, "custom": {"gpu_seconds": 9}})),
    );
    assert_eq!(status, 200, "{r}");
    assert_eq!(
        (
            &r["charged"]["tokens"],
            &r["charged"]["cost_micro_usd"],
            &r["charged"]["gpu_seconds"]
        ),
        (&json!(500), &json!(7), &json!(9)),
        "{r}"
    );
    // Below one micro-dollar: 1, never 0.
    let s = metered();
    let (_, r) = post_outcome(&a, "p1", &s, outcome(json!({"cost_usd": 1e-9})));
    assert_eq!(r["charged"]["cost_micro_usd"], 1, "{r}");

    // Bad reports are refused, naming the field, and settle nothing.
    let s = metered();
    for (cost, field) in [
        (
            json!({"tokens": 1_000_000_000_000_001u64}),
            "outcome.cost.tokens",
        ),
        (json!({"cost_usd": 2e9}), "outcome.cost.cost_usd"),
        (json!({"cost_usd": 0.1, "cost_micro_usd": 1}), "both"),
        (json!({"custom": {"bad name": 1}}), "outcome.cost.custom"),
    ] {
        let (status, e) = post_outcome(&a, "p1", &s, outcome(cost));
        assert_eq!(
            (status, e["error"]["code"].as_str()),
            (400, Some("bad_outcome")),
            "{e}"
        );
        let message = e["error"]["message"].as_str().unwrap();
        assert!(message.contains(field), "{message} should name {field}");
    }
    let (status, e) = post_outcome(&a, "p1", &s, outcome(json!({"token": 5})));
    assert_eq!(status, 400, "an unknown field is refused: {e}");
    assert_eq!(node.op.agent("p1").unwrap().open_steps, 1);
    let typed = a
        .outcome(
            "p1",
            s.parse().unwrap(),
            &OutcomeRequest {
                status: OutcomeStatus::Failure,
                cost: Some(CostRequest {
                    tokens: Some(3),
                    ..Default::default()
                }),
            },
        )
        .unwrap();
    assert_eq!(typed.charged["tokens"], 3);
    assert_eq!(typed.charged["cost_micro_usd"], 1_000);
    let pool = node.pool("swarm/llm");
    assert_eq!(pool.spent["tokens"], 50 + 500 + 500 + 500 + 3, "{pool:?}");
    assert_eq!(pool.spent["gpu_seconds"], 2 + 2 + 9 + 2 + 2, "{pool:?}");
}

/// A lost agent's allowed steps may have run: its lost halt settles them as failures at
/// their whole reservation (a cost nobody reports is not zero), journaled, so a restart
/// keeps the charge; an outcome that comes after is refused like any settled step's.
/// A custom dimension nothing declares is refused: a misspelled one would escape its limit,
/// and made-up names would grow every account on the path without bound.
#[test]
fn an_undeclared_custom_dimension_is_refused_in_steps_and_outcomes() {
    let node = Node::start("undeclared");
    let a = node.agent("u1", "swarm/llm", RegisterRequest::default());
    let step = |args: Value, custom: Value| {
        let body = json!({"tool": "llm.metered", "action": "network", "args": args,
                          "cost": {"custom": custom}});
        common::call(&a, "POST", "/v1/agents/u1/steps", Body::Json(body))
    };
    let before = node.pool("swarm/llm");
    // Misspelled (gpu_second for gpu_seconds), and a name nothing mentions: denied.
    for (n, custom) in [
        json!({"gpu_second": 500}),
        json!({"gpu_seconds": 1, "zz9": 1}),
    ]
    .into_iter()
    .enumerate()
    {
        let (status, d) = step(json!({"n": n}), custom);
        assert_eq!(status, 200, "{d}");
        assert_eq!(
            (d["decision"].as_str(), d["rule"].as_str()),
            (Some("deny"), Some("cost.undeclared")),
            "{d}"
        );
        let reason = d["reason"].as_str().unwrap();
        assert!(
            reason.contains("gpu_second") || reason.contains("zz9"),
            "{reason}"
        );
    }
    assert_eq!(node.op.agent("u1").unwrap().open_steps, 0);
    // Declared by the policy: allowed.
    let (_, d) = step(json!({"n": 9}), json!({"gpu_seconds": 5}));
    assert_eq!(d["decision"], "allow", "{d}");
    let s = d["step"].as_str().unwrap().to_string();
    // An outcome naming an undeclared dimension is refused and settles nothing.
    let (status, e) = post_outcome(&a, "u1", &s, outcome(json!({"custom": {"gpu_second": 7}})));
    assert_eq!(
        (status, e["error"]["code"].as_str()),
        (400, Some("bad_outcome")),
        "{e}"
    );
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("gpu_second"),
        "{e}"
    );
    assert_eq!(node.op.agent("u1").unwrap().open_steps, 1);
    let (status, r) = post_outcome(&a, "u1", &s, outcome(json!({"custom": {"gpu_seconds": 7}})));
    assert_eq!(status, 200, "{r}");
    assert_eq!(r["charged"]["gpu_seconds"], 7, "{r}");
    // No account on the path grew a dimension: only what the policy declares.
    let after = node.pool("swarm/llm");
    for view in [&before, &after] {
        let dims: Vec<&String> = view.spent.keys().chain(view.reserved.keys()).collect();
        assert!(
            dims.iter()
                .all(|d| !d.starts_with("gpu_second") || *d == "gpu_seconds"),
            "{dims:?}"
        );
        assert!(!dims.iter().any(|d| *d == "zz9"), "{dims:?}");
    }
    assert_eq!(after.spent["gpu_seconds"], 7, "{after:?}");
}

#[test]
fn a_lost_halt_settles_open_steps_at_their_reservation() {
    let mut node = Node::start("late");
    let a = node.agent(
        "ghost",
        "swarm/llm",
        RegisterRequest {
            heartbeat_timeout: Some("1s".into()),
            ..Default::default()
        },
    );
    let d = a
        .step(
            "ghost",
            &json!({"tool": "llm.chat", "action": "network", "cost": {"tokens": 400}}),
        )
        .unwrap();
    assert_eq!(d.decision, Verdict::Allow, "{d:?}");
    let view = common::wait_for(Duration::from_secs(20), "the lost halt", || {
        let v = node.op.agent("ghost").unwrap();
        (v.state == AgentState::Halted).then_some(v)
    });
    assert_eq!(view.halt.as_ref().unwrap().kind, HaltKind::Lost, "{view:?}");
    assert_eq!(view.released_steps, 0, "{view:?}");
    assert_eq!(view.spent["tokens"], 400, "{view:?}");
    assert_eq!(view.consecutive_failures, 1, "{view:?}");
    let pool = node.pool("swarm/llm");
    assert_eq!((pool.reserved["tokens"], pool.spent["tokens"]), (0, 400));

    let step = d.step.to_string();
    let (status, e) = post_outcome(&a, "ghost", &step, outcome(json!({"tokens": 10})));
    assert_eq!(
        (status, e["error"]["code"].as_str()),
        (404, Some("unknown_step")),
        "{e}"
    );
    // The charge was journaled: a restart recovers it.
    node.restart();
    let view = node.op.agent("ghost").unwrap();
    assert_eq!(view.spent["tokens"], 400, "{view:?}");
    assert_eq!(node.pool("swarm/llm").spent["tokens"], 400);
}

#[test]
fn amounts_are_bounded_at_the_edge() {
    let node = Node::start("bounds");
    for (budgets, field) in [
        (json!({"tokens": 1_000_000_000_000_000_001u64}), "tokens"),
        (json!({"cost_usd": 2e9}), "budgets.cost_usd"),
        (json!({"risk": -1.0}), "budgets.risk"),
    ] {
        let (status, e) = common::call(
            &node.op,
            "POST",
            "/v1/agents",
            Body::Json(json!({"id": "big", "budgets": budgets})),
        );
        assert_eq!(
            (status, e["error"]["code"].as_str()),
            (400, Some("bad_amount")),
            "{e}"
        );
        assert!(
            e["error"]["message"].as_str().unwrap().contains(field),
            "{e}"
        );
    }
    let a = node.agent("small", "swarm/llm", RegisterRequest::default());
    for (cost, field) in [
        (
            json!({"tokens": 1_000_000_000_000_001u64}),
            "step.cost.tokens",
        ),
        (
            json!({"cost_micro_usd": 1_000_000_000_000_001u64}),
            "step.cost.cost_micro_usd",
        ),
        (
            json!({"custom": {"gpu_seconds": 1_000_000_000_000_001u64}}),
            "step.cost.custom.gpu_seconds",
        ),
    ] {
        let (status, e) = common::call(
            &a,
            "POST",
            "/v1/agents/small/steps",
            Body::Json(json!({"tool": "llm.chat", "action": "network", "cost": cost})),
        );
        assert_eq!(
            (status, e["error"]["code"].as_str()),
            (400, Some("bad_step")),
            "{e}"
        );
        assert!(
            e["error"]["message"].as_str().unwrap().contains(field),
            "{e}"
        );
    }
    // A sub-micro-dollar step reserves one micro-dollar.
    let d = a
        .step(
            "small",
            &json!({"tool": "llm.chat", "action": "network", "cost": {"cost_usd": 1e-9}}),
        )
        .unwrap();
    assert_eq!(d.decision, Verdict::Allow, "{d:?}");
    assert_eq!(
        node.op.agent("small").unwrap().reserved["cost_micro_usd"],
        1
    );
}
