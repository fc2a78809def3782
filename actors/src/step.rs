//! [`Step`]: what an agent wants to do next, validated.
//!
//! The only ways to get a `Step` are [`Step::builder`] (which checks at `build`) and
//! deserializing the step JSON (which runs the same checks), so raw, unchecked input never
//! reaches the kernel.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::budget::{
    units_to_micros, Amounts, CustomDim, LedgerDim, MAX_STEP_AMOUNT, MICROS_PER_UNIT,
};

/// Longest tool name accepted.
pub const MAX_TOOL_LEN: usize = 256;
/// Deepest nesting accepted in `args`.
pub const MAX_ARGS_DEPTH: usize = 32;
/// Most JSON values (objects, arrays, scalars) accepted in `args`.
pub const MAX_ARGS_NODES: usize = 10_000;
/// Most custom cost entries on one step.
pub const MAX_CUSTOM_COSTS: usize = 16;
/// Largest money amount on one step or outcome: one billion dollars
/// ([`MAX_STEP_AMOUNT`] micro-dollars).
pub const MAX_COST_USD: f64 = 1e9;
/// Largest risk score on one step.
pub const MAX_RISK: f64 = 1_000.0;

/// The class of effect a step has. Policies and pools reason about classes, not tool names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActionClass {
    /// Reads data, no side effects.
    Read,
    /// Changes stored state.
    Write,
    /// Runs code or commands.
    Execute,
    /// Talks to the outside world.
    Network,
    /// Moves money.
    Spend,
}

impl ActionClass {
    /// The name used in JSON and policies.
    pub const fn name(self) -> &'static str {
        match self {
            ActionClass::Read => "read",
            ActionClass::Write => "write",
            ActionClass::Execute => "execute",
            ActionClass::Network => "network",
            ActionClass::Spend => "spend",
        }
    }
}

impl fmt::Display for ActionClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a step was refused before the kernel saw it. Each variant names the field.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[allow(missing_docs)] // the fields are named for what they hold
pub enum StepError {
    /// `tool` was missing or empty.
    #[error("step.tool is empty; name the tool the agent wants to call")]
    EmptyTool,
    /// `tool` was too long.
    #[error("step.tool is {0} bytes long; the limit is {MAX_TOOL_LEN}")]
    ToolTooLong(usize),
    /// `tool` held whitespace or a control character.
    #[error(
        "step.tool {tool:?} contains {found:?}; tool names are printable ASCII without spaces"
    )]
    BadToolChar { tool: String, found: char },
    /// `args` was not a JSON object, nor a string holding one.
    #[error("step.args must be a JSON object (or a string holding one, as OpenAI's tool-call `arguments`); got {0}")]
    ArgsNotObject(&'static str),
    /// `args` was a string that does not hold a JSON object.
    #[error("step.args is a string but does not hold a JSON object: {0}")]
    ArgsBadString(String),
    /// `args` nested too deep.
    #[error("step.args nests deeper than {MAX_ARGS_DEPTH} levels")]
    ArgsTooDeep,
    /// `args` had too many values.
    #[error("step.args holds more than {MAX_ARGS_NODES} values")]
    ArgsTooLarge,
    /// A cost field was out of range or malformed.
    #[error(transparent)]
    Cost(#[from] CostError),
    /// A risk score out of range.
    #[error("step.signals.risk = {} must be a number between 0 and {MAX_RISK}", short(*.0))]
    BadRisk(f64),
    /// A progress value out of range.
    #[error("step.signals.progress = {} must be a number between 0 and 1", short(*.0))]
    BadProgress(f64),
}

/// A number for an error message: as written when short, in exponent form when its digits
/// would run long (`1e308`, not 309 digits).
fn short(x: f64) -> String {
    let plain = x.to_string();
    if plain.len() > 24 {
        format!("{x:e}")
    } else {
        plain
    }
}

/// Why an amount of a step's `cost` or an outcome's `cost` was refused. Each variant names
/// the field (`step.cost.tokens`, `outcome.cost.custom.gpu_seconds`, ...).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[allow(missing_docs)] // the fields are named for what they hold
pub enum CostError {
    /// A dollar amount was negative, not finite or above [`MAX_COST_USD`].
    #[error("{field} = {} is not an amount of dollars between 0 and {MAX_COST_USD}", short(*.value))]
    BadUsd { field: String, value: f64 },
    /// Both spellings of the money amount were given.
    #[error("{field} has both cost_usd and cost_micro_usd; give one")]
    DuplicateMoney { field: String },
    /// An integer amount above [`MAX_STEP_AMOUNT`].
    #[error("{field} = {value} is above the largest amount accepted, {MAX_STEP_AMOUNT}")]
    TooLarge { field: String, value: u64 },
    /// A custom dimension with a bad name.
    #[error("{field}: {reason}")]
    BadCustom { field: String, reason: String },
    /// Too many custom dimensions.
    #[error("{field} has more than {MAX_CUSTOM_COSTS} entries")]
    TooManyCustom { field: String },
}

/// Checks one integer amount against [`MAX_STEP_AMOUNT`].
fn bounded(field: impl FnOnce() -> String, value: u64) -> Result<u64, CostError> {
    if value > MAX_STEP_AMOUNT {
        return Err(CostError::TooLarge {
            field: field(),
            value,
        });
    }
    Ok(value)
}

/// Money given as dollars or as micro-dollars (not both), checked; `None` when neither.
fn money(prefix: &str, usd: Option<f64>, micro: Option<u64>) -> Result<Option<u64>, CostError> {
    match (usd, micro) {
        (Some(_), Some(_)) => Err(CostError::DuplicateMoney {
            field: prefix.to_string(),
        }),
        (Some(usd), None) => usd_micros(|| format!("{prefix}.cost_usd"), usd).map(Some),
        (None, Some(m)) => bounded(|| format!("{prefix}.cost_micro_usd"), m).map(Some),
        (None, None) => Ok(None),
    }
}

/// Custom dimensions by name, checked (names, count, amounts), sorted by name.
fn customs(
    prefix: &str,
    entries: impl ExactSizeIterator<Item = (String, u64)>,
) -> Result<Vec<(CustomDim, u64)>, CostError> {
    if entries.len() > MAX_CUSTOM_COSTS {
        return Err(CostError::TooManyCustom {
            field: format!("{prefix}.custom"),
        });
    }
    let mut out: Vec<(CustomDim, u64)> = Vec::with_capacity(entries.len());
    for (name, amount) in entries {
        let dim = CustomDim::new(&name).map_err(|e| CostError::BadCustom {
            field: format!("{prefix}.custom"),
            reason: e.to_string(),
        })?;
        let amount = bounded(|| format!("{prefix}.custom.{name}"), amount)?;
        match out.binary_search_by(|(d, _)| d.cmp(&dim)) {
            Ok(i) => out[i].1 = amount,
            Err(i) => out.insert(i, (dim, amount)),
        }
    }
    Ok(out)
}

/// What a step expects to use. Money is integer micro-USD; floats exist only at the JSON edge.
/// Tokens and money remember whether they were declared at all: a dimension the step does
/// not declare is not taken as zero where a budget limits it (see [`MinCost::billing`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Cost {
    tokens: Option<u64>,
    cost_micro_usd: Option<u64>,
    custom: Vec<(CustomDim, u64)>,
}

