//! Proxied requests parked for approval, waiting for their retry. A `require_approval` answer
//! gives the agent the step's id; once the operator approves, the agent sends the same
//! request again with `Warden-Step: <step>`, and it is forwarded under that step without a
//! second decision. The request's fingerprint is kept so an approval for one request can
//! never carry another one through: a retry whose method, tool, path, query, body, declared
//! cost or any forwarded header differs is refused.
//!
//! No reservation waits for a retry that never comes: [`Parked::sweep`] settles an approved
//! request not retried within [`APPROVED_RETRY_WINDOW`](crate::limits::APPROVED_RETRY_WINDOW)
//! of its approval with nothing used (it never ran). Bounded: at most [`PARKED_RETRIES_MAX`]
//! entries; past it the oldest can no longer be retried (`unknown_retry`: the agent sends the
//! request again as a new step) but is still swept, so an approval of it frees its
//! reservation at once.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use warden_actors::{AgentId, Outcome, StepId, StepStatus, Usage, Verdict};
use warden_supervisor::Swarm;

use crate::limits::PARKED_RETRIES_MAX;

/// A request's fingerprint: BLAKE3 of everything the decision saw.
pub type Fingerprint = [u8; 32];

/// How often parked requests are swept.
pub const SWEEP_EVERY: Duration = Duration::from_secs(30);

/// The parked requests.
#[derive(Default)]
pub struct Parked {
    inner: Mutex<Inner>,
}

/// One parked request.
#[derive(Clone, Copy)]
struct Entry {
    fp: Fingerprint,
    seal: u64,
    /// When the sweep first saw it approved.
    approved_at: Option<Instant>,
    /// Pushed out by newer ones: no retry can use it any more.
    evicted: bool,
}

type Key = (AgentId, StepId);

#[derive(Default)]
struct Inner {
    by_step: HashMap<Key, Entry>,
    order: VecDeque<Key>,
    /// Pushed out of `by_step`, kept for the sweep only (bounded like it).
    evicted: HashMap<Key, Entry>,
}

impl Parked {
    /// Remembers a parked request and its step's seal; past the bound the oldest can no
    /// longer be retried.
    pub fn insert(&self, agent: AgentId, step: StepId, fp: Fingerprint, seal: u64) {
        let mut g = self.inner.lock();
        while g.by_step.len() >= PARKED_RETRIES_MAX {
            let Some(old) = g.order.pop_front() else {
                break;
            };
            if let Some(mut e) = g.by_step.remove(&old) {
                e.evicted = true;
                if g.evicted.len() < PARKED_RETRIES_MAX {
                    g.evicted.insert(old, e);
                }
            }
        }
        let entry = Entry {
            fp,
            seal,
            approved_at: None,
            evicted: false,
        };
        if g.by_step.insert((agent.clone(), step), entry).is_none() {
            g.order.push_back((agent, step));
        }
    }

    /// The fingerprint a retry must match and the step's seal, if the request can still be
    /// retried.
    pub fn get(&self, agent: &AgentId, step: StepId) -> Option<(Fingerprint, u64)> {
        self.inner
            .lock()
            .by_step
            .get(&(agent.clone(), step))
            .map(|e| (e.fp, e.seal))
    }

    /// Forgets a request once its retry was forwarded or it was finally refused (a step is
    /// forwarded at most once).
    pub fn remove(&self, agent: &AgentId, step: StepId) -> bool {
        let mut g = self.inner.lock();
        let key = (agent.clone(), step);
        g.evicted.remove(&key);
        let had = g.by_step.remove(&key).is_some();
        if had {
            g.order.retain(|k| k != &key);
        }
        had
    }

    /// Settles approved requests whose retry did not come within `window` of the approval
    /// (at once for those that can no longer be retried), with nothing used: they never ran.
    /// Forgets those refused or no longer known.
    pub async fn sweep(&self, swarm: &Swarm, window: Duration) {
        let now = Instant::now();
        let entries: Vec<(Key, Entry)> = {
            let g = self.inner.lock();
            g.by_step
                .iter()
                .chain(g.evicted.iter())
                .map(|(k, e)| (k.clone(), *e))
                .collect()
        };
        for ((agent, step), e) in entries {
            let Some(h) = swarm.agent(&agent) else {
                self.remove(&agent, step);
                continue;
            };
            match h.step_status(step) {
                StepStatus::Pending { .. } => {}
                StepStatus::Final(d) if d.decision == Verdict::Allow => {
                    let since = e.approved_at.unwrap_or(now);
                    if e.evicted || now.duration_since(since) >= window {
                        // Removed first: a retry racing the sweep is forwarded, or settled, once.
                        if self.remove(&agent, step) || e.evicted {
                            let nothing = Outcome::failure()
                                .with_usage(Usage::new().tokens(0).cost_micro_usd(0))
                                .with_seal(e.seal);
                            let _ = h.outcome(step, nothing).await;
                        }
                    } else if e.approved_at.is_none() {
                        self.mark_approved(&agent, step, now);
                    }
                }
                _ => {
                    self.remove(&agent, step);
                }
            }
        }
    }

