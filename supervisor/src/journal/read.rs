//! Reading a journal back and verifying it: every frame's checksum, the sequence, the hash
//! chain across segments, segment headers and their format version.
//!
//! A torn tail (the last frame of the last segment incomplete or failing its checksum, with
//! nothing valid after it) is reported, not an error: a crash during a write leaves one, and
//! [`Journal::open`](super::Journal::open) cuts it. Any other damage (a bad frame with valid
//! frames after it, a broken chain, a bad header) is [`JournalError::Corrupt`] naming the
//! entry: it is never skipped.

use std::path::{Path, PathBuf};

use super::format::{
    body_fields, parse_frame, Entry, EntryKind, Hash, Header, HeaderError, FRAME_BODY_FIXED_BYTES,
    FRAME_HEADER_BYTES, GENESIS, SEGMENT_HEADER_BYTES,
};
use super::storage::{FileStorage, Storage};
use super::JournalError;
use crate::limits::TORN_TAIL_SEQ_WINDOW_ENTRIES;

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
    /// The format version of the last segment (0 without segments): the writer starts a new
    /// segment before writing if it is older than the version it writes.
    pub last_format: u8,
}

/// Reads and verifies every entry of the journal in the data directory `dir`, calling
/// `visit` for each in order. Stops with [`JournalError::Corrupt`] at the first damage that is
/// not a torn tail. Takes no lock: it can run beside a live writer.
pub fn read_all(dir: &Path, visit: impl FnMut(&Entry)) -> Result<VerifyReport, JournalError> {
    read_storage(&FileStorage::new(dir), visit)
}

/// Verifies the journal in `dir` without changing it.
pub fn verify(dir: &Path) -> Result<VerifyReport, JournalError> {
    read_all(dir, |_| {})
}

/// [`read_all`] over any [`Storage`].
pub fn read_storage(
    storage: &dyn Storage,
    mut visit: impl FnMut(&Entry),
) -> Result<VerifyReport, JournalError> {
    let location = storage.location();
    let segs = storage.segments().map_err(|source| JournalError::Io {
        path: location.clone(),
        source,
    })?;
    let mut reader = Reader {
        report: VerifyReport {
            segments: segs.len(),
            first_seq: 1,
            ..Default::default()
        },
        prev: GENESIS,
        next_seq: 1,
        anchored: false,
    };
    for (i, first_seq) in segs.iter().enumerate() {
        let path = location.join(super::format::segment_name(*first_seq));
        let bytes = storage
            .read(*first_seq)
            .map_err(|source| JournalError::Io {
                path: path.clone(),
                source,
            })?;
        let segment = Segment {
            path,
            first_seq: *first_seq,
            bytes: &bytes,
            is_first: i == 0,
            is_last: i + 1 == segs.len(),
        };
        reader.segment(&segment, &mut visit)?;
    }
    Ok(reader.report)
}

/// One closed segment, verified on its own (see [`read_segment`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SegmentSummary {
    /// Its first entry (the number in its name and header).
    pub first_seq: u64,
    /// Its last entry (`first_seq - 1` for a segment with no entries).
    pub last_seq: u64,
    /// The chain link in its header: the hash of the entry before `first_seq`.
    pub prev_hash: Hash,
    /// The hash of its last entry (`prev_hash` when it has none): the chain head it ends at.
    pub head_hash: Hash,
    /// Entries it holds.
    pub entries: u64,
}

/// Verifies one closed segment's bytes on their own: its header (against `first_seq`, the
/// number in its name), every frame's checksum, the sequence and the hash chain from the
/// header's link, calling `visit` for each entry. A closed segment has no torn tail: a bad
/// last frame is damage. `path` only names the segment in errors (a file, an object key).
///
/// # Errors
/// [`JournalError::Corrupt`] naming the entry and byte, or [`JournalError::NewerFormat`].
pub fn read_segment(
    bytes: &[u8],
    first_seq: u64,
    path: &Path,
    mut visit: impl FnMut(&Entry),
) -> Result<SegmentSummary, JournalError> {
    let segment = Segment {
        path: path.to_path_buf(),
        first_seq,
        bytes,
        is_first: false,
        is_last: false,
    };
    let (next_seq, prev) = match Header::parse(bytes) {
        Ok(h) => (h.first_seq, h.prev),
        Err(_) => (first_seq, GENESIS), // `segment` reports the header's fault below
    };
    let mut reader = Reader {
        report: VerifyReport::default(),
        prev,
        next_seq,
        anchored: false,
    };
    reader.segment(&segment, &mut visit)?;
    Ok(SegmentSummary {
        first_seq,
        last_seq: reader.next_seq.saturating_sub(1),
        prev_hash: prev,
        head_hash: reader.prev,
        entries: reader.report.entries,
    })
}

/// One segment's bytes, as read.
struct Segment<'a> {
    path: PathBuf,
    first_seq: u64,
    bytes: &'a [u8],
    is_first: bool,
    is_last: bool,
}

impl Segment<'_> {
    fn corrupt(&self, seq: u64, offset: usize, reason: String) -> JournalError {
        JournalError::Corrupt {
            seq,
            path: self.path.clone(),
            offset: offset as u64,
            reason,
        }
    }
}

