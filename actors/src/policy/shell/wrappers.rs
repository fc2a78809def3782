//! Programs that run another program, unwrapped: each becomes a command of its own (with its
//! own options only), and the program it runs follows as the next command.
//!
//! The list is finite (see `docs/policy.md`): `env`, `sudo`, `doas`, `su -c`, `runuser`,
//! `pkexec`, `run0`, `nice`, `ionice`, `nohup`, `setsid`, `timeout`, `chroot`, `stdbuf`,
//! `xargs`, `command`, `builtin`, `exec`, `time`, `busybox`, `toybox`, `taskset`, `chrt`,
//! `unshare`, `nsenter`, `setpriv`, `script -c`, `eval`, `watch`, `trap`, `alias`,
//! `mapfile -C`, `find -exec`/`-execdir`/`-ok`/`-okdir`, `git` (see [`super::git`]), `.` and
//! `source` reading standard input, and the shells `sh`, `bash`, `zsh`, `dash`, `ksh`,
//! `mksh`, `ash` with `-c` (or a script on standard input from a here-document).

use super::{git, has_runtime_text, is_assignment, may_be_flag, program_name, Doubt, Parser};

/// What follows a wrapper's options.
#[derive(Clone, Copy)]
enum Then {
    /// The next word is a program, with its arguments.
    Command,
    /// `n` operands, then a program.
    AfterOperands(usize),
    /// `NAME=value` words, then a program (`env`, `sudo`).
    AfterAssignments,
    /// A shell: `-c SCRIPT` or a script on standard input.
    Shell,
    /// All operands joined by spaces are a script (`eval`, `watch`).
    Joined,
    /// The first operand is a script, run on the signals named after it (`trap`).
    Trap,
    /// Each `NAME=VALUE` operand makes NAME run VALUE as a script (`alias`).
    Aliases,
    /// The first operand is a script file; standard input when it is `/dev/stdin`.
    Source,
    /// Commands between `-exec` and `;` or `+` (`find`).
    Find,
}

struct Spec {
    /// Short options that take a value (the rest of the cluster, or the next word).
    short_value: &'static str,
    /// Long options that take a value (`--name=value` or `--name value`).
    long_value: &'static [&'static str],
    /// Short options after which nothing is run (`command -v`, `sudo -l`).
    stop: &'static str,
    /// Short option whose value is a script (`su -c`).
    script: Option<char>,
    then: Then,
    /// Option (short, long) after which a program follows instead (`runuser -u USER cmd`).
    command_with: Option<(char, &'static str)>,
}

/// The shells: `-c SCRIPT`, or a script on standard input.
pub(crate) const SHELLS: [&str; 7] = ["sh", "bash", "zsh", "dash", "ksh", "mksh", "ash"];

/// File names that are standard input (`bash /dev/stdin`, `source /dev/stdin`).
fn is_stdin(path: &str) -> bool {
    matches!(path, "-" | "/dev/stdin" | "/dev/fd/0" | "/proc/self/fd/0")
}

