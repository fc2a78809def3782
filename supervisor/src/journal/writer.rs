//! Group commit. The open segment's state ([`Writer`]) sits behind one mutex
//! ([`Shared::writer`](super::Shared)); whoever holds it takes everything queued (groups of up
//! to `max_batch` entries), writes each group in one go and, with [`FsyncMode::Always`], syncs
//! before acknowledging any of it, so one sync serves the whole group. A failed group is cut
//! back off the segment and the journal fails: nothing after it is written or acknowledged.
//!
//! Who holds it: the writer thread, woken by the first entry queued while it sleeps; and,
//! with [`FsyncMode::Off`] only, the caller that waits for its entry
//! ([`Shared::write_through`]): leader-based group commit, as in RocksDB's write path — the
//! waiting caller writes what is queued itself (its entry and everyone's before and after
//! it), so a decision neither wakes the thread nor waits to be woken by it. A caller that
//! finds another writing does not wait for the lock: it waits for the acknowledgement. In
//! that mode, while entries keep coming, the thread only looks at the queue every
//! [`OFF_POLL`] for entries no one waits for (and syncs segments closed at rotation, outside
//! the lock), and sleeps until woken after [`OFF_QUIET_POLLS`] empty looks.

use std::io;
use std::path::PathBuf;
use std::sync::{Arc, MutexGuard};
use std::time::Duration;

use tokio::sync::oneshot;

use super::format::{encode_frame, encode_header, frame_len, segment_name, EntryKind, Hash};
use super::storage::{SegmentWriter, Storage};
use super::{FsyncMode, JournalConfig, JournalError, Shared, SEGMENT_HEADER_BYTES};
use crate::limits::ENTRY_PAYLOAD_BYTES_MAX;

/// With [`FsyncMode::Off`]: how often the busy writer thread looks at the queue for entries
/// no one waits for (every waiter writes its own). A look costs a thread wake-up, so not
/// too often: such an entry is written within this long.
pub(super) const OFF_POLL: Duration = Duration::from_millis(10);

/// With [`FsyncMode::Off`]: empty looks (1 s) before the thread sleeps until woken.
pub(super) const OFF_QUIET_POLLS: u32 = 100;

/// With [`FsyncMode::Off`]: the most times one caller takes the writer in a row while others
/// keep queueing (each time a whole queue); past it the writer thread is woken to go on.
const LEADER_ROUNDS_MAX: usize = 8;

/// One entry on its way to the writer.
pub(super) struct Append {
    pub(super) seq: u64,
    /// Start a new segment before this entry (a snapshot's first entry).
    pub(super) rotate: bool,
    pub(super) kind: EntryKind,
    pub(super) ts_ms: u64,
    pub(super) payload: Vec<u8>,
    /// For [`Journal::append`](super::Journal::append), which reports the entry's hash too.
    pub(super) ack: Option<oneshot::Sender<Hash>>,
}

/// What the writer's queue carries.
pub(super) enum Msg {
    Append(Append),
    /// Finish what is queued, sync, release the segment and the lock, then acknowledge.
    Stop(oneshot::Sender<()>),
    /// After what is queued before it, close the open segment if it holds entries (the next
    /// entry goes to a new segment), so the sealer can sign it.
    Close,
}

/// What ends a group besides its entries.
#[derive(Default)]
struct Control {
    stop: Option<oneshot::Sender<()>>,
    close: bool,
    /// The queue still holds messages.
    more: bool,
}

/// How far the writer got: everything up to `seq` is acknowledged (durable with
/// [`FsyncMode::Always`]); `failed` once it refuses to go on.
#[derive(Clone, Debug, Default)]
pub(super) struct Progress {
    pub(super) seq: u64,
    /// The chain hash of entry `seq` (the journal's head, gossiped to peers).
    pub(super) hash: Hash,
    pub(super) failed: Option<String>,
}

