//! warden's load harness: latency percentiles, throughput, the hostile pool, spawn cost and
//! memory per agent. Criterion gives medians (`benches/decisions.rs`); this harness gives what
//! criterion does not: p99 of single calls, decisions per second across 1,000 agents, and RSS.
//!
//! Run: `cargo bench --bench swarm_load` (all parts) or
//! `cargo bench --bench swarm_load -- latency throughput hostile memory detectors journal`.
//! `WARDEN_BENCH_AGENTS=100000,1000000` sets the agent counts of the memory part (default
//! `100000`). Results are printed as markdown; docs/benchmarks.md records them.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use warden::actors::policy::PolicySet;
use warden::{
    actors::{Account, AgentKernel},
    ActionClass, AgentId, AgentSpec, KernelConfig, Layout, LedgerDim, Limits, Outcome,
    StagnationConfig, Step, Swarm,
};

const SAMPLES: usize = 200_000;

fn steps() -> Arc<Vec<Step>> {
    Arc::new(
        (0..64)
            .map(|i| {
                Step::builder("web.search", ActionClass::Read)
                    .args(json!({ "q": i }))
                    .tokens(100)
                    .build()
                    .unwrap()
            })
            .collect(),
    )
}

/// A policy with `n` rules over `n` registered tools: a third regex rules, a third numeric,
/// a third glob, plus a detector rule; the steps below call random registered tools.
fn policy_text(n: usize) -> String {
    let mut t = String::from("version: 1\ntools:\n");
    for i in 0..n {
        t.push_str(&format!("  tool_{i}: {{action: read}}\n"));
    }
    t.push_str("rules:\n");
    for i in 0..n {
        let rule = match i % 3 {
            0 => format!("  - {{id: r{i}, match: {{tool: tool_{i}, args: {{command: {{regex: 'rm\\s+-rf|sudo{i}'}}}}}}, decision: halt, kind: safety}}\n"),
            1 => format!("  - {{id: r{i}, match: {{tool: tool_{i}, args: {{amount: {{gt: {}}}}}}}, decision: require_approval}}\n", 1000 + i),
            _ => format!("  - {{id: r{i}, match: {{tool: tool_{i}, args: {{path: {{glob: '/etc/{i}/*'}}}}}}, decision: deny}}\n"),
        };
        t.push_str(&rule);
    }
    t
}

fn policy_steps(n: usize) -> Arc<Vec<Step>> {
    Arc::new(
        (0..256)
            .map(|i| {
                Step::builder(format!("tool_{}", (i * 7919) % n), ActionClass::Read)
                    .args(json!({ "command": format!("ls -la /srv/{i}"), "amount": i, "path": format!("/tmp/{i}") }))
                    .tokens(100)
                    .build()
                    .unwrap()
            })
            .collect(),
    )
}

fn spec(name: &str) -> AgentSpec {
    AgentSpec::new(AgentId::new(name).unwrap()).stagnation(StagnationConfig::OFF)
}

struct Pcts {
    p50_ns: u64,
    p99_ns: u64,
    p999_ns: u64,
}

fn pcts(mut v: Vec<u64>) -> Pcts {
    v.sort_unstable();
    let at = |q: f64| v[((v.len() as f64 * q) as usize).min(v.len() - 1)];
    Pcts {
        p50_ns: at(0.50),
        p99_ns: at(0.99),
        p999_ns: at(0.999),
    }
}

fn row(name: &str, p: &Pcts) {
    println!(
        "| {name} | {:.2} | {:.2} | {:.2} |",
        p.p50_ns as f64 / 1e3,
        p.p99_ns as f64 / 1e3,
        p.p999_ns as f64 / 1e3
    );
}

