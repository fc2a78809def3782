//! `warden audit verify|query|replay|report`: a node's journal, read from its data directory
//! (the node may be stopped; nothing here writes to the journal).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context};
use warden::actors::policy::PolicySet;
use warden::actors::AgentId;
use warden::supervisor::audit;
use warden::supervisor::journal::seal::{self, PublicKey};

use super::shared::{parse_rfc3339_utc, print_policy_errors, read};

#[derive(clap::Subcommand, Debug)]
pub enum AuditCommand {
    /// Verify the journal's checksums, hash chain and seals.
    ///
    /// Checks every frame's checksum and the hash chain across segments, then every closed
    /// segment's seal (its Ed25519 signature over the segment's range and chain head). Exits 1
    /// naming the first bad entry or every bad seal; a torn tail (an unfinished last entry
    /// after a crash) is reported but is not an error. With --public-key, every closed segment
    /// must carry a seal by one of the given keys (`GET /v1/audit/keys` lists the node's);
    /// without, seals are checked against the key they name (self-attested).
    ///
    /// Example: `warden audit verify warden-data --public-key 3b6a27bc…`
    Verify {
        /// The node's data directory (the journal is in DIR/journal/), or an S3 archive of its
        /// sealed segments, `s3://BUCKET/PREFIX` (every bad object is named; credentials from
        /// the AWS_* environment variables).
        dir: PathBuf,
        /// A trusted Ed25519 public key (64 hex digits; repeatable, e.g. before and after a
        /// key change).
        #[arg(long = "public-key")]
        public_keys: Vec<String>,
        /// With s3://: an S3-compatible server's URL (AWS when absent).
        #[arg(long)]
        endpoint: Option<String>,
        /// With s3://: the bucket's region (default us-east-1).
        #[arg(long)]
        region: Option<String>,
    },
    /// Print journal entries as JSON lines, filtered.
    ///
    /// Each line holds `seq`, `ts_ms`, `kind`, `hash` and `entry`. The chain is verified while
    /// reading.
    ///
    /// Example: `warden audit query warden-data --agent a1 --kind halt --since 2026-11-23T00:00:00Z`
    ///
    /// With --postgres instead of DIR: the same lines from the entries a node exported to
    /// PostgreSQL (docs/export.md), e.g. `warden audit query --postgres env:WARDEN_POSTGRES_URL
    /// --node warden-1 --agent a1`.
    Query {
        /// The node's data directory.
        #[arg(required_unless_present = "postgres", conflicts_with = "postgres")]
        dir: Option<PathBuf>,
        /// Read the rows exported to PostgreSQL: a URL (postgresql://user@host:port/db) or
        /// env:NAME (the variable holding it). No TLS yet: sslmode other than disable is
        /// refused.
        #[arg(long, value_name = "URL")]
        postgres: Option<String>,
        /// With --postgres: only this node's rows (default: every node's, by node then seq).
        #[arg(long, requires = "postgres")]
        node: Option<String>,
        /// Only this agent's entries.
        #[arg(long)]
        agent: Option<String>,
        /// Only entries of this kind (repeatable): agent_registered, decision, settlement,
        /// halt, resume, approval, policy_change, note, snapshot.
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
    /// Re-run every journaled decision and report those that come out differently.
    ///
    /// Rebuilds the journal's state and re-runs every decision. With --policy, judges by that
    /// candidate policy throughout: "what would this policy have decided differently?", before
    /// anyone activates it. Exits 0 when none differ, 1 when some do.
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
    /// Write a compliance summary of the journal.
    ///
    /// Chain check, seals, policy versions with hashes, spend per pool, halts by kind with
    /// reasons, approvals with who and when (for record-keeping reviews such as EU AI Act
    /// Article 12). Exits 1 after writing it when a seal is bad, or, with --public-key, when a
    /// closed segment carries none (as `audit verify`).
    Report {
        /// The node's data directory.
        dir: PathBuf,
        /// A trusted Ed25519 public key (64 hex digits; repeatable); without, seals are
        /// self-attested.
        #[arg(long = "public-key")]
        public_keys: Vec<String>,
        /// md or html.
        #[arg(long, default_value = "md")]
        format: String,
        /// Write to this file instead of standard output.
        #[arg(long, short)]
        out: Option<PathBuf>,
    },
}

/// Runs one `warden audit` command.
pub fn run(command: AuditCommand) -> anyhow::Result<ExitCode> {
    match command {
        AuditCommand::Verify {
            dir,
            public_keys,
            endpoint,
            region,
        } if super::audit_s3::is_s3(&dir) => super::audit_s3::verify(
            &dir.to_string_lossy(),
            endpoint.as_deref(),
            region.as_deref(),
            &trusted_keys(&public_keys)?,
        ),
        AuditCommand::Verify {
            dir, public_keys, ..
        } => verify(&dir, &public_keys),
        AuditCommand::Query {
            dir,
            postgres,
            node,
            agent,
            kinds,
            decision,
            since,
            until,
        } => {
            let filter = query_filter(agent, &kinds, decision, since, until)?;
            match (dir, postgres) {
                (_, Some(url)) => super::audit_pg::query(&url, node.as_deref(), &filter)?,
                (Some(dir), None) => {
                    has_journal(&dir)?;
                    query(&dir, &filter)?;
                }
                (None, None) => bail!("give a data directory or --postgres URL"),
            }
            Ok(ExitCode::SUCCESS)
        }
        AuditCommand::Replay {
            dir,
            policy,
            json,
            agent,
        } => replay(&dir, policy.as_deref(), json, agent),
        AuditCommand::Report {
            dir,
            public_keys,
            format,
            out,
        } => report(&dir, &public_keys, &format, out.as_deref()),
    }
}

/// Fails unless `dir` looks like a node's data directory.
fn has_journal(dir: &Path) -> anyhow::Result<()> {
    if !dir.join("journal").is_dir() {
        bail!(
            "{} has no journal/ directory; give a node's data directory",
            dir.display()
        );
    }
    Ok(())
}

/// A runtime for the audit functions that read the journal asynchronously.
fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

/// `audit verify`: exit 0 on an intact chain with sound seals, 1 on the first corrupt entry
/// or any bad or (with trusted keys) missing seal.
fn verify(dir: &Path, public_keys: &[String]) -> anyhow::Result<ExitCode> {
    use warden::supervisor::journal::{self, JournalError};
    let keys = trusted_keys(public_keys)?;
    has_journal(dir)?;
    let start = std::time::Instant::now();
    let r = match journal::verify(dir) {
        Ok(r) => r,
        Err(e @ JournalError::Corrupt { .. }) => {
            println!("{}: FAILED: {e}", dir.display());
            return Ok(ExitCode::from(1));
        }
        Err(e) => return Err(e.into()),
    };
    let head = r.head.map_or("empty".to_string(), |(seq, hash)| {
        let hex = warden::actors::ids::hex(&hash[..8]);
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
    verify_seals(dir, &keys)
}

/// The `--public-key` values, each checked.
pub(crate) fn trusted_keys(texts: &[String]) -> anyhow::Result<Vec<PublicKey>> {
    texts
        .iter()
        .map(|t| t.parse().map_err(|e| anyhow::anyhow!("--public-key: {e}")))
        .collect()
}

/// The seal half of `audit verify`: every bad seal named; unsealed closed segments fail only
/// when trusted keys were given.
fn verify_seals(dir: &Path, keys: &[PublicKey]) -> anyhow::Result<ExitCode> {
    let report = seal::check_seals(dir, keys)?;
    let signers: Vec<String> = report.signers.iter().map(|k| k.to_string()).collect();
    println!(
        "seals: {} closed segment(s) sealed and verified{}{}",
        report.sealed,
        if signers.is_empty() {
            String::new()
        } else {
            format!(", signed by {}", signers.join(", "))
        },
        if keys.is_empty() && report.sealed > 0 {
            " (self-attested: pass --public-key to check who signed)"
        } else {
            ""
        }
    );
    for (first, why) in &report.bad {
        println!(
            "{}: FAILED: segment {}: {why}",
            dir.display(),
            journal_name(first)
        );
    }
    if !report.unsealed.is_empty() {
        let names: Vec<String> = report.unsealed.iter().map(journal_name).collect();
        let verdict = if keys.is_empty() { "note" } else { "FAILED" };
        println!(
            "{verdict}: {} closed segment(s) carry no seal: {} (a node seals a closed segment within a second; segments written before warden signed its journal have none)",
            names.len(),
            names.join(", ")
        );
    }
    if let Some(open) = report.open {
        println!(
            "note: the open segment {} is sealed when the node closes it (export.seal_interval)",
            journal_name(&open)
        );
    }
    let failed = !report.bad.is_empty() || (!keys.is_empty() && !report.unsealed.is_empty());
    Ok(if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// A segment's file name, as the journal directory lists it.
fn journal_name(first: &u64) -> String {
    format!("{first:020}.seg")
}

/// The `audit query` flags as a filter, each checked with a message naming the flag.
fn query_filter(
    agent: Option<String>,
    kinds: &[String],
    decision: Option<String>,
    since: Option<String>,
    until: Option<String>,
) -> anyhow::Result<audit::Filter> {
    let time = |what: &str, t: Option<String>| -> anyhow::Result<Option<u64>> {
        t.map(|t| {
            t.parse::<u64>().ok().or_else(|| parse_rfc3339_utc(&t)).with_context(|| {
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
        since_ms: time("since", since)?,
        until_ms: time("until", until)?,
        ..Default::default()
    };
    for k in kinds {
        let kind = warden::supervisor::journal::EntryKind::from_name(k)
            .map_err(|why| anyhow::anyhow!("--kind {k:?}: {why}"))?;
        filter.kinds.push(kind);
    }
    if let Some(d) = decision {
        filter.decision = Some(
            serde_json::from_value(serde_json::Value::String(d.clone())).map_err(|_| {
                anyhow::anyhow!("--decision {d:?}: expected allow, deny, require_approval or halt")
            })?,
        );
    }
    Ok(filter)
}

/// `audit query`: matching entries as JSON lines on standard output, their count on standard
/// error. A closed pipe (`| head`) stops the printing, not the count.
fn query(dir: &Path, filter: &audit::Filter) -> anyhow::Result<()> {
    print_lines(|out| Ok(audit::query(dir, filter, out)?.0))
}

/// Runs `read` with a writer of JSON lines to standard output, then prints the count it
/// returns on standard error. A closed pipe (`| head`) stops the printing, not the count.
pub(super) fn print_lines(
    read: impl FnOnce(&mut dyn FnMut(serde_json::Value)) -> anyhow::Result<u64>,
) -> anyhow::Result<()> {
    use std::io::Write;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut broken = false;
    let matched = read(&mut |v| {
        if !broken && writeln!(out, "{v}").is_err() {
            broken = true;
        }
    })?;
    let _ = out.flush();
    drop(out);
    eprintln!("{matched} matching entries");
    Ok(())
}

/// `audit replay`: the differences on standard output, a summary on standard error; exit 1
/// when any decision differs.
fn replay(
    dir: &Path,
    policy: Option<&Path>,
    json: bool,
    agent: Option<String>,
) -> anyhow::Result<ExitCode> {
    has_journal(dir)?;
    let agent = agent
        .as_deref()
        .map(AgentId::new)
        .transpose()
        .context("--agent")?;
    let candidate = policy.map(candidate_policy).transpose()?;
    let start = std::time::Instant::now();
    let mut report = runtime()?.block_on(audit::replay(dir, candidate.as_deref()))?;
    if let Some(a) = &agent {
        report.differences.retain(|d| &d.agent == a);
    }
    let by = policy.map_or("the policies in force at the time".to_string(), |p| {
        p.display().to_string()
    });
    for d in &report.differences {
        if json {
            println!("{}", serde_json::to_value(d)?);
        } else {
            let rule =
                |r: &Option<String>| r.as_deref().map(|r| format!(" [{r}]")).unwrap_or_default();
            println!(
                "entry {} agent {} step {} ({}): journal {}{}, replay {}{}",
                d.seq,
                d.agent,
                d.step_id,
                d.tool,
                d.journaled.name(),
                rule(&d.journaled_rule),
                d.replayed.name(),
                rule(&d.replayed_rule),
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
            format!(
                "; {} later record(s) no longer applied after a difference",
                report.unapplied
            )
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

/// The text of the candidate policy for `audit replay --policy`, checked first.
fn candidate_policy(file: &Path) -> anyhow::Result<String> {
    let text = read(file)?;
    if let Err(errors) = PolicySet::parse(&text) {
        print_policy_errors(&file.display().to_string(), &errors);
        bail!("{} is not a valid policy", file.display());
    }
    Ok(text)
}

/// `audit report`: the summary in Markdown or HTML, to standard output or `out`; exit 1 when
/// its seal check failed.
fn report(
    dir: &Path,
    public_keys: &[String],
    format: &str,
    out: Option<&Path>,
) -> anyhow::Result<ExitCode> {
    use warden::supervisor::audit::ReportFormat;
    let keys = trusted_keys(public_keys)?;
    has_journal(dir)?;
    let format = match format {
        "md" | "markdown" => ReportFormat::Markdown,
        "html" => ReportFormat::Html,
        other => bail!("--format {other:?}: expected md or html"),
    };
    let (text, seals) = runtime()?.block_on(audit::report(dir, format, &keys))?;
    match out {
        Some(path) => {
            std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
            eprintln!("wrote {}", path.display());
        }
        None => print!("{text}"),
    }
    let failed = !seals.bad.is_empty() || (!keys.is_empty() && !seals.unsealed.is_empty());
    if failed {
        eprintln!(
            "{}: seals FAILED ({} bad, {} unsealed closed segment(s)): see the report's seal paragraph, or `warden audit verify`",
            dir.display(),
            seals.bad.len(),
            seals.unsealed.len()
        );
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}
