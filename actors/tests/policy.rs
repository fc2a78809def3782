//! The policy language: parsing, every match condition and outcome, order independence,
//! validator messages, rate limits, robustness.

use std::sync::Arc;

use proptest::prelude::*;
use serde_json::json;
use warden_actors::policy::{Diagnostic, PolicySet, Severity};
use warden_actors::{
    Account, ActionClass, AgentId, HaltKind, LedgerDim, Limits, PolicyContext, PolicyOutcome, Step,
    Verdict,
};

const DESIGN: &str = include_str!("../../examples/policies/design.yaml");

struct Ctx {
    agent: AgentId,
    account: Arc<Account>,
    team: String,
}

impl Ctx {
    fn new(team: &str) -> Self {
        let root = Account::root("swarm", Limits::UNLIMITED);
        let t = root.child(team, Limits::UNLIMITED).unwrap();
        let account = t
            .child(
                "a1",
                Limits::UNLIMITED
                    .with(LedgerDim::Tokens, Some(1_000))
                    .with(LedgerDim::Steps, Some(100)),
            )
            .unwrap();
        Self {
            agent: AgentId::new("a1").unwrap(),
            account,
            team: team.to_string(),
        }
    }

    fn eval(
        &self,
        p: &PolicySet,
        step: &Step,
        failures: u32,
        steps: u64,
        now_ms: u64,
    ) -> (Verdict, Option<String>, Vec<String>) {
        let ctx = PolicyContext {
            agent: &self.agent,
            step,
            consecutive_failures: failures,
            steps_decided: steps,
            now_ms,
            team: &self.team,
            account: &self.account,
        };
        let e = p.evaluate(&ctx);
        let matched = e.matched.iter().map(|m| m.id.to_string()).collect();
        // As the kernel does once budgets admit the step: count it against its rate limits.
        let outcome = match e.rate_ticket.map(|t| t.commit(now_ms)) {
            Some(Err(missed)) => missed,
            _ => e.outcome,
        };
        let (v, rule) = match outcome {
            PolicyOutcome::Allow => (Verdict::Allow, None),
            PolicyOutcome::RequireApproval { rule, .. } => {
                (Verdict::RequireApproval, Some(rule.to_string()))
            }
            PolicyOutcome::Deny { rule, .. } => (Verdict::Deny, Some(rule.to_string())),
            PolicyOutcome::Halt { rule, .. } => (Verdict::Halt, Some(rule.to_string())),
        };
        (v, rule, matched)
    }
}

fn step(tool: &str, action: ActionClass, args: serde_json::Value) -> Step {
    Step::builder(tool, action).args(args).build().unwrap()
}

fn policy(rules: &str) -> PolicySet {
    let text = format!(
        "version: 1\ntools:\n  shell: {{action: execute}}\n  web.search: {{action: read}}\n  web.fetch: {{action: network}}\n  files.write: {{action: write}}\n  payments.transfer: {{action: spend, risk: 5.0}}\nrules:\n{rules}"
    );
    PolicySet::parse(&text).unwrap_or_else(|e| panic!("{e}"))
}

// 2026-11-23 (a Monday) 10:00 UTC.
const MONDAY_10H: u64 = 1_795_428_000_000;

#[test]
fn the_design_example_parses_without_errors() {
    let p = PolicySet::parse(DESIGN).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(p.rule_count(), 5);
    assert_eq!(p.doc().pools.len(), 2);
    assert_eq!(p.doc().defaults.budgets.cost_micro_usd, Some(5_000_000));
    assert_eq!(p.doc().defaults.budgets.wall_time_ms, Some(1_800_000));
    let c = Ctx::new("swarm/research");
    let rm = step(
        "shell",
        ActionClass::Execute,
        json!({"command": "rm  -rf /tmp"}),
    );
    assert_eq!(c.eval(&p, &rm, 0, 0, 0).0, Verdict::Halt);
    let ls = step("shell", ActionClass::Execute, json!({"command": "ls"}));
    assert_eq!(c.eval(&p, &ls, 0, 0, 0).0, Verdict::Allow);
}

