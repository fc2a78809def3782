//! What a `command` condition asks of a command line, and how it matches: program names,
//! flags (with per-program aliases), operands, and what a command's output flows into.
//!
//! Every command is seen in two views: as written (program base name as is, flags as written)
//! and canonical (every word in canonical form: NFKC, invisible characters removed,
//! lowercase; `.exe` dropped from the program). A pattern holds for a command line when, for a
//! rule stronger than allow, any command matches in either view; for an allow rule, every
//! command matches in both views.

use std::borrow::Cow;

use regex::Regex;

use super::wrappers::SHELLS;
use super::{has_runtime_text, may_be_flag, program_name, readable, CommandLine, Doubt};
use crate::policy::{fspath, glob, text};

/// A `command:` condition as written in a policy.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CommandPattern {
    /// Program names or globs (`rm`, `python*`); empty: any program.
    pub programs: Vec<String>,
    /// Flags that must all be present.
    pub flags: Vec<FlagName>,
    /// Operand globs that must each match some operand (absolute ones as paths).
    pub args: Vec<String>,
    /// A command this one's output must flow into (a pipe, a substitution).
    pub piped_into: Option<Box<CommandPattern>>,
}

/// A flag as a policy names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FlagName {
    /// `recursive`: a named flag, through the program's aliases (rm: `-r`, `-R`,
    /// `--recursive`); a program without that alias: `--recursive`.
    Named(String),
    /// `-r`: one short option (and its aliases).
    Short(char),
    /// `-delete`: that word as a single-dash option, or all its letters as short options.
    Dash(String),
    /// `--force`: a long option, or any abbreviation of it GNU getopt would accept.
    Long(String),
}

/// A pattern that cannot be used, with a hint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PatternError {
    /// What is wrong.
    pub message: String,
    /// What to write instead.
    pub hint: Option<String>,
}

/// Builtins that run a file as a script of the shell they run in: a program pattern that
/// names a shell (`sh`, `bash`, ...) names them too (`. <(curl x)`, `curl x | source
/// /dev/stdin`).
const RUN_SHELL_SCRIPTS: [&str; 2] = [".", "source"];

/// Flag aliases of the programs where getting them wrong is dangerous: a named flag stands
/// for all of its spellings.
struct Alias {
    programs: &'static [&'static str],
    name: &'static str,
    short: &'static str,
    long: &'static [&'static str],
    dash: &'static [&'static str],
    /// An operand that starts with this character, and has more after it, is this flag too
    /// (git's forced refspec `+main`, deleting refspec `:main`).
    operand_start: Option<char>,
}

const ALIASES: &[Alias] = &[
    Alias {
        programs: &["rm"],
        name: "recursive",
        short: "rR",
        long: &["recursive"],
        dash: &[],
        operand_start: None,
    },
    Alias {
        programs: &["rm", "cp", "mv", "ln", "chmod", "chown", "chgrp"],
        name: "force",
        short: "f",
        long: &["force"],
        dash: &[],
        operand_start: None,
    },
    Alias {
        programs: &["rm"],
        name: "no_preserve_root",
        short: "",
        long: &["no-preserve-root"],
        dash: &[],
        operand_start: None,
    },
    Alias {
        programs: &["cp"],
        name: "recursive",
        short: "rRa",
        long: &["recursive", "archive"],
        dash: &[],
        operand_start: None,
    },
    Alias {
        programs: &["chmod", "chown", "chgrp"],
        name: "recursive",
        short: "R",
        long: &["recursive"],
        dash: &[],
        operand_start: None,
    },
    Alias {
        programs: &["ln"],
        name: "symbolic",
        short: "s",
        long: &["symbolic"],
        dash: &[],
        operand_start: None,
    },
    // A push that can overwrite remote history: forced, mirrored, or a `+` refspec.
    Alias {
        programs: &["git"],
        name: "force",
        short: "f",
        long: &["force", "force-with-lease", "force-if-includes", "mirror"],
        dash: &[],
        operand_start: Some('+'),
    },
    // A push that deletes remote refs: `-d`, `--delete`, `--prune`, `--mirror`, `:branch`.
    Alias {
        programs: &["git"],
        name: "delete",
        short: "d",
        long: &["delete", "prune", "mirror"],
        dash: &[],
        operand_start: Some(':'),
    },
    Alias {
        programs: &["curl"],
        name: "insecure",
        short: "k",
        long: &["insecure"],
        dash: &[],
        operand_start: None,
    },
    Alias {
        programs: &["wget"],
        name: "insecure",
        short: "",
        long: &["no-check-certificate"],
        dash: &[],
        operand_start: None,
    },
    Alias {
        programs: &["find"],
        name: "delete",
        short: "",
        long: &[],
        dash: &["-delete"],
        operand_start: None,
    },
    Alias {
        programs: &["find"],
        name: "exec",
        short: "",
        long: &[],
        dash: &["-exec", "-execdir", "-ok", "-okdir"],
        operand_start: None,
    },
];

