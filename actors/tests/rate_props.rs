//! Rate limits mean what users read: `max: 10, per: 1m` is "at most 10 in any minute"
//! (property-tested over random arrival times), a steady rate at or below `max / per` is never
//! refused, and `mode: bucket` keeps the GCRA meaning for those who ask for it.

use std::sync::Arc;

use proptest::prelude::*;
use warden_actors::policy::model::{RateDef, RateMode, RateScope};
use warden_actors::policy::rate::{RateLimiter, RateRequest};
use warden_actors::policy::PolicySet;
use warden_actors::{
    Account, ActionClass, AgentId, Limits, PolicyContext, PolicyOutcome, Step, Verdict,
};

fn window(max: u32, per_ms: u64) -> RateDef {
    RateDef {
        max,
        per_ms,
        scope: RateScope::Agent,
        mode: RateMode::Window,
    }
}

/// Feeds `arrivals` (ms, in order) to one key; returns the times admitted.
fn admitted(lim: &RateLimiter, def: RateDef, arrivals: &[u64]) -> Vec<u64> {
    let req = [RateRequest {
        rule: 0,
        key: Arc::from("a1"),
        def,
    }];
    arrivals
        .iter()
        .copied()
        .filter(|t| lim.admit(&req, *t).is_ok())
        .collect()
}

/// The most admitted times in any window `[s, s + per)`.
fn busiest_window(times: &[u64], per_ms: u64) -> usize {
    // The busiest window can be taken to start at an admitted time.
    times
        .iter()
        .enumerate()
        .map(|(i, s)| times[i..].iter().take_while(|t| **t < s + per_ms).count())
        .max()
        .unwrap_or(0)
}

