//! Evaluation helpers: the per-step memo of args values, regex-set results and detector
//! results, time windows, and JSON comparison.

use std::borrow::Cow;

use regex::SetMatches;
use serde_json::Value;
use smallvec::SmallVec;

use std::cmp::Ordering;

use super::compile::{CCond, COp, CSeg};
use super::decimal::Decimal;
use super::detect::{Detector, Scan, MAX_SCAN_BYTES};
use super::model::TimeWindow;
use super::shell::{CommandLine, Tri};
use super::{fspath, text, weburl, PolicySet};
use crate::step::Step;

pub(super) fn in_window(w: &TimeWindow, now_ms: u64) -> bool {
    let days = now_ms / 86_400_000;
    let weekday = ((days + 3) % 7) as u8; // 1970-01-01 was a Thursday; 0 = Monday
    let minute = ((now_ms % 86_400_000) / 60_000) as u16;
    if w.start_min < w.end_min {
        w.days_mask & (1 << weekday) != 0 && minute >= w.start_min && minute < w.end_min
    } else {
        // Wraps past midnight: the part after midnight belongs to the previous day's window.
        let yesterday = (weekday + 6) % 7;
        (w.days_mask & (1 << weekday) != 0 && minute >= w.start_min)
            || (w.days_mask & (1 << yesterday) != 0 && minute < w.end_min)
    }
}

/// One value found at an args path, with what has been worked out about it so far.
struct Cand<'a> {
    v: &'a Value,
    /// Reached through a `*` key: a value of the wrong type is just another field, not doubt.
    loose: bool,
    /// Canonical text of a string value (None until needed).
    canon: Option<Cow<'a, str>>,
    /// Text-set results per view (outer None: not yet run; inner None: no text).
    text: [Option<Option<SetMatches>>; 2],
    /// Path-set results per view: hits and whether the value was relative, or why it cannot
    /// be placed.
    path: [Option<Result<(SetMatches, bool), String>>; 2],
    /// The parsed command line, for `command` conditions.
    line: Option<Box<CommandLine>>,
    /// The parsed URL per view, for `url` conditions.
    url: Option<Box<UrlViews>>,
    /// For `detector` conditions, per detector: found (true), clean (false), or too much
    /// text to read (`None`); the outer `None` until scanned.
    detected: [Option<Option<bool>>; 3],
    /// The path is blocked here: this value stands where the path's segment `n` needed an
    /// object (a key) or a list (an index), so what the path names cannot be read (doubt).
    blocked: Option<usize>,
}

/// A value read as a URL, per view (None: not yet read).
type UrlViews = [Option<Result<weburl::Parsed, String>>; 2];

impl<'a> Cand<'a> {
    fn new(v: &'a Value, loose: bool) -> Self {
        Cand {
            v,
            loose,
            canon: None,
            text: [None, None],
            path: [None, None],
            line: None,
            url: None,
            detected: [None; 3],
            blocked: None,
        }
    }

    /// True when the canonical view's text is the text as sent (numbers, booleans, and
    /// strings already canonical: the common case).
    fn canonical_is_raw(&mut self) -> bool {
        match self.v {
            Value::String(s) => {
                let c = self.canon.get_or_insert_with(|| text::canonical(s));
                matches!(c, Cow::Borrowed(b) if b.len() == s.len())
            }
            _ => true,
        }
    }

    /// The text of the value in a view: strings as sent or canonical, numbers and booleans
    /// as JSON text; None for null, objects and arrays.
    fn text(&mut self, view: usize) -> Option<Cow<'a, str>> {
        match self.v {
            Value::String(s) if view == 0 => Some(Cow::Borrowed(s.as_str())),
            Value::String(s) => Some(self.canon.get_or_insert_with(|| text::canonical(s)).clone()),
            Value::Number(n) => Some(Cow::Owned(n.to_string())),
            Value::Bool(b) => Some(Cow::Borrowed(if *b { "true" } else { "false" })),
            _ => None,
        }
    }
}

