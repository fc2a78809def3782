//! `rules:`: each rule's id, decision and halt kind, its `match` conditions (tool, action,
//! args, failures, steps, remaining budget, time window, team, detector) and rate limit.

use std::sync::Arc;

use serde_json::Value as Json;

use crate::budget::{Budgets, LedgerDim};
use crate::decision::Verdict;
use crate::policy::decimal::Decimal;
use crate::policy::detect::Detector;
use crate::policy::rate::MAX_WINDOW_RATE;
use crate::policy::shell::{CommandPattern, Compiled, FlagName};
use crate::policy::weburl::{Compiled as UrlCompiled, UrlPattern};
use crate::policy::{fspath, glob};
use crate::yaml::{one_of_hint, suggest, Entry, Node, Reader, Value};

use super::super::model::*;
use super::{kinds, ACTIONS, MAX_RULES, VERDICTS};

/// `a.b[0].c` -> segments; `items[*].url` and `headers.*` are wildcards.
pub fn parse_path(path: &str) -> Result<Vec<PathSeg>, String> {
    let mut out = Vec::new();
    if path.is_empty() {
        return Err("the path is empty".into());
    }
    for part in path.split('.') {
        let (key, mut idx) = match part.find('[') {
            Some(i) => (&part[..i], &part[i..]),
            None => (part, ""),
        };
        if key.is_empty() && out.is_empty() && idx.is_empty() {
            return Err(format!("empty segment in {path:?}"));
        }
        if key == "*" {
            out.push(PathSeg::AnyKey);
        } else if !key.is_empty() {
            out.push(PathSeg::Key(key.to_string()));
        } else if idx.is_empty() {
            return Err(format!("empty segment in {path:?}"));
        }
        while !idx.is_empty() {
            let close = idx
                .find(']')
                .ok_or_else(|| format!("unclosed [ in {path:?}"))?;
            let inner = &idx[1..close];
            if inner == "*" {
                out.push(PathSeg::AnyIndex);
            } else {
                let n: usize = inner
                    .parse()
                    .map_err(|_| format!("{inner:?} is not an array index in {path:?}"))?;
                out.push(PathSeg::Index(n));
            }
            idx = &idx[close + 1..];
            if !idx.is_empty() && !idx.starts_with('[') {
                return Err(format!("unexpected {idx:?} in {path:?}"));
            }
        }
    }
    Ok(out)
}

/// Checks that a glob compiles; reports it at its own position.
fn check_glob(r: &mut Reader, n: &Node, glob: &str) -> bool {
    match regex::Regex::new(&glob::to_regex(glob)) {
        Ok(_) => true,
        Err(_) => {
            r.error(n.pos, format!("bad glob {glob:?}"), Some("use * for any run of characters, ? for one, [abc] or [!abc] for a class (a-z ranges low to high)".into()));
            false
        }
    }
}

/// What the rest of the policy declares, for the rules' references to it: a rule naming a
/// pool that does not exist, or a budget agents do not have, would silently never match.
pub(super) struct Declared<'a> {
    /// The pool paths, or `None` when `pools:` had errors (then references are not checked).
    pub(super) pools: Option<Vec<&'a str>>,
    /// The agents' default budgets (`defaults.budgets`).
    pub(super) budgets: &'a Budgets,
}

impl Declared<'_> {
    /// The pool paths a `team:` may name: the declared ones, or the one root pool (`swarm`)
    /// of a policy that declares none.
    fn pool_paths(&self) -> Option<Vec<&str>> {
        let pools = self.pools.as_ref()?;
        Some(if pools.is_empty() {
            vec![DEFAULT_ROOT_POOL]
        } else {
            pools.clone()
        })
    }
}

/// The root pool of a policy without `pools:` (and of a swarm built without a policy).
pub const DEFAULT_ROOT_POOL: &str = "swarm";

