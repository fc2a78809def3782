//! The audit journal: an append-only, hash-chained log of every decision, settlement, halt,
//! approval and policy change. It is also the node's write-ahead log (replay rebuilds state),
//! so it is written with group commit and read back with full verification.
//!
//! | module | what |
//! |---|---|
//! | this one | the handle: [`Journal::open`], [`submit`](Journal::submit), [`wait_durable`](Journal::wait_durable), [`flush`](Journal::flush), retention |
//! | [`format`](mod@format) | the bytes: segment headers, frames, the hash chain, the format version rule |
//! | [`read`] | reading back and verifying ([`read_all`], [`verify`]) |
//! | `writer` | group commit: the writer thread, and the waiting caller with `fsync: off` |
//! | [`records`] | what the payloads hold: the typed records the swarm journals and recovery reads |
//! | [`seal`] | Ed25519 seals of closed segments, and the sealer |
//! | [`tail`] | following the journal's files from a sequence number (what the exports read) |
//! | [`storage`] | where segments live: files, or memory with injected faults |
//!
//! ## Durability
//! One writer at a time holds the open segment. [`Journal::submit`] numbers an entry and
//! queues it without waiting (so it can run under the lock that orders the entries); the
//! writer takes everything queued (up to `max_batch`), writes it in one go and, in
//! [`FsyncMode::Always`] (the default), syncs before acknowledging any of it;
//! [`Journal::wait_durable`] waits for an entry's acknowledgement. No caller learns of an
//! entry before it is durable, and one sync serves the whole group. The queue is bounded by
//! `queue` entries; past it, or after a failed write, the journal refuses everything (callers
//! fail closed). [`FsyncMode::Batch`] acknowledges after the write and syncs at most every
//! `batch_sync_ms`; [`FsyncMode::Off`] leaves syncing to the OS, and there the caller that
//! waits writes the queued group itself ([`Journal::write_through`]: leader-based group
//! commit), so a decision costs no hop to the writer thread and back.
//!
//! ## Recovery
//! [`Journal::open`] verifies every segment. A torn tail (the last frame of the last segment
//! incomplete or failing its CRC, with nothing valid after it) is cut back to the last valid
//! entry and reported; any other damage is an error naming the entry: it is never skipped.

pub mod format;
pub mod read;
pub mod records;
pub mod seal;
pub mod storage;
pub mod tail;
mod writer;

#[cfg(test)]
mod seal_tests;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

pub use format::{Entry, EntryKind, Hash, FORMAT_VERSION, GENESIS};
pub use read::{read_all, read_segment, read_storage, verify, SegmentSummary, VerifyReport};
pub use storage::{Faults, FileStorage, MemStorage, SegmentWriter, Storage};

use crate::limits::{
    BATCH_SYNC_INTERVAL_MS_DEFAULT, ENTRY_PAYLOAD_BYTES_MAX, GROUP_ENTRIES_MAX_DEFAULT,
    QUEUE_ENTRIES_MAX_DEFAULT, SEGMENT_BYTES_DEFAULT,
};
use format::{encode_header, segment_name, SEGMENT_HEADER_BYTES};
use writer::{Append, Msg, Progress, Writer};

/// When the writer calls `fdatasync`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FsyncMode {
    /// Before acknowledging each group (durable acknowledgements).
    #[default]
    Always,
    /// At most every `batch_sync_ms`; acknowledgements may precede durability by that much.
    Batch,
    /// Never (the OS writes back when it likes).
    Off,
}

/// Journal settings.
#[derive(Clone, Debug)]
pub struct JournalConfig {
    /// The node's data directory; segments go to `DIR/journal/`.
    pub dir: PathBuf,
    /// When to sync.
    pub fsync: FsyncMode,
    /// Sync interval for [`FsyncMode::Batch`].
    pub batch_sync_ms: u64,
    /// Start a new segment beyond this size.
    pub segment_bytes: u64,
    /// Most entries written (and synced) as one group.
    pub max_batch: usize,
    /// Bound on entries submitted and not yet taken by the writer; past it the journal
    /// refuses entries for good (it has failed: the disk cannot keep up).
    pub queue: usize,
    /// Every [`Journal::submit`] writes (and, with [`FsyncMode::Always`], syncs) its entry on
    /// the calling thread before it returns, one entry per group: the entry's fate (written,
    /// or refused by a failing disk) is then fixed when `submit` returns, never by how the
    /// writer thread happened to be scheduled. For the simulator, whose runs must repeat bit
    /// for bit with injected disk faults; a node leaves it off (group commit on the writer
    /// thread).
    pub inline_writes: bool,
}

