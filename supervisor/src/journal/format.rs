//! The journal's bytes: segment headers, entry frames, the hash chain, and the format version.
//!
//! ## Segments
//! `DIR/journal/<first_seq:020>.seg`. Each segment starts with a header, so a segment can be
//! verified on its own and the chain continues across rotation:
//!
//! ```text
//! "WARDENJ" | u8 version ('1') | u64 first_seq | [32] prev_hash | u32 crc32(the 48 bytes before)
//! ```
//!
//! `prev_hash` is the hash of the previous segment's last entry ([`GENESIS`] for the first).
//! Then frames, one per entry (integers little-endian):
//!
//! ```text
//! u32 body_len | u32 crc32(body) | body
//! body = u64 seq | u64 ts_ms | u8 kind | [32] prev_hash | payload (body_len - 49 bytes)
//! hash(entry) = BLAKE3(body)          (so each hash covers the previous one)
//! ```
//!
//! ## Format version
//! The version is the last byte of the segment magic (`WARDENJ1`: version 1), so it is covered
//! by the header checksum and applies to every entry of the segment: an [`Entry`] read back
//! carries it as [`Entry::format`], and payloads are decoded by the rules of that version.
//! The rules:
//!
//! 1. Version 1 is everything written before versions existed (the magic was always
//!    `WARDENJ1`): frames as above, JSON payloads as described in [`super::records`]. Those
//!    journals are read as they are; their bytes never change.
//! 2. A change that a reader of the current version would misread (a frame layout, a payload
//!    type that changes meaning or shape, a new [`EntryKind`]) bumps [`FORMAT_VERSION`].
//!    Additive payload changes that old readers ignore and new readers default (a new
//!    optional field with `#[serde(default)]`) do not.
//! 3. A reader reads every version from 1 to [`FORMAT_VERSION`]; a segment of a later version
//!    is refused with [`JournalError::NewerFormat`](super::JournalError::NewerFormat), never
//!    guessed at.
//! 4. The writer writes only [`FORMAT_VERSION`]. Opening a journal whose last segment has an
//!    older version starts a new segment before the first new entry, so no segment mixes
//!    versions.
//! 5. `tests/data/journal-v<N>/` keeps a journal written by each version, and
//!    `supervisor/tests/golden_journal.rs` recovers a swarm from each: a reader that can no longer
//!    read an old version fails CI.

use serde::{Deserialize, Serialize};

use crate::limits::ENTRY_PAYLOAD_BYTES_MAX;

/// The format version this build writes (and the highest it reads); see the module docs.
pub const FORMAT_VERSION: u8 = 1;

/// Segment magic without its version byte.
const MAGIC_PREFIX: &[u8; 7] = b"WARDENJ";
/// Segment header: magic with version + first seq + prev hash + crc.
pub(crate) const SEGMENT_HEADER_BYTES: usize = 8 + 8 + 32 + 4;
/// Frame header: body length + crc.
pub(crate) const FRAME_HEADER_BYTES: usize = 4 + 4;
/// Fixed part of a frame body: seq + ts + kind + prev hash.
pub(crate) const FRAME_BODY_FIXED_BYTES: usize = 8 + 8 + 1 + 32;

/// A 32-byte BLAKE3 hash.
pub type Hash = [u8; 32];

/// The hash before the first entry.
pub const GENESIS: Hash = [0; 32];

