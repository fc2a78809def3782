//! Load generation against a real node over its HTTP API (the typed client of
//! [`warden_adapters::client`]): `warden sim --target URL --token T` measures a node's
//! decisions per second and latency, and `warden demo` drives the swarm it shows.
//!
//! The agents are the simulator's own behaviour models ([`crate::behaviour::Model`]), one
//! per registered agent, split over `threads` OS threads; each thread runs its agents' turns
//! from a time-ordered queue. A turn is one HTTP request: a step (`POST /v1/agents/{id}/steps`),
//! an outcome after the step's work, or a check on a step parked for approval. An operator
//! thread answers approvals ([`operator`]). Differences from the in-process simulator: real
//! time instead of a virtual clock (so runs are not reproducible bit for bit, only their
//! mix), colluders act as steady agents (wait-for edges have no HTTP route), and the
//! node's own policy decides (the scenario's policy is not installed).
//!
//! Bounds: at most [`LATENCY_SAMPLES_MAX`] latency samples per thread (later ones are
//! counted, not kept), at most [`THREADS_MAX`] threads and [`AGENTS_MAX`] agents, every
//! request under the client's timeout.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use warden_actors::{RawUsage, StepId, Verdict};
use warden_adapters::client::{Client, ClientError};
use warden_adapters::http::wire::{
    AnswerRequest, DecisionView, OutcomeRequest, PoolView, RegisterRequest,
};

use crate::behaviour::{Behaviour, Model, Plan};
use crate::rng::Rng;
use crate::Scenario;

/// Latency samples kept per thread (4 MiB of `u32`s each).
pub const LATENCY_SAMPLES_MAX: usize = 1 << 20;
/// Most threads a run may use.
pub const THREADS_MAX: usize = 256;
/// Most agents a run may register (a node's design size; each costs the run about a
/// kilobyte, and its id, behaviour and pool are laid out before the first registration).
pub const AGENTS_MAX: usize = 1_000_000;
/// How often a parked step's decision is checked, and the operator looks for approvals.
pub const POLL: Duration = Duration::from_millis(500);
/// Longest sleep between checks of the stop flag.
const NAP: Duration = Duration::from_millis(50);

/// The least an agent waits after a request that failed (a node gone or overloaded is not
/// asked again at full speed).
pub const ERROR_BACKOFF: Duration = Duration::from_millis(200);

/// How fast agents act.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Pace {
    /// No thinking and no work: each thread sends its next request as soon as the last is
    /// answered (a closed-loop load generator).
    Flat,
    /// The models' think and work times, divided by `speed` (1.0: as the model says).
    Real {
        /// Time compression.
        speed: f64,
    },
}

/// What to run.
#[derive(Clone, Debug)]
pub struct LoadOptions {
    /// The node, e.g. `http://127.0.0.1:7700`.
    pub base: String,
    /// The operator token (registers agents, answers approvals).
    pub operator_token: String,
    /// Behaviours and pools of the agents (the scenario's `behaviours`).
    pub scenario: Scenario,
    /// Agents to register (approvers among them become the operator, not agents).
    pub agents: usize,
    /// Seed of the models' draws.
    pub seed: u64,
    /// Threads sending requests.
    pub threads: usize,
    /// How long to run.
    pub duration: Duration,
    /// How fast agents act.
    pub pace: Pace,
    /// Agent ids are `<prefix>-<n>`; a node refuses an id twice, so runs against one node
    /// need distinct prefixes.
    pub prefix: String,
    /// Share of approvals the operator approves, percent.
    pub approve_percent: u64,
    /// How long the operator takes to answer, ms (drawn in this range, then paced).
    pub answer_delay_ms: (u64, u64),
}

/// Counters that a live view reads while the run goes.
#[derive(Debug, Default)]
pub struct Live {
    /// Decisions by verdict: allow, deny, require_approval, halt.
    pub decisions: [AtomicU64; 4],
    /// Outcomes reported.
    pub outcomes: AtomicU64,
    /// Approvals answered by the operator (approved, denied).
    pub answered: [AtomicU64; 2],
    /// Requests that failed (transport or an unexpected refusal).
    pub errors: AtomicU64,
    /// Agents registered so far.
    pub registered: AtomicU64,
    /// Agents still acting.
    pub active: AtomicU64,
    /// Set to stop every thread.
    pub stop: AtomicBool,
    first_error: Mutex<Option<String>>,
}

