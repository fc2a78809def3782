//! The proxy cannot be bypassed when the network says so: an agent process runs in its own
//! network namespace (`ip netns`) whose only route is a veth pair to the node. The tool's
//! upstream listens (TCP and UDP) on an address of the host (on its loopback interface) that the namespace has no route
//! to. A direct TCP connection and a UDP datagram from the agent both fail and nothing
//! reaches the upstream; the same call through the node's proxy is decided, journaled and
//! forwarded. This is the production pattern of docs/deploy.md in miniature.
//!
//! Needs root and iproute2 (`ip`); without them the test says why and skips, unless
//! `WARDEN_REQUIRE_EXTERNAL=1` (CI), where it fails.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, UdpSocket};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::Body;
use serde_json::Value;

const OPERATOR: &str = "netns-test-operator-token";

/// Runs `ip` with `args`; panics with its output when it fails.
fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("ip runs");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Why this machine cannot run the test, if it cannot.
fn unable() -> Option<String> {
    let root = Command::new("id").arg("-u").output().ok()?;
    if String::from_utf8_lossy(&root.stdout).trim() != "0" {
        return Some("network namespaces need root".into());
    }
    match Command::new("ip").args(["netns", "list"]).output() {
        Ok(o) if o.status.success() => None,
        _ => Some("iproute2's `ip` is missing (apt-get install iproute2)".into()),
    }
}

/// The namespace, its veth pair and the upstream's address; removed on drop.
struct Net {
    ns: String,
    veth: String,
    /// The node's address, on the host's end of the veth pair.
    node_ip: String,
    /// The upstream's address, on a dummy interface of the host.
    upstream_ip: String,
}

impl Net {
    fn new() -> Net {
        let id = std::process::id() % 200 + 20;
        let net = Net {
            ns: format!("warden-t{id}"),
            veth: format!("wv{id}"),
            node_ip: format!("10.231.{id}.1"),
            upstream_ip: format!("10.232.{id}.1"),
        };
        net.teardown();
        let peer = format!("{}p", net.veth);
        let agent_ip = format!("10.231.{id}.2");
        ip(&["netns", "add", &net.ns]);
        ip(&[
            "link", "add", &net.veth, "type", "veth", "peer", "name", &peer,
        ]);
        ip(&["link", "set", &peer, "netns", &net.ns]);
        ip(&[
            "addr",
            "add",
            &format!("{}/30", net.node_ip),
            "dev",
            &net.veth,
        ]);
        ip(&["link", "set", &net.veth, "up"]);
        let inside = |args: &[&str]| {
            let mut all = vec!["netns", "exec", &net.ns, "ip"];
            all.extend_from_slice(args);
            ip(&all);
        };
        inside(&["addr", "add", &format!("{agent_ip}/30"), "dev", &peer]);
        inside(&["link", "set", &peer, "up"]);
        inside(&["link", "set", "lo", "up"]);
        // The upstream lives on an address of the host the namespace has no route to.
        ip(&[
            "addr",
            "add",
            &format!("{}/32", net.upstream_ip),
            "dev",
            "lo",
        ]);
        net
    }

    fn teardown(&self) {
        let upstream = format!("{}/32", self.upstream_ip);
        for args in [
            vec!["netns", "del", self.ns.as_str()],
            vec!["link", "del", self.veth.as_str()],
            vec!["addr", "del", &upstream, "dev", "lo"],
        ] {
            let _ = Command::new("ip")
                .args(&args)
                .stderr(Stdio::null())
                .status();
        }
    }

    /// Runs a bash script inside the namespace (the agent's process).
    fn agent(&self, script: &str) -> Output {
        Command::new("ip")
            .args(["netns", "exec", &self.ns, "bash", "-c", script])
            .output()
            .expect("ip netns exec runs")
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        self.teardown();
    }
}

/// A TCP upstream answering 200 to every request, counting them, and a UDP socket counting
/// datagrams, both on `addr`.
fn upstream(addr: &str) -> (u16, u16, Arc<AtomicUsize>, Arc<AtomicUsize>) {
    let tcp = TcpListener::bind(format!("{addr}:0")).unwrap();
    let udp = UdpSocket::bind(format!("{addr}:0")).unwrap();
    let (tport, uport) = (
        tcp.local_addr().unwrap().port(),
        udp.local_addr().unwrap().port(),
    );
    let (tcp_hits, udp_hits) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let t = tcp_hits.clone();
    std::thread::spawn(move || {
        for mut c in tcp.incoming().map_while(Result::ok) {
            t.fetch_add(1, Ordering::SeqCst);
            let mut buf = [0u8; 4096];
            let _ = c.read(&mut buf);
            let _ = c.write_all(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 11\r\nconnection: close\r\n\r\n{\"ok\":true}");
        }
    });
    let u = udp_hits.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 512];
        while udp.recv_from(&mut buf).is_ok() {
            u.fetch_add(1, Ordering::SeqCst);
        }
    });
    (tport, uport, tcp_hits, udp_hits)
}

