//! The audit journal: an append-only, hash-chained log of every decision, settlement, halt,
//! approval and policy change. It is also the node's write-ahead log (replay rebuilds state),
//! so it is written with group commit and read back with full verification.
//!
//! ## On disk
//! `DIR/journal/<first_seq:020>.seg` files. Each segment starts with a header
//! (`WARDENJ1`, the first sequence number, the hash of the previous segment's last entry, a
//! CRC) so a segment can be verified on its own and the chain continues across rotation. Then
//! frames, one per entry:
//!
//! ```text
//! u32 body_len | u32 crc32(body) | body
//! body = u64 seq | u64 ts_ms | u8 kind | [32] prev_hash | payload (body_len - 49 bytes)
//! hash(entry) = BLAKE3(body)          (so each hash covers the previous one)
//! ```
//!
//! ## Durability
//! One writer thread owns the file. [`Journal::submit`] numbers an entry and queues it
//! without waiting (so it can run under the lock that orders the entries); the writer takes
//! everything queued (up to `max_batch`), writes it in one go and, in [`FsyncMode::Always`]
//! (the default), calls `fdatasync` before acknowledging any of it; [`Journal::wait_durable`]
//! waits for an entry's acknowledgement. No caller learns of an entry before it is durable,
//! and one sync serves the whole group. The queue is bounded by `queue` entries; past it, or
//! after a failed write, the journal refuses everything (callers fail closed). [`FsyncMode::Batch`] acknowledges after the write and syncs at most every
//! `batch_sync_ms`; [`FsyncMode::Off`] leaves syncing to the OS.
//!
//! ## Recovery
//! [`Journal::open`] verifies every segment. A torn tail (the last frame of the last segment
//! incomplete or failing its CRC, with nothing valid after it) is cut back to the last valid
//! entry and reported; any other damage (a bad frame with valid frames after it, a broken hash
//! chain, a bad header) is an error naming the entry: it is never skipped silently.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

/// Segment header magic.
const MAGIC: &[u8; 8] = b"WARDENJ1";
/// Header: magic + first seq + prev hash + crc.
const HEADER_LEN: usize = 8 + 8 + 32 + 4;
/// Fixed part of a body: seq + ts + kind + prev hash.
const BODY_FIXED: usize = 8 + 8 + 1 + 32;
/// Largest payload accepted (1 MiB): larger appends are refused.
pub const MAX_PAYLOAD_BYTES: usize = 1 << 20;
/// Default bound on entries submitted and not yet taken by the writer: 4,194,304 (about
/// 1 GiB at typical entry sizes). Large because one act can submit one entry per agent (a
/// team halt over a million agents); past it the journal refuses entries and fails closed.
pub const DEFAULT_QUEUE: usize = 1 << 22;

/// A 32-byte BLAKE3 hash.
pub type Hash = [u8; 32];

/// The hash before the first entry.
pub const GENESIS: Hash = [0; 32];

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

/// What an entry records.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[repr(u8)]
pub enum EntryKind {
    /// An agent was registered.
    AgentRegistered = 1,
    /// A step was decided (and, if allowed, reserved).
    Decision = 2,
    /// An outcome was settled.
    Settlement = 3,
    /// An agent was halted.
    Halt = 4,
    /// An agent was resumed.
    Resume = 5,
    /// An approval was answered or timed out.
    Approval = 6,
    /// The policy changed.
    PolicyChange = 7,
    /// Anything else an operator should see in the record.
    Note = 8,
    /// Part of a state snapshot (retention: the segments before a complete snapshot may be
    /// removed).
    Snapshot = 9,
}

impl EntryKind {
    fn from_u8(b: u8) -> Option<Self> {
        Some(match b {
            1 => Self::AgentRegistered,
            2 => Self::Decision,
            3 => Self::Settlement,
            4 => Self::Halt,
            5 => Self::Resume,
            6 => Self::Approval,
            7 => Self::PolicyChange,
            8 => Self::Note,
            9 => Self::Snapshot,
            _ => return None,
        })
    }

    /// The name used in queries and reports.
    pub const fn name(self) -> &'static str {
        match self {
            Self::AgentRegistered => "agent_registered",
            Self::Decision => "decision",
            Self::Settlement => "settlement",
            Self::Halt => "halt",
            Self::Resume => "resume",
            Self::Approval => "approval",
            Self::PolicyChange => "policy_change",
            Self::Note => "note",
            Self::Snapshot => "snapshot",
        }
    }
}

/// One verified entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Sequence number, from 1, without gaps.
    pub seq: u64,
    /// When it was appended (Unix ms, from the appender's clock).
    pub ts_ms: u64,
    /// What it records.
    pub kind: EntryKind,
    /// The previous entry's hash.
    pub prev_hash: Hash,
    /// Its own hash.
    pub hash: Hash,
    /// The payload (JSON by convention).
    pub payload: Vec<u8>,
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
}

