//! The per-agent ractor actor: the shell around an [`AgentKernel`].
//!
//! The actor sequences its agent's steps, outcomes and heartbeats, reads the clock, publishes
//! decision and halt events, and tells its supervisor about halts (for cascades). The kernel
//! itself lives in the shared [`AgentCore`], not in the actor's state: if the actor panics, its
//! supervisor starts a new one over the same core, so halts, open reservations and spend
//! survive the crash (ractor skips `post_stop` on a panic, so nothing may depend on it).

use std::sync::Arc;

use parking_lot::Mutex;
use ractor::{Actor, ActorCell, ActorProcessingErr, ActorRef, RpcReplyPort, SpawnErr};
use tokio::sync::mpsc;

use crate::clock::Clock;
use crate::decision::{Decision, DecisionEvent, HaltKind, HaltRecord, Verdict};
use crate::event::{Event, EventBus};
use crate::ids::{AgentId, StepId};
use crate::kernel::{
    AgentKernel, ApprovalAnswer, ApprovalError, Outcome, PendingApproval, SettleError, SettleReport,
};
use crate::record::{KernelRecord, Recorder};
use crate::step::Step;

/// A halt that happened inside an agent actor, sent to the supervisor for cascading.
#[derive(Clone, Debug)]
pub struct HaltNotice {
    /// The agent.
    pub agent: AgentId,
    /// Its halt.
    pub record: HaltRecord,
}

/// Prometheus counters of one agent's pool, resolved once at spawn so the hot path only bumps
/// an atomic (no label lookups). No per-agent labels: the label is the pool. The agents of a
/// pool share one set of handles (a clone is a pointer), which keeps each agent's own state
/// small and the handles in cache.
#[derive(Clone)]
pub struct AgentMetrics(Arc<MetricHandles>);

struct MetricHandles {
    decisions: [metrics::Counter; 4],
    halts: [metrics::Counter; 8],
    duration: metrics::Histogram,
}

impl AgentMetrics {
    /// Counters labelled with `pool`.
    pub fn for_pool(pool: &str) -> Self {
        let pool = pool.to_string();
        let decision = |v: Verdict| metrics::counter!("warden_decisions_total", "decision" => v.name(), "pool" => pool.clone());
        let halt = |k: HaltKind| metrics::counter!("warden_halts_total", "kind" => k.name(), "pool" => pool.clone());
        Self(Arc::new(MetricHandles {
            decisions: [
                decision(Verdict::Allow),
                decision(Verdict::RequireApproval),
                decision(Verdict::Deny),
                decision(Verdict::Halt),
            ],
            halts: HaltKind::ALL.map(halt),
            duration: metrics::histogram!("warden_decision_duration_seconds"),
        }))
    }

    /// Records how long one decision took in the kernel (lock, judge, reserve, record).
    pub fn decision_duration(&self, seconds: f64) {
        self.0.duration.record(seconds);
    }

    /// Counts one decision.
    pub fn decision(&self, verdict: Verdict) {
        self.0.decisions[verdict as usize].increment(1);
    }

    /// Counts one halt.
    pub fn halt(&self, kind: HaltKind) {
        self.0.halts[kind as usize].increment(1);
    }
}

/// Most final decisions of answered approvals kept per agent for callers that have not
/// collected them; the oldest is dropped past it. Reading a step's status over HTTP does not
/// collect it, so an agent answered often keeps this many (each a few hundred bytes). Equal
/// to the default limit on unsettled steps: an agent that reads each answer before it has
/// 1,024 more answered loses none.
pub const MAX_UNCOLLECTED_RESOLUTIONS: usize = 1_024;
/// Most of them a journal snapshot keeps per agent (the latest): a snapshot entry must stay
/// well under the journal's 1 MiB entry bound.
pub const RESOLUTIONS_IN_SNAPSHOT_MAX: usize = 256;

