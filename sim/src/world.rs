//! The discrete-event loop: agents' turns, outcomes, approval polls, operators, sweeps and
//! faults on a virtual clock, each handled by synchronous calls into the real swarm. Answers
//! (decisions, granted approvals, acknowledged outcomes) leave the node only at the end of a
//! simulated millisecond, after one group commit of the journal, as a node answers only once
//! its entries are durable.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use warden_actors::{
    AgentId, ApprovalAnswer, Decision, Event, HaltKind, Outcome, StepId, StepStatus, Verdict,
};
use warden_supervisor::journal::records::{AgentRecord, Record};
use warden_supervisor::journal::{Entry, Faults};
use warden_supervisor::{AgentSpec, Target};

use crate::behaviour::{Behaviour, Model, Plan};
use crate::invariants::{self, Checks, BROKEN};
use crate::node::{self, NodeSetup, SimNode, EPOCH_MS};
use crate::queue::EventQueue;
use crate::report::{Activity, PoolReport, Report};
use crate::rng::Rng;
use crate::scenario::{FaultKind, Scenario};
use crate::{Progress, SimError, SimOptions};

/// Agents up to which every invariant is checked after every event (beyond: after every
/// simulated millisecond).
const CHECK_EVERY_EVENT_AGENTS_MAX: usize = 2_000;
/// How often an agent waiting for an approval looks, and shows a sign of life, ms.
const APPROVAL_POLL_MS: u64 = 5_000;
/// A refused request (journal down) is retried after this long, ms.
const RETRY_MS: u64 = 1_000;
/// Halt answers an agent that keeps knocking takes before it gives up.
const HALTS_BEFORE_GIVING_UP: u32 = 10;
/// Longest drain after the duration (outcomes, approvals), ms.
const DRAIN_MS_MAX: u64 = 15 * 60_000;

/// With `--metrics`: how often the scrape-time gauges are set from the swarm (wall time).
const GAUGES_EVERY: std::time::Duration = std::time::Duration::from_millis(500);
/// Approvals an operator looks at per turn.
pub(crate) const APPROVALS_PER_TURN_MAX: usize = 64;

#[derive(Debug)]
enum Ev {
    Wake(u32),
    Outcome {
        agent: u32,
        step: StepId,
        outcome: Outcome,
    },
    Poll {
        agent: u32,
        step: StepId,
        outcome: Outcome,
        work_ms: u64,
    },
    Operator(u32),
    Sweep,
    Fault(u32),
    Heal(u32),
}

enum Answer {
    /// A decision's answer: what delivery needs of it (the full decision was checked and
    /// digested when it was made).
    Decided {
        agent: u32,
        work_ms: u64,
        outcome: Outcome,
        verdict: Verdict,
        step: StepId,
        audit_seq: Option<u64>,
    },
    Granted {
        agent: u32,
        step: StepId,
        outcome: Outcome,
        work_ms: u64,
        decision: Decision,
    },
    Closed {
        agent: u32,
        step: StepId,
    },
    Settled {
        agent: u32,
        step: StepId,
    },
}

struct AgentState {
    id: AgentId,
    model: Model,
    /// Steps answered and not finished (allowed and unsettled, or parked).
    open: StepSet,
    wake_pending: bool,
    halts_seen: u32,
    partner: Option<u32>,
}

/// A handful of step ids (an agent's open steps: rarely more than one, a burst's dozens).
#[derive(Default)]
struct StepSet(smallvec::SmallVec<[StepId; 4]>);

impl StepSet {
    /// Adds `step`; false if it was there.
    fn insert(&mut self, step: StepId) -> bool {
        let new = !self.contains(step);
        if new {
            self.0.push(step);
        }
        new
    }

    fn remove(&mut self, step: StepId) {
        if let Some(i) = self.0.iter().position(|s| *s == step) {
            self.0.swap_remove(i);
        }
    }

