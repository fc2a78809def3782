//! The durable node runtime, without a network: [`Node::open`] opens and verifies the journal
//! (`DATA_DIR/journal/`), chooses the policy to run, rebuilds the swarm from the journal
//! ([`Swarm::recover`]), attaches the journal as the write-ahead log (from then on nothing is
//! acknowledged before its entry is durable, [`crate::journal::records`]) and runs retention. It opens no
//! listener and installs no metrics recorder: the HTTP surface is `warden-adapters`', the
//! recorder the binary's. The simulator can open a node the same way.
//!
//! ```no_run
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! use warden_supervisor::node::{Node, NodeOptions};
//!
//! let policy = std::fs::read_to_string("policy.yaml").unwrap();
//! let node = Node::open(NodeOptions::new("warden-data", policy)).await.unwrap();
//! println!("recovered {} agents", node.recovered.agents);
//! node.shutdown().await;
//! # }
//! ```

use std::path::{Path, PathBuf};
use std::sync::Arc;

use warden_actors::policy::{PolicyErrors, PolicySet};

use crate::journal::records::{Record, RecoveryClock, RecoveryReport, SnapshotItem};
use crate::journal::seal::{self, PublicKey, SigningKey};
use crate::journal::storage::Storage;
use crate::journal::{FsyncMode, Journal, JournalConfig, OpenReport};
use crate::limits::{
    JOURNAL_BYTES_DEFAULT, RETENTION_CHECK_MS, SEAL_CHECK_MS, SEGMENT_BYTES_DEFAULT,
};
use crate::swarm::{Swarm, SwarmError};

/// How to open a node: where its data lives, the policy it is configured with, and how its
/// journal is written.
#[derive(Clone, Debug)]
pub struct NodeOptions {
    /// The data directory (the journal lives in `journal/` under it).
    pub data_dir: PathBuf,
    /// The configured policy's YAML text.
    pub policy_text: String,
    /// True when `policy_text` was asked for (a `--policy` flag or the config file): it then
    /// replaces the policy the journal last recorded. A bundled default never does.
    pub policy_explicit: bool,
    /// The journal's sync mode.
    pub fsync: FsyncMode,
    /// Journal segment size, bytes.
    pub segment_bytes: u64,
    /// Retention: past this many bytes of journal, the node writes a snapshot and removes the
    /// segments before it.
    pub journal_bytes: u64,
    /// Where the journal lives: `None` is the file system under `data_dir`; the simulator
    /// passes a [`MemStorage`](crate::journal::storage::MemStorage) with injected faults.
    pub storage: Option<Arc<dyn Storage>>,
    /// Seal closed segments with this key ([`crate::journal::seal`]); `None` seals nothing.
    /// Only for a journal on the file system.
    pub seal: Option<SealOptions>,
    /// What the exports have confirmed: each receiver holds the last entry one export has
    /// safely delivered. Retention removes a segment only once every mark has passed its
    /// last entry, so nothing is deleted before it is exported.
    pub export_marks: Vec<tokio::sync::watch::Receiver<u64>>,
}

/// How a node seals its journal's closed segments.
#[derive(Clone, Debug)]
pub struct SealOptions {
    /// The node's signing key.
    pub key: SigningKey,
    /// Close the open segment this often (ms) when it holds entries, so it gets sealed.
    pub interval_ms: u64,
}

impl NodeOptions {
    /// Options with the defaults of `warden node`: fsync always, 64 MiB segments, 4 GiB of
    /// journal before retention, the policy not explicit.
    pub fn new(data_dir: impl Into<PathBuf>, policy_text: impl Into<String>) -> Self {
        Self {
            data_dir: data_dir.into(),
            policy_text: policy_text.into(),
            policy_explicit: false,
            fsync: FsyncMode::Always,
            segment_bytes: SEGMENT_BYTES_DEFAULT,
            journal_bytes: JOURNAL_BYTES_DEFAULT,
            storage: None,
            seal: None,
            export_marks: Vec::new(),
        }
    }
}

/// Why a node could not open.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The policy is invalid (every diagnostic with its line and column).
    #[error("{0}")]
    Policy(PolicyErrors),
    /// The swarm could not start.
    #[error(transparent)]
    Swarm(#[from] SwarmError),
    /// The journal could not be opened or replayed.
    #[error("audit journal: {0}")]
    Journal(String),
}