/// Arrival times: gaps from 0 (bursts) to twice the window.
fn arrivals(per_ms: u64) -> impl Strategy<Value = Vec<u64>> {
    prop::collection::vec(
        prop_oneof![Just(0u64), 0..per_ms / 4 + 1, 0..per_ms * 2],
        1..400,
    )
    .prop_map(|gaps| {
        let mut t = 1_000_000u64;
        gaps.into_iter()
            .map(|g| {
                t += g;
                t
            })
            .collect()
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn no_window_of_length_per_ever_admits_more_than_max(
        (max, per_ms, times) in (1u32..25, 1u64..10_000)
            .prop_flat_map(|(max, per)| (Just(max), Just(per), arrivals(per)))
    ) {
        let lim = RateLimiter::default();
        let got = admitted(&lim, window(max, per_ms), &times);
        prop_assert!(!got.is_empty(), "the first arrival always passes");
        let busiest = busiest_window(&got, per_ms);
        prop_assert!(busiest <= max as usize, "{busiest} admitted within {per_ms} ms; max {max}");
    }

    #[test]
    fn a_steady_rate_at_or_below_max_per_window_is_never_refused(
        max in 1u32..50,
        per_ms in 1u64..100_000,
        start in 0u64..1_000_000_000,
        jitter in prop::collection::vec(0u64..3, 1..300),
    ) {
        // Every gap at least per / max (rounded up to whole ms): never more than max per per.
        let gap = per_ms.div_ceil(u64::from(max));
        let mut t = start;
        let times: Vec<u64> = jitter
            .iter()
            .map(|j| {
                t += gap + j * gap / 4;
                t
            })
            .collect();
        let lim = RateLimiter::default();
        let got = admitted(&lim, window(max, per_ms), &times);
        prop_assert_eq!(got.len(), times.len(), "a steady rate of {} per {} ms was refused", max, per_ms);
    }

    #[test]
    fn a_full_window_reopens_exactly_when_its_oldest_step_is_per_old(
        max in 1u32..20,
        per_ms in 1u64..10_000,
    ) {
        let lim = RateLimiter::default();
        let def = window(max, per_ms);
        let req = [RateRequest { rule: 0, key: Arc::from("k"), def }];
        for _ in 0..max {
            prop_assert!(lim.admit(&req, 10).is_ok());
        }
        let (_, retry_ms) = lim.admit(&req, 10).unwrap_err();
        prop_assert_eq!(retry_ms, per_ms);
        prop_assert!(lim.admit(&req, 10 + per_ms - 1).is_err());
        prop_assert!(lim.admit(&req, 10 + per_ms).is_ok());
    }
}

/// One agent's steps through a policy at the given times; the verdicts.
fn through_policy(yaml: &str, times: &[u64]) -> Vec<Verdict> {
    let p = PolicySet::parse(yaml).unwrap_or_else(|e| panic!("{e}"));
    let agent = AgentId::new("a1").unwrap();
    let root = Account::root("swarm", Limits::UNLIMITED);
    let account = root.child("a1", Limits::UNLIMITED).unwrap();
    let step = Step::builder("web.search", ActionClass::Read)
        .build()
        .unwrap();
    times
        .iter()
        .map(|now_ms| {
            let e = p.evaluate(&PolicyContext {
                agent: &agent,
                step: &step,
                consecutive_failures: 0,
                steps_decided: 0,
                now_ms: *now_ms,
                team: "swarm",
                account: &account,
            });
            // As the kernel does once budgets admit the step.
            let outcome = match e.rate_ticket.map(|t| t.commit(*now_ms)) {
                Some(Err(missed)) => missed,
                _ => e.outcome,
            };
            match outcome {
                PolicyOutcome::Allow => Verdict::Allow,
                PolicyOutcome::RequireApproval { .. } => Verdict::RequireApproval,
                PolicyOutcome::Deny { .. } => Verdict::Deny,
                PolicyOutcome::Halt { .. } => Verdict::Halt,
            }
        })
        .collect()
}

const RATE_POLICY: &str = "version: 1\ntools:\n  web.search: {action: read}\nrules:\n  - {id: search-rate, match: {tool: web.search}, rate_limit: {max: 10, per: 1m, scope: agent}}\n";

#[test]
fn ten_per_minute_admits_ten_in_a_minute_not_nineteen() {
    // 40 calls, one every 2 s: 80 s.
    let times: Vec<u64> = (0..40).map(|i| 1_000 + i * 2_000).collect();
    let verdicts = through_policy(RATE_POLICY, &times);
    let allowed: Vec<u64> = times
        .iter()
        .zip(&verdicts)
        .filter(|(_, v)| **v == Verdict::Allow)
        .map(|(t, _)| *t)
        .collect();
    assert_eq!(
        allowed.len(),
        20,
        "10 from 1 s to 19 s, the next 10 from 61 s"
    );
    assert_eq!(busiest_window(&allowed, 60_000), 10);
    assert_eq!(allowed[10], 61_000);
}

#[test]
fn bucket_mode_keeps_the_burst_plus_refill_meaning() {
    let yaml = RATE_POLICY.replace("scope: agent}", "scope: agent, mode: bucket}");
    let times: Vec<u64> = (0..30).map(|i| 1_000 + i * 2_000).collect();
    let allowed: Vec<u64> = times
        .iter()
        .zip(through_policy(&yaml, &times))
        .filter(|(_, v)| *v == Verdict::Allow)
        .map(|(t, _)| *t)
        .collect();
    // A burst of 10, then one every 6 s: more than 10 within the first minute.
    assert!(busiest_window(&allowed, 60_000) > 10, "{allowed:?}");
}

#[test]
fn a_window_limit_too_large_to_count_exactly_is_an_error_with_a_hint() {
    let yaml = RATE_POLICY.replace("max: 10", "max: 1000000");
    let diags = PolicySet::check(&yaml);
    let e = diags
        .iter()
        .find(|d| d.message.contains("rate_limit.max"))
        .unwrap_or_else(|| panic!("{diags:?}"));
    assert_eq!((e.line, e.col), (5, 68), "at the value of max");
    assert!(e.hint.as_deref().unwrap().contains("mode: bucket"), "{e:?}");
    let bucket = yaml.replace("scope: agent}", "scope: agent, mode: bucket}");
    assert!(PolicySet::parse(&bucket).is_ok());
    let typo = RATE_POLICY.replace("scope: agent}", "scope: agent, mode: windw}");
    let diags = PolicySet::check(&typo);
    assert!(
        diags
            .iter()
            .any(|d| d.hint.as_deref().is_some_and(|h| h.contains("window"))),
        "{diags:?}"
    );
}
