//! [`AgentHandle`]: one agent's requests. A request goes to the agent's actor; if the actor is
//! being restarted (it crashed), the request is re-delivered to the new actor, up to
//! [`DELIVERY_ATTEMPTS_MAX`] times, waiting up to
//! [`RESTART_WAIT_TIMEOUT_MS`](crate::limits::RESTART_WAIT_TIMEOUT_MS) for each
//! restart: one loop ([`AgentHandle::deliver`]) serves steps and outcomes alike.

use std::sync::Arc;
use std::time::Duration;

use ractor::rpc::CallResult;
use ractor::{MessagingErr, RpcReplyPort};
use warden_actors::{
    AgentCore, AgentId, AgentMsg, AgentSnapshot, Decision, Outcome, PolicyOutcome, SettleError,
    SettleReport, Step, StepId, StepStatus, Verdict,
};

use super::{AgentEntry, AgentError, Swarm, SwarmError, SwarmInner};
use crate::limits::{APPROVAL_ANSWER_MARGIN_MS, DELIVERY_ATTEMPTS_MAX};

/// A handle to one governed agent. Cheap to clone.
#[derive(Clone)]
pub struct AgentHandle {
    pub(super) entry: Arc<AgentEntry>,
    /// `entry.core`, held here too: deciding inline reaches the kernel without first
    /// reading the entry (one cache miss less per step with many agents).
    core: Arc<AgentCore>,
    pub(super) inner: Arc<SwarmInner>,
}

impl std::fmt::Debug for AgentHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentHandle")
            .field("id", self.core.id())
            .finish_non_exhaustive()
    }
}

impl AgentHandle {
    pub(super) fn new(entry: Arc<AgentEntry>, inner: Arc<SwarmInner>) -> Self {
        Self {
            core: Arc::clone(&entry.core),
            entry,
            inner,
        }
    }

    /// The agent's id.
    pub fn id(&self) -> &AgentId {
        self.core.id()
    }

    /// Asks to take a step: the actor decides, and an allow reserves the expected cost on the
    /// agent's budget and every pool above it, atomically.
    pub async fn step(&self, step: Step) -> Result<Decision, AgentError> {
        let decision = self
            .deliver(step, AgentMsg::Step, |m| match m {
                AgentMsg::Step(s, _) => Some(s),
                _ => None,
            })
            .await?;
        // No decision leaves before its journal entries (the decision and any halt it
        // caused, submitted before the actor answered) are durable.
        self.inner.flush().await.map_err(AgentError::Journal)?;
        Ok(decision)
    }

    /// Reports a step's outcome: the real cost is charged and the rest refunded.
    pub async fn outcome(
        &self,
        step: StepId,
        outcome: Outcome,
    ) -> Result<SettleReport, AgentError> {
        let settled = self
            .deliver(
                (step, outcome),
                |(s, o), port| AgentMsg::Outcome(s, o, port),
                |m| match m {
                    AgentMsg::Outcome(s, o, _) => Some((s, o)),
                    _ => None,
                },
            )
            .await?;
        let report = settled.map_err(AgentError::from)?;
        self.inner.flush().await.map_err(AgentError::Journal)?;
        Ok(report)
    }

    /// Delivers one request to the agent's actor and returns its answer. `message` builds the
    /// actor message from the request and a reply port; `take_back` recovers the request from
    /// a message the actor refused (it stopped for a restart), so it can be re-delivered to
    /// the new actor. A failed journal acknowledges nothing: the request is refused before
    /// it is decided, so no reservation is made that could never be reported.
    async fn deliver<R, T>(
        &self,
        request: R,
        message: impl Fn(R, RpcReplyPort<T>) -> AgentMsg,
        take_back: impl Fn(AgentMsg) -> Option<R>,
    ) -> Result<T, AgentError>
    where
        T: Send + 'static,
    {
        if let Some(why) = self.inner.journal_failure() {
            return Err(AgentError::Journal(why));
        }
        let mut request = request;
        for _ in 0..DELIVERY_ATTEMPTS_MAX {
            let (actor, generation) = self.entry.current();
            if let Some(actor) = actor {
                let interrupted = || AgentError::Interrupted(self.id().clone());
                match actor.call(|port| message(request, port), None).await {
                    Ok(CallResult::Success(answer)) => return Ok(answer),
                    Err(MessagingErr::SendErr(refused)) => {
                        request = take_back(refused).ok_or_else(interrupted)?;
                    }
                    Ok(_) | Err(_) => return Err(interrupted()),
                }
            }
            if !self.entry.await_restart(generation).await {
                break;
            }
        }
        Err(AgentError::Unavailable(self.id().clone()))
    }

    /// Waits for the final decision of a step that was parked for approval (`decision` is the
    /// `require_approval` answer). Returns the allow or deny it ends with, whether a human
    /// answered, the approval timed out, or a halt cancelled it.
    pub async fn await_approval(&self, decision: &Decision) -> Result<Decision, AgentError> {
        let step = decision.step;
        let expires = self.core.with_kernel(|k| {
            k.pending_approvals()
                .into_iter()
                .find(|p| p.step_id == step)
                .map(|p| p.expires_at_ms)
        });
        let Some(expires) = expires else {
            // Not waiting: answered already (collect it) or never parked.
            return self
                .entry
                .core
                .take_resolution(step)
                .ok_or_else(|| AgentError::NotAwaiting(self.id().clone(), step));
        };
        // Past the deadline, the sweep answers within one interval; allow a generous margin.
        let wait_ms = expires
            .saturating_sub(self.inner.clock.now_ms())
            .saturating_add(APPROVAL_ANSWER_MARGIN_MS);
        self.entry
            .core
            .await_resolution(step, Duration::from_millis(wait_ms))
            .await
            .ok_or_else(|| AgentError::NotAwaiting(self.id().clone(), step))
    }

