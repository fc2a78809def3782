//! `git` read as git reads it, so that what it does is in its words: its global options
//! (`-C dir`, `-c key=value`, `--git-dir=...`) are skipped to find the subcommand, aliases
//! given with `-c alias.NAME=...` are expanded (`!…` aliases are shell scripts), settings
//! given with `-c` that change what a push does are added to a push's words
//! (`remote.NAME.push` its refspec, `remote.NAME.mirror` `--mirror`), and the commands git
//! runs are found: `-c` settings whose value is a shell command (`core.pager`,
//! `core.sshCommand`, ...), `rebase --exec`, `submodule foreach`, `bisect run`.
//!
//! Settings made outside the line (`git config`, config files, `GIT_CONFIG_*` variables)
//! are not seen.

use super::scan::EXP;
use super::{may_be_flag, Doubt};

/// Most alias expansions followed (git refuses a loop itself).
const MAX_ALIASES: usize = 8;

/// A git command line, read.
#[derive(Debug, Default)]
pub(super) struct Git {
    /// The words as git runs them: aliases expanded, push settings added.
    pub words: Vec<String>,
    /// Shell scripts git runs (`!` aliases, command settings, `rebase --exec`, ...).
    pub scripts: Vec<String>,
    /// A program git runs with its arguments (`bisect run cmd args`).
    pub program: Option<Vec<String>>,
}

/// Global options that take the next word as their value (or `--name=value`).
const VALUE_OPTIONS: [&str; 8] = [
    "-C",
    "-c",
    "--git-dir",
    "--work-tree",
    "--namespace",
    "--super-prefix",
    "--config-env",
    "--attr-source",
];

/// Settings whose value is a shell command git runs (key in lower case; `pager.` and
/// `credential.helper` by prefix).
const COMMAND_SETTINGS: [&str; 7] = [
    "core.pager",
    "core.editor",
    "sequence.editor",
    "core.sshcommand",
    "core.fsmonitor",
    "core.askpass",
    "diff.external",
];

/// Reads `words` (`git ...`).
pub(super) fn read(mut words: Vec<String>) -> Result<Git, Doubt> {
    let mut settings: Vec<(String, Option<String>)> = Vec::new();
    let Some(mut sub) = subcommand(&words, &mut settings) else {
        return Ok(Git {
            scripts: command_settings(&settings),
            words,
            ..Default::default()
        });
    };
    let mut scripts = Vec::new();
    for _ in 0..MAX_ALIASES {
        let name = words[sub].to_lowercase();
        let alias = settings
            .iter()
            .rev()
            .find(|(k, _)| k.strip_prefix("alias.") == Some(&name));
        match alias {
            None => break,
            // A value known only at run time: so is the subcommand.
            Some((_, None)) => {
                words[sub] = EXP.to_string();
                break;
            }
            Some((_, Some(value))) => {
                if let Some(script) = value.strip_prefix('!') {
                    // git runs `sh -c 'VALUE "$@"'` with the rest as arguments.
                    scripts.push(with_arguments(script, &words[sub + 1..])?);
                    return Ok(Git {
                        words,
                        scripts,
                        program: None,
                    });
                }
                let expansion = shlex::split(value)
                    .ok_or_else(|| format!("git alias {name} with quotes that never close"))?;
                words.splice(sub..=sub, expansion);
                // The expansion may start with global options (git refuses most there).
                settings.clear();
                match subcommand(&words, &mut settings) {
                    Some(s) => sub = s,
                    None => {
                        return Ok(Git {
                            scripts: command_settings(&settings),
                            words,
                            program: None,
                        })
                    }
                }
            }
        }
    }
    scripts.extend(command_settings(&settings));
    let mut program = None;
    match words[sub].as_str() {
        "push" | "send-pack" => {
            let added = push_settings(&settings);
            words.splice(sub + 1..sub + 1, added);
        }
        "rebase" => scripts.extend(option_values(&words[sub + 1..], 'x', "exec")),
        "submodule" => {
            if let Some(at) = words[sub + 1..].iter().position(|w| w == "foreach") {
                let rest: Vec<&String> = words[sub + 2 + at..]
                    .iter()
                    .skip_while(|w| w.starts_with('-'))
                    .collect();
                if !rest.is_empty() {
                    scripts.push(
                        rest.iter()
                            .map(|w| w.as_str())
                            .collect::<Vec<_>>()
                            .join(" "),
                    );
                }
            }
        }
        "bisect" if words.get(sub + 1).is_some_and(|w| w == "run") => {
            program = Some(words[sub + 2..].to_vec());
        }
        _ => {}
    }
    Ok(Git {
        words,
        scripts,
        program,
    })
}

