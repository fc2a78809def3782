//! Budget dimensions and the integer amounts the ledger counts.
//!
//! Four dimensions are *additive* and live in the [`crate::ledger`]: `steps`, `tokens`,
//! `cost_usd` (held as micro-dollars) and `risk` (held as micro-units of risk score), plus any
//! named custom dimension. Three are *agent-local* and live in the kernel: `wall_time`,
//! `failures` (consecutive) and `exploration` (distinct tools tried).

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::ids::{check_name, IdError};

/// Micro-units per unit: one dollar is 1,000,000 micro-dollars; a risk score of 1.0 is
/// 1,000,000 micro-risk.
pub const MICROS_PER_UNIT: u64 = 1_000_000;

/// Largest amount one step, one outcome or one tool's `min_cost` may carry in any dimension:
/// 10^15 tokens, micro-dollars (one billion dollars) or units of a custom dimension. Checked
/// where the amount enters (step and outcome JSON, the step builder, the policy); a bound
/// this far below `u64::MAX` keeps sums of many such amounts exact.
pub const MAX_STEP_AMOUNT: u64 = 1_000_000_000_000_000;

/// Largest budget or pool limit in any ledger dimension: 10^18 (a million million dollars in
/// micro-dollars). Checked at registration ([`Budgets::check`]).
pub const MAX_LIMIT_AMOUNT: u64 = 1_000_000_000_000_000_000;

/// Units (dollars, risk points) to integer micro-units: rounded to the nearest micro-unit,
/// except that a positive amount below half a micro-unit becomes 1, never 0 (a cost that
/// exists is never taken as zero). The caller checks that `units` is finite and in range.
pub fn units_to_micros(units: f64) -> u64 {
    let micros = (units * MICROS_PER_UNIT as f64).round() as u64;
    if micros == 0 && units > 0.0 {
        1
    } else {
        micros
    }
}

/// The additive dimensions, in the order [`Amounts::builtin`] stores them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum LedgerDim {
    /// One per step.
    Steps = 0,
    /// LLM tokens.
    Tokens = 1,
    /// Money in micro-USD.
    CostMicroUsd = 2,
    /// Risk score in micro-units.
    RiskMicro = 3,
}

impl LedgerDim {
    /// All additive built-in dimensions, in storage order.
    pub const ALL: [LedgerDim; 4] = [
        LedgerDim::Steps,
        LedgerDim::Tokens,
        LedgerDim::CostMicroUsd,
        LedgerDim::RiskMicro,
    ];

    /// The key of an integer amount of this dimension in JSON (`cost_micro_usd`, `risk_micro`:
    /// the unit is in the name, so nobody mistakes micro-dollars for dollars).
    pub const fn key(self) -> &'static str {
        match self {
            LedgerDim::Steps => "steps",
            LedgerDim::Tokens => "tokens",
            LedgerDim::CostMicroUsd => "cost_micro_usd",
            LedgerDim::RiskMicro => "risk_micro",
        }
    }

    /// The user-facing name (`cost_usd`, not `cost_micro_usd`: the unit is an internal detail
    /// of storage; [`Amounts`] documents it).
    pub const fn name(self) -> &'static str {
        match self {
            LedgerDim::Steps => "steps",
            LedgerDim::Tokens => "tokens",
            LedgerDim::CostMicroUsd => "cost_usd",
            LedgerDim::RiskMicro => "risk",
        }
    }

    /// `amount` of this dimension in the unit its [`name`](Self::name) reads in: dollars and
    /// risk points from their millionths (`100.013286`), counts as they are.
    pub fn show(self, amount: u64) -> String {
        match self {
            LedgerDim::CostMicroUsd | LedgerDim::RiskMicro => {
                let whole = amount / MICROS_PER_UNIT;
                match amount % MICROS_PER_UNIT {
                    0 => whole.to_string(),
                    frac => format!("{whole}.{}", format!("{frac:06}").trim_end_matches('0')),
                }
            }
            LedgerDim::Steps | LedgerDim::Tokens => amount.to_string(),
        }
    }
}

/// Every dimension a budget can limit.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Dimension {
    /// Effort: number of steps.
    Steps,
    /// LLM tokens.
    Tokens,
    /// Money (micro-USD inside).
    CostUsd,
    /// Sum of risk scores.
    Risk,
    /// Active wall time since the agent started (approval waits excluded).
    WallTime,
    /// Consecutive failed outcomes.
    Failures,
    /// Distinct tools tried.
    Exploration,
    /// A named, additive, user-defined dimension.
    Custom(CustomDim),
}

impl Dimension {
    /// The name used in policies, decisions and metrics.
    pub fn name(&self) -> &str {
        match self {
            Dimension::Steps => "steps",
            Dimension::Tokens => "tokens",
            Dimension::CostUsd => "cost_usd",
            Dimension::Risk => "risk",
            Dimension::WallTime => "wall_time",
            Dimension::Failures => "failures",
            Dimension::Exploration => "exploration",
            Dimension::Custom(c) => c.as_str(),
        }
    }
}