impl JournalConfig {
    /// Defaults for `dir` (see [`crate::limits`]): fsync always, 64 MiB segments, groups of up
    /// to 4,096.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            fsync: FsyncMode::Always,
            batch_sync_ms: BATCH_SYNC_INTERVAL_MS_DEFAULT,
            segment_bytes: SEGMENT_BYTES_DEFAULT,
            max_batch: GROUP_ENTRIES_MAX_DEFAULT,
            queue: QUEUE_ENTRIES_MAX_DEFAULT,
            inline_writes: false,
        }
    }
}

/// Why the journal failed.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// The file system said no.
    #[error("journal I/O on {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// Damage that is not a torn tail.
    #[error("journal corrupt at entry {seq} ({path}, byte {offset}): {reason}")]
    Corrupt {
        /// The entry that should have been there.
        seq: u64,
        /// The segment.
        path: PathBuf,
        /// Byte offset in the segment.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
    /// A segment written by a later version of warden (see [`format`](mod@format)).
    #[error("journal segment {path} has format version {version}; this warden reads versions 1 to {FORMAT_VERSION}: read it with the warden that wrote it, or a later one")]
    NewerFormat {
        /// The segment.
        path: PathBuf,
        /// Its version.
        version: u8,
    },
    /// An entry a [`tail::Tail`] wanted is in a segment that retention removed.
    #[error("journal entry {seq} was removed by retention{}", first_kept.map(|f| format!(" (the journal now starts at entry {f})")).unwrap_or_default())]
    Removed {
        /// The entry wanted.
        seq: u64,
        /// The first entry still kept, when known.
        first_kept: Option<u64>,
    },
    /// The payload is larger than [`ENTRY_PAYLOAD_BYTES_MAX`].
    #[error("journal entry payload of {0} bytes exceeds the limit of {ENTRY_PAYLOAD_BYTES_MAX}")]
    TooLarge(usize),
    /// A record could not be encoded: the journal has failed (no empty entry is written in
    /// its place).
    #[error("a journal entry could not be encoded: {0}")]
    Encode(String),
    /// The writer has stopped (after an I/O error, or at shutdown).
    #[error("the journal writer has stopped: {0}")]
    Stopped(String),
}

/// What opening found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpenReport {
    /// The verified state before opening.
    pub verified: VerifyReport,
    /// Bytes of torn tail cut off.
    pub truncated_bytes: u64,
}

/// The writer's queue and the submitting side's state: sequence numbers are assigned here,
/// in the order entries enter the queue. The writer thread is woken only when it sleeps (its
/// `idle` flag), and by one submitter, after the lock is released: a busy writer takes new
/// entries with its next group and costs submitters no system call.
struct Submitter {
    next_seq: u64,
    /// Entries (and a stop) not yet taken by the writer; at most `max_queued` entries.
    queue: std::collections::VecDeque<Msg>,
    /// The writer thread waits on `Shared::wake` for this queue.
    idle: bool,
    /// The writer has ended: nothing more is taken.
    gone: bool,
}

/// What the handles and the writer share.
pub(crate) struct Shared {
    storage: Arc<dyn Storage>,
    fsync: FsyncMode,
    submit: std::sync::Mutex<Submitter>,
    /// The open segment's state; whoever holds it writes the queue's next groups (see
    /// [`writer`]). `None` once the journal is stopped.
    writer: std::sync::Mutex<Option<Writer>>,
    /// Signalled when the queue gets its first message for an idle writer.
    wake: std::sync::Condvar,
    /// Bound on the queue's entries.
    max_queued: usize,
    /// [`JournalConfig::inline_writes`].
    inline_writes: bool,
    progress: tokio::sync::watch::Sender<Progress>,
    /// Chain hashes of every [`CHECKPOINT_EVERY`]-th acknowledged entry (the newest
    /// [`CHECKPOINTS_MAX`]): what a node claims to its peers and answers their probes with.
    checkpoints: std::sync::Mutex<BTreeMap<u64, Hash>>,
}

