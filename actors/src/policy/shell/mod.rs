//! The `command` condition's parser: a command line read as a POSIX shell would read it,
//! into the simple commands it runs.
//!
//! Two layers. `scan` is warden's own: it knows the shell's structure (operators,
//! subshells, substitutions, redirections, here-documents, ANSI-C quoting) and marks what only
//! the running shell could know. Each simple command's text then goes to the `shlex` crate,
//! which splits words and removes quotes and escapes. `wrappers` unwraps programs that run
//! another program (`sudo`, `env`, `timeout`, `xargs`, `sh -c`, ...), `git` reads git's
//! global options, aliases and settings, and [`pattern`] matches program, flags, operands
//! and data flow.
//!
//! What is and is not understood is listed in `docs/policy.md` ("The command parser"); a
//! line that cannot be read reports why ([`CommandLine::doubt`]) and rules stronger than
//! allow then match it.

mod git;
pub mod pattern;
mod scan;
mod wrappers;

use std::borrow::Cow;

pub use pattern::{CommandPattern, Compiled, FlagName, PatternError, Tri};
use scan::{Scanner, BRACE_CLOSE, BRACE_COMMA, BRACE_OPEN, EXP, GLOB};

/// Why a command line (or a part of it) cannot be judged.
pub type Doubt = String;

/// Longest command line read; a longer one is not understood.
pub const MAX_LINE_BYTES: usize = 64 * 1024;
/// Most words a brace expansion may make of one word.
const MAX_BRACE_WORDS: usize = 256;

/// One program run by a command line: its word and its own arguments (a wrapper's own
/// options only; the program it runs is a command of its own).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Command {
    /// Which node of the line's data flow it belongs to.
    node: u32,
    /// The program word, then its arguments; markers where only the shell knows the text.
    pub(crate) words: Vec<String>,
    /// `xargs` adds arguments read from standard input.
    stdin_args: bool,
}