/// The values at one args path.
struct Slot<'a> {
    path: u32,
    whole: bool,
    /// A key on the path exists (even if it holds an empty array).
    present: bool,
    /// More values were there than were collected ([`MAX_VALUES`]).
    truncated: bool,
    cands: SmallVec<[Cand<'a>; 2]>,
}

/// Per-evaluation memo: the values at each path, set results per value and view, parsed
/// command lines, detector results; and the first doubt met while matching a rule.
pub(super) struct EvalCache<'a> {
    policy: &'a PolicySet,
    step: &'a Step,
    slots: SmallVec<[Slot<'a>; 4]>,
    detectors: [Option<Scan>; 3],
    /// Why a rule matched although it could not tell (cleared per rule).
    pub(super) doubt: Option<String>,
}

/// Most values one path may collect in one step (the step's own bound is larger; beyond this a
/// path stops collecting, and what it did not read is doubt: a rule stronger than allow that
/// no collected value satisfies matches, with that reason, and an allow rule does not).
const MAX_VALUES: usize = 1_024;

/// Collects the values at an args path. The rule for a path that cannot be followed to its
/// end: a key missing from an object is *absent* (nothing there); a key or index that meets
/// a value of the wrong shape (text, a number, `null`, an object where a list is expected, or
/// an empty list where a key is expected) *blocks* the path, and the blocking value is
/// collected as a doubt ([`Cand::blocked`]), unless it was reached through a `*` key.
struct Walk<'a, 's> {
    segs: &'s [CSeg],
    whole: bool,
    /// The path reached its end somewhere (even at an empty list).
    present: bool,
    /// More values were there than [`MAX_VALUES`]: the rest were not collected.
    truncated: bool,
    out: SmallVec<[Cand<'a>; 2]>,
}

impl<'a> Walk<'a, '_> {
    fn collect(&mut self, v: &'a Value, at: usize, loose: bool) {
        if self.out.len() >= MAX_VALUES {
            self.truncated = true;
            return;
        }
        let Some(seg) = self.segs.get(at) else {
            self.present = true;
            match v {
                Value::Array(items) if !self.whole => {
                    for item in items {
                        self.collect(item, at, loose);
                    }
                }
                _ => self.out.push(Cand::new(v, loose)),
            }
            return;
        };
        match (seg, v) {
            (CSeg::Key { raw, canon }, Value::Object(m)) => {
                for (k, val) in m {
                    if k == raw || text::same_canonical(k, canon) {
                        self.collect(val, at + 1, loose);
                    }
                }
            }
            // A key meets a list: each element (an empty list holds nothing to read).
            (CSeg::Key { .. } | CSeg::AnyKey, Value::Array(items)) if !items.is_empty() => {
                for item in items {
                    self.collect(item, at, loose);
                }
            }
            (CSeg::Index(i), Value::Array(items)) => {
                if let Some(item) = items.get(*i) {
                    self.collect(item, at + 1, loose);
                }
            }
            (CSeg::AnyIndex, Value::Array(items)) => {
                for item in items {
                    self.collect(item, at + 1, loose);
                }
            }
            (CSeg::AnyKey, Value::Object(m)) => {
                for val in m.values() {
                    self.collect(val, at + 1, true);
                }
            }
            _ if loose => {}
            _ => {
                let mut c = Cand::new(v, false);
                c.blocked = Some(at);
                self.out.push(c);
            }
        }
    }
}

/// `segs[..n]` as written in a policy (`recipient`, `items[0]`), for reasons.
fn path_prefix(segs: &[CSeg], n: usize) -> String {
    let mut out = String::new();
    for seg in &segs[..n] {
        match seg {
            CSeg::Key { raw, .. } if out.is_empty() => out.push_str(raw),
            CSeg::Key { raw, .. } => {
                out.push('.');
                out.push_str(raw);
            }
            CSeg::AnyKey if out.is_empty() => out.push('*'),
            CSeg::AnyKey => out.push_str(".*"),
            CSeg::Index(i) => out.push_str(&format!("[{i}]")),
            CSeg::AnyIndex => out.push_str("[*]"),
        }
    }
    out
}