impl JournalConfig {
    /// Defaults for `dir`: fsync always, 64 MiB segments, groups of up to 4,096.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            fsync: FsyncMode::Always,
            batch_sync_ms: 10,
            segment_bytes: 64 << 20,
            max_batch: 4_096,
            queue: DEFAULT_QUEUE,
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
    /// The payload is larger than [`MAX_PAYLOAD_BYTES`].
    #[error("journal entry payload of {0} bytes exceeds the limit of {MAX_PAYLOAD_BYTES}")]
    TooLarge(usize),
    /// The writer has stopped (after an I/O error, or at shutdown).
    #[error("the journal writer has stopped: {0}")]
    Stopped(String),
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> JournalError + '_ {
    move |source| JournalError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn segment_name(first_seq: u64) -> String {
    format!("{first_seq:020}.seg")
}

fn encode_header(first_seq: u64, prev: &Hash) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[..8].copy_from_slice(MAGIC);
    h[8..16].copy_from_slice(&first_seq.to_le_bytes());
    h[16..48].copy_from_slice(prev);
    let crc = crc32fast::hash(&h[..48]);
    h[48..52].copy_from_slice(&crc.to_le_bytes());
    h
}

/// Encodes one frame into `out`; returns the entry's hash.
fn encode_frame(
    out: &mut Vec<u8>,
    seq: u64,
    ts_ms: u64,
    kind: EntryKind,
    prev: &Hash,
    payload: &[u8],
) -> Hash {
    let body_len = BODY_FIXED + payload.len();
    let start = out.len();
    out.extend_from_slice(&(body_len as u32).to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    let body_start = out.len();
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(&ts_ms.to_le_bytes());
    out.push(kind as u8);
    out.extend_from_slice(prev);
    out.extend_from_slice(payload);
    let body = &out[body_start..];
    let crc = crc32fast::hash(body);
    let hash = *blake3::hash(body).as_bytes();
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
    hash
}

/// The segments in `DIR/journal/`, in order.
fn segments(dir: &Path) -> Result<Vec<(u64, PathBuf)>, JournalError> {
    let jdir = dir.join("journal");
    let mut out = Vec::new();
    let rd = match fs::read_dir(&jdir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(io_err(&jdir)(e)),
    };
    for entry in rd {
        let entry = entry.map_err(io_err(&jdir))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(n) = name
            .strip_suffix(".seg")
            .and_then(|n| n.parse::<u64>().ok())
        {
            out.push((n, entry.path()));
        }
    }
    out.sort();
    Ok(out)
}

/// The header bytes of a segment.
fn read_header(path: &Path) -> io::Result<[u8; HEADER_LEN]> {
    let mut h = [0u8; HEADER_LEN];
    File::open(path)?.read_exact(&mut h)?;
    Ok(h)
}

/// What verification found.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct VerifyReport {
    /// The first entry kept (1 unless retention removed older segments).
    pub first_seq: u64,
    /// Entries that verified.
    pub entries: u64,
    /// Segments read.
    pub segments: usize,
    /// The last entry's sequence number and hash.
    pub head: Option<(u64, Hash)>,
    /// Bytes of a torn tail found after the last valid entry (not removed by `verify`).
    pub torn_tail_bytes: u64,
}

