//! Arguments shaped, numbered and addressed to slip past rules (issue 8, d and e): a value
//! where the path expects an object, amounts just above a threshold in every spelling, and
//! internal hosts written every way a URL can reach them. Each must make a rule stronger than
//! allow match (with the doubt in its reason when it cannot be told), never silently not.

use std::sync::{Arc, LazyLock};

use serde_json::{json, Value};
use warden_actors::policy::PolicySet;
use warden_actors::{Account, ActionClass, AgentId, Limits, PolicyContext, Step};

const PAYMENTS: &str = include_str!("../../examples/policies/payments-agent.yaml");
const RESEARCH: &str = include_str!("../../examples/policies/research-swarm.yaml");

static PAYMENTS_POLICY: LazyLock<PolicySet> = LazyLock::new(|| PolicySet::parse(PAYMENTS).unwrap());
static RESEARCH_POLICY: LazyLock<PolicySet> = LazyLock::new(|| PolicySet::parse(RESEARCH).unwrap());

/// The decision, its rule, its reason, and the ids of every rule that matched.
struct Decided {
    decision: String,
    rule: String,
    reason: String,
    matched: Vec<String>,
}

fn decide(policy: &PolicySet, tool: &str, action: ActionClass, args: Value) -> Decided {
    let step = Step::builder(tool, action).args(args).build().unwrap();
    let root = Account::root("swarm", Limits::UNLIMITED);
    let account: Arc<Account> = root.child("a", Limits::UNLIMITED).unwrap();
    let agent = AgentId::new("a").unwrap();
    let ctx = PolicyContext {
        agent: &agent,
        step: &step,
        consecutive_failures: 0,
        steps_decided: 0,
        // A Tuesday, 10:00 UTC: no time-window rule applies.
        now_ms: 1_795_392_000_000 + 86_400_000 + 10 * 3_600_000,
        team: "swarm",
        account: &account,
    };
    let e = policy.evaluate(&ctx);
    let (decision, rule, reason) = match e.outcome {
        warden_actors::PolicyOutcome::Allow => ("allow", String::new(), String::new()),
        warden_actors::PolicyOutcome::RequireApproval { rule, reason } => {
            ("require_approval", rule.to_string(), reason)
        }
        warden_actors::PolicyOutcome::Deny { rule, reason } => ("deny", rule.to_string(), reason),
        warden_actors::PolicyOutcome::Halt { rule, reason, .. } => {
            ("halt", rule.to_string(), reason)
        }
    };
    Decided {
        decision: decision.into(),
        rule,
        reason,
        matched: e.matched.iter().map(|m| m.id.to_string()).collect(),
    }
}

fn transfer(args: Value) -> Decided {
    decide(
        &PAYMENTS_POLICY,
        "payments.transfer",
        ActionClass::Spend,
        args,
    )
}

fn refund(args: Value) -> Decided {
    decide(
        &PAYMENTS_POLICY,
        "payments.refund",
        ActionClass::Spend,
        args,
    )
}

fn fetch(url: Value) -> Decided {
    decide(
        &RESEARCH_POLICY,
        "web.fetch",
        ActionClass::Network,
        json!({ "url": url }),
    )
}

/// A recipient that is not an object (text, a list of text, a number, null, a boolean, an
/// empty list) cannot have its country read: the sanctions rule matches, saying why.
#[test]
fn a_recipient_that_is_not_an_object_cannot_dodge_the_sanctions_rule() {
    for recipient in [
        json!("KP"),
        json!("Pyongyang, KP"),
        json!("ACME Ltd"),
        json!(["KP"]),
        json!([{"country": "FR"}, "KP"]),
        json!(408),
        json!(null),
        json!(true),
        json!([]),
        json!([[]]),
    ] {
        let d = transfer(json!({"amount": 5, "recipient": recipient}));
        assert_eq!(
            (d.decision.as_str(), d.rule.as_str()),
            ("halt", "sanctioned-country"),
            "{recipient}"
        );
        assert!(
            d.reason.contains(
                "fail closed: args.recipient.country cannot be read: args.recipient holds"
            ),
            "{recipient}: {}",
            d.reason
        );
    }
    // Lists of objects are read element by element, as before.
    let d = transfer(json!({"amount": 5, "recipient": [{"country": "FR"}, {"country": "KP"}]}));
    assert_eq!(d.rule, "sanctioned-country");
    assert!(!d.reason.contains("fail closed"), "{}", d.reason);
    let d = transfer(json!({"amount": 5, "recipient": {"country": {"code": "KP"}}}));
    assert_eq!(
        d.rule, "sanctioned-country",
        "an object where a value is expected"
    );
    // Well-formed and elsewhere: allowed.
    for recipient in [
        json!({"country": "FR"}),
        json!([{"country": "FR"}]),
        json!({"name": "ACME"}),
    ] {
        let d = transfer(json!({"amount": 5, "recipient": recipient}));
        assert_eq!(d.decision, "allow", "{recipient}: {}", d.reason);
    }
    // No recipient at all: absent, which this rule does not ask about.
    assert_eq!(transfer(json!({"amount": 5})).decision, "allow");
}

