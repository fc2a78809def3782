//! Built-in content detectors that policy rules use to inspect a step's arguments (and tool
//! outputs): [`Detector::Pii`], [`Detector::Secrets`] and [`Detector::PromptInjection`].
//!
//! Every detector is a pure function of its input: regexes are compiled once per process
//! (lazily, on first use), each scan is linear in the input, and no input makes a detector
//! panic. [`Detector::find`] reports the earliest hit in a string; [`Detector::find_in_json`]
//! walks a JSON value (object keys and values, array items, integers rendered in decimal) and
//! reads at most [`MAX_SCAN_BYTES`] bytes of text in total.

mod pii;
mod prompt_injection;
mod secrets;
mod util;

use serde_json::Value;

/// Upper bound on the bytes of text [`Detector::find_in_json`] reads from one JSON value.
///
/// Text past the bound is not scanned (a string that straddles it is scanned up to the bound,
/// cut back to a character boundary).
pub const MAX_SCAN_BYTES: usize = 1 << 20;

/// A built-in detector.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Detector {
    /// Personal data: emails, phone numbers, payment cards (Luhn-checked), IBANs
    /// (mod-97-checked), US SSNs.
    Pii,
    /// Credentials: cloud and API keys, tokens, private keys, passwords in assignments and
    /// URLs, and unlabelled high-entropy tokens.
    Secrets,
    /// Instructions aimed at the model: overrides, role hijacks, fake role markers and
    /// hidden instructions in content.
    PromptInjection,
}

/// One detection: which detector fired, what it found, and where.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hit {
    /// The detector that fired.
    pub detector: Detector,
    /// What was found, e.g. `"email"`, `"aws_access_key"`, `"override"`.
    pub kind: &'static str,
    /// Byte offset of the start of the match in the string that hit.
    pub start: usize,
    /// Byte offset one past the end of the match in the string that hit.
    pub end: usize,
}

impl Detector {
    /// Every built-in detector.
    pub const ALL: [Detector; 3] = [Detector::Pii, Detector::Secrets, Detector::PromptInjection];

    /// The detector's name as policy rules spell it: `"pii"`, `"secrets"`, `"prompt_injection"`.
    pub const fn name(self) -> &'static str {
        match self {
            Detector::Pii => "pii",
            Detector::Secrets => "secrets",
            Detector::PromptInjection => "prompt_injection",
        }
    }

    /// The detector with this [`name`](Self::name), if any.
    pub fn from_name(name: &str) -> Option<Detector> {
        Self::ALL.into_iter().find(|d| d.name() == name)
    }

    /// First hit in `text`, if any.
    ///
    /// "First" is the hit that starts earliest; on a tie the more specific kind wins. The
    /// whole of `text` is scanned (in linear time); bound the input yourself, or use
    /// [`find_in_json`](Self::find_in_json), if it may be huge.
    pub fn find(self, text: &str) -> Option<Hit> {
        let found = match self {
            Detector::Pii => pii::find(text),
            Detector::Secrets => secrets::find(text),
            Detector::PromptInjection => prompt_injection::find(text),
        };
        found.map(|(kind, start, end)| Hit {
            detector: self,
            kind,
            start,
            end,
        })
    }

    /// First hit in any string inside a JSON value (object keys and values, array items,
    /// recursively), visiting at most [`MAX_SCAN_BYTES`] bytes of text in total.
    ///
    /// Strings are visited depth-first in document order (object keys before their values).
    /// Integers are scanned as their decimal rendering (so a card number sent as a JSON
    /// number is still seen); floats, booleans and nulls are skipped. Offsets in the returned
    /// [`Hit`] are into the string (or integer rendering) that hit. Deeply nested values are
    /// walked with an explicit stack, never recursion.
    pub fn find_in_json(self, value: &Value) -> Option<Hit> {
        enum Item<'a> {
            Value(&'a Value),
            Key(&'a str),
        }
        let mut budget = MAX_SCAN_BYTES;
        let mut stack = vec![Item::Value(value)];
        while let Some(item) = stack.pop() {
            if budget == 0 {
                return None;
            }
            let value = match item {
                Item::Key(key) => {
                    if let Some(hit) = self.find_budgeted(key, &mut budget) {
                        return Some(hit);
                    }
                    continue;
                }
                Item::Value(value) => value,
            };
            match value {
                Value::String(s) => {
                    if let Some(hit) = self.find_budgeted(s, &mut budget) {
                        return Some(hit);
                    }
                }
                Value::Number(n) => {
                    let mut buf = [0u8; 20];
                    let digits = if let Some(u) = n.as_u64() {
                        util::format_u64(u, &mut buf)
                    } else if let Some(i) = n.as_i64() {
                        // Negative: the sign is not part of any pattern we look for.
                        util::format_u64(i.unsigned_abs(), &mut buf)
                    } else {
                        continue;
                    };
                    if let Some(hit) = self.find_budgeted(digits, &mut budget) {
                        return Some(hit);
                    }
                }
                Value::Array(items) => stack.extend(items.iter().rev().map(Item::Value)),
                Value::Object(map) => {
                    for (k, v) in map.iter().rev() {
                        stack.push(Item::Value(v));
                        stack.push(Item::Key(k));
                    }
                }
                Value::Null | Value::Bool(_) => {}
            }
        }
        None
    }

    /// Scans `text`, truncated to what is left of `budget`, and charges the budget.
    fn find_budgeted(self, text: &str, budget: &mut usize) -> Option<Hit> {
        let take = if text.len() <= *budget {
            *budget -= text.len();
            text.len()
        } else {
            let cut = util::floor_char_boundary(text, *budget);
            *budget = 0;
            cut
        };
        self.find(&text[..take])
    }
}

#[cfg(test)]
mod tests;
