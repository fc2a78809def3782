//! The structural layer of the shell parser: splits a command line into simple commands at
//! the operators (`;`, `&`, `&&`, `||`, `|`, `|&`, newlines), subshells `( )`, compound
//! commands (`{ }`, `if`, `while`, `until`, `for`, `select`, `case`), function definitions, command and
//! process substitutions (`$(…)`, backticks, `<(…)`, `>(…)`), removes redirections and
//! comments, reads here-documents, decodes ANSI-C quoting (`$'…'`), and marks what only the
//! running shell could know: expansions (`$x`, `${x}`, `$(…)`: [`EXP`]), unquoted glob
//! characters ([`GLOB`] before them) and unquoted braces ([`BRACE_OPEN`] ...). Each simple
//! command's text, quotes still in it, then goes to the `shlex` crate for word splitting and
//! quote removal.

use super::Doubt;

/// Stands for text produced by an expansion at run time (`$x`, `${x}`, `$(…)`, backticks).
pub const EXP: char = '\u{10FFF0}';
/// Put before an unquoted `*`, `?` or `[` (pathname expansion).
pub const GLOB: char = '\u{10FFF1}';
/// An unquoted `{`.
pub const BRACE_OPEN: char = '\u{10FFF2}';
/// An unquoted `}`.
pub const BRACE_CLOSE: char = '\u{10FFF3}';
/// An unquoted `,`.
pub const BRACE_COMMA: char = '\u{10FFF4}';

/// True for the marker characters, which input must not contain.
pub fn is_marker(c: char) -> bool {
    ('\u{10FFF0}'..='\u{10FFF4}').contains(&c)
}

/// Deepest nesting of substitutions, subshells and `sh -c` scripts.
pub const MAX_DEPTH: usize = 16;
/// Most simple commands (and groups) in one command line.
pub const MAX_NODES: usize = 64;

/// A simple command as scanned: its text for `shlex`, and what it reads on standard input
/// from a here-document or here-string.
#[derive(Debug, Default)]
pub struct Segment {
    /// The node this command is (see [`Scanner::nodes`]).
    pub node: u32,
    /// Words, quotes still in, markers in place of what only the shell knows.
    pub text: String,
    /// Here-document or here-string text, if any.
    pub stdin: Option<String>,
    /// An assignment's array literal, a `for` list: words that are data, not a command.
    pub data_only: bool,
}

/// The scanner's state over one whole command line (all its nested parts).
#[derive(Debug, Default)]
pub struct Scanner {
    /// Every simple command found, in order.
    pub segments: Vec<Segment>,
    /// `feeds[n]`: bit `m` set when node `n`'s output flows into node `m`.
    pub feeds: Vec<u64>,
    /// `member_of[n]`: the node whose place node `n` takes in data flow (the commands of a
    /// subshell or of an `sh -c` script are members of it).
    pub member_of: Vec<Option<u32>>,
    /// Names given to code that runs when the name is called: function bodies and alias
    /// values, (name, node of the body).
    pub definitions: Vec<(String, u32)>,
    /// Here-documents waiting for the next newline: (segment index, delimiter, expands).
    pending_heredocs: Vec<(usize, String, bool)>,
}

/// Reserved words, recognized where a command starts and unquoted.
const RESERVED: [&str; 19] = [
    "!", "{", "}", "if", "then", "else", "elif", "fi", "do", "done", "while", "until", "for",
    "select", "case", "esac", "function", "coproc", "time",
];

/// The reserved words that open a compound command.
const OPENERS: [&str; 7] = ["{", "if", "while", "until", "for", "select", "case"];

/// What ends a list of commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Until {
    /// The end of the text.
    Eof,
    /// A `)` (subshell, substitution).
    Paren,
    /// A reserved word that closes a compound command (`}`, `fi`, `done`).
    Word(&'static str),
    /// The end of a `case` item: `;;`, `;&`, `;;&`, or `esac`.
    CaseItem,
}

impl Until {
    /// Whether `op` ends a list that runs until `self`; an end that belongs to no open
    /// construct is a doubt.
    fn accepts(self, op: Op) -> Result<(), Doubt> {
        match (self, op) {
            (Until::Eof, Op::Eof)
            | (Until::Paren, Op::Close)
            | (Until::CaseItem, Op::CaseBreak | Op::Word("esac")) => Ok(()),
            (Until::Word(w), Op::Word(v)) if w == v => Ok(()),
            (_, Op::Close) => Err("a ) closes nothing".into()),
            (_, Op::Word(v)) => Err(format!("`{v}` closes nothing")),
            (_, Op::CaseBreak) => Err("`;;` outside a case".into()),
            (Until::Paren, _) => Err("a ( is never closed".into()),
            (Until::Word(w), _) => Err(format!("a compound command never reaches its `{w}`")),
            (Until::CaseItem, _) => Err("a case is never closed by `esac`".into()),
            (Until::Eof, _) => Err("the line ends in the middle of a command".into()),
        }
    }
}