pub(super) fn read_rules(r: &mut Reader, n: &Node, declared: &Declared<'_>) -> Vec<RuleDef> {
    let Value::Seq(items) = &n.value else {
        r.expected(
            n,
            "rules",
            "a list",
            Some(
                "write `rules:` followed by `- {id: ..., match: {...}, decision: ...}` items"
                    .into(),
            ),
        );
        return Vec::new();
    };
    if items.len() > MAX_RULES {
        r.error(
            n.pos,
            format!("{} rules; the limit is {MAX_RULES}", items.len()),
            None,
        );
        return Vec::new();
    }
    let mut out: Vec<RuleDef> = Vec::new();
    let mut seen: std::collections::HashMap<Arc<str>, usize> = std::collections::HashMap::new();
    for item in items {
        if let Some(rule) = read_rule(r, item, declared) {
            if let Some(first_line) = seen.get(&rule.id) {
                r.error(
                    rule.pos,
                    format!(
                        "rule id `{}` is used twice (first at line {first_line})",
                        rule.id
                    ),
                    None,
                );
                continue;
            }
            seen.insert(Arc::clone(&rule.id), rule.pos.line);
            out.push(rule);
        }
    }
    out
}

fn read_rule(r: &mut Reader, n: &Node, declared: &Declared<'_>) -> Option<RuleDef> {
    let before = r.diagnostics().len();
    let entries = r.mapping(
        n,
        "a rule",
        &["id", "match", "decision", "kind", "message", "rate_limit"],
    )?;
    // A misspelt key was already reported; do not also complain that the key is missing.
    let misspelt = r.diagnostics().len() > before;
    let get = |k: &str| entries.get(k);
    let Some(id_node) = get("id") else {
        r.error(
            n.pos,
            "a rule needs an `id`",
            Some("e.g. id: no-rm-rf".into()),
        );
        return None;
    };
    let id = r.text(id_node, "rule id")?;
    if let Err(e) = crate::ids::check_name("rule id", &id) {
        r.error(id_node.pos, e.to_string(), None);
        return None;
    }
    let errors_before = r.error_count();
    let matcher = match get("match") {
        Some(m) => read_match(r, m, &id, declared),
        None => {
            r.error(
                n.pos,
                format!("rule `{id}` has no `match`"),
                Some("use `match: {}` to match every step".into()),
            );
            MatchDef::default()
        }
    };
    let decision = get("decision").and_then(|d| r.named(d, "decision", &VERDICTS));
    let kind = get("kind").and_then(|k| r.named(k, "halt kind", &kinds()));
    let message = get("message").and_then(|m| r.text(m, "message"));
    let rate_limit = get("rate_limit").and_then(|rl| read_rate(r, rl));
    let decision = match (decision, rate_limit.is_some()) {
        (Some(Verdict::Allow), true) => {
            r.error(n.pos, format!("rule `{id}`: a rate limit with `decision: allow` never limits anything"), Some("drop `decision` (exceeding the limit denies) or use deny, require_approval or halt".into()));
            return None;
        }
        (Some(d), _) => d,
        (None, true) => Verdict::Deny,
        (None, false) => {
            if get("decision").is_none() && !misspelt {
                r.error(
                    n.pos,
                    format!("rule `{id}` has neither `decision` nor `rate_limit`"),
                    Some("add decision: allow | deny | require_approval | halt".into()),
                );
            }
            return None;
        }
    };
    match (decision, kind) {
        (Verdict::Halt, None) => {
            r.error(
                n.pos,
                format!("rule `{id}` halts but has no `kind`"),
                Some("add kind: safety (or exhaustion, stagnation, overrisk, external)".into()),
            );
            return None;
        }
        (d, Some(_)) if d != Verdict::Halt => {
            r.error(
                get("kind").expect("present").pos,
                format!("rule `{id}`: `kind` only applies to `decision: halt`"),
                None,
            );
            return None;
        }
        _ => {}
    }
    let errors_after = r.error_count();
    if errors_after > errors_before {
        return None;
    }
    Some(RuleDef {
        id: Arc::from(id.as_str()),
        matcher,
        decision,
        kind,
        message,
        rate_limit,
        pos: n.pos,
    })
}