/// Reads and verifies every entry under `dir`, calling `visit` for each in order. Stops with
/// [`JournalError::Corrupt`] at the first damage that is not a torn tail.
pub fn read_all(dir: &Path, mut visit: impl FnMut(&Entry)) -> Result<VerifyReport, JournalError> {
    let segs = segments(dir)?;
    let mut report = VerifyReport {
        segments: segs.len(),
        first_seq: 1,
        ..Default::default()
    };
    let mut prev = GENESIS;
    let mut next_seq = 1u64;
    let mut anchored = false;
    for (i, (first_seq, path)) in segs.iter().enumerate() {
        if i == 0 && *first_seq > 1 {
            // Older segments were removed by retention: the chain is anchored at this
            // segment's header (the hash of the last removed entry). Retention removes only
            // segments before a snapshot, which starts a segment: anything else is damage.
            let bytes = read_header(path).map_err(io_err(path))?;
            next_seq = u64::from_le_bytes(bytes[8..16].try_into().expect("8 bytes"));
            prev = bytes[16..48].try_into().expect("32 bytes");
            report.first_seq = next_seq;
            anchored = true;
        }
        let last_segment = i + 1 == segs.len();
        let mut bytes = Vec::new();
        File::open(path)
            .and_then(|mut f| f.read_to_end(&mut bytes))
            .map_err(io_err(path))?;
        let corrupt = |seq: u64, offset: usize, reason: String| JournalError::Corrupt {
            seq,
            path: path.clone(),
            offset: offset as u64,
            reason,
        };
        if bytes.len() < HEADER_LEN || &bytes[..8] != MAGIC {
            return Err(corrupt(next_seq, 0, "missing or bad segment header".into()));
        }
        let crc = u32::from_le_bytes(bytes[48..52].try_into().expect("4 bytes"));
        if crc != crc32fast::hash(&bytes[..48]) {
            return Err(corrupt(
                next_seq,
                0,
                "segment header checksum mismatch".into(),
            ));
        }
        let head_seq = u64::from_le_bytes(bytes[8..16].try_into().expect("8 bytes"));
        let head_prev: Hash = bytes[16..48].try_into().expect("32 bytes");
        if head_seq != *first_seq || head_seq != next_seq || head_prev != prev {
            return Err(corrupt(
                next_seq,
                0,
                format!(
                    "segment starts at entry {head_seq} (file name says {first_seq}) but entry {next_seq} was expected next, or its chain link does not match the previous segment"
                ),
            ));
        }
        let mut off = HEADER_LEN;
        while off < bytes.len() {
            let frame_ok = parse_frame(&bytes, off);
            match frame_ok {
                Ok((entry_len, body)) => {
                    let seq = u64::from_le_bytes(body[..8].try_into().expect("8"));
                    let ts_ms = u64::from_le_bytes(body[8..16].try_into().expect("8"));
                    let kind_byte = body[16];
                    let link: Hash = body[17..49].try_into().expect("32");
                    if seq != next_seq {
                        return Err(corrupt(
                            next_seq,
                            off,
                            format!("found entry {seq} where {next_seq} belongs"),
                        ));
                    }
                    if link != prev {
                        return Err(corrupt(
                            seq,
                            off,
                            "hash chain broken: the entry does not link to the one before".into(),
                        ));
                    }
                    let Some(kind) = EntryKind::from_u8(kind_byte) else {
                        return Err(corrupt(seq, off, format!("unknown entry kind {kind_byte}")));
                    };
                    if anchored && report.entries == 0 && kind != EntryKind::Snapshot {
                        return Err(corrupt(
                            seq,
                            off,
                            "the journal does not start at entry 1, and its first entry is not a snapshot: segments were removed that retention would have kept".into(),
                        ));
                    }
                    let hash = *blake3::hash(body).as_bytes();
                    visit(&Entry {
                        seq,
                        ts_ms,
                        kind,
                        prev_hash: link,
                        hash,
                        payload: body[BODY_FIXED..].to_vec(),
                    });
                    prev = hash;
                    next_seq += 1;
                    report.entries += 1;
                    report.head = Some((seq, hash));
                    off += entry_len;
                }
                Err(reason) => {
                    // A torn tail is a bad frame at the end of the last segment with nothing
                    // valid after it; anything else is corruption.
                    if last_segment && !valid_frame_after(&bytes, off, next_seq) {
                        report.torn_tail_bytes = (bytes.len() - off) as u64;
                        break;
                    }
                    return Err(corrupt(next_seq, off, reason));
                }
            }
        }
    }
    Ok(report)
}

/// Parses the frame at `off`: (frame length, body).
fn parse_frame(bytes: &[u8], off: usize) -> Result<(usize, &[u8]), String> {
    if bytes.len() - off < 8 {
        return Err("truncated frame header".into());
    }
    let body_len = u32::from_le_bytes(bytes[off..off + 4].try_into().expect("4")) as usize;
    let crc = u32::from_le_bytes(bytes[off + 4..off + 8].try_into().expect("4"));
    if !(BODY_FIXED..=BODY_FIXED + MAX_PAYLOAD_BYTES).contains(&body_len) {
        return Err(format!("frame length {body_len} out of range"));
    }
    if bytes.len() - off - 8 < body_len {
        return Err("truncated frame body".into());
    }
    let body = &bytes[off + 8..off + 8 + body_len];
    if crc32fast::hash(body) != crc {
        return Err("frame checksum mismatch".into());
    }
    Ok((8 + body_len, body))
}

/// Is there any valid frame after a bad one at `bad`? Only frames that could really follow
/// count: a later sequence number (within 2^32 of the expected one) and a known kind, checked
/// before the (costlier) checksum, so a garbage tail is scanned quickly.
fn valid_frame_after(bytes: &[u8], bad: usize, next_seq: u64) -> bool {
    (bad + 1..bytes.len().saturating_sub(8 + BODY_FIXED)).any(|o| {
        let seq = u64::from_le_bytes(bytes[o + 8..o + 16].try_into().expect("8"));
        let kind = bytes[o + 8 + 16];
        seq > next_seq
            && seq - next_seq < (1 << 32)
            && EntryKind::from_u8(kind).is_some()
            && parse_frame(bytes, o).is_ok()
    })
}