impl Scanner {
    /// A new node; members of `parent` take its place in data flow.
    pub fn node(&mut self, parent: Option<u32>) -> Result<u32, Doubt> {
        if self.feeds.len() >= MAX_NODES {
            return Err(format!("more than {MAX_NODES} commands in one line"));
        }
        self.feeds.push(0);
        self.member_of.push(parent);
        Ok((self.feeds.len() - 1) as u32)
    }

    /// Scans `src` as a list of commands; returns its top-level nodes. `parent` is the node
    /// the list runs inside (an `sh -c` script, a subshell).
    pub fn script(
        &mut self,
        src: &[char],
        parent: Option<u32>,
        depth: usize,
    ) -> Result<Vec<u32>, Doubt> {
        let (_, tops) = self.list(src, 0, parent, depth, Until::Eof)?;
        if let Some((_, delim, _)) = self.pending_heredocs.first() {
            return Err(format!("here-document {delim:?} never starts"));
        }
        Ok(tops)
    }

    /// A list of pipelines from `pos` until what `until` names; returns the position after
    /// it, the list's top-level nodes, and what ended it.
    fn list(
        &mut self,
        src: &[char],
        mut pos: usize,
        parent: Option<u32>,
        depth: usize,
        until: Until,
    ) -> Result<(usize, Vec<u32>), Doubt> {
        self.list_ending(src, &mut pos, parent, depth, until)
            .map(|(tops, _)| (pos, tops))
    }

    /// [`Scanner::list`], also saying which end it met (`esac` or `;;` for a case item).
    fn list_ending(
        &mut self,
        src: &[char],
        pos: &mut usize,
        parent: Option<u32>,
        depth: usize,
        until: Until,
    ) -> Result<(Vec<u32>, Op), Doubt> {
        if depth > MAX_DEPTH {
            return Err(format!("nested deeper than {MAX_DEPTH} levels"));
        }
        let mut tops = Vec::new();
        let mut stages: Vec<Vec<u32>> = Vec::new();
        loop {
            let (next, stage, op) = self.stage(src, *pos, parent, depth)?;
            *pos = next;
            tops.extend_from_slice(&stage);
            stages.push(stage);
            match op {
                Op::Pipe => continue,
                Op::Newline => {
                    self.link(&stages);
                    stages.clear();
                    *pos = self.heredocs(src, *pos)?;
                }
                Op::Sep => {
                    self.link(&stages);
                    stages.clear();
                }
                _ => {
                    self.link(&stages);
                    until.accepts(op)?;
                    return Ok((tops, op));
                }
            }
        }
    }

    /// Every node of a pipeline's stage feeds every node of the later stages.
    fn link(&mut self, stages: &[Vec<u32>]) {
        for (i, from) in stages.iter().enumerate() {
            for to in stages[i + 1..].iter().flatten() {
                for f in from {
                    self.feeds[*f as usize] |= 1u64 << to;
                }
            }
        }
    }

    /// One pipeline stage: a subshell, a compound command, a function definition or a simple
    /// command, after any reserved words that only lead into it (`!`, `then`, `do`, `coproc`,
    /// ...). Returns its nodes and the operator after it.
    fn stage(
        &mut self,
        src: &[char],
        mut pos: usize,
        parent: Option<u32>,
        depth: usize,
    ) -> Result<(usize, Vec<u32>, Op), Doubt> {
        if depth > MAX_DEPTH {
            return Err(format!("nested deeper than {MAX_DEPTH} levels"));
        }
        loop {
            pos = skip_blanks(src, pos);
            let Some((word, end)) = reserved(src, pos) else {
                break;
            };
            match word {
                "!" | "then" | "else" | "elif" | "do" => pos = end,
                // `coproc NAME { ...; }`: the name is no command; `coproc cmd` runs cmd.
                "coproc" => pos = compound_after_name(src, end, is_name).unwrap_or(end),
                // The keyword `time` before a compound command; otherwise the wrapper.
                "time" => match compound_after_name(src, end, |w| w == ['-', 'p']) {
                    Some(after) => pos = after,
                    None => break,
                },
                "function" => return self.function(src, end, parent, depth),
                "{" => return self.compound(src, end, parent, depth, None, "}"),
                "if" => return self.compound(src, end, parent, depth, None, "fi"),
                "while" | "until" => return self.compound(src, end, parent, depth, None, "done"),
                "for" | "select" => {
                    return self.compound(src, end, parent, depth, Some("do"), "done")
                }
                "case" => return self.case(src, end, parent, depth),
                closer => return Ok((end, Vec::new(), Op::Word(closer))),
            }
        }
        if src.get(pos) == Some(&'(') {
            let group = self.node(parent)?;
            let (after, _) = self.list(src, pos + 1, Some(group), depth + 1, Until::Paren)?;
            let (after, op) = self.redirections_after(src, after, group, depth)?;
            return Ok((after, vec![group], op));
        }
        let node = self.node(parent)?;
        let seg = self.segment(node, false);
        let (after, op) = self.words(src, pos, seg, depth)?;
        if op == Op::FunctionParens {
            // `name() body`: the name is no command.
            let words = shlex::split(&self.segments[seg].text).unwrap_or_default();
            if words.len() != 1 {
                return Err("a ( in the middle of a command".into());
            }
            self.segments[seg].data_only = true;
            let name = first_word(&self.segments[seg].text);
            return self.function_body(name, src, after, parent, depth);
        }
        Ok((after, vec![node], op))
    }

