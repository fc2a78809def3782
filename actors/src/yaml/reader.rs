//! [`Reader`]: parses a text within its [`Source`] bounds, then reads typed values from the
//! tree, collecting a [`Diagnostic`] for each problem.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

use saphyr::{LoadableYamlNode, MarkedYamlOwned};
use saphyr_parser::{Event, Parser};

use super::{
    one_of_hint, parse_bytes, parse_duration_ms, pos_of, Diagnostic, Entry, Mapping, Node, Pos,
    Source, Value,
};

/// Collects diagnostics while a text is parsed and read. Every typed reader reports at the
/// node it was given and returns `None` when the value does not fit, so reading goes on and
/// every problem is found in one pass. Nothing here panics on any input.
#[derive(Debug, Default)]
pub struct Reader {
    diags: Vec<Diagnostic>,
}

impl Reader {
    /// A reader with no diagnostics yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Reports an error at `at`.
    pub fn error(&mut self, at: Pos, message: impl Into<String>, hint: Option<String>) {
        self.diags.push(Diagnostic::error(at, message, hint));
    }

    /// Reports a warning at `at`.
    pub fn warning(&mut self, at: Pos, message: impl Into<String>, hint: Option<String>) {
        self.diags.push(Diagnostic::warning(at, message, hint));
    }

    /// Reports `{what} must be {expected}, found {what the node is}` at the node.
    pub fn expected(&mut self, n: &Node, what: &str, expected: &str, hint: Option<String>) {
        let found = n.kind();
        self.error(
            n.pos,
            format!("{what} must be {expected}, found {found}"),
            hint,
        );
    }

    /// Every diagnostic so far, in the order reported.
    pub fn diagnostics(&self) -> &[Diagnostic] {
        &self.diags
    }

    /// Number of errors so far (warnings not counted).
    pub fn error_count(&self) -> usize {
        self.diags.iter().filter(|d| d.is_error()).count()
    }

    /// True when an error was reported.
    pub fn has_errors(&self) -> bool {
        self.diags.iter().any(Diagnostic::is_error)
    }

    /// Every diagnostic, in text order (line, column, errors before warnings).
    pub fn into_diagnostics(mut self) -> Vec<Diagnostic> {
        self.diags.sort_by_key(|d| (d.line, d.col, d.severity));
        self.diags
    }

    /// `Ok((value, warnings))` when no error was reported, else every diagnostic (errors and
    /// warnings), in text order.
    pub fn finish<T>(self, value: T) -> Result<(T, Vec<Diagnostic>), Vec<Diagnostic>> {
        let failed = self.has_errors();
        let diags = self.into_diagnostics();
        if failed {
            Err(diags)
        } else {
            Ok((value, diags))
        }
    }

    /// Parses `text` as one YAML document within `source`'s bounds. `None` after reporting
    /// when the text is too large, nests too deep, uses an alias (`*name`, which would expand
    /// in memory), is not YAML (a repeated key in a mapping included), holds several
    /// documents, or is empty while `source` requires a document.
    pub fn parse(&mut self, text: &str, source: &Source<'_>) -> Option<Node> {
        if !self.prescan(text, source) {
            return None;
        }
        let docs = match MarkedYamlOwned::load_from_str(text) {
            Ok(d) => d,
            Err(e) => {
                let at = Pos {
                    line: e.marker().line(),
                    col: e.marker().col() + 1,
                };
                self.syntax_error(at, e.info());
                return None;
            }
        };
        match docs.as_slice() {
            [] => match source.empty_hint {
                Some(hint) => {
                    self.error(
                        Pos::START,
                        format!("the {} is empty", source.name),
                        Some(hint.into()),
                    );
                    None
                }
                None => Some(Node {
                    pos: Pos::START,
                    value: Value::Map(Vec::new()),
                }),
            },
            [one] => Some(Node::from_saphyr(one)),
            [_, second, ..] => {
                let at = pos_of(second);
                self.error(
                    at,
                    format!("a {} is one YAML document; found several", source.name),
                    None,
                );
                None
            }
        }
    }

    fn syntax_error(&mut self, at: Pos, info: &str) {
        let hint = info
            .contains("duplicated key")
            .then(|| "each key may appear once in a mapping; remove or merge the repeats".into());
        self.error(at, format!("YAML syntax: {info}"), hint);
    }

