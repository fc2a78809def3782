//! A throw-away PostgreSQL cluster for the export tests: `initdb` in a temp dir, `postgres` on
//! a free loopback port with its Unix socket in the same dir, trust authentication, killed
//! (SIGKILL) and restarted at will. PostgreSQL refuses to run as root: as root (CI), it runs
//! as the `postgres` user. The binaries are Debian's (`/usr/lib/postgresql/*/bin`, or
//! `$WARDEN_PG_BIN`). Without them [`Postgres::start`] returns `None` after printing why, so
//! the test is skipped; with `WARDEN_REQUIRE_EXTERNAL=1` it panics instead.
#![allow(dead_code)] // each test crate compiles this module; not all of them use PostgreSQL

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running (or killed) throw-away cluster; dropped: killed and removed.
pub struct Postgres {
    bin: PathBuf,
    dir: PathBuf,
    port: u16,
    owner: Option<(u32, u32)>,
    child: Option<Child>,
}

/// The directory holding `postgres` and `initdb`, if any.
fn bin_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("WARDEN_PG_BIN") {
        return Some(dir.into());
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|b| b.join("postgres").is_file() && b.join("initdb").is_file())
        .collect();
    found.sort();
    found.pop()
}

/// The uid and gid of the `postgres` user, when running as root.
fn owner() -> Option<(u32, u32)> {
    // SAFETY: geteuid has no preconditions; getpwnam's answer is read at once, before any
    // other call could reuse its static buffer (the tests call this from one thread each).
    unsafe {
        if libc::geteuid() != 0 {
            return None;
        }
        let pw = libc::getpwnam(c"postgres".as_ptr());
        assert!(
            !pw.is_null(),
            "running as root and there is no `postgres` user to run PostgreSQL as"
        );
        Some(((*pw).pw_uid, (*pw).pw_gid))
    }
}

impl Postgres {
    /// Makes and starts a cluster; `None` (with the reason printed) when PostgreSQL is not
    /// installed, unless `WARDEN_REQUIRE_EXTERNAL=1`.
    pub fn start(test: &str) -> Option<Postgres> {
        let Some(bin) = bin_dir() else {
            let why = "PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/postgres; apt-get install postgresql)";
            assert!(
                std::env::var("WARDEN_REQUIRE_EXTERNAL").as_deref() != Ok("1"),
                "{test}: {why}, and WARDEN_REQUIRE_EXTERNAL=1"
            );
            eprintln!("SKIPPED {test}: {why}");
            return None;
        };
        let dir = std::env::temp_dir().join(format!(
            "warden-pg-{}-{}-{test}",
            std::process::id(),
            super::free_port()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let owner = owner();
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::chown(&dir, Some(uid), Some(gid)).unwrap();
        }
        let mut pg = Postgres {
            bin,
            dir,
            port: super::free_port(),
            owner,
            child: None,
        };
        pg.initdb();
        pg.restart();
        Some(pg)
    }

    fn command(&self, program: &str) -> Command {
        let mut c = Command::new(self.bin.join(program));
        if let Some((uid, gid)) = self.owner {
            c.uid(uid).gid(gid);
        }
        c.env("LC_ALL", "C").current_dir(&self.dir);
        c
    }

    fn initdb(&self) {
        let out = self
            .command("initdb")
            .args([
                "-D",
                "data",
                "-U",
                "warden",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
            ])
            .output()
            .expect("initdb runs");
        assert!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// A URL of the `postgres` database as the `warden` superuser.
    pub fn url(&self) -> String {
        format!(
            "postgresql://warden@127.0.0.1:{}/postgres?sslmode=disable",
            self.port
        )
    }

    /// The directory of the Unix socket.
    pub fn socket_dir(&self) -> &Path {
        &self.dir
    }

    /// Starts the server (again, after [`Postgres::kill`]) and waits until it accepts
    /// connections.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "already running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("server.log"))
            .unwrap();
        let child = self
            .command("postgres")
            .args(["-D", "data", "-p", &self.port.to_string()])
            .args(["-c", "listen_addresses=127.0.0.1"])
            .arg("-c")
            .arg(format!("unix_socket_directories={}", self.dir.display()))
            .args(["-c", "fsync=off", "-c", "max_connections=50"])
            .stdout(Stdio::null())
            .stderr(log)
            .process_group(0)
            .spawn()
            .expect("postgres starts");
        self.child = Some(child);
        self.wait_ready();
    }

    fn wait_ready(&self) {
        let started = Instant::now();
        loop {
            let ready = self
                .command("pg_isready")
                .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-q"])
                .status()
                .is_ok_and(|s| s.success());
            if ready {
                return;
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "PostgreSQL did not start; its log:\n{}",
                std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGKILL to the server and every backend (its process group), as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: kill(2) on the process group this test started (`process_group(0)`).
            unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
            let _ = child.wait();
        }
    }

    /// Runs `sql` with `psql` and returns its unaligned, tuples-only output.
    pub fn psql(&self, sql: &str) -> String {
        let out = self
            .command("psql")
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(["-U", "warden", "-d", "postgres", "-X", "-A", "-t", "-v"])
            .arg("ON_ERROR_STOP=1")
            .arg("-c")
            .arg(sql)
            .output()
            .expect("psql runs");
        assert!(
            out.status.success(),
            "psql {sql}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
