//! Approvals through the real binary: the agent reads (and long-polls) its parked step's final
//! decision over HTTP, with only its own token; late answers, halts and stricter policies all
//! end the step as journaled, and a restarted node gives the agent the same final decision.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use common::{Body, Client};
use serde_json::json;
use warden::adapters::http::wire::{AnswerRequest, DecisionView, ReasonRequest};
use warden_actors::{StepId, Verdict};

const OPERATOR: &str = "test-operator-token";

const POLICY: &str = "version: 1
defaults:
  budgets: {steps: 100, tokens: 100000}
  approval_timeout: 10m
pools:
  - {path: swarm}
tools:
  payments.transfer: {action: spend}
rules:
  - {id: big-transfer, match: {tool: payments.transfer, args: {amount: {gt: 1000}}}, decision: require_approval}
";

/// A node on `POLICY` (or another text) in its own data directory, restartable.
struct Node {
    child: Child,
    base: String,
    op: Client,
    dir: PathBuf,
    extra: Vec<std::ffi::OsString>,
}

impl Node {
    fn start(name: &str, policy: &str, config: Option<&str>) -> Node {
        let dir = std::env::temp_dir().join(format!("warden-appr-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let files = dir.with_extension("files");
        std::fs::create_dir_all(&files).unwrap();
        let policy_file = files.join("policy.yaml");
        std::fs::write(&policy_file, policy).unwrap();
        let mut extra = vec!["--policy".into(), policy_file.into_os_string()];
        if let Some(config) = config {
            let config_file = files.join("node.yaml");
            std::fs::write(&config_file, config).unwrap();
            extra.push("--config".into());
            extra.push(config_file.into_os_string());
        }
        let (child, base) = start(&dir.join("data"), &extra);
        let op = common::client(&base, Some(OPERATOR));
        Node {
            child,
            base,
            op,
            dir,
            extra,
        }
    }

    /// SIGTERM, then the same node again on the same data.
    fn restart(mut self) -> Node {
        stop(&mut self.child);
        let (child, base) = start(&self.dir.join("data"), &self.extra);
        self.child = child;
        self.op = common::client(&base, Some(OPERATOR));
        self.base = base;
        self
    }

    fn agent(&self, id: &str) -> Client {
        self.op
            .with_token(&common::register(&self.op, id, "swarm"))
            .with_timeout(Duration::from_secs(10))
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
        let _ = std::fs::remove_dir_all(self.dir.with_extension("files"));
    }
}

fn start(data: &Path, extra: &[std::ffi::OsString]) -> (Child, String) {
    let extra: Vec<&std::ffi::OsStr> = extra.iter().map(|s| s.as_os_str()).collect();
    common::start_node(data, &extra, OPERATOR)
}

fn stop(child: &mut Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    common::wait_for(Duration::from_secs(10), "the node to stop", || {
        child.try_wait().unwrap()
    });
}

fn transfer(amount: u64) -> serde_json::Value {
    json!({"tool": "payments.transfer", "action": "spend", "args": {"amount": amount}, "cost": {"tokens": 10}})
}

fn answer(op: &Client, id: &str, decision: &str) -> DecisionView {
    op.answer(
        id,
        &AnswerRequest {
            decision: decision.into(),
            reason: None,
            by: Some("alice".into()),
        },
    )
    .unwrap()
}

#[test]
fn an_agent_reads_and_long_polls_its_parked_step_with_its_own_token_only() {
    let node = Node::start("read", POLICY, None);
    let payer = node.agent("payer");
    let other = node.agent("other");
    let parked = payer.step("payer", &transfer(5_000)).unwrap();
    assert_eq!(parked.decision, Verdict::RequireApproval);
    let step = parked.step;

    // Pending: the require_approval decision, read as often as wanted.
    let now = payer.step_decision("payer", step, None).unwrap();
    assert_eq!(now.decision, Verdict::RequireApproval);
    assert_eq!(now.approval.as_deref(), Some("payer/s-1"));
    assert_eq!(now.rule.as_deref(), Some("big-transfer"));
    // A bounded wait with no answer ends with the current state, still pending.
    let started = Instant::now();
    let waited = payer
        .step_decision("payer", step, Some(Duration::from_millis(300)))
        .unwrap();
    assert_eq!(waited.decision, Verdict::RequireApproval);
    assert!(started.elapsed() >= Duration::from_millis(300));
    // What the "approvals waiting" alert reads: how long the oldest one has waited.
    let age = oldest_approval_age_seconds(&node.op);
    assert!((0.3..60.0).contains(&age), "{age}");

    // Only the agent's own token.
    let path = format!("/v1/agents/payer/steps/{step}");
    let (status, e) = common::call(&other, "GET", &path, Body::None);
    assert_eq!(
        (status, e["error"]["code"].as_str()),
        (403, Some("forbidden")),
        "{e}"
    );
    let (status, _) = common::call(&node.op, "GET", &path, Body::None);
    assert_eq!(status, 403, "not even the operator's: it reads approvals");
    let (status, _) = common::call(&common::client(&node.base, None), "GET", &path, Body::None);
    assert_eq!(status, 401);
    // Bad input is refused with the field named.
    for (query, code) in [("wait=soon", "bad_duration"), ("timeout=1s", "bad_query")] {
        let (status, e) = common::call(&payer, "GET", &format!("{path}?{query}"), Body::None);
        assert_eq!(
            (status, e["error"]["code"].as_str()),
            (400, Some(code)),
            "{e}"
        );
    }
    let (status, e) = common::call(&payer, "GET", "/v1/agents/payer/steps/s-9", Body::None);
    assert_eq!(
        (status, e["error"]["code"].as_str()),
        (404, Some("unknown_step"))
    );
    let small = payer.step("payer", &transfer(10)).unwrap();
    assert_eq!(small.decision, Verdict::Allow);
    let (status, e) = common::call(
        &payer,
        "GET",
        &format!("/v1/agents/payer/steps/{}", small.step),
        Body::None,
    );
    assert_eq!(
        (status, e["error"]["code"].as_str()),
        (404, Some("decision_not_kept")),
        "its POST answer was final: {e}"
    );

    // A long poll returns as soon as the operator answers.
    let poller = {
        let payer = payer.clone();
        std::thread::spawn(move || {
            let started = Instant::now();
            let d = payer.step_decision("payer", step, Some(Duration::from_secs(30)));
            (d, started.elapsed())
        })
    };
    let answered = answer(&node.op, "payer/s-1", "approve");
    assert_eq!(answered.decision, Verdict::Allow);
    let (polled, took) = poller.join().unwrap();
    let polled = polled.unwrap();
    assert_eq!(polled.decision, Verdict::Allow);
    assert_eq!(polled.reason, "approved by alice");
    assert_eq!(polled.audit_seq, answered.audit_seq);
    assert!(
        took < Duration::from_secs(20),
        "the poll ended with the answer: {took:?}"
    );
    // Reading does not use it up.
    assert_eq!(payer.step_decision("payer", step, None).unwrap(), polled);
    assert_eq!(oldest_approval_age_seconds(&node.op), 0.0, "none waits");
}

/// `warden_approvals_oldest_age_seconds` from the node's `/metrics`.
fn oldest_approval_age_seconds(op: &Client) -> f64 {
    let (status, text) = common::call(op, "GET", "/metrics", Body::None);
    assert_eq!(status, 200);
    let text = text.as_str().unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("warden_approvals_oldest_age_seconds "))
        .unwrap_or_else(|| panic!("no warden_approvals_oldest_age_seconds in:\n{text}"))
        .parse()
        .unwrap()
}

#[test]
fn final_decisions_survive_a_restart_for_the_agent_to_read() {
    let node = Node::start("restart", POLICY, None);
    let token = common::register(&node.op, "payer", "swarm");
    let payer = node.op.with_token(&token);
    for amount in [5_000, 6_000, 7_000] {
        assert_eq!(
            payer.step("payer", &transfer(amount)).unwrap().decision,
            Verdict::RequireApproval
        );
    }
    answer(&node.op, "payer/s-1", "approve");
    answer(&node.op, "payer/s-2", "deny");
    let node = node.restart();
    let payer = common::client(&node.base, Some(&token));
    let read = |n: u64| {
        payer
            .step_decision("payer", StepId::from_seq(n), None)
            .unwrap()
    };
    assert_eq!(read(1).decision, Verdict::Allow);
    assert_eq!(read(2).decision, Verdict::Deny);
    assert_eq!(read(3).decision, Verdict::RequireApproval, "still parked");
    // The parked one is answered after the restart; a waiting agent gets it.
    let poller = {
        let payer = payer.clone();
        std::thread::spawn(move || {
            payer.step_decision("payer", StepId::from_seq(3), Some(Duration::from_secs(30)))
        })
    };
    answer(&node.op, "payer/s-3", "approve");
    assert_eq!(poller.join().unwrap().unwrap().decision, Verdict::Allow);
}

#[test]
fn a_wait_longer_than_the_bound_answers_the_current_state_before_the_deadline() {
    // Requests may take 1 s here: a 10-minute wait is cut to 1 s and answered, not 408.
    let node = Node::start("bound", POLICY, Some("limits: {request_timeout: 1s}\n"));
    let payer = node.agent("payer");
    let step = payer.step("payer", &transfer(5_000)).unwrap().step;
    let started = Instant::now();
    let d = payer
        .step_decision("payer", step, Some(Duration::from_secs(600)))
        .unwrap();
    assert_eq!(
        d.decision,
        Verdict::RequireApproval,
        "still pending at the bound"
    );
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(30),
        "{took:?}"
    );
}

