//! Scenarios: what a run simulates (agents per behaviour and their pools, the policy, the
//! faults, how long), read from YAML with the project's located reader
//! ([`warden_actors::yaml`]), so every mistake is reported at its line and column with a
//! "did you mean", all at once. Named built-ins are the files of `sim/scenarios/`, embedded.
//!
//! ```yaml
//! name: example
//! agents: 200                    # default for --agents
//! duration: 10m                  # default for --duration
//! policy: builtin                # builtin | bundled | a file path | inline YAML text
//! journal: true                  # journal on the in-memory disk (the node's write-ahead log)
//! heartbeat_timeout: 1m          # every agent's; else the policy's default
//! sweep_interval: 250ms          # heartbeat and approval sweeps, as a node runs them
//! behaviours:                    # share of the agents (weights) and pool of each behaviour
//!   steady: {share: 60, pool: swarm/research}
//!   adversary: 10                # a bare number is the share, in the root pool
//! faults:
//!   - {kind: crash, at: 3m, torn: true}
//!   - {kind: disk_error, at: 5m, heal_after: 20s}
//!   - {kind: clock_jump, every: 4m, by: 90s}
//! ```

use std::path::Path;

use warden_actors::yaml::{Diagnostic, Mapping, Node, Reader, Source, Value};

use crate::behaviour::Behaviour;

/// The simulator's built-in policy (`policy: builtin`).
pub const POLICY_BUILTIN: &str = include_str!("../scenarios/policy.yaml");

/// The built-in scenarios: name and YAML text (the files of `sim/scenarios/`).
pub const BUILTINS: [(&str, &str); 5] = [
    ("mixed", include_str!("../scenarios/mixed.yaml")),
    ("adversarial", include_str!("../scenarios/adversarial.yaml")),
    (
        "crash-recovery",
        include_str!("../scenarios/crash-recovery.yaml"),
    ),
    ("overspend", include_str!("../scenarios/overspend.yaml")),
    ("approvals", include_str!("../scenarios/approvals.yaml")),
];

const SOURCE: Source<'static> = Source::new("scenario", "scenarios");

/// A scenario, checked.
#[derive(Clone, Debug, PartialEq)]
pub struct Scenario {
    /// Its name (a built-in's name, or the file's `name:`).
    pub name: String,
    /// What it is for.
    pub description: String,
    /// Agents, unless `--agents` says otherwise.
    pub agents: usize,
    /// Simulated time, unless `--duration` says otherwise, ms.
    pub duration_ms: u64,
    /// The policy's YAML text.
    pub policy_text: String,
    /// Where the policy came from (`builtin`, `bundled`, a path, `inline`).
    pub policy_origin: String,
    /// Journal on the simulated disk (required by crash and disk faults).
    pub journal: bool,
    /// Every agent's heartbeat timeout, ms (else the policy's default).
    pub heartbeat_timeout_ms: Option<u64>,
    /// Interval of the heartbeat and approval sweeps, ms.
    pub sweep_interval_ms: u64,
    /// Behaviours with their shares and pools, in the order written.
    pub mix: Vec<Mix>,
    /// Faults, in the order written.
    pub faults: Vec<FaultSpec>,
}

/// One behaviour's part of the swarm.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mix {
    /// The behaviour.
    pub behaviour: Behaviour,
    /// Its weight among all shares.
    pub share: u64,
    /// Its agents' pool (default: the root pool).
    pub pool: Option<String>,
}

/// A fault and when it strikes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FaultSpec {
    /// What happens.
    pub kind: FaultKind,
    /// First time, ms of simulated time (default: `every`, or the middle of the run).
    pub at_ms: Option<u64>,
    /// Repeats with this period, ms.
    pub every_ms: Option<u64>,
}

