//! The node's web page end to end: the real `warden node` binary, and Debian's Chromium driven
//! headless through ChromeDriver (W3C WebDriver over HTTP). The page connects with the operator
//! token from the URL fragment, shows a halt live (server-sent events), and answers approvals
//! when its buttons are clicked.
//!
//! Needs `/usr/bin/chromium` and `/usr/bin/chromedriver` (Debian's `chromium` and
//! `chromium-driver`); without them the browser test says why and skips, unless
//! `WARDEN_REQUIRE_EXTERNAL=1` (CI), where it fails. Set `WARDEN_WEB_SCREENSHOT=FILE.png` to
//! keep a screenshot of the page.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Body, Client};
use serde_json::{json, Value};
use warden_actors::AgentState;

const OPERATOR: &str = "test-operator-token-web";
const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// How long the page gets for anything it should show.
const DEADLINE: Duration = Duration::from_secs(20);
/// How often a wait looks again.
const POLL: Duration = Duration::from_millis(50);

/// A `warden node` process on an ephemeral port (the start-up pattern of tests/node.rs).
struct Node {
    child: Child,
    base: String,
    /// The node's operator, through the typed client (`with_token` gives an agent's).
    op: Client,
    dir: PathBuf,
}

impl Node {
    fn start(name: &str) -> Node {
        let dir = std::env::temp_dir().join(format!("warden-web-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let (child, base) = common::start_node(&dir, &[], OPERATOR);
        let op = common::client(&base, Some(OPERATOR));
        Node {
            child,
            base,
            op,
            dir,
        }
    }

    /// The ids of the pending approvals, as the API lists them.
    fn pending(&self) -> Vec<String> {
        let (status, list) = common::call(&self.op, "GET", "/v1/approvals", Body::None);
        assert_eq!(status, 200, "{list}");
        list["approvals"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["id"].as_str().unwrap().to_string())
            .collect()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A plain HTTP client, for ChromeDriver (W3C WebDriver, not the node's API) and for the one
/// request that reads the page's own headers. The node's API goes through `common::client`.
fn http_agent(timeout: Duration) -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(timeout))
        .build()
        .into()
}

/// The status and body (JSON, or the text as a JSON string) of a [`http_agent`] answer.
fn answer(mut resp: ureq::http::Response<ureq::Body>) -> (u16, Value) {
    let status = resp.status().as_u16();
    let text = resp.body_mut().read_to_string().unwrap_or_default();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// True when Chromium and ChromeDriver are installed. Otherwise says why and returns false,
/// or fails when `WARDEN_REQUIRE_EXTERNAL=1`.
fn browser_installed() -> bool {
    let missing: Vec<&str> = [CHROMIUM, CHROMEDRIVER]
        .into_iter()
        .filter(|p| !Path::new(p).exists())
        .collect();
    if missing.is_empty() {
        return true;
    }
    let why = format!(
        "{} not found; install Debian's chromium and chromium-driver \
         (apt-get install chromium chromium-driver)",
        missing.join(" and ")
    );
    if std::env::var("WARDEN_REQUIRE_EXTERNAL").as_deref() == Ok("1") {
        panic!("WARDEN_REQUIRE_EXTERNAL=1 and {why}");
    }
    eprintln!("skipping the web page browser test: {why}");
    false
}

/// A ChromeDriver process with one headless Chromium session. Dropping it ends the session
/// and kills ChromeDriver's whole process group (Chromium included), pass or fail.
struct Browser {
    driver: Child,
    url: String,
    session: String,
    http: ureq::Agent,
    profile: PathBuf,
    log: PathBuf,
}

/// A script that sums up the page for a failure message.
const PAGE_STATE: &str =
    "const text = (id) => document.getElementById(id).textContent.trim().slice(0, 400); \
    return {url: location.href, status: document.getElementById('status').dataset.state, \
    errors: Array.from(document.querySelectorAll('#errors li')).map((li) => li.textContent), \
    updated: text('last-refresh'), agents: text('agents'), approvals: text('approvals'), \
    halts: text('halts')}";

/// The W3C WebDriver key of an element reference.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

impl Browser {
    fn start(name: &str) -> Browser {
        let profile =
            std::env::temp_dir().join(format!("warden-web-chromium-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&profile);
        std::fs::create_dir_all(&profile).unwrap();
        let log = profile.with_extension("chromedriver.log");
        let http = http_agent(Duration::from_secs(60));
        // A free port can be taken between asking and binding; try a few.
        let mut last = String::new();
        for _ in 0..3 {
            let port = common::free_port();
            let mut cmd = Command::new(CHROMEDRIVER);
            cmd.arg(format!("--port={port}"))
                .arg(format!("--log-path={}", log.display()))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            #[cfg(unix)]
            {
                // Its own process group, so Drop can end ChromeDriver and every Chromium
                // process it started, and nothing else.
                use std::os::unix::process::CommandExt;
                cmd.process_group(0);
            }
            let mut driver = cmd.spawn().expect("chromedriver starts");
            let url = format!("http://127.0.0.1:{port}");
            let started = Instant::now();
            let ready = loop {
                if let Ok(Some(status)) = driver.try_wait() {
                    last = format!("chromedriver exited with {status} (log: {})", log.display());
                    break false;
                }
                if let Ok(resp) = http.get(format!("{url}/status")).call() {
                    let (_, v) = answer(resp);
                    if v["value"]["ready"] == true {
                        break true;
                    }
                }
                if started.elapsed() > DEADLINE {
                    last = format!("chromedriver was not ready within {DEADLINE:?}");
                    let _ = driver.kill();
                    let _ = driver.wait();
                    break false;
                }
                std::thread::sleep(POLL);
            };
            if !ready {
                continue;
            }
            let mut browser = Browser {
                driver,
                url,
                session: String::new(),
                http,
                profile,
                log,
            };
            let args = [
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--no-proxy-server",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--window-size=1280,1100",
                &format!("--user-data-dir={}", browser.profile.display()),
            ];
            let created = browser.command(
                "POST",
                "/session",
                Some(json!({"capabilities": {"alwaysMatch": {
                    "browserName": "chrome",
                    "goog:chromeOptions": {"binary": CHROMIUM, "args": args},
                }}})),
            );
            browser.session = created["sessionId"]
                .as_str()
                .unwrap_or_else(|| panic!("no session id in {created}"))
                .to_string();
            return browser;
        }
        panic!("could not start chromedriver: {last}");
    }

    /// One WebDriver command; its `value`. Panics with the driver's error otherwise.
    fn command(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        self.try_command(method, path, body)
            .unwrap_or_else(|e| panic!("WebDriver {method} {path}: {e}"))
    }

    fn try_command(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value, String> {
        let url = format!("{}{path}", self.url);
        let resp = match (method, body) {
            ("GET", _) => self.http.get(&url).call(),
            ("DELETE", _) => self.http.delete(&url).call(),
            (_, body) => self.http.post(&url).send_json(body.unwrap_or(json!({}))),
        }
        .map_err(|e| format!("{e} (ChromeDriver log: {})", self.log.display()))?;
        let (status, v) = answer(resp);
        if status == 200 {
            Ok(v["value"].clone())
        } else {
            Err(format!("HTTP {status}: {v}"))
        }
    }

    fn session_path(&self, rest: &str) -> String {
        format!("/session/{}{rest}", self.session)
    }

    fn open(&self, url: &str) {
        self.command(
            "POST",
            &self.session_path("/url"),
            Some(json!({"url": url})),
        );
    }

    /// Runs `body` as a function in the page and returns what it returns.
    fn script(&self, body: &str) -> Value {
        self.command(
            "POST",
            &self.session_path("/execute/sync"),
            Some(json!({"script": body, "args": []})),
        )
    }

    /// The element a CSS selector finds, if any.
    fn find(&self, css: &str) -> Option<String> {
        self.try_command(
            "POST",
            &self.session_path("/element"),
            Some(json!({"using": "css selector", "value": css})),
        )
        .ok()
        .and_then(|v| v[ELEMENT].as_str().map(str::to_string))
    }

    fn click(&self, element: &str) {
        self.command(
            "POST",
            &self.session_path(&format!("/element/{element}/click")),
            None,
        );
    }

    fn type_text(&self, element: &str, text: &str) {
        self.command(
            "POST",
            &self.session_path(&format!("/element/{element}/value")),
            Some(json!({"text": text})),
        );
    }

    /// What the page says about itself, for failure messages.
    fn page_state(&self) -> String {
        self.try_command(
            "POST",
            &self.session_path("/execute/sync"),
            Some(json!({"script": PAGE_STATE, "args": []})),
        )
        .map_or_else(|e| format!("(page unreadable: {e})"), |v| v.to_string())
    }

    /// Polls `probe` until it answers, for at most [`DEADLINE`].
    fn wait<T>(&self, what: &str, mut probe: impl FnMut() -> Option<T>) -> T {
        let started = Instant::now();
        loop {
            if let Some(v) = probe() {
                return v;
            }
            if started.elapsed() > DEADLINE {
                panic!(
                    "waited {DEADLINE:?} for {what}; the page: {} (ChromeDriver log: {})",
                    self.page_state(),
                    self.log.display()
                );
            }
            std::thread::sleep(POLL);
        }
    }

    /// Waits until the page's connection status is `state`.
    fn wait_status(&self, state: &str) {
        self.wait(&format!("status {state}"), || {
            (self.script("return document.getElementById('status').dataset.state") == state)
                .then_some(())
        });
    }

    /// Saves a PNG of the page when `WARDEN_WEB_SCREENSHOT` names a file.
    fn screenshot_if_asked(&self) {
        let Ok(file) = std::env::var("WARDEN_WEB_SCREENSHOT") else {
            return;
        };
        let b64 = self.command("GET", &self.session_path("/screenshot"), None);
        let png = base64_decode(b64.as_str().expect("the screenshot is base64 text"));
        std::fs::write(&file, png).unwrap();
        eprintln!("screenshot of the page in {file}");
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let path = self.session_path("");
            let _ = self.try_command("DELETE", &path, None);
        }
        // Chromium was started by ChromeDriver in ChromeDriver's process group.
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.driver.id())])
            .stderr(Stdio::null())
            .status();
        let _ = self.driver.kill();
        let _ = self.driver.wait();
        let _ = std::fs::remove_dir_all(&self.profile);
        if !std::thread::panicking() {
            let _ = std::fs::remove_file(&self.log);
        }
    }
}

fn base64_decode(text: &str) -> Vec<u8> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => panic!("not base64: {c}"),
    };
    let digits: Vec<u8> = text
        .bytes()
        .filter(|c| !c.is_ascii_whitespace() && *c != b'=')
        .map(value)
        .collect();
    let mut out = Vec::with_capacity(digits.len() * 3 / 4);
    for chunk in digits.chunks(4) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, d)| n | (u32::from(*d) << (18 - 6 * i)));
        let bytes = n.to_be_bytes();
        out.extend_from_slice(&bytes[1..chunk.len()]);
    }
    out
}

