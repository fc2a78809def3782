//! `warden audit verify s3://BUCKET/PREFIX`: checks an archive object by object, one segment
//! in memory at a time, and names every bad object with why.

use std::path::Path;

use warden_supervisor::journal::seal::{PublicKey, Seal};
use warden_supervisor::journal::{read_segment, EntryKind, SegmentSummary};

use super::archive::{Archive, Location, Present};

/// Largest `.sig` object read (a seal's JSON is about 450 bytes).
const SEAL_OBJECT_BYTES_MAX: u64 = 4_096;
/// A segment may pass its size bound by one frame (the writer closes it before the frame
/// that would cross it, unless that frame is its first).
const FRAME_BYTES_MAX: u64 = (warden_supervisor::limits::ENTRY_PAYLOAD_BYTES_MAX as u64) + 64 + 52;
use warden_supervisor::limits::SEGMENT_BYTES_MAX;

/// What verifying an archive found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ArchiveReport {
    /// `s3://BUCKET/PREFIX`.
    pub url: String,
    /// Segments that verified (with their seals).
    pub segments: usize,
    /// Entries in them.
    pub entries: u64,
    /// The first and last entry of the archive (`None`: no segment verified).
    pub range: Option<(u64, u64)>,
    /// The keys that signed the seals that verified, sorted.
    pub signers: Vec<PublicKey>,
    /// No public key was given: each seal was checked against the key it names itself, so
    /// the archive proves integrity but not who wrote it.
    pub self_attested: bool,
    /// Every bad object, in key order.
    pub problems: Vec<Problem>,
    /// Keys under the prefix that are neither segments nor seals (not checked).
    pub other: Vec<String>,
}

impl ArchiveReport {
    /// Nothing bad was found.
    pub fn intact(&self) -> bool {
        self.problems.is_empty()
    }
}

/// One bad object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// The object's key.
    pub key: String,
    /// What is wrong with it, as a sentence.
    pub reason: String,
}

/// Verifies the archive at `url` (`s3://BUCKET/PREFIX`) on `endpoint` (`None`: AWS) in
/// `region` (default `us-east-1`), credentials from the environment as the exporter takes
/// them: every segment's frames and hash chain, its seal against it and against `keys`
/// (none: the key in each seal, and the report says so), and continuity across segments
/// (`next.first_seq == prev.last_seq + 1`, `next.prev_hash == prev.head_hash`).
///
/// # Errors
/// A bad URL, no credentials, or the listing failed; a bad object is not an error but a
/// [`Problem`] in the report.
pub async fn verify_archive(
    url: &str,
    endpoint: Option<&str>,
    region: Option<&str>,
    keys: &[PublicKey],
) -> Result<ArchiveReport, String> {
    let (bucket, prefix) = Location::parse_url(url)?;
    let location = Location {
        bucket,
        prefix,
        endpoint: endpoint.map(str::to_string),
        region: region.unwrap_or("us-east-1").to_string(),
    };
    verify_store(&Archive::s3(&location, None)?, keys).await
}

/// [`verify_archive`] over any archive.
///
/// # Errors
/// The listing failed.
pub async fn verify_store(archive: &Archive, keys: &[PublicKey]) -> Result<ArchiveReport, String> {
    let listing = archive.list().await?;
    let mut v = Verifier {
        archive,
        keys,
        report: ArchiveReport {
            url: archive.url().to_string(),
            self_attested: keys.is_empty(),
            other: listing.other,
            ..Default::default()
        },
        prev: None,
    };
    for (&first, &present) in &listing.segments {
        v.segment(first, present).await;
    }
    if listing.segments.is_empty() {
        let url = archive.url().to_string();
        v.problem(&url, "holds no segments (is the prefix right?)".into());
    }
    v.report.signers.sort_unstable();
    v.report.signers.dedup();
    Ok(v.report)
}

/// The walk through the archive's segments in order.
struct Verifier<'a> {
    archive: &'a Archive,
    keys: &'a [PublicKey],
    report: ArchiveReport,
    /// The last segment read (verified, or at least the range and head its seal claims), and
    /// its key: what the next segment must continue.
    prev: Option<(SegmentSummary, String)>,
}

