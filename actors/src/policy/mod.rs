//! The policy engine: YAML -> checked [`PolicyDoc`] -> compiled [`PolicySet`] -> pure
//! evaluation per step.
//!
//! Rules are indexed by tool (exact names in a hash map, globs in one `RegexSet`, both in
//! canonical form) and, for rules without a tool, by action class, so a step only meets the
//! rules that can apply to it: evaluation cost does not grow with unrelated rules. Every regex
//! and glob condition on the same args field is compiled into one `RegexSet` per view, run at
//! most once per value. The strongest outcome wins (`halt > deny > require_approval > allow`)
//! whatever the rule order; ties go to the smallest rule id, so the reported rule does not
//! depend on order either.
//!
//! Conditions fail closed on spelling: each value at a path is read as sent and in canonical
//! form ([`text`]); a rule stronger than allow matches if any value in either view does, or if
//! a value cannot be judged (a number that is not one, a path that cannot be placed, a command
//! line that cannot be parsed); an allow rule only if every value in both views does.
//!
//! ```
//! use warden_actors::policy::PolicySet;
//! let policy = PolicySet::parse(r#"
//! version: 1
//! tools:
//!   shell: {action: execute, risk: 2.0, args: [command]}
//! rules:
//!   - {id: no-rm-rf, match: {tool: shell, args: {command: {command: {program: rm, flags: [recursive, force]}}}}, decision: halt, kind: safety}
//! "#).unwrap();
//! assert_eq!(policy.rule_count(), 1);
//! let err = PolicySet::parse("version: 1\nrules:\n  - {id: x, match: {tool: shell}, decison: deny}\n").unwrap_err();
//! assert_eq!(err.errors().next().unwrap().to_string(),
//!     "3:35: error: unknown key `decison` in a rule\n  hint: did you mean `decision`?");
//! ```

pub mod check;
mod compile;
pub mod decimal;
pub mod detect;
mod eval;
pub mod fspath;
pub mod glob;
pub mod model;
pub mod rate;
mod reach;
pub mod shell;
pub mod source;
pub mod swap;
pub mod text;
pub mod weburl;

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use regex::RegexSet;
use serde::Serialize;
use serde_json::Value;

use crate::budget::{Budgets, CustomDim};
use crate::decision::{HaltKind, Verdict};
use crate::kernel::{Judgement, KernelConfig, PolicyContext, PolicyOutcome, StepPolicy};
use crate::step::{ActionClass, MinCost, Step};

pub use detect::Detector;
pub use model::{PolicyDoc, PoolDef, Pos, RateMode, RateScope, RuleDef, ToolDef};
pub use swap::SwappablePolicy;
// The one diagnostic type of every YAML reader; kept here too, where it was first.
pub use crate::yaml::{Diagnostic, Severity};

use compile::{CRule, CSeg, Field, ToolInfo};
use eval::{in_window, EvalCache};
use rate::{RateLimiter, RateRequest};

/// A policy that could not be used: every error (and warning) found, in text order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicyErrors {
    /// All diagnostics.
    pub diagnostics: Vec<Diagnostic>,
}

impl PolicyErrors {
    /// Only the errors.
    pub fn errors(&self) -> impl Iterator<Item = &Diagnostic> {
        self.diagnostics
            .iter()
            .filter(|d| d.severity == Severity::Error)
    }
}

impl fmt::Display for PolicyErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.errors().count();
        writeln!(
            f,
            "the policy has {n} error{}:",
            if n == 1 { "" } else { "s" }
        )?;
        for d in &self.diagnostics {
            writeln!(f, "{d}")?;
        }
        Ok(())
    }
}

impl std::error::Error for PolicyErrors {}

/// A rule that matched a step, for `policy eval` and audits.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct MatchedRule {
    /// The rule id (or `default_decision` / `registry.action` for the registry's verdicts).
    pub id: Arc<str>,
    /// What it decided.
    pub decision: Verdict,
    /// Its halt kind.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<HaltKind>,
    /// Why.
    pub reason: String,
}

