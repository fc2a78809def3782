//! `warden node`: a coordinator node in this process, until SIGINT or SIGTERM.
//!
//! The flags and the config file become a [`NodeConfig`]; the node's start-up lines (address,
//! policy, data, operator token, what the journal held) go to standard output, which process
//! supervisors and the end-to-end tests read (the first line is always
//! `warden node listening on http://ADDR`).

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::bail;
use warden::supervisor::node::{self as node, FileConfig, NodeConfig, NodeError, RunningNode};

use super::shared::{print_policy_errors, read};

/// Prints a status line; a closed stdout (a supervisor that stopped reading) is not an error
/// for a long-running node.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

/// The bundled example policy (`examples/policies/design.yaml`).
const DEFAULT_POLICY: &str = include_str!("../../examples/policies/design.yaml");
/// Where the node listens without `--listen` or `listen:`.
const DEFAULT_LISTEN: &str = "127.0.0.1:7700";
/// The data directory without `--data` or `data_dir:`.
const DEFAULT_DATA_DIR: &str = "warden-data";
/// Runtime worker threads: the node's work is short decisions and journal writes.
const WORKER_THREADS: usize = 2;

/// The flags of `warden node`.
#[derive(clap::Args, Debug)]
pub struct NodeArgs {
    /// A YAML config file (listen, data_dir, policy, operator_token, fsync, limits,
    /// webhooks); flags override it.
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
}

/// Where the policy came from, for the start-up line and for diagnostics.
struct PolicyChoice {
    text: String,
    /// A file name, or "the bundled example policy".
    source: String,
    /// Asked for by a flag or the config file (it then replaces the journal's last policy).
    explicit: bool,
}

/// Runs a node until a signal; errors are for start-up (bad config or policy, a journal that
/// fails verification, an address in use).
pub fn run(args: NodeArgs) -> anyhow::Result<()> {
    let file = match &args.config {
        Some(path) => read_config_file(path)?,
        None => FileConfig::default(),
    };
    let policy = choose_policy(args.policy.or(file.policy.clone()))?;
    let data = args
        .data
        .or(file.data_dir.clone())
        .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR));
    let listen = args
        .listen
        .or(file.listen)
        .unwrap_or_else(|| DEFAULT_LISTEN.parse().expect("a valid address"));
    let config = node_config(listen, &data, &policy, file);
    // The process-wide metrics recorder is installed by `node::start` today; the binary is to
    // install it here, before the runtime starts, and hand the handle to the node.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(WORKER_THREADS)
        .enable_all()
        .build()?;
    rt.block_on(serve(config, policy, data))
}

/// The config file's settings, or every error in it (one per line, `FILE:line:column: ...`).
fn read_config_file(path: &std::path::Path) -> anyhow::Result<FileConfig> {
    node::read_config(&read(path)?).map_err(|errors| {
        for e in &errors {
            eprintln!("{}:{e}", path.display());
        }
        anyhow::anyhow!("{} has {} error(s)", path.display(), errors.len())
    })
}

/// The policy file's text, or the bundled example policy when none was asked for.
fn choose_policy(file: Option<PathBuf>) -> anyhow::Result<PolicyChoice> {
    Ok(match file {
        Some(p) => PolicyChoice {
            text: read(&p)?,
            source: p.display().to_string(),
            explicit: true,
        },
        None => PolicyChoice {
            text: DEFAULT_POLICY.to_string(),
            source: "the bundled example policy".to_string(),
            explicit: false,
        },
    })
}

/// The node's settings: flags (already applied to `listen`, `data`, `policy`), then the
/// environment's `WARDEN_OPERATOR_TOKEN`, then the config file, then the defaults.
fn node_config(
    listen: SocketAddr,
    data: &std::path::Path,
    policy: &PolicyChoice,
    file: FileConfig,
) -> NodeConfig {
    NodeConfig {
        listen,
        data_dir: data.to_path_buf(),
        policy_explicit: policy.explicit,
        policy_text: policy.text.clone(),
        operator_token: std::env::var("WARDEN_OPERATOR_TOKEN")
            .ok()
            .filter(|t| !t.is_empty())
            .or(file.operator_token),
        max_body_bytes: file.max_body_bytes.unwrap_or(node::DEFAULT_MAX_BODY_BYTES),
        fsync: file.fsync.unwrap_or_default(),
        webhooks: file.webhooks,
        request_timeout_ms: file
            .request_timeout_ms
            .unwrap_or(node::DEFAULT_REQUEST_TIMEOUT_MS),
        max_connections: file
            .max_connections
            .unwrap_or(node::DEFAULT_MAX_CONNECTIONS),
        journal_bytes: file.journal_bytes.unwrap_or(node::DEFAULT_JOURNAL_BYTES),
        segment_bytes: file.segment_bytes.unwrap_or(node::DEFAULT_SEGMENT_BYTES),
    }
}

/// Starts the node, prints the start-up lines, serves until SIGINT or SIGTERM, then shuts down
/// cleanly; a second signal during the shutdown exits at once (130 or 143).
async fn serve(config: NodeConfig, policy: PolicyChoice, data: PathBuf) -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    // Signal handlers first: a SIGTERM right after start-up must still stop cleanly.
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let node = match node::start(config).await {
        Ok(n) => n,
        Err(NodeError::Policy(errors)) => {
            print_policy_errors(&policy.source, &errors);
            bail!("{} is not a valid policy", policy.source);
        }
        Err(e) => return Err(e.into()),
    };
    print_startup(&node, &policy, &data);
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
fn print_startup(node: &RunningNode, policy: &PolicyChoice, data: &std::path::Path) {
    say!("warden node listening on http://{}", node.addr);
    let policy_source = if node.recovered.policy.is_some() && !policy.explicit {
        "the one last recorded in the journal (pass --policy to replace it)"
    } else {
        &policy.source
    };
    say!(
        "policy: {policy_source}; data: {}; operator token: {}",
        data.display(),
        node.operator_token_source
    );
    let r = &node.recovered;
    let open = &node.journal_open;
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
