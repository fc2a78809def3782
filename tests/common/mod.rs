//! What the end-to-end tests share: starting the real `warden node` binary, talking to it
//! through the typed client of its `/v1` API (`warden::adapters::client`, the one the CLI and
//! the benchmarks use), and waiting for an event with a bound instead of sleeping.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
pub use warden::adapters::client::{Body, Client};

pub mod cluster;
pub mod moto;
pub mod postgres;

/// A TCP port on 127.0.0.1 that nothing listens on now, for a server a test starts itself
/// (Prometheus, PostgreSQL, moto's S3, ChromeDriver) or an address that must refuse
/// connections: see [`private_port`].
#[allow(dead_code)] // each test crate compiles this module; not all of them start servers
pub fn free_port() -> u16 {
    private_port(|port| std::net::TcpListener::bind(("127.0.0.1", port)).is_ok())
}

/// A port of 127.0.0.1 that `bindable` accepts, chosen below the kernel's ephemeral range
/// (32768–60999 on Linux), so no `bind(127.0.0.1:0)` in the run (a node's, a test upstream's)
/// can be handed the same port between this check and the server's own bind, as a port from
/// `bind(0)` can. Spread by process id and a counter. Panics if none of 12,000 is bindable.
#[allow(dead_code)] // each test crate compiles this module; not all of them start servers
pub fn private_port(bindable: impl Fn(u16) -> bool) -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    const LOW: u32 = 20_000;
    const SPAN: u32 = 12_000;
    let base = std::process::id().wrapping_mul(2_654_435_761) % SPAN;
    for _ in 0..SPAN {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        // 7 and 12,000 are coprime: the steps visit every port of the span.
        let port = (LOW + (base + n.wrapping_mul(7)) % SPAN) as u16;
        if bindable(port) {
            return port;
        }
    }
    panic!("no bindable port in 20000..32000 on 127.0.0.1");
}

/// The `warden` binary the tests start: the package's own (`$WARDEN_BIN` overrides it).
#[allow(dead_code)] // each test crate compiles this module; not all of them start the binary
pub fn warden_bin() -> std::ffi::OsString {
    std::env::var_os("WARDEN_BIN").unwrap_or_else(|| env!("CARGO_BIN_EXE_warden").into())
}
use warden::adapters::http::wire::{AgentView, RegisterRequest};

/// Starts `warden node --listen 127.0.0.1:0 --data DIR` with `extra` arguments after it and
/// `WARDEN_OPERATOR_TOKEN=operator`, waits for its first line (`warden node listening on
/// http://ADDR`), and returns the process and its base URL. Its later output is drained.
#[allow(dead_code)] // each test crate compiles this module; not all of them start a node here
pub fn start_node(dir: &Path, extra: &[&std::ffi::OsStr], operator: &str) -> (Child, String) {
    let mut child = Command::new(warden_bin())
        .args(["node", "--listen", "127.0.0.1:0", "--data"])
        .arg(dir)
        .args(extra)
        .env("WARDEN_OPERATOR_TOKEN", operator)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("the warden binary starts");
    let base = listening_address(&mut child);
    (child, base)
}

/// Reads a starting node's first line on its standard output (`warden node listening on
/// http://ADDR`) and returns the base URL; the rest of its output is drained.
pub fn listening_address(child: &mut Child) -> String {
    let stdout = child.stdout.take().expect("the node's stdout is piped");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let first = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("the node prints its address");
    first
        .strip_prefix("warden node listening on ")
        .unwrap_or_else(|| panic!("unexpected first line: {first}"))
        .to_string()
}

/// The Python that runs the Python suites and moto: `$WARDEN_PYTHON`, else the venv `.ci/run`
/// makes (`$HOME/.cache/warden-venv`).
#[allow(dead_code)] // each test crate compiles this module; not all of them run Python
pub fn venv_python() -> Option<std::path::PathBuf> {
    if let Some(explicit) = std::env::var_os("WARDEN_PYTHON") {
        return Some(explicit.into());
    }
    std::env::var_os("HOME")
        .map(|home| std::path::PathBuf::from(home).join(".cache/warden-venv/bin/python"))
}

