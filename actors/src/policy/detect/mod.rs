//! Built-in content detectors that policy rules use to inspect a step's arguments (and tool
//! outputs): [`Detector::Pii`], [`Detector::Secrets`] and [`Detector::PromptInjection`].
//!
//! Every detector is a pure function of its input: regexes are compiled once per process
//! (lazily, on first use), each scan is linear in the input, and no input makes a detector
//! panic. [`Detector::find`] reports the earliest hit in a string as sent.
//!
//! [`Detector::scan_json`] (what policy rules use) walks a JSON value (object keys and values,
//! array items, integers and integral floats rendered in decimal) and reads each text in three
//! views, so that an encoding or a spelling cannot hide what a detector looks for:
//! - as sent;
//! - folded: its compatibility form (below) with HTML character references resolved and
//!   Cyrillic and Greek look-alikes read as Latin, when that differs; and for the injection
//!   detector's phrases only, that with Markdown marks dropped and `-` between letters read
//!   as a space (`fold`);
//! - in its compatibility form ([`text::compatible`]: invisible characters removed, NFKC, so
//!   `ＡＫＩＡ…`, `alice@exa\u{200b}mple.com` and `４１１１ １１１１ …` are seen), when that
//!   differs;
//! - the encodings it carries, decoded (bytes that are not UTF-8 replaced), as sent and in
//!   compatibility form: base64 runs (standard or URL-safe alphabet, padding optional, line
//!   breaks allowed, at least 16 characters, at each of four alignments), hex runs (at least
//!   16 bytes, contiguous or pairs set apart by a space, a colon or `\x`) and `%XX` escapes;
//!   and, within a view that decoded to valid UTF-8, its encodings once more (base64 in
//!   base64, hex of base64); deeper nesting is not decoded.
//!
//! It reads at most [`MAX_SCAN_BYTES`] bytes of the value's text (as sent; the derived views
//! of what was read cost no budget, and are at most a constant factor larger). **A value with
//! more text than that is not clean but unscanned** ([`Scan::Unscanned`]): policy rules read
//! it as doubt, so a deny, halt or require_approval rule on the detector matches it (fail
//! closed) and an allow rule does not.

mod decode;
mod fold;
mod pii;
mod prompt_injection;
mod secrets;
mod util;

use serde_json::{Number, Value};

use super::text;

/// Upper bound on the bytes of text [`Detector::scan_json`] reads from one JSON value.
///
/// Text past the bound is not scanned (a string that straddles it is scanned up to the bound,
/// cut back to a character boundary), and the scan says so: [`Scan::Unscanned`].
pub const MAX_SCAN_BYTES: usize = 1 << 20;

