//! The S3 archive: every closed and sealed journal segment, uploaded with its seal to
//! `PREFIX/<first:020>.seg` and `.sig` (docs/export.md, "S3 archive").
//!
//! - **What**: closed segments that have their seal (the open last segment never; snapshots
//!   are entries of the journal, and a snapshot starts a new segment, so they are archived as
//!   segments like any other). The segment first, then its seal: an archive object set is
//!   complete when the `.sig` is there.
//! - **Confirmed**: each upload carries an SHA-256 checksum the server checks against the body,
//!   and is then read back (HEAD) and its size compared. A segment is confirmed when both
//!   objects are; the exporter's mark (the retention gate) then moves to its last entry, but
//!   only over a contiguous run of confirmed segments from the oldest local one: a gap holds it.
//! - **Restart**: the first pass lists the prefix; a local segment whose `.seg` is there with
//!   its size and whose `.sig` is there with the same bytes as the local seal is confirmed
//!   without uploading it again.
//! - **Failures**: one upload at a time, in order; a failed pass is logged (a line per state
//!   change), counted, and tried again after a bounded exponential backoff. The segments stay
//!   on disk until confirmed: retention waits for the mark.
//! - **Object lock**: with `retention`, every upload carries `x-amz-object-lock-mode` and
//!   `x-amz-object-lock-retain-until-date` (see [`archive`]); a bucket that refuses them fails
//!   the upload with an error saying so, and nothing is uploaded without the lock.

pub mod archive;
pub mod verify;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::watch;
use warden_supervisor::journal::seal::{seal_name, Seal};
use warden_supervisor::journal::{read_segment, FileStorage, Journal, Storage};

use super::{log, Backoff};
use crate::config::S3Settings;
use archive::{segment_name, Archive, Listing, Location};
pub use verify::{verify_archive, verify_store, ArchiveReport, Problem};

/// The `sink` label of the S3 exporter's metrics.
const SINK: &str = "s3";
/// How often the journal directory is looked at for newly sealed segments.
const POLL: Duration = Duration::from_secs(1);

/// Archives the closed, sealed segments of the journal in `data_dir/journal/` to the bucket
/// of `settings`, and publishes on `mark` the last entry of the contiguous run of confirmed
/// segments (all entries up to it are safely archived). `journal` (the live handle) gives the
/// lag metric. Never returns: errors are logged and retried (cancel the task to stop it).
pub async fn run(
    settings: S3Settings,
    data_dir: PathBuf,
    journal: Option<Journal>,
    mark: watch::Sender<u64>,
) {
    let location = Location {
        bucket: settings.bucket,
        prefix: settings.prefix,
        endpoint: settings.endpoint,
        region: settings.region,
    };
    let retention = settings.retention;
    let mut exporter = Exporter::new(data_dir, journal, mark);
    let mut backoff = Backoff::default();
    loop {
        let pass = match &exporter.archive {
            Some(_) => exporter.pass().await,
            None => Archive::s3(&location, retention).map(|a| exporter.archive = Some(a)),
        };
        match pass {
            Ok(()) => {
                exporter.state(None);
                backoff.reset();
                tokio::time::sleep(POLL).await;
            }
            Err(e) => {
                metrics::counter!("warden_export_errors_total", "sink" => SINK).increment(1);
                exporter.state(Some(e));
                tokio::time::sleep(backoff.after_failure()).await;
            }
        }
    }
}

/// A closed local segment.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Local {
    first: u64,
    /// Its last entry (`first - 1` when it holds none); `None` while it has no seal.
    last: Option<u64>,
    /// The seal's bytes, as on disk.
    seal: Option<Bytes>,
}

/// The exporter's state between passes.
struct Exporter {
    data_dir: PathBuf,
    journal: Option<Journal>,
    mark: watch::Sender<u64>,
    archive: Option<Archive>,
    /// The first pass has learned what the archive holds.
    learned: bool,
    /// Segments confirmed in the archive (by first entry), still on disk.
    confirmed: BTreeSet<u64>,
    /// Closed segments without entries (never sealed; nothing to archive).
    empty: BTreeSet<u64>,
    /// The last state logged: `None` up, `Some(step)` failing at that step; unset before the
    /// first pass.
    logged: Option<Option<String>>,
}

