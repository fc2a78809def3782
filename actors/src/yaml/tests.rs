//! Tests of the located-YAML reader.

use super::*;

const TEST: Source<'static> = Source::new("test file", "test files");

fn read(text: &str) -> (Option<Node>, Reader) {
    let mut r = Reader::new();
    let root = r.parse(text, &TEST);
    (root, r)
}

fn shown(r: Reader) -> Vec<String> {
    r.into_diagnostics().iter().map(|d| d.to_string()).collect()
}

#[test]
fn nodes_carry_their_line_and_column() {
    let (root, _) = read("a: 1\nb:\n  - x\n  - {c: true}\n");
    let root = root.unwrap();
    let Value::Map(m) = &root.value else { panic!() };
    assert_eq!(m[0].0.pos, Pos { line: 1, col: 1 });
    assert_eq!(m[0].1.pos, Pos { line: 1, col: 4 });
    let Value::Seq(items) = &m[1].1.value else {
        panic!()
    };
    assert_eq!(items[1].pos, Pos { line: 4, col: 5 });
}

#[test]
fn syntax_errors_are_located() {
    let (root, r) = read("a: [1, 2\nb: 3\n");
    assert!(root.is_none());
    let d = &r.diagnostics()[0];
    assert!(d.message.starts_with("YAML syntax:"), "{d}");
    assert_eq!(d.line, 2, "{d}");
}

#[test]
fn duplicate_keys_are_errors_at_the_repeat() {
    let (root, r) = read("listen: a\nfsync: off\nlisten: b\n");
    assert!(root.is_none());
    let d = &r.diagnostics()[0];
    assert_eq!((d.line, d.col), (3, 1), "{d}");
    assert!(d.message.contains("duplicated key"), "{d}");
    assert!(d.hint.as_deref().unwrap().contains("once"), "{d}");
    // Nested, too.
    let (root, r) = read("limits:\n  a: 1\n  a: 2\n");
    assert!(root.is_none());
    assert_eq!(r.diagnostics()[0].pos(), Pos { line: 3, col: 3 });
}

#[test]
fn unknown_keys_suggest_the_closest_known_one() {
    let (root, mut r) = read("listne: x\nzzz: 1\nfsync: off\n");
    let root = root.unwrap();
    let m = r
        .mapping(&root, "the config", &["listen", "fsync"])
        .unwrap();
    assert_eq!(m.len(), 1);
    assert_eq!(m.get("fsync").and_then(Node::as_str), Some("off"));
    assert_eq!(
        shown(r),
        [
            "1:1: error: unknown key `listne` in the config\n  hint: did you mean `listen`?",
            "2:1: error: unknown key `zzz` in the config\n  hint: expected one of: listen, fsync",
        ]
    );
}

#[test]
fn open_mappings_keep_every_key_in_order_with_positions() {
    let (root, mut r) = read("headers: {x-api-key: k, 404: y}\n");
    let root = root.unwrap();
    let top = r.mapping(&root, "the config", &["headers"]).unwrap();
    let h = r
        .mapping(top.get("headers").unwrap(), "headers", &[])
        .unwrap();
    let keys: Vec<(&str, Pos)> = h.iter().map(|e| (e.key(), e.key_pos)).collect();
    assert_eq!(
        keys,
        [
            ("x-api-key", Pos { line: 1, col: 11 }),
            ("404", Pos { line: 1, col: 25 })
        ]
    );
    assert!(!r.has_errors());
}

#[test]
fn durations_parse_with_units_only() {
    assert_eq!(parse_duration_ms("30s"), Some(30_000));
    assert_eq!(parse_duration_ms("10m"), Some(600_000));
    assert_eq!(parse_duration_ms("1h"), Some(3_600_000));
    assert_eq!(parse_duration_ms("250ms"), Some(250));
    assert_eq!(parse_duration_ms("1h30m"), Some(5_400_000));
    assert_eq!(parse_duration_ms("2d"), Some(172_800_000));
    assert_eq!(parse_duration_ms("10"), None);
    assert_eq!(parse_duration_ms("5x"), None);
    assert_eq!(parse_duration_ms(""), None);
    assert_eq!(parse_duration_ms("99999999999999999999d"), None);
}