/// The rule for paths, shape by shape, for a rule stronger than allow and for an allow rule:
/// a missing key is absent; a key or index that meets a value of the wrong shape is doubt;
/// under a `*` key a wrong shape is just another field.
#[test]
fn every_path_shape_is_absent_doubt_or_read() {
    let policy = PolicySet::parse(
        "version: 1
default_decision: allow
rules:
  - {id: deny-kp, match: {tool: t, args: {a.b: KP}}, decision: deny}
  - {id: deny-first, match: {tool: t, args: {'x[0]': KP}}, decision: deny}
  - {id: deny-each, match: {tool: t, args: {'y[*].c': KP}}, decision: deny}
  - {id: deny-missing, match: {tool: t, args: {m.n: {exists: false}}}, decision: deny}
  - {id: deny-any-country, match: {tool: t, args: {'*.country': KP}}, decision: deny}
  - {id: allow-fr, match: {tool: u, args: {a.b: FR}}, decision: allow}
",
    )
    .unwrap();
    let strict = |args: Value| decide(&policy, "t", ActionClass::Read, args).matched;
    let has = |m: &[String], id: &str| m.iter().any(|x| x == id);
    let mn = json!({"n": 1});
    // a.b
    for (a, expect) in [
        (json!({"b": "KP"}), true),
        (json!({"b": "FR"}), false),
        (json!({"c": "KP"}), false), // b missing: absent
        (json!({}), false),
        (json!([{"b": "KP"}]), true),
        (json!([{"b": "FR"}, {"c": 1}]), false),
        (json!("KP"), true), // blocked by text: doubt
        (json!(1), true),
        (json!(null), true),
        (json!(false), true),
        (json!([]), true), // nothing to read where an object is expected
        (json!(["x"]), true),
        (json!([{"b": "FR"}, 3]), true),
    ] {
        let m = strict(json!({"a": a, "m": mn}));
        assert_eq!(has(&m, "deny-kp"), expect, "a = {a}");
    }
    // x[0]
    for (x, expect) in [
        (json!(["KP"]), true),
        (json!(["FR", "KP"]), false),
        (json!([]), false),  // index out of range: absent
        (json!("KP"), true), // not a list: doubt
        (json!({"0": "KP"}), true),
    ] {
        let m = strict(json!({"x": x, "m": mn}));
        assert_eq!(has(&m, "deny-first"), expect, "x = {x}");
    }
    // y[*].c
    for (y, expect) in [
        (json!([{"c": "FR"}, {"c": "KP"}]), true),
        (json!([]), false), // no items
        (json!([{"d": 1}]), false),
        (json!({"c": "KP"}), true), // an object where a list is expected: doubt
        (json!(["KP"]), true),
    ] {
        let m = strict(json!({"y": y, "m": mn}));
        assert_eq!(has(&m, "deny-each"), expect, "y = {y}");
    }
    // exists: false — absent holds, a blocked path is doubt (holds for a strong rule)
    assert!(has(&strict(json!({})), "deny-missing"));
    assert!(has(&strict(json!({"m": {}})), "deny-missing"));
    assert!(!has(&strict(json!({"m": {"n": 0}})), "deny-missing"));
    assert!(has(&strict(json!({"m": "n"})), "deny-missing"));
    // `*`: every top-level value; text or numbers there are other fields, not doubt.
    assert!(!has(
        &strict(json!({"amount": 5, "memo": "KP", "m": mn})),
        "deny-any-country"
    ));
    assert!(has(
        &strict(json!({"amount": 5, "to": {"country": "KP"}, "m": mn})),
        "deny-any-country"
    ));
    // An allow rule never matches in doubt.
    let allow = |args: Value| decide(&policy, "u", ActionClass::Read, args).matched;
    assert!(has(&allow(json!({"a": {"b": "FR"}})), "allow-fr"));
    for a in [json!("FR"), json!(["FR", 1]), json!(null), json!([])] {
        assert!(!has(&allow(json!({ "a": a })), "allow-fr"), "a = {a}");
    }
}