    fn contains(&self, step: StepId) -> bool {
        self.0.contains(&step)
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// A simulated operator: answers approvals late, some never, approving 70% of the rest.
pub(crate) struct Operator {
    rng: Rng,
    /// Answers only approvals older than this, ms.
    lateness_ms: u64,
    /// Percent of approvals it never answers.
    never_pct: u64,
}

impl Operator {
    /// An operator drawing its habits from `rng`.
    pub(crate) fn new(rng: Rng) -> Self {
        let mut r = rng.clone();
        Operator {
            lateness_ms: r.range(0, 90_000),
            never_pct: r.range(0, 30),
            rng,
        }
    }

    /// What operator `name` answers to `p` at `now`, if it answers now: never for the
    /// approvals it leaves alone (by the approval's id), not before its lateness.
    pub(crate) fn answer(
        &mut self,
        p: &warden_actors::PendingApproval,
        now: u64,
        name: &str,
    ) -> Option<ApprovalAnswer> {
        let never = blake3::hash(p.id.as_bytes()).as_bytes()[0] as u64 * 100 / 256 < self.never_pct;
        if never || now.saturating_sub(p.requested_at_ms) < self.lateness_ms {
            return None;
        }
        Some(match self.rng.chance(70) {
            true => ApprovalAnswer::Approve { by: name.into() },
            false => ApprovalAnswer::Deny {
                by: name.into(),
                reason: "not now".into(),
            },
        })
    }

    /// The next turn's delay, ms.
    pub(crate) fn pause_ms(&mut self) -> u64 {
        self.rng.range(1_000, 5_000)
    }

    /// Whether it resumes a halted agent this turn (5%).
    pub(crate) fn resumes(&mut self) -> bool {
        self.rng.chance(5)
    }

    /// Where it starts looking for a halted agent to resume: an index below `agents`.
    pub(crate) fn pick(&mut self, agents: usize) -> u32 {
        self.rng.range(0, agents as u64) as u32
    }
}

/// One run in progress.
pub(crate) struct World<'a> {
    opts: &'a SimOptions,
    scenario: &'a Scenario,
    rt: tokio::runtime::Runtime,
    node: Option<SimNode>,
    agents: Vec<AgentState>,
    operators: Vec<Operator>,
    queue: EventQueue<Ev>,
    pending: Vec<Answer>,
    now: u64,
    end_ms: u64,
    clock_offset_ms: i64,
    draining: bool,
    /// A crash waiting for a millisecond with unacknowledged answers (`torn` tail or not).
    crash_pending: Option<(bool, u64)>,
    halted: BTreeSet<u32>,
    index: HashMap<AgentId, u32>,
    checks: Checks,
    per_event_checks: bool,
    /// Allows answered since the last durability check: (journal seq, agent, step).
    answered: Vec<(Option<u64>, u32, StepId)>,
    rng: Rng,
    digest: blake3::Hasher,
    /// Decisions by verdict (indexed by `Verdict as usize`).
    decisions: [u64; 4],
    /// Checks made per decision, counted here and handed to `checks` for the report:
    /// `no_allow_after_halt`, `fail_closed` and the broken checker's.
    decision_checks: [u64; 3],
    /// The bytes of one decision for the digest (reused).
    digest_buf: Vec<u8>,
    refusals: BTreeMap<String, u64>,
    halts: BTreeMap<&'static str, u64>,
    faults: BTreeMap<&'static str, u64>,
    activity: Activity,
    events: u64,
    steps: u64,
    allows: u64,
    trace: Option<Vec<String>>,
    /// When the scrape-time gauges were last set (`--metrics` only).
    gauges_at: Option<Instant>,
}

/// Refuses a run whose backward clock jumps add up to more than
/// [`crate::scenario::CLOCK_JUMP_BACK_MS_MAX`] before `end_ms` (each is checked alone when
/// the scenario is read; `every:` repeats them): the drain must outlast the clock's wait.
fn check_clock_jumps(scenario: &Scenario, end_ms: u64) -> Result<(), SimError> {
    let max = crate::scenario::CLOCK_JUMP_BACK_MS_MAX;
    let mut back = 0u64;
    for f in &scenario.faults {
        let FaultKind::ClockJump { by_ms } = f.kind else {
            continue;
        };
        let first = f.at_ms.or(f.every_ms).unwrap_or(end_ms / 2);
        if by_ms >= 0 || first > end_ms {
            continue;
        }
        let times = 1 + f.every_ms.map_or(0, |e| (end_ms - first) / e.max(1));
        back = back.saturating_add(times.saturating_mul(by_ms.unsigned_abs()));
    }
    if back > max {
        return Err(SimError::Setup(format!(
            "the scenario's clock jumps back by {} s in all before the run ends; at most {} s: the run's 15-minute drain must outlast the clock's wait (fewer or shorter backward jumps, or a shorter --duration)",
            back / 1000,
            max / 1000
        )));
    }
    Ok(())
}

impl<'a> World<'a> {
    pub(crate) fn new(opts: &'a SimOptions, scenario: &'a Scenario) -> Result<Self, SimError> {
        check_clock_jumps(scenario, opts.duration_ms.unwrap_or(scenario.duration_ms))?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| SimError::Setup(e.to_string()))?;
        let root = Rng::new(opts.seed);
        let total = opts.agents.unwrap_or(scenario.agents).max(1);
        let roles = assign(scenario, total);
        let mut agents = Vec::new();
        let mut operators = Vec::new();
        let mut specs = Vec::new();
        for (i, (b, pool)) in roles.iter().enumerate() {
            let rng = root.fork(i as u64 + 1);
            if *b == Behaviour::Approver {
                operators.push(Operator::new(rng));
                continue;
            }
            let id = AgentId::new(format!("{}-{:06}", b.name(), i)).expect("valid id");
            let mut spec = AgentSpec::new(id.clone());
            if let Some(p) = pool {
                spec = spec.pool(p.clone());
            }
            if let Some(t) = scenario.heartbeat_timeout_ms {
                spec = spec.heartbeat_timeout_ms(t);
            }
            specs.push(spec);
            agents.push(AgentState {
                id,
                model: Model::new(*b, rng),
                open: StepSet::default(),
                wake_pending: false,
                halts_seen: 0,
                partner: None,
            });
        }
        pair_colluders(&mut agents);
        let setup = node_setup(scenario, agents.len());
        let node = SimNode::start(&rt, &setup, specs, EPOCH_MS).map_err(SimError::Setup)?;
        for f in &scenario.faults {
            if let FaultKind::HaltPool { pool } = &f.kind {
                if node.swarm.pool(pool).is_none() {
                    let known: Vec<std::sync::Arc<str>> =
                        node.swarm.pools().into_iter().map(|p| p.name).collect();
                    return Err(SimError::Setup(format!(
                        "fault halt_pool: the policy has no pool `{pool}` (its pools: {})",
                        known.join(", ")
                    )));
                }
            }
        }
        let index = agents
            .iter()
            .enumerate()
            .map(|(i, a)| (a.id.clone(), i as u32))
            .collect();
        let mut checks = Checks::default();
        if !scenario.journal {
            checks.skip(
                "replay_reproduces_decisions",
                "the scenario runs without a journal",
            );
            checks.skip(
                "journaled_before_answered",
                "the scenario runs without a journal",
            );
        }
        Ok(World {
            opts,
            scenario,
            rt,
            node: Some(node),
            per_event_checks: agents.len() <= CHECK_EVERY_EVENT_AGENTS_MAX,
            agents,
            operators,
            queue: EventQueue::default(),
            pending: Vec::new(),
            now: 0,
            end_ms: opts.duration_ms.unwrap_or(scenario.duration_ms),
            clock_offset_ms: 0,
            draining: false,
            crash_pending: None,
            halted: BTreeSet::new(),
            index,
            checks,
            answered: Vec::new(),
            rng: root.fork(0),
            digest: blake3::Hasher::new(),
            decisions: [0; 4],
            decision_checks: [0; 3],
            digest_buf: Vec::new(),
            refusals: BTreeMap::new(),
            halts: BTreeMap::new(),
            faults: BTreeMap::new(),
            activity: Activity::default(),
            events: 0,
            steps: 0,
            allows: 0,
            trace: opts.trace.then(Vec::new),
            gauges_at: None,
        })
    }

