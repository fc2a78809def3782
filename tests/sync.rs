//! Three real `warden node` processes sharing one pool over QUIC (mutual TLS with a cluster CA
//! made by `warden certs`). Every node dials its peers through a UDP relay this test owns, so
//! it can cut one node off (every datagram dropped, both ways) and heal it again.
//!
//! What is checked: rights move to where the steps are; a cut-off node keeps deciding with its
//! own rights and then denies with `escrow.exhausted`; the pool is never overspent (Σ of what
//! the nodes hold reserved or spent ≤ the limit); after the heal every node shows the same
//! pool within a second or two; a halt on one node halts the same agent on the others; a node
//! killed with kill -9 and restarted has exactly the rights it had; a node that prepared to go
//! offline spends what it took along and no more.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::cluster::{Cluster, LIMIT, OPERATOR};
use common::{call, client, register, start_node, wait_until, Body, Client};
use serde_json::{json, Value};

/// An agent with its token on one node, taking steps of `tokens` each with distinct args.
struct Agent {
    client: Client,
    id: String,
    n: u64,
}

impl Agent {
    fn new(c: &Cluster, i: usize, id: &str) -> Agent {
        let token = register(&c.operator(i), id, "swarm");
        Agent {
            client: client(c.base(i), Some(&token)),
            id: id.to_owned(),
            n: 0,
        }
    }

    /// One step: its decision and rule.
    fn step(&mut self, tokens: u64) -> (String, String) {
        self.n += 1;
        let body = json!({"tool": "work", "action": "read", "args": {"n": self.n},
                          "cost": {"tokens": tokens}});
        let path = format!("/v1/agents/{}/steps", self.id);
        let (status, d) = call(&self.client, "POST", &path, Body::Json(body));
        assert!(status == 200 || status == 403, "{status} {d}");
        let s = |k: &str| d[k].as_str().unwrap_or("").to_owned();
        (s("decision"), s("rule"))
    }

    /// Steps until `denials` denials in a row (or `max` steps): allowed steps and the rules.
    fn spend(&mut self, tokens: u64, denials: usize, max: usize) -> (u64, Vec<String>) {
        let (mut allowed, mut rules, mut row) = (0, Vec::new(), 0);
        for _ in 0..max {
            let (decision, rule) = self.step(tokens);
            if decision == "allow" {
                allowed += 1;
                row = 0;
            } else {
                rules.push(rule);
                row += 1;
                if row >= denials {
                    break;
                }
            }
        }
        (allowed, rules)
    }
}

fn wait_converged(c: &Cluster, bound: Duration) -> Duration {
    let started = Instant::now();
    wait_until(bound, "every node shows the same pool", || {
        let views: Vec<Value> = (0..3).map(|i| c.rights(i)).collect();
        let used: Vec<u64> = (0..3).map(|i| c.pool_used(i)).collect();
        let total: u64 = used.iter().sum();
        let held: u64 = (0..3).map(|i| views[i]["held"].as_u64().unwrap()).sum();
        views
            .iter()
            .all(|v| v["used_cluster"].as_u64() == Some(total))
            && held == LIMIT
    });
    started.elapsed()
}

#[test]
fn a_cut_off_node_keeps_deciding_with_its_rights_and_the_pool_is_never_overspent() {
    let c = Cluster::start("partition");
    let mut agents: Vec<Agent> = (0..3)
        .map(|i| Agent::new(&c, i, &format!("ag-{i}")))
        .collect();
    // Demand on a moves rights there: 1,500 tokens (half the pool, its share is 1,000) are
    // all allowed, at most after short waits for rights to arrive.
    let started = Instant::now();
    let mut waits = 0;
    while agents[0].n - waits < 150 {
        let (decision, rule) = agents[0].step(10);
        if decision != "allow" {
            assert_eq!(rule, "escrow.exhausted");
            waits += 1;
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "rights never came"
        );
    }
    eprintln!(
        "1,500 tokens on a in {:?}, {waits} waits for rights",
        started.elapsed()
    );
    c.check_no_overspend();

    c.cut(2, true);
    let mut rules = Vec::new();
    let (mut majority, mut minority) = (0, 0);
    for _ in 0..40 {
        let (a, r1) = agents[0].spend(10, 3, 10);
        let (m, r2) = agents[2].spend(10, 3, 10);
        majority += a;
        minority += m;
        rules.extend(r1);
        rules.extend(r2);
        c.check_no_overspend();
    }
    assert!(minority > 0, "the cut-off node decided with its own rights");
    assert!(majority > 0);
    assert!(
        rules.iter().any(|r| r == "escrow.exhausted"),
        "denied once its rights ran out: {rules:?}"
    );
    assert!(rules.iter().all(|r| r == "escrow.exhausted"), "{rules:?}");

    c.cut(2, false);
    let took = wait_converged(&c, Duration::from_secs(10));
    eprintln!("converged {took:?} after the heal");
    c.check_no_overspend();
    assert_eq!(
        (0..3).map(|i| c.pool_used(i)).sum::<u64>(),
        10 * (150 + majority + minority),
        "every allowed step is held somewhere, once"
    );
}

