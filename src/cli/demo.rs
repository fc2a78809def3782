//! `warden demo`: a node on embedded defaults (a new data directory, the simulator's bundled
//! policy), a swarm of simulated agents driving its real HTTP API
//! ([`warden::sim::loadgen`]), a simulated operator answering approvals, and a live view:
//! full screen on a terminal ([`super::demo_view`]), a line per second elsewhere. Ends on
//! `q`/Ctrl-C (or SIGINT/SIGTERM, or after `--duration`) with a summary that says where the
//! journal is.

use std::collections::{BTreeMap, VecDeque};
use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use serde_json::Value;
use warden::adapters::client::Client;
use warden::adapters::config::{resolve, Flags};
use warden::adapters::http::wire::PoolView;
use warden::adapters::http::{start, RunningNode};
use warden::sim::loadgen::{self, Live, LoadOptions, LoadReport, Pace};
use warden::sim::scenario::POLICY_BUILTIN;
use warden::sim::Scenario;

/// Recent halts kept for the view.
pub const RECENT_HALTS_MAX: usize = 200;
/// Seconds of decision rate kept for the view's chart.
pub const RATE_HISTORY_MAX: usize = 600;
/// `--duration` on a non-terminal when none is given.
const DURATION_NON_TERMINAL: Duration = Duration::from_secs(30);

/// `warden demo`.
#[derive(Args, Debug)]
#[command(after_help = "\
Examples:
  warden demo                          until q or Ctrl-C (30 s when not on a terminal)
  warden demo --agents 200 --duration 1m
  warden demo --speed 4                agents think and work four times faster

Afterwards: warden audit verify DIR, warden audit report DIR (DIR is printed at the end).")]
pub struct DemoArgs {
    /// Simulated agents (an operator plays the approvers among them).
    #[arg(long, default_value_t = 1000, value_name = "N")]
    agents: usize,
    /// How long to run: 30s, 5m (default: until q or Ctrl-C on a terminal, 30s otherwise).
    #[arg(long, value_name = "D", value_parser = super::sim::parse_duration)]
    duration: Option<u64>,
    /// Seed of the agents' behaviour (default: a random one, printed).
    #[arg(long, value_name = "S")]
    seed: Option<u64>,
    /// Time compression of the agents' thinking and work (1: as modelled, 100 ms to 3 s
    /// between steps).
    #[arg(long, default_value_t = 1.0, value_name = "X")]
    speed: f64,
    /// Threads sending the agents' requests.
    #[arg(long, default_value_t = 8, value_name = "T")]
    threads: usize,
    /// The node's address (port 0: any free port).
    #[arg(long, default_value = "127.0.0.1:0", value_name = "ADDR")]
    listen: SocketAddr,
    /// The node's data directory, new or empty (default: a new directory under the system's
    /// temporary directory); kept afterwards for `warden audit`.
    #[arg(long, value_name = "DIR")]
    data: Option<PathBuf>,
}

/// What the view shows besides the load generator's counters; filled from `/v1/events` and
/// `/v1/pools`.
#[derive(Debug, Default)]
pub struct Board {
    /// Halts by kind.
    pub halts: BTreeMap<String, u64>,
    /// The latest halts, newest last, one line each with the cause chain.
    pub recent: VecDeque<String>,
    /// Approvals requested and resolved (from events).
    pub approvals: (u64, u64),
    /// Pools as last read.
    pub pools: Vec<PoolView>,
    /// Decisions per second, one entry per second.
    pub rate: VecDeque<u64>,
    /// Events the stream said it missed.
    pub missed: u64,
}

impl Board {
    /// `kind n, kind n, ...`, or `none`.
    pub fn halts_by_kind(&self) -> String {
        if self.halts.is_empty() {
            return "none".into();
        }
        let each: Vec<String> = self.halts.iter().map(|(k, n)| format!("{k} {n}")).collect();
        each.join(", ")
    }
}

/// Everything the view needs.
pub struct Demo {
    /// The node's base URL.
    pub base: String,
    /// The web page's URL, token in the fragment.
    pub web: String,
    /// Where the operator token is.
    pub token_file: String,
    /// The data directory.
    pub data: PathBuf,
    /// Agents asked for.
    pub agents: usize,
    /// The seed.
    pub seed: u64,
    /// When the drive started.
    pub started: Instant,
    /// The load generator's counters.
    pub live: Arc<Live>,
    /// Events and pools.
    pub board: Arc<Mutex<Board>>,
}