/// One table row per decision path, each block the same measurement loop (20,000 warm-up
/// steps, then `SAMPLES` timed ones). One piece on purpose: the blocks run in table order on
/// one driver runtime, and keeping the loops written out keeps nothing between the clock
/// reads but the call measured.
fn latency() {
    println!("\n### Decision latency (one `step`, µs; {SAMPLES} samples after 20,000 warm-up)\n");
    println!("| path | p50 | p99 | p99.9 |\n|---|---|---|---|");
    let steps = steps();

    // Kernel only.
    {
        let root = Account::root("swarm", Limits::UNLIMITED);
        let account = root.child("a", Limits::UNLIMITED).unwrap();
        let config = KernelConfig {
            stagnation: StagnationConfig::OFF,
            ..Default::default()
        };
        let mut k = AgentKernel::new(AgentId::new("a").unwrap(), account, &config, None, 0);
        let mut samples = Vec::with_capacity(SAMPLES);
        for i in 0..SAMPLES + 20_000 {
            let step = &steps[i % steps.len()];
            let start = Instant::now();
            let d = std::hint::black_box(k.decide(step, i as u64)).decision;
            let ns = start.elapsed().as_nanos() as u64;
            k.settle(d.step, &Outcome::success(), i as u64).unwrap();
            if i >= 20_000 {
                samples.push(ns);
            }
        }
        row("kernel only (no actor)", &pcts(samples));
    }

    // Kernel with a 100-rule policy.
    {
        let policy: Arc<dyn warden::StepPolicy> =
            Arc::new(PolicySet::parse(&policy_text(100)).unwrap());
        let steps = policy_steps(100);
        let root = Account::root("swarm", Limits::UNLIMITED);
        let account = root.child("a", Limits::UNLIMITED).unwrap();
        let config = KernelConfig {
            stagnation: StagnationConfig::OFF,
            ..Default::default()
        };
        let mut k = AgentKernel::new(
            AgentId::new("a").unwrap(),
            account,
            &config,
            Some(policy),
            0,
        );
        let mut samples = Vec::with_capacity(SAMPLES);
        for i in 0..SAMPLES + 20_000 {
            let step = &steps[i % steps.len()];
            let start = Instant::now();
            let d = std::hint::black_box(k.decide(step, i as u64)).decision;
            let ns = start.elapsed().as_nanos() as u64;
            assert!(d.is_allow());
            k.settle(d.step, &Outcome::success(), i as u64).unwrap();
            if i >= 20_000 {
                samples.push(ns);
            }
        }
        row("kernel + 100-rule policy (no actor)", &pcts(samples));
    }

    let driver = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // Sharded, caller on the agent's shard.
    {
        let swarm = driver
            .block_on(
                Swarm::builder()
                    .layout(Layout::Sharded { shards: 2 })
                    .build(),
            )
            .unwrap();
        let agent = driver.block_on(swarm.spawn_agent(spec("a"))).unwrap();
        let (a, s) = (agent.clone(), Arc::clone(&steps));
        let samples = driver
            .block_on(swarm.spawn_on_shard_of(&agent, async move {
                let mut samples = Vec::with_capacity(SAMPLES);
                for i in 0..SAMPLES + 20_000 {
                    let step = s[i % s.len()].clone();
                    let start = Instant::now();
                    let d = a.step(step).await.unwrap();
                    let ns = start.elapsed().as_nanos() as u64;
                    a.outcome(d.step, Outcome::success()).await.unwrap();
                    if i >= 20_000 {
                        samples.push(ns);
                    }
                }
                samples
            }))
            .unwrap();
        row(
            "actor, sharded, caller on the agent's shard (default layout, fast path)",
            &pcts(samples),
        );
        // The same agent, called from another thread (this harness's own runtime).
        let mut samples = Vec::with_capacity(SAMPLES);
        for i in 0..SAMPLES + 20_000 {
            let step = steps[i % steps.len()].clone();
            let start = Instant::now();
            let d = driver.block_on(agent.step(step)).unwrap();
            let ns = start.elapsed().as_nanos() as u64;
            driver
                .block_on(agent.outcome(d.step, Outcome::success()))
                .unwrap();
            if i >= 20_000 {
                samples.push(ns);
            }
        }
        row("actor, sharded, caller on another thread", &pcts(samples));
        driver.block_on(swarm.shutdown());
    }
    // Sharded, caller on the agent's shard, 100-rule policy.
    {
        let swarm = driver
            .block_on(
                Swarm::builder()
                    .layout(Layout::Sharded { shards: 2 })
                    .policy_set(PolicySet::parse(&policy_text(100)).unwrap())
                    .build(),
            )
            .unwrap();
        let agent = driver.block_on(swarm.spawn_agent(spec("a"))).unwrap();
        let (a, s) = (agent.clone(), policy_steps(100));
        let samples = driver
            .block_on(swarm.spawn_on_shard_of(&agent, async move {
                let mut samples = Vec::with_capacity(SAMPLES);
                for i in 0..SAMPLES + 20_000 {
                    let step = s[i % s.len()].clone();
                    let start = Instant::now();
                    let d = a.step(step).await.unwrap();
                    let ns = start.elapsed().as_nanos() as u64;
                    assert!(d.is_allow(), "{d:?}");
                    a.outcome(d.step, Outcome::success()).await.unwrap();
                    if i >= 20_000 {
                        samples.push(ns);
                    }
                }
                samples
            }))
            .unwrap();
        row(
            "actor + 100-rule policy, caller on the agent's shard",
            &pcts(samples),
        );
        driver.block_on(swarm.shutdown());
    }
    // Multi-thread runtime, cross-thread calls.
    {
        let mt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let swarm = mt
            .block_on(Swarm::builder().layout(Layout::Current).build())
            .unwrap();
        let agent = mt.block_on(swarm.spawn_agent(spec("a"))).unwrap();
        let (a, s) = (agent.clone(), Arc::clone(&steps));
        let samples = mt
            .block_on(async move {
                tokio::spawn(async move {
                    let mut samples = Vec::with_capacity(SAMPLES);
                    for i in 0..SAMPLES + 20_000 {
                        let step = s[i % s.len()].clone();
                        let start = Instant::now();
                        let d = a.step(step).await.unwrap();
                        let ns = start.elapsed().as_nanos() as u64;
                        a.outcome(d.step, Outcome::success()).await.unwrap();
                        if i >= 20_000 {
                            samples.push(ns);
                        }
                    }
                    samples
                })
                .await
            })
            .unwrap();
        row(
            "actor, one multi_thread runtime (2 workers), cross-thread",
            &pcts(samples),
        );
        mt.block_on(swarm.shutdown());
    }
    // Inline on the caller's thread.
    {
        let swarm = driver
            .block_on(
                Swarm::builder()
                    .layout(Layout::Sharded { shards: 2 })
                    .build(),
            )
            .unwrap();
        let agent = driver.block_on(swarm.spawn_agent(spec("a"))).unwrap();
        let mut samples = Vec::with_capacity(SAMPLES);
        for i in 0..SAMPLES + 20_000 {
            let step = &steps[i % steps.len()];
            let start = Instant::now();
            let d = std::hint::black_box(agent.step_inline(step));
            let ns = start.elapsed().as_nanos() as u64;
            agent.outcome_inline(d.step, &Outcome::success()).unwrap();
            if i >= 20_000 {
                samples.push(ns);
            }
        }
        row(
            "inline (`step_inline`, kernel lock on the caller's thread)",
            &pcts(samples),
        );
        driver.block_on(swarm.shutdown());
    }
}