impl Cost {
    /// A cost in tokens and micro-USD (both declared).
    pub fn new(tokens: u64, cost_micro_usd: u64) -> Self {
        Self {
            tokens: Some(tokens),
            cost_micro_usd: Some(cost_micro_usd),
            custom: Vec::new(),
        }
    }

    /// Tokens, if declared.
    pub fn declared_tokens(&self) -> Option<u64> {
        self.tokens
    }

    /// Money in micro-USD, if declared.
    pub fn declared_cost_micro_usd(&self) -> Option<u64> {
        self.cost_micro_usd
    }

    /// Adds an amount in a custom dimension.
    pub fn with_custom(mut self, dim: CustomDim, amount: u64) -> Self {
        match self.custom.binary_search_by(|(d, _)| d.cmp(&dim)) {
            Ok(i) => self.custom[i].1 = amount,
            Err(i) => self.custom.insert(i, (dim, amount)),
        }
        self
    }

    /// Tokens (0 when not declared).
    pub fn tokens(&self) -> u64 {
        self.tokens.unwrap_or(0)
    }

    /// Money in micro-USD (0 when not declared).
    pub fn cost_micro_usd(&self) -> u64 {
        self.cost_micro_usd.unwrap_or(0)
    }

    /// Custom dimensions.
    pub fn custom(&self) -> &[(CustomDim, u64)] {
        &self.custom
    }

    /// As ledger amounts, with `steps` and `risk_micro` supplied by the caller.
    pub fn to_amounts(&self, steps: u64, risk_micro: u64) -> Amounts {
        let mut a = Amounts::new(steps, self.tokens(), self.cost_micro_usd(), risk_micro);
        for (d, v) in &self.custom {
            a.set_custom(d.clone(), *v);
        }
        a
    }
}

/// The built-in minimum reservation per action class (indexed by `ActionClass as usize`:
/// read, write, execute, network, spend), as (tokens, micro-USD): what a step that declares
/// no tokens (or no money) is reserved at in a dimension some budget on its path limits, when
/// neither its tool's `min_cost` nor `defaults.min_cost` names that dimension. The same values
/// as the example policies' `defaults.min_cost`; `docs/policy.md` lists them.
pub const BUILTIN_MIN_COST: [(u64, u64); 5] = [
    (500, 5_000),
    (500, 5_000),
    (1_000, 10_000),
    (1_000, 10_000),
    (500, 10_000),
];

/// The least a step is reserved at, per dimension: its tool's `min_cost` in the policy,
/// else its action class's default (`defaults.min_cost`). A step declaring less in a
/// dimension is reserved at the minimum.
///
/// A dimension the minimum does not name (`None`, or a custom dimension without an entry)
/// still *bills* the step: it is refused when that dimension has nothing left on its path,
/// whatever it declares. A minimum of exactly 0 exempts the step from a dimension unless it
/// declares some (see `docs/policy.md`, "What a step is billed in").
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MinCost {
    /// Tokens.
    pub tokens: Option<u64>,
    /// Money in micro-USD.
    pub cost_micro_usd: Option<u64>,
    /// Custom dimensions, sorted by name.
    pub custom: Vec<(CustomDim, u64)>,
}

impl MinCost {
    /// Per dimension, this minimum where it names the dimension, else `fallback`'s (a tool's
    /// `min_cost` over its action class's default).
    pub fn or(&self, fallback: &MinCost) -> MinCost {
        let mut custom = fallback.custom.clone();
        for (d, v) in &self.custom {
            match custom.binary_search_by(|(c, _)| c.cmp(d)) {
                Ok(i) => custom[i].1 = *v,
                Err(i) => custom.insert(i, (d.clone(), *v)),
            }
        }
        MinCost {
            tokens: self.tokens.or(fallback.tokens),
            cost_micro_usd: self.cost_micro_usd.or(fallback.cost_micro_usd),
            custom,
        }
    }

