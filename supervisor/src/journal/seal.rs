//! Signed segments: a node signs every closed journal segment with its Ed25519 key (RFC 8032),
//! so an archived journal proves who wrote it, not only that its chain is whole.
//!
//! ## The seal
//! Beside each closed segment `<first_seq:020>.seg` the node writes `<first_seq:020>.sig`, JSON:
//!
//! ```json
//! {"format": 1, "algorithm": "ed25519", "first_seq": 1, "last_seq": 4711,
//!  "prev_hash": "<64 hex>", "head_hash": "<64 hex>", "public_key": "<64 hex>", "signature": "<128 hex>"}
//! ```
//!
//! The signature covers [`SEAL_DOMAIN`] `| u64 first_seq | u64 last_seq | prev_hash | head_hash`
//! (integers little-endian): the segment's range and the chain hashes it starts from and ends
//! at. Since every entry's hash covers the one before ([`format`](super::format)), the head hash
//! covers every byte of every entry in the segment, and the previous segment's head: a verifier
//! recomputes the chain from the segment's bytes ([`check_segment`]) and compares. The public
//! key inside the seal only says which key signed; trust comes from checking it against the
//! keys the verifier was given (`warden audit verify --public-key`, `GET /v1/audit/keys`).
//!
//! ## When
//! Only closed segments are sealed (every segment but the last). The node closes the open
//! segment every `export.seal_interval` when it holds entries ([`Journal::close_segment`]), and
//! the sealer ([`seal_closed`]) signs what is closed and unsealed; a segment that does not
//! verify is never signed (it is reported instead). A seal is written to a temporary file,
//! synced and renamed, so a crash leaves either no seal (made again) or a whole one.
//!
//! [`Journal::close_segment`]: super::Journal::close_segment

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use ed25519_dalek::Signer;
use serde::{Deserialize, Serialize};
use warden_actors::ids::{hex, unhex};

use super::format::{parse_segment_name, Hash};
use super::read::{read_segment, SegmentSummary};
use super::storage::{FileStorage, Storage};
use super::JournalError;

/// What a seal's signature starts with, so it can never be taken for a signature over
/// anything else.
pub const SEAL_DOMAIN: &[u8] = b"warden journal segment seal v1\0";

/// The seal format this build writes and reads.
pub const SEAL_FORMAT: u8 = 1;

/// Largest seal file read (its JSON is about 450 bytes).
const SEAL_BYTES_MAX: usize = 4_096;

/// A node's Ed25519 signing key. `Debug` never shows the secret.
#[derive(Clone)]
pub struct SigningKey(ed25519_dalek::SigningKey);

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SigningKey({})", self.public_key())
    }
}

impl SigningKey {
    /// A new key from the OS's random source.
    pub fn generate() -> Self {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).expect("the OS random source works");
        Self(ed25519_dalek::SigningKey::from_bytes(&seed))
    }

    /// The key whose 32-byte secret seed is `text` in hex (64 digits; surrounding white space
    /// is ignored). The error says what is wrong, never the text.
    pub fn from_seed_hex(text: &str) -> Result<Self, String> {
        let seed: [u8; 32] = unhex(text.trim())
            .and_then(|b| b.try_into().ok())
            .ok_or("an Ed25519 key must be 64 hex digits (its 32-byte seed)")?;
        Ok(Self(ed25519_dalek::SigningKey::from_bytes(&seed)))
    }

    /// The secret seed in hex: what a key file holds.
    pub fn seed_hex(&self) -> String {
        hex(self.0.as_bytes())
    }

    /// Its public key.
    pub fn public_key(&self) -> PublicKey {
        PublicKey(self.0.verifying_key().to_bytes())
    }

    /// The seal of a verified segment.
    pub fn seal(&self, s: &SegmentSummary) -> Seal {
        let signature = self.0.sign(&message(s)).to_bytes();
        Seal {
            first_seq: s.first_seq,
            last_seq: s.last_seq,
            prev_hash: s.prev_hash,
            head_hash: s.head_hash,
            public_key: self.public_key(),
            signature,
        }
    }
}

