//! The policy document as written, after syntax checks: every item keeps where it came from
//! (line and column), so the checker and compiler can point at it.

use std::sync::Arc;

use serde_json::Value;

use crate::budget::{Budgets, Limits};
use crate::decision::{HaltKind, Verdict};
use crate::pool::{Breaker, CascadeRule, RestartPolicy};
use crate::stagnation::StagnationConfig;
use crate::step::{ActionClass, MinCost};

use super::decimal::Decimal;
use super::detect::Detector;

/// A place in the policy text: 1-based line and column.
pub use crate::yaml::Pos;

/// Defaults for agents that do not bring their own settings.
#[derive(Clone, Debug, PartialEq)]
pub struct Defaults {
    /// Budgets for each agent.
    pub budgets: Budgets,
    /// Stagnation detection.
    pub stagnation: StagnationConfig,
    /// How long a step waits for approval before it is denied.
    pub approval_timeout_ms: u64,
    /// Silence after which an agent is halted as `lost` (none by default).
    pub heartbeat_timeout_ms: Option<u64>,
    /// The least a step is reserved at, per action class (indexed by `ActionClass as
    /// usize`), where its tool's `min_cost` does not say.
    pub min_cost: [MinCost; 5],
}

/// A pool: a team's shared budget and its team-level settings.
#[derive(Clone, Debug, PartialEq)]
pub struct PoolDef {
    /// `swarm`, `swarm/research`, ...
    pub path: String,
    /// Limits.
    pub limits: Limits,
    /// Which halts spread.
    pub cascade: Option<CascadeRule>,
    /// Contagion breaker.
    pub breaker: Option<Breaker>,
    /// Restart strategy for crashed actors.
    pub restart: Option<RestartPolicy>,
    /// Where it is written.
    pub pos: Pos,
}

/// An entry of the capability registry.
#[derive(Clone, Debug, PartialEq)]
pub struct ToolDef {
    /// Tool name.
    pub name: Arc<str>,
    /// Its action class; steps claiming another class are denied.
    pub action: ActionClass,
    /// Base risk charged per call (micro-units); a step's own higher risk wins.
    pub risk_micro: u64,
    /// The least a call is reserved at, per dimension it names (the action class's default
    /// fills the others).
    pub min_cost: MinCost,
    /// Where the enforcement proxy forwards allowed calls.
    pub upstream: Option<String>,
    /// The top-level args keys the tool takes, when declared (`args: [amount, currency]`):
    /// a step with any other key is denied (`registry.args`), so a rule on `amount` cannot be
    /// slipped past by sending the amount as `value`.
    pub args: Option<Vec<String>>,
    /// Where it is written.
    pub pos: Pos,
}

/// A condition on one value of the step's args.
#[derive(Clone, Debug, PartialEq)]
pub enum ArgOp {
    /// Equal (numbers compare by value).
    Eq(Value),
    /// Equal to one of these.
    In(Vec<Value>),
    /// Numerically greater than (compared exactly; see [`super::decimal`]).
    Gt(Decimal),
    /// Numerically at least.
    Gte(Decimal),
    /// Numerically less than.
    Lt(Decimal),
    /// Numerically at most.
    Lte(Decimal),
    /// A string matching this regular expression (anywhere in it, unless anchored).
    Regex(String),
    /// A string matching this glob (`*` any run of characters, `?` one character), whole.
    Glob(String),
    /// Present (`true`) or absent (`false`). A key holding nothing (`null`, `[]`, `{}`, or
    /// text that is empty in canonical form, like `""` or `" "`) counts as absent.
    Exists(bool),
    /// A file system path that, normalized lexically, matches one of these path globs
    /// (normalized too; see [`super::fspath`]).
    Path(Vec<String>),
    /// A shell command line (or argv array) running a command that matches the pattern.
    Command(super::shell::CommandPattern),
    /// A URL (WHATWG rules) whose host, address or scheme matches the pattern.
    Url(super::weburl::UrlPattern),
    /// One of these detectors finds something in the value (its text, or every text inside
    /// it, as the `detector` match condition reads a step's whole args).
    Detector(Vec<super::detect::Detector>),
    /// The conditions inside do not all hold (judged with the opposite polarity: in doubt,
    /// a negated condition holds for a rule stronger than allow).
    Not(Vec<(ArgOp, Pos)>),
}

/// `args.<path>: {op: value, ...}`: every op must hold.
#[derive(Clone, Debug, PartialEq)]
pub struct ArgCond {
    /// The JSON path as written (`recipient.country`, `files[0]`).
    pub path: String,
    /// Its parsed segments.
    pub segments: Vec<PathSeg>,
    /// The conditions on the value found there.
    pub ops: Vec<(ArgOp, Pos)>,
    /// Where it is written.
    pub pos: Pos,
}

