//! Multi-node runs (`warden sim --nodes K`): K nodes, each a real swarm with its own agents
//! and its own replica (`warden_sync::Replica` over the swarm's ledger, `SwarmLedger`), the
//! replicas talking through [`crate::net`] (loss, duplication, delay, reordering, partitions,
//! clock-rate skew), with replica crashes and restarts from what each persisted. Every pool of
//! the scenario's policy that has limits is shared by the cluster in those dimensions.
//!
//! Checked after every event: Σ over the nodes of what each holds reserved or spent of a
//! shared pool ≤ its limit (`cluster_no_overspend`); at every decision, that no agent its node
//! announced halted is allowed a step (`no_allow_after_halt`) and that no hostile step is
//! allowed at once (`fail_closed`). Each node sweeps its heartbeats and approvals every
//! `sweep_interval` of its own clock. At the end the faults stop, the network heals, the
//! agents stop, and after a quiet period every replica must hold the same state of every
//! shared pool, with Σ held = the limit (`cluster_converges`). Then the drain: the outcomes
//! held back while the ledgers stood still are reported, the sweeps time out the approvals no
//! one answers, and nothing may stay reserved anywhere (`no_leaked_reservations`, every pool
//! and agent account of every node).
//!
//! The scenario's approvers are operators, each of one node (`i % K`), answering that node's
//! approvals as single-node operators do (late, some never, 70% approved); a granted step's
//! agent does its work and reports the outcome. In 5% of its turns an operator also resumes
//! one of its node's halted agents, as single-node operators do; a resumed agent that had
//! given up starts asking again.
//!
//! What this model leaves out, on purpose: a crash here restarts the replica (from the escrow
//! states it persisted), not the swarm — the single-node runs crash and recover swarms and
//! journals; a node's ledger survives as its journal would restore it.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Instant;

use warden_actors::{Decision, Outcome, StepId};
use warden_supervisor::SwarmLedger;
use warden_sync::escrow::Escrow;
use warden_sync::members::Members;
use warden_sync::replica::{ReplicatedPool, SyncConfig, Timing, Tuning};
use warden_sync::{Message, Output, Replica};

use crate::behaviour::{Behaviour, Model};
use crate::invariants::{Checks, BROKEN};
use crate::net::{NetConfig, Network, NodeIx};
use crate::node::{NodeSetup, SimNode, EPOCH_MS};
use crate::queue::EventQueue;
use crate::report::{Activity, PoolReport, Report};
use crate::rng::Rng;
use crate::{Progress, SimError, SimOptions};

/// How often each replica's periodic work runs, virtual ms.
const TICK_MS: u64 = 25;
/// The quiet period after the run in which the cluster must converge, virtual ms.
const SETTLE_MS: u64 = 5_000;
/// The largest clock-rate skew drawn per node, parts per million (within the replicas'
/// assumed maximum drift).
const SKEW_PPM_MAX: u64 = 5_000;
/// Longest drain after the quiet period, virtual ms: past the approvals' timeout (10 min),
/// as in single-node runs.
const DRAIN_MS_MAX: u64 = 15 * 60_000;
/// How often the drain looks whether anything is still reserved, virtual ms.
const DRAIN_LOOK_MS: u64 = 1_000;

enum Ev {
    Turn(u32),
    Outcome(u32, StepId, Outcome),
    Tick(NodeIx),
    Sweep(NodeIx),
    Operator(u32),
    Fault,
    Restart(NodeIx),
}

/// An operator of one node: answers that node's approvals.
struct NodeOperator {
    node: NodeIx,
    operator: crate::world::Operator,
}

/// Where the run stands: agents acting, the ledgers holding still while the replicas
/// converge, or the drain (outcomes reported, approvals timed out, no new steps).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Phase {
    Running,
    Settling,
    Draining,
}

struct AgentSlot {
    id: warden_actors::AgentId,
    node: NodeIx,
    handle: usize,
    model: Model,
}

