//! Reading policy YAML: syntax, shape and values, with every problem reported at its line and
//! column, all at once.

use std::sync::Arc;

use saphyr::{
    LoadableYamlNode, MarkedYamlOwned as Node, ScalarOwned as Scalar, YamlDataOwned as Data,
};
use saphyr_parser::{Event, Parser};
use serde_json::Value;

use crate::budget::{Budgets, CustomDim, LedgerDim, Limits, MICROS_PER_UNIT};
use crate::decision::{HaltKind, Verdict};
use crate::stagnation::StagnationConfig;
use crate::step::ActionClass;
use crate::team::{Breaker, CascadeRule, RestartPolicy, Scope, Strategy};

use super::detect::Detector;
use super::model::*;
use super::{Diagnostic, Severity};

/// Largest policy text accepted.
pub const MAX_POLICY_BYTES: usize = 1 << 20;
/// Deepest YAML nesting accepted.
pub const MAX_NESTING: usize = 64;
/// Most rules in one policy.
pub const MAX_RULES: usize = 100_000;

pub(super) struct Reader {
    pub diags: Vec<Diagnostic>,
}

fn pos(n: &Node) -> Pos {
    Pos {
        line: n.span.start.line(),
        col: n.span.start.col() + 1,
    }
}

/// The closest name within a small edit distance, for "did you mean".
pub(super) fn suggest<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|c| (strsim::levenshtein(word, c), c))
        .filter(|(d, c)| *d <= 2.max(c.len() / 4) && *d < c.len())
        .min()
        .map(|(_, c)| c)
}

fn kind_of(n: &Node) -> &'static str {
    match &n.data {
        Data::Mapping(_) => "a mapping",
        Data::Sequence(_) => "a list",
        Data::Value(Scalar::String(_)) => "text",
        Data::Value(Scalar::Integer(_)) => "an integer",
        Data::Value(Scalar::FloatingPoint(_)) => "a number",
        Data::Value(Scalar::Boolean(_)) => "true/false",
        Data::Value(Scalar::Null) => "nothing (null)",
        _ => "an unsupported YAML node",
    }
}

type Entries<'a> = Vec<(String, Pos, &'a Node)>;

/// The value under `key` in a checked mapping.
fn field<'a>(entries: &Entries<'a>, key: &str) -> Option<&'a Node> {
    entries
        .iter()
        .find(|(k, _, _)| k == key)
        .map(|(_, _, v)| *v)
}

impl Reader {
    pub(super) fn err(&mut self, at: Pos, message: impl Into<String>, hint: Option<String>) {
        self.diags.push(Diagnostic {
            severity: Severity::Error,
            line: at.line,
            col: at.col,
            message: message.into(),
            hint,
        });
    }

    pub(super) fn warn(&mut self, at: Pos, message: impl Into<String>, hint: Option<String>) {
        self.diags.push(Diagnostic {
            severity: Severity::Warning,
            line: at.line,
            col: at.col,
            message: message.into(),
            hint,
        });
    }

    fn expected(&mut self, n: &Node, what: &str, expected: &str, hint: Option<String>) {
        let found = kind_of(n);
        self.err(
            pos(n),
            format!("{what} must be {expected}, found {found}"),
            hint,
        );
    }

