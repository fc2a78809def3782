//! Semantic checks over a readable policy: unknown or unreachable tools, rules that can never
//! decide because a stronger rule always matches too, rules that contradict each other, pool
//! limits above their parent's, conditions an agent can slip past by spelling, budgets without
//! a `min_cost`.

use super::glob;
use super::model::{ArgCond, ArgOp, MatchDef, PathSeg, PolicyDoc, RuleDef, ToolDef};
use crate::budget::{CustomDim, LedgerDim};
use crate::decision::Verdict;
use crate::step::{ActionClass, BUILTIN_MIN_COST};
use crate::yaml::{suggest, Reader};

pub(super) fn check(r: &mut Reader, doc: &PolicyDoc) {
    check_tools(r, doc);
    check_overlaps(r, doc);
    check_pools(r, doc);
    check_evasion(r, doc);
    check_min_cost(r, doc);
}

/// Budgets in tokens, money or a custom dimension, with registered tools whose `min_cost`
/// (their own, else their action class's default) does not name it: their steps that declare
/// nothing there are reserved at warden's built-in minimum (tokens and money,
/// [`BUILTIN_MIN_COST`]) or at 0 (custom dimensions have no built-in minimum).
fn check_min_cost(r: &mut Reader, doc: &PolicyDoc) {
    let agents = doc.defaults.budgets.ledger_limits();
    let limited = |dim: LedgerDim| {
        agents.get(dim).is_some() || doc.pools.iter().any(|p| p.limits.get(dim).is_some())
    };
    let mut customs: Vec<&CustomDim> = agents
        .custom_entries()
        .iter()
        .chain(doc.pools.iter().flat_map(|p| p.limits.custom_entries()))
        .map(|(d, _)| d)
        .collect();
    customs.sort();
    customs.dedup();
    let effective = |t: &ToolDef| t.min_cost.or(&doc.defaults.min_cost[t.action as usize]);
    for (dim, name) in [
        (LedgerDim::Tokens, "tokens"),
        (LedgerDim::CostMicroUsd, "cost_usd"),
    ] {
        if !limited(dim) {
            continue;
        }
        let lacking = |t: &&ToolDef| {
            let m = effective(t);
            match dim {
                LedgerDim::Tokens => m.tokens.is_none(),
                _ => m.cost_micro_usd.is_none(),
            }
        };
        let floors = |a: ActionClass| {
            let (tokens, micro) = BUILTIN_MIN_COST[a as usize];
            match dim {
                LedgerDim::Tokens => format!("{tokens} for {a}"),
                _ => format!("${} for {a}", micro as f64 / 1e6),
            }
        };
        let written = format!("{name}: ...");
        warn_min_cost(r, doc, (name, &written), lacking, |classes| {
            let each: Vec<String> = classes.iter().map(|a| floors(*a)).collect();
            format!("warden's built-in minimum ({})", each.join(", "))
        });
    }
    for dim in customs {
        let lacking = |t: &&ToolDef| !effective(t).custom.iter().any(|(d, _)| d == dim);
        let written = format!("custom: {{{dim}: ...}}", dim = dim.as_str());
        warn_min_cost(r, doc, (dim.as_str(), &written), lacking, |_| {
            "0 (custom dimensions have no built-in minimum)".to_string()
        });
    }
}

/// One warning for budget dimension `name` (written `written` in a `min_cost`) naming the
/// tools `lacking` a minimum in it.
fn warn_min_cost(
    r: &mut Reader,
    doc: &PolicyDoc,
    (name, written): (&str, &str),
    lacking: impl Fn(&&ToolDef) -> bool,
    reserved_at: impl Fn(&[ActionClass]) -> String,
) {
    let tools: Vec<&ToolDef> = doc.tools.iter().filter(lacking).collect();
    let Some(first) = tools.first() else {
        return;
    };
    let mut classes: Vec<ActionClass> = tools.iter().map(|t| t.action).collect();
    classes.sort();
    classes.dedup();
    let names: Vec<&str> = tools.iter().take(3).map(|t| &*t.name).collect();
    let more = if tools.len() > 3 { ", ..." } else { "" };
    let class_names: Vec<&str> = classes.iter().map(|a| a.name()).collect();
    r.warning(
        first.pos,
        format!(
            "budgets limit {name}, but no min_cost names it for {} ({}{more}): a step of theirs that declares no {name} is reserved at {}",
            class_names.join(", "),
            names.join(", "),
            reserved_at(&classes),
        ),
        Some(format!(
            "say what such a step costs: defaults: {{min_cost: {{{}: {{{written}}}}}}} (or a tool's own min_cost; 0 for a tool that uses none)",
            class_names[0]
        )),
    );
}