/// An open node: the recovered swarm with its journal attached, and retention running.
pub struct Node {
    swarm: Swarm,
    journal: Journal,
    retention: tokio::task::JoinHandle<()>,
    /// The sealer, and how to stop it between two passes.
    sealer: Option<(
        tokio::task::JoinHandle<()>,
        tokio::sync::oneshot::Sender<()>,
    )>,
    /// The sealer's key.
    sealing: Option<SigningKey>,
    /// Held by retention's removals and every sealing pass, so the two never overlap.
    removing: Arc<tokio::sync::Mutex<()>>,
    signing_key: Option<PublicKey>,
    data_dir: PathBuf,
    /// What recovery rebuilt from the journal.
    pub recovered: RecoveryReport,
    /// What opening the journal found (entries verified, torn tail cut).
    pub journal_open: OpenReport,
    /// True when the policy in force is the one the journal last recorded (no explicit
    /// policy was given and the journal had one).
    pub policy_from_journal: bool,
}

impl Node {
    /// Opens the node on the current tokio runtime: journal, policy choice, recovery, attach,
    /// retention. Nothing is served; the caller decides how agents reach the swarm.
    ///
    /// # Errors
    /// [`NodeError::Policy`] for an invalid configured or journaled policy,
    /// [`NodeError::Journal`] when the journal cannot be opened, verified or replayed,
    /// [`NodeError::Swarm`] when the swarm refuses the recovered state.
    pub async fn open(opts: NodeOptions) -> Result<Node, NodeError> {
        let configured = PolicySet::parse(&opts.policy_text).map_err(NodeError::Policy)?;
        let mut jconfig = JournalConfig::new(&opts.data_dir);
        jconfig.fsync = opts.fsync;
        jconfig.segment_bytes = opts.segment_bytes;
        let mut entries = Vec::new();
        let visit = |e: &crate::journal::Entry| entries.push(e.clone());
        let opened = match &opts.storage {
            Some(storage) => Journal::open_in(Arc::clone(storage), jconfig, visit),
            None => Journal::open(jconfig, visit),
        };
        let (journal, journal_open) = opened.map_err(|e| NodeError::Journal(e.to_string()))?;
        let journaled = last_journaled_policy(&entries);
        let policy_from_journal = journaled.is_some() && !opts.policy_explicit;
        let (policy, policy_text) = match journaled {
            Some(text) if policy_from_journal => {
                (PolicySet::parse(&text).map_err(NodeError::Policy)?, text)
            }
            _ => (configured, opts.policy_text.clone()),
        };
        let clock = Arc::new(RecoveryClock::new());
        let swarm = Swarm::builder()
            .clock(Arc::clone(&clock) as Arc<dyn warden_actors::Clock>)
            .policy_set(policy)
            .build()
            .await?;
        let recovered = swarm
            .recover(&entries, Some(&clock))
            .await
            .map_err(|e| NodeError::Journal(e.to_string()))?;
        drop(entries);
        attach(&swarm, &journal, &recovered, &policy_text)?;
        swarm
            .durable()
            .await
            .map_err(|e| NodeError::Journal(e.to_string()))?;
        // Retention's removals and the sealer's passes never overlap: a seal written for a
        // segment being removed would outlive it.
        let removing = Arc::new(tokio::sync::Mutex::new(()));
        let retention = tokio::spawn(retain(
            swarm.clone(),
            journal.clone(),
            opts.journal_bytes,
            opts.export_marks,
            Arc::clone(&removing),
        ));
        let sealing = opts
            .seal
            .as_ref()
            .filter(|_| opts.storage.is_none())
            .map(|seal| seal.key.clone());
        let sealer = opts
            .seal
            .as_ref()
            .filter(|_| opts.storage.is_none())
            .map(|seal| {
                let dir = opts.data_dir.clone();
                let removing = Arc::clone(&removing);
                let (stop, stopped) = tokio::sync::oneshot::channel();
                let task = sealer(journal.clone(), dir, seal.clone(), removing, stopped);
                (tokio::spawn(task), stop)
            });
        Ok(Node {
            swarm,
            journal,
            retention,
            sealer,
            sealing,
            removing,
            signing_key: opts.seal.map(|s| s.key.public_key()),
            data_dir: opts.data_dir,
            recovered,
            journal_open,
            policy_from_journal,
        })
    }