#[test]
fn tools_match_exactly_and_by_glob() {
    let p = policy("  - {id: no-web, match: {tool: 'web.*'}, decision: deny}\n  - {id: no-shell, match: {tool: shell}, decision: deny}\n");
    let c = Ctx::new("swarm/t");
    assert_eq!(
        c.eval(
            &p,
            &step("web.fetch", ActionClass::Network, json!({})),
            0,
            0,
            0
        )
        .1
        .as_deref(),
        Some("no-web")
    );
    assert_eq!(
        c.eval(&p, &step("shell", ActionClass::Execute, json!({})), 0, 0, 0)
            .1
            .as_deref(),
        Some("no-shell")
    );
    assert_eq!(
        c.eval(
            &p,
            &step("files.write", ActionClass::Write, json!({})),
            0,
            0,
            0
        )
        .0,
        Verdict::Allow
    );
}

#[test]
fn unregistered_tools_get_the_default_decision_and_registered_actions_must_agree() {
    let p = policy("  []\n");
    let c = Ctx::new("swarm/t");
    let (v, rule, _) = c.eval(
        &p,
        &step("rogue.tool", ActionClass::Read, json!({})),
        0,
        0,
        0,
    );
    assert_eq!(
        (v, rule.as_deref()),
        (Verdict::Deny, Some("default_decision"))
    );
    let (v, rule, _) = c.eval(&p, &step("shell", ActionClass::Read, json!({})), 0, 0, 0);
    assert_eq!(
        (v, rule.as_deref()),
        (Verdict::Deny, Some("registry.action"))
    );
    let open = PolicySet::parse("version: 1\ndefault_decision: allow\nrules: []\n").unwrap();
    assert_eq!(
        c.eval(
            &open,
            &step("anything", ActionClass::Read, json!({})),
            0,
            0,
            0
        )
        .0,
        Verdict::Allow
    );
}

#[test]
fn action_classes_match() {
    let p = policy(
        "  - {id: no-writes, match: {action: [write, spend]}, decision: require_approval}\n",
    );
    let c = Ctx::new("swarm/t");
    assert_eq!(
        c.eval(
            &p,
            &step("files.write", ActionClass::Write, json!({})),
            0,
            0,
            0
        )
        .0,
        Verdict::RequireApproval
    );
    assert_eq!(
        c.eval(
            &p,
            &step("payments.transfer", ActionClass::Spend, json!({})),
            0,
            0,
            0
        )
        .0,
        Verdict::RequireApproval
    );
    assert_eq!(
        c.eval(
            &p,
            &step("web.search", ActionClass::Read, json!({})),
            0,
            0,
            0
        )
        .0,
        Verdict::Allow
    );
}