    /// Checks the text for things the loader must never see: too large, too deep, aliases
    /// (which expand and can blow up memory). Returns false after reporting.
    fn prescan(&mut self, text: &str, source: &Source<'_>) -> bool {
        if text.len() > source.bytes_max {
            self.error(
                Pos::START,
                format!(
                    "the {} is {} bytes; the limit is {}",
                    source.name,
                    text.len(),
                    source.bytes_max
                ),
                source.too_large_hint.map(str::to_string),
            );
            return false;
        }
        let mut depth = 0usize;
        for item in Parser::new_from_str(text) {
            let (event, span) = match item {
                Ok(ok) => ok,
                Err(e) => {
                    let at = Pos {
                        line: e.marker().line(),
                        col: e.marker().col() + 1,
                    };
                    self.syntax_error(at, e.info());
                    return false;
                }
            };
            let at = Pos {
                line: span.start.line(),
                col: span.start.col() + 1,
            };
            match event {
                Event::SequenceStart(..) | Event::MappingStart(..) => {
                    depth += 1;
                    if depth > source.depth_max {
                        let message = format!(
                            "the {} nests deeper than {} levels",
                            source.name, source.depth_max
                        );
                        self.error(at, message, None);
                        return false;
                    }
                }
                Event::SequenceEnd | Event::MappingEnd => depth = depth.saturating_sub(1),
                Event::Alias(_) => {
                    let message = format!(
                        "YAML aliases (*name) are not supported in {}",
                        source.plural
                    );
                    self.error(at, message, Some("write the value out in full".into()));
                    return false;
                }
                Event::StreamEnd => break,
                _ => {}
            }
        }
        true
    }

