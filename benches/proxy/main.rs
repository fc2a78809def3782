//! The enforcement proxy under load, against the upstream directly and against nginx (and,
//! for streams, LiteLLM's proxy when it is installed), all in one sitting on this machine.
//!
//! ```sh
//! cargo bench --bench proxy -- tool       # open loop at 1,000 and 10,000 req/s + max throughput
//! cargo bench --bench proxy -- llm        # streaming: TTFT and per-frame delay, 1..1,024 streams
//! cargo bench --bench proxy -- denials    # false denials and overspend of the LLM reservation
//! cargo bench --bench proxy -- all
//! ```
//!
//! Options (`key=value` after the part's name), defaults shown: `rates=1000,10000 seconds=10
//! warmup=2 rounds=1 conns=64 tp_conns=64 tp_seconds=10` (tool); `streams=1,64,512,1024
//! chunks=20 chunk_ms=20 seconds=10 warmup=2 litellm=/work/litellm-venv/bin/litellm
//! litellm_max=512` (llm; LiteLLM runs up to `litellm_max` streams); `requests=1000`
//! (denials); `floor=on` (tool: also measure the HTTP floor, [`floor`]: the node's HTTP stack
//! and forward client with nothing governed); `fsync=always` for every part (`always`, `batch` or `off`, the node's journal
//! mode). `WARDEN_BENCH_BIN=PATH` runs another build of `warden` as the node (two builds
//! compared in one sitting); `WARDEN_BENCH_POLICY=PATH` gives the node another policy than
//! `policy.yaml` (what the rules cost). nginx is Debian's (`apt-get install nginx`): without `/usr/sbin/nginx` the tool
//! part says so and runs without it; without the LiteLLM binary the llm part does likewise.
//! Everything is on loopback; every loop is bounded in time. Results of 2026-11-30 and their
//! reading: `docs/benchmarks.md`; raw outputs: `benches/proxy/runs/`.
//!
//! What runs where: the upstream (a bare hyper server, [`upstream`]) and the load generators
//! ([`load`]) are threads of this process; `warden node` (release build, journal in a
//! temporary directory on this machine's disk), nginx (2 workers) and LiteLLM are their own
//! processes, whose CPU time is read from `/proc/PID/stat` around each run. The whole machine
//! is 2 cores: client, upstream and proxy share them, as they would not in production.

mod denials;
mod floor;
mod load;
mod upstream;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use load::{pct, Answer, MakeRequest, Run};
use warden::adapters::client::Client;
use warden::adapters::http::wire::RegisterRequest;

const OPERATOR: &str = "bench-operator-token-0123";
/// Agents the tool and stream runs spread their requests over (one agent's actor is serial).
const AGENTS: usize = 100;
const POLICY: &str = include_str!("policy.yaml");
/// LiteLLM's master key (it refuses to start without one); its clients send it.
const LITELLM_KEY: &str = "sk-bench-litellm-master-key-0123456789";

/// `key=value` options.
pub struct Opts(BTreeMap<String, String>);