#[test]
fn every_args_operator_works() {
    let p = policy(concat!(
        "  - {id: eq, match: {tool: shell, args: {user: root}}, decision: deny}\n",
        "  - {id: in, match: {tool: payments.transfer, args: {country: {in: [KP, IR]}}}, decision: halt, kind: safety}\n",
        "  - {id: gt, match: {tool: payments.transfer, args: {amount: {gt: 1000}}}, decision: require_approval}\n",
        "  - {id: gte-lte, match: {tool: payments.transfer, args: {amount: {gte: 500, lte: 600}}}, decision: deny}\n",
        "  - {id: lt, match: {tool: payments.transfer, args: {amount: {lt: 0}}}, decision: deny}\n",
        "  - {id: re, match: {tool: shell, args: {command: {regex: '^sudo\\b'}}}, decision: deny}\n",
        "  - {id: glob, match: {tool: files.write, args: {path: {glob: '/etc/*'}}}, decision: deny}\n",
        "  - {id: exists, match: {tool: web.fetch, args: {headers.authorization: {exists: true}}}, decision: deny}\n",
        "  - {id: nested, match: {tool: web.fetch, args: {'urls[1]': {regex: 'evil'}}}, decision: deny}\n",
    ));
    let c = Ctx::new("swarm/t");
    let pay = |a: serde_json::Value| step("payments.transfer", ActionClass::Spend, a);
    let rule = |s: &Step| c.eval(&p, s, 0, 0, 0).1;
    assert_eq!(
        rule(&step(
            "shell",
            ActionClass::Execute,
            json!({"user": "root"})
        ))
        .as_deref(),
        Some("eq")
    );
    assert_eq!(
        rule(&step("shell", ActionClass::Execute, json!({"user": "bob"}))),
        None
    );
    assert_eq!(
        rule(&pay(json!({"country": "KP", "amount": 5}))).as_deref(),
        Some("in")
    );
    assert_eq!(rule(&pay(json!({"amount": 1000.5}))).as_deref(), Some("gt"));
    assert_eq!(rule(&pay(json!({"amount": 1000}))), None);
    assert_eq!(
        rule(&pay(json!({"amount": 550}))).as_deref(),
        Some("gte-lte")
    );
    assert_eq!(rule(&pay(json!({"amount": 601}))), None);
    assert_eq!(rule(&pay(json!({"amount": -1}))).as_deref(), Some("lt"));
    // A value that cannot be compared makes every numeric rule stronger than allow match
    // (fail closed); the two denies tie and the smaller id is reported.
    assert_eq!(
        rule(&pay(json!({"amount": "lots"}))).as_deref(),
        Some("gte-lte"),
        "a string that is not a number fails closed"
    );
    assert_eq!(
        rule(&pay(json!({"amount": "1000.50"}))).as_deref(),
        Some("gt")
    );
    assert_eq!(
        rule(&step(
            "shell",
            ActionClass::Execute,
            json!({"command": "sudo ls"})
        ))
        .as_deref(),
        Some("re")
    );
    assert_eq!(
        rule(&step(
            "shell",
            ActionClass::Execute,
            json!({"command": "echo sudo"})
        )),
        None
    );
    assert_eq!(
        rule(&step(
            "files.write",
            ActionClass::Write,
            json!({"path": "/etc/passwd"})
        ))
        .as_deref(),
        Some("glob")
    );
    assert_eq!(
        rule(&step(
            "files.write",
            ActionClass::Write,
            json!({"path": "/tmp/etc/x"})
        )),
        None
    );
    assert_eq!(
        rule(&step(
            "web.fetch",
            ActionClass::Network,
            json!({"headers": {"authorization": "x"}})
        ))
        .as_deref(),
        Some("exists")
    );
    assert_eq!(
        rule(&step(
            "web.fetch",
            ActionClass::Network,
            json!({"headers": {}})
        )),
        None
    );
    assert_eq!(
        rule(&step(
            "web.fetch",
            ActionClass::Network,
            json!({"urls": ["ok", "evil.com"]})
        ))
        .as_deref(),
        Some("nested")
    );
    // The in-rule (halt) beats the gt-rule (approval) when both match.
    let (v, r, matched) = c.eval(&p, &pay(json!({"country": "IR", "amount": 5000})), 0, 0, 0);
    assert_eq!((v, r.as_deref()), (Verdict::Halt, Some("in")));
    assert_eq!(matched, vec!["gt", "in"]);
}

