//! Minimum reservations: a tool's `min_cost` (`tools: {shell: {action: execute, min_cost:
//! {tokens: 500, cost_usd: 0.001}}}`) and the default per action class
//! (`defaults: {min_cost: {execute: {tokens: 100}}}`). A step declaring less is reserved at
//! the minimum; a minimum of exactly 0 exempts a step that declares nothing from a dimension.

use crate::budget::{CustomDim, MAX_STEP_AMOUNT};
use crate::step::{ActionClass, MinCost, MAX_COST_USD};
use crate::yaml::{Entry, Node, Reader};

use super::ACTIONS;

/// `{tokens, cost_usd, custom: {name: amount}}`, each at most [`MAX_STEP_AMOUNT`] (money at
/// most [`MAX_COST_USD`] dollars); money below one micro-dollar rounds up to 1.
pub(super) fn read_min_cost(r: &mut Reader, n: &Node, what: &str) -> MinCost {
    let mut min = MinCost::default();
    let Some(entries) = r.mapping(n, what, &["tokens", "cost_usd", "custom"]) else {
        return min;
    };
    for Entry { key, value: v, .. } in entries {
        match &*key {
            "tokens" => min.tokens = amount(r, v, &format!("{what}.tokens")),
            "cost_usd" => {
                let field = format!("{what}.cost_usd");
                min.cost_micro_usd = r.micros(v, &field, "0.001").and_then(|m| {
                    if m > MAX_STEP_AMOUNT {
                        r.error(
                            v.pos,
                            format!(
                                "{field} is above the largest accepted, {MAX_COST_USD} dollars"
                            ),
                            None,
                        );
                        None
                    } else {
                        Some(m)
                    }
                });
            }
            _ => {
                let Some(custom) = r.mapping(v, &format!("{what}.custom"), &[]) else {
                    continue;
                };
                for Entry {
                    key: k,
                    key_pos: kp,
                    value: x,
                } in custom
                {
                    match CustomDim::new(&k) {
                        Ok(dim) => {
                            let field = format!("{what}.custom.{k}");
                            if let Some(amount) = amount(r, x, &field) {
                                min.custom.push((dim, amount));
                            }
                        }
                        Err(e) => r.error(kp, e.to_string(), None),
                    }
                }
                min.custom.sort_by(|a, b| a.0.cmp(&b.0));
            }
        }
    }
    min
}

/// A whole number at most [`MAX_STEP_AMOUNT`].
fn amount(r: &mut Reader, n: &Node, what: &str) -> Option<u64> {
    let v = r.uint(n, what)?;
    if v > MAX_STEP_AMOUNT {
        r.error(
            n.pos,
            format!("{what} = {v} is above the largest accepted, {MAX_STEP_AMOUNT}"),
            None,
        );
        return None;
    }
    Some(v)
}

/// `defaults.min_cost`: one [`read_min_cost`] per action class (`read`, `write`, `execute`,
/// `network`, `spend`), indexed by `ActionClass as usize`.
pub(super) fn read_class_min_costs(r: &mut Reader, n: &Node) -> [MinCost; 5] {
    let mut out: [MinCost; 5] = Default::default();
    let names = ACTIONS.map(|(name, _)| name);
    let Some(entries) = r.mapping(n, "defaults.min_cost", &names) else {
        return out;
    };
    for Entry { key, value, .. } in entries {
        let class: ActionClass = ACTIONS
            .iter()
            .find(|(name, _)| *name == key)
            .map(|(_, c)| *c)
            .expect("the mapping admits action names only");
        out[class as usize] = read_min_cost(r, value, &format!("defaults.min_cost.{key}"));
    }
    out
}