    /// True when nothing is configured.
    pub fn is_empty(&self) -> bool {
        self.tokens.is_none() && self.cost_micro_usd.is_none() && self.custom.is_empty()
    }

    /// Raises `amounts` to the minimum in every dimension it names.
    pub fn raise(&self, amounts: &mut Amounts) {
        for (dim, min) in [
            (LedgerDim::Tokens, self.tokens),
            (LedgerDim::CostMicroUsd, self.cost_micro_usd),
        ] {
            if let Some(min) = min.filter(|m| *m > amounts.get(dim)) {
                amounts.set(dim, min);
            }
        }
        for (d, min) in &self.custom {
            if *min > amounts.custom(d) {
                amounts.set_custom(d.clone(), *min);
            }
        }
    }

    /// The dimensions a minimum of exactly 0 exempts (a step declaring nothing there is
    /// not billed in them).
    pub fn exempt(&self) -> crate::ledger::Billing {
        crate::ledger::Billing::new(
            self.tokens == Some(0),
            self.cost_micro_usd == Some(0),
            self.custom
                .iter()
                .filter(|(_, v)| *v == 0)
                .map(|(d, _)| d.clone())
                .collect(),
        )
    }

    /// How `step`, reserved under this minimum, is billed: the exemptions of
    /// [`exempt`](Self::exempt), and, in tokens and money, the built-in floor of its action class
    /// ([`BUILTIN_MIN_COST`]) where this minimum names nothing and the step declares nothing.
    /// The ledger applies a floor only in a dimension that the agent's budget or a pool above
    /// it limits: an undeclared cost is never reserved as zero against a limit.
    pub fn billing(&self, step: &Step) -> crate::ledger::Billing {
        let (tokens, micro_usd) = BUILTIN_MIN_COST[step.action() as usize];
        let floor = |min: Option<u64>, declared: Option<u64>, builtin: u64| {
            if min.is_none() && declared.is_none() {
                builtin
            } else {
                0
            }
        };
        self.exempt().with_floor(
            floor(self.tokens, step.cost.tokens, tokens),
            floor(self.cost_micro_usd, step.cost.cost_micro_usd, micro_usd),
        )
    }
}

/// What an outcome reports a step really used, per dimension. A dimension it does not name
/// is settled as reserved: an agent that reports only tokens pays the money it reserved,
/// never nothing.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    tokens: Option<u64>,
    cost_micro_usd: Option<u64>,
    custom: Vec<(CustomDim, u64)>,
}

impl Usage {
    /// Reports nothing: every dimension settles as reserved.
    pub fn new() -> Self {
        Self::default()
    }

    /// Reports tokens.
    pub fn tokens(mut self, tokens: u64) -> Self {
        self.tokens = Some(tokens);
        self
    }

    /// Reports money, in micro-USD.
    pub fn cost_micro_usd(mut self, micro_usd: u64) -> Self {
        self.cost_micro_usd = Some(micro_usd);
        self
    }

    /// Reports a custom dimension.
    pub fn custom(mut self, dim: CustomDim, amount: u64) -> Self {
        match self.custom.binary_search_by(|(d, _)| d.cmp(&dim)) {
            Ok(i) => self.custom[i].1 = amount,
            Err(i) => self.custom.insert(i, (dim, amount)),
        }
        self
    }

    /// Reported tokens, if any.
    pub fn reported_tokens(&self) -> Option<u64> {
        self.tokens
    }

    /// Reported money in micro-USD, if any.
    pub fn reported_cost_micro_usd(&self) -> Option<u64> {
        self.cost_micro_usd
    }

    /// Reported custom dimensions.
    pub fn reported_custom(&self) -> &[(CustomDim, u64)] {
        &self.custom
    }

    /// True when no dimension is reported.
    pub fn is_empty(&self) -> bool {
        self.tokens.is_none() && self.cost_micro_usd.is_none() && self.custom.is_empty()
    }

    /// Checks every reported amount against [`MAX_STEP_AMOUNT`] (the HTTP edge checks
    /// while reading; the kernel checks again for library callers).
    pub fn check(&self) -> Result<(), CostError> {
        if let Some(t) = self.tokens {
            bounded(|| "outcome.cost.tokens".into(), t)?;
        }
        if let Some(m) = self.cost_micro_usd {
            bounded(|| "outcome.cost.cost_micro_usd".into(), m)?;
        }
        for (d, v) in &self.custom {
            bounded(|| format!("outcome.cost.custom.{}", d.as_str()), *v)?;
        }
        Ok(())
    }

    /// What the step used: `reserved`, with every reported dimension replaced by the report.
    /// `steps` and `risk` are always as reserved.
    pub fn settle_against(&self, reserved: &Amounts) -> Amounts {
        let mut actual = reserved.clone();
        if let Some(t) = self.tokens {
            actual.set(LedgerDim::Tokens, t);
        }
        if let Some(m) = self.cost_micro_usd {
            actual.set(LedgerDim::CostMicroUsd, m);
        }
        for (d, v) in &self.custom {
            actual.set_custom(d.clone(), *v);
        }
        actual
    }
}

impl From<&Cost> for Usage {
    /// A full report: tokens and money as given, and the custom dimensions listed (others
    /// settle as reserved).
    fn from(c: &Cost) -> Self {
        Usage {
            tokens: Some(c.tokens()),
            cost_micro_usd: Some(c.cost_micro_usd()),
            custom: c.custom.clone(),
        }
    }
}