impl Progress {
    /// Entry `seq`'s state at this point: `Some(Ok)` acknowledged, `Some(Err)` never will be
    /// (the journal failed), `None` not yet.
    pub(super) fn answer(&self, seq: u64) -> Option<Result<(), JournalError>> {
        if self.seq >= seq {
            return Some(Ok(()));
        }
        self.failed
            .as_ref()
            .map(|why| Err(JournalError::Stopped(why.clone())))
    }
}

/// The writer's state: the open segment and where the chain stands.
pub(super) struct Writer {
    pub(super) config: JournalConfig,
    pub(super) storage: Arc<dyn Storage>,
    /// The open segment's name (its first entry) and handle.
    pub(super) segment_first: u64,
    pub(super) segment: Box<dyn SegmentWriter>,
    /// Bytes of the open segment that are written (acknowledged or about to be).
    pub(super) size: u64,
    pub(super) next_seq: u64,
    pub(super) prev: Hash,
    /// Written since the last sync.
    pub(super) dirty: bool,
    /// The group being written, and its frames (kept to reuse their allocations).
    pub(super) batch: Vec<Append>,
    pub(super) buf: Vec<u8>,
    /// With [`FsyncMode::Off`]: segments closed and not yet synced. The writer thread syncs
    /// them without holding the writer (a 64 MiB segment's sync takes a disk's time: no
    /// caller waits for it); see [`sync_closed`].
    pub(super) closed: Vec<Box<dyn SegmentWriter>>,
    /// The storage's writer lock, released when the writer is dropped.
    pub(super) _lock: Box<dyn Send>,
}

/// How the writer thread waits for the queue.
enum Sleep {
    /// Until a submitter wakes it.
    UntilWoken,
    /// Until woken, or this long (batch mode with unsynced writes: then it syncs).
    WokenOr(Duration),
    /// This long, not woken ([`FsyncMode::Off`] while entries keep coming).
    Poll(Duration),
}

impl Shared {
    /// The writer's state: `None` once the journal is stopped. A panic while it was held
    /// (the writer half-way through a group) fails the journal and drops the writer.
    fn writer(&self) -> MutexGuard<'_, Option<Writer>> {
        match self.writer.lock() {
            Ok(guard) => guard,
            Err(poisoned) => {
                let mut guard = poisoned.into_inner();
                retire(self, guard.take(), "the journal writer panicked");
                guard
            }
        }
    }

    /// Entry `seq`'s state: `Some(Ok)` acknowledged, `Some(Err)` never will be (the journal
    /// failed), `None` not yet.
    pub(super) fn acknowledged(&self, seq: u64) -> Option<Result<(), JournalError>> {
        self.progress.borrow().answer(seq)
    }

    /// Puts the journal in its failed state, unless it is already (the first reason stays).
    pub(super) fn fail(&self, why: impl Into<String>) {
        let why = why.into();
        self.progress.send_modify(|p| {
            if p.failed.is_none() {
                p.failed = Some(why);
            }
        });
    }

    /// [`writer`](Self::writer), unless another thread holds it now.
    fn try_writer(&self) -> Option<MutexGuard<'_, Option<Writer>>> {
        match self.writer.try_lock() {
            Ok(guard) => Some(guard),
            Err(std::sync::TryLockError::WouldBlock) => None,
            Err(std::sync::TryLockError::Poisoned(_)) => Some(self.writer()),
        }
    }

    /// With [`FsyncMode::Off`], writes everything queued on the calling thread (leader-based
    /// group commit) and answers whether entry `seq` is acknowledged. Never waits for the
    /// writer: if another thread holds it, that one writes the entry (whoever lets the writer
    /// go looks at the queue again and takes what came meanwhile; the writer thread looks
    /// every [`OFF_POLL`] in any case), and this answers `None`: then wait for the progress.
    /// A holder preempted in the middle of a `write(2)` so never stalls another thread, nor
    /// every connection that thread serves. `None` in the other modes.
    pub(super) fn write_through(&self, seq: u64) -> Option<Result<(), JournalError>> {
        if self.fsync != FsyncMode::Off {
            return None;
        }
        if let Some(done) = self.acknowledged(seq) {
            return Some(done);
        }
        for round in 1..=LEADER_ROUNDS_MAX {
            let Some(mut guard) = self.try_writer() else {
                break;
            };
            serve(self, &mut guard);
            drop(guard);
            if self.queue().queue.is_empty() {
                break;
            }
            if round == LEADER_ROUNDS_MAX {
                // Others kept queueing: the writer thread takes over, so no caller serves
                // everyone else's entries for long.
                self.wake.notify_one();
            }
        }
        self.acknowledged(seq)
    }
}