#[test]
fn a_halt_reaches_every_node_and_a_killed_node_keeps_its_rights_exactly() {
    let mut c = Cluster::start("halt-kill");
    // The same agent id on two nodes: a halt on one halts the other.
    let _on_a = Agent::new(&c, 0, "twin");
    let _on_c = Agent::new(&c, 2, "twin");
    let (status, body) = call(
        &c.operator(0),
        "POST",
        "/v1/agents/twin/halt",
        Body::Json(json!({"reason": "test"})),
    );
    assert_eq!(status, 200, "{body}");
    wait_until(Duration::from_secs(5), "the halt reaches node c", || {
        let (_, a) = call(&c.operator(2), "GET", "/v1/agents/twin", Body::None);
        a["state"] == "halted"
    });

    // Spend on b so its rights differ from the initial split, then cut it off and kill it.
    let mut on_b = Agent::new(&c, 1, "worker-b");
    on_b.spend(10, 1, 60);
    std::thread::sleep(Duration::from_millis(500)); // let rights settle
    c.cut(1, true);
    std::thread::sleep(Duration::from_millis(300));
    let before = c.rights(1);
    c.kill(1);
    c.launch(1);
    let after = c.rights(1);
    for key in ["held", "ceiling", "cap", "epoch", "used"] {
        assert_eq!(
            after[key], before[key],
            "{key} after kill -9: {after} vs {before}"
        );
    }
    c.cut(1, false);
    c.wait_connected(Duration::from_secs(20));
    wait_converged(&c, Duration::from_secs(10));
}

#[test]
fn a_node_that_prepared_to_go_offline_spends_what_it_took_and_no_more() {
    let c = Cluster::start("offline");
    let before = c.rights(2)["held"].as_u64().unwrap();
    let (status, body) = call(
        &c.operator(2),
        "POST",
        "/v1/cluster/prepare-offline",
        Body::Json(json!({"duration": "1h"})),
    );
    assert_eq!(status, 200, "{body}");
    wait_until(
        Duration::from_secs(10),
        "rights reach the node going offline",
        || c.rights(2)["ceiling"].as_u64().unwrap() > before + 500,
    );
    std::thread::sleep(Duration::from_millis(300));
    let took = c.rights(2)["ceiling"].as_u64().unwrap();
    c.cut(2, true);
    let mut agent = Agent::new_offline(&c);
    let (allowed, rules) = agent.spend(10, 3, 1_000);
    assert_eq!(
        allowed * 10,
        took - took % 10,
        "spent {} of {took}",
        allowed * 10
    );
    assert!(rules.iter().all(|r| r == "escrow.exhausted"), "{rules:?}");
    c.check_no_overspend();
}

impl Agent {
    /// An agent registered on node c (the one that prepared) — before the cut, its
    /// registration is local anyway.
    fn new_offline(c: &Cluster) -> Agent {
        Agent::new(c, 2, "edge-worker")
    }
}