/// An Ed25519 public key; written as 64 hex digits, read with or without an `ed25519:` prefix.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PublicKey(pub [u8; 32]);

impl std::fmt::Display for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&hex(&self.0))
    }
}

impl std::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PublicKey({self})")
    }
}

impl std::str::FromStr for PublicKey {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        let t = text.trim();
        let t = t.strip_prefix("ed25519:").unwrap_or(t);
        let bytes: [u8; 32] = unhex(t)
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| format!("{text:?} is not an Ed25519 public key (64 hex digits)"))?;
        ed25519_dalek::VerifyingKey::from_bytes(&bytes)
            .map_err(|_| format!("{text:?} is not a valid Ed25519 public key"))?;
        Ok(Self(bytes))
    }
}

/// A segment's seal (see the module docs for what is signed).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Seal {
    /// The segment's first entry.
    pub first_seq: u64,
    /// Its last entry.
    pub last_seq: u64,
    /// The chain link in its header.
    pub prev_hash: Hash,
    /// The hash of its last entry.
    pub head_hash: Hash,
    /// The key that signed.
    pub public_key: PublicKey,
    /// The Ed25519 signature.
    pub signature: [u8; 64],
}

/// The seal as written: every hash and key in hex.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SealFile {
    format: u8,
    algorithm: String,
    first_seq: u64,
    last_seq: u64,
    prev_hash: String,
    head_hash: String,
    public_key: String,
    signature: String,
}

/// The bytes a seal signs.
fn message(s: &SegmentSummary) -> Vec<u8> {
    let mut m = Vec::with_capacity(SEAL_DOMAIN.len() + 16 + 64);
    m.extend_from_slice(SEAL_DOMAIN);
    m.extend_from_slice(&s.first_seq.to_le_bytes());
    m.extend_from_slice(&s.last_seq.to_le_bytes());
    m.extend_from_slice(&s.prev_hash);
    m.extend_from_slice(&s.head_hash);
    m
}

impl Seal {
    /// The seal file's JSON.
    pub fn to_json(&self) -> Vec<u8> {
        let file = SealFile {
            format: SEAL_FORMAT,
            algorithm: "ed25519".into(),
            first_seq: self.first_seq,
            last_seq: self.last_seq,
            prev_hash: hex(&self.prev_hash),
            head_hash: hex(&self.head_hash),
            public_key: self.public_key.to_string(),
            signature: hex(&self.signature),
        };
        serde_json::to_vec(&file).expect("a seal serializes")
    }

    /// Reads a seal file's JSON; the error says what is wrong with it.
    pub fn from_json(bytes: &[u8]) -> Result<Seal, String> {
        if bytes.len() > SEAL_BYTES_MAX {
            return Err(format!("a seal is at most {SEAL_BYTES_MAX} bytes"));
        }
        let f: SealFile = serde_json::from_slice(bytes).map_err(|e| format!("not a seal: {e}"))?;
        if f.format != SEAL_FORMAT || f.algorithm != "ed25519" {
            return Err(format!(
                "seal format {} with algorithm {:?}; this warden reads format {SEAL_FORMAT} with ed25519",
                f.format, f.algorithm
            ));
        }
        let fixed = |what: &str, text: &str| -> Result<Vec<u8>, String> {
            unhex(text).ok_or_else(|| format!("the seal's {what} is not hex"))
        };
        let hash = |what: &str, text: &str| -> Result<Hash, String> {
            fixed(what, text)?
                .try_into()
                .map_err(|_| format!("the seal's {what} is not 32 bytes"))
        };
        Ok(Seal {
            first_seq: f.first_seq,
            last_seq: f.last_seq,
            prev_hash: hash("prev_hash", &f.prev_hash)?,
            head_hash: hash("head_hash", &f.head_hash)?,
            public_key: f.public_key.parse()?,
            signature: fixed("signature", &f.signature)?
                .try_into()
                .map_err(|_| "the seal's signature is not 64 bytes".to_string())?,
        })
    }

