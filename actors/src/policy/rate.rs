//! Rate limits, counted per rule and scope key, in one of two modes ([`RateMode`]):
//!
//! - **window** (the default): at most `max` steps in any window of length `per`. Each key
//!   keeps the times of the steps it counted within the last `per` (at most `max` of them); a
//!   step is admitted when fewer than `max` are newer than `now - per`. Exact: no window of
//!   length `per` ever holds more than `max` counted steps, and a steady rate of at most
//!   `max / per` is never refused (both property-tested in `actors/tests/rate_props.rs`).
//! - **bucket**: GCRA (the generic cell rate algorithm), one timestamp per key, the
//!   "theoretical arrival time" (TAT): bursts of `max`, refilled at `max` per `per`, so up to
//!   `2 * max - 1` steps can fall within one window of length `per`.
//!
//! A key whose window is empty (or whose TAT is in the past) is the same as no key, which is
//! what makes eviction safe. Memory is bounded twice: at most `max_keys` keys, and at most
//! `max_events` step times held by window keys together. Past either bound, idle keys are
//! dropped first (which changes nothing), then the keys closest to idle (a slight leniency,
//! never a false deny).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use parking_lot::Mutex;

use super::model::{RateDef, RateMode};

/// Default bound on tracked keys (rule x agent/team/pool/tool).
pub const DEFAULT_MAX_RATE_KEYS: usize = 100_000;
/// Default bound on step times held by window-mode keys together (8 bytes each: 32 MiB).
pub const DEFAULT_MAX_RATE_EVENTS: usize = 1 << 22;
/// Largest `max` of a window-mode rate limit (one key holds up to `max` step times); larger
/// limits use `mode: bucket`.
pub const MAX_WINDOW_RATE: u32 = 100_000;

const _: () = assert!((MAX_WINDOW_RATE as usize) * 4 <= DEFAULT_MAX_RATE_EVENTS);

/// One key's state.
#[derive(Clone, Debug)]
enum KeyState {
    /// Bucket mode: the theoretical arrival time, microseconds.
    Tat(u64),
    /// Window mode: the times (ms) of the steps counted within the last `per_ms`, oldest
    /// first.
    Log { times: VecDeque<u64>, per_ms: u64 },
}

impl KeyState {
    /// When the key stops carrying information (µs): afterwards it is the same as no key.
    fn idle_at_us(&self) -> u64 {
        match self {
            KeyState::Tat(tat) => *tat,
            KeyState::Log { times, per_ms } => times
                .back()
                .map_or(0, |t| t.saturating_add(*per_ms).saturating_mul(1_000)),
        }
    }

    /// Step times held.
    fn events(&self) -> usize {
        match self {
            KeyState::Tat(_) => 0,
            KeyState::Log { times, .. } => times.len(),
        }
    }
}

#[derive(Debug, Default)]
struct State {
    keys: HashMap<(u32, Arc<str>), KeyState>,
    /// Step times held by window keys together.
    events: usize,
}

/// Shared rate-limit state for every rate-limited rule of a policy.
#[derive(Debug)]
pub struct RateLimiter {
    state: Mutex<State>,
    max_keys: usize,
    max_events: usize,
}

impl Default for RateLimiter {
    fn default() -> Self {
        Self::with_bounds(DEFAULT_MAX_RATE_KEYS, DEFAULT_MAX_RATE_EVENTS)
    }
}

/// One limit to check: which rule, which key, its parameters.
#[derive(Clone, Debug)]
pub struct RateRequest {
    /// Rule index.
    pub rule: u32,
    /// Scope key (agent id, team path, tool name).
    pub key: Arc<str>,
    /// The limit.
    pub def: RateDef,
}

/// GCRA's emission interval and tolerance, microseconds.
fn gcra(def: &RateDef) -> (u64, u64) {
    let emission = (def.per_ms.saturating_mul(1_000) / u64::from(def.max)).max(1);
    let tolerance = emission.saturating_mul(u64::from(def.max) - 1);
    (emission, tolerance)
}

/// Steps of `times` still within the window ending at `now_ms` (newer than `now_ms - per`;
/// a time after `now_ms`, from a clock that went back, counts too).
fn in_window(times: &VecDeque<u64>, per_ms: u64, now_ms: u64) -> usize {
    times.len() - times.partition_point(|t| t.saturating_add(per_ms) <= now_ms)
}

