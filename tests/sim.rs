//! `warden sim` run as a user (and CI) runs it: every built-in scenario on a few seeds, the
//! JSON report's contract, and clear failures on bad input.

use std::process::Command;

fn warden(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_warden"))
        .args(args)
        .output()
        .expect("the warden binary runs")
}

/// Runs built-in `scenario` with 60 agents (its faults and timeline unchanged) on three
/// seeds and checks the JSON report. One test per scenario, so they run in parallel; all
/// together take about 30 s in a debug build on 2 cores (docs/sim.md).
fn holds_on_a_few_seeds(scenario: &str) {
    for seed in ["3", "17", "2024"] {
        let out = warden(&[
            "sim",
            "--scenario",
            scenario,
            "--seed",
            seed,
            "--agents",
            "60",
            "--json",
        ]);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{scenario} seed {seed}: {text}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["seed"], seed.parse::<u64>().unwrap());
        assert_eq!(v["nodes"], 1);
        assert!(v["agents"].as_u64().unwrap() > 0);
        assert_eq!(v["overspend"], 0, "{scenario}");
        assert!(v["decisions"]["allow"].as_u64().unwrap() > 0, "{scenario}");
        assert!(v["halts"].is_object() && v["pools"].as_array().is_some_and(|p| !p.is_empty()));
        assert!(v["pools"][0]["limit"].is_object() && v["pools"][0]["spent"].is_object());
        let invariants = v["invariants"].as_array().unwrap();
        assert_eq!(invariants.len(), 6, "{scenario}");
        for i in invariants {
            assert_ne!(i["result"], "fail", "{scenario} seed {seed}: {i}");
        }
    }
}

#[test]
fn mixed_holds_on_a_few_seeds() {
    holds_on_a_few_seeds("mixed");
}

#[test]
fn adversarial_holds_on_a_few_seeds() {
    holds_on_a_few_seeds("adversarial");
}

#[test]
fn crash_recovery_holds_on_a_few_seeds() {
    holds_on_a_few_seeds("crash-recovery");
}

#[test]
fn overspend_holds_on_a_few_seeds() {
    holds_on_a_few_seeds("overspend");
}

#[test]
fn approvals_holds_on_a_few_seeds() {
    holds_on_a_few_seeds("approvals");
}

#[test]
fn the_table_names_the_seed_and_every_invariant() {
    let out = warden(&[
        "sim",
        "--scenario",
        "overspend",
        "--seed",
        "9",
        "--agents",
        "40",
        "--duration",
        "1m",
    ]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for part in [
        "seed 9",
        "overspend",
        "pool_bounds",
        "no_allow_after_halt",
        "replay_reproduces_decisions",
        "journaled_before_answered",
        "no_leaked_reservations",
        "agent-steps/s",
    ] {
        assert!(text.contains(part), "{part} missing: {text}");
    }
}

#[test]
fn without_a_seed_one_is_chosen_and_printed() {
    let out = warden(&["sim", "--agents", "10", "--duration", "20s"]);
    assert!(out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("seed ") && err.contains("--seed "), "{err}");
}

#[test]
fn a_swarm_larger_than_the_memory_available_is_refused_up_front() {
    // 1 GB available: 100,000 agents (about 3.3 GB) do not fit, 10,000 do.
    let run = |agents: &str| {
        Command::new(env!("CARGO_BIN_EXE_warden"))
            .args(["sim", "--agents", agents, "--duration", "1s", "--seed", "1"])
            .env("WARDEN_SIM_MEMORY", "1000000000")
            .output()
            .unwrap()
    };
    let out = run("100000");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("100000 agents need about 3.4 GB") && err.contains("--agents 27606 or fewer"),
        "{err}"
    );
    assert!(out.stdout.is_empty());
    assert!(run("10000").status.success());
    // A figure that is not a number of bytes is refused, not ignored.
    let out = Command::new(env!("CARGO_BIN_EXE_warden"))
        .args(["sim", "--agents", "10", "--duration", "1s"])
        .env("WARDEN_SIM_MEMORY", "8GB")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("WARDEN_SIM_MEMORY"));
}

