//! `warden sim`: the deterministic swarm simulator ([`warden::sim`]) on the command line:
//! a progress bar on a terminal, the final table (or `--json`), and on a violation the seed,
//! the scenario, a shrunk trace and the command that reproduces it (exit 1).

use std::hash::{BuildHasher, Hasher};
use std::io::IsTerminal;
use std::process::ExitCode;

use anyhow::{anyhow, bail};
use warden::sim::{self, Scenario, SimOptions};

/// `warden sim` flags.
#[derive(clap::Args, Debug)]
#[command(after_help = "Examples:
  warden sim                                   the built-in mixed swarm, a random seed (printed)
  warden sim --seed 42                         the same run, bit for bit, every time
  warden sim --scenario crash-recovery --seed 7 --agents 500 --duration 30m
  warden sim --scenario my-scenario.yaml --json
  warden sim --duration 24h --agents 1000      a soak (see docs/sim.md)
  warden sim --target http://127.0.0.1:7700 --token T --agents 1000 --duration 30s
                                               a load generator against a real node

Built-in scenarios: mixed (default), adversarial, crash-recovery, overspend, approvals.
Exit codes: 0 every invariant held, 1 a violation (the seed, a shrunk trace and the command
that reproduces it are printed), 2 bad input.")]
pub struct SimArgs {
    /// Agents (operators included), instead of the scenario's count.
    #[arg(long, value_name = "N")]
    agents: Option<usize>,
    /// Nodes (1 to 16). Above 1, each node runs its share of the agents and the pools with
    /// limits are shared by the cluster (escrow rights over a lossy, partitioning network
    /// with clock skew and replica crashes); the cluster-wide bound and convergence are checked.
    #[arg(long, value_name = "K", default_value_t = 1)]
    nodes: usize,
    /// A built-in scenario's name, or a scenario YAML file.
    #[arg(long, value_name = "NAME|FILE", default_value = "mixed")]
    scenario: String,
    /// The seed (default: a random one, printed).
    #[arg(long, value_name = "S")]
    seed: Option<u64>,
    /// Simulated time, instead of the scenario's: 30s, 10m, 1h, 24h.
    #[arg(long, value_name = "D", value_parser = parse_duration)]
    duration: Option<u64>,
    /// Print the report as JSON (seed, agents, nodes, decisions, halts, pools, overspend,
    /// invariants, ...).
    #[arg(long)]
    json: bool,
    /// Stop taking new events after this many (then drain as at the end): replays the
    /// shrunk prefix of a failing run.
    #[arg(long, value_name = "K")]
    max_events: Option<u64>,
    /// On a violation, report it without shrinking the run first (long soaks).
    #[arg(long)]
    no_shrink: bool,
    /// Drive a real node at this URL over HTTP instead (a load generator: the scenario's
    /// behaviours, closed loop; `--duration` is then wall time, default 10s, and `--agents`
    /// defaults to 1000). Reports decisions per second and latency percentiles.
    #[arg(long, value_name = "URL")]
    target: Option<String>,
    /// The target node's operator token (registers the agents, answers approvals).
    #[arg(
        long,
        value_name = "T",
        env = "WARDEN_OPERATOR_TOKEN",
        hide_env_values = true
    )]
    token: Option<String>,
    /// Serve Prometheus metrics at http://ADDR/metrics while the simulation runs (the
    /// node's metric names: decisions, halts, journal), so Grafana can watch the swarm.
    #[arg(long, value_name = "ADDR")]
    metrics: Option<std::net::SocketAddr>,
    /// With --target: threads sending requests.
    #[arg(long, value_name = "N", default_value_t = 8)]
    threads: usize,
}

pub(crate) fn parse_duration(text: &str) -> Result<u64, String> {
    warden::actors::yaml::parse_duration_ms(text)
        .filter(|ms| *ms > 0)
        .ok_or_else(|| format!("`{text}` is not a duration such as 30s, 10m, 1h or 24h"))
}

pub(crate) fn random_seed() -> u64 {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.finish() % 1_000_000_000
}