/// Amounts just above 10,000 in every spelling are above 10,000; what is not a number, or a
/// JSON float too close to tell after rounding, is doubt. Never silently "not greater".
#[test]
fn amounts_compare_exactly_or_fail_closed() {
    let pay = |amount: Value| transfer(json!({"amount": amount, "recipient": {"country": "FR"}}));
    // Exact: above the threshold by any margin, however small or large.
    for amount in [
        json!("10000.0000000000000001"),
        json!("10000.00000000000000000000000000000000000001"),
        json!("1.00000000000000000001e4"),
        json!("1e5"),
        json!("1e400"),
        json!(" 10001 "),
        json!("+10001"),
        json!(10001),
        json!(18_446_744_073_709_551_615u64),
        json!("\u{ff11}\u{ff10}\u{ff10}\u{ff10}\u{ff11}"),
    ] {
        let d = pay(amount.clone());
        assert_eq!(
            (d.decision.as_str(), d.rule.as_str()),
            ("deny", "huge-transfer"),
            "{amount}"
        );
    }
    // Exact, and not above 10,000: a smaller rule decides, and no doubt is claimed.
    for (amount, rule) in [
        (json!("9999.9999999999999999"), "big-transfer"),
        (json!("10000"), "big-transfer"),
        (json!("10000.000"), "big-transfer"),
        (json!(" 5000"), "big-transfer"),
        (json!("1000.0000000000000001"), "big-transfer"),
        (json!("1000"), ""),
        (json!(999.5), ""),
    ] {
        let d = pay(amount.clone());
        assert_eq!(d.rule, rule, "{amount}: {}", d.reason);
        assert!(!d.reason.contains("fail closed"), "{amount}: {}", d.reason);
    }
    // Doubt: not a number, or a JSON float the reader rounded onto the threshold.
    let float = serde_json::from_str::<Value>("10000.0000000000000001").unwrap();
    for amount in [
        float,
        json!(10000.0),
        json!("NaN"),
        json!("Infinity"),
        json!("-Infinity"),
        json!("inf"),
        json!("0x1388"),
        json!("5,000"),
        json!("5_000"),
        json!("$5000"),
        json!("5000 USD"),
        json!("\u{665}\u{660}\u{660}\u{660}"),
        json!("1e99999999999"),
        json!(""),
        json!({"value": 5000}),
        json!(null),
    ] {
        let d = pay(amount.clone());
        assert_ne!(d.decision, "allow", "{amount}");
        assert_ne!(
            d.rule, "big-transfer",
            "{amount}: the strongest doubt decides"
        );
        assert!(d.reason.contains("fail closed"), "{amount}: {}", d.reason);
    }
    // -0 and values that underflow to 0 cannot be told from 0: the lte-0 rule holds.
    for amount in ["-0", "-0.0", "1e-400"] {
        let v: Value = serde_json::from_str(amount).unwrap();
        let d = pay(v);
        assert_eq!(d.rule, "negative-amount", "{amount}");
    }
    // As text, exactly: -0 is 0 (denied as not positive), 1e-400 is positive.
    assert_eq!(pay(json!("-0")).rule, "negative-amount");
    assert_eq!(pay(json!("1e-400")).rule, "");
    // A number too large for a JSON reader is no step at all.
    let huge = r#"{"tool": "payments.transfer", "action": "spend", "args": {"amount": 1e400}}"#;
    assert!(serde_json::from_str::<Step>(huge).is_err());
}

/// An allow rule on an amount does not hold for a JSON float it cannot tell.
#[test]
fn an_allow_rule_on_an_amount_does_not_hold_in_doubt() {
    let policy = PolicySet::parse(
        "version: 1
tools:
  pay: {action: spend, args: [amount]}
rules:
  - {id: ask, match: {tool: pay}, decision: require_approval}
  - {id: small-ok, match: {tool: pay, args: {amount: {lte: 100}}}, decision: allow}
  - {id: exact-ok, match: {tool: pay, args: {amount: {eq: 100}}}, decision: allow}
",
    )
    .unwrap();
    let matched =
        |v: Value| decide(&policy, "pay", ActionClass::Spend, json!({ "amount": v })).matched;
    assert!(matched(json!(100)).contains(&"small-ok".to_string()));
    assert!(matched(json!("100.00")).contains(&"exact-ok".to_string()));
    assert!(matched(json!(99.5)).contains(&"small-ok".to_string()));
    let rounded = serde_json::from_str::<Value>("100.00000000000000001").unwrap();
    let m = matched(rounded);
    assert!(!m.contains(&"small-ok".to_string()), "{m:?}");
    assert!(!m.contains(&"exact-ok".to_string()), "{m:?}");
    // As text it is exactly above 100.
    let m = matched(json!("100.00000000000000001"));
    assert!(!m.contains(&"small-ok".to_string()), "{m:?}");
}