/// Keys whose values are shell command lines.
const COMMAND_KEYS: [&str; 7] = [
    "command",
    "cmd",
    "commandline",
    "command_line",
    "script",
    "shell",
    "bash",
];
/// Keys whose values are file system paths.
const PATH_KEYS: [&str; 13] = [
    "path",
    "file",
    "filename",
    "filepath",
    "file_path",
    "dir",
    "directory",
    "dest",
    "destination",
    "target",
    "src",
    "source",
    "folder",
];

/// Keys whose values are URLs.
const URL_KEYS: [&str; 8] = [
    "url", "urls", "uri", "uris", "endpoint", "href", "link", "links",
];

/// A rule stronger than allow that matches on `action` alone, under `default_decision:
/// allow`: an unregistered tool's action is the one its agent declares, so
/// `{"tool": "bash", "action": "read"}` slips past `match: {action: execute}`.
fn check_declared_action(r: &mut Reader, doc: &PolicyDoc, rule: &RuleDef) {
    let m = &rule.matcher;
    if doc.default_decision != Verdict::Allow || m.actions.is_empty() || !m.tools.is_empty() {
        return;
    }
    r.warning(
        m.pos,
        format!(
            "rule `{}` matches on action, and with default_decision: allow an unregistered tool's action is what its agent declares: a tool called with another action slips past it",
            rule.id
        ),
        Some("register the tools (their action then comes from the registry), or set default_decision: deny".into()),
    );
}

/// Rules stronger than allow that an agent can slip past by spelling: a regex or glob on the
/// raw text of a command line, a path or a URL (the `command`, `path` and `url` conditions
/// read them as a shell, a file system and an HTTP client would), and args conditions on a tool that does not declare its
/// args (the same value under another key is not seen).
fn check_evasion(r: &mut Reader, doc: &PolicyDoc) {
    for rule in &doc.rules {
        if rule.decision == Verdict::Allow {
            continue;
        }
        check_declared_action(r, doc, rule);
        for cond in &rule.matcher.args {
            let key = cond.segments.iter().rev().find_map(|s| match s {
                PathSeg::Key(k) => Some(crate::policy::text::canonical(k).into_owned()),
                _ => None,
            });
            let Some(key) = key else { continue };
            let Some((op, at)) = cond
                .ops
                .iter()
                .find(|(o, _)| matches!(o, ArgOp::Regex(_) | ArgOp::Glob(_)))
            else {
                continue;
            };
            let what = if matches!(op, ArgOp::Regex(_)) {
                "a regex"
            } else {
                "a glob"
            };
            if COMMAND_KEYS.contains(&key.as_str()) {
                r.warning(
                    *at,
                    format!(
                        "rule `{}` matches args.{} with {what} on the raw command line: quoting (r\"\"m), case, flag order and spelling (-fr, -r -f, --recursive), wrappers (sudo, env, bash -c) and $(...) slip past it",
                        rule.id, cond.path
                    ),
                    Some("use the command condition, which reads the line as a shell does: e.g. command: {command: {program: rm, flags: [recursive, force]}}".into()),
                );
            } else if URL_KEYS.contains(&key.as_str()) {
                r.warning(
                    *at,
                    format!(
                        "rule `{}` matches args.{} with {what} on the raw URL text: userinfo (http://x@127.0.0.1/), numeric hosts (http://2130706433/, http://0x7f.1/), [::ffff:127.0.0.1], case, trailing or full-width dots and %-escapes slip past it",
                        rule.id, cond.path
                    ),
                    Some("use the url condition, which reads the URL as an HTTP client does: e.g. url: {url: {host: [localhost], ip: [127.0.0.0/8, '::1/128']}}".into()),
                );
            } else if PATH_KEYS.contains(&key.as_str()) {
                r.warning(
                    *at,
                    format!(
                        "rule `{}` matches args.{} with {what} on the raw path: /var/../etc/x, //etc/x and /./etc/x slip past it",
                        rule.id, cond.path
                    ),
                    Some("use the path condition, which normalizes . and .. first: e.g. path: {path: '/etc/**'}".into()),
                );
            }
        }
    }
    check_declared_args(r, doc);
}