/// Why a path blocked at segment `at` by value `v` cannot be read.
fn blocked_reason(segs: &[CSeg], at: usize, v: &Value) -> String {
    let what = match v {
        Value::Null => "null".to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => text::preview(s),
        Value::Array(items) if items.is_empty() => "an empty list".into(),
        Value::Array(_) => "a list".into(),
        Value::Object(_) => "an object".into(),
    };
    let wanted = match segs[at] {
        CSeg::Key { .. } | CSeg::AnyKey => "an object",
        CSeg::Index(_) | CSeg::AnyIndex => "a list",
    };
    let at_text = if at == 0 {
        "args".to_string()
    } else {
        format!("args.{}", path_prefix(segs, at))
    };
    format!("cannot be read: {at_text} holds {what}, not {wanted}")
}

impl<'a> EvalCache<'a> {
    pub(super) fn new(policy: &'a PolicySet, step: &'a Step) -> Self {
        Self {
            policy,
            step,
            slots: Default::default(),
            detectors: [None, None, None],
            doubt: None,
        }
    }

    fn slot(&mut self, path: u32, whole: bool) -> usize {
        if let Some(i) = self
            .slots
            .iter()
            .position(|s| s.path == path && s.whole == whole)
        {
            return i;
        }
        let mut walk = Walk {
            segs: &self.policy.paths[path as usize],
            whole,
            present: false,
            truncated: false,
            out: SmallVec::new(),
        };
        walk.collect(self.step.args(), 0, false);
        self.slots.push(Slot {
            path,
            whole,
            present: walk.present,
            truncated: walk.truncated,
            cands: walk.out,
        });
        self.slots.len() - 1
    }

    /// Whether condition `c` holds, for a rule of polarity `strict` (stronger than allow):
    /// strict, some value in some view satisfies it (in doubt: does); otherwise every value in
    /// both views does (in doubt: does not). No value at all: judged as absent.
    pub(super) fn cond(&mut self, c: &CCond, strict: bool) -> bool {
        let s = self.slot(c.path, c.whole);
        let n = self.slots[s].cands.len();
        if n == 0 {
            // The key is there but holds no value (an empty array): whether it is set depends
            // on who reads it, so a rule stronger than allow matches (fail closed, `exists`
            // included) and an allow rule does not.
            if self.slots[s].present {
                if strict && self.doubt.is_none() {
                    let path = &self.policy.path_texts[self.slots[s].path as usize];
                    self.doubt = Some(format!("args.{path} holds no value to compare"));
                }
                return strict;
            }
            return absent(&c.ops);
        }
        let truncated = self.slots[s].truncated;
        if strict {
            if (0..n).any(|i| (0..2).any(|view| self.ops(&c.ops, s, i, view, strict))) {
                return true;
            }
            if truncated && self.doubt.is_none() {
                let path = &self.policy.path_texts[self.slots[s].path as usize];
                self.doubt = Some(format!(
                    "args.{path} holds more than {MAX_VALUES} values; the rest were not read"
                ));
            }
            truncated
        } else {
            !truncated && (0..n).all(|i| (0..2).all(|view| self.ops(&c.ops, s, i, view, strict)))
        }
    }

    fn ops(&mut self, ops: &[COp], s: usize, i: usize, view: usize, strict: bool) -> bool {
        ops.iter().all(|op| match op {
            COp::Not(inner) => !self.ops(inner, s, i, view, !strict),
            COp::Any(alts) => alts
                .iter()
                .any(|a| self.ops(std::slice::from_ref(a), s, i, view, strict)),
            _ => match self.op(op, s, i, view, strict) {
                Tri::Yes => true,
                Tri::No => false,
                Tri::Unknown(why) => {
                    if self.doubt.is_none() {
                        let path = &self.policy.path_texts[self.slots[s].path as usize];
                        self.doubt = Some(format!("args.{path} {why}"));
                    }
                    strict
                }
            },
        })
    }

