//! Exact numbers for the `gt`, `gte`, `lt`, `lte` and numeric `eq` conditions.
//!
//! A rule's number and every number an agent writes as text (`"10000.0000000000000001"`) are
//! read as exact decimals ([`Decimal`]) and compared exactly, whatever their length. JSON
//! numbers are what the JSON reader made of them: integers within 64 bits are exact; a
//! number with a fraction or an exponent (or an integer beyond 64 bits) is a 64-bit float,
//! rounded when it was read (`10000.0000000000000001` arrives as `10000.0`). Such a float is
//! compared only where rounding cannot have changed the answer: closer to the rule's number
//! than [`FLOAT_DOUBT`] (relative) it is doubt, never silently "not greater".

use std::cmp::Ordering;
use std::fmt;

use serde_json::Number;

/// How close (relative to the larger magnitude) a JSON float may come to a rule's number
/// before the comparison is doubt: far above the rounding of any JSON reader (serde_json's
/// is within a few units in the last place, 2^-52 relative each), far below any difference
/// an amount means.
pub const FLOAT_DOUBT: f64 = 1e-12;

/// Most exponent digits accepted (`1e999999999` is a number; `1e9999999999` is not).
const MAX_EXP_DIGITS: usize = 9;

/// An exact decimal number: `0.d1d2d3... × 10^exp`, with a sign. Digits carry no leading
/// or trailing zeros; zero has no digits (and no sign: `-0` is `0`).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Decimal {
    neg: bool,
    digits: Box<[u8]>,
    exp: i64,
}

impl Decimal {
    /// Its normalized parts: sign, significant digits (no leading or trailing zeros; none for
    /// zero) and exponent, as in `0.d1d2d3... × 10^exp`. Equal numbers have equal parts
    /// (`5`, `5.0`, `"0.5e1"`), and they stay small for any input (`1e999999999` is one digit).
    pub fn parts(&self) -> (bool, &[u8], i64) {
        (self.neg, &self.digits, self.exp)
    }

    /// Reads a decimal number written as text: optional surrounding ASCII whitespace, an
    /// optional sign, digits with an optional decimal point, an optional exponent of at most
    /// nine digits (`5000`, `"5000.00"`, `" 5e3 "`, `-.5`, `1e400`). `None` for anything else:
    /// `inf`, `NaN`, `Infinity`, hex (`0x1388`), `1_000`, `5,000`, `$5`, `5 USD`, digits of
    /// other scripts (`٥٠٠٠`), an empty string.
    pub fn parse(text: &str) -> Option<Decimal> {
        let t = text.trim_matches(|c: char| c.is_ascii_whitespace());
        let b = t.as_bytes();
        let neg = b.first() == Some(&b'-');
        let mut i = usize::from(matches!(b.first(), Some(b'+' | b'-')));
        let int_start = i;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        let int = &b[int_start..i];
        let mut frac: &[u8] = &[];
        if b.get(i) == Some(&b'.') {
            let start = i + 1;
            i = start;
            while b.get(i).is_some_and(u8::is_ascii_digit) {
                i += 1;
            }
            frac = &b[start..i];
        }
        if int.is_empty() && frac.is_empty() {
            return None;
        }
        let mut exp10: i64 = 0;
        if matches!(b.get(i), Some(b'e' | b'E')) {
            i += 1;
            let eneg = b.get(i) == Some(&b'-');
            if matches!(b.get(i), Some(b'+' | b'-')) {
                i += 1;
            }
            let start = i;
            while b.get(i).is_some_and(u8::is_ascii_digit) {
                i += 1;
            }
            let digits = &b[start..i];
            let significant = digits.iter().skip_while(|d| **d == b'0').count();
            if digits.is_empty() || significant > MAX_EXP_DIGITS {
                return None;
            }
            let e: i64 = std::str::from_utf8(digits).ok()?.parse().ok()?;
            exp10 = if eneg { -e } else { e };
        }
        if i != b.len() {
            return None;
        }
        Some(Self::from_parts(neg, int, frac, exp10))
    }

    /// `int.frac × 10^exp10` with a sign, normalized.
    fn from_parts(neg: bool, int: &[u8], frac: &[u8], exp10: i64) -> Decimal {
        let all: Vec<u8> = int.iter().chain(frac).copied().collect();
        let lead = all.iter().take_while(|d| **d == b'0').count();
        let trail = all.iter().rev().take_while(|d| **d == b'0').count();
        if lead == all.len() {
            return Decimal::zero();
        }
        let digits: Box<[u8]> = all[lead..all.len() - trail].into();
        // The first significant digit sits `int.len() - lead` places before the point.
        let exp = int.len() as i64 - lead as i64 + exp10;
        Decimal { neg, digits, exp }
    }

