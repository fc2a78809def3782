//! STAND-IN until the lead's `warden_supervisor::journal::tail::Tail` lands on main (same API):
//! reads the whole journal for each batch. Deleted at the rebase.

use std::path::{Path, PathBuf};

use warden_supervisor::journal::{self, Entry, JournalError};

/// Reads acknowledged entries from `from_seq` on.
pub struct Tail {
    dir: PathBuf,
    next: u64,
}

impl Tail {
    /// From `from_seq`.
    pub fn new(data_dir: &Path, from_seq: u64) -> Self {
        Self {
            dir: data_dir.to_path_buf(),
            next: from_seq,
        }
    }

    /// Entries `next..=up_to_seq`, at most `max`.
    pub fn next_batch(&mut self, up_to_seq: u64, max: usize) -> Result<Vec<Entry>, JournalError> {
        if self.next > up_to_seq {
            return Ok(Vec::new());
        }
        let (from, to) = (self.next, up_to_seq.min(self.next + max as u64 - 1));
        let mut out = Vec::new();
        journal::read_all(&self.dir, |e| {
            if e.seq >= from && e.seq <= to {
                out.push(e.clone());
            }
        })?;
        if let Some(last) = out.last() {
            self.next = last.seq + 1;
        }
        Ok(out)
    }
}
