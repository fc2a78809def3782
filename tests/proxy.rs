//! The tool proxy end to end: the real `warden node` binary between an agent and a real HTTP
//! upstream (a small server in this test that counts what reaches it). Every answer of the
//! proxy is checked, and so is what the upstream saw: credentials added, the agent's token
//! never forwarded, nothing forwarded that was not allowed.

mod common;

use std::collections::HashMap;
use std::io::{BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::Child;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Body, Client};
use serde_json::{json, Value};

const OPERATOR: &str = "proxy-test-operator-token";
const SECRET: &str = "upstream-secret-3f9a1c";

/// What the test upstream saw of one request.
#[derive(Clone, Debug)]
struct Seen {
    headers: HashMap<String, String>,
}

/// A plain HTTP/1.1 server on a thread per connection: `/slow` answers after 2 s, `/fail`
/// with 500, `/gate` waits until released, anything else with 200 and a JSON summary of the
/// request (never its headers' values).
struct Upstream {
    addr: String,
    seen: Arc<Mutex<Vec<Seen>>>,
    hits: Arc<AtomicUsize>,
    gate: Arc<(Mutex<bool>, std::sync::Condvar)>,
}

impl Upstream {
    fn start() -> Upstream {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap().to_string();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let hits = Arc::new(AtomicUsize::new(0));
        let gate = Arc::new((Mutex::new(false), std::sync::Condvar::new()));
        let (s, h, g) = (seen.clone(), hits.clone(), gate.clone());
        std::thread::spawn(move || {
            for conn in l.incoming().map_while(Result::ok) {
                let (s, h, g) = (s.clone(), h.clone(), g.clone());
                std::thread::Builder::new()
                    .stack_size(256 << 10)
                    .spawn(move || serve(conn, &s, &h, &g))
                    .unwrap();
            }
        });
        Upstream {
            addr,
            seen,
            hits,
            gate,
        }
    }

    fn open_gate(&self) {
        *self.gate.0.lock().unwrap() = true;
        self.gate.1.notify_all();
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

fn serve(
    conn: TcpStream,
    seen: &Mutex<Vec<Seen>>,
    hits: &AtomicUsize,
    gate: &(Mutex<bool>, std::sync::Condvar),
) {
    let mut out = conn.try_clone().unwrap();
    let mut r = BufReader::new(conn);
    while let Some(common::Request {
        method,
        path,
        headers,
        body,
    }) = common::read_request(&mut r)
    {
        hits.fetch_add(1, Ordering::SeqCst);
        let body = String::from_utf8_lossy(&body).to_string();
        let summary = json!({
            "method": method, "path": path, "body": body,
            "credential_ok": headers.get("x-api-key").map(String::as_str) == Some(SECRET),
        })
        .to_string();
        seen.lock().unwrap().push(Seen { headers });
        let status = if path.starts_with("/slow") {
            std::thread::sleep(Duration::from_secs(2));
            "200 OK"
        } else if path.starts_with("/fail") {
            "500 Internal Server Error"
        } else {
            if path.starts_with("/gate") {
                let mut open = gate.0.lock().unwrap();
                while !*open {
                    open = gate.1.wait(open).unwrap();
                }
            }
            "200 OK"
        };
        let (ctype, text) = if status.starts_with("500") {
            ("text/plain", "upstream broke".to_string())
        } else {
            ("application/json", summary)
        };
        let resp = format!(
            "HTTP/1.1 {status}\r\ncontent-type: {ctype}\r\ncontent-length: {}\r\nx-upstream: yes\r\n\r\n{text}",
            text.len()
        );
        if out.write_all(resp.as_bytes()).is_err() {
            return;
        }
    }
}

const POLICY: &str = r#"
version: 1
defaults:
  budgets: {steps: 100000, tokens: 100000000, cost_usd: 1000}
  min_cost:
    read: {tokens: 1, cost_usd: 0.000001}
    write: {tokens: 1, cost_usd: 0.000001}
    execute: {tokens: 1, cost_usd: 0.000001}
    network: {tokens: 1, cost_usd: 0.000001}
    spend: {tokens: 1, cost_usd: 0.000001}
pools:
  - {path: swarm}
  - {path: swarm/tight, limits: {cost_usd: 1.00}}
tools:
  search: {action: read, upstream: search, args: [q, page, method, path]}
  pay: {action: spend, upstream: search, args: [amount, to]}
  metered: {action: read, upstream: search, min_cost: {cost_usd: 0.10}}
  narrow: {action: read, upstream: narrow}
  quick: {action: read, upstream: quick}
  gone: {action: read, upstream: gone}
  nowhere: {action: read}
  ghost: {action: read, upstream: not-configured}
rules:
  - {id: no-delete, match: {tool: search, args: {method: DELETE}}, decision: deny}
  - {id: no-admin, match: {tool: search, args: {path: {regex: '^/admin'}}}, decision: deny}
  - {id: no-secrets, match: {tool: search, args: {q: {regex: password}}}, decision: halt, kind: safety}
  - {id: big-pay, match: {tool: pay, args: {amount: {gt: 100}}}, decision: require_approval}
  - {id: no-keys-out, match: {tool: metered, detector: secrets}, decision: deny}
"#;

struct Node {
    child: Child,
    base: String,
    op: Client,
    dir: PathBuf,
    up: Upstream,
    /// Holds the `gone` upstream's port for the node's lifetime: bound but never listening,
    /// so a connection is refused and no other test's listener can be given the port.
    _gone: tokio::net::TcpSocket,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Node {
    fn start(name: &str) -> Node {
        let up = Upstream::start();
        let dir = std::env::temp_dir().join(format!("warden-proxy-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let policy = dir.join("policy.yaml");
        std::fs::write(&policy, POLICY).unwrap();
        let config = dir.join("config.yaml");
        // `gone` is a port nothing listens on. It stays bound (without listen) until the node
        // stops: a port bound and closed at once was seen handed to another test's upstream.
        let gone_socket = tokio::net::TcpSocket::new_v4().unwrap();
        gone_socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let gone = gone_socket.local_addr().unwrap();
        std::fs::write(
            &config,
            format!(
                "upstreams:\n  search: {{url: \"http://{a}\", headers: {{x-api-key: \"env:PROXY_TEST_KEY\"}}}}\n  narrow: {{url: \"http://{a}\", max_in_flight: 1}}\n  quick: {{url: \"http://{a}\", timeout: 300ms}}\n  gone: {{url: \"http://{gone}\"}}\n",
                a = up.addr
            ),
        )
        .unwrap();
        std::env::set_var("PROXY_TEST_KEY", SECRET);
        let data = dir.join("data");
        let (child, base) = common::start_node(
            &data,
            &[
                "--config".as_ref(),
                config.as_os_str(),
                "--policy".as_ref(),
                policy.as_os_str(),
            ],
            OPERATOR,
        );
        let op = common::client(&base, Some(OPERATOR));
        Node {
            child,
            base,
            op,
            dir,
            up,
            _gone: gone_socket,
        }
    }

    fn agent(&self, id: &str, pool: &str) -> String {
        common::register(&self.op, id, pool)
    }
}

fn http() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(20)))
        .build()
        .into()
}

/// One raw request: status, headers, body text.
fn send(
    base: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, HashMap<String, String>, String) {
    let mut req = ureq::http::Request::builder()
        .method(method)
        .uri(format!("{base}{path}"));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req.body(body.to_string()).unwrap();
    let mut resp = http()
        .run(req)
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
    let hs = resp
        .headers()
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string()))
        .collect();
    let text = resp.body_mut().read_to_string().unwrap_or_default();
    (resp.status().as_u16(), hs, text)
}