#[test]
fn refunds_have_amount_rules_and_name_their_payment() {
    let r = |amount: Value| {
        refund(json!({"amount": amount, "payment_id": "p-1", "recipient": {"country": "FR"}}))
    };
    assert_eq!(r(json!(100)).decision, "allow");
    assert_eq!(r(json!(500)).decision, "allow");
    assert_eq!(r(json!("500.01")).rule, "big-refund");
    assert_eq!(r(json!(5000)).rule, "big-refund");
    assert_eq!(r(json!("5000.0000000000000001")).rule, "huge-refund");
    assert_eq!(r(json!(-5)).rule, "negative-amount");
    assert_eq!(r(json!("lots")).rule, "huge-refund");
    let d = refund(json!({"amount": 10, "recipient": {"country": "FR"}}));
    assert_eq!(d.rule, "refund-names-its-payment");
    let d = refund(json!({"amount": 10, "payment_id": "p-1", "recipient": "KP"}));
    assert_eq!(d.rule, "sanctioned-country");
}

/// Every spelling of an internal host in the research example is denied; so is every URL
/// that does not parse or is not http(s); outside hosts are allowed.
#[test]
fn internal_hosts_in_any_spelling_are_denied_and_outside_ones_allowed() {
    for url in [
        "http://127.0.0.1/",
        "http://evil@127.0.0.1/",
        "http://127.0.0.1:8080@evil.com@127.0.0.1/",
        "http://0.0.0.0/",
        "http://0/",
        "http://[::1]/",
        "http://[::]/",
        "http://[::ffff:127.0.0.1]/",
        "http://[::ffff:169.254.169.254]/",
        "http://2130706433/",
        "http://0x7f.1/",
        "http://0177.0.0.1/",
        "http://127.1/",
        "HTTP://LOCALHOST/",
        "http://LocalHost./",
        "http://127\u{3002}0\u{3002}0\u{3002}1/",
        "http://127\u{ff0e}0\u{ff0e}0\u{ff0e}1/",
        "http://%31%32%37.0.0.1/",
        "http:\\\\127.0.0.1\\admin",
        "http://metadata.google.internal/computeMetadata/v1/",
        "http://metadata/computeMetadata/v1/",
        "http://169.254.169.254/latest/meta-data/",
        "http://[fe80::1]/",
        "http://[fd12:3456::1]/",
        "http://10.0.0.5/",
        "http://172.20.1.1/",
        "http://192.168.0.1/",
        "http://100.100.100.200/",
        "http://app.localhost/",
    ] {
        let d = fetch(json!(url));
        assert_eq!(
            (d.decision.as_str(), d.rule.as_str()),
            ("deny", "no-internal-hosts"),
            "{url}: {}",
            d.reason
        );
    }
    for url in [
        "//127.0.0.1",
        "127.0.0.1/admin",
        "gopher://127.0.0.1:70/_stats",
        "gopher://example.com/",
        "file:///etc/passwd",
        "ftp://example.com/",
        "javascript:alert(1)",
        "\u{ff48}ttp://127.0.0.1/",
        "",
    ] {
        let d = fetch(json!(url));
        assert_eq!(d.decision, "deny", "{url:?}");
    }
    let d = fetch(json!(["https://example.com/", "http://127.1/"]));
    assert_eq!(d.rule, "no-internal-hosts", "every element is judged");
    assert_eq!(
        fetch(json!({"href": "https://example.com"})).decision,
        "deny"
    );
    let none = decide(
        &RESEARCH_POLICY,
        "web.fetch",
        ActionClass::Network,
        json!({}),
    );
    assert_eq!(none.rule, "web-schemes-only", "a fetch that names no url");
    for url in [
        "https://example.com/",
        "http://example.com/a?b=c",
        "HTTPS://Example.COM./x",
        "https://127.0.0.1.example.com/",
        "http://127.0.0.1@example.com/",
        "https://[2001:db8::1]/",
        "http://8.8.8.8/",
    ] {
        let d = fetch(json!(url));
        assert_eq!(d.decision, "allow", "{url}: {}", d.reason);
    }
}