#[test]
fn duration_values_report_a_missing_unit_or_a_bad_text() {
    let (root, mut r) = read("a: 30s\nb: 30\nc: soon\nd: [1]\ne: 99999999999999d\n");
    let root = root.unwrap();
    let m = r.mapping(&root, "t", &[]).unwrap();
    let got: Vec<Option<u64>> = m.iter().map(|e| r.duration_ms(e.value, e.key())).collect();
    assert_eq!(got, [Some(30_000), None, None, None, None]);
    let out = shown(r);
    assert!(
        out[0].starts_with("2:4: error: b = 30 has no unit\n  hint: write a duration"),
        "{}",
        out[0]
    );
    assert!(
        out[1].starts_with("3:4: error: c = \"soon\" is not a duration"),
        "{}",
        out[1]
    );
    assert!(
        out[2].starts_with("4:4: error: d must be a duration, found a list"),
        "{}",
        out[2]
    );
    assert!(
        out[3].starts_with("5:4: error: e = \"99999999999999d\" is too long"),
        "{}",
        out[3]
    );
}

#[test]
fn wrong_types_name_what_was_expected_and_found() {
    let (root, mut r) = read("s: [x]\nb: yes\ni: 1.5\nu: -3\nf: abc\nm: 1\n");
    let root = root.unwrap();
    let m = r.mapping(&root, "t", &[]).unwrap();
    assert_eq!(r.text(m.get("s").unwrap(), "s"), None);
    assert_eq!(r.boolean(m.get("b").unwrap(), "b"), None);
    assert_eq!(r.int(m.get("i").unwrap(), "i"), None);
    assert_eq!(r.uint(m.get("u").unwrap(), "u"), None);
    assert_eq!(r.number(m.get("f").unwrap(), "f"), None);
    assert!(r.mapping(m.get("m").unwrap(), "m", &[]).is_none());
    assert_eq!(
        shown(r),
        [
            "1:4: error: s must be text, found a list",
            "2:4: error: b must be true or false, found text",
            "3:4: error: i must be a whole number, found a number",
            "4:4: error: u must not be negative, found -3",
            "5:4: error: f must be a number, found text",
            "6:4: error: m must be a mapping of keys to values, found an integer",
        ]
    );
}

#[test]
fn typed_scalars_read_their_values() {
    let (root, mut r) = read(
        "s: hi\nq: '12'\nb: true\ni: -4\nu: 0x10\nf: 0.25\nbytes: 64KiB\nn: 4096\naddr: 127.0.0.1:80\n",
    );
    let root = root.unwrap();
    let m = r.mapping(&root, "t", &[]).unwrap();
    let g = |k| m.get(k).unwrap();
    assert_eq!(r.text(g("s"), "s").as_deref(), Some("hi"));
    assert_eq!(r.text(g("q"), "q").as_deref(), Some("12"), "quoted is text");
    assert_eq!(r.boolean(g("b"), "b"), Some(true));
    assert_eq!(r.int(g("i"), "i"), Some(-4));
    assert_eq!(r.uint(g("u"), "u"), Some(16));
    assert_eq!(r.number(g("f"), "f"), Some(0.25));
    assert_eq!(r.micros(g("f"), "f", "1.0"), Some(250_000));
    assert_eq!(r.bytes(g("bytes"), "bytes"), Some(65_536));
    assert_eq!(r.bytes(g("n"), "n"), Some(4096));
    assert_eq!(r.uint_at_least(g("n"), "n", 1024), Some(4096));
    let addr: Option<std::net::SocketAddr> = r.parsed(g("addr"), "addr", "an address");
    assert_eq!(addr, Some("127.0.0.1:80".parse().unwrap()));
    assert!(!r.has_errors(), "{:?}", r.diagnostics());
    assert_eq!(r.uint_at_least(g("n"), "n", 65_536), None);
    assert_eq!(r.bytes(g("s"), "s"), None);
    let bad: Option<std::net::SocketAddr> =
        r.parsed(g("s"), "listen", "an address like 127.0.0.1:7700");
    assert_eq!(bad, None);
    let out = shown(r);
    assert_eq!(out[0], "1:4: error: s = \"hi\" is not a size in bytes\n  hint: write a number of bytes, e.g. 1048576 or 1MiB (KB, MB, GB; KiB, MiB, GiB)");
    assert!(
        out[1].starts_with(
            "1:4: error: listen must be an address like 127.0.0.1:7700, found \"hi\"\n  hint: "
        ),
        "{}",
        out[1]
    );
    assert_eq!(
        out[2],
        "8:4: error: n = 4096 is below the least allowed, 65536"
    );
}

