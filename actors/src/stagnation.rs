//! Stagnation: an agent that repeats the same call, or whose progress stays flat.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

/// Largest window accepted (bounds memory and the per-step scan).
pub const MAX_STAGNATION_WINDOW: u32 = 1_024;

/// When to call an agent stagnant.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StagnationConfig {
    /// Halt when the same tool+args appear this many times within `window` steps (0 = off).
    pub repeat_limit: u32,
    /// How many recent steps to look at; also how many flat progress reports halt the agent.
    pub window: u32,
}

impl Default for StagnationConfig {
    fn default() -> Self {
        Self {
            repeat_limit: 5,
            window: 20,
        }
    }
}

impl StagnationConfig {
    /// Stagnation checks off.
    pub const OFF: StagnationConfig = StagnationConfig {
        repeat_limit: 0,
        window: 0,
    };

    /// Checks the bounds.
    pub fn validate(&self) -> Result<(), String> {
        if self.window > MAX_STAGNATION_WINDOW {
            return Err(format!(
                "stagnation.window = {} is above the limit of {MAX_STAGNATION_WINDOW}",
                self.window
            ));
        }
        if self.repeat_limit > 0 && self.repeat_limit > self.window {
            return Err(format!(
                "stagnation.repeat_limit = {} can never be reached within window = {}; make the window at least as large",
                self.repeat_limit, self.window
            ));
        }
        Ok(())
    }
}

/// Which stagnation test fired.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(missing_docs)] // the fields are named for what they hold
pub enum StagnationHit {
    /// The same call `count` times within the window.
    Repeat { count: u32 },
    /// Progress unchanged over the last `window` reports.
    FlatProgress { window: u32 },
}

/// Tracks recent step fingerprints and progress values.
#[derive(Clone, Debug)]
pub struct StagnationDetector {
    config: StagnationConfig,
    recent: VecDeque<u64>,
    progress: VecDeque<f64>,
}

impl StagnationDetector {
    /// A detector with empty history.
    pub fn new(config: StagnationConfig) -> Self {
        Self {
            config,
            recent: VecDeque::new(),
            progress: VecDeque::new(),
        }
    }

    /// The configuration.
    pub fn config(&self) -> StagnationConfig {
        self.config
    }

    /// The history: recent fingerprints and progress values, oldest first (snapshots).
    pub fn history(&self) -> (Vec<u64>, Vec<f64>) {
        (
            self.recent.iter().copied().collect(),
            self.progress.iter().copied().collect(),
        )
    }

    /// Replaces the history (recovery from a snapshot); kept within the window.
    pub fn restore_history(&mut self, recent: &[u64], progress: &[f64]) {
        let window = self.config.window as usize;
        let keep = |n: usize| n.saturating_sub(window);
        self.recent = recent[keep(recent.len())..].iter().copied().collect();
        self.progress = progress[keep(progress.len())..].iter().copied().collect();
    }

    /// Forgets history (on resume).
    pub fn reset(&mut self) {
        self.recent.clear();
        self.progress.clear();
    }

    /// Records one attempted step and says whether the agent now looks stagnant.
    pub fn observe(&mut self, fingerprint: u64, progress: Option<f64>) -> Option<StagnationHit> {
        let window = self.config.window as usize;
        if window == 0 {
            return None;
        }
        if self.recent.len() == window {
            self.recent.pop_front();
        }
        self.recent.push_back(fingerprint);
        if self.config.repeat_limit > 0 {
            let count = self.recent.iter().filter(|f| **f == fingerprint).count() as u32;
            if count >= self.config.repeat_limit {
                return Some(StagnationHit::Repeat { count });
            }
        }
        if let Some(p) = progress {
            if self.progress.len() == window {
                self.progress.pop_front();
            }
            let prev = self.progress.back().copied();
            self.progress.push_back(p);
            // A flat window has every pair within 1e-9, so the last two values too: when they
            // are further apart, the scan cannot find it flat (a NaN still goes to the scan).
            let far_from_prev = prev.is_some_and(|q| (p - q).abs() > 1e-9);
            if self.progress.len() == window && window > 1 && !far_from_prev {
                let (lo, hi) = self
                    .progress
                    .iter()
                    .fold((f64::MAX, f64::MIN), |(lo, hi), v| (lo.min(*v), hi.max(*v)));
                if hi - lo <= 1e-9 && hi < 1.0 {
                    return Some(StagnationHit::FlatProgress {
                        window: self.config.window,
                    });
                }
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeat_within_window_is_stagnation() {
        let mut d = StagnationDetector::new(StagnationConfig {
            repeat_limit: 3,
            window: 5,
        });
        assert_eq!(d.observe(1, None), None);
        assert_eq!(d.observe(2, None), None);
        assert_eq!(d.observe(1, None), None);
        assert_eq!(d.observe(1, None), Some(StagnationHit::Repeat { count: 3 }));
    }

    #[test]
    fn repeats_spread_wider_than_window_are_fine() {
        let mut d = StagnationDetector::new(StagnationConfig {
            repeat_limit: 2,
            window: 3,
        });
        for i in 0..30u64 {
            let f = if i % 3 == 0 { 7 } else { i + 100 };
            assert_eq!(d.observe(f, None), None, "step {i}");
        }
    }

    #[test]
    fn flat_progress_over_window_is_stagnation_but_rising_is_not() {
        let cfg = StagnationConfig {
            repeat_limit: 0,
            window: 4,
        };
        let mut flat = StagnationDetector::new(cfg);
        let hits: Vec<_> = (0..4).map(|i| flat.observe(i, Some(0.3))).collect();
        assert_eq!(hits[3], Some(StagnationHit::FlatProgress { window: 4 }));
        let mut rising = StagnationDetector::new(cfg);
        for i in 0..10 {
            assert_eq!(rising.observe(i, Some(i as f64 / 10.0)), None);
        }
    }

    /// The shortcut past the scan (last two values far apart) finds exactly what scanning
    /// every window finds, on values that often sit within 1e-9 of each other, and NaN.
    #[test]
    fn flatness_matches_a_full_scan_of_every_window() {
        let window = 5usize;
        let cfg = StagnationConfig {
            repeat_limit: 0,
            window: window as u32,
        };
        let mut d = StagnationDetector::new(cfg);
        let mut seen: Vec<f64> = Vec::new();
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        let mut flats = 0;
        for i in 0..50_000u64 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let p = match x % 11 {
                0 => f64::NAN,
                1..=3 => 0.5 + (x % 3) as f64 * 4e-10,
                4..=7 => 0.5,
                _ => (x % 1000) as f64 / 1000.0,
            };
            seen.push(p);
            let last = &seen[seen.len().saturating_sub(window)..];
            let (lo, hi) = last
                .iter()
                .fold((f64::MAX, f64::MIN), |(lo, hi), v| (lo.min(*v), hi.max(*v)));
            let expect = last.len() == window && hi - lo <= 1e-9 && hi < 1.0;
            let got = d.observe(i, Some(p)).is_some();
            assert_eq!(got, expect, "step {i}: window {last:?}");
            flats += usize::from(got);
        }
        assert!(
            flats > 100,
            "the sequence must exercise flat windows ({flats})"
        );
    }

    #[test]
    fn window_bounds_are_checked() {
        assert!(StagnationConfig {
            repeat_limit: 5,
            window: 2
        }
        .validate()
        .is_err());
        assert!(StagnationConfig {
            repeat_limit: 1,
            window: 5000
        }
        .validate()
        .is_err());
        assert!(StagnationConfig::default().validate().is_ok());
    }
}