/// What a fault does to the one node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FaultKind {
    /// Power cut and restart: the unacknowledged tail of the journal is cut at a seeded
    /// point (`torn`: possibly inside a frame), and the node recovers from what is left.
    Crash {
        /// Keep a seeded part of the unacknowledged tail (a torn write).
        torn: bool,
    },
    /// Writes fail from now (the journal fails closed: steps are refused), until the disk
    /// heals and the node is restarted.
    DiskError {
        /// Healed (and the node restarted) this long after, ms.
        heal_after_ms: u64,
    },
    /// Syncs fail from now, until healed and restarted.
    SyncError {
        /// Healed (and the node restarted) this long after, ms.
        heal_after_ms: u64,
    },
    /// The node's clock jumps by this much (negative: backwards; a monotonic clock then
    /// stands still until virtual time catches up).
    ClockJump {
        /// The jump, ms.
        by_ms: i64,
    },
    /// A journal snapshot, and the segments before it removed (retention).
    Snapshot,
    /// A random agent's actor crashes: its pool's restart strategy and intensity apply (a
    /// restart, an escalation, every agent halted past the root), through the swarm's
    /// synchronous seam (`Swarm::crash_inline`).
    ActorCrash,
    /// An operator halts a pool (and resumes its agents `resume_after` later, if given).
    HaltPool {
        /// The pool.
        pool: String,
    },
}

impl FaultKind {
    /// Its name in scenarios.
    pub fn name(&self) -> &'static str {
        match self {
            FaultKind::Crash { .. } => "crash",
            FaultKind::DiskError { .. } => "disk_error",
            FaultKind::SyncError { .. } => "sync_error",
            FaultKind::ClockJump { .. } => "clock_jump",
            FaultKind::Snapshot => "snapshot",
            FaultKind::ActorCrash => "actor_crash",
            FaultKind::HaltPool { .. } => "halt_pool",
        }
    }

    fn needs_journal(&self) -> bool {
        matches!(
            self,
            FaultKind::Crash { .. }
                | FaultKind::DiskError { .. }
                | FaultKind::SyncError { .. }
                | FaultKind::Snapshot
        )
    }
}

/// A scenario that could not be read: where it came from and every problem found.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("scenario {origin}:\n{}", .diagnostics.iter().map(|d| d.to_string()).collect::<Vec<_>>().join("\n"))]
pub struct ScenarioError {
    /// The file or built-in name.
    pub origin: String,
    /// Every problem, with line and column.
    pub diagnostics: Vec<Diagnostic>,
}

impl Scenario {
    /// The built-in scenario `name`, or the file at `name` (a path).
    pub fn load(name_or_path: &str) -> Result<Scenario, ScenarioError> {
        if let Some((name, text)) = BUILTINS.iter().find(|(n, _)| *n == name_or_path) {
            return Scenario::parse(text, name, None);
        }
        let path = Path::new(name_or_path);
        let text = std::fs::read_to_string(path).map_err(|e| {
            let names: Vec<&str> = BUILTINS.iter().map(|(n, _)| *n).collect();
            let close = warden_actors::yaml::suggest(name_or_path, names.iter().copied())
                .map(|n| format!("did you mean `{n}`? "))
                .unwrap_or_default();
            ScenarioError {
                origin: name_or_path.to_string(),
                diagnostics: vec![Diagnostic::error(
                    warden_actors::yaml::Pos::START,
                    format!("no built-in scenario of that name, and the file cannot be read: {e}"),
                    Some(format!("{close}built-ins: {}", names.join(", "))),
                )],
            }
        })?;
        Scenario::parse(&text, name_or_path, path.parent())
    }

    /// The default scenario (`mixed`).
    pub fn default_mixed() -> Scenario {
        Scenario::load("mixed").expect("the built-in mixed scenario is valid")
    }

    /// Reads a scenario's YAML text. `origin` names it in errors; `dir` is where a policy
    /// path is looked up (beside the scenario file).
    pub fn parse(text: &str, origin: &str, dir: Option<&Path>) -> Result<Scenario, ScenarioError> {
        let fail = |diagnostics| ScenarioError {
            origin: origin.to_string(),
            diagnostics,
        };
        let mut r = Reader::new();
        let Some(root) = r.parse(text, &SOURCE) else {
            return Err(fail(r.into_diagnostics()));
        };
        let scenario = read_scenario(&mut r, &root, origin, (text, dir));
        match r.finish(scenario) {
            Ok((Some(s), _warnings)) => Ok(s),
            Ok((None, warnings)) => Err(fail(warnings)),
            Err(diagnostics) => Err(fail(diagnostics)),
        }
    }
}

const KEYS: [&str; 10] = [
    "name",
    "description",
    "agents",
    "duration",
    "policy",
    "journal",
    "heartbeat_timeout",
    "sweep_interval",
    "behaviours",
    "faults",
];