#[test]
fn byte_sizes_take_decimal_and_binary_units() {
    assert_eq!(parse_bytes("0"), Some(0));
    assert_eq!(parse_bytes("512B"), Some(512));
    assert_eq!(parse_bytes("10MB"), Some(10_000_000));
    assert_eq!(parse_bytes("1 GiB"), Some(1 << 30));
    assert_eq!(parse_bytes("4TiB"), Some(1 << 42));
    assert_eq!(parse_bytes("MiB"), None);
    assert_eq!(parse_bytes("1.5MiB"), None);
    assert_eq!(parse_bytes("1mib"), None);
    assert_eq!(parse_bytes("99999999999TiB"), None);
}

#[test]
fn named_values_suggest_the_closest_name() {
    let (root, mut r) = read("- batch\n- bach\n- sometimes\n");
    let root = root.unwrap();
    let items = r.sequence(&root, "modes", None).unwrap();
    let opts = [("always", 0), ("batch", 1), ("off", 2)];
    let got: Vec<Option<i32>> = items.iter().map(|n| r.named(n, "fsync", &opts)).collect();
    assert_eq!(got, [Some(1), None, None]);
    assert_eq!(
        shown(r),
        [
            "2:3: error: fsync `bach` is not known\n  hint: did you mean `batch`?",
            "3:3: error: fsync `sometimes` is not known\n  hint: expected one of: always, batch, off",
        ]
    );
}

#[test]
fn required_keys_are_reported_at_their_mapping() {
    let (root, mut r) = read("webhooks:\n  - {events: [halt]}\n");
    let root = root.unwrap();
    let top = r.mapping(&root, "the config", &["webhooks"]).unwrap();
    let hooks = r
        .sequence(top.get("webhooks").unwrap(), "webhooks", None)
        .unwrap();
    let hook = r
        .mapping(&hooks[0], "a webhook", &["url", "events", "secret"])
        .unwrap();
    assert!(r
        .require(
            &hook,
            "url",
            "a webhook",
            Some("e.g. url: https://example.com/hook".into())
        )
        .is_none());
    assert_eq!(
        shown(r),
        ["2:5: error: a webhook needs `url`\n  hint: e.g. url: https://example.com/hook"]
    );
}

#[test]
fn limits_refuse_large_deep_and_aliased_texts() {
    let small = Source {
        bytes_max: 16,
        depth_max: 2,
        too_large_hint: Some("make it smaller"),
        ..TEST
    };
    let mut r = Reader::new();
    assert!(r.parse("a: 1\nb: 2\nc: 3\nd: 4\n", &small).is_none());
    assert!(r.parse("a: {b: {c: 1}}", &small).is_none());
    assert!(r.parse("a: &x 1\nb: *x\n", &TEST).is_none());
    assert_eq!(
        shown(r),
        [
            "1:1: error: the test file is 20 bytes; the limit is 16\n  hint: make it smaller",
            "1:8: error: the test file nests deeper than 2 levels",
            "2:4: error: YAML aliases (*name) are not supported in test files\n  hint: write the value out in full",
        ]
    );
}