impl Shared {
    /// With [`JournalConfig::inline_writes`]: writes what is queued on the calling thread
    /// until entry `seq` is acknowledged or the journal has failed (or stopped). Waits for
    /// the writer if the writer thread holds it; that thread then writes the entry, and this
    /// returns once it has.
    pub(super) fn write_now(&self, seq: u64) {
        while self.acknowledged(seq).is_none() {
            let mut guard = self.writer();
            let before = self.progress.borrow().seq;
            serve(self, &mut guard);
            if guard.is_none() || self.progress.borrow().seq == before {
                return;
            }
        }
    }
}

/// Writes what is queued with the writer in `guard`; a stop ends the writer there.
fn serve(shared: &Shared, guard: &mut MutexGuard<'_, Option<Writer>>) {
    let Some(writer) = guard.as_mut() else {
        return;
    };
    if let Some(done) = writer.serve_queued(shared) {
        let writer = guard.take();
        finish(shared, writer, done);
    }
}

/// A stop: the writer syncs, releases the segment and the lock, and then acknowledges.
fn finish(shared: &Shared, writer: Option<Writer>, done: oneshot::Sender<()>) {
    if let Some(mut w) = writer {
        sync_closed(std::mem::take(&mut w.closed));
        if w.dirty {
            let _ = w.segment.sync();
        }
        w.dirty = false;
        retire(shared, Some(w), "the journal is shut down");
    }
    let _ = done.send(());
}

/// Ends the journal: nothing more is queued (submits fail instead of waiting for an entry no
/// one will write), what is queued is dropped (its waiters see the failure), and the writer's
/// segment and lock are released.
fn retire(shared: &Shared, writer: Option<Writer>, why: &str) {
    shared.fail(why);
    let mut sub = shared.queue();
    sub.gone = true;
    let dropped: Vec<_> = sub.queue.drain(..).collect();
    drop(sub);
    drop(dropped);
    drop(writer);
}

/// The writer thread's body: serves the queue until the journal stops, however it stops (a
/// stop, a panic).
pub(super) fn run(shared: Arc<Shared>) {
    struct Ended(Arc<Shared>);
    impl Drop for Ended {
        fn drop(&mut self) {
            let writer = match self.0.writer.lock() {
                Ok(mut g) => g.take(),
                Err(poisoned) => poisoned.into_inner().take(),
            };
            retire(&self.0, writer, "the journal writer stopped");
        }
    }
    let ended = Ended(shared);
    let shared = &ended.0;
    let mut quiet = 0;
    // Batch mode with unsynced writes: sync when nothing comes for this long.
    let mut sync_after: Option<Duration> = None;
    loop {
        let sleep = match (shared.fsync, sync_after) {
            (FsyncMode::Off, _) if quiet < OFF_QUIET_POLLS => Sleep::Poll(OFF_POLL),
            (_, Some(after)) => Sleep::WokenOr(after),
            _ => Sleep::UntilWoken,
        };
        let work = wait(shared, sleep);
        let mut guard = shared.writer();
        if work {
            quiet = 0;
            serve(shared, &mut guard);
        } else {
            quiet = quiet.saturating_add(1);
        }
        let Some(writer) = guard.as_mut() else {
            return;
        };
        if !work && sync_after.is_some() && writer.dirty && writer.segment.sync().is_ok() {
            writer.dirty = false;
        }
        sync_after = (shared.fsync == FsyncMode::Batch && writer.dirty)
            .then(|| Duration::from_millis(writer.config.batch_sync_ms.max(1)));
        let closed = std::mem::take(&mut writer.closed);
        drop(guard);
        sync_closed(closed);
    }
}