#[test]
fn the_page_is_served_without_a_token_and_loads_nothing_from_elsewhere() {
    let node = Node::start("page");
    // Raw ureq: the test reads the answer's headers (content type, CSP), which the client does
    // not hand out.
    let resp = http_agent(Duration::from_secs(10))
        .get(format!("{}/", node.base))
        .call()
        .unwrap();
    assert_eq!(resp.status(), 200);
    let header = |name: &str| {
        resp.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    assert_eq!(header("content-type"), "text/html; charset=utf-8");
    let csp = header("content-security-policy");
    assert!(
        csp.contains("default-src 'none'") && csp.contains("connect-src 'self'"),
        "{csp}"
    );
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    let (_, page) = answer(resp);
    let page = page.as_str().expect("HTML, not JSON").to_string();
    assert!(page.starts_with("<!doctype html>"), "{}", &page[..80]);
    assert!(
        !page.contains("http://") && !page.contains("https://"),
        "the page refers to another site"
    );
    assert!(
        !page.contains("innerHTML") && !page.contains("outerHTML"),
        "data goes into the page as text only"
    );
    // The data stays behind the token.
    let anonymous = common::client(&node.base, None);
    assert_eq!(
        common::call(&anonymous, "GET", "/v1/agents", Body::None).0,
        401
    );
}

#[test]
fn the_page_shows_a_halt_live_and_answers_approvals_by_clicking() {
    if !browser_installed() {
        return;
    }
    let started = Instant::now();
    let node = Node::start("browser");
    common::register(&node.op, "scout-1", "swarm");
    let browser = Browser::start("browser");

    // A wrong token is said to be wrong.
    browser.open(&format!("{}/#token=not-the-operator-token", node.base));
    browser.wait_status("unauthorized");
    let errors = browser.script(
        "return Array.from(document.querySelectorAll('#errors li')).map(li => li.textContent).join(' | ')",
    );
    assert!(errors.as_str().unwrap().contains("wrong token"), "{errors}");

    // The right one, from the fragment, connects; the fragment leaves the address bar.
    browser.open(&format!("{}/#token={OPERATOR}", node.base));
    browser.wait_status("live");
    assert_eq!(browser.script("return location.hash"), "");
    browser.wait("scout-1 listed as running", || {
        browser
            .find(r#"#agents tr[data-agent-id="scout-1"][data-state="running"]"#)
            .map(|_| ())
    });

    // A halt made through the API shows up live: the halts list is fed only by the page's
    // event stream, never by its periodic refresh.
    let (status, halted) = common::call(
        &node.op,
        "POST",
        "/v1/agents/scout-1/halt",
        Body::Json(json!({"reason": "stopped by the web test"})),
    );
    assert_eq!(status, 200, "{halted}");
    let halt = browser.wait("the halt in the halts list", || {
        let first = browser.script(
            "const li = document.querySelector('#halts li'); \
             return li && {agent: li.dataset.agent, kind: li.dataset.kind, text: li.textContent}",
        );
        (!first.is_null()).then_some(first)
    });
    assert_eq!(halt["agent"], "scout-1", "{halt}");
    assert_eq!(halt["kind"], "external", "{halt}");
    assert!(
        halt["text"]
            .as_str()
            .unwrap()
            .contains("stopped by the web test"),
        "{halt}"
    );
    browser.wait("scout-1 listed as halted", || {
        browser
            .find(r#"#agents tr[data-agent-id="scout-1"][data-state="halted"] [data-kind="external"]"#)
            .map(|_| ())
    });

    // Two transfers over the approval threshold of the bundled policy (big-transfer).
    let payer = node
        .op
        .with_token(&common::register(&node.op, "payer", "swarm"));
    let mut ids = Vec::new();
    for amount in [5000, 7000] {
        let (status, d) = common::call(
            &payer,
            "POST",
            "/v1/agents/payer/steps",
            Body::Json(
                json!({"tool": "payments.transfer", "action": "spend", "args": {"amount": amount, "to": "acme"}}),
            ),
        );
        assert_eq!(status, 200, "{d}");
        assert_eq!(d["decision"], "require_approval", "{d}");
        assert_eq!(d["rule"], "big-transfer", "{d}");
        ids.push(d["approval"].as_str().unwrap().to_string());
    }
    let (approve_id, deny_id) = (&ids[0], &ids[1]);
    let button = |id: &str, class: &str| {
        browser.wait(&format!("the {class} button of {id}"), || {
            browser.find(&format!(
                r#"#approvals tr[data-approval-id="{id}"] button.{class}"#
            ))
        })
    };
    let approve = button(approve_id, "approve");
    let deny = button(deny_id, "deny");
    browser.screenshot_if_asked();

    // Approve by clicking: the node has it answered, the row goes, the result shows.
    browser.click(&approve);
    browser.wait("the approval answered at the node", || {
        (!node.pending().contains(approve_id)).then_some(())
    });
    browser.wait("the approve result", || {
        browser
            .find(&format!(
                r#"#approval-results li[data-approval-id="{approve_id}"][data-decision="allow"]"#
            ))
            .map(|_| ())
    });
    assert!(browser
        .find(&format!(
            r#"#approvals tr[data-approval-id="{approve_id}"]"#
        ))
        .is_none());

    // Deny with a reason typed into the row.
    let reason = browser
        .find(&format!(
            r#"#approvals tr[data-approval-id="{deny_id}"] input.reason"#
        ))
        .expect("a reason field");
    browser.type_text(&reason, "unknown payee");
    browser.click(&deny);
    browser.wait("no approval pending at the node", || {
        node.pending().is_empty().then_some(())
    });
    let denied = browser.wait("the deny result", || {
        let text = browser.script(&format!(
            "const li = document.querySelector('#approval-results li[data-approval-id=\"{deny_id}\"]'); \
             return li && {{decision: li.dataset.decision, text: li.textContent}}"
        ));
        (!text.is_null()).then_some(text)
    });
    assert_eq!(denied["decision"], "deny", "{denied}");
    assert!(
        denied["text"].as_str().unwrap().contains("unknown payee"),
        "{denied}"
    );

    // The agent's record agrees: one step allowed (the approved one), none waiting.
    let agent = node.op.agent("payer").unwrap();
    assert_eq!(agent.state, AgentState::Running, "{agent:?}");
    assert_eq!(agent.pending_approvals, 0, "{agent:?}");
    assert_eq!(agent.steps_allowed, 1, "{agent:?}");
    browser.wait("the approvals table empty", || {
        (browser.script("return document.querySelectorAll('#approvals tr').length") == 0)
            .then_some(())
    });
    eprintln!("web page test took {:?}", started.elapsed());
}

#[test]
fn the_page_shows_overrun_per_pool_and_per_agent() {
    if !browser_installed() {
        return;
    }
    let node = Node::start("overrun");
    let spender = node
        .op
        .with_token(&common::register(&node.op, "spender", "swarm"));
    // The bundled policy gives each agent $5.00; the step reports $7.00: $2.00 no budget
    // covers is overrun (and halts the agent).
    let (status, d) = common::call(
        &spender,
        "POST",
        "/v1/agents/spender/steps",
        Body::Json(json!({"tool": "files.write", "action": "write", "args": {"path": "/tmp/x"}})),
    );
    assert_eq!(
        (status, d["decision"].as_str()),
        (200, Some("allow")),
        "{d}"
    );
    let step = d["step"].as_str().unwrap();
    let (status, settled) = common::call(
        &spender,
        "POST",
        &format!("/v1/agents/spender/steps/{step}/outcome"),
        Body::Json(json!({"status": "success", "cost": {"cost_usd": 7.0}})),
    );
    assert_eq!(status, 200, "{settled}");
    assert_eq!(settled["overrun"]["cost_micro_usd"], 2_000_000, "{settled}");

    let browser = Browser::start("overrun");
    browser.open(&format!("{}/#token={OPERATOR}", node.base));
    browser.wait_status("live");
    let text = |css: &str| {
        browser.wait(&format!("{css} on the page"), || {
            let v = browser.script(&format!(
                "const e = document.querySelector('{css}'); return e && e.textContent"
            ));
            v.as_str().map(str::to_string)
        })
    };
    let pool = text(r#"#pools tr[data-pool="swarm"] [data-overrun="cost_micro_usd"]"#);
    assert!(pool.contains("overrun") && pool.contains('2'), "{pool}");
    let agent = text(r#"#agents tr[data-agent-id="spender"] [data-overrun="cost_micro_usd"]"#);
    assert!(agent.contains("overrun") && agent.contains('2'), "{agent}");
    browser.screenshot_if_asked();
}