/// The verification state carried from segment to segment.
struct Reader {
    report: VerifyReport,
    prev: Hash,
    next_seq: u64,
    /// The journal starts after entry 1 (retention removed older segments).
    anchored: bool,
}

impl Reader {
    fn segment(
        &mut self,
        seg: &Segment<'_>,
        visit: &mut impl FnMut(&Entry),
    ) -> Result<(), JournalError> {
        let header = self.header(seg)?;
        self.report.last_format = header.version;
        let mut off = SEGMENT_HEADER_BYTES;
        while off < seg.bytes.len() {
            match parse_frame(seg.bytes, off) {
                Ok((frame_len, body)) => {
                    let entry = self.entry(seg, off, body, header.version)?;
                    visit(&entry);
                    self.prev = entry.hash;
                    self.next_seq += 1;
                    self.report.entries += 1;
                    self.report.head = Some((entry.seq, entry.hash));
                    off += frame_len;
                }
                Err(reason) => {
                    // A torn tail is a bad frame at the end of the last segment with nothing
                    // valid after it; anything else is corruption.
                    if seg.is_last && !valid_frame_after(seg.bytes, off, self.next_seq) {
                        self.report.torn_tail_bytes = (seg.bytes.len() - off) as u64;
                        return Ok(());
                    }
                    return Err(seg.corrupt(self.next_seq, off, reason));
                }
            }
        }
        Ok(())
    }

    /// Checks a segment's header against its name and the chain so far.
    fn header(&mut self, seg: &Segment<'_>) -> Result<Header, JournalError> {
        let header = match Header::parse(seg.bytes) {
            Ok(h) => h,
            Err(HeaderError::Newer(version)) => {
                return Err(JournalError::NewerFormat {
                    path: seg.path.clone(),
                    version,
                })
            }
            Err(HeaderError::Bad(why)) => {
                let seq = if seg.is_first && seg.first_seq > 1 {
                    seg.first_seq
                } else {
                    self.next_seq
                };
                return Err(seg.corrupt(seq, 0, why.into()));
            }
        };
        if seg.is_first && seg.first_seq > 1 {
            // Older segments were removed by retention: the chain is anchored at this
            // segment's header (the hash of the last removed entry). Retention removes only
            // segments before a snapshot, which starts a segment: anything else is damage.
            self.next_seq = header.first_seq;
            self.prev = header.prev;
            self.report.first_seq = header.first_seq;
            self.anchored = true;
        }
        if header.first_seq != seg.first_seq
            || header.first_seq != self.next_seq
            || header.prev != self.prev
        {
            return Err(seg.corrupt(
                self.next_seq,
                0,
                format!(
                    "segment starts at entry {} (file name says {}) but entry {} was expected next, or its chain link does not match the previous segment",
                    header.first_seq, seg.first_seq, self.next_seq
                ),
            ));
        }
        Ok(header)
    }

    /// Checks a frame that passed its checksum: its place in the sequence and the chain.
    fn entry(
        &self,
        seg: &Segment<'_>,
        off: usize,
        body: &[u8],
        format: u8,
    ) -> Result<Entry, JournalError> {
        let (seq, ts_ms, kind_byte, link) = body_fields(body);
        if seq != self.next_seq {
            return Err(seg.corrupt(
                self.next_seq,
                off,
                format!("found entry {seq} where {} belongs", self.next_seq),
            ));
        }
        if link != self.prev {
            return Err(seg.corrupt(
                seq,
                off,
                "hash chain broken: the entry does not link to the one before".into(),
            ));
        }
        let Some(kind) = EntryKind::from_u8(kind_byte) else {
            return Err(seg.corrupt(seq, off, format!("unknown entry kind {kind_byte}")));
        };
        if self.anchored && self.report.entries == 0 && kind != EntryKind::Snapshot {
            return Err(seg.corrupt(
                seq,
                off,
                "the journal does not start at entry 1, and its first entry is not a snapshot: segments were removed that retention would have kept".into(),
            ));
        }
        Ok(Entry {
            seq,
            ts_ms,
            kind,
            format,
            prev_hash: link,
            hash: *blake3::hash(body).as_bytes(),
            payload: body[FRAME_BODY_FIXED_BYTES..].to_vec(),
        })
    }
}

/// Is there any valid frame after a bad one at `bad`? Only frames that could really follow
/// count: a later sequence number (within [`TORN_TAIL_SEQ_WINDOW_ENTRIES`] of the expected
/// one) and a known kind, checked before the (costlier) checksum, so a garbage tail is
/// scanned quickly.
fn valid_frame_after(bytes: &[u8], bad: usize, next_seq: u64) -> bool {
    let seq_at = FRAME_HEADER_BYTES;
    let kind_at = FRAME_HEADER_BYTES + 16;
    (bad + 1
        ..bytes
            .len()
            .saturating_sub(FRAME_HEADER_BYTES + FRAME_BODY_FIXED_BYTES))
        .any(|o| {
            let seq = u64::from_le_bytes(bytes[o + seq_at..o + seq_at + 8].try_into().expect("8"));
            let kind = bytes[o + kind_at];
            seq > next_seq
                && seq - next_seq < TORN_TAIL_SEQ_WINDOW_ENTRIES
                && EntryKind::from_u8(kind).is_some()
                && parse_frame(bytes, o).is_ok()
        })
}
