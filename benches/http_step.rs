//! HTTP step round trip against the real `warden node` binary on loopback, open loop.
//!
//! The node runs as its own process (release build, journal on this machine's disk, the
//! given fsync mode). The client keeps a target rate: request k of the run is due at
//! `t0 + k / rate`, and its latency counts from that due time, so a slow answer delays the
//! clock of the measurement, not the schedule (no coordinated omission). That figure also
//! holds the client's own timer lateness (tokio's timer has 1 ms resolution, so requests go
//! out up to ~2 ms after they are due); the second line is the service time from the actual
//! send, with a count of requests sent more than 2 ms late (those waited for their
//! connection, i.e. for the node). The client is one
//! thread of raw HTTP/1.1 over 64 kept-alive connections (request k on connection k mod 64),
//! so it costs little of the machine's two cores. Every request is
//! `POST /v1/agents/{id}/steps` with the agent's own token over a kept-alive connection, and
//! every answer is checked to be a 200 `allow`.
//!
//! The setup (registering the agents, reading their tokens) goes through the typed client of
//! the `/v1` API (`warden::adapters::client`), as the CLI and the end-to-end tests do; the
//! measured load does not, on purpose: it is what is measured, and raw requests on connections
//! kept alive by hand keep the client's own cost and connection handling out of the figures.
//!
//! Run: `cargo bench --bench http_step` (10,000 req/s, fsync always, 10 s) or
//! `cargo bench --bench http_step -- RATE SECONDS FSYNC` e.g. `-- 1000 10 batch`.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use warden::adapters::client::Client;
use warden::adapters::http::wire::RegisterRequest;

const OPERATOR: &str = "bench-operator-token-0123";
const AGENTS: usize = 1_000;
/// Kept-alive connections (each one request at a time, as an agent's client would).
const CONNECTIONS: usize = 64;

const POLICY: &str = r#"version: 1
defaults:
  budgets: {steps: 1000000000, tokens: 1000000000000}
  stagnation: {repeat_limit: 1000, window: 1000}
pools:
  - {path: swarm, limits: {tokens: 1000000000000}}
tools:
  work: {action: read}
rules:
  - {id: no-rm, match: {tool: work, args: {cmd: {regex: 'rm\s+-rf'}}}, decision: deny}
"#;

