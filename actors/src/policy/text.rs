//! The canonical form of text, the one used for tool identity and for the canonical view of
//! every text condition.
//!
//! `canonical(s)`: invisible characters removed (Unicode's default-ignorable code points:
//! zero-width spaces and joiners, soft hyphens, bidirectional controls, variation selectors,
//! tag characters, Hangul fillers, ...), Unicode NFKC (fullwidth `ｒｍ` -> `rm`, ligatures,
//! superscripts), lowercase (Unicode's lowercase mapping, then NFKC again), surrounding
//! whitespace and control characters trimmed ([`is_trimmed`]: the same set for ASCII and
//! non-ASCII text, a superset of what Python's `str.strip()` removes).
//!
//! A condition compares a step's text in two views: as sent (exact) and canonical (both the
//! step's text and the rule's value in canonical form). A rule stronger than allow matches if
//! either view does; an allow rule only if both do. So a spelling variant can never turn a
//! deny off, and can never turn an allow on.

use std::borrow::Cow;

use unicode_normalization::UnicodeNormalization;

/// True for characters that render as nothing: Unicode's `Default_Ignorable_Code_Point`
/// property (DerivedCoreProperties.txt), which is what "invisible" means here.
pub fn is_invisible(c: char) -> bool {
    matches!(c as u32,
        0x00AD | 0x034F | 0x061C | 0x115F..=0x1160 | 0x17B4..=0x17B5 | 0x180B..=0x180F
        | 0x200B..=0x200F | 0x202A..=0x202E | 0x2060..=0x206F | 0x3164 | 0xFE00..=0xFE0F
        | 0xFEFF | 0xFFA0 | 0xFFF0..=0xFFF8 | 0x1BCA0..=0x1BCA3 | 0x1D173..=0x1D17A
        | 0xE0000..=0xE0FFF)
}

/// True for characters trimmed from both ends of canonical text: whitespace
/// (`char::is_whitespace`, e.g. `\x0B`, U+3000) and control characters (`char::is_control`,
/// e.g. `\x00`, `\x1C`..`\x1F`, `\x7F`).
pub fn is_trimmed(c: char) -> bool {
    c.is_whitespace() || c.is_control()
}

/// The canonical form of `s` (see the module documentation). Borrows when `s` already is
/// canonical, which is the common case (ASCII, lowercase, no surrounding spaces).
pub fn canonical(s: &str) -> Cow<'_, str> {
    if s.is_ascii() {
        let t = s.trim_matches(is_trimmed);
        return if t.bytes().any(|b| b.is_ascii_uppercase()) {
            Cow::Owned(t.to_ascii_lowercase())
        } else {
            Cow::Borrowed(t)
        };
    }
    let visible: String = s.chars().filter(|c| !is_invisible(*c)).collect();
    let folded: String = visible.nfkc().collect::<String>().to_lowercase();
    let normal: String = folded.nfkc().filter(|c| !is_invisible(*c)).collect();
    let trimmed = normal.trim_matches(is_trimmed);
    if trimmed.len() == normal.len() {
        Cow::Owned(normal)
    } else {
        Cow::Owned(trimmed.to_string())
    }
}

/// True when `a` and `b` have the same canonical form; `b_canonical` is `b`'s, computed once.
pub fn same_canonical(a: &str, b_canonical: &str) -> bool {
    if a.is_ascii() {
        let t = a.trim_matches(is_trimmed);
        return t.eq_ignore_ascii_case(b_canonical);
    }
    canonical(a) == b_canonical
}

/// `s` with invisible characters removed and in Unicode NFKC, but neither case-folded nor
/// trimmed: the form detectors read besides the text as sent (`ＡＫＩＡ…` -> `AKIA…`,
/// `exa\u{200b}mple` -> `example`, a no-break space -> a space). Borrows when `s` is ASCII
/// (already in this form).
pub fn compatible(s: &str) -> Cow<'_, str> {
    if s.is_ascii() {
        return Cow::Borrowed(s);
    }
    let visible: String = s.chars().filter(|c| !is_invisible(*c)).collect();
    Cow::Owned(visible.nfkc().filter(|c| !is_invisible(*c)).collect())
}

/// A text value shortened for a reason shown to people: at most 60 characters, control
/// characters escaped.
pub fn preview(s: &str) -> String {
    let mut out: String = s.chars().take(60).collect();
    if out.len() < s.len() {
        out.push('…');
    }
    format!("{out:?}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_form_folds_width_case_invisibles_and_spaces() {
        assert_eq!(canonical("shell"), "shell");
        assert!(matches!(canonical("shell"), Cow::Borrowed(_)));
        assert_eq!(canonical("  Shell \t"), "shell");
        assert_eq!(canonical("ｓｈｅｌｌ"), "shell");
        assert_eq!(canonical("ＳＨＥＬＬ\u{3000}"), "shell");
        assert_eq!(canonical("sh\u{200b}el\u{00ad}l"), "shell");
        assert_eq!(canonical("\u{feff}KP"), "kp");
        assert_eq!(canonical("ﬁle"), "file");
        assert_eq!(canonical("Ｋ"), "k");
        // The Kelvin sign is K under NFKC, then k.
        assert_eq!(canonical("\u{212a}P"), "kp");
        assert!(same_canonical(" KP ", "kp"));
        assert!(same_canonical("ＫＰ", "kp"));
        assert!(!same_canonical("KPX", "kp"));
    }

    #[test]
    fn ascii_and_unicode_paths_trim_the_same_characters() {
        for c in (0u32..0x80).chain([0x85, 0xA0, 0x2028, 0x3000]) {
            let c = char::from_u32(c).unwrap();
            if !is_trimmed(c) {
                continue;
            }
            // `é` forces the Unicode path; the ASCII path sees only ASCII.
            let ascii = format!("{c}KP{c}");
            let unicode = format!("{c}KPé{c}");
            assert_eq!(canonical(&ascii), "kp", "{c:?} (ASCII path)");
            assert_eq!(canonical(&unicode), "kpé", "{c:?} (Unicode path)");
            assert!(same_canonical(&ascii, "kp"), "{c:?}");
        }
        for s in [
            "KP\x0B",
            "KP\x1C",
            "\x1FKP\x1D",
            "KP\x00",
            "KP\x7F",
            "\x0B\x1EKP",
        ] {
            assert_eq!(canonical(s), "kp", "{s:?}");
            assert!(same_canonical(s, "kp"), "{s:?}");
        }
        // Inside the text nothing is trimmed.
        assert_eq!(canonical("K\x0BP"), "k\x0bp");
    }

    #[test]
    fn compatible_form_keeps_case_and_drops_invisibles() {
        assert!(matches!(compatible("AKIA x"), Cow::Borrowed(_)));
        assert_eq!(compatible("ＡＫＩＡ"), "AKIA");
        assert_eq!(compatible("exa\u{200b}mple"), "example");
        assert_eq!(compatible("a\u{a0}b"), "a b");
        assert_eq!(compatible(" Ｘ "), " X ");
    }
}
