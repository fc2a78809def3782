//! `warden cluster status|prepare-offline`: a running node's place in its cluster, as the
//! operator (`GET /v1/cluster`, `POST /v1/cluster/prepare-offline`).

use serde_json::Value;
use warden::adapters::http::wire::PrepareOfflineRequest;

use super::remote::{Client, Remote};

/// The flags of `warden cluster` and its subcommand.
#[derive(clap::Args, Debug)]
pub struct ClusterArgs {
    #[command(flatten)]
    remote: Remote,
    #[command(subcommand)]
    command: ClusterCommand,
}

#[derive(clap::Subcommand, Debug)]
enum ClusterCommand {
    /// Peers (state, lag, bytes) and this node's rights per replicated pool.
    Status,
    /// Take rights along before the link goes: ask peers for rights of every replicated pool
    /// and the heir for a cap over all this node holds, for DURATION. `0s` ends it.
    PrepareOffline {
        /// How long the node may be gone (`8h`, `2d`): its heir waits that long (plus the
        /// clock drift and margin) before reclaiming anything.
        duration: String,
    },
}

/// Runs one `warden cluster` command against the node.
pub fn run(args: ClusterArgs) -> anyhow::Result<()> {
    let ClusterArgs { remote, command } = args;
    let node = Client::new(&remote)?;
    let view = match command {
        ClusterCommand::Status => node.get("/v1/cluster")?,
        ClusterCommand::PrepareOffline { duration } => {
            let body = PrepareOfflineRequest {
                duration,
                pools: None,
            };
            node.post("/v1/cluster/prepare-offline", &body)?
        }
    };
    if remote.json {
        println!("{}", serde_json::to_string_pretty(&view)?);
    } else {
        print!("{}", render(&view));
    }
    Ok(())
}

/// The cluster view as text: the node, one line per peer, one per pool dimension.
fn render(v: &Value) -> String {
    let text = |x: &Value| x.as_str().unwrap_or("-").to_owned();
    let num = |x: &Value| x.as_u64().map_or("-".into(), |n| n.to_string());
    let mut out = format!(
        "node {} (members: {})\n",
        text(&v["node"]),
        v["members"]
            .as_array()
            .map(|m| m.iter().map(text).collect::<Vec<_>>().join(", "))
            .unwrap_or_default()
    );
    out.push_str("PEER         STATE       LAG  HEARD_MS_AGO  BYTES_IN  BYTES_OUT\n");
    for p in v["peers"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "{:<12} {:<10} {:>4} {:>13} {:>9} {:>10}\n",
            text(&p["name"]),
            text(&p["state"]),
            num(&p["lag"]),
            num(&p["heard_ms_ago"]),
            num(&p["bytes_in"]),
            num(&p["bytes_out"]),
        ));
    }
    out.push_str("POOL         DIMENSION      LIMIT       HELD       USED    CEILING        CAP  EPOCH  USED_CLUSTER\n");
    for r in v["rights"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "{:<12} {:<10} {:>10} {:>10} {:>10} {:>10} {:>10} {:>6} {:>13}\n",
            text(&r["pool"]),
            text(&r["dimension"]),
            num(&r["limit"]),
            num(&r["held"]),
            num(&r["used"]),
            num(&r["ceiling"]),
            num(&r["cap"]),
            num(&r["epoch"]),
            num(&r["used_cluster"]),
        ));
    }
    if v["policy_versions"].as_array().is_some_and(|p| p.len() > 1) {
        out.push_str("POLICY CONFLICT: concurrent edits are both present; install one again\n");
    }
    if v["audit_alarms"].as_u64().unwrap_or(0) > 0 {
        out.push_str(&format!(
            "AUDIT ALARMS: {} (see the node's log)\n",
            num(&v["audit_alarms"])
        ));
    }
    out
}