/// Every how many entries a checkpoint hash is kept (see [`Journal::checkpoint`]).
pub const CHECKPOINT_EVERY: u64 = 256;

/// Checkpoints kept (the oldest go first): 16,384 × 256 entries, about 4 million entries back.
pub const CHECKPOINTS_MAX: usize = 16_384;

impl Shared {
    /// Keeps `hash` if `seq` is a checkpoint.
    pub(super) fn note_checkpoint(&self, seq: u64, hash: Hash) {
        if !seq.is_multiple_of(CHECKPOINT_EVERY) {
            return;
        }
        let mut map = self.checkpoints.lock().unwrap_or_else(|e| e.into_inner());
        map.insert(seq, hash);
        while map.len() > CHECKPOINTS_MAX {
            map.pop_first();
        }
    }
}

impl Shared {
    /// Locks the queue (a panic while it was held leaves it usable: it holds no invariant a
    /// panic could break half-way).
    fn queue(&self) -> std::sync::MutexGuard<'_, Submitter> {
        self.submit.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues `msg` unless the writer is gone; wakes the writer if it sleeps, unless
    /// `inline` (the caller writes the entry itself: [`JournalConfig::inline_writes`]).
    fn push(&self, mut sub: std::sync::MutexGuard<'_, Submitter>, msg: Msg, inline: bool) -> bool {
        if sub.gone {
            return false;
        }
        sub.queue.push_back(msg);
        let wake = !inline && std::mem::take(&mut sub.idle);
        drop(sub);
        if wake {
            self.wake.notify_one();
        }
        true
    }
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("storage", &self.storage)
            .field("queued", &self.queue().queue.len())
            .finish_non_exhaustive()
    }
}

/// The appending side. Cheap to clone.
///
/// Two ways to append: [`Journal::append`] waits for its entry; [`Journal::submit`] only
/// enqueues it and returns its sequence number at once (no `await`, so it can run under a
/// lock that orders the entries, such as an agent's kernel lock), and
/// [`Journal::wait_durable`] later waits for it. Entries are written in submission order.
#[derive(Clone, Debug)]
pub struct Journal {
    shared: Arc<Shared>,
}

fn io_at(path: PathBuf) -> impl FnOnce(io::Error) -> JournalError {
    move |source| JournalError::Io { path, source }
}

impl Journal {
    /// Opens (or creates) the journal in `config.dir`, verifies it, cuts a torn tail, and
    /// starts the writer thread. `visit` sees every existing entry (replay). Only one writer
    /// may hold a journal: a second `open` fails while the first writer lives.
    pub fn open(
        config: JournalConfig,
        visit: impl FnMut(&Entry),
    ) -> Result<(Journal, OpenReport), JournalError> {
        let storage = Arc::new(FileStorage::new(&config.dir));
        Self::open_in(storage, config, visit)
    }

