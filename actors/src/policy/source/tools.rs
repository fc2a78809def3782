//! `tools:`: the capability registry (each tool's action class, base risk, minimum
//! reservation and upstream).

use std::sync::Arc;

use crate::yaml::{Entry, Node, Reader};

use super::super::model::ToolDef;
use super::min_cost::read_min_cost;
use super::ACTIONS;

pub(super) fn read_tools(r: &mut Reader, n: &Node) -> Vec<ToolDef> {
    let Some(entries) = r.mapping(n, "tools", &[]) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for Entry {
        key: name,
        key_pos: name_pos,
        value: v,
    } in entries
    {
        if name.is_empty()
            || name.len() > crate::step::MAX_TOOL_LEN
            || name.chars().any(|c| !c.is_ascii_graphic())
        {
            r.error(
                name_pos,
                format!(
                    "tool name {name:?} must be 1-{} printable characters without spaces",
                    crate::step::MAX_TOOL_LEN
                ),
                None,
            );
            continue;
        }
        let Some(fields) = r.mapping(
            v,
            &format!("tool {name}"),
            &["action", "risk", "min_cost", "upstream"],
        ) else {
            continue;
        };
        let mut action = None;
        let mut risk_micro = 0;
        let mut min_cost = Default::default();
        let mut upstream = None;
        for Entry {
            key: k, value: x, ..
        } in fields
        {
            match &*k {
                "action" => action = r.named(x, "action", &ACTIONS),
                "risk" => risk_micro = r.micros(x, "risk", "2.0").unwrap_or(0),
                "min_cost" => min_cost = read_min_cost(r, x, &format!("tool {name} min_cost")),
                _ => {
                    if let Some(u) = r.text(x, "upstream") {
                        if u.starts_with("http://") || u.starts_with("https://") {
                            upstream = Some(u);
                        } else {
                            r.error(
                                x.pos,
                                format!("upstream {u:?} is not an http:// or https:// URL"),
                                None,
                            );
                        }
                    }
                }
            }
        }
        let Some(action) = action else {
            r.error(
                v.pos,
                format!("tool {name} needs an `action` (read, write, execute, network or spend)"),
                None,
            );
            continue;
        };
        out.push(ToolDef {
            name: Arc::from(&*name),
            action,
            risk_micro,
            min_cost,
            upstream,
            pos: name_pos,
        });
    }
    out
}
