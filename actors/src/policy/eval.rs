//! Evaluation helpers: the per-step memo of args values, regex-set results and detector
//! results, time windows, and JSON comparison.

use std::borrow::Cow;

use regex::SetMatches;
use serde_json::Value;
use smallvec::SmallVec;

use super::compile::{CCond, COp, CSeg};
use super::detect::Detector;
use super::model::TimeWindow;
use super::shell::{CommandLine, Tri};
use super::{fspath, text, PolicySet};
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

pub(super) fn json_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            match (x.as_i64(), y.as_i64(), x.as_u64(), y.as_u64()) {
                // Integers compare exactly (f64 would merge neighbours above 2^53).
                (Some(i), Some(j), _, _) => i == j,
                (_, _, Some(i), Some(j)) => i == j,
                _ => x.as_f64() == y.as_f64(),
            }
        }
        _ => a == b,
    }
}

/// A decimal number written as text: optional surrounding ASCII whitespace, an optional sign,
/// digits with an optional decimal point, an optional exponent (`5000`, `"5000.00"`,
/// `" 5e3 "`, `-.5`). Not numbers: `inf`, `NaN`, hex, `1_000`, `5,000`, `$5`, `5 USD`.
pub(super) fn decimal(text: &str) -> Option<f64> {
    let t = text.trim_matches(|c: char| c.is_ascii_whitespace());
    let b = t.as_bytes();
    let mut i = usize::from(matches!(b.first(), Some(b'+' | b'-')));
    let digits = |i: &mut usize| {
        let start = *i;
        while b.get(*i).is_some_and(u8::is_ascii_digit) {
            *i += 1;
        }
        *i - start
    };
    let mut n = digits(&mut i);
    if b.get(i) == Some(&b'.') {
        i += 1;
        n += digits(&mut i);
    }
    if n == 0 {
        return None;
    }
    if matches!(b.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(b.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        if digits(&mut i) == 0 {
            return None;
        }
    }
    if i != b.len() {
        return None;
    }
    t.parse::<f64>().ok()
}

/// A decimal string equal to a JSON number? Integers compare exactly.
fn decimal_eq(text: &str, n: &serde_json::Number) -> bool {
    let t = text.trim_matches(|c: char| c.is_ascii_whitespace());
    let t = t.strip_prefix('+').unwrap_or(t);
    if let (Ok(i), Some(j)) = (t.parse::<i64>(), n.as_i64()) {
        return i == j;
    }
    if let (Ok(i), Some(j)) = (t.parse::<u64>(), n.as_u64()) {
        return i == j;
    }
    decimal(t).is_some_and(|x| Some(x) == n.as_f64())
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
}

impl<'a> Cand<'a> {
    fn new(v: &'a Value, loose: bool) -> Self {
        Cand {
            v,
            loose,
            canon: None,
            text: [None, None],
            path: [None, None],
            line: None,
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
    cands: SmallVec<[Cand<'a>; 2]>,
}

/// Per-evaluation memo: the values at each path, set results per value and view, parsed
/// command lines, detector results; and the first doubt met while matching a rule.
pub(super) struct EvalCache<'a> {
    policy: &'a PolicySet,
    step: &'a Step,
    slots: SmallVec<[Slot<'a>; 4]>,
    detectors: [Option<bool>; 3],
    /// Why a rule matched although it could not tell (cleared per rule).
    pub(super) doubt: Option<String>,
}

/// Most values one path may collect in one step (the step's own bound is larger; beyond this a
/// wildcard path stops collecting and says so).
const MAX_VALUES: usize = 1_024;

fn collect<'a>(
    v: &'a Value,
    segs: &[CSeg],
    whole: bool,
    loose: bool,
    present: &mut bool,
    out: &mut SmallVec<[Cand<'a>; 2]>,
) {
    if out.len() >= MAX_VALUES {
        return;
    }
    let Some((seg, rest)) = segs.split_first() else {
        *present = true;
        match v {
            Value::Array(items) if !whole => {
                for item in items {
                    collect(item, segs, whole, loose, present, out);
                }
            }
            _ => out.push(Cand::new(v, loose)),
        }
        return;
    };
    match (seg, v) {
        (CSeg::Key { raw, canon }, Value::Object(m)) => {
            for (k, val) in m {
                if k == raw || text::same_canonical(k, canon) {
                    collect(val, rest, whole, loose, present, out);
                }
            }
        }
        // A key meets an array: each element.
        (CSeg::Key { .. }, Value::Array(items)) => {
            for item in items {
                collect(item, segs, whole, loose, present, out);
            }
        }
        (CSeg::Index(i), Value::Array(items)) => {
            if let Some(item) = items.get(*i) {
                collect(item, rest, whole, loose, present, out);
            }
        }
        (CSeg::AnyIndex, Value::Array(items)) => {
            for item in items {
                collect(item, rest, whole, loose, present, out);
            }
        }
        (CSeg::AnyKey, Value::Object(m)) => {
            for val in m.values() {
                collect(val, rest, whole, true, present, out);
            }
        }
        _ => {}
    }
}

impl<'a> EvalCache<'a> {
    pub(super) fn new(policy: &'a PolicySet, step: &'a Step) -> Self {
        Self {
            policy,
            step,
            slots: Default::default(),
            detectors: [None; 3],
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
        let mut present = false;
        let mut cands = SmallVec::new();
        collect(
            self.step.args(),
            &self.policy.paths[path as usize],
            whole,
            false,
            &mut present,
            &mut cands,
        );
        self.slots.push(Slot {
            path,
            whole,
            present,
            cands,
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
            let present = self.slots[s].present;
            // The key is there but holds no value (an empty array): a rule stronger than
            // allow cannot tell what it would have said, so it matches (fail closed).
            if present && strict && !c.ops.iter().all(|o| matches!(o, COp::Exists(_))) {
                if self.doubt.is_none() {
                    let path = &self.policy.path_texts[self.slots[s].path as usize];
                    self.doubt = Some(format!("args.{path} holds no value to compare"));
                }
                return true;
            }
            return absent(&c.ops, present);
        }
        if strict {
            (0..n).any(|i| (0..2).any(|view| self.ops(&c.ops, s, i, view, strict)))
        } else {
            (0..n).all(|i| (0..2).all(|view| self.ops(&c.ops, s, i, view, strict)))
        }
    }

    fn ops(&mut self, ops: &[COp], s: usize, i: usize, view: usize, strict: bool) -> bool {
        ops.iter().all(|op| match op {
            COp::Not(inner) => !self.ops(inner, s, i, view, !strict),
            COp::Any(alts) => alts
                .iter()
                .any(|a| self.ops(std::slice::from_ref(a), s, i, view, strict)),
            COp::Exists(want) => self.slots[s].present == *want,
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
                    yes(list.iter().any(|w| match &w.raw {
                        Value::Number(_) => json_eq(cand.v, &w.raw),
                        Value::String(ws) if view == 0 => *ws == text,
                        Value::String(_) => w.canon.as_deref() == Some(text.as_str()),
                        _ => false,
                    }))
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
                        Value::Number(n) => decimal_eq(&t, n),
                        Value::Bool(_) => w.canon.as_deref() == Some(&*t),
                        _ => false,
                    }))
                }
            },
            COp::Cmp(f, x) => match cand.v {
                Value::Number(n) => yes(n.as_f64().is_some_and(|v| f(v, *x))),
                Value::String(_) => {
                    let t = cand.text(view).unwrap_or_default();
                    match decimal(&t) {
                        Some(v) => yes(f(v, *x)),
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
            COp::Exists(_) | COp::Not(_) | COp::Any(_) => unreachable!("handled by ops"),
        }
    }

    pub(super) fn detector(&mut self, d: Detector) -> bool {
        let slot = &mut self.detectors[d as usize];
        *slot.get_or_insert_with(|| d.find_in_json(self.step.args()).is_some())
    }
}

/// Operators on a path with no value: only `exists: false` holds, and `not` of what does not
/// (there is nothing to doubt, so polarity does not matter).
fn absent(ops: &[COp], present: bool) -> bool {
    ops.iter().all(|op| match op {
        COp::Exists(want) => present == *want,
        COp::Not(inner) => !absent(inner, present),
        COp::Any(alts) => alts
            .iter()
            .any(|a| absent(std::slice::from_ref(a), present)),
        _ => false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimal_strings_are_numbers_and_nothing_else_is() {
        for (t, v) in [
            ("5000", 5000.0),
            ("5000.00", 5000.0),
            (" 5e3 ", 5000.0),
            ("+1", 1.0),
            ("-.5", -0.5),
            ("5.", 5.0),
            ("1E-2", 0.01),
        ] {
            assert_eq!(decimal(t), Some(v), "{t}");
        }
        for t in [
            "", " ", "inf", "NaN", "0x10", "1_000", "5,000", "$5", "5 USD", "1e", ".", "--1",
            "5e3.0",
        ] {
            assert_eq!(decimal(t), None, "{t}");
        }
        assert!(decimal_eq(
            "9007199254740993",
            &serde_json::Number::from(9007199254740993u64)
        ));
        assert!(!decimal_eq(
            "9007199254740992",
            &serde_json::Number::from(9007199254740993u64)
        ));
    }

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