fn read_rate(r: &mut Reader, n: &Node) -> Option<RateDef> {
    let entries = r.mapping(n, "rate_limit", &["max", "per", "scope", "mode"])?;
    let mut max = None;
    let mut per = None;
    let mut scope = RateScope::Agent;
    let mut mode = RateMode::Window;
    let mut max_pos = n.pos;
    for Entry {
        key: k, value: v, ..
    } in entries
    {
        match &*k {
            "max" => {
                max_pos = v.pos;
                max = r
                    .uint(v, "rate_limit.max")
                    .filter(|m| *m > 0 && *m <= u32::MAX as u64)
            }
            "per" => per = r.duration_ms(v, "rate_limit.per").filter(|p| *p > 0),
            "mode" => {
                mode = r.named(
                    v,
                    "rate_limit.mode",
                    &[
                        (RateMode::Window.name(), RateMode::Window),
                        (RateMode::Bucket.name(), RateMode::Bucket),
                    ],
                )?
            }
            _ => {
                scope = r.named(
                    v,
                    "rate_limit.scope",
                    &[
                        ("agent", RateScope::Agent),
                        ("team", RateScope::Team),
                        ("pool", RateScope::Pool),
                        ("tool", RateScope::Tool),
                    ],
                )?
            }
        }
    }
    match (max, per) {
        (Some(max), Some(_)) if mode == RateMode::Window && max > u64::from(MAX_WINDOW_RATE) => {
            r.error(
                max_pos,
                format!(
                    "rate_limit.max = {max} is above {MAX_WINDOW_RATE}, the most a sliding window counts exactly"
                ),
                Some("use `mode: bucket` (a bucket refilled at max per `per`), or a shorter `per` with a smaller max".into()),
            );
            None
        }
        (Some(max), Some(per_ms)) => Some(RateDef {
            max: max as u32,
            per_ms,
            scope,
            mode,
        }),
        _ => {
            r.error(
                n.pos,
                "rate_limit needs `max` (above 0) and `per` (a duration above 0)",
                Some("e.g. rate_limit: {max: 10, per: 1m, scope: agent}".into()),
            );
            None
        }
    }
}

fn read_match(r: &mut Reader, n: &Node, rule: &str, declared: &Declared<'_>) -> MatchDef {
    let mut m = MatchDef {
        pos: n.pos,
        ..Default::default()
    };
    let Some(entries) = r.mapping(
        n,
        "match",
        &[
            "tool",
            "action",
            "args",
            "failures",
            "steps",
            "remaining_below",
            "time",
            "team",
            "detector",
        ],
    ) else {
        return m;
    };
    for Entry { key, value: v, .. } in entries {
        match &*key {
            "tool" => {
                for item in r.one_or_more(v) {
                    if let Some(t) = r.text(item, "match.tool") {
                        if glob::is_glob(&t) && !check_glob(r, item, &t) {
                            continue;
                        }
                        m.tools.push((t, item.pos));
                    }
                }
            }
            "action" => {
                for item in r.one_or_more(v) {
                    if let Some(a) = r.named(item, "action", &ACTIONS) {
                        m.actions.push(a);
                    }
                }
            }
            "args" => {
                if let Some(conds) = r.mapping(v, "match.args", &[]) {
                    for e in conds {
                        if let Some(c) = read_arg_cond(r, e.key(), e.key_pos, e.value) {
                            m.args.push(c);
                        }
                    }
                }
            }
            "failures" | "steps" => {
                if let Some(e) = r.mapping(v, &format!("match.{key}"), &["at_least"]) {
                    for Entry { value: x, .. } in e {
                        if key == "failures" {
                            m.failures_at_least = r.uint32(x, "failures.at_least");
                        } else {
                            m.steps_at_least = r.uint(x, "steps.at_least");
                        }
                    }
                }
            }
            "remaining_below" => m.remaining_below = read_remaining_below(r, v, declared.budgets),
            "time" => m.time = read_time(r, v),
            "team" => {
                for item in r.one_or_more(v) {
                    if let Some(t) = r.text(item, "match.team") {
                        check_team(r, item, rule, &t, declared);
                        m.teams.push(t);
                    }
                }
            }
            "detector" => m.detectors = read_detectors(r, v),
            _ => {}
        }
    }
    m
}