    /// A new segment of node `node`.
    fn segment(&mut self, node: u32, data_only: bool) -> usize {
        self.segments.push(Segment {
            node,
            data_only,
            ..Default::default()
        });
        self.segments.len() - 1
    }

    /// After a subshell or compound command: its redirections (a here-document becomes the
    /// standard input of the commands inside), then an operator. Any other word is a doubt.
    fn redirections_after(
        &mut self,
        src: &[char],
        pos: usize,
        group: u32,
        depth: usize,
    ) -> Result<(usize, Op), Doubt> {
        let seg = self.segment(group, true);
        let (after, op) = self.words_until(src, pos, seg, depth, true)?;
        if !self.segments[seg].text.is_empty() || op == Op::FunctionParens {
            return Err("words after a compound command".into());
        }
        Ok((after, op))
    }

    /// A compound command from `pos` (just after its opening word) to `closer`; with `head`,
    /// a `for`/`select` head (`NAME in WORDS;`) comes first. Its commands are members of one
    /// node, which is what a pipe into or out of it feeds and reads.
    fn compound(
        &mut self,
        src: &[char],
        pos: usize,
        parent: Option<u32>,
        depth: usize,
        head: Option<&'static str>,
        closer: &'static str,
    ) -> Result<(usize, Vec<u32>, Op), Doubt> {
        let group = self.node(parent)?;
        let mut pos = pos;
        if head.is_some() {
            // Its words are data; their substitutions run and feed the body (`for l in
            // $(curl x); do eval "$l"; done`).
            let seg = self.segment(group, true);
            pos = self.head(src, pos, seg, depth, false)?;
        }
        let (after, _) = self.list(src, pos, Some(group), depth + 1, Until::Word(closer))?;
        let (after, op) = self.redirections_after(src, after, group, depth)?;
        Ok((after, vec![group], op))
    }

    /// `case WORD in [(]PATTERN[|PATTERN]...) LIST ;; ... esac` from just after `case`. The
    /// word and patterns are data (their substitutions run); every item's commands are
    /// members of the case's node.
    fn case(
        &mut self,
        src: &[char],
        pos: usize,
        parent: Option<u32>,
        depth: usize,
    ) -> Result<(usize, Vec<u32>, Op), Doubt> {
        let group = self.node(parent)?;
        let seg = self.segment(group, true);
        let mut pos = self.head(src, pos, seg, depth, true)?;
        loop {
            pos = self.blank_lines(src, pos)?;
            if let Some(("esac", end)) = reserved(src, pos) {
                pos = end;
                break;
            }
            if src.get(pos) == Some(&'(') {
                pos += 1;
            }
            loop {
                pos = skip_blanks(src, pos);
                match src.get(pos) {
                    Some(')') => break,
                    Some('|') => pos += 1,
                    Some(&c) if !is_word_end(c) => {
                        pos = self.word(src, pos, seg, depth, &mut String::new())?;
                    }
                    _ => return Err("a case pattern that cannot be read".into()),
                }
            }
            pos += 1;
            let (_, end) =
                self.list_ending(src, &mut pos, Some(group), depth + 1, Until::CaseItem)?;
            if end == Op::Word("esac") {
                break;
            }
        }
        let (after, op) = self.redirections_after(src, pos, group, depth)?;
        Ok((after, vec![group], op))
    }

    /// The head of a `for`/`select` (`NAME [in WORDS]` up to `;`, a newline or `do`) or, with
    /// `case`, of a case (`WORD in`): its words go to data segment `seg`.
    fn head(
        &mut self,
        src: &[char],
        mut pos: usize,
        seg: usize,
        depth: usize,
        case: bool,
    ) -> Result<usize, Doubt> {
        loop {
            pos = skip_blanks(src, pos);
            match src.get(pos) {
                Some(';') if !case && src.get(pos + 1) != Some(&';') => return Ok(pos + 1),
                Some('\n') if !case => return self.heredocs(src, pos + 1),
                Some('\n') => pos = self.heredocs(src, pos + 1)?,
                Some(&c) if !is_word_end(c) => {
                    match reserved(src, pos) {
                        Some(("do", _)) if !case => return Ok(pos),
                        _ => {}
                    }
                    let mut word = String::new();
                    pos = self.word(src, pos, seg, depth, &mut word)?;
                    if case && word == "in" {
                        return Ok(pos);
                    }
                    self.push_word(seg, &word);
                }
                _ => {
                    return Err(format!(
                        "a {} head that cannot be read",
                        if case { "case" } else { "for" }
                    ))
                }
            }
        }
    }

    /// Blanks, newlines (and the here-documents they start) and comments.
    fn blank_lines(&mut self, src: &[char], mut pos: usize) -> Result<usize, Doubt> {
        loop {
            pos = skip_blanks(src, pos);
            match src.get(pos) {
                Some('\n') => pos = self.heredocs(src, pos + 1)?,
                Some('#') => {
                    while src.get(pos).is_some_and(|c| *c != '\n') {
                        pos += 1;
                    }
                }
                _ => return Ok(pos),
            }
        }
    }