fn spec(name: &str) -> Option<Spec> {
    let s = |short_value, long_value, stop, then| Spec {
        short_value,
        long_value,
        stop,
        script: None,
        then,
        command_with: None,
    };
    Some(match name {
        "env" => s(
            "uCS",
            &["unset", "chdir", "split-string"],
            "",
            Then::AfterAssignments,
        ),
        "sudo" => s(
            "CDghpRrtTUuc",
            &[
                "chdir",
                "close-from",
                "group",
                "host",
                "prompt",
                "chroot",
                "role",
                "type",
                "command-timeout",
                "other-user",
                "user",
                "login-class",
            ],
            "elVv",
            Then::AfterAssignments,
        ),
        "doas" => s("Cu", &[], "", Then::Command),
        "su" => Spec {
            script: Some('c'),
            ..s(
                "cgGsw",
                &[
                    "command",
                    "group",
                    "supp-group",
                    "shell",
                    "session-command",
                    "whitelist-environment",
                ],
                "",
                Then::AfterOperands(usize::MAX),
            )
        },
        // `runuser -u USER [--] cmd`, or as `su`: `runuser [-l] USER -c SCRIPT`.
        "runuser" => Spec {
            script: Some('c'),
            command_with: Some(('u', "user")),
            ..s(
                "cgGsuw",
                &[
                    "command",
                    "group",
                    "supp-group",
                    "shell",
                    "user",
                    "session-command",
                    "whitelist-environment",
                ],
                "",
                Then::AfterOperands(usize::MAX),
            )
        },
        "pkexec" => s("u", &["user"], "", Then::Command),
        "run0" => s(
            "ugD",
            &[
                "user",
                "group",
                "nice",
                "chdir",
                "setenv",
                "property",
                "description",
                "slice",
                "unit",
                "machine",
                "background",
                "shell-prompt-prefix",
            ],
            "",
            Then::Command,
        ),
        "nice" => s("n", &["adjustment"], "", Then::Command),
        "ionice" => s(
            "cnpPu",
            &["class", "classdata", "pid", "pgid", "uid"],
            "pPu",
            Then::Command,
        ),
        "nohup" | "setsid" | "builtin" | "busybox" | "toybox" => s("", &[], "", Then::Command),
        "taskset" => s("", &["cpu-list"], "", Then::AfterOperands(1)),
        "chrt" => s(
            "TPD",
            &["sched-runtime", "sched-period", "sched-deadline"],
            "",
            Then::AfterOperands(1),
        ),
        "unshare" => s(
            "SGw",
            &[
                "setuid",
                "setgid",
                "wd",
                "map-user",
                "map-group",
                "propagation",
            ],
            "",
            Then::Command,
        ),
        "nsenter" => s("tSG", &["target", "setuid", "setgid"], "", Then::Command),
        "setpriv" => s(
            "",
            &[
                "reuid",
                "regid",
                "ruid",
                "euid",
                "rgid",
                "egid",
                "groups",
                "inh-caps",
                "ambient-caps",
                "bounding-set",
                "securebits",
                "pdeathsig",
                "selinux-label",
                "apparmor-profile",
            ],
            "",
            Then::Command,
        ),
        "script" => Spec {
            script: Some('c'),
            ..s(
                "cEIOTm",
                &[
                    "command",
                    "echo",
                    "log-in",
                    "log-out",
                    "log-timing",
                    "logging-format",
                ],
                "",
                Then::AfterOperands(usize::MAX),
            )
        },
        "exec" => s("a", &[], "", Then::Command),
        "command" => s("", &[], "vV", Then::Command),
        "time" => s("fo", &["format", "output"], "", Then::Command),
        "stdbuf" => s("ioe", &["input", "output", "error"], "", Then::Command),
        "timeout" => s("ks", &["kill-after", "signal"], "", Then::AfterOperands(1)),
        "chroot" => s("", &["userspec", "groups"], "", Then::AfterOperands(1)),
        "xargs" => s(
            "adEILnPs",
            &[
                "arg-file",
                "delimiter",
                "eof",
                "replace",
                "max-lines",
                "max-args",
                "max-procs",
                "max-chars",
                "process-slot-var",
            ],
            "",
            Then::Command,
        ),
        "eval" => s("", &[], "", Then::Joined),
        "trap" => s("", &[], "lp", Then::Trap),
        "alias" => s("", &[], "p", Then::Aliases),
        "." | "source" => s("", &[], "", Then::Source),
        // `mapfile -C CALLBACK`: the callback is evaluated every `-c` lines.
        "mapfile" | "readarray" => Spec {
            script: Some('C'),
            ..s("CcdnOsu", &[], "", Then::AfterOperands(usize::MAX))
        },
        "watch" => s("n", &["interval"], "", Then::Joined),
        "find" => s("", &[], "", Then::Find),
        _ if SHELLS.contains(&name) => s("oO", &["rcfile", "init-file"], "", Then::Shell),
        _ => return None,
    })
}