#[test]
fn an_approval_that_comes_after_the_deadline_is_never_an_allow() {
    let node = Node::start(
        "late",
        &POLICY.replace("approval_timeout: 10m", "approval_timeout: 1s"),
        None,
    );
    let token = common::register(&node.op, "payer", "swarm");
    let payer = node.op.with_token(&token);
    let parked = payer.step("payer", &transfer(5_000)).unwrap();
    let deadline = node.op.approvals().unwrap()[0].expires_at_ms;
    // The node is down when the deadline passes; the answer comes right after it is back,
    // racing its first sweep. Either way the step is denied as timed out, never allowed.
    let mut node = node;
    stop(&mut node.child);
    common::wait_until(Duration::from_secs(10), "the approval's deadline", || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64
            > deadline
    });
    let (child, base) = start(&node.dir.join("data"), &node.extra);
    node.child = child;
    node.op = common::client(&base, Some(OPERATOR));
    node.base = base;
    let (status, body) = common::call(
        &node.op,
        "POST",
        "/v1/approvals/payer/s-1",
        Body::Json(json!({"decision": "approve", "by": "alice"})),
    );
    match status {
        200 => {
            assert_eq!(body["decision"], "deny", "{body}");
            assert!(
                body["reason"].as_str().unwrap().contains("timed out"),
                "{body}"
            );
        }
        404 => assert_eq!(
            body["error"]["code"], "unknown_approval",
            "the sweep was first"
        ),
        other => panic!("{other}: {body}"),
    }
    let payer = common::client(&node.base, Some(&token));
    let d = payer.step_decision("payer", parked.step, None).unwrap();
    assert_eq!(d.decision, Verdict::Deny);
    let agent = node.op.agent("payer").unwrap();
    assert_eq!((agent.open_steps, agent.pending_approvals), (0, 0));
    assert_eq!(agent.reserved.get("tokens").copied().unwrap_or(0), 0);
}

