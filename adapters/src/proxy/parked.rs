//! Proxied requests parked for approval, waiting for their retry. A `require_approval` answer
//! gives the agent the step's id; once the operator approves, the agent sends the same
//! request again with `Warden-Step: <step>`, and it is forwarded under that step without a
//! second decision. The request's fingerprint is kept so an approval for one request can
//! never carry another one through: a retry whose method, tool, path, query, body or
//! declared cost differs is refused.
//!
//! Bounded: at most [`PARKED_RETRIES_MAX`] entries; past it the oldest is forgotten and its
//! retry is refused with `unknown_retry` (the agent sends the request again as a new step).

use std::collections::{HashMap, VecDeque};

use parking_lot::Mutex;
use warden_actors::{AgentId, StepId};

use crate::limits::PARKED_RETRIES_MAX;

/// A request's fingerprint: BLAKE3 of everything the decision saw.
pub type Fingerprint = [u8; 32];

/// The parked requests.
#[derive(Default)]
pub struct Parked {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    by_step: HashMap<(AgentId, StepId), (Fingerprint, u64)>,
    order: VecDeque<(AgentId, StepId)>,
}

impl Parked {
    /// Remembers a parked request and its step's seal; forgets the oldest past the bound.
    pub fn insert(&self, agent: AgentId, step: StepId, fp: Fingerprint, seal: u64) {
        let mut g = self.inner.lock();
        while g.by_step.len() >= PARKED_RETRIES_MAX {
            match g.order.pop_front() {
                Some(old) => {
                    g.by_step.remove(&old);
                }
                None => break,
            }
        }
        if g.by_step
            .insert((agent.clone(), step), (fp, seal))
            .is_none()
        {
            g.order.push_back((agent, step));
        }
    }

    /// The fingerprint a retry must match and the step's seal, if the request is still
    /// remembered.
    pub fn get(&self, agent: &AgentId, step: StepId) -> Option<(Fingerprint, u64)> {
        self.inner
            .lock()
            .by_step
            .get(&(agent.clone(), step))
            .copied()
    }

    /// Forgets a request once its retry was forwarded or it was finally refused (a step is
    /// forwarded at most once).
    pub fn remove(&self, agent: &AgentId, step: StepId) -> bool {
        let mut g = self.inner.lock();
        let key = (agent.clone(), step);
        let had = g.by_step.remove(&key).is_some();
        if had {
            g.order.retain(|k| k != &key);
        }
        had
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
}
