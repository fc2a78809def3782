//! The monitoring in `deploy/` checked against the real thing: a `warden node` driven by
//! `warden sim --target` (and a few calls through its proxy), scraped every second by a real
//! Prometheus that loads `deploy/prometheus/alerts.yml`. Every PromQL expression of every
//! Grafana dashboard panel answers with data; every alert rule is evaluated without error and,
//! with its thresholds made `bool`, answers with data too (a rule whose threshold is not
//! crossed answers nothing as written); the pool alerts really fire for the pool the load
//! drives near empty; every metric name a dashboard or rule reads is one the node exports.
//! `promtool check rules|config` and `promtool test rules` (the rules' unit tests) pass.
//!
//! Needs `prometheus` and `promtool` on the PATH (Debian's `prometheus` package), and
//! PostgreSQL (Debian's `postgresql`: the node exports its journal there, so the export panels
//! and alerts have data); without them the tests say why and skip, unless
//! `WARDEN_REQUIRE_EXTERNAL=1` (CI), where they fail.
//! About 20 s of wall time in a debug build on 2 cores (most of it the 10 s load).

mod common;

use std::collections::BTreeSet;
use std::io::{BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::Body;
use serde_json::{json, Value};

const OPERATOR: &str = "deploy-test-operator-token";
/// The pool `tests/data/deploy/policy.yaml` makes small enough for the load to drain.
const DRAINED_POOL: &str = "swarm/research";
/// The alerts that must fire (pending or firing) for [`DRAINED_POOL`].
const NEAR_EXHAUSTION: [&str; 2] = ["WardenPoolLow", "WardenPoolExhaustionPredicted"];
/// What `$__rate_interval` stands for when a panel's query is sent to Prometheus.
const RATE_INTERVAL: &str = "1m";
/// The bound on each wait for Prometheus or the load.
const DEADLINE: Duration = Duration::from_secs(40);

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy")
}

/// True when `prometheus` and `promtool` run. Otherwise says why and returns false, or fails
/// when `WARDEN_REQUIRE_EXTERNAL=1`.
fn prometheus_installed() -> bool {
    let missing: Vec<&str> = ["prometheus", "promtool"]
        .into_iter()
        .filter(|p| Command::new(p).arg("--version").output().is_err())
        .collect();
    if missing.is_empty() {
        return true;
    }
    let why = format!(
        "{} not found; install Debian's prometheus package (apt-get install prometheus)",
        missing.join(" and ")
    );
    if std::env::var("WARDEN_REQUIRE_EXTERNAL").as_deref() == Ok("1") {
        panic!("WARDEN_REQUIRE_EXTERNAL=1 and {why}");
    }
    eprintln!("skipping the deploy test: {why}");
    false
}

/// Runs `promtool ARGS` in `deploy/prometheus` and asserts it succeeded.
fn promtool(args: &[&str]) {
    let out = Command::new("promtool")
        .args(args)
        .current_dir(deploy_dir().join("prometheus"))
        .output()
        .expect("promtool runs");
    assert!(
        out.status.success(),
        "promtool {}:\n{}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn promtool_checks_the_rules_and_config_and_every_alert_has_a_passing_unit_test() {
    if !prometheus_installed() {
        return;
    }
    promtool(&["check", "rules", "alerts.yml"]);
    promtool(&["check", "config", "prometheus.yml"]);
    promtool(&["test", "rules", "alerts.test.yml"]);
    let dir = deploy_dir().join("prometheus");
    let names = |file: &str, key: &str| -> BTreeSet<String> {
        std::fs::read_to_string(dir.join(file))
            .unwrap()
            .lines()
            .filter_map(|l| l.trim().trim_start_matches("- ").strip_prefix(key))
            .map(|n| n.trim().to_string())
            .collect()
    };
    let alerts = names("alerts.yml", "alert:");
    assert_eq!(alerts.len(), 13, "{alerts:?}");
    assert_eq!(alerts, names("alerts.test.yml", "alertname:"));
}

/// A process killed (and its directory removed) when the test ends, pass or fail.
struct Proc {
    child: Child,
    dir: Option<PathBuf>,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(dir) = &self.dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// The test's upstreams, one server: `/v1/chat/completions` answers as OpenAI does with usage
/// {11 input, 2 output tokens}; anything else answers `{"ok": true}`.
fn upstream() -> String {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for conn in l.incoming().map_while(Result::ok) {
            std::thread::spawn(move || serve(conn));
        }
    });
    addr
}