/// Runs `warden sim`.
pub fn run(args: SimArgs) -> anyhow::Result<ExitCode> {
    let max = warden::sim::loadgen::AGENTS_MAX;
    if let Some(n) = args.agents.filter(|n| !(1..=max).contains(n)) {
        bail!("--agents must be 1 to {max}, not {n}");
    }
    if args.nodes == 0 || args.nodes > sim::NODES_MAX {
        bail!("{}", sim::SimError::NodesUnsupported(args.nodes));
    }
    let scenario = Scenario::load(&args.scenario).map_err(|e| anyhow!("{e}"))?;
    let seed = args.seed.unwrap_or_else(|| {
        let s = random_seed();
        eprintln!("warden sim: seed {s} (random; --seed {s} repeats this run)");
        s
    });
    if let Some(url) = args.target {
        let token = args.token.ok_or_else(|| {
            anyhow!("--target needs the node's operator token: --token T or WARDEN_OPERATOR_TOKEN")
        })?;
        if args.nodes != 1 {
            bail!("--target drives one node; --nodes does not apply");
        }
        return super::sim_target::run(super::sim_target::Target {
            url,
            token,
            scenario,
            agents: args.agents.unwrap_or(1000),
            seed,
            duration: std::time::Duration::from_millis(args.duration.unwrap_or(10_000)),
            threads: args.threads,
            json: args.json,
        });
    }
    // Kept until the run ends: dropping it stops the listener.
    let metrics_server = match args.metrics {
        Some(addr) => {
            let render = super::node::install_recorder()
                .ok_or_else(|| anyhow!("a metrics recorder is already installed"))?;
            let server = warden::adapters::http::metrics_only::serve_metrics(addr, render)
                .map_err(|e| anyhow!("--metrics {addr}: {e}"))?;
            eprintln!("warden sim: metrics at http://{}/metrics", server.addr);
            Some(server)
        }
        None => None,
    };
    check_memory(args.agents.unwrap_or(scenario.agents))?;
    let mut opts = SimOptions::new(scenario, seed);
    opts.agents = args.agents;
    opts.duration_ms = args.duration;
    opts.nodes = args.nodes;
    opts.max_events = args.max_events;
    opts.refresh_gauges = metrics_server.is_some();
    let report = run_with_progress(&opts)?;
    let Some(found) = report.violation.clone() else {
        print_report(&report, None, args.json, &opts, &args.scenario);
        return Ok(ExitCode::SUCCESS);
    };
    let shrunk = match args.no_shrink {
        true => sim::Shrunk {
            events: found.event,
            violation: found.clone(),
            trace_tail: Vec::new(),
            trace_len: 0,
            runs: 0,
        },
        false => {
            eprintln!(
                "warden sim: invariant {} violated; shrinking the run...",
                found.invariant
            );
            sim::shrink(&opts, &found)
        }
    };
    print_report(&report, Some(&shrunk), args.json, &opts, &args.scenario);
    Ok(ExitCode::from(1))
}

/// Memory a simulated agent takes, bytes (measured: 100,000 agents of the built-in swarm peak
/// at 3.3 GB, 20,000 at 0.69 GB; docs/sim.md).
const BYTES_PER_AGENT: u64 = 33 * 1024;
/// Memory a run takes besides its agents, bytes.
const BYTES_BASE: u64 = 64 << 20;

/// Refuses a run whose agents would not fit in the memory available (`MemAvailable`, or
/// `WARDEN_SIM_MEMORY` bytes when set), rather than letting it swap or be killed after
/// minutes with nothing printed. Without either figure (not Linux), nothing is checked.
fn check_memory(agents: usize) -> anyhow::Result<()> {
    let set = std::env::var("WARDEN_SIM_MEMORY").ok();
    let given = match set.as_deref().map(str::trim) {
        Some(v) => Some(v.parse::<u64>().map_err(|_| {
            anyhow!("WARDEN_SIM_MEMORY={v:?} is not a number of bytes (e.g. 8000000000)")
        })?),
        None => None,
    };
    let available = given.or_else(mem_available);
    let Some(available) = available else {
        return Ok(());
    };
    let needed = (agents as u64)
        .saturating_mul(BYTES_PER_AGENT)
        .saturating_add(BYTES_BASE);
    if needed > available {
        let fits = available.saturating_sub(BYTES_BASE) / BYTES_PER_AGENT;
        bail!(
            "{agents} agents need about {:.1} GB of memory (about {} KB each) and {:.1} GB is available; use --agents {fits} or fewer",
            needed as f64 / 1e9,
            BYTES_PER_AGENT / 1024,
            available as f64 / 1e9
        );
    }
    Ok(())
}

/// `MemAvailable` of `/proc/meminfo`, bytes.
fn mem_available() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

fn run_with_progress(opts: &SimOptions) -> anyhow::Result<sim::Report> {
    let bar = match std::io::stdout().is_terminal() {
        true => indicatif::ProgressBar::new(1_000),
        false => indicatif::ProgressBar::hidden(),
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {percent:>3}% simulated {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let report = sim::run(opts, &mut |p| {
        bar.set_position(p.simulated_ms.saturating_mul(1_000) / p.duration_ms.max(1));
        bar.set_message(format!(
            "{} s, {} agent-steps",
            p.simulated_ms / 1000,
            p.agent_steps
        ));
    });
    bar.finish_and_clear();
    Ok(report?)
}

fn print_report(
    report: &sim::Report,
    shrunk: Option<&sim::Shrunk>,
    json: bool,
    opts: &SimOptions,
    scenario_arg: &str,
) {
    let command = shrunk.map(|s| {
        let mut o = opts.clone();
        o.max_events = Some(s.events);
        o.command(scenario_arg)
    });
    if json {
        let mut v = serde_json::to_value(report).unwrap_or_default();
        if let Some(s) = shrunk {
            v["shrunk"] = serde_json::json!({
                "events": s.events,
                "invariant": s.violation.invariant,
                "detail": s.violation.detail,
                "trace_tail": s.trace_tail,
                "command": command,
            });
        }
        println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
        return;
    }
    println!("{report}");
    let Some(s) = shrunk else { return };
    println!(
        "\nVIOLATION of {}: {}",
        s.violation.invariant, s.violation.detail
    );
    println!("seed {}  scenario {}", opts.seed, scenario_arg);
    println!(
        "shrunk to the first {} events ({} runs); the last {} of them:",
        s.events,
        s.runs,
        s.trace_tail.len()
    );
    for line in &s.trace_tail {
        println!("  {line}");
    }
    if let Some(c) = command {
        println!("reproduce with:\n  {c}");
    }
}
