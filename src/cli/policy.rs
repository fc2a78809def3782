//! `warden policy check|eval`: a policy file judged without a node.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{bail, Context};
use serde::Deserialize;
use warden::actors::decision::RemainingView;
use warden::actors::policy::{MatchedRule, PolicySet, Severity};
use warden::actors::{
    Account, AgentId, Amounts, LedgerDim, PolicyContext, PolicyOutcome, Step, StepPolicy,
};

use super::shared::{parse_rfc3339_utc, print_policy_errors, read};

#[derive(clap::Subcommand, Debug)]
pub enum PolicyCommand {
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
        /// Agent state JSON: {"agent", "pool", "failures", "steps", "now" (RFC 3339, UTC) or
        /// "now_ms", "spent": {"steps", "tokens", "cost_usd", "risk"}}; all optional.
        #[arg(long)]
        state: Option<String>,
    },
}

/// Runs one `warden policy` command.
pub fn run(command: PolicyCommand) -> anyhow::Result<ExitCode> {
    match command {
        PolicyCommand::Check { file, json } => check(&file, json),
        PolicyCommand::Eval { file, step, state } => {
            eval(&file, &step, state.as_deref())?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `policy check`: every diagnostic, then a summary line; exit 1 on errors.
fn check(file: &Path, json: bool) -> anyhow::Result<ExitCode> {
    let text = read(file)?;
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
        let plural = |n: usize, w: &str| format!("{n} {w}{}", if n == 1 { "" } else { "s" });
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

/// What `policy eval` prints, in this field order.
#[derive(serde::Serialize)]
struct EvalOutput {
    decision: &'static str,
    rule: Option<String>,
    kind: Option<&'static str>,
    reason: String,
    risk_micro: u64,
    /// What the step would reserve if admitted: what it declares, raised to its tool's (or
    /// action class's) `min_cost`, and in tokens and money it does not declare, with no
    /// `min_cost` configured, the built-in floor where a budget limits them.
    reserve: Amounts,
    remaining: RemainingView,
    matched: Vec<MatchedRule>,
}

/// The agent state `--state` describes; every field optional.
#[derive(Deserialize, Default, Debug)]
#[serde(deny_unknown_fields)]
struct EvalState {
    agent: Option<String>,
    /// The agent's pool (`team` is read as the same, for older scripts).
    #[serde(alias = "team")]
    pool: Option<String>,
    #[serde(default)]
    failures: u32,
    #[serde(default)]
    steps: u64,
    now: Option<String>,
    now_ms: Option<u64>,
    #[serde(default)]
    spent: SpentState,
}

/// What the agent has already spent, in the units users write (USD, risk as a fraction).
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

/// `policy eval`: the decision for one step as indented JSON.
fn eval(file: &Path, step: &str, state: Option<&str>) -> anyhow::Result<()> {
    let policy = parse_policy(file)?;
    let step: Step = serde_json::from_str(step).context("--step is not valid step JSON")?;
    let state: EvalState = match state {
        Some(s) => serde_json::from_str(s).context("--state is not valid state JSON")?,
        None => EvalState::default(),
    };
    let now_ms = state.now_ms()?;
    let root_name = policy
        .doc()
        .pools
        .first()
        .map_or("swarm".to_string(), |p| p.path.clone());
    let team = state.pool.clone().unwrap_or(root_name);
    let agent = AgentId::new(state.agent.as_deref().unwrap_or("agent"))
        .context("--state agent is not a valid agent id")?;
    let account = agent_account(&policy, &team, &agent, &state.spent)?;
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
    let (decision, rule, kind, reason) = outcome_fields(&e.outcome);
    let risk_micro = e.risk_floor_micro.max(step.signals().risk_micro());
    let mut reserve = step.reservation();
    reserve.set(LedgerDim::RiskMicro, risk_micro);
    let min_cost = StepPolicy::min_cost(&policy, &step);
    min_cost.raise(&mut reserve);
    let remaining = account.remaining_on_path();
    min_cost
        .billing(&step)
        .apply_floor(&mut reserve, |dim| remaining.get(dim).is_some());
    let out = EvalOutput {
        decision,
        rule,
        kind,
        reason,
        risk_micro,
        reserve,
        remaining: RemainingView(remaining),
        matched: e.matched,
    };
    super::shared::print_pretty(&out)
}

/// The policy in `file`, or its diagnostics on standard error and an error.
fn parse_policy(file: &Path) -> anyhow::Result<PolicySet> {
    let text = read(file)?;
    match PolicySet::parse(&text) {
        Ok(p) => Ok(p),
        Err(e) => {
            print_policy_errors(&file.display().to_string(), &e);
            bail!(
                "{} is not a valid policy; run `warden policy check` on it",
                file.display()
            );
        }
    }
}

impl EvalState {
    /// The time of the decision: `now` or `now_ms`, else the clock.
    fn now_ms(&self) -> anyhow::Result<u64> {
        Ok(match (&self.now, self.now_ms) {
            (Some(_), Some(_)) => bail!("--state has both now and now_ms; give one"),
            (Some(t), None) => parse_rfc3339_utc(t).with_context(|| {
                format!("--state now = {t:?} is not a UTC time like 2026-11-23T10:00:00Z")
            })?,
            (None, Some(ms)) => ms,
            (None, None) => std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
        })
    }
}

/// The agent's account under an unlimited pool `team`, with the policy's default budgets and
/// `spent` already settled on it.
fn agent_account(
    policy: &PolicySet,
    team: &str,
    agent: &AgentId,
    spent: &SpentState,
) -> anyhow::Result<Arc<Account>> {
    let team_account = Account::root(team, warden::Limits::UNLIMITED);
    let account = team_account
        .child(agent.as_str(), policy.default_budgets().ledger_limits())
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let spent = Amounts::new(
        spent.steps,
        spent.tokens,
        warden::actors::step::usd_to_micro(spent.cost_usd)
            .map_err(|e| anyhow::anyhow!("--state spent: {e}"))?,
        (spent.risk.max(0.0) * 1e6).round() as u64,
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
    Ok(account)
}

/// `(decision, rule, kind, reason)` as `policy eval` prints them.
fn outcome_fields(
    outcome: &PolicyOutcome,
) -> (&'static str, Option<String>, Option<&'static str>, String) {
    match outcome {
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
    }
}