    /// With `--metrics`: the gauges a node sets at scrape time, set from the swarm now, at most
    /// every [`GAUGES_EVERY`] of wall time (`last` forces it). Reads only.
    fn refresh_gauges(&mut self, last: bool) {
        if !self.opts.refresh_gauges || self.node.is_none() {
            return;
        }
        if !last && self.gauges_at.is_some_and(|t| t.elapsed() < GAUGES_EVERY) {
            return;
        }
        self.gauges_at = Some(Instant::now());
        let now = self.node().now_ms();
        warden_supervisor::metrics::refresh_gauges(&self.node().swarm, now);
    }

    fn node(&self) -> &SimNode {
        self.node.as_ref().expect("the node is up")
    }

    /// Runs to the end (or the first violation) and reports.
    pub(crate) fn run(mut self, progress: &mut dyn FnMut(&Progress)) -> (Report, Vec<String>) {
        let started = Instant::now();
        self.schedule_start();
        let mut tick = 0;
        while let Some(t) = self.queue.peek_time() {
            let main_over =
                t > self.end_ms || self.opts.max_events.is_some_and(|m| self.events >= m);
            if main_over && !self.draining {
                self.end_tick();
                self.start_drain();
                continue;
            }
            if self.draining && t > self.end_ms + DRAIN_MS_MAX {
                break;
            }
            if t != tick {
                self.end_tick();
                tick = t;
            }
            let Some((t, ev)) = self.queue.pop() else {
                break;
            };
            if self.draining && matches!(ev, Ev::Wake(_) | Ev::Fault(_)) {
                continue; // no new steps or faults after the end: the clock does not move for them
            }
            self.now = t;
            self.set_clock();
            self.handle(ev);
            if !self.draining {
                self.events += 1;
            }
            self.read_bus();
            if self.per_event_checks {
                self.check_pools();
            }
            if self.checks.violation.is_some() {
                break;
            }
            if self.events.is_multiple_of(4096) {
                self.refresh_gauges(false);
                progress(&Progress {
                    simulated_ms: self.now,
                    duration_ms: self.end_ms,
                    events: self.events,
                    agent_steps: self.steps,
                });
            }
        }
        if self.checks.violation.is_none() {
            self.end_tick();
            self.finish();
        }
        self.refresh_gauges(true);
        let trace = self.trace.take().unwrap_or_default();
        (self.report(started), trace)
    }

    fn schedule_start(&mut self) {
        for i in 0..self.agents.len() as u32 {
            let at = self.agents[i as usize].model.think_ms();
            self.agents[i as usize].wake_pending = true;
            self.queue.push(at, Ev::Wake(i));
        }
        for o in 0..self.operators.len() as u32 {
            self.queue.push(1_000, Ev::Operator(o));
        }
        self.queue.push(self.scenario.sweep_interval_ms, Ev::Sweep);
        for (i, f) in self.scenario.faults.iter().enumerate() {
            let at = f.at_ms.or(f.every_ms).unwrap_or(self.end_ms / 2);
            self.queue.push(at, Ev::Fault(i as u32));
        }
    }

    fn set_clock(&self) {
        let t = (EPOCH_MS + self.now) as i64 + self.clock_offset_ms;
        self.node().clock.set_ms(t.max(0) as u64);
    }

    fn handle(&mut self, ev: Ev) {
        match ev {
            Ev::Wake(a) => self.wake(a),
            Ev::Outcome {
                agent,
                step,
                outcome,
            } => self.outcome(agent, step, outcome),
            Ev::Poll {
                agent,
                step,
                outcome,
                work_ms,
            } => self.poll(agent, step, outcome, work_ms),
            Ev::Operator(o) => self.operate(o),
            Ev::Sweep => self.sweep(),
            Ev::Fault(i) => self.fault(i),
            Ev::Heal(i) => self.heal(i),
        }
    }

    fn trace(&mut self, line: impl FnOnce() -> String) {
        if let Some(t) = &mut self.trace {
            t.push(format!(
                "#{:<8} {:>10}ms  {}",
                self.events + 1,
                self.now,
                line()
            ));
        }
    }

    fn journal_down(&self) -> bool {
        self.node().swarm.journal_failure().is_some()
    }

    fn wake(&mut self, a: u32) {
        let st = &mut self.agents[a as usize];
        st.wake_pending = false;
        let gave_up = st.halts_seen >= HALTS_BEFORE_GIVING_UP
            || st.model.gave_up()
            || (st.halts_seen > 0 && st.model.behaviour.stops_when_halted());
        if self.draining || gave_up {
            return;
        }
        if self.journal_down() {
            self.activity.refused_journal_down += 1;
            self.schedule_wake(a, RETRY_MS);
            return;
        }
        if self.agents[a as usize].model.wants_to_wait() {
            self.collude(a);
        }
        // Only the adversary names another agent: the others leave its state untouched.
        let n = self.agents.len();
        let other = (self.agents[a as usize].model.behaviour == Behaviour::Adversary)
            .then(|| self.agents[(a as usize + 1) % n].id.clone());
        let st = &mut self.agents[a as usize];
        let plans = st
            .model
            .plan(st.id.as_str(), other.as_ref().map_or("", |o| o.as_str()));
        for plan in plans {
            let decision = self.node().handles[a as usize].step_inline(&plan.step);
            self.read_bus();
            self.on_decision(a, &plan, &decision);
            self.pending.push(Answer::Decided {
                agent: a,
                work_ms: plan.work_ms,
                outcome: plan.outcome,
                verdict: decision.decision,
                step: decision.step,
                audit_seq: decision.audit_seq,
            });
        }
    }

