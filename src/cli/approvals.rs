//! `warden approvals list|approve|deny`: steps a policy parked for a human, as the operator.

use std::process::ExitCode;

use anyhow::bail;
use serde_json::Value;

use warden::adapters::http::wire::AnswerRequest;

use super::remote::{Client, Remote};
use super::shared::print_pretty;

/// The flags of `warden approvals` and its subcommand.
#[derive(clap::Args, Debug)]
pub struct ApprovalsArgs {
    #[command(flatten)]
    remote: Remote,
    #[command(subcommand)]
    command: ApprovalsCommand,
}

#[derive(clap::Subcommand, Debug)]
enum ApprovalsCommand {
    /// Steps waiting for a human.
    List,
    /// Let a waiting step go ahead. Exits 1 if it does not: the answer came after the
    /// deadline, or the policy in force now denies or halts the step.
    Approve {
        /// The approval id (`<agent>/<step>`).
        id: String,
        /// Who approves.
        #[arg(long, default_value = "operator")]
        by: String,
    },
    /// Refuse a waiting step.
    Deny {
        /// The approval id (`<agent>/<step>`).
        id: String,
        /// Who denies.
        #[arg(long, default_value = "operator")]
        by: String,
        /// Why.
        #[arg(long)]
        reason: Option<String>,
    },
}

/// Runs one `warden approvals` command against the node. Exit 1 when an approval does not
/// end in an allow (it came after the deadline, or the policy in force now denies or halts
/// the step): the line printed says why.
pub fn run(args: ApprovalsArgs) -> anyhow::Result<ExitCode> {
    let ApprovalsArgs { remote, command } = args;
    if let ApprovalsCommand::Approve { id, .. } | ApprovalsCommand::Deny { id, .. } = &command {
        check_approval_id(id)?;
    }
    let node = Client::new(&remote)?;
    let out = match &command {
        ApprovalsCommand::List => node.get("/v1/approvals")?,
        ApprovalsCommand::Approve { id, by } => node.post(
            &format!("/v1/approvals/{id}"),
            &AnswerRequest {
                decision: "approve".into(),
                reason: None,
                by: Some(by.clone()),
            },
        )?,
        ApprovalsCommand::Deny { id, by, reason } => node.post(
            &format!("/v1/approvals/{id}"),
            &AnswerRequest {
                decision: "deny".into(),
                reason: reason.clone(),
                by: Some(by.clone()),
            },
        )?,
    };
    if remote.json {
        print_pretty(&out)?;
    } else if let ApprovalsCommand::List = command {
        print_table(
            out["approvals"]
                .as_array()
                .map(Vec::as_slice)
                .unwrap_or(&[]),
        );
    } else {
        println!(
            "{}: {} ({})",
            out["approval"].as_str().unwrap_or("?"),
            out["decision"].as_str().unwrap_or("?"),
            out["reason"].as_str().unwrap_or("")
        );
    }
    let overruled = matches!(command, ApprovalsCommand::Approve { .. })
        && out["decision"].as_str() != Some("allow");
    Ok(if overruled {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// Approval ids travel in URLs: `<agent>/s-<n>`, checked before anything is sent.
fn check_approval_id(id: &str) -> anyhow::Result<()> {
    let ok = id.rsplit_once('/').is_some_and(|(agent, step)| {
        warden::AgentId::new(agent).is_ok() && step.parse::<warden::StepId>().is_ok()
    });
    if !ok {
        bail!("{id:?} is not an approval id; they look like <agent>/s-<n>, e.g. payer/s-3 (see `warden approvals list`)");
    }
    Ok(())
}

/// One line per waiting step: approval id, tool, the rule that asked, its reason.
fn print_table(approvals: &[Value]) {
    println!("{:<28} {:<20} {:<18} REASON", "APPROVAL", "TOOL", "RULE");
    for a in approvals {
        println!(
            "{:<28} {:<20} {:<18} {}",
            a["id"].as_str().unwrap_or("?"),
            a["tool"].as_str().unwrap_or("?"),
            a["rule"].as_str().unwrap_or("?"),
            a["reason"].as_str().unwrap_or("")
        );
    }
}