/// Verifies `dir` without changing it.
pub fn verify(dir: &Path) -> Result<VerifyReport, JournalError> {
    read_all(dir, |_| {})
}

struct Append {
    seq: u64,
    /// Start a new segment before this entry (a snapshot's first entry).
    rotate: bool,
    kind: EntryKind,
    ts_ms: u64,
    payload: Vec<u8>,
    /// For [`Journal::append`], which reports the entry's hash too.
    ack: Option<oneshot::Sender<Hash>>,
}

/// How far the writer got: everything up to `seq` is acknowledged (durable with
/// [`FsyncMode::Always`]); `failed` once it refuses to go on.
#[derive(Clone, Debug, Default)]
struct Progress {
    seq: u64,
    failed: Option<String>,
}

/// The submitting side's shared state: sequence numbers are assigned here, in the order
/// entries enter the writer's queue.
#[derive(Debug)]
struct Submitter {
    next_seq: u64,
    tx: mpsc::UnboundedSender<Msg>,
}

#[derive(Debug)]
struct Shared {
    /// The data directory.
    dir: PathBuf,
    submit: std::sync::Mutex<Submitter>,
    /// Entries submitted and not yet taken by the writer.
    queued: std::sync::atomic::AtomicUsize,
    /// Bound on `queued`.
    max_queued: usize,
    progress: tokio::sync::watch::Sender<Progress>,
}

/// The appending side. Cheap to clone.
///
/// Two ways to append: [`Journal::append`] waits for its entry; [`Journal::submit`] only
/// enqueues it and returns its sequence number at once (no `await`, so it can run under a
/// lock that orders the entries, such as an agent's kernel lock), and
/// [`Journal::wait_durable`] later waits for it. Entries are written in submission order.
#[derive(Clone, Debug)]
pub struct Journal {
    shared: std::sync::Arc<Shared>,
}

enum Msg {
    Append(Append),
    /// Finish what is queued, sync, release the file and the lock, then acknowledge.
    Stop(oneshot::Sender<()>),
}
/// What opening found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpenReport {
    /// The verified state before opening.
    pub verified: VerifyReport,
    /// Bytes of torn tail cut off.
    pub truncated_bytes: u64,
}

/// Creates segment `first_seq` crash-safely: the header is written and synced under a
/// temporary name, then renamed, then the directory is synced. A crash leaves either no
/// segment or a complete header, never a half-made segment.
fn create_segment(jdir: &Path, first_seq: u64, prev: &Hash) -> io::Result<(PathBuf, File)> {
    let path = jdir.join(segment_name(first_seq));
    let tmp = jdir.join(format!("{}.tmp", segment_name(first_seq)));
    {
        let mut f = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .open(&tmp)?;
        f.write_all(&encode_header(first_seq, prev))?;
        f.sync_all()?;
    }
    fs::rename(&tmp, &path)?;
    File::open(jdir)?.sync_all()?;
    let mut file = OpenOptions::new().read(true).write(true).open(&path)?;
    file.seek(SeekFrom::End(0))?;
    Ok((path, file))
}

