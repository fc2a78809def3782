//! The `warden` command line.

use clap::Parser;

/// warden: a supervisor for swarms of AI agents.
///
/// The library (spawn agents under a supervisor, ask before every step) is available now; see
/// `cargo run --release --example swarm` for a runnable tour. The node (`warden node`), the
/// policy tools (`warden policy`), the simulator (`warden sim`) and the audit tools
/// (`warden audit`) arrive with their issues; until then this binary only prints its help and
/// version.
#[derive(Parser, Debug)]
#[command(name = "warden", version, about, long_about)]
struct Cli {}

fn main() {
    let _cli = Cli::parse();
    use clap::CommandFactory;
    let _ = Cli::command().print_help();
    println!();
}