/// `at`: the scenario's text (to place an inline policy's errors in it) and the directory a
/// policy path is looked up in.
fn read_scenario(
    r: &mut Reader,
    root: &Node,
    origin: &str,
    at: (&str, Option<&Path>),
) -> Option<Scenario> {
    let top = r.mapping(root, "the scenario", &KEYS)?;
    let mut s = Scenario {
        name: origin.to_string(),
        description: String::new(),
        agents: 100,
        duration_ms: 10 * 60_000,
        policy_text: POLICY_BUILTIN.to_string(),
        policy_origin: "builtin".into(),
        journal: true,
        heartbeat_timeout_ms: None,
        sweep_interval_ms: 250,
        mix: Vec::new(),
        faults: Vec::new(),
    };
    for e in top.iter() {
        let v = e.value;
        match e.key() {
            "name" => s.name = r.text(v, "name").unwrap_or_default(),
            "description" => s.description = r.text(v, "description").unwrap_or_default(),
            "agents" => s.agents = read_agents(r, v),
            "duration" => s.duration_ms = positive_ms(r, v, "duration").unwrap_or(1),
            "policy" => {
                if let Some((text, from)) = read_policy(r, v, at) {
                    (s.policy_text, s.policy_origin) = (text, from);
                }
            }
            "journal" => s.journal = r.boolean(v, "journal").unwrap_or(true),
            "heartbeat_timeout" => s.heartbeat_timeout_ms = positive_ms(r, v, "heartbeat_timeout"),
            "sweep_interval" => {
                s.sweep_interval_ms = r.duration_ms(v, "sweep_interval").unwrap_or(250).max(1)
            }
            "behaviours" => s.mix = read_mix(r, v),
            _ => s.faults = read_faults(r, v),
        }
    }
    if s.mix.is_empty() && r.error_count() == 0 {
        r.error(
            top.pos,
            "the scenario has no behaviours",
            Some("add `behaviours: {steady: 1}`".into()),
        );
    } else if !s.mix.is_empty() && s.mix.iter().all(|m| m.share == 0) {
        let at = top.get("behaviours").map_or(top.pos, |n| n.pos);
        r.error(
            at,
            "every behaviour's share is 0: no agent could be given one",
            Some("give at least one behaviour a share above 0".into()),
        );
    }
    if r.error_count() == 0 {
        check_pools(r, &top, &s.policy_text);
        check_fault_times(r, &top, &s);
    }
    if !s.journal {
        if let Some(f) = s.faults.iter().find(|f| f.kind.needs_journal()) {
            let msg = format!(
                "fault `{}` needs the journal, and `journal` is false",
                f.kind.name()
            );
            r.error(
                top.pos,
                msg,
                Some("set `journal: true` or remove the fault".into()),
            );
        }
    }
    Some(s)
}

/// The pool a behaviour's or a fault's mapping names, if it is one.
fn pool_node(n: &Node) -> Option<&Node> {
    match &n.value {
        Value::Map(m) => m
            .iter()
            .find(|(k, _)| k.as_str() == Some("pool"))
            .map(|(_, v)| v),
        _ => None,
    }
}

/// The scenario's fault nodes, in the order written.
fn fault_nodes<'a>(top: &Mapping<'a>) -> &'a [Node] {
    match top.get("faults").map(|n| &n.value) {
        Some(Value::Seq(items)) => items,
        _ => &[],
    }
}

/// Every pool a behaviour or a `halt_pool` fault names must be one of the policy's (the root
/// included): otherwise the run would fail when it sets the swarm up, without a place.
fn check_pools(r: &mut Reader, top: &Mapping<'_>, policy_text: &str) {
    let Ok(set) = warden_actors::policy::PolicySet::parse(policy_text) else {
        return;
    };
    let mut known: Vec<&str> = set.doc().pools.iter().map(|p| p.path.as_str()).collect();
    if !known.iter().any(|p| !p.contains('/')) {
        known.insert(0, "swarm"); // the root pool's default name
    }
    let behaviours: Vec<&Node> = match top.get("behaviours").map(|n| &n.value) {
        Some(Value::Map(m)) => m.iter().filter_map(|(_, v)| pool_node(v)).collect(),
        _ => Vec::new(),
    };
    let faults = fault_nodes(top).iter().filter_map(pool_node);
    for n in behaviours.into_iter().chain(faults) {
        let Some(path) = n.as_str().filter(|p| !known.contains(p)) else {
            continue;
        };
        r.error(
            n.pos,
            format!("no pool `{path}` in the scenario's policy"),
            Some(format!("the policy's pools: {}", known.join(", "))),
        );
    }
}