    fn zero() -> Decimal {
        Decimal {
            neg: false,
            digits: Box::new([]),
            exp: 0,
        }
    }

    /// A JSON number, exactly: its integer value, or `None` for a float (which is not exact).
    pub fn from_json_int(n: &Number) -> Option<Decimal> {
        if n.is_f64() {
            return None;
        }
        Decimal::parse(&n.to_string())
    }

    /// A 64-bit float by its shortest decimal spelling (what the float was written as, for
    /// any number of at most 15 significant digits). `None` for infinities and NaN.
    pub fn from_f64(x: f64) -> Option<Decimal> {
        if !x.is_finite() {
            return None;
        }
        Decimal::parse(&format!("{x:e}"))
    }

    /// The nearest 64-bit float (infinite beyond its range).
    pub fn to_f64(&self) -> f64 {
        self.to_string().parse().unwrap_or(f64::NAN)
    }

    /// The value as an integer, when it is one that fits in 128 bits.
    pub fn to_i128(&self) -> Option<i128> {
        let places = usize::try_from(self.exp).ok()?;
        if places < self.digits.len() || places > 39 {
            return (self.is_zero()).then_some(0);
        }
        let mut v: i128 = 0;
        for i in 0..places {
            let d = self.digits.get(i).map_or(0, |d| d - b'0');
            v = v.checked_mul(10)?.checked_add(i128::from(d))?;
        }
        Some(if self.neg { -v } else { v })
    }

    fn is_zero(&self) -> bool {
        self.digits.is_empty()
    }

    /// Compares magnitudes.
    fn cmp_abs(&self, other: &Decimal) -> Ordering {
        match (self.is_zero(), other.is_zero()) {
            (true, true) => return Ordering::Equal,
            (true, false) => return Ordering::Less,
            (false, true) => return Ordering::Greater,
            _ => {}
        }
        // Trailing zeros are stripped, so a shorter digit string equal up to its length is
        // the smaller number.
        self.exp
            .cmp(&other.exp)
            .then_with(|| self.digits.cmp(&other.digits))
    }
}

impl Ord for Decimal {
    fn cmp(&self, other: &Self) -> Ordering {
        let sign = |d: &Decimal| {
            if d.is_zero() {
                0
            } else if d.neg {
                -1
            } else {
                1
            }
        };
        match sign(self).cmp(&sign(other)) {
            Ordering::Equal if self.neg => other.cmp_abs(self),
            Ordering::Equal => self.cmp_abs(other),
            unequal => unequal,
        }
    }
}

impl PartialOrd for Decimal {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Display for Decimal {
    /// Scientific form: `-1.25e3`, `0`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_zero() {
            return f.write_str("0");
        }
        if self.neg {
            f.write_str("-")?;
        }
        let digits = std::str::from_utf8(&self.digits).expect("ASCII digits");
        let (first, rest) = digits.split_at(1);
        f.write_str(first)?;
        if !rest.is_empty() {
            write!(f, ".{rest}")?;
        }
        write!(f, "e{}", self.exp - 1)
    }
}

/// A rule's number: exact, with its nearest float for comparing JSON floats, and itself as
/// an integer when it is one (the common case, compared without building a [`Decimal`]).
#[derive(Clone, Debug, PartialEq)]
pub struct Threshold {
    /// The number as written.
    pub exact: Decimal,
    /// Its nearest 64-bit float.
    pub float: f64,
    /// It, when it is an integer within 128 bits.
    pub int: Option<i128>,
}

impl Threshold {
    /// The rule's number `d`.
    pub fn new(exact: Decimal) -> Threshold {
        let float = exact.to_f64();
        let int = exact.to_i128();
        Threshold { exact, float, int }
    }

