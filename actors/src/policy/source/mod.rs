//! Reading policy YAML into a [`PolicyDoc`]: shape and values, with every problem reported
//! at its line and column, all at once. The YAML itself (syntax, limits, typed scalars,
//! unknown keys) is read by [`crate::yaml`]; this module knows the policy's keys.
//!
//! - this file: the document, `defaults`, budgets and limits;
//! - `pools`: the pool tree and each pool's cascade, breaker and restart settings;
//! - `tools`: the capability registry;
//! - `min_cost`: minimum reservations (a tool's `min_cost`, `defaults.min_cost` per action);
//! - `rule`: rules, their `match` conditions and rate limits.

mod min_cost;
mod pools;
mod rule;
mod tools;

use crate::budget::{Budgets, CustomDim, LedgerDim, Limits};
use crate::decision::{HaltKind, Verdict};
use crate::stagnation::StagnationConfig;
use crate::step::ActionClass;
use crate::yaml::{Entry, Node, Reader, Source};

use super::model::*;

pub use rule::{parse_path, DEFAULT_ROOT_POOL};

use pools::read_pools;
use rule::{read_rules, Declared};
use tools::read_tools;

/// Largest policy text accepted.
pub const MAX_POLICY_BYTES: usize = Source::BYTES_MAX_DEFAULT;
/// Deepest YAML nesting accepted.
pub const MAX_NESTING: usize = Source::DEPTH_MAX_DEFAULT;
/// Most rules in one policy.
pub const MAX_RULES: usize = 100_000;

/// A policy text: its bounds, and the words its messages use.
const POLICY: Source<'static> = Source {
    name: "policy",
    plural: "policies",
    bytes_max: MAX_POLICY_BYTES,
    depth_max: MAX_NESTING,
    too_large_hint: Some("split it or remove unused rules"),
    empty_hint: Some("start with `version: 1`"),
};

// Names come from the types themselves, so the policy language and the JSON can never drift.
pub(super) const VERDICTS: [(&str, Verdict); 4] = [
    (Verdict::Allow.name(), Verdict::Allow),
    (Verdict::Deny.name(), Verdict::Deny),
    (Verdict::RequireApproval.name(), Verdict::RequireApproval),
    (Verdict::Halt.name(), Verdict::Halt),
];

pub(super) const ACTIONS: [(&str, ActionClass); 5] = [
    (ActionClass::Read.name(), ActionClass::Read),
    (ActionClass::Write.name(), ActionClass::Write),
    (ActionClass::Execute.name(), ActionClass::Execute),
    (ActionClass::Network.name(), ActionClass::Network),
    (ActionClass::Spend.name(), ActionClass::Spend),
];

