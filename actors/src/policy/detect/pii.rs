//! The `pii` detector: emails, phone numbers, payment cards, IBANs, US SSNs.
//!
//! Kinds: `email`, `phone`, `card`, `iban`, `ssn` (`ddd-dd-dddd`, or `ddd dd dddd` right
//! after an SSN label). Numbers are validated, not just shaped:
//! cards must pass the Luhn check and carry a known issuer prefix, IBANs must have the
//! registered length for their country and pass the ISO 7064 mod-97 check, SSNs must not use
//! a never-issued area, group or serial. Phone numbers need phone formatting (a leading `+`
//! country code, `(555) 123-4567`, `555-123-4567`, `555.123.4567`, or a 0-prefixed national
//! number in separated groups): a bare run of digits is never a phone number, so order ids,
//! timestamps and version strings do not hit.

use std::sync::LazyLock;

use regex::Regex;

use super::util::{byte_at, byte_before, earliest, floor_char_boundary, is_word};

type Found = Option<(&'static str, usize, usize)>;

fn re(pattern: &str) -> Regex {
    Regex::new(pattern).expect("built-in pii pattern compiles")
}

static EMAIL: LazyLock<Regex> = LazyLock::new(|| {
    re(
        r"[A-Za-z0-9._%+\-]+@[A-Za-z0-9](?:[A-Za-z0-9\-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9\-]*[A-Za-z0-9])?)*\.[A-Za-z]{2,24}",
    )
});
/// `+CC` then 1 to 6 digit groups separated by at most one of space, dot, dash (parentheses
/// allowed around a group). The digit count is checked afterwards (8 to 15, as in E.164).
static PHONE_INTL: LazyLock<Regex> =
    LazyLock::new(|| re(r"\+[1-9][0-9]{0,3}(?:[ .\-]?\(?[0-9]{1,5}\)?){1,6}"));
/// North American formats with a consistent separator.
static PHONE_NANP: LazyLock<Regex> = LazyLock::new(|| {
    re(
        r"\([2-9][0-9]{2}\) ?[0-9]{3}[ .\-][0-9]{4}|[2-9][0-9]{2}-[0-9]{3}-[0-9]{4}|[2-9][0-9]{2}\.[0-9]{3}\.[0-9]{4}",
    )
});
/// National numbers with a trunk `0` in separated groups: French-style pairs
/// (`01 42 68 53 00`), an area code and two groups of 3-4 (UK `020 7946 0958`), or an area
/// code and one group of 5-7 (UK mobile `07700 900123`); 10 or 11 digits in total, checked
/// afterwards.
static PHONE_NATIONAL: LazyLock<Regex> = LazyLock::new(|| {
    re(
        r"0[1-9](?:[ .\-][0-9]{2}){4}|0[1-9][0-9]{1,3}[ \-][0-9]{3,4}[ \-][0-9]{3,4}|0[1-9][0-9]{2,4}[ \-][0-9]{5,7}",
    )
});
/// Runs of digits with single space or dash separators; windows are validated afterwards.
static DIGIT_RUN: LazyLock<Regex> = LazyLock::new(|| re(r"[0-9](?:[ \-]?[0-9]){12,}"));
/// Start of an IBAN: country code and check digits.
static IBAN_START: LazyLock<Regex> = LazyLock::new(|| re(r"[A-Z]{2}[0-9]{2}"));
static SSN: LazyLock<Regex> = LazyLock::new(|| re(r"[0-9]{3}-[0-9]{2}-[0-9]{4}"));
/// `ddd dd dddd`: only counts as an SSN with an SSN label shortly before it.
static SSN_SPACED: LazyLock<Regex> = LazyLock::new(|| re(r"[0-9]{3} [0-9]{2} [0-9]{4}"));
static SSN_LABEL: LazyLock<Regex> =
    LazyLock::new(|| re(r"(?i)(?-u:\b)(?:ssn|social\s+security|ss\s*#|tin|tax\s+id)(?-u:\b)"));

/// One pass that tells whether any rule could match at all: the union of the rules' base
/// patterns. Benign text (the common case) is rejected in a single scan.
static GATE: LazyLock<Regex> = LazyLock::new(|| {
    let parts = [
        &EMAIL,
        &PHONE_INTL,
        &PHONE_NANP,
        &PHONE_NATIONAL,
        &DIGIT_RUN,
        &IBAN_START,
        &SSN,
        &SSN_SPACED,
    ];
    re(&parts.map(|r| format!("(?:{})", r.as_str())).join("|"))
});

pub(super) fn find(text: &str) -> Found {
    let bytes = text.as_bytes();
    let has_digit = bytes.iter().any(u8::is_ascii_digit);
    if !(has_digit || bytes.contains(&b'@')) || !GATE.is_match(text) {
        return None;
    }
    let mut best = None;
    if bytes.contains(&b'@') {
        earliest(&mut best, find_email(text));
    }
    if has_digit {
        earliest(&mut best, find_phone(text));
        earliest(&mut best, find_card(text));
        earliest(&mut best, find_iban(text));
        earliest(&mut best, find_ssn(text));
    }
    best
}

fn find_email(text: &str) -> Found {
    for m in EMAIL.find_iter(text) {
        let (start, end) = (m.start(), m.end());
        // Must not continue a longer token on either side.
        if byte_at(text, end).is_some_and(|b| b.is_ascii_alphanumeric() || b == b'-') {
            continue;
        }
        // scp-style remotes (`git@github.com:org/repo`) are hosts, not mailboxes.
        let local = &m.as_str()[..m.as_str().find('@').unwrap_or(0)];
        let remote_path = byte_at(text, end) == Some(b':')
            && byte_at(text, end + 1).is_some_and(|b| !b.is_ascii_whitespace());
        if remote_path || local.eq_ignore_ascii_case("git") {
            continue;
        }
        // A local part must not start with a dot (also skips `../x@y.z`-like paths).
        if local.starts_with('.') {
            continue;
        }
        return Some(("email", start, end));
    }
    None
}

fn digits_in(s: &str) -> usize {
    s.bytes().filter(u8::is_ascii_digit).count()
}

/// The character before a number must not make it part of a larger token.
fn clean_left(text: &str, start: usize) -> bool {
    !byte_before(text, start).is_some_and(|b| is_word(b) || matches!(b, b'.' | b'-' | b'+' | b'/'))
}

/// The character after a number must not make it part of a larger token (`-`/`.` only
/// matter when another digit follows, so a number can end a sentence).
fn clean_right(text: &str, end: usize) -> bool {
    match byte_at(text, end) {
        None => true,
        Some(b) if is_word(b) => false,
        Some(b'.' | b'-' | b'/' | b':') => {
            !byte_at(text, end + 1).is_some_and(|b| b.is_ascii_digit())
        }
        Some(_) => true,
    }
}

fn find_phone(text: &str) -> Found {
    let mut best = None;
    if text.as_bytes().contains(&b'+') {
        for m in PHONE_INTL.find_iter(text) {
            // Trim a dangling ")" that closes nothing.
            let s = m.as_str();
            let end = if s.ends_with(')') && !s.contains('(') {
                m.end() - 1
            } else {
                m.end()
            };
            let digits = digits_in(&text[m.start()..end]);
            if (8..=15).contains(&digits) && clean_left(text, m.start()) && clean_right(text, end) {
                best = Some(("phone", m.start(), end));
                break;
            }
        }
    }
    for m in PHONE_NANP.find_iter(text) {
        if clean_left(text, m.start()) && clean_right(text, m.end()) {
            earliest(&mut best, Some(("phone", m.start(), m.end())));
            break;
        }
    }
    for m in PHONE_NATIONAL.find_iter(text) {
        let digits = digits_in(m.as_str());
        if (10..=11).contains(&digits) && clean_left(text, m.start()) && clean_right(text, m.end())
        {
            earliest(&mut best, Some(("phone", m.start(), m.end())));
            break;
        }
    }
    best
}

/// Luhn (mod 10) check over the ASCII digits of `digits`; other bytes are ignored.
pub(super) fn luhn_valid(digits: &str) -> bool {
    let mut sum = 0u32;
    let mut count = 0usize;
    for b in digits.bytes().rev().filter(u8::is_ascii_digit) {
        let mut d = u32::from(b - b'0');
        if count % 2 == 1 {
            d *= 2;
            if d > 9 {
                d -= 9;
            }
        }
        sum += d;
        count += 1;
    }
    count > 0 && sum.is_multiple_of(10)
}

/// Whether a digit string of this length carries a known card issuer prefix.
fn known_issuer(digits: &[u8]) -> bool {
    let prefix = |n: usize| -> u32 {
        digits
            .iter()
            .take(n)
            .fold(0, |acc, &d| acc * 10 + u32::from(d - b'0'))
    };
    let len = digits.len();
    match digits.first() {
        Some(b'4') => matches!(len, 13 | 16 | 19), // Visa
        Some(b'5') => {
            (51..=55).contains(&prefix(2)) && len == 16           // Mastercard
            || matches!(prefix(2), 50 | 56..=59) && (12..=19).contains(&len)
        } // Maestro
        Some(b'2') => (2221..=2720).contains(&prefix(4)) && len == 16, // Mastercard 2-series
        Some(b'3') => match prefix(2) {
            34 | 37 => len == 15,                          // Amex
            35 => (16..=19).contains(&len),                // JCB
            30 | 36 | 38 | 39 => (14..=19).contains(&len), // Diners
            _ => false,
        },
        Some(b'6') => (16..=19).contains(&len), // Discover, UnionPay, Maestro
        _ => false,
    }
}

fn find_card(text: &str) -> Found {
    for m in DIGIT_RUN.find_iter(text) {
        if !clean_left(text, m.start()) || !clean_right(text, m.end()) {
            continue;
        }
        if let Some((s, e)) = card_in_run(m.as_str()) {
            return Some(("card", m.start() + s, m.start() + e));
        }
    }
    None
}

/// Looks for a card number made of whole digit groups of `run` (digits separated by single
/// spaces or dashes). Either one group of 13 to 19 digits, or grouped the way cards are
/// printed: a first group of 4, other groups of 2 to 6.
fn card_in_run(run: &str) -> Option<(usize, usize)> {
    const MAX_GROUPS: usize = 64;
    // (start, end) byte offsets of each digit group.
    let mut groups = [(0usize, 0usize); MAX_GROUPS];
    let mut n = 0;
    let bytes = run.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i].is_ascii_digit() {
            let s = i;
            while i < bytes.len() && bytes[i].is_ascii_digit() {
                i += 1;
            }
            if n == MAX_GROUPS {
                return None;
            }
            groups[n] = (s, i);
            n += 1;
        } else {
            i += 1;
        }
    }
    let groups = &groups[..n];
    let mut digits = [0u8; 19];
    for first in 0..groups.len() {
        let mut len = 0usize;
        for (k, &(s, e)) in groups[first..].iter().enumerate() {
            let glen = e - s;
            let grouped_ok = if k == 0 {
                glen == 4 || glen >= 13
            } else {
                (2..=6).contains(&glen)
            };
            if !grouped_ok || (k > 0 && groups[first].1 - groups[first].0 != 4) || len + glen > 19 {
                break;
            }
            digits[len..len + glen].copy_from_slice(&bytes[s..e]);
            len += glen;
            if len >= 13 {
                let ds = &digits[..len];
                let as_str = std::str::from_utf8(ds).unwrap_or("");
                if known_issuer(ds) && luhn_valid(as_str) {
                    return Some((groups[first].0, e));
                }
            }
            if k == 0 && glen >= 13 {
                break; // a single long group stands alone
            }
        }
    }
    None
}

