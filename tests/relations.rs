//! HTTP agents can be given a `parent` and `depends_on` at registration, checked like the
//! library's (unknown agents refused with a 400 naming the field), journaled with the
//! registration, so `subtree` and `dependents` cascades fire for them, also after a restart.

mod common;

use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::Duration;

use common::{Body, Client};
use serde_json::json;
use warden::adapters::http::wire::{AgentView, RegisterRequest};
use warden_actors::{AgentState, HaltKind, Verdict};

const OPERATOR: &str = "test-operator-token";

const POLICY: &str = "version: 1
defaults:
  budgets: {steps: 100}
pools:
  - {path: swarm}
  - {path: swarm/crew, cascade: {on: [safety], scope: subtree}}
  - {path: swarm/svc, cascade: {on: [safety], scope: dependents}}
tools:
  work: {action: read}
  rm: {action: execute}
rules:
  - {id: no-rm, match: {tool: rm}, decision: halt, kind: safety}
";

struct Node {
    child: Child,
    op: Client,
    dir: PathBuf,
    args: Vec<std::ffi::OsString>,
}

impl Node {
    fn start(name: &str) -> Node {
        let dir = std::env::temp_dir().join(format!("warden-rel-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let policy = dir.join("policy.yaml");
        std::fs::write(&policy, POLICY).unwrap();
        let args = vec!["--policy".into(), policy.into_os_string()];
        let (child, op) = Self::run(&dir, &args);
        Node {
            child,
            op,
            dir,
            args,
        }
    }

    fn run(dir: &std::path::Path, args: &[std::ffi::OsString]) -> (Child, Client) {
        let args: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_os_str()).collect();
        let (child, base) = common::start_node(&dir.join("data"), &args, OPERATOR);
        (child, common::client(&base, Some(OPERATOR)))
    }

    fn restart(mut self) -> Node {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        common::wait_for(Duration::from_secs(10), "the node to stop", || {
            self.child.try_wait().unwrap()
        });
        let (child, op) = Self::run(&self.dir, &self.args);
        self.child = child;
        self.op = op;
        self
    }

    fn register(
        &self,
        id: &str,
        pool: &str,
        parent: Option<&str>,
        depends_on: &[&str],
    ) -> AgentView {
        self.op
            .register(&RegisterRequest {
                id: Some(id.into()),
                pool: Some(pool.into()),
                parent: parent.map(str::to_string),
                depends_on: depends_on.iter().map(|d| d.to_string()).collect(),
                ..Default::default()
            })
            .unwrap_or_else(|e| panic!("registering {id}: {e}"))
    }

    fn halted(&self, id: &str) -> Option<HaltKind> {
        let a = self.op.agent(id).unwrap();
        (a.state == AgentState::Halted).then(|| a.halt.unwrap().kind)
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn registration_refuses_unknown_parents_and_dependencies_with_a_400_naming_the_field() {
    let node = Node::start("refuse");
    node.register("boss", "swarm/crew", None, &[]);
    let cases = [
        (
            json!({"id": "w1", "parent": "bos"}),
            "unknown_parent",
            "parent: bos is not a registered agent",
        ),
        (
            json!({"id": "w1", "depends_on": ["boss", "nobody"]}),
            "unknown_dependency",
            "depends_on: nobody is not a registered agent",
        ),
        (
            json!({"id": "w1", "parent": "w1"}),
            "unknown_parent",
            "cannot name itself",
        ),
        (
            json!({"id": "w1", "parent": "not an id"}),
            "bad_agent_id",
            "parent \"not an id\"",
        ),
        (
            json!({"id": "w1", "depends_on": (0..65).map(|i| format!("a{i}")).collect::<Vec<_>>()}),
            "too_many_dependencies",
            "at most 64",
        ),
    ];
    for (body, code, message) in cases {
        let (status, e) = common::call(&node.op, "POST", "/v1/agents", Body::Json(body.clone()));
        assert_eq!(
            (status, e["error"]["code"].as_str()),
            (400, Some(code)),
            "{body}: {e}"
        );
        let msg = e["error"]["message"].as_str().unwrap();
        assert!(msg.contains(message), "{body}: {msg}");
    }
    // Nothing was registered by the refusals.
    assert_eq!(node.op.agents("").unwrap().agents.len(), 1);
    // Known ones are accepted and shown (repeats dropped).
    let w = node.register("w1", "swarm/crew", Some("boss"), &["boss", "boss"]);
    assert_eq!(w.parent.as_ref().map(|p| p.as_str()), Some("boss"));
    assert_eq!(w.depends_on.len(), 1);
    let shown = node.op.agent("w1").unwrap();
    assert_eq!((shown.parent, shown.depends_on), (w.parent, w.depends_on));
}

#[test]
fn a_policy_whose_rule_names_no_pool_is_refused_at_load_with_line_column_and_a_hint() {
    let node = Node::start("typo");
    let typo = POLICY.replace("match: {tool: rm}", "match: {tool: rm, team: swarm/cerw}");
    let (status, e) = common::call(
        &node.op,
        "PUT",
        "/v1/policy",
        Body::Text(typo, "application/yaml"),
    );
    assert_eq!(
        (status, e["error"]["code"].as_str()),
        (400, Some("invalid_policy")),
        "{e}"
    );
    let first = &e["error"]["details"][0];
    assert_eq!(
        (first["line"].as_u64(), first["col"].as_u64()),
        (Some(12), Some(41)),
        "{e}"
    );
    assert_eq!(first["hint"], "did you mean `swarm/crew`?", "{e}");
    assert_eq!(node.op.policy().unwrap().0, 1, "the old policy stays");
}

#[test]
fn subtree_and_dependents_cascades_fire_for_http_agents_across_a_restart() {
    let node = Node::start("cascade");
    let mut tokens = std::collections::HashMap::new();
    for (id, pool, parent, depends_on) in [
        ("boss", "swarm/crew", None, &[][..]),
        ("worker", "swarm/crew", Some("boss"), &[]),
        ("intern", "swarm", Some("worker"), &[]),
        ("bystander", "swarm/crew", None, &[]),
        ("db", "swarm/svc", None, &[]),
        ("app", "swarm", None, &["db"]),
    ] {
        let agent = node.register(id, pool, parent, depends_on);
        tokens.insert(id, agent.token.unwrap());
    }

    // The relations are journaled with the registrations: a restarted node still has them
    // (and the agents' tokens, kept as digests).
    let node = node.restart();
    let app = node.op.agent("app").unwrap();
    assert_eq!(
        app.depends_on
            .iter()
            .map(|d| d.as_str())
            .collect::<Vec<_>>(),
        ["db"]
    );
    assert_eq!(
        node.op
            .agent("intern")
            .unwrap()
            .parent
            .map(|p| p.to_string()),
        Some("worker".to_string())
    );

    // A safety halt of `boss`, whose pool spreads to the subtree: worker, then intern.
    halt_by_rule(&node, "boss", &tokens["boss"]);
    common::wait_until(Duration::from_secs(10), "the subtree cascade", || {
        node.halted("intern").is_some()
    });
    assert_eq!(node.halted("boss"), Some(HaltKind::Safety));
    assert_eq!(node.halted("worker"), Some(HaltKind::Cascade));
    assert_eq!(node.halted("intern"), Some(HaltKind::Cascade));
    assert_eq!(node.halted("bystander"), None, "not in boss's subtree");
    let worker = node.op.agent("worker").unwrap().halt.unwrap();
    assert!(
        worker.cause.iter().any(|c| c.agent == "boss"),
        "the cause chain names boss: {worker:?}"
    );

    // A safety halt of `db`, whose pool spreads to its dependents: app.
    halt_by_rule(&node, "db", &tokens["db"]);
    common::wait_until(Duration::from_secs(10), "the dependents cascade", || {
        node.halted("app").is_some()
    });
    assert_eq!(node.halted("app"), Some(HaltKind::Cascade));

    // The cascaded halts are journaled: after another restart they are all still there.
    let node = node.restart();
    for (id, kind) in [
        ("boss", Some(HaltKind::Safety)),
        ("worker", Some(HaltKind::Cascade)),
        ("intern", Some(HaltKind::Cascade)),
        ("bystander", None),
        ("db", Some(HaltKind::Safety)),
        ("app", Some(HaltKind::Cascade)),
    ] {
        assert_eq!(node.halted(id), kind, "{id}");
    }
}

/// `id` takes a step its policy halts on (`no-rm`, kind safety), with its own token.
fn halt_by_rule(node: &Node, id: &str, token: &str) {
    let d = node
        .op
        .with_token(token)
        .step(id, &json!({"tool": "rm", "action": "execute"}))
        .unwrap();
    assert_eq!(d.decision, Verdict::Halt, "{d:?}");
}