impl From<LedgerDim> for Dimension {
    fn from(d: LedgerDim) -> Self {
        match d {
            LedgerDim::Steps => Dimension::Steps,
            LedgerDim::Tokens => Dimension::Tokens,
            LedgerDim::CostMicroUsd => Dimension::CostUsd,
            LedgerDim::RiskMicro => Dimension::Risk,
        }
    }
}

impl fmt::Display for Dimension {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Names that custom dimensions may not take, because built-in dimensions own them.
const RESERVED_DIMS: [&str; 8] = [
    "steps",
    "tokens",
    "cost_usd",
    "cost_micro_usd",
    "risk",
    "wall_time",
    "failures",
    "exploration",
];

/// The validated name of a custom dimension (same character rules as agent ids, and not one
/// of the built-in names).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct CustomDim(Arc<str>);

impl CustomDim {
    /// Checks `name` and makes a dimension of it.
    pub fn new(name: impl AsRef<str>) -> Result<Self, IdError> {
        let name = name.as_ref();
        check_name("custom dimension", name)?;
        if RESERVED_DIMS.contains(&name) {
            return Err(IdError::Reserved(name.to_string()));
        }
        Ok(Self(Arc::from(name)))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for CustomDim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for CustomDim {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(d)?;
        CustomDim::new(raw).map_err(serde::de::Error::custom)
    }
}

/// A quantity in every additive dimension: what a step reserves, what a pool has spent.
///
/// Built-in dimensions sit in a fixed array (no allocation on the hot path); custom ones in a
/// short vector kept sorted by name, holding only non-zero entries.
#[derive(Clone, Default, PartialEq, Eq, Debug)]
pub struct Amounts {
    /// Indexed by [`LedgerDim`] as `usize`.
    pub builtin: [u64; 4],
    custom: Vec<(CustomDim, u64)>,
}

impl Amounts {
    /// Nothing in any dimension.
    pub const ZERO: Amounts = Amounts {
        builtin: [0; 4],
        custom: Vec::new(),
    };

    /// Amounts from the four built-in values.
    pub const fn new(steps: u64, tokens: u64, cost_micro_usd: u64, risk_micro: u64) -> Self {
        Self {
            builtin: [steps, tokens, cost_micro_usd, risk_micro],
            custom: Vec::new(),
        }
    }

    /// The value in one built-in dimension.
    pub fn get(&self, dim: LedgerDim) -> u64 {
        self.builtin[dim as usize]
    }

    /// Sets one built-in dimension.
    pub fn set(&mut self, dim: LedgerDim, value: u64) {
        self.builtin[dim as usize] = value;
    }

    /// The value in one custom dimension (0 when absent).
    pub fn custom(&self, dim: &CustomDim) -> u64 {
        self.custom
            .iter()
            .find(|(d, _)| d == dim)
            .map_or(0, |(_, v)| *v)
    }

    /// Sets one custom dimension (0 removes it).
    pub fn set_custom(&mut self, dim: CustomDim, value: u64) {
        match self.custom.binary_search_by(|(d, _)| d.cmp(&dim)) {
            Ok(i) if value == 0 => {
                self.custom.remove(i);
            }
            Ok(i) => self.custom[i].1 = value,
            Err(_) if value == 0 => {}
            Err(i) => self.custom.insert(i, (dim, value)),
        }
    }

    /// The custom dimensions with a non-zero value, sorted by name.
    pub fn custom_entries(&self) -> &[(CustomDim, u64)] {
        &self.custom
    }

    /// True when every dimension is zero.
    pub fn is_zero(&self) -> bool {
        self.builtin.iter().all(|v| *v == 0) && self.custom.is_empty()
    }

    /// `self + other`, saturating (amounts never wrap).
    pub fn saturating_add(&self, other: &Amounts) -> Amounts {
        let mut out = self.clone();
        for i in 0..4 {
            out.builtin[i] = out.builtin[i].saturating_add(other.builtin[i]);
        }
        for (d, v) in &other.custom {
            let cur = out.custom(d);
            out.set_custom(d.clone(), cur.saturating_add(*v));
        }
        out
    }

    /// `self - other`, floored at zero in every dimension.
    pub fn saturating_sub(&self, other: &Amounts) -> Amounts {
        let mut out = self.clone();
        for i in 0..4 {
            out.builtin[i] = out.builtin[i].saturating_sub(other.builtin[i]);
        }
        for (d, v) in &other.custom {
            let cur = out.custom(d);
            out.set_custom(d.clone(), cur.saturating_sub(*v));
        }
        out
    }

    /// The smaller of the two in every dimension (custom dimensions missing on one side count
    /// as zero there).
    pub fn min(&self, other: &Amounts) -> Amounts {
        let mut out = Amounts::ZERO;
        for i in 0..4 {
            out.builtin[i] = self.builtin[i].min(other.builtin[i]);
        }
        for (d, v) in &self.custom {
            out.set_custom(d.clone(), (*v).min(other.custom(d)));
        }
        out
    }
}

/// Upper bounds for an account in every additive dimension; `None` means unlimited.
#[derive(Clone, Default, PartialEq, Eq, Debug)]
pub struct Limits {
    builtin: [Option<u64>; 4],
    custom: Vec<(CustomDim, u64)>,
}

impl Limits {
    /// No limit anywhere.
    pub const UNLIMITED: Limits = Limits {
        builtin: [None; 4],
        custom: Vec::new(),
    };

