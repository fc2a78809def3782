//! Time enters the kernel only as a parameter. The actor shell reads a [`Clock`]; the simulator
//! and tests drive a [`ManualClock`], so every decision is reproducible.
//!
//! Times are milliseconds since the Unix epoch, so policies can use calendar windows
//! ("weekdays 09:00-17:00 UTC"), but they never run backwards: budgets measure durations.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// A monotonic source of Unix-epoch milliseconds. Implementations must never go backwards.
pub trait Clock: Send + Sync + 'static {
    /// Milliseconds since 1970-01-01T00:00:00Z, never decreasing.
    fn now_ms(&self) -> u64;
}

/// The system's time: the wall clock read once at creation, advanced by the monotonic clock
/// (so a wall-clock step backwards cannot shrink a measured duration).
#[derive(Debug)]
pub struct SystemClock {
    origin: Instant,
    origin_unix_ms: u64,
}

impl SystemClock {
    /// A clock starting at the current wall-clock time.
    pub fn new() -> Self {
        Self {
            origin: Instant::now(),
            origin_unix_ms: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
        }
    }
}

impl Default for SystemClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        self.origin_unix_ms + self.origin.elapsed().as_millis() as u64
    }
}

/// A clock that moves only when told to: for tests and the deterministic simulator.
#[derive(Debug, Default)]
pub struct ManualClock {
    now_ms: AtomicU64,
}

impl ManualClock {
    /// A clock standing at `start_ms`.
    pub fn new(start_ms: u64) -> Self {
        Self {
            now_ms: AtomicU64::new(start_ms),
        }
    }

    /// Moves the clock forward by `delta_ms`.
    pub fn advance_ms(&self, delta_ms: u64) {
        self.now_ms.fetch_add(delta_ms, Ordering::SeqCst);
    }

    /// Sets the clock; a value in the past is ignored, so time never runs backwards.
    pub fn set_ms(&self, now_ms: u64) {
        self.now_ms.fetch_max(now_ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> u64 {
        self.now_ms.load(Ordering::SeqCst)
    }
}