struct ClusterWorld {
    rt: tokio::runtime::Runtime,
    nodes: Vec<SimNode>,
    replicas: Vec<Option<Replica<SwarmLedger>>>,
    disks: Vec<BTreeMap<(String, String), Escrow>>,
    sides: Vec<u8>,
    net: Network<Message>,
    queue: EventQueue<Ev>,
    agents: Vec<AgentSlot>,
    pools: Vec<ReplicatedPool>,
    rng: Rng,
    now: u64,
    checks: Checks,
    decisions: BTreeMap<&'static str, u64>,
    refusals: BTreeMap<String, u64>,
    faults: BTreeMap<&'static str, u64>,
    activity: Activity,
    digest: blake3::Hasher,
    events: u64,
    phase: Phase,
    /// Outcomes that came due while the ledgers held still, reported in the drain.
    held_back: Vec<(u32, StepId, Outcome)>,
    sweep_interval_ms: u64,
    operators: Vec<NodeOperator>,
    /// Steps parked for approval, with what the agent does once granted: its outcome and
    /// how long the work takes.
    parked: HashMap<(u32, StepId), (Outcome, u64)>,
    sessions: u64,
    /// Agents by id, for the halts each node's bus announces.
    index: HashMap<warden_actors::AgentId, u32>,
    /// Agents halted as their nodes announced (the oracle for `no_allow_after_halt`).
    halted: BTreeSet<u32>,
    /// Halts announced, by kind.
    halts: BTreeMap<&'static str, u64>,
    /// A line per event, when tracing (a shrunk run's trace).
    trace: Option<Vec<String>>,
    /// Allows so far, and the deliberately broken checker's bound (tests).
    allows: u64,
    break_after_allows: Option<u64>,
}

/// Runs `opts` on `opts.nodes` nodes; the trace (a line per event) is empty unless
/// `opts.trace`.
pub fn run(
    opts: &SimOptions,
    progress: &mut dyn FnMut(&Progress),
) -> Result<(Report, Vec<String>), SimError> {
    let started = Instant::now();
    let mut w = ClusterWorld::new(opts)?;
    let duration = opts.duration_ms.unwrap_or(opts.scenario.duration_ms);
    w.run_until(duration, opts.max_events, progress);
    // A violation ends the run where it happened (its trace ends there too), as on one node.
    if w.checks.violation.is_none() {
        w.settle();
    }
    if w.checks.violation.is_none() {
        w.drain();
    }
    let trace = w.trace.take().unwrap_or_default();
    Ok((w.report(opts, duration, started), trace))
}

/// Adds a line for event `event` (at `now_ms`) to `trace`, when tracing; `line` is called
/// only then.
fn trace_line(
    trace: &mut Option<Vec<String>>,
    event: u64,
    now_ms: u64,
    line: impl FnOnce() -> String,
) {
    if let Some(t) = trace {
        t.push(format!("#{event:<8} {now_ms:>10}ms  {}", line()));
    }
}

/// The name of a sync message's kind, for the trace.
fn message_kind(m: &Message) -> &'static str {
    match m {
        Message::Hello { .. } => "hello",
        Message::Delta { .. } => "delta",
        Message::Ack { .. } => "ack",
        Message::Probe { .. } => "probe",
        Message::Proof { .. } => "proof",
    }
}

/// The nodes' names: `n00`, `n01`, ... Members are numbered in their names' sorted order and
/// the simulator addresses node `i` as member `i`, so the names sort as the numbers do
/// (`n10` would sort before `n2`).
fn node_name(i: usize) -> String {
    format!("n{i:02}")
}

fn sync_config(k: usize, me: usize, pools: &[ReplicatedPool], session: u64) -> SyncConfig {
    let names: Vec<String> = (0..k).map(node_name).collect();
    let peers = names.iter().filter(|n| **n != names[me]).cloned();
    let members = Members::new(&names[me], peers).expect("valid member names");
    debug_assert!((0..k).all(|i| members.index(&names[i]) == Some(i as NodeIx)));
    SyncConfig {
        members,
        pools: pools.to_vec(),
        timing: Timing {
            lease_ms: 10_000,
            margin_ms: 1_000,
            probe_ms: 2_000,
            ..Timing::default()
        },
        tuning: Tuning::default(),
        session,
    }
}

/// Every pool of the policy with limits, shared in the dimensions it limits.
fn shared_pools(node: &SimNode) -> Vec<ReplicatedPool> {
    node.swarm
        .pools()
        .iter()
        .filter_map(|p| {
            let limits: Vec<(String, u64)> = warden_actors::LedgerDim::ALL
                .into_iter()
                .filter_map(|d| p.limits.get(d).map(|l| (d.name().to_owned(), l)))
                .collect();
            (!limits.is_empty()).then(|| ReplicatedPool {
                path: p.name.to_string(),
                limits,
            })
        })
        .collect()
}