    fn collude(&mut self, a: u32) {
        let Some(p) = self.agents[a as usize].partner else {
            return;
        };
        let (me, them) = (
            self.agents[a as usize].id.clone(),
            self.agents[p as usize].id.clone(),
        );
        self.trace(|| format!("{me} declares it waits on {them}"));
        if let Ok(Some(_cycle)) = self.node().swarm.wait_for(&me, &them) {
            self.activity.deadlocks += 1;
        }
    }

    /// Records a decision and checks what must hold of it at once.
    fn on_decision(&mut self, a: u32, plan: &Plan, d: &Decision) {
        self.steps += 1;
        self.decisions[d.decision as usize] += 1;
        if let Some(rule) = d.rule.as_deref().filter(|_| !d.is_allow()) {
            if let Some(n) = self.refusals.get_mut(rule) {
                *n += 1;
            } else {
                self.refusals.insert(rule.to_string(), 1);
            }
        }
        self.digest_decision(a, d);
        if let Some(t) = &mut self.trace {
            let id = &self.agents[a as usize].id;
            let line = format!(
                "{id} {} -> {}{}",
                plan.step.tool(),
                d.decision.name(),
                d.rule
                    .as_deref()
                    .map(|r| format!(" ({r})"))
                    .unwrap_or_default()
            );
            t.push(format!(
                "#{:<8} {:>10}ms  {line}",
                self.events + 1,
                self.now
            ));
        }
        self.decision_checks[0] += 1;
        if d.is_allow() {
            self.allows += 1;
            if self.halted.contains(&a) {
                let id = &self.agents[a as usize].id;
                let detail = format!("agent {id} was allowed step {} while halted", d.step);
                self.violate("no_allow_after_halt", detail);
            }
        }
        if let Some(rule) = plan.hostile {
            self.decision_checks[1] += 1;
            if d.is_allow() {
                let id = &self.agents[a as usize].id;
                let detail = format!(
                    "agent {id}: hostile step ({rule}) allowed: tool {} args {}",
                    plan.step.tool(),
                    plan.step.args()
                );
                self.violate("fail_closed", detail);
            }
        }
        if let Some(n) = self.opts.break_after_allows {
            self.decision_checks[2] += 1;
            if self.allows > n {
                self.violate(
                    BROKEN,
                    format!("more than {n} allows (a deliberately broken checker)"),
                );
            }
        }
    }

    /// Hashes the decision's fields, in this order, as one update (the same digest as
    /// one update per field).
    fn digest_decision(&mut self, a: u32, d: &Decision) {
        let b = &mut self.digest_buf;
        b.clear();
        b.extend_from_slice(&a.to_le_bytes());
        b.extend_from_slice(&d.step.seq().to_le_bytes());
        b.extend_from_slice(d.decision.name().as_bytes());
        b.extend_from_slice(d.rule.as_deref().unwrap_or("").as_bytes());
        b.extend_from_slice(d.kind.map_or("", |k| k.name()).as_bytes());
        b.extend_from_slice(d.reason.as_bytes());
        b.extend_from_slice(&d.audit_seq.unwrap_or(0).to_le_bytes());
        b.extend_from_slice(&self.now.to_le_bytes());
        self.digest.update(b);
    }

    fn violate(&mut self, name: &'static str, detail: String) {
        self.checks.fail(name, detail, self.events + 1, self.now);
    }

    fn outcome(&mut self, a: u32, step: StepId, outcome: Outcome) {
        if self.journal_down() {
            self.activity.refused_journal_down += 1;
            self.queue.push(
                self.now + RETRY_MS,
                Ev::Outcome {
                    agent: a,
                    step,
                    outcome,
                },
            );
            return;
        }
        let result = self.node().handles[a as usize].outcome_inline(step, &outcome);
        match result {
            Ok(_) => self.activity.outcomes += 1,
            Err(_) => self.activity.outcomes_refused += 1,
        }
        self.read_bus();
        self.pending.push(Answer::Settled { agent: a, step });
    }

    fn poll(&mut self, a: u32, step: StepId, outcome: Outcome, work_ms: u64) {
        let id = self.agents[a as usize].id.clone();
        let _ = self.node().swarm.heartbeat_inline(&id);
        match self.node().handles[a as usize].step_status(step) {
            StepStatus::Pending { .. } => self.queue.push(
                self.now + APPROVAL_POLL_MS,
                Ev::Poll {
                    agent: a,
                    step,
                    outcome,
                    work_ms,
                },
            ),
            StepStatus::Final(decision) => self.pending.push(Answer::Granted {
                agent: a,
                step,
                outcome,
                work_ms,
                decision,
            }),
            StepStatus::NotKept | StepStatus::Unknown => {
                self.pending.push(Answer::Closed { agent: a, step })
            }
        }
    }

    fn operate(&mut self, o: u32) {
        let approvals = self.node().swarm.approvals();
        let now = self.node().now_ms();
        let mut answered = 0;
        let name = format!("operator-{o}");
        for p in approvals.iter().take(APPROVALS_PER_TURN_MAX) {
            let Some(answer) = self.operators[o as usize].answer(p, now, &name) else {
                continue;
            };
            if self.node().swarm.answer_approval(&p.id, answer).is_ok() {
                answered += 1;
            }
        }
        self.activity.approvals_answered += answered;
        self.read_bus();
        if self.operators[o as usize].resumes() {
            self.resume_one(o);
        }
        let next = self.operators[o as usize].pause_ms();
        if !self.draining || !self.node().swarm.approvals().is_empty() {
            self.queue.push(self.now + next, Ev::Operator(o));
        }
    }

