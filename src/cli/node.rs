//! `warden node`: a coordinator node in this process, until SIGINT or SIGTERM.
//!
//! The flags, the environment and the config file become a [`NodeConfig`]
//! ([`warden::adapters::config::resolve`], the one place they meet); the binary installs the
//! process-wide metrics recorder; the node's start-up lines (address,
//! policy, data, operator token, what the journal held) go to standard output, which process
//! supervisors and the end-to-end tests read (the first line is always
//! `warden node listening on http://ADDR`).

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::bail;
use warden::adapters::config::{resolve, ConfigError, Flags, NodeConfig, Resolved};
use warden::adapters::http::{start, MetricsRender, RunningNode, StartError};
use warden::supervisor::NodeError;

use super::shared::print_policy_errors;

/// Prints a status line; a closed stdout (a supervisor that stopped reading) is not an error
/// for a long-running node.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

/// Runtime worker threads: the node's work is short decisions and journal writes.
const WORKER_THREADS: usize = 2;

/// The flags of `warden node`.
#[derive(clap::Args, Debug)]
pub struct NodeArgs {
    /// A YAML config file (listen, data_dir, policy, operator_token, fsync, limits,
    /// webhooks, upstreams, prices, sync); flags override it.
    #[arg(long)]
    config: Option<PathBuf>,
    /// The policy YAML file (default: the bundled example policy).
    #[arg(long)]
    policy: Option<PathBuf>,
    /// The data directory (default: ./warden-data).
    #[arg(long)]
    data: Option<PathBuf>,
    /// The address to listen on (default 127.0.0.1:7700; port 0 picks a free port).
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// The QUIC (UDP) address to sync with other nodes on (overrides the config's
    /// sync.listen; needs the config's `sync` section: members, ca, cert, key, pools).
    #[arg(long, value_name = "ADDR")]
    sync_listen: Option<SocketAddr>,
    /// Another node to sync with, `host:port` (repeat for each; added to sync.peers).
    #[arg(long = "peer", value_name = "ADDR")]
    peers: Vec<String>,
}

/// Runs a node until a signal; errors are for start-up (bad config or policy, a journal that
/// fails verification, an address in use).
pub fn run(args: NodeArgs) -> anyhow::Result<()> {
    let flags = Flags {
        config: args.config,
        policy: args.policy,
        data: args.data,
        listen: args.listen,
        sync_listen: args.sync_listen,
        peers: args.peers,
    };
    let Resolved {
        mut config,
        policy_source,
    } = resolve(flags, &|name| std::env::var(name).ok()).map_err(|e| {
        // Each config error on its own line, `FILE:line:column: message`.
        if let ConfigError::Invalid { path, errors } = &e {
            for err in errors {
                eprintln!("{}:{err}", path.display());
            }
            let count = errors.iter().filter(|d| d.is_error()).count();
            return anyhow::anyhow!("{} has {count} error(s)", path.display());
        }
        e.into()
    })?;
    config.metrics = install_recorder();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(WORKER_THREADS)
        .enable_all()
        .build()?;
    rt.block_on(serve(config, policy_source))
}

/// Installs the process-wide Prometheus recorder with its upkeep thread (the binary's job,
/// never a library's; [`warden::prometheus`]); `None`, said on stderr, if that fails.
pub(crate) fn install_recorder() -> Option<MetricsRender> {
    match warden::prometheus::install() {
        Ok(handle) => Some(std::sync::Arc::new(move || handle.render())),
        Err(e) => {
            eprintln!("warden: metrics: {e}");
            None
        }
    }
}

/// Starts the node, prints the start-up lines, serves until SIGINT or SIGTERM, then shuts down
/// cleanly; a second signal during the shutdown exits at once (130 or 143).
async fn serve(config: NodeConfig, policy_source: String) -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    // Signal handlers first: a SIGTERM right after start-up must still stop cleanly.
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let node = match start(config).await {
        Ok(n) => n,
        Err(StartError::Node(NodeError::Policy(errors))) => {
            print_policy_errors(&policy_source, &errors);
            bail!("{policy_source} is not a valid policy");
        }
        Err(e) => return Err(e.into()),
    };
    print_startup(&node, &policy_source);
    tokio::select! {
        _ = int.recv() => {}
        _ = term.recv() => {}
    }
    say!("warden node: shutting down (a second signal stops at once)");
    tokio::select! {
        _ = node.shutdown() => {}
        _ = int.recv() => std::process::exit(130),
        _ = term.recv() => std::process::exit(143),
    }
    Ok(())
}

/// The start-up lines: the address first (tests and supervisors wait for it), then the
/// policy, data directory and operator token, then what the journal held.
fn print_startup(node: &RunningNode, policy_source: &str) {
    say!("warden node listening on http://{}", node.addr);
    let policy_source = if node.node.policy_from_journal {
        "the one last recorded in the journal (pass --policy to replace it)"
    } else {
        policy_source
    };
    say!(
        "policy: {policy_source}; data: {}; operator token: {}",
        node.node.data_dir().display(),
        node.operator_token_source
    );
    say!(
        "audit signing key: ed25519:{} ({}); verify with `warden audit verify DIR --public-key {}`",
        node.audit_key,
        node.audit_key_source,
        node.audit_key
    );
    if let Some(c) = node.cluster() {
        let view = c.view();
        say!(
            "sync: node {} on udp {} with members {}",
            view.node,
            c.local_addr(),
            view.members.join(", ")
        );
    }
    let r = &node.node.recovered;
    let open = &node.node.journal_open;
    say!(
        "journal: {} entries verified in {} segment(s){}; recovered {} agents ({} halted, {} open steps, {} pending approvals)",
        open.verified.entries,
        open.verified.segments,
        if open.truncated_bytes > 0 {
            format!("; cut a torn tail of {} bytes", open.truncated_bytes)
        } else {
            String::new()
        },
        r.agents,
        r.halted,
        r.open_steps,
        r.pending_approvals
    );
}