#[test]
fn empty_texts_are_empty_mappings_unless_the_source_needs_a_document() {
    let (root, r) = read("# nothing\n");
    assert_eq!(root.unwrap().value, Value::Map(Vec::new()));
    assert!(!r.has_errors());
    let strict = Source {
        empty_hint: Some("start with `version: 1`"),
        ..TEST
    };
    let mut r = Reader::new();
    assert!(r.parse("", &strict).is_none());
    assert!(r.parse("a: 1\n---\nb: 2\n", &strict).is_none());
    assert_eq!(
        shown(r),
        [
            "1:1: error: the test file is empty\n  hint: start with `version: 1`",
            "3:1: error: a test file is one YAML document; found several",
        ]
    );
}

#[test]
fn one_or_more_refuses_an_empty_list() {
    let (root, mut r) = read("a: x\nb: [x, y]\nc: []\n");
    let root = root.unwrap();
    let m = r.mapping(&root, "t", &[]).unwrap();
    assert_eq!(r.one_or_more(m.get("a").unwrap()).len(), 1);
    assert_eq!(r.one_or_more(m.get("b").unwrap()).len(), 2);
    assert!(r.one_or_more(m.get("c").unwrap()).is_empty());
    assert_eq!(r.error_count(), 1);
}

#[test]
fn finish_separates_warnings_from_failure() {
    let mut r = Reader::new();
    r.warning(Pos { line: 2, col: 1 }, "odd", None);
    assert_eq!(r.finish(7).unwrap().1.len(), 1);
    let mut r = Reader::new();
    r.warning(Pos { line: 2, col: 1 }, "odd", None);
    r.error(Pos { line: 1, col: 1 }, "bad", None);
    let all = r.finish(7).unwrap_err();
    assert_eq!(all[0].severity, Severity::Error, "text order");
}

#[test]
fn suggestions_pick_close_names_only() {
    assert_eq!(suggest("decison", ["decision", "kind"]), Some("decision"));
    assert_eq!(suggest("zzz", ["decision", "kind"]), None);
}

