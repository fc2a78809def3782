//! Globs as regular expressions: `*` any run of characters (slashes and dots included), `?` one
//! character, `[abc]` / `[!abc]` a class; everything else literal. The whole string must match.

/// True when the text contains glob syntax.
pub fn is_glob(s: &str) -> bool {
    s.contains(['*', '?', '['])
}

/// The anchored regular expression for `glob`.
pub fn to_regex(glob: &str) -> String {
    let mut out = String::with_capacity(glob.len() * 2 + 8);
    out.push_str("^(?s:");
    push_regex(glob, None, &mut out);
    out.push_str(")$");
    out
}

/// Appends the (unanchored) regular expression for `glob` to `out`. With a separator, `*`,
/// `?` and classes never match it (one path segment: `fspath`); without, they match anything.
pub(super) fn push_regex(glob: &str, separator: Option<char>, out: &mut String) {
    let (any_run, any_one) = match separator {
        Some(sep) => (format!("[^{sep}]*"), format!("[^{sep}]")),
        None => (".*".to_string(), ".".to_string()),
    };
    let mut chars = glob.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '*' => {
                while chars.peek() == Some(&'*') {
                    chars.next();
                }
                out.push_str(&any_run);
            }
            '?' => out.push_str(&any_one),
            '[' => push_class(&mut chars, separator, out),
            _ => out.push_str(&regex::escape(c.encode_utf8(&mut [0; 4]))),
        }
    }
}

/// A `[abc]` / `[!abc]` class after its `[`; an unclosed or empty one is literal text. With a
/// separator the class never matches it: `[[class]&&[^sep]]`.
fn push_class(
    chars: &mut std::iter::Peekable<std::str::Chars<'_>>,
    separator: Option<char>,
    out: &mut String,
) {
    let mut class = String::new();
    let mut closed = false;
    for d in chars.by_ref() {
        if d == ']' {
            closed = true;
            break;
        }
        class.push(d);
    }
    if !closed || class.is_empty() {
        out.push_str(&regex::escape(&format!("[{class}")));
        if closed {
            out.push_str("\\]");
        }
        return;
    }
    out.push_str(if separator.is_some() { "[[" } else { "[" });
    let body = class.strip_prefix('!').map_or(class.as_str(), |b| {
        out.push('^');
        b
    });
    for d in body.chars() {
        if matches!(d, '\\' | '[' | ']' | '^' | '&' | '~') {
            out.push('\\');
        }
        out.push(d);
    }
    match separator {
        Some(sep) => out.push_str(&format!("]&&[^{sep}]]")),
        None => out.push(']'),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(glob: &str, s: &str) -> bool {
        regex::Regex::new(&to_regex(glob)).unwrap().is_match(s)
    }

    #[test]
    fn globs_match_whole_strings() {
        assert!(m("web.*", "web.search"));
        assert!(!m("web.*", "xweb.search"));
        assert!(m("*.pem", "/home/a/key.pem"));
        assert!(m("file?.txt", "file1.txt"));
        assert!(!m("file?.txt", "file12.txt"));
        assert!(m("[!a]bc", "xbc"));
        assert!(!m("[!a]bc", "abc"));
        assert!(m("a+b(c)", "a+b(c)"));
        assert!(m("[", "["));
        assert!(!is_glob("shell"));
    }
}
