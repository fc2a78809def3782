//! `warden sim --target URL --token T`: the simulator's agents against a real node, as a
//! load generator ([`warden::sim::loadgen`], closed loop: every thread sends its next request
//! as soon as the last is answered). Reports decisions per second and the step requests'
//! latency percentiles, and checks the node's pools afterwards (spent within every limit).

use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use warden::adapters::client::Client;
use warden::sim::loadgen::{self, Live, LoadOptions, LoadReport, Pace};
use warden::sim::Scenario;

/// A `--target` run's settings.
pub struct Target {
    /// The node.
    pub url: String,
    /// Its operator token.
    pub token: String,
    /// Behaviours and pools.
    pub scenario: Scenario,
    /// Agents to register.
    pub agents: usize,
    /// Seed.
    pub seed: u64,
    /// How long to drive.
    pub duration: Duration,
    /// Threads sending requests.
    pub threads: usize,
    /// Print JSON instead of the table.
    pub json: bool,
}

/// Runs the load; exit 0 when every request succeeded and no pool is overspent, 1 otherwise.
pub fn run(t: Target) -> anyhow::Result<ExitCode> {
    let opts = LoadOptions {
        base: t.url.trim_end_matches('/').to_string(),
        operator_token: t.token,
        scenario: t.scenario,
        agents: t.agents,
        seed: t.seed,
        threads: t.threads,
        duration: t.duration,
        pace: Pace::Flat,
        // Distinct per seed and run, so runs against one node do not collide on ids.
        prefix: format!("sim{}-{}", t.seed, unix_secs() % 100_000),
        approve_percent: 70,
        answer_delay_ms: (0, 0),
    };
    let live = Arc::new(Live::default());
    let progress = progress(Arc::clone(&live), t.agents);
    let report = loadgen::run(&opts, Arc::clone(&live));
    live.stop.store(true, Ordering::Relaxed);
    let _ = progress.join();
    let report = report?;
    // The node may be gone by now: the report is printed all the same, overspend unknown.
    let overspend = match Client::new(&opts.base, &opts.operator_token).pools() {
        Ok(pools) => Some(loadgen::overspend(&pools)),
        Err(e) => {
            eprintln!(
                "warden sim: could not read the pools after the run ({e}): overspend unknown"
            );
            None
        }
    };
    if t.json {
        let mut v = serde_json::to_value(&report)?;
        v["seed"] = t.seed.into();
        v["overspend"] = overspend.into();
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        table(&report, t.seed, overspend);
    }
    Ok(match report.errors == 0 && overspend == Some(0) {
        true => ExitCode::SUCCESS,
        false => ExitCode::from(1),
    })
}

fn unix_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A line per second on standard error while the load runs.
fn progress(live: Arc<Live>, agents: usize) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let started = Instant::now();
        let mut last = 0;
        while !live.stop.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_secs(1));
            let now = live.decided();
            eprintln!(
                "warden sim: {:>3} s, {}/{agents} agents registered, {now} decisions ({}/s), {} errors",
                started.elapsed().as_secs(),
                live.registered.load(Ordering::Relaxed),
                now - last,
                live.errors.load(Ordering::Relaxed)
            );
            last = now;
        }
    })
}

fn table(r: &LoadReport, seed: u64, overspend: Option<u64>) {
    let l = &r.latency;
    println!("warden sim --target {} (seed {seed})", r.target);
    println!(
        "  agents            {} on {} threads, closed loop",
        r.agents, r.threads
    );
    println!(
        "  decisions         {} in {:.1} s = {:.0}/s",
        r.allow + r.deny + r.require_approval + r.halt,
        r.seconds,
        r.decisions_per_second
    );
    println!(
        "  by verdict        allow {}, deny {}, require_approval {}, halt {}; outcomes {}",
        r.allow, r.deny, r.require_approval, r.halt, r.outcomes
    );
    println!(
        "  step latency µs   p50 {}  p90 {}  p99 {}  p99.9 {}  max {}  ({} samples)",
        l.p50_us, l.p90_us, l.p99_us, l.p999_us, l.max_us, l.samples
    );
    println!("  errors            {}", r.errors);
    if let Some(e) = &r.first_error {
        println!("  first error       {e}");
    }
    match overspend {
        Some(o) => println!("  overspend         {o} (must be 0)"),
        None => println!("  overspend         unknown (the pools could not be read)"),
    }
}