/// A `team:` must name a pool of the policy: a misspelt one would never match, and a rule
/// stronger than allow would silently do nothing.
fn check_team(r: &mut Reader, item: &Node, rule: &str, team: &str, declared: &Declared<'_>) {
    let Some(paths) = declared.pool_paths() else {
        return;
    };
    if paths.contains(&team) {
        return;
    }
    let hint = match suggest(team, paths.iter().copied()) {
        Some(s) => format!("did you mean `{s}`?"),
        None if declared.pools.as_ref().is_some_and(Vec::is_empty) => format!(
            "the policy declares no pools, so its one pool is `{DEFAULT_ROOT_POOL}`; declare `{team}` under `pools:`"
        ),
        None => format!("declare it under `pools:`, or name one of: {}", paths.join(", ")),
    };
    r.error(
        item.pos,
        format!("rule `{rule}`: team `{team}` names no pool, so the rule would never match"),
        Some(hint),
    );
}

/// `remaining_below: {tokens: 0.1}`: fractions of the agent's limits. Each dimension must be
/// budgeted in `defaults.budgets`: without a limit the condition never holds.
fn read_remaining_below(r: &mut Reader, n: &Node, budgets: &Budgets) -> Vec<(LedgerDim, f64)> {
    let mut out = Vec::new();
    let allowed = ["steps", "tokens", "cost_usd", "risk"];
    let Some(entries) = r.mapping(n, "match.remaining_below", &allowed) else {
        return out;
    };
    for e in entries {
        let k = e.key();
        let dim = match k {
            "steps" => LedgerDim::Steps,
            "tokens" => LedgerDim::Tokens,
            "cost_usd" => LedgerDim::CostMicroUsd,
            _ => LedgerDim::RiskMicro,
        };
        let budgeted: Vec<&str> = allowed
            .iter()
            .copied()
            .zip([
                budgets.steps.is_some(),
                budgets.tokens.is_some(),
                budgets.cost_micro_usd.is_some(),
                budgets.risk_micro.is_some(),
            ])
            .filter_map(|(name, on)| on.then_some(name))
            .collect();
        if !budgeted.contains(&k) {
            let hint = match suggest(k, budgeted.iter().copied()) {
                Some(s) => {
                    format!("did you mean `{s}`? Or give agents a {k} budget in defaults.budgets")
                }
                None if budgeted.is_empty() => {
                    format!("give agents a {k} budget in defaults.budgets (they have none)")
                }
                None => format!(
                    "give agents a {k} budget in defaults.budgets, or use a budgeted dimension: {}",
                    budgeted.join(", ")
                ),
            };
            r.error(
                e.key_pos,
                format!("remaining_below.{k}: agents have no {k} budget (defaults.budgets sets none), so the condition never holds"),
                Some(hint),
            );
            continue;
        }
        if let Some(f) = r.number(e.value, &format!("remaining_below.{k}")) {
            if f > 0.0 && f <= 1.0 {
                out.push((dim, f));
            } else {
                r.error(
                    e.value.pos,
                    format!("remaining_below.{k} = {f} must be a fraction above 0 and at most 1"),
                    Some("e.g. 0.1 for \"less than 10% left\"".into()),
                );
            }
        }
    }
    out
}

/// `detector: pii` or a list of detector names.
fn read_detectors(r: &mut Reader, n: &Node) -> Vec<Detector> {
    let mut out = Vec::new();
    for item in r.one_or_more(n) {
        let Some(name) = r.text(item, "detector") else {
            continue;
        };
        match Detector::from_name(&name) {
            Some(d) => out.push(d),
            None => {
                let hint = one_of_hint(&name, &Detector::ALL.map(|d| d.name()));
                r.error(
                    item.pos,
                    format!("detector `{name}` is not known"),
                    Some(hint),
                );
            }
        }
    }
    out
}

