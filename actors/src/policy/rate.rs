//! Rate limits with GCRA (the generic cell rate algorithm): one timestamp per key, the
//! "theoretical arrival time" (TAT). A key whose TAT is in the past is the same as no key, which
//! is what makes eviction safe.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;

use super::model::RateDef;

/// Default bound on tracked keys (rule x agent/team/pool/tool).
pub const DEFAULT_MAX_RATE_KEYS: usize = 100_000;

/// Shared GCRA state for every rate-limited rule of a policy.
#[derive(Debug)]
pub struct RateLimiter {
    tat_us: Mutex<HashMap<(u32, Arc<str>), u64>>,
    max_keys: usize,
}

impl Default for RateLimiter {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_RATE_KEYS)
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

fn gcra(def: &RateDef) -> (u64, u64) {
    let emission = (def.per_ms.saturating_mul(1_000) / u64::from(def.max)).max(1);
    let tolerance = emission.saturating_mul(u64::from(def.max) - 1);
    (emission, tolerance)
}

impl RateLimiter {
    /// A limiter tracking at most `max_keys` keys.
    pub fn new(max_keys: usize) -> Self {
        Self {
            tat_us: Mutex::new(HashMap::new()),
            max_keys: max_keys.max(1),
        }
    }

    /// Every request over its limit now, with how long until it would pass (ms). Counts
    /// nothing.
    pub fn over_limit(&self, requests: &[RateRequest], now_ms: u64) -> Vec<(usize, u64)> {
        let now = now_ms.saturating_mul(1_000);
        let map = self.tat_us.lock();
        let mut out = Vec::new();
        for (i, r) in requests.iter().enumerate() {
            let (_, tolerance) = gcra(&r.def);
            let tat = map
                .get(&(r.rule, Arc::clone(&r.key)))
                .copied()
                .unwrap_or(0)
                .max(now);
            if tat - now > tolerance {
                out.push((i, (tat - now - tolerance).div_ceil(1_000)));
            }
        }
        out
    }

    /// Checks every request and, only if all pass, counts the step against each (atomically,
    /// under one lock). Otherwise returns the first request over its limit and how long until
    /// it would pass, in milliseconds, and counts nothing.
    pub fn admit(&self, requests: &[RateRequest], now_ms: u64) -> Result<(), (usize, u64)> {
        let now = now_ms.saturating_mul(1_000);
        let mut map = self.tat_us.lock();
        let mut updates: Vec<u64> = Vec::with_capacity(requests.len());
        for (i, r) in requests.iter().enumerate() {
            let (emission, tolerance) = gcra(&r.def);
            let stored = map.get(&(r.rule, Arc::clone(&r.key))).copied().unwrap_or(0);
            let tat = stored.max(now);
            if tat - now > tolerance {
                let retry_us = tat - now - tolerance;
                return Err((i, retry_us.div_ceil(1_000)));
            }
            updates.push(tat.saturating_add(emission));
        }
        for (r, new_tat) in requests.iter().zip(updates) {
            map.insert((r.rule, Arc::clone(&r.key)), new_tat);
        }
        if map.len() > self.max_keys {
            // Idle keys (TAT in the past) carry no information: drop them. If that is not
            // enough, drop the keys closest to idle (a slight leniency, never a false deny).
            map.retain(|_, tat| *tat > now);
            if map.len() > self.max_keys {
                let mut tats: Vec<u64> = map.values().copied().collect();
                tats.sort_unstable();
                let keep = self.max_keys * 3 / 4;
                let cut = tats[tats.len().saturating_sub(keep + 1).min(tats.len() - 1)];
                map.retain(|_, tat| *tat > cut);
            }
        }
        Ok(())
    }