    /// [`Journal::open`] on any [`Storage`] (`config.dir` then only names it in messages).
    pub fn open_in(
        storage: Arc<dyn Storage>,
        config: JournalConfig,
        visit: impl FnMut(&Entry),
    ) -> Result<(Journal, OpenReport), JournalError> {
        let location = storage.location();
        let lock = storage.lock().map_err(io_at(location.join("LOCK")))?;
        let mut checkpoints = BTreeMap::new();
        let mut visit = visit;
        let verified = read_storage(storage.as_ref(), |e| {
            if e.seq.is_multiple_of(CHECKPOINT_EVERY) {
                checkpoints.insert(e.seq, e.hash);
                if checkpoints.len() > CHECKPOINTS_MAX {
                    checkpoints.pop_first();
                }
            }
            visit(e)
        })?;
        let (next_seq, prev) = verified.head.map_or((1, GENESIS), |(s, h)| (s + 1, h));
        let segs = storage.segments().map_err(io_at(location.clone()))?;
        let (segment_first, segment, size) = match segs.last() {
            // A sealed last segment is closed (its next segment was lost, or removed by hand):
            // appending would make its seal false, so new entries start a new segment.
            Some(&first)
                if verified.last_format == FORMAT_VERSION
                    && !location.join(seal::seal_name(first)).exists() =>
            {
                let path = location.join(segment_name(first));
                let mut segment = storage.open(first).map_err(io_at(path.clone()))?;
                let len = segment.size_bytes().map_err(io_at(path.clone()))?;
                let keep = len.checked_sub(verified.torn_tail_bytes).ok_or_else(|| {
                    JournalError::Corrupt {
                        seq: next_seq,
                        path: path.clone(),
                        offset: len,
                        reason: "the segment shrank while the journal was being opened".into(),
                    }
                })?;
                if verified.torn_tail_bytes > 0 {
                    segment.truncate(keep).map_err(io_at(path))?;
                }
                (first, segment, keep)
            }
            // No segment yet, or the last one is of an older format version or sealed: new
            // entries go to a new segment (a last segment without entries is replaced: same
            // name).
            _ => {
                let header = encode_header(next_seq, &prev);
                let segment = storage
                    .create(next_seq, &header)
                    .map_err(io_at(location.clone()))?;
                (next_seq, segment, SEGMENT_HEADER_BYTES as u64)
            }
        };
        let (batch, buf) = writer::buffers(&config);
        let fsync = config.fsync;
        let writer = Writer {
            config,
            storage: Arc::clone(&storage),
            segment_first,
            segment,
            size,
            next_seq,
            prev,
            dirty: false,
            batch,
            buf,
            closed: Vec::new(),
            _lock: lock,
        };
        let max_queued = writer.config.queue.max(1);
        let inline_writes = writer.config.inline_writes;
        let shared = Arc::new(Shared {
            storage,
            fsync,
            submit: std::sync::Mutex::new(Submitter {
                next_seq,
                queue: Default::default(),
                idle: false,
                gone: false,
            }),
            writer: std::sync::Mutex::new(Some(writer)),
            wake: std::sync::Condvar::new(),
            max_queued,
            inline_writes,
            progress: tokio::sync::watch::Sender::new(Progress {
                seq: next_seq - 1,
                hash: prev,
                failed: None,
            }),
            checkpoints: std::sync::Mutex::new(checkpoints),
        });
        let thread_shared = Arc::clone(&shared);
        std::thread::Builder::new()
            .name("warden-journal".into())
            .spawn(move || writer::run(thread_shared))
            .map_err(io_at(PathBuf::from("journal writer thread")))?;
        let truncated_bytes = verified.torn_tail_bytes;
        Ok((
            Journal { shared },
            OpenReport {
                verified,
                truncated_bytes,
            },
        ))
    }

    /// Enqueues an entry and returns its sequence number, without waiting. Entries are
    /// written in the order of their `submit` calls. Fails when the payload is too large, the
    /// writer has stopped, or more than `config.queue` entries wait (the disk cannot keep
    /// up: the journal then refuses everything, so callers fail closed rather than act on
    /// entries that may never be written).
    pub fn submit(
        &self,
        kind: EntryKind,
        ts_ms: u64,
        payload: Vec<u8>,
    ) -> Result<u64, JournalError> {
        self.enqueue(kind, ts_ms, payload, None, false)
    }

    /// [`submit`](Self::submit) of `value` as JSON. A value that cannot be encoded fails the
    /// journal ([`JournalError::Encode`]): no entry is written in its place.
    pub fn submit_json<T: Serialize + ?Sized>(
        &self,
        kind: EntryKind,
        ts_ms: u64,
        value: &T,
    ) -> Result<u64, JournalError> {
        let payload = self.encoded(serde_json::to_vec(value))?;
        self.submit(kind, ts_ms, payload)
    }

    /// Passes an encoded payload on; an encoding failure fails the journal, so a record that
    /// cannot be written is refused like any other, never replaced by an empty entry.
    pub(crate) fn encoded(
        &self,
        payload: Result<Vec<u8>, serde_json::Error>,
    ) -> Result<Vec<u8>, JournalError> {
        payload.map_err(|e| {
            let err = JournalError::Encode(e.to_string());
            self.fail(err.to_string());
            err
        })
    }