/// What an entry records. The numbers are the kind byte on disk: never reuse one.
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
    /// Every kind, in the order of their bytes: the one list the others derive from.
    pub const ALL: [EntryKind; 9] = [
        Self::AgentRegistered,
        Self::Decision,
        Self::Settlement,
        Self::Halt,
        Self::Resume,
        Self::Approval,
        Self::PolicyChange,
        Self::Note,
        Self::Snapshot,
    ];

    /// The kind whose byte on disk is `b`.
    pub fn from_u8(b: u8) -> Option<Self> {
        Self::ALL.into_iter().find(|k| *k as u8 == b)
    }

    /// The kind named `name` (as in queries, e.g. `policy_change`); the error lists every
    /// name, for callers that parse a user's filter (the CLI, the API).
    pub fn from_name(name: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|k| k.name() == name.trim())
            .ok_or_else(|| {
                let names: Vec<&str> = Self::ALL.iter().map(|k| k.name()).collect();
                let (last, rest) = names.split_last().expect("kinds exist");
                format!("expected {} or {last}", rest.join(", "))
            })
    }

    /// The name used in queries and reports (the same as its serialized name).
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
    /// The format version of its segment: how to read its payload (see the module docs).
    pub format: u8,
    /// The previous entry's hash.
    pub prev_hash: Hash,
    /// Its own hash.
    pub hash: Hash,
    /// The payload (JSON by convention).
    pub payload: Vec<u8>,
}

impl Entry {
    /// The hash its fields give (BLAKE3 of the frame body: seq, ts_ms, kind, prev_hash,
    /// payload), as the writer computed [`hash`](Self::hash): an entry read from elsewhere
    /// (an export's row) whose `hash` differs was changed.
    pub fn computed_hash(&self) -> Hash {
        let mut out = Vec::with_capacity(frame_len(self.payload.len()));
        encode_frame(
            &mut out,
            self.seq,
            self.ts_ms,
            self.kind,
            &self.prev_hash,
            &self.payload,
        )
    }
}

/// The file name of the segment whose first entry is `first_seq`.
pub fn segment_name(first_seq: u64) -> String {
    format!("{first_seq:020}.seg")
}

/// The first sequence number a segment file name stands for (`None`: not a segment).
pub(crate) fn parse_segment_name(name: &str) -> Option<u64> {
    name.strip_suffix(".seg")?.parse().ok()
}

/// The header of a new segment of the current version.
pub(crate) fn encode_header(first_seq: u64, prev: &Hash) -> [u8; SEGMENT_HEADER_BYTES] {
    let mut h = [0u8; SEGMENT_HEADER_BYTES];
    h[..7].copy_from_slice(MAGIC_PREFIX);
    h[7] = b'0' + FORMAT_VERSION;
    h[8..16].copy_from_slice(&first_seq.to_le_bytes());
    h[16..48].copy_from_slice(prev);
    let crc = crc32fast::hash(&h[..48]);
    h[48..52].copy_from_slice(&crc.to_le_bytes());
    h
}

/// A segment header, read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Header {
    /// Its format version (maybe one this build does not read: see [`Header::parse`]).
    pub(crate) version: u8,
    pub(crate) first_seq: u64,
    pub(crate) prev: Hash,
}

/// Why a header was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum HeaderError {
    /// Too short, wrong magic or checksum: damage.
    Bad(&'static str),
    /// A sound header of a version this build does not know.
    Newer(u8),
}

impl Header {
    /// Reads and checks the header at the start of `bytes`.
    pub(crate) fn parse(bytes: &[u8]) -> Result<Header, HeaderError> {
        if bytes.len() < SEGMENT_HEADER_BYTES || &bytes[..7] != MAGIC_PREFIX {
            return Err(HeaderError::Bad("missing or bad segment header"));
        }
        let crc = u32::from_le_bytes(bytes[48..52].try_into().expect("4 bytes"));
        if crc != crc32fast::hash(&bytes[..48]) {
            return Err(HeaderError::Bad("segment header checksum mismatch"));
        }
        let version = bytes[7].wrapping_sub(b'0');
        if !(1..=9).contains(&version) {
            return Err(HeaderError::Bad("missing or bad segment header"));
        }
        if version > FORMAT_VERSION {
            return Err(HeaderError::Newer(version));
        }
        Ok(Header {
            version,
            first_seq: u64::from_le_bytes(bytes[8..16].try_into().expect("8 bytes")),
            prev: bytes[16..48].try_into().expect("32 bytes"),
        })
    }
}

/// The length of the frame of an entry with `payload_len` bytes of payload.
pub(crate) const fn frame_len(payload_len: usize) -> usize {
    FRAME_HEADER_BYTES + FRAME_BODY_FIXED_BYTES + payload_len
}

