//! Three real `warden node` processes sharing one pool over QUIC (mutual TLS with a cluster CA
//! made by `warden certs`). Every node dials its peers through a UDP relay this test owns, so
//! it can cut one node off (every datagram dropped, both ways) and heal it again.
//!
//! What is checked: rights move to where the steps are; a cut-off node keeps deciding with its
//! own rights and then denies with `escrow.exhausted`; the pool is never overspent (Σ of what
//! the nodes hold reserved or spent ≤ the limit); after the heal every node shows the same
//! pool within a second or two; a halt on one node halts the same agent on the others; a node
//! killed with kill -9 and restarted has exactly the rights it had; a node that prepared to go
//! offline spends what it took along and no more.

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{call, client, register, start_node, wait_until, Body, Client};
use serde_json::{json, Value};

const OPERATOR: &str = "operator-token-for-sync";
const LIMIT: u64 = 3_000;
const NAMES: [&str; 3] = ["a", "b", "c"];
const POLICY: &str = "
version: 1
defaults:
  budgets: {steps: 1000000, tokens: 100000000}
pools:
  - {path: swarm, limits: {tokens: 100000000}}
tools:
  work: {action: read}
";

/// A UDP relay from one dialing node to one peer; `cut` drops every datagram both ways.
struct Relay {
    addr: SocketAddr,
    cut: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
}

impl Relay {
    fn start(target: SocketAddr) -> Relay {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let addr = socket.local_addr().unwrap();
        let (cut, stop) = (
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicBool::new(false)),
        );
        let (cut2, stop2) = (cut.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 65_536];
            let mut client: Option<SocketAddr> = None;
            while !stop2.load(Ordering::SeqCst) {
                let Ok((len, from)) = socket.recv_from(&mut buf) else {
                    continue;
                };
                if cut2.load(Ordering::SeqCst) {
                    continue;
                }
                let to = if from == target { client } else { Some(target) };
                if from != target {
                    client = Some(from);
                }
                if let Some(to) = to {
                    let _ = socket.send_to(&buf[..len], to);
                }
            }
        });
        Relay { addr, cut, stop }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// A free UDP port on 127.0.0.1 (bound and let go: the node binds it right after).