    fn resume_one(&mut self, o: u32) {
        if self.draining || self.halted.is_empty() {
            return;
        }
        let start = self.operators[o as usize].pick(self.agents.len());
        let pick = self
            .halted
            .range(start..)
            .next()
            .or_else(|| self.halted.iter().next())
            .copied();
        let Some(a) = pick else { return };
        let id = self.agents[a as usize].id.clone();
        if self
            .node()
            .swarm
            .resume_inline(&id, format!("operator-{o}"))
            .is_ok()
        {
            self.activity.resumes += 1;
            self.trace(|| format!("operator-{o} resumes {id}"));
            self.agents[a as usize].halts_seen = 0;
            self.read_bus();
            if self.agents[a as usize].open.is_empty() {
                self.schedule_wake(a, 100);
            }
        }
    }

    fn sweep(&mut self) {
        let lost = self.node().swarm.sweep_heartbeats();
        let timed_out = self.node().swarm.sweep_approvals();
        self.activity.approvals_timed_out += timed_out.len() as u64;
        if !lost.is_empty() || !timed_out.is_empty() {
            self.trace(|| {
                format!(
                    "sweep: {} lost, {} approvals timed out",
                    lost.len(),
                    timed_out.len()
                )
            });
        }
        self.read_bus();
        let busy = self.agents.iter().any(|a| !a.open.is_empty()) || !self.pending.is_empty();
        if !self.draining || busy {
            self.queue
                .push(self.now + self.scenario.sweep_interval_ms, Ev::Sweep);
        }
    }

    fn schedule_wake(&mut self, a: u32, after_ms: u64) {
        let st = &mut self.agents[a as usize];
        if !st.wake_pending {
            st.wake_pending = true;
            self.queue.push(self.now + after_ms.max(1), Ev::Wake(a));
        }
    }

    /// Reads the swarm's bus: halts and resumes as the swarm announced them (the oracle for
    /// `no_allow_after_halt`), and counts halts by kind. A reader that fell behind rebuilds
    /// the halted set from every agent's state.
    fn read_bus(&mut self) {
        let node = self.node.as_mut().expect("the node is up");
        if read_halts(
            &mut node.events,
            &self.index,
            &mut self.halted,
            &mut self.halts,
        ) {
            self.rebuild_halted();
        }
    }

    fn rebuild_halted(&mut self) {
        self.halted = (0..self.agents.len() as u32)
            .filter(|i| self.node().handles[*i as usize].snapshot().halt.is_some())
            .collect();
    }

    fn check_pools(&mut self) {
        self.checks.count("pool_bounds");
        let bad = self
            .node()
            .swarm
            .pools()
            .iter()
            .find_map(invariants::over_limit);
        if let Some(detail) = bad {
            self.violate("pool_bounds", detail);
        }
    }

    fn check_agent_accounts(&mut self) {
        self.checks.count("pool_bounds");
        let bad = self
            .node()
            .handles
            .iter()
            .find_map(|h| invariants::over_limit(&h.snapshot().account));
        if let Some(detail) = bad {
            self.violate("pool_bounds", detail);
        }
    }

    /// The end of a simulated millisecond: one group commit, then every answer of it leaves.
    fn end_tick(&mut self) {
        if !self.per_event_checks {
            self.check_pools();
        }
        if let Some((torn, deadline)) = self.crash_pending {
            if !self.pending.is_empty() || self.now >= deadline {
                self.crash_pending = None;
                let unacked = self.node().unacked_bytes(&self.rt);
                let torn_bytes = if torn { self.rng.range(0, unacked) } else { 0 };
                self.restart(torn_bytes);
                return;
            }
        }
        if self.pending.is_empty() {
            return;
        }
        let rt = &self.rt;
        let flushed = self.node.as_mut().expect("node").flush(rt);
        let answers = std::mem::take(&mut self.pending);
        if flushed.is_err() {
            // Fail closed: nobody hears anything that is not durable.
            self.activity.refused_journal_down += answers.len() as u64;
            self.refuse(answers);
            return;
        }
        let mut touched: Vec<u32> = answers.into_iter().map(|a| self.deliver(a)).collect();
        touched.sort_unstable();
        touched.dedup();
        for a in touched {
            let st = &self.agents[a as usize];
            if st.open.is_empty() && !self.draining {
                let think = self.agents[a as usize].model.think_ms();
                self.schedule_wake(a, think);
            }
        }
    }

    /// Answers that could not be made durable: the agents retry.
    fn refuse(&mut self, answers: Vec<Answer>) {
        for answer in answers {
            match answer {
                Answer::Decided { agent, .. } | Answer::Closed { agent, .. } => {
                    self.schedule_wake(agent, RETRY_MS)
                }
                Answer::Granted {
                    agent,
                    step,
                    outcome,
                    work_ms,
                    ..
                } => self.queue.push(
                    self.now + RETRY_MS,
                    Ev::Poll {
                        agent,
                        step,
                        outcome,
                        work_ms,
                    },
                ),
                Answer::Settled { agent, step } => self.queue.push(
                    self.now + RETRY_MS,
                    Ev::Outcome {
                        agent,
                        step,
                        outcome: Outcome::failure(),
                    },
                ),
            }
        }
    }

