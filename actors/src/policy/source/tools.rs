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
        let canonical = name.to_ascii_lowercase();
        if let Some(first) = out
            .iter()
            .find(|t: &&ToolDef| t.name.eq_ignore_ascii_case(&name))
        {
            r.error(
                name_pos,
                format!(
                    "tool {name} is tool {} again (line {}): tool names compare without case",
                    first.name, first.pos.line
                ),
                Some(format!("register {canonical} once")),
            );
            continue;
        }
        let Some(fields) = r.mapping(
            v,
            &format!("tool {name}"),
            &["action", "risk", "min_cost", "upstream", "args"],
        ) else {
            continue;
        };
        let mut action = None;
        let mut risk_micro = 0;
        let mut min_cost = Default::default();
        let mut upstream = None;
        let mut args = None;
        for Entry {
            key: k, value: x, ..
        } in fields
        {
            match &*k {
                "action" => action = r.named(x, "action", &ACTIONS),
                "risk" => risk_micro = r.micros(x, "risk", "2.0").unwrap_or(0),
                "min_cost" => min_cost = read_min_cost(r, x, &format!("tool {name} min_cost")),
                "args" => args = read_args(r, x, &name),
                _ => {
                    if let Some(u) = r.text(x, "upstream") {
                        if is_upstream(&u) {
                            upstream = Some(u);
                        } else {
                            r.error(
                                x.pos,
                                format!("upstream {u:?} is neither the name of one of the node's `upstreams` nor an http:// or https:// URL"),
                                Some("e.g. upstream: search (with `search` under `upstreams` in the node's config)".into()),
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
            args,
            pos: name_pos,
        });
    }
    out
}

/// An upstream is named (`search`: letters, digits, `_`, `-`, `.`; the node's config says
/// where it is) or given as an `http://` / `https://` URL.
fn is_upstream(u: &str) -> bool {
    u.starts_with("http://")
        || u.starts_with("https://")
        || (!u.is_empty()
            && u.len() <= 64
            && u.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.')))
}

/// `args: [amount, currency]`: the top-level keys the tool takes.
fn read_args(r: &mut Reader, n: &Node, tool: &str) -> Option<Vec<String>> {
    let mut out: Vec<String> = Vec::new();
    let hint = Some("e.g. args: [amount, currency, recipient]".to_string());
    for item in r.sequence(n, &format!("tool {tool}: args"), hint)? {
        let Some(key) = r.text(item, "args key") else {
            continue;
        };
        let canonical = crate::policy::text::canonical(&key).into_owned();
        if canonical.is_empty() || out.contains(&canonical) {
            r.error(
                item.pos,
                format!("tool {tool}: args key {key:?} is empty or listed twice"),
                None,
            );
            continue;
        }
        out.push(canonical);
    }
    Some(out)
}