/// The `cost` object of an outcome's JSON: every dimension a step can declare, each
/// optional. Money is `cost_usd` (dollars) or `cost_micro_usd` (an integer), not both.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUsage {
    /// Tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens: Option<u64>,
    /// Dollars.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost_usd: Option<f64>,
    /// Micro-dollars.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost_micro_usd: Option<u64>,
    /// Custom dimensions by name (each once).
    #[serde(
        default,
        skip_serializing_if = "std::collections::BTreeMap::is_empty",
        deserialize_with = "unique_custom"
    )]
    pub custom: std::collections::BTreeMap<String, u64>,
}

impl RawUsage {
    /// Checks the report as a step's cost is checked (names, bounds, one spelling of money);
    /// errors name the field under `prefix` (e.g. `outcome.cost`).
    pub fn parse(self, prefix: &str) -> Result<Usage, CostError> {
        let tokens = match self.tokens {
            Some(t) => Some(bounded(|| format!("{prefix}.tokens"), t)?),
            None => None,
        };
        Ok(Usage {
            tokens,
            cost_micro_usd: money(prefix, self.cost_usd, self.cost_micro_usd)?,
            custom: customs(prefix, self.custom.into_iter())?,
        })
    }
}

/// What the agent reports about itself with a step.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Signals {
    progress: Option<f64>,
    risk_micro: u64,
}

impl Signals {
    /// Progress towards the goal in [0, 1], if the agent reports it.
    pub fn progress(&self) -> Option<f64> {
        self.progress
    }

    /// The step's risk score in micro-units.
    pub fn risk_micro(&self) -> u64 {
        self.risk_micro
    }
}

/// A validated step. Cheap to clone (the tool name is shared; args are cloned).
#[derive(Clone, Debug, PartialEq)]
pub struct Step {
    tool: Arc<str>,
    action: ActionClass,
    args: Value,
    cost: Cost,
    signals: Signals,
    fingerprint: u64,
    tool_key: u64,
    /// Set by whoever settles the step itself (the enforcement proxy): only an outcome with
    /// the same seal settles it. Never read from JSON, never journaled.
    seal: Option<u64>,
}

impl Step {
    /// The step sealed with `seal`: once allowed, only an outcome carrying the same seal
    /// ([`Outcome::with_seal`](crate::Outcome::with_seal)) settles it, so a proxy that
    /// settles the step from what it saw cannot be raced by the agent reporting its own
    /// (cheaper) outcome. The seal is never serialized.
    pub fn sealed(mut self, seal: u64) -> Self {
        self.seal = Some(seal);
        self
    }

    /// The step's seal, if it is sealed.
    pub fn seal(&self) -> Option<u64> {
        self.seal
    }

    /// Starts a step for `tool` with action class `action`.
    pub fn builder(tool: impl Into<String>, action: ActionClass) -> StepBuilder {
        StepBuilder {
            tool: tool.into(),
            action,
            args: Value::Object(Default::default()),
            tokens: None,
            cost_micro_usd: None,
            custom: Vec::new(),
            progress: None,
            risk: 0.0,
        }
    }

    /// The tool name.
    pub fn tool(&self) -> &str {
        &self.tool
    }

    /// The action class.
    pub fn action(&self) -> ActionClass {
        self.action
    }

    /// The arguments.
    pub fn args(&self) -> &Value {
        &self.args
    }

    /// The expected cost.
    pub fn cost(&self) -> &Cost {
        &self.cost
    }

    /// The signals.
    pub fn signals(&self) -> &Signals {
        &self.signals
    }

    /// A stable 64-bit hash of tool (without case: `Shell` is `shell`) and args (object keys
    /// in sorted order), used to spot an agent repeating itself. Stable across runs and
    /// platforms.
    pub fn fingerprint(&self) -> u64 {
        self.fingerprint
    }

    /// A stable hash of tool (without case) and action class, used to count distinct tools
    /// tried.
    pub fn tool_key(&self) -> u64 {
        self.tool_key
    }

    /// What this step reserves in the ledger: one step, its tokens, money, risk and customs.
    pub fn reservation(&self) -> Amounts {
        self.cost.to_amounts(1, self.signals.risk_micro)
    }

    /// Converts to the wire shape (for journals and events).
    pub fn to_raw(&self) -> RawStep {
        RawStep {
            tool: self.tool.to_string(),
            action: self.action,
            args: self.args.clone(),
            cost: RawCost {
                tokens: self.cost.tokens,
                cost_usd: None,
                cost_micro_usd: self.cost.cost_micro_usd,
                custom: self
                    .cost
                    .custom
                    .iter()
                    .map(|(d, v)| (d.as_str().to_string(), *v))
                    .collect(),
            },
            signals: RawSignals {
                progress: self.signals.progress,
                risk: Some(self.signals.risk_micro as f64 / MICROS_PER_UNIT as f64),
            },
        }
    }
}

/// Collects a step's fields; [`StepBuilder::build`] checks them.
#[derive(Clone, Debug)]
pub struct StepBuilder {
    tool: String,
    action: ActionClass,
    args: Value,
    tokens: Option<u64>,
    cost_micro_usd: Option<u64>,
    custom: Vec<(String, u64)>,
    progress: Option<f64>,
    risk: f64,
}

impl StepBuilder {
    /// The arguments, as JSON.
    pub fn args(mut self, args: Value) -> Self {
        self.args = args;
        self
    }

    /// Expected tokens.
    pub fn tokens(mut self, tokens: u64) -> Self {
        self.tokens = Some(tokens);
        self
    }

    /// Expected money in micro-USD.
    pub fn cost_micro_usd(mut self, micro_usd: u64) -> Self {
        self.cost_micro_usd = Some(micro_usd);
        self
    }

    /// Expected use of a custom dimension.
    pub fn custom(mut self, dim: impl Into<String>, amount: u64) -> Self {
        self.custom.push((dim.into(), amount));
        self
    }

