//! Steps parked for a human: listing them, answering them. Timeouts are answered by the
//! sweep (`sweep`); an agent waits for its answer with
//! [`AgentHandle::await_approval`](super::AgentHandle::await_approval).

use dashmap::DashSet;
use warden_actors::{
    AgentId, ApprovalAnswer, ApprovalError, Decision, ParkedSink, PendingApproval, StepId,
};

use super::{sorted, AgentEntry, Swarm, SwarmError};

/// Agents that may have steps waiting for approval (a hint; each kernel is the truth).
#[derive(Default)]
pub(super) struct ApprovalIndex(DashSet<AgentId>);

impl ParkedSink for ApprovalIndex {
    fn parked(&self, agent: &AgentId) {
        self.0.insert(agent.clone());
    }
}

impl ApprovalIndex {
    /// The agents in the index, sorted.
    pub(super) fn sorted(&self) -> Vec<AgentId> {
        sorted(self.0.iter().map(|a| a.clone()))
    }

    /// Drops an agent from the index.
    pub(super) fn forget(&self, agent: &AgentId) {
        self.0.remove(agent);
    }

    /// Drops `entry`'s agent, which was seen with nothing parked: remove, then look again, as
    /// a step parked in between registers itself after parking, so it is either seen here
    /// or registered after the removal.
    pub(super) fn prune(&self, entry: &AgentEntry) {
        let id = &entry.registration.agent;
        self.0.remove(id);
        if entry
            .core
            .with_kernel(|k| !k.pending_approvals().is_empty())
        {
            self.0.insert(id.clone());
        }
    }
}

impl Swarm {
    /// Steps waiting for a human, oldest first (ties by approval id).
    pub fn approvals(&self) -> Vec<PendingApproval> {
        let mut out = Vec::new();
        for id in self.inner.approval_agents.sorted() {
            let Ok(entry) = self.inner.entry(&id) else {
                continue;
            };
            let pending = entry.core.with_kernel(|k| k.pending_approvals());
            if pending.is_empty() {
                self.inner.approval_agents.prune(&entry);
            }
            out.extend(pending);
        }
        out.sort_by(|a, b| {
            a.requested_at_ms
                .cmp(&b.requested_at_ms)
                .then_with(|| a.id.cmp(&b.id))
        });
        out
    }

    /// Answers a pending approval (`<agent>/<step>`) now: approve makes the step an allowed,
    /// open step (its reservation was made when it was parked); deny releases it. An answer
    /// at or after the approval's deadline is a timeout (deny), even if the sweep has not
    /// run yet. An approval given while a newer policy version is in force than the one the
    /// step was parked under is judged again by it: a stricter verdict wins (a halt halts
    /// the agent and cascades as any halt does). Returns the step's final decision, which
    /// the waiting agent also receives.
    pub fn answer_approval(
        &self,
        id: &str,
        answer: ApprovalAnswer,
    ) -> Result<Decision, SwarmError> {
        let not_pending = || SwarmError::Approval(ApprovalError::NotPending(id.to_string()));
        let (agent, step) = id.rsplit_once('/').ok_or_else(not_pending)?;
        let agent = AgentId::new(agent).map_err(|_| not_pending())?;
        let step: StepId = step.parse().map_err(|_| not_pending())?;
        let entry = self.inner.entry(&agent).map_err(|_| not_pending())?;
        let (decision, halt) = entry.core.answer_approval(step, &answer)?;
        if let Some(record) = halt {
            self.inner.after_halt(agent, record);
        }
        Ok(decision)
    }
}