    /// Checks this seal against the segment it belongs to (as [`read_segment`] found it) and
    /// against the trusted `keys` (none given: any key, the caller says it is self-attested).
    ///
    /// # Errors
    /// What does not match: the range, a chain hash, the key, or the signature.
    pub fn check(&self, s: &SegmentSummary, keys: &[PublicKey]) -> Result<(), String> {
        if (self.first_seq, self.last_seq) != (s.first_seq, s.last_seq) {
            return Err(format!(
                "the seal is for entries {}..={} but the segment holds {}..={}",
                self.first_seq, self.last_seq, s.first_seq, s.last_seq
            ));
        }
        if self.prev_hash != s.prev_hash || self.head_hash != s.head_hash {
            return Err(format!(
                "the seal signs chain head {} but the segment's entries hash to {}",
                hex(&self.head_hash[..8]),
                hex(&s.head_hash[..8])
            ));
        }
        if !keys.is_empty() && !keys.contains(&self.public_key) {
            return Err(format!(
                "signed by key {}, which is not one of the given public keys",
                self.public_key
            ));
        }
        let key = ed25519_dalek::VerifyingKey::from_bytes(&self.public_key.0)
            .map_err(|_| "the seal's public key is not a valid Ed25519 key".to_string())?;
        let signature = ed25519_dalek::Signature::from_bytes(&self.signature);
        key.verify_strict(&message(s), &signature)
            .map_err(|_| "the signature does not match the segment".to_string())
    }
}

/// The seal file name of the segment whose first entry is `first_seq`.
pub fn seal_name(first_seq: u64) -> String {
    format!("{first_seq:020}.sig")
}

/// Verifies a closed segment's bytes on their own (see [`read_segment`]) and, when given, its
/// seal against them and the trusted `keys`. `name` names the segment in errors.
///
/// # Errors
/// The first problem, as a sentence.
pub fn check_segment(
    bytes: &[u8],
    first_seq: u64,
    name: &str,
    seal: Option<&Seal>,
    keys: &[PublicKey],
) -> Result<SegmentSummary, String> {
    let summary =
        read_segment(bytes, first_seq, Path::new(name), |_| {}).map_err(|e| e.to_string())?;
    if let Some(seal) = seal {
        seal.check(&summary, keys)?;
    }
    Ok(summary)
}

/// What one pass of the sealer did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SealPass {
    /// The segments sealed now (their first entries).
    pub sealed: Vec<u64>,
    /// Closed segments that did not verify and were left unsealed, with why.
    pub refused: Vec<(u64, String)>,
}

/// Seals every closed, unsealed segment of the journal in `data_dir/journal/` with `key`
/// (every segment but the last is closed). Runs beside the live writer: it reads only closed
/// segments, which no one writes to any more. Not beside retention: a seal written for a
/// segment being removed would outlive it (the node runs the two under one lock).
///
/// # Errors
/// Listing the directory or writing a seal failed.
pub fn seal_closed(data_dir: &Path, key: &SigningKey) -> Result<SealPass, JournalError> {
    let storage = FileStorage::new(data_dir);
    let jdir = storage.location();
    let io = |path: PathBuf| move |source| JournalError::Io { path, source };
    let segments = storage.segments().map_err(io(jdir.clone()))?;
    let mut pass = SealPass::default();
    let closed = &segments[..segments.len().saturating_sub(1)];
    for (i, &first) in closed.iter().enumerate() {
        let sig = jdir.join(seal_name(first));
        if sig.exists() {
            continue;
        }
        let path = jdir.join(super::format::segment_name(first));
        let bytes = storage.read(first).map_err(io(path.clone()))?;
        // The previous segment's seal, if any, says where this one must continue from.
        let before = i
            .checked_sub(1)
            .and_then(|j| fs::read(jdir.join(seal_name(closed[j]))).ok())
            .and_then(|b| Seal::from_json(&b).ok());
        match read_segment(&bytes, first, &path, |_| {}) {
            Ok(summary)
                if before.as_ref().is_some_and(|b| {
                    (b.last_seq + 1, b.head_hash) != (summary.first_seq, summary.prev_hash)
                }) =>
            {
                pass.refused.push((
                    first,
                    "it does not continue the chain where the previous segment's seal ends".into(),
                ));
            }
            Ok(summary) if summary.entries > 0 => {
                write_durably(&sig, &key.seal(&summary).to_json()).map_err(io(sig.clone()))?;
                pass.sealed.push(first);
            }
            Ok(_) => {}
            Err(e) => pass.refused.push((first, e.to_string())),
        }
    }
    Ok(pass)
}