impl Journal {
    /// Opens (or creates) the journal in `config.dir`, verifies it, cuts a torn tail, and
    /// starts the writer thread. `visit` sees every existing entry (replay). Only one writer
    /// may hold a journal: a second `open` fails while the first writer lives.
    pub fn open(
        config: JournalConfig,
        visit: impl FnMut(&Entry),
    ) -> Result<(Journal, OpenReport), JournalError> {
        let jdir = config.dir.join("journal");
        fs::create_dir_all(&jdir).map_err(io_err(&jdir))?;
        let lock_path = jdir.join("LOCK");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io_err(&lock_path))?;
        lock.try_lock().map_err(|_| JournalError::Io {
            path: lock_path.clone(),
            source: io::Error::new(
                io::ErrorKind::WouldBlock,
                "another writer holds this journal (is a node already running on this data directory?)",
            ),
        })?;
        // A segment whose creation a crash interrupted never got its final name: drop it.
        for entry in fs::read_dir(&jdir).map_err(io_err(&jdir))?.flatten() {
            if entry
                .file_name()
                .to_str()
                .is_some_and(|n| n.ends_with(".seg.tmp"))
            {
                let _ = fs::remove_file(entry.path());
            }
        }
        let verified = read_all(&config.dir, visit)?;
        let segs = segments(&config.dir)?;
        let (next_seq, prev) = verified.head.map_or((1, GENESIS), |(s, h)| (s + 1, h));
        let (path, mut file, size) = match segs.last() {
            Some((_, path)) => {
                let file = OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open(path)
                    .map_err(io_err(path))?;
                let len = file.metadata().map_err(io_err(path))?.len();
                let keep = len.checked_sub(verified.torn_tail_bytes).ok_or_else(|| {
                    JournalError::Corrupt {
                        seq: next_seq,
                        path: path.clone(),
                        offset: len,
                        reason: "the segment shrank while the journal was being opened".into(),
                    }
                })?;
                if verified.torn_tail_bytes > 0 {
                    file.set_len(keep).map_err(io_err(path))?;
                    file.sync_all().map_err(io_err(path))?;
                }
                (path.clone(), file, keep)
            }
            None => {
                let (path, file) = create_segment(&jdir, 1, &GENESIS).map_err(io_err(&jdir))?;
                (path, file, HEADER_LEN as u64)
            }
        };
        file.seek(SeekFrom::End(0)).map_err(io_err(&path))?;
        let (tx, rx) = mpsc::unbounded_channel();
        let shared = std::sync::Arc::new(Shared {
            dir: config.dir.clone(),
            submit: std::sync::Mutex::new(Submitter { next_seq, tx }),
            queued: std::sync::atomic::AtomicUsize::new(0),
            max_queued: config.queue.max(1),
            progress: tokio::sync::watch::Sender::new(Progress {
                seq: next_seq - 1,
                failed: None,
            }),
        });
        let writer = Writer {
            config,
            jdir,
            path,
            file,
            size,
            next_seq,
            prev,
            dirty: false,
            shared: std::sync::Arc::clone(&shared),
            _lock: lock,
        };
        std::thread::Builder::new()
            .name("warden-journal".into())
            .spawn(move || writer.run(rx))
            .map_err(io_err(Path::new("journal writer thread")))?;
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

    /// Bytes in the journal's segment files now.
    pub fn size_bytes(&self) -> u64 {
        segments(&self.shared.dir)
            .unwrap_or_default()
            .iter()
            .filter_map(|(_, p)| fs::metadata(p).ok())
            .map(|m| m.len())
            .sum()
    }