fn read_arg_cond(r: &mut Reader, path: &str, ppos: Pos, v: &Node) -> Option<ArgCond> {
    let segments = match parse_path(path) {
        Ok(s) => s,
        Err(e) => {
            r.error(
                ppos,
                format!("args path: {e}"),
                Some(
                    "write paths like command, recipient.country, files[0] or items[*].url".into(),
                ),
            );
            return None;
        }
    };
    let ops = match &v.value {
        Value::Map(_) => read_ops(r, v, path)?,
        Value::Seq(_) => {
            r.error(
                v.pos,
                format!("args.{path} is a list; to match one of several values use `in`"),
                Some(format!("e.g. {path}: {{in: [a, b]}}")),
            );
            return None;
        }
        _ => match v.scalar_json() {
            Some(j) => vec![(ArgOp::Eq(j), v.pos)],
            None => {
                r.expected(
                    v,
                    &format!("args.{path}"),
                    "a value or a mapping of conditions",
                    None,
                );
                return None;
            }
        },
    };
    if ops.is_empty() {
        return None;
    }
    Some(ArgCond {
        path: path.to_string(),
        segments,
        ops,
        pos: ppos,
    })
}

/// The operators of one `args.<path>` mapping (or of a `not:` inside it).
fn read_ops(r: &mut Reader, v: &Node, path: &str) -> Option<Vec<(ArgOp, Pos)>> {
    let entries = r.mapping(
        v,
        &format!("args.{path}"),
        &[
            "eq", "in", "gt", "gte", "lt", "lte", "regex", "glob", "exists", "path", "command",
            "url", "detector", "not",
        ],
    )?;
    let mut ops = Vec::new();
    for Entry {
        key: op, value: x, ..
    } in entries
    {
        let at = x.pos;
        let parsed = match &*op {
            "eq" => match x.scalar_json() {
                Some(j) => Some(ArgOp::Eq(j)),
                None => {
                    r.expected(x, "eq", "a single value", None);
                    None
                }
            },
            "in" => match &x.value {
                Value::Seq(items) => {
                    let vals: Vec<Json> = items.iter().filter_map(Node::scalar_json).collect();
                    if vals.len() != items.len() {
                        r.error(at, "`in` holds values only (no lists or mappings)", None);
                    }
                    Some(ArgOp::In(vals))
                }
                _ => {
                    r.expected(x, "in", "a list", Some("e.g. in: [US, CA]".into()));
                    None
                }
            },
            "gt" => read_threshold(r, x, "gt").map(ArgOp::Gt),
            "gte" => read_threshold(r, x, "gte").map(ArgOp::Gte),
            "lt" => read_threshold(r, x, "lt").map(ArgOp::Lt),
            "lte" => read_threshold(r, x, "lte").map(ArgOp::Lte),
            "regex" => r.text(x, "regex").and_then(|re| match regex::RegexBuilder::new(&re).size_limit(1 << 20).build() {
                Ok(_) => Some(ArgOp::Regex(re)),
                Err(e) => {
                    let msg = e.to_string();
                    let last = msg.lines().last().unwrap_or("invalid").trim().to_string();
                    r.error(at, format!("bad regex {re:?}: {last}"), Some("the syntax is Rust's regex crate (no look-around or backreferences); quote it in single quotes".into()));
                    None
                }
            }),
            "glob" => r.text(x, "glob").filter(|g| check_glob(r, x, g)).map(ArgOp::Glob),
            "exists" => match &x.value {
                Value::Bool(b) => Some(ArgOp::Exists(*b)),
                _ => {
                    r.expected(x, "exists", "true or false", None);
                    None
                }
            },
            "path" => read_path_globs(r, x).map(ArgOp::Path),
            "command" => read_command(r, x, 0).map(ArgOp::Command),
            "url" => read_url(r, x).map(ArgOp::Url),
            "detector" => Some(read_detectors(r, x))
                .filter(|d| !d.is_empty())
                .map(ArgOp::Detector),
            _ => match &x.value {
                Value::Map(_) => read_ops(r, x, path).filter(|o| !o.is_empty()).map(ArgOp::Not),
                _ => {
                    r.expected(
                        x,
                        "not",
                        "a mapping of conditions",
                        Some(format!("e.g. {path}: {{not: {{path: '/srv/app/**'}}}}")),
                    );
                    None
                }
            },
        };
        if let Some(p) = parsed {
            ops.push((p, at));
        }
    }
    let has_command = ops.iter().any(|(o, _)| {
        matches!(o, ArgOp::Command(_))
            || matches!(o, ArgOp::Not(inner) if inner.iter().any(|(i, _)| matches!(i, ArgOp::Command(_))))
    });
    if has_command && ops.len() > 1 {
        r.error(
            v.pos,
            format!(
                "args.{path}: `command` (or `not: {{command: ...}}`) stands alone in its mapping"
            ),
            Some("put other conditions on the same path in a second rule".into()),
        );
        return None;
    }
    Some(ops)
}

