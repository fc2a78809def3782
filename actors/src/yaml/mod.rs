//! Reading YAML written by people (policies, the node's config file) with every problem
//! reported at its line and column, with a hint, all at once.
//!
//! Two steps:
//!
//! 1. [`Reader::parse`] checks the text against its [`Source`] limits (size, nesting depth, no
//!    aliases, one document) and turns it into a located tree of [`Node`]s. Nothing later can
//!    make it expand or recurse without bound.
//! 2. The caller walks the tree with the typed readers of [`Reader`]: [`Reader::mapping`] (a
//!    mapping whose keys are checked against the known ones, with "did you mean"),
//!    [`Reader::text`], [`Reader::boolean`], [`Reader::uint`], [`Reader::number`],
//!    [`Reader::duration_ms`] (`30s`), [`Reader::bytes`] (`64MiB`), [`Reader::named`] (one of
//!    a fixed set of names), [`Reader::parsed`] (anything with `FromStr`, e.g. an address),
//!    [`Reader::sequence`]. Each reports a [`Diagnostic`] at the node when the value does not
//!    fit and returns `None`, so a reader goes on and reports every problem in one pass.
//!
//! ```
//! use warden_actors::yaml::{Reader, Source};
//!
//! // The node's config file, say.
//! const CONFIG: Source<'static> = Source::new("config file", "config files");
//! let text = "listen: 127.0.0.1:7700\nfsync: sometimes\nlimits: {request_timeout: 30s, max_body_bytes: 1MiB}\nlisne: x\n";
//!
//! let mut r = Reader::new();
//! let root = r.parse(text, &CONFIG).unwrap();
//! let top = r.mapping(&root, "the config", &["listen", "fsync", "limits"]).unwrap();
//! let listen: Option<std::net::SocketAddr> =
//!     top.get("listen").and_then(|n| r.parsed(n, "listen", "an address like 127.0.0.1:7700"));
//! let fsync = top.get("fsync").and_then(|n| r.named(n, "fsync", &[("always", 0), ("batch", 1), ("off", 2)]));
//! let mut timeout_ms = None;
//! let mut body_bytes = None;
//! if let Some(limits) = top.get("limits").and_then(|n| r.mapping(n, "limits", &["request_timeout", "max_body_bytes"])) {
//!     for e in limits.iter() {
//!         match e.key() {
//!             "request_timeout" => timeout_ms = r.duration_ms(e.value, "limits.request_timeout"),
//!             _ => body_bytes = r.bytes(e.value, "limits.max_body_bytes"),
//!         }
//!     }
//! }
//! assert_eq!(listen, Some("127.0.0.1:7700".parse().unwrap()));
//! assert_eq!((timeout_ms, body_bytes), (Some(30_000), Some(1 << 20)));
//! assert_eq!(fsync, None);
//!
//! let problems: Vec<String> = r.into_diagnostics().iter().map(|d| d.to_string()).collect();
//! assert_eq!(problems, [
//!     "2:8: error: fsync `sometimes` is not known\n  hint: expected one of: always, batch, off",
//!     "4:1: error: unknown key `lisne` in the config\n  hint: did you mean `listen`?",
//! ]);
//! ```

mod reader;
#[cfg(test)]
mod tests;

use std::borrow::Cow;
use std::fmt;

use saphyr::{MarkedYamlOwned, ScalarOwned as Scalar, YamlDataOwned as Data};
use serde::Serialize;

pub use reader::Reader;

/// A place in a text: 1-based line and column.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Pos {
    /// Line, from 1.
    pub line: usize,
    /// Column, from 1.
    pub col: usize,
}

impl Pos {
    /// The start of the text.
    pub const START: Pos = Pos { line: 1, col: 1 };
}

impl fmt::Display for Pos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.col)
    }
}

/// Error or warning.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// The text cannot be used.
    Error,
    /// The text works, but probably not as meant.
    Warning,
}

/// A problem in a YAML text (a policy, a config file), at a line and column (both from 1),
/// with a hint. Displays as `line:col: error: message` and, when there is one,
/// `\n  hint: ...`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Diagnostic {
    /// Error or warning.
    pub severity: Severity,
    /// Line, from 1.
    pub line: usize,
    /// Column, from 1.
    pub col: usize,
    /// What is wrong.
    pub message: String,
    /// What to do about it.
    pub hint: Option<String>,
}

impl Diagnostic {
    /// An error at `at`.
    pub fn error(at: Pos, message: impl Into<String>, hint: Option<String>) -> Self {
        Self::new(Severity::Error, at, message, hint)
    }

    /// A warning at `at`.
    pub fn warning(at: Pos, message: impl Into<String>, hint: Option<String>) -> Self {
        Self::new(Severity::Warning, at, message, hint)
    }

    fn new(severity: Severity, at: Pos, message: impl Into<String>, hint: Option<String>) -> Self {
        Self {
            severity,
            line: at.line,
            col: at.col,
            message: message.into(),
            hint,
        }
    }