    /// Reported progress in [0, 1].
    pub fn progress(mut self, progress: f64) -> Self {
        self.progress = Some(progress);
        self
    }

    /// Reported risk score in [0, 1000].
    pub fn risk(mut self, risk: f64) -> Self {
        self.risk = risk;
        self
    }

    /// Checks every field and makes the step.
    pub fn build(self) -> Result<Step, StepError> {
        let custom = customs("step.cost", self.custom.into_iter())?;
        validate(
            self.tool,
            self.action,
            accept_args(self.args)?,
            self.tokens,
            self.cost_micro_usd,
            custom,
            self.progress,
            self.risk,
        )
    }
}

/// Checks every field; `args` has had its shape checked by the caller ([`accept_args`], or
/// [`journaled_args`] for a step an earlier version journaled).
#[allow(clippy::too_many_arguments)]
fn validate(
    tool: String,
    action: ActionClass,
    args: Value,
    tokens: Option<u64>,
    cost_micro_usd: Option<u64>,
    custom: Vec<(CustomDim, u64)>,
    progress: Option<f64>,
    risk: f64,
) -> Result<Step, StepError> {
    if tool.is_empty() {
        return Err(StepError::EmptyTool);
    }
    if tool.len() > MAX_TOOL_LEN {
        return Err(StepError::ToolTooLong(tool.len()));
    }
    if let Some(found) = tool.chars().find(|c| !c.is_ascii_graphic()) {
        return Err(StepError::BadToolChar { tool, found });
    }
    if !(risk.is_finite() && (0.0..=MAX_RISK).contains(&risk)) {
        return Err(StepError::BadRisk(risk));
    }
    if let Some(p) = progress {
        if !(p.is_finite() && (0.0..=1.0).contains(&p)) {
            return Err(StepError::BadProgress(p));
        }
    }
    bounded(|| "step.cost.tokens".into(), tokens.unwrap_or(0))?;
    bounded(
        || "step.cost.cost_micro_usd".into(),
        cost_micro_usd.unwrap_or(0),
    )?;
    // Tool names are identities without case (`Shell` is `shell`, as the policy reads them):
    // the repeat and exploration counts hash the same form (the name is printable ASCII).
    let tool_id = tool.to_ascii_lowercase();
    let mut hasher = Fnv64::new();
    hasher.write(tool_id.as_bytes());
    hasher.write_u8(0xff);
    let mut nodes = 0usize;
    hash_value(&args, 0, &mut nodes, &mut hasher)?;
    let fingerprint = hasher.finish();
    let mut tool_hasher = Fnv64::new();
    tool_hasher.write(tool_id.as_bytes());
    tool_hasher.write_u8(action as u8);
    let mut cost = Cost {
        tokens,
        cost_micro_usd,
        custom: Vec::new(),
    };
    for (d, v) in custom {
        cost = cost.with_custom(d, v);
    }
    Ok(Step {
        tool: Arc::from(tool),
        action,
        args,
        cost,
        signals: Signals {
            progress,
            risk_micro: units_to_micros(risk),
        },
        fingerprint,
        tool_key: tool_hasher.finish(),
        seal: None,
    })
}

/// `args` as the kernel takes them: a JSON object. A string holding a JSON object (the OpenAI
/// tool-call `arguments` format) is decoded, once; its keys must be unique, as in the step
/// JSON itself. Anything else (an array, a number, `null`, a string holding anything but an
/// object) is refused: a rule on `args.command` must never be skipped because the agent
/// wrapped its arguments differently from what the rule expects.
fn accept_args(args: Value) -> Result<Value, StepError> {
    match args {
        Value::Object(_) => Ok(args),
        Value::String(text) => {
            let mut de = serde_json::Deserializer::from_str(&text);
            let decoded = UniqueKeys::deserialize(&mut de)
                .and_then(|v| de.end().map(|()| v.0))
                .map_err(|e| StepError::ArgsBadString(e.to_string()))?;
            match decoded {
                Value::Object(_) => Ok(decoded),
                other => Err(StepError::ArgsBadString(format!(
                    "it holds {}",
                    json_kind(&other)
                ))),
            }
        }
        other => Err(StepError::ArgsNotObject(json_kind(&other))),
    }
}

/// `args` of a step an earlier version journaled: as [`accept_args`] reads them when it can,
/// else as they were (versions before args had to be objects journaled arrays, text and
/// numbers). A policy that judges such a step again finds no object at its paths: doubt.
fn journaled_args(args: Value) -> Result<Value, StepError> {
    match args {
        Value::Object(_) => Ok(args),
        other => Ok(accept_args(other.clone()).unwrap_or(other)),
    }
}