/// Encodes one frame into `out`; returns the entry's hash.
pub(crate) fn encode_frame(
    out: &mut Vec<u8>,
    seq: u64,
    ts_ms: u64,
    kind: EntryKind,
    prev: &Hash,
    payload: &[u8],
) -> Hash {
    let body_len = FRAME_BODY_FIXED_BYTES + payload.len();
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

/// Parses the frame at `off`: (frame length, body). Checks length and checksum only.
pub(crate) fn parse_frame(bytes: &[u8], off: usize) -> Result<(usize, &[u8]), String> {
    if bytes.len() - off < FRAME_HEADER_BYTES {
        return Err("truncated frame header".into());
    }
    let body_len = u32::from_le_bytes(bytes[off..off + 4].try_into().expect("4")) as usize;
    let crc = u32::from_le_bytes(bytes[off + 4..off + 8].try_into().expect("4"));
    if !(FRAME_BODY_FIXED_BYTES..=FRAME_BODY_FIXED_BYTES + ENTRY_PAYLOAD_BYTES_MAX)
        .contains(&body_len)
    {
        return Err(format!("frame length {body_len} out of range"));
    }
    if bytes.len() - off - FRAME_HEADER_BYTES < body_len {
        return Err("truncated frame body".into());
    }
    let body = &bytes[off + FRAME_HEADER_BYTES..off + FRAME_HEADER_BYTES + body_len];
    if crc32fast::hash(body) != crc {
        return Err("frame checksum mismatch".into());
    }
    Ok((FRAME_HEADER_BYTES + body_len, body))
}

/// The fixed fields of a frame body: (seq, ts_ms, kind byte, link to the previous entry).
pub(crate) fn body_fields(body: &[u8]) -> (u64, u64, u8, Hash) {
    (
        u64::from_le_bytes(body[..8].try_into().expect("8")),
        u64::from_le_bytes(body[8..16].try_into().expect("8")),
        body[16],
        body[17..49].try_into().expect("32"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kind_list_and_the_kind_bytes_agree() {
        for (i, k) in EntryKind::ALL.into_iter().enumerate() {
            assert_eq!(k as u8 as usize, i + 1);
            assert_eq!(EntryKind::from_u8(k as u8), Some(k));
            let json = serde_json::to_value(k).unwrap();
            assert_eq!(json, k.name(), "the query name is the serialized name");
        }
        assert_eq!(
            EntryKind::from_name("policy_change"),
            Ok(EntryKind::PolicyChange)
        );
        assert_eq!(
            EntryKind::from_name("nope").unwrap_err(),
            "expected agent_registered, decision, settlement, halt, resume, approval, policy_change, note or snapshot"
        );
        assert_eq!(EntryKind::from_u8(0), None);
        assert_eq!(EntryKind::from_u8(10), None);
    }

    #[test]
    fn headers_of_this_version_are_written_as_version_1_always_was() {
        // The bytes of a version 1 header: changing them would make old journals unreadable.
        let h = encode_header(7, &[0xab; 32]);
        assert_eq!(&h[..8], b"WARDENJ1");
        assert_eq!(
            Header::parse(&h),
            Ok(Header {
                version: 1,
                first_seq: 7,
                prev: [0xab; 32]
            })
        );
    }

    #[test]
    fn a_header_of_a_later_version_is_refused_as_newer_not_as_damage() {
        let mut h = encode_header(1, &GENESIS);
        h[7] = b'0' + FORMAT_VERSION + 1;
        let crc = crc32fast::hash(&h[..48]);
        h[48..52].copy_from_slice(&crc.to_le_bytes());
        assert_eq!(
            Header::parse(&h),
            Err(HeaderError::Newer(FORMAT_VERSION + 1))
        );
        h[7] = b'x';
        let crc = crc32fast::hash(&h[..48]);
        h[48..52].copy_from_slice(&crc.to_le_bytes());
        assert!(matches!(Header::parse(&h), Err(HeaderError::Bad(_))));
    }
}