/// A fault first due at or after the scenario's end would never happen: refused, so a typo
/// (`at: 20m` in a 10-second run) does not pass silently.
fn check_fault_times(r: &mut Reader, top: &Mapping<'_>, s: &Scenario) {
    for (n, f) in fault_nodes(top).iter().zip(&s.faults) {
        let Some(first) = f.at_ms.or(f.every_ms) else {
            continue; // at half the run
        };
        if first >= s.duration_ms {
            r.error(
                n.pos,
                format!(
                    "fault `{}` is first due at {} ms, at or after the run's end ({} ms): it would never happen",
                    f.kind.name(),
                    first,
                    s.duration_ms
                ),
                Some("move it before the end, or lengthen `duration`".into()),
            );
        }
    }
}

/// `agents`: 1 to [`crate::loadgen::AGENTS_MAX`] (as `--agents`).
fn read_agents(r: &mut Reader, v: &Node) -> usize {
    let max = crate::loadgen::AGENTS_MAX as u64;
    match r.uint_at_least(v, "agents", 1) {
        Some(n) if n > max => {
            r.error(
                v.pos,
                format!("agents = {n} is above the most a run may have, {max}"),
                Some("run fewer agents, or several runs with different seeds".into()),
            );
            1
        }
        Some(n) => n as usize,
        None => 1,
    }
}

/// A duration above zero.
fn positive_ms(r: &mut Reader, v: &Node, what: &str) -> Option<u64> {
    let ms = r.duration_ms(v, what)?;
    if ms == 0 {
        r.error(
            v.pos,
            format!("{what} is 0"),
            Some("give a duration above 0, e.g. 1m".into()),
        );
        return None;
    }
    Some(ms)
}

/// `builtin`, `bundled`, inline YAML (a text with a line break), or a file path. A policy
/// that does not compile is reported here: an inline one's errors at their line and column
/// in the scenario's text (`source`), a file's with the file's name.
fn read_policy(
    r: &mut Reader,
    v: &Node,
    (source, dir): (&str, Option<&Path>),
) -> Option<(String, String)> {
    let text = r.text(v, "policy")?;
    match text.as_str() {
        "builtin" => return Some((POLICY_BUILTIN.to_string(), "builtin".into())),
        "bundled" => {
            return Some((
                warden_adapters::config::POLICY_DEFAULT.to_string(),
                "bundled".into(),
            ))
        }
        t if t.contains('\n') => {
            let place = inline_place(source, v);
            return check_policy(r, &text, place).then(|| (text.clone(), "inline".into()));
        }
        _ => {}
    }
    let path = match dir {
        Some(d) if Path::new(&text).is_relative() => d.join(&text),
        _ => Path::new(&text).to_path_buf(),
    };
    match std::fs::read_to_string(&path) {
        Ok(t) => {
            let name = path.display().to_string();
            let ok = check_policy(r, &t, |d| {
                (v.pos, format!("policy file {name}:{}:{}: ", d.line, d.col))
            });
            ok.then_some((t, name))
        }
        Err(e) => {
            let hint = "a path (relative to the scenario file), `builtin`, `bundled`, or inline YAML (`policy: |`)";
            r.error(
                v.pos,
                format!("policy file {}: {e}", path.display()),
                Some(hint.into()),
            );
            None
        }
    }
}

