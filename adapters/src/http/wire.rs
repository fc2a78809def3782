//! The API's JSON bodies, both ways: the requests the node accepts and the views it answers
//! with. The server builds views from domain values here; the typed client
//! ([`crate::client`]) reads the same types, so a shape is written once.
//!
//! Amounts are per dimension, keyed by [`LedgerDim::key`] (`steps`, `tokens`,
//! `cost_micro_usd`, `risk_micro`) and by name for custom dimensions, in the ledger's integer
//! units. Times are Unix milliseconds.
//!
//! Accounting shown: `spent` is what the ledger charged within the limits (so
//! `spent + reserved <= limit` always), `overrun` what was used beyond what the budgets could
//! cover (charged to nobody, and the agent that caused it is halted), `used` their sum: what
//! was really used.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use warden_actors::{
    AccountSnapshot, AgentId, AgentSnapshot, AgentState, Amounts, Decision, HaltKind, HaltRecord,
    LedgerDim, Limits, PendingApproval, SettleReport, StepId, Verdict,
};

/// A nested body that must be a JSON object (or null): serde's derived readers would also
/// take an array as the fields in order. Top-level bodies are checked by
/// [`super::body::JsonObject`].
fn object_only<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::de::DeserializeOwned,
{
    use serde::de::Error;
    match Value::deserialize(d)? {
        Value::Null => Ok(None),
        v @ Value::Object(_) => serde_json::from_value(v)
            .map(Some)
            .map_err(D::Error::custom),
        other => Err(D::Error::custom(format!(
            "expected a JSON object, found {}",
            match other {
                Value::Array(_) => "an array",
                Value::String(_) => "a string",
                Value::Number(_) => "a number",
                _ => "a boolean",
            }
        ))),
    }
}

/// Amounts by dimension key; a dimension without a value (unlimited) is absent.
pub type DimMap = BTreeMap<String, u64>;

/// One entry per dimension for which `value` has something.
pub fn per_dim(value: impl Fn(LedgerDim) -> Option<u64>) -> DimMap {
    LedgerDim::ALL
        .into_iter()
        .filter_map(|dim| value(dim).map(|v| (dim.key().to_string(), v)))
        .collect()
}

/// Every built-in dimension's amount, and each custom dimension that has one.
pub fn amounts(a: &Amounts) -> DimMap {
    let mut out = per_dim(|d| Some(a.get(d)));
    for (d, v) in a.custom_entries() {
        out.insert(d.as_str().to_string(), *v);
    }
    out
}

/// The limited dimensions' limits, custom dimensions included.
pub fn limits(l: &Limits) -> DimMap {
    let mut out = per_dim(|d| l.get(d));
    for (d, v) in l.custom_entries() {
        out.insert(d.as_str().to_string(), *v);
    }
    out
}

/// What is left of each limited dimension (custom ones included): limit - spent - reserved.
fn remaining(a: &AccountSnapshot) -> DimMap {
    let mut out = per_dim(|d| a.remaining(d));
    for (d, limit) in a.limits.custom_entries() {
        let left = limit
            .saturating_sub(a.spent.custom(d))
            .saturating_sub(a.reserved.custom(d));
        out.insert(d.as_str().to_string(), left);
    }
    out
}

/// `POST /v1/agents`: every field optional.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegisterRequest {
    /// The agent id (made up when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// The pool path (the swarm's root when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool: Option<String>,
    /// Budgets overriding the policy's defaults.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "object_only"
    )]
    pub budgets: Option<BudgetsRequest>,
    /// Free-form labels (at most [`crate::limits::LABELS_MAX`]).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// A duration such as `30s`: silent longer, the agent is halted as `lost`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heartbeat_timeout: Option<String>,
    /// The agent that started this one (a registered agent's id): a `subtree` cascade of
    /// the parent's pool halts this agent with it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    /// Agents this one depends on (registered agents' ids, at most 64): a `dependents`
    /// cascade of a halted one's pool halts this agent.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub depends_on: Vec<String>,
}

/// Budgets as the API writes them: money and risk in units (dollars, risk points), durations
/// as text (`30m`).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BudgetsRequest {
    /// Steps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub steps: Option<u64>,
    /// Tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens: Option<u64>,
    /// US dollars.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost_usd: Option<f64>,
    /// Sum of risk scores.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub risk: Option<f64>,
    /// A duration such as `30m`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wall_time: Option<String>,
    /// Consecutive failures.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failures: Option<u32>,
    /// Distinct tools tried.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exploration: Option<u32>,
}