    /// `function NAME [()] BODY` from just after `function`.
    fn function(
        &mut self,
        src: &[char],
        pos: usize,
        parent: Option<u32>,
        depth: usize,
    ) -> Result<(usize, Vec<u32>, Op), Doubt> {
        let node = self.node(parent)?;
        let seg = self.segment(node, true);
        let mut name = String::new();
        let mut pos = self.word(src, skip_blanks(src, pos), seg, depth, &mut name)?;
        let open = skip_blanks(src, pos);
        if src.get(open) == Some(&'(') {
            let close = skip_blanks(src, open + 1);
            if src.get(close) != Some(&')') {
                return Err("a ( in the middle of a command".into());
            }
            pos = close + 1;
        }
        let name = first_word(&name);
        self.function_body(name, src, pos, parent, depth)
    }

    /// A function's body (the next command, usually compound) from `pos`: its commands are
    /// seen as run, and calls of `name` take their place in data flow.
    fn function_body(
        &mut self,
        name: String,
        src: &[char],
        pos: usize,
        parent: Option<u32>,
        depth: usize,
    ) -> Result<(usize, Vec<u32>, Op), Doubt> {
        let pos = self.blank_lines(src, pos)?;
        let (after, nodes, op) = self.stage(src, pos, parent, depth + 1)?;
        for n in nodes {
            self.definitions.push((name.clone(), n));
        }
        Ok((after, Vec::new(), op))
    }

    /// The words of segment `seg` until an operator.
    fn words(
        &mut self,
        src: &[char],
        pos: usize,
        seg: usize,
        depth: usize,
    ) -> Result<(usize, Op), Doubt> {
        self.words_until(src, pos, seg, depth, false)
    }

    /// [`Scanner::words`]; with `reserved_ends`, a reserved word also ends them, unread, as a
    /// separator would (`if (x) then`, `while (x) do`: after a compound command).
    fn words_until(
        &mut self,
        src: &[char],
        mut pos: usize,
        seg: usize,
        depth: usize,
        reserved_ends: bool,
    ) -> Result<(usize, Op), Doubt> {
        loop {
            pos = skip_blanks(src, pos);
            let Some(&c) = src.get(pos) else {
                return Ok((pos, Op::Eof));
            };
            let next = src.get(pos + 1).copied();
            match c {
                '\n' => return Ok((pos + 1, Op::Newline)),
                ';' if next == Some(';') => {
                    let n = if src.get(pos + 2) == Some(&'&') { 3 } else { 2 };
                    return Ok((pos + n, Op::CaseBreak));
                }
                ';' if next == Some('&') => return Ok((pos + 2, Op::CaseBreak)),
                ';' => return Ok((pos + 1, Op::Sep)),
                '&' if next == Some('&') => return Ok((pos + 2, Op::Sep)),
                '&' if next == Some('>') => {
                    pos = self.redirect(src, pos + 1, seg, depth)?;
                }
                '&' => return Ok((pos + 1, Op::Sep)),
                '|' if next == Some('|') => return Ok((pos + 2, Op::Sep)),
                '|' if next == Some('&') => return Ok((pos + 2, Op::Pipe)),
                '|' => return Ok((pos + 1, Op::Pipe)),
                ')' => return Ok((pos + 1, Op::Close)),
                '(' => {
                    // `name()` defines a function: its body follows.
                    let close = skip_blanks(src, pos + 1);
                    if src.get(close) == Some(&')') {
                        return Ok((close + 1, Op::FunctionParens));
                    }
                    return Err("a ( in the middle of a command".into());
                }
                '#' => {
                    while pos < src.len() && src[pos] != '\n' {
                        pos += 1;
                    }
                }
                '<' | '>' if next == Some('(') => {
                    // Process substitution: a file name that only exists at run time.
                    let mut word = String::new();
                    pos = self.substitution(src, pos + 2, seg, depth, &mut word)?;
                    let word = word + &self.word_rest(src, &mut pos, seg, depth)?;
                    self.push_word(seg, &word);
                }
                '<' | '>' => pos = self.redirect(src, pos, seg, depth)?,
                _ if reserved_ends && reserved(src, pos).is_some() => return Ok((pos, Op::Sep)),
                _ => {
                    // Digits right before < or > name a file descriptor.
                    let mut d = pos;
                    while src.get(d).is_some_and(char::is_ascii_digit) {
                        d += 1;
                    }
                    if d > pos
                        && matches!(src.get(d), Some('<' | '>'))
                        && src.get(d + 1) != Some(&'(')
                    {
                        pos = self.redirect(src, d, seg, depth)?;
                        continue;
                    }
                    let mut word = String::new();
                    pos = self.word(src, pos, seg, depth, &mut word)?;
                    // `name=(a b c)`: an array literal, data.
                    if word.ends_with('=') && src.get(pos) == Some(&'(') {
                        let data = self.node(Some(self.segments[seg].node))?;
                        let inner = self.segment(data, true);
                        let (after, op) = self.words(src, pos + 1, inner, depth + 1)?;
                        if op != Op::Close {
                            return Err("an array literal ( is never closed".into());
                        }
                        pos = after;
                    }
                    self.push_word(seg, &word);
                }
            }
        }
    }