    /// An allow about to be answered must name an acknowledged journal entry. A granted
    /// approval read back after a restart names none (recovery re-applies the resolution
    /// without its entry's number): it is looked up in the journal at the next check instead.
    fn check_acked(&mut self, a: u32, step: StepId, audit_seq: Option<u64>, granted: bool) {
        if !self.scenario.journal {
            return;
        }
        self.checks.count("journaled_before_answered");
        let acked = self.node().acked_seq;
        match audit_seq {
            Some(seq) if seq <= acked => self.answered.push((Some(seq), a, step)),
            None if granted && self.node().restarts > 0 => {
                self.activity.resolutions_without_seq += 1;
                self.answered.push((None, a, step));
            }
            other => {
                let id = &self.agents[a as usize].id;
                let why = self
                    .node()
                    .swarm
                    .journal_failure()
                    .map(|w| format!(" (journal failed: {w})"))
                    .unwrap_or_default();
                let detail = format!("allow of {id} step {} answered with journal entry {other:?}, acknowledged up to {acked}{why}", step);
                self.violate("journaled_before_answered", detail);
            }
        }
    }

    fn deliver(&mut self, answer: Answer) -> u32 {
        match answer {
            Answer::Decided {
                agent,
                work_ms,
                outcome,
                verdict,
                step,
                audit_seq,
            } => {
                let st = &mut self.agents[agent as usize];
                match verdict {
                    Verdict::Allow => {
                        st.model.answered(true);
                        st.open.insert(step);
                        self.check_acked(agent, step, audit_seq, false);
                        let ev = Ev::Outcome {
                            agent,
                            step,
                            outcome,
                        };
                        self.queue.push(self.now + work_ms, ev);
                    }
                    Verdict::RequireApproval => {
                        st.open.insert(step);
                        let ev = Ev::Poll {
                            agent,
                            step,
                            outcome,
                            work_ms,
                        };
                        self.queue.push(self.now + APPROVAL_POLL_MS, ev);
                    }
                    Verdict::Deny => st.model.answered(false),
                    Verdict::Halt => st.halts_seen += 1,
                }
                agent
            }
            Answer::Granted {
                agent,
                step,
                outcome,
                work_ms,
                decision,
            } => {
                if decision.is_allow() {
                    self.check_acked(agent, step, decision.audit_seq, true);
                    self.queue.push(
                        self.now + work_ms,
                        Ev::Outcome {
                            agent,
                            step,
                            outcome,
                        },
                    );
                } else {
                    self.agents[agent as usize].open.remove(step);
                }
                agent
            }
            Answer::Closed { agent, step } | Answer::Settled { agent, step } => {
                self.agents[agent as usize].open.remove(step);
                agent
            }
        }
    }

    fn fault(&mut self, i: u32) {
        let spec = self.scenario.faults[i as usize].clone();
        if let Some(every) = spec.every_ms {
            self.queue.push(self.now + every, Ev::Fault(i));
        }
        if self.draining {
            return;
        }
        *self.faults.entry(spec.kind.name()).or_default() += 1;
        self.trace(|| format!("fault: {}", spec.kind.name()));
        match spec.kind {
            // The power goes at the end of the next simulated millisecond that has answers
            // to give, before its group commit: what it decided is on the disk, unacknowledged.
            // (Or a second later at the latest, if nobody asks anything meanwhile.)
            FaultKind::Crash { torn } => self.crash_pending = Some((torn, self.now + 1_000)),
            FaultKind::DiskError { heal_after_ms } => {
                let after = self.rng.range(0, 4_096);
                self.inject(Faults {
                    write_fails_after_bytes: Some(after),
                    sync_fails: false,
                });
                self.queue.push(self.now + heal_after_ms, Ev::Heal(i));
            }
            FaultKind::SyncError { heal_after_ms } => {
                self.inject(Faults {
                    write_fails_after_bytes: None,
                    sync_fails: true,
                });
                self.queue.push(self.now + heal_after_ms, Ev::Heal(i));
            }
            FaultKind::ClockJump { by_ms } => {
                self.clock_offset_ms += by_ms;
                self.set_clock();
            }
            FaultKind::Snapshot => self.snapshot(),
            FaultKind::ActorCrash => self.actor_crash(),
            FaultKind::HaltPool { pool } => {
                let _ = self.node().swarm.halt_inline(
                    Target::Pool(pool),
                    HaltKind::External,
                    "simulated operator",
                );
                self.read_bus();
            }
        }
    }

    /// A random agent's actor crashes: the restart strategies decide (restarts, escalations,
    /// every agent halted past the root); the halts are read from the bus like any other.
    fn actor_crash(&mut self) {
        if self.agents.is_empty() {
            return;
        }
        let a = self.rng.range(0, self.agents.len() as u64 - 1) as usize;
        let id = self.agents[a].id.clone();
        if let Ok(report) = self.node().swarm.crash_inline(&id, "simulated panic") {
            self.activity.actor_restarts += report.restarted.len() as u64;
            self.activity.escalations += report.escalations.len() as u64;
        }
        self.read_bus();
    }

    fn inject(&mut self, faults: Faults) {
        if let Some(s) = &self.node().storage {
            s.inject(faults);
        }
    }

    fn heal(&mut self, _i: u32) {
        self.inject(Faults::default());
        if !self.draining || self.journal_down() {
            self.restart(0);
        }
    }

    fn snapshot(&mut self) {
        let rt = &self.rt;
        let node = self.node.as_mut().expect("node");
        if let Ok(begin) = node.swarm.write_snapshot() {
            if node.flush(rt).is_ok() {
                if let Some(j) = &node.journal {
                    let _ = j.remove_segments_before(begin);
                }
            }
        }
    }