/// An agent as the API shows it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AgentView {
    /// The agent.
    pub id: AgentId,
    /// Its pool path.
    pub pool: String,
    /// Running or halted.
    pub state: AgentState,
    /// The active halt.
    pub halt: Option<HaltRecord>,
    /// Steps decided (any verdict).
    pub steps_decided: u64,
    /// Steps allowed.
    pub steps_allowed: u64,
    /// Steps allowed and not yet settled.
    pub open_steps: usize,
    /// Steps whose reservation was released when the agent was halted as `lost`; their
    /// outcomes are still accepted and charged.
    #[serde(default)]
    pub released_steps: usize,
    /// Steps waiting for approval.
    pub pending_approvals: usize,
    /// Consecutive failures.
    pub consecutive_failures: u32,
    /// The agent's own limits.
    pub limits: DimMap,
    /// Settled spend.
    pub spent: DimMap,
    /// Reserved by open steps.
    pub reserved: DimMap,
    /// Used beyond what its budget and pools could cover (not in `spent`).
    #[serde(default)]
    pub overrun: DimMap,
    /// What it really used: `spent + overrun`.
    #[serde(default)]
    pub used: DimMap,
    /// Of the agent's own budget (pools above it may have less: a decision's `remaining` is
    /// the minimum over the path).
    pub remaining: DimMap,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
    /// The agent that started it, if registered with one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<AgentId>,
    /// The agents it depends on, as registered.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub depends_on: Vec<AgentId>,
    /// Only in the answer to a registration: the agent's bearer token, shown once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

impl AgentView {
    /// The view of a snapshot (parent and dependencies are added by the caller, who has
    /// the registration).
    pub fn new(s: &AgentSnapshot, pool: String, labels: BTreeMap<String, String>) -> Self {
        Self {
            id: s.id.clone(),
            pool,
            state: s.state,
            halt: s.halt.clone(),
            steps_decided: s.steps_decided,
            steps_allowed: s.steps_allowed,
            open_steps: s.open_steps,
            released_steps: s.released_steps,
            pending_approvals: s.pending_approvals,
            consecutive_failures: s.consecutive_failures,
            limits: limits(&s.account.limits),
            spent: amounts(&s.account.spent),
            reserved: amounts(&s.account.reserved),
            overrun: amounts(&s.account.overrun),
            used: amounts(&s.account.used()),
            remaining: remaining(&s.account),
            labels,
            parent: None,
            depends_on: Vec::new(),
            token: None,
        }
    }
}

/// A page of `GET /v1/agents`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AgentPage {
    /// The agents, ordered by id.
    pub agents: Vec<AgentView>,
    /// Pass as `after` for the next page; null on the last page.
    pub next: Option<String>,
}

/// The answer to a step: `allow`, `deny`, `require_approval` or `halt`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DecisionView {
    /// The verdict.
    pub decision: Verdict,
    /// The rule that decided (null for a plain allow within budgets).
    pub rule: Option<String>,
    /// For halts: the kind.
    pub kind: Option<HaltKind>,
    /// A sentence for humans (empty for a plain allow).
    pub reason: String,
    /// The step's id within its agent.
    pub step: StepId,
    /// For `require_approval`: the approval id to wait for.
    pub approval: Option<String>,
    /// What the agent may still use, minimum over its budget and every pool above it.
    pub remaining: DimMap,
    /// The journal sequence number of the decision.
    pub audit_seq: Option<u64>,
}

impl From<&Decision> for DecisionView {
    fn from(d: &Decision) -> Self {
        Self {
            decision: d.decision,
            rule: d.rule.as_deref().map(str::to_string),
            kind: d.kind,
            reason: d.reason.clone(),
            step: d.step,
            approval: d.approval.clone(),
            remaining: per_dim(|dim| d.remaining.0.get(dim)),
            audit_seq: d.audit_seq,
        }
    }
}

/// `POST /v1/agents/{id}/steps/{step}/outcome`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutcomeRequest {
    /// `success` or `failure`.
    pub status: warden_actors::OutcomeStatus,
    /// What the step really used. Every dimension it does not name (the whole object
    /// absent: every dimension) is settled as reserved.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "object_only"
    )]
    pub cost: Option<CostRequest>,
}

/// A step's real usage as an outcome reports it: `tokens`, `cost_usd` or `cost_micro_usd`
/// (not both), `custom` (by dimension name), each optional, checked as a step's `cost` is
/// (bounds, names). The shape is the kernel's ([`warden_actors::RawUsage`]).
pub type CostRequest = warden_actors::RawUsage;

/// What settling an outcome did.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OutcomeView {
    /// The step.
    pub step: StepId,
    /// Spend recorded.
    pub charged: DimMap,
    /// Reservation given back.
    pub refunded: DimMap,
    /// Usage beyond what the path could cover (the agent is halted).
    pub overrun: DimMap,
    /// The halt the outcome caused, if any.
    pub halt: Option<HaltRecord>,
    /// The step's reservation had been released (its agent was halted as `lost`) before the
    /// outcome came: it was charged with nothing held, as far as the budgets had room.
    #[serde(default)]
    pub late: bool,
}