/// 1,000 agents, one driver task per agent on the agent's shard, each looping
/// step -> outcome for `secs`. Returns decisions (steps) per second.
fn throughput_sharded(agents: usize, secs: u64, settle: bool) -> f64 {
    let driver = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let swarm = driver
        .block_on(
            Swarm::builder()
                .layout(Layout::Sharded { shards: 2 })
                .build(),
        )
        .unwrap();
    let handles: Vec<_> = (0..agents)
        .map(|i| driver.block_on(swarm.spawn_agent(load_spec(i))).unwrap())
        .collect();
    let steps = steps();
    let stop = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for h in &handles {
        let (a, s, stop, count) = (
            h.clone(),
            Arc::clone(&steps),
            Arc::clone(&stop),
            Arc::clone(&count),
        );
        tasks.push(swarm.spawn_on_shard_of(h, async move {
            let mut n = 0u64;
            let mut i = 0usize;
            while !stop.load(Ordering::Relaxed) {
                for _ in 0..32 {
                    let d = a.step(s[i % s.len()].clone()).await.unwrap();
                    if settle {
                        a.outcome(d.step, Outcome::success()).await.unwrap();
                    }
                    i += 1;
                    n += 1;
                }
            }
            count.fetch_add(n, Ordering::Relaxed);
        }));
    }
    let start = Instant::now();
    std::thread::sleep(Duration::from_secs(secs));
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        driver.block_on(t).unwrap();
    }
    let elapsed = start.elapsed().as_secs_f64();
    let per_sec = count.load(Ordering::Relaxed) as f64 / elapsed;
    driver.block_on(swarm.shutdown());
    per_sec
}

/// An agent for the throughput runs: without settling, reservations stay open, so the open
/// step bound is raised (budgets are unlimited).
fn load_spec(i: usize) -> AgentSpec {
    let mut spec = spec(&format!("t{i}"));
    spec.max_open_steps = Some(1 << 24);
    spec
}