/// Every halt kind by its name.
pub(super) fn kinds() -> [(&'static str, HaltKind); 8] {
    HaltKind::ALL.map(|k| (k.name(), k))
}

/// Reads a policy. Returns the document when there were no errors; diagnostics (errors and
/// warnings) go to `r`.
pub(in crate::policy) fn read(r: &mut Reader, text: &str) -> Option<PolicyDoc> {
    let root = &r.parse(text, &POLICY)?;
    let top = r.mapping(
        root,
        "the policy",
        &[
            "version",
            "defaults",
            "default_decision",
            "pools",
            "tools",
            "rules",
        ],
    )?;
    let get = |k: &str| top.get(k);

    let mut version = 1;
    match get("version") {
        None => r.error(
            root.pos,
            "the policy has no `version`",
            Some("add `version: 1` at the top".into()),
        ),
        Some(v) => {
            if let Some(n) = r.uint(v, "version") {
                if n != 1 {
                    r.error(
                        v.pos,
                        format!("policy version {n} is not supported; this warden reads version 1"),
                        None,
                    );
                }
                version = n as u32;
            }
        }
    }
    let defaults = match get("defaults") {
        Some(d) => read_defaults(r, d),
        None => Defaults {
            budgets: Budgets::default(),
            stagnation: StagnationConfig::default(),
            approval_timeout_ms: crate::kernel::DEFAULT_APPROVAL_TIMEOUT_MS,
            heartbeat_timeout_ms: None,
            min_cost: Default::default(),
        },
    };
    let default_decision = match get("default_decision") {
        None => Verdict::Deny,
        Some(n) => r
            .named(n, "default_decision", &VERDICTS[..3])
            .unwrap_or(Verdict::Deny),
    };
    let errors_before_pools = r.error_count();
    let pools = get("pools").map(|n| read_pools(r, n)).unwrap_or_default();
    let pools_read = r.error_count() == errors_before_pools;
    let tools = get("tools").map(|n| read_tools(r, n)).unwrap_or_default();
    let declared = Declared {
        pools: pools_read.then(|| pools.iter().map(|p| p.path.as_str()).collect()),
        budgets: &defaults.budgets,
    };
    let rules = get("rules")
        .map(|n| read_rules(r, n, &declared))
        .unwrap_or_default();
    Some(PolicyDoc {
        version,
        defaults,
        default_decision,
        pools,
        tools,
        rules,
    })
}

fn read_defaults(r: &mut Reader, n: &Node) -> Defaults {
    let mut d = Defaults {
        budgets: Budgets::default(),
        stagnation: StagnationConfig::default(),
        approval_timeout_ms: crate::kernel::DEFAULT_APPROVAL_TIMEOUT_MS,
        heartbeat_timeout_ms: None,
        min_cost: Default::default(),
    };
    let Some(entries) = r.mapping(
        n,
        "defaults",
        &[
            "budgets",
            "stagnation",
            "approval_timeout",
            "heartbeat_timeout",
            "min_cost",
        ],
    ) else {
        return d;
    };
    for Entry { key, value: v, .. } in entries {
        match &*key {
            "budgets" => d.budgets = read_budgets(r, v),
            "stagnation" => {
                if let Some(e) = r.mapping(v, "defaults.stagnation", &["repeat_limit", "window"]) {
                    for Entry {
                        key: k, value: x, ..
                    } in e
                    {
                        let val = r.uint32(x, &format!("stagnation.{k}")).unwrap_or(0);
                        if k == "repeat_limit" {
                            d.stagnation.repeat_limit = val;
                        } else {
                            d.stagnation.window = val;
                        }
                    }
                    if let Err(msg) = d.stagnation.validate() {
                        r.error(v.pos, msg, None);
                    }
                }
            }
            "approval_timeout" => {
                if let Some(ms) = r.duration_ms(v, "approval_timeout") {
                    d.approval_timeout_ms = ms;
                }
            }
            "heartbeat_timeout" => {
                let ms = r.duration_ms(v, "heartbeat_timeout");
                // A warning, not an error: journals hold policies written before this check,
                // and recovery and replay read them with this parser.
                if ms.is_some_and(|ms| ms < crate::MIN_HEARTBEAT_TIMEOUT_MS) {
                    let msg = "heartbeat_timeout is below 1s: agents would be halted as lost before their first heartbeat";
                    r.warning(
                        v.pos,
                        msg,
                        Some("give 1s or more, or leave it out for none".into()),
                    );
                }
                d.heartbeat_timeout_ms = ms;
            }
            "min_cost" => d.min_cost = min_cost::read_class_min_costs(r, v),
            _ => {}
        }
    }
    d
}

fn read_custom(r: &mut Reader, n: &Node, what: &str) -> Vec<(CustomDim, u64)> {
    let mut out = Vec::new();
    if let Some(entries) = r.mapping(n, what, &[]) {
        for Entry {
            key: k,
            key_pos: kp,
            value: v,
        } in entries
        {
            match CustomDim::new(&k) {
                Ok(dim) => {
                    if let Some(x) = r.uint(v, &format!("{what}.{k}")) {
                        out.push((dim, x));
                    }
                }
                Err(e) => r.error(kp, e.to_string(), None),
            }
        }
    }
    out
}

fn read_budgets(r: &mut Reader, n: &Node) -> Budgets {
    let mut b = Budgets::default();
    let Some(entries) = r.mapping(
        n,
        "budgets",
        &[
            "steps",
            "tokens",
            "cost_usd",
            "risk",
            "wall_time",
            "failures",
            "exploration",
            "custom",
        ],
    ) else {
        return b;
    };
    for Entry { key, value: v, .. } in entries {
        match &*key {
            "steps" => b.steps = r.uint(v, "budgets.steps"),
            "tokens" => b.tokens = r.uint(v, "budgets.tokens"),
            "cost_usd" => b.cost_micro_usd = r.micros(v, "cost_usd", "5.00"),
            "risk" => b.risk_micro = r.micros(v, "risk", "10.0"),
            "wall_time" => b.wall_time_ms = r.duration_ms(v, "budgets.wall_time"),
            "failures" => b.failures = r.uint32(v, "budgets.failures"),
            "exploration" => b.exploration = r.uint32(v, "budgets.exploration"),
            "custom" => b.custom = read_custom(r, v, "budgets.custom"),
            _ => {}
        }
    }
    b
}

pub(super) fn read_limits(r: &mut Reader, n: &Node, what: &str) -> Limits {
    let mut l = Limits::UNLIMITED;
    let Some(entries) = r.mapping(n, what, &["steps", "tokens", "cost_usd", "risk", "custom"])
    else {
        return l;
    };
    for Entry { key, value: v, .. } in entries {
        match &*key {
            "steps" => l = l.with(LedgerDim::Steps, r.uint(v, "limits.steps")),
            "tokens" => l = l.with(LedgerDim::Tokens, r.uint(v, "limits.tokens")),
            "cost_usd" => l = l.with(LedgerDim::CostMicroUsd, r.micros(v, "cost_usd", "200")),
            "risk" => l = l.with(LedgerDim::RiskMicro, r.micros(v, "risk", "50.0")),
            "custom" => {
                for (d, x) in read_custom(r, v, "limits.custom") {
                    l = l.with_custom(d, x);
                }
            }
            _ => {}
        }
    }
    l
}
