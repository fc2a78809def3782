//! What the end-to-end tests share: starting the real `warden node` binary, and waiting for
//! an event with a bound instead of sleeping.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Starts `warden node --listen 127.0.0.1:0 --data DIR` with `extra` arguments after it and
/// `WARDEN_OPERATOR_TOKEN=operator`, waits for its first line (`warden node listening on
/// http://ADDR`), and returns the process and its base URL. Its later output is drained.
pub fn start_node(dir: &Path, extra: &[&std::ffi::OsStr], operator: &str) -> (Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_warden"))
        .args(["node", "--listen", "127.0.0.1:0", "--data"])
        .arg(dir)
        .args(extra)
        .env("WARDEN_OPERATOR_TOKEN", operator)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("the warden binary starts");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let first = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("the node prints its address");
    let base = first
        .strip_prefix("warden node listening on ")
        .unwrap_or_else(|| panic!("unexpected first line: {first}"))
        .to_string();
    (child, base)
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