impl ClusterWorld {
    fn new(opts: &SimOptions) -> Result<Self, SimError> {
        let scenario = &opts.scenario;
        let k = opts.nodes;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| SimError::Setup(e.to_string()))?;
        let root = Rng::new(opts.seed);
        let total = opts.agents.unwrap_or(scenario.agents).max(1);
        let setup = NodeSetup {
            policy_text: &scenario.policy_text,
            journal: false,
            event_capacity: 4 * total + 1024,
        };
        let mut agents = Vec::new();
        let mut specs: Vec<Vec<warden_supervisor::AgentSpec>> = vec![Vec::new(); k];
        let mut index = HashMap::new();
        let mut operators = Vec::new();
        for (i, (b, pool)) in crate::world::assign(scenario, total)
            .into_iter()
            .enumerate()
        {
            let node = (i % k) as NodeIx;
            if b == Behaviour::Approver {
                let operator = crate::world::Operator::new(root.fork(i as u64 + 1));
                operators.push(NodeOperator { node, operator });
                continue;
            }
            let id =
                warden_actors::AgentId::new(format!("{}-{:06}", b.name(), i)).expect("valid id");
            index.insert(id.clone(), agents.len() as u32);
            let mut spec = warden_supervisor::AgentSpec::new(id.clone());
            if let Some(p) = pool {
                spec = spec.pool(p);
            }
            if let Some(t) = scenario.heartbeat_timeout_ms {
                spec = spec.heartbeat_timeout_ms(t);
            }
            agents.push(AgentSlot {
                id,
                node,
                handle: specs[usize::from(node)].len(),
                model: Model::new(b, root.fork(i as u64 + 1)),
            });
            specs[usize::from(node)].push(spec);
        }
        let mut nodes = Vec::with_capacity(k);
        for s in specs {
            nodes.push(SimNode::start(&rt, &setup, s, EPOCH_MS).map_err(SimError::Setup)?);
        }
        let pools = shared_pools(&nodes[0]);
        let mut rng = root.fork(u64::MAX);
        let net_config = NetConfig {
            drop_pct: 5,
            duplicate_pct: 2,
            delay_min_ms: 1,
            delay_max_ms: 40,
            reorder_pct: 10,
            reorder_extra_ms: 60,
        };
        let mut net = Network::new(k, net_config, root.fork(u64::MAX - 1));
        for n in 0..k {
            let skew = rng.range(0, 2 * SKEW_PPM_MAX) as i64 - SKEW_PPM_MAX as i64;
            net.set_skew_ppm(n as NodeIx, skew);
        }
        let replicas = (0..k)
            .map(|i| {
                let cfg = sync_config(k, i, &pools, i as u64 + 1);
                Some(Replica::new(
                    cfg,
                    SwarmLedger::new(nodes[i].swarm.clone()),
                    0,
                ))
            })
            .collect();
        let mut w = ClusterWorld {
            rt,
            nodes,
            replicas,
            disks: vec![BTreeMap::new(); k],
            sides: vec![0; k],
            net,
            queue: EventQueue::default(),
            agents,
            pools,
            rng,
            now: 0,
            checks: Checks::default(),
            decisions: BTreeMap::new(),
            refusals: BTreeMap::new(),
            faults: BTreeMap::new(),
            activity: Activity::default(),
            digest: blake3::Hasher::new(),
            events: 0,
            phase: Phase::Running,
            held_back: Vec::new(),
            sweep_interval_ms: scenario.sweep_interval_ms.max(1),
            operators,
            parked: HashMap::new(),
            sessions: k as u64,
            index,
            halted: BTreeSet::new(),
            halts: BTreeMap::new(),
            trace: opts.trace.then(Vec::new),
            allows: 0,
            break_after_allows: opts.break_after_allows,
        };
        for a in 0..w.agents.len() {
            let t = w.agents[a].model.think_ms();
            w.queue.push(t, Ev::Turn(a as u32));
        }
        for n in 0..k {
            w.queue.push(n as u64 % TICK_MS, Ev::Tick(n as NodeIx));
            w.queue.push(w.sweep_interval_ms, Ev::Sweep(n as NodeIx));
        }
        for o in 0..w.operators.len() as u32 {
            w.queue.push(1_000, Ev::Operator(o));
        }
        w.queue.push(2_000, Ev::Fault);
        w.relink();
        Ok(w)
    }

    fn k(&self) -> usize {
        self.nodes.len()
    }

    fn linked(&self, a: usize, b: usize) -> bool {
        a != b
            && self.replicas[a].is_some()
            && self.replicas[b].is_some()
            && self.sides[a] == self.sides[b]
    }

    /// The transport's view: connect and disconnect as partitions and crashes change.
    fn relink(&mut self) {
        for a in 0..self.k() {
            for b in 0..self.k() {
                let up = self.linked(a, b);
                let Some(r) = self.replicas[a].as_mut() else {
                    continue;
                };
                if a == b || up == r.is_up(b as NodeIx) {
                    continue;
                }
                if up {
                    let out = r.on_connected(b as NodeIx);
                    self.dispatch(a, out);
                } else {
                    r.on_disconnected(b as NodeIx);
                }
            }
        }
    }

    fn dispatch(&mut self, from: usize, out: Vec<Output>) {
        for o in out {
            match o {
                Output::Persist { pool, dim, state } => {
                    self.disks[from].insert((pool, dim), state);
                }
                Output::Send { to, msg } => {
                    if self.linked(from, usize::from(to)) {
                        self.net.send(self.now, from as NodeIx, to, msg);
                    }
                }
                Output::Close { .. } => {}
            }
        }
    }

    fn run_until(
        &mut self,
        end: u64,
        max_events: Option<u64>,
        progress: &mut dyn FnMut(&Progress),
    ) {
        loop {
            let next_net = self.net.next_due_ms().unwrap_or(u64::MAX);
            let next_ev = self.queue.peek_time().unwrap_or(u64::MAX);
            let t = next_net.min(next_ev);
            let cut = max_events.is_some_and(|m| self.events >= m);
            if t > end || cut || self.checks.violation.is_some() {
                break;
            }
            self.now = t;
            // The event handled now is number `events` (1-based), in checks and the trace.
            self.events += 1;
            if next_net <= next_ev {
                self.deliver();
            } else if let Some((_, ev)) = self.queue.pop() {
                self.handle(ev);
            }
            self.check_bound();
            if self.events.is_multiple_of(10_000) {
                progress(&Progress {
                    simulated_ms: self.now,
                    duration_ms: end,
                    events: self.events,
                    agent_steps: self.decisions.values().sum(),
                });
            }
        }
    }

    fn deliver(&mut self) {
        for d in self.net.deliver_due(self.now) {
            let (from, to) = (usize::from(d.from), usize::from(d.to));
            if !self.linked(from, to) {
                continue;
            }
            let kind = message_kind(&d.msg);
            trace_line(&mut self.trace, self.events, self.now, || {
                format!("{} -> {}: {kind}", node_name(from), node_name(to))
            });
            let local = self.net.local_ms(d.to, self.now);
            let r = self.replicas[to].as_mut().expect("linked means running");
            let out = r.on_message(local, d.from, d.msg);
            self.dispatch(to, out);
            self.drain_events(to);
        }
    }

    fn handle(&mut self, ev: Ev) {
        let running = self.phase == Phase::Running;
        let settling = self.phase == Phase::Settling;
        match ev {
            Ev::Turn(a) if running => self.turn(a),
            Ev::Fault if running => self.fault(),
            Ev::Turn(_) | Ev::Fault => {} // no new steps or faults after the end
            // Settling: the ledgers hold still; the outcome is reported in the drain.
            Ev::Outcome(a, step, outcome) if settling => self.held_back.push((a, step, outcome)),
            Ev::Outcome(a, step, outcome) => self.outcome(a, step, outcome),
            Ev::Sweep(n) => self.sweep(n),
            Ev::Operator(o) => self.operate(o),
            Ev::Tick(n) => self.tick(n),
            Ev::Restart(n) => self.restart(n),
        }
    }

    fn set_clock(&self, node: NodeIx) {
        let local = self.net.local_ms(node, self.now);
        self.nodes[usize::from(node)].clock.set_ms(EPOCH_MS + local);
    }

    fn turn(&mut self, a: u32) {
        let n = self.agents.len();
        // Only the adversary names another agent (its neighbour, to impersonate it).
        let other = (self.agents[a as usize].model.behaviour == Behaviour::Adversary)
            .then(|| self.agents[(a as usize + 1) % n].id.clone());
        let slot = &mut self.agents[a as usize];
        let (node, handle) = (slot.node, slot.handle);
        let other = other.as_ref().map_or("", |o| o.as_str());
        let plans = slot.model.plan(slot.id.as_str(), other);
        self.set_clock(node);
        for plan in plans {
            self.read_bus(usize::from(node));
            let h = &self.nodes[usize::from(node)].handles[handle];
            let d = h.step_inline(&plan.step);
            self.record(a, &d);
            trace_line(&mut self.trace, self.events, self.now, || {
                let rule = d
                    .rule
                    .as_deref()
                    .map(|r| format!(" ({r})"))
                    .unwrap_or_default();
                format!(
                    "{}@{} {} -> {}{rule}",
                    self.agents[a as usize].id,
                    node_name(usize::from(node)),
                    plan.step.tool(),
                    d.decision.name()
                )
            });
            self.check_decision(a, &plan, &d);
            let allowed = d.is_allow();
            self.agents[a as usize].model.answered(allowed);
            if allowed {
                let at = self.now + plan.work_ms.max(1);
                self.queue.push(at, Ev::Outcome(a, d.step, plan.outcome));
            } else if d.decision == warden_actors::Verdict::RequireApproval {
                self.parked
                    .insert((a, d.step), (plan.outcome, plan.work_ms.max(1)));
            }
        }
        let slot = &mut self.agents[a as usize];
        if !slot.model.gave_up() {
            let t = self.now + slot.model.think_ms();
            self.queue.push(t, Ev::Turn(a));
        }
    }

    /// `no_allow_after_halt` (against the halts the agent's node announced) and
    /// `fail_closed` (a hostile step is never allowed at once), at every decision.
    fn check_decision(&mut self, a: u32, plan: &crate::behaviour::Plan, d: &Decision) {
        let (event, at) = (self.events, self.now);
        let id = &self.agents[a as usize].id;
        self.checks.count("no_allow_after_halt");
        if d.is_allow() && self.halted.contains(&a) {
            let detail = format!("agent {id} was allowed step {} while halted", d.step);
            self.checks.fail("no_allow_after_halt", detail, event, at);
        }
        if let Some(rule) = plan.hostile {
            self.checks.count("fail_closed");
            if d.is_allow() {
                let detail = format!(
                    "agent {id}: hostile step ({rule}) allowed: tool {} args {}",
                    plan.step.tool(),
                    plan.step.args()
                );
                self.checks.fail("fail_closed", detail, event, at);
            }
        }
        if let Some(n) = self.break_after_allows {
            self.checks.count(BROKEN);
            self.allows += u64::from(d.is_allow());
            if self.allows > n {
                let detail = format!("more than {n} allows (a deliberately broken checker)");
                self.checks.fail(BROKEN, detail, event, at);
            }
        }
    }

    fn record(&mut self, a: u32, d: &Decision) {
        *self.decisions.entry(d.decision.name()).or_default() += 1;
        if !d.is_allow() {
            let rule = d.rule.as_deref().unwrap_or("-").to_owned();
            *self.refusals.entry(rule).or_default() += 1;
        }
        self.digest.update(&a.to_le_bytes());
        self.digest.update(d.decision.name().as_bytes());
        self.digest
            .update(d.rule.as_deref().unwrap_or("").as_bytes());
        self.digest.update(&self.now.to_le_bytes());
    }

    fn outcome(&mut self, a: u32, step: StepId, outcome: Outcome) {
        let slot = &self.agents[a as usize];
        let (node, handle) = (slot.node, slot.handle);
        self.set_clock(node);
        let h = &self.nodes[usize::from(node)].handles[handle];
        let settled = h.outcome_inline(step, &outcome).is_ok();
        match settled {
            true => self.activity.outcomes += 1,
            false => self.activity.outcomes_refused += 1,
        }
        trace_line(&mut self.trace, self.events, self.now, || {
            let status = match outcome.status {
                warden_actors::OutcomeStatus::Success => "success",
                warden_actors::OutcomeStatus::Failure => "failure",
            };
            let refused = if settled { "" } else { " (refused)" };
            format!(
                "{}@{} step {step}: {status}{refused}",
                self.agents[a as usize].id,
                node_name(usize::from(node))
            )
        });
    }

    /// Node `n` sweeps on its own clock: agents silent past their heartbeat timeout are
    /// halted as lost, approvals past their timeout are denied (their reservations released).
    /// While the ledgers hold still the sweep waits; in the drain, agents are silent because
    /// the run stopped them, so only approvals are swept.
    fn sweep(&mut self, n: NodeIx) {
        self.queue
            .push(self.now + self.sweep_interval_ms, Ev::Sweep(n));
        if self.phase == Phase::Settling {
            return;
        }
        self.set_clock(n);
        let swarm = &self.nodes[usize::from(n)].swarm;
        if self.phase == Phase::Running {
            swarm.sweep_heartbeats();
        }
        let timed_out = swarm.sweep_approvals().len() as u64;
        self.activity.approvals_timed_out += timed_out;
        self.read_bus(usize::from(n));
    }

    /// Operator `o` answers what is waiting on its node (at most
    /// [`crate::world::APPROVALS_PER_TURN_MAX`] a turn); a granted step's agent does its work
    /// and reports the outcome. While the ledgers hold still it only waits.
    fn operate(&mut self, o: u32) {
        let pause = self.operators[o as usize].operator.pause_ms();
        self.queue.push(self.now + pause, Ev::Operator(o));
        if self.phase == Phase::Settling {
            return;
        }
        let node = self.operators[o as usize].node;
        self.set_clock(node);
        let n = usize::from(node);
        let now = self.nodes[n].now_ms();
        let name = format!("operator-{o}");
        for p in self.nodes[n]
            .swarm
            .approvals()
            .iter()
            .take(crate::world::APPROVALS_PER_TURN_MAX)
        {
            let Some(answer) = self.operators[o as usize].operator.answer(p, now, &name) else {
                continue;
            };
            let Ok(d) = self.nodes[n].swarm.answer_approval(&p.id, answer) else {
                continue;
            };
            self.activity.approvals_answered += 1;
            trace_line(&mut self.trace, self.events, self.now, || {
                let (agent, step, verdict) = (&p.agent, p.step_id, d.decision.name());
                format!("{name} answers {agent}'s step {step}: {verdict}")
            });
            let Some(&a) = self.index.get(&p.agent) else {
                continue;
            };
            let granted = self.parked.remove(&(a, p.step_id));
            self.read_bus(n);
            self.checks.count("no_allow_after_halt");
            if d.is_allow() && self.halted.contains(&a) {
                let detail = format!("agent {} was granted step {} while halted", p.agent, d.step);
                let (event, at) = (self.events, self.now);
                self.checks.fail("no_allow_after_halt", detail, event, at);
            }
            if let (true, Some((outcome, work_ms))) = (d.is_allow(), granted) {
                self.queue
                    .push(self.now + work_ms, Ev::Outcome(a, d.step, outcome));
            }
        }
        if self.phase == Phase::Running && self.operators[o as usize].operator.resumes() {
            self.resume_one(o, n);
        }
    }

    /// Operator `o` resumes one halted agent of its node `n` (the first at or after a random
    /// index, as single-node operators pick). A resumed agent that had given up takes a turn
    /// again 100 ms later.
    fn resume_one(&mut self, o: u32, n: usize) {
        let start = self.operators[o as usize].operator.pick(self.agents.len());
        let agents = &self.agents;
        let mine = |a: &&u32| usize::from(agents[**a as usize].node) == n;
        let pick = self.halted.range(start..).find(mine);
        let Some(&a) = pick.or_else(|| self.halted.iter().find(mine)) else {
            return;
        };
        let id = self.agents[a as usize].id.clone();
        let by = format!("operator-{o}");
        if self.nodes[n].swarm.resume_inline(&id, by).is_err() {
            return;
        }
        self.activity.resumes += 1;
        trace_line(&mut self.trace, self.events, self.now, || {
            format!("operator-{o} resumes {id}@{}", node_name(n))
        });
        self.read_bus(n);
        let model = &mut self.agents[a as usize].model;
        let idle = model.gave_up();
        model.resumed();
        if idle {
            self.queue.push(self.now + 100, Ev::Turn(a));
        }
    }

    fn tick(&mut self, n: NodeIx) {
        self.queue.push(self.now + TICK_MS, Ev::Tick(n));
        let local = self.net.local_ms(n, self.now);
        let Some(r) = self.replicas[usize::from(n)].as_mut() else {
            return;
        };
        let out = r.tick(local);
        self.dispatch(usize::from(n), out);
        self.drain_events(usize::from(n));
    }

    /// Reads node `n`'s bus: halts and resumes as its swarm announced them, and halts by
    /// kind. A reader that fell behind rebuilds the node's halted agents from their state.
    fn read_bus(&mut self, n: usize) {
        let events = &mut self.nodes[n].events;
        let behind =
            crate::world::read_halts(events, &self.index, &mut self.halted, &mut self.halts);
        if behind {
            self.rebuild_halted(n);
        }
    }

    /// Node `n`'s halted agents, from each one's state.
    fn rebuild_halted(&mut self, n: usize) {
        for (a, slot) in self.agents.iter().enumerate() {
            if usize::from(slot.node) != n {
                continue;
            }
            if self.nodes[n].handles[slot.handle].snapshot().halt.is_some() {
                self.halted.insert(a as u32);
            } else {
                self.halted.remove(&(a as u32));
            }
        }
    }

    fn drain_events(&mut self, n: usize) {
        if let Some(r) = self.replicas[n].as_mut() {
            let _ = r.drain_events();
        }
    }

    /// A partition, a heal, or a replica crash, every 1–4 s of simulated time.
    fn fault(&mut self) {
        self.queue
            .push(self.now + self.rng.range(1_000, 4_000), Ev::Fault);
        let k = self.k();
        let n = self.rng.range(0, k as u64 - 1) as usize;
        match self.rng.range(0, 9) {
            0..=3 => {
                self.sides[n] ^= 1;
                *self.faults.entry("partition").or_default() += 1;
                trace_line(&mut self.trace, self.events, self.now, || {
                    format!("fault: {} changes sides", node_name(n))
                });
            }
            4..=6 => {
                self.sides.iter_mut().for_each(|s| *s = 0);
                *self.faults.entry("heal").or_default() += 1;
                trace_line(&mut self.trace, self.events, self.now, || {
                    "fault: every partition heals".to_string()
                });
            }
            _ if self.replicas[n].is_some() => {
                self.replicas[n] = None;
                *self.faults.entry("crash").or_default() += 1;
                trace_line(&mut self.trace, self.events, self.now, || {
                    format!("fault: {}'s replica crashes", node_name(n))
                });
                let back = self.now + self.rng.range(200, 2_000);
                self.queue.push(back, Ev::Restart(n as NodeIx));
            }
            _ => {}
        }
        self.relink();
    }

    /// A crashed replica comes back from what it persisted, with a new session.
    fn restart(&mut self, n: NodeIx) {
        let i = usize::from(n);
        trace_line(&mut self.trace, self.events, self.now, || {
            format!("{}'s replica restarts", node_name(i))
        });
        self.sessions += 1;
        let cfg = sync_config(self.k(), i, &self.pools, self.sessions);
        let local = self.net.local_ms(n, self.now);
        let mut r = Replica::new(cfg, SwarmLedger::new(self.nodes[i].swarm.clone()), local);
        for ((pool, dim), state) in &self.disks[i] {
            r.restore_escrow(pool, dim, state);
        }
        self.replicas[i] = Some(r);
        self.activity.restarts += 1;
        self.relink();
    }

    /// Σ over nodes of what each holds of a shared pool never exceeds its limit, and every
    /// node's own pools keep spent + reserved within their limits.
    fn check_bound(&mut self) {
        self.checks.count("pool_bounds");
        let local = self.nodes.iter().enumerate().find_map(|(i, n)| {
            let pools = n.swarm.pools();
            pools
                .iter()
                .find_map(crate::invariants::over_limit)
                .map(|d| format!("node {i}: {d}"))
        });
        if let Some(detail) = local {
            let (event, at) = (self.events, self.now);
            self.checks.fail("pool_bounds", detail, event, at);
        }
        self.checks.count("cluster_no_overspend");
        if let Some(detail) = self.overspent() {
            let (event, at) = (self.events, self.now);
            self.checks.fail("cluster_no_overspend", detail, event, at);
        }
    }

    fn overspent(&self) -> Option<String> {
        for p in &self.pools {
            for (dim, limit) in &p.limits {
                let used = self.used_everywhere(&p.path, dim);
                if used > *limit {
                    return Some(format!(
                        "pool {} {dim}: Σ used {used} > limit {limit}",
                        p.path
                    ));
                }
            }
        }
        None
    }

    fn used_everywhere(&self, pool: &str, dim: &str) -> u64 {
        let d = warden_supervisor::escrow_dimension(dim).expect("a ledger dimension");
        self.nodes.iter().map(|n| n.swarm.pool_used(pool, &d)).sum()
    }

    /// The end: faults stop, everything heals and restarts, agents stop and outcomes wait
    /// (the ledgers hold still); after a quiet period every replica must agree.
    fn settle(&mut self) {
        self.phase = Phase::Settling;
        self.sides.iter_mut().for_each(|s| *s = 0);
        for n in 0..self.k() {
            if self.replicas[n].is_none() {
                self.restart(n as NodeIx);
            }
        }
        self.relink();
        let end = self.now + SETTLE_MS;
        let mut diverged = self.divergence();
        while diverged.is_some() && self.now < end {
            let next = self.now + 100;
            self.run_until(next, None, &mut |_| {});
            self.now = next;
            diverged = self.divergence();
        }
        self.checks.count("cluster_converges");
        if let Some(detail) = diverged {
            let (event, at) = (self.events, self.now);
            let detail = format!("{detail} after {SETTLE_MS} ms of quiet");
            self.checks.fail("cluster_converges", detail, event, at);
        }
    }

    /// After convergence: the outcomes held back are reported, the sweeps go on until the
    /// approvals no one answers time out, and then nothing may be reserved on any node.
    fn drain(&mut self) {
        self.phase = Phase::Draining;
        for (a, step, outcome) in std::mem::take(&mut self.held_back) {
            self.queue.push(self.now + 1, Ev::Outcome(a, step, outcome));
        }
        let end = self.now + DRAIN_MS_MAX;
        while self.now < end && self.reserved_pool().is_some() {
            let next = self.now + DRAIN_LOOK_MS;
            self.run_until(next, None, &mut |_| {});
            self.now = next;
        }
        self.checks.count("no_leaked_reservations");
        if let Some(detail) = self.reserved_pool().or_else(|| self.reserved_account()) {
            let (event, at) = (self.events, self.now);
            self.checks
                .fail("no_leaked_reservations", detail, event, at);
        }
    }

    /// The first pool of any node with something still reserved.
    fn reserved_pool(&self) -> Option<String> {
        self.nodes.iter().enumerate().find_map(|(i, n)| {
            let pools = n.swarm.pools();
            pools
                .iter()
                .find_map(crate::invariants::still_reserved)
                .map(|d| format!("node {i}: {d}"))
        })
    }

    /// The first agent account with something still reserved.
    fn reserved_account(&self) -> Option<String> {
        self.agents.iter().find_map(|slot| {
            let node = &self.nodes[usize::from(slot.node)];
            let account = node.handles[slot.handle].snapshot().account;
            crate::invariants::still_reserved(&account)
        })
    }

    fn divergence(&self) -> Option<String> {
        let first = self.replicas[0].as_ref().expect("all restarted");
        for (pool, dim, e) in first.escrows() {
            if e.total_held() != u128::from(e.limit()) {
                return Some(format!(
                    "pool {pool} {dim}: Σ held {} ≠ limit",
                    e.total_held()
                ));
            }
            for (n, r) in self.replicas.iter().enumerate().skip(1) {
                let other = r.as_ref().and_then(|r| r.escrow(pool, dim));
                if other != Some(e) {
                    return Some(format!("pool {pool} {dim}: node {n} differs from node 0"));
                }
            }
        }
        None
    }

    fn report(mut self, opts: &SimOptions, duration: u64, started: Instant) -> Report {
        let wall_ms = started.elapsed().as_millis() as u64;
        let agent_steps: u64 = self.decisions.values().sum();
        let pools = self.pool_reports();
        let overspend = self
            .pools
            .iter()
            .flat_map(|p| {
                p.limits
                    .iter()
                    .map(move |(d, l)| (p.path.clone(), d.clone(), *l))
            })
            .map(|(p, d, l)| self.used_everywhere(&p, &d).saturating_sub(l))
            .sum();
        let violation = self.checks.violation.clone();
        for n in std::mem::take(&mut self.nodes) {
            n.shutdown(&self.rt);
        }
        Report {
            seed: opts.seed,
            scenario: opts.scenario.name.clone(),
            agents: self.agents.len(),
            operators: self.operators.len(),
            nodes: opts.nodes,
            // A violation stops the run where it happened: no settling or drain after it.
            simulated_ms: match violation {
                Some(_) => self.now,
                None => duration.max(self.now),
            },
            duration_ms: duration.min(self.now),
            wall_ms,
            events: self.events,
            agent_steps,
            agent_steps_per_sec: agent_steps as f64 / (wall_ms.max(1) as f64 / 1000.0),
            decisions: self.decisions,
            refusals_by_rule: self.refusals,
            halts: self.halts,
            pools,
            overspend,
            invariants: self.checks.results_of(&crate::invariants::CLUSTER_NAMES),
            faults: self.faults,
            activity: self.activity,
            digest: self.digest.finalize().to_hex().to_string(),
            violation,
        }
    }

    /// Each pool's limits and totals summed over the nodes.
    fn pool_reports(&self) -> Vec<PoolReport> {
        let mut out: Vec<PoolReport> = self.nodes[0]
            .swarm
            .pools()
            .iter()
            .map(PoolReport::of)
            .collect();
        for n in &self.nodes[1..] {
            for (r, p) in out.iter_mut().zip(n.swarm.pools()) {
                let other = PoolReport::of(&p);
                for (k, v) in other.spent {
                    *r.spent.entry(k).or_default() += v;
                }
                for (k, v) in other.reserved {
                    *r.reserved.entry(k).or_default() += v;
                }
                for (k, v) in other.overrun {
                    *r.overrun.entry(k).or_default() += v;
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Scenario;

    /// The leak check sees what the agents left reserved when they stopped, and the drain
    /// (held-back outcomes reported, approvals answered by the nodes' operators or timed out,
    /// granted steps' outcomes reported) releases all of it.
    #[test]
    fn the_drain_releases_what_the_stopped_agents_held() {
        let mut opts = SimOptions::new(Scenario::load("approvals").unwrap(), 5);
        opts.nodes = 3;
        opts.agents = Some(150);
        let mut w = ClusterWorld::new(&opts).unwrap();
        w.run_until(30_000, None, &mut |_| {});
        w.settle();
        assert!(
            w.reserved_pool().is_some(),
            "steps open and approvals parked when the agents stopped"
        );
        assert!(!w.held_back.is_empty(), "outcomes came due while settling");
        let parked: usize = w
            .agents
            .iter()
            .map(|s| w.nodes[usize::from(s.node)].handles[s.handle].snapshot())
            .map(|s| s.pending_approvals)
            .sum();
        assert!(parked > 0, "approvals wait with no operator to answer");
        w.drain();
        assert_eq!(w.reserved_pool(), None);
        assert_eq!(w.reserved_account(), None);
        assert!(w.nodes.iter().all(|n| n.swarm.approvals().is_empty()));
        assert!(
            w.activity.approvals_answered > 0 && w.activity.approvals_timed_out > 0,
            "operators answer some approvals, others time out: {:?}",
            w.activity
        );
        let results = w.checks.results_of(&crate::invariants::CLUSTER_NAMES);
        let leak = results
            .iter()
            .find(|r| r.name == "no_leaked_reservations")
            .unwrap();
        assert_eq!((leak.result, leak.checks), ("pass", 1));
    }
}