/// Reads a journaled step (`KernelRecord` payloads): as [`Step`]'s deserializer does, except
/// that `args` of any shape are kept (decoded as today when they can be, else as written), so
/// a journal written before args had to be objects still recovers and replays. For journals only: steps from agents always
/// go through [`Step`]'s own deserializer.
pub fn deserialize_journaled<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Step, D::Error> {
    let raw = RawStep::deserialize(d)?;
    raw.into_step(journaled_args)
        .map_err(serde::de::Error::custom)
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Reads JSON text whose objects never repeat a key (the rule of [`Step`]'s reader, for
/// callers that build a step's args from other text, such as the enforcement proxy).
///
/// # Errors
/// The syntax error, or the key repeated.
pub fn parse_unique_json(text: &str) -> Result<Value, serde_json::Error> {
    serde_json::from_str::<UniqueKeys>(text).map(|u| u.0)
}

/// A JSON value whose objects never repeat a key. `serde_json::Value` keeps the last of
/// repeated keys while many tools read the first, so a policy could judge one value while the
/// tool runs another: a repeated key is refused instead.
struct UniqueKeys(Value);

impl<'de> Deserialize<'de> for UniqueKeys {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(UniqueKeysVisitor).map(UniqueKeys)
    }
}

struct UniqueKeysVisitor;

impl<'de> serde::de::Visitor<'de> for UniqueKeysVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_string()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        UniqueKeys::deserialize(d).map(|v| v.0)
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut out = Vec::new();
        while let Some(UniqueKeys(v)) = seq.next_element()? {
            out.push(v);
        }
        Ok(Value::Array(out))
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = serde_json::Map::new();
        while let Some(key) = map.next_key::<String>()? {
            let UniqueKeys(v) = map.next_value()?;
            if out.contains_key(&key) {
                return Err(serde::de::Error::custom(format!(
                    "an object repeats the key {key:?}; give each key once"
                )));
            }
            out.insert(key, v);
        }
        Ok(Value::Object(out))
    }
}

fn unique_args<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Value, D::Error> {
    UniqueKeys::deserialize(d)
        .map(|v| v.0)
        .map_err(|e| serde::de::Error::custom(format!("step.args: {e}")))
}

/// A cost's `custom` object with each dimension once: read into a map, a repeated name would
/// keep its last copy (`{"gpu": 5, "gpu": 0}` reserved at 0).
fn unique_custom<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<std::collections::BTreeMap<String, u64>, D::Error> {
    struct Custom;
    impl<'de> serde::de::Visitor<'de> for Custom {
        type Value = std::collections::BTreeMap<String, u64>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("an object of custom dimensions and their amounts")
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(
            self,
            mut map: A,
        ) -> Result<Self::Value, A::Error> {
            let mut out = std::collections::BTreeMap::new();
            while let Some((name, amount)) = map.next_entry::<String, u64>()? {
                if out.contains_key(&name) {
                    return Err(serde::de::Error::custom(format!(
                        "cost.custom repeats the dimension {name:?}; give each once"
                    )));
                }
                out.insert(name, amount);
            }
            Ok(out)
        }
    }
    d.deserialize_map(Custom)
}

/// FNV-1a, 64 bit: tiny, stable across platforms and Rust versions (unlike `DefaultHasher`),
/// which replay needs.
struct Fnv64(u64);

impl Fnv64 {
    fn new() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }
    fn write_u8(&mut self, b: u8) {
        self.write(&[b]);
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

/// Hashes a JSON value canonically (serde_json's map is a BTreeMap: keys come sorted) and
/// enforces the depth and size bounds on the way.
/// Hashes a text value in the form the repeat count reads: its canonical form
/// ([`crate::policy::text::canonical`]: invisible characters, width and case folded, trimmed),
/// without quotes (`"`, `'`, `` ` ``) or trailing `;`, and with each run of whitespace or of
/// `/` written once, so an agent cannot escape the loop detector by respelling one call
/// (`cat /tmp/x`, ` cat  "/tmp//x";`). Lossy on purpose: two texts that differ only so count
/// as the same call; rules never read this form.
fn hash_repeat_form(s: &str, h: &mut Fnv64) {
    let canonical = crate::policy::text::canonical(s);
    let text = canonical.trim_end_matches(|c: char| c == ';' || c.is_whitespace());
    let mut last = '\0';
    for c in text.chars() {
        if matches!(c, '"' | '\'' | '`') {
            continue;
        }
        let c = if c.is_whitespace() { ' ' } else { c };
        if c == last && matches!(c, ' ' | '/') {
            continue;
        }
        last = c;
        let mut buf = [0u8; 4];
        h.write(c.encode_utf8(&mut buf).as_bytes());
    }
}

/// Hashes a number by its normalized decimal parts: one tag for every spelling of it.
fn hash_decimal(d: &crate::policy::decimal::Decimal, h: &mut Fnv64) {
    let (neg, digits, exp) = d.parts();
    h.write_u8(2);
    h.write_u8(neg as u8);
    h.write(&(digits.len() as u64).to_le_bytes());
    h.write(digits);
    h.write(&exp.to_le_bytes());
}

fn hash_value(v: &Value, depth: usize, nodes: &mut usize, h: &mut Fnv64) -> Result<(), StepError> {
    if depth > MAX_ARGS_DEPTH {
        return Err(StepError::ArgsTooDeep);
    }
    *nodes += 1;
    if *nodes > MAX_ARGS_NODES {
        return Err(StepError::ArgsTooLarge);
    }
    match v {
        Value::Null => h.write_u8(0),
        Value::Bool(b) => {
            h.write_u8(1);
            h.write_u8(*b as u8);
        }
        Value::Number(n) => {
            let text = n.to_string();
            match crate::policy::decimal::Decimal::parse(&text) {
                Some(d) => hash_decimal(&d, h),
                None => {
                    h.write_u8(2);
                    h.write(text.as_bytes());
                    h.write_u8(0xff);
                }
            }
        }
        // A number written as text is that number, as rules read it (`"5.00"` is `5`).
        Value::String(s) => match crate::policy::decimal::Decimal::parse(s) {
            Some(d) => hash_decimal(&d, h),
            None => {
                h.write_u8(3);
                hash_repeat_form(s, h);
                // 0xff never occurs in UTF-8: the end of the text, unambiguously.
                h.write_u8(0xff);
            }
        },
        Value::Array(items) => {
            h.write_u8(4);
            h.write(&(items.len() as u64).to_le_bytes());
            for item in items {
                hash_value(item, depth + 1, nodes, h)?;
            }
        }
        Value::Object(map) => {
            h.write_u8(5);
            h.write(&(map.len() as u64).to_le_bytes());
            // Keys as rules read them (`URL` is `url`), in the same lossy form as texts.
            for (k, item) in map {
                hash_repeat_form(k, h);
                h.write_u8(0xff);
                hash_value(item, depth + 1, nodes, h)?;
            }
        }
    }
    Ok(())
}

/// The step JSON as it arrives. Deserializing a [`Step`] goes through this and validates.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStep {
    /// Tool name.
    pub tool: String,
    /// Action class.
    pub action: ActionClass,
    /// Arguments: a JSON object, or a string holding one (decoded); `{}` when absent. A key
    /// repeated in an object is refused.
    #[serde(default = "empty_object", deserialize_with = "unique_args")]
    pub args: Value,
    /// Expected cost.
    #[serde(default)]
    pub cost: RawCost,
    /// Signals.
    #[serde(default)]
    pub signals: RawSignals,
}