fn start_node(dir: &std::path::Path, listen: &str, upstream: &str) -> (Child, String) {
    std::fs::create_dir_all(dir).unwrap();
    let policy = dir.join("policy.yaml");
    std::fs::write(
        &policy,
        format!(
            "version: 1\ndefaults:\n  budgets: {{steps: 100}}\n  min_cost: {{read: {{tokens: 1, cost_usd: 0.000001}}}}\npools:\n  - {{path: swarm}}\ntools:\n  search: {{action: read, upstream: \"http://{upstream}\"}}\n"
        ),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_warden"))
        .args(["node", "--listen", listen, "--data"])
        .arg(dir.join("data"))
        .arg("--policy")
        .arg(&policy)
        .env("WARDEN_OPERATOR_TOKEN", OPERATOR)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut first = String::new();
    let mut out = child.stdout.take().unwrap();
    let mut byte = [0u8; 1];
    while out.read(&mut byte).unwrap_or(0) == 1 && byte[0] != b'\n' {
        first.push(byte[0] as char);
    }
    std::thread::spawn(move || std::io::copy(&mut out, &mut std::io::sink()));
    let base = first
        .strip_prefix("warden node listening on ")
        .unwrap_or_else(|| panic!("unexpected first line: {first}"))
        .to_string();
    (child, base)
}

#[test]
fn an_agent_whose_only_route_is_the_node_cannot_reach_the_tool_but_through_the_proxy() {
    if let Some(why) = unable() {
        assert!(
            std::env::var("WARDEN_REQUIRE_EXTERNAL").as_deref() != Ok("1"),
            "WARDEN_REQUIRE_EXTERNAL=1 and {why}"
        );
        eprintln!("skipping the network namespace test: {why}");
        return;
    }
    let net = Net::new();
    let (tport, uport, tcp_hits, udp_hits) = upstream(&net.upstream_ip);
    let dir = std::env::temp_dir().join(format!("warden-netns-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let (mut node, base) = start_node(
        &dir,
        &format!("{}:0", net.node_ip),
        &format!("{}:{tport}", net.upstream_ip),
    );
    let op = common::client(&base, Some(OPERATOR));
    let token = common::register(&op, "boxed", "swarm");

    // Directly: no route, for TCP and for UDP.
    let tcp = net.agent(&format!(
        "exec 3<>/dev/tcp/{}/{tport} && printf 'GET / HTTP/1.0\\r\\n\\r\\n' >&3 && cat <&3",
        net.upstream_ip
    ));
    assert!(
        !tcp.status.success(),
        "a direct TCP connection went through: {tcp:?}"
    );
    let unreachable =
        |o: &Output| String::from_utf8_lossy(&o.stderr).contains("Network is unreachable");
    assert!(
        unreachable(&tcp),
        "failed, but not for want of a route: {tcp:?}"
    );
    let udp = net.agent(&format!("echo hi > /dev/udp/{}/{uport}", net.upstream_ip));
    assert!(
        !udp.status.success(),
        "a direct UDP datagram was sent: {udp:?}"
    );
    assert!(
        unreachable(&udp),
        "failed, but not for want of a route: {udp:?}"
    );

    // Through the node's proxy: decided, journaled, forwarded.
    let addr = base.strip_prefix("http://").unwrap();
    let (host, port) = addr.rsplit_once(':').unwrap();
    let proxied = net.agent(&format!(
        "exec 3<>/dev/tcp/{host}/{port} && printf 'GET /proxy/search/find?q=x HTTP/1.1\\r\\nHost: {addr}\\r\\nAuthorization: Bearer {token}\\r\\nConnection: close\\r\\n\\r\\n' >&3 && cat <&3"
    ));
    let answer = String::from_utf8_lossy(&proxied.stdout);
    assert!(answer.starts_with("HTTP/1.1 200"), "{proxied:?}");
    assert!(
        answer.contains("{\"ok\":true}")
            && answer.to_ascii_lowercase().contains("warden-step: s-1"),
        "{answer}"
    );

    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        tcp_hits.load(Ordering::SeqCst),
        1,
        "only the proxied call reached the upstream"
    );
    assert_eq!(
        udp_hits.load(Ordering::SeqCst),
        0,
        "no datagram reached the upstream"
    );
    let (_, page) = common::call(&op, "GET", "/v1/audit?agent=boxed", Body::None);
    let decisions: Vec<&Value> = page["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "decision")
        .collect();
    assert_eq!(decisions.len(), 1, "{page}");
    assert_eq!(decisions[0]["entry"]["decision"], "allow");
    assert_eq!(decisions[0]["entry"]["step"]["tool"], "search");
    let _ = node.kill();
    let _ = node.wait();
    let _ = std::fs::remove_dir_all(&dir);
}
