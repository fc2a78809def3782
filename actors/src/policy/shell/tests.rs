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
    assert_eq!(programs("f() { rm -rf /; }; f"), ["f", "rm", "f"]);
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
        "case x in a) ls;; esac",
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

#[test]
fn downloads_piped_into_interpreters() {
    let p = Compiled::new(&CommandPattern {
        programs: vec!["curl".into(), "wget".into()],
        piped_into: Some(Box::new(CommandPattern {
            programs: ["sh", "bash", "python*", "perl", "ruby", "node"]
                .map(String::from)
                .to_vec(),
            ..Default::default()
        })),
        ..Default::default()
    })
    .unwrap();
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
