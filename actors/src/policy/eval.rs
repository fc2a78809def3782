//! Evaluation helpers: the per-step memo of args values, regex-set results and detector
//! results, time windows, and JSON comparison.

use serde_json::Value;

use super::detect::Detector;
use super::model::{PathSeg, TimeWindow};
use super::PolicySet;
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

fn lookup<'v>(mut v: &'v Value, path: &[PathSeg]) -> Option<&'v Value> {
    for seg in path {
        v = match (seg, v) {
            (PathSeg::Key(k), Value::Object(m)) => m.get(k)?,
            (PathSeg::Index(i), Value::Array(a)) => a.get(*i)?,
            _ => return None,
        };
    }
    Some(v)
}

/// Per-evaluation memo: values at paths, regex-set results per field, detector results.
pub(super) struct EvalCache<'a> {
    policy: &'a PolicySet,
    step: &'a Step,
    values: smallvec::SmallVec<[(u32, Option<&'a Value>); 4]>,
    sets: smallvec::SmallVec<[(u32, Option<regex::SetMatches>); 2]>,
    detectors: [Option<bool>; 3],
}

impl<'a> EvalCache<'a> {
    pub(super) fn new(policy: &'a PolicySet, step: &'a Step) -> Self {
        Self {
            policy,
            step,
            values: Default::default(),
            sets: Default::default(),
            detectors: [None; 3],
        }
    }

    pub(super) fn value(&mut self, path: u32) -> Option<&'a Value> {
        if let Some((_, v)) = self.values.iter().find(|(p, _)| *p == path) {
            return *v;
        }
        let v = lookup(self.step.args(), &self.policy.paths[path as usize]);
        self.values.push((path, v));
        v
    }

    pub(super) fn set_hit(&mut self, field: u32, idx: u32) -> bool {
        if let Some((_, m)) = self.sets.iter().find(|(f, _)| *f == field) {
            return m.as_ref().is_some_and(|m| m.matched(idx as usize));
        }
        let Some(Some(f)) = self.policy.fields.get(field as usize) else {
            return false;
        };
        // Regexes and globs see strings as they are, numbers and booleans as their JSON text;
        // a missing value, an object or an array never matches.
        let text: Option<std::borrow::Cow<'_, str>> = match self.value(field) {
            Some(Value::String(s)) => Some(s.as_str().into()),
            Some(Value::Number(n)) => Some(n.to_string().into()),
            Some(Value::Bool(b)) => Some(if *b { "true" } else { "false" }.into()),
            _ => None,
        };
        let m = text.map(|t| f.set.matches(&t));
        let hit = m.as_ref().is_some_and(|m| m.matched(idx as usize));
        self.sets.push((field, m));
        hit
    }

    pub(super) fn detector(&mut self, d: Detector) -> bool {
        let slot = &mut self.detectors[d as usize];
        *slot.get_or_insert_with(|| d.find_in_json(self.step.args()).is_some())
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