/// Registered IBAN length for a country code, if the country issues IBANs.
fn iban_length(cc: &[u8]) -> Option<usize> {
    let len = match cc {
        b"AD" => 24,
        b"AE" => 23,
        b"AL" => 28,
        b"AT" => 20,
        b"AZ" => 28,
        b"BA" => 20,
        b"BE" => 16,
        b"BG" => 22,
        b"BH" => 22,
        b"BI" => 27,
        b"BR" => 29,
        b"BY" => 28,
        b"CH" => 21,
        b"CR" => 22,
        b"CY" => 28,
        b"CZ" => 24,
        b"DE" => 22,
        b"DJ" => 27,
        b"DK" => 18,
        b"DO" => 28,
        b"EE" => 20,
        b"EG" => 29,
        b"ES" => 24,
        b"FI" => 18,
        b"FK" => 18,
        b"FO" => 18,
        b"FR" => 27,
        b"GB" => 22,
        b"GE" => 22,
        b"GI" => 23,
        b"GL" => 18,
        b"GR" => 27,
        b"GT" => 28,
        b"HR" => 21,
        b"HU" => 28,
        b"IE" => 22,
        b"IL" => 23,
        b"IQ" => 23,
        b"IS" => 26,
        b"IT" => 27,
        b"JO" => 30,
        b"KW" => 30,
        b"KZ" => 20,
        b"LB" => 28,
        b"LC" => 32,
        b"LI" => 21,
        b"LT" => 20,
        b"LU" => 20,
        b"LV" => 21,
        b"LY" => 25,
        b"MC" => 27,
        b"MD" => 24,
        b"ME" => 22,
        b"MK" => 19,
        b"MN" => 20,
        b"MR" => 27,
        b"MT" => 31,
        b"MU" => 30,
        b"NI" => 28,
        b"NL" => 18,
        b"NO" => 15,
        b"OM" => 23,
        b"PK" => 24,
        b"PL" => 28,
        b"PS" => 29,
        b"PT" => 25,
        b"QA" => 29,
        b"RO" => 24,
        b"RS" => 22,
        b"RU" => 33,
        b"SA" => 24,
        b"SC" => 31,
        b"SD" => 18,
        b"SE" => 24,
        b"SI" => 19,
        b"SK" => 24,
        b"SM" => 27,
        b"SO" => 23,
        b"ST" => 25,
        b"SV" => 28,
        b"TL" => 23,
        b"TN" => 24,
        b"TR" => 26,
        b"UA" => 29,
        b"VA" => 22,
        b"VG" => 24,
        b"XK" => 20,
        b"YE" => 30,
        _ => return None,
    };
    Some(len)
}