/// Every named flag known, for "did you mean".
pub fn flag_names() -> Vec<&'static str> {
    let mut v: Vec<&str> = ALIASES.iter().map(|a| a.name).collect();
    v.sort_unstable();
    v.dedup();
    v
}

impl FlagName {
    /// Reads a flag as written: `recursive`, `-r`, `--force`, `-delete`.
    pub fn parse(s: &str) -> Result<FlagName, PatternError> {
        let bad = |m: String| PatternError {
            message: m,
            hint: Some("write a named flag (recursive, force, ...), -x or --long".into()),
        };
        if let Some(long) = s.strip_prefix("--") {
            if long.is_empty() || long.contains(['=', ' ']) {
                return Err(bad(format!("flag {s:?} is not a long option")));
            }
            return Ok(FlagName::Long(long.to_string()));
        }
        if let Some(short) = s.strip_prefix('-') {
            let mut chars = short.chars();
            return match (chars.next(), chars.next()) {
                (Some(c), None) if c.is_ascii_graphic() => Ok(FlagName::Short(c)),
                (Some(_), Some(_)) if !short.contains([' ', '=']) => {
                    Ok(FlagName::Dash(s.to_string()))
                }
                _ => Err(bad(format!("flag {s:?} is not an option"))),
            };
        }
        let names = flag_names();
        if names.contains(&s) {
            return Ok(FlagName::Named(s.to_string()));
        }
        Err(PatternError {
            message: format!("flag name {s:?} is not known"),
            hint: Some(match crate::yaml::suggest(s, names.iter().copied()) {
                Some(n) => format!("did you mean `{n}`? Or write it as -x or --{s}"),
                None => format!(
                    "known names: {}; any other flag as -x or --{s}",
                    names.join(", ")
                ),
            }),
        })
    }
}

/// The flags, program and operands of one command in one view.
#[derive(Clone, Debug, Default)]
pub(crate) struct View {
    program: String,
    opaque: bool,
    shorts: Vec<char>,
    longs: Vec<String>,
    dashes: Vec<String>,
    operands: Vec<String>,
    unknown_flags: bool,
    unknown_operands: bool,
}

impl View {
    pub(crate) fn of(words: &[String], stdin_args: bool, canonical: bool) -> View {
        let word = |w: &str| -> String {
            if canonical {
                text::canonical(w).into_owned()
            } else {
                w.to_string()
            }
        };
        let mut v = View {
            program: program_name(&words[0], canonical).into_owned(),
            opaque: has_runtime_text(&words[0]),
            ..Default::default()
        };
        let mut operands_only = false;
        for raw in &words[1..] {
            let w = word(raw);
            if operands_only {
                v.unknown_operands |= has_runtime_text(&w);
                v.operands.push(readable(&w).into_owned());
            } else if w == "--" {
                operands_only = true;
            } else if may_be_flag(&w) {
                v.unknown_flags = true;
                v.unknown_operands = true;
            } else if let Some(long) = w.strip_prefix("--").filter(|l| !l.is_empty()) {
                v.longs
                    .push(long.split('=').next().unwrap_or("").to_string());
            } else if w.len() > 1 && w.starts_with('-') {
                v.shorts.extend(w.chars().skip(1));
                v.dashes.push(w);
            } else {
                v.unknown_operands |= has_runtime_text(&w);
                v.operands.push(readable(&w).into_owned());
            }
        }
        if stdin_args {
            v.unknown_operands = true;
            v.unknown_flags |= !operands_only;
        }
        v
    }
}

/// Three-valued result of a condition on one value: holds, does not, or cannot be told
/// (and why).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Tri {
    /// Holds.
    Yes,
    /// Does not hold.
    No,
    /// Cannot be told, for this reason.
    Unknown(Doubt),
}

