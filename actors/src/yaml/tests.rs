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
    let (root, mut r) = read("a: 30s\nb: 30\nc: soon\nd: [1]\n");
    let root = root.unwrap();
    let m = r.mapping(&root, "t", &[]).unwrap();
    let got: Vec<Option<u64>> = m.iter().map(|e| r.duration_ms(e.value, e.key())).collect();
    assert_eq!(got, [Some(30_000), None, None, None]);
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
