//! The group-commit writer: one thread owns the open segment. It takes everything queued (up
//! to `max_batch` entries), writes it in one go and, with [`FsyncMode::Always`], syncs before
//! acknowledging any of it, so one sync serves the whole group. A failed group is cut back off
//! the segment and the journal fails: nothing after it is written or acknowledged.

use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;

use super::format::{encode_frame, encode_header, frame_len, segment_name, EntryKind, Hash};
use super::storage::{SegmentWriter, Storage};
use super::{FsyncMode, JournalConfig, Shared, SEGMENT_HEADER_BYTES};
use crate::limits::ENTRY_PAYLOAD_BYTES_MAX;

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
pub(super) struct Control {
    stop: Option<oneshot::Sender<()>>,
    close: bool,
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
    pub(super) shared: Arc<Shared>,
    /// The storage's writer lock, released when the writer ends.
    pub(super) _lock: Box<dyn Send>,
}

impl Drop for Writer {
    /// However the writer ends (a stop, a panic), nothing more is queued for it: submits
    /// fail instead of waiting for an entry no one will write.
    fn drop(&mut self) {
        // After a panic: waiters learn the journal failed rather than wait forever.
        self.fail("the journal writer stopped".into());
        let mut sub = self.shared.queue();
        sub.gone = true;
        let stops: Vec<_> = sub.queue.drain(..).collect();
        drop(sub);
        drop(stops);
    }
}

impl Writer {
    /// The writer thread's body: serves appends until stopped, then releases everything.
    pub(super) fn run(mut self) {
        let stop = self.serve();
        if self.dirty {
            let _ = self.segment.sync();
        }
        if self.shared.progress.borrow().failed.is_none() {
            self.fail("the journal is shut down".into());
        }
        // Release the segment and the lock before acknowledging a stop.
        drop(self);
        if let Some(done) = stop {
            let _ = done.send(());
        }
    }

    fn fail(&self, why: String) {
        self.shared.progress.send_modify(|p| {
            if p.failed.is_none() {
                p.failed = Some(why);
            }
        });
    }

    fn path(&self) -> PathBuf {
        self.storage
            .location()
            .join(segment_name(self.segment_first))
    }

    /// Moves the next group (up to `max_batch` entries, and a stop) into `batch`, sleeping
    /// while the queue is empty; in batch mode with unsynced writes, syncs when nothing comes
    /// for `batch_sync_ms`.
    fn take(&mut self, batch: &mut Vec<Append>) -> Control {
        let mut sub = self.shared.queue();
        while sub.queue.is_empty() {
            sub.idle = true;
            if self.dirty && self.config.fsync == FsyncMode::Batch {
                let wait = Duration::from_millis(self.config.batch_sync_ms.max(1));
                let (next, timeout) = self
                    .shared
                    .wake
                    .wait_timeout(sub, wait)
                    .unwrap_or_else(|e| e.into_inner());
                sub = next;
                if timeout.timed_out() && sub.queue.is_empty() {
                    drop(sub);
                    if self.segment.sync().is_ok() {
                        self.dirty = false;
                    }
                    sub = self.shared.queue();
                }
            } else {
                sub = self
                    .shared
                    .wake
                    .wait(sub)
                    .unwrap_or_else(|e| e.into_inner());
            }
        }
        sub.idle = false;
        while batch.len() < self.config.max_batch {
            match sub.queue.pop_front() {
                Some(Msg::Append(a)) => batch.push(a),
                Some(Msg::Stop(done)) => {
                    sub.gone = true;
                    return Control {
                        stop: Some(done),
                        close: false,
                    };
                }
                Some(Msg::Close) => {
                    return Control {
                        stop: None,
                        close: true,
                    }
                }
                None => break,
            }
        }
        Control::default()
    }

    /// Serves groups until a stop; returns the stop's acknowledgement.
    fn serve(&mut self) -> Option<oneshot::Sender<()>> {
        let mut batch: Vec<Append> = Vec::with_capacity(self.config.max_batch);
        let mut buf: Vec<u8> = Vec::with_capacity(ENTRY_PAYLOAD_BYTES_MAX);
        loop {
            let control = self.take(&mut batch);
            let failed = self.shared.progress.borrow().failed.is_some();
            if !batch.is_empty() {
                if failed {
                    // Nothing after a failure is written (waiters see the failure).
                    batch.clear();
                } else {
                    self.commit(&mut batch, &mut buf);
                }
            }
            if control.close && !failed && self.size > SEGMENT_HEADER_BYTES as u64 {
                if let Err(e) = self.rotate() {
                    self.fail(format!("closing {} failed: {e}", self.path().display()));
                }
            }
            if control.stop.is_some() {
                return control.stop;
            }
        }
    }

    /// Writes one group and acknowledges it, or fails the journal.
    fn commit(&mut self, batch: &mut Vec<Append>, buf: &mut Vec<u8>) {
        let before = (self.segment_first, self.size);
        let started = std::time::Instant::now();
        match self.write_group(batch, buf) {
            Ok(hashes) => {
                metrics::histogram!("warden_audit_commit_duration_seconds")
                    .record(started.elapsed().as_secs_f64());
                metrics::counter!("warden_audit_entries_total").increment(batch.len() as u64);
                let last = self.next_seq - 1;
                for (a, hash) in batch.iter().zip(&hashes) {
                    self.shared.note_checkpoint(a.seq, *hash);
                }
                for (a, hash) in batch.drain(..).zip(hashes) {
                    if let Some(ack) = a.ack {
                        let _ = ack.send(hash);
                    }
                }
                let head = self.prev;
                self.shared.progress.send_modify(|p| {
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
                self.fail(why);
                self.dirty = false;
            }
        }
    }

    fn write_group(&mut self, batch: &[Append], buf: &mut Vec<u8>) -> io::Result<Vec<Hash>> {
        let mut hashes = Vec::with_capacity(batch.len());
        buf.clear();
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
        self.dirty = true;
        if self.config.fsync == FsyncMode::Always {
            self.segment.sync()?;
            self.dirty = false;
        }
        Ok(hashes)
    }

    /// Closes the open segment (synced) and starts the next at `next_seq`.
    fn rotate(&mut self) -> io::Result<()> {
        self.segment.sync()?;
        self.segment = self
            .storage
            .create(self.next_seq, &encode_header(self.next_seq, &self.prev))?;
        self.segment_first = self.next_seq;
        self.size = SEGMENT_HEADER_BYTES as u64;
        self.dirty = false;
        Ok(())
    }
}