/// One step of a JSON path. A key that meets an array applies to each of its elements.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum PathSeg {
    /// An object key (matched in canonical form too: `Amount`, `amount ` and `ａｍｏｕｎｔ`
    /// are all `amount`).
    Key(String),
    /// An array index.
    Index(usize),
    /// `[*]`: every element of an array.
    AnyIndex,
    /// `*`: every value of an object.
    AnyKey,
}

/// A calendar window, in UTC.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TimeWindow {
    /// Bit `d` set: weekday `d` (0 = Monday) is in.
    pub days_mask: u8,
    /// Start, minutes after midnight (inclusive).
    pub start_min: u16,
    /// End, minutes after midnight (exclusive); below `start_min` wraps past midnight.
    pub end_min: u16,
}

/// What a rule matches. Every present condition must hold.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct MatchDef {
    /// Tool names or globs (any of them).
    pub tools: Vec<(String, Pos)>,
    /// Action classes (any of them).
    pub actions: Vec<ActionClass>,
    /// Conditions on args.
    pub args: Vec<ArgCond>,
    /// At least this many consecutive failures.
    pub failures_at_least: Option<u32>,
    /// At least this many steps decided before this one.
    pub steps_at_least: Option<u64>,
    /// The agent's own remaining budget below this fraction of its limit, per dimension.
    pub remaining_below: Vec<(crate::budget::LedgerDim, f64)>,
    /// Only within this window.
    pub time: Option<TimeWindow>,
    /// The agent's team is one of these or under one of them.
    pub teams: Vec<String>,
    /// Any of these detectors hits on the args.
    pub detectors: Vec<Detector>,
    /// Where `match:` is written.
    pub pos: Pos,
}

/// A rate limit: at most `max` matching steps per `per_ms`, counted per scope key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RateDef {
    /// Steps allowed per window.
    pub max: u32,
    /// The window.
    pub per_ms: u64,
    /// What is counted separately.
    pub scope: RateScope,
    /// What "`max` per `per`" means.
    pub mode: RateMode,
}

/// What a rate limit's "`max` per `per`" means.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum RateMode {
    /// At most `max` steps in any window of length `per` (a sliding window, exact): the
    /// default. Keeps the times of the steps counted in the last `per` (at most `max` per key).
    #[default]
    Window,
    /// A bucket of `max` steps refilled at `max` per `per` (GCRA): bursts of `max`, then the
    /// steady rate, so up to `2 * max - 1` steps can fall within one window of length `per`.
    /// One timestamp per key.
    Bucket,
}

impl RateMode {
    /// The name used in policies.
    pub const fn name(self) -> &'static str {
        match self {
            RateMode::Window => "window",
            RateMode::Bucket => "bucket",
        }
    }
}

/// What a rate limit counts separately.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RateScope {
    /// Each agent.
    Agent,
    /// Each team (all its agents together).
    Team,
    /// Each pool (an agent's pool is its team's; kept apart for policies that say "pool").
    Pool,
    /// Each tool, across all agents.
    Tool,
}

impl RateScope {
    /// The name used in policies.
    pub const fn name(self) -> &'static str {
        match self {
            RateScope::Agent => "agent",
            RateScope::Team => "team",
            RateScope::Pool => "pool",
            RateScope::Tool => "tool",
        }
    }
}

/// One rule.
#[derive(Clone, Debug, PartialEq)]
pub struct RuleDef {
    /// Unique id.
    pub id: Arc<str>,
    /// What it matches.
    pub matcher: MatchDef,
    /// Its outcome (for a rate limit: what happens when the limit is exceeded).
    pub decision: Verdict,
    /// Halt kind, for `halt`.
    pub kind: Option<HaltKind>,
    /// Message for humans.
    pub message: Option<String>,
    /// A rate limit.
    pub rate_limit: Option<RateDef>,
    /// Where the rule is written.
    pub pos: Pos,
}

/// A whole policy document.
#[derive(Clone, Debug, PartialEq)]
pub struct PolicyDoc {
    /// Format version (1).
    pub version: u32,
    /// Defaults for agents.
    pub defaults: Defaults,
    /// What an unregistered tool gets.
    pub default_decision: Verdict,
    /// Pools, in the order written.
    pub pools: Vec<PoolDef>,
    /// The capability registry.
    pub tools: Vec<ToolDef>,
    /// Rules, in the order written (order does not change decisions).
    pub rules: Vec<RuleDef>,
}
