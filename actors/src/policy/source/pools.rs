//! `pools:`: the pool tree (parents before children, one root) with each pool's limits,
//! cascade rule, contagion breaker and restart strategy.

use crate::budget::Limits;
use crate::pool::{Breaker, CascadeRule, RestartPolicy, Scope, Strategy};
use crate::yaml::{suggest, Entry, Node, Reader, Value};

use super::super::model::PoolDef;
use super::{kinds, read_limits};

pub(super) fn read_pools(r: &mut Reader, n: &Node) -> Vec<PoolDef> {
    let Value::Seq(items) = &n.value else {
        r.expected(
            n,
            "pools",
            "a list",
            Some("write `pools:` followed by `- {path: swarm, limits: {...}}` items".into()),
        );
        return Vec::new();
    };
    let mut out: Vec<PoolDef> = Vec::new();
    for item in items {
        let Some(entries) = r.mapping(
            item,
            "a pool",
            &["path", "limits", "cascade", "breaker", "restart"],
        ) else {
            continue;
        };
        let get = |k: &str| entries.get(k);
        let Some(path_node) = get("path") else {
            r.error(
                item.pos,
                "a pool needs a `path`",
                Some("e.g. path: swarm/research".into()),
            );
            continue;
        };
        let Some(path) = r.text(path_node, "pool path") else {
            continue;
        };
        let segs: Vec<&str> = path.split('/').collect();
        if let Some(bad) = segs
            .iter()
            .find(|s| crate::ids::check_name("segment", s).is_err())
        {
            r.error(
                path_node.pos,
                format!("pool path {path:?} has a bad segment {bad:?}"),
                Some("segments use letters, digits, '.', '_', '-', ':'".into()),
            );
            continue;
        }
        if segs.len() >= crate::ledger::MAX_ACCOUNT_DEPTH {
            r.error(
                path_node.pos,
                format!(
                    "pool path {path:?} is deeper than {}",
                    crate::ledger::MAX_ACCOUNT_DEPTH - 1
                ),
                None,
            );
            continue;
        }
        if out.iter().any(|p| p.path == path) {
            r.error(
                path_node.pos,
                format!("pool {path:?} is declared twice"),
                None,
            );
            continue;
        }
        if segs.len() == 1 {
            if let Some(root) = out.iter().find(|p| !p.path.contains('/')) {
                r.error(
                    path_node.pos,
                    format!(
                        "pool {path:?} is a second root; the root is {:?}",
                        root.path
                    ),
                    Some(format!("nest it, e.g. {}/{path}", root.path)),
                );
                continue;
            }
        } else {
            let parent = &path[..path.rfind('/').expect("has a slash")];
            if !out.iter().any(|p| p.path == parent) {
                let hint = match suggest(parent, out.iter().map(|p| p.path.as_str())) {
                    Some(s) => format!(
                        "did you mean `{s}`? parents must be declared before their children"
                    ),
                    None => "declare the parent pool first (parents before children)".to_string(),
                };
                r.error(
                    path_node.pos,
                    format!("pool {path:?} has no parent pool {parent:?}"),
                    Some(hint),
                );
                continue;
            }
        }
        let limits = get("limits")
            .map(|v| read_limits(r, v, "limits"))
            .unwrap_or(Limits::UNLIMITED);
        let cascade = get("cascade").and_then(|v| read_cascade(r, v));
        let breaker = get("breaker").and_then(|v| read_breaker(r, v));
        let restart = get("restart").and_then(|v| read_restart(r, v));
        out.push(PoolDef {
            path,
            limits,
            cascade,
            breaker,
            restart,
            pos: item.pos,
        });
    }
    out
}

fn read_cascade(r: &mut Reader, n: &Node) -> Option<CascadeRule> {
    let entries = r.mapping(n, "cascade", &["on", "scope"])?;
    let mut on = Vec::new();
    let mut scope = None;
    for Entry {
        key: k, value: v, ..
    } in entries
    {
        if k == "on" {
            for item in r.one_or_more(v) {
                if let Some(kind) = r.named(item, "halt kind", &kinds()) {
                    on.push(kind);
                }
            }
        } else {
            scope = r.named(
                v,
                "cascade scope",
                &[
                    ("siblings", Scope::Siblings),
                    ("team", Scope::Team),
                    ("subtree", Scope::Subtree),
                    ("dependents", Scope::Dependents),
                ],
            );
        }
    }
    match scope {
        Some(scope) if !on.is_empty() => Some(CascadeRule { on, scope }),
        _ => {
            r.error(
                n.pos,
                "cascade needs `on: [kinds]` and `scope`",
                Some("e.g. cascade: {on: [safety, overrisk], scope: siblings}".into()),
            );
            None
        }
    }
}

fn read_breaker(r: &mut Reader, n: &Node) -> Option<Breaker> {
    let entries = r.mapping(n, "breaker", &["threshold", "window"])?;
    let mut pct = None;
    let mut window = None;
    for Entry {
        key: k, value: v, ..
    } in entries
    {
        if k == "threshold" {
            let p = match &v.value {
                Value::Str(s) => s
                    .trim()
                    .strip_suffix('%')
                    .and_then(|x| x.trim().parse::<f64>().ok()),
                Value::Int(i) => Some(*i as f64),
                Value::Float(f) => Some(*f),
                _ => None,
            };
            match p {
                Some(p) if (1.0..=100.0).contains(&p) => pct = Some(p.round() as u32),
                _ => r.error(
                    v.pos,
                    "breaker.threshold must be a percentage from 1% to 100%",
                    Some("e.g. threshold: 50%".into()),
                ),
            }
        } else {
            window = r.duration_ms(v, "breaker.window").filter(|w| *w > 0);
        }
    }
    match (pct, window) {
        (Some(threshold_pct), Some(window_ms)) => Some(Breaker {
            threshold_pct,
            window_ms,
        }),
        _ => {
            r.error(
                n.pos,
                "breaker needs `threshold` and a non-zero `window`",
                Some("e.g. breaker: {threshold: 50%, window: 1m}".into()),
            );
            None
        }
    }
}

fn read_restart(r: &mut Reader, n: &Node) -> Option<RestartPolicy> {
    let entries = r.mapping(n, "restart", &["strategy", "max_restarts", "within"])?;
    let mut p = RestartPolicy::default();
    for Entry {
        key: k, value: v, ..
    } in entries
    {
        match &*k {
            "strategy" => {
                p.strategy = r.named(
                    v,
                    "restart strategy",
                    &[
                        ("one_for_one", Strategy::OneForOne),
                        ("one_for_all", Strategy::OneForAll),
                        ("rest_for_one", Strategy::RestForOne),
                    ],
                )?
            }
            "max_restarts" => p.max_restarts = r.uint32(v, "restart.max_restarts")?,
            _ => p.within_ms = r.duration_ms(v, "restart.within")?,
        }
    }
    Some(p)
}