fn json_of(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|_| panic!("not JSON: {text}"))
}

#[test]
fn allowed_calls_are_forwarded_with_the_upstreams_credentials_and_nothing_of_the_agents() {
    let n = Node::start("forward");
    let token = n.agent("a1", "swarm");
    let auth = format!("Bearer {token}");
    let (status, headers, text) = send(
        &n.base,
        "GET",
        "/proxy/search/find?q=rust&page=2",
        &[
            ("authorization", &auth),
            ("warden-cost", r#"{"tokens": 5}"#),
        ],
        "",
    );
    assert_eq!(status, 200, "{text}");
    let v = json_of(&text);
    assert_eq!(v["credential_ok"], true, "the upstream's key was added");
    assert_eq!(v["path"], "/find?q=rust&page=2");
    assert_eq!(headers.get("x-upstream").map(String::as_str), Some("yes"));
    assert!(headers.contains_key("warden-step"), "{headers:?}");
    let seen = n.up.seen();
    assert_eq!(seen.len(), 1);
    assert!(
        seen[0].headers.values().all(|v| !v.contains(&token)),
        "the agent's token reached the upstream: {:?}",
        seen[0].headers
    );
    assert!(!seen[0].headers.contains_key("warden-cost"));

    // A JSON body is forwarded as sent; a form body is judged too.
    let (status, _, text) = send(
        &n.base,
        "POST",
        "/proxy/search",
        &[
            ("authorization", &auth),
            ("content-type", "application/json"),
        ],
        r#"{"q": "warden"}"#,
    );
    assert_eq!(status, 200, "{text}");
    assert_eq!(json_of(&text)["body"], r#"{"q": "warden"}"#);
    let (status, _, text) = send(
        &n.base,
        "POST",
        "/proxy/search",
        &[
            ("authorization", &auth),
            ("content-type", "application/x-www-form-urlencoded"),
        ],
        "q=my+password",
    );
    assert_eq!(status, 403, "a form body is judged: {text}");
    assert_eq!(json_of(&text)["decision"], "halt");

    // The agent's spend shows both forwarded steps, settled as successes.
    let (_, agent) = common::call(&n.op, "GET", "/v1/agents/a1", Body::None);
    assert_eq!(agent["steps_allowed"], 2, "{agent}");
    assert_eq!(agent["open_steps"], 0, "{agent}");
    assert_eq!(n.up.seen().len(), 2, "the halted call never left the node");
}

#[test]
fn headers_the_upstream_receives_are_judged_like_the_query() {
    let n = Node::start("headers");
    let token = n.agent("a1", "swarm");
    let auth = format!("Bearer {token}");
    let key = "AKIAQ3EGZ7LQJ4XW2K5B";
    // A user agent and the usual accept and content types: forwarded (but the user agent and
    // accept-encoding, which are not), no `headers` arg, so a tool with an `args:` list takes it.
    let (status, _, text) = send(
        &n.base,
        "POST",
        "/proxy/search",
        &[
            ("authorization", &auth),
            ("content-type", "application/json"),
            ("accept", "*/*"),
            ("user-agent", &format!("agent {key}")),
            ("accept-encoding", "gzip"),
        ],
        r#"{"q": "rust"}"#,
    );
    assert_eq!(status, 200, "{text}");
    let seen = n.up.seen();
    assert!(
        !seen[0].headers.contains_key("user-agent"),
        "{:?}",
        seen[0].headers
    );
    assert!(
        !seen[0].headers.contains_key("accept-encoding"),
        "{:?}",
        seen[0].headers
    );
    assert_eq!(
        seen[0].headers.get("accept").map(String::as_str),
        Some("*/*")
    );
    // What Node's `fetch`, axios 0.x and jQuery send on their own: not judged, so a tool with
    // an `args:` list takes them.
    for (ct, body) in [
        ("application/json;charset=UTF-8", r#"{"q": "rust"}"#),
        // A literal `%` is no escape once decoded (`100% rust`).
        (
            "application/x-www-form-urlencoded;charset=UTF-8",
            "q=100%25+rust",
        ),
    ] {
        let (status, _, text) = send(
            &n.base,
            "POST",
            "/proxy/search",
            &[
                ("authorization", &auth),
                ("content-type", ct),
                ("accept", "*/*"),
                ("accept-language", "*"),
                ("sec-fetch-mode", "cors"),
                ("user-agent", "node"),
                ("cache-control", "no-cache"),
            ],
            body,
        );
        assert_eq!(status, 200, "{ct}: {text}");
    }
    let seen = n.up.seen();
    assert!(
        !seen[2].headers.contains_key("accept-language")
            && !seen[2].headers.contains_key("sec-fetch-mode"),
        "{:?}",
        seen[2].headers
    );
    // A key in a header of its own, or in an unusual accept or content type, is read by the
    // detectors and never forwarded.
    for (name, value) in [
        ("x-note", key.to_string()),
        ("accept", format!("application/vnd.{key}+json")),
        ("content-type", format!("application/json; note={key}")),
    ] {
        let (status, _, text) = send(
            &n.base,
            "POST",
            "/proxy/metered",
            &[("authorization", &auth), (name, &value)],
            r#"{"q": "rust"}"#,
        );
        assert_eq!(status, 403, "{name}: {text}");
        assert_eq!(json_of(&text)["rule"], "no-keys-out", "{text}");
    }
    assert_eq!(n.up.seen().len(), 3);
    // A header without a key is forwarded and shows in the step's args.
    let (status, _, text) = send(
        &n.base,
        "GET",
        "/proxy/metered/x",
        &[("authorization", &auth), ("x-trace", "t-1")],
        "",
    );
    assert_eq!(status, 200, "{text}");
    assert_eq!(
        n.up.seen()[3].headers.get("x-trace").map(String::as_str),
        Some("t-1")
    );
    // A tool whose `args:` list does not name `headers` takes no header of the agent's own.
    let (status, _, text) = send(
        &n.base,
        "GET",
        "/proxy/search/find?q=rust",
        &[("authorization", &auth), ("x-trace", "t-2")],
        "",
    );
    assert_eq!(status, 403, "{text}");
    assert!(text.contains("headers"), "{text}");
    // A body that names `headers` beside real headers is ambiguous: refused.
    let (status, _, text) = send(
        &n.base,
        "POST",
        "/proxy/metered",
        &[("authorization", &auth), ("x-trace", "t-3")],
        r#"{"headers": {"x-trace": "t-1"}}"#,
    );
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("ambiguous_args"), "{text}");
    assert_eq!(n.up.seen().len(), 4);
    // A URL carried as a value keeps its own escapes of reserved characters and spaces (only
    // an escape of a letter, digit, `-`, `.`, `_`, `~` or `%` is refused once decoded).
    let (status, _, text) = send(
        &n.base,
        "GET",
        "/proxy/search/find?q=https%3A%2F%2Fx.com%2Fa%2520b%3Fc%3D%25C3%25A9",
        &[("authorization", &auth)],
        "",
    );
    assert_eq!(status, 200, "{text}");
    assert_eq!(n.up.seen().len(), 5);
    // US-ASCII is read as UTF-8 reads it: not refused for its charset (an unusual
    // Content-Type is then judged as a header: this tool takes none).
    let (status, _, text) = send(
        &n.base,
        "POST",
        "/proxy/search/find",
        &[
            ("authorization", &auth),
            (
                "content-type",
                "application/x-www-form-urlencoded; charset=US-ASCII",
            ),
        ],
        "q=rust",
    );
    assert_eq!(status, 403, "{text}");
    assert_eq!(json_of(&text)["rule"], "registry.args", "{text}");
}

#[test]
fn refused_calls_never_reach_the_upstream_and_say_why() {
    let n = Node::start("refuse");
    let token = n.agent("a1", "swarm");
    let auth = format!("Bearer {token}");
    let a = [("authorization", auth.as_str())];
    let other = n.agent("a2", "swarm");
    let other_auth = format!("Bearer {other}");
    let big = "b".repeat(40 * 1024);
    let deep = format!(r#"{{"q": {}1{}}}"#, "[".repeat(200), "]".repeat(200));
    // (method, path, headers, body, status, error code)
    type Case<'a> = (
        &'a str,
        &'a str,
        Vec<(&'a str, &'a str)>,
        &'a str,
        u16,
        &'a str,
    );
    let cases: Vec<Case> = vec![
        (
            "DELETE",
            "/proxy/search/item/1",
            a.to_vec(),
            "",
            403,
            "denied",
        ),
        (
            "GET",
            "/proxy/search/admin/users",
            a.to_vec(),
            "",
            403,
            "denied",
        ),
        (
            "GET",
            "/proxy/search/%61dmin/users",
            a.to_vec(),
            "",
            403,
            "denied",
        ),
        (
            "GET",
            "/proxy/search/x/../admin",
            a.to_vec(),
            "",
            400,
            "bad_path",
        ),
        (
            "GET",
            "/proxy/search/x/%2e%2e/admin",
            a.to_vec(),
            "",
            400,
            "bad_path",
        ),
        (
            "GET",
            "/proxy/search?q=a&q=b",
            a.to_vec(),
            "",
            400,
            "ambiguous_args",
        ),
        (
            "POST",
            "/proxy/search?q=a",
            [a[0], ("content-type", "application/json")].to_vec(),
            r#"{"q": "b"}"#,
            400,
            "ambiguous_args",
        ),
        (
            "POST",
            "/proxy/search",
            [a[0], ("content-type", "application/json")].to_vec(),
            r#"{"q": "a", "q": "password"}"#,
            400,
            "bad_json",
        ),
        (
            "POST",
            "/proxy/search",
            [a[0], ("content-type", "text/plain")].to_vec(),
            "q=password",
            415,
            "unsupported_media_type",
        ),
        (
            "POST",
            "/proxy/search",
            [a[0], ("warden-cost", "12")].to_vec(),
            "",
            400,
            "bad_step",
        ),
        (
            "GET",
            "/proxy/unlisted",
            a.to_vec(),
            "",
            404,
            "unknown_tool",
        ),
        ("GET", "/proxy/nowhere", a.to_vec(), "", 404, "no_upstream"),
        (
            "GET",
            "/proxy/ghost",
            a.to_vec(),
            "",
            502,
            "unknown_upstream",
        ),
        // Double encoding: `%2561` is `%61` to the policy and `a` to a server that decodes
        // twice; so is a query or form value's.
        (
            "GET",
            "/proxy/search/%2561dmin/users",
            a.to_vec(),
            "",
            400,
            "bad_path",
        ),
        (
            "GET",
            "/proxy/search/x%252F..%252Fadmin",
            a.to_vec(),
            "",
            400,
            "bad_path",
        ),
        (
            "GET",
            "/proxy/search/x?q=%2570assword",
            a.to_vec(),
            "",
            400,
            "bad_encoding",
        ),
        (
            "POST",
            "/proxy/search/x",
            [a[0], ("content-type", "application/x-www-form-urlencoded")].to_vec(),
            "q=%252565vil",
            400,
            "bad_encoding",
        ),
        // IIS's `%uXXXX` and an overlong UTF-8 `e` (`%C1%A5`), each encoded once more.
        (
            "GET",
            "/proxy/search/x?q=%25u0065vil",
            a.to_vec(),
            "",
            400,
            "bad_encoding",
        ),
        (
            "GET",
            "/proxy/search/x?q=%25C1%25A5vil",
            a.to_vec(),
            "",
            400,
            "bad_encoding",
        ),
        (
            "GET",
            "/proxy/search/%25u0061dmin",
            a.to_vec(),
            "",
            400,
            "bad_path",
        ),
        // A body judged as UTF-8 is not forwarded for an upstream to read in another charset
        // (`+AGUAdgBpAGw-` is `evil` in UTF-7).
        (
            "POST",
            "/proxy/search/x",
            [a[0], ("content-type", "application/json; charset=utf-7")].to_vec(),
            r#"{"q": "+AHA-assword"}"#,
            415,
            "unsupported_media_type",
        ),
        // RFC 2231's extended form of the parameter names a charset too.
        (
            "POST",
            "/proxy/search/x",
            [a[0], ("content-type", "application/json; charset*=utf-7''")].to_vec(),
            r#"{"q": "+AHA-assword"}"#,
            415,
            "unsupported_media_type",
        ),
        (
            "POST",
            "/proxy/search/x",
            [
                a[0],
                (
                    "content-type",
                    "application/json; charset=utf-8; charset=\"UTF-16\"",
                ),
            ]
            .to_vec(),
            r#"{"q": "rust"}"#,
            415,
            "unsupported_media_type",
        ),
        (
            "POST",
            "/proxy/search/x",
            [
                a[0],
                (
                    "content-type",
                    "application/x-www-form-urlencoded; charset=iso-8859-1",
                ),
            ]
            .to_vec(),
            "q=%E9t%E9",
            415,
            "unsupported_media_type",
        ),
        // What would make the upstream read another method or path than the one judged.
        (
            "POST",
            "/proxy/search/x",
            [a[0], ("x-http-method-override", "DELETE")].to_vec(),
            "",
            400,
            "rewrite_header",
        ),
        (
            "GET",
            "/proxy/search/c6",
            [a[0], ("x-original-url", "/admin")].to_vec(),
            "",
            400,
            "rewrite_header",
        ),
        // `;parameters` are cut off by Tomcat, Jetty and Spring before they normalise.
        (
            "GET",
            "/proxy/search/x/..;/admin",
            a.to_vec(),
            "",
            400,
            "bad_path",
        ),
        (
            "GET",
            "/proxy/search/;/admin",
            a.to_vec(),
            "",
            400,
            "bad_path",
        ),
        (
            "GET",
            "/proxy/search/x/..%3B/admin",
            a.to_vec(),
            "",
            400,
            "bad_path",
        ),
        (
            "GET",
            "/proxy/search/admin%00",
            a.to_vec(),
            "",
            400,
            "bad_path",
        ),
        (
            "GET",
            "/proxy/search/admin;jsessionid=1/users",
            a.to_vec(),
            "",
            400,
            "bad_path",
        ),
        (
            "GET",
            "/proxy/search/admin%3Bx/users",
            a.to_vec(),
            "",
            400,
            "bad_path",
        ),
        // A method override or a nested value in a form or query, a JSON text sent as a form.
        (
            "GET",
            "/proxy/search/x?_METHOD=DELETE",
            a.to_vec(),
            "",
            400,
            "bad_step",
        ),
        (
            "POST",
            "/proxy/search/x",
            [a[0], ("content-type", "application/x-www-form-urlencoded")].to_vec(),
            "_method=DELETE",
            400,
            "bad_step",
        ),
        (
            "POST",
            "/proxy/search/x",
            [a[0], ("content-type", "application/json")].to_vec(),
            r#"{"_method": "DELETE"}"#,
            400,
            "bad_step",
        ),
        (
            "GET",
            "/proxy/search/x?page[a]b=1",
            a.to_vec(),
            "",
            400,
            "bad_encoding",
        ),
        (
            "GET",
            "/proxy/search/x?page=1&page[size]=2",
            a.to_vec(),
            "",
            400,
            "ambiguous_args",
        ),
        (
            "POST",
            "/proxy/search/x",
            [a[0], ("content-type", "application/x-www-form-urlencoded")].to_vec(),
            "+_method=DELETE",
            400,
            "bad_step",
        ),
        (
            "POST",
            "/proxy/search/x",
            [a[0], ("content-type", "application/x-www-form-urlencoded")].to_vec(),
            "\u{feff}{\"amount\": 5000}",
            400,
            "bad_encoding",
        ),
        (
            "GET",
            "/proxy/search/admin%20/users",
            a.to_vec(),
            "",
            400,
            "bad_path",
        ),
        (
            "GET",
            "/proxy/search/admin./users",
            a.to_vec(),
            "",
            400,
            "bad_path",
        ),
        (
            "POST",
            "/proxy/search/x",
            [a[0], ("content-type", "application/x-www-form-urlencoded")].to_vec(),
            r#" {"amount": 5000}"#,
            400,
            "bad_encoding",
        ),
        // A raw `;` splits pairs for some parsers: `q=password` would hide in `page`.
        (
            "GET",
            "/proxy/search/x?page=1;q=password",
            a.to_vec(),
            "",
            400,
            "bad_encoding",
        ),
        (
            "POST",
            "/proxy/search/x",
            [a[0], ("x_http_method_override", "DELETE")].to_vec(),
            "",
            400,
            "rewrite_header",
        ),
        (
            "GET",
            "/proxy/search//admin",
            a.to_vec(),
            "",
            400,
            "bad_path",
        ),
        (
            "GET",
            "/proxy/search/a//admin",
            a.to_vec(),
            "",
            400,
            "bad_path",
        ),
        (
            "GET",
            "/proxy/search/%2Fadmin",
            a.to_vec(),
            "",
            400,
            "bad_path",
        ),
        (
            "GET",
            "/proxy/search/%5Cadmin",
            a.to_vec(),
            "",
            400,
            "bad_path",
        ),
        (
            "GET",
            "/proxy/%C0%AE%C0%AE/admin",
            a.to_vec(),
            "",
            400,
            "bad_path",
        ),
        // Bytes that are not UTF-8 would be judged as U+FFFD and forwarded as they are.
        (
            "GET",
            "/proxy/search/f?q=%ff",
            a.to_vec(),
            "",
            400,
            "bad_encoding",
        ),
        (
            "POST",
            "/proxy/search/f",
            [a[0], ("content-type", "application/x-www-form-urlencoded")].to_vec(),
            "q=%ff%fe",
            400,
            "bad_encoding",
        ),
        // Two costs, or one with a key twice: which one would count?
        (
            "POST",
            "/proxy/search",
            [
                a[0],
                ("warden-cost", r#"{"cost_usd": 0.5}"#),
                ("warden-cost", r#"{"cost_usd": 900}"#),
            ]
            .to_vec(),
            "",
            400,
            "bad_step",
        ),
        (
            "POST",
            "/proxy/search",
            [
                a[0],
                ("warden-cost", r#"{"cost_usd": 0.5, "cost_usd": 0.1}"#),
            ]
            .to_vec(),
            "",
            400,
            "bad_step",
        ),
        // Two tokens: which agent would it be?
        (
            "GET",
            "/proxy/search",
            [a[0], ("x-api-key", other.as_str())].to_vec(),
            "",
            401,
            "unauthorized",
        ),
        (
            "GET",
            "/proxy/search",
            [a[0], ("authorization", other_auth.as_str())].to_vec(),
            "",
            401,
            "unauthorized",
        ),
        ("GET", "/proxy/search", vec![], "", 401, "unauthorized"),
        // Only the documented methods, spelled as HTTP spells them: a rule on `args.method`
        // lists what it forbids, and servers read other verbs their own way.
        (
            "OPTIONS",
            "/proxy/search/x",
            a.to_vec(),
            "",
            405,
            "method_not_allowed",
        ),
        (
            "GET",
            "/proxy/search",
            [a[0], ("x-big", big.as_str())].to_vec(),
            "",
            431,
            "headers_too_large",
        ),
        (
            "GET",
            "/proxy/search",
            vec![("authorization", "Bearer nope")],
            "",
            401,
            "unauthorized",
        ),
        (
            "GET",
            "/proxy/search",
            vec![("authorization", "Bearer proxy-test-operator-token")],
            "",
            401,
            "unauthorized",
        ),
    ];
    // Extension methods and other spellings, sent as bytes (HTTP clients refuse to).
    for method in ["PURGE", "delete", "Get"] {
        let addr = n.base.trim_start_matches("http://");
        let mut raw = std::net::TcpStream::connect(addr).unwrap();
        raw.set_read_timeout(Some(std::time::Duration::from_secs(10)))
            .unwrap();
        let req = format!("{method} /proxy/search/x HTTP/1.1\r\nHost: {addr}\r\nAuthorization: {auth}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        std::io::Write::write_all(&mut raw, req.as_bytes()).unwrap();
        let mut answer = String::new();
        let _ = std::io::Read::read_to_string(&mut raw, &mut answer);
        assert!(answer.starts_with("HTTP/1.1 405"), "{method}: {answer}");
        assert!(answer.contains("method_not_allowed"), "{method}: {answer}");
    }
    // HEAD (a GET to many servers) is refused too; its answer has no body.
    let (status, hs, _) = send(&n.base, "HEAD", "/proxy/search/x", &a, "");
    assert_eq!(status, 405);
    assert_eq!(
        hs.get("allow").map(String::as_str),
        Some("GET, POST, PUT, PATCH, DELETE")
    );
    // Nesting past the JSON reader's 128 levels says so.
    let json_body = [a[0], ("content-type", "application/json")];
    let (status, _, text) = send(&n.base, "POST", "/proxy/search/x", &json_body, &deep);
    assert_eq!(status, 400, "{text}");
    assert!(
        text.contains("bad_json") && text.contains("recursion limit"),
        "{text}"
    );
    for (method, path, headers, body, want, code) in cases {
        let (status, _, text) = send(&n.base, method, path, &headers, body);
        assert_eq!(status, want, "{method} {path}: {text}");
        let v = json_of(&text);
        assert_eq!(v["error"]["code"], code, "{method} {path}: {text}");
        assert!(!text.contains("`rest`"), "an internal name: {text}");
        if status == 403 {
            assert!(v["rule"].is_string() && v["step"].is_string(), "{text}");
        }
    }
    assert_eq!(n.up.hits.load(Ordering::SeqCst), 0, "{:?}", n.up.seen());

    // Refused before its body was read: the connection cannot be reused, and says so.
    let (status, headers, _) = send(
        &n.base,
        "POST",
        "/proxy/search",
        &[
            ("authorization", "Bearer nope"),
            ("content-type", "application/json"),
        ],
        r#"{"q": "x"}"#,
    );
    assert_eq!(status, 401);
    assert_eq!(
        headers.get("connection").map(String::as_str),
        Some("close"),
        "{headers:?}"
    );

    // The x-api-key header works as the agent's token too (Anthropic's clients send it).
    let (status, _, text) = send(
        &n.base,
        "GET",
        "/proxy/search/ok",
        &[("x-api-key", &token)],
        "",
    );
    assert_eq!(status, 200, "{text}");
}

#[test]
fn an_upstream_failure_timeout_or_absence_is_a_failed_step_and_a_clear_answer() {
    let n = Node::start("fail");
    let token = n.agent("a1", "swarm");
    let auth = format!("Bearer {token}");
    let a = [("authorization", auth.as_str())];
    // The upstream's own error passes through as it was (not rewritten).
    let (status, _, text) = send(&n.base, "GET", "/proxy/search/fail", &a, "");
    assert_eq!((status, text.as_str()), (500, "upstream broke"));
    let (status, _, text) = send(&n.base, "GET", "/proxy/quick/slow", &a, "");
    assert_eq!(status, 504, "{text}");
    assert_eq!(json_of(&text)["error"]["code"], "upstream_timeout");
    let (status, _, text) = send(&n.base, "GET", "/proxy/gone", &a, "");
    assert_eq!(status, 502, "{text}");
    assert_eq!(json_of(&text)["error"]["code"], "upstream_unreachable");
    assert!(
        !text.contains("127.0.0.1"),
        "the upstream's address stays on the node: {text}"
    );
    common::wait_until(Duration::from_secs(5), "three failures settled", || {
        let (_, v) = common::call(&n.op, "GET", "/v1/agents/a1", Body::None);
        v["consecutive_failures"] == 3 && v["open_steps"] == 0
    });
}

#[test]
fn an_upstream_with_all_its_slots_taken_is_busy_before_anything_is_decided() {
    let n = Node::start("busy");
    let token = n.agent("a1", "swarm");
    let auth = format!("Bearer {token}");
    let base = n.base.clone();
    let auth2 = auth.clone();
    let first = std::thread::spawn(move || {
        send(
            &base,
            "GET",
            "/proxy/narrow/gate",
            &[("authorization", &auth2)],
            "",
        )
    });
    common::wait_until(
        Duration::from_secs(5),
        "the first call reaches the upstream",
        || n.up.hits.load(Ordering::SeqCst) == 1,
    );
    let (status, _, text) = send(
        &n.base,
        "GET",
        "/proxy/narrow/x",
        &[("authorization", &auth)],
        "",
    );
    assert_eq!(status, 503, "{text}");
    assert_eq!(json_of(&text)["error"]["code"], "upstream_busy");
    n.up.open_gate();
    assert_eq!(first.join().unwrap().0, 200);
    let (_, v) = common::call(&n.op, "GET", "/v1/agents/a1", Body::None);
    assert_eq!(
        v["steps_decided"], 1,
        "the busy answer decided nothing: {v}"
    );
}

#[test]
fn an_approved_call_is_forwarded_once_and_only_as_it_was_asked() {
    let n = Node::start("approve");
    let token = n.agent("a1", "swarm");
    let auth = format!("Bearer {token}");
    let json_ct = ("content-type", "application/json");
    let body = r#"{"amount": 500, "to": "acme"}"#;
    let (status, headers, text) = send(
        &n.base,
        "POST",
        "/proxy/pay",
        &[("authorization", &auth), json_ct],
        body,
    );
    assert_eq!(status, 202, "{text}");
    let d = json_of(&text);
    assert_eq!(d["decision"], "require_approval");
    let step = d["step"].as_str().unwrap().to_string();
    let location = headers.get("location").cloned().unwrap_or_default();
    assert!(location.contains(&format!("/steps/{step}")), "{headers:?}");
    // Retried before the answer: still waiting.
    let retry = [
        ("authorization", auth.as_str()),
        json_ct,
        ("warden-step", step.as_str()),
    ];
    let (status, _, _) = send(&n.base, "POST", "/proxy/pay", &retry, body);
    assert_eq!(status, 202);
    let approval = d["approval"].as_str().unwrap();
    let (status, v) = common::call(
        &n.op,
        "POST",
        &format!("/v1/approvals/{approval}"),
        Body::json(&json!({"decision": "approve", "by": "test"})),
    );
    assert_eq!(status, 200, "{v}");
    // Approved, the step is open and sealed: the agent may not settle it itself (it would
    // set its own bill); only the proxy, from the upstream's answer.
    let agent = n.op.with_token(&token);
    let (status, v) = common::call(
        &agent,
        "POST",
        &format!("/v1/agents/a1/steps/{step}/outcome"),
        Body::json(&json!({"status": "success", "cost": {"cost_usd": 0}})),
    );
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (409, Some("proxy_settles")),
        "{v}"
    );
    // Another request cannot ride on the approval.
    let (status, _, text) = send(
        &n.base,
        "POST",
        "/proxy/pay",
        &retry,
        r#"{"amount": 50000, "to": "acme"}"#,
    );
    assert_eq!(status, 409, "{text}");
    assert_eq!(json_of(&text)["error"]["code"], "retry_mismatch");
    // Nor can the same body with a header added (the upstream might read it: a method
    // override is refused outright, 400 `rewrite_header`, before any retry is looked at).
    let overriding = [
        retry[0],
        retry[1],
        retry[2],
        ("x-payee-override", "mallory"),
    ];
    let (status, _, text) = send(&n.base, "POST", "/proxy/pay", &overriding, body);
    assert_eq!(
        (status, json_of(&text)["error"]["code"].as_str()),
        (409, Some("retry_mismatch")),
        "{text}"
    );
    assert_eq!(n.up.hits.load(Ordering::SeqCst), 0);
    let (status, headers, text) = send(&n.base, "POST", "/proxy/pay", &retry, body);
    assert_eq!(status, 200, "{text}");
    assert_eq!(headers.get("warden-step"), Some(&step));
    let (status, _, text) = send(&n.base, "POST", "/proxy/pay", &retry, body);
    assert_eq!(status, 409, "forwarded at most once: {text}");
    assert_eq!(json_of(&text)["error"]["code"], "unknown_retry");
    assert_eq!(n.up.hits.load(Ordering::SeqCst), 1);
}

#[test]
fn an_approved_call_of_an_agent_halted_since_is_not_forwarded() {
    let n = Node::start("approve-halt");
    let token = n.agent("a1", "swarm");
    let auth = format!("Bearer {token}");
    let json_ct = ("content-type", "application/json");
    let body = r#"{"amount": 500, "to": "acme"}"#;
    let (status, _, text) = send(
        &n.base,
        "POST",
        "/proxy/pay",
        &[("authorization", &auth), json_ct],
        body,
    );
    assert_eq!(status, 202, "{text}");
    let d = json_of(&text);
    let (step, approval) = (d["step"].as_str().unwrap(), d["approval"].as_str().unwrap());
    let answer = json!({"decision": "approve", "by": "test"});
    let (status, v) = common::call(
        &n.op,
        "POST",
        &format!("/v1/approvals/{approval}"),
        Body::json(&answer),
    );
    assert_eq!(status, 200, "{v}");
    let (status, v) = common::call(
        &n.op,
        "POST",
        "/v1/agents/a1/halt",
        Body::json(&json!({"reason": "stop"})),
    );
    assert!(status < 300, "{v}");
    let retry = [
        ("authorization", auth.as_str()),
        json_ct,
        ("warden-step", step),
    ];
    let (status, _, text) = send(&n.base, "POST", "/proxy/pay", &retry, body);
    assert_eq!(
        (status, json_of(&text)["error"]["code"].as_str()),
        (403, Some("halted")),
        "{text}"
    );
    assert_eq!(
        n.up.hits.load(Ordering::SeqCst),
        0,
        "a halted agent's approved call never runs"
    );
    let (_, a) = common::call(&n.op, "GET", "/v1/agents/a1", Body::None);
    assert_eq!(a["open_steps"], 0, "its reservation was released: {a}");
}

#[test]
fn bracketed_names_are_judged_as_the_nested_values_servers_read() {
    let n = Node::start("brackets");
    let token = n.agent("a1", "swarm");
    let auth = format!("Bearer {token}");
    // Stripe-style forms and JSON:API queries pass, nested.
    let (status, _, text) = send(
        &n.base,
        "GET",
        "/proxy/search/x?page[size]=10&page[number]=2",
        &[("authorization", &auth)],
        "",
    );
    assert_eq!(status, 200, "{text}");
    // `amount[0]=5000` is 5000 to PHP, Rails and qs: the rule on `amount` reads it.
    let (status, _, text) = send(
        &n.base,
        "POST",
        "/proxy/pay",
        &[
            ("authorization", &auth),
            ("content-type", "application/x-www-form-urlencoded"),
        ],
        "amount[0]=5000&to[country]=KP",
    );
    assert_eq!(status, 202, "{text}");
    assert!(text.contains("big-pay"), "{text}");
    let (status, _, text) = send(
        &n.base,
        "GET",
        "/proxy/search/x?q[]=my%20password",
        &[("authorization", &auth)],
        "",
    );
    assert_eq!(status, 403, "{text}");
    assert!(text.contains("no-secrets"), "{text}");
    assert_eq!(n.up.seen().len(), 1, "only the first reached the upstream");
}

#[test]
fn a_body_is_forwarded_as_the_type_it_was_judged_as() {
    let n = Node::start("smuggle");
    let token = n.agent("a1", "swarm");
    let auth = format!("Bearer {token}");
    // `Connection: content-type` would drop the type the proxy judged the body as.
    let (status, _, text) = send(
        &n.base,
        "POST",
        "/proxy/search",
        &[
            ("authorization", &auth),
            ("content-type", "application/x-www-form-urlencoded"),
            ("connection", "content-type"),
        ],
        "q=rust",
    );
    assert_eq!(status, 200, "{text}");
    let seen = n.up.seen();
    assert_eq!(
        seen[0].headers.get("content-type").map(String::as_str),
        Some("application/x-www-form-urlencoded"),
        "{:?}",
        seen[0].headers
    );
    // A compressed body cannot be judged.
    let (status, _, text) = send(
        &n.base,
        "POST",
        "/proxy/search",
        &[
            ("authorization", &auth),
            ("content-type", "application/json"),
            ("content-encoding", "gzip"),
        ],
        "\u{1f}\u{8b}not really gzip",
    );
    assert_eq!(status, 415, "{text}");
    assert_eq!(n.up.hits.load(Ordering::SeqCst), 1);
    // A body sent without a type was judged as JSON: it goes as JSON.
    let (status, _, text) = send(
        &n.base,
        "POST",
        "/proxy/search",
        &[("authorization", &auth)],
        r#"{"q": "rust"}"#,
    );
    assert_eq!(status, 200, "{text}");
    let seen = n.up.seen();
    assert_eq!(
        seen[1].headers.get("content-type").map(String::as_str),
        Some("application/json"),
        "{:?}",
        seen[1].headers
    );
    // The scheme's name is compared without case (RFC 9110 §11.1).
    let lower = format!("bearer {token}");
    let (status, _, text) = send(
        &n.base,
        "GET",
        "/proxy/search/x",
        &[("authorization", &lower)],
        "",
    );
    assert_eq!(status, 200, "{text}");
    // A trailing slash is a path of its own, forwarded as sent.
    let (status, _, text) = send(
        &n.base,
        "GET",
        "/proxy/search/",
        &[("authorization", &auth)],
        "",
    );
    assert_eq!(status, 200, "{text}");
    assert_eq!(json_of(&text)["path"], "/", "{text}");
}

#[test]
fn a_thousand_concurrent_calls_on_a_pool_with_room_for_ten_forward_exactly_ten() {
    let n = Node::start("concurrent");
    let tokens: Vec<String> = (0..10)
        .map(|i| n.agent(&format!("c{i}"), "swarm/tight"))
        .collect();
    let ok = Arc::new(AtomicUsize::new(0));
    let refused = Arc::new(AtomicUsize::new(0));
    let threads: Vec<_> = (0..1000)
        .map(|i| {
            let (base, token) = (n.base.clone(), tokens[i % 10].clone());
            let (ok, refused) = (ok.clone(), refused.clone());
            std::thread::Builder::new()
                .stack_size(256 << 10)
                .spawn(move || {
                    let auth = format!("Bearer {token}");
                    let (status, _, text) = send(
                        &base,
                        "GET",
                        "/proxy/metered/x",
                        &[("authorization", &auth)],
                        "",
                    );
                    match status {
                        200 => ok.fetch_add(1, Ordering::SeqCst),
                        403 => refused.fetch_add(1, Ordering::SeqCst),
                        other => panic!("unexpected {other}: {text}"),
                    };
                })
                .unwrap()
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(ok.load(Ordering::SeqCst), 10);
    assert_eq!(refused.load(Ordering::SeqCst), 990);
    assert_eq!(
        n.up.hits.load(Ordering::SeqCst),
        10,
        "counted at the upstream"
    );
    let (_, page) = common::call(
        &n.op,
        "GET",
        "/v1/audit?decision=allow&limit=10000",
        Body::None,
    );
    let allows = page["entries"].as_array().map_or(0, Vec::len);
    assert_eq!(allows, 10, "the journal holds exactly the ten allows");
    let (_, pool) = common::call(&n.op, "GET", "/v1/pools/swarm/tight", Body::None);
    assert_eq!(pool["spent"]["cost_micro_usd"], 1_000_000, "{pool}");
}

#[test]
fn credentials_never_leave_the_node() {
    let n = Node::start("leak");
    let token = n.agent("a1", "swarm");
    let auth = format!("Bearer {token}");
    let mut answers = String::new();
    for (m, p) in [
        ("GET", "/proxy/search/x"),
        ("GET", "/proxy/search/fail"),
        ("DELETE", "/proxy/search/x"),
        ("GET", "/proxy/gone"),
    ] {
        let (_, h, t) = send(&n.base, m, p, &[("authorization", &auth)], "");
        answers.push_str(&format!("{h:?}{t}"));
    }
    for path in ["/v1/policy", "/v1/audit", "/v1/agents", "/", "/metrics"] {
        let (_, h, t) = send(
            &n.base,
            "GET",
            path,
            &[("authorization", &format!("Bearer {OPERATOR}"))],
            "",
        );
        answers.push_str(&format!("{h:?}{t}"));
    }
    assert!(
        !answers.contains(SECRET),
        "a credential left the node in an answer"
    );
    for entry in walk(&n.dir.join("data")) {
        let bytes = std::fs::read(&entry).unwrap();
        assert!(
            !String::from_utf8_lossy(&bytes).contains(SECRET),
            "{} holds the credential",
            entry.display()
        );
    }
}

fn walk(dir: &std::path::Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().map_while(Result::ok) {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}
