//! Following a journal from its files: [`Tail`] yields the verified entries from a sequence
//! number on, in order, across segment rotation, while the node keeps writing. The exports
//! (the PostgreSQL sink, the S3 archive) read the journal this way: they never touch the
//! writer, so however far they fall behind, no decision waits for them.
//!
//! A tail reads only what the caller says is acknowledged (`up_to`, from
//! [`Journal::head`](super::Journal::head)): every byte of those entries was written before
//! they were acknowledged, and none of them is ever cut back. Each read takes
//! [`TAIL_READ_BYTES_FIRST`] from the file, or [`TAIL_READ_BYTES_MAX`] for a frame larger than
//! that, so memory stays bounded however long the segment.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use super::format::{
    body_fields, frame_len, parse_frame, segment_name, Entry, EntryKind, Hash, Header,
    FRAME_BODY_FIXED_BYTES, SEGMENT_HEADER_BYTES,
};
use super::storage::{FileStorage, Storage};
use super::JournalError;
use crate::limits::ENTRY_PAYLOAD_BYTES_MAX;

/// Most bytes one read of a tail takes from a segment file (at least one largest frame).
pub const TAIL_READ_BYTES_MAX: usize = 4 << 20;

/// What one read of a tail takes first: a frame that does not fit is read again with
/// [`TAIL_READ_BYTES_MAX`].
pub const TAIL_READ_BYTES_FIRST: usize = 256 << 10;

/// Where a tail stands in a segment.
#[derive(Clone, Copy, Debug)]
struct Position {
    /// The segment (its first entry).
    segment: u64,
    /// The byte offset of the next frame in it.
    offset: u64,
    /// The segment's format version.
    format: u8,
}

/// A reader that follows the journal of a data directory (see the module docs).
#[derive(Debug)]
pub struct Tail {
    storage: FileStorage,
    /// The next entry to yield.
    next_seq: u64,
    /// The hash of the entry before it (known once positioned).
    prev: Hash,
    at: Option<Position>,
}

impl Tail {
    /// A tail of the journal in `data_dir/journal/` whose first entry will be `from_seq`
    /// (at least 1). Nothing is read until [`Tail::next_batch`].
    pub fn new(data_dir: &Path, from_seq: u64) -> Self {
        Self {
            storage: FileStorage::new(data_dir),
            next_seq: from_seq.max(1),
            prev: [0; 32],
            at: None,
        }
    }

    /// The entry the next batch starts with.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// The first entry the journal in `data_dir` still holds (1 unless retention removed
    /// segments; `None` without segments).
    pub fn first_kept(data_dir: &Path) -> Result<Option<u64>, JournalError> {
        let storage = FileStorage::new(data_dir);
        let segments = storage.segments().map_err(|source| JournalError::Io {
            path: storage.location(),
            source,
        })?;
        Ok(segments.first().copied())
    }

    /// The verified entries from [`next_seq`](Self::next_seq) through `up_to` (inclusive), at
    /// most `max`, in order; empty when `up_to` is behind. Call again for more.
    ///
    /// # Errors
    /// [`JournalError::Removed`] when the next entry's segment is gone (retention), and
    /// [`JournalError::Corrupt`] / [`JournalError::Io`] as when reading a journal.
    pub fn next_batch(&mut self, up_to: u64, max: usize) -> Result<Vec<Entry>, JournalError> {
        let mut out = Vec::new();
        while self.next_seq <= up_to && out.len() < max {
            let at = match self.at {
                Some(at) => at,
                None => self.position()?,
            };
            let before = out.len();
            let at = self.read_frames(at, up_to, max, &mut out)?;
            self.at = Some(at);
            if out.len() == before && self.next_seq <= up_to && !self.next_segment(at)? {
                // Acknowledged entries are written: one that cannot be found is damage.
                return Err(self.corrupt(
                    &at,
                    "an acknowledged entry is not in the journal's files".into(),
                ));
            }
        }
        Ok(out)
    }

    fn path(&self, segment: u64) -> PathBuf {
        self.storage.location().join(segment_name(segment))
    }

    fn corrupt(&self, at: &Position, reason: String) -> JournalError {
        JournalError::Corrupt {
            seq: self.next_seq,
            path: self.path(at.segment),
            offset: at.offset,
            reason,
        }
    }

    /// Finds the segment holding `next_seq` and the frame offset of that entry.
    fn position(&mut self) -> Result<Position, JournalError> {
        let segments = self.storage.segments().map_err(|source| JournalError::Io {
            path: self.storage.location(),
            source,
        })?;
        let Some(&segment) = segments.iter().rev().find(|&&f| f <= self.next_seq) else {
            return Err(JournalError::Removed {
                seq: self.next_seq,
                first_kept: segments.first().copied(),
            });
        };
        let wanted = self.next_seq;
        let mut at = self.open_segment(segment)?;
        // Skip the entries before `wanted`, verifying them as any other.
        while self.next_seq < wanted {
            let mut skipped = Vec::new();
            let before = self.next_seq;
            at = self.read_frames(at, wanted - 1, usize::MAX, &mut skipped)?;
            if self.next_seq == before {
                // Callers ask only for acknowledged entries, which are written.
                return Err(self.corrupt(
                    &at,
                    format!("entry {wanted} is acknowledged but not in its segment"),
                ));
            }
        }
        Ok(at)
    }