    /// How a JSON number compares with this one; `None` when that cannot be told (a float
    /// so close that the JSON reader's rounding may have decided it).
    pub fn cmp_json(&self, n: &Number) -> Option<Ordering> {
        let int = n
            .as_i64()
            .map(i128::from)
            .or_else(|| n.as_u64().map(i128::from));
        if let (Some(i), Some(t)) = (int, self.int) {
            return Some(i.cmp(&t));
        }
        if let Some(d) = Decimal::from_json_int(n) {
            return Some(d.cmp(&self.exact));
        }
        let x = n.as_f64()?;
        let t = self.float;
        if !t.is_finite() {
            return x.partial_cmp(&t);
        }
        if (x - t).abs() <= FLOAT_DOUBT * x.abs().max(t.abs()) {
            return None;
        }
        x.partial_cmp(&t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(t: &str) -> Decimal {
        Decimal::parse(t).unwrap_or_else(|| panic!("{t} is a number"))
    }

    #[test]
    fn decimal_text_is_read_exactly() {
        assert!(d("10000.0000000000000001") > d("10000"));
        assert!(d("9999.99999999999999999") < d("10000"));
        assert_eq!(d("10000"), d("1e4"));
        assert_eq!(d(" 5000.00 "), d("5e3"));
        assert_eq!(d("+5"), d("5."));
        assert_eq!(d("-0"), d("0"));
        assert_eq!(d("-0.000"), d(".0e7"));
        assert!(d("-.5") < d("0"));
        assert!(d("-10") < d("-9.99"));
        assert!(d("1e400") > d("1e399"));
        assert!(d("1e-400") > d("0"));
        assert!(d("0.001") < d("0.01"));
        assert!(d("123") > d("12.3"));
        assert_eq!(d("1E-2"), d("0.01"));
        assert_eq!(d("007"), d("7"));
        assert!(d("18446744073709551617") > d("18446744073709551616"));
        for t in [
            "",
            " ",
            ".",
            "+",
            "-",
            "inf",
            "Infinity",
            "-Infinity",
            "NaN",
            "nan",
            "0x1388",
            "1_000",
            "5,000",
            "$5",
            "5 USD",
            "1e",
            "1e+",
            "--1",
            "5e3.0",
            "٥٠٠٠",
            "\u{ff15}\u{ff10}",
            "1e9999999999",
            "1.2.3",
            "5\u{a0}",
        ] {
            assert_eq!(Decimal::parse(t), None, "{t:?}");
        }
        assert_eq!(d("1e000000000000000001"), d("10"));
    }

    #[test]
    fn integers_are_recognized_within_128_bits() {
        assert_eq!(d("1e4").to_i128(), Some(10_000));
        assert_eq!(d("-12.0").to_i128(), Some(-12));
        assert_eq!(d("0").to_i128(), Some(0));
        assert_eq!(d("12.5").to_i128(), None);
        assert_eq!(d("0.5").to_i128(), None);
        assert_eq!(d("1e38").to_i128(), Some(10i128.pow(38)));
        assert_eq!(d("1e39").to_i128(), None);
        assert_eq!(d("1e-3").to_i128(), None);
    }

    #[test]
    fn display_and_float_agree_with_the_value() {
        assert_eq!(d("1250").to_string(), "1.25e3");
        assert_eq!(d("-0.05").to_string(), "-5e-2");
        assert_eq!(d("0").to_string(), "0");
        assert_eq!(d("0.1").to_f64(), 0.1);
        assert_eq!(Decimal::from_f64(0.1), Some(d("0.1")));
        assert_eq!(Decimal::from_f64(1000.5), Some(d("1000.5")));
        assert_eq!(Decimal::from_f64(f64::NAN), None);
    }

    #[test]
    fn json_numbers_compare_exactly_or_not_at_all() {
        let t = Threshold::new(d("10000"));
        let json = |s: &str| serde_json::from_str::<Number>(s).unwrap();
        assert_eq!(t.cmp_json(&json("10001")), Some(Ordering::Greater));
        assert_eq!(t.cmp_json(&json("10000")), Some(Ordering::Equal));
        assert_eq!(t.cmp_json(&json("-3")), Some(Ordering::Less));
        assert_eq!(t.cmp_json(&json("10000.5")), Some(Ordering::Greater));
        assert_eq!(t.cmp_json(&json("9999.5")), Some(Ordering::Less));
        // Read as 10000.0: the JSON reader rounded it, so nobody can tell.
        assert_eq!(t.cmp_json(&json("10000.0000000000000001")), None);
        assert_eq!(t.cmp_json(&json("10000.0")), None);
        assert_eq!(t.cmp_json(&json("1e4")), None);
        assert_eq!(t.cmp_json(&json("1e300")), Some(Ordering::Greater));
        let zero = Threshold::new(d("0"));
        assert_eq!(zero.cmp_json(&json("-0")), None, "-0 is read as a float");
        assert_eq!(zero.cmp_json(&json("1e-400")), None, "underflows to 0.0");
        assert_eq!(zero.cmp_json(&json("0")), Some(Ordering::Equal));
        let big = Threshold::new(d("18446744073709551616"));
        assert_eq!(
            big.cmp_json(&json("18446744073709551615")),
            Some(Ordering::Less)
        );
        assert_eq!(big.cmp_json(&json("18446744073709551617")), None);
        let huge = Threshold::new(d("1e400"));
        assert_eq!(huge.cmp_json(&json("1e300")), Some(Ordering::Less));
    }
}