    /// Sets (or clears, with `None`) one built-in limit.
    pub fn with(mut self, dim: LedgerDim, limit: Option<u64>) -> Self {
        self.builtin[dim as usize] = limit;
        self
    }

    /// Sets a custom-dimension limit.
    pub fn with_custom(mut self, dim: CustomDim, limit: u64) -> Self {
        match self.custom.binary_search_by(|(d, _)| d.cmp(&dim)) {
            Ok(i) => self.custom[i].1 = limit,
            Err(i) => self.custom.insert(i, (dim, limit)),
        }
        self
    }

    /// Sets (or, with `None`, removes) a custom-dimension limit.
    pub fn with_custom_opt(mut self, dim: CustomDim, limit: Option<u64>) -> Self {
        match limit {
            Some(l) => self.with_custom(dim, l),
            None => {
                self.custom.retain(|(d, _)| *d != dim);
                self
            }
        }
    }

    /// The limit of one built-in dimension.
    pub fn get(&self, dim: LedgerDim) -> Option<u64> {
        self.builtin[dim as usize]
    }

    /// The limit of one custom dimension (`None`: unlimited).
    pub fn custom(&self, dim: &CustomDim) -> Option<u64> {
        self.custom.iter().find(|(d, _)| d == dim).map(|(_, v)| *v)
    }

    /// The limited custom dimensions.
    pub fn custom_entries(&self) -> &[(CustomDim, u64)] {
        &self.custom
    }
}

/// What one agent may use in total. Additive dimensions become the limits of the agent's own
/// ledger account; the others are enforced by the kernel. `None` means unlimited.
#[derive(Clone, Default, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Budgets {
    /// Steps the agent may take.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub steps: Option<u64>,
    /// LLM tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens: Option<u64>,
    /// Money, in micro-USD (1 USD = 1,000,000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost_micro_usd: Option<u64>,
    /// Sum of risk scores, in micro-units (a score of 1.0 = 1,000,000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub risk_micro: Option<u64>,
    /// Active wall time in milliseconds (time parked for approval does not count).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wall_time_ms: Option<u64>,
    /// Consecutive failed outcomes tolerated; reaching it halts the agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failures: Option<u32>,
    /// Distinct tools the agent may try.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exploration: Option<u32>,
    /// Limits in named custom dimensions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub custom: Vec<(CustomDim, u64)>,
}

impl Budgets {
    /// Checks every amount against [`MAX_LIMIT_AMOUNT`]; the error names the first budget
    /// over it.
    pub fn check(&self) -> Result<(), String> {
        let named = [
            ("steps", self.steps),
            ("tokens", self.tokens),
            ("cost_micro_usd", self.cost_micro_usd),
            ("risk_micro", self.risk_micro),
        ];
        let customs = self.custom.iter().map(|(d, v)| (d.as_str(), Some(*v)));
        for (name, value) in named.into_iter().chain(customs) {
            if let Some(v) = value.filter(|v| *v > MAX_LIMIT_AMOUNT) {
                return Err(format!(
                    "budget {name} = {v} is above the largest accepted, {MAX_LIMIT_AMOUNT}"
                ));
            }
        }
        Ok(())
    }

    /// The additive part, as ledger limits for the agent's own account.
    pub fn ledger_limits(&self) -> Limits {
        let mut limits = Limits::UNLIMITED
            .with(LedgerDim::Steps, self.steps)
            .with(LedgerDim::Tokens, self.tokens)
            .with(LedgerDim::CostMicroUsd, self.cost_micro_usd)
            .with(LedgerDim::RiskMicro, self.risk_micro);
        for (d, v) in &self.custom {
            limits = limits.with_custom(d.clone(), *v);
        }
        limits
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_show_in_the_unit_their_name_reads_in() {
        assert_eq!(LedgerDim::CostMicroUsd.show(100_013_286), "100.013286");
        assert_eq!(LedgerDim::CostMicroUsd.show(1), "0.000001");
        assert_eq!(LedgerDim::RiskMicro.show(2_500_000), "2.5");
        assert_eq!(LedgerDim::CostMicroUsd.show(3_000_000), "3");
        assert_eq!(LedgerDim::Tokens.show(1_500), "1500");
    }

    #[test]
    fn custom_amounts_stay_sorted_and_drop_zeroes() {
        let a = CustomDim::new("gpu_seconds").unwrap();
        let b = CustomDim::new("api_calls").unwrap();
        let mut x = Amounts::ZERO;
        x.set_custom(a.clone(), 5);
        x.set_custom(b.clone(), 2);
        assert_eq!(x.custom_entries()[0].0, b);
        let y = x.saturating_sub(&x);
        assert!(y.is_zero());
        assert!(CustomDim::new("tokens").is_err());
    }
}