fn serve(conn: TcpStream) {
    let mut out = conn.try_clone().unwrap();
    let mut r = BufReader::new(conn);
    while let Some(req) = common::read_request(&mut r) {
        let body = if req.path.ends_with("/chat/completions") {
            json!({"id": "c1", "object": "chat.completion", "created": 1, "model": "gpt-t",
                   "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}],
                   "usage": {"prompt_tokens": 11, "completion_tokens": 2, "total_tokens": 13}})
        } else {
            json!({"ok": true})
        }
        .to_string();
        let head = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
            body.len()
        );
        if out.write_all(head.as_bytes()).is_err() || out.write_all(body.as_bytes()).is_err() {
            return;
        }
    }
}

/// Starts the node with the test's policy and upstreams in `dir`, as a cluster of one (its
/// certificates made by `warden certs`), so the sync panels and alerts have their series.
/// The node of the test: a one-member cluster with the proxy's upstreams, exporting its
/// journal to `postgres` (so the export panels and alerts have data) and sealing every second.
fn start_node(dir: &Path, postgres: &str) -> (Proc, String) {
    let addr = upstream();
    let policy = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/deploy/policy.yaml");
    let certs = dir.join("certs");
    for args in [vec!["init"], vec!["issue", "deploy-node"]] {
        let out = std::process::Command::new(common::warden_bin())
            .arg("certs")
            .args(&args)
            .arg("--dir")
            .arg(&certs)
            .output()
            .unwrap();
        assert!(out.status.success(), "warden certs {args:?}: {out:?}");
    }
    let config = dir.join("node.yaml");
    std::fs::write(
        &config,
        format!(
            "upstreams:\n  openai: {{url: \"http://{addr}/v1\", kind: openai}}\n  search: {{url: \"http://{addr}\"}}\n\
             prices:\n  gpt-t: {{upstream: openai, input: 1.0, output: 2.0, max_output_tokens: 100}}\n\
             sync:\n  listen: 127.0.0.1:0\n  members: [deploy-node]\n  ca: {ca}\n  cert: {cert}\n  key: {key}\n\
             \x20 pools: {{swarm: {{tokens: 60000000}}}}\n\
             export:\n  seal_interval: 1s\n  postgres: {{url: \"{postgres}\"}}\n",
            ca = certs.join("ca.pem").display(),
            cert = certs.join("deploy-node.pem").display(),
            key = certs.join("deploy-node.key").display(),
        ),
    )
    .unwrap();
    let (child, base) = common::start_node(
        &dir.join("data"),
        &[
            "--config".as_ref(),
            config.as_os_str(),
            "--policy".as_ref(),
            policy.as_os_str(),
        ],
        OPERATOR,
    );
    (Proc { child, dir: None }, base)
}

/// An agent of [`DRAINED_POOL`] calls a model and a tool through the proxy, three times each,
/// before the load drains the pool: the proxy's and the tokens' series exist from then on.
fn use_the_proxy(base: &str) {
    let op = common::client(base, Some(OPERATOR));
    let token = common::register(&op, "proxy-user", DRAINED_POOL);
    let http = http_agent();
    for _ in 0..3 {
        let chat = json!({"model": "gpt-t", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 10});
        let resp = http
            .post(format!("{base}/v1/chat/completions"))
            .header("authorization", format!("Bearer {token}"))
            .header("content-type", "application/json")
            .send(chat.to_string())
            .unwrap();
        assert_eq!(resp.status(), 200, "chat through the proxy");
        let resp = http
            .get(format!("{base}/proxy/search/find?q=warden"))
            .header("authorization", format!("Bearer {token}"))
            .call()
            .unwrap();
        assert_eq!(resp.status(), 200, "a tool through the proxy");
    }
}

fn http_agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into()
}

/// A real Prometheus scraping the node at `base` every second, evaluating
/// `deploy/prometheus/alerts.yml` every second, its data in `dir`.
struct Prometheus {
    url: String,
    http: ureq::Agent,
    log: PathBuf,
    _proc: Proc,
}

impl Prometheus {
    fn start(dir: &Path, base: &str) -> Prometheus {
        let target = base.trim_start_matches("http://");
        let rules = deploy_dir().join("prometheus/alerts.yml");
        let config = dir.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global: {{scrape_interval: 1s, evaluation_interval: 1s}}\n\
                 rule_files: [{rules:?}]\n\
                 scrape_configs:\n  - job_name: warden\n    static_configs: [{{targets: [\"{target}\"]}}]\n"
            ),
        )
        .unwrap();
        let url = format!("http://127.0.0.1:{}", common::free_port());
        let log = dir.join("prometheus.log");
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("tsdb").display()
            ))
            .arg(format!(
                "--web.listen-address={}",
                url.trim_start_matches("http://")
            ))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("prometheus starts");
        let p = Prometheus {
            url,
            http: http_agent(),
            log,
            _proc: Proc { child, dir: None },
        };
        common::wait_until(DEADLINE, "Prometheus to scrape the node", || {
            p.try_query("up{job=\"warden\"} == 1")
                .is_some_and(|r| !r.is_empty())
        });
        p
    }