    fn push_word(&mut self, seg: usize, word: &str) {
        let text = &mut self.segments[seg].text;
        if !text.is_empty() {
            text.push(' ');
        }
        text.push_str(word);
    }

    /// A redirection operator at `pos` (`<`, `>`, `>>`, `<<`, `<<-`, `<<<`, `>&`, `<&`, `<>`,
    /// `>|`, after an optional `&`), and its target, which is dropped (its substitutions
    /// still run). Here-documents and here-strings become the segment's standard input.
    fn redirect(
        &mut self,
        src: &[char],
        mut pos: usize,
        seg: usize,
        depth: usize,
    ) -> Result<usize, Doubt> {
        let first = src[pos];
        pos += 1;
        let mut heredoc = false;
        let mut herestring = false;
        match (first, src.get(pos)) {
            ('<', Some('<')) => {
                pos += 1;
                if src.get(pos) == Some(&'<') {
                    pos += 1;
                    herestring = true;
                } else {
                    if src.get(pos) == Some(&'-') {
                        pos += 1;
                    }
                    heredoc = true;
                }
            }
            ('>', Some('>' | '|')) | ('<', Some('>')) => pos += 1,
            (_, Some('&')) => {
                pos += 1;
                let fd = skip_blanks(src, pos);
                if src.get(fd).is_some_and(|c| c.is_ascii_digit() || *c == '-') {
                    let mut end = fd;
                    while src
                        .get(end)
                        .is_some_and(|c| c.is_ascii_digit() || *c == '-')
                    {
                        end += 1;
                    }
                    if src.get(end).is_none_or(|c| is_word_end(*c)) {
                        return Ok(end);
                    }
                }
            }
            _ => {}
        }
        pos = skip_blanks(src, pos);
        if matches!(src.get(pos), Some('<' | '>')) && src.get(pos + 1) == Some(&'(') {
            // `sh < <(curl x)`: what the substitution writes is the command's input.
            let mut after = self.substitution(src, pos + 2, seg, depth, &mut String::new())?;
            self.word_rest(src, &mut after, seg, depth)?;
            return Ok(after);
        }
        if src.get(pos).is_none_or(|c| is_word_end(*c)) {
            return Err("a redirection without a target".into());
        }
        let mut target = String::new();
        pos = self.word(src, pos, seg, depth, &mut target)?;
        if heredoc {
            let quoted = target.contains(['\'', '"', '\\']);
            let delim = shlex::split(&target)
                .and_then(|w| w.into_iter().next())
                .ok_or_else(|| "a here-document delimiter that cannot be read".to_string())?;
            self.pending_heredocs.push((seg, delim, !quoted));
        } else if herestring {
            let text = shlex::split(&target)
                .map(|w| w.join(" "))
                .unwrap_or_default();
            self.segments[seg].stdin = Some(text);
        }
        Ok(pos)
    }

    /// After a newline: the bodies of pending here-documents, line by line up to each
    /// delimiter. An expanding body's substitutions run.
    fn heredocs(&mut self, src: &[char], mut pos: usize) -> Result<usize, Doubt> {
        for (seg, delim, expands) in std::mem::take(&mut self.pending_heredocs) {
            let mut body = String::new();
            loop {
                if pos >= src.len() {
                    break;
                }
                let end = src[pos..]
                    .iter()
                    .position(|c| *c == '\n')
                    .map_or(src.len(), |i| pos + i);
                let line: String = src[pos..end].iter().collect();
                pos = (end + 1).min(src.len());
                if line.trim_start_matches('\t') == delim {
                    break;
                }
                body.push_str(&line);
                body.push('\n');
            }
            if expands {
                let chars: Vec<char> = body.chars().collect();
                let mut i = 0;
                let mut sink = String::new();
                while i < chars.len() {
                    match chars[i] {
                        '\\' => i += 2,
                        '$' | '`' => i = self.dollar(&chars, i, seg, 1, &mut sink)?,
                        _ => i += 1,
                    }
                }
            }
            self.segments[seg].stdin = Some(body);
        }
        Ok(pos)
    }

