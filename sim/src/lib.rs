//! # warden-sim: the deterministic swarm simulator (`warden sim`)
//!
//! Runs a whole swarm of synthetic agents against the real governance code (the kernel, the
//! ledger, the compiled policy, the swarm's cascades, breakers, sweeps, approvals, the
//! journal and its recovery) on a virtual clock, from a seed, and checks the invariants of
//! DESIGN.md as it goes. The same seed and scenario give the same run bit for bit: a digest
//! (BLAKE3 over every decision) proves it.
//!
//! ```
//! use warden_sim::{run_quiet, Scenario, SimOptions};
//!
//! let mut opts = SimOptions::new(Scenario::load("mixed").unwrap(), 7);
//! opts.agents = Some(20);
//! opts.duration_ms = Some(30_000);
//! let (report, _) = run_quiet(&opts).unwrap();
//! assert!(report.passed(), "{report}");
//! assert_eq!(report.overspend, 0);
//! let (again, _) = run_quiet(&opts).unwrap();
//! assert_eq!(report.digest, again.digest);
//! ```
//!
//! | module | what |
//! |---|---|
//! | [`rng`] | xoshiro256** seeded by SplitMix64: every random draw |
//! | [`queue`] | the event queue: `(time, seq, event)`, ties by insertion order |
//! | [`scenario`] | scenarios in YAML (`sim/scenarios/`), read with line:column errors; built-ins |
//! | [`behaviour`] | the agent behaviour models |
//! | [`net`] | the message-level network model (sans-IO) between the nodes of multi-node runs |
//! | `cluster` | multi-node runs (`--nodes K`): K swarms, their replicas through `net` with partitions, loss, duplication, reordering, clock skew and replica crashes; the cluster-wide bound and convergence |
//! | `node` | the simulated node: the real swarm on a manual clock, its journal on an in-memory disk, crash and recovery |
//! | `world` | the event loop: turns, outcomes, approvals, operators, sweeps, faults, answers after group commit |
//! | [`invariants`] | what is checked, when, and the results |
//! | [`loadgen`] | agents of the same models against a real node over HTTP (`warden sim --target`, `warden demo`) |
//! | [`mod@shrink`] | the shortest failing prefix of a failing run |
//! | [`report`] | the final table and its JSON |

#![warn(missing_docs)]

pub mod behaviour;
mod cluster;
pub mod invariants;
pub mod loadgen;
pub mod net;
mod node;
pub mod queue;
pub mod report;
pub mod rng;
pub mod scenario;
pub mod shrink;
mod world;

pub use behaviour::Behaviour;
pub use invariants::Violation;
pub use report::Report;
pub use scenario::{Scenario, ScenarioError};
pub use shrink::{shrink, Shrunk};

/// What to run.
#[derive(Clone, Debug)]
pub struct SimOptions {
    /// The scenario.
    pub scenario: Scenario,
    /// The seed.
    pub seed: u64,
    /// Agents (and operators), overriding the scenario's count.
    pub agents: Option<usize>,
    /// Simulated time, ms, overriding the scenario's.
    pub duration_ms: Option<u64>,
    /// Nodes: 1 runs the single-node world; more run `cluster` (replicas over `net`).
    pub nodes: usize,
    /// Stop taking new events after this many (then drain as at the end): the prefixes
    /// shrinking runs, and `--max-events`.
    pub max_events: Option<u64>,
    /// Record a line per event (for a shrunk run's trace).
    pub trace: bool,
    /// Test-only: a deliberately broken checker that fails once more than this many steps
    /// are allowed, to prove that violations are caught, shrunk and reported.
    pub break_after_allows: Option<u64>,
    /// Set the gauges a node sets at scrape time (agents, budgets and their spend,
    /// approvals: `warden_supervisor::metrics::refresh_gauges`) at most every 500 ms of wall
    /// time and at the end, for `--metrics`. Reads only: the run is the same with or without.
    pub refresh_gauges: bool,
}

impl SimOptions {
    /// `scenario` with its own agents and duration, one node, seed `seed`.
    pub fn new(scenario: Scenario, seed: u64) -> Self {
        Self {
            scenario,
            seed,
            agents: None,
            duration_ms: None,
            nodes: 1,
            max_events: None,
            trace: false,
            break_after_allows: None,
            refresh_gauges: false,
        }
    }

    /// The `warden sim` command line that reproduces this run (`scenario_arg` as given on
    /// the command line: a built-in's name or a file).
    pub fn command(&self, scenario_arg: &str) -> String {
        let mut c = format!("warden sim --scenario {scenario_arg} --seed {}", self.seed);
        if let Some(a) = self.agents {
            c += &format!(" --agents {a}");
        }
        if self.nodes > 1 {
            c += &format!(" --nodes {}", self.nodes);
        }
        if let Some(d) = self.duration_ms {
            c += &format!(" --duration {}ms", d);
        }
        if let Some(m) = self.max_events {
            c += &format!(" --max-events {m}");
        }
        c
    }
}

/// The most nodes a simulated cluster has.
pub const NODES_MAX: usize = 16;

/// Why a run could not start.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// A node count outside 1..=[`NODES_MAX`].
    #[error("--nodes {0}: a simulated cluster has 1 to {NODES_MAX} nodes")]
    NodesUnsupported(usize),
    /// The node could not be set up (a bad policy, a pool the policy lacks, ...).
    #[error("setting up the simulated node: {0}")]
    Setup(String),
}

/// Where a run stands (for a progress bar).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Progress {
    /// Simulated time so far, ms.
    pub simulated_ms: u64,
    /// Simulated time to reach, ms.
    pub duration_ms: u64,
    /// Events so far.
    pub events: u64,
    /// Steps decided so far.
    pub agent_steps: u64,
}

/// Runs `opts`, calling `progress` now and then. A violation is in the report (the run
/// stops at the first); an error means the run could not start.
pub fn run(opts: &SimOptions, progress: &mut dyn FnMut(&Progress)) -> Result<Report, SimError> {
    run_traced(opts, progress).map(|(r, _)| r)
}

/// [`run`] without progress, also returning the trace (empty unless `opts.trace`).
pub fn run_quiet(opts: &SimOptions) -> Result<(Report, Vec<String>), SimError> {
    run_traced(opts, &mut |_| {})
}

fn run_traced(
    opts: &SimOptions,
    progress: &mut dyn FnMut(&Progress),
) -> Result<(Report, Vec<String>), SimError> {
    if opts.nodes == 0 || opts.nodes > NODES_MAX {
        return Err(SimError::NodesUnsupported(opts.nodes));
    }
    if opts.nodes > 1 {
        return cluster::run(opts, progress);
    }
    let world = world::World::new(opts, &opts.scenario)?;
    Ok(world.run(progress))
}