/// ISO 13616 check: registered length for the country, then ISO 7064 mod 97 == 1. Spaces are
/// ignored; anything else that is not an uppercase letter or digit fails.
pub(super) fn iban_valid(iban: &str) -> bool {
    let mut chars = [0u8; 34];
    let mut n = 0;
    for b in iban.bytes() {
        match b {
            b' ' => {}
            b'A'..=b'Z' | b'0'..=b'9' if n < chars.len() => {
                chars[n] = b;
                n += 1;
            }
            _ => return false,
        }
    }
    let chars = &chars[..n];
    if n < 5
        || !chars[..2].iter().all(u8::is_ascii_uppercase)
        || !chars[2..4].iter().all(u8::is_ascii_digit)
        || iban_length(&chars[..2]) != Some(n)
    {
        return false;
    }
    let mut rem = 0u32;
    for &b in chars[4..].iter().chain(&chars[..4]) {
        let v = match b {
            b'0'..=b'9' => u32::from(b - b'0'),
            _ => u32::from(b - b'A') + 10,
        };
        rem = if v < 10 {
            (rem * 10 + v) % 97
        } else {
            (rem * 100 + v) % 97
        };
    }
    rem == 1
}

fn find_iban(text: &str) -> Found {
    let bytes = text.as_bytes();
    for m in IBAN_START.find_iter(text) {
        let start = m.start();
        if byte_before(text, start).is_some_and(|b| b.is_ascii_alphanumeric()) {
            continue;
        }
        let Some(len) = iban_length(&bytes[start..start + 2]) else {
            continue;
        };
        // Take `len` characters, allowing single spaces between them.
        let mut taken = 0;
        let mut i = start;
        while i < bytes.len() && taken < len {
            match bytes[i] {
                b'A'..=b'Z' | b'0'..=b'9' => taken += 1,
                b' ' if i > start && bytes[i - 1] != b' ' => {}
                _ => break,
            }
            i += 1;
        }
        if taken != len || byte_at(text, i).is_some_and(|b| b.is_ascii_alphanumeric()) {
            continue;
        }
        if iban_valid(&text[start..i]) {
            return Some(("iban", start, i));
        }
    }
    None
}

/// Whether `ddd-dd-dddd` could be an issued SSN (area not 000, 666 or 9xx; group not 00;
/// serial not 0000).
pub(super) fn ssn_plausible(s: &str) -> bool {
    let b = s.as_bytes();
    if b.len() != 11 {
        return false;
    }
    let area = &b[0..3];
    area != b"000" && area != b"666" && area[0] != b'9' && &b[4..6] != b"00" && &b[7..11] != b"0000"
}

fn find_ssn(text: &str) -> Found {
    let dashed = SSN
        .find_iter(text)
        .find(|m| {
            clean_left(text, m.start()) && clean_right(text, m.end()) && ssn_plausible(m.as_str())
        })
        .map(|m| ("ssn", m.start(), m.end()));
    let spaced = SSN_SPACED
        .find_iter(text)
        .find(|m| {
            let label_from = floor_char_boundary(text, m.start().saturating_sub(24));
            clean_left(text, m.start())
                && clean_right(text, m.end())
                && ssn_plausible(m.as_str())
                && SSN_LABEL.is_match(&text[label_from..m.start()])
        })
        .map(|m| ("ssn", m.start(), m.end()));
    let mut best = dashed;
    earliest(&mut best, spaced);
    best
}