/// Tools whose args rules stronger than allow read without the tool declaring its args (one
/// warning per tool), and rules reading a key their tool does not take.
fn check_declared_args(r: &mut Reader, doc: &PolicyDoc) {
    for def in &doc.tools {
        let readers: Vec<&RuleDef> =
            doc.rules
                .iter()
                .filter(|rule| rule.decision != Verdict::Allow && !rule.matcher.args.is_empty())
                .filter(|rule| {
                    rule.matcher.tools.iter().any(|(t, _)| {
                        crate::policy::text::canonical(t).eq_ignore_ascii_case(&def.name)
                    })
                })
                .collect();
        let Some(first) = readers.first() else {
            continue;
        };
        let Some(declared) = &def.args else {
            let ids: Vec<&str> = readers.iter().map(|r| &*r.id).collect();
            r.warning(
                def.pos,
                format!(
                    "tool {} does not declare its args, but {} read{} them ({}): a step that sends the same value under another key (value for amount, cmd for command) is not seen",
                    def.name,
                    if ids.len() == 1 { "rule" } else { "rules" },
                    if ids.len() == 1 { "s" } else { "" },
                    ids.join(", "),
                ),
                Some(format!(
                    "declare the keys it takes, e.g. {}: {{..., args: [{}]}}; a step with any other key is then denied (registry.args)",
                    def.name,
                    first.matcher.args[0].path.split(['.', '[']).next().unwrap_or("...")
                )),
            );
            continue;
        };
        for rule in readers {
            for cond in &rule.matcher.args {
                if let Some(PathSeg::Key(k)) = cond.segments.first() {
                    let k = crate::policy::text::canonical(k);
                    if !declared.iter().any(|d| *d == k) {
                        r.warning(
                            cond.pos,
                            format!(
                                "rule `{}` reads args.{}, but tool {} does not take `{k}` (its args: {})",
                                rule.id,
                                cond.path,
                                def.name,
                                declared.join(", ")
                            ),
                            Some("a step with that key is denied by registry.args; fix the key or the declaration".into()),
                        );
                    }
                }
            }
        }
    }
}

fn check_tools(r: &mut Reader, doc: &PolicyDoc) {
    // Tool names compare in canonical form (case-folded), as evaluation does.
    let canonical: Vec<String> = doc
        .tools
        .iter()
        .map(|t| t.name.to_ascii_lowercase())
        .collect();
    let names: Vec<&str> = canonical.iter().map(String::as_str).collect();
    if names.is_empty() && !doc.rules.is_empty() && doc.default_decision != Verdict::Allow {
        r.warning(
            doc.rules[0].pos,
            format!(
                "the policy has no `tools:` registry, so every step gets default_decision ({})",
                doc.default_decision
            ),
            Some("list the tools agents may use under `tools:`".into()),
        );
        return;
    }
    for rule in &doc.rules {
        for (tool, at) in &rule.matcher.tools {
            let tool = &*crate::policy::text::canonical(tool);
            let known = if glob::is_glob(tool) {
                let re = regex::Regex::new(&glob::to_regex(tool)).ok();
                re.is_some_and(|re| names.iter().any(|n| re.is_match(n)))
            } else {
                names.contains(&tool)
            };
            if known || doc.default_decision == Verdict::Allow {
                continue;
            }
            if !glob::is_glob(tool) {
                if let Some(s) = suggest(tool, names.iter().copied()) {
                    r.error(
                        *at,
                        format!("rule `{}` names unknown tool `{tool}`", rule.id),
                        Some(format!("did you mean `{s}`?")),
                    );
                    continue;
                }
            }
            if rule.decision <= doc.default_decision {
                r.warning(
                    *at,
                    format!(
                        "rule `{}` is unreachable: tool `{tool}` is not in the tool registry, so its steps already get default_decision ({})",
                        rule.id, doc.default_decision
                    ),
                    Some(format!("register `{tool}` under `tools:` or remove the rule")),
                );
            }
        }
    }
}

