//! The simulator's own guarantees: runs are deterministic (a digest of every decision), and
//! its invariant machinery catches, shrinks and reports a violation.

use warden_sim::invariants::BROKEN;
use warden_sim::scenario::BUILTINS;
use warden_sim::{run_quiet, shrink, Scenario, SimOptions};

fn opts(name: &str, seed: u64) -> SimOptions {
    SimOptions::new(Scenario::load(name).unwrap(), seed)
}

/// Each built-in scenario with 50 agents (its faults and timeline unchanged), run twice with
/// seed 1 and once with seed 2.
fn deterministic(name: &str) {
    let small = |seed| {
        let mut o = opts(name, seed);
        o.agents = Some(50);
        o
    };
    let (a, _) = run_quiet(&small(1)).unwrap();
    assert!(a.passed(), "{name}: {a}");
    let (b, _) = run_quiet(&small(1)).unwrap();
    assert_eq!(a.digest, b.digest, "{name}: same seed, different runs");
    assert_eq!(a.decisions, b.decisions, "{name}");
    let (c, _) = run_quiet(&small(2)).unwrap();
    assert!(c.passed(), "{name}: {c}");
    assert_ne!(
        a.digest, c.digest,
        "{name}: seeds 1 and 2 gave the same run"
    );
}

#[test]
fn every_builtin_scenario_is_listed_here() {
    let names: Vec<&str> = BUILTINS.iter().map(|(n, _)| *n).collect();
    assert_eq!(
        names,
        [
            "mixed",
            "adversarial",
            "crash-recovery",
            "overspend",
            "approvals"
        ]
    );
}

#[test]
fn mixed_is_deterministic_and_seeds_differ() {
    deterministic("mixed");
}

#[test]
fn adversarial_is_deterministic_and_seeds_differ() {
    deterministic("adversarial");
}

#[test]
fn crash_recovery_is_deterministic_and_seeds_differ() {
    deterministic("crash-recovery");
}

#[test]
fn overspend_is_deterministic_and_seeds_differ() {
    deterministic("overspend");
}

#[test]
fn approvals_is_deterministic_and_seeds_differ() {
    deterministic("approvals");
}

/// Runs `o` (whose broken checker must fail), shrinks it, and checks the shrunk prefix is
/// the shortest that fails: one event less passes.
fn caught_and_shrunk(o: &SimOptions) -> warden_sim::Shrunk {
    let (report, _) = run_quiet(o).unwrap();
    let found = report.violation.clone().expect("the broken checker fails");
    assert_eq!(found.invariant, BROKEN);
    let s = shrink(o, &found);
    assert_eq!(s.violation.invariant, BROKEN);
    assert!(s.events <= found.event && s.events > 0);
    let mut prefix = o.clone();
    prefix.max_events = Some(s.events);
    assert!(run_quiet(&prefix).unwrap().0.violation.is_some());
    prefix.max_events = Some(s.events - 1);
    assert!(run_quiet(&prefix).unwrap().0.violation.is_none());
    s
}

/// The same on a simulated cluster: shrinking a multi-node run keeps the same guarantees
/// (the shortest failing prefix) and its trace shows each node's decisions, messages and
/// faults.
#[test]
fn a_broken_checker_is_caught_shrunk_and_traced_on_a_cluster() {
    let mut o = opts("mixed", 11);
    o.nodes = 3;
    o.agents = Some(30);
    o.duration_ms = Some(20_000);
    o.break_after_allows = Some(25);
    let s = caught_and_shrunk(&o);
    // The trace's last line is the 26th allow, numbered as the shrunk prefix's last event,
    // on a named node; earlier lines carry the sync messages between the nodes.
    let last = s.trace_tail.last().expect("a trace");
    assert!(
        last.starts_with(&format!("#{:<8}", s.events))
            && last.contains("-> allow")
            && (last.contains("@n00 ") || last.contains("@n01 ") || last.contains("@n02 ")),
        "{:?}",
        s.trace_tail
    );
    let mut all = o.clone();
    all.max_events = Some(s.events);
    all.trace = true;
    let (_, trace) = run_quiet(&all).unwrap();
    assert!(
        trace
            .iter()
            .any(|l| l.contains(" -> n0") && (l.ends_with(": hello") || l.ends_with(": delta"))),
        "no sync message in the trace"
    );
    let line = all.command("mixed");
    assert!(
        line.contains("--nodes 3") && line.contains(&format!("--max-events {}", s.events)),
        "{line}"
    );
}