impl Live {
    /// All decisions so far.
    pub fn decided(&self) -> u64 {
        self.decisions
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .sum()
    }

    /// The first error seen, if any.
    pub fn first_error(&self) -> Option<String> {
        self.first_error.lock().ok().and_then(|e| e.clone())
    }

    fn error(&self, e: &ClientError) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut first) = self.first_error.lock() {
            first.get_or_insert_with(|| e.to_string());
        }
    }

    fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }
}

/// Index of a verdict in [`Live::decisions`].
pub fn verdict_index(v: Verdict) -> usize {
    match v {
        Verdict::Allow => 0,
        Verdict::Deny => 1,
        Verdict::RequireApproval => 2,
        Verdict::Halt => 3,
    }
}

/// Latency percentiles of the step requests, µs (from send to answer).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Percentiles {
    /// Median.
    pub p50_us: u64,
    /// 90th percentile.
    pub p90_us: u64,
    /// 99th percentile.
    pub p99_us: u64,
    /// 99.9th percentile.
    pub p999_us: u64,
    /// Largest.
    pub max_us: u64,
    /// Samples behind these figures.
    pub samples: u64,
}

impl Percentiles {
    fn of(mut v: Vec<u32>) -> Self {
        v.sort_unstable();
        let at = |q: f64| -> u64 {
            if v.is_empty() {
                return 0;
            }
            let i = ((v.len() as f64 * q).ceil() as usize).clamp(1, v.len()) - 1;
            u64::from(v[i])
        };
        Percentiles {
            p50_us: at(0.50),
            p90_us: at(0.90),
            p99_us: at(0.99),
            p999_us: at(0.999),
            max_us: v.last().copied().map(u64::from).unwrap_or(0),
            samples: v.len() as u64,
        }
    }
}

/// What a run did.
#[derive(Clone, Debug, serde::Serialize)]
pub struct LoadReport {
    /// The node.
    pub target: String,
    /// Agents registered.
    pub agents: usize,
    /// Threads used.
    pub threads: usize,
    /// Decisions by verdict.
    pub allow: u64,
    /// Denials.
    pub deny: u64,
    /// Steps parked for approval.
    pub require_approval: u64,
    /// Halts.
    pub halt: u64,
    /// Outcomes reported.
    pub outcomes: u64,
    /// Requests that failed.
    pub errors: u64,
    /// The first failure, if any.
    pub first_error: Option<String>,
    /// Wall time of the driving phase, s.
    pub seconds: f64,
    /// Decisions per second over it.
    pub decisions_per_second: f64,
    /// Latency of the step requests.
    pub latency: Percentiles,
}

/// Why a run could not start.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// Registering an agent failed.
    #[error("registering agent {agent} at {base}")]
    Register {
        /// The node.
        base: String,
        /// The agent.
        agent: String,
        /// Why.
        source: Box<ClientError>,
    },
    /// The options make no run.
    #[error("{0}")]
    Options(String),
}

/// One registered agent and where it stands.
struct Agent {
    id: String,
    client: Client,
    model: Model,
    /// Steps planned and not yet asked (a burst plans many).
    plans: VecDeque<Plan>,
    next: Next,
    other: String,
    /// A request of its current turn failed: its next turn waits at least [`ERROR_BACKOFF`].
    failed: bool,
}

enum Next {
    Turn,
    Outcome(StepId, OutcomeRequest),
    Approval(StepId, Plan),
}

/// Agents of one behaviour and pool per team: the first is the leader, the others are
/// registered with it as their `parent` and in their `depends_on`, so a pool's `subtree` or
/// `dependents` cascade halts a leader's team with it (and the halts carry the cause chain).
pub const TEAM_SIZE: usize = 8;