/// Where an inline policy's diagnostic goes in the scenario's `source`: for a literal block
/// (`policy: |`, `|-`, `|+`), its own line and column in the file (the text starts on the line
/// after the indicator, indented); for any other style (quoted, folded, with an indentation
/// indicator), whose lines do not map one to one, the `policy` value's position, the policy's
/// own line and column named in the message.
fn inline_place<'s>(
    source: &'s str,
    v: &Node,
) -> impl Fn(&Diagnostic) -> (warden_actors::yaml::Pos, String) + 's {
    let line = |n: usize| {
        source
            .lines()
            .nth(n.wrapping_sub(1))
            .unwrap_or("")
            .trim_end()
    };
    let literal = |l: &str| l.ends_with('|') || l.ends_with("|-") || l.ends_with("|+");
    // The node's position is the indicator's line or the text's first, by the parser.
    let first = if literal(line(v.pos.line)) {
        Some(v.pos.line + 1)
    } else if literal(line(v.pos.line.saturating_sub(1))) {
        Some(v.pos.line)
    } else {
        None
    };
    let indent = first.map_or(0, |f| {
        let l = source.lines().nth(f - 1).unwrap_or("");
        l.len() - l.trim_start().len()
    });
    let at = v.pos;
    move |d: &Diagnostic| match first {
        Some(f) => (
            warden_actors::yaml::Pos {
                line: f + d.line - 1,
                col: d.col + indent,
            },
            String::new(),
        ),
        None => (at, format!("inline policy {}:{}: ", d.line, d.col)),
    }
}

/// Compiles `text` as a policy; reports each error where `place` puts it (a position in the
/// scenario and a prefix for the message). Whether it compiled.
fn check_policy(
    r: &mut Reader,
    text: &str,
    place: impl Fn(&Diagnostic) -> (warden_actors::yaml::Pos, String),
) -> bool {
    let Err(e) = warden_actors::policy::PolicySet::parse(text) else {
        return true;
    };
    for d in e.errors() {
        let (at, prefix) = place(d);
        r.error(at, format!("{prefix}{}", d.message), d.hint.clone());
    }
    false
}

fn read_mix(r: &mut Reader, v: &Node) -> Vec<Mix> {
    let names: Vec<&str> = Behaviour::ALL.iter().map(|b| b.name()).collect();
    let Some(m) = r.mapping(v, "behaviours", &names) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for e in m.iter() {
        let behaviour = Behaviour::from_name(e.key()).expect("keys were checked");
        let what = format!("behaviours.{}", e.key());
        let (share, pool) = match &e.value.value {
            warden_actors::yaml::Value::Map(_) => {
                match r.mapping(e.value, &what, &["share", "pool"]) {
                    Some(inner) => read_share(r, &inner, &what),
                    None => (None, None),
                }
            }
            _ => (r.uint(e.value, &what), None),
        };
        if let Some(share) = share {
            out.push(Mix {
                behaviour,
                share,
                pool,
            });
        }
    }
    out
}

fn read_share(r: &mut Reader, m: &Mapping<'_>, what: &str) -> (Option<u64>, Option<String>) {
    let share = m
        .get("share")
        .and_then(|n| r.uint(n, &format!("{what}.share")));
    let pool = m
        .get("pool")
        .and_then(|n| r.text(n, &format!("{what}.pool")));
    if share.is_none() && m.get("share").is_none() {
        r.error(
            m.pos,
            format!("{what} needs `share`"),
            Some("a weight, e.g. `share: 10`".into()),
        );
    }
    (share, pool)
}

const FAULT_KINDS: [&str; 7] = [
    "crash",
    "disk_error",
    "sync_error",
    "clock_jump",
    "snapshot",
    "halt_pool",
    "actor_crash",
];

fn read_faults(r: &mut Reader, v: &Node) -> Vec<FaultSpec> {
    let Some(items) = r.sequence(
        v,
        "faults",
        Some("a list of `{kind: crash, at: 3m}`".into()),
    ) else {
        return Vec::new();
    };
    items.iter().filter_map(|n| read_fault(r, n)).collect()
}