/// Runs the demo.
pub fn run(args: DemoArgs) -> anyhow::Result<()> {
    let seed = args.seed.unwrap_or_else(super::sim::random_seed);
    let terminal = std::io::stdout().is_terminal();
    let duration = match (args.duration, terminal) {
        (Some(ms), _) => Duration::from_millis(ms),
        (None, true) => Duration::from_secs(365 * 24 * 3600),
        (None, false) => DURATION_NON_TERMINAL,
    };
    anyhow::ensure!(
        (1..=100_000).contains(&args.agents),
        "--agents must be 1 to 100000"
    );
    anyhow::ensure!(
        args.speed.is_finite() && args.speed > 0.0 && args.speed <= 1000.0,
        "--speed must be above 0 and at most 1000"
    );
    anyhow::ensure!(
        (1..=loadgen::THREADS_MAX).contains(&args.threads),
        "--threads must be 1 to {}",
        loadgen::THREADS_MAX
    );
    let (data, made_here) = match args.data {
        Some(d) => (unused_dir(d)?, false),
        None => (fresh_dir()?, true),
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let node = match rt.block_on(start_node(&data, args.listen)) {
        Ok(node) => node,
        Err(e) => {
            // Nothing ran: a directory the demo made for it is of no use to anyone.
            if made_here {
                let _ = std::fs::remove_dir_all(&data);
            }
            return Err(e);
        }
    };
    let base = format!("http://{}", node.addr);
    let token_file = data.join("operator.token");
    let token = std::fs::read_to_string(&token_file)
        .with_context(|| format!("cannot read the operator token at {}", token_file.display()))?
        .trim()
        .to_string();
    let demo = Demo {
        web: format!("{base}/#token={token}"),
        base: base.clone(),
        token_file: token_file.display().to_string(),
        data: data.clone(),
        agents: args.agents,
        seed,
        started: Instant::now(),
        live: Arc::new(Live::default()),
        board: Arc::new(Mutex::new(Board::default())),
    };
    let opts = LoadOptions {
        base: base.clone(),
        operator_token: token.clone(),
        scenario: Scenario::default_mixed(),
        agents: args.agents,
        seed,
        threads: args.threads,
        duration,
        pace: Pace::Real { speed: args.speed },
        prefix: "agent".into(),
        approve_percent: 70,
        answer_delay_ms: (2_000, 8_000),
    };
    let client = Client::new(&base, &token);
    let report = drive(&demo, &opts, &client, terminal);
    let pools = client.pools().unwrap_or_default();
    rt.block_on(node.shutdown());
    let report = report?;
    summary(&demo, &report, &pools);
    Ok(())
}

/// The drive, the event reader, the pool poller and the view, until the run ends.
fn drive(
    demo: &Demo,
    opts: &LoadOptions,
    client: &Client,
    terminal: bool,
) -> anyhow::Result<LoadReport> {
    let stop_on_signal = Arc::clone(&demo.live);
    let _ = ctrlc_stop(stop_on_signal);
    read_events(client, &demo.board, &demo.live);
    std::thread::scope(|s| {
        let load = s.spawn(|| {
            let report = loadgen::run(opts, Arc::clone(&demo.live));
            // However the load ends (its duration, a refused registration, bad options),
            // the view ends with it.
            demo.live.stop.store(true, Ordering::Relaxed);
            report
        });
        let poll = s.spawn(|| poll_pools(client, demo));
        let shown = if terminal {
            super::demo_view::show(demo)
        } else {
            lines(demo);
            Ok(())
        };
        demo.live.stop.store(true, Ordering::Relaxed);
        let _ = poll.join();
        let report = load
            .join()
            .map_err(|_| anyhow::anyhow!("the load generator panicked"))?;
        shown?;
        Ok(report?)
    })
}

/// A new data directory under the system's temporary directory.
fn fresh_dir() -> anyhow::Result<PathBuf> {
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let dir = std::env::temp_dir().join(format!("warden-demo-{stamp}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    Ok(dir)
}

/// `--data` as given, if it is new or an empty directory: the demo's node journals its own
/// policy and agents there, which must never land in another node's journal.
fn unused_dir(dir: PathBuf) -> anyhow::Result<PathBuf> {
    let in_use = match std::fs::read_dir(&dir) {
        Ok(mut entries) => entries.next().is_some(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
        Err(_) => true,
    };
    anyhow::ensure!(
        !in_use,
        "--data {} must be a new or empty directory (the demo makes its own node there)",
        dir.display()
    );
    Ok(dir)
}

/// Starts a node on `data` with the bundled demo policy (written next to the journal, so
/// what ran can be read afterwards).
async fn start_node(data: &Path, listen: SocketAddr) -> anyhow::Result<RunningNode> {
    std::fs::create_dir_all(data).with_context(|| format!("cannot create {}", data.display()))?;
    let policy = data.join("demo-policy.yaml");
    std::fs::write(&policy, POLICY_BUILTIN)
        .with_context(|| format!("cannot write {}", policy.display()))?;
    let flags = Flags {
        config: None,
        policy: Some(policy),
        data: Some(data.to_path_buf()),
        listen: Some(listen),
        ..Flags::default()
    };
    // The demo's node ignores WARDEN_OPERATOR_TOKEN: its token is made in its new directory.
    let resolved = resolve(flags, &|_| None)?;
    let mut config = resolved.config;
    config.metrics = super::node::install_recorder();
    Ok(start(config).await?)
}

/// Stops the run on SIGINT or SIGTERM (outside the full-screen view, which reads Ctrl-C as
/// a key).
fn ctrlc_stop(live: Arc<Live>) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("demo-signals".into())
        .spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async {
                use tokio::signal::unix::{signal, SignalKind};
                let (Ok(mut int), Ok(mut term)) = (
                    signal(SignalKind::interrupt()),
                    signal(SignalKind::terminate()),
                ) else {
                    return;
                };
                tokio::select! {
                    _ = int.recv() => {}
                    _ = term.recv() => {}
                }
            });
            live.stop.store(true, Ordering::Relaxed);
        })
        .map(|_| ())
}