#[test]
fn bad_input_fails_clearly() {
    for nodes in ["0", "17"] {
        let out = warden(&["sim", "--nodes", nodes]);
        assert_eq!(out.status.code(), Some(2));
        assert!(String::from_utf8_lossy(&out.stderr).contains("1 to 16 nodes"));
    }

    let out = warden(&["sim", "--scenario", "mixd"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("mixed"),
        "did you mean"
    );

    let dir = std::env::temp_dir().join(format!("warden-sim-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("bad.yaml");
    std::fs::write(
        &file,
        "behaviours: {steady: 1}\nfaults:\n  - {kind: crash, at: soon}\n",
    )
    .unwrap();
    let out = warden(&["sim", "--scenario", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("3:23"), "{err}");

    let out = warden(&["sim", "--duration", "forever"]);
    assert_eq!(out.status.code(), Some(2));

    // A fault naming a pool the policy lacks would halt nothing: refused before the run.
    std::fs::write(
        &file,
        "behaviours: {steady: 1}\nfaults:\n  - {kind: halt_pool, at: 10s, pool: swarm/nope}\n",
    )
    .unwrap();
    let out = warden(&["sim", "--scenario", file.to_str().unwrap(), "--seed", "1"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no pool `swarm/nope`") && err.contains("swarm/ops"),
        "{err}"
    );

    // Backward clock jumps allowed one by one may add up past what the drain outlasts.
    std::fs::write(
        &file,
        "behaviours: {steady: 1}\nfaults:\n  - {kind: clock_jump, every: 1s, by: -1m}\n",
    )
    .unwrap();
    let out = warden(&[
        "sim",
        "--scenario",
        file.to_str().unwrap(),
        "--seed",
        "1",
        "--duration",
        "30s",
    ]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("clock jumps back by 1800 s in all"), "{err}");
    let _ = std::fs::remove_dir_all(dir);
}

/// `--nodes 3`: three swarms share the policy's limited pools through their replicas over a
/// lossy, partitioning network with clock skew and replica crashes; nothing is overspent
/// cluster-wide, every replica agrees after the heal, and the same seed gives the same run.
#[test]
fn a_cluster_of_more_than_ten_nodes_converges() {
    // Members are numbered in their names' order: `n10` must not sort before `n2`.
    let out = warden(&[
        "sim",
        "--nodes",
        "12",
        "--agents",
        "50",
        "--duration",
        "20s",
        "--seed",
        "1",
        "--json",
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        (v["nodes"].as_u64(), v["overspend"].as_u64()),
        (Some(12), Some(0))
    );
    for i in v["invariants"].as_array().unwrap() {
        assert_eq!(i["result"], "pass", "{i}");
    }
}

#[test]
fn a_three_node_cluster_never_overspends_and_converges() {
    for scenario in ["mixed", "overspend"] {
        let args = [
            "sim",
            "--nodes",
            "3",
            "--scenario",
            scenario,
            "--agents",
            "120",
            "--duration",
            "40s",
            "--seed",
            "11",
            "--json",
        ];
        let out = warden(&args);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["nodes"], 3);
        assert_eq!(v["overspend"], 0);
        let results: Vec<(String, String)> = v["invariants"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| {
                (
                    i["name"].as_str().unwrap().to_owned(),
                    i["result"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        for name in [
            "pool_bounds",
            "cluster_no_overspend",
            "cluster_converges",
            "no_allow_after_halt",
            "no_leaked_reservations",
            "fail_closed",
        ] {
            assert!(
                results.contains(&(name.into(), "pass".into())),
                "{name}: {results:?}"
            );
        }
        let checks = |name: &str| {
            v["invariants"]
                .as_array()
                .unwrap()
                .iter()
                .find(|i| i["name"] == name)
                .and_then(|i| i["checks"].as_u64())
                .unwrap()
        };
        if scenario == "mixed" {
            assert!(
                checks("fail_closed") > 0,
                "the adversaries' steps are judged"
            );
            assert!(
                v["operators"].as_u64().unwrap() > 0,
                "approvers are operators"
            );
            assert!(
                v["activity"]["approvals_answered"].as_u64().unwrap() > 0,
                "{}",
                v["activity"]
            );
        }
        // The drain reported every outcome and answered or timed out every approval: nothing
        // is held.
        for pool in v["pools"].as_array().unwrap() {
            for (dim, held) in pool["reserved"].as_object().unwrap() {
                assert_eq!(held, 0, "{} {dim}", pool["path"]);
            }
        }
        assert!(
            v["faults"]["partition"].as_u64().unwrap() > 0,
            "{}",
            v["faults"]
        );
        assert!(v["decisions"]["allow"].as_u64().unwrap() > 100);
        let again: serde_json::Value = serde_json::from_slice(&warden(&args).stdout).unwrap();
        assert_eq!(v["digest"], again["digest"], "deterministic");
    }
}