/// The whole run in order: start the node, register the agents, open the connections, send
/// on the open-loop schedule, stop the node, print one table row. One piece on purpose: the
/// schedule's clock, the connections and the per-request samples live across all of it, and
/// the order of what is timed is the measurement.
fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let rate: f64 = args
        .first()
        .and_then(|a| a.parse().ok())
        .unwrap_or(10_000.0);
    let seconds: f64 = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(10.0);
    let fsync = args.get(2).cloned().unwrap_or_else(|| "always".into());

    let dir = std::env::temp_dir().join(format!("warden-http-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let policy = dir.join("policy.yaml");
    std::fs::write(&policy, POLICY).unwrap();
    let config = dir.join("node.yaml");
    std::fs::write(&config, format!("fsync: {fsync}\n")).unwrap();
    let mut node = Command::new(env!("CARGO_BIN_EXE_warden"))
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
    let mut lines = BufReader::new(node.stdout.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    let base = first
        .strip_prefix("warden node listening on ")
        .expect("address line")
        .to_string();
    std::thread::spawn(move || for _ in lines {});

    let operator = Client::new(base.clone(), OPERATOR).with_timeout(Duration::from_secs(10));
    let mut agents = Vec::new();
    for i in 0..AGENTS {
        let id = format!("b{i}");
        let request = RegisterRequest {
            id: Some(id.clone()),
            ..Default::default()
        };
        let agent = operator
            .register(&request)
            .unwrap_or_else(|e| panic!("registering {id}: {e}"));
        let token = agent
            .token
            .unwrap_or_else(|| panic!("registering {id}: the answer has no token"));
        agents.push((id, token));
    }
    let agents = Arc::new(agents);

    let warmup = 2.0;
    let total = ((warmup + seconds) * rate) as u64;
    let addr: std::net::SocketAddr = base.strip_prefix("http://").unwrap().parse().unwrap();
    // The load generator: one thread, one tokio task per connection, raw HTTP/1.1 (a few
    // µs of client CPU per request, so the node, not the client, is what is measured). Not
    // the typed client: its cost and its connection pool would be measured with the node.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let started = Instant::now();
    let (latencies, failures) = rt.block_on(async {
        let t0 = tokio::time::Instant::now() + Duration::from_millis(200);
        let mut tasks = Vec::new();
        for c in 0..CONNECTIONS {
            let agents = Arc::clone(&agents);
            tasks.push(tokio::spawn(async move {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
                conn.set_nodelay(true).unwrap();
                let mut lat = Vec::new();
                let mut failed = Vec::new();
                let mut buf = Vec::with_capacity(4096);
                let mut k = c as u64;
                while k < total {
                    let due = t0 + Duration::from_secs_f64(k as f64 / rate);
                    tokio::time::sleep_until(due).await;
                    let sent = tokio::time::Instant::now();
                    let (id, token) = &agents[(k as usize) % agents.len()];
                    let body = format!(
                        r#"{{"tool":"work","action":"read","args":{{"k":{k}}},"cost":{{"tokens":10}}}}"#
                    );
                    let req = format!(
                        "POST /v1/agents/{id}/steps HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                        body.len()
                    );
                    conn.write_all(req.as_bytes()).await.unwrap();
                    buf.clear();
                    let (head_end, len) = loop {
                        let mut chunk = [0u8; 4096];
                        let n = conn.read(&mut chunk).await.unwrap();
                        assert!(n > 0, "the node closed the connection");
                        buf.extend_from_slice(&chunk[..n]);
                        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            let head = String::from_utf8_lossy(&buf[..i]).to_ascii_lowercase();
                            let len: usize = head
                                .lines()
                                .find_map(|l| l.strip_prefix("content-length:"))
                                .and_then(|v| v.trim().parse().ok())
                                .unwrap_or(0);
                            break (i + 4, len);
                        }
                    };
                    while buf.len() < head_end + len {
                        let mut chunk = [0u8; 4096];
                        let n = conn.read(&mut chunk).await.unwrap();
                        assert!(n > 0, "the node closed the connection");
                        buf.extend_from_slice(&chunk[..n]);
                    }
                    let done = tokio::time::Instant::now();
                    let text = String::from_utf8_lossy(&buf[..head_end + len]);
                    if !text.starts_with("HTTP/1.1 200") || !text.contains(r#""decision":"allow""#) {
                        failed.push(text.to_string());
                    }
                    if due >= t0 + Duration::from_secs_f64(warmup) {
                        lat.push(((done - due).as_nanos() as u64, (done - sent).as_nanos() as u64));
                    }
                    k += CONNECTIONS as u64;
                }
                (lat, failed)
            }));
        }
        let mut all = Vec::with_capacity(total as usize);
        let mut failures = Vec::new();
        for t in tasks {
            let (l, f) = t.await.unwrap();
            all.extend(l);
            failures.extend(f);
        }
        (all, failures)
    });
    let elapsed = started.elapsed().as_secs_f64();
    let _ = Command::new("kill")
        .args(["-TERM", &node.id().to_string()])
        .status();
    let status = node.wait().unwrap();

    let mut l: Vec<u64> = latencies.iter().map(|x| x.0).collect();
    let mut service: Vec<u64> = latencies.iter().map(|x| x.1).collect();
    l.sort_unstable();
    service.sort_unstable();
    let spct = |p: f64| {
        service[((service.len() as f64 * p) as usize).min(service.len() - 1)] as f64 / 1_000.0
    };
    let pct = |p: f64| l[((l.len() as f64 * p) as usize).min(l.len() - 1)] as f64 / 1_000.0;
    println!(
        "| {rate:.0} req/s target, fsync {fsync} | {:.0} req/s achieved | {} measured | p50 {:.0} µs | p90 {:.0} µs | p99 {:.0} µs | p99.9 {:.0} µs | max {:.0} µs | {} not allowed/failed | node exit {:?} |",
        total as f64 / elapsed,
        l.len(),
        pct(0.50),
        pct(0.90),
        pct(0.99),
        pct(0.999),
        *l.last().unwrap() as f64 / 1_000.0,
        failures.len(),
        status.code(),
    );
    // A request sent more than 2 ms after it was due waited for its connection (the node
    // was slow), not only for the client's 1 ms timer: if there are few, the from-send
    // figures are not hiding queueing.
    let late = latencies.iter().filter(|x| x.0 - x.1 > 2_000_000).count();
    println!(
        "|   from send (service time; {late} of {} sent > 2 ms late) | | | p50 {:.0} µs | p90 {:.0} µs | p99 {:.0} µs | p99.9 {:.0} µs | max {:.0} µs | | |",
        latencies.len(),
        spct(0.50),
        spct(0.90),
        spct(0.99),
        spct(0.999),
        *service.last().unwrap() as f64 / 1_000.0
    );
    if let Some(f) = failures.first() {
        println!("first failure: {f}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