    /// A mapping's entries with their keys as text, checked against `allowed`.
    fn mapping<'a>(&mut self, n: &'a Node, what: &str, allowed: &[&str]) -> Option<Entries<'a>> {
        let Data::Mapping(m) = &n.data else {
            self.expected(n, what, "a mapping of keys to values", None);
            return None;
        };
        let mut out = Vec::with_capacity(m.len());
        for (k, v) in m.iter() {
            let key = match &k.data {
                Data::Value(Scalar::String(s)) => s.clone(),
                Data::Value(Scalar::Integer(i)) => i.to_string(),
                _ => {
                    self.err(
                        pos(k),
                        format!("keys of {what} must be text, found {}", kind_of(k)),
                        None,
                    );
                    continue;
                }
            };
            if !allowed.is_empty() && !allowed.contains(&key.as_str()) {
                let hint = match suggest(&key, allowed.iter().copied()) {
                    Some(s) => format!("did you mean `{s}`?"),
                    None => format!("expected one of: {}", allowed.join(", ")),
                };
                self.err(pos(k), format!("unknown key `{key}` in {what}"), Some(hint));
                continue;
            }
            out.push((key, pos(k), v));
        }
        Some(out)
    }

    fn text(&mut self, n: &Node, what: &str) -> Option<String> {
        match &n.data {
            Data::Value(Scalar::String(s)) => Some(s.clone()),
            _ => {
                self.expected(n, what, "text", None);
                None
            }
        }
    }

    fn uint(&mut self, n: &Node, what: &str) -> Option<u64> {
        match &n.data {
            Data::Value(Scalar::Integer(i)) if *i >= 0 => Some(*i as u64),
            Data::Value(Scalar::Integer(i)) => {
                self.err(
                    pos(n),
                    format!("{what} must not be negative, found {i}"),
                    None,
                );
                None
            }
            _ => {
                self.expected(n, what, "a whole number", None);
                None
            }
        }
    }

    fn number(&mut self, n: &Node, what: &str) -> Option<f64> {
        match &n.data {
            Data::Value(Scalar::Integer(i)) => Some(*i as f64),
            Data::Value(Scalar::FloatingPoint(f)) if f.is_finite() => Some(f.into_inner()),
            _ => {
                self.expected(n, what, "a number", None);
                None
            }
        }
    }

    /// A non-negative decimal amount held as micro-units (dollars, risk).
    fn micros(&mut self, n: &Node, what: &str, example: &str) -> Option<u64> {
        let hint = || {
            Some(format!(
                "write it as a plain number, e.g. {what}: {example}"
            ))
        };
        let v = match &n.data {
            Data::Value(Scalar::Integer(i)) => *i as f64,
            Data::Value(Scalar::FloatingPoint(f)) => f.into_inner(),
            _ => {
                self.expected(n, what, "a number", hint());
                return None;
            }
        };
        if !v.is_finite() || !(0.0..=1e12).contains(&v) {
            self.err(
                pos(n),
                format!("{what} = {v} is not an amount between 0 and 10^12"),
                hint(),
            );
            return None;
        }
        Some((v * MICROS_PER_UNIT as f64).round() as u64)
    }

    fn duration_ms(&mut self, n: &Node, what: &str) -> Option<u64> {
        let hint = Some("write a duration with units, e.g. 500ms, 30s, 10m, 1h30m, 2d".to_string());
        let text = match &n.data {
            Data::Value(Scalar::String(s)) => s.clone(),
            Data::Value(Scalar::Integer(i)) => {
                self.err(pos(n), format!("{what} = {i} has no unit"), hint);
                return None;
            }
            _ => {
                self.expected(n, what, "a duration", hint);
                return None;
            }
        };
        match parse_duration_ms(&text) {
            Some(ms) => Some(ms),
            None => {
                self.err(pos(n), format!("{what} = {text:?} is not a duration"), hint);
                None
            }
        }
    }

    /// One item or a list of them. An empty list is an error: it would silently mean "no
    /// restriction" where the writer meant "nothing".
    fn list<'a>(&mut self, n: &'a Node) -> Vec<&'a Node> {
        match &n.data {
            Data::Sequence(items) if items.is_empty() => {
                self.err(
                    pos(n),
                    "an empty list here matches nothing useful",
                    Some("list at least one value, or remove the key".into()),
                );
                Vec::new()
            }
            Data::Sequence(items) => items.iter().collect(),
            _ => vec![n],
        }
    }

    /// A whole number that fits in a u32.
    fn uint32(&mut self, n: &Node, what: &str) -> Option<u32> {
        let v = self.uint(n, what)?;
        match u32::try_from(v) {
            Ok(v) => Some(v),
            Err(_) => {
                self.err(
                    pos(n),
                    format!("{what} = {v} is too large (at most {})", u32::MAX),
                    None,
                );
                None
            }
        }
    }

    /// Checks that a glob compiles; reports it at its own position.
    fn check_glob(&mut self, n: &Node, glob: &str) -> bool {
        match regex::Regex::new(&super::glob::to_regex(glob)) {
            Ok(_) => true,
            Err(_) => {
                self.err(pos(n), format!("bad glob {glob:?}"), Some("use * for any run of characters, ? for one, [abc] or [!abc] for a class (a-z ranges low to high)".into()));
                false
            }
        }
    }

    fn named<T: Copy>(&mut self, n: &Node, what: &str, options: &[(&str, T)]) -> Option<T> {
        let text = self.text(n, what)?;
        if let Some((_, v)) = options.iter().find(|(name, _)| *name == text) {
            return Some(*v);
        }
        let names: Vec<&str> = options.iter().map(|(n, _)| *n).collect();
        let hint = match suggest(&text, names.iter().copied()) {
            Some(s) => format!("did you mean `{s}`?"),
            None => format!("expected one of: {}", names.join(", ")),
        };
        self.err(pos(n), format!("{what} `{text}` is not known"), Some(hint));
        None
    }
}