/// Where one of an agent's steps stands ([`AgentCore::step_status`]), for an agent asking how
/// its step ended.
#[derive(Clone, Debug, PartialEq)]
pub enum StepStatus {
    /// Parked for approval: its `require_approval` decision (what is left on the path now)
    /// and when it times out.
    Pending {
        /// The `require_approval` decision.
        decision: Decision,
        /// When it is denied if nobody answers.
        expires_at_ms: u64,
    },
    /// The final decision of a step that was parked: answered, timed out, or ended by a halt.
    Final(Decision),
    /// Decided, but no final decision is kept for it: it was never parked (its decision was
    /// the answer to the step itself), or its resolution was collected or dropped (at most
    /// [`MAX_UNCOLLECTED_RESOLUTIONS`] are kept per agent).
    NotKept,
    /// Not decided.
    Unknown,
}

/// Everything about one agent that must outlive its actor: the kernel and its wiring.
pub struct AgentCore {
    id: AgentId,
    kernel: Mutex<AgentKernel>,
    resolved: Mutex<std::collections::BTreeMap<StepId, Decision>>,
    resolved_notify: tokio::sync::Notify,
    clock: Arc<dyn Clock>,
    events: EventBus,
    halts: Option<mpsc::Sender<HaltNotice>>,
    metrics: AgentMetrics,
    parked_sink: Option<Arc<dyn ParkedSink>>,
    recorder: std::sync::OnceLock<Arc<dyn Recorder>>,
    /// The recorder's number of this agent's last record (0: none yet).
    recorded_through: std::sync::atomic::AtomicU64,
}

/// Told when an agent parks a step for approval, right after the kernel parked it, so a
/// supervisor can index agents with pending approvals however the caller's request ends.
pub trait ParkedSink: Send + Sync + 'static {
    /// `agent` has at least one step waiting for approval.
    fn parked(&self, agent: &AgentId);
}