    /// A mapping's entries with their keys as text. With a non-empty `allowed`, any other
    /// key is reported (`unknown key `x` in {what}`, with "did you mean" when one is close)
    /// and left out; with an empty `allowed`, every key is kept (names chosen by the writer:
    /// tools, upstreams, headers). `None` when the node is not a mapping.
    pub fn mapping<'a>(
        &mut self,
        n: &'a Node,
        what: &str,
        allowed: &[&str],
    ) -> Option<Mapping<'a>> {
        let Value::Map(m) = &n.value else {
            self.expected(n, what, "a mapping of keys to values", None);
            return None;
        };
        let mut entries = Vec::with_capacity(m.len());
        for (k, v) in m {
            let key: Cow<'a, str> = match &k.value {
                Value::Str(s) => Cow::Borrowed(s.as_str()),
                Value::Int(i) => Cow::Owned(i.to_string()),
                _ => {
                    let message = format!("keys of {what} must be text, found {}", k.kind());
                    self.error(k.pos, message, None);
                    continue;
                }
            };
            if !allowed.is_empty() && !allowed.contains(&&*key) {
                let hint = one_of_hint(&key, allowed);
                self.error(k.pos, format!("unknown key `{key}` in {what}"), Some(hint));
                continue;
            }
            entries.push(Entry {
                key,
                key_pos: k.pos,
                value: v,
            });
        }
        Some(Mapping {
            pos: n.pos,
            entries,
        })
    }

    /// The value under `key`, or an error at the mapping (`{what} needs `{key}``) with `hint`.
    pub fn require<'a>(
        &mut self,
        m: &Mapping<'a>,
        key: &str,
        what: &str,
        hint: Option<String>,
    ) -> Option<&'a Node> {
        let found = m.get(key);
        if found.is_none() {
            self.error(m.pos, format!("{what} needs `{key}`"), hint);
        }
        found
    }

    /// The items of a list. `None`, after reporting, when the node is not a list.
    pub fn sequence<'a>(
        &mut self,
        n: &'a Node,
        what: &str,
        hint: Option<String>,
    ) -> Option<&'a [Node]> {
        match &n.value {
            Value::Seq(items) => Some(items),
            _ => {
                self.expected(n, what, "a list", hint);
                None
            }
        }
    }

    /// One item or a list of them (`tool: shell` or `tool: [shell, git]`). An empty list is an
    /// error: it would silently mean "no restriction" where the writer meant "nothing".
    pub fn one_or_more<'a>(&mut self, n: &'a Node) -> Vec<&'a Node> {
        match &n.value {
            Value::Seq(items) if items.is_empty() => {
                self.error(
                    n.pos,
                    "an empty list here matches nothing useful",
                    Some("list at least one value, or remove the key".into()),
                );
                Vec::new()
            }
            Value::Seq(items) => items.iter().collect(),
            _ => vec![n],
        }
    }

    /// Text.
    pub fn text(&mut self, n: &Node, what: &str) -> Option<String> {
        match &n.value {
            Value::Str(s) => Some(s.clone()),
            _ => {
                self.expected(n, what, "text", None);
                None
            }
        }
    }

    /// `true` or `false`.
    pub fn boolean(&mut self, n: &Node, what: &str) -> Option<bool> {
        match &n.value {
            Value::Bool(b) => Some(*b),
            _ => {
                self.expected(n, what, "true or false", None);
                None
            }
        }
    }

    /// A whole number, negative or not.
    pub fn int(&mut self, n: &Node, what: &str) -> Option<i64> {
        match &n.value {
            Value::Int(i) => Some(*i),
            _ => {
                self.expected(n, what, "a whole number", None);
                None
            }
        }
    }

    /// A whole number, not negative.
    pub fn uint(&mut self, n: &Node, what: &str) -> Option<u64> {
        match &n.value {
            Value::Int(i) if *i >= 0 => Some(*i as u64),
            Value::Int(i) => {
                self.error(
                    n.pos,
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

    /// A whole number that fits in a u32.
    pub fn uint32(&mut self, n: &Node, what: &str) -> Option<u32> {
        let v = self.uint(n, what)?;
        match u32::try_from(v) {
            Ok(v) => Some(v),
            Err(_) => {
                self.error(
                    n.pos,
                    format!("{what} = {v} is too large (at most {})", u32::MAX),
                    None,
                );
                None
            }
        }
    }

    /// A whole number of at least `min` (a bound below which a setting makes no sense).
    pub fn uint_at_least(&mut self, n: &Node, what: &str, min: u64) -> Option<u64> {
        let v = self.uint(n, what)?;
        if v < min {
            self.error(
                n.pos,
                format!("{what} = {v} is below the least allowed, {min}"),
                None,
            );
            return None;
        }
        Some(v)
    }

    /// A finite number, whole or not.
    pub fn number(&mut self, n: &Node, what: &str) -> Option<f64> {
        match &n.value {
            Value::Int(i) => Some(*i as f64),
            Value::Float(f) if f.is_finite() => Some(*f),
            _ => {
                self.expected(n, what, "a number", None);
                None
            }
        }
    }

    /// A non-negative decimal amount (dollars, risk) held as integer micro-units, rounded to
    /// the nearest one. `example` shows a good value in the hint (`5.00`).
    pub fn micros(&mut self, n: &Node, what: &str, example: &str) -> Option<u64> {
        let hint = || {
            Some(format!(
                "write it as a plain number, e.g. {what}: {example}"
            ))
        };
        let v = match &n.value {
            Value::Int(i) => *i as f64,
            Value::Float(f) => *f,
            _ => {
                self.expected(n, what, "a number", hint());
                return None;
            }
        };
        if !v.is_finite() || !(0.0..=1e12).contains(&v) {
            self.error(
                n.pos,
                format!("{what} = {v} is not an amount between 0 and 10^12"),
                hint(),
            );
            return None;
        }
        Some(crate::budget::units_to_micros(v))
    }

    /// A duration with units (`500ms`, `30s`, `10m`, `1h30m`, `2d`), in milliseconds; see
    /// [`parse_duration_ms`]. A bare number is an error (seconds or milliseconds?).
    pub fn duration_ms(&mut self, n: &Node, what: &str) -> Option<u64> {
        let hint = Some("write a duration with units, e.g. 500ms, 30s, 10m, 1h30m, 2d".to_string());
        let text = match &n.value {
            Value::Str(s) => s,
            Value::Int(i) => {
                self.error(n.pos, format!("{what} = {i} has no unit"), hint);
                return None;
            }
            _ => {
                self.expected(n, what, "a duration", hint);
                return None;
            }
        };
        let ms = parse_duration_ms(text);
        if ms.is_none() {
            let problem = super::duration_problem(text);
            self.error(n.pos, format!("{what} = {text:?} {problem}"), hint);
        }
        ms
    }

    /// A size in bytes: a whole number, or text with a unit (`64KiB`, `10MB`); see
    /// [`parse_bytes`].
    pub fn bytes(&mut self, n: &Node, what: &str) -> Option<u64> {
        let hint = || {
            Some(
                "write a number of bytes, e.g. 1048576 or 1MiB (KB, MB, GB; KiB, MiB, GiB)"
                    .to_string(),
            )
        };
        let parsed = match &n.value {
            Value::Int(i) if *i >= 0 => Some(*i as u64),
            Value::Str(s) => parse_bytes(s),
            _ => {
                self.expected(n, what, "a size in bytes", hint());
                return None;
            }
        };
        if parsed.is_none() {
            let shown = n.scalar_json().map_or_else(String::new, |j| j.to_string());
            self.error(
                n.pos,
                format!("{what} = {shown} is not a size in bytes"),
                hint(),
            );
        }
        parsed
    }

    /// One of a fixed set of names (`fsync: batch`), as its value. An unknown name is
    /// reported with "did you mean" or the list of names.
    pub fn named<T: Copy>(&mut self, n: &Node, what: &str, options: &[(&str, T)]) -> Option<T> {
        let text = self.text(n, what)?;
        if let Some((_, v)) = options.iter().find(|(name, _)| *name == text) {
            return Some(*v);
        }
        let names: Vec<&str> = options.iter().map(|(n, _)| *n).collect();
        let hint = one_of_hint(&text, &names);
        self.error(n.pos, format!("{what} `{text}` is not known"), Some(hint));
        None
    }

    /// Text parsed with `FromStr` (an address, a URL type): on failure, `{what} must be
    /// {expected}` with the parser's reason as the hint.
    pub fn parsed<T>(&mut self, n: &Node, what: &str, expected: &str) -> Option<T>
    where
        T: FromStr,
        T::Err: fmt::Display,
    {
        let Value::Str(s) = &n.value else {
            self.expected(n, what, expected, None);
            return None;
        };
        match s.parse() {
            Ok(v) => Some(v),
            Err(e) => {
                self.error(
                    n.pos,
                    format!("{what} must be {expected}, found {s:?}"),
                    Some(e.to_string()),
                );
                None
            }
        }
    }
}