    /// A crash (or a repair): the node restarts from its journal, the checks that follow
    /// a recovery run, and agents whose answers were lost retry.
    fn restart(&mut self, torn_bytes: u64) {
        let ids: Vec<AgentId> = self.agents.iter().map(|a| a.id.clone()).collect();
        let lost = std::mem::take(&mut self.pending);
        let old = self.node.take().expect("node");
        let setup = node_setup(self.scenario, self.agents.len());
        let node_now = ((EPOCH_MS + self.now) as i64 + self.clock_offset_ms).max(0) as u64;
        match old.crash_and_restart(&self.rt, &setup, &ids, torn_bytes, node_now) {
            Ok((node, entries, report)) => {
                self.node = Some(node);
                self.activity.restarts += 1;
                self.activity.torn_bytes += torn_bytes;
                self.trace(|| {
                    format!(
                        "restart: {} entries recovered, {} agents",
                        report.entries, report.agents
                    )
                });
                self.rebuild_halted();
                self.refuse(lost);
                self.check_survivors(&entries);
                self.check_replay(&entries);
                self.adopt_orphans();
                self.check_agent_accounts();
            }
            Err(e) => {
                // Recovery itself failed: that is what replay = recovery promises never happens.
                self.checks.count("replay_reproduces_decisions");
                self.violate(
                    "replay_reproduces_decisions",
                    format!("the node could not restart: {e}"),
                );
                self.node = None;
            }
        }
    }

    /// Every allow answered since the last check is in the journal as that agent's decision
    /// (or granted approval).
    fn check_survivors(&mut self, entries: &[Entry]) {
        self.checks.count("journaled_before_answered");
        let first = entries.first().map_or(1, |e| e.seq);
        let answered = std::mem::take(&mut self.answered);
        for (seq, a, step) in answered {
            let id = self.agents[a as usize].id.clone();
            let found = match seq {
                Some(seq) if seq < first => continue, // removed by retention; a snapshot holds it
                Some(seq) => entries
                    .get((seq - first) as usize)
                    .filter(|e| e.seq == seq)
                    .is_some_and(|e| is_allow_of(e, &id, step)),
                None => entries.iter().any(|e| is_allow_of(e, &id, step)) || first > 1,
            };
            if !found {
                let detail = format!("allow of {id} step {step} (journal entry {seq:?}) was answered but is not in the journal after a crash");
                self.violate("journaled_before_answered", detail);
                return;
            }
        }
    }

    fn check_replay(&mut self, entries: &[Entry]) {
        self.checks.count("replay_reproduces_decisions");
        match node::replay(&self.rt, entries) {
            Ok(report) if report.differences.is_empty() => {}
            Ok(report) => {
                let d = &report.differences[0];
                let detail = format!(
                    "{} decisions differ on replay; first: entry {} agent {} step {} journaled {} ({:?}), replayed {} ({:?})",
                    report.differences.len(), d.seq, d.agent, d.step_id, d.journaled.name(), d.journaled_rule, d.replayed.name(), d.replayed_rule
                );
                self.violate("replay_reproduces_decisions", detail);
            }
            Err(e) => self.violate("replay_reproduces_decisions", e),
        }
    }

    /// Steps the recovered node holds open (or parked) that no agent knows of, because their
    /// answer was cut off by the crash: settled as failures (what `adapters::proxy::orphans`
    /// does for the proxy's steps), or polled until their approval ends.
    fn adopt_orphans(&mut self) {
        let parked: BTreeMap<(AgentId, StepId), ()> = self
            .node()
            .swarm
            .approvals()
            .into_iter()
            .map(|p| ((p.agent, p.step_id), ()))
            .collect();
        for a in 0..self.agents.len() as u32 {
            let open = self.node().handles[a as usize].open_step_ids();
            for step in open {
                if !self.agents[a as usize].open.contains(step) {
                    self.agents[a as usize].open.insert(step);
                    self.activity.orphans_settled += 1;
                    self.queue.push(
                        self.now + 1,
                        Ev::Outcome {
                            agent: a,
                            step,
                            outcome: Outcome::failure(),
                        },
                    );
                }
            }
        }
        for (agent, step) in parked.into_keys() {
            let Some(&a) = self.index.get(&agent) else {
                continue;
            };
            if self.agents[a as usize].open.insert(step) {
                let ev = Ev::Poll {
                    agent: a,
                    step,
                    outcome: Outcome::failure(),
                    work_ms: 1,
                };
                self.queue.push(self.now + APPROVAL_POLL_MS, ev);
            }
        }
    }

    fn start_drain(&mut self) {
        self.draining = true;
        self.trace(|| "drain: no new steps; outcomes and approvals finish".to_string());
        if self.journal_down() {
            self.inject(Faults::default());
            self.restart(0);
        }
        self.queue.push(self.now + 1, Ev::Sweep);
    }

    /// The end: every agent's account within bounds, nothing reserved, replay reproduces
    /// the journal, every answered allow in it.
    fn finish(&mut self) {
        self.read_bus();
        self.check_pools();
        self.check_agent_accounts();
        self.checks.count("no_leaked_reservations");
        let leaked = self
            .node()
            .swarm
            .pools()
            .iter()
            .find_map(invariants::still_reserved)
            .or_else(|| {
                self.node()
                    .handles
                    .iter()
                    .find_map(|h| invariants::still_reserved(&h.snapshot().account))
            });
        if let Some(detail) = leaked {
            self.violate("no_leaked_reservations", detail);
        }
        if self.scenario.journal && self.checks.violation.is_none() {
            let rt = &self.rt;
            let _ = self.node.as_mut().expect("node").flush(rt);
            match self.node().entries() {
                Ok(entries) => {
                    self.check_survivors(&entries);
                    self.check_replay(&entries);
                }
                Err(e) => self.violate("replay_reproduces_decisions", e),
            }
        }
    }