/// Syncs closed segments (best effort: with [`FsyncMode::Off`] nothing is promised about
/// durability; a sync makes a power cut less likely to leave a hole between segments).
fn sync_closed(closed: Vec<Box<dyn SegmentWriter>>) {
    for mut segment in closed {
        let _ = segment.sync();
    }
}

/// Waits for the queue as `sleep` says; whether it holds something (or the journal is gone).
fn wait(shared: &Shared, sleep: Sleep) -> bool {
    let mut sub = shared.queue();
    if !sub.queue.is_empty() || sub.gone {
        return true;
    }
    let timeout = match sleep {
        Sleep::UntilWoken => None,
        Sleep::WokenOr(t) | Sleep::Poll(t) => Some(t),
    };
    // Submitters wake the thread only when it says it sleeps (`idle`).
    sub.idle = !matches!(sleep, Sleep::Poll(_));
    sub = match timeout {
        None => shared.wake.wait(sub).unwrap_or_else(|e| e.into_inner()),
        Some(t) => {
            shared
                .wake
                .wait_timeout(sub, t)
                .unwrap_or_else(|e| e.into_inner())
                .0
        }
    };
    sub.idle = false;
    !sub.queue.is_empty() || sub.gone
}

impl Writer {
    fn path(&self) -> PathBuf {
        self.storage
            .location()
            .join(segment_name(self.segment_first))
    }

    /// Takes and writes groups until the queue is empty; returns a stop's acknowledgement if
    /// one came (nothing after it is taken).
    fn serve_queued(&mut self, shared: &Shared) -> Option<oneshot::Sender<()>> {
        loop {
            let control = self.take(shared);
            let failed = shared.progress.borrow().failed.is_some();
            if !self.batch.is_empty() {
                if failed {
                    // Nothing after a failure is written (waiters see the failure).
                    self.batch.clear();
                } else {
                    self.commit(shared);
                }
            }
            if control.close && !failed && self.size > SEGMENT_HEADER_BYTES as u64 {
                if let Err(e) = self.rotate() {
                    shared.fail(format!("closing {} failed: {e}", self.path().display()));
                }
            }
            if control.stop.is_some() || !control.more {
                return control.stop;
            }
        }
    }

    /// Moves the next group (up to `max_batch` entries) into `self.batch`, up to a stop or a
    /// close.
    fn take(&mut self, shared: &Shared) -> Control {
        let mut sub = shared.queue();
        let mut control = Control::default();
        while self.batch.len() < self.config.max_batch {
            match sub.queue.pop_front() {
                Some(Msg::Append(a)) => self.batch.push(a),
                Some(Msg::Stop(done)) => {
                    sub.gone = true;
                    control.stop = Some(done);
                    break;
                }
                Some(Msg::Close) => {
                    control.close = true;
                    break;
                }
                None => break,
            }
        }
        control.more = !sub.queue.is_empty();
        control
    }

