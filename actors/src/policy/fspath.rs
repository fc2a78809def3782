//! The `path` condition: file system paths normalized lexically, and path globs.
//!
//! A value is normalized without touching any file system: repeated separators collapse,
//! `.` segments go, `..` removes the segment before it, a trailing `/` goes (`/var/../etc//./shadow`
//! -> `/etc/shadow`). What cannot be placed is reported, not guessed: a relative path (its
//! meaning depends on a working directory the policy cannot see), a `~` path, a `..` that
//! climbs above `/`, a NUL byte (C strings end there). Symbolic links are not resolved: a
//! path is judged by its spelling.
//!
//! Path globs: `*` any run of characters within one segment, `?` one character but `/`,
//! `[abc]` / `[!abc]` a class, `**` as a whole segment any number of segments (none
//! included: `/srv/app/**` matches `/srv/app` and everything under it). A glob starts with
//! `/` (absolute) or `**` (any path, relative ones included).

/// What a value normalizes to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Normal {
    /// An absolute path: starts with `/`, no `.`, `..` or empty segments.
    Absolute(String),
    /// A relative path, normalized as far as it goes (leading `..` segments kept).
    Relative(String),
}

/// Why a value cannot be placed in the file system tree.
pub type Doubt = &'static str;

/// Normalizes `s` lexically. `Err` says why the value cannot be placed at all.
pub fn normalize(s: &str) -> Result<Normal, Doubt> {
    if s.contains('\0') {
        return Err("holds a NUL byte");
    }
    if s.starts_with('~') {
        return Err("starts with ~, whose directory the policy cannot see");
    }
    let absolute = s.starts_with('/');
    let mut out: Vec<&str> = Vec::new();
    for seg in s.split('/') {
        match seg {
            "" | "." => {}
            ".." => match out.last() {
                Some(&last) if last != ".." => {
                    out.pop();
                }
                _ if absolute => return Err("climbs above /"),
                _ => out.push(".."),
            },
            _ => out.push(seg),
        }
    }
    let joined = out.join("/");
    Ok(if absolute {
        Normal::Absolute(format!("/{joined}"))
    } else {
        Normal::Relative(joined)
    })
}

/// Whether a path glob is absolute (starts with `/`); the others start with `**`.
pub fn glob_is_absolute(glob: &str) -> bool {
    glob.starts_with('/')
}

/// Checks a path glob as written in a policy and returns it normalized (`.` and `..` resolved,
/// repeated `/` and `**` collapsed), or why it cannot be used.
pub fn check_glob(glob: &str) -> Result<String, String> {
    let absolute = glob.starts_with('/');
    if !(absolute || glob == "**" || glob.starts_with("**/")) {
        return Err(format!(
            "path glob {glob:?} must start with / (an absolute path) or **/ (any directory)"
        ));
    }
    let mut out: Vec<&str> = Vec::new();
    for seg in glob.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                if out.pop().is_none() || (!absolute && out.is_empty()) {
                    return Err(format!("path glob {glob:?} climbs above its start"));
                }
            }
            "**" if out.last() == Some(&"**") => {}
            _ => out.push(seg),
        }
    }
    let joined = out.join("/");
    Ok(if absolute {
        format!("/{joined}")
    } else {
        joined
    })
}

/// The anchored regular expression of a path glob normalized by [`check_glob`].
pub fn glob_regex(glob: &str) -> String {
    let mut re = String::from("^(?s:");
    let segs: Vec<&str> = glob.split('/').filter(|s| !s.is_empty()).collect();
    if glob.starts_with('/') {
        if segs.is_empty() {
            re.push('/');
        }
        for seg in &segs {
            if *seg == "**" {
                re.push_str("(?:/[^/]+)*");
            } else {
                re.push('/');
                segment_regex(seg, &mut re);
            }
        }
    } else if segs.len() <= 1 {
        re.push_str(".*");
    } else {
        // `**/rest`: any leading directories, or none (a relative path too).
        re.push_str("(?:.*/)?");
        for (i, seg) in segs[1..].iter().enumerate() {
            if *seg == "**" {
                re.push_str("(?:/[^/]+)*");
                continue;
            }
            if i > 0 {
                re.push('/');
            }
            segment_regex(seg, &mut re);
        }
    }
    re.push_str(")$");
    re
}

fn segment_regex(seg: &str, re: &mut String) {
    super::glob::push_regex(seg, Some('/'), re);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(glob: &str, path: &str) -> bool {
        let g = check_glob(glob).unwrap();
        let p = match normalize(path).unwrap() {
            Normal::Absolute(p) | Normal::Relative(p) => p,
        };
        regex::Regex::new(&glob_regex(&g)).unwrap().is_match(&p)
    }

    #[test]
    fn paths_normalize_lexically() {
        let abs = |s: &str| normalize(s).unwrap();
        assert_eq!(
            abs("/var/../etc/shadow"),
            Normal::Absolute("/etc/shadow".into())
        );
        assert_eq!(abs("//etc/shadow"), Normal::Absolute("/etc/shadow".into()));
        assert_eq!(
            abs("/./etc/./shadow/"),
            Normal::Absolute("/etc/shadow".into())
        );
        assert_eq!(abs("/"), Normal::Absolute("/".into()));
        assert_eq!(abs("a/./b/../c"), Normal::Relative("a/c".into()));
        assert_eq!(abs("../x"), Normal::Relative("../x".into()));
        assert!(normalize("/../etc/shadow").is_err());
        assert!(normalize("/a/../../etc").is_err());
        assert!(normalize("~/.ssh/id_rsa").is_err());
        assert!(normalize("/srv/app/x\0/../../etc").is_err());
    }

    #[test]
    fn path_globs_match_segments() {
        assert!(m("/etc/**", "/etc/shadow"));
        assert!(m("/etc/**", "/etc"));
        assert!(m("/etc/**", "/etc/ssh/sshd_config"));
        assert!(!m("/etc/**", "/etcetera/x"));
        assert!(m("/etc/*", "/etc/shadow"));
        assert!(!m("/etc/*", "/etc/ssh/sshd_config"));
        assert!(m("/srv/app/**", "/srv/app/../app/x"));
        assert!(!m("/srv/app/**", "/srv/app/../../etc/shadow"));
        assert!(m("**/*.pem", "/home/a/key.pem"));
        assert!(m("**/*.pem", "key.pem"));
        assert!(m("**/*.pem", "a/b/key.pem"));
        assert!(!m("**/*.pem", "/home/a/key.pem.txt"));
        assert!(m("**", "anything/at/all"));
        assert!(m("/", "/"));
        assert!(!m("/", "/etc"));
        assert!(m("/home/*/.ssh/**", "/home/bob/.ssh/id_rsa"));
        assert!(m("/a/**/z", "/a/z"));
        assert!(m("/a/**/z", "/a/b/c/z"));
        assert!(m("/x/[!a]*", "/x/b1"));
        assert!(!m("/x/[!a]*", "/x/a1"));
        assert!(check_glob("etc/*").is_err());
        assert!(check_glob("/..").is_err());
        assert!(check_glob("**x").is_err());
        assert!(!m("/x/[!a]", "/x//"));
        assert_eq!(check_glob("/srv//app/./x/../**").unwrap(), "/srv/app/**");
    }
}