    /// The swarm this node governs.
    pub fn swarm(&self) -> &Swarm {
        &self.swarm
    }

    /// The node's data directory.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The journal (its [`head`](Journal::head) is what the exports may read up to).
    pub fn journal(&self) -> &Journal {
        &self.journal
    }

    /// The public keys that verify this node's seals: the current one first, then every other
    /// key found in the journal's seals (keys used before a key change). Empty when the node
    /// does not seal.
    pub fn audit_keys(&self) -> Vec<PublicKey> {
        let Some(current) = self.signing_key else {
            return Vec::new();
        };
        let mut keys = vec![current];
        keys.extend(
            seal::keys_in(&self.data_dir)
                .into_iter()
                .filter(|k| *k != current),
        );
        keys
    }

    /// Stops retention and the swarm, then writes and syncs what is left of the journal and
    /// releases its lock. Everything acknowledged is already durable. A node that seals
    /// closes its open segment and seals it on the way out (the sealer stopped first, after
    /// its pass in progress): nothing it wrote is left unsealed while it is down.
    pub async fn shutdown(self) {
        self.retention.abort();
        if let Some((task, stop)) = self.sealer {
            let _ = stop.send(());
            let _ = task.await;
        }
        self.swarm.shutdown().await;
        if self.sealing.is_some() {
            self.journal.close_segment();
        }
        self.journal.shutdown().await;
        let Some(key) = self.sealing else {
            return;
        };
        let _retention_waits = self.removing.lock().await;
        let dir = self.data_dir.clone();
        let pass = tokio::task::spawn_blocking(move || seal::seal_closed(&dir, &key));
        match pass.await {
            Ok(Ok(pass)) => {
                metrics::counter!("warden_audit_segments_sealed_total")
                    .increment(pass.sealed.len() as u64);
            }
            Ok(Err(e)) => log_line(&format!("audit seal at shutdown: {e}")),
            Err(_) => log_line("audit seal at shutdown: the sealing task failed"),
        }
    }
}

/// The policy text the journal last recorded: a `policy_change`, or the policy a snapshot
/// repeats (its `policy_change` may be gone after retention).
fn last_journaled_policy(entries: &[crate::journal::Entry]) -> Option<String> {
    entries.iter().rev().find_map(|e| match Record::parse(e) {
        Ok(Record::Policy(p)) => Some(p.text),
        Ok(Record::Snapshot(item)) => match *item {
            SnapshotItem::Policy(p) => Some(p.text),
            _ => None,
        },
        _ => None,
    })
}

/// Attaches the journal. A fresh journal records the policy in force; a journal whose policy
/// differs from the one to run gets the new one as a reload, checked against the recovered
/// spend like any other.
fn attach(
    swarm: &Swarm,
    journal: &Journal,
    recovered: &RecoveryReport,
    policy_text: &str,
) -> Result<(), NodeError> {
    match &recovered.policy {
        None => swarm.attach_journal(journal.clone(), Some(policy_text))?,
        Some(p) => {
            swarm.attach_journal(journal.clone(), None)?;
            if p.text != policy_text {
                swarm.reload_policy(policy_text).map_err(|e| match e {
                    SwarmError::Policy(errors) => NodeError::Policy(errors),
                    other => NodeError::Swarm(other),
                })?;
            }
        }
    }
    Ok(())
}

