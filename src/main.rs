//! The `warden` command line.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use serde::Deserialize;
use warden::actors::decision::RemainingView;
use warden::actors::policy::{PolicySet, Severity};
use warden::actors::{Account, AgentId, Amounts, PolicyContext, PolicyOutcome, Step};

/// warden: a supervisor for swarms of AI agents.
///
/// Budgets, allow/deny/approval/halt decisions for every step, shared pools that are never
/// overspent, cascade halts. This binary runs a coordinator node (`warden node`), talks to one
/// as its operator (`warden agents`, `warden approvals`), checks and evaluates policies
/// (`warden policy`) and verifies audit journals (`warden audit verify`). The simulator and the
/// other audit commands arrive with their issues; the library tour is
/// `cargo run --release --example swarm`.
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
    Policy(PolicyCommand),
    /// Inspect a node's audit journal.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Look at and act on a running node's agents.
    Agents {
        #[command(flatten)]
        remote: Remote,
        #[command(subcommand)]
        command: AgentsCommand,
    },
    /// List and answer a running node's pending approvals.
    Approvals {
        #[command(flatten)]
        remote: Remote,
        #[command(subcommand)]
        command: ApprovalsCommand,
    },
    /// Run a coordinator node: agents register, step and report outcomes over HTTP.
    ///
    /// With no arguments: data in ./warden-data, the bundled example policy, listening on
    /// 127.0.0.1:7700. Flags override the config file; the environment's
    /// WARDEN_OPERATOR_TOKEN overrides the file's operator_token. The operator token comes from WARDEN_OPERATOR_TOKEN or
    /// DATA_DIR/operator.token (created, mode 0600, on first start). Stops cleanly on
    /// SIGINT/SIGTERM.
    Node {
        /// A YAML config file (listen, data_dir, policy, operator_token, fsync, limits);
        /// flags override it.
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
        listen: Option<std::net::SocketAddr>,
    },
}

/// Prints a status line; a closed stdout (a supervisor that stopped reading) is not an error
/// for a long-running node.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

/// Where the node is and how to prove you are its operator.
#[derive(clap::Args, Debug)]
struct Remote {
    /// The node's URL.
    #[arg(
        long,
        env = "WARDEN_NODE",
        default_value = "http://127.0.0.1:7700",
        global = true
    )]
    node: String,
    /// The operator token (see DATA_DIR/operator.token on the node).
    #[arg(
        long,
        env = "WARDEN_OPERATOR_TOKEN",
        hide_env_values = true,
        global = true
    )]
    token: Option<String>,
    /// Print the node's JSON instead of a table.
    #[arg(long, global = true)]
    json: bool,
}

#[derive(Subcommand, Debug)]
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

#[derive(Subcommand, Debug)]
enum ApprovalsCommand {
    /// Steps waiting for a human.
    List,
    /// Let a waiting step go ahead.
    Approve {
        /// The approval id (`<agent>/<step>`).
        id: String,
        /// Who approves.
        #[arg(long, default_value = "operator")]
        by: String,
    },
    /// Refuse a waiting step.
    Deny {
        /// The approval id.
        id: String,
        /// Who denies.
        #[arg(long, default_value = "operator")]
        by: String,
        /// Why.
        #[arg(long)]
        reason: Option<String>,
    },
}