/// Each slot's team leader (its own index for a leader): the successive slots of one
/// behaviour and pool, [`TEAM_SIZE`] at a time.
fn leaders(slots: &[(Behaviour, Option<String>)]) -> Vec<usize> {
    let mut seen: HashMap<(Behaviour, Option<String>), (usize, usize)> = HashMap::new();
    slots
        .iter()
        .enumerate()
        .map(|(i, key)| {
            let (leader, count) = seen.entry(key.clone()).or_insert((i, 0));
            if *count % TEAM_SIZE == 0 {
                *leader = i;
            }
            *count += 1;
            *leader
        })
        .collect()
}

/// Registers the agents (each with its behaviour's pool and team, leaders first),
/// `threads` registrations at a time, into `threads` groups. Approvers are not registered:
/// the operator thread plays them. `live.registered` counts them as they come.
fn register(opts: &LoadOptions, live: &Live) -> Result<Vec<Vec<Agent>>, LoadError> {
    let operator = Client::new(&opts.base, &opts.operator_token);
    let slots = crate::world::assign(&opts.scenario, opts.agents);
    let lead = leaders(&slots);
    let root = Rng::new(opts.seed);
    let ids: Vec<String> = (0..slots.len())
        .map(|i| format!("{}-{i:05}", opts.prefix))
        .collect();
    let one = |i: usize, behaviour: Behaviour, pool: Option<String>| -> Result<Agent, LoadError> {
        let leader = (lead[i] != i).then(|| ids[lead[i]].clone());
        let req = RegisterRequest {
            id: Some(ids[i].clone()),
            pool,
            parent: leader.clone(),
            depends_on: leader.into_iter().collect(),
            ..Default::default()
        };
        let view = operator
            .register(&req)
            .map_err(|source| LoadError::Register {
                base: opts.base.clone(),
                agent: ids[i].clone(),
                source: Box::new(source),
            })?;
        live.registered.fetch_add(1, Ordering::Relaxed);
        let behaviour = match behaviour {
            Behaviour::Colluder => Behaviour::Steady,
            b => b,
        };
        Ok(Agent {
            id: ids[i].clone(),
            client: operator.with_token(&view.token.unwrap_or_default()),
            model: Model::new(behaviour, root.fork(i as u64)),
            plans: VecDeque::new(),
            next: Next::Turn,
            other: ids[(i + 1) % ids.len()].clone(),
            failed: false,
        })
    };
    let agents: Vec<(usize, Behaviour, Option<String>)> = slots
        .into_iter()
        .enumerate()
        .filter(|(_, (b, _))| *b != Behaviour::Approver)
        .map(|(i, (b, p))| (i, b, p))
        .collect();
    let mut groups: Vec<Vec<Agent>> = (0..opts.threads).map(|_| Vec::new()).collect();
    // Leaders first: a parent must exist before its children are registered.
    for is_leader in [true, false] {
        let phase: Vec<_> = agents
            .iter()
            .filter(|(i, _, _)| (lead[*i] == *i) == is_leader)
            .cloned()
            .collect();
        let registered = in_parallel(opts.threads, phase, live, &one)?;
        for (t, mut part) in registered.into_iter().enumerate() {
            groups[t].append(&mut part);
        }
    }
    Ok(groups)
}

/// Registers `slots` on `threads` threads (slot k on thread k mod `threads`); each thread's
/// agents in order. Stops early, without error, once `live.stop` is set.
fn in_parallel(
    threads: usize,
    slots: Vec<(usize, Behaviour, Option<String>)>,
    live: &Live,
    one: &(dyn Fn(usize, Behaviour, Option<String>) -> Result<Agent, LoadError> + Sync),
) -> Result<Vec<Vec<Agent>>, LoadError> {
    std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads)
            .map(|t| {
                let mine: Vec<_> = slots.iter().skip(t).step_by(threads).cloned().collect();
                s.spawn(move || {
                    mine.into_iter()
                        .take_while(|_| !live.stopped())
                        .map(|(i, b, p)| one(i, b, p))
                        .collect::<Result<Vec<Agent>, LoadError>>()
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| {
                w.join().unwrap_or_else(|_| {
                    Err(LoadError::Options("a registration thread panicked".into()))
                })
            })
            .collect()
    })
}

