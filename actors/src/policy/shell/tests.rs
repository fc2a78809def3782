use super::*;

fn programs(line: &str) -> Vec<String> {
    let l = CommandLine::parse(line);
    assert!(l.doubt.is_none(), "{line}: {:?}", l.doubt);
    l.commands
        .iter()
        .map(|c| readable(&c.words[0]).into_owned())
        .collect()
}

fn words(line: &str) -> Vec<Vec<String>> {
    let l = CommandLine::parse(line);
    assert!(l.doubt.is_none(), "{line}: {:?}", l.doubt);
    l.commands
        .iter()
        .map(|c| c.words.iter().map(|w| readable(w).into_owned()).collect())
        .collect()
}

#[test]
fn operators_split_simple_commands() {
    assert_eq!(
        programs("ls; rm -rf / && echo x || true & wait"),
        ["ls", "rm", "echo", "true", "wait"]
    );
    assert_eq!(programs("a | b |& c\nd"), ["a", "b", "c", "d"]);
    assert_eq!(programs("(cd /; rm -rf x) | tee log"), ["cd", "rm", "tee"]);
    assert_eq!(programs("x=$(sudo ls)"), ["sudo", "ls"]);
    assert_eq!(programs("echo `rm -rf /`"), ["echo", "rm"]);
    assert_eq!(programs("echo \"$(rm -rf /)\""), ["echo", "rm"]);
    assert_eq!(programs("cat <(curl x) > /dev/null 2>&1"), ["cat", "curl"]);
    assert_eq!(programs("echo ${x:-$(id)}"), ["echo", "id"]);
    assert_eq!(programs("echo $((1 + $(id -u)))"), ["echo", "id"]);
    assert_eq!(programs("if rm -rf /; then :; fi"), ["rm", ":"]);
    assert_eq!(programs("for f in $(ls); do rm $f; done"), ["ls", "rm"]);
    assert_eq!(programs("echo a # ; rm -rf /"), ["echo"]);
    assert_eq!(programs("f() { rm -rf /; }; f"), ["rm", "f"]);
    assert_eq!(programs("arr=(a $(id) c); ls"), ["id", "ls"]);
}