fn empty_object() -> Value {
    Value::Object(Default::default())
}

/// The `cost` object of the step JSON. Money is `cost_usd` (a decimal number of dollars,
/// rounded to the micro-dollar) or `cost_micro_usd` (an integer), not both.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCost {
    /// Tokens (absent: not declared, which is not zero where a budget limits tokens).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens: Option<u64>,
    /// Dollars.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost_usd: Option<f64>,
    /// Micro-dollars.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost_micro_usd: Option<u64>,
    /// Custom dimensions by name (each once).
    #[serde(
        default,
        skip_serializing_if = "std::collections::BTreeMap::is_empty",
        deserialize_with = "unique_custom"
    )]
    pub custom: std::collections::BTreeMap<String, u64>,
}

/// The `signals` object of the step JSON.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSignals {
    /// Progress in [0, 1].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<f64>,
    /// Risk score in [0, 1000].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub risk: Option<f64>,
}

impl TryFrom<RawStep> for Step {
    type Error = StepError;

    fn try_from(raw: RawStep) -> Result<Self, Self::Error> {
        raw.into_step(accept_args)
    }
}

impl RawStep {
    /// Checks the step, with `args` checked for shape by `args`.
    fn into_step(self, args: fn(Value) -> Result<Value, StepError>) -> Result<Step, StepError> {
        let raw = self;
        let cost_micro_usd = money("step.cost", raw.cost.cost_usd, raw.cost.cost_micro_usd)?;
        let custom = customs("step.cost", raw.cost.custom.into_iter())?;
        validate(
            raw.tool,
            raw.action,
            args(raw.args)?,
            raw.cost.tokens,
            cost_micro_usd,
            custom,
            raw.signals.progress,
            raw.signals.risk.unwrap_or(0.0),
        )
    }
}

/// Dollars (JSON number) to integer micro-dollars, rounded to the nearest micro-dollar; a
/// positive amount below one micro-dollar becomes 1, never 0 ([`units_to_micros`]). Refused
/// when negative, not finite or above [`MAX_COST_USD`].
pub fn usd_to_micro(usd: f64) -> Result<u64, CostError> {
    usd_micros(|| "cost_usd".into(), usd)
}

fn usd_micros(field: impl FnOnce() -> String, usd: f64) -> Result<u64, CostError> {
    if !(usd.is_finite() && (0.0..=MAX_COST_USD).contains(&usd)) {
        return Err(CostError::BadUsd {
            field: field(),
            value: usd,
        });
    }
    Ok(units_to_micros(usd))
}

impl<'de> Deserialize<'de> for Step {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = RawStep::deserialize(d)?;
        Step::try_from(raw).map_err(serde::de::Error::custom)
    }
}