impl Verifier<'_> {
    async fn segment(&mut self, first: u64, present: Present) {
        let seg_key = self.archive.segment_key(first).to_string();
        let sig_key = self.archive.seal_key(first).to_string();
        let seal = match present.sig {
            None => {
                self.problem(&seg_key, "its seal (.sig) is missing".into());
                None
            }
            Some(size) => self.seal(&sig_key, size).await,
        };
        if present.seg.is_none() {
            let why = "its segment (.seg) is missing: the entries it signs are not in the archive";
            self.problem(&sig_key, why.into());
            // Continuity goes on from what the seal claims, so the segment after is not
            // blamed for this one's absence.
            self.prev = seal.map(|s| (claimed(&s), sig_key));
            return;
        }
        if let Some(size) = present
            .seg
            .filter(|s| *s > SEGMENT_BYTES_MAX + FRAME_BYTES_MAX)
        {
            let why = format!("{size} bytes is larger than any segment a node writes");
            return self.problem(&seg_key, why);
        }
        let bytes = match self.archive.get(&self.archive.segment_key(first)).await {
            Ok(b) => b,
            Err(e) => return self.problem(&seg_key, e),
        };
        // The segment on its own first (frames, chain), then the seal on its own (its
        // signature over what it claims, by a trusted key), then the two against each other:
        // so the bad object is the one named. A segment without a readable seal is still
        // checked, and continues the chain.
        let mut first_kind = None;
        let read = read_segment(&bytes, first, Path::new(&seg_key), |e| {
            first_kind.get_or_insert(e.kind);
        });
        let summary = match read.map_err(|e| e.to_string()) {
            Ok(summary) => summary,
            Err(reason) => {
                self.problem(&seg_key, reason);
                self.prev = seal.map(|s| (claimed(&s), seg_key));
                return;
            }
        };
        let seal = seal.filter(|seal| match seal.check(&claimed(seal), self.keys) {
            Ok(()) => true,
            Err(reason) => {
                self.problem(&sig_key, reason);
                false
            }
        });
        let seal = seal.filter(|seal| match seal.check(&summary, self.keys) {
            Ok(()) => true,
            Err(reason) => {
                self.problem(&seg_key, format!("does not match its seal: {reason}"));
                false
            }
        });
        if self.prev.is_none() && summary.first_seq > 1 && first_kind != Some(EntryKind::Snapshot) {
            let why = format!(
                "the archive starts at entry {}, and its first entry is not a snapshot: segments before it were removed (an archive starts at entry 1, or at the snapshot retention left first)",
                summary.first_seq
            );
            self.problem(&seg_key, why);
        }
        self.verified(summary, seal, seg_key);
    }

    /// Reads and parses a seal object; a problem names it when it is not a seal.
    async fn seal(&mut self, key: &str, size: u64) -> Option<Seal> {
        if size > SEAL_OBJECT_BYTES_MAX {
            let why = format!("{size} bytes is too large for a seal");
            self.problem(key, why);
            return None;
        }
        let bytes = match self.archive.get(&object_store::path::Path::from(key)).await {
            Ok(b) => b,
            Err(e) => {
                self.problem(key, e);
                return None;
            }
        };
        Seal::from_json(&bytes)
            .map_err(|e| self.problem(key, e))
            .ok()
    }

    /// A segment that verified (with its seal when it has one): its continuity with the one
    /// before, then the totals.
    fn verified(&mut self, s: SegmentSummary, seal: Option<Seal>, key: String) {
        if let Some((prev, prev_key)) = &self.prev {
            let next = prev.last_seq.saturating_add(1);
            if s.first_seq != next {
                let why = if s.first_seq > next {
                    format!(
                        "gap: entries {next}..={} are not in the archive (the segment before, {prev_key}, ends at entry {})",
                        s.first_seq - 1,
                        prev.last_seq
                    )
                } else {
                    format!(
                        "starts at entry {} but the segment before, {prev_key}, ends at entry {}: they overlap",
                        s.first_seq, prev.last_seq
                    )
                };
                self.problem(&key, why);
            } else if s.prev_hash != prev.head_hash {
                let why = format!(
                    "its chain link does not match the head of the segment before, {prev_key}"
                );
                self.problem(&key, why);
            }
        }
        if let Some(seal) = &seal {
            self.report.signers.push(seal.public_key);
            self.report.segments += 1;
            self.report.entries += s.entries;
            let start = self.report.range.map_or(s.first_seq, |(a, _)| a);
            self.report.range = Some((start, s.last_seq));
        }
        self.prev = Some((s, key));
    }

    fn problem(&mut self, key: &str, reason: String) {
        self.report.problems.push(Problem {
            key: key.to_string(),
            reason,
        });
    }
}

/// What a seal says of its segment (for continuity when the segment cannot be read).
fn claimed(seal: &Seal) -> SegmentSummary {
    SegmentSummary {
        first_seq: seal.first_seq,
        last_seq: seal.last_seq,
        prev_hash: seal.prev_hash,
        head_hash: seal.head_hash,
        // A seal is input like any object: a range that makes no sense must not panic.
        entries: seal
            .last_seq
            .saturating_add(1)
            .saturating_sub(seal.first_seq),
    }
}