/// Retention: once the journal holds more than `limit` bytes, write a snapshot (the whole
/// state, in a new segment), wait until it is durable, and remove every segment before it.
/// The next compaction waits until the journal has grown by half the limit again, so a
/// snapshot larger than the limit does not loop.
///
/// With exports (`marks`), a segment goes only once every export has confirmed its entries:
/// until then the snapshot's removal waits (checked every tick), and no new snapshot is made.
async fn retain(
    swarm: Swarm,
    journal: Journal,
    limit: u64,
    marks: Vec<tokio::sync::watch::Receiver<u64>>,
    removing: Arc<tokio::sync::Mutex<()>>,
) {
    let mut tick = tokio::time::interval(std::time::Duration::from_millis(RETENTION_CHECK_MS));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut floor = 0u64;
    metrics::counter!("warden_audit_segments_removed_total").increment(0);
    // A snapshot whose older segments wait for the exports: (its first entry, the journal's
    // size then, whether the wait was logged).
    let mut waiting: Option<(u64, u64, bool)> = None;
    loop {
        tick.tick().await;
        if let Some((begin, size, logged)) = waiting {
            let exported = marks.iter().map(|m| *m.borrow()).min().unwrap_or(u64::MAX);
            if exported.saturating_add(1) >= begin {
                let _sealer_waits = removing.lock().await;
                floor = remove_before(&journal, begin, size, limit);
                waiting = None;
            } else if !logged {
                log_line(&format!(
                    "journal retention: snapshot at entry {begin}; older segments are kept until every export has confirmed them (now through entry {exported})"
                ));
                waiting = Some((begin, size, true));
            }
            continue;
        }
        let size = journal.size_bytes();
        if size <= limit.max(floor) {
            continue;
        }
        // Locking every agent takes a while: off the async workers.
        let s = swarm.clone();
        let begin = match tokio::task::spawn_blocking(move || s.write_snapshot()).await {
            Ok(Ok(begin)) => begin,
            Ok(Err(e)) => {
                log_line(&format!(
                    "journal retention: {e}; next try after more growth"
                ));
                floor = size + limit / 2;
                continue;
            }
            Err(_) => return,
        };
        if swarm.durable().await.is_err() {
            return; // the journal failed: the node is failing closed already
        }
        waiting = Some((begin, size, false));
        tick.reset_immediately();
    }
}

/// The sealer: closes the open segment every `interval_ms` when it holds entries, and seals
/// every closed, unsealed segment ([`seal::seal_closed`]), never while retention removes
/// segments (`removing`). A segment that does not verify is never sealed; it is reported
/// once. Ends between two passes when `stop` fires.
async fn sealer(
    journal: Journal,
    data_dir: PathBuf,
    opts: SealOptions,
    removing: Arc<tokio::sync::Mutex<()>>,
    mut stop: tokio::sync::oneshot::Receiver<()>,
) {
    let mut tick = tokio::time::interval(std::time::Duration::from_millis(SEAL_CHECK_MS));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The counters exist from the start (at 0), so dashboards and alerts see them.
    for name in [
        "warden_audit_segments_sealed_total",
        "warden_audit_seal_refused_total",
    ] {
        metrics::counter!(name).increment(0);
    }
    let mut closed_at = tokio::time::Instant::now();
    let mut reported = std::collections::BTreeSet::new();
    let mut last_error = String::new();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = &mut stop => return,
        }
        if closed_at.elapsed().as_millis() >= u128::from(opts.interval_ms) {
            journal.close_segment();
            closed_at = tokio::time::Instant::now();
        }
        let (dir, key) = (data_dir.clone(), opts.key.clone());
        let retention_waits = removing.lock().await;
        let Ok(pass) = tokio::task::spawn_blocking(move || seal::seal_closed(&dir, &key)).await
        else {
            return;
        };
        drop(retention_waits);
        match pass {
            Ok(pass) => {
                metrics::counter!("warden_audit_segments_sealed_total")
                    .increment(pass.sealed.len() as u64);
                for (first, why) in pass.refused {
                    if reported.insert(first) {
                        metrics::counter!("warden_audit_seal_refused_total").increment(1);
                        log_line(&format!("audit seal: segment {first} NOT sealed: {why}"));
                    }
                }
                last_error.clear();
            }
            Err(e) if e.to_string() != last_error => {
                last_error = e.to_string();
                log_line(&format!("audit seal: {e}; trying again"));
            }
            Err(_) => {}
        }
    }
}

/// Removes the segments before the snapshot at `begin`; returns the size the journal must
/// grow past before the next compaction.
fn remove_before(journal: &Journal, begin: u64, size: u64, limit: u64) -> u64 {
    match journal.remove_segments_before(begin) {
        Ok((segments, bytes)) => {
            metrics::counter!("warden_audit_segments_removed_total").increment(segments as u64);
            let left = journal.size_bytes();
            log_line(&format!(
                "journal retention: snapshot at entry {begin}; removed {segments} segment(s), {bytes} bytes; {left} bytes kept"
            ));
            left + limit / 2
        }
        Err(e) => {
            log_line(&format!(
                "journal retention: removing old segments failed: {e}"
            ));
            size + limit / 2
        }
    }
}

/// One line on standard error (the node has no logger yet).
fn log_line(line: &str) {
    eprintln!("warden node: {line}");
}