impl Exporter {
    fn new(data_dir: PathBuf, journal: Option<Journal>, mark: watch::Sender<u64>) -> Self {
        Self {
            data_dir,
            journal,
            mark,
            archive: None,
            learned: false,
            confirmed: BTreeSet::new(),
            empty: BTreeSet::new(),
            logged: None,
        }
    }

    /// One pass: learn what the archive holds (the first time), upload what is sealed and
    /// not confirmed, in order, and publish the mark.
    async fn pass(&mut self) -> Result<(), String> {
        let local = self.scan()?;
        if !self.learned {
            let archive = self.archive.as_ref().expect("connected before a pass");
            let listing = archive.list().await?;
            self.learn(&local, &listing).await?;
            self.learned = true;
        }
        self.publish(&local);
        for seg in &local {
            let Some(seal) = &seg.seal else { continue };
            if self.confirmed.contains(&seg.first) {
                continue;
            }
            self.upload(seg, seal.clone()).await?;
            self.confirmed.insert(seg.first);
            self.publish(&local);
        }
        Ok(())
    }

    /// The closed segments on disk, in order, with their seals; forgets the ones that are
    /// gone (retention removed them, which it does only once they are confirmed).
    fn scan(&mut self) -> Result<Vec<Local>, String> {
        let storage = FileStorage::new(&self.data_dir);
        let jdir = storage.location();
        let firsts = storage
            .segments()
            .map_err(|e| format!("listing {}: {e}", jdir.display()))?;
        let closed = &firsts[..firsts.len().saturating_sub(1)];
        self.confirmed.retain(|f| closed.contains(f));
        self.empty.retain(|f| closed.contains(f));
        let mut local = Vec::with_capacity(closed.len());
        for &first in closed {
            local.push(self.local(&jdir, first)?);
        }
        Ok(local)
    }

