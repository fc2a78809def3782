//! Audit export: the node's signing key, and the tasks that follow the journal out of the node
//! (docs/export.md). The journal stays the source of truth and the write-ahead log; an export
//! reads its files ([`warden_supervisor::journal::tail`]) and never touches the writer, so a
//! slow or absent sink never slows a decision: it falls behind (a metric and a log line), and
//! retention keeps the segments it has not confirmed ([`NodeOptions::export_marks`]).
//!
//! Metrics (label `sink` = `postgres` | `s3`): `warden_export_entries_total`,
//! `warden_export_confirmed_seq`, `warden_export_lag_entries`, `warden_export_errors_total`,
//! `warden_export_up`.
//!
//! [`NodeOptions::export_marks`]: warden_supervisor::NodeOptions::export_marks

pub mod s3;

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::sync::watch;
use warden_supervisor::journal::seal::SigningKey;
use warden_supervisor::journal::Journal;

pub mod postgres;

use crate::config::{ExportSettings, SigningKeySource};
use crate::http::auth::{check_private, write_private};
use crate::limits::{EXPORT_RETRY_MS_MAX, EXPORT_RETRY_MS_MIN};

/// The file that holds a node's signing key unless the config names another.
pub const SIGNING_KEY_FILE: &str = "audit.key";

/// Why the signing key could not be had.
#[derive(Debug, thiserror::Error)]
#[error("audit signing key ({source_name}): {why}")]
pub struct KeyError {
    /// Where it was looked for.
    pub source_name: String,
    /// What is wrong.
    pub why: String,
}

/// The node's signing key and where it came from (for the start-up line): the config's
/// `export.signing_key` (a file, or `env:NAME`), else `DATA_DIR/audit.key`, made (mode 0600)
/// at first start. A key file others may read, or one that does not hold a key, is refused,
/// never replaced.
///
/// # Errors
/// [`KeyError`] naming the file or variable.
pub fn signing_key(
    source: &SigningKeySource,
    data_dir: &Path,
) -> Result<(SigningKey, String), KeyError> {
    let refused = |source_name: String, why: String| KeyError { source_name, why };
    match source {
        SigningKeySource::Env { var, seed } => SigningKey::from_seed_hex(&seed.0)
            .map(|k| (k, format!("${var}")))
            .map_err(|why| refused(format!("${var}"), why)),
        SigningKeySource::File(path) => read_key_file(path)
            .map(|k| (k, path.display().to_string()))
            .map_err(|why| refused(path.display().to_string(), why)),
        SigningKeySource::DataDir => {
            let path = data_dir.join(SIGNING_KEY_FILE);
            let name = path.display().to_string();
            if path.exists() {
                return read_key_file(&path)
                    .map(|k| (k, name.clone()))
                    .map_err(|why| refused(name, why));
            }
            let key = SigningKey::generate();
            write_private(data_dir, &path, &format!("{}\n", key.seed_hex()))
                .map_err(|e| refused(name.clone(), format!("cannot create it: {e}")))?;
            Ok((key, format!("{name} (new)")))
        }
    }
}

fn read_key_file(path: &Path) -> Result<SigningKey, String> {
    match check_private(path) {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(e.to_string()),
        Err(e) => return Err(format!("cannot read it: {e}")),
    }
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read it: {e}"))?;
    SigningKey::from_seed_hex(&text)
}

/// The confirmed marks of the configured exports: the senders go to the export tasks, the
/// receivers to [`NodeOptions::export_marks`](warden_supervisor::NodeOptions::export_marks).
#[derive(Debug, Default)]
pub struct Marks {
    /// The PostgreSQL sink's, if configured.
    pub postgres: Option<watch::Sender<u64>>,
    /// The S3 archive's, if configured.
    pub s3: Option<watch::Sender<u64>>,
}

impl Marks {
    /// One mark per configured export, each starting at 0 (nothing confirmed), and their
    /// receivers.
    pub fn new(settings: &ExportSettings) -> (Marks, Vec<watch::Receiver<u64>>) {
        let mut receivers = Vec::new();
        let mut mark = |on: bool| {
            on.then(|| {
                let (tx, rx) = watch::channel(0);
                receivers.push(rx);
                tx
            })
        };
        let marks = Marks {
            postgres: mark(settings.postgres.is_some()),
            s3: mark(settings.s3.is_some()),
        };
        (marks, receivers)
    }
}

/// The running exports: their tasks, on a runtime of their own (one thread, named
/// `warden-export`, at a lower CPU priority: nice [`EXPORT_NICE`]), so exporting never takes
/// a worker of the runtime that answers agents, and yields the CPU to it when both want it.
#[derive(Debug, Default)]
pub struct Exports {
    tasks: Vec<tokio::task::JoinHandle<()>>,
    runtime: Option<(
        std::thread::JoinHandle<()>,
        tokio::sync::oneshot::Sender<()>,
    )>,
}

/// The nice value of the exports' thread (Linux; 0 is the default, 19 the lowest priority).
pub const EXPORT_NICE: i32 = 10;