    /// Writes one group and acknowledges it, or fails the journal.
    fn commit(&mut self, shared: &Shared) {
        let before = (self.segment_first, self.size);
        let started = std::time::Instant::now();
        let mut batch = std::mem::take(&mut self.batch);
        match self.write_group(&batch) {
            Ok(hashes) => {
                metrics::histogram!("warden_audit_commit_duration_seconds")
                    .record(started.elapsed().as_secs_f64());
                metrics::counter!("warden_audit_entries_total").increment(batch.len() as u64);
                let last = self.next_seq - 1;
                for (a, hash) in batch.iter().zip(&hashes) {
                    shared.note_checkpoint(a.seq, *hash);
                }
                for (a, hash) in batch.drain(..).zip(hashes) {
                    if let Some(ack) = a.ack {
                        let _ = ack.send(hash);
                    }
                }
                let head = self.prev;
                shared.progress.send_modify(|p| {
                    p.seq = last;
                    p.hash = head;
                });
            }
            Err(e) => {
                // The group failed: none of it is acknowledged, so none of it may stay in the
                // segment (replay must not see entries whose callers were told they failed).
                // Cut the segment back to the last acknowledged byte and refuse everything
                // from now on: the tail is no longer trusted.
                let why = format!("write to {} failed: {e}", self.path().display());
                if self.segment_first == before.0 {
                    let _ = self.segment.truncate(before.1);
                }
                batch.clear();
                shared.fail(why);
                self.dirty = false;
            }
        }
        self.batch = batch;
    }

    fn write_group(&mut self, batch: &[Append]) -> io::Result<Vec<Hash>> {
        let mut hashes = Vec::with_capacity(batch.len());
        let mut buf = std::mem::take(&mut self.buf);
        buf.clear();
        let written = self.frame_group(batch, &mut buf, &mut hashes);
        self.buf = buf;
        written?;
        self.dirty = true;
        if self.config.fsync == FsyncMode::Always {
            self.segment.sync()?;
            self.dirty = false;
        }
        Ok(hashes)
    }

    /// Frames `batch` into `buf` and appends it, rotating where a segment is full or an entry
    /// asks for a new one.
    fn frame_group(
        &mut self,
        batch: &[Append],
        buf: &mut Vec<u8>,
        hashes: &mut Vec<Hash>,
    ) -> io::Result<()> {
        for a in batch {
            if a.seq != self.next_seq {
                return Err(io::Error::other(format!(
                    "entry {} arrived where {} was due",
                    a.seq, self.next_seq
                )));
            }
            let frame_len = frame_len(a.payload.len()) as u64;
            let in_segment = self.size + buf.len() as u64;
            if in_segment > SEGMENT_HEADER_BYTES as u64
                && (a.rotate || in_segment + frame_len > self.config.segment_bytes)
            {
                self.segment.append(buf)?;
                self.size += buf.len() as u64;
                buf.clear();
                self.rotate()?;
            }
            let hash = encode_frame(buf, a.seq, a.ts_ms, a.kind, &self.prev, &a.payload);
            self.prev = hash;
            self.next_seq += 1;
            hashes.push(hash);
        }
        self.segment.append(buf)?;
        self.size += buf.len() as u64;
        Ok(())
    }

    /// Closes the open segment and starts the next at `next_seq`. The closed one is synced
    /// first, except with [`FsyncMode::Off`]: there the writer thread syncs it later, outside
    /// the writer (see [`Writer::closed`]).
    fn rotate(&mut self) -> io::Result<()> {
        let later = self.config.fsync == FsyncMode::Off;
        if !later {
            self.segment.sync()?;
        }
        let next = self
            .storage
            .create(self.next_seq, &encode_header(self.next_seq, &self.prev))?;
        let closed = std::mem::replace(&mut self.segment, next);
        if later {
            self.closed.push(closed);
        }
        self.segment_first = self.next_seq;
        self.size = SEGMENT_HEADER_BYTES as u64;
        self.dirty = false;
        Ok(())
    }
}

/// A fresh writer's group buffers.
pub(super) fn buffers(config: &JournalConfig) -> (Vec<Append>, Vec<u8>) {
    (
        Vec::with_capacity(config.max_batch),
        Vec::with_capacity(ENTRY_PAYLOAD_BYTES_MAX),
    )
}