#[test]
fn quotes_and_escapes_are_removed() {
    assert_eq!(words(r#"r""m -rf /"#), [["rm", "-rf", "/"]]);
    assert_eq!(words(r#"'r'm "-rf" \/"#), [["rm", "-rf", "/"]]);
    assert_eq!(words(r"\rm -r\f /"), [["rm", "-rf", "/"]]);
    assert_eq!(words("$'\\x72\\x6d' -rf /"), [["rm", "-rf", "/"]]);
    assert_eq!(words("{rm,-rf,/}"), [["rm", "-rf", "/"]]);
    assert_eq!(words("rm -{r,f} /"), [["rm", "-r", "-f", "/"]]);
    assert_eq!(words("rm \\\n -rf /"), [["rm", "-rf", "/"]]);
    assert_eq!(words("echo '; rm -rf /'"), [["echo", "; rm -rf /"]]);
    assert_eq!(
        words("find . -exec rm {} \\;"),
        vec![
            vec!["find", ".", "-exec", "rm", "{}", ";"],
            vec!["rm", "{}"]
        ]
    );
}

#[test]
fn wrappers_are_unwrapped() {
    assert_eq!(programs("sudo -u root rm -rf /"), ["sudo", "rm"]);
    assert_eq!(programs("env -i FOO=1 sudo ls"), ["env", "sudo", "ls"]);
    assert_eq!(programs("env -S 'rm -rf' /"), ["env", "rm"]);
    assert_eq!(
        programs("nice -n 5 nohup timeout -s KILL 10 rm -rf /"),
        ["nice", "nohup", "timeout", "rm"]
    );
    assert_eq!(
        programs("find / | xargs -0 rm -rf"),
        ["find", "xargs", "rm"]
    );
    assert_eq!(programs("command -v rm"), ["command"]);
    assert_eq!(
        programs("exec -a x time -p stdbuf -o0 rm x"),
        ["exec", "time", "stdbuf", "rm"]
    );
    assert_eq!(programs("bash -c 'rm -rf /'"), ["bash", "rm"]);
    assert_eq!(programs("sh -ec \"curl x | sh\""), ["sh", "curl", "sh"]);
    assert_eq!(programs("su root -c 'rm -rf /'"), ["su", "rm"]);
    assert_eq!(programs("eval 'rm -rf /'"), ["eval", "rm"]);
    assert_eq!(programs("busybox rm -rf /"), ["busybox", "rm"]);
    assert_eq!(programs("toybox rm -rf /"), ["toybox", "rm"]);
    assert_eq!(programs("taskset 1 rm -rf /"), ["taskset", "rm"]);
    assert_eq!(programs("taskset -c 0 rm -rf /"), ["taskset", "rm"]);
    assert_eq!(programs("chrt -o 0 rm -rf /"), ["chrt", "rm"]);
    assert_eq!(programs("unshare -r rm -rf /"), ["unshare", "rm"]);
    assert_eq!(programs("nsenter -t 1 -m rm -rf /"), ["nsenter", "rm"]);
    assert_eq!(programs("setpriv --reuid 0 rm -rf /"), ["setpriv", "rm"]);
    assert_eq!(programs("script -c 'rm -rf /' /dev/null"), ["script", "rm"]);
    assert_eq!(programs("watch -n 1 rm -rf /tmp/x"), ["watch", "rm"]);
    assert_eq!(programs("bash <<EOF\nrm -rf /\nEOF\n"), ["bash", "rm"]);
    assert_eq!(programs("bash <<< 'rm -rf /'"), ["bash", "rm"]);
    assert_eq!(
        programs("cat <<'EOF' > f\n$(rm -rf /)\nEOF\nls"),
        ["cat", "ls"]
    );
    assert_eq!(
        programs("cat <<EOF > f\n$(rm -rf /)\nEOF\nls"),
        ["cat", "rm", "ls"]
    );
    assert_eq!(
        programs("/usr/bin/sudo /bin/ls"),
        ["/usr/bin/sudo", "/bin/ls"]
    );
}

#[test]
fn what_cannot_be_read_is_a_doubt() {
    for bad in [
        "echo 'x",
        "echo \"x",
        "echo $(ls",
        "echo `ls",
        "(ls",
        "ls)",
        "echo \\",
    ] {
        assert!(CommandLine::parse(bad).doubt.is_some(), "{bad}");
    }
    let deep = "eval ".repeat(40) + "ls";
    assert!(CommandLine::parse(&deep).doubt.is_some());
    assert!(CommandLine::parse(&"a;".repeat(100)).doubt.is_some());
}

fn pat(yaml_like: (&[&str], &[&str])) -> Compiled {
    Compiled::new(&CommandPattern {
        programs: yaml_like.0.iter().map(|s| s.to_string()).collect(),
        flags: yaml_like
            .1
            .iter()
            .map(|s| FlagName::parse(s).unwrap())
            .collect(),
        ..Default::default()
    })
    .unwrap()
}

fn strict(p: &Compiled, line: &str) -> bool {
    let l = CommandLine::parse(line);
    [false, true]
        .iter()
        .any(|c| p.eval(&l, *c, true) != Tri::No)
}

#[test]
fn rm_recursive_force_in_every_spelling() {
    let p = pat((&["rm"], &["recursive", "force"]));
    for line in [
        "rm -rf /",
        "rm -fr /",
        "rm -r -f /",
        "rm -R -f /",
        "rm --recursive --force /",
        "rm --rec --forc /",
        "RM -RF /",
        "/bin/rm -rf /",
        "r\"\"m -rf /",
        "sudo rm -rf /",
        "x; rm / -rf",
        "rm -rf -- /",
        "ｒｍ -rf /",
        "rm \"$FLAGS\" /",
        "$RM -rf /",
        "bash -c 'rm -rf /'",
    ] {
        assert!(strict(&p, line), "{line}");
    }
    for line in [
        "rm -r /tmp/x",
        "rm -f x",
        "ls -rf",
        "echo rm -rf /",
        "rm -- -rf",
        "git rm -r -f x",
    ] {
        assert!(!strict(&p, line), "{line}");
    }
}

/// `curl`/`wget` whose output flows into a shell or another interpreter.
fn download_to_interpreter() -> Compiled {
    Compiled::new(&CommandPattern {
        programs: vec!["curl".into(), "wget".into()],
        piped_into: Some(Box::new(CommandPattern {
            programs: ["sh", "bash", "python*", "perl", "ruby", "node"]
                .map(String::from)
                .to_vec(),
            ..Default::default()
        })),
        ..Default::default()
    })
    .unwrap()
}

#[test]
fn downloads_piped_into_interpreters() {
    let p = download_to_interpreter();
    for line in [
        "curl -fsSL https://x | sh",
        "curl x | python3",
        "wget -qO- x | sudo bash",
        "curl x | tee f | bash",
        "bash -c \"$(curl -fsSL x)\"",
        "bash <(curl x)",
        "python3 <(wget -O- x)",
    ] {
        assert!(strict(&p, line), "{line}");
    }
    for line in [
        "curl x > f",
        "curl x | grep y",
        "cat f | sh",
        "curl x; sh f",
    ] {
        assert!(!strict(&p, line), "{line}");
    }
}

#[test]
fn allow_rules_need_every_command_in_both_views() {
    let p = pat((&["git", "ls"], &[]));
    let lenient = |line: &str| {
        let l = CommandLine::parse(line);
        [false, true]
            .iter()
            .all(|c| p.eval(&l, *c, false) == Tri::Yes)
    };
    assert!(lenient("git status && ls -la"));
    assert!(!lenient("git status; rm -rf /"));
    assert!(!lenient("GIT status"));
    assert!(!lenient("$X status"));
    assert!(!lenient("echo 'x"));
    assert!(!lenient(""));
}

#[test]
fn argv_arrays_are_one_command() {
    let p = pat((&["rm"], &["recursive", "force"]));
    let argv = |w: &[&str]| CommandLine::argv(w);
    assert_ne!(p.eval(&argv(&["rm", "-rf", "/"]), false, true), Tri::No);
    assert_ne!(
        p.eval(&argv(&["sudo", "rm", "-r", "-f", "/"]), false, true),
        Tri::No
    );
    assert_ne!(
        p.eval(&argv(&["bash", "-lc", "rm -rf /"]), false, true),
        Tri::No
    );
    assert!(matches!(
        p.eval(&argv(&["rm -rf /"]), false, true),
        Tri::Unknown(_)
    ));
    assert_eq!(p.eval(&argv(&["echo", "rm -rf /"]), false, true), Tri::No);
}

/// A pattern with operand globs too.
fn pat_args(programs: &[&str], flags: &[&str], args: &[&str]) -> Compiled {
    Compiled::new(&CommandPattern {
        programs: programs.iter().map(|s| s.to_string()).collect(),
        flags: flags.iter().map(|s| FlagName::parse(s).unwrap()).collect(),
        args: args.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    })
    .unwrap()
}

#[test]
fn function_bodies_are_commands_that_run() {
    assert_eq!(programs("function f { rm -rf /; }; f"), ["rm", "f"]);
    assert_eq!(programs("function f() { rm -rf /; }"), ["rm"]);
    assert_eq!(programs("function f\n{\nrm -rf /\n}"), ["rm"]);
    assert_eq!(programs("f () ( curl x | sh )"), ["curl", "sh"]);
    assert_eq!(programs("f() if true; then rm -rf /; fi"), ["true", "rm"]);
    assert_eq!(programs("f() { g() { rm -rf /; }; }"), ["rm"]);
    let p = pat((&["rm"], &["recursive", "force"]));
    for line in [
        "function f { rm -rf /; }; f",
        "f() { rm -rf /; }; f",
        "function f { rm -rf /; }",
    ] {
        assert!(strict(&p, line), "{line}");
    }
}

#[test]
fn compound_commands_are_read() {
    assert_eq!(
        programs("if a; then b; elif c; then d; else e; fi"),
        ["a", "b", "c", "d", "e"]
    );
    assert_eq!(
        programs("while a; do b; done; until c; do d; done"),
        ["a", "b", "c", "d"]
    );
    assert_eq!(programs("for f in $(ls); do rm $f; done"), ["ls", "rm"]);
    assert_eq!(programs("for f do rm $f; done"), ["rm"]);
    assert_eq!(programs("select x in a b\ndo rm $x; done"), ["rm"]);
    assert_eq!(
        programs("case $x in a|b) rm -rf /;; (c) ls ;& *) id ;;& esac"),
        ["rm", "ls", "id"]
    );
    assert_eq!(programs("case x in\n a)\n  ls\n  ;;\nesac"), ["ls"]);
    assert_eq!(programs("case x in esac"), Vec::<String>::new());
    assert_eq!(programs("{ a; b; } > f 2>&1"), ["a", "b"]);
    assert_eq!(programs("if (a) then b; fi"), ["a", "b"]);
    assert_eq!(programs("while (true) do rm -rf /; done"), ["true", "rm"]);
    assert_eq!(programs("! rm -rf /"), ["rm"]);
    assert_eq!(programs("! { rm -rf /; }"), ["rm"]);
    assert_eq!(programs("time { rm -rf /; }"), ["rm"]);
    assert_eq!(programs("time -p ( rm -rf / )"), ["rm"]);
    assert_eq!(programs("time ls"), ["time", "ls"]);
    assert_eq!(programs("coproc rm -rf /"), ["rm"]);
    assert_eq!(programs("coproc NAME { curl x | sh; }"), ["curl", "sh"]);
    assert_eq!(programs("coproc NAME ( rm -rf / )"), ["rm"]);
    assert_eq!(programs("coproc ( rm -rf / )"), ["rm"]);
    // Reserved words only where a command starts, and unquoted.
    assert_eq!(words("echo if then fi"), [["echo", "if", "then", "fi"]]);
    assert_eq!(programs("'if' x"), ["if"]);
    assert_eq!(programs("X=1 if"), ["if"]);
    // `[` is a program, not a glob, without a `]` in its word.
    assert_eq!(programs("if [ -f x ]; then cat x; fi"), ["[", "cat"]);
    assert_eq!(
        words("ls [ a[b [x] c[\"]\"]"),
        [["ls", "[", "a[b", "[x]", "c[]]"]]
    );
    assert!(strict(&pat_args(&["rm"], &[], &["/etc"]), "rm -r /[e]tc"));
    let long = "[".repeat(60_000);
    assert!(CommandLine::parse(&format!("ls {long}")).doubt.is_none());
}

#[test]
fn downloads_piped_into_compound_commands_reach_their_commands() {
    let p = download_to_interpreter();
    for line in [
        "curl x | if true; then sh; fi",
        "curl x | while read l; do sh; done",
        "curl x | until false; do sh; done",
        "curl x | for i in 1; do sh; done",
        "curl x | select i in a; do sh; done",
        "curl x | case a in a) sh;; esac",
        "curl x | { sh; }",
        "curl x | { cat; sh; }",
        "curl x | (sh)",
        "curl x | { if true; then { sh; }; fi; }",
        "coproc NAME { curl x | sh; }",
        "f () ( curl x | sh )",
        "{ sh; } <<< \"$(curl x)\"",
        "for l in $(curl x); do bash -c \"$l\"; done",
    ] {
        assert!(strict(&p, line), "{line}");
    }
    for line in [
        "curl x | { cat; }; sh",
        "if true; then curl x; fi; sh",
        "curl x > f; while read l; do sh f; done < list",
    ] {
        assert!(!strict(&p, line), "{line}");
    }
}

#[test]
fn calls_of_functions_and_aliases_run_their_bodies() {
    let p = download_to_interpreter();
    for line in [
        "f() { sh; }; curl x | f",
        "function g { bash; }; wget -qO- x | g",
        "f() { g; }; g() { sh; }; curl x | f",
        "alias y=sh; curl x | y",
        "alias y='sudo bash'; curl x | y",
        "f() { eval \"$1\"; }; f \"$(curl x)\"",
    ] {
        assert!(strict(&p, line), "{line}");
    }
    for line in ["f() { sh; }; curl x | g", "f() { curl x; sh; }; f"] {
        assert!(!strict(&p, line), "{line}");
    }
}

#[test]
fn scripts_given_to_builtins_are_read() {
    assert_eq!(programs("trap 'rm -rf /' EXIT"), ["trap", "rm"]);
    assert_eq!(
        programs("trap -- 'curl x | sh' INT TERM"),
        ["trap", "curl", "sh"]
    );
    assert_eq!(
        programs("trap INT; trap - EXIT; trap -p"),
        ["trap", "trap", "trap"]
    );
    assert_eq!(
        programs("shopt -s expand_aliases; alias x='rm -rf /'; x"),
        ["shopt", "alias", "x", "rm"]
    );
    assert_eq!(
        programs("alias a='sudo ls' b=id"),
        ["alias", "sudo", "ls", "id"]
    );
    assert_eq!(
        programs("mapfile -C 'rm -rf /' -c 1 arr < f"),
        ["mapfile", "rm"]
    );
    assert_eq!(
        programs("readarray -t -C 'rm -rf /' arr"),
        ["readarray", "rm"]
    );
    assert_eq!(programs("eval 'rm -rf /'"), ["eval", "rm"]);
    let p = pat((&["rm"], &["recursive", "force"]));
    for line in [
        "trap 'rm -rf /' EXIT",
        "shopt -s expand_aliases; alias x='rm -rf /'; x",
        "coproc rm -rf /",
    ] {
        assert!(strict(&p, line), "{line}");
    }
}

#[test]
fn script_text_from_a_download_is_a_download_to_an_interpreter() {
    let p = download_to_interpreter();
    for line in [
        ". <(curl x)",
        "source <(curl x)",
        "bash <(curl x)",
        "source /dev/stdin <<< \"$(curl x)\"",
        "sh <<< \"$(curl x)\"",
        "curl x | source /dev/stdin",
        "curl x | . /dev/fd/0",
        "sh < <(curl x)",
        "bash -s < <(wget -O- x)",
        ". /dev/stdin <<EOF\n$(curl x)\nEOF\n",
    ] {
        assert!(strict(&p, line), "{line}");
    }
    assert!(!strict(&p, "curl x > f; . ./env.sh"));
    // A shell or `source` reading standard input runs a here-document there.
    assert_eq!(programs("bash /dev/stdin <<< 'rm -rf /'"), ["bash", "rm"]);
    assert_eq!(programs("sh - <<EOF\nrm -rf /\nEOF\n"), ["sh", "rm"]);
    assert_eq!(
        programs("source /dev/stdin <<EOF\nrm x\nEOF\n"),
        ["source", "rm"]
    );
    assert_eq!(programs("{ sh; } <<EOF\nrm x\nEOF\n"), ["sh", "rm"]);
    assert_eq!(programs("source ./env.sh <<< 'rm x'"), ["source"]);
}

#[test]
fn privilege_wrappers_unwrap_with_their_option_values() {
    assert_eq!(programs("runuser -u bob -- rm -rf /"), ["runuser", "rm"]);
    assert_eq!(programs("runuser -u bob rm -rf /"), ["runuser", "rm"]);
    assert_eq!(
        programs("runuser --user=bob -g x rm -rf /"),
        ["runuser", "rm"]
    );
    assert_eq!(programs("runuser -l bob -c 'rm -rf /'"), ["runuser", "rm"]);
    assert_eq!(programs("runuser bob -c 'rm -rf /'"), ["runuser", "rm"]);
    assert_eq!(
        programs("runuser -u bob -- sh -c 'rm -rf /'"),
        ["runuser", "sh", "rm"]
    );
    assert_eq!(programs("sudo -u x -g y -- rm -rf /"), ["sudo", "rm"]);
    assert_eq!(programs("sudo -uroot -E --group=x rm"), ["sudo", "rm"]);
    assert_eq!(programs("sudo --user root -i rm"), ["sudo", "rm"]);
    assert_eq!(programs("doas -u x rm -rf /"), ["doas", "rm"]);
    assert_eq!(programs("doas -n -u x -- rm"), ["doas", "rm"]);
    assert_eq!(programs("su -c 'rm -rf /'"), ["su", "rm"]);
    assert_eq!(programs("su - root -c 'rm -rf /'"), ["su", "rm"]);
    assert_eq!(programs("su --command='rm -rf /' root"), ["su", "rm"]);
    assert_eq!(programs("pkexec --user root rm -rf /"), ["pkexec", "rm"]);
    assert_eq!(programs("run0 -u root --nice=5 rm -rf /"), ["run0", "rm"]);
}

/// git's force-push rule of the example policy.
fn force_push() -> Compiled {
    pat_args(&["git"], &["force"], &["push"])
}

#[test]
fn git_force_push_in_every_spelling() {
    let p = force_push();
    for line in [
        "git push -f",
        "git push --force origin main",
        "git push --force-with-lease",
        "git push --force-with-lease=main:abc origin",
        "git push --force-if-includes",
        "git push -fu origin main",
        "git push --forc",
        "git push origin +main",
        "git push origin +HEAD:main",
        "git push origin '+refs/heads/*:refs/heads/*'",
        "git push origin +refs/heads/*:refs/heads/*",
        "git push -- origin +main",
        "git push --mirror",
        "git push --mir origin",
        "git -C dir push -f",
        "git --git-dir=x push -f",
        "git --git-dir x --work-tree y push -f",
        "git -c remote.origin.push=+refs/heads/*:refs/heads/* push",
        "git -c remote.origin.push=+main push origin",
        "git -c remote.origin.mirror=true push origin",
        "git -c remote.origin.mirror push",
        "git -c alias.p='push --force' p",
        "git -c alias.p=push p -f",
        "git -c Alias.P='push --mirror' P",
        "git -c alias.p='!git push -f' p",
        "git -c alias.p='!f() { git push --force; }; f' p",
        "git -c alias.q=p -c alias.p='push -f' q",
        "git -c alias.p='-p push -f' p",
        "git -c alias.p='-c alias.q=push q -f' p",
        "git --config-env=alias.p=X p",
        "git --config-env=remote.origin.push=X push",
        "git-push -f origin main",
        "/usr/lib/git-core/git-push origin +main",
        "git push origin $REF",
        "echo +main | xargs git push origin",
        "GIT_DIR=x git push -f",
        "sudo -u bob git push -f",
    ] {
        assert!(strict(&p, line), "{line}");
    }
    for line in [
        "git push",
        "git push origin main",
        "git push -u origin feature",
        "git push origin HEAD:main",
        "git -c remote.origin.mirror=false push origin",
        "git -c alias.p='push' p origin main",
        "git commit -m 'push'",
        "git -c alias.p='push -f' status",
    ] {
        assert!(!strict(&p, line), "{line}");
    }
    let send_pack = pat_args(&["git"], &["force"], &["send-pack"]);
    assert!(strict(&send_pack, "git send-pack --force remote main"));
    assert!(strict(&send_pack, "git-send-pack remote +main"));
}

#[test]
fn git_remote_deletes_in_every_spelling() {
    let p = pat_args(&["git"], &["delete"], &["push"]);
    for line in [
        "git push -d origin x",
        "git push --delete origin x",
        "git push origin :branch",
        "git push origin :refs/heads/x",
        "git push --prune origin",
        "git push --mirror",
        "git -c alias.rm='push --delete' rm origin x",
    ] {
        assert!(strict(&p, line), "{line}");
    }
    for line in [
        "git push origin main",
        "git push origin :",
        "git branch -d x",
    ] {
        assert!(!strict(&p, line), "{line}");
    }
}

#[test]
fn git_runs_the_commands_its_settings_and_subcommands_name() {
    let rm = pat((&["rm"], &["recursive", "force"]));
    for line in [
        "git -c core.pager='rm -rf /' log",
        "git -c pager.log='rm -rf /' log",
        "git -c core.sshCommand='rm -rf /' fetch",
        "git -c credential.helper='!rm -rf /' fetch",
        "git rebase -x 'rm -rf /' HEAD~3",
        "git rebase -ix 'rm -rf /' HEAD~3",
        "git rebase --exec='rm -rf /' HEAD~3",
        "git submodule foreach --recursive 'rm -rf /'",
        "git bisect run rm -rf /",
        "git -c alias.p='!rm -rf' p /",
    ] {
        assert!(strict(&rm, line), "{line}");
    }
    assert!(!strict(&rm, "git -c credential.helper=store fetch"));
    assert!(!strict(&rm, "git rebase -i HEAD~3"));
}

#[test]
fn recursive_deletes_of_root_or_home_without_force() {
    let root = pat_args(&["rm"], &["recursive"], &["/*"]);
    for line in [
        "rm -r /",
        "rm -R /",
        "rm --recursive /",
        "rm -r --interactive=never /",
        "rm -r --no-preserve-root /",
        "rm -rf -- /",
        "rm -r /*",
        "rm -r /.",
        "rm -r //",
        "rm -r /tmp/x/../..",
        "rm -r '/etc'",
        "rm -rd /usr",
        "rm -r ~",
        "rm -r ~/..",
        "rm -r ~root",
        "rm -r $HOME",
        "sudo rm -r /",
    ] {
        assert!(strict(&root, line), "{line}");
    }
    for line in ["rm -r build", "rm -r ./build", "rm / ", "rm -r /tmp/x"] {
        assert!(!strict(&root, line), "{line}");
    }
    let home = pat_args(&["rm"], &["recursive"], &["/home/*"]);
    assert!(strict(&home, "rm -r /home/alice"));
    assert!(strict(&home, "rm -r ~/"));
    let find = pat_args(&["find"], &["delete"], &["/*"]);
    for line in ["find / -delete", "find /home -delete", "find ~ -delete"] {
        assert!(strict(&find, line), "{line}");
    }
    assert!(!strict(&find, "find . -name '*.o' -delete"));
}

#[test]
fn a_tilde_is_a_path_known_at_run_time() {
    assert_eq!(
        words("ls ~ ~/x ~bob/y '~' \\~ a~"),
        [["ls", "/$…", "/$…/x", "/$…/y", "~", "~", "a~"]]
    );
    let l = CommandLine::parse("rm ~/notes.txt");
    let p = pat((&["rm"], &["recursive"]));
    assert_eq!(p.eval(&l, false, true), Tri::No);
}

#[test]
fn unfinished_compound_commands_are_a_doubt() {
    for bad in [
        "if x; then rm -rf /",
        "{ rm -rf /;",
        "while x; do rm -rf /",
        "for x in a; do rm -rf /",
        "case x in a) rm -rf /",
        "case x in a) rm -rf /;;",
        "f() { rm -rf /",
        "rm -rf /; fi",
        "rm -rf /; }",
        "rm -rf /; done",
        "esac",
        "rm x;; ls",
        "if x; then y; done",
        "{ x; } rm -rf /",
        "(ls) rm -rf /",
        "for ((i=0; i<3; i++)); do rm -rf /; done",
        "coproc N ( rm -rf /",
        "function f ( rm -rf / )",
        "rm -rf / () { :; }",
    ] {
        assert!(CommandLine::parse(bad).doubt.is_some(), "{bad}");
    }
    let deep = "{ ".repeat(40) + "ls" + &"; }".repeat(40);
    assert!(CommandLine::parse(&deep).doubt.is_some());
    let functions = "f() ".repeat(40) + "{ ls; }";
    assert!(CommandLine::parse(&functions).doubt.is_some());
}
