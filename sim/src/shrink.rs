//! Shrinking a failing run: the shortest prefix of its events that still violates the same
//! invariant. Runs are deterministic, so the prefix of `k` events is the original run cut
//! after `k` events (then drained as any run ends); a binary search over `k` finds the
//! shortest such prefix (the shortest for which the invariant fails, assuming a longer
//! prefix of a failing one fails too, as it does for checks made as events happen).

use crate::invariants::Violation;
use crate::{run_quiet, SimOptions};

/// Most trace lines shown of a shrunk run (its end, where the violation is).
pub const TRACE_LINES_MAX: usize = 40;

/// A failing run, shrunk.
#[derive(Clone, Debug)]
pub struct Shrunk {
    /// Events in the shortest failing prefix.
    pub events: u64,
    /// The violation that prefix shows.
    pub violation: Violation,
    /// The last [`TRACE_LINES_MAX`] events of that prefix.
    pub trace_tail: Vec<String>,
    /// Events in the trace (the tail's lines are numbered among them).
    pub trace_len: usize,
    /// Runs made while shrinking.
    pub runs: u32,
}

/// Shrinks the run of `opts` that showed `found`.
pub fn shrink(opts: &SimOptions, found: &Violation) -> Shrunk {
    let fails = |k: u64| -> Option<Violation> {
        let mut o = opts.clone();
        o.max_events = Some(k);
        o.trace = false;
        run_quiet(&o)
            .ok()
            .and_then(|(r, _)| r.violation)
            .filter(|v| v.invariant == found.invariant)
    };
    let (mut lo, mut hi) = (0u64, found.event.max(1));
    let mut best = found.clone();
    let mut runs = 0;
    // Invariant: `hi` events fail; `lo` events do not (0 never does).
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        runs += 1;
        match fails(mid) {
            Some(v) => {
                hi = mid;
                best = v;
            }
            None => lo = mid,
        }
    }
    let mut o = opts.clone();
    o.max_events = Some(hi);
    o.trace = true;
    let (trace_tail, trace_len) = match run_quiet(&o) {
        Ok((r, trace)) => {
            if let Some(v) = r.violation.filter(|v| v.invariant == found.invariant) {
                best = v;
            }
            let skip = trace.len().saturating_sub(TRACE_LINES_MAX);
            (trace[skip..].to_vec(), trace.len())
        }
        Err(_) => (Vec::new(), 0),
    };
    Shrunk {
        events: hi,
        violation: best,
        trace_tail,
        trace_len,
        runs: runs + 1,
    }
}