    /// One operator on value `i` of slot `s` in view `view`.
    fn op(&mut self, op: &COp, s: usize, i: usize, view: usize, strict: bool) -> Tri {
        let policy = self.policy;
        let path = self.slots[s].path as usize;
        let cand = &mut self.slots[s].cands[i];
        if let Some(at) = cand.blocked {
            return Tri::Unknown(blocked_reason(&policy.paths[path], at, cand.v));
        }
        let doubt = |cand: &Cand<'_>, why: String| {
            if cand.loose {
                Tri::No
            } else {
                Tri::Unknown(why)
            }
        };
        let yes = |b: bool| if b { Tri::Yes } else { Tri::No };
        match op {
            COp::Eq(list) => match cand.v {
                Value::Object(_) | Value::Array(_) => {
                    doubt(cand, "holds an object, not a value to compare".into())
                }
                Value::Null => yes(list.iter().any(|w| w.raw.is_null())),
                Value::Number(n) => {
                    let text = n.to_string();
                    let mut unsure = None;
                    for w in list {
                        let hit = match (&w.raw, &w.num) {
                            (Value::Number(_), Some(th)) => match th.cmp_json(n) {
                                Some(o) => o == Ordering::Equal,
                                None => {
                                    unsure = Some(th.float);
                                    false
                                }
                            },
                            (Value::String(ws), _) if view == 0 => *ws == text,
                            (Value::String(_), _) => w.canon.as_deref() == Some(text.as_str()),
                            _ => false,
                        };
                        if hit {
                            return Tri::Yes;
                        }
                    }
                    match unsure {
                        Some(x) => Tri::Unknown(float_doubt(&text, x)),
                        None => Tri::No,
                    }
                }
                Value::Bool(_) => {
                    let t = cand.text(view).unwrap_or_default();
                    yes(list.iter().any(|w| match &w.raw {
                        Value::Bool(_) => w.raw == *cand.v,
                        Value::String(ws) if view == 0 => *ws == t,
                        Value::String(_) => w.canon.as_deref() == Some(&*t),
                        _ => false,
                    }))
                }
                Value::String(_) => {
                    let t = cand.text(view).unwrap_or_default();
                    yes(list.iter().any(|w| match &w.raw {
                        Value::String(ws) if view == 0 => *ws == t,
                        Value::String(_) => w.canon.as_deref() == Some(&*t),
                        Value::Number(_) => w
                            .num
                            .as_ref()
                            .is_some_and(|th| Decimal::parse(&t).is_some_and(|d| d == th.exact)),
                        Value::Bool(_) => w.canon.as_deref() == Some(&*t),
                        _ => false,
                    }))
                }
            },
            COp::Cmp(cmp, th) => match cand.v {
                Value::Number(n) => match th.cmp_json(n) {
                    Some(o) => yes(cmp.holds(o)),
                    None => Tri::Unknown(float_doubt(&n.to_string(), th.float)),
                },
                Value::String(_) => {
                    let t = cand.text(view).unwrap_or_default();
                    match Decimal::parse(&t) {
                        Some(d) => yes(cmp.holds(d.cmp(&th.exact))),
                        None => doubt(cand, format!("= {} is not a number", text::preview(&t))),
                    }
                }
                Value::Null => doubt(cand, "is null, not a number".into()),
                Value::Bool(_) => doubt(cand, "is a boolean, not a number".into()),
                _ => doubt(cand, "holds an object, not a number".into()),
            },
            COp::Text(idx) => {
                let field = &policy.fields[path];
                let view = if view == 1 && field.text_same && cand.canonical_is_raw() {
                    0
                } else {
                    view
                };
                if cand.text[view].is_none() {
                    let hits = match (cand.text(view), &policy.fields[path].text) {
                        (Some(t), Some(sets)) => Some(sets[view].matches(&t)),
                        _ => None,
                    };
                    cand.text[view] = Some(hits);
                }
                match &cand.text[view] {
                    Some(Some(m)) => yes(m.matched(*idx as usize)),
                    _ if matches!(cand.v, Value::Object(_) | Value::Array(_)) => {
                        doubt(cand, "holds an object, not text".into())
                    }
                    _ => Tri::No,
                }
            }
            COp::Path { idx, absolute } => {
                let Value::String(_) = cand.v else {
                    return doubt(cand, "is not a path (not text)".into());
                };
                let view = if view == 1 && policy.fields[path].path_same && cand.canonical_is_raw()
                {
                    0
                } else {
                    view
                };
                if cand.path[view].is_none() {
                    let t = cand.text(view).unwrap_or_default();
                    let r = match fspath::normalize(&t) {
                        Ok(fspath::Normal::Absolute(p)) => Ok((
                            policy.fields[path].path.as_ref().expect("path globs")[view]
                                .matches(&p),
                            false,
                        )),
                        Ok(fspath::Normal::Relative(p)) => Ok((
                            policy.fields[path].path.as_ref().expect("path globs")[view]
                                .matches(&p),
                            true,
                        )),
                        Err(why) => Err(format!("= {} {why}", text::preview(&t))),
                    };
                    cand.path[view] = Some(r);
                }
                match cand.path[view].as_ref().expect("computed") {
                    Err(why) => Tri::Unknown(why.clone()),
                    Ok((_, true)) if *absolute => {
                        let t = cand.text(view).unwrap_or_default();
                        Tri::Unknown(format!(
                            "= {} is a relative path; its directory is not known",
                            text::preview(&t)
                        ))
                    }
                    Ok((m, _)) => yes(m.matched(*idx as usize)),
                }
            }
            COp::Command(pattern) => {
                if cand.line.is_none() {
                    let line = match cand.v {
                        Value::String(s) => Some(CommandLine::parse(s)),
                        Value::Array(items) => {
                            let words: Option<Vec<&str>> =
                                items.iter().map(Value::as_str).collect();
                            words.map(|w| CommandLine::argv(&w))
                        }
                        _ => None,
                    };
                    match line {
                        Some(l) => cand.line = Some(Box::new(l)),
                        None => {
                            return doubt(
                                cand,
                                "is neither a command line nor an argv array of strings".into(),
                            )
                        }
                    }
                }
                let line = cand.line.as_deref().expect("parsed");
                pattern.eval(line, view == 1, strict)
            }
            COp::Url(pattern) => {
                if !cand.v.is_string() {
                    return doubt(cand, "is not a URL (not text)".into());
                }
                let view = if view == 1 && cand.canonical_is_raw() {
                    0
                } else {
                    view
                };
                let text = cand.text(view).unwrap_or_default();
                let views = cand.url.get_or_insert_with(Default::default);
                let parsed = views[view].get_or_insert_with(|| weburl::parse(&text));
                match pattern.eval(parsed) {
                    Tri::Unknown(_) if cand.loose => Tri::No,
                    t => t,
                }
            }
            // A value is there (a path with none is judged by `absent`). An empty one (`null`,
            // `{}`, blank text) is set to some readers (`"force" in args`) and not to others
            // (`if args.get("force")`): doubt.
            COp::Exists(_) if is_empty(cand.v) => doubt(
                cand,
                "holds an empty value, set to some readers and not to others".into(),
            ),
            COp::Exists(want) => yes(*want),
            // The detectors read their own views (as sent, compatibility form, decoded), so
            // both views of the value give the same answer: computed once.
            COp::Detector(ds) => {
                let v = cand.v;
                let mut found = Some(false);
                for &d in ds {
                    let r =
                        *cand.detected[d as usize].get_or_insert_with(|| match d.scan_json(v) {
                            Scan::Found(_) => Some(true),
                            Scan::Clean => Some(false),
                            Scan::Unscanned => None,
                        });
                    match r {
                        Some(true) => {
                            found = Some(true);
                            break;
                        }
                        None => found = None,
                        Some(false) => {}
                    }
                }
                // Unscanned text is doubt even under a `*` key: a value's kind there is no
                // surprise, but its size is the agent's choice.
                match found {
                    Some(true) => Tri::Yes,
                    Some(false) => Tri::No,
                    None => Tri::Unknown(format!(
                        "holds more text than the detectors read ({} KiB, or too many encodings to decode); the rest was not scanned",
                        MAX_SCAN_BYTES / 1024
                    )),
                }
            }
            COp::Not(_) | COp::Any(_) => unreachable!("handled by ops"),
        }
    }

    /// Whether any of `ds` finds something in the step's args, for a rule of polarity
    /// `strict` (stronger than allow). Args with more text than the detectors read
    /// ([`MAX_SCAN_BYTES`]) and nothing found in what was read are doubt: strict, the rule
    /// matches (and says why); otherwise it does not.
    pub(super) fn detectors(&mut self, ds: &[Detector], strict: bool) -> bool {
        let mut unscanned = None;
        for &d in ds {
            match self.scan(d) {
                Scan::Found(_) => return true,
                Scan::Unscanned => unscanned = unscanned.or(Some(d)),
                Scan::Clean => {}
            }
        }
        match unscanned {
            Some(d) if strict => {
                self.doubt.get_or_insert_with(|| {
                    format!(
                        "detector {} read only the first {} KiB of the args' text; the rest was not scanned",
                        d.name(),
                        MAX_SCAN_BYTES / 1024
                    )
                });
                true
            }
            _ => false,
        }
    }

    /// What detector `d` finds in the step's args (memoized per step).
    fn scan(&mut self, d: Detector) -> &Scan {
        let args = self.step.args();
        self.detectors[d as usize].get_or_insert_with(|| d.scan_json(args))
    }
}

