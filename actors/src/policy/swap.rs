//! Hot reload: every agent's kernel holds the same [`SwappablePolicy`]; storing a new policy
//! swaps it for all of them at once. Each decision loads the current policy exactly once, so
//! it sees the old policy or the new one, never a mix.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;

use super::PolicySet;
use crate::budget::CustomDim;
use crate::kernel::{Judgement, PolicyContext, PolicyOutcome, StepPolicy};
use crate::step::{MinCost, Step};

struct Slot {
    policy: Arc<dyn StepPolicy>,
    set: Option<Arc<PolicySet>>,
    version: u64,
}

/// A policy that can be replaced while agents run.
pub struct SwappablePolicy {
    current: ArcSwap<Slot>,
    versions: AtomicU64,
}

impl std::fmt::Debug for SwappablePolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SwappablePolicy")
            .field("version", &self.version())
            .finish()
    }
}

impl SwappablePolicy {
    /// Starts with a compiled policy set (version 1).
    pub fn new(set: Arc<PolicySet>) -> Self {
        Self {
            current: ArcSwap::from_pointee(Slot {
                policy: Arc::clone(&set) as Arc<dyn StepPolicy>,
                set: Some(set),
                version: 1,
            }),
            versions: AtomicU64::new(1),
        }
    }

    /// Starts with any policy (version 1).
    pub fn from_policy(policy: Arc<dyn StepPolicy>) -> Self {
        Self {
            current: ArcSwap::from_pointee(Slot {
                policy,
                set: None,
                version: 1,
            }),
            versions: AtomicU64::new(1),
        }
    }

    /// Replaces the policy; returns the new version number.
    pub fn store(&self, set: Arc<PolicySet>) -> u64 {
        let version = self.versions.fetch_add(1, Ordering::SeqCst) + 1;
        self.current.store(Arc::new(Slot {
            policy: Arc::clone(&set) as Arc<dyn StepPolicy>,
            set: Some(set),
            version,
        }));
        version
    }

    /// Gives the policy in force version `version`, and the next one `version + 1`
    /// (recovery: versions continue where the journal left them).
    pub fn set_version(&self, version: u64) {
        let cur = self.current.load_full();
        self.current.store(Arc::new(Slot {
            policy: Arc::clone(&cur.policy),
            set: cur.set.clone(),
            version,
        }));
        self.versions.store(version, Ordering::SeqCst);
    }

    /// The version the next [`store`](Self::store) will give (callers that store under one
    /// lock can journal a policy under its version before it is in force).
    pub fn next_version(&self) -> u64 {
        self.versions.load(Ordering::SeqCst) + 1
    }

    /// The version in force.
    pub fn version(&self) -> u64 {
        self.current.load().version
    }

    /// The policy set in force, if it is a [`PolicySet`].
    pub fn policy_set(&self) -> Option<Arc<PolicySet>> {
        self.current.load().set.clone()
    }
}

impl StepPolicy for SwappablePolicy {
    fn evaluate(&self, ctx: &PolicyContext<'_>) -> PolicyOutcome {
        self.current.load().policy.evaluate(ctx)
    }

    fn risk_floor_micro(&self, step: &Step) -> u64 {
        self.current.load().policy.risk_floor_micro(step)
    }

    fn min_cost(&self, step: &Step) -> MinCost {
        self.current.load().policy.min_cost(step)
    }

    fn approval_timeout_ms(&self) -> u64 {
        self.current.load().policy.approval_timeout_ms()
    }

    fn names_custom(&self, dim: &CustomDim) -> bool {
        self.current.load().policy.names_custom(dim)
    }

    fn judge(&self, ctx: &PolicyContext<'_>) -> Judgement {
        self.current.load().policy.judge(ctx)
    }

    fn version(&self) -> u64 {
        SwappablePolicy::version(self)
    }

    fn rejudge_approved(
        &self,
        ctx: &PolicyContext<'_>,
        parked_under: u64,
    ) -> Option<(u64, PolicyOutcome)> {
        // One load: the version and the judgement are of the same policy.
        let slot = self.current.load();
        if slot.version == parked_under {
            return None;
        }
        let outcome = match &slot.set {
            Some(set) => set.evaluate_uncounted(ctx).outcome,
            None => slot.policy.evaluate(ctx),
        };
        Some((slot.version, outcome))
    }
}