impl Command {
    /// The words with markers made readable (`$…` for an expansion).
    pub fn display(&self) -> String {
        self.words
            .iter()
            .map(|w| readable(w))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// A parsed command line.
#[derive(Clone, Debug, Default)]
pub struct CommandLine {
    /// Every program it runs, wrappers included, in order.
    pub commands: Vec<Command>,
    /// `flow[n]`: bit `m` set when node `n`'s output reaches node `m`.
    flow: Vec<u64>,
    /// Each command as written and canonical (see [`pattern`]).
    pub(crate) views: Vec<[pattern::View; 2]>,
    /// Why it could not be read, if it could not.
    pub doubt: Option<Doubt>,
}

impl CommandLine {
    /// Parses a command line.
    pub fn parse(line: &str) -> CommandLine {
        if line.len() > MAX_LINE_BYTES {
            return Self::doubtful(format!("longer than {} KiB", MAX_LINE_BYTES / 1024));
        }
        if line.chars().any(scan::is_marker) {
            return Self::doubtful("holds reserved characters (U+10FFF0..U+10FFF4)".into());
        }
        let chars: Vec<char> = line.chars().collect();
        let mut p = Parser::default();
        let result = p
            .scanner
            .script(&chars, None, 0)
            .and_then(|_| p.commands(0));
        p.finish(result)
    }

    /// An argv array (`["rm", "-rf", "/"]`): one program and its arguments, as `exec` runs
    /// them; no shell reads them, but wrappers are unwrapped (`["sh", "-c", "..."]`).
    pub fn argv(words: &[&str]) -> CommandLine {
        if words.iter().any(|w| w.chars().any(scan::is_marker)) {
            return Self::doubtful("holds reserved characters (U+10FFF0..U+10FFF4)".into());
        }
        if words.iter().map(|w| w.len()).sum::<usize>() > MAX_LINE_BYTES {
            return Self::doubtful(format!("longer than {} KiB", MAX_LINE_BYTES / 1024));
        }
        let mut p = Parser::default();
        let result = p.scanner.node(None).and_then(|node| {
            let words: Vec<String> = words.iter().map(|w| w.to_string()).collect();
            if words
                .first()
                .is_some_and(|w| w.contains([' ', '\t', '\n', ';', '|', '&']))
            {
                // `["rm -rf /"]`: a tool that joins its argv into a shell line would run it.
                return Err(format!(
                    "the program word {} holds spaces or shell operators",
                    pattern::preview(&words[0])
                ));
            }
            wrappers::unwrap(&mut p, words, node, None, 0)?;
            p.commands(0)
        });
        p.finish(result)
    }

    fn doubtful(why: Doubt) -> CommandLine {
        CommandLine {
            doubt: Some(why),
            ..Default::default()
        }
    }

    /// True when command `a`'s output can reach command `b` (a pipe, a substitution, through
    /// wrappers and scripts).
    pub fn feeds(&self, a: usize, b: usize) -> bool {
        let (na, nb) = (self.commands[a].node, self.commands[b].node);
        na != nb
            && self
                .flow
                .get(na as usize)
                .is_some_and(|f| f & (1u64 << nb) != 0)
    }
}

/// Turns scanned segments into commands (words, brace expansion, reserved words,
/// assignments, wrappers).
#[derive(Default)]
pub(crate) struct Parser {
    scanner: Scanner,
    /// Segments already turned into commands.
    done: usize,
    /// Depth of each segment's script (index: segment).
    depths: Vec<usize>,
    out: Vec<Command>,
}

impl Parser {
    fn finish(self, result: Result<(), Doubt>) -> CommandLine {
        match result {
            Ok(()) => CommandLine {
                flow: self.scanner.flow(&self.calls()),
                views: self
                    .out
                    .iter()
                    .map(|c| {
                        [
                            pattern::View::of(&c.words, c.stdin_args, false),
                            pattern::View::of(&c.words, c.stdin_args, true),
                        ]
                    })
                    .collect(),
                commands: self.out,
                doubt: None,
            },
            Err(why) => CommandLine::doubtful(why),
        }
    }

    /// Commands that call a function or alias defined in the line: (node of the call, node
    /// of the body). The order of definition and call is not followed: any call of the name
    /// counts, as a loop or a later line may run it.
    fn calls(&self) -> Vec<(u32, u32)> {
        let mut calls = Vec::new();
        for c in &self.out {
            for (name, body) in &self.scanner.definitions {
                if c.words[0] == *name && !has_runtime_text(name) {
                    calls.push((c.node, *body));
                }
            }
        }
        calls
    }

    /// Records `name` as running the commands of node `body` (an alias).
    pub(crate) fn define(&mut self, name: &str, body: u32) {
        self.scanner.definitions.push((name.to_string(), body));
    }

    /// The here-document or here-string given to the nearest subshell or compound command
    /// around node `node` (`{ sh; } <<EOF`): what its commands read.
    fn inherited_stdin(&self, node: u32) -> Option<String> {
        let mut around = self.scanner.member_of[node as usize];
        while let Some(a) = around {
            let given = self
                .scanner
                .segments
                .iter()
                .find(|s| s.node == a && s.data_only && s.stdin.is_some());
            if let Some(s) = given {
                return s.stdin.clone();
            }
            around = self.scanner.member_of[a as usize];
        }
        None
    }

    /// Every segment not yet handled (scripts found while unwrapping add more).
    fn commands(&mut self, base_depth: usize) -> Result<(), Doubt> {
        while self.done < self.scanner.segments.len() {
            let i = self.done;
            self.done += 1;
            let depth = self.depths.get(i).copied().unwrap_or(base_depth);
            let seg = &self.scanner.segments[i];
            if seg.data_only || seg.text.is_empty() {
                continue;
            }
            let node = seg.node;
            let stdin = seg.stdin.clone().or_else(|| self.inherited_stdin(node));
            let words = strip_assignments(split_words(&self.scanner.segments[i].text)?);
            if words.is_empty() {
                continue;
            }
            wrappers::unwrap(self, words, node, stdin, depth)?;
        }
        Ok(())
    }

    /// Scans a script run by command node `node` (`sh -c`, `eval`, a here-document fed to a
    /// shell); its commands take the node's place in data flow.
    pub(crate) fn script(&mut self, text: &str, node: u32, depth: usize) -> Result<(), Doubt> {
        if depth + 1 > scan::MAX_DEPTH {
            return Err(format!(
                "scripts nested deeper than {} levels",
                scan::MAX_DEPTH
            ));
        }
        let first = self.scanner.segments.len();
        let chars: Vec<char> = text.chars().collect();
        self.scanner.script(&chars, Some(node), depth + 1)?;
        let last = self.scanner.segments.len();
        self.depths.resize(first, depth);
        self.depths.resize(last, depth + 1);
        Ok(())
    }

    pub(crate) fn push(
        &mut self,
        node: u32,
        words: Vec<String>,
        stdin_args: bool,
    ) -> Result<(), Doubt> {
        if self.out.len() >= 4 * scan::MAX_NODES {
            return Err(format!(
                "more than {} programs in one line",
                4 * scan::MAX_NODES
            ));
        }
        self.out.push(Command {
            node,
            words,
            stdin_args,
        });
        Ok(())
    }

    pub(crate) fn node(&mut self, parent: u32) -> Result<u32, Doubt> {
        self.scanner.node(Some(parent))
    }
}

/// shlex's words, then brace expansion (`{rm,-rf,/}` is three words, as bash makes it).
fn split_words(text: &str) -> Result<Vec<String>, Doubt> {
    let words = shlex::split(text).ok_or_else(|| "quotes that never close".to_string())?;
    let mut out = Vec::with_capacity(words.len());
    for w in words {
        expand_braces(&w, &mut out)?;
    }
    Ok(out
        .into_iter()
        .map(|w| {
            w.replace(BRACE_OPEN, "{")
                .replace(BRACE_CLOSE, "}")
                .replace(BRACE_COMMA, ",")
        })
        .collect())
}

fn expand_braces(word: &str, out: &mut Vec<String>) -> Result<(), Doubt> {
    if !word.contains(BRACE_OPEN) {
        out.push(word.to_string());
        return Ok(());
    }
    let chars: Vec<char> = word.chars().collect();
    for (open, _) in chars.iter().enumerate().filter(|(_, c)| **c == BRACE_OPEN) {
        let mut level = 0;
        let mut commas = Vec::new();
        let mut close = None;
        for (i, c) in chars.iter().enumerate().skip(open) {
            match *c {
                BRACE_OPEN => level += 1,
                BRACE_CLOSE => {
                    level -= 1;
                    if level == 0 {
                        close = Some(i);
                        break;
                    }
                }
                BRACE_COMMA if level == 1 => commas.push(i),
                _ => {}
            }
        }
        let Some(close) = close else { continue };
        let prefix: String = chars[..open].iter().collect();
        let suffix: String = chars[close + 1..].iter().collect();
        let inner: String = chars[open + 1..close].iter().collect();
        if commas.is_empty() {
            if inner.contains("..") {
                // A sequence ({1..9}, {a..z}): its words are left to run time.
                let mut w = prefix;
                w.push(EXP);
                w.push_str(&suffix);
                return expand_braces(&w, out);
            }
            continue;
        }
        let mut bounds = vec![open];
        bounds.extend(&commas);
        bounds.push(close);
        for pair in bounds.windows(2) {
            let alt: String = chars[pair[0] + 1..pair[1]].iter().collect();
            expand_braces(&format!("{prefix}{alt}{suffix}"), out)?;
            if out.len() > MAX_BRACE_WORDS {
                return Err(format!(
                    "a brace expansion makes more than {MAX_BRACE_WORDS} words"
                ));
            }
        }
        return Ok(());
    }
    out.push(word.to_string());
    Ok(())
}

/// Drops the variable assignments before the program (`FOO=bar cmd`). Reserved words were
/// read by the scanner; one that reaches here was quoted, and runs as a program.
fn strip_assignments(words: Vec<String>) -> Vec<String> {
    let start = words.iter().take_while(|w| is_assignment(w)).count();
    words.into_iter().skip(start).collect()
}

/// `NAME=value`, `NAME+=value`, `NAME[i]=value`.
pub(crate) fn is_assignment(w: &str) -> bool {
    let Some(eq) = w.find('=') else { return false };
    let name = w[..eq].trim_end_matches('+');
    let name = match name.find('[') {
        Some(b) if name.ends_with(']') => &name[..b],
        _ => name,
    };
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// True when the word holds text only the running shell knows (an expansion or a glob).
pub(crate) fn has_runtime_text(w: &str) -> bool {
    w.contains([EXP, GLOB])
}

/// True when the word may start with `-` once the shell has expanded it.
pub(crate) fn may_be_flag(w: &str) -> bool {
    w.starts_with([EXP, GLOB])
}

/// The word's text with glob markers removed (globs kept as their characters) and
/// expansions as `$…`.
pub(crate) fn readable(w: &str) -> Cow<'_, str> {
    if !w.contains([EXP, GLOB]) {
        return Cow::Borrowed(w);
    }
    Cow::Owned(w.replace(GLOB, "").replace(EXP, "$…"))
}

/// The program's name as rules see it in one view: its base name (`/usr/bin/rm` -> `rm`);
/// in the canonical view also case-folded and without `.exe`.
pub(crate) fn program_name(word: &str, canonical: bool) -> Cow<'_, str> {
    let base = word.rsplit('/').next().unwrap_or(word);
    if !canonical {
        return Cow::Borrowed(base);
    }
    let c = crate::policy::text::canonical(base);
    match c.strip_suffix(".exe") {
        Some(s) => Cow::Owned(s.to_string()),
        None => c,
    }
}

#[cfg(test)]
mod tests;