/// `500ms`, `30s`, `10m`, `1h30m`, `2d`: a sum of number+unit parts.
pub fn parse_duration_ms(text: &str) -> Option<u64> {
    let s = text.trim();
    if s.is_empty() {
        return None;
    }
    let mut total: u64 = 0;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits == 0 {
            return None;
        }
        let value: u64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let factor = match &rest[..unit_len] {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            _ => return None,
        };
        total = total.checked_add(value.checked_mul(factor)?)?;
        rest = &rest[unit_len..];
    }
    Some(total)
}

/// `a.b[0].c` -> segments.
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
        if !key.is_empty() {
            out.push(PathSeg::Key(key.to_string()));
        } else if idx.is_empty() {
            return Err(format!("empty segment in {path:?}"));
        }
        while !idx.is_empty() {
            let close = idx
                .find(']')
                .ok_or_else(|| format!("unclosed [ in {path:?}"))?;
            let n: usize = idx[1..close]
                .parse()
                .map_err(|_| format!("{:?} is not an array index in {path:?}", &idx[1..close]))?;
            out.push(PathSeg::Index(n));
            idx = &idx[close + 1..];
            if !idx.is_empty() && !idx.starts_with('[') {
                return Err(format!("unexpected {idx:?} in {path:?}"));
            }
        }
    }
    Ok(out)
}

fn scalar_json(n: &Node) -> Option<Value> {
    match &n.data {
        Data::Value(Scalar::Null) => Some(Value::Null),
        Data::Value(Scalar::Boolean(b)) => Some(Value::Bool(*b)),
        Data::Value(Scalar::Integer(i)) => Some(Value::from(*i)),
        Data::Value(Scalar::FloatingPoint(f)) => {
            serde_json::Number::from_f64(f.into_inner()).map(Value::Number)
        }
        Data::Value(Scalar::String(s)) => Some(Value::String(s.clone())),
        _ => None,
    }
}

// Names come from the types themselves, so the policy language and the JSON can never drift.
const VERDICTS: [(&str, Verdict); 4] = [
    (Verdict::Allow.name(), Verdict::Allow),
    (Verdict::Deny.name(), Verdict::Deny),
    (Verdict::RequireApproval.name(), Verdict::RequireApproval),
    (Verdict::Halt.name(), Verdict::Halt),
];

const ACTIONS: [(&str, ActionClass); 5] = [
    (ActionClass::Read.name(), ActionClass::Read),
    (ActionClass::Write.name(), ActionClass::Write),
    (ActionClass::Execute.name(), ActionClass::Execute),
    (ActionClass::Network.name(), ActionClass::Network),
    (ActionClass::Spend.name(), ActionClass::Spend),
];