#[test]
fn a_broken_checker_is_caught_shrunk_and_reported() {
    let mut o = opts("mixed", 11);
    o.agents = Some(30);
    o.duration_ms = Some(60_000);
    o.break_after_allows = Some(25);
    let (report, _) = run_quiet(&o).unwrap();
    assert!(report
        .invariants
        .iter()
        .any(|i| i.name == BROKEN && i.result == "fail"));

    let s = caught_and_shrunk(&o);
    // The trace ends at the allow that broke it, and the command names the prefix.
    assert!(
        s.trace_tail.last().is_some_and(|l| l.contains("-> allow")),
        "{:?}",
        s.trace_tail
    );
    let mut cmd = o.clone();
    cmd.max_events = Some(s.events);
    let line = cmd.command("mixed");
    assert!(
        line.contains("--seed 11") && line.contains(&format!("--max-events {}", s.events)),
        "{line}"
    );
}

#[test]
fn a_prefix_run_is_the_start_of_the_full_run() {
    let mut o = opts("adversarial", 5);
    o.agents = Some(40);
    o.duration_ms = Some(60_000);
    o.trace = true;
    let (_, full) = run_quiet(&o).unwrap();
    o.max_events = Some(200);
    let (_, prefix) = run_quiet(&o).unwrap();
    let n = prefix.iter().take_while(|l| !l.contains("drain:")).count();
    assert!(n > 0);
    assert_eq!(prefix[..n], full[..n]);
}

#[test]
fn node_counts_outside_1_to_16_are_refused_and_a_cluster_run_reports_its_invariants() {
    for nodes in [0, 17] {
        let mut o = opts("mixed", 1);
        o.nodes = nodes;
        let err = run_quiet(&o).unwrap_err().to_string();
        assert!(err.contains("1 to 16 nodes"), "{err}");
    }
    let mut o = opts("mixed", 1);
    o.nodes = 2;
    o.agents = Some(40);
    o.duration_ms = Some(20_000);
    let (report, _) = run_quiet(&o).unwrap();
    assert!(report.passed(), "{report}");
    let names: Vec<&str> = report.invariants.iter().map(|i| i.name).collect();
    assert_eq!(
        names,
        [
            "pool_bounds",
            "cluster_no_overspend",
            "cluster_converges",
            "no_allow_after_halt",
            "no_leaked_reservations",
            "fail_closed"
        ]
    );
    assert_eq!(report.nodes, 2);
    // Halts announced by the nodes' buses are counted by kind, and every decision is checked
    // against them.
    assert!(!report.halts.is_empty(), "{:?}", report.halts);
    let checked = report
        .invariants
        .iter()
        .find(|i| i.name == "no_allow_after_halt")
        .unwrap();
    assert!(checked.checks > 0, "{checked:?}");
}

#[test]
fn operators_resume_halted_agents_in_a_cluster_and_no_resumed_agent_breaks_an_invariant() {
    let mut o = opts("mixed", 3);
    o.nodes = 2;
    o.agents = Some(80);
    o.duration_ms = Some(180_000);
    o.trace = true;
    let (report, trace) = run_quiet(&o).unwrap();
    assert!(report.passed(), "{report}");
    assert!(report.activity.resumes > 0, "{report}");
    // Each resume is traced with the agent's node, and the agent acts again afterwards.
    let resumed: Vec<&String> = trace.iter().filter(|l| l.contains(" resumes ")).collect();
    assert_eq!(resumed.len() as u64, report.activity.resumes, "{resumed:?}");
    let (at, line) = trace
        .iter()
        .enumerate()
        .find(|(_, l)| l.contains(" resumes "))
        .unwrap();
    let who = line.rsplit(' ').next().unwrap();
    assert!(who.contains("@n0"), "{line}");
    assert!(
        trace[at + 1..]
            .iter()
            .any(|l| l.contains(&format!("{who} "))),
        "{who} never acted after its resume"
    );
}