impl Serialize for Step {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.to_raw().serialize(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn huge_numbers_in_errors_are_written_short() {
        for (field, value) in [
            ("cost", json!({"cost_usd": 1e308})),
            ("signals", json!({"risk": 1e300})),
        ] {
            let err = serde_json::from_value::<Step>(
                json!({"tool": "shell", "action": "execute", field: value}),
            )
            .unwrap_err()
            .to_string();
            assert!(err.contains("= 1e30") && err.len() < 200, "{err}");
        }
        assert_eq!(short(0.5), "0.5");
    }

    #[test]
    fn step_json_is_validated_on_deserialize() {
        let ok: Step = serde_json::from_value(json!({
            "tool": "shell", "action": "execute", "args": {"command": "ls"},
            "cost": {"tokens": 1200, "cost_usd": 0.004}, "signals": {"progress": 0.4, "risk": 0.5}
        }))
        .unwrap();
        assert_eq!(ok.cost().cost_micro_usd(), 4_000);
        assert_eq!(ok.signals().risk_micro(), 500_000);
        let bad = serde_json::from_value::<Step>(json!({
            "tool": "shell", "action": "execute", "signals": {"risk": -1.0}
        }));
        assert!(bad.unwrap_err().to_string().contains("step.signals.risk"));
        let unknown = serde_json::from_value::<Step>(json!({"tool": "x", "action": "fly"}));
        assert!(unknown.is_err());
        let typo =
            serde_json::from_value::<Step>(json!({"tool": "x", "action": "read", "cots": {}}));
        assert!(typo.unwrap_err().to_string().contains("cots"));
        let nan_cost = Step::builder("x", ActionClass::Read).risk(f64::NAN).build();
        assert!(nan_cost.is_err());
        let spaced = Step::builder("a b", ActionClass::Read).build();
        assert!(matches!(spaced, Err(StepError::BadToolChar { .. })));
    }

    #[test]
    fn args_are_an_object_or_a_string_holding_one() {
        let parse = |args: &str| {
            serde_json::from_str::<Step>(&format!(
                r#"{{"tool": "shell", "action": "execute", "args": {args}}}"#
            ))
        };
        let direct = parse(r#"{"command": "rm -rf /"}"#).unwrap();
        let encoded = parse(r#""{\"command\": \"rm -rf /\"}""#).unwrap();
        assert_eq!(encoded.args(), direct.args());
        assert_eq!(encoded.fingerprint(), direct.fingerprint());
        for (bad, why) in [
            (r#"["rm", "-rf", "/"]"#, "got an array"),
            ("null", "got null"),
            ("42", "got a number"),
            (r#""rm -rf /""#, "does not hold a JSON object"),
            (r#""[\"rm\"]""#, "it holds an array"),
            (r#""{\"a\": 1} x""#, "does not hold a JSON object"),
            (
                r#"{"command": "ls", "command": "rm -rf /"}"#,
                "repeats the key",
            ),
            (r#""{\"a\": {\"b\": 1, \"b\": 2}}""#, "repeats the key"),
        ] {
            let err = parse(bad).unwrap_err().to_string();
            assert!(err.contains("step.args"), "{bad}: {err}");
            assert!(err.contains(why), "{bad}: {err}");
        }
        // A custom dimension named twice is refused, in a step's cost and an outcome's.
        let twice = r#"{"tool": "t", "action": "read", "cost": {"custom": {"gpu": 5, "gpu": 0}}}"#;
        let err = serde_json::from_str::<Step>(twice).unwrap_err().to_string();
        assert!(err.contains("repeats the dimension \"gpu\""), "{err}");
        let err = serde_json::from_str::<RawUsage>(r#"{"custom": {"gpu": 5, "gpu": 0}}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("repeats the dimension"), "{err}");
        let once = r#"{"tool": "t", "action": "read", "cost": {"custom": {"gpu": 5, "GPU": 1}}}"#;
        assert!(serde_json::from_str::<Step>(once).is_ok());
        let built = Step::builder("t", ActionClass::Read)
            .args(json!(["x"]))
            .build();
        assert_eq!(built.unwrap_err(), StepError::ArgsNotObject("an array"));
    }

    #[test]
    fn fingerprint_ignores_key_order_but_not_values() {
        let a: Step =
            serde_json::from_str(r#"{"tool":"t","action":"read","args":{"a":1,"b":[true,"x"]}}"#)
                .unwrap();
        let b: Step =
            serde_json::from_str(r#"{"tool":"t","action":"read","args":{"b":[true,"x"],"a":1}}"#)
                .unwrap();
        let c: Step =
            serde_json::from_str(r#"{"tool":"t","action":"read","args":{"b":[true,"y"],"a":1}}"#)
                .unwrap();
        assert_eq!(a.fingerprint(), b.fingerprint());
        assert_ne!(a.fingerprint(), c.fingerprint());
    }

    /// Respellings of one call count as repeats: the loop detector reads texts in a lossy
    /// canonical form; other calls stay apart.
    #[test]
    fn fingerprint_reads_respellings_of_one_call_as_the_same() {
        let fp = |cmd: &str| {
            Step::builder("shell", ActionClass::Execute)
                .args(json!({ "command": cmd }))
                .build()
                .unwrap()
                .fingerprint()
        };
        let base = fp("cat /tmp/x");
        for same in [
            "cat /tmp/x ",
            " cat /tmp/x",
            "cat  /tmp/x",
            "\tcat /tmp/x",
            "cat /tmp//x",
            "cat \"/tmp/x\"",
            "cat '/tmp/x'",
            "cat /tmp/x;",
            "CAT /TMP/X",
            "ｃａｔ /tmp/x",
            "ca\u{200b}t /tmp/x",
        ] {
            assert_eq!(fp(same), base, "{same:?}");
        }
        for other in ["cat /tmp/y", "cat /tmp/xy", "cat/tmp/x", "cat /tmp /x"] {
            assert_ne!(fp(other), base, "{other:?}");
        }
        // Keys as rules read them, and numbers in any spelling.
        let args = |v: serde_json::Value| {
            Step::builder("web.fetch", ActionClass::Network)
                .args(v)
                .build()
                .unwrap()
                .fingerprint()
        };
        let url = args(json!({"url": "https://x.com"}));
        for key in ["URL", "Url", "url\u{200b}", "ｕｒｌ"] {
            assert_eq!(args(json!({ key: "https://x.com" })), url, "{key:?}");
        }
        let five = args(json!({"n": 5}));
        for n in [
            json!(5.0),
            json!("5"),
            json!("5.0"),
            json!("5.00"),
            json!(" 5e0 "),
        ] {
            assert_eq!(args(json!({ "n": n })), five, "{n}");
        }
        assert_ne!(args(json!({"n": 6})), five);
        assert_ne!(args(json!({"n": "-5"})), five);
        // A text ends where it ends: ["ab", "c"] is not ["a", "bc"].
        let arr = |v: serde_json::Value| {
            Step::builder("t", ActionClass::Read)
                .args(json!({ "a": v }))
                .build()
                .unwrap()
                .fingerprint()
        };
        assert_ne!(arr(json!(["ab", "c"])), arr(json!(["a", "bc"])));
    }

    #[test]
    fn deeply_nested_args_are_refused() {
        let mut v = json!(1);
        for _ in 0..40 {
            v = json!([v]);
        }
        let r = Step::builder("t", ActionClass::Read)
            .args(json!({ "deep": v }))
            .build();
        assert_eq!(r.unwrap_err(), StepError::ArgsTooDeep);
    }
}