impl OutcomeView {
    /// The view of a settlement.
    pub fn new(step: StepId, report: &SettleReport) -> Self {
        Self {
            step,
            charged: amounts(&report.settlement.charged),
            refunded: amounts(&report.settlement.refunded),
            overrun: amounts(&report.settlement.overrun),
            halt: report.halt.clone(),
            late: report.late,
        }
    }
}

/// `POST /v1/agents/{id}/halt` and `/resume`: both optional.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReasonRequest {
    /// Why (at most [`crate::limits::TEXT_BYTES_MAX`] bytes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Who (at most [`crate::limits::TEXT_BYTES_MAX`] bytes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
}

/// A pool as the API shows it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PoolView {
    /// Its path.
    pub path: String,
    /// Its limits.
    pub limits: DimMap,
    /// Settled spend under it.
    pub spent: DimMap,
    /// Reserved under it.
    pub reserved: DimMap,
    /// Used under it beyond what the budgets could cover (not in `spent`).
    #[serde(default)]
    pub overrun: DimMap,
    /// What was really used under it: `spent + overrun` (may exceed the limit by the
    /// overrun; `spent + reserved` never does).
    #[serde(default)]
    pub used: DimMap,
    /// What is left, per limited dimension.
    pub remaining: DimMap,
    /// Halted: no agent may be registered into it until it is reopened (`POST
    /// /v1/pools/{path}` with `{"halted": false}`).
    #[serde(default)]
    pub halted: bool,
}

impl From<&AccountSnapshot> for PoolView {
    fn from(p: &AccountSnapshot) -> Self {
        Self {
            path: p.name.to_string(),
            limits: limits(&p.limits),
            spent: amounts(&p.spent),
            reserved: amounts(&p.reserved),
            overrun: amounts(&p.overrun),
            used: amounts(&p.used()),
            remaining: remaining(p),
            halted: false,
        }
    }
}

/// A pending approval as the API shows it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ApprovalView {
    /// `<agent>/<step>`.
    pub id: String,
    /// The agent.
    pub agent: AgentId,
    /// The parked step.
    pub step: StepId,
    /// Its tool.
    pub tool: String,
    /// Its arguments.
    pub args: Value,
    /// The rule that asked for approval.
    pub rule: String,
    /// Its message.
    pub reason: String,
    /// When it was parked.
    pub requested_at_ms: u64,
    /// When it is denied if nobody answers.
    pub expires_at_ms: u64,
}

impl From<PendingApproval> for ApprovalView {
    fn from(p: PendingApproval) -> Self {
        Self {
            id: p.id,
            agent: p.agent,
            step: p.step_id,
            tool: p.step.tool().to_string(),
            args: p.step.args().clone(),
            rule: p.rule.to_string(),
            reason: p.reason,
            requested_at_ms: p.requested_at_ms,
            expires_at_ms: p.expires_at_ms,
        }
    }
}

/// `POST /v1/approvals/{id}`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnswerRequest {
    /// `approve` or `deny`.
    pub decision: String,
    /// Why (for a denial).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Who answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
}

/// The answer to `PUT /v1/policy`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PolicyVersionView {
    /// The version now in force.
    pub version: u64,
    /// Warnings (shadowed, conflicting or unreachable rules), each with line and column.
    pub warnings: Vec<Value>,
}

/// A page of `GET /v1/audit`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AuditPage {
    /// Journal entries as `warden audit query` prints them.
    pub entries: Vec<Value>,
    /// Pass as `after` for the next page; null on the last page.
    pub next: Option<u64>,
}

/// `POST /v1/cluster/prepare-offline`: take rights along before going offline.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrepareOfflineRequest {
    /// How long the node may be gone (`8h`): the lease its heir waits before reclaiming
    /// (bounded by the config's `sync.max_offline`). `0s` ends the preparation.
    pub duration: String,
    /// Rights wanted per replicated pool and dimension (money and risk in dollars and
    /// points); absent: what this node holds free plus half of what the others hold free.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pools: Option<BTreeMap<String, BTreeMap<String, f64>>>,
}

/// `GET /v1/audit/keys`: the keys that verify the node's journal seals.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct AuditKeys {
    /// The current key first, then keys of earlier seals (before a key change).
    pub keys: Vec<AuditKey>,
}

/// One seal-verifying key.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct AuditKey {
    /// Always `ed25519`.
    pub algorithm: std::borrow::Cow<'static, str>,
    /// The public key, 64 hex digits.
    pub public_key: String,
    /// True for the key the node signs with now.
    pub current: bool,
}