/// Why a JSON float cannot be compared with a rule's number `x`.
fn float_doubt(value: &str, x: f64) -> String {
    format!(
        "= {value} is a JSON number with a fraction or exponent, read rounded, too close to {x} to compare (send the number as decimal text to compare it exactly)"
    )
}

/// Operators on a path with no value (a missing key): only `exists: false` holds, and `not` of what does not (there is nothing to doubt, so polarity
/// does not matter).
fn absent(ops: &[COp]) -> bool {
    ops.iter().all(|op| match op {
        COp::Exists(want) => !*want,
        COp::Not(inner) => !absent(inner),
        COp::Any(alts) => alts.iter().any(|a| absent(std::slice::from_ref(a))),
        _ => false,
    })
}

/// Whether `v` holds nothing, which `exists` reads as doubt: `null`, `[]`, `{}`, or text that
/// is empty in canonical form (`""`, only whitespace, control or invisible characters, as
/// `ticket=` or a bare `?force` in a query string gives).
fn is_empty(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Array(items) => items.is_empty(),
        Value::Object(map) => map.is_empty(),
        Value::String(s) => text::canonical(s).is_empty(),
        Value::Number(_) | Value::Bool(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_handle_weekdays_and_midnight_wrap() {
        // 2026-11-23 is a Monday.
        let monday_10h = 1_795_392_000_000 + 10 * 3_600_000;
        let w = TimeWindow {
            days_mask: 0x1f,
            start_min: 9 * 60,
            end_min: 17 * 60,
        };
        assert!(in_window(&w, monday_10h));
        assert!(!in_window(&w, monday_10h + 8 * 3_600_000));
        assert!(!in_window(&w, monday_10h - 2 * 86_400_000), "Saturday");
        let night = TimeWindow {
            days_mask: 1,
            start_min: 22 * 60,
            end_min: 6 * 60,
        };
        assert!(
            in_window(&night, monday_10h + 13 * 3_600_000),
            "Monday 23:00"
        );
        assert!(
            in_window(&night, monday_10h + 14 * 3_600_000 + 30 * 60_000),
            "Tuesday 00:30 belongs to Monday"
        );
        assert!(
            !in_window(&night, monday_10h - 10 * 3_600_000 + 30 * 60_000),
            "Monday 00:30 belongs to Sunday"
        );
    }
}