    /// Removes every segment whose entries all come before entry `seq` (retention, once a
    /// snapshot starting at `seq` is durable). Returns the number of segments and bytes
    /// removed. The segment holding `seq` and all after it stay.
    pub fn remove_segments_before(&self, seq: u64) -> Result<(usize, u64), JournalError> {
        let segs = segments(&self.shared.dir)?;
        let mut removed = (0, 0);
        for pair in segs.windows(2) {
            let ((_, path), (next_first, _)) = (&pair[0], &pair[1]);
            if *next_first > seq {
                break;
            }
            let len = fs::metadata(path).map(|m| m.len()).unwrap_or(0);
            fs::remove_file(path).map_err(io_err(path))?;
            removed.0 += 1;
            removed.1 += len;
        }
        if removed.0 > 0 {
            let jdir = self.shared.dir.join("journal");
            File::open(&jdir)
                .and_then(|d| d.sync_all())
                .map_err(io_err(&jdir))?;
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
        use std::sync::atomic::Ordering;
        if payload.len() > MAX_PAYLOAD_BYTES {
            return Err(JournalError::TooLarge(payload.len()));
        }
        if let Some(why) = &self.shared.progress.borrow().failed {
            return Err(JournalError::Stopped(why.clone()));
        }
        let mut sub = self.shared.submit.lock().unwrap_or_else(|e| e.into_inner());
        if self.shared.queued.load(Ordering::Relaxed) >= self.shared.max_queued {
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
        sub.tx
            .send(Msg::Append(Append {
                seq,
                rotate,
                kind,
                ts_ms,
                payload,
                ack,
            }))
            .map_err(|_| JournalError::Stopped("the writer thread is gone".into()))?;
        sub.next_seq += 1;
        self.shared.queued.fetch_add(1, Ordering::Relaxed);
        Ok(seq)
    }

    /// Waits until entry `seq` (and so every entry before it) is acknowledged by the writer:
    /// durable with [`FsyncMode::Always`], written with the other modes.
    pub async fn wait_durable(&self, seq: u64) -> Result<(), JournalError> {
        let mut rx = self.shared.progress.subscribe();
        let p = rx
            .wait_for(|p| p.seq >= seq || p.failed.is_some())
            .await
            .map_err(|_| JournalError::Stopped("the writer thread is gone".into()))?;
        if p.seq >= seq {
            return Ok(());
        }
        Err(JournalError::Stopped(p.failed.clone().unwrap_or_default()))
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
        self.shared
            .submit
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .next_seq
            - 1
    }

    /// Puts the journal in its failed state (an entry that had to be written could not be):
    /// every later submit and wait fails, so nothing after it is acknowledged.
    pub fn fail(&self, why: impl Into<String>) {
        let why = why.into();
        self.shared.progress.send_modify(|p| {
            if p.failed.is_none() {
                p.failed = Some(why);
            }
        });
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

    /// Stops the writer: everything queued before is written and synced, the segment and the
    /// writer lock are released, and only then does this return. Appends through other clones
    /// fail afterwards.
    pub async fn shutdown(self) {
        let (done, stopped) = oneshot::channel();
        let sent = self
            .shared
            .submit
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .tx
            .send(Msg::Stop(done))
            .is_ok();
        if sent {
            let _ = stopped.await;
        }
    }

    /// Appends a JSON payload.
    pub async fn append_json<T: Serialize>(
        &self,
        kind: EntryKind,
        ts_ms: u64,
        payload: &T,
    ) -> Result<(u64, Hash), JournalError> {
        let bytes = serde_json::to_vec(payload)
            .map_err(|e| JournalError::Stopped(format!("cannot encode entry: {e}")))?;
        self.append(kind, ts_ms, bytes).await
    }
}

struct Writer {
    config: JournalConfig,
    jdir: PathBuf,
    path: PathBuf,
    file: File,
    /// Bytes of the current segment that are written (acknowledged or about to be).
    size: u64,
    next_seq: u64,
    prev: Hash,
    dirty: bool,
    shared: std::sync::Arc<Shared>,
    _lock: File,
}

impl Writer {
    fn run(mut self, rx: mpsc::UnboundedReceiver<Msg>) {
        // A one-thread runtime only to wait for appends with a timeout (batch-mode syncs when
        // idle); all file work is plain blocking I/O on this dedicated thread.
        let Ok(rt) = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
        else {
            self.fail("the journal writer could not start its runtime".into());
            return;
        };
        let stop = rt.block_on(self.serve(rx));
        if self.dirty {
            let _ = self.file.sync_data();
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

    async fn serve(&mut self, mut rx: mpsc::UnboundedReceiver<Msg>) -> Option<oneshot::Sender<()>> {
        use std::sync::atomic::Ordering;
        let mut batch: Vec<Append> = Vec::with_capacity(self.config.max_batch);
        let mut buf: Vec<u8> = Vec::with_capacity(1 << 20);
        loop {
            let first = if self.dirty && self.config.fsync == FsyncMode::Batch {
                let wait = Duration::from_millis(self.config.batch_sync_ms.max(1));
                match tokio::time::timeout(wait, rx.recv()).await {
                    Ok(Some(m)) => m,
                    Ok(None) => return None,
                    Err(_) => {
                        if self.file.sync_data().is_ok() {
                            self.dirty = false;
                        }
                        continue;
                    }
                }
            } else {
                match rx.recv().await {
                    Some(m) => m,
                    None => return None,
                }
            };
            let mut stop = None;
            match first {
                Msg::Append(a) => batch.push(a),
                Msg::Stop(done) => stop = Some(done),
            }
            while stop.is_none() && batch.len() < self.config.max_batch {
                match rx.try_recv() {
                    Ok(Msg::Append(a)) => batch.push(a),
                    Ok(Msg::Stop(done)) => stop = Some(done),
                    Err(_) => break,
                }
            }
            self.shared.queued.fetch_sub(batch.len(), Ordering::Relaxed);
            if batch.is_empty() {
                return stop;
            }
            if self.shared.progress.borrow().failed.is_some() {
                // Nothing after a failure is written (waiters see the failure).
                batch.clear();
                if stop.is_some() {
                    return stop;
                }
                continue;
            }
            let before = (self.path.clone(), self.size, self.next_seq, self.prev);
            let started = std::time::Instant::now();
            match self.write_group(&batch, &mut buf) {
                Ok(hashes) => {
                    metrics::histogram!("warden_audit_commit_duration_seconds")
                        .record(started.elapsed().as_secs_f64());
                    metrics::counter!("warden_audit_entries_total").increment(batch.len() as u64);
                    let last = self.next_seq - 1;
                    for (a, hash) in batch.drain(..).zip(hashes) {
                        if let Some(ack) = a.ack {
                            let _ = ack.send(hash);
                        }
                    }
                    self.shared.progress.send_modify(|p| p.seq = last);
                }
                Err(e) => {
                    // The group failed: none of it is acknowledged, so none of it may stay on
                    // disk (replay must not see entries whose callers were told they failed).
                    // Cut the segment back to the last acknowledged byte and refuse everything
                    // from now on: the tail is no longer trusted.
                    let why = format!("write to {} failed: {e}", self.path.display());
                    if self.path == before.0 {
                        let _ = self.file.set_len(before.1);
                        let _ = self.file.sync_data();
                    }
                    batch.clear();
                    self.fail(why);
                    self.dirty = false;
                }
            }
            if stop.is_some() {
                return stop;
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
            let frame_len = (8 + BODY_FIXED + a.payload.len()) as u64;
            let in_segment = self.size + buf.len() as u64;
            if in_segment > HEADER_LEN as u64
                && (a.rotate || in_segment + frame_len > self.config.segment_bytes)
            {
                self.file.write_all(buf)?;
                self.size += buf.len() as u64;
                buf.clear();
                self.rotate()?;
            }
            let hash = encode_frame(buf, a.seq, a.ts_ms, a.kind, &self.prev, &a.payload);
            self.prev = hash;
            self.next_seq += 1;
            hashes.push(hash);
        }
        self.file.write_all(buf)?;
        self.size += buf.len() as u64;
        self.dirty = true;
        if self.config.fsync == FsyncMode::Always {
            self.file.sync_data()?;
            self.dirty = false;
        }
        Ok(hashes)
    }

    fn rotate(&mut self) -> io::Result<()> {
        self.file.sync_data()?;
        let (path, file) = create_segment(&self.jdir, self.next_seq, &self.prev)?;
        self.file = file;
        self.path = path;
        self.size = HEADER_LEN as u64;
        self.dirty = false;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("warden-journal-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        d
    }

    async fn write_n(dir: &Path, n: u64, segment_bytes: u64) -> Vec<(u64, Hash)> {
        let mut cfg = JournalConfig::new(dir);
        cfg.segment_bytes = segment_bytes;
        let (j, _) = Journal::open(cfg, |_| {}).unwrap();
        let mut out = Vec::new();
        for i in 0..n {
            out.push(
                j.append(
                    EntryKind::Decision,
                    1_000 + i,
                    format!("{{\"i\":{i}}}").into_bytes(),
                )
                .await
                .unwrap(),
            );
        }
        j.shutdown().await;
        out
    }

    #[tokio::test]
    async fn entries_chain_across_segments_and_reopen_continues_the_chain() {
        let dir = tmp("chain");
        let acks = write_n(&dir, 500, 4_096).await;
        assert_eq!(acks.last().unwrap().0, 500);
        let report = verify(&dir).unwrap();
        assert_eq!(report.entries, 500);
        assert!(report.segments > 5, "rotated: {}", report.segments);
        assert_eq!(report.head, Some(*acks.last().unwrap()));
        // Reopen: replay sees every entry, and new appends continue the chain.
        let mut seen = Vec::new();
        let (j, open) = Journal::open(JournalConfig::new(&dir), |e| {
            seen.push((e.seq, e.payload.clone()))
        })
        .unwrap();
        assert_eq!(open.truncated_bytes, 0);
        assert_eq!(seen.len(), 500);
        assert_eq!(seen[41].1, b"{\"i\":41}");
        let (seq, _) = j.append(EntryKind::Note, 9, b"x".to_vec()).await.unwrap();
        assert_eq!(seq, 501);
        // Acknowledged means written and synced: it is on disk already.
        assert_eq!(verify(&dir).unwrap().entries, 501);
        drop(j);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn a_torn_tail_is_cut_back_and_reported() {
        let dir = tmp("torn");
        write_n(&dir, 20, 1 << 20).await;
        let (_, seg) = segments(&dir).unwrap().pop().unwrap();
        let len = fs::metadata(&seg).unwrap().len();
        // Half of the last frame is lost in a crash.
        OpenOptions::new()
            .write(true)
            .open(&seg)
            .unwrap()
            .set_len(len - 10)
            .unwrap();
        let report = verify(&dir).unwrap();
        assert_eq!(report.entries, 19);
        assert!(report.torn_tail_bytes > 0);
        let (j, open) = Journal::open(JournalConfig::new(&dir), |_| {}).unwrap();
        assert_eq!(open.verified.entries, 19);
        assert!(open.truncated_bytes > 0);
        assert_eq!(j.append(EntryKind::Note, 1, vec![]).await.unwrap().0, 20);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn a_flipped_byte_in_the_middle_is_reported_with_its_entry() {
        let dir = tmp("tamper");
        write_n(&dir, 50, 1 << 20).await;
        let (_, seg) = segments(&dir).unwrap().pop().unwrap();
        let mut bytes = fs::read(&seg).unwrap();
        // Entry 10's payload starts after the header and nine frames.
        let frame = 8 + BODY_FIXED + b"{\"i\":0}".len();
        let at = HEADER_LEN + 9 * frame + 8 + BODY_FIXED + 2;
        bytes[at] ^= 0x01;
        fs::write(&seg, &bytes).unwrap();
        match verify(&dir) {
            Err(JournalError::Corrupt { seq, reason, .. }) => {
                assert_eq!(seq, 10);
                assert!(reason.contains("checksum"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
        // Opening refuses too: corruption is never skipped.
        assert!(Journal::open(JournalConfig::new(&dir), |_| {}).is_err());
        fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn a_rewritten_entry_with_a_fixed_checksum_breaks_the_chain() {
        let dir = tmp("rewrite");
        write_n(&dir, 30, 1 << 20).await;
        let (_, seg) = segments(&dir).unwrap().pop().unwrap();
        let mut bytes = fs::read(&seg).unwrap();
        let frame = 8 + BODY_FIXED + b"{\"i\":0}".len();
        let off = HEADER_LEN + 4 * frame;
        let body_start = off + 8;
        bytes[body_start + BODY_FIXED + 2] = b'9';
        let crc = crc32fast::hash(&bytes[body_start..body_start + frame - 8]);
        bytes[off + 4..off + 8].copy_from_slice(&crc.to_le_bytes());
        fs::write(&seg, &bytes).unwrap();
        match verify(&dir) {
            Err(JournalError::Corrupt { seq, reason, .. }) => {
                assert_eq!(
                    seq, 6,
                    "entry 5 verifies alone; entry 6 no longer links to it"
                );
                assert!(reason.contains("chain"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
        fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn concurrent_appends_form_one_gapless_chain() {
        let dir = tmp("concurrent");
        let (j, _) = Journal::open(JournalConfig::new(&dir), |_| {}).unwrap();
        let mut tasks = Vec::new();
        for t in 0..8 {
            let j = j.clone();
            tasks.push(tokio::spawn(async move {
                let mut seqs = Vec::new();
                for i in 0..100 {
                    seqs.push(
                        j.append(EntryKind::Decision, i, vec![t as u8; 10])
                            .await
                            .unwrap()
                            .0,
                    );
                }
                seqs
            }));
        }
        let mut all = Vec::new();
        for t in tasks {
            all.extend(t.await.unwrap());
        }
        all.sort_unstable();
        assert_eq!(all, (1..=800).collect::<Vec<u64>>());
        assert_eq!(verify(&dir).unwrap().entries, 800);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn oversized_payloads_are_refused_and_change_nothing() {
        let dir = tmp("large");
        let (j, _) = Journal::open(JournalConfig::new(&dir), |_| {}).unwrap();
        let err = j
            .append(EntryKind::Note, 0, vec![0; MAX_PAYLOAD_BYTES + 1])
            .await
            .unwrap_err();
        assert!(matches!(err, JournalError::TooLarge(_)));
        assert_eq!(j.append(EntryKind::Note, 0, vec![]).await.unwrap().0, 1);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn segments_stay_within_their_size_even_for_large_concurrent_groups() {
        let dir = tmp("rotate-groups");
        let mut cfg = JournalConfig::new(&dir);
        cfg.segment_bytes = 4_096;
        let (j, _) = Journal::open(cfg, |_| {}).unwrap();
        let mut tasks = Vec::new();
        for t in 0..64u8 {
            let j = j.clone();
            tasks.push(tokio::spawn(async move {
                for i in 0..20 {
                    j.append(EntryKind::Decision, i, vec![t; 40]).await.unwrap();
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        j.shutdown().await;
        let frame = (8 + BODY_FIXED + 40) as u64;
        for (_, path) in segments(&dir).unwrap() {
            let len = fs::metadata(&path).unwrap().len();
            assert!(len <= 4_096 + frame, "{} is {len} bytes", path.display());
        }
        assert_eq!(verify(&dir).unwrap().entries, 64 * 20);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn a_second_writer_is_refused_and_a_half_made_segment_is_dropped() {
        let dir = tmp("lock");
        let (j, _) = Journal::open(JournalConfig::new(&dir), |_| {}).unwrap();
        j.append(EntryKind::Note, 1, vec![]).await.unwrap();
        let err = Journal::open(JournalConfig::new(&dir), |_| {}).unwrap_err();
        assert!(
            err.to_string()
                .contains("another writer holds this journal"),
            "{err}"
        );
        j.shutdown().await;
        // A crash while creating the next segment leaves only a temporary file behind.
        fs::write(
            dir.join("journal").join(format!("{}.tmp", segment_name(2))),
            b"WARD",
        )
        .unwrap();
        let (j, open) = Journal::open(JournalConfig::new(&dir), |_| {}).unwrap();
        assert_eq!(open.verified.entries, 1);
        assert_eq!(j.append(EntryKind::Note, 2, vec![]).await.unwrap().0, 2);
        j.shutdown().await;
        assert!(!dir
            .join("journal")
            .join(format!("{}.tmp", segment_name(2)))
            .exists());
        fs::remove_dir_all(&dir).unwrap();
    }
}