/// The same load through `step_inline`/`outcome_inline` on 2 OS threads (no actor hop).
fn throughput_inline(agents: usize, secs: u64) -> f64 {
    let driver = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let swarm = driver
        .block_on(
            Swarm::builder()
                .layout(Layout::Sharded { shards: 2 })
                .build(),
        )
        .unwrap();
    let handles: Vec<_> = (0..agents)
        .map(|i| driver.block_on(swarm.spawn_agent(load_spec(i))).unwrap())
        .collect();
    let steps = steps();
    let stop = AtomicBool::new(false);
    let count = AtomicU64::new(0);
    let start = Instant::now();
    std::thread::scope(|sc| {
        for t in 0..2 {
            let (handles, steps, stop, count) = (&handles, &steps, &stop, &count);
            sc.spawn(move || {
                let mut n = 0u64;
                let mut i = t;
                while !stop.load(Ordering::Relaxed) {
                    for _ in 0..64 {
                        let a = &handles[i % handles.len()];
                        let d = a.step_inline(&steps[i % steps.len()]);
                        a.outcome_inline(d.step, &Outcome::success()).unwrap();
                        i += 2;
                        n += 1;
                    }
                }
                count.fetch_add(n, Ordering::Relaxed);
            });
        }
        std::thread::sleep(Duration::from_secs(secs));
        stop.store(true, Ordering::Relaxed);
    });
    let per_sec = count.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64();
    driver.block_on(swarm.shutdown());
    per_sec
}

fn throughput_multi_thread(agents: usize, secs: u64, settle: bool) -> f64 {
    let mt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let swarm = mt
        .block_on(Swarm::builder().layout(Layout::Current).build())
        .unwrap();
    let handles: Vec<_> = (0..agents)
        .map(|i| mt.block_on(swarm.spawn_agent(load_spec(i))).unwrap())
        .collect();
    let steps = steps();
    let stop = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for h in &handles {
        let (a, s, stop, count) = (
            h.clone(),
            Arc::clone(&steps),
            Arc::clone(&stop),
            Arc::clone(&count),
        );
        tasks.push(mt.spawn(async move {
            let mut n = 0u64;
            let mut i = 0usize;
            while !stop.load(Ordering::Relaxed) {
                for _ in 0..32 {
                    let d = a.step(s[i % s.len()].clone()).await.unwrap();
                    if settle {
                        a.outcome(d.step, Outcome::success()).await.unwrap();
                    }
                    i += 1;
                    n += 1;
                }
            }
            count.fetch_add(n, Ordering::Relaxed);
        }));
    }
    let start = Instant::now();
    std::thread::sleep(Duration::from_secs(secs));
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        mt.block_on(t).unwrap();
    }
    let per_sec = count.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64();
    mt.block_on(swarm.shutdown());
    per_sec
}

fn throughput() {
    let secs = 3;
    println!("\n### Throughput, 1,000 agents, 2 cores ({secs} s per run)\n");
    println!(
        "One driver task per agent loops `step` (and, in the first column, `outcome` after each"
    );
    println!("step: two actor round trips per decision). The second column only decides.\n");
    println!("| layout | decisions/s, each settled | decisions/s, decide only |\n|---|---|---|");
    let a = throughput_sharded(1_000, secs, true);
    let b = throughput_sharded(1_000, secs, false);
    println!("| actor, sharded (2 single-worker shards, drivers on their agent's shard) | {a:.0} | {b:.0} |");
    let a = throughput_multi_thread(1_000, secs, true);
    let b = throughput_multi_thread(1_000, secs, false);
    println!("| actor, one multi_thread runtime (2 workers) | {a:.0} | {b:.0} |");
    let d = throughput_inline(1_000, secs);
    println!("| inline (2 OS threads calling `step_inline` + `outcome_inline`) | {d:.0} | - |");
}