    fn mark_approved(&self, agent: &AgentId, step: StepId, at: Instant) {
        if let Some(e) = self.inner.lock().by_step.get_mut(&(agent.clone(), step)) {
            e.approved_at.get_or_insert(at);
        }
    }
}

/// The fingerprint of the parts of a request that decide it.
pub fn fingerprint(parts: &[&[u8]]) -> Fingerprint {
    let mut h = blake3::Hasher::new();
    for p in parts {
        h.update(&(p.len() as u64).to_le_bytes());
        h.update(p);
    }
    *h.finalize().as_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_retry_is_matched_once_and_the_bound_forgets_the_oldest() {
        let p = Parked::default();
        let a: AgentId = "a".parse().unwrap();
        let s1: StepId = "s-1".parse().unwrap();
        p.insert(a.clone(), s1, fingerprint(&[b"x"]), 9);
        assert_eq!(p.get(&a, s1), Some((fingerprint(&[b"x"]), 9)));
        assert_ne!(fingerprint(&[b"ab", b"c"]), fingerprint(&[b"a", b"bc"]));
        assert!(p.remove(&a, s1));
        assert!(!p.remove(&a, s1), "a step is forwarded at most once");
        for i in 0..PARKED_RETRIES_MAX + 5 {
            let s: StepId = format!("s-{}", i + 10).parse().unwrap();
            p.insert(a.clone(), s, [0; 32], 0);
        }
        assert_eq!(p.get(&a, "s-10".parse().unwrap()), None);
        let last: StepId = format!("s-{}", PARKED_RETRIES_MAX + 14).parse().unwrap();
        assert!(p.get(&a, last).is_some());
    }

    /// An approved request not retried is settled with nothing used once the window has
    /// passed; a refused one is forgotten. A real swarm, no journal.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_sweep_frees_approved_requests_never_retried() {
        use warden_actors::policy::PolicySet;
        use warden_actors::{ActionClass, ApprovalAnswer, Step};
        use warden_supervisor::AgentSpec;
        let policy = "version: 1\ndefaults:\n  budgets: {tokens: 1000}\npools:\n  - {path: swarm}\ntools:\n  pay: {action: spend}\nrules:\n  - {id: ask, match: {tool: pay}, decision: require_approval}\n";
        let swarm = Swarm::builder()
            .heartbeat_sweep_ms(0)
            .policy_set(PolicySet::parse(policy).unwrap())
            .build()
            .await
            .unwrap();
        let a: AgentId = "a".parse().unwrap();
        let h = swarm
            .spawn_agent(AgentSpec::new(a.clone()).pool("swarm"))
            .await
            .unwrap();
        let parked = Parked::default();
        let mut steps = Vec::new();
        for n in 0..2 {
            let step = Step::builder("pay", ActionClass::Spend)
                .args(serde_json::json!({ "n": n }))
                .tokens(100)
                .build()
                .unwrap()
                .sealed(7 + n);
            let d = h.step(step).await.unwrap();
            parked.insert(a.clone(), d.step, [0; 32], 7 + n);
            steps.push(d.step);
        }
        let approve = ApprovalAnswer::Approve { by: "t".into() };
        swarm
            .answer_approval(&format!("a/{}", steps[0]), approve)
            .unwrap();
        let deny = ApprovalAnswer::Deny {
            by: "t".into(),
            reason: "no".into(),
        };
        swarm
            .answer_approval(&format!("a/{}", steps[1]), deny)
            .unwrap();
        assert_eq!(h.snapshot().open_steps, 1);
        // First look: approved now, still in its window; the refused one is forgotten.
        parked.sweep(&swarm, Duration::from_millis(50)).await;
        assert!(parked.get(&a, steps[0]).is_some());
        assert!(parked.get(&a, steps[1]).is_none());
        tokio::time::sleep(Duration::from_millis(80)).await;
        parked.sweep(&swarm, Duration::from_millis(50)).await;
        assert!(
            parked.get(&a, steps[0]).is_none(),
            "past its window: no retry any more"
        );
        let snap = h.snapshot();
        assert_eq!(snap.open_steps, 0, "its reservation is free again");
        assert_eq!(
            snap.account.spent.get(warden_actors::LedgerDim::Tokens),
            0,
            "it never ran"
        );
        swarm.shutdown().await;
    }
}
