//! Where the journal's segments live: the [`Storage`] trait, the file system
//! ([`FileStorage`], what a node uses), and memory with injected faults ([`MemStorage`], so
//! the simulator and tests can run a journal, and a node, without a disk and can crash it).
//!
//! The trait is the journal's whole view of its medium: named segments that are read whole,
//! created durably with their header, appended to, synced, cut back and removed, and one
//! writer lock. Everything above it (framing, the chain, group commit, torn-tail recovery) is
//! the same code on every store.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;

use super::format::{parse_segment_name, segment_name};

/// A journal's medium. Segments are named by the sequence number of their first entry.
pub trait Storage: Send + Sync + Debug {
    /// Where the segments live (`DIR/journal`): errors name paths under it.
    fn location(&self) -> PathBuf;

    /// Takes the one writer's lock (held until the returned guard drops), creating the store
    /// if needed and dropping segments whose creation a crash cut short. Fails with
    /// [`io::ErrorKind::WouldBlock`] while another writer holds it.
    fn lock(&self) -> io::Result<Box<dyn Send>>;

    /// The first sequence numbers of the segments, ascending (empty if there is no store yet).
    fn segments(&self) -> io::Result<Vec<u64>>;

    /// A whole segment.
    fn read(&self, first_seq: u64) -> io::Result<Vec<u8>>;

    /// A segment's length in bytes.
    fn size_bytes(&self, first_seq: u64) -> io::Result<u64>;

    /// Creates segment `first_seq` holding `header`, crash-safely (a crash leaves no segment
    /// or a segment with the whole header, synced), replacing a segment of that name; returns
    /// it open for appending.
    fn create(&self, first_seq: u64, header: &[u8]) -> io::Result<Box<dyn SegmentWriter>>;

    /// Opens an existing segment for appending at its end.
    fn open(&self, first_seq: u64) -> io::Result<Box<dyn SegmentWriter>>;

    /// Removes a segment (made durable by [`Storage::sync_dir`]).
    fn remove(&self, first_seq: u64) -> io::Result<()>;

    /// Makes creations and removals durable.
    fn sync_dir(&self) -> io::Result<()>;
}

/// One segment open for appending (owned by the journal's writer).
pub trait SegmentWriter: Send {
    /// Appends `bytes` at the end.
    fn append(&mut self, bytes: &[u8]) -> io::Result<()>;
    /// Makes everything appended durable (`fdatasync`).
    fn sync(&mut self) -> io::Result<()>;
    /// Cuts the segment back to `len` bytes, durably; appends continue from there.
    fn truncate(&mut self, len: u64) -> io::Result<()>;
    /// Its length in bytes.
    fn size_bytes(&self) -> io::Result<u64>;
}

/// Segments as files in `DIR/journal/`, with an advisory lock file `LOCK`.
#[derive(Clone, Debug)]
pub struct FileStorage {
    jdir: PathBuf,
}

impl FileStorage {
    /// The journal of the data directory `dir` (segments in `dir/journal/`).
    pub fn new(dir: impl AsRef<Path>) -> Self {
        Self {
            jdir: dir.as_ref().join("journal"),
        }
    }

    fn path(&self, first_seq: u64) -> PathBuf {
        self.jdir.join(segment_name(first_seq))
    }
}

struct FileSegment {
    file: File,
}

impl SegmentWriter for FileSegment {
    fn append(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.file.write_all(bytes)
    }
    fn sync(&mut self) -> io::Result<()> {
        self.file.sync_data()
    }
    fn truncate(&mut self, len: u64) -> io::Result<()> {
        self.file.set_len(len)?;
        self.file.sync_all()?;
        self.file.seek(SeekFrom::End(0)).map(|_| ())
    }
    fn size_bytes(&self) -> io::Result<u64> {
        Ok(self.file.metadata()?.len())
    }
}

/// Refuses a directory every user may write in (without the sticky bit, which keeps others
/// from renaming or removing what is not theirs): anyone could replace the journal's
/// segments or its parent directory. Group write is allowed (shared volumes, Kubernetes'
/// `fsGroup`).
fn refuse_open_to_all(dir: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(dir)?.permissions().mode();
        if mode & 0o002 != 0 && mode & 0o1000 == 0 {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!(
                    "{} is writable by every user (mode {:o}): anyone could replace the journal; run chmod o-w on it (700 is best)",
                    dir.display(),
                    mode & 0o7777
                ),
            ));
        }
    }
    Ok(())
}

