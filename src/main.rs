//! The `warden` command line: the clap definitions and the dispatch. Each command group is
//! run by its module in `cli/`.

mod cli;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// mimalloc instead of glibc's malloc: the node allocates on many threads at once (HTTP
/// workers, agent shards, the journal writer), where glibc's arenas contend on their locks
/// (measured in the proxy benchmark; docs/benchmarks.md).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// warden: a supervisor for swarms of AI agents.
///
/// Budgets, allow/deny/approval/halt decisions for every step, shared pools that are never
/// overspent, cascade halts, and a hash-chained audit journal. This binary runs a coordinator
/// node that agents talk to over HTTP (`warden node`); acts on a running node as its operator
/// (`warden agents list|show|halt|resume`, `warden approvals list|approve|deny`); checks
/// policies and shows what they decide for a step (`warden policy check|eval`); reads a
/// node's journal from its data directory (`warden audit verify|query|replay|report`);
/// simulates whole swarms from a seed, checking the invariants (`warden sim`); and makes the
/// certificates nodes sync with (`warden certs init|issue`).
///
/// To see warden at work: `warden demo` (a node, about 1,000 simulated agents and a live
/// view). The library alone: `cargo run --release --example swarm`.
#[derive(Parser, Debug)]
#[command(name = "warden", version, about, long_about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Check and try out policy files.
    #[command(subcommand)]
    Policy(cli::policy::PolicyCommand),
    /// Inspect a node's audit journal.
    #[command(subcommand)]
    Audit(cli::audit::AuditCommand),
    /// Look at and act on a running node's agents.
    Agents(cli::agents::AgentsArgs),
    /// List and answer a running node's pending approvals.
    Approvals(cli::approvals::ApprovalsArgs),
    /// Run a coordinator node: agents register, step and report outcomes over HTTP.
    ///
    /// With no arguments: data in ./warden-data, the bundled example policy, listening on
    /// 127.0.0.1:7700. Flags override the config file. The operator token comes from
    /// WARDEN_OPERATOR_TOKEN, else the config file's operator_token, else
    /// DATA_DIR/operator.token (created, mode 0600, on first start). Stops cleanly on
    /// SIGINT/SIGTERM.
    Node(cli::node::NodeArgs),
    /// Simulate a whole swarm deterministically from a seed and check the invariants.
    ///
    /// Thousands of synthetic agents (steady, runaway, looper, risky, adversary, flaky,
    /// colluder, burst, slow; operators who approve late or never) run against the real
    /// governance code on a virtual clock, with crashes (torn journal tails), disk errors and
    /// clock jumps. Every invariant is checked as the run goes: no overspend, no allow after
    /// a halt, replay reproduces every decision, every allow journaled before it is answered,
    /// no reservation leaked, hostile steps never allowed. The same seed gives the same run.
    Sim(cli::sim::SimArgs),
    /// Make the cluster CA and node certificates for node-to-node sync (mutual TLS).
    #[command(subcommand)]
    Certs(cli::certs::CertsCommand),
    /// A running node's cluster: peers and rights (status), or take rights along before going
    /// offline (prepare-offline).
    Cluster(cli::cluster::ClusterArgs),
    /// See warden work: a node on embedded defaults, about 1,000 simulated agents driving its
    /// real HTTP API, and a live view of decisions, halts, pools and approvals.
    ///
    /// The node gets a new data directory and the simulator's bundled policy; an operator
    /// answers approvals after a delay. Ends on q or Ctrl-C (after --duration, default 30 s,
    /// when not on a terminal) with a summary and where the journal is, for `warden audit`.
    Demo(cli::demo::DemoArgs),
}

/// Exit codes: 0 success, 1 a negative answer (policy errors, a corrupt journal, replay
/// differences), 2 an error (bad input, unreadable files, an unreachable node).
fn main() -> ExitCode {
    let command = Cli::parse().command;
    if matches!(
        command,
        Command::Policy(_)
            | Command::Audit(_)
            | Command::Agents(_)
            | Command::Approvals(_)
            | Command::Cluster(_)
            | Command::Certs(_)
    ) {
        quiet_on_closed_pipe();
    }
    let (prefix, result) = match command {
        Command::Node(args) => (
            "warden node",
            cli::node::run(args).map(|()| ExitCode::SUCCESS),
        ),
        Command::Policy(command) => ("warden", cli::policy::run(command)),
        Command::Audit(command) => ("warden", cli::audit::run(command)),
        Command::Agents(args) => ("warden", cli::agents::run(args).map(|()| ExitCode::SUCCESS)),
        Command::Approvals(args) => ("warden", cli::approvals::run(args)),
        Command::Sim(args) => ("warden sim", cli::sim::run(args)),
        Command::Certs(command) => (
            "warden certs",
            cli::certs::run(command).map(|()| ExitCode::SUCCESS),
        ),
        Command::Cluster(args) => (
            "warden",
            cli::cluster::run(args).map(|()| ExitCode::SUCCESS),
        ),
        Command::Demo(args) => (
            "warden demo",
            cli::demo::run(args).map(|()| ExitCode::SUCCESS),
        ),
    };
    result.unwrap_or_else(|e| {
        eprintln!("{prefix}: {e:#}");
        ExitCode::from(2)
    })
}

/// The commands that print a listing and exit end quietly, as Unix tools do, when what reads
/// their output stops (`warden agents list | head -1`): SIGPIPE back to its default action.
/// Rust ignores it, so `println!` would panic on the closed pipe instead. Their sockets are
/// not affected: the standard library (and tokio over it) writes to them with `MSG_NOSIGNAL`.
/// The node, the simulator and the demo keep ignoring it.
fn quiet_on_closed_pipe() {
    // SAFETY: called first thing on the main thread, before any other thread exists; setting a
    // signal's disposition to its default has no other effect.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}