/// What counting a step changes in its key, once every limit has passed.
enum Count {
    /// Bucket mode: the new TAT.
    Tat(u64),
    /// Window mode: the step's time joins the key's window.
    Push,
}

/// Checks one request against the state of its key, changing nothing: `Ok` with what
/// counting the step will change, or `Err` with how long until it would pass (ms).
fn check(state: Option<&KeyState>, def: &RateDef, now_ms: u64) -> Result<Count, u64> {
    match def.mode {
        RateMode::Bucket => {
            let now = now_ms.saturating_mul(1_000);
            let (emission, tolerance) = gcra(def);
            let stored = match state {
                Some(KeyState::Tat(t)) => *t,
                _ => 0,
            };
            let tat = stored.max(now);
            if tat - now > tolerance {
                return Err((tat - now - tolerance).div_ceil(1_000));
            }
            Ok(Count::Tat(tat.saturating_add(emission)))
        }
        RateMode::Window => {
            if let Some(KeyState::Log { times, .. }) = state {
                let counted = in_window(times, def.per_ms, now_ms);
                if counted >= def.max as usize {
                    // The oldest counted step leaves the window at its time + per.
                    let oldest = times[times.len() - counted];
                    return Err(oldest
                        .saturating_add(def.per_ms)
                        .saturating_sub(now_ms)
                        .max(1));
                }
            }
            Ok(Count::Push)
        }
    }
}

impl RateLimiter {
    /// A limiter tracking at most `max_keys` keys (and the default bound on step times).
    pub fn new(max_keys: usize) -> Self {
        Self::with_bounds(max_keys, DEFAULT_MAX_RATE_EVENTS)
    }

    /// A limiter tracking at most `max_keys` keys, whose window-mode keys hold at most
    /// `max_events` step times together.
    pub fn with_bounds(max_keys: usize, max_events: usize) -> Self {
        Self {
            state: Mutex::new(State::default()),
            max_keys: max_keys.max(1),
            max_events: max_events.max(1),
        }
    }

    /// Every request over its limit now, with how long until it would pass (ms). Counts
    /// nothing.
    pub fn over_limit(&self, requests: &[RateRequest], now_ms: u64) -> Vec<(usize, u64)> {
        let state = self.state.lock();
        let mut out = Vec::new();
        for (i, r) in requests.iter().enumerate() {
            let key = state.keys.get(&(r.rule, Arc::clone(&r.key)));
            if let Err(retry_ms) = check(key, &r.def, now_ms) {
                out.push((i, retry_ms));
            }
        }
        out
    }

    /// Checks every request and, only if all pass, counts the step against each (atomically,
    /// under one lock). Otherwise returns the first request over its limit and how long until
    /// it would pass, in milliseconds, and counts nothing.
    pub fn admit(&self, requests: &[RateRequest], now_ms: u64) -> Result<(), (usize, u64)> {
        let mut state = self.state.lock();
        let mut counts: Vec<Count> = Vec::with_capacity(requests.len());
        for (i, r) in requests.iter().enumerate() {
            let key = state.keys.get(&(r.rule, Arc::clone(&r.key)));
            counts.push(check(key, &r.def, now_ms).map_err(|retry_ms| (i, retry_ms))?);
        }
        for (r, change) in requests.iter().zip(counts) {
            let key = state
                .keys
                .entry((r.rule, Arc::clone(&r.key)))
                .or_insert(KeyState::Tat(0));
            let before = key.events();
            match change {
                Count::Tat(tat) => *key = KeyState::Tat(tat),
                Count::Push => {
                    if !matches!(key, KeyState::Log { .. }) {
                        *key = KeyState::Log {
                            times: VecDeque::new(),
                            per_ms: r.def.per_ms,
                        };
                    }
                    if let KeyState::Log { times, per_ms } = key {
                        while times
                            .front()
                            .is_some_and(|t| t.saturating_add(*per_ms) <= now_ms)
                        {
                            times.pop_front();
                        }
                        // In order even if the clock went back.
                        let at = times.partition_point(|t| *t <= now_ms);
                        times.insert(at, now_ms);
                        debug_assert!(times.len() <= r.def.max as usize);
                    }
                }
            }
            let after = key.events();
            state.events = state.events + after - before;
        }
        if state.keys.len() > self.max_keys || state.events > self.max_events {
            self.evict(&mut state, now_ms.saturating_mul(1_000));
        }
        Ok(())
    }