/// Every key of the node's config file, read the way `adapters/src/config.rs` will: this
/// test is the proof that the API covers them (and a template for that reader).
#[test]
fn the_node_config_keys_read_with_this_api() {
    const CONFIG: Source<'static> = Source::new("config file", "config files");
    let text = r#"
listen: 127.0.0.1:7700
data_dir: /var/lib/warden
policy: /etc/warden/policy.yaml
operator_token: 0123456789abcdef0123
fsync: batch
limits: {max_body_bytes: 1MiB, max_connections: 4096, request_timeout: 30s, journal_bytes: 4294967296}
webhooks:
  - {url: "https://hooks.example/w", events: [halt, approval_requested], secret: s3cret}
upstreams:
  search: {url: "http://127.0.0.1:9000", headers: {x-api-key: "env:SEARCH_API_KEY"}, timeout: 30s}
  openai: {url: "http://127.0.0.1:9100/v1", kind: openai}
prices:
  gpt-4o-mini: {upstream: openai, input: 0.15, output: 0.60, max_output_tokens: 16384}
"#;
    let mut r = Reader::new();
    let root = r.parse(text, &CONFIG).unwrap();
    let keys = [
        "listen",
        "data_dir",
        "policy",
        "operator_token",
        "fsync",
        "limits",
        "webhooks",
        "upstreams",
        "prices",
    ];
    let top = r.mapping(&root, "the config", &keys).unwrap();
    let listen: Option<std::net::SocketAddr> = top
        .get("listen")
        .and_then(|n| r.parsed(n, "listen", "an address like 127.0.0.1:7700"));
    assert_eq!(listen, Some("127.0.0.1:7700".parse().unwrap()));
    let data_dir = top.get("data_dir").and_then(|n| r.text(n, "data_dir"));
    assert_eq!(data_dir.as_deref(), Some("/var/lib/warden"));
    assert!(top
        .get("policy")
        .and_then(|n| r.text(n, "policy"))
        .is_some());
    assert!(top
        .get("operator_token")
        .and_then(|n| r.text(n, "operator_token"))
        .is_some());
    let fsync = top
        .get("fsync")
        .and_then(|n| r.named(n, "fsync", &[("always", 'a'), ("batch", 'b'), ("off", 'o')]));
    assert_eq!(fsync, Some('b'));

    let limit_keys = [
        "max_body_bytes",
        "max_connections",
        "request_timeout",
        "journal_bytes",
        "segment_bytes",
    ];
    let limits = r
        .mapping(top.get("limits").unwrap(), "limits", &limit_keys)
        .unwrap();
    for e in limits.iter() {
        let ok = match e.key() {
            "max_body_bytes" => r.bytes(e.value, "limits.max_body_bytes") == Some(1 << 20),
            "max_connections" => {
                r.uint_at_least(e.value, "limits.max_connections", 1) == Some(4096)
            }
            "request_timeout" => r.duration_ms(e.value, "limits.request_timeout") == Some(30_000),
            _ => r.bytes(e.value, "limits.journal_bytes") == Some(1 << 32),
        };
        assert!(ok, "{}", e.key());
    }

    let hooks = r
        .sequence(top.get("webhooks").unwrap(), "webhooks", None)
        .unwrap();
    for item in hooks {
        let hook = r
            .mapping(item, "a webhook", &["url", "events", "secret"])
            .unwrap();
        let url = r
            .require(&hook, "url", "a webhook", None)
            .and_then(|n| r.text(n, "url"));
        assert_eq!(url.as_deref(), Some("https://hooks.example/w"));
        let events: Vec<String> = hook
            .get("events")
            .map(|n| {
                r.one_or_more(n)
                    .into_iter()
                    .filter_map(|e| r.text(e, "events"))
                    .collect()
            })
            .unwrap_or_default();
        assert_eq!(events, ["halt", "approval_requested"]);
    }

    // Names chosen by the writer: an open mapping (empty `allowed`), each value a mapping.
    let upstreams = r
        .mapping(top.get("upstreams").unwrap(), "upstreams", &[])
        .unwrap();
    let mut seen = Vec::new();
    for e in upstreams.iter() {
        let what = format!("upstream {}", e.key());
        let u = r
            .mapping(e.value, &what, &["url", "kind", "headers", "timeout"])
            .unwrap();
        let url = r
            .require(&u, "url", &what, None)
            .and_then(|n| r.text(n, "url"));
        let kind = u.get("kind").and_then(|n| {
            r.named(
                n,
                "kind",
                &[("http", 0), ("openai", 1), ("anthropic", 2), ("mcp", 3)],
            )
        });
        let timeout_ms = u.get("timeout").and_then(|n| r.duration_ms(n, "timeout"));
        let headers: Vec<(String, String)> = match u.get("headers") {
            Some(h) => r
                .mapping(h, "headers", &[])
                .map(|h| {
                    h.iter()
                        .filter_map(|e| Some((e.key().to_string(), r.text(e.value, e.key())?)))
                        .collect()
                })
                .unwrap_or_default(),
            None => Vec::new(),
        };
        seen.push((e.key().to_string(), url.unwrap(), kind, timeout_ms, headers));
    }
    assert_eq!(
        seen[0].4,
        [("x-api-key".to_string(), "env:SEARCH_API_KEY".to_string())]
    );
    assert_eq!((seen[0].3, seen[1].2), (Some(30_000), Some(1)));

    let prices = r
        .mapping(top.get("prices").unwrap(), "prices", &[])
        .unwrap();
    for e in prices.iter() {
        let p = r
            .mapping(
                e.value,
                "a price",
                &["upstream", "input", "output", "max_output_tokens"],
            )
            .unwrap();
        let input = p.get("input").and_then(|n| r.number(n, "input"));
        let micros = p.get("output").and_then(|n| r.micros(n, "output", "0.60"));
        let max = p
            .get("max_output_tokens")
            .and_then(|n| r.uint(n, "max_output_tokens"));
        let upstream = p.get("upstream").and_then(|n| r.text(n, "upstream"));
        assert_eq!(
            (input, micros, max, upstream.as_deref()),
            (Some(0.15), Some(600_000), Some(16_384), Some("openai"))
        );
    }
    assert!(!r.has_errors(), "{:?}", r.diagnostics());
}