/// Reads `/v1/events` on its own thread into the board: halts (with their cause chains),
/// approvals. Ends with the stream.
fn read_events(client: &Client, board: &Arc<Mutex<Board>>, live: &Arc<Live>) {
    let (client, board, live) = (client.clone(), Arc::clone(board), Arc::clone(live));
    let _ = std::thread::Builder::new()
        .name("demo-events".into())
        .spawn(move || {
            let Ok(events) = client.events() else {
                return;
            };
            for event in events {
                let Ok(e) = event else { break };
                if live.stop.load(Ordering::Relaxed) {
                    break;
                }
                let Ok(mut b) = board.lock() else { break };
                match e.name.as_str() {
                    "halt" => {
                        let kind = e.data["record"]["kind"].as_str().unwrap_or("?").to_string();
                        *b.halts.entry(kind).or_default() += 1;
                        b.recent.push_back(halt_line(&e.data));
                        while b.recent.len() > RECENT_HALTS_MAX {
                            b.recent.pop_front();
                        }
                    }
                    "approval_requested" => b.approvals.0 += 1,
                    "approval_resolved" => b.approvals.1 += 1,
                    "lagged" => b.missed += e.data["missed"].as_u64().unwrap_or(0),
                    _ => {}
                }
            }
        });
}

/// `agent kind (rule): reason ← origin (kind) ← ...`, the cause chain newest first.
pub fn halt_line(data: &Value) -> String {
    let r = &data["record"];
    let mut line = format!(
        "{} {}{}: {}",
        data["agent"].as_str().unwrap_or("?"),
        r["kind"].as_str().unwrap_or("?"),
        r["rule"]
            .as_str()
            .map(|x| format!(" ({x})"))
            .unwrap_or_default(),
        r["reason"].as_str().unwrap_or("")
    );
    if let Some(cause) = r["cause"].as_array() {
        for link in cause.iter().rev() {
            line.push_str(&format!(
                " <- {} ({})",
                link["agent"].as_str().unwrap_or("?"),
                link["kind"].as_str().unwrap_or("?")
            ));
        }
    }
    line
}

/// Every second: the pools, and the decision rate of the last second.
fn poll_pools(client: &Client, demo: &Demo) {
    let mut last = 0;
    while !demo.live.stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_secs(1));
        let pools = client.pools().ok();
        let now = demo.live.decided();
        let Ok(mut b) = demo.board.lock() else { return };
        if let Some(p) = pools {
            b.pools = p;
        }
        b.rate.push_back(now - last);
        while b.rate.len() > RATE_HISTORY_MAX {
            b.rate.pop_front();
        }
        last = now;
    }
}