    /// Copies the state of rule `from` of `old` to rule `to` here (a reload that kept the
    /// rule keeps its counts).
    pub fn inherit(&self, old: &RateLimiter, pairs: &[(u32, u32)]) {
        if pairs.is_empty() {
            return;
        }
        let src = old.tat_us.lock();
        let mut dst = self.tat_us.lock();
        for ((rule, key), tat) in src.iter() {
            if let Some((_, to)) = pairs.iter().find(|(from, _)| from == rule) {
                dst.insert((*to, Arc::clone(key)), *tat);
            }
        }
    }

    /// Forgets every key (a restart: buckets start empty).
    pub fn clear(&self) {
        self.tat_us.lock().clear();
    }

    /// Keys tracked now.
    pub fn len(&self) -> usize {
        self.tat_us.lock().len()
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

    #[test]
    fn gcra_allows_max_per_window_then_refills_at_the_emission_rate() {
        let def = RateDef {
            max: 10,
            per_ms: 60_000,
            scope: RateScope::Agent,
        };
        let lim = RateLimiter::default();
        let key: Arc<str> = Arc::from("a1");
        let req = |k: &Arc<str>| {
            [RateRequest {
                rule: 0,
                key: Arc::clone(k),
                def,
            }]
        };
        for i in 0..10 {
            assert!(lim.admit(&req(&key), 1_000).is_ok(), "call {i}");
        }
        let (_, retry) = lim.admit(&req(&key), 1_000).unwrap_err();
        assert_eq!(retry, 6_000, "one call every 6 s");
        assert!(lim.admit(&req(&key), 6_999).is_err());
        assert!(lim.admit(&req(&key), 7_000).is_ok());
        // Other keys are independent.
        assert!(lim.admit(&req(&Arc::from("a2")), 1_000).is_ok());
    }

    #[test]
    fn a_failing_request_counts_nothing() {
        let tight = RateDef {
            max: 1,
            per_ms: 1_000,
            scope: RateScope::Agent,
        };
        let loose = RateDef {
            max: 100,
            per_ms: 1_000,
            scope: RateScope::Tool,
        };
        let lim = RateLimiter::default();
        let a: Arc<str> = Arc::from("a");
        let t: Arc<str> = Arc::from("t");
        let both = [
            RateRequest {
                rule: 1,
                key: Arc::clone(&t),
                def: loose,
            },
            RateRequest {
                rule: 0,
                key: Arc::clone(&a),
                def: tight,
            },
        ];
        assert!(lim.admit(&both, 0).is_ok());
        assert_eq!(lim.admit(&both, 0).unwrap_err().0, 1);
        // The loose limit saw 1 call, not 2: 99 more fit.
        let only_loose = [RateRequest {
            rule: 1,
            key: t,
            def: loose,
        }];
        for _ in 0..99 {
            assert!(lim.admit(&only_loose, 0).is_ok());
        }
        assert!(lim.admit(&only_loose, 0).is_err());
    }

    #[test]
    fn a_limiter_of_one_key_evicts_without_panicking() {
        let def = RateDef {
            max: 1,
            per_ms: 1_000,
            scope: RateScope::Agent,
        };
        let lim = RateLimiter::new(1);
        for i in 0..10u64 {
            let key: Arc<str> = Arc::from(format!("k{i}"));
            assert!(lim.admit(&[RateRequest { rule: 0, key, def }], 0).is_ok());
        }
        assert!(lim
            .admit(
                &[RateRequest {
                    rule: 0,
                    key: Arc::from("z"),
                    def
                }],
                u64::MAX
            )
            .is_ok());
    }

    #[test]
    fn key_memory_is_bounded_and_idle_keys_go_first() {
        let def = RateDef {
            max: 1,
            per_ms: 1_000,
            scope: RateScope::Agent,
        };
        let lim = RateLimiter::new(100);
        for i in 0..1_000u64 {
            let key: Arc<str> = Arc::from(format!("k{i}"));
            assert!(lim
                .admit(&[RateRequest { rule: 0, key, def }], i * 10)
                .is_ok());
            assert!(lim.len() <= 100);
        }
    }
}