#[test]
fn a_node_without_sync_answers_no_cluster_and_sync_flags_need_the_section() {
    let dir = std::env::temp_dir().join(format!("warden-sync-none-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let (mut child, base) = start_node(&dir, &[], OPERATOR);
    let (status, body) = call(
        &client(&base, Some(OPERATOR)),
        "GET",
        "/v1/cluster",
        Body::None,
    );
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("no_cluster"))
    );
    let _ = child.kill();
    let _ = child.wait();
    let out = Command::new(env!("CARGO_BIN_EXE_warden"))
        .args(["node", "--data"])
        .arg(&dir)
        .args(["--sync-listen", "127.0.0.1:0", "--peer", "127.0.0.1:1"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("need the config file's `sync` section"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
    let _: &Path = &dir;
}

#[test]
fn a_cluster_halt_holds_for_a_new_registration_and_a_policy_reaches_idle_nodes() {
    let c = Cluster::start("halt-policy");
    let _ghost = Agent::new(&c, 0, "ghost");
    let (status, body) = call(
        &c.operator(0),
        "POST",
        "/v1/agents/ghost/halt",
        Body::Json(json!({"reason": "test"})),
    );
    assert_eq!(status, 200, "{body}");
    // The halt reached c (its halt set), so registering the same id there does not escape it.
    std::thread::sleep(Duration::from_millis(500));
    let mut again = Agent::new(&c, 2, "ghost");
    let (decision, _) = again.step(10);
    assert_eq!(
        decision, "halt",
        "a halted agent registered elsewhere stays halted"
    );

    // A policy installed on a reaches b and c with no step taken anywhere.
    let policy = format!(
        "{}  extra.tool: {{action: read}}\n",
        common::cluster::POLICY
    );
    let (status, body) = call(
        &c.operator(0),
        "PUT",
        "/v1/policy",
        Body::Text(policy.clone(), "application/yaml"),
    );
    assert_eq!(status, 200, "{body}");
    wait_until(
        Duration::from_secs(5),
        "the policy reaches every node",
        || {
            (1..3).all(|i| {
                let (_, p) = call(&c.operator(i), "GET", "/v1/policy", Body::None);
                p.as_str() == Some(policy.as_str())
            })
        },
    );
}

#[test]
fn a_node_refuses_to_start_when_a_shared_pools_members_or_limit_changed() {
    let mut c = Cluster::start("shape");
    let mut on_a = Agent::new(&c, 0, "spender");
    on_a.spend(10, 1, 20);
    std::thread::sleep(Duration::from_millis(300));
    c.kill(0);
    // Same node, another limit for the shared pool: it would forget what was spent and given.
    let config = std::fs::read_to_string(c.config(0)).unwrap();
    let err = refused_with(&c, &config.replace("tokens: 3000", "tokens: 3003"));
    assert!(
        err.contains("changing the members or the limit of a shared pool"),
        "{err}"
    );
    // The same count of members, one replaced: refused too (it would take over c's rows).
    let err = refused_with(
        &c,
        &config.replace("members: [a, b, c]", "members: [a, b, d]"),
    );
    assert!(err.contains("a replaced or renamed member"), "{err}");
}

/// Starts node a with `config` on its data directory; asserts it refuses to start (exit 2)
/// and returns what it said.
fn refused_with(c: &Cluster, config: &str) -> String {
    std::fs::write(c.config(0), config).unwrap();
    let out = Command::new(common::warden_bin())
        .args(["node", "--listen", "127.0.0.1:0", "--data"])
        .arg(c.data(0))
        .arg("--config")
        .arg(c.config(0))
        .env("WARDEN_OPERATOR_TOKEN", OPERATOR)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A halt made again on a node where the agent is still halted is a new epoch: a resume on a
/// cut-off node, which never saw it, does not lift it after the heal.
#[test]
fn a_resume_on_a_cut_off_node_does_not_lift_a_halt_made_again_elsewhere() {
    let c = Cluster::start("resume-race");
    let _on_a = Agent::new(&c, 0, "racer");
    let _on_c = Agent::new(&c, 2, "racer");
    let halt = |i: usize| {
        let body = Body::Json(json!({"reason": "test"}));
        let (status, b) = call(&c.operator(i), "POST", "/v1/agents/racer/halt", body);
        assert_eq!(status, 200, "{b}");
    };
    let state = |i: usize| {
        let (_, a) = call(&c.operator(i), "GET", "/v1/agents/racer", Body::None);
        a["state"].as_str().unwrap_or("").to_owned()
    };
    halt(0);
    wait_until(Duration::from_secs(5), "the halt reaches c", || {
        state(2) == "halted"
    });
    c.cut(0, true);
    std::thread::sleep(Duration::from_millis(200));
    let (status, b) = call(
        &c.operator(0),
        "POST",
        "/v1/agents/racer/resume",
        Body::Json(json!({"reason": "test"})),
    );
    assert_eq!(status, 200, "{b}");
    assert_eq!(state(0), "running");
    halt(2); // already halted on c: a new epoch in the cluster
    c.cut(0, false);
    wait_until(Duration::from_secs(10), "the new halt reaches a", || {
        state(0) == "halted"
    });
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(state(2), "halted", "c's halt was not lifted by a's resume");
}