/// The index of the subcommand, past the global options; the `-c` settings seen on the way
/// (key in lower case; `None`: a value from the environment, `--config-env`).
fn subcommand(words: &[String], settings: &mut Vec<(String, Option<String>)>) -> Option<usize> {
    let mut i = 1;
    while let Some(w) = words.get(i) {
        if may_be_flag(w) || !w.starts_with('-') {
            // A word known only at run time may be an option: it stands where the
            // subcommand would, and the pattern sees it as unknown.
            return Some(i);
        }
        let (name, inline) = match w.split_once('=') {
            Some((n, v)) if n.starts_with("--") => (n, Some(v.to_string())),
            _ => (w.as_str(), None),
        };
        i += 1;
        if !VALUE_OPTIONS.contains(&name) {
            continue;
        }
        let value = match inline {
            Some(v) => v,
            None => {
                i += 1;
                words.get(i - 1)?.clone()
            }
        };
        match name {
            "-c" => settings.push(match value.split_once('=') {
                Some((k, v)) => (k.to_lowercase(), Some(v.to_string())),
                None => (value.to_lowercase(), Some("true".into())),
            }),
            "--config-env" => {
                let key = value.split_once('=').map_or(value.as_str(), |(k, _)| k);
                settings.push((key.to_lowercase(), None));
            }
            _ => {}
        }
    }
    None
}

/// Scripts of `-c` settings whose value is a command (a value from the environment: one
/// unknown program).
fn command_settings(settings: &[(String, Option<String>)]) -> Vec<String> {
    settings
        .iter()
        .filter_map(|(key, value)| {
            let command = COMMAND_SETTINGS.contains(&key.as_str())
                || key.starts_with("pager.")
                || (key.starts_with("credential.") && key.ends_with(".helper"))
                || key == "credential.helper";
            if !command {
                return None;
            }
            let Some(value) = value else {
                return Some(EXP.to_string());
            };
            // A credential helper runs as a shell command only with a leading `!`.
            if key.starts_with("credential.") {
                return value.strip_prefix('!').map(str::to_string);
            }
            Some(value.clone())
        })
        .collect()
}

/// What `-c remote.NAME.push=REFSPEC` and `-c remote.NAME.mirror=true` add to a push.
fn push_settings(settings: &[(String, Option<String>)]) -> Vec<String> {
    let mut out = Vec::new();
    for (key, value) in settings {
        let Some(rest) = key.strip_prefix("remote.") else {
            continue;
        };
        if rest.ends_with(".push") {
            out.push(value.clone().unwrap_or_else(|| EXP.to_string()));
        } else if rest.ends_with(".mirror") {
            match value.as_deref().map(str::to_lowercase).as_deref() {
                Some("false" | "no" | "off" | "0") => {}
                Some(_) => out.push("--mirror".into()),
                None => out.push(EXP.to_string()),
            }
        }
    }
    out
}

/// The values of option `-x VALUE` / `-xVALUE` (also in a cluster: `-ix VALUE`) /
/// `--long VALUE` / `--long=VALUE`.
fn option_values(args: &[String], short: char, long: &str) -> Vec<String> {
    let mut out = Vec::new();
    let long = format!("--{long}");
    let mut i = 0;
    while let Some(a) = args.get(i) {
        i += 1;
        if a == "--" {
            break;
        }
        let value = if *a == long {
            None
        } else if let Some(v) = a.strip_prefix(&long).and_then(|v| v.strip_prefix('=')) {
            Some(v.to_string())
        } else if let Some(cluster) = a.strip_prefix('-').filter(|c| !c.starts_with('-')) {
            match cluster.split_once(short) {
                Some((_, v)) if !v.is_empty() => Some(v.to_string()),
                Some(_) => None,
                None => continue,
            }
        } else {
            continue;
        };
        match value {
            Some(v) => out.push(v),
            None => {
                out.extend(args.get(i).cloned());
                i += 1;
            }
        }
    }
    out
}

/// `script` with `args` appended as quoted words (`sh -c 'script "$@"'`).
fn with_arguments(script: &str, args: &[String]) -> Result<String, Doubt> {
    let mut out = script.to_string();
    for a in args {
        let quoted =
            shlex::try_quote(a).map_err(|_| "a git alias argument that cannot be quoted")?;
        out.push(' ');
        out.push_str(&quoted);
    }
    Ok(out)
}