    /// Prometheus's log, for failure messages.
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `GET /api/v1/PATH` with `params`: the `data` of a successful answer, else `None`.
    fn api(&self, path: &str, params: &[(&str, &str)]) -> Option<Value> {
        let mut req = self.http.get(format!("{}/api/v1/{path}", self.url));
        for (k, v) in params {
            req = req.query(*k, *v);
        }
        let mut resp = req.call().ok()?;
        let v: Value = serde_json::from_str(&resp.body_mut().read_to_string().ok()?).ok()?;
        (v["status"] == "success").then(|| v["data"].clone())
    }

    fn try_query(&self, expr: &str) -> Option<Vec<Value>> {
        let data = self.api("query", &[("query", expr)])?;
        data["result"].as_array().cloned()
    }

    /// The instant vector `expr` answers now; panics naming `what` when Prometheus refuses it.
    fn query(&self, what: &str, expr: &str) -> Vec<Value> {
        let mut resp = self
            .http
            .get(format!("{}/api/v1/query", self.url))
            .query("query", expr)
            .call()
            .unwrap();
        let text = resp.body_mut().read_to_string().unwrap();
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["status"], "success", "{what}: `{expr}`: {text}");
        match &v["data"]["result"] {
            Value::Array(r) => r.clone(),
            other => vec![other.clone()],
        }
    }

    /// The alerts pending or firing for `pool` now.
    fn alerting(&self, pool: &str) -> Vec<String> {
        let Some(data) = self.api("alerts", &[]) else {
            return Vec::new();
        };
        let alerts = data["alerts"].as_array().cloned().unwrap_or_default();
        alerts
            .iter()
            .filter(|a| a["labels"]["pool"] == pool)
            .filter_map(|a| a["labels"]["alertname"].as_str().map(String::from))
            .collect()
    }
}

/// `expr` with every comparison against a number made `bool` (`x > 0.1` becomes
/// `x > bool 0.1`): it answers 0 or 1 for every series the comparison sees, so it is empty
/// only when the series it reads are.
fn with_bool(expr: &str) -> String {
    let mut out = String::new();
    let mut rest = expr;
    while let Some(i) = rest.find(['=', '!', '>', '<']) {
        let (before, at) = rest.split_at(i);
        out.push_str(before);
        let op_len = if at[1..].starts_with('=') { 2 } else { 1 };
        let (op, after) = at.split_at(op_len);
        out.push_str(op);
        let is_comparison = op != "=" && op != "!";
        if is_comparison && after.trim_start().starts_with(|c: char| c.is_ascii_digit()) {
            out.push_str(" bool");
        }
        rest = after;
    }
    out.push_str(rest);
    out
}