    /// One word from `pos`, in shlex-ready form, appended to `out`. A leading unquoted `~`,
    /// `~user`, `~+` or `~-` (a home or working directory) becomes `/` and [`EXP`]: an
    /// absolute path known only at run time.
    fn word(
        &mut self,
        src: &[char],
        mut pos: usize,
        seg: usize,
        depth: usize,
        out: &mut String,
    ) -> Result<usize, Doubt> {
        // Up to here a `[` is known to have no `]` after it in the word (see below).
        let mut literal_until = 0;
        if out.is_empty() && src.get(pos) == Some(&'~') {
            let end = src[pos..]
                .iter()
                .position(|c| *c == '/' || is_word_end(*c))
                .map_or(src.len(), |i| pos + i);
            let prefix = &src[pos + 1..end];
            if prefix
                .iter()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '+'))
            {
                out.push('/');
                out.push(EXP);
                pos = end;
            }
        }
        while let Some(&c) = src.get(pos) {
            if is_word_end(c) {
                break;
            }
            match c {
                '\\' => match src.get(pos + 1) {
                    Some('\n') => pos += 2,
                    Some(&n) => {
                        out.push('\\');
                        out.push(n);
                        pos += 2;
                    }
                    None => return Err("the line ends in a lone backslash".into()),
                },
                '\'' => {
                    let close = src[pos + 1..]
                        .iter()
                        .position(|c| *c == '\'')
                        .ok_or_else(|| "a ' is never closed".to_string())?;
                    out.extend(&src[pos..pos + close + 2]);
                    pos += close + 2;
                }
                '"' => pos = self.double(src, pos, seg, depth, out)?,
                '$' if src.get(pos + 1) == Some(&'\'') => pos = ansi_c(src, pos + 2, out)?,
                '$' if src.get(pos + 1) == Some(&'"') => pos += 1,
                '$' | '`' => pos = self.dollar(src, pos, seg, depth, out)?,
                // A `[` opens a class only with a `]` after it in the word.
                '[' if pos < literal_until || {
                    literal_until = plain_until_word_end(src, pos + 1).unwrap_or(0);
                    pos < literal_until
                } =>
                {
                    out.push(c);
                    pos += 1;
                }
                '*' | '?' | '[' => {
                    out.push(GLOB);
                    out.push(c);
                    pos += 1;
                }
                '{' if src.get(pos + 1) != Some(&'}') => {
                    out.push(BRACE_OPEN);
                    pos += 1;
                }
                '}' => {
                    out.push(BRACE_CLOSE);
                    pos += 1;
                }
                ',' => {
                    out.push(BRACE_COMMA);
                    pos += 1;
                }
                _ => {
                    out.push(c);
                    pos += 1;
                }
            }
        }
        Ok(pos)
    }

    /// The rest of a word after a process substitution.
    fn word_rest(
        &mut self,
        src: &[char],
        pos: &mut usize,
        seg: usize,
        depth: usize,
    ) -> Result<String, Doubt> {
        let mut rest = String::new();
        *pos = self.word(src, *pos, seg, depth, &mut rest)?;
        Ok(rest)
    }

    /// A double-quoted part from the `"` at `pos`, copied with its quotes; expansions inside
    /// become [`EXP`].
    fn double(
        &mut self,
        src: &[char],
        mut pos: usize,
        seg: usize,
        depth: usize,
        out: &mut String,
    ) -> Result<usize, Doubt> {
        out.push('"');
        pos += 1;
        loop {
            match src.get(pos) {
                None => return Err("a \" is never closed".into()),
                Some('"') => {
                    out.push('"');
                    return Ok(pos + 1);
                }
                Some('\\') => {
                    let Some(&n) = src.get(pos + 1) else {
                        return Err("a \" is never closed".into());
                    };
                    out.push('\\');
                    out.push(n);
                    pos += 2;
                }
                Some('$' | '`') => pos = self.dollar(src, pos, seg, depth, out)?,
                Some(&c) => {
                    out.push(c);
                    pos += 1;
                }
            }
        }
    }

    /// An expansion at `pos` (`$…` or a backtick): becomes [`EXP`]; the commands of a command
    /// substitution are scanned and feed segment `seg`. A `$` that starts nothing stays.
    fn dollar(
        &mut self,
        src: &[char],
        pos: usize,
        seg: usize,
        depth: usize,
        out: &mut String,
    ) -> Result<usize, Doubt> {
        if src[pos] == '`' {
            let mut inner = Vec::new();
            let mut i = pos + 1;
            loop {
                match src.get(i) {
                    None => return Err("a ` is never closed".into()),
                    Some('`') => break,
                    Some('\\') if matches!(src.get(i + 1), Some('`' | '\\' | '$')) => {
                        inner.push(src[i + 1]);
                        i += 2;
                    }
                    Some(&c) => {
                        inner.push(c);
                        i += 1;
                    }
                }
            }
            self.nested_script(&inner, seg, depth)?;
            out.push(EXP);
            return Ok(i + 1);
        }
        match src.get(pos + 1) {
            Some('(') if src.get(pos + 2) == Some(&'(') => {
                // Arithmetic: no command, but substitutions inside it run.
                let mut level = 0usize;
                let mut i = pos + 1;
                let mut sink = String::new();
                loop {
                    match src.get(i) {
                        None => return Err("a $(( is never closed".into()),
                        Some('(') => level += 1,
                        Some(')') => {
                            level -= 1;
                            if level == 0 {
                                break;
                            }
                        }
                        Some('$' | '`') => {
                            i = self.dollar(src, i, seg, depth + 1, &mut sink)?;
                            continue;
                        }
                        _ => {}
                    }
                    i += 1;
                }
                out.push(EXP);
                Ok(i + 1)
            }
            Some('(') => {
                let mut ignored = String::new();
                let after = self.substitution(src, pos + 2, seg, depth, &mut ignored)?;
                out.push(EXP);
                Ok(after)
            }
            Some('{') => {
                let mut level = 0usize;
                let mut i = pos + 1;
                let mut sink = String::new();
                loop {
                    match src.get(i) {
                        None => return Err("a ${ is never closed".into()),
                        Some('{') => level += 1,
                        Some('}') => {
                            level -= 1;
                            if level == 0 {
                                break;
                            }
                        }
                        Some('\\') => i += 1,
                        Some('\'') => {
                            let close = src[i + 1..]
                                .iter()
                                .position(|c| *c == '\'')
                                .ok_or_else(|| "a ' is never closed".to_string())?;
                            i += close + 1;
                        }
                        Some('$' | '`') => {
                            i = self.dollar(src, i, seg, depth + 1, &mut sink)?;
                            continue;
                        }
                        _ => {}
                    }
                    i += 1;
                }
                out.push(EXP);
                Ok(i + 1)
            }
            Some(c) if c.is_ascii_alphanumeric() || *c == '_' => {
                let mut i = pos + 1;
                if c.is_ascii_digit() {
                    i += 1;
                } else {
                    while src
                        .get(i)
                        .is_some_and(|c| c.is_ascii_alphanumeric() || *c == '_')
                    {
                        i += 1;
                    }
                }
                out.push(EXP);
                Ok(i)
            }
            Some('@' | '*' | '#' | '?' | '-' | '$' | '!') => {
                out.push(EXP);
                Ok(pos + 2)
            }
            _ => {
                out.push('$');
                Ok(pos + 1)
            }
        }
    }

    /// A command or process substitution's body from `pos` (just after its `(`) to its `)`;
    /// its commands feed segment `seg`.
    fn substitution(
        &mut self,
        src: &[char],
        pos: usize,
        seg: usize,
        depth: usize,
        out: &mut String,
    ) -> Result<usize, Doubt> {
        let (after, tops) = self.list(src, pos, None, depth + 1, Until::Paren)?;
        let to = self.segments[seg].node;
        for t in tops {
            self.feeds[t as usize] |= 1u64 << to;
        }
        out.push(EXP);
        Ok(after)
    }

    fn nested_script(&mut self, inner: &[char], seg: usize, depth: usize) -> Result<(), Doubt> {
        let (_, tops) = self.list(inner, 0, None, depth + 1, Until::Eof)?;
        let to = self.segments[seg].node;
        for t in tops {
            self.feeds[t as usize] |= 1u64 << to;
        }
        Ok(())
    }

    /// The transitive data flow: `result[n]` has bit `m` set when anything `n` writes can
    /// reach `m` (pipes, substitutions, through members of subshells, compound commands and
    /// scripts). `calls` are (node of a call, node of the function or alias body it runs):
    /// what feeds the call feeds the body's commands, and what they write goes where the
    /// call's output goes.
    pub fn flow(&self, calls: &[(u32, u32)]) -> Vec<u64> {
        let n = self.feeds.len();
        let mut f = self.feeds.clone();
        for m in 0..n {
            let Some(parent) = self.member_of[m] else {
                continue;
            };
            let p = parent as usize;
            f[m] |= f[p];
            for x in f.iter_mut() {
                if *x & (1u64 << p) != 0 {
                    *x |= 1u64 << m;
                }
            }
        }
        close_transitively(&mut f);
        // A body may hold calls of its own: repeat until nothing changes.
        for _ in 0..=calls.len() {
            let mut changed = false;
            for &(call, body) in calls {
                let body = self.with_members(body);
                let from_call = f[call as usize];
                for (x, fx) in f.iter_mut().enumerate() {
                    if *fx & (1u64 << call) != 0 && *fx & body != body {
                        *fx |= body;
                        changed = true;
                    }
                    if body & (1u64 << x) != 0 && *fx | from_call != *fx {
                        *fx |= from_call;
                        changed = true;
                    }
                }
            }
            close_transitively(&mut f);
            if !changed {
                break;
            }
        }
        f
    }

    /// Node `node` and every node inside it, as a bit set.
    fn with_members(&self, node: u32) -> u64 {
        let mut set = 1u64 << node;
        for (m, parent) in self.member_of.iter().enumerate().skip(node as usize + 1) {
            if parent.is_some_and(|p| set & (1u64 << p) != 0) {
                set |= 1u64 << m;
            }
        }
        set
    }
}