/// [`policy`] with agents' budgets and pools, which `remaining_below` and `team` refer to.
fn policy_with_pools_and_budgets(rules: &str) -> PolicySet {
    let text = format!(
        "version: 1\ndefaults:\n  budgets: {{steps: 100, tokens: 1000}}\npools:\n  - {{path: swarm}}\n  - {{path: swarm/research}}\ntools:\n  shell: {{action: execute}}\n  web.search: {{action: read}}\n  web.fetch: {{action: network}}\n  files.write: {{action: write}}\nrules:\n{rules}"
    );
    PolicySet::parse(&text).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn agent_state_conditions_match() {
    let p = policy_with_pools_and_budgets(concat!(
        "  - {id: failing, match: {action: write, failures: {at_least: 3}}, decision: deny}\n",
        "  - {id: late, match: {tool: web.search, steps: {at_least: 50}}, decision: require_approval}\n",
        "  - {id: low-tokens, match: {tool: web.fetch, remaining_below: {tokens: 0.5}}, decision: deny}\n",
        "  - {id: research-only, match: {tool: shell, team: swarm/research}, decision: deny}\n",
    ));
    let c = Ctx::new("swarm/research/web");
    let w = step("files.write", ActionClass::Write, json!({}));
    assert_eq!(c.eval(&p, &w, 2, 0, 0).0, Verdict::Allow);
    assert_eq!(c.eval(&p, &w, 3, 0, 0).1.as_deref(), Some("failing"));
    let s = step("web.search", ActionClass::Read, json!({}));
    assert_eq!(c.eval(&p, &s, 0, 49, 0).0, Verdict::Allow);
    assert_eq!(c.eval(&p, &s, 0, 50, 0).0, Verdict::RequireApproval);
    let f = step("web.fetch", ActionClass::Network, json!({}));
    assert_eq!(c.eval(&p, &f, 0, 0, 0).0, Verdict::Allow);
    let (_r, _) = c
        .account
        .reserve(&warden_actors::Amounts::new(0, 600, 0, 0))
        .unwrap();
    assert_eq!(c.eval(&p, &f, 0, 0, 0).1.as_deref(), Some("low-tokens"));
    // Team membership includes nested teams, but not look-alike prefixes.
    assert_eq!(
        c.eval(&p, &step("shell", ActionClass::Execute, json!({})), 0, 0, 0)
            .1
            .as_deref(),
        Some("research-only")
    );
    let other = Ctx::new("swarm/researchers");
    assert_eq!(
        other
            .eval(&p, &step("shell", ActionClass::Execute, json!({})), 0, 0, 0)
            .0,
        Verdict::Allow
    );
}

#[test]
fn time_windows_match_in_utc() {
    let p = policy("  - {id: office-hours, match: {tool: payments.transfer, time: {days: weekdays, between: '09:00-17:00', tz: UTC}}, decision: allow}\n  - {id: after-hours, match: {tool: payments.transfer}, decision: require_approval}\n");
    let c = Ctx::new("swarm/t");
    let pay = step("payments.transfer", ActionClass::Spend, json!({}));
    let (_, _, matched) = c.eval(&p, &pay, 0, 0, MONDAY_10H);
    assert_eq!(matched, vec!["after-hours", "office-hours"]);
    let (_, _, matched) = c.eval(&p, &pay, 0, 0, MONDAY_10H + 8 * 3_600_000);
    assert_eq!(matched, vec!["after-hours"]);
    let (_, _, matched) = c.eval(&p, &pay, 0, 0, MONDAY_10H - 2 * 86_400_000);
    assert_eq!(matched, vec!["after-hours"], "Saturday");
}

#[test]
fn detector_rules_match_on_args() {
    let p = policy("  - {id: no-pii-out, match: {detector: pii}, decision: deny}\n  - {id: no-secrets, match: {detector: [secrets]}, decision: halt, kind: safety}\n");
    let c = Ctx::new("swarm/t");
    let mail = step(
        "web.fetch",
        ActionClass::Network,
        json!({"body": "write to jane.doe@example.com"}),
    );
    assert_eq!(c.eval(&p, &mail, 0, 0, 0).1.as_deref(), Some("no-pii-out"));
    let key = step(
        "web.fetch",
        ActionClass::Network,
        json!({"headers": {"x": "AKIAIOSFODNN7EXAMPLE"}}),
    );
    assert_eq!(c.eval(&p, &key, 0, 0, 0).0, Verdict::Halt);
    let clean = step(
        "web.fetch",
        ActionClass::Network,
        json!({"url": "https://example.com/docs"}),
    );
    assert_eq!(c.eval(&p, &clean, 0, 0, 0).0, Verdict::Allow);
}

#[test]
fn outcomes_carry_kind_and_message() {
    let p = policy("  - {id: stop, match: {tool: shell}, decision: halt, kind: overrisk, message: 'shell is too risky here'}\n");
    let c = Ctx::new("swarm/t");
    let s = step("shell", ActionClass::Execute, json!({}));
    let ctx = PolicyContext {
        agent: &c.agent,
        step: &s,
        consecutive_failures: 0,
        steps_decided: 0,
        now_ms: 0,
        team: &c.team,
        account: &c.account,
    };
    match p.evaluate(&ctx).outcome {
        PolicyOutcome::Halt { rule, kind, reason } => {
            assert_eq!(
                (&*rule, kind, reason.as_str()),
                ("stop", HaltKind::Overrisk, "shell is too risky here")
            );
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn rate_limits_use_the_injected_clock_and_scope() {
    let p = policy("  - {id: search-rate, match: {tool: web.search}, rate_limit: {max: 3, per: 1m, scope: agent}}\n  - {id: fetch-rate, match: {tool: web.fetch}, rate_limit: {max: 2, per: 10s, scope: team}}\n");
    let c = Ctx::new("swarm/t");
    let s = step("web.search", ActionClass::Read, json!({}));
    for _ in 0..3 {
        assert_eq!(c.eval(&p, &s, 0, 0, 1_000).0, Verdict::Allow);
    }
    let (v, rule, _) = c.eval(&p, &s, 0, 0, 1_000);
    assert_eq!((v, rule.as_deref()), (Verdict::Deny, Some("search-rate")));
    assert_eq!(c.eval(&p, &s, 0, 0, 60_999).0, Verdict::Deny);
    assert_eq!(
        c.eval(&p, &s, 0, 0, 61_000).0,
        Verdict::Allow,
        "at most 3 in any minute: the window reopens when the first call is a minute old"
    );
    // Another agent has its own allowance for an agent-scoped limit...
    let mut d = Ctx::new("swarm/t");
    d.agent = AgentId::new("a2").unwrap();
    assert_eq!(d.eval(&p, &s, 0, 0, 61_000).0, Verdict::Allow);
    // ...but shares a team-scoped one.
    let f = step("web.fetch", ActionClass::Network, json!({}));
    assert_eq!(c.eval(&p, &f, 0, 0, 0).0, Verdict::Allow);
    assert_eq!(d.eval(&p, &f, 0, 0, 0).0, Verdict::Allow);
    assert_eq!(c.eval(&p, &f, 0, 0, 0).0, Verdict::Deny);
}

#[test]
fn several_exceeded_rate_limits_decide_by_strength_not_by_file_order() {
    let a = "  - {id: r-deny, match: {tool: shell}, rate_limit: {max: 1, per: 1h}}\n";
    let b = "  - {id: r-halt, match: {tool: shell}, decision: halt, kind: overrisk, rate_limit: {max: 1, per: 1h}}\n";
    for order in [format!("{a}{b}"), format!("{b}{a}")] {
        let p = policy(&order);
        let c = Ctx::new("swarm/t");
        let s = step("shell", ActionClass::Execute, json!({}));
        assert_eq!(c.eval(&p, &s, 0, 0, 0).0, Verdict::Allow);
        let (v, rule, matched) = c.eval(&p, &s, 0, 0, 0);
        assert_eq!(
            (v, rule.as_deref()),
            (Verdict::Halt, Some("r-halt")),
            "{order}"
        );
        assert_eq!(matched, vec!["r-deny", "r-halt"]);
    }
}

#[test]
fn evaluation_alone_counts_nothing_against_a_rate_limit() {
    let p = policy("  - {id: rate, match: {tool: shell}, rate_limit: {max: 1, per: 1h}}\n");
    let c = Ctx::new("swarm/t");
    let s = step("shell", ActionClass::Execute, json!({}));
    let ctx = PolicyContext {
        agent: &c.agent,
        step: &s,
        consecutive_failures: 0,
        steps_decided: 0,
        now_ms: 0,
        team: &c.team,
        account: &c.account,
    };
    for _ in 0..5 {
        // Evaluated but never committed (as when budgets then deny the step).
        assert!(p.evaluate(&ctx).rate_ticket.is_some());
    }
    assert_eq!(c.eval(&p, &s, 0, 0, 0).0, Verdict::Allow);
    assert_eq!(c.eval(&p, &s, 0, 0, 0).1.as_deref(), Some("rate"));
}

#[test]
fn steps_denied_by_another_rule_do_not_use_up_a_rate_limit() {
    let p = policy("  - {id: rate, match: {tool: shell}, rate_limit: {max: 1, per: 1h}}\n  - {id: no-sudo, match: {tool: shell, args: {command: {regex: sudo}}}, decision: deny}\n");
    let c = Ctx::new("swarm/t");
    for _ in 0..5 {
        let (_, rule, _) = c.eval(
            &p,
            &step("shell", ActionClass::Execute, json!({"command": "sudo x"})),
            0,
            0,
            0,
        );
        assert_eq!(rule.as_deref(), Some("no-sudo"));
    }
    assert_eq!(
        c.eval(
            &p,
            &step("shell", ActionClass::Execute, json!({"command": "ls"})),
            0,
            0,
            0
        )
        .0,
        Verdict::Allow
    );
    assert_eq!(
        c.eval(
            &p,
            &step("shell", ActionClass::Execute, json!({"command": "ls"})),
            0,
            0,
            0
        )
        .1
        .as_deref(),
        Some("rate")
    );
}

fn errors(text: &str) -> Vec<String> {
    PolicySet::check(text)
        .iter()
        .filter(|d| d.severity == Severity::Error)
        .map(Diagnostic::to_string)
        .collect()
}

fn warnings(text: &str) -> Vec<String> {
    PolicySet::check(text)
        .iter()
        .filter(|d| d.severity == Severity::Warning)
        .map(Diagnostic::to_string)
        .collect()
}

#[test]
fn validator_reports_every_error_with_line_column_and_hint() {
    let text = "\
version: 1
defaults:
  budgets: {steps: 10, wall_time: 30}
tools:
  shell: {action: execute}
pools:
  - {path: swarm}
  - {path: swarm/research/web}
rules:
  - {id: a, match: {tool: shel}, decision: deny}
  - {id: b, match: {tool: shell, args: {command: {regex: 'rm(-rf'}}}, decision: deny}
  - {id: c, match: {tool: shell}, decison: deny}
  - {id: d, match: {tool: shell}, decision: halt}
  - {id: e, match: {tool: shell, actoin: execute}, decision: deny}
  - {id: f, match: {tool: shell}, decision: deny, rate_limit: {max: 0, per: 1m}}
";
    assert_eq!(
        errors(text),
        vec![
            "3:35: error: budgets.wall_time = 30 has no unit\n  hint: write a duration with units, e.g. 500ms, 30s, 10m, 1h30m, 2d",
            "8:12: error: pool \"swarm/research/web\" has no parent pool \"swarm/research\"\n  hint: declare the parent pool first (parents before children)",
            "10:27: error: rule `a` names unknown tool `shel`\n  hint: did you mean `shell`?",
            "11:58: error: bad regex \"rm(-rf\": error: unclosed group\n  hint: the syntax is Rust's regex crate (no look-around or backreferences); quote it in single quotes",
            "12:35: error: unknown key `decison` in a rule\n  hint: did you mean `decision`?",
            "13:5: error: rule `d` halts but has no `kind`\n  hint: add kind: safety (or exhaustion, stagnation, overrisk, external)",
            "14:34: error: unknown key `actoin` in match\n  hint: did you mean `action`?",
            "15:63: error: rate_limit needs `max` (above 0) and `per` (a duration above 0)\n  hint: e.g. rate_limit: {max: 10, per: 1m, scope: agent}",
        ]
    );
}

#[test]
fn bad_amounts_durations_and_yaml_syntax_are_located() {
    assert_eq!(
        errors("version: 1\ndefaults:\n  budgets: {cost_usd: '$5'}\n"),
        vec!["3:23: error: cost_usd must be a number, found text\n  hint: write it as a plain number, e.g. cost_usd: 5.00"]
    );
    assert_eq!(
        errors("version: 1\ndefaults:\n  budgets: {cost_usd: -5}\n"),
        vec!["3:23: error: cost_usd = -5 is not an amount between 0 and 10^12\n  hint: write it as a plain number, e.g. cost_usd: 5.00"]
    );
    let syntax = errors("version: 1\nrules: [\n");
    assert_eq!(syntax.len(), 1);
    assert!(
        syntax[0].starts_with("3:1: error: YAML syntax:"),
        "{syntax:?}"
    );
    assert_eq!(
        errors("version: 2\n"),
        vec!["1:10: error: policy version 2 is not supported; this warden reads version 1"]
    );
    assert_eq!(
        errors("a: &x 1\nb: *x\n"),
        vec!["2:4: error: YAML aliases (*name) are not supported in policies\n  hint: write the value out in full"]
    );
}

#[test]
fn validator_warns_about_shadowed_conflicting_unreachable_rules_and_pool_limits() {
    let text = "\
version: 1
tools:
  shell: {action: execute, args: [user], min_cost: {tokens: 100}}
pools:
  - {path: swarm, limits: {tokens: 1000}}
  - {path: swarm/a, limits: {tokens: 5000}}
rules:
  - {id: stop-shell, match: {tool: shell}, decision: halt, kind: safety}
  - {id: no-sudo, match: {tool: shell, args: {user: {regex: root}}}, decision: deny}
  - {id: x1, match: {tool: shell, action: execute}, decision: allow}
  - {id: x2, match: {action: execute, tool: shell}, decision: require_approval}
  - {id: ghost, match: {tool: nmap}, decision: deny}
";
    let w = warnings(text);
    assert_eq!(w.len(), 6, "{w:#?}");
    assert!(
        w[0].starts_with(
            "6:5: warning: pool swarm/a allows 5000 tokens but its parent swarm only 1000"
        ),
        "{}",
        w[0]
    );
    assert!(
        w[1].starts_with("9:5: warning: rule `no-sudo` is shadowed by `stop-shell` (line 8)"),
        "{}",
        w[1]
    );
    assert!(
        w[2].starts_with("10:5: warning: rule `x1` is shadowed by `stop-shell`"),
        "{}",
        w[2]
    );
    assert!(
        w.iter()
            .any(|x| x.starts_with("11:5: warning: rule `x2` is shadowed by `stop-shell`")),
        "{w:#?}"
    );
    assert!(
        w.iter().any(|x| x.starts_with(
            "11:5: warning: rules `x1` (line 10) and `x2` match exactly the same steps"
        )),
        "{w:#?}"
    );
    assert!(
        w[5].starts_with(
            "12:31: warning: rule `ghost` is unreachable: tool `nmap` is not in the tool registry"
        ),
        "{}",
        w[5]
    );
    // Warnings do not stop a policy from loading.
    assert!(PolicySet::parse(text).is_ok());
}

fn shuffled_policy(order: &[usize]) -> String {
    let rules = [
        "  - {id: r-halt, match: {tool: shell, args: {command: {regex: 'rm -rf'}}}, decision: halt, kind: safety}",
        "  - {id: r-deny-a, match: {tool: shell, args: {command: {regex: 'curl'}}}, decision: deny}",
        "  - {id: r-deny-b, match: {tool: shell, args: {command: {regex: 'wget|curl'}}}, decision: deny}",
        "  - {id: r-appr, match: {action: spend}, decision: require_approval}",
        "  - {id: r-allow, match: {tool: 'web.*'}, decision: allow}",
        "  - {id: r-big, match: {tool: payments.transfer, args: {amount: {gt: 100}}}, decision: deny}",
        "  - {id: r-fail, match: {failures: {at_least: 2}}, decision: deny}",
    ];
    let mut text = String::from("version: 1\ntools:\n  shell: {action: execute}\n  web.search: {action: read}\n  payments.transfer: {action: spend}\nrules:\n");
    for i in order {
        text.push_str(rules[*i]);
        text.push('\n');
    }
    text
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, .. ProptestConfig::default() })]

    #[test]
    fn shuffled_rules_give_the_same_decisions(
        order in Just((0..7).collect::<Vec<usize>>()).prop_shuffle(),
        cmd in prop_oneof![Just("ls"), Just("rm -rf /"), Just("curl x | rm -rf y"), Just("wget z"), Just("curl a")],
        amount in 0..300u32,
        failures in 0..4u32,
    ) {
        let a = PolicySet::parse(&shuffled_policy(&(0..7).collect::<Vec<_>>())).unwrap();
        let b = PolicySet::parse(&shuffled_policy(&order)).unwrap();
        let c = Ctx::new("swarm/t");
        for s in [
            step("shell", ActionClass::Execute, json!({"command": cmd})),
            step("payments.transfer", ActionClass::Spend, json!({"amount": amount})),
            step("web.search", ActionClass::Read, json!({"q": cmd})),
        ] {
            prop_assert_eq!(c.eval(&a, &s, failures, 0, 0), c.eval(&b, &s, failures, 0, 0));
        }
    }

    #[test]
    fn arbitrary_text_never_panics_the_parser(text in "\\PC{0,400}") {
        let _ = PolicySet::check(&text);
    }

    #[test]
    fn arbitrary_yaml_shapes_never_panic_the_parser(
        parts in proptest::collection::vec(prop_oneof![
            Just("version: 1\n"), Just("rules:\n"), Just("  - {id: a, match: {tool: x}, decision: deny}\n"),
            Just("  - "), Just("{"), Just("}"), Just("["), Just("]"), Just(": "), Just("tools:\n  x: {action: read}\n"),
            Just("pools:\n  - {path: swarm}\n"), Just("&a "), Just("*a "), Just("'"), Just("\""), Just("\n"), Just("  "),
            Just("regex: '(('\n"), Just("match: {args: {a[: 1}}\n"), Just("- "), Just("? "), Just("!!binary "), Just("#"),
        ], 0..40)
    ) {
        let text: String = parts.concat();
        let _ = PolicySet::check(&text);
    }
}

#[test]
fn deeply_nested_and_huge_inputs_are_refused_not_crashed() {
    let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    let e = errors(&deep);
    assert_eq!(e.len(), 1);
    assert!(
        e[0].contains("nests deeper than 64") || e[0].contains("recursion limit exceeded"),
        "{e:?}"
    );
    let huge = "#".repeat(2 << 20);
    assert!(errors(&huge)[0].contains("the limit is 1048576"));
}

#[test]
fn bad_globs_empty_lists_and_oversized_numbers_are_located() {
    let text = "\
version: 1
tools:
  shell: {action: execute}
rules:
  - {id: g, match: {tool: '[z-a]*'}, decision: deny}
  - {id: e, match: {tool: []}, decision: halt, kind: safety}
  - {id: p, match: {tool: shell, args: {path: {glob: '[!]x'}}}, decision: deny}
  - {id: f, match: {tool: shell, failures: {at_least: 99999999999}}, decision: deny}
";
    let e = errors(text);
    assert_eq!(e.len(), 4, "{e:#?}");
    assert!(
        e[0].starts_with("5:27: error: bad glob \"[z-a]*\""),
        "{}",
        e[0]
    );
    assert!(
        e[1].starts_with("6:27: error: an empty list here matches nothing useful"),
        "{}",
        e[1]
    );
    assert!(
        e[2].starts_with("7:54: error: bad glob \"[!]x\""),
        "{}",
        e[2]
    );
    assert!(
        e[3].starts_with("8:55: error: failures.at_least = 99999999999 is too large"),
        "{}",
        e[3]
    );
}

#[test]
fn large_integers_compare_exactly() {
    let p = policy("  - {id: big, match: {tool: payments.transfer, args: {account: 9007199254740993}}, decision: deny}\n");
    let c = Ctx::new("swarm/t");
    let hit = step(
        "payments.transfer",
        ActionClass::Spend,
        json!({"account": 9007199254740993u64}),
    );
    let near = step(
        "payments.transfer",
        ActionClass::Spend,
        json!({"account": 9007199254740992u64}),
    );
    assert_eq!(c.eval(&p, &hit, 0, 0, 0).0, Verdict::Deny);
    assert_eq!(c.eval(&p, &near, 0, 0, 0).0, Verdict::Allow);
}

#[test]
fn a_rule_on_action_alone_under_default_allow_is_flagged_as_evadable() {
    let open = "\
version: 1
default_decision: allow
rules:
  - id: no-exec
    match: {action: execute}
    decision: deny
  - id: no-exec-shell
    match: {tool: shell, action: execute}
    decision: deny
";
    let w = warnings(open);
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(
        w[0].starts_with("5:12: warning: rule `no-exec` matches on action"),
        "{w:?}"
    );
    let closed = open.replace("default_decision: allow", "default_decision: deny");
    let w = warnings(&closed);
    assert!(!w.iter().any(|w| w.contains("matches on action")), "{w:?}");
}

/// A heartbeat timeout below 1s would halt agents as lost before their first heartbeat: a
/// warning, not an error, since journals hold policies written before the check and recovery
/// reads them with the same parser.
#[test]
fn a_heartbeat_timeout_below_a_second_is_a_warning() {
    let text = "version: 1\ndefaults:\n  heartbeat_timeout: 500ms\n";
    let w = warnings(text);
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(
        w[0].starts_with("3:22: warning: heartbeat_timeout is below 1s"),
        "{w:?}"
    );
    let set = PolicySet::parse(text).expect("still a valid policy");
    assert_eq!(set.doc().defaults.heartbeat_timeout_ms, Some(500));
    assert!(warnings("version: 1\ndefaults:\n  heartbeat_timeout: 1s\n").is_empty());
}