#[test]
fn with_bool_makes_only_number_comparisons_bool() {
    assert_eq!(with_bool("a / b < 0.10"), "a / b < bool 0.10");
    assert_eq!(
        with_bool(r#"sum(rate(h{kind!="external"}[5m])) * 60 > 10"#),
        r#"sum(rate(h{kind!="external"}[5m])) * 60 > bool 10"#
    );
    assert_eq!(
        with_bool(r#"up{job="warden"} == 0 or r == 0"#),
        r#"up{job="warden"} == bool 0 or r == bool 0"#
    );
    assert_eq!(
        with_bool("p(x[30m], 3600) <= 0 and x > 0"),
        "p(x[30m], 3600) <= bool 0 and x > bool 0"
    );
    assert_eq!(with_bool(r#"x{a=~"1.*"} >= y"#), r#"x{a=~"1.*"} >= y"#);
}

/// Every panel query of a dashboard (`$pool` and `$__rate_interval` filled in) as
/// `(what, expr)`, and its `label_values(METRIC, LABEL)` variables as `count by (LABEL) (METRIC)`.
fn dashboard_queries(file: &Path) -> Vec<(String, String)> {
    let d: Value = serde_json::from_str(&std::fs::read_to_string(file).unwrap()).unwrap();
    let name = d["title"].as_str().unwrap().to_string();
    let fill = |e: &str| {
        e.replace("$__rate_interval", RATE_INTERVAL)
            .replace("$pool", DRAINED_POOL)
    };
    let mut out = Vec::new();
    for p in d["panels"].as_array().unwrap() {
        for t in p["targets"].as_array().unwrap() {
            let expr = t["expr"].as_str().unwrap();
            let what = format!("{name} / {} / {}", p["title"], t["refId"]);
            assert!(
                !fill(expr).contains('$'),
                "{what}: unknown variable in {expr}"
            );
            out.push((what, fill(expr)));
        }
    }
    for v in d["templating"]["list"].as_array().unwrap() {
        if v["type"] != "query" {
            continue;
        }
        let q = v["definition"].as_str().unwrap();
        let args = q
            .strip_prefix("label_values(")
            .and_then(|r| r.strip_suffix(')'))
            .unwrap_or_else(|| panic!("{name}: variable {} is not label_values: {q}", v["name"]));
        let (metric, label) = args.split_once(',').unwrap();
        out.push((
            format!("{name} / variable {}", v["name"]),
            format!("count by ({}) ({metric})", label.trim()),
        ));
    }
    out
}

/// The metric names `expr` reads (`warden_*`).
fn metric_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = expr;
    while let Some(i) = rest.find("warden_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        names.push(tail[..end].to_string());
        rest = &tail[end..];
    }
    names
}

/// The sample names the node's `/metrics` has now.
fn exported_names(base: &str) -> BTreeSet<String> {
    let op = common::client(base, Some(OPERATOR));
    let (status, body) = common::call(&op, "GET", "/metrics", Body::None);
    assert_eq!(status, 200);
    body.as_str()
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| l.split(['{', ' ']).next().unwrap().to_string())
        .collect()
}

#[test]
fn every_panel_and_alert_answers_from_a_real_node_and_the_pool_alerts_fire() {
    if !prometheus_installed() {
        return;
    }
    let started = Instant::now();
    let dir = std::env::temp_dir().join(format!("warden-deploy-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let Some(pg) = common::postgres::Postgres::start("deploy") else {
        return; // said why (and failed under WARDEN_REQUIRE_EXTERNAL=1)
    };
    let (mut node, base) = start_node(&dir, &pg.url());
    node.dir = Some(dir.clone());
    use_the_proxy(&base);
    let prom = Prometheus::start(&dir, &base);

    let sim_log = dir.join("sim.log");
    let mut sim = Proc {
        child: Command::new(env!("CARGO_BIN_EXE_warden"))
            .args(["sim", "--target", &base, "--token", OPERATOR])
            .args(["--agents", "200", "--duration", "10s", "--seed", "12"])
            .stdout(std::fs::File::create(&sim_log).unwrap())
            .stderr(Stdio::null())
            .spawn()
            .expect("warden sim starts"),
        dir: None,
    };
    // Each alert counts once seen: the prediction may resolve when the pool reaches 0.
    let mut seen = BTreeSet::new();
    common::wait_until(
        DEADLINE,
        &format!("{NEAR_EXHAUSTION:?} for {DRAINED_POOL}"),
        || {
            seen.extend(prom.alerting(DRAINED_POOL));
            NEAR_EXHAUSTION.iter().all(|a| seen.contains(*a))
        },
    );
    let status = sim.child.wait().unwrap();
    let report = std::fs::read_to_string(&sim_log).unwrap_or_default();
    assert!(status.success(), "warden sim --target: {report}");
    assert!(report.contains("overspend         0"), "{report}");
    // One more scrape after the load, so every counter has a sample after its last change.
    std::thread::sleep(Duration::from_millis(1500));

    let exported = exported_names(&base);
    let mut used = BTreeSet::new();
    for file in ["warden-overview.json", "warden-pool.json"] {
        for (what, expr) in dashboard_queries(&deploy_dir().join("grafana/dashboards").join(file)) {
            let result = prom.query(&what, &expr);
            assert!(!result.is_empty(), "{what}: `{expr}` answered nothing");
            used.extend(metric_names(&expr));
        }
    }
    let groups = prom.api("rules", &[]).expect("the rules API answers");
    let mut alerts = 0;
    for rule in groups["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_array().unwrap())
    {
        let (name, expr) = (
            rule["name"].as_str().unwrap(),
            rule["query"].as_str().unwrap(),
        );
        assert_eq!(rule["health"], "ok", "{name}: {rule}\n{}", prom.log());
        prom.query(name, expr);
        let as_bool = with_bool(expr);
        let result = prom.query(name, &as_bool);
        assert!(!result.is_empty(), "{name}: `{as_bool}` answered nothing");
        used.extend(metric_names(expr));
        alerts += 1;
    }
    assert_eq!(alerts, 13, "every alert of alerts.yml is loaded");
    for name in &used {
        assert!(
            exported.contains(name),
            "{name} is read by a dashboard or rule but the node does not export it: {exported:?}"
        );
    }
    eprintln!(
        "deploy test: {} metric names checked, {:.1} s",
        used.len(),
        started.elapsed().as_secs_f64()
    );
    drop(prom);
    drop(pg);
}