#[derive(Subcommand, Debug)]
enum AuditCommand {
    /// Verify the journal in a data directory: every frame's checksum and the hash chain
    /// across segments. Exits 1 naming the first bad entry; a torn tail (an unfinished last
    /// entry after a crash) is reported but is not an error.
    Verify {
        /// The node's data directory (the journal is in DIR/journal/).
        dir: PathBuf,
    },
    /// Print journal entries as JSON lines (`seq`, `ts_ms`, `kind`, `hash`, `entry`),
    /// filtered. The chain is verified while reading.
    ///
    /// Example: `warden audit query warden-data --agent a1 --kind halt --since 2026-11-23T00:00:00Z`
    Query {
        /// The node's data directory.
        dir: PathBuf,
        /// Only this agent's entries.
        #[arg(long)]
        agent: Option<String>,
        /// Only entries of this kind (repeatable): agent_registered, decision, settlement,
        /// halt, resume, approval, policy_change, note.
        #[arg(long = "kind")]
        kinds: Vec<String>,
        /// Only decisions and approval answers with this verdict: allow, deny,
        /// require_approval, halt.
        #[arg(long)]
        decision: Option<String>,
        /// From this time (RFC 3339 UTC, e.g. 2026-11-23T09:00:00Z, or Unix ms).
        #[arg(long)]
        since: Option<String>,
        /// Until this time (exclusive; same formats).
        #[arg(long)]
        until: Option<String>,
    },
    /// Rebuild the journal's state and re-run every decision; report those that come out
    /// differently. With --policy, judge by that candidate policy throughout: "what would
    /// this policy have decided differently?", before anyone activates it. Exits 0 when none
    /// differ, 1 when some do.
    Replay {
        /// The node's data directory.
        dir: PathBuf,
        /// A candidate policy file to judge every journaled step by.
        #[arg(long)]
        policy: Option<PathBuf>,
        /// Print the differences as JSON lines.
        #[arg(long)]
        json: bool,
        /// Only report this agent's differences (the whole journal is still replayed, since
        /// agents share pools).
        #[arg(long)]
        agent: Option<String>,
    },
    /// Write a compliance summary: chain check, policy versions with hashes, spend per pool,
    /// halts by kind with reasons, approvals with who and when (for record-keeping reviews
    /// such as EU AI Act Article 12).
    Report {
        /// The node's data directory.
        dir: PathBuf,
        /// md or html.
        #[arg(long, default_value = "md")]
        format: String,
        /// Write to this file instead of standard output.
        #[arg(long, short)]
        out: Option<PathBuf>,
    },
}

#[derive(Subcommand, Debug)]
enum PolicyCommand {
    /// Report every error (with line:column and a hint) and warning in a policy file.
    ///
    /// Exits 1 when the policy has errors, 0 otherwise (warnings alone do not fail).
    Check {
        /// The policy YAML file.
        file: PathBuf,
        /// Print diagnostics as JSON lines instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Show what a policy decides for one step, and every rule that matched.
    ///
    /// This judges the policy (rules, tool registry, rate limits) for the given agent state;
    /// budgets and stagnation belong to a running agent and are not simulated, except for
    /// `remaining_below` rules, which see the `spent` amounts of --state against the policy's
    /// default budgets.
    Eval {
        /// The policy YAML file.
        file: PathBuf,
        /// The step, as step JSON: {"tool": ..., "action": ..., "args": {...}, "cost": {...}}.
        #[arg(long)]
        step: String,
        /// Agent state JSON: {"agent", "team", "failures", "steps", "now" (RFC 3339, UTC) or
        /// "now_ms", "spent": {"steps", "tokens", "cost_usd", "risk"}}; all optional.
        #[arg(long)]
        state: Option<String>,
    },
}

/// What `policy eval` prints, in this field order.
#[derive(serde::Serialize)]
struct EvalOutput {
    decision: &'static str,
    rule: Option<String>,
    kind: Option<&'static str>,
    reason: String,
    risk_micro: u64,
    remaining: RemainingView,
    matched: Vec<warden::actors::policy::MatchedRule>,
}

#[derive(Deserialize, Default, Debug)]
#[serde(deny_unknown_fields)]
struct EvalState {
    agent: Option<String>,
    team: Option<String>,
    #[serde(default)]
    failures: u32,
    #[serde(default)]
    steps: u64,
    now: Option<String>,
    now_ms: Option<u64>,
    #[serde(default)]
    spent: SpentState,
}

#[derive(Deserialize, Default, Debug)]
#[serde(deny_unknown_fields)]
struct SpentState {
    #[serde(default)]
    steps: u64,
    #[serde(default)]
    tokens: u64,
    #[serde(default)]
    cost_usd: f64,
    #[serde(default)]
    risk: f64,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Node {
        config,
        policy,
        data,
        listen,
    } = cli.command
    {
        return match run_node(config, policy, data, listen) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("warden node: {e:#}");
                ExitCode::from(2)
            }
        };
    }
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("warden: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn read(file: &PathBuf) -> anyhow::Result<String> {
    std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))
}