fn hostile() {
    let runs = 100;
    println!("\n### Hostile pool: 1,000 concurrent steps, 100 agents, room for exactly 10 ({runs} runs)\n");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut histogram = std::collections::BTreeMap::new();
    for _ in 0..runs {
        let allowed = rt.block_on(async {
            let swarm = Swarm::builder()
                .limits(Limits::UNLIMITED.with(LedgerDim::Tokens, Some(1_000)))
                .build()
                .await
                .unwrap();
            let mut agents = Vec::new();
            for i in 0..100 {
                agents.push(swarm.spawn_agent(spec(&format!("h{i}"))).await.unwrap());
            }
            let mut tasks = Vec::new();
            for i in 0..1_000u64 {
                let a = agents[(i % 100) as usize].clone();
                let step = Step::builder("llm", ActionClass::Network)
                    .args(json!({ "i": i }))
                    .tokens(100)
                    .build()
                    .unwrap();
                tasks.push(tokio::spawn(async move {
                    a.step(step).await.unwrap().is_allow()
                }));
            }
            let mut allowed = 0;
            for t in tasks {
                allowed += t.await.unwrap() as u32;
            }
            let spent = swarm.pool("swarm").unwrap();
            assert!(spent.reserved.get(LedgerDim::Tokens) <= 1_000);
            swarm.shutdown().await;
            allowed
        });
        *histogram.entry(allowed).or_insert(0) += 1;
    }
    let summary: Vec<String> = histogram
        .iter()
        .map(|(allowed, n)| format!("{allowed} allowed in {n} runs"))
        .collect();
    println!("{}", summary.join(", "));
}

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