    /// Where it is.
    pub fn pos(&self) -> Pos {
        Pos {
            line: self.line,
            col: self.col,
        }
    }

    /// True for an error (the text cannot be used).
    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sev = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        write!(f, "{}:{}: {sev}: {}", self.line, self.col, self.message)?;
        if let Some(h) = &self.hint {
            write!(f, "\n  hint: {h}")?;
        }
        Ok(())
    }
}

/// What kind of text is read, and its bounds. Messages name it (`the policy is empty`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Source<'a> {
    /// What the text is, in messages: `policy`, `config file`.
    pub name: &'a str,
    /// The plural, in messages: `policies`, `config files`.
    pub plural: &'a str,
    /// Largest text accepted, in bytes.
    pub bytes_max: usize,
    /// Deepest nesting of mappings and lists accepted.
    pub depth_max: usize,
    /// A hint for a text over `bytes_max`.
    pub too_large_hint: Option<&'a str>,
    /// `Some(hint)`: a text without a document is an error, with this hint. `None`: it reads
    /// as an empty mapping (every key absent).
    pub empty_hint: Option<&'a str>,
}

impl<'a> Source<'a> {
    /// Default bound on a text's size: 1 MiB.
    pub const BYTES_MAX_DEFAULT: usize = 1 << 20;
    /// Default bound on nesting: 64 levels.
    pub const DEPTH_MAX_DEFAULT: usize = 64;

    /// A source with the default bounds, where an empty text is an empty mapping.
    pub const fn new(name: &'a str, plural: &'a str) -> Self {
        Self {
            name,
            plural,
            bytes_max: Self::BYTES_MAX_DEFAULT,
            depth_max: Self::DEPTH_MAX_DEFAULT,
            too_large_hint: None,
            empty_hint: None,
        }
    }
}

/// A YAML value with the place it was written.
#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    /// Where the value starts.
    pub pos: Pos,
    /// The value.
    pub value: Value,
}

/// A YAML value, resolved by the YAML 1.2 core schema (`true`, `12`, `0x1f`, `1.5`, `~`;
/// anything quoted is text).
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// `~`, `null` or nothing.
    Null,
    /// `true` or `false`.
    Bool(bool),
    /// A whole number.
    Int(i64),
    /// A number with a fraction or exponent (`.inf` and `.nan` included).
    Float(f64),
    /// Text.
    Str(String),
    /// A list.
    Seq(Vec<Node>),
    /// A mapping, in the order written (keys are unique: a repeated key is a syntax error).
    Map(Vec<(Node, Node)>),
    /// Something readers never accept: a node with a custom tag (`!thing`), or a scalar whose
    /// core tag does not fit it (`!!int abc`).
    Unsupported,
}

impl Node {
    /// What the value is, for messages: `a mapping`, `text`, `an integer`, ...
    pub fn kind(&self) -> &'static str {
        match &self.value {
            Value::Map(_) => "a mapping",
            Value::Seq(_) => "a list",
            Value::Str(_) => "text",
            Value::Int(_) => "an integer",
            Value::Float(_) => "a number",
            Value::Bool(_) => "true/false",
            Value::Null => "nothing (null)",
            Value::Unsupported => "an unsupported YAML node",
        }
    }

    /// The text, when the value is text.
    pub fn as_str(&self) -> Option<&str> {
        match &self.value {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The scalar as JSON (`null`, a boolean, a number, a string); `None` for lists,
    /// mappings, unsupported nodes and non-finite numbers.
    pub fn scalar_json(&self) -> Option<serde_json::Value> {
        use serde_json::Value as J;
        match &self.value {
            Value::Null => Some(J::Null),
            Value::Bool(b) => Some(J::Bool(*b)),
            Value::Int(i) => Some(J::from(*i)),
            Value::Float(f) => serde_json::Number::from_f64(*f).map(J::Number),
            Value::Str(s) => Some(J::String(s.clone())),
            _ => None,
        }
    }

    pub(super) fn from_saphyr(n: &MarkedYamlOwned) -> Node {
        let value = match &n.data {
            Data::Value(Scalar::Null) => Value::Null,
            Data::Value(Scalar::Boolean(b)) => Value::Bool(*b),
            Data::Value(Scalar::Integer(i)) => Value::Int(*i),
            Data::Value(Scalar::FloatingPoint(f)) => Value::Float(f.into_inner()),
            Data::Value(Scalar::String(s)) => Value::Str(s.clone()),
            Data::Sequence(items) => Value::Seq(items.iter().map(Node::from_saphyr).collect()),
            Data::Mapping(m) => Value::Map(
                m.iter()
                    .map(|(k, v)| (Node::from_saphyr(k), Node::from_saphyr(v)))
                    .collect(),
            ),
            _ => Value::Unsupported,
        };
        Node {
            pos: pos_of(n),
            value,
        }
    }
}

fn pos_of(n: &MarkedYamlOwned) -> Pos {
    Pos {
        line: n.span.start.line(),
        col: n.span.start.col() + 1,
    }
}

/// One entry of a checked mapping.
#[derive(Clone, Debug)]
pub struct Entry<'a> {
    /// The key as text (a whole-number key such as `404:` reads as `"404"`).
    pub key: Cow<'a, str>,
    /// Where the key is written.
    pub key_pos: Pos,
    /// The value.
    pub value: &'a Node,
}