#[test]
fn policy_check_warns_about_raw_url_text_and_budgets_without_min_cost() {
    let warnings = |text: &str| -> Vec<String> {
        PolicySet::check(text)
            .iter()
            .map(ToString::to_string)
            .collect()
    };
    let w = warnings(
        "version: 1
tools:
  web.fetch: {action: network, args: [url, link], min_cost: {tokens: 0, cost_usd: 0}}
rules:
  - {id: a, match: {tool: web.fetch, args: {url: {regex: '^http://127'}}}, decision: deny}
  - {id: b, match: {tool: web.fetch, args: {link: {glob: '*internal*'}}}, decision: deny}
  - {id: c, match: {tool: web.fetch, args: {url: {url: {host: [localhost]}}}}, decision: deny}
",
    );
    assert_eq!(w.len(), 2, "{w:#?}");
    assert!(
        w[0].starts_with(
            "5:58: warning: rule `a` matches args.url with a regex on the raw URL text"
        ),
        "{w:#?}"
    );
    assert!(
        w[1].contains("rule `b` matches args.link with a glob on the raw URL text"),
        "{w:#?}"
    );
    assert!(w[0].contains("use the url condition"), "{w:#?}");

    let w = warnings(
        "version: 1
defaults:
  budgets: {cost_usd: 5, custom: {gpu_seconds: 60}}
  min_cost: {read: {cost_usd: 0.001}}
pools:
  - {path: swarm, limits: {tokens: 1000000}}
tools:
  web.search: {action: read}
  llm.chat: {action: network}
",
    );
    assert_eq!(w.len(), 3, "{w:#?}");
    let find = |what: &str| {
        w.iter()
            .find(|x| x.contains(what))
            .unwrap_or_else(|| panic!("no warning with {what:?}: {w:#?}"))
    };
    let tokens = find(
        "budgets limit tokens, but no min_cost names it for read, network (web.search, llm.chat)",
    );
    assert!(tokens.starts_with("8:3: warning"), "{tokens}");
    assert!(
        tokens.contains("500 for read, 1000 for network"),
        "{tokens}"
    );
    assert!(
        tokens.contains("defaults: {min_cost: {read: {tokens: ...}}}"),
        "{tokens}"
    );
    find("budgets limit cost_usd, but no min_cost names it for network (llm.chat)");
    let gpu = find("budgets limit gpu_seconds");
    assert!(gpu.contains("reserved at 0"), "{gpu}");
    assert!(
        gpu.contains("{read: {custom: {gpu_seconds: ...}}}"),
        "{gpu}"
    );
}

#[test]
fn url_conditions_are_checked_with_line_and_column() {
    let errors = |text: &str| -> Vec<String> {
        PolicySet::check(text)
            .iter()
            .map(ToString::to_string)
            .collect()
    };
    let e = errors(
        "version: 1
tools:
  web.fetch: {action: network}
rules:
  - {id: a, match: {tool: web.fetch, args: {url: {url: {ip: [10.0.0.1/8]}}}}, decision: deny}
  - {id: b, match: {tool: web.fetch, args: {url: {url: {hots: [x]}}}}, decision: deny}
  - {id: c, match: {tool: web.fetch, args: {url: {url: {}}}}, decision: deny}
  - {id: d, match: {tool: web.fetch, args: {url: {gt: '12e'}}}, decision: deny}
",
    );
    assert!(
        e.iter().any(|x| x.starts_with(
            "5:56: error: url: \"10.0.0.1/8\" has bits set past its prefix length /8"
        )),
        "{e:#?}"
    );
    assert!(
        e.iter()
            .any(|x| x.starts_with("6:57: error: unknown key `hots` in url")
                && x.contains("did you mean `host`")),
        "{e:#?}"
    );
    assert_eq!(e.len(), 4, "one error for the misspelt key: {e:#?}");
    assert!(
        e.iter()
            .any(|x| x.starts_with("7:56: error: url: a url condition needs")),
        "{e:#?}"
    );
    assert!(
        e.iter()
            .any(|x| x.starts_with("8:55: error: gt must be a number")),
        "{e:#?}"
    );
}