impl Exports {
    /// Starts the configured exports. Each follows the journal in `data_dir` up to
    /// `journal`'s acknowledged head and publishes its confirmed mark. Nothing starts (no
    /// thread) without an export.
    pub fn start(
        settings: &ExportSettings,
        journal: Journal,
        data_dir: PathBuf,
        marks: Marks,
    ) -> Exports {
        if settings.s3.is_none() && settings.postgres.is_none() {
            return Exports::default();
        }
        let Some((runtime, handle)) = export_runtime() else {
            log(
                "start",
                "cannot start the export thread; nothing is exported",
            );
            return Exports::default();
        };
        let mut tasks = Vec::new();
        if let (Some(s3_settings), Some(mark)) = (&settings.s3, marks.s3) {
            let run = s3::run(
                s3_settings.clone(),
                data_dir.clone(),
                Some(journal.clone()),
                mark,
            );
            tasks.push(handle.spawn(run));
        }
        if let (Some(pg), Some(mark)) = (&settings.postgres, marks.postgres) {
            tasks.push(handle.spawn(postgres::run(pg.clone(), journal, data_dir, mark)));
        }
        Exports {
            tasks,
            runtime: Some(runtime),
        }
    }

    /// Stops every export (what they confirmed stays confirmed; they resume from the sink's
    /// own record at the next start), then their thread.
    pub async fn shutdown(self) {
        for t in self.tasks {
            t.abort();
            let _ = t.await;
        }
        if let Some((thread, stop)) = self.runtime {
            let _ = stop.send(());
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
    }
}

/// The exports' thread with its current-thread runtime, running until its stop is sent.
#[allow(clippy::type_complexity)]
fn export_runtime() -> Option<(
    (
        std::thread::JoinHandle<()>,
        tokio::sync::oneshot::Sender<()>,
    ),
    tokio::runtime::Handle,
)> {
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let (handle_tx, handle_rx) = std::sync::mpsc::channel();
    let thread = std::thread::Builder::new()
        .name("warden-export".into())
        .spawn(move || {
            lower_priority();
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            let _ = handle_tx.send(rt.handle().clone());
            let _ = rt.block_on(stopped);
        })
        .ok()?;
    let handle = handle_rx.recv().ok()?;
    Some(((thread, stop), handle))
}

/// Lowers the calling thread's CPU priority to [`EXPORT_NICE`] (Linux: a thread's nice value
/// is its own). Best effort: without it the exports run at the node's priority.
fn lower_priority() {
    #[cfg(target_os = "linux")]
    // SAFETY: gettid and setpriority take no pointers; they change only this thread's nice.
    unsafe {
        let tid = libc::gettid();
        libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, EXPORT_NICE);
    }
}

/// Bounded exponential backoff between tries: [`EXPORT_RETRY_MS_MIN`] doubling to
/// [`EXPORT_RETRY_MS_MAX`]; a success starts it over.
#[derive(Debug)]
pub struct Backoff {
    next_ms: u64,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            next_ms: EXPORT_RETRY_MS_MIN,
        }
    }
}

impl Backoff {
    /// The wait before the next try (and doubles the one after).
    pub fn after_failure(&mut self) -> Duration {
        let wait = self.next_ms;
        self.next_ms = (self.next_ms * 2).min(EXPORT_RETRY_MS_MAX);
        Duration::from_millis(wait)
    }

    /// After a success: the next failure waits the least again.
    pub fn reset(&mut self) {
        self.next_ms = EXPORT_RETRY_MS_MIN;
    }
}

/// One line on standard error, as the node's other lines: `warden node: export SINK: ...`.
pub fn log(sink: &str, line: &str) {
    eprintln!("warden node: export {sink}: {line}");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Redacted;

    #[test]
    fn a_key_is_made_once_kept_private_and_read_back() {
        let dir = std::env::temp_dir().join(format!("warden-audit-key-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let (made, from) = signing_key(&SigningKeySource::DataDir, &dir).unwrap();
        assert!(from.ends_with("audit.key (new)"), "{from}");
        let (again, from) = signing_key(&SigningKeySource::DataDir, &dir).unwrap();
        assert_eq!(again.public_key(), made.public_key());
        assert!(!from.contains("(new)"));
        let path = dir.join(SIGNING_KEY_FILE);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
            let e = signing_key(&SigningKeySource::File(path.clone()), &dir).unwrap_err();
            assert!(e.to_string().contains("readable by other users"), "{e}");
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        std::fs::write(&path, "not a key").unwrap();
        let e = signing_key(&SigningKeySource::DataDir, &dir).unwrap_err();
        assert!(e.to_string().contains("64 hex digits"), "{e}");
        assert!(
            !e.to_string().contains("not a key"),
            "the secret is never echoed"
        );
        let env = SigningKeySource::Env {
            var: "K".into(),
            seed: Redacted(made.seed_hex()),
        };
        assert_eq!(
            signing_key(&env, &dir).unwrap().0.public_key(),
            made.public_key()
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn backoff_doubles_to_its_bound_and_starts_over_after_a_success() {
        let mut b = Backoff::default();
        let waits: Vec<u64> = (0..12)
            .map(|_| b.after_failure().as_millis() as u64)
            .collect();
        assert_eq!(waits[..4], [100, 200, 400, 800]);
        assert_eq!(*waits.last().unwrap(), EXPORT_RETRY_MS_MAX);
        b.reset();
        assert_eq!(b.after_failure().as_millis(), 100);
    }
}