/// Options of a wrapper: returns (index of the first operand, values of short options,
/// short options seen).
fn options(args: &[String], spec: &Spec, shell: bool) -> (usize, Vec<(char, String)>, Vec<char>) {
    let mut i = 0;
    let mut values = Vec::new();
    let mut seen = Vec::new();
    while let Some(a) = args.get(i) {
        if may_be_flag(a) {
            // An expansion where an option may be: what runs next is unknown.
            return (i, values, seen);
        }
        if a == "--" {
            return (i + 1, values, seen);
        }
        if let Some(long) = a.strip_prefix("--") {
            let name = long.split('=').next().unwrap_or("");
            i += 1;
            if !long.contains('=') && spec.long_value.contains(&name) {
                if let Some(v) = args.get(i) {
                    if name == "split-string" {
                        values.push(('S', v.clone()));
                    }
                }
                i += 1;
            } else if let Some(v) = long.strip_prefix("split-string=") {
                values.push(('S', v.to_string()));
            } else if let Some(v) = long.strip_prefix("command=") {
                values.push(('c', v.to_string()));
            } else if name == "command" {
                // `su --command CMD`
                if let Some(v) = args.get(i) {
                    values.push(('c', v.clone()));
                }
                i += 1;
            }
            continue;
        }
        let is_opt = (a.starts_with('-') || (shell && a.starts_with('+'))) && a.len() > 1;
        if !is_opt {
            // `nice -10` is an option; `-` alone is an operand (or `env -`, which is -i).
            return (i, values, seen);
        }
        i += 1;
        let cluster: Vec<char> = a.chars().skip(1).collect();
        for (j, c) in cluster.iter().enumerate() {
            seen.push(*c);
            if spec.short_value.contains(*c) && !c.is_ascii_digit() {
                let rest: String = cluster[j + 1..].iter().collect();
                let v = if rest.is_empty() {
                    i += 1;
                    args.get(i - 1).cloned().unwrap_or_default()
                } else {
                    rest
                };
                values.push((*c, v));
                break;
            }
        }
    }
    (i, values, seen)
}