/// Registers the agents, then drives them until `opts.duration` has passed or `live.stop`
/// is set; the operator answers approvals meanwhile. Returns the totals and the latency of
/// the step requests.
pub fn run(opts: &LoadOptions, live: Arc<Live>) -> Result<LoadReport, LoadError> {
    if opts.threads == 0 || opts.threads > THREADS_MAX {
        return Err(LoadError::Options(format!(
            "threads must be 1 to {THREADS_MAX}, not {}",
            opts.threads
        )));
    }
    if opts.agents > AGENTS_MAX {
        return Err(LoadError::Options(format!(
            "agents must be at most {AGENTS_MAX}, not {}",
            opts.agents
        )));
    }
    let groups = register(opts, &live)?;
    let agents: usize = groups.iter().map(Vec::len).sum();
    live.active.store(agents as u64, Ordering::Relaxed);
    let started = Instant::now();
    let deadline = started + opts.duration;
    let samples: Vec<Vec<u32>> = std::thread::scope(|s| {
        let op = {
            let live = Arc::clone(&live);
            let client = Client::new(&opts.base, &opts.operator_token);
            let rng = Rng::new(opts.seed).fork(u64::MAX);
            s.spawn(move || operator(&client, &live, rng, opts, deadline))
        };
        let workers: Vec<_> = groups
            .into_iter()
            .map(|agents| {
                let live = Arc::clone(&live);
                s.spawn(move || drive(agents, &live, opts.pace, deadline))
            })
            .collect();
        let out = workers
            .into_iter()
            .map(|w| w.join().unwrap_or_default())
            .collect();
        live.stop.store(true, Ordering::Relaxed);
        let _ = op.join();
        out
    });
    let seconds = started.elapsed().as_secs_f64();
    let all: Vec<u32> = samples.into_iter().flatten().collect();
    let count = |i: usize| live.decisions[i].load(Ordering::Relaxed);
    Ok(LoadReport {
        target: opts.base.clone(),
        agents,
        threads: opts.threads,
        allow: count(0),
        deny: count(1),
        require_approval: count(2),
        halt: count(3),
        outcomes: live.outcomes.load(Ordering::Relaxed),
        errors: live.errors.load(Ordering::Relaxed),
        first_error: live.first_error(),
        seconds,
        decisions_per_second: live.decided() as f64 / seconds.max(1e-9),
        latency: Percentiles::of(all),
    })
}

/// One thread's agents, each turn at its due time, until the deadline or a stop. Returns
/// the latency samples of its step requests, µs.
fn drive(mut agents: Vec<Agent>, live: &Live, pace: Pace, deadline: Instant) -> Vec<u32> {
    let mut samples = Vec::with_capacity(LATENCY_SAMPLES_MAX.min(1 << 16));
    let mut due: BinaryHeap<Reverse<(Instant, usize)>> = BinaryHeap::new();
    let now = Instant::now();
    for i in 0..agents.len() {
        // Real pace: the first turns spread over a second, not all at once.
        let offset = match pace {
            Pace::Flat => Duration::ZERO,
            Pace::Real { .. } => Duration::from_millis((i as u64 * 997) % 1000),
        };
        due.push(Reverse((now + offset, i)));
    }
    while let Some(Reverse((at, i))) = due.pop() {
        if !wait_until(at, deadline, live) {
            break;
        }
        match turn(&mut agents[i], live, &mut samples, pace) {
            Some(wait) => due.push(Reverse((Instant::now() + wait, i))),
            None => {
                live.active.fetch_sub(1, Ordering::Relaxed);
            }
        }
    }
    samples
}

/// Sleeps until `at`; false if the deadline or a stop comes first.
fn wait_until(at: Instant, deadline: Instant, live: &Live) -> bool {
    loop {
        let now = Instant::now();
        if live.stopped() || now >= deadline || at >= deadline {
            return false;
        }
        if now >= at {
            return true;
        }
        std::thread::sleep((at - now).min(NAP));
    }
}

fn paced(ms: u64, pace: Pace) -> Duration {
    match pace {
        Pace::Flat => Duration::ZERO,
        Pace::Real { speed } => Duration::from_secs_f64(ms as f64 / 1000.0 / speed.max(1e-3)),
    }
}