#[test]
fn a_halt_that_ends_a_parked_step_journals_why_and_the_agent_reads_it() {
    let node = Node::start("halt", POLICY, None);
    let token = common::register(&node.op, "payer", "swarm");
    let payer = node.op.with_token(&token);
    let parked = payer.step("payer", &transfer(5_000)).unwrap();
    node.op
        .halt(
            "payer",
            &ReasonRequest {
                reason: Some("fraud drill".into()),
                by: None,
            },
        )
        .unwrap();
    let why = "agent halted (external) while the step waited: fraud drill";
    let d = payer.step_decision("payer", parked.step, None).unwrap();
    assert_eq!((d.decision, d.reason.as_str()), (Verdict::Deny, why));
    let page = node.op.audit("kind=approval").unwrap();
    assert_eq!(page.entries.len(), 1, "{:?}", page.entries);
    let e = &page.entries[0]["entry"];
    assert_eq!(
        e["answer"],
        json!({"answer": "halted", "kind": "external", "reason": "fraud drill"})
    );
    assert_eq!(
        (e["decision"].as_str(), e["reason"].as_str()),
        (Some("deny"), Some(why))
    );

    let node = node.restart();
    let payer = common::client(&node.base, Some(&token));
    let d = payer.step_decision("payer", parked.step, None).unwrap();
    assert_eq!((d.decision, d.reason.as_str()), (Verdict::Deny, why));
    assert!(node.op.approvals().unwrap().is_empty());
}