/// Makes `f` transitive: what reaches `k` reaches all `k` reaches.
fn close_transitively(f: &mut [u64]) {
    let n = f.len();
    for k in 0..n {
        for i in 0..n {
            if f[i] & (1u64 << k) != 0 {
                f[i] |= f[k];
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Pipe,
    Sep,
    Newline,
    /// `)`.
    Close,
    /// `;;`, `;&`, `;;&`.
    CaseBreak,
    /// A reserved word that closes a compound command where a command would start.
    Word(&'static str),
    /// `()` after a word: a function definition (internal to [`Scanner::stage`]).
    FunctionParens,
    Eof,
}

fn skip_blanks(src: &[char], mut pos: usize) -> usize {
    loop {
        match src.get(pos) {
            Some(' ' | '\t') => pos += 1,
            Some('\\') if src.get(pos + 1) == Some(&'\n') => pos += 2,
            _ => return pos,
        }
    }
}

/// The reserved word at `pos` (a whole unquoted word), and the position after it.
fn reserved(src: &[char], pos: usize) -> Option<(&'static str, usize)> {
    let end = src[pos.min(src.len())..]
        .iter()
        .position(|c| is_word_end(*c))
        .map_or(src.len(), |i| pos + i);
    let word: String = src[pos.min(end)..end].iter().collect();
    RESERVED.iter().find(|r| **r == word).map(|r| (*r, end))
}

/// After `coproc` or `time` at `pos`: where the compound command starts when one follows,
/// directly or past one word that `name` accepts (`coproc NAME { ...; }`, `time -p ( ... )`).
fn compound_after_name(src: &[char], pos: usize, name: impl Fn(&[char]) -> bool) -> Option<usize> {
    let starts_compound = |p: usize| {
        src.get(p) == Some(&'(')
            || reserved(src, p).is_some_and(|(w, _)| OPENERS.contains(&w) || w == "!")
    };
    let first = skip_blanks(src, pos);
    if starts_compound(first) {
        return Some(first);
    }
    let name_end = src[first..]
        .iter()
        .position(|c| is_word_end(*c))
        .map_or(src.len(), |i| first + i);
    let second = skip_blanks(src, name_end);
    (name_end > first && name(&src[first..name_end]) && starts_compound(second)).then_some(second)
}

/// A plain word that can name a coprocess.
fn is_name(w: &[char]) -> bool {
    w.iter().all(|c| c.is_ascii_alphanumeric() || *c == '_')
}

/// Where the word ends, from `pos`, when no `]`, quote, expansion or escape comes first
/// (then a `[` before `pos` is a plain character); `None` otherwise.
fn plain_until_word_end(src: &[char], pos: usize) -> Option<usize> {
    for (i, c) in src.iter().enumerate().skip(pos) {
        match c {
            ']' | '\'' | '"' | '$' | '`' | '\\' => return None,
            c if is_word_end(*c) => return Some(i),
            _ => {}
        }
    }
    Some(src.len())
}

/// The first word of shlex-ready text (a function's name).
fn first_word(text: &str) -> String {
    shlex::split(text)
        .and_then(|w| w.into_iter().next())
        .unwrap_or_default()
}

fn is_word_end(c: char) -> bool {
    matches!(
        c,
        ' ' | '\t' | '\n' | ';' | '&' | '|' | '(' | ')' | '<' | '>'
    )
}

/// Decodes `$'…'` from `pos` (just after the opening quote) and appends it single-quoted.
fn ansi_c(src: &[char], mut pos: usize, out: &mut String) -> Result<usize, Doubt> {
    let mut text = String::new();
    loop {
        let Some(&c) = src.get(pos) else {
            return Err("a $' is never closed".into());
        };
        pos += 1;
        if c == '\'' {
            break;
        }
        if c != '\\' {
            text.push(c);
            continue;
        }
        let Some(&e) = src.get(pos) else {
            return Err("a $' is never closed".into());
        };
        pos += 1;
        let radix_digits = |pos: &mut usize, radix: u32, max: usize| -> Option<u32> {
            let mut v = 0u32;
            let mut n = 0;
            while n < max {
                match src.get(*pos).and_then(|c| c.to_digit(radix)) {
                    Some(d) => {
                        v = v * radix + d;
                        *pos += 1;
                        n += 1;
                    }
                    None => break,
                }
            }
            (n > 0).then_some(v)
        };
        let decoded = match e {
            'a' => Some('\u{7}'),
            'b' => Some('\u{8}'),
            'e' | 'E' => Some('\u{1b}'),
            'f' => Some('\u{c}'),
            'n' => Some('\n'),
            'r' => Some('\r'),
            't' => Some('\t'),
            'v' => Some('\u{b}'),
            '\\' | '\'' | '"' | '?' => Some(e),
            '0'..='7' => {
                pos -= 1;
                radix_digits(&mut pos, 8, 3).and_then(char::from_u32)
            }
            'x' => radix_digits(&mut pos, 16, 2).and_then(char::from_u32),
            'u' => radix_digits(&mut pos, 16, 4).and_then(char::from_u32),
            'U' => radix_digits(&mut pos, 16, 8).and_then(char::from_u32),
            'c' => {
                let ctl = src.get(pos).map(|c| char::from_u32((*c as u32) & 0x1f));
                pos += 1;
                ctl.flatten()
            }
            other => {
                text.push('\\');
                Some(other)
            }
        };
        match decoded {
            // Bash stops the string at a NUL.
            Some('\0') => {
                while src.get(pos).is_some_and(|c| *c != '\'') {
                    pos += 1;
                }
            }
            Some(d) => text.push(d),
            None => return Err("a $'…' escape that cannot be decoded".into()),
        }
    }
    out.push('\'');
    out.push_str(&text.replace('\'', "'\\''"));
    out.push('\'');
    Ok(pos)
}
