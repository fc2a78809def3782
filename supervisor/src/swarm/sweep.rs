//! The background sweep: every `heartbeat_sweep_ms`, agents silent past their heartbeat
//! timeout are halted as `lost` (their open reservations released), and approvals whose time
//! is up are denied. Both walk agents in the order of their ids. The sweep pauses while
//! recovery runs (until the journal is attached), so nothing it does goes unjournaled.
//!
//! The heartbeat sweep visits only agents that may be lost: [`HeartbeatWatch`] keeps, for
//! each watched agent, a time before which it cannot be (its last sign of life plus its
//! timeout, as last read; signs of life only move it later), and puts halted agents aside
//! until a resume or a recovery.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

use parking_lot::Mutex;
use warden_actors::{AgentId, ApprovalAnswer, Decision, HaltKind};

use super::{Swarm, SwarmInner};

/// The agents with a heartbeat timeout, by the earliest time each can be found lost.
#[derive(Debug, Default)]
pub(super) struct HeartbeatWatch(Mutex<WatchState>);

#[derive(Debug, Default)]
struct WatchState {
    /// `(not lost up to this time, agent)`, earliest first; an agent may be in twice (after
    /// a resume, or spawned again under its id).
    due: BinaryHeap<Reverse<(u64, AgentId)>>,
    /// Agents found halted: never lost while halted; back in `due` when resumed.
    halted: HashSet<AgentId>,
}

impl HeartbeatWatch {
    /// Watches `id` (checked at the next sweep).
    pub(super) fn watch(&self, id: AgentId) {
        self.0.lock().due.push(Reverse((0, id)));
    }

    /// `id` is gone (its entries in `due` are dropped when they come up).
    pub(super) fn forget(&self, id: &AgentId) {
        self.0.lock().halted.remove(id);
    }

    /// `id` was resumed: watched again from the next sweep.
    pub(super) fn resumed(&self, id: &AgentId) {
        let mut w = self.0.lock();
        if w.halted.remove(id) {
            w.due.push(Reverse((0, id.clone())));
        }
    }

    /// Every watched agent checked at the next sweep (after a recovery restored halts and
    /// resumes).
    pub(super) fn recheck_all(&self) {
        let mut w = self.0.lock();
        let halted = std::mem::take(&mut w.halted);
        w.due.extend(halted.into_iter().map(|id| Reverse((0, id))));
    }

    /// The agents that may be lost at `now_ms` (those not lost up to an earlier time), taken
    /// out, sorted and without repeats.
    fn take_due(&self, now_ms: u64) -> Vec<AgentId> {
        let mut w = self.0.lock();
        let mut out = Vec::new();
        while w.due.peek().is_some_and(|Reverse((t, _))| *t < now_ms) {
            if let Some(Reverse((_, id))) = w.due.pop() {
                out.push(id);
            }
        }
        out.sort_unstable();
        out.dedup();
        out
    }

    /// Puts checked agents back.
    fn put_back(&self, checked: Vec<(AgentId, Next)>) {
        let mut w = self.0.lock();
        for (id, next) in checked {
            match next {
                Next::NotLostUntil(t) => w.due.push(Reverse((t, id))),
                Next::Halted => {
                    w.halted.insert(id);
                }
                Next::Unwatched => {}
            }
        }
    }
}

/// What a sweep found of a watched agent.
#[derive(Debug)]
enum Next {
    /// Running: not lost up to this time.
    NotLostUntil(u64),
    /// Halted (now, or by this sweep).
    Halted,
    /// No heartbeat timeout (an agent spawned again under a watched agent's id).
    Unwatched,
}

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
        let mut checked = Vec::new();
        for id in self.heartbeat_watch.take_due(now) {
            let Ok(entry) = self.entry(&id) else { continue };
            let (record, next) = entry.core.with_kernel(|k| {
                let Some(timeout) = k.heartbeat_timeout_ms() else {
                    return (None, Next::Unwatched);
                };
                if k.is_halted() {
                    return (None, Next::Halted);
                }
                if !k.is_lost(now) {
                    let until = k.last_seen_ms().saturating_add(timeout);
                    return (None, Next::NotLostUntil(until));
                }
                let record = k.halt(
                    HaltKind::Lost,
                    Some(Arc::from(warden_actors::rules::HEARTBEAT)),
                    format!("no heartbeat, step or outcome for more than {timeout} ms; open steps settled as failures at their reservation"),
                    Vec::new(),
                    now,
                );
                (record, Next::Halted)
            });
            checked.push((id.clone(), next));
            if let Some(record) = record {
                entry.core.announce_halt(&record);
                lost.push(id.clone());
                self.after_halt(id, record);
            }
        }
        self.heartbeat_watch.put_back(checked);
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