fn kinds() -> [(&'static str, HaltKind); 8] {
    HaltKind::ALL.map(|k| (k.name(), k))
}

/// Checks the text for things the loader must never see: too large, too deep, aliases
/// (which expand and can blow up memory). Returns false after reporting.
fn prescan(r: &mut Reader, text: &str) -> bool {
    if text.len() > MAX_POLICY_BYTES {
        r.err(
            Pos { line: 1, col: 1 },
            format!(
                "the policy is {} bytes; the limit is {MAX_POLICY_BYTES}",
                text.len()
            ),
            Some("split it or remove unused rules".into()),
        );
        return false;
    }
    let mut depth = 0usize;
    for item in Parser::new_from_str(text) {
        match item {
            Err(e) => {
                r.err(
                    Pos {
                        line: e.marker().line(),
                        col: e.marker().col() + 1,
                    },
                    format!("YAML syntax: {}", e.info()),
                    None,
                );
                return false;
            }
            Ok((event, span)) => match event {
                Event::SequenceStart(..) | Event::MappingStart(..) => {
                    depth += 1;
                    if depth > MAX_NESTING {
                        r.err(
                            Pos {
                                line: span.start.line(),
                                col: span.start.col() + 1,
                            },
                            format!("the policy nests deeper than {MAX_NESTING} levels"),
                            None,
                        );
                        return false;
                    }
                }
                Event::SequenceEnd | Event::MappingEnd => depth = depth.saturating_sub(1),
                Event::Alias(_) => {
                    r.err(
                        Pos {
                            line: span.start.line(),
                            col: span.start.col() + 1,
                        },
                        "YAML aliases (*name) are not supported in policies".to_string(),
                        Some("write the value out in full".into()),
                    );
                    return false;
                }
                Event::StreamEnd => break,
                _ => {}
            },
        }
    }
    true
}

/// Reads a policy. Returns the document when there were no errors; diagnostics (errors and
/// warnings) go to `r`.
pub(super) fn read(r: &mut Reader, text: &str) -> Option<PolicyDoc> {
    if !prescan(r, text) {
        return None;
    }
    let docs = match Node::load_from_str(text) {
        Ok(d) => d,
        Err(e) => {
            r.err(
                Pos {
                    line: e.marker().line(),
                    col: e.marker().col() + 1,
                },
                format!("YAML syntax: {}", e.info()),
                None,
            );
            return None;
        }
    };
    let root = match docs.as_slice() {
        [] => {
            r.err(
                Pos { line: 1, col: 1 },
                "the policy is empty",
                Some("start with `version: 1`".into()),
            );
            return None;
        }
        [one] => one,
        [_, second, ..] => {
            r.err(
                pos(second),
                "a policy is one YAML document; found several",
                None,
            );
            return None;
        }
    };
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
    let get = |k: &str| field(&top, k);

    let mut version = 1;
    match get("version") {
        None => r.err(
            pos(root),
            "the policy has no `version`",
            Some("add `version: 1` at the top".into()),
        ),
        Some(v) => {
            if let Some(n) = r.uint(v, "version") {
                if n != 1 {
                    r.err(
                        pos(v),
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
        },
    };
    let default_decision = match get("default_decision") {
        None => Verdict::Deny,
        Some(n) => r
            .named(n, "default_decision", &VERDICTS[..3])
            .unwrap_or(Verdict::Deny),
    };
    let pools = get("pools").map(|n| read_pools(r, n)).unwrap_or_default();
    let tools = get("tools").map(|n| read_tools(r, n)).unwrap_or_default();
    let rules = get("rules").map(|n| read_rules(r, n)).unwrap_or_default();
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
    };
    let Some(entries) = r.mapping(
        n,
        "defaults",
        &[
            "budgets",
            "stagnation",
            "approval_timeout",
            "heartbeat_timeout",
        ],
    ) else {
        return d;
    };
    for (key, _, v) in entries {
        match key.as_str() {
            "budgets" => d.budgets = read_budgets(r, v),
            "stagnation" => {
                if let Some(e) = r.mapping(v, "defaults.stagnation", &["repeat_limit", "window"]) {
                    for (k, _, x) in e {
                        let val = r.uint32(x, &format!("stagnation.{k}")).unwrap_or(0);
                        if k == "repeat_limit" {
                            d.stagnation.repeat_limit = val;
                        } else {
                            d.stagnation.window = val;
                        }
                    }
                    if let Err(msg) = d.stagnation.validate() {
                        r.err(pos(v), msg, None);
                    }
                }
            }
            "approval_timeout" => {
                if let Some(ms) = r.duration_ms(v, "approval_timeout") {
                    d.approval_timeout_ms = ms;
                }
            }
            "heartbeat_timeout" => d.heartbeat_timeout_ms = r.duration_ms(v, "heartbeat_timeout"),
            _ => {}
        }
    }
    d
}

fn read_custom(r: &mut Reader, n: &Node, what: &str) -> Vec<(CustomDim, u64)> {
    let mut out = Vec::new();
    if let Some(entries) = r.mapping(n, what, &[]) {
        for (k, kp, v) in entries {
            match CustomDim::new(&k) {
                Ok(dim) => {
                    if let Some(x) = r.uint(v, &format!("{what}.{k}")) {
                        out.push((dim, x));
                    }
                }
                Err(e) => r.err(kp, e.to_string(), None),
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
    for (key, _, v) in entries {
        match key.as_str() {
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

fn read_limits(r: &mut Reader, n: &Node, what: &str) -> Limits {
    let mut l = Limits::UNLIMITED;
    let Some(entries) = r.mapping(n, what, &["steps", "tokens", "cost_usd", "risk", "custom"])
    else {
        return l;
    };
    for (key, _, v) in entries {
        match key.as_str() {
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

fn read_pools(r: &mut Reader, n: &Node) -> Vec<PoolDef> {
    let Data::Sequence(items) = &n.data else {
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
        let get = |k: &str| field(&entries, k);
        let Some(path_node) = get("path") else {
            r.err(
                pos(item),
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
            r.err(
                pos(path_node),
                format!("pool path {path:?} has a bad segment {bad:?}"),
                Some("segments use letters, digits, '.', '_', '-', ':'".into()),
            );
            continue;
        }
        if segs.len() >= crate::ledger::MAX_ACCOUNT_DEPTH {
            r.err(
                pos(path_node),
                format!(
                    "pool path {path:?} is deeper than {}",
                    crate::ledger::MAX_ACCOUNT_DEPTH - 1
                ),
                None,
            );
            continue;
        }
        if out.iter().any(|p| p.path == path) {
            r.err(
                pos(path_node),
                format!("pool {path:?} is declared twice"),
                None,
            );
            continue;
        }
        if segs.len() == 1 {
            if let Some(root) = out.iter().find(|p| !p.path.contains('/')) {
                r.err(
                    pos(path_node),
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
                r.err(
                    pos(path_node),
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
            pos: pos(item),
        });
    }
    out
}

fn read_cascade(r: &mut Reader, n: &Node) -> Option<CascadeRule> {
    let entries = r.mapping(n, "cascade", &["on", "scope"])?;
    let mut on = Vec::new();
    let mut scope = None;
    for (k, _, v) in entries {
        if k == "on" {
            for item in r.list(v) {
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
            r.err(
                pos(n),
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
    for (k, _, v) in entries {
        if k == "threshold" {
            let p = match &v.data {
                Data::Value(Scalar::String(s)) => s
                    .trim()
                    .strip_suffix('%')
                    .and_then(|x| x.trim().parse::<f64>().ok()),
                Data::Value(Scalar::Integer(i)) => Some(*i as f64),
                Data::Value(Scalar::FloatingPoint(f)) => Some(f.into_inner()),
                _ => None,
            };
            match p {
                Some(p) if (1.0..=100.0).contains(&p) => pct = Some(p.round() as u32),
                _ => r.err(
                    pos(v),
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
            r.err(
                pos(n),
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
    for (k, _, v) in entries {
        match k.as_str() {
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

fn read_tools(r: &mut Reader, n: &Node) -> Vec<ToolDef> {
    let Some(entries) = r.mapping(n, "tools", &[]) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for (name, name_pos, v) in entries {
        if name.is_empty()
            || name.len() > crate::step::MAX_TOOL_LEN
            || name.chars().any(|c| !c.is_ascii_graphic())
        {
            r.err(
                name_pos,
                format!(
                    "tool name {name:?} must be 1-{} printable characters without spaces",
                    crate::step::MAX_TOOL_LEN
                ),
                None,
            );
            continue;
        }
        let Some(fields) = r.mapping(v, &format!("tool {name}"), &["action", "risk", "upstream"])
        else {
            continue;
        };
        let mut action = None;
        let mut risk_micro = 0;
        let mut upstream = None;
        for (k, _, x) in fields {
            match k.as_str() {
                "action" => action = r.named(x, "action", &ACTIONS),
                "risk" => risk_micro = r.micros(x, "risk", "2.0").unwrap_or(0),
                _ => {
                    if let Some(u) = r.text(x, "upstream") {
                        if u.starts_with("http://") || u.starts_with("https://") {
                            upstream = Some(u);
                        } else {
                            r.err(
                                pos(x),
                                format!("upstream {u:?} is not an http:// or https:// URL"),
                                None,
                            );
                        }
                    }
                }
            }
        }
        let Some(action) = action else {
            r.err(
                pos(v),
                format!("tool {name} needs an `action` (read, write, execute, network or spend)"),
                None,
            );
            continue;
        };
        out.push(ToolDef {
            name: Arc::from(name.as_str()),
            action,
            risk_micro,
            upstream,
            pos: name_pos,
        });
    }
    out
}

fn read_rules(r: &mut Reader, n: &Node) -> Vec<RuleDef> {
    let Data::Sequence(items) = &n.data else {
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
        r.err(
            pos(n),
            format!("{} rules; the limit is {MAX_RULES}", items.len()),
            None,
        );
        return Vec::new();
    }
    let mut out: Vec<RuleDef> = Vec::new();
    let mut seen: std::collections::HashMap<Arc<str>, usize> = std::collections::HashMap::new();
    for item in items {
        if let Some(rule) = read_rule(r, item) {
            if let Some(first_line) = seen.get(&rule.id) {
                r.err(
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

fn read_rule(r: &mut Reader, n: &Node) -> Option<RuleDef> {
    let before = r.diags.len();
    let entries = r.mapping(
        n,
        "a rule",
        &["id", "match", "decision", "kind", "message", "rate_limit"],
    )?;
    // A misspelt key was already reported; do not also complain that the key is missing.
    let misspelt = r.diags.len() > before;
    let get = |k: &str| field(&entries, k);
    let Some(id_node) = get("id") else {
        r.err(
            pos(n),
            "a rule needs an `id`",
            Some("e.g. id: no-rm-rf".into()),
        );
        return None;
    };
    let id = r.text(id_node, "rule id")?;
    if let Err(e) = crate::ids::check_name("rule id", &id) {
        r.err(pos(id_node), e.to_string(), None);
        return None;
    }
    let errors_before = r
        .diags
        .iter()
        .filter(|d| d.severity == Severity::Error)
        .count();
    let matcher = match get("match") {
        Some(m) => read_match(r, m),
        None => {
            r.err(
                pos(n),
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
            r.err(pos(n), format!("rule `{id}`: a rate limit with `decision: allow` never limits anything"), Some("drop `decision` (exceeding the limit denies) or use deny, require_approval or halt".into()));
            return None;
        }
        (Some(d), _) => d,
        (None, true) => Verdict::Deny,
        (None, false) => {
            if get("decision").is_none() && !misspelt {
                r.err(
                    pos(n),
                    format!("rule `{id}` has neither `decision` nor `rate_limit`"),
                    Some("add decision: allow | deny | require_approval | halt".into()),
                );
            }
            return None;
        }
    };
    match (decision, kind) {
        (Verdict::Halt, None) => {
            r.err(
                pos(n),
                format!("rule `{id}` halts but has no `kind`"),
                Some("add kind: safety (or exhaustion, stagnation, overrisk, external)".into()),
            );
            return None;
        }
        (d, Some(_)) if d != Verdict::Halt => {
            r.err(
                pos(get("kind").expect("present")),
                format!("rule `{id}`: `kind` only applies to `decision: halt`"),
                None,
            );
            return None;
        }
        _ => {}
    }
    let errors_after = r
        .diags
        .iter()
        .filter(|d| d.severity == Severity::Error)
        .count();
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
        pos: pos(n),
    })
}

fn read_rate(r: &mut Reader, n: &Node) -> Option<RateDef> {
    let entries = r.mapping(n, "rate_limit", &["max", "per", "scope"])?;
    let mut max = None;
    let mut per = None;
    let mut scope = RateScope::Agent;
    for (k, _, v) in entries {
        match k.as_str() {
            "max" => {
                max = r
                    .uint(v, "rate_limit.max")
                    .filter(|m| *m > 0 && *m <= u32::MAX as u64)
            }
            "per" => per = r.duration_ms(v, "rate_limit.per").filter(|p| *p > 0),
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
        (Some(max), Some(per_ms)) => Some(RateDef {
            max: max as u32,
            per_ms,
            scope,
        }),
        _ => {
            r.err(
                pos(n),
                "rate_limit needs `max` (above 0) and `per` (a duration above 0)",
                Some("e.g. rate_limit: {max: 10, per: 1m, scope: agent}".into()),
            );
            None
        }
    }
}

fn read_match(r: &mut Reader, n: &Node) -> MatchDef {
    let mut m = MatchDef {
        pos: pos(n),
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
    for (key, _, v) in entries {
        match key.as_str() {
            "tool" => {
                for item in r.list(v) {
                    if let Some(t) = r.text(item, "match.tool") {
                        if super::glob::is_glob(&t) && !r.check_glob(item, &t) {
                            continue;
                        }
                        m.tools.push((t, pos(item)));
                    }
                }
            }
            "action" => {
                for item in r.list(v) {
                    if let Some(a) = r.named(item, "action", &ACTIONS) {
                        m.actions.push(a);
                    }
                }
            }
            "args" => {
                if let Some(conds) = r.mapping(v, "match.args", &[]) {
                    for (path, ppos, cond) in conds {
                        if let Some(c) = read_arg_cond(r, &path, ppos, cond) {
                            m.args.push(c);
                        }
                    }
                }
            }
            "failures" | "steps" => {
                if let Some(e) = r.mapping(v, &format!("match.{key}"), &["at_least"]) {
                    for (_, _, x) in e {
                        if key == "failures" {
                            m.failures_at_least = r.uint32(x, "failures.at_least");
                        } else {
                            m.steps_at_least = r.uint(x, "steps.at_least");
                        }
                    }
                }
            }
            "remaining_below" => {
                if let Some(e) = r.mapping(
                    v,
                    "match.remaining_below",
                    &["steps", "tokens", "cost_usd", "risk"],
                ) {
                    for (k, _, x) in e {
                        let dim = match k.as_str() {
                            "steps" => LedgerDim::Steps,
                            "tokens" => LedgerDim::Tokens,
                            "cost_usd" => LedgerDim::CostMicroUsd,
                            _ => LedgerDim::RiskMicro,
                        };
                        if let Some(f) = r.number(x, &format!("remaining_below.{k}")) {
                            if f > 0.0 && f <= 1.0 {
                                m.remaining_below.push((dim, f));
                            } else {
                                r.err(pos(x), format!("remaining_below.{k} = {f} must be a fraction above 0 and at most 1"), Some("e.g. 0.1 for \"less than 10% left\"".into()));
                            }
                        }
                    }
                }
            }
            "time" => m.time = read_time(r, v),
            "team" => {
                for item in r.list(v) {
                    if let Some(t) = r.text(item, "match.team") {
                        m.teams.push(t);
                    }
                }
            }
            "detector" => {
                for item in r.list(v) {
                    let Some(name) = r.text(item, "detector") else {
                        continue;
                    };
                    match Detector::from_name(&name) {
                        Some(d) => m.detectors.push(d),
                        None => {
                            let names = Detector::ALL.map(|d| d.name());
                            let hint = match suggest(&name, names) {
                                Some(s) => format!("did you mean `{s}`?"),
                                None => format!("expected one of: {}", names.join(", ")),
                            };
                            r.err(
                                pos(item),
                                format!("detector `{name}` is not known"),
                                Some(hint),
                            );
                        }
                    }
                }
            }
            _ => {}
        }
    }
    m
}

fn read_arg_cond(r: &mut Reader, path: &str, ppos: Pos, v: &Node) -> Option<ArgCond> {
    let segments = match parse_path(path) {
        Ok(s) => s,
        Err(e) => {
            r.err(
                ppos,
                format!("args path: {e}"),
                Some("write paths like command, recipient.country or files[0]".into()),
            );
            return None;
        }
    };
    let mut ops = Vec::new();
    match &v.data {
        Data::Mapping(_) => {
            let entries = r.mapping(
                v,
                &format!("args.{path}"),
                &[
                    "eq", "in", "gt", "gte", "lt", "lte", "regex", "glob", "exists",
                ],
            )?;
            for (op, _, x) in entries {
                let at = pos(x);
                let parsed = match op.as_str() {
                    "eq" => match scalar_json(x) {
                        Some(j) => Some(ArgOp::Eq(j)),
                        None => {
                            r.expected(x, "eq", "a single value", None);
                            None
                        }
                    },
                    "in" => match &x.data {
                        Data::Sequence(items) => {
                            let vals: Vec<Value> = items.iter().filter_map(scalar_json).collect();
                            if vals.len() != items.len() {
                                r.err(at, "`in` holds values only (no lists or mappings)", None);
                            }
                            Some(ArgOp::In(vals))
                        }
                        _ => {
                            r.expected(x, "in", "a list", Some("e.g. in: [US, CA]".into()));
                            None
                        }
                    },
                    "gt" => r.number(x, "gt").map(ArgOp::Gt),
                    "gte" => r.number(x, "gte").map(ArgOp::Gte),
                    "lt" => r.number(x, "lt").map(ArgOp::Lt),
                    "lte" => r.number(x, "lte").map(ArgOp::Lte),
                    "regex" => r.text(x, "regex").and_then(|re| match regex::RegexBuilder::new(&re).size_limit(1 << 20).build() {
                        Ok(_) => Some(ArgOp::Regex(re)),
                        Err(e) => {
                            let msg = e.to_string();
                            let last = msg.lines().last().unwrap_or("invalid").trim().to_string();
                            r.err(at, format!("bad regex {re:?}: {last}"), Some("the syntax is Rust's regex crate (no look-around or backreferences); quote it in single quotes".into()));
                            None
                        }
                    }),
                    "glob" => r.text(x, "glob").filter(|g| r.check_glob(x, g)).map(ArgOp::Glob),
                    _ => match &x.data {
                        Data::Value(Scalar::Boolean(b)) => Some(ArgOp::Exists(*b)),
                        _ => {
                            r.expected(x, "exists", "true or false", None);
                            None
                        }
                    },
                };
                if let Some(p) = parsed {
                    ops.push((p, at));
                }
            }
        }
        Data::Sequence(_) => {
            r.err(
                pos(v),
                format!("args.{path} is a list; to match one of several values use `in`"),
                Some(format!("e.g. {path}: {{in: [a, b]}}")),
            );
            return None;
        }
        _ => match scalar_json(v) {
            Some(j) => ops.push((ArgOp::Eq(j), pos(v))),
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
    }
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

fn read_time(r: &mut Reader, n: &Node) -> Option<TimeWindow> {
    let entries = r.mapping(n, "match.time", &["days", "between", "tz"])?;
    let mut days_mask: u8 = 0x7f;
    let mut start_min = 0u16;
    let mut end_min = 24 * 60;
    for (k, _, v) in entries {
        match k.as_str() {
            "tz" => {
                if let Some(tz) = r.text(v, "time.tz") {
                    if tz != "UTC" {
                        r.err(
                            pos(v),
                            format!("time zone {tz:?} is not supported; windows are in UTC"),
                            Some("convert the window to UTC and write tz: UTC".into()),
                        );
                    }
                }
            }
            "days" => {
                days_mask = 0;
                for item in r.list(v) {
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
                            r.err(pos(item), format!("day {other:?} is not known"), Some("use mon, tue, wed, thu, fri, sat, sun, weekdays, weekends or all".into()));
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
                    _ => r.err(
                        pos(v),
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
    fn durations_parse_with_units_only() {
        assert_eq!(parse_duration_ms("30m"), Some(1_800_000));
        assert_eq!(parse_duration_ms("1h30m"), Some(5_400_000));
        assert_eq!(parse_duration_ms("500ms"), Some(500));
        assert_eq!(parse_duration_ms("2d"), Some(172_800_000));
        assert_eq!(parse_duration_ms("10"), None);
        assert_eq!(parse_duration_ms("5x"), None);
        assert_eq!(parse_duration_ms(""), None);
        assert_eq!(parse_duration_ms("99999999999999999999d"), None);
    }

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
        assert!(parse_path("a..b").is_err());
        assert!(parse_path("a[x]").is_err());
        assert!(parse_path("a[1").is_err());
    }

    #[test]
    fn suggestions_pick_close_names_only() {
        assert_eq!(suggest("decison", ["decision", "kind"]), Some("decision"));
        assert_eq!(suggest("zzz", ["decision", "kind"]), None);
    }
}