impl std::fmt::Debug for AgentCore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentCore")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl AgentCore {
    /// Wires a kernel to a clock, an event bus and (optionally) a supervisor's halt channel.
    pub fn new(
        kernel: AgentKernel,
        clock: Arc<dyn Clock>,
        events: EventBus,
        halts: Option<mpsc::Sender<HaltNotice>>,
        metrics: AgentMetrics,
        parked_sink: Option<Arc<dyn ParkedSink>>,
    ) -> Arc<Self> {
        Arc::new(Self {
            id: kernel.id().clone(),
            kernel: Mutex::new(kernel),
            resolved: Mutex::new(Default::default()),
            resolved_notify: tokio::sync::Notify::new(),
            clock,
            events,
            halts,
            metrics,
            parked_sink,
            recorder: std::sync::OnceLock::new(),
            recorded_through: std::sync::atomic::AtomicU64::new(0),
        })
    }

    /// From now on, every change to this agent's state is handed to `recorder` (under the
    /// kernel lock, in order). Set once; later calls are ignored and return false.
    pub fn attach_recorder(&self, recorder: Arc<dyn Recorder>) -> bool {
        let mut k = self.kernel.lock();
        if self.recorder.set(recorder).is_err() {
            return false;
        }
        k.set_recording(true);
        true
    }

    /// The agent.
    pub fn id(&self) -> &AgentId {
        &self.id
    }

    /// The clock.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// Holds the kernel still (a journal snapshot locks every agent at once). Changes made
    /// through this guard are not recorded: read only.
    pub fn lock_kernel(&self) -> parking_lot::MutexGuard<'_, AgentKernel> {
        self.kernel.lock()
    }

    /// Runs `f` with the kernel locked. Supervisors use this for halts, resumes and snapshots,
    /// which must take effect at once rather than queue behind the agent's steps.
    pub fn with_kernel<R>(&self, f: impl FnOnce(&mut AgentKernel) -> R) -> R {
        self.with_kernel_recorded(f).0
    }

    /// The recorder's sequence number of this agent's latest record (0 before any): once the
    /// journal has that entry, it has every change made to this agent so far.
    pub fn recorded_through(&self) -> u64 {
        self.recorded_through
            .load(std::sync::atomic::Ordering::Acquire)
    }

    /// [`with_kernel`](Self::with_kernel), also returning the recorder's sequence number of
    /// the first record the change made.
    fn with_kernel_recorded<R>(&self, f: impl FnOnce(&mut AgentKernel) -> R) -> (R, Option<u64>) {
        let (out, denials, seq) = {
            let mut k = self.kernel.lock();
            let out = f(&mut k);
            let records = k.take_records();
            let mut denials = k.take_resolutions();
            let approvals = match denials.is_empty() {
                true => Vec::new(),
                false => approval_positions(&records),
            };
            let count = records.len() as u64;
            let recorded = match (records.is_empty(), self.recorder.get()) {
                (false, Some(r)) => r.record(&self.id, records),
                _ => None,
            };
            if let Some(r) = recorded {
                // Under the kernel lock: the agent's records are numbered in this order.
                self.recorded_through
                    .store(r.last, std::sync::atomic::Ordering::Release);
            }
            let seq = recorded.map(|r| r.first);
            // Numbered one after another (nothing else took a number between them).
            if let Some(r) = recorded.filter(|r| r.last + 1 - r.first == count) {
                for d in denials.iter_mut().filter(|d| d.audit_seq.is_none()) {
                    if let Some((_, i)) = approvals.iter().find(|(s, _)| *s == d.step) {
                        d.audit_seq = Some(r.first + i);
                    }
                }
            }
            // Stored before the kernel lock is released: whoever then finds the step no
            // longer parked is sure to find its final decision.
            self.store_resolutions(&denials);
            (out, denials, seq)
        };
        self.announce_resolutions(denials);
        (out, seq)
    }

    fn store_resolutions(&self, decisions: &[Decision]) {
        if decisions.is_empty() {
            return;
        }
        let mut map = self.resolved.lock();
        for d in decisions {
            map.insert(d.step, d.clone());
        }
        while map.len() > MAX_UNCOLLECTED_RESOLUTIONS {
            map.pop_first();
        }
    }

    fn announce_resolutions(&self, decisions: Vec<Decision>) {
        if decisions.is_empty() {
            return;
        }
        for decision in decisions {
            if let Some(approval) = decision.approval.clone() {
                self.events.publish(Event::ApprovalResolved {
                    agent: self.id.clone(),
                    approval,
                    decision,
                });
            }
        }
        self.resolved_notify.notify_waiters();
    }

    /// Runs `f` with the kernel locked, for recovery and replay: final decisions of parked
    /// steps it resolves are kept for whoever asks, but nothing is announced (they were,
    /// when they happened) and nothing is recorded.
    pub fn with_kernel_quiet<R>(&self, f: impl FnOnce(&mut AgentKernel) -> R) -> R {
        self.with_kernel_quiet_at(None, f)
    }

    /// [`with_kernel_quiet`](Self::with_kernel_quiet) for re-applying one journal entry:
    /// the final decisions it resolves carry `seq`, the entry's number (an approval's
    /// resolution read back after a restart names its entry as it did before).
    pub fn with_kernel_quiet_at<R>(
        &self,
        seq: Option<u64>,
        f: impl FnOnce(&mut AgentKernel) -> R,
    ) -> R {
        let mut k = self.kernel.lock();
        let out = f(&mut k);
        let mut resolved = k.take_resolutions();
        for d in &mut resolved {
            d.audit_seq = d.audit_seq.or(seq);
        }
        self.store_resolutions(&resolved);
        out
    }

    /// Answers a parked step (approve, deny, timeout) at the clock's time and delivers its
    /// final decision (with the journal sequence number of its resolution). An approval the
    /// policy in force now halts on halts the agent: that halt is announced here and
    /// returned, for the caller to spread (cascades).
    pub fn answer_approval(
        &self,
        step: StepId,
        answer: &ApprovalAnswer,
    ) -> Result<(Decision, Option<HaltRecord>), ApprovalError> {
        let now = self.clock.now_ms();
        let (answered, seq) = self.with_kernel_recorded(|k| {
            let was_halted = k.is_halted();
            let d = k.answer_approval(step, answer, now)?;
            let halt = match was_halted {
                false => k.halt_record().cloned(),
                true => None,
            };
            // Stored under the kernel lock (see `with_kernel_recorded`); again below with the
            // journal's sequence number, known once the records are handed over.
            self.store_resolutions(std::slice::from_ref(&d));
            Ok::<_, ApprovalError>((d, halt))
        });
        let (mut decision, halt) = answered?;
        if seq.is_some() {
            // The resolution is the first record the answer made.
            decision.audit_seq = seq;
            self.store_resolutions(std::slice::from_ref(&decision));
        }
        if let Some(record) = &halt {
            self.announce_halt(record);
        }
        self.announce_resolutions(vec![decision.clone()]);
        Ok((decision, halt))
    }

    /// The latest final decisions kept (at most [`RESOLUTIONS_IN_SNAPSHOT_MAX`], oldest
    /// first), for a journal snapshot.
    pub fn resolutions_for_snapshot(&self) -> Vec<crate::record::ResolvedRecord> {
        let map = self.resolved.lock();
        let skip = map.len().saturating_sub(RESOLUTIONS_IN_SNAPSHOT_MAX);
        map.values()
            .skip(skip)
            .map(|d| crate::record::ResolvedRecord {
                step_id: d.step,
                decision: d.decision,
                rule: d.rule.as_deref().map(str::to_string),
                kind: d.kind,
                reason: d.reason.clone(),
                audit_seq: d.audit_seq,
            })
            .collect()
    }

    /// The final decision of an answered approval, if it is waiting to be collected.
    pub fn take_resolution(&self, step: StepId) -> Option<Decision> {
        self.resolved.lock().remove(&step)
    }

    /// Where step `step` stands: parked, resolved (its final decision is read, not
    /// collected), decided without a kept decision, or unknown.
    pub fn step_status(&self, step: StepId) -> StepStatus {
        let k = self.kernel.lock();
        if let Some((decision, expires_at_ms)) = k.parked_decision(step) {
            return StepStatus::Pending {
                decision,
                expires_at_ms,
            };
        }
        // Resolutions are stored before the kernel lock is released: a step no longer
        // parked has its final decision here, if it is kept.
        if let Some(d) = self.resolved.lock().get(&step) {
            return StepStatus::Final(d.clone());
        }
        if k.has_decided(step) {
            StepStatus::NotKept
        } else {
            StepStatus::Unknown
        }
    }

    /// Waits at most `timeout` for a parked step to be resolved, and returns where it stands
    /// then (still [`StepStatus::Pending`] if nobody answered in time). The decision is read,
    /// not collected: every reader gets it.
    pub async fn wait_step_status(&self, step: StepId, timeout: std::time::Duration) -> StepStatus {
        let wait = async {
            loop {
                let notified = self.resolved_notify.notified();
                tokio::pin!(notified);
                notified.as_mut().enable();
                let status = self.step_status(step);
                if !matches!(status, StepStatus::Pending { .. }) {
                    return status;
                }
                notified.await;
            }
        };
        match tokio::time::timeout(timeout, wait).await {
            Ok(status) => status,
            Err(_) => self.step_status(step),
        }
    }

    /// Waits for the final decision of a parked step, at most `timeout`. The decision is
    /// handed out once.
    pub async fn await_resolution(
        &self,
        step: StepId,
        timeout: std::time::Duration,
    ) -> Option<Decision> {
        let wait = async {
            loop {
                let notified = self.resolved_notify.notified();
                tokio::pin!(notified);
                notified.as_mut().enable();
                if let Some(d) = self.resolved.lock().remove(&step) {
                    return d;
                }
                notified.await;
            }
        };
        tokio::time::timeout(timeout, wait).await.ok()
    }

    /// Publishes a halt event and counts it (the caller has already applied the halt).
    pub fn announce_halt(&self, record: &HaltRecord) {
        self.metrics.halt(record.kind);
        self.events.publish(Event::Halt {
            agent: self.id.clone(),
            record: record.clone(),
        });
    }

    /// Decides a step right here, without the actor (the actor calls this too). Publishes
    /// the decision and, for a new halt, the halt; returns the halt for the caller to forward.
    pub fn decide_now(&self, step: &Step) -> (Decision, Option<HaltRecord>) {
        let now = self.clock.now_ms();
        let started = std::time::Instant::now();
        let (mut decided, seq) = self.with_kernel_recorded(|k| k.decide(step, now));
        self.metrics
            .decision_duration(started.elapsed().as_secs_f64());
        decided.decision.audit_seq = seq;
        self.metrics.decision(decided.decision.decision);
        if self.events.wants_decisions() {
            self.events.publish(Event::Decision(DecisionEvent {
                agent: self.id.clone(),
                tool: Arc::from(step.tool()),
                decision: decided.decision.clone(),
            }));
        }
        if let Some(record) = &decided.new_halt {
            self.announce_halt(record);
        }
        if let Some(p) = &decided.new_approval {
            // Announce first, so no reader sees an approval resolved before it was requested.
            self.announce_approval(p);
            if let Some(sink) = &self.parked_sink {
                sink.parked(&self.id);
            }
        }
        (decided.decision, decided.new_halt.map(|h| *h))
    }

    fn announce_approval(&self, p: &PendingApproval) {
        self.events.publish(Event::ApprovalRequested {
            agent: self.id.clone(),
            approval: p.id.clone(),
            tool: Arc::from(p.step.tool()),
            rule: Arc::clone(&p.rule),
            reason: p.reason.clone(),
            expires_at_ms: p.expires_at_ms,
        });
    }

    async fn forward_halt(&self, record: HaltRecord) {
        if let Some(tx) = &self.halts {
            // Bounded channel: if the supervisor is behind, this actor waits (backpressure)
            // rather than dropping a halt that must cascade.
            let _ = tx
                .send(HaltNotice {
                    agent: self.id.clone(),
                    record,
                })
                .await;
        }
    }
}