/// The result of evaluating one step.
#[derive(Debug)]
pub struct Evaluation {
    /// The combined outcome.
    pub outcome: PolicyOutcome,
    /// Every rule that matched, by id.
    pub matched: Vec<MatchedRule>,
    /// The risk the step is charged at least (its tool's registered risk).
    pub risk_floor_micro: u64,
    /// Rate limits this step will use once it really goes ahead. Nothing is counted until
    /// [`RateTicket::commit`]: the kernel commits after the budgets have admitted the step.
    pub rate_ticket: Option<RateTicket>,
}

/// Rate limits a step has passed but not yet used up.
#[derive(Debug)]
pub struct RateTicket {
    limiter: Arc<RateLimiter>,
    requests: Vec<RateRequest>,
    rules: Vec<(Arc<str>, String, Verdict, Option<HaltKind>)>,
}

impl RateTicket {
    /// Counts the step against every limit, atomically, re-checking them (another agent may
    /// have used the last slot since evaluation). On a miss, nothing is counted and the rule
    /// and reason are returned.
    pub fn commit(self, now_ms: u64) -> Result<(), PolicyOutcome> {
        self.limiter
            .admit(&self.requests, now_ms)
            .map_err(|(i, retry_ms)| {
                let (rule, msg, verdict, kind) = &self.rules[i];
                let rule = Arc::clone(rule);
                let reason = format!("{msg}; retry in {retry_ms} ms");
                match verdict {
                    Verdict::Halt => PolicyOutcome::Halt {
                        rule,
                        kind: kind.unwrap_or(HaltKind::Safety),
                        reason,
                    },
                    Verdict::RequireApproval => PolicyOutcome::RequireApproval { rule, reason },
                    _ => PolicyOutcome::Deny { rule, reason },
                }
            })
    }
}

/// The args key an MCP tool's result is judged under (the MCP gateway judges what a tool
/// returns as a step of that tool with args `{"result": <text>}`); registry entries of
/// `mcp.*` tools accept it beside the args they declare.
pub const MCP_RESULT_ARG: &str = "result";

/// A compiled, checked policy. Cheap to share (`Arc`); evaluation takes `&self`.
pub struct PolicySet {
    doc: PolicyDoc,
    warnings: Vec<Diagnostic>,
    source_hash: String,
    tools: HashMap<Arc<str>, ToolInfo>,
    rules: Vec<CRule>,
    paths: Vec<Vec<CSeg>>,
    /// Each path as written, for reasons.
    path_texts: Vec<String>,
    fields: Vec<Field>,
    by_tool: HashMap<Arc<str>, Vec<u32>>,
    tool_globs: Option<RegexSet>,
    glob_rules: Vec<Vec<u32>>,
    by_action: [Vec<u32>; 5],
    any: Vec<u32>,
    limiter: Arc<RateLimiter>,
    /// Every custom dimension the policy names (budgets, pool limits, minimum costs), sorted.
    custom_dims: Vec<CustomDim>,
}

impl fmt::Debug for PolicySet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PolicySet")
            .field("rules", &self.rules.len())
            .field("tools", &self.tools.len())
            .field("hash", &self.source_hash)
            .finish_non_exhaustive()
    }
}

