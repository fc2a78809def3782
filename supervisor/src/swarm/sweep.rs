//! The background sweep: every `heartbeat_sweep_ms`, agents silent past their heartbeat
//! timeout are halted as `lost` (their open reservations released), and approvals whose time
//! is up are denied. Both walk agents in the order of their ids. The sweep pauses while
//! recovery runs (until the journal is attached), so nothing it does goes unjournaled.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

use warden_actors::{AgentId, ApprovalAnswer, Decision, HaltKind};

use super::{sorted, Swarm, SwarmInner};

/// Sweeps every `every_ms` until the swarm is gone.
pub(super) async fn sweep_loop(inner: Weak<SwarmInner>, every_ms: u64) {
    let mut tick = tokio::time::interval(Duration::from_millis(every_ms));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(inner) = inner.upgrade() else { return };
        if inner.sweeps_paused.load(Ordering::SeqCst) {
            continue;
        }
        inner.sweep_heartbeats();
        inner.sweep_approvals();
    }
}

impl Swarm {
    /// Halts, as `lost`, every agent silent past its heartbeat timeout, releasing its open
    /// reservations; returns them, in the order of their ids. The background sweep calls
    /// this; tests with a manual clock call it directly.
    pub fn sweep_heartbeats(&self) -> Vec<AgentId> {
        self.inner.sweep_heartbeats()
    }

    /// Denies every approval whose time is up; returns their final decisions, by agent id,
    /// then step. The background sweep calls this; tests with a manual clock call it
    /// directly.
    pub fn sweep_approvals(&self) -> Vec<Decision> {
        self.inner.sweep_approvals()
    }

    /// A sign of life from `agent`, applied on the caller's thread at the swarm clock's time
    /// (what [`AgentHandle::heartbeat`](super::AgentHandle::heartbeat) does when the agent's
    /// actor is not there to take it): the simulator's agents, which never go through their
    /// actors, keep their heartbeats in event order this way.
    pub fn heartbeat_inline(&self, agent: &AgentId) -> Result<(), super::SwarmError> {
        let entry = self.inner.entry(agent)?;
        let now = self.inner.clock.now_ms();
        entry.core.with_kernel(|k| k.heartbeat(now));
        Ok(())
    }
}

impl SwarmInner {
    fn sweep_heartbeats(&self) -> Vec<AgentId> {
        let now = self.clock.now_ms();
        let mut lost = Vec::new();
        let watched = sorted(self.heartbeat_watch.iter().map(|a| a.clone()));
        for id in watched {
            let Ok(entry) = self.entry(&id) else { continue };
            let record = entry.core.with_kernel(|k| {
                if !k.is_lost(now) {
                    return None;
                }
                let timeout = k.heartbeat_timeout_ms().unwrap_or(0);
                k.halt(
                    HaltKind::Lost,
                    Some(Arc::from(warden_actors::rules::HEARTBEAT)),
                    format!("no heartbeat, step or outcome for more than {timeout} ms; open reservations released"),
                    Vec::new(),
                    now,
                )
            });
            if let Some(record) = record {
                entry.core.announce_halt(&record);
                lost.push(id.clone());
                self.after_halt(id, record);
            }
        }
        lost
    }

    fn sweep_approvals(&self) -> Vec<Decision> {
        let now = self.clock.now_ms();
        let mut out = Vec::new();
        for id in self.approval_agents.sorted() {
            let Ok(entry) = self.entry(&id) else { continue };
            let (expired, none_left) = entry.core.with_kernel(|k| {
                let expired = k.expired_approvals(now);
                let none_left = k.pending_approvals().len() == expired.len();
                (expired, none_left)
            });
            if expired.is_empty() && none_left {
                self.approval_agents.prune(&entry);
            }
            for step in expired {
                // A timeout never halts: only an approval is judged again.
                if let Ok((d, _)) = entry.core.answer_approval(step, &ApprovalAnswer::Timeout) {
                    out.push(d);
                }
            }
        }
        out
    }
}