#[test]
fn an_approval_under_a_stricter_policy_is_denied_and_says_why() {
    let node = Node::start("stricter", POLICY, None);
    let token = common::register(&node.op, "payer", "swarm");
    let payer = node.op.with_token(&token);
    let parked = payer.step("payer", &transfer(5_000)).unwrap();
    let stricter = format!(
        "{POLICY}  - {{id: freeze, match: {{tool: payments.transfer, args: {{amount: {{gt: 1000}}}}}}, decision: deny, message: 'large transfers are frozen'}}\n"
    );
    assert_eq!(node.op.put_policy(&stricter).unwrap().version, 2);
    let d = answer(&node.op, "payer/s-1", "approve");
    assert_eq!(
        (d.decision, d.rule.as_deref()),
        (Verdict::Deny, Some("freeze"))
    );
    assert_eq!(
        d.reason,
        "approved by alice, but policy version 2, in force since the step was parked under version 1, denies it: large transfers are frozen"
    );
    assert_eq!(node.op.agent("payer").unwrap().open_steps, 0);
    // The operator CLI says so too, and exits 1: the approval did not go through.
    let second = payer.step("payer", &transfer(4_000)).unwrap();
    assert_eq!(
        second.decision,
        Verdict::Deny,
        "new steps meet the new policy at once"
    );
    let node = node.restart();
    let payer = common::client(&node.base, Some(&token));
    let after = payer.step_decision("payer", parked.step, None).unwrap();
    assert_eq!((after.decision, after.reason), (Verdict::Deny, d.reason));
    assert_eq!(node.op.agent("payer").unwrap().open_steps, 0);
}

#[test]
fn the_operator_cli_exits_1_when_an_approval_does_not_go_through() {
    let node = Node::start("cli", POLICY, None);
    let payer = node.agent("payer");
    payer.step("payer", &transfer(5_000)).unwrap();
    payer.step("payer", &transfer(6_000)).unwrap();
    let cli = |id: &str| {
        let out = Command::new(env!("CARGO_BIN_EXE_warden"))
            .args(["approvals", "approve", id, "--by", "alice"])
            .env("WARDEN_NODE", &node.base)
            .env("WARDEN_OPERATOR_TOKEN", OPERATOR)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).to_string(),
        )
    };
    let (code, text) = cli("payer/s-1");
    assert_eq!(code, Some(0), "{text}");
    assert!(
        text.starts_with("payer/s-1: allow (approved by alice)"),
        "{text}"
    );
    node.op
        .put_policy(&POLICY.replace("decision: require_approval", "decision: deny"))
        .unwrap();
    let (code, text) = cli("payer/s-2");
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.starts_with("payer/s-2: deny (approved by alice, but policy version 2"),
        "{text}"
    );
}
