//! `warden demo` end to end, as a user runs it on a non-terminal: the real binary starts a
//! node, drives simulated agents through its HTTP API, prints a line per second, stops after
//! `--duration` with a summary, and leaves a journal that `warden audit verify` accepts.

use std::process::Command;

mod common;

const BIN: &str = env!("CARGO_BIN_EXE_warden");

/// The number after `key` in `text` (`"errors 0"` -> 0).
fn number_after(text: &str, key: &str) -> Option<u64> {
    let at = text.find(key)? + key.len();
    text[at..]
        .trim_start()
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

#[test]
fn the_demo_drives_a_real_node_and_leaves_a_journal_that_verifies() {
    let data = std::env::temp_dir().join(format!("warden-demo-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&data);
    let out = Command::new(BIN)
        .args([
            "demo",
            "--agents",
            "120",
            "--duration",
            "5s",
            "--seed",
            "11",
            "--speed",
            "4",
        ])
        .arg("--data")
        .arg(&data)
        .output()
        .expect("run warden demo");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "demo failed:\n{stdout}\n{stderr}");
    // A line per second while it runs, with the node's address and the web page's token.
    assert!(
        stdout.contains("warden demo: node http://127.0.0.1:"),
        "{stdout}"
    );
    assert!(stdout.contains("/#token="), "{stdout}");
    let ticks = stdout.lines().filter(|l| l.starts_with("t=")).count();
    assert!(ticks >= 3, "expected a line per second:\n{stdout}");
    // The summary: decisions made through the API, no failed request, nothing overspent.
    let summary = stdout.split("warden demo: ").last().expect("a summary");
    let decisions = number_after(summary, "").unwrap_or(0);
    assert!(decisions > 50, "too few decisions:\n{stdout}");
    assert_eq!(
        number_after(&stdout, "outcomes").map(|n| n > 0),
        Some(true),
        "{stdout}"
    );
    assert_eq!(number_after(summary, "errors"), Some(0), "{stdout}");
    assert_eq!(number_after(summary, "overspend:"), Some(0), "{stdout}");
    assert!(stdout.contains("warden audit report"), "{stdout}");
    // The journal it points at verifies.
    let verify = Command::new(BIN)
        .args(["audit", "verify"])
        .arg(&data)
        .output()
        .expect("run warden audit verify");
    assert!(
        verify.status.success(),
        "audit verify failed: {}{}",
        String::from_utf8_lossy(&verify.stdout),
        String::from_utf8_lossy(&verify.stderr)
    );
    let _ = std::fs::remove_dir_all(&data);
}

#[test]
fn the_demo_refuses_bad_flags_with_a_clear_message() {
    for (flag, value, says) in [
        ("--agents", "0", "--agents must be"),
        ("--speed", "0", "--speed must be"),
        ("--duration", "soon", "not a duration"),
    ] {
        let out = Command::new(BIN)
            .args(["demo", flag, value])
            .output()
            .expect("run warden demo");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{flag} {value}: {stderr}");
        assert!(stderr.contains(says), "{flag} {value}: {stderr}");
    }
}

#[test]
fn sim_target_drives_a_real_node_and_reports_rates_and_latency() {
    let dir = std::env::temp_dir().join(format!("warden-sim-target-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let policy = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("sim/scenarios/policy.yaml");
    let operator = "sim-target-operator-token-0123";
    let (mut node, base) =
        common::start_node(&dir, &["--policy".as_ref(), policy.as_os_str()], operator);
    let run = |token: &str| {
        Command::new(BIN)
            .args([
                "sim",
                "--target",
                &base,
                "--agents",
                "60",
                "--duration",
                "2s",
                "--seed",
                "4",
                "--json",
            ])
            .env("WARDEN_OPERATOR_TOKEN", token)
            .output()
            .expect("run warden sim --target")
    };
    let out = run(operator);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_str(&stdout).expect("JSON report");
    let decided: u64 = ["allow", "deny", "require_approval", "halt"]
        .iter()
        .map(|k| report[k].as_u64().unwrap())
        .sum();
    assert!(decided > 20, "{report}");
    assert_eq!(report["errors"], 0, "{report}");
    assert_eq!(report["overspend"], 0, "{report}");
    assert!(
        report["latency"]["p50_us"].as_u64().unwrap() > 0,
        "{report}"
    );
    assert!(report["latency"]["p99_us"].as_u64() >= report["latency"]["p50_us"].as_u64());
    // The node saw those agents.
    let agents = Command::new(BIN)
        .args(["agents", "--node", &base, "list"])
        .env("WARDEN_OPERATOR_TOKEN", operator)
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&agents.stdout).contains("sim4-"));
    // A wrong token: a clear error, exit 2.
    let out = run("not-the-operator-token-0123");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("401"), "{stderr}");

    // A second run against the same node: pools the first run's swarm got halted (a
    // breaker) are reopened first, as docs/sim.md says.
    let op = common::client(&base, Some(operator));
    let (_, pools) = common::call(&op, "GET", "/v1/pools", common::Body::None);
    for p in pools["pools"].as_array().unwrap() {
        if p["halted"] == true {
            let path = format!("/v1/pools/{}", p["path"].as_str().unwrap());
            let body = common::Body::Json(serde_json::json!({"halted": false}));
            assert_eq!(common::call(&op, "POST", &path, body).0, 200);
        }
    }
    // The node dies during the run: the agents back off instead of hammering it, the report
    // is printed all the same (overspend unknown), and the exit code says it went wrong.
    let child = Command::new(BIN)
        .args([
            "sim",
            "--target",
            &base,
            "--agents",
            "60",
            "--duration",
            "4s",
            "--seed",
            "5",
            "--json",
        ])
        .env("WARDEN_OPERATOR_TOKEN", operator)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let _ = node.kill();
    let _ = node.wait();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    let report: serde_json::Value = serde_json::from_str(&stdout).expect("JSON report");
    let errors = report["errors"].as_u64().unwrap();
    // About 2.5 s without a node: 60 agents at most one request per 200 ms each.
    assert!(errors > 0 && errors < 2_000, "{errors} errors: {report}");
    assert!(report["overspend"].is_null(), "{report}");
    assert!(stderr.contains("overspend unknown"), "{stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn sim_serves_prometheus_metrics_while_it_runs() {
    use std::io::{BufRead, BufReader};
    let mut child = Command::new(BIN)
        .args([
            "sim",
            "--seed",
            "3",
            "--agents",
            "300",
            "--duration",
            "24h",
            "--metrics",
            "127.0.0.1:0",
            "--no-shrink",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run warden sim");
    let stderr = child.stderr.take().unwrap();
    let mut lines = BufReader::new(stderr).lines();
    let url = lines
        .by_ref()
        .map_while(Result::ok)
        .find_map(|l| l.split("metrics at ").nth(1).map(str::to_string))
        .expect("the metrics address is printed");
    // Decisions are counted as the simulation goes: wait (bounded) for some.
    let mut body = String::new();
    for _ in 0..100 {
        body = ureq::get(&url)
            .call()
            .unwrap()
            .into_body()
            .read_to_string()
            .unwrap();
        if body.contains("warden_decisions_total") {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(body.contains("warden_decisions_total"), "{body}");
    assert!(body.contains("warden_halts_total"), "{body}");
}

/// Runs `warden ARGS` on a non-terminal; fails the test if it has not exited within `bound`
/// (it is killed then).
fn run_bounded(args: &[&std::ffi::OsStr], bound: std::time::Duration) -> std::process::Output {
    let mut child = Command::new(BIN)
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run warden");
    let started = std::time::Instant::now();
    while child.try_wait().expect("wait for warden").is_none() {
        if started.elapsed() > bound {
            let _ = child.kill();
            let out = child.wait_with_output().expect("collect warden's output");
            panic!(
                "warden {args:?} still ran after {bound:?}:\n{}\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    child.wait_with_output().expect("collect warden's output")
}

/// A load that cannot run (bad `--threads`, agents the node refuses) ends the demo with a
/// clear error, exit 2, instead of a view that waits forever for a run that never comes.
#[test]
fn the_demo_ends_when_its_load_cannot_run() {
    let data = std::env::temp_dir().join(format!("warden-demo-threads-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&data);
    for threads in ["0", "100000"] {
        let out = run_bounded(
            &[
                "demo".as_ref(),
                "--agents".as_ref(),
                "5".as_ref(),
                "--duration".as_ref(),
                "2s".as_ref(),
                "--threads".as_ref(),
                threads.as_ref(),
                "--data".as_ref(),
                data.as_os_str(),
            ],
            std::time::Duration::from_secs(60),
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "--threads {threads}: {stderr}");
        assert!(
            stderr.contains("threads must be 1 to"),
            "--threads {threads}: {stderr}"
        );
        let _ = std::fs::remove_dir_all(&data);
    }
}

/// `--data` naming an existing file or a directory that already holds something (another
/// node's data, an earlier demo's) is refused before anything in it changes: the demo's
/// node would journal its policy and its agents into someone else's journal.
#[test]
fn the_demo_refuses_a_data_directory_in_use() {
    let base = std::env::temp_dir().join(format!("warden-demo-data-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&base);
    std::fs::create_dir_all(base.join("node/journal")).unwrap();
    let token = base.join("node/operator.token");
    std::fs::write(&token, "a-node-s-token-0123456789").unwrap();
    let mut perms = std::fs::metadata(&token).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o600);
    std::fs::set_permissions(&token, perms).unwrap();
    std::fs::write(base.join("file"), "not a directory").unwrap();
    for data in [base.join("node"), base.join("file")] {
        let out = run_bounded(
            &[
                "demo".as_ref(),
                "--duration".as_ref(),
                "2s".as_ref(),
                "--data".as_ref(),
                data.as_os_str(),
            ],
            std::time::Duration::from_secs(60),
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{}: {stderr}", data.display());
        assert!(stderr.contains("--data"), "{}: {stderr}", data.display());
    }
    assert!(
        !base.join("node/demo-policy.yaml").exists(),
        "the demo wrote into a node's directory"
    );
    let _ = std::fs::remove_dir_all(&base);
}

/// `sim --target` with more agents than a run can hold is refused with a clear message,
/// exit 2, before anything is allocated for them (it aborted on a failed allocation).
#[test]
fn sim_target_refuses_an_agent_count_it_cannot_hold() {
    let out = run_bounded(
        &[
            "sim".as_ref(),
            "--target".as_ref(),
            "http://127.0.0.1:1".as_ref(),
            "--token".as_ref(),
            "sim-target-operator-token-0123".as_ref(),
            "--agents".as_ref(),
            "1000000000000".as_ref(),
            "--duration".as_ref(),
            "1s".as_ref(),
        ],
        std::time::Duration::from_secs(60),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("agents must be"), "{stderr}");
}

#[test]
fn sim_refuses_an_agent_count_outside_its_bounds_before_running() {
    for n in ["0", "1000001", "1000000000000"] {
        let out = Command::new(BIN)
            .args(["sim", "--agents", n, "--duration", "1s", "--seed", "1"])
            .output()
            .expect("run warden sim");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "--agents {n}: {stderr}");
        assert!(
            stderr.contains("--agents must be 1 to 1000000"),
            "--agents {n}: {stderr}"
        );
    }
}