impl Tri {
    fn and(self, other: impl FnOnce() -> Tri) -> Tri {
        match self {
            Tri::No => Tri::No,
            Tri::Yes => other(),
            Tri::Unknown(d) => match other() {
                Tri::No => Tri::No,
                _ => Tri::Unknown(d),
            },
        }
    }
}

/// A compiled [`CommandPattern`].
#[derive(Debug)]
pub struct Compiled {
    /// Per program glob: (as written, canonical).
    programs: Vec<(Regex, Regex)>,
    flags: Vec<FlagName>,
    /// Per operand glob: (as written, canonical), and whether it is a path glob.
    args: Vec<(Regex, Regex, bool)>,
    piped_into: Option<Box<Compiled>>,
}

fn glob_pair(g: &str, path: bool) -> Result<(Regex, Regex), PatternError> {
    let to = |g: &str| -> Result<Regex, PatternError> {
        let re = if path {
            fspath::glob_regex(&fspath::check_glob(g).map_err(|m| PatternError {
                message: m,
                hint: None,
            })?)
        } else {
            glob::to_regex(g)
        };
        Regex::new(&re).map_err(|_| PatternError {
            message: format!("bad glob {g:?}"),
            hint: Some("use * for any run of characters, ? for one, [abc] for a class".into()),
        })
    };
    Ok((to(g)?, to(&text::canonical(g))?))
}

impl Compiled {
    /// Compiles a pattern (globs to regular expressions).
    pub fn new(p: &CommandPattern) -> Result<Compiled, PatternError> {
        let mut programs = Vec::new();
        for g in &p.programs {
            if g.contains('/') {
                return Err(PatternError {
                    message: format!("program {g:?} has a /; programs match by base name"),
                    hint: Some(format!("write {:?}", g.rsplit('/').next().unwrap_or(g))),
                });
            }
            programs.push(glob_pair(g, false)?);
        }
        let mut args = Vec::new();
        for g in &p.args {
            let path = g.starts_with('/');
            let (a, b) = glob_pair(g, path)?;
            args.push((a, b, path));
        }
        Ok(Compiled {
            programs,
            flags: p.flags.clone(),
            args,
            piped_into: p
                .piped_into
                .as_deref()
                .map(Compiled::new)
                .transpose()?
                .map(Box::new),
        })
    }

    /// Whether the line matches, in view `canonical`, quantified for the rule's polarity:
    /// `strict` (a rule stronger than allow): some command matches; otherwise every command
    /// does (and there is one).
    pub fn eval(&self, line: &CommandLine, canonical: bool, strict: bool) -> Tri {
        if let Some(d) = &line.doubt {
            return Tri::Unknown(format!("cannot be read as a shell command: {d}"));
        }
        let n = line.commands.len();
        if strict {
            let mut doubt = None;
            for i in 0..n {
                match self.command(line, i, canonical) {
                    Tri::Yes => return Tri::Yes,
                    Tri::Unknown(d) => doubt = doubt.or(Some(d)),
                    Tri::No => {}
                }
            }
            doubt.map_or(Tri::No, Tri::Unknown)
        } else {
            if n == 0 {
                return Tri::No;
            }
            let mut doubt = None;
            for i in 0..n {
                match self.command(line, i, canonical) {
                    Tri::No => return Tri::No,
                    Tri::Unknown(d) => doubt = doubt.or(Some(d)),
                    Tri::Yes => {}
                }
            }
            doubt.map_or(Tri::Yes, Tri::Unknown)
        }
    }

