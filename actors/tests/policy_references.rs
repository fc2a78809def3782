//! Configuration that would silently do nothing is an error: a rule's `team:` that names no
//! pool, a `remaining_below` on a dimension agents have no budget in. Each is reported at its
//! line and column, with a "did you mean" where a declared name is close.

use warden_actors::policy::{Diagnostic, PolicySet, Severity};

const HEAD: &str = "version: 1
defaults:
  budgets: {steps: 100, tokens: 5000, cost_usd: 1.00}
pools:
  - {path: swarm}
  - {path: swarm/research}
  - {path: swarm/research/web}
tools:
  shell: {action: execute}
  llm.chat: {action: read}
rules:
";

fn errors(text: &str) -> Vec<Diagnostic> {
    PolicySet::check(text)
        .into_iter()
        .filter(|d| d.severity == Severity::Error)
        .collect()
}

#[test]
fn a_team_that_names_no_pool_is_an_error_at_its_line_and_column_with_did_you_mean() {
    let text = format!(
        "{HEAD}  - {{id: no-shell, match: {{tool: shell, team: swarm/reserch}}, decision: deny}}\n"
    );
    let errs = errors(&text);
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert_eq!(
        errs[0].to_string(),
        "12:47: error: rule `no-shell`: team `swarm/reserch` names no pool, so the rule would never match\n  hint: did you mean `swarm/research`?"
    );
    assert!(PolicySet::parse(&text).is_err(), "the policy does not load");
    // Each item of a list is checked, at its own position.
    let list = format!(
        "{HEAD}  - {{id: no-shell, match: {{tool: shell, team: [swarm/research, swarm/wbe]}}, decision: deny}}\n"
    );
    let errs = errors(&list);
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert_eq!((errs[0].line, errs[0].col), (12, 64));
    // Declared pools, nested ones included, are fine.
    let ok = format!(
        "{HEAD}  - {{id: no-shell, match: {{tool: shell, team: [swarm, swarm/research/web]}}, decision: deny}}\n"
    );
    assert!(PolicySet::parse(&ok).is_ok());
}

#[test]
fn without_pools_the_only_team_is_the_root_pool_swarm() {
    let text = "version: 1\ntools:\n  shell: {action: execute}\nrules:\n  - {id: r, match: {tool: shell, team: swarm/research}, decision: deny}\n";
    let errs = errors(text);
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert_eq!((errs[0].line, errs[0].col), (5, 40));
    assert!(
        errs[0]
            .hint
            .as_deref()
            .unwrap()
            .contains("declares no pools"),
        "{errs:?}"
    );
    let ok = text.replace("team: swarm/research", "team: swarm");
    assert!(PolicySet::parse(&ok).is_ok());
}

#[test]
fn remaining_below_on_a_dimension_without_a_budget_is_an_error() {
    let text = format!(
        "{HEAD}  - {{id: low, match: {{tool: llm.chat, remaining_below: {{risk: 0.1}}}}, decision: deny}}\n"
    );
    let errs = errors(&text);
    assert_eq!(errs.len(), 1, "{errs:?}");
    let e = &errs[0];
    assert_eq!((e.line, e.col), (12, 57), "at the dimension's key");
    assert!(e.message.contains("no risk budget"), "{e}");
    assert!(
        e.hint
            .as_deref()
            .unwrap()
            .contains("steps, tokens, cost_usd"),
        "names the budgeted dimensions: {e}"
    );
    // The hint names the dimensions that are budgeted.
    let head = HEAD.replace("tokens: 5000, cost_usd: 1.00", "cost_usd: 1.00");
    let text = format!(
        "{head}  - {{id: low, match: {{tool: llm.chat, remaining_below: {{tokens: 0.1}}}}, decision: deny}}\n"
    );
    let errs = errors(&text);
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(
        errs[0]
            .hint
            .as_deref()
            .unwrap()
            .ends_with("steps, cost_usd"),
        "{errs:?}"
    );
    // A misspelt dimension gets a "did you mean" from the reader.
    let text = format!(
        "{HEAD}  - {{id: low, match: {{tool: llm.chat, remaining_below: {{token: 0.1}}}}, decision: deny}}\n"
    );
    let errs = errors(&text);
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert_eq!(errs[0].hint.as_deref(), Some("did you mean `tokens`?"));
    // Budgeted dimensions are fine.
    let ok = format!(
        "{HEAD}  - {{id: low, match: {{tool: llm.chat, remaining_below: {{cost_usd: 0.1, tokens: 0.2}}}}, decision: deny}}\n"
    );
    assert!(PolicySet::parse(&ok).is_ok());
    // Agents with no budgets at all.
    let none = "version: 1\ntools:\n  llm.chat: {action: read}\nrules:\n  - {id: low, match: {tool: llm.chat, remaining_below: {cost_usd: 0.1}}, decision: deny}\n";
    let errs = errors(none);
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(
        errs[0].hint.as_deref().unwrap().contains("they have none"),
        "{errs:?}"
    );
}

#[test]
fn a_pool_error_is_not_repeated_as_a_team_error() {
    // The pool's own error is enough; a rule naming it is not checked against a broken tree.
    let text = "version: 1\npools:\n  - {path: swarm}\n  - {path: swarm/a/b}\ntools:\n  shell: {action: execute}\nrules:\n  - {id: r, match: {tool: shell, team: swarm/a/b}, decision: deny}\n";
    let errs = errors(text);
    assert!(!errs.is_empty());
    assert!(
        errs.iter().all(|e| !e.message.contains("names no pool")),
        "{errs:?}"
    );
}