fn read_fault(r: &mut Reader, n: &Node) -> Option<FaultSpec> {
    let keys = ["kind", "at", "every", "torn", "heal_after", "by", "pool"];
    let m = r.mapping(n, "a fault", &keys)?;
    let kind_node = r.require(
        &m,
        "kind",
        "a fault",
        Some(warden_actors::yaml::one_of_hint("", &FAULT_KINDS)),
    )?;
    let kinds: Vec<(&str, usize)> = FAULT_KINDS
        .iter()
        .enumerate()
        .map(|(i, k)| (*k, i))
        .collect();
    let kind = r.named(kind_node, "kind", &kinds)?;
    let at_ms = m.get("at").and_then(|x| r.duration_ms(x, "at"));
    let every_ms = m.get("every").and_then(|x| positive_ms(r, x, "every"));
    let heal = |r: &mut Reader| {
        m.get("heal_after")
            .and_then(|x| r.duration_ms(x, "heal_after"))
            .unwrap_or(10_000)
    };
    let kind = match FAULT_KINDS[kind] {
        "crash" => FaultKind::Crash {
            torn: m
                .get("torn")
                .and_then(|x| r.boolean(x, "torn"))
                .unwrap_or(true),
        },
        "disk_error" => FaultKind::DiskError {
            heal_after_ms: heal(r),
        },
        "sync_error" => FaultKind::SyncError {
            heal_after_ms: heal(r),
        },
        "clock_jump" => FaultKind::ClockJump {
            by_ms: read_jump(r, &m)?,
        },
        "snapshot" => FaultKind::Snapshot,
        "actor_crash" => FaultKind::ActorCrash,
        _ => {
            let pool = r.require(&m, "pool", "a halt_pool fault", None)?;
            FaultKind::HaltPool {
                pool: r.text(pool, "pool")?,
            }
        }
    };
    Some(FaultSpec {
        kind,
        at_ms,
        every_ms,
    })
}

/// The longest backward clock jump a scenario may hold: the run's drain (15 minutes of
/// simulated time for outcomes and approvals after the end) must outlast the time the clock
/// waits to catch up.
pub const CLOCK_JUMP_BACK_MS_MAX: u64 = 10 * 60_000;

