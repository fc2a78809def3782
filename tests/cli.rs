//! The `warden` binary, run as a user would.

use std::process::Command;

fn warden(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_warden"))
        .args(args)
        .output()
        .expect("the warden binary runs")
}

#[test]
fn help_and_version_work() {
    let out = warden(&["--help"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("supervisor for swarms of AI agents"),
        "{text}"
    );
    // It describes what the binary does, not what may come later.
    assert!(!text.contains("arrive with"), "{text}");
    for command in ["node", "agents", "approvals", "policy", "audit"] {
        assert!(
            text.contains(command),
            "{command} missing from --help: {text}"
        );
    }
    let out = warden(&["--version"]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("warden "));
}

#[test]
fn an_unknown_argument_fails_with_a_clear_message() {
    let out = warden(&["frobnicate"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("frobnicate"), "{err}");
}

#[test]
fn policy_check_passes_every_example_policy() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/policies");
    let mut checked = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("yaml") {
            continue;
        }
        let out = warden(&["policy", "check", path.to_str().unwrap()]);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{}: {text}", path.display());
        assert!(text.contains(": ok, "), "{text}");
        assert!(text.contains("(0 warnings)"), "{text}");
        checked += 1;
    }
    assert!(
        checked >= 4,
        "coding, research, payments and design examples"
    );
}

#[test]
fn policy_check_reports_errors_with_file_line_column_and_exits_1() {
    let dir = std::env::temp_dir().join(format!("warden-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("bad.yaml");
    std::fs::write(
        &file,
        "version: 1\ntools:\n  shell: {action: execute}\nrules:\n  - {id: a, match: {tool: shel}, decision: deny}\n  - {id: b, match: {tool: shell, args: {cmd: {regex: '('}}}, decision: deny}\n",
    )
    .unwrap();
    let out = warden(&["policy", "check", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    let f = file.display();
    assert!(
        text.contains(&format!(
            "{f}:5:27: error: rule `a` names unknown tool `shel`\n  hint: did you mean `shell`?"
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!("{f}:6:54: error: bad regex")),
        "{text}"
    );
    assert!(text.contains("2 errors, 0 warnings"), "{text}");
    let json = warden(&["policy", "check", "--json", file.to_str().unwrap()]);
    let first: serde_json::Value = serde_json::from_str(
        String::from_utf8_lossy(&json.stdout)
            .lines()
            .next()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(first["line"], 5);
    assert_eq!(first["severity"], "error");
    let missing = warden(&["policy", "check", "/nonexistent/p.yaml"]);
    assert_eq!(missing.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("cannot read /nonexistent/p.yaml"));
}

#[test]
fn policy_check_refuses_a_team_typo_and_remaining_below_without_a_budget() {
    let dir = std::env::temp_dir().join(format!("warden-cli-refs-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("refs.yaml");
    std::fs::write(
        &file,
        "version: 1\ndefaults:\n  budgets: {tokens: 1000}\npools:\n  - {path: swarm}\n  - {path: swarm/research}\ntools:\n  shell: {action: execute}\nrules:\n  - {id: a, match: {tool: shell, team: swarm/reserch}, decision: halt, kind: safety}\n  - {id: b, match: {tool: shell, remaining_below: {cost_usd: 0.1}}, decision: deny}\n",
    )
    .unwrap();
    let out = warden(&["policy", "check", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    let f = file.display();
    assert!(
        text.contains(&format!(
            "{f}:10:40: error: rule `a`: team `swarm/reserch` names no pool, so the rule would never match\n  hint: did you mean `swarm/research`?"
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "{f}:11:52: error: remaining_below.cost_usd: agents have no cost_usd budget"
        )),
        "{text}"
    );
    assert!(text.contains("2 errors, 0 warnings"), "{text}");
}

#[test]
fn policy_eval_prints_the_decision_and_every_matched_rule() {
    let file = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/policies/payments-agent.yaml"
    );
    let step = r#"{"tool": "payments.transfer", "action": "spend", "args": {"amount": 20000, "recipient": {"country": "FR"}}}"#;
    let out = warden(&[
        "policy",
        "eval",
        file,
        "--step",
        step,
        "--state",
        r#"{"now": "2026-11-24T10:00:00Z"}"#,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["decision"], "deny");
    assert_eq!(v["rule"], "huge-transfer");
    let ids: Vec<&str> = v["matched"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec!["big-transfer", "huge-transfer"]);
    assert_eq!(v["risk_micro"], 5_000_000);
    // On a Saturday night the same small transfer needs approval twice over.
    let small = r#"{"tool": "payments.transfer", "action": "spend", "args": {"amount": 10, "recipient": {"country": "FR"}}}"#;
    let out = warden(&[
        "policy",
        "eval",
        file,
        "--step",
        small,
        "--state",
        r#"{"now": "2026-11-28T23:00:00Z"}"#,
    ]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["decision"], "require_approval");
    assert_eq!(v["matched"].as_array().unwrap().len(), 2);
    // Bad step JSON: exit 2 with the reason.
    let bad = warden(&["policy", "eval", file, "--step", r#"{"tool": "x"}"#]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("missing field `action`"));
}

#[test]
fn audit_verify_passes_an_intact_journal_and_names_the_first_bad_entry() {
    use warden::supervisor::journal::{EntryKind, Journal, JournalConfig};
    let dir = std::env::temp_dir().join(format!("warden-cli-audit-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let (j, _) = Journal::open(JournalConfig::new(&dir), |_| {}).unwrap();
        for i in 0..100u64 {
            j.append(
                EntryKind::Decision,
                i,
                format!("{{\"n\":{:03}}}", i).into_bytes(),
            )
            .await
            .unwrap();
        }
    });
    let ok = warden(&["audit", "verify", dir.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&ok.stdout);
    assert!(ok.status.success(), "{text}");
    assert!(text.contains("ok, 100 entries in 1 segments"), "{text}");

    // Flip one byte inside entry 42's payload.
    let seg = dir.join("journal").join(format!("{:020}.seg", 1));
    let mut bytes = std::fs::read(&seg).unwrap();
    let header = 52;
    let frame = 8 + 49 + b"{\"n\":000}".len();
    bytes[header + 41 * frame + 8 + 49 + 6] ^= 0x20;
    std::fs::write(&seg, &bytes).unwrap();
    let bad = warden(&["audit", "verify", dir.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&bad.stdout);
    assert_eq!(bad.status.code(), Some(1), "{text}");
    assert!(text.contains("journal corrupt at entry 42"), "{text}");

    let none = warden(&["audit", "verify", "/nonexistent"]);
    assert_eq!(none.status.code(), Some(2));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn policy_eval_shows_the_reservation_raised_to_the_tools_min_cost() {
    let dir = std::env::temp_dir().join(format!("warden-cli-min-cost-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("policy.yaml");
    std::fs::write(
        &file,
        "version: 1
defaults:
  min_cost: {network: {tokens: 100}}
tools:
  llm.chat: {action: network, min_cost: {cost_usd: 0.001}}
",
    )
    .unwrap();
    let out = warden(&[
        "policy",
        "eval",
        file.to_str().unwrap(),
        "--step",
        r#"{"tool": "llm.chat", "action": "network", "cost": {"tokens": 40}}"#,
    ]);
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["decision"], "allow", "{v}");
    assert_eq!(
        v["reserve"],
        serde_json::json!({"steps": 1, "tokens": 100, "cost_micro_usd": 1000}),
        "{v}"
    );
}