    /// One closed segment: its seal, or (without one) whether it is empty.
    fn local(&mut self, jdir: &Path, first: u64) -> Result<Local, String> {
        let sig = jdir.join(seal_name(first));
        match std::fs::read(&sig) {
            Ok(bytes) => {
                let seal = Seal::from_json(&bytes)
                    .map_err(|e| format!("the seal {}: {e}", sig.display()))?;
                return Ok(Local {
                    first,
                    last: Some(seal.last_seq),
                    seal: Some(bytes.into()),
                });
            }
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(format!("reading {}: {e}", sig.display()))
            }
            Err(_) => {}
        }
        let last = if self.empty.contains(&first) || self.is_empty(jdir, first) {
            self.empty.insert(first);
            Some(first - 1)
        } else {
            None // the sealer has not got to it yet (or refused it, and says so)
        };
        Ok(Local {
            first,
            last,
            seal: None,
        })
    }

    /// Is the unsealed closed segment `first` without entries (the sealer skips those)?
    fn is_empty(&self, jdir: &Path, first: u64) -> bool {
        let path = jdir.join(segment_name(first));
        std::fs::read(&path)
            .ok()
            .and_then(|b| read_segment(&b, first, &path, |_| {}).ok())
            .is_some_and(|s| s.entries == 0)
    }

    /// Confirms, from the first listing, the local segments the archive already holds: the
    /// `.seg` with the local size, the `.sig` with the local seal's bytes.
    async fn learn(&mut self, local: &[Local], listing: &Listing) -> Result<(), String> {
        let archive = self.archive.as_ref().expect("connected");
        let jdir = FileStorage::new(&self.data_dir).location();
        for seg in local {
            let (Some(seal), Some(present)) = (&seg.seal, listing.segments.get(&seg.first)) else {
                continue;
            };
            let size = std::fs::metadata(jdir.join(segment_name(seg.first))).map(|m| m.len());
            if present.seg.is_none()
                || present.seg != size.ok()
                || present.sig != Some(seal.len() as u64)
            {
                continue;
            }
            if archive.get(&archive.seal_key(seg.first)).await? == *seal {
                self.confirmed.insert(seg.first);
            }
        }
        let held = listing.segments.len();
        let missing = local
            .iter()
            .filter(|s| s.seal.is_some() && !self.confirmed.contains(&s.first))
            .count();
        let url = archive.url();
        log(
            SINK,
            &format!("{url} holds {held} segments; {missing} sealed segments here to upload"),
        );
        Ok(())
    }

    /// Uploads one sealed segment and its seal, each confirmed.
    async fn upload(&self, seg: &Local, seal: Bytes) -> Result<(), String> {
        let archive = self.archive.as_ref().expect("connected");
        let path = FileStorage::new(&self.data_dir)
            .location()
            .join(segment_name(seg.first));
        let read = tokio::task::spawn_blocking({
            let path = path.clone();
            move || std::fs::read(path)
        });
        let bytes: Bytes = read
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("reading {}: {e}", path.display()))?
            .into();
        let size = bytes.len() as u64;
        archive
            .put_confirmed(&archive.segment_key(seg.first), bytes)
            .await?;
        archive
            .put_confirmed(&archive.seal_key(seg.first), seal)
            .await?;
        let entries = seg.last.map_or(0, |last| last + 1 - seg.first);
        metrics::counter!("warden_export_segments_total", "sink" => SINK).increment(1);
        metrics::counter!("warden_export_entries_total", "sink" => SINK).increment(entries);
        metrics::counter!("warden_export_bytes_total", "sink" => SINK).increment(size);
        let key = archive.segment_key(seg.first);
        let last = seg.first + entries.saturating_sub(1);
        log(
            SINK,
            &format!(
                "archived {key} and its seal (entries {}..={last}, {size} bytes)",
                seg.first
            ),
        );
        Ok(())
    }

    /// Publishes the mark (it only grows) and the gauges.
    fn publish(&self, local: &[Local]) {
        let mark = contiguous_mark(local, |f| self.confirmed.contains(&f));
        if let Some(mark) = mark {
            self.mark.send_if_modified(|m| {
                let grew = mark > *m;
                *m = (*m).max(mark);
                grew
            });
        }
        let confirmed = *self.mark.borrow();
        let pending = local
            .iter()
            .filter(|s| s.seal.is_some() && !self.confirmed.contains(&s.first))
            .count();
        metrics::gauge!("warden_export_confirmed_seq", "sink" => SINK).set(confirmed as f64);
        metrics::gauge!("warden_export_pending_segments", "sink" => SINK).set(pending as f64);
        if let Some(journal) = &self.journal {
            let lag = journal.head().0.saturating_sub(confirmed);
            metrics::gauge!("warden_export_lag_entries", "sink" => SINK).set(lag as f64);
        }
    }

    /// Logs a line when the state changes: up, or failing at another step (what comes before
    /// the first `": "`: `listing s3://…`, `uploading KEY`; the rest varies from try to try).
    fn state(&mut self, failing: Option<String>) {
        let step = failing
            .as_deref()
            .map(|why| why.split(": ").next().unwrap_or(why).to_string());
        if self.logged.as_ref() == Some(&step) {
            return;
        }
        let up = failing.is_none();
        metrics::gauge!("warden_export_up", "sink" => SINK).set(if up { 1.0 } else { 0.0 });
        match &failing {
            None => log(SINK, "up"),
            Some(why) => {
                let why = why.split_whitespace().collect::<Vec<_>>().join(" ");
                log(SINK, &format!("failing, retrying with backoff: {why}"));
            }
        }
        self.logged = Some(step);
    }
}

/// The last entry of the contiguous run of closed segments, from the oldest on disk, that are
/// confirmed (`is_confirmed`) or empty: the entries up to it are all archived. `None` without
/// closed segments. The first segment on disk starts the run: entries before it were removed
/// by retention, which waits for the mark.
fn contiguous_mark(local: &[Local], is_confirmed: impl Fn(u64) -> bool) -> Option<u64> {
    let first = local.first()?.first;
    let mut mark = first - 1;
    for seg in local {
        let empty = seg.seal.is_none() && seg.last == Some(seg.first - 1);
        match seg.last {
            Some(last) if empty || is_confirmed(seg.first) => mark = last,
            _ => break,
        }
    }
    Some(mark)
}

#[cfg(test)]
mod tests;
