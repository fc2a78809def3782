//! Small helpers shared by the detectors. None of them allocates.

/// The largest char boundary of `s` that is `<= at`.
pub(super) fn floor_char_boundary(s: &str, at: usize) -> usize {
    if at >= s.len() {
        return s.len();
    }
    let mut i = at;
    while i > 0 && !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// The smallest char boundary of `s` that is `>= at`.
pub(super) fn ceil_char_boundary(s: &str, at: usize) -> usize {
    if at >= s.len() {
        return s.len();
    }
    let mut i = at;
    while !s.is_char_boundary(i) {
        i += 1;
    }
    i
}

/// Renders `n` in decimal into `buf` and returns the digits.
pub(super) fn format_u64(mut n: u64, buf: &mut [u8; 20]) -> &str {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    // Only ASCII digits were written.
    std::str::from_utf8(&buf[i..]).unwrap_or("")
}

/// Decodes standard or URL-safe base64 (padding optional) into `out`. `None` if the input is
/// not base64 or does not fit.
pub(super) fn base64_decode<'a>(input: &[u8], out: &'a mut [u8]) -> Option<&'a [u8]> {
    let input = input
        .strip_suffix(b"==")
        .or_else(|| input.strip_suffix(b"="))
        .unwrap_or(input);
    if input.len() % 4 == 1 || input.len() / 4 * 3 + 2 > out.len() {
        return None;
    }
    let mut acc = 0u32;
    let mut bits = 0u32;
    let mut n = 0;
    for &c in input {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out[n] = (acc >> bits) as u8;
            n += 1;
            acc &= (1 << bits) - 1;
        }
    }
    Some(&out[..n])
}

/// The byte before `start`, if any.
pub(super) fn byte_before(text: &str, start: usize) -> Option<u8> {
    start
        .checked_sub(1)
        .and_then(|i| text.as_bytes().get(i).copied())
}

/// The byte at `end`, if any.
pub(super) fn byte_at(text: &str, end: usize) -> Option<u8> {
    text.as_bytes().get(end).copied()
}

/// Whether `b` continues an ASCII word (letter, digit, underscore).
pub(super) fn is_word(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// Shannon entropy, in bits per byte, of `bytes`.
pub(super) fn shannon_entropy(bytes: &[u8]) -> f64 {
    if bytes.is_empty() {
        return 0.0;
    }
    let mut counts = [0u32; 256];
    for &b in bytes {
        counts[b as usize] += 1;
    }
    let n = bytes.len() as f64;
    counts
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = f64::from(c) / n;
            -p * p.log2()
        })
        .sum()
}

/// Number of distinct bytes in `bytes`.
pub(super) fn distinct_bytes(bytes: &[u8]) -> usize {
    let mut seen = [false; 256];
    let mut n = 0;
    for &b in bytes {
        if !seen[b as usize] {
            seen[b as usize] = true;
            n += 1;
        }
    }
    n
}

/// Whether `haystack` contains `needle`, ignoring ASCII case.
pub(super) fn contains_ignore_ascii_case(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty()
        || haystack
            .windows(needle.len())
            .any(|w| w.eq_ignore_ascii_case(needle))
}

/// Keeps the earliest hit; on a tie the one already held (the more specific rule) wins.
pub(super) fn earliest(
    best: &mut Option<(&'static str, usize, usize)>,
    candidate: Option<(&'static str, usize, usize)>,
) {
    if let Some(c) = candidate {
        match best {
            Some(b) if b.1 <= c.1 => {}
            _ => *best = Some(c),
        }
    }
}