/// A rule's number for `gt`, `gte`, `lt`, `lte`: a YAML number, or a decimal number in quotes
/// (read exactly, however many digits: `gt: "10000.0000000000000001"`).
fn read_threshold(r: &mut Reader, x: &Node, what: &str) -> Option<Decimal> {
    let exact = match &x.value {
        Value::Int(i) => Decimal::parse(&i.to_string()),
        Value::Float(f) => Decimal::from_f64(*f),
        Value::Str(s) => Decimal::parse(s),
        _ => None,
    };
    if exact.is_none() {
        r.expected(
            x,
            what,
            "a number",
            Some(format!(
                "e.g. {what}: 1000 (or quoted for more than 15 digits: \"1000.0000000000000001\")"
            )),
        );
    }
    exact
}

/// `url: {host: [...], ip: [...], scheme: [...]}`.
fn read_url(r: &mut Reader, n: &Node) -> Option<UrlPattern> {
    let before = r.diagnostics().len();
    let entries = r.mapping(n, "url", &["host", "ip", "scheme"])?;
    // A misspelt key was already reported; do not also say that none is given.
    let misspelt = r.diagnostics().len() > before;
    let mut p = UrlPattern::default();
    for Entry { key, value: x, .. } in entries {
        for item in r.one_or_more(x) {
            let Some(t) = r.text(item, &format!("url.{key}")) else {
                continue;
            };
            match &*key {
                "host" => p.hosts.push(t),
                "ip" => p.ips.push(t),
                _ => p.schemes.push(t),
            }
        }
    }
    match UrlCompiled::new(&p) {
        Ok(_) => Some(p),
        Err(_) if misspelt => None,
        Err(e) => {
            r.error(
                n.pos,
                format!("url: {e}"),
                Some("e.g. url: {host: [localhost, '*.internal'], ip: [127.0.0.0/8, '::1/128'], scheme: [http, https]}".into()),
            );
            None
        }
    }
}

/// `path: '/etc/**'` or a list of path globs.
fn read_path_globs(r: &mut Reader, n: &Node) -> Option<Vec<String>> {
    let mut out = Vec::new();
    for item in r.one_or_more(n) {
        let Some(g) = r.text(item, "path") else {
            continue;
        };
        match fspath::check_glob(&g) {
            Ok(normal) if regex::Regex::new(&fspath::glob_regex(&normal)).is_ok() => out.push(normal),
            Ok(_) => r.error(
                item.pos,
                format!("bad path glob {g:?}"),
                Some("use * within a segment, ** for any number of segments, ? for one character, [abc] for a class".into()),
            ),
            Err(e) => r.error(
                item.pos,
                e,
                Some("e.g. path: '/etc/**' (everything under /etc) or '**/*.pem'".into()),
            ),
        }
    }
    (!out.is_empty()).then_some(out)
}

/// `command: rm` or `command: {program, flags, args, piped_into}`.
fn read_command(r: &mut Reader, n: &Node, depth: usize) -> Option<CommandPattern> {
    if let Value::Map(_) = &n.value {
        let entries = r.mapping(n, "command", &["program", "flags", "args", "piped_into"])?;
        let mut p = CommandPattern::default();
        for Entry { key, value: x, .. } in entries {
            match &*key {
                "program" => {
                    for item in r.one_or_more(x) {
                        if let Some(t) = r.text(item, "command.program") {
                            p.programs.push(t);
                        }
                    }
                }
                "flags" => {
                    for item in r.one_or_more(x) {
                        let Some(t) = r.text(item, "command.flags") else {
                            continue;
                        };
                        match FlagName::parse(&t) {
                            Ok(f) => p.flags.push(f),
                            Err(e) => r.error(item.pos, e.message, e.hint),
                        }
                    }
                }
                "args" => {
                    for item in r.one_or_more(x) {
                        if let Some(t) = r.text(item, "command.args") {
                            p.args.push(t);
                        }
                    }
                }
                _ => {
                    if depth >= 4 {
                        r.error(x.pos, "piped_into nested more than 4 deep", None);
                        continue;
                    }
                    p.piped_into = read_command(r, x, depth + 1).map(Box::new);
                }
            }
        }
        if let Err(e) = Compiled::new(&p) {
            r.error(n.pos, e.message, e.hint);
            return None;
        }
        return Some(p);
    }
    let program = r.text(n, "command")?;
    let p = CommandPattern {
        programs: vec![program],
        ..Default::default()
    };
    match Compiled::new(&p) {
        Ok(_) => Some(p),
        Err(e) => {
            r.error(n.pos, e.message, e.hint);
            None
        }
    }
}