/// One request of `agent`; the wait until its next one, or `None` when it is done (halted
/// and it gives up, or denied too often). The model's times are paced; the check of a parked
/// step comes every [`POLL`] whatever the pace (a human answers in real time).
fn turn(agent: &mut Agent, live: &Live, samples: &mut Vec<u32>, pace: Pace) -> Option<Duration> {
    agent.failed = false;
    let wait = turn_once(agent, live, samples, pace)?;
    Some(match agent.failed {
        true => wait.max(ERROR_BACKOFF),
        false => wait,
    })
}

/// [`turn`] before the backoff.
fn turn_once(
    agent: &mut Agent,
    live: &Live,
    samples: &mut Vec<u32>,
    pace: Pace,
) -> Option<Duration> {
    if let Next::Approval(..) = agent.next {
        return check_approval(agent, live).map(|w| match w {
            Wait::Poll => POLL,
            Wait::Model(ms) => paced(ms, pace),
        });
    }
    let ms = match std::mem::replace(&mut agent.next, Next::Turn) {
        Next::Turn => ask(agent, live, samples)?,
        Next::Outcome(step, req) => {
            match agent.client.outcome(&agent.id, step, &req) {
                Ok(_) => {
                    live.outcomes.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => {
                    live.error(&e);
                    agent.failed = true;
                }
            }
            agent.model.think_ms()
        }
        Next::Approval(..) => return Some(POLL),
    };
    Some(paced(ms, pace))
}

/// How long until an agent's next turn.
enum Wait {
    /// The model's milliseconds (paced).
    Model(u64),
    /// The approval check's interval.
    Poll,
}

/// Checks a step parked for approval: allowed, its work and outcome follow; denied, the
/// agent goes on; still pending, it checks again.
fn check_approval(agent: &mut Agent, live: &Live) -> Option<Wait> {
    let Next::Approval(step, plan) = std::mem::replace(&mut agent.next, Next::Turn) else {
        return Some(Wait::Poll);
    };
    match agent.client.step_decision(&agent.id, step, None) {
        Ok(d) if d.decision == Verdict::Allow => {
            let work = plan.work_ms;
            agent.next = Next::Outcome(step, outcome_request(&plan));
            Some(Wait::Model(work))
        }
        Ok(d) if d.decision == Verdict::RequireApproval => {
            agent.next = Next::Approval(step, plan);
            Some(Wait::Poll)
        }
        Ok(_) => Some(Wait::Model(agent.model.think_ms())),
        Err(e) => {
            live.error(&e);
            agent.failed = true;
            Some(Wait::Model(agent.model.think_ms()))
        }
    }
}

/// Asks for the agent's next planned step.
fn ask(agent: &mut Agent, live: &Live, samples: &mut Vec<u32>) -> Option<u64> {
    if agent.plans.is_empty() {
        let plans = agent.model.plan(&agent.id, &agent.other);
        agent.plans.extend(plans);
    }
    let plan = agent.plans.pop_front()?;
    let step: Value = serde_json::to_value(&plan.step).unwrap_or(Value::Null);
    let sent = Instant::now();
    let answer = agent.client.step(&agent.id, &step);
    if samples.len() < LATENCY_SAMPLES_MAX {
        samples.push(sent.elapsed().as_micros().min(u128::from(u32::MAX)) as u32);
    }
    let d: DecisionView = match answer {
        Ok(d) => d,
        Err(e) => {
            live.error(&e);
            agent.failed = true;
            return Some(agent.model.think_ms());
        }
    };
    live.decisions[verdict_index(d.decision)].fetch_add(1, Ordering::Relaxed);
    agent.model.answered(d.decision == Verdict::Allow);
    let next_ask = |agent: &mut Agent| match agent.plans.is_empty() {
        true => agent.model.think_ms(),
        false => 0,
    };
    match d.decision {
        Verdict::Allow => {
            let work = plan.work_ms;
            agent.next = Next::Outcome(d.step, outcome_request(&plan));
            Some(work)
        }
        Verdict::RequireApproval => {
            agent.next = Next::Approval(d.step, plan);
            Some(0)
        }
        Verdict::Halt if agent.model.behaviour.stops_when_halted() => None,
        Verdict::Deny if agent.model.gave_up() => None,
        Verdict::Halt | Verdict::Deny => Some(next_ask(agent)),
    }
}

/// Σ over pools and dimensions of what is spent beyond the limit (must be 0).
pub fn overspend(pools: &[PoolView]) -> u64 {
    pools
        .iter()
        .flat_map(|p| {
            p.limits.iter().map(|(dim, limit)| {
                p.spent
                    .get(dim)
                    .copied()
                    .unwrap_or(0)
                    .saturating_sub(*limit)
            })
        })
        .sum()
}

/// The outcome a plan reports, as the API's request.
fn outcome_request(plan: &Plan) -> OutcomeRequest {
    let usage = &plan.outcome.usage;
    let cost = (!usage.is_empty()).then(|| RawUsage {
        tokens: usage.reported_tokens(),
        cost_micro_usd: usage.reported_cost_micro_usd(),
        ..Default::default()
    });
    OutcomeRequest {
        status: plan.outcome.status,
        cost,
    }
}

/// The simulated operator: looks for pending approvals every `POLL` (500 ms), answers each after
/// a delay drawn from `opts.answer_delay_ms` (paced), approving `opts.approve_percent` of
/// them. Runs until the deadline or a stop.
pub fn operator(client: &Client, live: &Live, mut rng: Rng, opts: &LoadOptions, deadline: Instant) {
    let mut scheduled: HashMap<String, (Instant, bool)> = HashMap::new();
    while wait_until(Instant::now(), deadline, live) {
        let pending = match client.approvals() {
            Ok(p) => p,
            Err(e) => {
                live.error(&e);
                Vec::new()
            }
        };
        let now = Instant::now();
        let (lo, hi) = opts.answer_delay_ms;
        for a in &pending {
            scheduled.entry(a.id.clone()).or_insert_with(|| {
                let delay = paced(rng.range(lo, hi.max(lo)), opts.pace);
                (now + delay, rng.chance(opts.approve_percent))
            });
        }
        let open: std::collections::HashSet<&str> = pending.iter().map(|a| a.id.as_str()).collect();
        scheduled.retain(|id, _| open.contains(id.as_str()));
        let mut done = Vec::new();
        for (id, (at, approve)) in &scheduled {
            if *at > now || live.stopped() {
                continue;
            }
            done.push(id.clone());
            let req = AnswerRequest {
                decision: if *approve { "approve" } else { "deny" }.into(),
                reason: Some("simulated operator".into()),
                by: Some("warden-sim".into()),
            };
            match client.answer(id, &req) {
                Ok(_) => {
                    live.answered[usize::from(!*approve)].fetch_add(1, Ordering::Relaxed);
                }
                // Answered meanwhile (timed out, cancelled by a halt): not an error.
                Err(e) if e.status() == Some(404) || e.status() == Some(409) => {}
                Err(e) => live.error(&e),
            }
        }
        for id in done {
            scheduled.remove(&id);
        }
        let until = Instant::now() + POLL;
        if !wait_until(until, deadline, live) {
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn teams_are_consecutive_agents_of_one_behaviour_and_pool_led_by_the_first() {
        let r = Some("swarm/research".to_string());
        let mut slots = Vec::new();
        for i in 0..20 {
            slots.push((Behaviour::Steady, r.clone()));
            if i % 2 == 0 {
                slots.push((Behaviour::Adversary, None));
            }
        }
        let lead = leaders(&slots);
        let steady: Vec<usize> = (0..slots.len())
            .filter(|i| slots[*i].0 == Behaviour::Steady)
            .collect();
        // The first TEAM_SIZE steady agents follow the first; the next TEAM_SIZE the ninth.
        assert!(steady[..TEAM_SIZE].iter().all(|i| lead[*i] == steady[0]));
        assert!(steady[TEAM_SIZE..2 * TEAM_SIZE]
            .iter()
            .all(|i| lead[*i] == steady[TEAM_SIZE]));
        // A leader leads itself; nobody follows an agent of another behaviour or pool.
        for (i, l) in lead.iter().enumerate() {
            assert_eq!(slots[i], slots[*l]);
            assert!(*l <= i);
        }
    }
}