impl Storage for FileStorage {
    fn location(&self) -> PathBuf {
        self.jdir.clone()
    }

    fn lock(&self) -> io::Result<Box<dyn Send>> {
        fs::create_dir_all(&self.jdir)?;
        for dir in [self.jdir.parent(), Some(self.jdir.as_path())]
            .into_iter()
            .flatten()
        {
            refuse_open_to_all(dir)?;
        }
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(self.jdir.join("LOCK"))?;
        lock.try_lock().map_err(|_| {
            io::Error::new(
                io::ErrorKind::WouldBlock,
                "another writer holds this journal (is a node already running on this data directory?)",
            )
        })?;
        // A segment whose creation a crash interrupted never got its final name: drop it.
        for entry in fs::read_dir(&self.jdir)?.flatten() {
            if entry
                .file_name()
                .to_str()
                .is_some_and(|n| n.ends_with(".seg.tmp") || n.ends_with(".sig.tmp"))
            {
                let _ = fs::remove_file(entry.path());
            }
        }
        Ok(Box::new(lock))
    }

    fn segments(&self) -> io::Result<Vec<u64>> {
        let rd = match fs::read_dir(&self.jdir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let mut out = Vec::new();
        for entry in rd {
            let name = entry?.file_name();
            if let Some(first) = name.to_str().and_then(parse_segment_name) {
                out.push(first);
            }
        }
        out.sort_unstable();
        Ok(out)
    }

    fn read(&self, first_seq: u64) -> io::Result<Vec<u8>> {
        fs::read(self.path(first_seq))
    }

    fn size_bytes(&self, first_seq: u64) -> io::Result<u64> {
        Ok(fs::metadata(self.path(first_seq))?.len())
    }

    fn create(&self, first_seq: u64, header: &[u8]) -> io::Result<Box<dyn SegmentWriter>> {
        // The header is written and synced under a temporary name, then renamed, then the
        // directory is synced.
        let path = self.path(first_seq);
        let tmp = self.jdir.join(format!("{}.tmp", segment_name(first_seq)));
        {
            let mut f = OpenOptions::new()
                .create(true)
                .truncate(true)
                .write(true)
                .open(&tmp)?;
            f.write_all(header)?;
            f.sync_all()?;
        }
        fs::rename(&tmp, &path)?;
        self.sync_dir()?;
        self.open(first_seq)
    }

    fn open(&self, first_seq: u64) -> io::Result<Box<dyn SegmentWriter>> {
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(self.path(first_seq))?;
        file.seek(SeekFrom::End(0))?;
        Ok(Box::new(FileSegment { file }))
    }

    fn remove(&self, first_seq: u64) -> io::Result<()> {
        // The seal goes first: a seal without its segment would claim entries no one has.
        match fs::remove_file(self.jdir.join(super::seal::seal_name(first_seq))) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        fs::remove_file(self.path(first_seq))
    }

    fn sync_dir(&self) -> io::Result<()> {
        File::open(&self.jdir)?.sync_all()
    }
}

/// Faults a [`MemStorage`] injects until changed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Faults {
    /// Appends fail once this many more bytes have been appended: the append that crosses
    /// the bound writes the bytes below it (a short write) and fails, and every later one
    /// fails. `None`: appends succeed.
    pub write_fails_after_bytes: Option<u64>,
    /// Every sync of a segment fails (and syncs nothing).
    pub sync_fails: bool,
}

/// Segments in memory, with injected faults and crashes: the simulator's disk.
///
/// Bytes appended are "written" at once and "durable" only once synced; [`MemStorage::crash`]
/// loses what was not synced (keeping a torn part of it if asked) and ends the writer, as a
/// power cut ends a process. Clones share the same store (the way a disk outlives the node).
#[derive(Clone, Debug, Default)]
pub struct MemStorage {
    state: Arc<Mutex<MemState>>,
}

#[derive(Debug, Default)]
struct MemState {
    segments: BTreeMap<u64, MemSegment>,
    locked: bool,
    /// Bumped by each crash: the writer handles of an earlier epoch belong to a process that
    /// is gone, and fail.
    epoch: u64,
    faults: Faults,
    /// Bytes appended since the faults were set (for `write_fails_after_bytes`).
    appended_since_faults: u64,
}