impl Entry<'_> {
    /// The key.
    pub fn key(&self) -> &str {
        &self.key
    }
}

/// A mapping whose keys [`Reader::mapping`] has checked: text, and known when a list of
/// allowed keys was given (unknown ones were reported and left out).
#[derive(Clone, Debug)]
pub struct Mapping<'a> {
    /// Where the mapping starts.
    pub pos: Pos,
    entries: Vec<Entry<'a>>,
}

impl<'a> Mapping<'a> {
    /// The value under `key`.
    pub fn get(&self, key: &str) -> Option<&'a Node> {
        self.entries.iter().find(|e| e.key == key).map(|e| e.value)
    }

    /// The entries, in the order written.
    pub fn iter(&self) -> std::slice::Iter<'_, Entry<'a>> {
        self.entries.iter()
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when it has no entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

impl<'a> IntoIterator for Mapping<'a> {
    type Item = Entry<'a>;
    type IntoIter = std::vec::IntoIter<Entry<'a>>;

    fn into_iter(self) -> Self::IntoIter {
        self.entries.into_iter()
    }
}

impl<'m, 'a> IntoIterator for &'m Mapping<'a> {
    type Item = &'m Entry<'a>;
    type IntoIter = std::slice::Iter<'m, Entry<'a>>;

    fn into_iter(self) -> Self::IntoIter {
        self.entries.iter()
    }
}

/// The closest name within a small edit distance, for "did you mean".
pub fn suggest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|c| (strsim::levenshtein(word, c), c))
        .filter(|(d, c)| *d <= 2.max(c.len() / 4) && *d < c.len())
        .min()
        .map(|(_, c)| c)
}

/// `did you mean `x`?` when a candidate is close, else `expected one of: a, b, c`.
pub fn one_of_hint(word: &str, candidates: &[&str]) -> String {
    match suggest(word, candidates.iter().copied()) {
        Some(s) => format!("did you mean `{s}`?"),
        None => format!("expected one of: {}", candidates.join(", ")),
    }
}

/// `500ms`, `30s`, `10m`, `1h30m`, `2d`: a sum of number+unit parts, in milliseconds. A bare
/// number has no unit and is refused; so is a total over `u64::MAX` ms.
///
/// ```
/// use warden_actors::yaml::parse_duration_ms;
/// assert_eq!(parse_duration_ms("1h30m"), Some(5_400_000));
/// assert_eq!(parse_duration_ms("250ms"), Some(250));
/// assert_eq!(parse_duration_ms("30"), None);
/// ```
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

/// Why [`parse_duration_ms`] refused `text`, for an error message: written as a duration but
/// longer than a `u64` of milliseconds holds, or not a duration at all.
pub fn duration_problem(text: &str) -> &'static str {
    let mut rest = text.trim();
    let mut parts = 0;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit = rest[digits..]
            .find(|c: char| c.is_ascii_digit())
            .map_or(rest.len(), |u| digits + u);
        if digits == 0 || !matches!(&rest[digits..unit], "ms" | "s" | "m" | "h" | "d") {
            return "is not a duration";
        }
        rest = &rest[unit..];
        parts += 1;
    }
    match parts {
        0 => "is not a duration",
        _ => "is too long (a duration holds at most about 584 million years)",
    }
}

/// `4096`, `64KiB`, `1 MiB`, `4GiB`, `10MB`: a whole number of bytes with an optional unit
/// (`B`, `KB`/`MB`/`GB`/`TB` in powers of 1000, `KiB`/`MiB`/`GiB`/`TiB` in powers of 1024).
///
/// ```
/// use warden_actors::yaml::parse_bytes;
/// assert_eq!(parse_bytes("64KiB"), Some(65_536));
/// assert_eq!(parse_bytes("2 MB"), Some(2_000_000));
/// assert_eq!(parse_bytes("1.5GiB"), None);
/// ```
pub fn parse_bytes(text: &str) -> Option<u64> {
    let s = text.trim();
    let digits = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    if digits == 0 {
        return None;
    }
    let value: u64 = s[..digits].parse().ok()?;
    let factor: u64 = match s[digits..].trim_start() {
        "" | "B" => 1,
        "KB" | "kB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        "TB" => 1_000_000_000_000,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "TiB" => 1 << 40,
        _ => return None,
    };
    value.checked_mul(factor)
}
