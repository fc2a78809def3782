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
    let mut chars = glob.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '*' => {
                while chars.peek() == Some(&'*') {
                    chars.next();
                }
                out.push_str(".*");
            }
            '?' => out.push('.'),
            '[' => {
                let mut class = String::new();
                let mut closed = false;
                for d in chars.by_ref() {
                    if d == ']' {
                        closed = true;
                        break;
                    }
                    class.push(d);
                }
                if closed && !class.is_empty() {
                    out.push('[');
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
                    out.push(']');
                } else {
                    out.push_str(&regex::escape(&format!("[{class}")));
                    if closed {
                        out.push_str("\\]");
                    }
                }
            }
            _ => out.push_str(&regex::escape(c.encode_utf8(&mut [0; 4]))),
        }
    }
    out.push_str(")$");
    out
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