impl Opts {
    fn get<T: std::str::FromStr>(&self, key: &str, default: T) -> T {
        self.0
            .get(key)
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    }
    fn list(&self, key: &str, default: &str) -> Vec<u64> {
        self.0
            .get(key)
            .map_or(default, String::as_str)
            .split(',')
            .filter_map(|x| x.trim().parse().ok())
            .collect()
    }
    fn text(&self, key: &str, default: &str) -> String {
        self.0
            .get(key)
            .cloned()
            .unwrap_or_else(|| default.to_string())
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    // The bench's own child process: the HTTP floor (see `floor`).
    if let [role, listen, up] = args.as_slice() {
        if role == "floor-proxy" {
            let parse = |a: &str| a.parse().unwrap_or_else(|e| panic!("{a}: {e}"));
            return floor::run(parse(listen), parse(up));
        }
    }
    // `cargo test --all-targets` runs bench targets without `--bench`: nothing to do there.
    if !args.iter().any(|a| a == "--bench") {
        println!("benches/proxy runs under `cargo bench --bench proxy -- tool|llm|denials|all`");
        return;
    }
    let args: Vec<String> = args.into_iter().filter(|a| a != "--bench").collect();
    let part = args
        .iter()
        .find(|a| !a.contains('='))
        .cloned()
        .unwrap_or_else(|| "all".into());
    let opts = Opts(
        args.iter()
            .filter_map(|a| a.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    );
    raise_fd_limit();
    let up = upstream::start();
    println!("# benches/proxy, part `{part}`");
    println!("machine: {}", machine());
    match part.as_str() {
        "tool" => tool(&opts, up),
        "llm" => llm(&opts, up),
        "denials" => denials::run(&opts, up),
        "all" => {
            tool(&opts, up);
            llm(&opts, up);
            denials::run(&opts, up);
        }
        other => eprintln!("unknown part {other}: tool, llm, denials or all"),
    }
}

fn raise_fd_limit() {
    // SAFETY: getrlimit/setrlimit on this process's own file-descriptor limit.
    unsafe {
        let mut r = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) == 0 {
            r.rlim_cur = r.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &r);
        }
    }
}

/// Cores, memory, kernel, load average, when.
fn machine() -> String {
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    let cpu = read("/proc/cpuinfo")
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|l| l.trim_start_matches([' ', '\t', ':']).to_string())
        .unwrap_or_default();
    let mem = read("/proc/meminfo")
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .nth(1)
        .and_then(|k| k.parse::<u64>().ok())
        .unwrap_or(0);
    let date = Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M:%S UTC"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    format!(
        "{} cores ({cpu}), {:.1} GiB, kernel {}, load average {}, {date}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        mem as f64 / (1 << 20) as f64,
        read("/proc/sys/kernel/osrelease").trim(),
        read("/proc/loadavg")
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" "),
    )
}

/// CPU time (user + system) of a process and its threads, µs.
fn cpu_us(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<u64> = after
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    // After the command's `)`: state is field 0, utime 11, stime 12.
    let ticks = f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0);
    // SAFETY: sysconf reads a constant.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    ticks * 1_000_000 / hz
}

/// A process and its children (nginx's workers), by pid.
fn family(pid: u32) -> Vec<u32> {
    let mut out = vec![pid];
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for e in dir.flatten() {
            let Some(p) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
                continue;
            };
            let stat = std::fs::read_to_string(format!("/proc/{p}/stat")).unwrap_or_default();
            let ppid = stat
                .rsplit_once(')')
                .and_then(|(_, r)| r.split_whitespace().nth(1))
                .and_then(|x| x.parse::<u32>().ok());
            if ppid == Some(pid) {
                out.push(p);
            }
        }
    }
    out
}

fn cpu_of(pids: &[u32]) -> u64 {
    pids.iter().map(|p| cpu_us(*p)).sum()
}

/// Context switches (voluntary + involuntary) of every thread of the processes.
fn switches_of(pids: &[u32]) -> u64 {
    let mut n = 0;
    for pid in pids {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
            continue;
        };
        for t in tasks.flatten() {
            let status = std::fs::read_to_string(t.path().join("status")).unwrap_or_default();
            n += status
                .lines()
                .filter(|l| l.contains("ctxt_switches:"))
                .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
                .sum::<u64>();
        }
    }
    n
}

fn free_port() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

