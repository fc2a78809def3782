//! What the end-to-end tests share: starting the real `warden node` binary.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

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