/// Asks `probe` again and again until it answers `Some`, and returns that answer; panics
/// naming `what` when `bound` passes first. Between two asks it backs off from 1 ms to 50 ms:
/// the wait ends on the event, not after a fixed time.
#[allow(dead_code)] // each test crate compiles this module; not all of them wait
pub fn wait_for<T>(bound: Duration, what: &str, mut probe: impl FnMut() -> Option<T>) -> T {
    let started = Instant::now();
    let mut pause = Duration::from_millis(1);
    loop {
        if let Some(v) = probe() {
            return v;
        }
        assert!(started.elapsed() < bound, "waited {bound:?} for {what}");
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}

/// [`wait_for`] a condition: returns once `done` is true, panics naming `what` after `bound`.
#[allow(dead_code)] // each test crate compiles this module; not all of them wait
pub fn wait_until(bound: Duration, what: &str, mut done: impl FnMut() -> bool) {
    wait_for(bound, what, || done().then_some(()));
}

/// A client of the node at `base` sending `token` (none: anonymous): the typed client of the
/// `/v1` API that the CLI and the benchmarks use too, with a 10 s bound per request.
/// [`Client::with_token`] on it gives an agent's client on the same connections.
#[allow(dead_code)] // each test crate compiles this module; not all of them talk HTTP
pub fn client(base: &str, token: Option<&str>) -> Client {
    let client = match token {
        Some(token) => Client::new(base, token),
        None => Client::anonymous(base),
    };
    client.with_timeout(Duration::from_secs(10))
}

/// One request through `client`, any status: the status and the body (JSON, or the text as a
/// JSON string), for tests that assert on statuses and error bodies. Panics naming the request
/// when no answer came.
#[allow(dead_code)] // each test crate compiles this module; not all of them talk HTTP
pub fn call(client: &Client, method: &str, path: &str, body: Body) -> (u16, Value) {
    let answer = client
        .call(method, path, body)
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
    (answer.status, answer.body)
}

/// Registers the agent `id` in `pool` as the operator `operator` is, asserts the node answered
/// 201 Created, and returns the agent's token.
#[allow(dead_code)] // each test crate compiles this module; not all of them talk HTTP
pub fn register(operator: &Client, id: &str, pool: &str) -> String {
    let request = RegisterRequest {
        id: Some(id.to_string()),
        pool: Some(pool.to_string()),
        ..Default::default()
    };
    let (status, body) = call(operator, "POST", "/v1/agents", Body::json(&request));
    assert_eq!(status, 201, "registering {id}: {body}");
    let agent: AgentView = serde_json::from_value(body.clone())
        .unwrap_or_else(|e| panic!("registering {id}: not an agent ({e}): {body}"));
    agent
        .token
        .unwrap_or_else(|| panic!("registering {id}: no token in {body}"))
}

/// One HTTP/1.1 request as the tests' scripted upstreams read it.
#[allow(dead_code)] // each test crate compiles this module; not all of them serve HTTP
pub struct Request {
    /// The method.
    pub method: String,
    /// The request target (path and query).
    pub path: String,
    /// Headers, names lowercased.
    pub headers: std::collections::HashMap<String, String>,
    /// The body (`content-length` bytes).
    pub body: Vec<u8>,
}

/// Reads the next request of a kept-alive connection; `None` when the peer is done.
#[allow(dead_code)] // each test crate compiles this module; not all of them serve HTTP
pub fn read_request(r: &mut impl BufRead) -> Option<Request> {
    let mut line = String::new();
    if r.read_line(&mut line).ok()? == 0 {
        return None;
    }
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or("").to_string();
    let path = parts.next().unwrap_or("").to_string();
    let mut headers = std::collections::HashMap::new();
    loop {
        let mut h = String::new();
        if r.read_line(&mut h).ok()? == 0 {
            return None;
        }
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    let len: usize = headers
        .get("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; len];
    r.read_exact(&mut body).ok()?;
    Some(Request {
        method,
        path,
        headers,
        body,
    })
}
