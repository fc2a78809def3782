//! `warden agents list|show|halt|resume`: a running node's agents, as its operator.

use anyhow::Context;
use serde_json::{json, Value};

use warden::adapters::http::wire::ReasonRequest;

use super::remote::{Client, Remote};
use super::shared::print_pretty;

/// The flags of `warden agents` and its subcommand.
#[derive(clap::Args, Debug)]
pub struct AgentsArgs {
    #[command(flatten)]
    remote: Remote,
    #[command(subcommand)]
    command: AgentsCommand,
}

#[derive(clap::Subcommand, Debug)]
enum AgentsCommand {
    /// Every agent, optionally only those in a state or a pool.
    List {
        /// running or halted.
        #[arg(long, value_parser = ["running", "halted"])]
        state: Option<String>,
        /// A pool path (its nested pools included).
        #[arg(long)]
        pool: Option<String>,
    },
    /// One agent in full.
    Show {
        /// The agent id.
        id: String,
    },
    /// Halt an agent (kind external); cascade rules apply.
    Halt {
        /// The agent id.
        id: String,
        /// Why (kept in the halt record).
        #[arg(long, default_value = "halted by an operator")]
        reason: String,
    },
    /// Lift an agent's halt.
    Resume {
        /// The agent id.
        id: String,
        /// Who resumes it (kept in the record).
        #[arg(long, default_value = "operator")]
        by: String,
    },
}

/// Runs one `warden agents` command against the node.
pub fn run(args: AgentsArgs) -> anyhow::Result<()> {
    let AgentsArgs { remote, command } = args;
    check_ids(&command)?;
    let node = Client::new(&remote)?;
    let out = match &command {
        AgentsCommand::List { state, pool } => json!({
            "agents": list_all(&node, state.as_deref(), pool.as_deref())?
        }),
        AgentsCommand::Show { id } => node.get(&format!("/v1/agents/{id}"))?,
        AgentsCommand::Halt { id, reason } => node.post(
            &format!("/v1/agents/{id}/halt"),
            &ReasonRequest {
                reason: Some(reason.clone()),
                by: None,
            },
        )?,
        AgentsCommand::Resume { id, by } => node.post(
            &format!("/v1/agents/{id}/resume"),
            &ReasonRequest {
                reason: None,
                by: Some(by.clone()),
            },
        )?,
    };
    if remote.json {
        return print_pretty(&out);
    }
    match &command {
        AgentsCommand::List { .. } => {
            print_table(out["agents"].as_array().map(Vec::as_slice).unwrap_or(&[]))
        }
        AgentsCommand::Show { .. } => print_pretty(&out)?,
        AgentsCommand::Halt { id, .. } => print_halted(id, &out),
        AgentsCommand::Resume { id, .. } => println!(
            "resumed {id} (its {} halt is lifted)",
            out["lifted"]["kind"].as_str().unwrap_or("?")
        ),
    }
    Ok(())
}

/// Ids and pool paths travel in URLs: check them here, with a clear message, rather than send
/// something the URL would change.
fn check_ids(command: &AgentsCommand) -> anyhow::Result<()> {
    let checked = |id: &str| -> anyhow::Result<()> {
        warden::AgentId::new(id).map_err(|e| anyhow::anyhow!("{e}"))?;
        Ok(())
    };
    match command {
        AgentsCommand::Show { id }
        | AgentsCommand::Halt { id, .. }
        | AgentsCommand::Resume { id, .. } => checked(id),
        AgentsCommand::List { pool: Some(p), .. } => {
            for seg in p.split('/') {
                checked(seg).with_context(|| format!("--pool {p:?}"))?;
            }
            Ok(())
        }
        AgentsCommand::List { .. } => Ok(()),
    }
}

/// Every agent matching the filters, following the listing's `next` page by page.
fn list_all(node: &Client, state: Option<&str>, pool: Option<&str>) -> anyhow::Result<Vec<Value>> {
    let mut all = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let mut q = vec!["limit=10000".to_string()];
        if let Some(s) = state {
            q.push(format!("state={s}"));
        }
        if let Some(p) = pool {
            q.push(format!("pool={p}"));
        }
        if let Some(a) = &after {
            q.push(format!("after={a}"));
        }
        let page = node.get(&format!("/v1/agents?{}", q.join("&")))?;
        all.extend(page["agents"].as_array().cloned().unwrap_or_default());
        match page["next"].as_str() {
            Some(n) => after = Some(n.to_string()),
            None => return Ok(all),
        }
    }
}

/// One line per agent: id, pool, state, steps decided, tokens spent, halt kind.
fn print_table(agents: &[Value]) {
    println!(
        "{:<24} {:<24} {:<8} {:>8} {:>12} {:<10}",
        "AGENT", "POOL", "STATE", "STEPS", "TOKENS", "HALT"
    );
    for a in agents {
        println!(
            "{:<24} {:<24} {:<8} {:>8} {:>12} {:<10}",
            a["id"].as_str().unwrap_or("?"),
            a["pool"].as_str().unwrap_or("?"),
            a["state"].as_str().unwrap_or("?"),
            // Numbers through `to_string`: a JSON value's `Display` ignores the width.
            a["steps_decided"].to_string(),
            a["spent"]["tokens"].to_string(),
            a["halt"]["kind"].as_str().unwrap_or("-")
        );
    }
}

/// Which agents a halt stopped (cascades included), or that `id` already was halted.
fn print_halted(id: &str, answer: &Value) {
    let halted: Vec<&str> = answer["halted"]
        .as_array()
        .map(|a| a.iter().filter_map(|v| v.as_str()).collect())
        .unwrap_or_default();
    if halted.is_empty() {
        println!("{id} was already halted");
    } else {
        println!("halted: {}", halted.join(", "));
    }
}