fn memory() {
    let counts: Vec<usize> = std::env::var("WARDEN_BENCH_AGENTS")
        .unwrap_or_else(|_| "100000".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    println!("\n### Spawn cost and memory per idle agent\n");
    println!("| agents | spawn wall time | µs per agent | RSS added | bytes per agent |\n|---|---|---|---|---|");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    for n in counts {
        rt.block_on(async {
            let swarm = Swarm::builder()
                .layout(Layout::Sharded { shards: 2 })
                .max_agents(n + 1)
                .build()
                .await
                .unwrap();
            let before = rss_bytes();
            let start = Instant::now();
            let mut set = tokio::task::JoinSet::new();
            let mut next = 0usize;
            while next < n || !set.is_empty() {
                while next < n && set.len() < 512 {
                    let swarm = swarm.clone();
                    let name = format!("m{next}");
                    set.spawn(async move { swarm.spawn_agent(spec(&name)).await.map(|_| ()) });
                    next += 1;
                }
                if let Some(r) = set.join_next().await {
                    r.unwrap().unwrap();
                }
            }
            let elapsed = start.elapsed();
            let after = rss_bytes();
            // The swarm still governs: one step on the last agent.
            let last = swarm
                .agent(&AgentId::new(format!("m{}", n - 1)).unwrap())
                .unwrap();
            let step = Step::builder("t", ActionClass::Read).build().unwrap();
            assert!(last.step(step).await.unwrap().is_allow());
            let added = after.saturating_sub(before);
            println!(
                "| {n} | {:.2} s | {:.2} | {:.2} GiB | {} |",
                elapsed.as_secs_f64(),
                elapsed.as_secs_f64() * 1e6 / n as f64,
                added as f64 / (1u64 << 30) as f64,
                added / n as u64
            );
            swarm.shutdown().await;
        });
    }
}

/// Audit journal: appends per second from 256 concurrent appenders in each durability mode,
/// then verification speed over what was written.
fn journal() {
    use warden::supervisor::journal::{self, EntryKind, FsyncMode, Journal, JournalConfig};
    let per_mode = 400_000u64;
    let appenders = 256u64;
    println!(
        "\n### Audit journal: group commit ({appenders} concurrent appenders, ~200-byte entries)\n"
    );
    println!(
        "| fsync mode | entries | seconds | entries/s | verify entries/s |\n|---|---|---|---|---|"
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let payload = vec![b'x'; 200];
    for mode in [FsyncMode::Always, FsyncMode::Batch, FsyncMode::Off] {
        let dir = std::env::temp_dir().join(format!(
            "warden-bench-journal-{}-{mode:?}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        let mut cfg = JournalConfig::new(&dir);
        cfg.fsync = mode;
        let (j, _) = Journal::open(cfg, |_| {}).unwrap();
        let start = Instant::now();
        rt.block_on(async {
            let mut tasks = Vec::new();
            for a in 0..appenders {
                let (j, payload) = (j.clone(), payload.clone());
                tasks.push(tokio::spawn(async move {
                    for i in 0..per_mode / appenders {
                        j.append(EntryKind::Decision, a * 1_000_000 + i, payload.clone())
                            .await
                            .unwrap();
                    }
                }));
            }
            for t in tasks {
                t.await.unwrap();
            }
        });
        let secs = start.elapsed().as_secs_f64();
        drop(j);
        let start = Instant::now();
        let report = journal::verify(&dir).unwrap();
        let verify_secs = start.elapsed().as_secs_f64();
        assert_eq!(report.entries, per_mode / appenders * appenders);
        println!(
            "| {mode:?} | {} | {secs:.2} | {:.0} | {:.0} |",
            report.entries,
            report.entries as f64 / secs,
            report.entries as f64 / verify_secs
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// Detector cost on a typical benign 199-byte args string (no hit: the common case).
fn detectors() {
    use warden::actors::policy::Detector;
    const ARGS: &str = r###"{"tool":"fs.write","path":"/home/agent/work/report-2024-06-11.md","content":"## Summary\nBuild passed on commit 3f78685 after 12 retries; see logs/ci/run-4821.txt.","mode":"overwrite","append":false}"###;
    println!(
        "\n### Detectors: one `find` on a benign {}-byte args string (µs)\n",
        ARGS.len()
    );
    println!("| detector | p50 | p99 | p99.9 |\n|---|---|---|---|");
    for d in Detector::ALL {
        assert!(d.find(ARGS).is_none());
        let mut samples = Vec::with_capacity(SAMPLES);
        for i in 0..SAMPLES + 20_000 {
            let start = Instant::now();
            std::hint::black_box(d.find(std::hint::black_box(ARGS)));
            let ns = start.elapsed().as_nanos() as u64;
            if i >= 20_000 {
                samples.push(ns);
            }
        }
        row(d.name(), &pcts(samples));
    }
}

/// A journal snapshot (retention) of 100,000 agents with an open step each: how long every
/// agent is held still, how long until it is durable, and how large it is.
fn snapshot() {
    use warden::supervisor::journal::{FsyncMode, Journal, JournalConfig};
    let n = 100_000usize;
    println!("\n### Journal snapshot of {n} agents (retention)\n");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let dir = std::env::temp_dir().join(format!("warden-bench-snap-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut cfg = JournalConfig::new(&dir);
        cfg.fsync = FsyncMode::Always;
        let (journal, _) = Journal::open(cfg, |_| {}).unwrap();
        let swarm = Swarm::builder()
            .layout(Layout::Sharded { shards: 2 })
            .max_agents(n + 1)
            .build()
            .await
            .unwrap();
        swarm.attach_journal(journal.clone(), None).unwrap();
        let mut set = tokio::task::JoinSet::new();
        let mut next = 0usize;
        while next < n || !set.is_empty() {
            while next < n && set.len() < 512 {
                let swarm = swarm.clone();
                let name = format!("s{next}");
                set.spawn(async move {
                    let h = swarm.spawn_agent(spec(&name)).await.unwrap();
                    let step = Step::builder("t", ActionClass::Read).tokens(10).build().unwrap();
                    assert!(h.step(step).await.unwrap().is_allow());
                });
                next += 1;
            }
            if let Some(r) = set.join_next().await {
                r.unwrap();
            }
        }
        swarm.durable().await.unwrap();
        let size_before = journal.size_bytes();
        let start = Instant::now();
        let begin = swarm.write_snapshot().unwrap();
        let held = start.elapsed();
        swarm.durable().await.unwrap();
        let durable = start.elapsed();
        let (segments, bytes) = journal.remove_segments_before(begin).unwrap();
        println!("| agents | journal before | agents held still | until durable (fsync always) | journal after | removed before it |\n|---|---|---|---|---|---|");
        println!(
            "| {n} | {:.1} MiB | {:.0} ms ({:.2} µs per agent) | {:.0} ms | {:.1} MiB | {segments} segment(s), {:.1} MiB |",
            size_before as f64 / (1u64 << 20) as f64,
            held.as_secs_f64() * 1e3,
            held.as_secs_f64() * 1e6 / n as f64,
            durable.as_secs_f64() * 1e3,
            (journal.size_bytes() as f64) / (1u64 << 20) as f64,
            bytes as f64 / (1u64 << 20) as f64,
        );
        swarm.shutdown().await;
        journal.shutdown().await;
        let _ = std::fs::remove_dir_all(&dir);
    });
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let want = |part: &str| args.is_empty() || args.iter().any(|a| a == part);
    println!(
        "warden swarm_load on {} cores",
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    if want("latency") {
        latency();
    }
    if want("throughput") {
        throughput();
    }
    if want("hostile") {
        hostile();
    }
    if want("memory") {
        memory();
    }
    if want("detectors") {
        detectors();
    }
    if want("journal") {
        journal();
    }
    if want("snapshot") {
        snapshot();
    }
}