    /// Brings the state under its bounds: idle keys carry no information and go first; if
    /// that is not enough, the keys closest to idle go until a quarter of each bound is free.
    fn evict(&self, state: &mut State, now_us: u64) {
        state.keys.retain(|_, k| k.idle_at_us() > now_us);
        state.events = state.keys.values().map(KeyState::events).sum();
        if state.keys.len() <= self.max_keys && state.events <= self.max_events {
            return;
        }
        let keep_keys = self.max_keys * 3 / 4;
        let keep_events = self.max_events * 3 / 4;
        let mut order: Vec<(u64, usize, (u32, Arc<str>))> = state
            .keys
            .iter()
            .map(|(id, k)| (k.idle_at_us(), k.events(), id.clone()))
            .collect();
        // Furthest from idle first: those are kept.
        order.sort_unstable_by_key(|k| std::cmp::Reverse(k.0));
        let (mut keys, mut events) = (0usize, 0usize);
        for (_, n, id) in order {
            if keys < keep_keys && events + n <= keep_events {
                keys += 1;
                events += n;
            } else {
                state.keys.remove(&id);
            }
        }
        state.events = events;
    }

    /// Copies the state of rule `from` of `old` to rule `to` here (a reload that kept the
    /// rule keeps its counts).
    pub fn inherit(&self, old: &RateLimiter, pairs: &[(u32, u32)]) {
        if pairs.is_empty() {
            return;
        }
        let src = old.state.lock();
        let mut dst = self.state.lock();
        for ((rule, key), k) in src.keys.iter() {
            if let Some((_, to)) = pairs.iter().find(|(from, _)| from == rule) {
                let added = k.events();
                let replaced = dst.keys.insert((*to, Arc::clone(key)), k.clone());
                dst.events = dst.events + added - replaced.map_or(0, |o| o.events());
            }
        }
    }

    /// Forgets every key (a restart: limits start empty).
    pub fn clear(&self) {
        let mut state = self.state.lock();
        state.keys.clear();
        state.events = 0;
    }

    /// Keys tracked now.
    pub fn len(&self) -> usize {
        self.state.lock().keys.len()
    }

    /// Step times held by window-mode keys now.
    pub fn events(&self) -> usize {
        self.state.lock().events
    }

    /// True when no key is tracked.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::super::model::RateScope;
    use super::*;

    fn def(max: u32, per_ms: u64, scope: RateScope, mode: RateMode) -> RateDef {
        RateDef {
            max,
            per_ms,
            scope,
            mode,
        }
    }

    fn req(rule: u32, key: &str, def: RateDef) -> [RateRequest; 1] {
        [RateRequest {
            rule,
            key: Arc::from(key),
            def,
        }]
    }

    #[test]
    fn a_window_limit_admits_max_in_any_window_of_per_not_max_plus_the_refill() {
        let d = def(10, 60_000, RateScope::Agent, RateMode::Window);
        let lim = RateLimiter::default();
        // 10 at once, then nothing more until the first of them is a minute old.
        for i in 0..10 {
            assert!(lim.admit(&req(0, "a1", d), 1_000).is_ok(), "call {i}");
        }
        assert_eq!(lim.admit(&req(0, "a1", d), 1_000).unwrap_err().1, 60_000);
        assert_eq!(lim.admit(&req(0, "a1", d), 60_999).unwrap_err().1, 1);
        // Bucket mode would have admitted another 9 within that minute (19 in all).
        assert!(lim.admit(&req(0, "a1", d), 61_000).is_ok());
        // Other keys are independent.
        assert!(lim.admit(&req(0, "a2", d), 1_000).is_ok());
    }

    #[test]
    fn a_bucket_limit_allows_max_at_once_then_refills_at_the_emission_rate() {
        let d = def(10, 60_000, RateScope::Agent, RateMode::Bucket);
        let lim = RateLimiter::default();
        for i in 0..10 {
            assert!(lim.admit(&req(0, "a1", d), 1_000).is_ok(), "call {i}");
        }
        let (_, retry) = lim.admit(&req(0, "a1", d), 1_000).unwrap_err();
        assert_eq!(retry, 6_000, "one call every 6 s");
        assert!(lim.admit(&req(0, "a1", d), 6_999).is_err());
        assert!(lim.admit(&req(0, "a1", d), 7_000).is_ok());
        assert!(lim.admit(&req(0, "a2", d), 1_000).is_ok());
    }

