//! The Python client (`adapters/python`, package `warden-client`) end to end: its pytest suite
//! run against this build's `warden` binary. The suite starts its own nodes on ephemeral
//! ports, and drives LangChain and OpenAI Agents SDK agents through them.
//!
//! Needs a Python with the package and its test extras installed: `$WARDEN_PYTHON`, else the
//! venv `.ci/run` makes (`$HOME/.cache/warden-venv`). Without one the test says why and
//! skips, unless `WARDEN_REQUIRE_EXTERNAL=1` (CI), where it fails.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The longest the whole suite may take (it takes seconds; this only stops a hang).
const SUITE_DEADLINE: Duration = Duration::from_secs(600);
/// How often the runner looks whether pytest has finished.
const POLL: Duration = Duration::from_millis(100);
/// What the Python must be able to import to run the suite.
const PROBE: &str =
    "import pytest, pytest_asyncio, langchain_openai, warden_client.langchain, warden_client.openai_agents";

/// The Python, when it can run the suite. Otherwise says why and returns None, or fails when
/// `WARDEN_REQUIRE_EXTERNAL=1`.
fn python() -> Option<PathBuf> {
    let why = match common::venv_python() {
        None => "neither WARDEN_PYTHON nor HOME is set".to_string(),
        Some(python) => match Command::new(&python).args(["-c", PROBE]).output() {
            Ok(out) if out.status.success() => return Some(python),
            Ok(out) => format!(
                "{} cannot import the suite's packages: {}",
                python.display(),
                String::from_utf8_lossy(&out.stderr)
                    .lines()
                    .next_back()
                    .unwrap_or("")
            ),
            Err(e) => format!("{} does not run: {e}", python.display()),
        },
    };
    let why = format!(
        "{why}; make the venv as .ci/run does (python3 -m venv ~/.cache/warden-venv, then pip \
         install -r adapters/python/requirements-test.txt -e 'adapters/python[langchain,agents,openai,anthropic,mcp,test]') \
         or set WARDEN_PYTHON"
    );
    if std::env::var("WARDEN_REQUIRE_EXTERNAL").as_deref() == Ok("1") {
        panic!("WARDEN_REQUIRE_EXTERNAL=1 and {why}");
    }
    eprintln!("skipping the Python client suite: {why}");
    None
}

#[test]
fn python_client_suite_passes_against_the_real_node() {
    let Some(python) = python() else {
        return;
    };
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let logs = std::env::temp_dir().join(format!("warden-python-suite-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&logs);
    std::fs::create_dir_all(&logs).unwrap();
    let (stdout, stderr) = (logs.join("stdout.txt"), logs.join("stderr.txt"));

    // Output goes to files, not pipes: nothing blocks however much pytest prints.
    let mut child = Command::new(&python)
        .args([
            "-m",
            "pytest",
            "adapters/python/tests",
            "-q",
            "-p",
            "no:cacheprovider",
        ])
        .current_dir(root)
        .env("WARDEN_BIN", env!("CARGO_BIN_EXE_warden"))
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&stdout).unwrap())
        .stderr(std::fs::File::create(&stderr).unwrap())
        .spawn()
        .unwrap_or_else(|e| panic!("{} does not start: {e}", python.display()));
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if started.elapsed() > SUITE_DEADLINE {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(POLL);
    };
    let out = std::fs::read_to_string(&stdout).unwrap_or_default();
    let err = std::fs::read_to_string(&stderr).unwrap_or_default();
    let _ = std::fs::remove_dir_all(&logs);
    match status {
        Some(status) if status.success() => {
            eprintln!(
                "{}",
                out.lines().next_back().unwrap_or("pytest printed nothing")
            );
        }
        Some(status) => panic!("pytest failed ({status}):\n{out}\n{err}"),
        None => panic!("pytest did not finish within {SUITE_DEADLINE:?}:\n{out}\n{err}"),
    }
}