/// Where each approval record sits among `records` (its index), so that a final decision a
/// halt made can name its own journal entry.
fn approval_positions(records: &[KernelRecord]) -> Vec<(StepId, u64)> {
    records
        .iter()
        .enumerate()
        .filter_map(|(i, r)| match r {
            KernelRecord::Approval { step_id, .. } => Some((*step_id, i as u64)),
            _ => None,
        })
        .collect()
}

/// Messages an agent actor handles.
#[derive(Debug)]
pub enum AgentMsg {
    /// Decide and reserve.
    Step(Step, RpcReplyPort<Decision>),
    /// Settle an allowed step.
    Outcome(
        StepId,
        Outcome,
        RpcReplyPort<Result<SettleReport, SettleError>>,
    ),
    /// A sign of life.
    Heartbeat,
    /// Fault injection for tests and the simulator: the actor panics with this message.
    Crash(String),
}

/// The actor. Stateless itself: its state is the shared [`AgentCore`].
#[derive(Debug, Clone, Copy, Default)]
pub struct AgentActor;

impl Actor for AgentActor {
    type Msg = AgentMsg;
    type State = Arc<AgentCore>;
    type Arguments = Arc<AgentCore>;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        core: Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(core)
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        core: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            AgentMsg::Step(step, reply) => {
                let (decision, new_halt) = core.decide_now(&step);
                let _ = reply.send(decision);
                if let Some(record) = new_halt {
                    core.forward_halt(record).await;
                }
            }
            AgentMsg::Outcome(step, outcome, reply) => {
                let now = core.clock.now_ms();
                let result = core.with_kernel(|k| k.settle(step, &outcome, now));
                let new_halt = result.as_ref().ok().and_then(|r| r.halt.clone());
                let _ = reply.send(result);
                if let Some(record) = new_halt {
                    core.announce_halt(&record);
                    core.forward_halt(record).await;
                }
            }
            AgentMsg::Heartbeat => {
                let now = core.clock.now_ms();
                core.with_kernel(|k| k.heartbeat(now));
            }
            AgentMsg::Crash(why) => {
                panic!("injected crash in agent {}: {why}", core.id);
            }
        }
        Ok(())
    }
}

/// Spawns an actor over `core` on the current tokio runtime, linked to `supervisor` if given
/// (so its panics reach the supervisor as `ActorFailed`).
pub async fn spawn_agent_actor(
    core: Arc<AgentCore>,
    supervisor: Option<ActorCell>,
) -> Result<ActorRef<AgentMsg>, SpawnErr> {
    let (actor, _join) = match supervisor {
        Some(sup) => Actor::spawn_linked(None, AgentActor, core, sup).await?,
        None => Actor::spawn(None, AgentActor, core).await?,
    };
    Ok(actor)
}