    fn command(&self, line: &CommandLine, i: usize, canonical: bool) -> Tri {
        let v = &line.views[i][canonical as usize];
        let cmd = &line.commands[i];
        if v.opaque {
            if self.programs.is_empty()
                && self.flags.is_empty()
                && self.args.is_empty()
                && self.piped_into.is_none()
            {
                return Tri::Yes;
            }
            return Tri::Unknown(format!(
                "`{}` runs a program named only at run time",
                preview_text(&cmd.display())
            ));
        }
        if !self.programs.is_empty()
            && !self.programs.iter().any(|(raw, canon)| {
                let re = if canonical { canon } else { raw };
                re.is_match(&v.program)
                    || (RUN_SHELL_SCRIPTS.contains(&v.program.as_str())
                        && SHELLS.iter().any(|s| re.is_match(s)))
            })
        {
            return Tri::No;
        }
        let table_name = program_name(&cmd.words[0], true);
        let mut result = Tri::Yes;
        for f in &self.flags {
            result = result.and(|| {
                if has_flag(v, &table_name, f, canonical) {
                    Tri::Yes
                } else if v.unknown_flags {
                    Tri::Unknown(format!(
                        "`{}`: words known only at run time may be flags",
                        preview_text(&cmd.display())
                    ))
                } else {
                    Tri::No
                }
            });
        }
        for (raw, canon, path) in &self.args {
            let re = if canonical { canon } else { raw };
            result = result.and(|| operand_match(v, re, *path, &cmd.display()));
        }
        if let Some(inner) = &self.piped_into {
            result = result.and(|| {
                let mut out = Tri::No;
                for j in 0..line.commands.len() {
                    if !line.feeds(i, j) {
                        continue;
                    }
                    match inner.command(line, j, canonical) {
                        Tri::Yes => return Tri::Yes,
                        Tri::Unknown(d) => out = Tri::Unknown(d),
                        Tri::No => {}
                    }
                }
                out
            });
        }
        result
    }
}

fn operand_match(v: &View, re: &Regex, path: bool, display: &str) -> Tri {
    let mut doubt = None;
    for op in &v.operands {
        if !path {
            if re.is_match(op) {
                return Tri::Yes;
            }
            continue;
        }
        match fspath::normalize(op) {
            Ok(fspath::Normal::Absolute(p)) => {
                if re.is_match(&p) {
                    return Tri::Yes;
                }
            }
            Ok(fspath::Normal::Relative(p)) => {
                if p.starts_with("..") {
                    doubt = Some(format!(
                        "operand {} climbs out of a working directory the policy cannot see",
                        text::preview(op)
                    ));
                }
            }
            Err(why) => doubt = Some(format!("operand {} {why}", text::preview(op))),
        }
    }
    if let Some(d) = doubt {
        return Tri::Unknown(d);
    }
    if v.unknown_operands {
        return Tri::Unknown(format!(
            "`{}`: operands known only at run time",
            preview_text(display)
        ));
    }
    Tri::No
}

/// Is the flag there, through the program's aliases?
fn has_flag(v: &View, program: &str, f: &FlagName, canonical: bool) -> bool {
    let fold = |c: char| if canonical { c.to_ascii_lowercase() } else { c };
    let alias = ALIASES.iter().find(|a| {
        a.programs.contains(&program)
            && match f {
                FlagName::Named(n) => a.name == n,
                FlagName::Short(c) => a.short.contains(*c),
                FlagName::Long(l) => a.long.contains(&l.as_str()),
                FlagName::Dash(d) => a.dash.contains(&d.as_str()),
            }
    });
    let long_present = |name: &str| {
        let name: Cow<'_, str> = if canonical {
            Cow::Owned(name.to_ascii_lowercase())
        } else {
            Cow::Borrowed(name)
        };
        v.longs
            .iter()
            .any(|l| !l.is_empty() && name.starts_with(l.as_str()))
    };
    let short_present = |c: char| v.shorts.contains(&fold(c));
    if let Some(a) = alias {
        return a.short.chars().any(short_present)
            || a.long.iter().any(|l| long_present(l))
            || a.dash.iter().any(|d| v.dashes.iter().any(|w| w == d))
            || a.operand_start.is_some_and(|c| {
                v.operands
                    .iter()
                    .any(|o| o.starts_with(c) && o.len() > c.len_utf8())
            });
    }
    match f {
        FlagName::Named(n) => long_present(&n.replace('_', "-")),
        FlagName::Short(c) => short_present(*c),
        FlagName::Long(l) => long_present(l),
        FlagName::Dash(d) => {
            let d: Cow<'_, str> = if canonical {
                Cow::Owned(d.to_ascii_lowercase())
            } else {
                Cow::Borrowed(d)
            };
            v.dashes.iter().any(|w| *w == d) || d.chars().skip(1).all(short_present)
        }
    }
}

fn preview_text(s: &str) -> String {
    let mut out: String = s.chars().take(60).collect();
    if out.len() < s.len() {
        out.push('…');
    }
    out
}

/// A word shortened and quoted for a reason.
pub(crate) fn preview(s: &str) -> String {
    text::preview(&readable(s))
}