/// `by: 90s` forward, `by: -30s` backward (at most [`CLOCK_JUMP_BACK_MS_MAX`]).
fn read_jump(r: &mut Reader, m: &Mapping<'_>) -> Option<i64> {
    let n = r.require(
        m,
        "by",
        "a clock_jump fault",
        Some("e.g. `by: 90s` or `by: -30s`".into()),
    )?;
    match n.as_str().and_then(|t| t.strip_prefix('-')) {
        Some(back) => match warden_actors::yaml::parse_duration_ms(back) {
            Some(ms) if ms > CLOCK_JUMP_BACK_MS_MAX => {
                r.error(
                    n.pos,
                    format!("a clock jump back by {back} is longer than the 10m the simulator allows"),
                    Some("the run's 15-minute drain must outlast the wait for the clock to catch up: jump back by 10m or less".into()),
                );
                None
            }
            Some(ms) => Some(-(ms as i64)),
            None => {
                r.expected(n, "by", "a duration such as 90s or -30s", None);
                None
            }
        },
        None => r.duration_ms(n, "by").map(|ms| ms as i64),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_builtin_scenario_and_its_policy_read_cleanly() {
        for (name, _) in BUILTINS {
            let s = Scenario::load(name).unwrap_or_else(|e| panic!("{e}"));
            warden_actors::policy::PolicySet::parse(&s.policy_text)
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            assert!(!s.mix.is_empty());
        }
    }

    #[test]
    fn mistakes_are_reported_at_their_line_and_column_with_a_hint() {
        let text = "name: x\nbehaviors: {steady: 1}\nfaults:\n  - {kind: crahs, at: 1m}\n";
        let err = Scenario::parse(text, "x.yaml", None).unwrap_err();
        let all = err.to_string();
        assert!(all.contains("2:1: error: unknown key `behaviors`"), "{all}");
        assert!(all.contains("did you mean `behaviours`"), "{all}");
        assert!(
            all.contains("4:12: error: kind `crahs` is not known"),
            "{all}"
        );
    }

    #[test]
    fn settings_that_cannot_run_are_refused_where_they_are_written() {
        let cases = [
            (
                "agents: 1000000000\nbehaviours: {steady: 1}\n",
                "1:9: error: agents = 1000000000 is above",
            ),
            (
                "duration: 0s\nbehaviours: {steady: 1}\n",
                "1:11: error: duration is 0",
            ),
            (
                "heartbeat_timeout: 0s\nbehaviours: {steady: 1}\n",
                "1:20: error: heartbeat_timeout is 0",
            ),
            (
                "behaviours: {steady: 0, runaway: 0}\n",
                "1:13: error: every behaviour's share is 0",
            ),
            (
                "behaviours: {steady: 1}\nfaults:\n  - {kind: crash, every: 0s}\n",
                "3:26: error: every is 0",
            ),
            (
                "behaviours: {steady: 1}\nfaults:\n  - {kind: clock_jump, at: 2m, by: -30m}\n",
                "3:36: error: a clock jump back by 30m",
            ),
            // Pools the policy does not have, found before the swarm is set up.
            (
                "behaviours: {steady: {share: 1, pool: swarm/nope}}\n",
                "1:39: error: no pool `swarm/nope` in the scenario's policy",
            ),
            (
                "behaviours: {steady: 1}\nfaults:\n  - {kind: halt_pool, at: 1s, pool: nowhere}\n",
                "3:37: error: no pool `nowhere`",
            ),
            // A fault due after the end would never happen.
            (
                "duration: 10s\nbehaviours: {steady: 1}\nfaults:\n  - {kind: crash, at: 20m}\n",
                "4:5: error: fault `crash` is first due at 1200000 ms, at or after the run's end (10000 ms)",
            ),
        ];
        for (text, want) in cases {
            let all = Scenario::parse(text, "x.yaml", None)
                .unwrap_err()
                .to_string();
            assert!(all.contains(want), "{text}: {all}");
            assert!(!all.contains("no behaviours"), "{text}: {all}");
        }
        // A real mistake in a behaviour is not followed by "no behaviours".
        let all = Scenario::parse("behaviours: {steady: 0.5}\n", "x.yaml", None)
            .unwrap_err()
            .to_string();
        assert!(!all.contains("no behaviours"), "{all}");
        // A backward jump the drain outlasts is fine.
        let text = "behaviours: {steady: 1}\nfaults:\n  - {kind: clock_jump, at: 2m, by: -10m}\n";
        assert!(Scenario::parse(text, "x.yaml", None).is_ok());
    }

    #[test]
    fn an_inline_policys_mistakes_are_placed_in_the_scenario_file() {
        let text = "name: x\nbehaviours: {steady: 1}\npolicy: |\n  version: 1\n  defaults:\n    budgets: {steps: lots}\n";
        let all = Scenario::parse(text, "x.yaml", None)
            .unwrap_err()
            .to_string();
        // `lots` is on line 6, column 22 of the scenario (line 3, column 20 of the policy).
        assert!(all.contains("6:22: error"), "{all}");
        // Quoted, or with an indentation indicator: lines do not map one to one, so the
        // error sits at the `policy` value and names the policy's own line and column.
        for (text, at) in [
            ("behaviours: {steady: 1}\npolicy: \"version: 1\\ndefaults:\\n  budgets: {steps: lots}\\n\"\n", "2:9: error: inline policy 3:"),
            ("behaviours: {steady: 1}\npolicy: |4\n      version: 1\n      defaults:\n        budgets: {steps: lots}\n", "3:5: error: inline policy 3:"),
        ] {
            let all = Scenario::parse(text, "x.yaml", None).unwrap_err().to_string();
            assert!(all.contains(at), "{text}: {all}");
        }
        let dir =
            std::env::temp_dir().join(format!("warden-scenario-policy-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("bad.yaml"),
            "version: 1\ndefaults:\n  budgets: {steps: lots}\n",
        )
        .unwrap();
        let text = "behaviours: {steady: 1}\npolicy: bad.yaml\n";
        let all = Scenario::parse(text, "x.yaml", Some(&dir))
            .unwrap_err()
            .to_string();
        assert!(
            all.contains("2:9: error: policy file") && all.contains("bad.yaml:3:20"),
            "{all}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn shares_pools_and_faults_are_read() {
        let text = "behaviours:\n  steady: {share: 3, pool: swarm/research}\n  adversary: 1\nfaults:\n  - {kind: clock_jump, by: -30s, every: 2m}\n  - {kind: halt_pool, pool: swarm/ops, at: 1m}\n";
        let s = Scenario::parse(text, "t", None).unwrap();
        assert_eq!(
            s.mix[0],
            Mix {
                behaviour: Behaviour::Steady,
                share: 3,
                pool: Some("swarm/research".into())
            }
        );
        assert_eq!(s.mix[1].share, 1);
        assert_eq!(s.faults[0].kind, FaultKind::ClockJump { by_ms: -30_000 });
        assert_eq!(s.faults[0].every_ms, Some(120_000));
        assert_eq!(
            s.faults[1].kind,
            FaultKind::HaltPool {
                pool: "swarm/ops".into()
            }
        );
    }
}