    /// Reads and checks a segment's header; the tail continues from its first entry.
    fn open_segment(&mut self, segment: u64) -> Result<Position, JournalError> {
        let at = Position {
            segment,
            offset: 0,
            format: 0,
        };
        let bytes = self.read_at(&at, SEGMENT_HEADER_BYTES)?;
        let header = Header::parse(&bytes).map_err(|e| {
            let why = match e {
                super::format::HeaderError::Bad(why) => why.to_string(),
                super::format::HeaderError::Newer(v) => {
                    format!("format version {v} is newer than this warden reads")
                }
            };
            self.corrupt(&at, why)
        })?;
        if header.first_seq != segment {
            return Err(self.corrupt(&at, "the segment's header and name disagree".into()));
        }
        self.next_seq = header.first_seq;
        self.prev = header.prev;
        Ok(Position {
            segment,
            offset: SEGMENT_HEADER_BYTES as u64,
            format: header.version,
        })
    }

    /// Moves on to the segment that starts at `next_seq`, if it exists; checks its link.
    fn next_segment(&mut self, at: Position) -> Result<bool, JournalError> {
        let segments = self.storage.segments().map_err(|source| JournalError::Io {
            path: self.storage.location(),
            source,
        })?;
        if !segments.contains(&self.next_seq) || self.next_seq == at.segment {
            return Ok(false);
        }
        let (seq, prev) = (self.next_seq, self.prev);
        let next = self.open_segment(seq)?;
        if self.prev != prev || self.next_seq != seq {
            return Err(self.corrupt(
                &next,
                "the segment's chain link does not match the previous segment".into(),
            ));
        }
        self.at = Some(next);
        Ok(true)
    }

    /// Reads whole frames from `at` on, up to entry `up_to` and `max` entries, into `out`.
    fn read_frames(
        &mut self,
        mut at: Position,
        up_to: u64,
        max: usize,
        out: &mut Vec<Entry>,
    ) -> Result<Position, JournalError> {
        // A small read first (a batch of typical entries fits in a few); the largest only when
        // a frame does not fit in it.
        let mut bytes = self.read_at(&at, TAIL_READ_BYTES_FIRST)?;
        if bytes.len() == TAIL_READ_BYTES_FIRST && parse_frame(&bytes, 0).is_err() {
            bytes = self.read_at(&at, TAIL_READ_BYTES_MAX)?;
        }
        let mut off = 0;
        while self.next_seq <= up_to && out.len() < max && off < bytes.len() {
            let Ok((len, body)) = parse_frame(&bytes, off) else {
                break; // an unfinished frame: not acknowledged yet, or the end of what was read
            };
            let (seq, ts_ms, kind, link) = body_fields(body);
            let here = Position {
                offset: at.offset + off as u64,
                ..at
            };
            if seq != self.next_seq || link != self.prev {
                return Err(self.corrupt(
                    &here,
                    format!(
                        "found entry {seq} (or a broken chain link) where entry {} belongs",
                        self.next_seq
                    ),
                ));
            }
            let kind = EntryKind::from_u8(kind)
                .ok_or_else(|| self.corrupt(&here, format!("unknown entry kind {kind}")))?;
            let hash = *blake3::hash(body).as_bytes();
            out.push(Entry {
                seq,
                ts_ms,
                kind,
                format: at.format,
                prev_hash: link,
                hash,
                payload: body[FRAME_BODY_FIXED_BYTES..].to_vec(),
            });
            self.prev = hash;
            self.next_seq += 1;
            off += len;
        }
        at.offset += off as u64;
        Ok(at)
    }

    /// Up to `len` bytes of the segment from `at.offset` (fewer at its end).
    fn read_at(&self, at: &Position, len: usize) -> Result<Vec<u8>, JournalError> {
        let path = self.path(at.segment);
        let read = || -> io::Result<Vec<u8>> {
            let mut f = File::open(&path)?;
            f.seek(SeekFrom::Start(at.offset))?;
            let mut buf = Vec::with_capacity(len.min(1 << 16));
            f.take(len as u64).read_to_end(&mut buf)?;
            Ok(buf)
        };
        read().map_err(|source| match source.kind() {
            io::ErrorKind::NotFound => JournalError::Removed {
                seq: self.next_seq,
                first_kept: None,
            },
            _ => JournalError::Io {
                path: path.clone(),
                source,
            },
        })
    }
}

const _: () = assert!(TAIL_READ_BYTES_MAX >= frame_len(ENTRY_PAYLOAD_BYTES_MAX));