fn wait_listening(addr: SocketAddr, within: Duration) -> bool {
    let until = Instant::now() + within;
    while std::net::TcpStream::connect(addr).is_err() {
        if Instant::now() > until {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    true
}

fn stop(child: &mut Child) {
    // SAFETY: a signal to a child this process started.
    unsafe {
        libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
    }
    let until = Instant::now() + Duration::from_secs(15);
    while Instant::now() < until {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// A temporary directory for one part's processes.
fn scratch(name: &str) -> PathBuf {
    let dir =
        std::env::temp_dir().join(format!("warden-proxy-bench-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A running `warden node`.
pub struct Node {
    child: Child,
    pub addr: SocketAddr,
    pub base: String,
    dir: PathBuf,
}

impl Node {
    /// Starts the release binary with the bench policy, `fsync`, and both upstreams.
    pub fn start(name: &str, fsync: &str, up: SocketAddr) -> Node {
        let dir = scratch(name);
        let policy = dir.join("policy.yaml");
        // `WARDEN_BENCH_POLICY`: another policy, to see what the policy's rules cost.
        let text = std::env::var("WARDEN_BENCH_POLICY")
            .map(|p| std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{p}: {e}")))
            .unwrap_or_else(|_| POLICY.to_string());
        std::fs::write(&policy, text).unwrap();
        let config = dir.join("node.yaml");
        std::fs::write(
            &config,
            format!(
                "fsync: {fsync}\nlimits: {{max_connections: 16384}}\nupstreams:\n  \
                 search: {{url: \"http://{up}\", headers: {{x-api-key: \"sk-bench-search-key\"}}, max_in_flight: 16384}}\n  \
                 llm: {{url: \"http://{up}/v1\", kind: openai, headers: {{authorization: \"Bearer sk-bench-llm-key\"}}, max_in_flight: 16384}}\n\
                 prices:\n  \
                 bench-mini: {{upstream: llm, input: 0.15, output: 0.60, max_output_tokens: 16384}}\n  \
                 bench-large: {{upstream: llm, input: 2.50, output: 10.00, max_output_tokens: 16384}}\n"
            ),
        )
        .unwrap();
        // `WARDEN_BENCH_BIN`: another build of the node, to compare two in one sitting.
        let bin = std::env::var("WARDEN_BENCH_BIN")
            .unwrap_or_else(|_| env!("CARGO_BIN_EXE_warden").to_string());
        let mut child = Command::new(bin)
            .args(["node", "--listen", "127.0.0.1:0", "--data"])
            .arg(dir.join("data"))
            .arg("--policy")
            .arg(&policy)
            .arg("--config")
            .arg(&config)
            .env("WARDEN_OPERATOR_TOKEN", OPERATOR)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("the warden binary starts");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let first = lines.next().unwrap().unwrap();
        let base = first
            .strip_prefix("warden node listening on ")
            .expect("address line")
            .to_string();
        std::thread::spawn(move || for _ in lines {});
        let addr = base.strip_prefix("http://").unwrap().parse().unwrap();
        Node {
            child,
            addr,
            base,
            dir,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn operator(&self) -> Client {
        Client::new(self.base.clone(), OPERATOR).with_timeout(Duration::from_secs(10))
    }

    /// Registers `n` agents `{prefix}{i}` in `pool`; their tokens.
    pub fn agents(&self, prefix: &str, pool: &str, n: usize) -> Vec<String> {
        let op = self.operator();
        (0..n)
            .map(|i| {
                let id = format!("{prefix}{i}");
                let a = op
                    .register(&RegisterRequest {
                        id: Some(id.clone()),
                        pool: Some(pool.to_string()),
                        ..Default::default()
                    })
                    .unwrap_or_else(|e| panic!("registering {id}: {e}"));
                a.token.expect("a token")
            })
            .collect()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        stop(&mut self.child);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The HTTP floor ([`floor`]): this bench binary again, as a child process.
struct Floor {
    child: Child,
    addr: SocketAddr,
}

impl Floor {
    fn start(up: SocketAddr) -> Floor {
        let addr = free_port();
        let exe = std::env::current_exe().expect("the bench's own path");
        let child = Command::new(exe)
            .args(["floor-proxy", &addr.to_string(), &up.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("starting the floor proxy");
        assert!(
            wait_listening(addr, Duration::from_secs(10)),
            "the floor proxy did not start listening on {addr}"
        );
        println!("floor: warden's HTTP stack and forward client, nothing governed ({addr})");
        Floor { child, addr }
    }
}

impl Drop for Floor {
    fn drop(&mut self) {
        stop(&mut self.child);
    }
}

/// nginx as a plain reverse proxy to `up`, keep-alive to it, 2 workers, no access log.
struct Nginx {
    child: Child,
    addr: SocketAddr,
    dir: PathBuf,
}

impl Nginx {
    fn start(up: SocketAddr) -> Option<Nginx> {
        let bin = "/usr/sbin/nginx";
        if !Path::new(bin).exists() {
            println!("nginx: not installed ({bin}); `apt-get install nginx` to compare");
            return None;
        }
        let dir = scratch("nginx");
        let addr = free_port();
        let conf = format!(
            "worker_processes 2;\npid {d}/nginx.pid;\nerror_log {d}/error.log warn;\n\
             events {{ worker_connections 16384; }}\n\
             http {{\n  access_log off;\n  keepalive_requests 100000000;\n  keepalive_timeout 300s;\n\
             client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n\
             upstream bench {{ server {up}; keepalive 256; keepalive_requests 100000000; keepalive_timeout 300s; }}\n\
             server {{\n    listen {addr};\n    location / {{\n      proxy_pass http://bench;\n\
             proxy_http_version 1.1;\n      proxy_set_header Connection \"\";\n    }}\n  }}\n}}\n",
            d = dir.display()
        );
        std::fs::write(dir.join("nginx.conf"), conf).unwrap();
        let child = Command::new(bin)
            .arg("-p")
            .arg(&dir)
            .arg("-c")
            .arg(dir.join("nginx.conf"))
            .args(["-g", "daemon off;"])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .ok()?;
        assert!(
            wait_listening(addr, Duration::from_secs(10)),
            "nginx did not start listening on {addr}"
        );
        let version = Command::new(bin)
            .arg("-v")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stderr).trim().to_string())
            .unwrap_or_default();
        println!("nginx: {version}, 2 workers, keepalive 256 to the upstream");
        Some(Nginx { child, addr, dir })
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        stop(&mut self.child);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// One line of a run: latency from due (µs) and from send, what it achieved, CPU.
struct Line {
    target: String,

    achieved: f64,
    due: Vec<u64>,
    send: Vec<u64>,
    late: usize,
    failures: usize,
    all_failures: usize,
    first_failure: Option<String>,
    cpu_per_req: Option<f64>,
    switches_per_req: Option<f64>,
    client_cpu_per_req: f64,
}

impl Line {
    fn from(
        target: &str,
        run: Run,
        seconds: f64,
        cpu: Option<(u64, u64)>,
        client_cpu: u64,
    ) -> Line {
        let mut due: Vec<u64> = run.samples.iter().map(|s| s.done - s.due).collect();
        let mut send: Vec<u64> = run.samples.iter().map(|s| s.done - s.sent).collect();
        due.sort_unstable();
        send.sort_unstable();
        let late = run
            .samples
            .iter()
            .filter(|s| s.sent - s.due > 1_000_000)
            .count();
        Line {
            target: target.to_string(),
            achieved: run.samples.len() as f64 / seconds,
            due,
            send,
            late,
            // Unexpected answers among the measured requests (warm-up's are in `first_failure`).
            failures: run.samples.iter().filter(|s| !s.ok).count(),
            all_failures: run.failures,
            first_failure: run.first_failure,
            cpu_per_req: cpu.map(|c| c.0 as f64 / run.sent as f64),
            switches_per_req: cpu.map(|c| c.1 as f64 / run.sent as f64),
            client_cpu_per_req: client_cpu as f64 / run.sent as f64,
        }
    }

    fn print(&self, label: &str) {
        println!(
            "| {label} | {} | {:.0}/s | {:.0} / {:.0} / {:.0} / {:.0} / {:.0} | {:.0} / {:.0} | {} | {} | {} | {} | {:.1} |",
            self.target,
            self.achieved,
            pct(&self.due, 0.5),
            pct(&self.due, 0.9),
            pct(&self.due, 0.99),
            pct(&self.due, 0.999),
            self.due.last().copied().unwrap_or(0) as f64 / 1_000.0,
            pct(&self.send, 0.5),
            pct(&self.send, 0.99),
            self.late,
            self.failures,
            self.cpu_per_req
                .map_or("—".to_string(), |c| format!("{c:.1}")),
            self.switches_per_req
                .map_or("—".to_string(), |c| format!("{c:.1}")),
            self.client_cpu_per_req,
        );
        if let Some(f) = &self.first_failure {
            println!(
                "|   first failure ({} in all, warm-up included): {} |",
                self.all_failures,
                &f[..f.len().min(400)]
            );
        }
    }
}

fn tool_request(prefix: &'static str, host: SocketAddr, tokens: Arc<Vec<String>>) -> MakeRequest {
    Arc::new(move |k| {
        let token = &tokens[(k as usize) % tokens.len()];
        let body = format!(r#"{{"q":"rust async runtime benchmark {k}","page":1}}"#);
        format!(
            "POST {prefix}/search HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .into_bytes()
    })
}

fn tool_ok(a: &Answer) -> bool {
    a.status == 200 && a.body == upstream::TOOL_ANSWER
}

/// Part 1: the tool proxy's added latency (open loop), its CPU per request, and the most it
/// serves (closed loop), against the upstream directly and nginx.
fn tool(opts: &Opts, up: SocketAddr) {
    let rates = opts.list("rates", "1000,10000");
    let seconds: f64 = opts.get("seconds", 10.0);
    let warmup: f64 = opts.get("warmup", 2.0);
    let rounds: usize = opts.get("rounds", 1);
    let conns: usize = opts.get("conns", 64);
    let tp_conns: usize = opts.get("tp_conns", 64);
    let tp_seconds: f64 = opts.get("tp_seconds", 10.0);
    let fsync = opts.text("fsync", "always");
    let node = Node::start("tool", &fsync, up);
    let tokens = Arc::new(node.agents("s", "swarm/scouts", AGENTS));
    let nginx = Nginx::start(up);
    let floor = (opts.text("floor", "on") == "on").then(|| Floor::start(up));
    println!(
        "\n## Tool proxy, open loop ({conns} connections, {AGENTS} agents, fsync {fsync}, {warmup} s warm-up + {seconds} s measured per line)\n"
    );
    println!("latency µs: from the due time p50 / p90 / p99 / p99.9 / max, and from the actual send p50 / p99; `late` = sent > 1 ms after due; CPU µs per request of the proxy process (all its threads) and of this process (client + upstream)\n");
    println!("| rate | target | achieved | from due p50 / p90 / p99 / p99.9 / max | from send p50 / p99 | late | failed | proxy CPU µs/req | proxy context switches/req | client+upstream CPU µs/req |");
    println!("|---|---|---|---|---|---|---|---|---|---|");
    let mut targets: Vec<(&str, SocketAddr, &'static str, Option<Vec<u32>>)> = vec![
        ("direct", up, "", None),
        (
            "warden",
            node.addr,
            "/proxy/web.search",
            Some(vec![node.pid()]),
        ),
    ];
    if let Some(f) = &floor {
        targets.push((
            "floor",
            f.addr,
            "/proxy/web.search",
            Some(vec![f.child.id()]),
        ));
    }
    if let Some(n) = &nginx {
        targets.push(("nginx", n.addr, "", Some(family(n.child.id()))));
    }
    // (rate, round, [(target, p50 µs, p99 µs)])
    type Percentiles = Vec<(String, f64, f64)>;
    let mut summary: Vec<(u64, usize, Percentiles)> = Vec::new();
    for round in 1..=rounds {
        for &rate in &rates {
            let mut rows = Vec::new();
            for (name, addr, prefix, pids) in &targets {
                let make = tool_request(prefix, *addr, tokens.clone());
                let before = pids.as_ref().map(|p| (cpu_of(p), switches_of(p)));
                let me = cpu_us(std::process::id());
                let run =
                    load::open_loop(*addr, rate as f64, warmup, seconds, conns, make, tool_ok);
                let cpu = pids
                    .as_ref()
                    .zip(before)
                    .map(|(p, b)| (cpu_of(p) - b.0, switches_of(p) - b.1));
                let line = Line::from(name, run, seconds, cpu, cpu_us(std::process::id()) - me);
                line.print(&format!("{rate}/s (round {round})"));
                rows.push((name.to_string(), pct(&line.due, 0.5), pct(&line.due, 0.99)));
            }
            summary.push((rate, round, rows));
        }
    }
    println!("\n### Added latency (proxy minus direct, same rate and round; differences of percentiles, µs)\n");
    println!("| rate | round | warden added p50 / p99 | floor added p50 / p99 | nginx added p50 / p99 | warden/nginx p50 / p99 | floor/nginx p50 / p99 |");
    println!("|---|---|---|---|---|---|---|");
    for (rate, round, rows) in &summary {
        let added = |n: &str| {
            let d = rows.iter().find(|r| r.0 == "direct")?;
            let p = rows.iter().find(|r| r.0 == n)?;
            Some((p.1 - d.1, p.2 - d.2))
        };
        let show =
            |a: Option<(f64, f64)>| a.map_or("—".into(), |a| format!("{:.0} / {:.0}", a.0, a.1));
        let ratio = |a: Option<(f64, f64)>, b: Option<(f64, f64)>| match (a, b) {
            (Some(a), Some(b)) => format!("{:.2}x / {:.2}x", a.0 / b.0, a.1 / b.1),
            _ => "—".into(),
        };
        let (w, f, n) = (added("warden"), added("floor"), added("nginx"));
        println!(
            "| {rate}/s | {round} | {} | {} | {} | {} | {} |",
            show(w),
            show(f),
            show(n),
            ratio(w, n),
            ratio(f, n)
        );
    }
    println!("\n## Maximum throughput, closed loop ({tp_conns} connections, 1 s warm-up + {tp_seconds} s)\n");
    println!("| target | answered/s | latency p50 / p99 µs | failed | proxy CPU µs/req | proxy context switches/req | client+upstream CPU µs/req |");
    println!("|---|---|---|---|---|---|---|");
    for (name, addr, prefix, pids) in &targets {
        let make = tool_request(prefix, *addr, tokens.clone());
        let before = pids.as_ref().map(|p| (cpu_of(p), switches_of(p)));
        let me = cpu_us(std::process::id());
        let run = load::closed_loop(*addr, tp_conns, 1.0, tp_seconds, make, tool_ok);
        let cpu = pids
            .as_ref()
            .zip(before)
            .map(|(p, b)| (cpu_of(p) - b.0, switches_of(p) - b.1));
        let line = Line::from(name, run, tp_seconds, cpu, cpu_us(std::process::id()) - me);
        println!(
            "| {name} | {:.0} | {:.0} / {:.0} | {} | {} | {} | {:.1} |",
            line.achieved,
            pct(&line.send, 0.5),
            pct(&line.send, 0.99),
            line.failures,
            line.cpu_per_req
                .map_or("—".to_string(), |c| format!("{c:.1}")),
            line.switches_per_req
                .map_or("—".to_string(), |c| format!("{c:.1}")),
            line.client_cpu_per_req
        );
        if let Some(f) = &line.first_failure {
            println!("|   first failure: {} |", &f[..f.len().min(400)]);
        }
    }
    println!(
        "\nconnections re-opened by the client: {}",
        load::RECONNECTS.load(std::sync::atomic::Ordering::Relaxed)
    );
    drop(nginx);
    drop(floor);
    drop(node);
}

/// A LiteLLM proxy in front of the fake model, if its binary is there.
struct LiteLlm {
    child: Child,
    addr: SocketAddr,
    dir: PathBuf,
}

impl LiteLlm {
    fn start(bin: &str, up: SocketAddr) -> Option<LiteLlm> {
        if !Path::new(bin).exists() {
            println!("LiteLLM: no {bin}; not compared");
            return None;
        }
        let dir = scratch("litellm");
        let addr = free_port();
        std::fs::write(
            dir.join("config.yaml"),
            format!(
                "model_list:\n  - model_name: bench-mini\n    litellm_params:\n      model: openai/bench-mini\n      api_base: http://{up}/v1\n      api_key: sk-bench-llm-key\n\
                 general_settings:\n  master_key: {LITELLM_KEY}\n"
            ),
        )
        .unwrap();
        let mut child = Command::new(bin)
            .arg("--config")
            .arg(dir.join("config.yaml"))
            .args([
                "--host",
                "127.0.0.1",
                "--port",
                &addr.port().to_string(),
                "--num_workers",
                "1",
            ])
            .env("LITELLM_LOCAL_MODEL_COST_MAP", "True")
            .env("LITELLM_TELEMETRY", "False")
            .env("LITELLM_LOG", "ERROR")
            .env("NO_PROXY", "*")
            .current_dir(&dir)
            .stdout(std::fs::File::create(dir.join("out.log")).unwrap())
            .stderr(std::fs::File::create(dir.join("err.log")).unwrap())
            .spawn()
            .ok()?;
        let until = Instant::now() + Duration::from_secs(180);
        let mut up_and_running = false;
        while Instant::now() < until && matches!(child.try_wait(), Ok(None)) {
            if wait_listening(addr, Duration::from_secs(1)) {
                up_and_running = true;
                break;
            }
        }
        if !up_and_running {
            stop(&mut child);
            let err = std::fs::read_to_string(dir.join("err.log")).unwrap_or_default();
            let tail: Vec<&str> = err.lines().rev().take(5).collect();
            println!("LiteLLM: did not start; not compared. Its last lines: {tail:?}");
            return None;
        }
        let version = Command::new(Path::new(bin).with_file_name("python"))
            .args([
                "-c",
                "import importlib.metadata as m; print(m.version('litellm'))",
            ])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default();
        println!("LiteLLM: {version}, proxy with 1 worker (uvicorn), the fake model as an openai-compatible model");
        Some(LiteLlm { child, addr, dir })
    }
}

impl Drop for LiteLlm {
    fn drop(&mut self) {
        stop(&mut self.child);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn chat_request(host: SocketAddr, tokens: Arc<Vec<String>>) -> MakeRequest {
    Arc::new(move |k| {
        let token = &tokens[(k as usize) % tokens.len()];
        let body = format!(
            r#"{{"model":"bench-mini","messages":[{{"role":"system","content":"You are a concise research assistant."}},{{"role":"user","content":"Summarise finding {k} in one paragraph."}}],"max_tokens":256,"stream":true}}"#
        );
        format!(
            "POST /v1/chat/completions HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nAccept: text/event-stream\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .into_bytes()
    })
}

/// Part 2: streamed chat completions through the LLM proxy (and LiteLLM) against the fake
/// model directly: time to first token, each frame's transit, concurrent streams.
fn llm(opts: &Opts, up: SocketAddr) {
    use std::sync::atomic::Ordering;
    let levels = opts.list("streams", "1,64,512,1024");
    let chunks: u64 = opts.get("chunks", 20);
    let chunk_ms: u64 = opts.get("chunk_ms", 20);
    let seconds: f64 = opts.get("seconds", 10.0);
    let warmup: f64 = opts.get("warmup", 2.0);
    let fsync = opts.text("fsync", "always");
    let litellm_bin = opts.text("litellm", "/work/litellm-venv/bin/litellm");
    let litellm_max: u64 = opts.get("litellm_max", 512);
    upstream::CHUNKS.store(chunks, Ordering::Relaxed);
    upstream::CHUNK_DELAY_US.store(chunk_ms * 1_000, Ordering::Relaxed);
    let node = Node::start("llm", &fsync, up);
    let tokens = Arc::new(node.agents("l", "swarm/llm", AGENTS));
    let lite = LiteLlm::start(&litellm_bin, up);
    let spread = Duration::from_millis(chunks * chunk_ms);
    println!(
        "\n## LLM proxy, streamed chat completions ({chunks} content chunks {chunk_ms} ms apart, the first at once; {AGENTS} agents; fsync {fsync}; {warmup} s warm-up + {seconds} s per line; each client streams one answer after another on a kept-alive connection)\n"
    );
    println!("TTFT = request sent → first content frame received; frame transit = frame received − the upstream's send stamp in it (µs)\n");
    println!("| streams | target | streams done | failed | TTFT p50 / p99 | frame transit p50 / p99 / p99.9 | proxy CPU µs/stream |");
    println!("|---|---|---|---|---|---|---|");
    let mut added = Vec::new();
    for &s in &levels {
        let mut targets: Vec<(&str, SocketAddr, Option<u32>)> = vec![
            ("direct", up, None),
            ("warden", node.addr, Some(node.pid())),
        ];
        if let Some(l) = &lite {
            if s <= litellm_max {
                targets.push(("litellm", l.addr, Some(l.child.id())));
            }
        }
        let mut rows = Vec::new();
        for (name, addr, pid) in targets {
            let keys = if name == "litellm" {
                Arc::new(vec![LITELLM_KEY.to_string()])
            } else {
                tokens.clone()
            };
            let make = chat_request(addr, keys);
            let before = pid.map(|p| cpu_of(&family(p)));
            let (samples, failed, first) = load::streams(
                addr,
                s as usize,
                warmup,
                seconds,
                spread,
                chunks as usize,
                Duration::from_secs(60),
                make,
            );
            let cpu = pid.map(|p| cpu_of(&family(p)) - before.unwrap_or(0));
            let mut ttft: Vec<u64> = samples
                .iter()
                .filter(|x| x.ok)
                .filter_map(|x| x.first.map(|f| f - x.sent))
                .collect();
            let mut transit: Vec<u64> = samples
                .iter()
                .filter(|x| x.ok)
                .flat_map(|x| x.frames.iter().map(|(stamp, at)| at.saturating_sub(*stamp)))
                .collect();
            ttft.sort_unstable();
            transit.sort_unstable();
            let done = samples.iter().filter(|x| x.ok).count();
            // CPU over the whole run (warm-up included) per stream started in it: an
            // estimate, the warm-up's streams are not counted.
            let per_stream = cpu
                .map(|c| c as f64 / (samples.len().max(1) as f64 * (warmup + seconds) / seconds));
            println!(
                "| {s} | {name} | {done} | {failed} | {:.0} / {:.0} | {:.0} / {:.0} / {:.0} | {} |",
                pct(&ttft, 0.5),
                pct(&ttft, 0.99),
                pct(&transit, 0.5),
                pct(&transit, 0.99),
                pct(&transit, 0.999),
                per_stream.map_or("—".into(), |c| format!("{c:.0}")),
            );
            if let Some(f) = first {
                println!("|   first failure: {} |", &f[..f.len().min(400)]);
            }
            rows.push((
                name,
                pct(&ttft, 0.5),
                pct(&ttft, 0.99),
                pct(&transit, 0.5),
                pct(&transit, 0.99),
            ));
        }
        added.push((s, rows));
    }
    println!("\n### Added by the proxy (minus direct at the same concurrency; differences of percentiles, µs)\n");
    println!("| streams | proxy | added TTFT p50 / p99 | added frame transit p50 / p99 |");
    println!("|---|---|---|---|");
    for (s, rows) in &added {
        let Some(d) = rows.iter().find(|r| r.0 == "direct") else {
            continue;
        };
        for r in rows.iter().filter(|r| r.0 != "direct") {
            println!(
                "| {s} | {} | {:.0} / {:.0} | {:.0} / {:.0} |",
                r.0,
                r.1 - d.1,
                r.2 - d.2,
                r.3 - d.3,
                r.4 - d.4
            );
        }
    }
    drop(lite);
    drop(node);
}