#[derive(Clone, Debug, Default)]
struct MemSegment {
    bytes: Vec<u8>,
    /// How many of `bytes` are durable.
    synced: usize,
}

impl MemStorage {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Injects `faults` from now on (replacing the earlier ones; `Faults::default()` heals).
    pub fn inject(&self, faults: Faults) {
        let mut s = self.state.lock();
        s.faults = faults;
        s.appended_since_faults = 0;
    }

    /// A power cut: every segment loses what was appended since its last sync, except that
    /// the last segment keeps the first `torn_bytes` of it (a write cut short: a torn tail
    /// if it ends inside a frame). The writer is gone: its lock is released and its segment
    /// handles fail from now on. Faults stay as they are.
    pub fn crash(&self, torn_bytes: usize) {
        let mut s = self.state.lock();
        let last = s.segments.keys().next_back().copied();
        for (first, seg) in s.segments.iter_mut() {
            let keep = if Some(*first) == last {
                seg.synced + torn_bytes.min(seg.bytes.len() - seg.synced)
            } else {
                seg.synced
            };
            seg.bytes.truncate(keep);
            seg.synced = keep;
        }
        s.locked = false;
        s.epoch += 1;
    }

    /// A power cut whose point the simulator chooses: as [`crash`](Self::crash), but only
    /// the first `len` bytes of segment `first_seq` (everything before it, and the headers of
    /// later segments, which are created synced) count as durable, whatever was synced since;
    /// of the rest, the last segment keeps `torn_bytes`. The simulator flushes the journal,
    /// then cuts at the end of what it had acknowledged plus a seeded number of bytes, so
    /// where a crash falls does not depend on the writer thread's timing.
    pub fn crash_at(&self, first_seq: u64, len: u64, torn_bytes: usize) {
        {
            let mut s = self.state.lock();
            for (first, seg) in s.segments.iter_mut() {
                let durable = match (*first).cmp(&first_seq) {
                    std::cmp::Ordering::Less => seg.synced,
                    std::cmp::Ordering::Equal => usize::try_from(len).unwrap_or(usize::MAX),
                    std::cmp::Ordering::Greater => super::format::SEGMENT_HEADER_BYTES,
                };
                seg.synced = seg.synced.min(durable);
            }
        }
        self.crash(torn_bytes);
    }

    /// Bytes appended and not yet synced, over all segments.
    pub fn unsynced_bytes(&self) -> u64 {
        let s = self.state.lock();
        s.segments
            .values()
            .map(|seg| (seg.bytes.len() - seg.synced) as u64)
            .sum()
    }

    /// Every segment's first sequence number and bytes (what a crash would leave: call
    /// [`MemStorage::crash`] first for that).
    pub fn contents(&self) -> Vec<(u64, Vec<u8>)> {
        let s = self.state.lock();
        s.segments
            .iter()
            .map(|(first, seg)| (*first, seg.bytes.clone()))
            .collect()
    }

    fn missing(first_seq: u64) -> io::Error {
        io::Error::new(
            io::ErrorKind::NotFound,
            format!("no segment {}", segment_name(first_seq)),
        )
    }
}

/// The writer lock of a [`MemStorage`], released when dropped (unless a crash already did).
struct MemLock {
    state: Arc<Mutex<MemState>>,
    epoch: u64,
}

impl Drop for MemLock {
    fn drop(&mut self) {
        let mut s = self.state.lock();
        if s.epoch == self.epoch {
            s.locked = false;
        }
    }
}

struct MemSegmentWriter {
    state: Arc<Mutex<MemState>>,
    first_seq: u64,
    epoch: u64,
}

impl MemSegmentWriter {
    fn with<T>(&self, f: impl FnOnce(&mut MemState) -> io::Result<T>) -> io::Result<T> {
        let mut s = self.state.lock();
        if s.epoch != self.epoch {
            return Err(io::Error::other("the store crashed: this writer is gone"));
        }
        f(&mut s)
    }
}