/// What [`Detector::scan_json`] found in a JSON value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Scan {
    /// A hit (the first one in document order).
    Found(Hit),
    /// All text was read and nothing was found.
    Clean,
    /// Nothing was found in the first [`MAX_SCAN_BYTES`] bytes of text, and the rest was not
    /// read: the value may hold anything (doubt).
    Unscanned,
}

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

    /// As [`find`](Self::find), without the hits a random id would give: for `secrets`, no
    /// `high_entropy` (a vendor prefix, a shape or a label must name the credential); the
    /// other detectors as `find`. For text that is random by nature (protocol ids, sealed
    /// blobs) where a hit of `find` would be noise.
    pub fn find_labelled(self, text: &str) -> Option<Hit> {
        if self != Detector::Secrets {
            return self.find(text);
        }
        secrets::find_labelled(text).map(|(kind, start, end)| Hit {
            detector: self,
            kind,
            start,
            end,
        })
    }

    /// First hit in any string inside a JSON value, in any view (see the module
    /// documentation); `None` both when the value is clean and when it was too large to scan
    /// to the end. Prefer [`scan_json`](Self::scan_json), which tells the two apart.
    pub fn find_in_json(self, value: &Value) -> Option<Hit> {
        match self.scan_json(value) {
            Scan::Found(hit) => Some(hit),
            Scan::Clean | Scan::Unscanned => None,
        }
    }

    /// Scans every text inside a JSON value (object keys and values, array items,
    /// recursively) in every view (see the module documentation), reading at most
    /// [`MAX_SCAN_BYTES`] bytes of text in total.
    ///
    /// Texts are visited depth-first in document order (object keys before their values).
    /// Integers, and floats with no fraction (`4111111111111111.0`), are scanned as their
    /// decimal digits (so a card number sent as a JSON number is still seen); other floats,
    /// booleans and nulls are skipped. Offsets in a [`Hit`] are into the view that hit (the
    /// string as sent, its compatibility form, or decoded base64). Deeply nested values are
    /// walked with an explicit stack, never recursion.
    pub fn scan_json(self, value: &Value) -> Scan {
        enum Item<'a> {
            Value(&'a Value),
            Key(&'a str),
        }
        let mut budget = MAX_SCAN_BYTES;
        let mut derived = MAX_DERIVED_BYTES;
        let mut stack = vec![Item::Value(value)];
        while let Some(item) = stack.pop() {
            let mut scan = |t: &str| self.scan_budgeted(t, &mut budget, &mut derived);
            let scan = match item {
                Item::Key(key) => scan(key),
                Item::Value(Value::String(s)) => scan(s),
                Item::Value(Value::Number(n)) => {
                    let mut buf = [0u8; 20];
                    match digits(n, &mut buf) {
                        Some(d) => scan(d),
                        None => Scan::Clean,
                    }
                }
                Item::Value(Value::Array(items)) => {
                    stack.extend(items.iter().rev().map(Item::Value));
                    Scan::Clean
                }
                Item::Value(Value::Object(map)) => {
                    for (k, v) in map.iter().rev() {
                        stack.push(Item::Value(v));
                        stack.push(Item::Key(k));
                    }
                    Scan::Clean
                }
                Item::Value(Value::Null | Value::Bool(_)) => Scan::Clean,
            };
            if scan != Scan::Clean {
                return scan;
            }
        }
        Scan::Clean
    }

    /// Scans `text`, truncated to what is left of `budget` (bytes), in every view, and charges
    /// the budget; the derived views are charged to `derived`. [`Scan::Unscanned`] when
    /// nothing was found and part of `text` was cut, or a view was left unread for want of
    /// `derived`.
    fn scan_budgeted(self, text: &str, budget: &mut usize, derived: &mut usize) -> Scan {
        let cut = text.len() > *budget;
        let take = if cut {
            util::floor_char_boundary(text, *budget)
        } else {
            text.len()
        };
        *budget -= if cut { *budget } else { take };
        let mut work = Work {
            left: derived,
            short: false,
        };
        let hit = self.find_in_views(&text[..take], &mut work);
        match hit {
            Some(hit) => Scan::Found(hit),
            None if cut || work.short => Scan::Unscanned,
            None => Scan::Clean,
        }
    }

    /// First hit in `text` as sent, in its compatibility form, or in what the encodings it
    /// carries decode to ([`decode::decoded_views`]).
    fn find_in_views(self, text: &str, work: &mut Work<'_>) -> Option<Hit> {
        if let Some(hit) = self.find_as_sent_or_derived(text, work) {
            return Some(hit);
        }
        for d in decode::decoded_views(text) {
            if !work.charge(d.len() + VIEW_OVERHEAD_BYTES) {
                return None;
            }
            if let Some(hit) = self.find(&d) {
                return Some(hit);
            }
            // The derived forms of a view that did not decode cleanly (the noise of a wrong
            // alignment, binary data) are not read: its stray letters of other scripts would
            // make them differ from it at the cost of reading it twice more, for nothing.
            if d.contains('\u{fffd}') {
                continue;
            }
            if let Some(hit) = self.find_derived(&d, work) {
                return Some(hit);
            }
        }
        None
    }

    /// First hit in `text` as sent or in its derived forms ([`Self::find_derived`]).
    fn find_as_sent_or_derived(self, text: &str, work: &mut Work<'_>) -> Option<Hit> {
        self.find(text).or_else(|| self.find_derived(text, work))
    }

    /// First hit in `text`'s compatibility form, where it differs, in the folded view of that
    /// ([`fold::folded`]: HTML references, look-alike letters) and, for injections, in its
    /// words ([`fold::words`]: Markdown marks and word joiners, phrases only); each charged to
    /// `work`.
    fn find_derived(self, text: &str, work: &mut Work<'_>) -> Option<Hit> {
        let compatible = text::compatible(text);
        if let std::borrow::Cow::Owned(c) = &compatible {
            if c != text {
                if !work.charge(c.len()) {
                    return None;
                }
                if let Some(hit) = self.find(c) {
                    return Some(hit);
                }
            }
        }
        let folded = fold::folded(&compatible);
        if let Some(f) = &folded {
            if !work.charge(f.len()) {
                return None;
            }
            if let Some(hit) = self.find(f) {
                return Some(hit);
            }
        }
        if self != Detector::PromptInjection {
            return None;
        }
        let words = fold::words(folded.as_deref().unwrap_or(&compatible))?;
        if !work.charge(words.len()) {
            return None;
        }
        prompt_injection::find_phrase(&words).map(|(kind, start, end)| Hit {
            detector: self,
            kind,
            start,
            end,
        })
    }
}

/// Upper bound on the bytes of derived views (compatibility forms, folded views, decoded
/// encodings) one [`Detector::scan_json`] reads besides the text as sent: eight times
/// [`MAX_SCAN_BYTES`]. Text whose views would need more is not clean but unscanned (doubt),
/// so that no input costs a decision more than a bounded amount of work.
pub const MAX_DERIVED_BYTES: usize = 8 * MAX_SCAN_BYTES;

/// What each decoded view costs the derived-view budget besides its bytes: reading a view has
/// a fixed cost (the detector's passes, the forms derived from it), so a text of many short
/// encodings cannot cost more than a text of few long ones.
const VIEW_OVERHEAD_BYTES: usize = 64;

/// What is left of the derived-view budget, and whether a view went unread for want of it.
struct Work<'a> {
    left: &'a mut usize,
    short: bool,
}

impl Work<'_> {
    /// Charges `bytes`; false (and marks the scan short) when they do not fit.
    fn charge(&mut self, bytes: usize) -> bool {
        if bytes > *self.left {
            self.short = true;
            return false;
        }
        *self.left -= bytes;
        true
    }
}

/// The decimal digits of an integer, or of a float with no fraction (sign dropped: it is
/// part of no pattern), rendered into `buf`; `None` for other floats.
fn digits<'b>(n: &Number, buf: &'b mut [u8; 20]) -> Option<&'b str> {
    if let Some(u) = n.as_u64() {
        return Some(util::format_u64(u, buf));
    }
    if let Some(i) = n.as_i64() {
        return Some(util::format_u64(i.unsigned_abs(), buf));
    }
    let f = n.as_f64()?.abs();
    // `u64::MAX as f64` is 2^64, the first float too large for a u64.
    (f.fract() == 0.0 && f < u64::MAX as f64).then(|| util::format_u64(f as u64, buf))
}

#[cfg(test)]
mod tests;