    /// [`submit`](Self::submit), starting a new segment with this entry (so every segment
    /// before it can later be removed: see
    /// [`remove_segments_before`](Self::remove_segments_before)).
    pub fn submit_in_new_segment(
        &self,
        kind: EntryKind,
        ts_ms: u64,
        payload: Vec<u8>,
    ) -> Result<u64, JournalError> {
        self.enqueue(kind, ts_ms, payload, None, true)
    }

    /// Closes the open segment once everything submitted before this call is written, if it
    /// holds entries: the next entry starts a new segment, and the closed one can be sealed
    /// ([`seal`]) and archived. Does not wait. A no-op on a failed or stopped journal.
    pub fn close_segment(&self) {
        let sub = self.shared.queue();
        let _ = self.shared.push(sub, Msg::Close, false);
    }

    /// Bytes in the journal's segments now.
    pub fn size_bytes(&self) -> u64 {
        let storage = &self.shared.storage;
        storage
            .segments()
            .unwrap_or_default()
            .into_iter()
            .filter_map(|first| storage.size_bytes(first).ok())
            .sum()
    }

    /// Removes every segment whose entries all come before entry `seq` (retention, once a
    /// snapshot starting at `seq` is durable). Returns the number of segments and bytes
    /// removed. The segment holding `seq` and all after it stay.
    pub fn remove_segments_before(&self, seq: u64) -> Result<(usize, u64), JournalError> {
        let storage = &self.shared.storage;
        let location = storage.location();
        let segs = storage.segments().map_err(io_at(location.clone()))?;
        let mut removed = (0, 0);
        for pair in segs.windows(2) {
            let (first, next_first) = (pair[0], pair[1]);
            if next_first > seq {
                break;
            }
            let len = storage.size_bytes(first).unwrap_or(0);
            storage
                .remove(first)
                .map_err(io_at(location.join(segment_name(first))))?;
            removed.0 += 1;
            removed.1 += len;
        }
        if removed.0 > 0 {
            storage.sync_dir().map_err(io_at(location))?;
        }
        Ok(removed)
    }

    fn enqueue(
        &self,
        kind: EntryKind,
        ts_ms: u64,
        payload: Vec<u8>,
        ack: Option<oneshot::Sender<Hash>>,
        rotate: bool,
    ) -> Result<u64, JournalError> {
        if payload.len() > ENTRY_PAYLOAD_BYTES_MAX {
            return Err(JournalError::TooLarge(payload.len()));
        }
        if let Some(why) = &self.shared.progress.borrow().failed {
            return Err(JournalError::Stopped(why.clone()));
        }
        let mut sub = self.shared.queue();
        if sub.queue.len() >= self.shared.max_queued {
            drop(sub);
            let why = format!(
                "more than {} entries wait for the disk; the journal stops taking entries",
                self.shared.max_queued
            );
            self.shared
                .progress
                .send_modify(|p| p.failed = Some(why.clone()));
            return Err(JournalError::Stopped(why));
        }
        let seq = sub.next_seq;
        sub.next_seq += 1;
        let append = Msg::Append(Append {
            seq,
            rotate,
            kind,
            ts_ms,
            payload,
            ack,
        });
        if !self.shared.push(sub, append, self.shared.inline_writes) {
            return Err(JournalError::Stopped("the writer thread is gone".into()));
        }
        if self.shared.inline_writes {
            self.shared.write_now(seq);
        }
        Ok(seq)
    }

    /// Waits until entry `seq` (and so every entry before it) is acknowledged by the writer:
    /// durable with [`FsyncMode::Always`], written with the other modes.
    pub async fn wait_durable(&self, seq: u64) -> Result<(), JournalError> {
        if let Some(done) = self.write_through(seq) {
            return done;
        }
        let mut rx = self.shared.progress.subscribe();
        let p = rx
            .wait_for(|p| p.seq >= seq || p.failed.is_some())
            .await
            .map_err(|_| JournalError::Stopped("the writer thread is gone".into()))?;
        p.answer(seq)
            .unwrap_or_else(|| Err(JournalError::Stopped(String::new())))
    }