    #[test]
    fn a_failing_request_counts_nothing() {
        for mode in [RateMode::Window, RateMode::Bucket] {
            let tight = def(1, 1_000, RateScope::Agent, mode);
            let loose = def(100, 1_000, RateScope::Tool, mode);
            let lim = RateLimiter::default();
            let both = [
                RateRequest {
                    rule: 1,
                    key: Arc::from("t"),
                    def: loose,
                },
                RateRequest {
                    rule: 0,
                    key: Arc::from("a"),
                    def: tight,
                },
            ];
            assert!(lim.admit(&both, 0).is_ok());
            assert_eq!(lim.admit(&both, 0).unwrap_err().0, 1);
            // The loose limit saw 1 call, not 2: 99 more fit.
            for _ in 0..99 {
                assert!(lim.admit(&req(1, "t", loose), 0).is_ok());
            }
            assert!(lim.admit(&req(1, "t", loose), 0).is_err(), "{mode:?}");
        }
    }

    #[test]
    fn over_limit_reports_without_counting() {
        let d = def(2, 1_000, RateScope::Agent, RateMode::Window);
        let lim = RateLimiter::default();
        assert!(lim.over_limit(&req(0, "a", d), 0).is_empty());
        assert!(lim.admit(&req(0, "a", d), 0).is_ok());
        assert!(lim.over_limit(&req(0, "a", d), 0).is_empty());
        assert!(lim.admit(&req(0, "a", d), 500).is_ok());
        assert_eq!(lim.over_limit(&req(0, "a", d), 600), vec![(0, 400)]);
        assert_eq!(lim.events(), 2);
    }

    #[test]
    fn a_limiter_of_one_key_evicts_without_panicking() {
        for mode in [RateMode::Window, RateMode::Bucket] {
            let d = def(1, 1_000, RateScope::Agent, mode);
            let lim = RateLimiter::new(1);
            for i in 0..10u64 {
                assert!(lim.admit(&req(0, &format!("k{i}"), d), 0).is_ok());
            }
            assert!(lim.admit(&req(0, "z", d), u64::MAX).is_ok());
        }
    }

    #[test]
    fn key_memory_is_bounded_and_idle_keys_go_first() {
        for mode in [RateMode::Window, RateMode::Bucket] {
            let d = def(1, 1_000, RateScope::Agent, mode);
            let lim = RateLimiter::new(100);
            for i in 0..1_000u64 {
                assert!(lim.admit(&req(0, &format!("k{i}"), d), i * 10).is_ok());
                assert!(lim.len() <= 100);
            }
        }
    }

    #[test]
    fn step_times_are_bounded_across_window_keys() {
        let d = def(50, 60_000, RateScope::Agent, RateMode::Window);
        let lim = RateLimiter::with_bounds(1_000, 200);
        for i in 0..2_000u64 {
            assert!(lim.admit(&req(0, &format!("k{}", i % 40), d), i).is_ok());
            assert!(lim.events() <= 200, "{} step times held", lim.events());
        }
        // A key that was kept still counts exactly.
        let lim = RateLimiter::with_bounds(1_000, 200);
        for t in 0..50 {
            assert!(lim.admit(&req(0, "hot", d), t).is_ok());
        }
        assert!(lim.admit(&req(0, "hot", d), 100).is_err());
    }

    #[test]
    fn a_reload_keeps_the_window_of_a_kept_rule() {
        let d = def(3, 1_000, RateScope::Agent, RateMode::Window);
        let old = RateLimiter::default();
        for t in 0..3 {
            assert!(old.admit(&req(4, "a", d), t).is_ok());
        }
        let new = RateLimiter::default();
        new.inherit(&old, &[(4, 0)]);
        assert_eq!(new.events(), 3);
        assert!(new.admit(&req(0, "a", d), 10).is_err());
        assert!(new.admit(&req(0, "a", d), 1_000).is_ok());
    }
}