fn fnv_hex(text: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

impl PolicySet {
    /// Every diagnostic for `text`, errors and warnings, in text order. For `policy check`.
    pub fn check(text: &str) -> Vec<Diagnostic> {
        match Self::parse(text) {
            Ok(p) => p.warnings,
            Err(e) => e.diagnostics,
        }
    }

    /// Reads, checks and compiles a policy. All errors are reported at once; on success the
    /// set carries its warnings ([`PolicySet::warnings`]).
    pub fn parse(text: &str) -> Result<PolicySet, PolicyErrors> {
        let mut reader = crate::yaml::Reader::new();
        let doc = source::read(&mut reader, text);
        if let Some(doc) = &doc {
            check::check(&mut reader, doc);
        }
        let diags = reader.into_diagnostics();
        match doc {
            Some(doc) if !diags.iter().any(|d| d.severity == Severity::Error) => {
                Self::compile(doc, diags, fnv_hex(text)).map_err(|d| PolicyErrors {
                    diagnostics: vec![d],
                })
            }
            _ => Err(PolicyErrors { diagnostics: diags }),
        }
    }

    /// The document this set was compiled from (pools, tools, defaults, rules as written).
    pub fn doc(&self) -> &PolicyDoc {
        &self.doc
    }

    /// Warnings found while checking.
    pub fn warnings(&self) -> &[Diagnostic] {
        &self.warnings
    }

    /// A short hash of the source text (FNV-1a, hex), to name a version.
    pub fn source_hash(&self) -> &str {
        &self.source_hash
    }

    /// Number of rules.
    pub fn rule_count(&self) -> usize {
        self.rules.len()
    }

    /// The kernel configuration the policy's defaults give a new agent.
    pub fn agent_config(&self) -> KernelConfig {
        KernelConfig {
            budgets: self.doc.defaults.budgets.clone(),
            stagnation: self.doc.defaults.stagnation,
            heartbeat_timeout_ms: self.doc.defaults.heartbeat_timeout_ms,
            max_open_steps: 0,
        }
    }

    /// The defaults' budgets.
    pub fn default_budgets(&self) -> &Budgets {
        &self.doc.defaults.budgets
    }

    /// Empties every rate-limit bucket (what a node restart does; `audit replay` mirrors it).
    pub fn reset_rate_limits(&self) {
        self.limiter.clear();
    }

    /// Carries the rate-limit state of `old`'s rules over to the same rules here (same id,
    /// same limit), so a reload does not reset them.
    pub fn inherit_rate_limits(&self, old: &PolicySet) {
        let mut pairs = Vec::new();
        for (to, r) in self.rules.iter().enumerate() {
            let Some(rate) = r.rate else { continue };
            if let Some(from) = old
                .rules
                .iter()
                .position(|o| o.id == r.id && o.rate == Some(rate))
            {
                pairs.push((from as u32, to as u32));
            }
        }
        self.limiter.inherit(&old.limiter, &pairs);
    }

    /// Evaluates one step: every applicable rule, the registry, rate limits. Nothing is
    /// counted against rate limits here; the returned ticket counts the step once it really
    /// goes ahead.
    pub fn evaluate(&self, ctx: &PolicyContext<'_>) -> Evaluation {
        self.evaluate_with(ctx, true)
    }

    /// [`evaluate`](Self::evaluate) without rate limits: for a step already counted against
    /// them (a parked step judged again when it is approved under a newer policy).
    pub fn evaluate_uncounted(&self, ctx: &PolicyContext<'_>) -> Evaluation {
        self.evaluate_with(ctx, false)
    }

    fn evaluate_with(&self, ctx: &PolicyContext<'_>, rate_limits: bool) -> Evaluation {
        let step = ctx.step;
        let tool = text::canonical(step.tool());
        let mut matched: Vec<MatchedRule> = Vec::new();
        let risk_floor_micro = self.registry(step, &tool, &mut matched);

        let mut eval = EvalCache::new(self, step);
        let mut rate_rules: smallvec::SmallVec<[u32; 4]> = smallvec::SmallVec::new();
        for i in self.candidates(&tool, step.action()) {
            let r = &self.rules[i as usize];
            eval.doubt = None;
            if !self.matches(r, ctx, &mut eval) {
                continue;
            }
            if r.rate.is_some() {
                rate_rules.push(i);
            } else {
                let reason = match eval.doubt.take() {
                    Some(why) => format!("{}; fail closed: {why}", r.message),
                    None => r.message.clone(),
                };
                matched.push(MatchedRule {
                    id: Arc::clone(&r.id),
                    decision: r.verdict,
                    kind: r.kind,
                    reason,
                });
            }
        }

        let before_rates = strongest(&matched).map(|i| matched[i].decision);
        let mut rate_ticket = None;
        if rate_limits
            && !rate_rules.is_empty()
            && before_rates.is_none_or(|v| v <= Verdict::RequireApproval)
        {
            rate_ticket = self.rate_limits(ctx, &rate_rules, &mut matched);
        }

        let outcome = match strongest(&matched) {
            None => PolicyOutcome::Allow,
            Some(i) => outcome_of(&matched[i]),
        };
        matched.sort_by(|a, b| a.id.cmp(&b.id));
        let rate_ticket = match outcome {
            PolicyOutcome::Allow | PolicyOutcome::RequireApproval { .. } => rate_ticket,
            _ => None,
        };
        Evaluation {
            outcome,
            matched,
            risk_floor_micro,
            rate_ticket,
        }
    }

    /// The registry's verdicts on the step's tool (unregistered: `default_decision`; another
    /// action class than registered: deny; an args key the tool does not declare: deny).
    /// Returns the tool's registered risk. `tool` is the step's tool in canonical form.
    fn registry(&self, step: &Step, tool: &str, matched: &mut Vec<MatchedRule>) -> u64 {
        let Some(info) = self.tools.get(tool) else {
            if self.doc.default_decision != Verdict::Allow {
                matched.push(MatchedRule {
                    id: Arc::from(crate::rules::DEFAULT_DECISION),
                    decision: self.doc.default_decision,
                    kind: None,
                    reason: format!("tool {} is not in the policy's tool registry", step.tool()),
                });
            }
            return 0;
        };
        if info.action != step.action() {
            matched.push(MatchedRule {
                id: Arc::from(crate::rules::REGISTRY_ACTION),
                decision: Verdict::Deny,
                kind: None,
                reason: format!(
                    "tool {} is registered as {}, but the step says {}",
                    step.tool(),
                    info.action,
                    step.action()
                ),
            });
        }
        if let (Some(declared), Value::Object(args)) = (&info.args, step.args()) {
            // An MCP tool's result is judged as a step of the tool with args `{result: text}`
            // (the gateway refuses calls that would send an undeclared `result` themselves).
            let mcp_result = |k: &str| k == MCP_RESULT_ARG && tool.starts_with("mcp.");
            if let Some(key) = args
                .keys()
                .find(|k| !mcp_result(k) && !declared.iter().any(|d| text::same_canonical(k, d)))
            {
                matched.push(MatchedRule {
                    id: Arc::from(crate::rules::REGISTRY_ARGS),
                    decision: Verdict::Deny,
                    kind: None,
                    reason: format!(
                        "tool {} takes args {}, not {}",
                        info.name,
                        declared.join(", "),
                        text::preview(key)
                    ),
                });
            }
        }
        info.risk_micro
    }

    /// The rules that can apply to the step (by tool name, tool glob, action class, or
    /// matching any step), each once, in rule order.
    fn candidates(&self, tool: &str, action: ActionClass) -> smallvec::SmallVec<[u32; 16]> {
        let mut candidates: smallvec::SmallVec<[u32; 16]> = smallvec::SmallVec::new();
        if let Some(list) = self.by_tool.get(tool) {
            candidates.extend_from_slice(list);
        }
        if let Some(set) = &self.tool_globs {
            for i in set.matches(tool).iter() {
                candidates.extend_from_slice(&self.glob_rules[i]);
            }
        }
        candidates.extend_from_slice(&self.by_action[action as usize]);
        candidates.extend_from_slice(&self.any);
        candidates.sort_unstable();
        candidates.dedup();
        candidates
    }

    /// Checks the matched rate rules: each limit over its count joins `matched`; when none
    /// is, a ticket to count the step once it goes ahead.
    fn rate_limits(
        &self,
        ctx: &PolicyContext<'_>,
        rate_rules: &[u32],
        matched: &mut Vec<MatchedRule>,
    ) -> Option<RateTicket> {
        let requests: Vec<RateRequest> = rate_rules
            .iter()
            .map(|&i| {
                let r = &self.rules[i as usize];
                let def = r.rate.expect("rate rule");
                let key: Arc<str> = match def.scope {
                    RateScope::Agent => Arc::from(ctx.agent.as_str()),
                    RateScope::Team | RateScope::Pool => Arc::from(ctx.team),
                    RateScope::Tool => Arc::from(&*text::canonical(ctx.step.tool())),
                };
                RateRequest { rule: i, key, def }
            })
            .collect();
        // Every limit over its count takes part in strongest-wins, so the outcome does
        // not depend on which rate rule comes first in the file.
        let over = self.limiter.over_limit(&requests, ctx.now_ms);
        for (which, retry_ms) in &over {
            let r = &self.rules[rate_rules[*which] as usize];
            matched.push(MatchedRule {
                id: Arc::clone(&r.id),
                decision: r.verdict,
                kind: r.kind,
                reason: format!("{}; retry in {retry_ms} ms", r.message),
            });
        }
        if !over.is_empty() {
            return None;
        }
        let rules = rate_rules
            .iter()
            .map(|&i| {
                let r = &self.rules[i as usize];
                (Arc::clone(&r.id), r.message.clone(), r.verdict, r.kind)
            })
            .collect();
        Some(RateTicket {
            limiter: Arc::clone(&self.limiter),
            requests,
            rules,
        })
    }

    fn matches(&self, r: &CRule, ctx: &PolicyContext<'_>, eval: &mut EvalCache<'_>) -> bool {
        let step = ctx.step;
        if r.actions_mask != 0 && r.actions_mask & (1 << (step.action() as u8)) == 0 {
            return false;
        }
        if let Some(n) = r.failures_at_least {
            if ctx.consecutive_failures < n {
                return false;
            }
        }
        if let Some(n) = r.steps_at_least {
            if ctx.steps_decided < n {
                return false;
            }
        }
        if !r.teams.is_empty()
            && !r.teams.iter().any(|t| {
                ctx.team == t
                    || (ctx.team.starts_with(t.as_str())
                        && ctx.team.as_bytes().get(t.len()) == Some(&b'/'))
            })
        {
            return false;
        }
        if let Some(w) = &r.time {
            if !in_window(w, ctx.now_ms) {
                return false;
            }
        }
        // A rule stronger than allow matches in doubt; an allow rule does not.
        let strict = r.verdict != Verdict::Allow;
        for cond in &r.args {
            if !eval.cond(cond, strict) {
                return false;
            }
        }
        if !r.remaining_below.is_empty() {
            let snap = ctx.account.snapshot();
            let below = r
                .remaining_below
                .iter()
                .all(|(dim, frac)| match snap.limits.get(*dim) {
                    Some(limit) if limit > 0 => {
                        (snap.remaining(*dim).unwrap_or(0) as f64) < frac * limit as f64
                    }
                    _ => false,
                });
            if !below {
                return false;
            }
        }
        if !r.detectors.is_empty() && !eval.detectors(&r.detectors, strict) {
            return false;
        }
        true
    }
}

/// The strongest matched rule; among equals, the smallest id (so the reported rule does not
/// depend on rule order).
fn strongest(m: &[MatchedRule]) -> Option<usize> {
    (0..m.len()).max_by(|&a, &b| {
        m[a].decision
            .cmp(&m[b].decision)
            .then_with(|| m[b].id.cmp(&m[a].id))
    })
}

fn outcome_of(m: &MatchedRule) -> PolicyOutcome {
    let rule = Arc::clone(&m.id);
    let reason = m.reason.clone();
    match m.decision {
        Verdict::Allow => PolicyOutcome::Allow,
        Verdict::RequireApproval => PolicyOutcome::RequireApproval { rule, reason },
        Verdict::Deny => PolicyOutcome::Deny { rule, reason },
        Verdict::Halt => PolicyOutcome::Halt {
            rule,
            kind: m.kind.unwrap_or(HaltKind::Safety),
            reason,
        },
    }
}

impl StepPolicy for PolicySet {
    fn evaluate(&self, ctx: &PolicyContext<'_>) -> PolicyOutcome {
        PolicySet::evaluate(self, ctx).outcome
    }

    fn risk_floor_micro(&self, step: &Step) -> u64 {
        self.tools
            .get(&*text::canonical(step.tool()))
            .map_or(0, |t| t.risk_micro)
    }

    fn min_cost(&self, step: &Step) -> MinCost {
        match self.tools.get(&*text::canonical(step.tool())) {
            Some(t) => t.min_cost.clone(),
            None => self.doc.defaults.min_cost[step.action() as usize].clone(),
        }
    }

    fn approval_timeout_ms(&self) -> u64 {
        self.doc.defaults.approval_timeout_ms
    }

    fn names_custom(&self, dim: &CustomDim) -> bool {
        self.custom_dims.binary_search(dim).is_ok()
    }

    fn judge(&self, ctx: &PolicyContext<'_>) -> Judgement {
        let e = PolicySet::evaluate(self, ctx);
        Judgement {
            outcome: e.outcome,
            risk_floor_micro: e.risk_floor_micro,
            min_cost: StepPolicy::min_cost(self, ctx.step),
            approval_timeout_ms: self.doc.defaults.approval_timeout_ms,
            commit: e
                .rate_ticket
                .map(|t| Box::new(move |now_ms| t.commit(now_ms)) as crate::kernel::RateCommit),
        }
    }
}