/// What [`check_seals`] found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SealReport {
    /// Closed segments whose seal verified.
    pub sealed: usize,
    /// Closed segments without a seal (their first entries).
    pub unsealed: Vec<u64>,
    /// Segments whose seal is unreadable, or does not match the segment or the keys, with why.
    pub bad: Vec<(u64, String)>,
    /// The open (last) segment: its first entry (never sealed while it is open).
    pub open: Option<u64>,
    /// The keys that signed the sealed segments.
    pub signers: Vec<PublicKey>,
}

/// Checks the seal of every segment of the journal in `data_dir/journal/` against the
/// segment's bytes and the trusted `keys` (none: any key, self-attested). The chain itself
/// is checked by [`verify`](super::verify); this pass checks who signed it.
///
/// The last segment is the open one unless it has a seal: a node never seals its open
/// segment, so a sealed last segment is one whose successors were removed, and it is
/// checked like any closed one. A seal after the last segment (its segment gone) is bad:
/// it signs entries the journal no longer holds.
///
/// # Errors
/// The journal cannot be listed or read.
pub fn check_seals(data_dir: &Path, keys: &[PublicKey]) -> Result<SealReport, JournalError> {
    let storage = FileStorage::new(data_dir);
    let jdir = storage.location();
    let io = |path: PathBuf| move |source| JournalError::Io { path, source };
    let segments = storage.segments().map_err(io(jdir.clone()))?;
    let mut report = SealReport::default();
    for (i, &first) in segments.iter().enumerate() {
        let path = jdir.join(seal_name(first));
        let seal = match fs::read(&path) {
            Ok(bytes) => Seal::from_json(&bytes),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                match i + 1 == segments.len() {
                    true => report.open = Some(first),
                    false => report.unsealed.push(first),
                }
                continue;
            }
            Err(e) => return Err(io(path)(e)),
        };
        let bytes = storage
            .read(first)
            .map_err(io(jdir.join(super::format::segment_name(first))))?;
        let name = super::format::segment_name(first);
        match seal.and_then(|seal| {
            check_segment(&bytes, first, &name, Some(&seal), keys).map(|_| seal.public_key)
        }) {
            Ok(signer) => {
                report.sealed += 1;
                if !report.signers.contains(&signer) {
                    report.signers.push(signer);
                }
            }
            Err(why) => report.bad.push((first, why)),
        }
    }
    let after = segments.last().copied().unwrap_or(0);
    for first in seal_files(&jdir).into_iter().filter(|&f| f > after) {
        let why = "its segment is missing: the seal signs entries the journal no longer holds";
        report.bad.push((first, why.into()));
    }
    Ok(report)
}

/// The first entries of the seal files (`<first:020>.sig`) in the journal directory `jdir`.
fn seal_files(jdir: &Path) -> Vec<u64> {
    fs::read_dir(jdir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name();
            let stem = name.to_str()?.strip_suffix(".sig")?;
            parse_segment_name(&format!("{stem}.seg"))
        })
        .collect()
}

/// The public keys of every seal in `data_dir/journal/` (keys the node signed with before a
/// key change included), sorted; unreadable seals are skipped.
pub fn keys_in(data_dir: &Path) -> Vec<PublicKey> {
    let jdir = FileStorage::new(data_dir).location();
    let mut keys: Vec<PublicKey> = seal_files(&jdir)
        .into_iter()
        .filter_map(|first| fs::read(jdir.join(seal_name(first))).ok())
        .filter_map(|b| Seal::from_json(&b).ok())
        .map(|s| s.public_key)
        .collect();
    keys.sort_unstable();
    keys.dedup();
    keys
}

/// Writes `bytes` to `path` crash-safely: a synced temporary file renamed over it, then the
/// directory synced.
fn write_durably(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("sig.tmp");
    {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    fs::rename(&tmp, path)?;
    fs::File::open(path.parent().unwrap_or(Path::new(".")))?.sync_all()
}