fn free_udp() -> SocketAddr {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

struct Cluster {
    dir: PathBuf,
    sync: Vec<SocketAddr>,
    /// `relays[x][y]`: the relay node x dials node y through.
    relays: Vec<Vec<Option<Relay>>>,
    nodes: Vec<Option<(Child, String)>>,
}

impl Cluster {
    fn start(tag: &str) -> Cluster {
        let dir = std::env::temp_dir().join(format!("warden-sync-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let warden = |args: &[&str]| {
            let out = Command::new(env!("CARGO_BIN_EXE_warden"))
                .args(args)
                .output()
                .unwrap();
            assert!(out.status.success(), "warden {args:?}: {out:?}");
        };
        let certs = dir.join("certs");
        let certs_s = certs.to_str().unwrap();
        warden(&["certs", "init", "--dir", certs_s]);
        for n in NAMES {
            warden(&["certs", "issue", n, "--dir", certs_s]);
        }
        std::fs::write(dir.join("policy.yaml"), POLICY).unwrap();
        let sync: Vec<SocketAddr> = NAMES.iter().map(|_| free_udp()).collect();
        let relays = (0..3)
            .map(|x| {
                (0..3)
                    .map(|y| (x != y).then(|| Relay::start(sync[y])))
                    .collect()
            })
            .collect();
        let mut c = Cluster {
            dir,
            sync,
            relays,
            nodes: vec![None, None, None],
        };
        for i in 0..3 {
            c.write_config(i);
            c.launch(i);
        }
        c.wait_connected(Duration::from_secs(20));
        c
    }

    fn write_config(&self, i: usize) {
        let peers: Vec<String> = (0..3)
            .filter(|&y| y != i)
            .map(|y| format!("\"{}\"", self.relays[i][y].as_ref().unwrap().addr))
            .collect();
        let certs = self.dir.join("certs");
        let name = NAMES[i];
        let config = format!(
            "policy: {policy}\nsync:\n  listen: {listen}\n  peers: [{peers}]\n  members: [a, b, c]\n  ca: {ca}\n  cert: {cert}\n  key: {key}\n  pools:\n    swarm: {{tokens: {LIMIT}}}\n  lease: 1h\n",
            policy = self.dir.join("policy.yaml").display(),
            listen = self.sync[i],
            peers = peers.join(", "),
            ca = certs.join("ca.pem").display(),
            cert = certs.join(format!("{name}.pem")).display(),
            key = certs.join(format!("{name}.key")).display(),
        );
        std::fs::write(self.config(i), config).unwrap();
    }

    fn config(&self, i: usize) -> PathBuf {
        self.dir.join(format!("{}.yaml", NAMES[i]))
    }

    fn data(&self, i: usize) -> PathBuf {
        self.dir.join(format!("data-{}", NAMES[i]))
    }

    fn launch(&mut self, i: usize) {
        let config = self.config(i);
        let extra = [std::ffi::OsStr::new("--config"), config.as_os_str()];
        self.nodes[i] = Some(start_node(&self.data(i), &extra, OPERATOR));
    }

    fn base(&self, i: usize) -> &str {
        &self.nodes[i].as_ref().expect("running").1
    }

    fn operator(&self, i: usize) -> Client {
        client(self.base(i), Some(OPERATOR))
    }

    fn view(&self, i: usize) -> Value {
        let (status, body) = call(&self.operator(i), "GET", "/v1/cluster", Body::None);
        assert_eq!(status, 200, "{body}");
        body
    }

    fn rights(&self, i: usize) -> Value {
        self.view(i)["rights"][0].clone()
    }

    /// What node `i` holds reserved or spent in the pool, read from its ledger.
    fn pool_used(&self, i: usize) -> u64 {
        let (status, body) = call(&self.operator(i), "GET", "/v1/pools/swarm", Body::None);
        assert_eq!(status, 200, "{body}");
        let n = |k: &str| body[k]["tokens"].as_u64().unwrap_or(0);
        n("spent") + n("reserved")
    }

    fn peers_up(&self, i: usize) -> usize {
        let v = self.view(i);
        v["peers"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| p["state"] == "up")
            .count()
    }

    fn wait_connected(&self, bound: Duration) {
        wait_until(bound, "every node sees both peers up", || {
            (0..3).all(|i| self.nodes[i].is_none() || self.peers_up(i) == 2)
        });
    }

    /// Cuts (or heals) every relay to and from node `i`.
    fn cut(&self, i: usize, cut: bool) {
        for x in 0..3 {
            for y in 0..3 {
                if (x == i || y == i) && x != y {
                    let r = self.relays[x][y].as_ref().unwrap();
                    r.cut.store(cut, Ordering::SeqCst);
                }
            }
        }
    }

    /// Σ of what every running node holds reserved or spent: never above the limit.
    fn check_no_overspend(&self) {
        let total: u64 = (0..3)
            .filter(|&i| self.nodes[i].is_some())
            .map(|i| self.pool_used(i))
            .sum();
        assert!(total <= LIMIT, "overspend: Σ used {total} > limit {LIMIT}");
    }

    fn kill(&mut self, i: usize) {
        if let Some((mut child, _)) = self.nodes[i].take() {
            let _ = child.kill(); // SIGKILL
            let _ = child.wait();
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for i in 0..3 {
            self.kill(i);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// An agent with its token on one node, taking steps of `tokens` each with distinct args.
struct Agent {
    client: Client,
    id: String,
    n: u64,
}

impl Agent {
    fn new(c: &Cluster, i: usize, id: &str) -> Agent {
        let token = register(&c.operator(i), id, "swarm");
        Agent {
            client: client(c.base(i), Some(&token)),
            id: id.to_owned(),
            n: 0,
        }
    }

    /// One step: its decision and rule.
    fn step(&mut self, tokens: u64) -> (String, String) {
        self.n += 1;
        let body = json!({"tool": "work", "action": "read", "args": {"n": self.n},
                          "cost": {"tokens": tokens}});
        let path = format!("/v1/agents/{}/steps", self.id);
        let (status, d) = call(&self.client, "POST", &path, Body::Json(body));
        assert!(status == 200 || status == 403, "{status} {d}");
        let s = |k: &str| d[k].as_str().unwrap_or("").to_owned();
        (s("decision"), s("rule"))
    }

    /// Steps until `denials` denials in a row (or `max` steps): allowed steps and the rules.
    fn spend(&mut self, tokens: u64, denials: usize, max: usize) -> (u64, Vec<String>) {
        let (mut allowed, mut rules, mut row) = (0, Vec::new(), 0);
        for _ in 0..max {
            let (decision, rule) = self.step(tokens);
            if decision == "allow" {
                allowed += 1;
                row = 0;
            } else {
                rules.push(rule);
                row += 1;
                if row >= denials {
                    break;
                }
            }
        }
        (allowed, rules)
    }
}

fn wait_converged(c: &Cluster, bound: Duration) -> Duration {
    let started = Instant::now();
    wait_until(bound, "every node shows the same pool", || {
        let views: Vec<Value> = (0..3).map(|i| c.rights(i)).collect();
        let used: Vec<u64> = (0..3).map(|i| c.pool_used(i)).collect();
        let total: u64 = used.iter().sum();
        let held: u64 = (0..3).map(|i| views[i]["held"].as_u64().unwrap()).sum();
        views
            .iter()
            .all(|v| v["used_cluster"].as_u64() == Some(total))
            && held == LIMIT
    });
    started.elapsed()
}

#[test]
fn a_cut_off_node_keeps_deciding_with_its_rights_and_the_pool_is_never_overspent() {
    let c = Cluster::start("partition");
    let mut agents: Vec<Agent> = (0..3)
        .map(|i| Agent::new(&c, i, &format!("ag-{i}")))
        .collect();
    // Demand on a moves rights there: 1,500 tokens (half the pool, its share is 1,000) are
    // all allowed, at most after short waits for rights to arrive.
    let started = Instant::now();
    let mut waits = 0;
    while agents[0].n - waits < 150 {
        let (decision, rule) = agents[0].step(10);
        if decision != "allow" {
            assert_eq!(rule, "escrow.exhausted");
            waits += 1;
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "rights never came"
        );
    }
    eprintln!(
        "1,500 tokens on a in {:?}, {waits} waits for rights",
        started.elapsed()
    );
    c.check_no_overspend();

    c.cut(2, true);
    let mut rules = Vec::new();
    let (mut majority, mut minority) = (0, 0);
    for _ in 0..40 {
        let (a, r1) = agents[0].spend(10, 3, 10);
        let (m, r2) = agents[2].spend(10, 3, 10);
        majority += a;
        minority += m;
        rules.extend(r1);
        rules.extend(r2);
        c.check_no_overspend();
    }
    assert!(minority > 0, "the cut-off node decided with its own rights");
    assert!(majority > 0);
    assert!(
        rules.iter().any(|r| r == "escrow.exhausted"),
        "denied once its rights ran out: {rules:?}"
    );
    assert!(rules.iter().all(|r| r == "escrow.exhausted"), "{rules:?}");

    c.cut(2, false);
    let took = wait_converged(&c, Duration::from_secs(10));
    eprintln!("converged {took:?} after the heal");
    c.check_no_overspend();
    assert_eq!(
        (0..3).map(|i| c.pool_used(i)).sum::<u64>(),
        10 * (150 + majority + minority),
        "every allowed step is held somewhere, once"
    );
}

#[test]
fn a_halt_reaches_every_node_and_a_killed_node_keeps_its_rights_exactly() {
    let mut c = Cluster::start("halt-kill");
    // The same agent id on two nodes: a halt on one halts the other.
    let _on_a = Agent::new(&c, 0, "twin");
    let _on_c = Agent::new(&c, 2, "twin");
    let (status, body) = call(
        &c.operator(0),
        "POST",
        "/v1/agents/twin/halt",
        Body::Json(json!({"reason": "test"})),
    );
    assert_eq!(status, 200, "{body}");
    wait_until(Duration::from_secs(5), "the halt reaches node c", || {
        let (_, a) = call(&c.operator(2), "GET", "/v1/agents/twin", Body::None);
        a["state"] == "halted"
    });

    // Spend on b so its rights differ from the initial split, then cut it off and kill it.
    let mut on_b = Agent::new(&c, 1, "worker-b");
    on_b.spend(10, 1, 60);
    std::thread::sleep(Duration::from_millis(500)); // let rights settle
    c.cut(1, true);
    std::thread::sleep(Duration::from_millis(300));
    let before = c.rights(1);
    c.kill(1);
    c.launch(1);
    let after = c.rights(1);
    for key in ["held", "ceiling", "cap", "epoch", "used"] {
        assert_eq!(
            after[key], before[key],
            "{key} after kill -9: {after} vs {before}"
        );
    }
    c.cut(1, false);
    c.wait_connected(Duration::from_secs(20));
    wait_converged(&c, Duration::from_secs(10));
}

#[test]
fn a_node_that_prepared_to_go_offline_spends_what_it_took_and_no_more() {
    let c = Cluster::start("offline");
    let before = c.rights(2)["held"].as_u64().unwrap();
    let (status, body) = call(
        &c.operator(2),
        "POST",
        "/v1/cluster/prepare-offline",
        Body::Json(json!({"duration": "1h"})),
    );
    assert_eq!(status, 200, "{body}");
    wait_until(
        Duration::from_secs(10),
        "rights reach the node going offline",
        || c.rights(2)["ceiling"].as_u64().unwrap() > before + 500,
    );
    std::thread::sleep(Duration::from_millis(300));
    let took = c.rights(2)["ceiling"].as_u64().unwrap();
    c.cut(2, true);
    let mut agent = Agent::new_offline(&c);
    let (allowed, rules) = agent.spend(10, 3, 1_000);
    assert_eq!(
        allowed * 10,
        took - took % 10,
        "spent {} of {took}",
        allowed * 10
    );
    assert!(rules.iter().all(|r| r == "escrow.exhausted"), "{rules:?}");
    c.check_no_overspend();
}

impl Agent {
    /// An agent registered on node c (the one that prepared) — before the cut, its
    /// registration is local anyway.
    fn new_offline(c: &Cluster) -> Agent {
        Agent::new(c, 2, "edge-worker")
    }
}

#[test]
fn a_node_without_sync_answers_no_cluster_and_sync_flags_need_the_section() {
    let dir = std::env::temp_dir().join(format!("warden-sync-none-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let (mut child, base) = start_node(&dir, &[], OPERATOR);
    let (status, body) = call(
        &client(&base, Some(OPERATOR)),
        "GET",
        "/v1/cluster",
        Body::None,
    );
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("no_cluster"))
    );
    let _ = child.kill();
    let _ = child.wait();
    let out = Command::new(env!("CARGO_BIN_EXE_warden"))
        .args(["node", "--data"])
        .arg(&dir)
        .args(["--sync-listen", "127.0.0.1:0", "--peer", "127.0.0.1:1"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("need the config file's `sync` section"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
    let _: &Path = &dir;
}