/// A backslash in the authority: a browser reads `evil.com`, curl and Python's `urlsplit` read
/// 169.254.169.254. The URL is doubt, so the internal-hosts rule denies it.
#[test]
fn a_backslash_in_the_authority_cannot_hide_an_internal_host() {
    for url in [
        "http://evil.com\\@169.254.169.254/latest/meta-data/",
        "http:\\\\evil.com\\@169.254.169.254/latest/meta-data/",
        "https://example.com\\@127.0.0.1/",
    ] {
        let d = fetch(json!(url));
        assert_eq!(
            (d.decision.as_str(), d.rule.as_str()),
            ("deny", "no-internal-hosts"),
            "{url}: {}",
            d.reason
        );
        assert!(d.reason.contains("fail closed"), "{}", d.reason);
    }
    assert_eq!(fetch(json!("https://example.com/a\\b")).decision, "allow");
}

/// `exists` reads a key holding nothing (null, [], {}, blank text) as doubt: set to some
/// readers (`"force" in args`, a bare `?force`) and not to others (`if args.get("force")`).
/// So a deny rule matches it whichever way it points (`exists: false` is not dodged by
/// sending the key empty, nor `exists: true` by sending it blank), and an allow rule does not.
#[test]
fn an_empty_value_is_doubt_for_exists() {
    let policy = PolicySet::parse(
        "version: 1
default_decision: allow
rules:
  - {id: need-ticket, match: {tool: t, args: {ticket: {exists: false}}}, decision: deny}
  - {id: no-force, match: {tool: v, args: {ticket: {exists: true}}}, decision: deny}
  - {id: has-ticket, match: {tool: u, args: {ticket: {exists: true}}}, decision: allow}
  - {id: no-ticket-ok, match: {tool: u, args: {ticket: {not: {exists: true}}}}, decision: require_approval}
",
    )
    .unwrap();
    let matched = |tool: &str, args: Value| decide(&policy, tool, ActionClass::Read, args).matched;
    let has = |m: &[String], id: &str| m.iter().any(|x| x == id);
    for empty in [
        json!(null),
        json!([]),
        json!({}),
        json!(""),
        json!("  \t"),
        json!("\u{200b}"),
        json!("\u{0}"),
        json!([""]),
    ] {
        let args = json!({ "ticket": empty });
        assert!(has(&matched("t", args.clone()), "need-ticket"), "{args}");
        assert!(has(&matched("v", args.clone()), "no-force"), "{args}");
        assert!(!has(&matched("u", args.clone()), "has-ticket"), "{args}");
        assert!(has(&matched("u", args.clone()), "no-ticket-ok"), "{args}");
    }
    for given in [
        json!("T-1"),
        json!(0),
        json!(false),
        json!(["T-1"]),
        json!({"id": 1}),
    ] {
        let args = json!({ "ticket": given });
        assert!(!has(&matched("t", args.clone()), "need-ticket"), "{args}");
        assert!(has(&matched("v", args.clone()), "no-force"), "{args}");
        assert!(has(&matched("u", args.clone()), "has-ticket"), "{args}");
    }
    assert!(has(&matched("t", json!({})), "need-ticket"));
    assert!(!has(&matched("v", json!({})), "no-force"));
}

/// Text compared in canonical form is trimmed of every whitespace and control character at
/// either end (vertical tab, `\x1C`..`\x1F`, NUL, DEL), in ASCII and non-ASCII text alike.
#[test]
fn trailing_control_characters_do_not_dodge_an_in_list() {
    let policy = PolicySet::parse(
        "version: 1
default_decision: allow
rules:
  - {id: no-kp, match: {tool: t, args: {country: {in: [KP]}}}, decision: deny}
",
    )
    .unwrap();
    for country in [
        "KP",
        "KP\u{0b}",
        "KP\u{1c}",
        "KP\u{1d}",
        "KP\u{1e}",
        "KP\u{1f}",
        "\u{0b}KP",
        "KP\u{0}",
        "KP\u{7f}",
        "KP\u{85}",
        "ＫＰ\u{0b}",
        "ＫＰ\u{1c}",
    ] {
        let d = decide(
            &policy,
            "t",
            ActionClass::Read,
            json!({ "country": country }),
        );
        assert_eq!(d.rule, "no-kp", "{country:?}");
    }
    let d = decide(
        &policy,
        "t",
        ActionClass::Read,
        json!({"country": "K\u{0b}P"}),
    );
    assert_eq!(d.decision, "allow");
}