/// Unwraps `words` (a simple command of node `node`) into commands.
pub(super) fn unwrap(
    p: &mut Parser,
    mut words: Vec<String>,
    node: u32,
    mut stdin: Option<String>,
    depth: usize,
) -> Result<(), Doubt> {
    let mut stdin_args = false;
    for _ in 0..super::scan::MAX_DEPTH {
        if words.is_empty() {
            return Ok(());
        }
        let name = if has_runtime_text(&words[0]) {
            None
        } else {
            Some(program_name(&words[0], true).into_owned())
        };
        if let Some(sub) = name
            .as_deref()
            .and_then(|n| n.strip_prefix("git-"))
            .filter(|s| !s.is_empty())
        {
            // `git-push ...` is `git push ...`: git runs its subcommands so.
            let mut as_git = vec!["git".to_string(), sub.to_string()];
            as_git.extend(words.drain(1..));
            p.push(node, words, stdin_args)?;
            words = as_git;
            continue;
        }
        if name.as_deref() == Some("git") {
            let git = git::read(words)?;
            p.push(node, git.words, stdin_args)?;
            for script in &git.scripts {
                p.script(script, node, depth)?;
            }
            match git.program {
                Some(program) => {
                    words = program;
                    continue;
                }
                None => return Ok(()),
            }
        }
        let Some(spec) = name.as_deref().and_then(spec) else {
            return p.push(node, words, stdin_args);
        };
        let name = name.unwrap_or_default();
        let shell = SHELLS.contains(&name.as_str());
        let args = &words[1..];
        let (first, values, seen) = options(args, &spec, shell);
        let own_end = 1 + first;
        let rest: Vec<String> = words[own_end..].to_vec();
        words.truncate(own_end);
        // The wrapper as a command of its own, with its own options.
        let own = std::mem::take(&mut words);
        if seen.iter().any(|c| spec.stop.contains(*c)) {
            return p.push(node, own, stdin_args);
        }
        let given = |(short, long): (char, &str)| {
            seen.contains(&short)
                || own[1..].iter().any(|a| {
                    a.strip_prefix("--")
                        .is_some_and(|l| l.split('=').next() == Some(long))
                })
        };
        let then = match spec.command_with {
            Some(option) if given(option) => Then::Command,
            _ => spec.then,
        };
        let mut script_value = spec
            .script
            .and_then(|s| values.iter().find(|(c, _)| *c == s))
            .map(|(_, v)| v.clone());
        if spec.script.is_some() && script_value.is_none() && !matches!(then, Then::Command) {
            // `su root -c CMD`: options may follow the user name.
            script_value = rest.iter().enumerate().find_map(|(i, w)| match w.as_str() {
                "-c" | "--command" => rest.get(i + 1).cloned(),
                _ => w.strip_prefix("--command=").map(str::to_string),
            });
        }
        p.push(node, own, stdin_args)?;
        if let Some(script) = script_value {
            return p.script(&script, node, depth);
        }
        words = match then {
            Then::Command => {
                if name == "xargs" {
                    stdin_args = true;
                }
                rest
            }
            Then::AfterOperands(n) => rest.into_iter().skip(n).collect(),
            Then::AfterAssignments => {
                // `env -` is `env -i`.
                let mut rest: Vec<String> = rest
                    .into_iter()
                    .skip_while(|w| w == "-" && name == "env")
                    .skip_while(|w| is_assignment(w))
                    .collect();
                // `env -S 'rm -rf' /`: the string is split into words before the rest.
                if let Some((_, split)) = values.iter().find(|(c, _)| *c == 'S') {
                    let mut words = shlex::split(split)
                        .ok_or_else(|| "env -S with quotes that never close".to_string())?;
                    words.append(&mut rest);
                    rest = words;
                }
                rest
            }
            Then::Joined => {
                if rest.is_empty() {
                    return Ok(());
                }
                return p.script(&rest.join(" "), node, depth);
            }
            Then::Shell => {
                if seen.contains(&'c') {
                    // The first operand is the script; the others are its $0, $1, ...
                    return match rest.first() {
                        Some(script) => p.script(script, node, depth),
                        None => Err(format!("{name} -c without a script")),
                    };
                }
                let reads_stdin = seen.contains(&'s') || rest.first().is_none_or(|f| is_stdin(f));
                return stdin_script(p, reads_stdin, stdin.take(), node, depth);
            }
            Then::Source => {
                let reads_stdin = rest.first().is_some_and(|f| is_stdin(f));
                return stdin_script(p, reads_stdin, stdin.take(), node, depth);
            }
            Then::Trap => {
                // One operand alone (or `-`) resets signals; otherwise it is the action.
                return match rest.first() {
                    Some(action) if rest.len() > 1 && action != "-" => {
                        p.script(action, node, depth)
                    }
                    _ => Ok(()),
                };
            }
            Then::Aliases => {
                for operand in &rest {
                    if let Some((alias, value)) = operand.split_once('=') {
                        let body = p.node(node)?;
                        p.define(alias, body);
                        p.script(value, body, depth)?;
                    }
                }
                return Ok(());
            }
            Then::Find => {
                let mut i = 0;
                while i < rest.len() {
                    if matches!(rest[i].as_str(), "-exec" | "-execdir" | "-ok" | "-okdir") {
                        let end = rest[i + 1..]
                            .iter()
                            .position(|w| w == ";" || w == "+")
                            .map_or(rest.len(), |e| i + 1 + e);
                        let inner: Vec<String> = rest[i + 1..end].to_vec();
                        let inner_node = p.node(node)?;
                        unwrap(p, inner, inner_node, None, depth)?;
                        i = end;
                    }
                    i += 1;
                }
                // find's own primaries (-delete, ...) count as its flags.
                if let Some(own) = p.out.iter_mut().rev().find(|c| c.node == node) {
                    own.words.extend(rest);
                }
                return Ok(());
            }
        };
    }
    Err(format!(
        "wrappers nested deeper than {} levels",
        super::scan::MAX_DEPTH
    ))
}

/// A shell or `source` that reads its script from standard input: a here-document or
/// here-string there is its script. Otherwise the script is a file (not read), or standard
/// input comes from elsewhere (a pipe: see `piped_into`).
fn stdin_script(
    p: &mut Parser,
    reads_stdin: bool,
    stdin: Option<String>,
    node: u32,
    depth: usize,
) -> Result<(), Doubt> {
    match (reads_stdin, stdin) {
        (true, Some(script)) => p.script(&script, node, depth),
        _ => Ok(()),
    }
}
