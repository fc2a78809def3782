//! What several command groups use: reading a file with its name in the error, printing a
//! policy's diagnostics, printing JSON, and reading the times users type.

use std::path::Path;

use anyhow::Context;
use warden::actors::policy::PolicyErrors;

/// The whole text of `file`; the error names the file.
pub fn read(file: &Path) -> anyhow::Result<String> {
    std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))
}

/// Prints every diagnostic of a policy that does not parse, one per line on standard error,
/// each prefixed with where the policy came from (`FILE:line:column: error: ...`).
pub fn print_policy_errors(source: &str, errors: &PolicyErrors) {
    for d in &errors.diagnostics {
        eprintln!("{source}:{d}");
    }
}

/// Prints `value` as indented JSON on standard output.
pub fn print_pretty(value: &impl serde::Serialize) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// `YYYY-MM-DDTHH:MM:SS[.fff]Z` (or `+00:00`) to Unix milliseconds; `None` for anything else,
/// including times before 1970.
pub fn parse_rfc3339_utc(s: &str) -> Option<u64> {
    let s = s.strip_suffix('Z').or_else(|| s.strip_suffix("+00:00"))?;
    let (date, time) = s.split_once('T')?;
    let mut d = date.split('-');
    let (y, m, day): (i64, u32, u32) = (
        d.next()?.parse().ok()?,
        d.next()?.parse().ok()?,
        d.next()?.parse().ok()?,
    );
    let (hms, frac) = time.split_once('.').unwrap_or((time, "0"));
    let mut t = hms.split(':');
    let (hh, mm, ss): (u64, u64, u64) = (
        t.next()?.parse().ok()?,
        t.next()?.parse().ok()?,
        t.next()?.parse().ok()?,
    );
    if !(1..=12).contains(&m) || !(1..=31).contains(&day) || hh > 23 || mm > 59 || ss > 60 {
        return None;
    }
    let ms: u64 = format!("{frac:0<3}")[..3].parse().ok()?;
    // Days from civil (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (i64::from(m) + 9) % 12;
    let doy = (153 * mp + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    if days < 0 {
        return None;
    }
    Some(days as u64 * 86_400_000 + hh * 3_600_000 + mm * 60_000 + ss * 1_000 + ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_utc_times_parse() {
        assert_eq!(parse_rfc3339_utc("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            parse_rfc3339_utc("2026-11-23T10:00:00Z"),
            Some(1_795_428_000_000)
        );
        assert_eq!(
            parse_rfc3339_utc("2000-02-29T12:30:15.250Z"),
            Some(951_827_415_250)
        );
        assert_eq!(parse_rfc3339_utc("2026-13-01T00:00:00Z"), None);
        assert_eq!(parse_rfc3339_utc("2026-11-23 10:00"), None);
    }
}