    /// Where one of this agent's steps stands: parked for approval, resolved (its final
    /// decision, read without collecting it), decided without a kept decision, or unknown.
    pub fn step_status(&self, step: StepId) -> StepStatus {
        self.core.step_status(step)
    }

    /// Waits at most `timeout` for a parked step's final decision; returns where the step
    /// stands then (still pending if nobody answered in time). Reads, never collects: an
    /// [`await_approval`](Self::await_approval) or another reader still gets the decision.
    pub async fn wait_step_status(&self, step: StepId, timeout: Duration) -> StepStatus {
        self.core.wait_step_status(step, timeout).await
    }

    /// A sign of life (keeps a `heartbeat_timeout` from halting the agent as `lost`).
    pub fn heartbeat(&self) {
        let sent = self
            .entry
            .actor
            .read()
            .as_ref()
            .is_some_and(|a| a.send_message(AgentMsg::Heartbeat).is_ok());
        if !sent {
            let now = self.inner.clock.now_ms();
            self.core.with_kernel(|k| k.heartbeat(now));
        }
    }

    /// Declares that this agent waits on `other` (see [`Swarm::wait_for`]).
    pub fn wait_for(&self, other: &AgentId) -> Result<Option<Vec<AgentId>>, SwarmError> {
        Swarm {
            inner: Arc::clone(&self.inner),
        }
        .wait_for(self.id(), other)
    }

    /// What the policy in force would answer to `step` for this agent now, without deciding
    /// it ([`AgentKernel::judge_only`](warden_actors::AgentKernel::judge_only): nothing
    /// counted, reserved or journaled). For what the agent is shown, never for its steps.
    pub fn judge_only(&self, step: &Step) -> PolicyOutcome {
        let now = self.inner.clock.now_ms();
        self.core.with_kernel(|k| k.judge_only(step, now))
    }

    /// The agent's governance state.
    pub fn snapshot(&self) -> AgentSnapshot {
        self.core.with_kernel(|k| k.snapshot())
    }

    /// The ids of the agent's open steps (allowed, not yet settled).
    pub fn open_step_ids(&self) -> Vec<StepId> {
        self.core.with_kernel(|k| k.open_step_ids())
    }

    /// The agent that started this one, as registered ([`AgentSpec::parent`](crate::AgentSpec::parent)).
    pub fn parent(&self) -> Option<&AgentId> {
        self.entry.registration.parent.as_ref()
    }

    /// The agents this one depends on, as registered
    /// ([`AgentSpec::depends_on`](crate::AgentSpec::depends_on)).
    pub fn depends_on(&self) -> &[AgentId] {
        &self.entry.registration.depends_on
    }

    /// The agent's pool path.
    pub fn pool(&self) -> String {
        self.inner.tree.read().teams[self.entry.team]
            .spec
            .path
            .clone()
    }

    /// Fault injection (tests, simulator): makes the agent's actor panic. Its supervisor
    /// restarts it by its pool's strategy; halts and spend are untouched.
    pub fn inject_crash(&self, why: impl Into<String>) {
        if let Some(a) = self.entry.actor.read().as_ref() {
            let _ = a.send_message(AgentMsg::Crash(why.into()));
        }
    }

    /// Decides a step on the caller's thread, bypassing the actor's mailbox (the kernel is
    /// still sequenced by its lock). For callers that cannot run on the agent's shard and
    /// cannot afford a cross-thread hop; the decision, events and halts are the same.
    pub fn step_inline(&self, step: &Step) -> Decision {
        let (decision, new_halt) = self.core.decide_now(step);
        if let Some(record) = new_halt {
            self.inner.after_halt(self.id().clone(), record);
        }
        decision
    }

    /// [`step`](Self::step) decided on the caller's thread: the same decision, journal entries
    /// and halts, without the hops to the agent's actor and back, and waiting only until this
    /// agent's own entries are durable (not everything submitted since). The proxy's path: a
    /// proxied call is decided on the HTTP worker that carries it. A failed journal refuses
    /// the step before it is decided, as [`step`](Self::step) does.
    pub async fn step_here(&self, step: &Step) -> Result<Decision, AgentError> {
        if let Some(why) = self.inner.journal_failure() {
            return Err(AgentError::Journal(why));
        }
        let decision = self.step_inline(step);
        // No decision leaves before this agent's records up to it; a halt's cascade wrote
        // other agents' records too, so it waits for everything.
        let durable = match decision.decision {
            Verdict::Halt => self.inner.flush().await,
            _ => {
                let through = self.core.recorded_through();
                self.inner.durable_through(through).await
            }
        };
        durable.map_err(AgentError::Journal)?;
        Ok(decision)
    }

    /// Settles an outcome on the caller's thread (the counterpart of
    /// [`AgentHandle::step_inline`]).
    pub fn outcome_inline(
        &self,
        step: StepId,
        outcome: &Outcome,
    ) -> Result<SettleReport, SettleError> {
        let now = self.inner.clock.now_ms();
        let report = self
            .entry
            .core
            .with_kernel(|k| k.settle(step, outcome, now))?;
        // No one waits for a settlement's entry: with `fsync: off` it is written here and
        // now, not at the writer thread's next look.
        self.inner.write_through(self.core.recorded_through());
        if let Some(record) = &report.halt {
            self.core.announce_halt(record);
            self.inner.after_halt(self.id().clone(), record.clone());
        }
        Ok(report)
    }
}