fn read_time(r: &mut Reader, n: &Node) -> Option<TimeWindow> {
    let entries = r.mapping(n, "match.time", &["days", "between", "tz"])?;
    let mut days_mask: u8 = 0x7f;
    let mut start_min = 0u16;
    let mut end_min = 24 * 60;
    for Entry {
        key: k, value: v, ..
    } in entries
    {
        match &*k {
            "tz" => {
                if let Some(tz) = r.text(v, "time.tz") {
                    if tz != "UTC" {
                        r.error(
                            v.pos,
                            format!("time zone {tz:?} is not supported; windows are in UTC"),
                            Some("convert the window to UTC and write tz: UTC".into()),
                        );
                    }
                }
            }
            "days" => {
                days_mask = 0;
                for item in r.one_or_more(v) {
                    let Some(d) = r.text(item, "time.days") else {
                        continue;
                    };
                    let mask = match d.to_ascii_lowercase().as_str() {
                        "mon" => 1,
                        "tue" => 2,
                        "wed" => 4,
                        "thu" => 8,
                        "fri" => 16,
                        "sat" => 32,
                        "sun" => 64,
                        "weekdays" => 0x1f,
                        "weekends" => 0x60,
                        "all" => 0x7f,
                        other => {
                            r.error(item.pos, format!("day {other:?} is not known"), Some("use mon, tue, wed, thu, fri, sat, sun, weekdays, weekends or all".into()));
                            0
                        }
                    };
                    days_mask |= mask;
                }
            }
            _ => {
                let Some(text) = r.text(v, "time.between") else {
                    continue;
                };
                let parse_hm = |s: &str| -> Option<u16> {
                    let (h, m) = s.trim().split_once(':')?;
                    let (h, m): (u16, u16) = (h.parse().ok()?, m.parse().ok()?);
                    (h <= 24 && m < 60 && h * 60 + m <= 24 * 60).then_some(h * 60 + m)
                };
                match text
                    .split_once('-')
                    .and_then(|(a, b)| Some((parse_hm(a)?, parse_hm(b)?)))
                {
                    Some((a, b)) if a != b => {
                        start_min = a;
                        end_min = b;
                    }
                    _ => r.error(
                        v.pos,
                        format!("time.between = {text:?} is not a window"),
                        Some("write HH:MM-HH:MM in UTC, e.g. 09:00-17:00".into()),
                    ),
                }
            }
        }
    }
    Some(TimeWindow {
        days_mask,
        start_min,
        end_min,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_paths_parse_keys_and_indices() {
        assert_eq!(
            parse_path("a.b[2][0].c").unwrap(),
            vec![
                PathSeg::Key("a".into()),
                PathSeg::Key("b".into()),
                PathSeg::Index(2),
                PathSeg::Index(0),
                PathSeg::Key("c".into())
            ]
        );
        assert_eq!(
            parse_path("items[*].url").unwrap(),
            vec![
                PathSeg::Key("items".into()),
                PathSeg::AnyIndex,
                PathSeg::Key("url".into())
            ]
        );
        assert_eq!(parse_path("*").unwrap(), vec![PathSeg::AnyKey]);
        assert!(parse_path("a..b").is_err());
        assert!(parse_path("a[x]").is_err());
        assert!(parse_path("a[1").is_err());
    }
}