/// One request to a node; JSON in, JSON out, with the node's error message on failure.
fn remote_call(
    remote: &Remote,
    method: &str,
    path: &str,
    body: Option<serde_json::Value>,
) -> anyhow::Result<serde_json::Value> {
    let token = remote
        .token
        .as_deref()
        .context("no operator token: pass --token or set WARDEN_OPERATOR_TOKEN (the node keeps it in DATA_DIR/operator.token)")?;
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(std::time::Duration::from_secs(30)))
        .build()
        .into();
    let url = format!("{}{path}", remote.node.trim_end_matches('/'));
    let auth = format!("Bearer {token}");
    let result = match method {
        "GET" => agent.get(&url).header("Authorization", &auth).call(),
        _ => agent
            .post(&url)
            .header("Authorization", &auth)
            .send_json(body.unwrap_or_else(|| serde_json::json!({}))),
    };
    let mut resp = result.with_context(|| format!("cannot reach the node at {}", remote.node))?;
    let status = resp.status().as_u16();
    let text = resp
        .body_mut()
        .with_config()
        .limit(256 << 20)
        .read_to_string()
        .with_context(|| format!("reading the node's answer to {method} {path}"))?;
    let value: serde_json::Value =
        serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text));
    if status >= 400 {
        let msg = value["error"]["message"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| value.to_string());
        bail!("the node answered {status}: {msg}");
    }
    Ok(value)
}