fn same_args(a: &[ArgCond], b: &[ArgCond]) -> bool {
    a.len() == b.len() && a.iter().all(|x| b.iter().any(|y| same_arg(x, y)))
}

fn same_arg(x: &ArgCond, y: &ArgCond) -> bool {
    x.segments == y.segments
        && x.ops.len() == y.ops.len()
        && x.ops.iter().all(|(o, _)| y.ops.iter().any(|(p, _)| o == p))
}

fn same_match(a: &MatchDef, b: &MatchDef) -> bool {
    let set_eq = |x: &[String], y: &[String]| {
        x.iter().all(|t| y.contains(t)) && y.iter().all(|t| x.contains(t))
    };
    let ta: Vec<String> = a.tools.iter().map(|(t, _)| t.clone()).collect();
    let tb: Vec<String> = b.tools.iter().map(|(t, _)| t.clone()).collect();
    set_eq(&ta, &tb)
        && a.actions.iter().all(|x| b.actions.contains(x))
        && b.actions.iter().all(|x| a.actions.contains(x))
        && same_args(&a.args, &b.args)
        && a.failures_at_least == b.failures_at_least
        && a.steps_at_least == b.steps_at_least
        && a.remaining_below == b.remaining_below
        && a.time == b.time
        && set_eq(&a.teams, &b.teams)
        && a.detectors.iter().all(|d| b.detectors.contains(d))
        && b.detectors.iter().all(|d| a.detectors.contains(d))
}

/// True when every step `b` matches is also matched by `a`.
fn covers(a: &MatchDef, a_globs: &[Option<regex::Regex>], b: &MatchDef) -> bool {
    if !a.tools.is_empty() {
        if b.tools.is_empty() {
            return false;
        }
        let covered = |t: &str| {
            a.tools.iter().zip(a_globs).any(|((at, _), re)| match re {
                Some(re) => re.is_match(t) && !glob::is_glob(t),
                None => at == t,
            })
        };
        if !b.tools.iter().all(|(t, _)| covered(t)) {
            return false;
        }
    }
    if !a.actions.is_empty()
        && (b.actions.is_empty() || !b.actions.iter().all(|x| a.actions.contains(x)))
    {
        return false;
    }
    if !a.args.iter().all(|x| b.args.iter().any(|y| same_arg(x, y))) {
        return false;
    }
    let at_least = |x: Option<u64>, y: Option<u64>| match (x, y) {
        (None, _) => true,
        (Some(_), None) => false,
        (Some(x), Some(y)) => x <= y,
    };
    if !at_least(
        a.failures_at_least.map(u64::from),
        b.failures_at_least.map(u64::from),
    ) || !at_least(a.steps_at_least, b.steps_at_least)
    {
        return false;
    }
    if !a
        .remaining_below
        .iter()
        .all(|(d, f)| b.remaining_below.iter().any(|(e, g)| d == e && g <= f))
    {
        return false;
    }
    if a.time.is_some() && a.time != b.time {
        return false;
    }
    if !a.teams.is_empty()
        && (b.teams.is_empty()
            || !b.teams.iter().all(|t| {
                a.teams.iter().any(|p| {
                    t == p
                        || (t.starts_with(p.as_str()) && t.as_bytes().get(p.len()) == Some(&b'/'))
                })
            }))
    {
        return false;
    }
    if !a.detectors.is_empty()
        && (b.detectors.is_empty() || !b.detectors.iter().all(|d| a.detectors.contains(d)))
    {
        return false;
    }
    true
}

/// Could `a` ever meet `b`'s steps? Cheap prefilter by tool and action.
fn may_overlap(a: &RuleDef, b: &RuleDef) -> bool {
    if a.matcher.tools.is_empty() {
        return true;
    }
    a.matcher.tools.iter().any(|(t, _)| glob::is_glob(t))
        || b.matcher
            .tools
            .iter()
            .any(|(t, _)| a.matcher.tools.iter().any(|(u, _)| u == t))
}