    /// With [`FsyncMode::Off`]: writes everything queued (entry `seq` and every one before
    /// it, and whatever others queued since) on the calling thread, without waking the writer
    /// thread or waiting for it (leader-based group commit), and answers as
    /// [`wait_durable`](Self::wait_durable) would. `None` when another thread is writing
    /// right now (it takes this entry too: wait with [`wait_durable`](Self::wait_durable)),
    /// and always with the other modes (a sync is not done on a caller's thread). A
    /// synchronous caller that submitted entries and will not wait for them calls this so
    /// they are written now rather than at the writer thread's next look (within 10 ms).
    pub fn write_through(&self, seq: u64) -> Option<Result<(), JournalError>> {
        self.shared.write_through(seq)
    }

    /// Waits until every entry submitted so far is acknowledged. Fails at once if the journal
    /// has failed (an entry may have been refused, so "everything so far" cannot be vouched
    /// for).
    pub async fn flush(&self) -> Result<(), JournalError> {
        if let Some(why) = self.failure() {
            return Err(JournalError::Stopped(why));
        }
        self.wait_durable(self.last_submitted()).await
    }

    /// The last sequence number submitted (0 before the first entry).
    pub fn last_submitted(&self) -> u64 {
        self.shared.queue().next_seq - 1
    }

    /// Puts the journal in its failed state (an entry that had to be written could not be):
    /// every later submit and wait fails, so nothing after it is acknowledged.
    pub fn fail(&self, why: impl Into<String>) {
        self.shared.fail(why);
    }

    /// The last acknowledged entry's sequence number and chain hash (0 and the genesis hash
    /// for an empty journal): the head a node gossips to its peers.
    pub fn head(&self) -> (u64, Hash) {
        let p = self.shared.progress.borrow();
        (p.seq, p.hash)
    }

    /// The newest checkpoint: a sequence number (a multiple of [`CHECKPOINT_EVERY`]) and its
    /// chain hash; `None` before the first. What a cluster node claims to its peers.
    pub fn checkpoint(&self) -> Option<(u64, Hash)> {
        let map = self
            .shared
            .checkpoints
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        map.last_key_value().map(|(s, h)| (*s, *h))
    }

    /// The chain hash of checkpoint `seq`, if kept (a peer's probe of an earlier claim).
    pub fn checkpoint_at(&self, seq: u64) -> Option<Hash> {
        let map = self
            .shared
            .checkpoints
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        map.get(&seq).copied()
    }

    /// Why the journal stopped taking entries, if it did.
    pub fn failure(&self) -> Option<String> {
        self.shared.progress.borrow().failed.clone()
    }

    /// Appends an entry; resolves once it is written (and, with [`FsyncMode::Always`],
    /// durable). Returns its sequence number and hash.
    pub async fn append(
        &self,
        kind: EntryKind,
        ts_ms: u64,
        payload: Vec<u8>,
    ) -> Result<(u64, Hash), JournalError> {
        let (ack, hash) = oneshot::channel();
        let seq = self.enqueue(kind, ts_ms, payload, Some(ack), false)?;
        self.wait_durable(seq).await?;
        let hash = hash
            .await
            .map_err(|_| JournalError::Stopped("the writer thread is gone".into()))?;
        Ok((seq, hash))
    }

    /// Appends a JSON payload (a value that cannot be encoded fails the journal, as in
    /// [`submit_json`](Self::submit_json)).
    pub async fn append_json<T: Serialize>(
        &self,
        kind: EntryKind,
        ts_ms: u64,
        payload: &T,
    ) -> Result<(u64, Hash), JournalError> {
        let bytes = self.encoded(serde_json::to_vec(payload))?;
        self.append(kind, ts_ms, bytes).await
    }

    /// Stops the writer: everything queued before is written and synced, the segment and the
    /// writer lock are released, and only then does this return. Appends through other clones
    /// fail afterwards.
    pub async fn shutdown(self) {
        let (done, stopped) = oneshot::channel();
        if self
            .shared
            .push(self.shared.queue(), Msg::Stop(done), false)
        {
            let _ = stopped.await;
        }
    }
}