fn print_agents(agents: &[serde_json::Value]) {
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
            a["steps_decided"],
            a["spent"]["tokens"],
            a["halt"]["kind"].as_str().unwrap_or("-")
        );
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Agents { remote, command } => {
            // Ids and pool paths travel in URLs: check them here, with a clear message, rather
            // than send something the URL would change.
            let checked = |id: &str| -> anyhow::Result<()> {
                warden::AgentId::new(id).map_err(|e| anyhow::anyhow!("{e}"))?;
                Ok(())
            };
            match &command {
                AgentsCommand::Show { id }
                | AgentsCommand::Halt { id, .. }
                | AgentsCommand::Resume { id, .. } => checked(id)?,
                AgentsCommand::List { pool: Some(p), .. } => {
                    for seg in p.split('/') {
                        checked(seg).with_context(|| format!("--pool {p:?}"))?;
                    }
                }
                AgentsCommand::List { .. } => {}
            }
            let out = match &command {
                AgentsCommand::List { state, pool } => {
                    // Every page, following `next`.
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
                        let page = remote_call(
                            &remote,
                            "GET",
                            &format!("/v1/agents?{}", q.join("&")),
                            None,
                        )?;
                        all.extend(page["agents"].as_array().cloned().unwrap_or_default());
                        match page["next"].as_str() {
                            Some(n) => after = Some(n.to_string()),
                            None => break,
                        }
                    }
                    serde_json::json!({ "agents": all })
                }
                AgentsCommand::Show { id } => {
                    remote_call(&remote, "GET", &format!("/v1/agents/{id}"), None)?
                }
                AgentsCommand::Halt { id, reason } => remote_call(
                    &remote,
                    "POST",
                    &format!("/v1/agents/{id}/halt"),
                    Some(serde_json::json!({"reason": reason})),
                )?,
                AgentsCommand::Resume { id, by } => remote_call(
                    &remote,
                    "POST",
                    &format!("/v1/agents/{id}/resume"),
                    Some(serde_json::json!({"by": by})),
                )?,
            };
            if remote.json {
                println!("{}", serde_json::to_string_pretty(&out)?);
            } else {
                match &command {
                    AgentsCommand::List { .. } => {
                        print_agents(out["agents"].as_array().map(Vec::as_slice).unwrap_or(&[]))
                    }
                    AgentsCommand::Show { .. } => {
                        println!("{}", serde_json::to_string_pretty(&out)?)
                    }
                    AgentsCommand::Halt { id, .. } => {
                        let halted: Vec<&str> = out["halted"]
                            .as_array()
                            .map(|a| a.iter().filter_map(|v| v.as_str()).collect())
                            .unwrap_or_default();
                        if halted.is_empty() {
                            println!("{id} was already halted");
                        } else {
                            println!("halted: {}", halted.join(", "));
                        }
                    }
                    AgentsCommand::Resume { id, .. } => println!(
                        "resumed {id} (its {} halt is lifted)",
                        out["lifted"]["kind"].as_str().unwrap_or("?")
                    ),
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Approvals { remote, command } => {
            if let ApprovalsCommand::Approve { id, .. } | ApprovalsCommand::Deny { id, .. } =
                &command
            {
                let ok = id.rsplit_once('/').is_some_and(|(agent, step)| {
                    warden::AgentId::new(agent).is_ok() && step.parse::<warden::StepId>().is_ok()
                });
                if !ok {
                    bail!("{id:?} is not an approval id; they look like <agent>/s-<n>, e.g. payer/s-3 (see `warden approvals list`)");
                }
            }
            let out = match &command {
                ApprovalsCommand::List => remote_call(&remote, "GET", "/v1/approvals", None)?,
                ApprovalsCommand::Approve { id, by } => remote_call(
                    &remote,
                    "POST",
                    &format!("/v1/approvals/{id}"),
                    Some(serde_json::json!({"decision": "approve", "by": by})),
                )?,
                ApprovalsCommand::Deny { id, by, reason } => remote_call(
                    &remote,
                    "POST",
                    &format!("/v1/approvals/{id}"),
                    Some(serde_json::json!({"decision": "deny", "by": by, "reason": reason})),
                )?,
            };
            if remote.json {
                println!("{}", serde_json::to_string_pretty(&out)?);
            } else if let ApprovalsCommand::List = command {
                println!("{:<28} {:<20} {:<18} REASON", "APPROVAL", "TOOL", "RULE");
                for a in out["approvals"]
                    .as_array()
                    .map(Vec::as_slice)
                    .unwrap_or(&[])
                {
                    println!(
                        "{:<28} {:<20} {:<18} {}",
                        a["id"].as_str().unwrap_or("?"),
                        a["tool"].as_str().unwrap_or("?"),
                        a["rule"].as_str().unwrap_or("?"),
                        a["reason"].as_str().unwrap_or("")
                    );
                }
            } else {
                println!(
                    "{}: {} ({})",
                    out["approval"].as_str().unwrap_or("?"),
                    out["decision"].as_str().unwrap_or("?"),
                    out["reason"].as_str().unwrap_or("")
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Node { .. } => unreachable!("handled in main"),
        Command::Audit(AuditCommand::Verify { dir }) => {
            use warden::supervisor::journal::{self, JournalError};
            has_journal(&dir)?;
            let start = std::time::Instant::now();
            match journal::verify(&dir) {
                Ok(r) => {
                    let head = r.head.map_or("empty".to_string(), |(seq, hash)| {
                        let hex: String = hash[..8].iter().map(|b| format!("{b:02x}")).collect();
                        format!("head entry {seq}, hash {hex}…")
                    });
                    println!(
                        "{}: ok, {} entries in {} segments verified in {:.2} s ({head})",
                        dir.display(),
                        r.entries,
                        r.segments,
                        start.elapsed().as_secs_f64()
                    );
                    if r.first_seq > 1 {
                        println!(
                            "note: the journal starts at entry {} (older segments were removed by retention after a snapshot; the chain is anchored at that segment's header)",
                            r.first_seq
                        );
                    }
                    if r.torn_tail_bytes > 0 {
                        println!(
                            "note: {} bytes of an unfinished entry after the last one (a crash during a write); the node cuts them at its next start",
                            r.torn_tail_bytes
                        );
                    }
                    Ok(ExitCode::SUCCESS)
                }
                Err(e @ JournalError::Corrupt { .. }) => {
                    println!("{}: FAILED: {e}", dir.display());
                    Ok(ExitCode::from(1))
                }
                Err(e) => Err(e.into()),
            }
        }
        Command::Audit(AuditCommand::Query {
            dir,
            agent,
            kinds,
            decision,
            since,
            until,
        }) => {
            use warden::supervisor::audit;
            has_journal(&dir)?;
            let time = |what: &str, t: &Option<String>| -> anyhow::Result<Option<u64>> {
                t.as_deref()
                    .map(|t| {
                        t.parse::<u64>().ok().or_else(|| parse_rfc3339_utc(t)).with_context(|| {
                            format!("--{what} {t:?} is not a time; write e.g. 2026-11-23T09:00:00Z or Unix milliseconds")
                        })
                    })
                    .transpose()
            };
            let mut filter = audit::Filter {
                agent: agent
                    .as_deref()
                    .map(AgentId::new)
                    .transpose()
                    .context("--agent")?,
                since_ms: time("since", &since)?,
                until_ms: time("until", &until)?,
                ..Default::default()
            };
            for k in &kinds {
                let kind: warden::supervisor::journal::EntryKind =
                    serde_json::from_value(serde_json::Value::String(k.clone())).map_err(|_| {
                        anyhow::anyhow!("--kind {k:?}: expected agent_registered, decision, settlement, halt, resume, approval, policy_change or note")
                    })?;
                filter.kinds.push(kind);
            }
            if let Some(d) = &decision {
                filter.decision = Some(
                    serde_json::from_value(serde_json::Value::String(d.clone())).map_err(|_| {
                        anyhow::anyhow!(
                            "--decision {d:?}: expected allow, deny, require_approval or halt"
                        )
                    })?,
                );
            }
            use std::io::Write;
            let stdout = std::io::stdout();
            let mut out = std::io::BufWriter::new(stdout.lock());
            let mut broken = false;
            let (matched, _) = audit::query(&dir, &filter, |v| {
                if !broken && writeln!(out, "{v}").is_err() {
                    broken = true; // a closed pipe (| head): stop printing
                }
            })?;
            let _ = out.flush();
            drop(out);
            eprintln!("{matched} matching entries");
            Ok(ExitCode::SUCCESS)
        }
        Command::Audit(AuditCommand::Replay {
            dir,
            policy,
            json,
            agent,
        }) => {
            has_journal(&dir)?;
            let agent = agent
                .as_deref()
                .map(AgentId::new)
                .transpose()
                .context("--agent")?;
            let candidate = match &policy {
                Some(p) => {
                    let text = read(p)?;
                    if let Err(errors) = PolicySet::parse(&text) {
                        for d in &errors.diagnostics {
                            eprintln!("{}:{d}", p.display());
                        }
                        bail!("{} is not a valid policy", p.display());
                    }
                    Some(text)
                }
                None => None,
            };
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let start = std::time::Instant::now();
            let mut report = rt.block_on(warden::supervisor::audit::replay(
                &dir,
                candidate.as_deref(),
            ))?;
            if let Some(a) = &agent {
                report.differences.retain(|d| &d.agent == a);
            }
            let by = policy
                .as_ref()
                .map_or("the policies in force at the time".to_string(), |p| {
                    p.display().to_string()
                });
            for d in &report.differences {
                if json {
                    println!("{}", serde_json::to_value(d)?);
                } else {
                    println!(
                        "entry {} agent {} step {} ({}): journal {}{}, replay {}{}",
                        d.seq,
                        d.agent,
                        d.step_id,
                        d.tool,
                        d.journaled.name(),
                        d.journaled_rule
                            .as_deref()
                            .map(|r| format!(" [{r}]"))
                            .unwrap_or_default(),
                        d.replayed.name(),
                        d.replayed_rule
                            .as_deref()
                            .map(|r| format!(" [{r}]"))
                            .unwrap_or_default(),
                    );
                }
            }
            eprintln!(
                "replayed {} entries ({} decisions, {} agents) by {by} in {:.2} s: {} decision(s) differ{}",
                report.entries,
                report.decisions,
                report.agents,
                start.elapsed().as_secs_f64(),
                report.differences.len(),
                if report.unapplied > 0 {
                    format!("; {} later record(s) no longer applied after a difference", report.unapplied)
                } else {
                    String::new()
                }
            );
            Ok(if report.differences.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        Command::Audit(AuditCommand::Report { dir, format, out }) => {
            use warden::supervisor::audit::{self, ReportFormat};
            has_journal(&dir)?;
            let format = match format.as_str() {
                "md" | "markdown" => ReportFormat::Markdown,
                "html" => ReportFormat::Html,
                other => bail!("--format {other:?}: expected md or html"),
            };
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let text = rt.block_on(audit::report(&dir, format))?;
            match out {
                Some(path) => {
                    std::fs::write(&path, text)
                        .with_context(|| format!("writing {}", path.display()))?;
                    eprintln!("wrote {}", path.display());
                }
                None => print!("{text}"),
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Policy(PolicyCommand::Check { file, json }) => {
            let text = read(&file)?;
            let diags = PolicySet::check(&text);
            let errors = diags
                .iter()
                .filter(|d| d.severity == Severity::Error)
                .count();
            let warnings = diags.len() - errors;
            for d in &diags {
                if json {
                    let mut v = serde_json::to_value(d)?;
                    v["file"] = serde_json::Value::String(file.display().to_string());
                    println!("{v}");
                } else {
                    println!("{}:{d}", file.display());
                }
            }
            if !json {
                let plural =
                    |n: usize, w: &str| format!("{n} {w}{}", if n == 1 { "" } else { "s" });
                if errors == 0 {
                    let rules = PolicySet::parse(&text).map(|p| p.rule_count()).unwrap_or(0);
                    println!(
                        "{}: ok, {} ({})",
                        file.display(),
                        plural(rules, "rule"),
                        plural(warnings, "warning")
                    );
                } else {
                    println!(
                        "{}: {}, {}",
                        file.display(),
                        plural(errors, "error"),
                        plural(warnings, "warning")
                    );
                }
            }
            Ok(if errors > 0 {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            })
        }
        Command::Policy(PolicyCommand::Eval { file, step, state }) => {
            let text = read(&file)?;
            let policy = match PolicySet::parse(&text) {
                Ok(p) => p,
                Err(e) => {
                    for d in &e.diagnostics {
                        eprintln!("{}:{d}", file.display());
                    }
                    bail!(
                        "{} is not a valid policy; run `warden policy check` on it",
                        file.display()
                    );
                }
            };
            let step: Step =
                serde_json::from_str(&step).context("--step is not valid step JSON")?;
            let state: EvalState = match state {
                Some(s) => serde_json::from_str(&s).context("--state is not valid state JSON")?,
                None => EvalState::default(),
            };
            let now_ms = match (&state.now, state.now_ms) {
                (Some(_), Some(_)) => bail!("--state has both now and now_ms; give one"),
                (Some(t), None) => parse_rfc3339_utc(t).with_context(|| {
                    format!("--state now = {t:?} is not a UTC time like 2026-11-23T10:00:00Z")
                })?,
                (None, Some(ms)) => ms,
                (None, None) => std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis() as u64),
            };
            let root_name = policy
                .doc()
                .pools
                .first()
                .map_or("swarm".to_string(), |p| p.path.clone());
            let team = state.team.clone().unwrap_or_else(|| root_name.clone());
            let agent = AgentId::new(state.agent.as_deref().unwrap_or("agent"))
                .context("--state agent is not a valid agent id")?;
            let team_account = Account::root(team.as_str(), warden::Limits::UNLIMITED);
            let account = team_account
                .child(agent.as_str(), policy.default_budgets().ledger_limits())
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            let spent = Amounts::new(
                state.spent.steps,
                state.spent.tokens,
                warden::actors::step::usd_to_micro(state.spent.cost_usd)
                    .map_err(|e| anyhow::anyhow!("--state spent: {e}"))?,
                (state.spent.risk.max(0.0) * 1e6).round() as u64,
            );
            if !spent.is_zero() {
                match account.reserve(&spent) {
                    Ok((r, _)) => {
                        r.settle(&spent);
                    }
                    Err(s) => bail!(
                        "--state spent {} {} exceeds the default budget ({} left)",
                        s.requested,
                        s.dimension,
                        s.available
                    ),
                }
            }
            let ctx = PolicyContext {
                agent: &agent,
                step: &step,
                consecutive_failures: state.failures,
                steps_decided: state.steps,
                now_ms,
                team: &team,
                account: &account,
            };
            let e = policy.evaluate(&ctx);
            let (decision, rule, kind, reason) = match &e.outcome {
                PolicyOutcome::Allow => ("allow", None, None, String::new()),
                PolicyOutcome::RequireApproval { rule, reason } => (
                    "require_approval",
                    Some(rule.to_string()),
                    None,
                    reason.clone(),
                ),
                PolicyOutcome::Deny { rule, reason } => {
                    ("deny", Some(rule.to_string()), None, reason.clone())
                }
                PolicyOutcome::Halt { rule, kind, reason } => (
                    "halt",
                    Some(rule.to_string()),
                    Some(kind.name()),
                    reason.clone(),
                ),
            };
            let out = EvalOutput {
                decision,
                rule,
                kind,
                reason,
                risk_micro: e.risk_floor_micro.max(step.signals().risk_micro()),
                remaining: RemainingView(account.remaining_on_path()),
                matched: e.matched,
            };
            println!("{}", serde_json::to_string_pretty(&out)?);
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn run_node(
    config: Option<PathBuf>,
    policy: Option<PathBuf>,
    data: Option<PathBuf>,
    listen: Option<std::net::SocketAddr>,
) -> anyhow::Result<()> {
    use warden::adapters::config::{resolve, Flags, OPERATOR_TOKEN_ENV};
    let flags = Flags {
        config,
        policy,
        data,
        listen,
    };
    let resolved = resolve(flags, std::env::var(OPERATOR_TOKEN_ENV).ok())?;
    let policy_source = resolved.policy_source;
    let mut config = resolved.config;
    let data = config.node.data_dir.clone();
    config.metrics = install_recorder();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async move {
        // Signal handlers first: a SIGTERM right after start-up must still stop cleanly.
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        let mut int = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
        let node = match warden::adapters::http::start(config).await {
            Ok(n) => n,
            Err(warden::adapters::http::StartError::Node(
                warden::supervisor::NodeError::Policy(errors),
            )) => {
                for d in &errors.diagnostics {
                    eprintln!("{policy_source}:{d}");
                }
                bail!("{policy_source} is not a valid policy");
            }
            Err(e) => return Err(e.into()),
        };
        say!("warden node listening on http://{}", node.addr);
        let policy_source = if node.node.policy_from_journal {
            "the one last recorded in the journal (pass --policy to replace it)".to_string()
        } else {
            policy_source
        };
        say!(
            "policy: {policy_source}; data: {}; operator token: {}",
            data.display(),
            node.operator_token_source
        );
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
    })
}

/// Installs the process-wide Prometheus recorder (the binary's job, never a library's), with
/// the shared bucket layout for `*_duration_seconds`; `None` if another is installed.
fn install_recorder() -> Option<warden::adapters::http::MetricsRender> {
    use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
    use warden::supervisor::metrics::{DURATION_BUCKETS, DURATION_SUFFIX};
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix(DURATION_SUFFIX.into()), &DURATION_BUCKETS)
        .ok()?
        .install_recorder()
        .ok()?;
    Some(std::sync::Arc::new(move || handle.render()))
}

fn has_journal(dir: &std::path::Path) -> anyhow::Result<()> {
    if !dir.join("journal").is_dir() {
        bail!(
            "{} has no journal/ directory; give a node's data directory",
            dir.display()
        );
    }
    Ok(())
}

/// `YYYY-MM-DDTHH:MM:SS[.fff]Z` to Unix milliseconds.
fn parse_rfc3339_utc(s: &str) -> Option<u64> {
    let s = s.strip_suffix('Z').or_else(|| s.strip_suffix("+00:00"))?;
    let (date, time) = s.split_once('T')?;
    let mut d = date.split('-');
    let (y, m, day): (i64, u32, u32) = (
        d.next()?.parse().ok()?,
        d.next()?.parse().ok()?,
        d.next()?.parse().ok()?,
    );
    let (hms, frac) = time.split_once('.').unwrap_or((time, "0"));
    let mut t = hms.split(':');
    let (hh, mm, ss): (u64, u64, u64) = (
        t.next()?.parse().ok()?,
        t.next()?.parse().ok()?,
        t.next()?.parse().ok()?,
    );
    if !(1..=12).contains(&m) || !(1..=31).contains(&day) || hh > 23 || mm > 59 || ss > 60 {
        return None;
    }
    let ms: u64 = format!("{frac:0<3}")[..3].parse().ok()?;
    // Days from civil (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (i64::from(m) + 9) % 12;
    let doy = (153 * mp + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    if days < 0 {
        return None;
    }
    Some(days as u64 * 86_400_000 + hh * 3_600_000 + mm * 60_000 + ss * 1_000 + ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_utc_times_parse() {
        assert_eq!(parse_rfc3339_utc("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            parse_rfc3339_utc("2026-11-23T10:00:00Z"),
            Some(1_795_428_000_000)
        );
        assert_eq!(
            parse_rfc3339_utc("2000-02-29T12:30:15.250Z"),
            Some(951_827_415_250)
        );
        assert_eq!(parse_rfc3339_utc("2026-13-01T00:00:00Z"), None);
        assert_eq!(parse_rfc3339_utc("2026-11-23 10:00"), None);
    }
}