impl SegmentWriter for MemSegmentWriter {
    fn append(&mut self, bytes: &[u8]) -> io::Result<()> {
        let first_seq = self.first_seq;
        self.with(|s| {
            let allowed = match s.faults.write_fails_after_bytes {
                Some(limit) => limit.saturating_sub(s.appended_since_faults),
                None => u64::MAX,
            };
            let n = (bytes.len() as u64).min(allowed) as usize;
            s.appended_since_faults += n as u64;
            let seg = s
                .segments
                .get_mut(&first_seq)
                .ok_or_else(|| MemStorage::missing(first_seq))?;
            seg.bytes.extend_from_slice(&bytes[..n]);
            if n < bytes.len() {
                return Err(io::Error::other("injected write fault"));
            }
            Ok(())
        })
    }

    fn sync(&mut self) -> io::Result<()> {
        let first_seq = self.first_seq;
        self.with(|s| {
            if s.faults.sync_fails {
                return Err(io::Error::other("injected sync fault"));
            }
            let seg = s
                .segments
                .get_mut(&first_seq)
                .ok_or_else(|| MemStorage::missing(first_seq))?;
            seg.synced = seg.bytes.len();
            Ok(())
        })
    }

    fn truncate(&mut self, len: u64) -> io::Result<()> {
        let first_seq = self.first_seq;
        self.with(|s| {
            if s.faults.sync_fails {
                return Err(io::Error::other("injected sync fault"));
            }
            let seg = s
                .segments
                .get_mut(&first_seq)
                .ok_or_else(|| MemStorage::missing(first_seq))?;
            seg.bytes.truncate(len as usize);
            seg.synced = seg.bytes.len();
            Ok(())
        })
    }

    fn size_bytes(&self) -> io::Result<u64> {
        let first_seq = self.first_seq;
        self.with(|s| {
            s.segments
                .get(&first_seq)
                .map(|seg| seg.bytes.len() as u64)
                .ok_or_else(|| MemStorage::missing(first_seq))
        })
    }
}

impl Storage for MemStorage {
    fn location(&self) -> PathBuf {
        PathBuf::from("memory:journal")
    }

    fn lock(&self) -> io::Result<Box<dyn Send>> {
        let mut s = self.state.lock();
        if s.locked {
            return Err(io::Error::new(
                io::ErrorKind::WouldBlock,
                "another writer holds this journal",
            ));
        }
        s.locked = true;
        Ok(Box::new(MemLock {
            state: Arc::clone(&self.state),
            epoch: s.epoch,
        }))
    }

    fn segments(&self) -> io::Result<Vec<u64>> {
        Ok(self.state.lock().segments.keys().copied().collect())
    }

    fn read(&self, first_seq: u64) -> io::Result<Vec<u8>> {
        let s = self.state.lock();
        s.segments
            .get(&first_seq)
            .map(|seg| seg.bytes.clone())
            .ok_or_else(|| Self::missing(first_seq))
    }

    fn size_bytes(&self, first_seq: u64) -> io::Result<u64> {
        let s = self.state.lock();
        s.segments
            .get(&first_seq)
            .map(|seg| seg.bytes.len() as u64)
            .ok_or_else(|| Self::missing(first_seq))
    }

    fn create(&self, first_seq: u64, header: &[u8]) -> io::Result<Box<dyn SegmentWriter>> {
        let mut s = self.state.lock();
        if s.faults.sync_fails {
            return Err(io::Error::other("injected sync fault"));
        }
        s.segments.insert(
            first_seq,
            MemSegment {
                bytes: header.to_vec(),
                synced: header.len(),
            },
        );
        Ok(Box::new(MemSegmentWriter {
            state: Arc::clone(&self.state),
            first_seq,
            epoch: s.epoch,
        }))
    }

    fn open(&self, first_seq: u64) -> io::Result<Box<dyn SegmentWriter>> {
        let s = self.state.lock();
        if !s.segments.contains_key(&first_seq) {
            return Err(Self::missing(first_seq));
        }
        Ok(Box::new(MemSegmentWriter {
            state: Arc::clone(&self.state),
            first_seq,
            epoch: s.epoch,
        }))
    }

    fn remove(&self, first_seq: u64) -> io::Result<()> {
        self.state
            .lock()
            .segments
            .remove(&first_seq)
            .map(|_| ())
            .ok_or_else(|| Self::missing(first_seq))
    }

    fn sync_dir(&self) -> io::Result<()> {
        Ok(())
    }
}