/// Each rule's tool patterns compiled once (None for exact names).
fn tool_globs(rule: &RuleDef) -> Vec<Option<regex::Regex>> {
    rule.matcher
        .tools
        .iter()
        .map(|(t, _)| {
            glob::is_glob(t)
                .then(|| regex::Regex::new(&glob::to_regex(t)).ok())
                .flatten()
        })
        .collect()
}

fn check_overlaps(r: &mut Reader, doc: &PolicyDoc) {
    let rules = &doc.rules;
    let globs: Vec<Vec<Option<regex::Regex>>> = rules.iter().map(tool_globs).collect();
    // Bucket rules by exact tool so large policies stay near-linear.
    let mut by_tool: std::collections::HashMap<&str, Vec<usize>> = std::collections::HashMap::new();
    let mut general = Vec::new();
    for (i, rule) in rules.iter().enumerate() {
        if rule.matcher.tools.is_empty() || rule.matcher.tools.iter().any(|(t, _)| glob::is_glob(t))
        {
            general.push(i);
        } else {
            for (t, _) in &rule.matcher.tools {
                by_tool.entry(t.as_str()).or_default().push(i);
            }
        }
    }
    for (bi, b) in rules.iter().enumerate() {
        let mut candidates: Vec<usize> = general.clone();
        for (t, _) in &b.matcher.tools {
            if let Some(list) = by_tool.get(t.as_str()) {
                candidates.extend_from_slice(list);
            }
        }
        candidates.sort_unstable();
        candidates.dedup();
        // At most one warning of each sort per rule.
        let (mut conflict_told, mut shadow_told) = (false, false);
        for ai in candidates {
            if ai == bi {
                continue;
            }
            let a = &rules[ai];
            if !may_overlap(a, b) {
                continue;
            }
            if !conflict_told
                && a.rate_limit.is_none()
                && b.rate_limit.is_none()
                && ai < bi
                && a.decision != b.decision
                && same_match(&a.matcher, &b.matcher)
            {
                r.warning(
                    b.pos,
                    format!(
                        "rules `{}` (line {}) and `{}` match exactly the same steps but decide {} and {}; the stronger ({}) always wins",
                        a.id, a.pos.line, b.id, a.decision, b.decision, a.decision.max(b.decision)
                    ),
                    Some("remove one, or make their matches differ".into()),
                );
                conflict_told = true;
            }
            if !shadow_told
                && a.rate_limit.is_none()
                && a.decision > b.decision
                && covers(&a.matcher, &globs[ai], &b.matcher)
                && !same_match(&a.matcher, &b.matcher)
            {
                r.warning(
                    b.pos,
                    format!(
                        "rule `{}` is shadowed by `{}` (line {}): every step it matches, `{}` matches too and its {} is stronger",
                        b.id, a.id, a.pos.line, a.id, a.decision
                    ),
                    Some(format!("narrow `{}`'s match, or remove `{}`", a.id, b.id)),
                );
                shadow_told = true;
            }
        }
    }
}

fn check_pools(r: &mut Reader, doc: &PolicyDoc) {
    for pool in &doc.pools {
        let Some(slash) = pool.path.rfind('/') else {
            continue;
        };
        let parent_path = &pool.path[..slash];
        let Some(parent) = doc.pools.iter().find(|p| p.path == parent_path) else {
            continue;
        };
        for dim in LedgerDim::ALL {
            if let (Some(c), Some(p)) = (pool.limits.get(dim), parent.limits.get(dim)) {
                if c > p {
                    let show = |v: u64| match dim {
                        LedgerDim::CostMicroUsd | LedgerDim::RiskMicro => {
                            format!("{}", v as f64 / 1e6)
                        }
                        _ => v.to_string(),
                    };
                    r.warning(
                        pool.pos,
                        format!(
                            "pool {} allows {} {} but its parent {} only {}: the parent's limit binds first",
                            pool.path,
                            show(c),
                            dim.name(),
                            parent.path,
                            show(p)
                        ),
                        Some(format!("lower {}'s {} limit to at most {}", pool.path, dim.name(), show(p))),
                    );
                }
            }
        }
    }
}