/// The non-terminal view: a line per second until the run ends.
fn lines(demo: &Demo) {
    println!("warden demo: node {} (web page: {})", demo.base, demo.web);
    println!(
        "warden demo: {} agents, seed {}, data {}",
        demo.agents,
        demo.seed,
        demo.data.display()
    );
    let mut shown = 0;
    // The rate of the second this line closes (not the pool poller's last second, which
    // runs on its own timer).
    let mut since = (Instant::now(), demo.live.decided());
    while !demo.live.stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(200));
        let secs = demo.started.elapsed().as_secs();
        if secs > shown {
            shown = secs;
            let now = (Instant::now(), demo.live.decided());
            let took = now.0.duration_since(since.0).as_secs_f64().max(1e-3);
            let rate = ((now.1 - since.1) as f64 / took).round() as u64;
            since = now;
            println!("{}", status_line(demo, rate));
        }
    }
}

/// One line of the run's state, with `rate` decisions per second.
fn status_line(demo: &Demo, rate: u64) -> String {
    let live = &demo.live;
    let d = |i: usize| live.decisions[i].load(Ordering::Relaxed);
    let b = demo.board.lock().map(|b| {
        let waiting = b.approvals.0.saturating_sub(b.approvals.1);
        let pools: Vec<String> = b
            .pools
            .iter()
            .filter_map(|p| Some(format!("{} {}%", p.path, pool_percent(p)?)))
            .collect();
        (b.halts_by_kind(), waiting, pools.join(" "))
    });
    let (halts, waiting, mut pools) = b.unwrap_or_default();
    if pools.is_empty() {
        pools = "none read yet".into();
    }
    let registered = live.registered.load(Ordering::Relaxed);
    if live.decided() == 0 && (registered as usize) < demo.agents {
        return format!(
            "t={:>3}s registering agents: {registered}",
            demo.started.elapsed().as_secs()
        );
    }
    format!(
        "t={:>3}s decisions {} ({rate}/s): allow {} deny {} approval {} halt {} | halts: {} | approvals waiting {waiting} | pools used: {pools} | errors {}",
        demo.started.elapsed().as_secs(),
        live.decided(),
        d(0),
        d(1),
        d(2),
        d(3),
        halts,
        live.errors.load(Ordering::Relaxed)
    )
}

/// The most used share of a pool's limited dimensions, percent (`None`: nothing limited).
pub fn pool_percent(p: &PoolView) -> Option<u64> {
    p.limits
        .iter()
        .filter(|(_, limit)| **limit > 0)
        .map(|(dim, limit)| {
            let used =
                p.spent.get(dim).copied().unwrap_or(0) + p.reserved.get(dim).copied().unwrap_or(0);
            used.saturating_mul(100) / limit
        })
        .max()
}

/// The closing summary: totals, halts, pools against their limits (overspend must be 0),
/// and where the journal is.
fn summary(demo: &Demo, r: &LoadReport, pools: &[PoolView]) {
    println!();
    println!(
        "warden demo: {} decisions in {:.1} s ({:.0}/s) from {} agents, seed {}",
        r.allow + r.deny + r.require_approval + r.halt,
        r.seconds,
        r.decisions_per_second,
        r.agents,
        demo.seed
    );
    println!(
        "  allow {}  deny {}  require_approval {}  halt {}  outcomes {}  errors {}",
        r.allow, r.deny, r.require_approval, r.halt, r.outcomes, r.errors
    );
    if let Some(e) = &r.first_error {
        println!("  first error: {e}");
    }
    let l = &r.latency;
    println!(
        "  step latency over HTTP, µs: p50 {} p90 {} p99 {} max {}",
        l.p50_us, l.p90_us, l.p99_us, l.max_us
    );
    if let Ok(b) = demo.board.lock() {
        println!("  halts by kind: {}", b.halts_by_kind());
        let answered = (
            demo.live.answered[0].load(Ordering::Relaxed),
            demo.live.answered[1].load(Ordering::Relaxed),
        );
        let others = b.approvals.1.saturating_sub(answered.0 + answered.1);
        println!(
            "  approvals: {} requested, {} resolved: the operator approved {} and denied {}, {others} timed out or were ended by a halt",
            b.approvals.0, b.approvals.1, answered.0, answered.1
        );
    }
    println!("  pools (spent / limit):");
    for p in pools {
        let dims: Vec<String> = p
            .limits
            .iter()
            .map(|(dim, limit)| {
                let spent = p.spent.get(dim).copied().unwrap_or(0);
                format!("{dim} {spent} / {limit}")
            })
            .collect();
        println!("    {:<18} {}", p.path, dims.join(", "));
    }
    println!("  overspend: {} (must be 0)", loadgen::overspend(pools));
    let dir = demo.data.display();
    println!("  journal: {dir}/journal");
    println!("  next: warden audit verify {dir}    warden audit report {dir}");
}