    fn report(mut self, started: Instant) -> Report {
        let wall = started.elapsed();
        let pools: Vec<_> = self
            .node
            .as_ref()
            .map(|n| n.swarm.pools())
            .unwrap_or_default();
        let overspend = pools.iter().map(invariants::overspend).sum();
        if let Some(n) = self.node.take() {
            n.shutdown(&self.rt);
        }
        let secs = wall.as_secs_f64().max(1e-9);
        let [halt_checks, hostile_checks, broken_checks] = self.decision_checks;
        self.checks.count_n("no_allow_after_halt", halt_checks);
        self.checks.count_n("fail_closed", hostile_checks);
        self.checks.count_n(BROKEN, broken_checks);
        let verdicts = [
            Verdict::Allow,
            Verdict::RequireApproval,
            Verdict::Deny,
            Verdict::Halt,
        ];
        let decisions = verdicts
            .into_iter()
            .filter(|v| self.decisions[*v as usize] > 0)
            .map(|v| (v.name(), self.decisions[v as usize]))
            .collect();
        Report {
            seed: self.opts.seed,
            scenario: self.scenario.name.clone(),
            agents: self.agents.len(),
            operators: self.operators.len(),
            nodes: 1,
            simulated_ms: self.now,
            duration_ms: self.now.min(self.end_ms),
            wall_ms: wall.as_millis() as u64,
            events: self.events,
            agent_steps: self.steps,
            agent_steps_per_sec: self.steps as f64 / secs,
            decisions,
            refusals_by_rule: self.refusals,
            halts: self.halts,
            pools: pools.iter().map(PoolReport::of).collect(),
            overspend,
            invariants: self.checks.results(),
            faults: self.faults,
            activity: self.activity,
            digest: self.digest.finalize().to_hex().to_string(),
            violation: self.checks.violation.clone(),
        }
    }
}

/// True when `e` journals an allow of `agent`'s step `step` (a decision, or an approval
/// resolved to allow).
fn is_allow_of(e: &Entry, agent: &AgentId, step: StepId) -> bool {
    use warden_actors::KernelRecord as K;
    match Record::parse(e) {
        Ok(Record::Agent(AgentRecord { agent: who, record })) => {
            &who == agent
                && matches!(record,
                    K::Decision { step_id, decision: Verdict::Allow, .. }
                    | K::Approval { step_id, decision: Verdict::Allow, .. } if step_id == step)
        }
        _ => false,
    }
}

/// Reads a node's bus (the oracle for `no_allow_after_halt`): the agents (by `index`) it
/// announced halted go into `halted`, resumed ones out of it, and halts are counted by kind.
/// True when the reader fell behind, so the caller rebuilds `halted` from the agents' state.
pub(crate) fn read_halts(
    events: &mut warden_actors::EventStream,
    index: &HashMap<AgentId, u32>,
    halted: &mut BTreeSet<u32>,
    halts: &mut BTreeMap<&'static str, u64>,
) -> bool {
    if !events.may_have_events() {
        return false; // nothing published since the last read found nothing
    }
    let mut cx = Context::from_waker(Waker::noop());
    loop {
        match futures_poll(events, &mut cx) {
            Poll::Ready(Some(Ok(Event::Halt { agent, record }))) => {
                if let Some(&i) = index.get(&agent) {
                    halted.insert(i);
                }
                *halts.entry(record.kind.name()).or_default() += 1;
            }
            Poll::Ready(Some(Ok(Event::Resume { agent, .. }))) => {
                if let Some(&i) = index.get(&agent) {
                    halted.remove(&i);
                }
            }
            Poll::Ready(Some(Ok(_))) => {}
            Poll::Ready(Some(Err(_))) => return true,
            Poll::Ready(None) | Poll::Pending => return false,
        }
    }
}

fn futures_poll(
    s: &mut warden_actors::EventStream,
    cx: &mut Context<'_>,
) -> Poll<Option<Result<Event, warden_actors::EventError>>> {
    use futures_core::Stream;
    std::pin::Pin::new(s).poll_next(cx)
}

fn node_setup(scenario: &Scenario, agents: usize) -> NodeSetup<'_> {
    NodeSetup {
        policy_text: &scenario.policy_text,
        journal: scenario.journal,
        event_capacity: (agents * 4).max(16_384),
    }
}

/// Which behaviour and pool each of `total` slots gets: shares rounded down, the rest to
/// the largest shares, then interleaved so the behaviours mix over the agent indices.
pub(crate) fn assign(scenario: &Scenario, total: usize) -> Vec<(Behaviour, Option<String>)> {
    let weight: u64 = scenario.mix.iter().map(|m| m.share).sum::<u64>().max(1);
    let mut counts: Vec<usize> = scenario
        .mix
        .iter()
        .map(|m| (m.share as usize * total) / weight as usize)
        .collect();
    let left = total - counts.iter().sum::<usize>();
    let mut order: Vec<usize> = (0..counts.len()).collect();
    order.sort_by_key(|i| std::cmp::Reverse(scenario.mix[*i].share));
    for i in order.iter().cycle().take(left) {
        counts[*i] += 1;
    }
    let mut out = Vec::with_capacity(total);
    let mut given = vec![0usize; counts.len()];
    while out.len() < total {
        for (i, m) in scenario.mix.iter().enumerate() {
            if given[i] < counts[i] {
                given[i] += 1;
                out.push((m.behaviour, m.pool.clone()));
            }
        }
    }
    out
}

/// Colluders form rings of two: each waits on the other.
fn pair_colluders(agents: &mut [AgentState]) {
    let colluders: Vec<usize> = (0..agents.len())
        .filter(|i| agents[*i].model.behaviour == Behaviour::Colluder)
        .collect();
    for pair in colluders.chunks(2) {
        if let [a, b] = pair {
            agents[*a].partner = Some(*b as u32);
            agents[*b].partner = Some(*a as u32);
        }
    }
}
