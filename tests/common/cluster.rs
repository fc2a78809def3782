//! A three-node cluster of real `warden node` processes for the end-to-end tests and the sync
//! benchmark: certificates made by `warden certs`, every node dialing its peers through a UDP
//! relay this process owns, so one node can be cut off (every datagram dropped, both ways) and
//! healed again.
//!
//! Included with `#[path]` by `tests/sync.rs` and `benches/sync.rs`; it starts the binary
//! `warden` named by `$WARDEN_BIN` or the package's own.

#![allow(dead_code)] // each includer uses a part

use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use super::{call, client, start_node, wait_until, Body, Client};

pub const OPERATOR: &str = "operator-token-for-sync";
/// The shared pool's limit in tokens, unless [`Cluster::start_with`] says otherwise.
pub const LIMIT: u64 = 3_000;
pub const NAMES: [&str; 3] = ["a", "b", "c"];
pub const POLICY: &str = "
version: 1
defaults:
  budgets: {steps: 1000000, tokens: 100000000}
pools:
  - {path: swarm, limits: {tokens: 100000000}}
tools:
  work: {action: read}
";

/// A UDP relay from one dialing node to one peer; `cut` drops every datagram both ways.
pub struct Relay {
    pub addr: SocketAddr,
    pub cut: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
}

impl Relay {
    pub fn start(target: SocketAddr) -> Relay {
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

/// A free UDP port on 127.0.0.1 for a node's sync socket (bound and let go: the node binds
/// it right after), outside the ephemeral range (see [`super::private_port`]).
pub fn free_udp() -> SocketAddr {
    let port = super::private_port(|p| UdpSocket::bind(("127.0.0.1", p)).is_ok());
    SocketAddr::from(([127, 0, 0, 1], port))
}

pub struct Cluster {
    pub dir: PathBuf,
    pub limit: u64,
    sync: Vec<SocketAddr>,
    /// `relays[x][y]`: the relay node x dials node y through.
    relays: Vec<Vec<Option<Relay>>>,
    nodes: Vec<Option<(std::process::Child, String)>>,
}

impl Cluster {
    pub fn start(tag: &str) -> Cluster {
        Cluster::start_with(tag, LIMIT)
    }

    /// Three nodes sharing pool `swarm` with `limit` tokens.
    pub fn start_with(tag: &str, limit: u64) -> Cluster {
        let dir = std::env::temp_dir().join(format!("warden-sync-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let warden = |args: &[&str]| {
            let out = Command::new(super::warden_bin())
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
            limit,
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

    pub fn write_config(&self, i: usize) {
        let peers: Vec<String> = (0..3)
            .filter(|&y| y != i)
            .map(|y| format!("\"{}\"", self.relays[i][y].as_ref().unwrap().addr))
            .collect();
        let certs = self.dir.join("certs");
        let name = NAMES[i];
        let config = format!(
            "policy: {policy}\nsync:\n  listen: {listen}\n  peers: [{peers}]\n  members: [a, b, c]\n  ca: {ca}\n  cert: {cert}\n  key: {key}\n  pools:\n    swarm: {{tokens: {limit}}}\n  lease: 1h\n",
            policy = self.dir.join("policy.yaml").display(),
            listen = self.sync[i],
            peers = peers.join(", "),
            ca = certs.join("ca.pem").display(),
            cert = certs.join(format!("{name}.pem")).display(),
            key = certs.join(format!("{name}.key")).display(),
            limit = self.limit,
        );
        std::fs::write(self.config(i), config).unwrap();
    }

    pub fn config(&self, i: usize) -> PathBuf {
        self.dir.join(format!("{}.yaml", NAMES[i]))
    }

    pub fn data(&self, i: usize) -> PathBuf {
        self.dir.join(format!("data-{}", NAMES[i]))
    }

    pub fn launch(&mut self, i: usize) {
        let config = self.config(i);
        let extra = [std::ffi::OsStr::new("--config"), config.as_os_str()];
        self.nodes[i] = Some(start_node(&self.data(i), &extra, OPERATOR));
    }

    pub fn base(&self, i: usize) -> &str {
        &self.nodes[i].as_ref().expect("running").1
    }

    pub fn operator(&self, i: usize) -> Client {
        client(self.base(i), Some(OPERATOR))
    }

    pub fn view(&self, i: usize) -> Value {
        let (status, body) = call(&self.operator(i), "GET", "/v1/cluster", Body::None);
        assert_eq!(status, 200, "{body}");
        body
    }

    pub fn rights(&self, i: usize) -> Value {
        self.view(i)["rights"][0].clone()
    }

    /// What node `i` holds reserved or spent in the pool, read from its ledger.
    pub fn pool_used(&self, i: usize) -> u64 {
        let (status, body) = call(&self.operator(i), "GET", "/v1/pools/swarm", Body::None);
        assert_eq!(status, 200, "{body}");
        let n = |k: &str| body[k]["tokens"].as_u64().unwrap_or(0);
        n("spent") + n("reserved")
    }

    pub fn peers_up(&self, i: usize) -> usize {
        let v = self.view(i);
        v["peers"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| p["state"] == "up")
            .count()
    }

    pub fn wait_connected(&self, bound: Duration) {
        wait_until(bound, "every node sees both peers up", || {
            (0..3).all(|i| self.nodes[i].is_none() || self.peers_up(i) == 2)
        });
    }

    /// Cuts (or heals) every relay to and from node `i`.
    pub fn cut(&self, i: usize, cut: bool) {
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
    pub fn check_no_overspend(&self) {
        let total: u64 = (0..3)
            .filter(|&i| self.nodes[i].is_some())
            .map(|i| self.pool_used(i))
            .sum();
        let limit = self.limit;
        assert!(total <= limit, "overspend: Σ used {total} > limit {limit}");
    }

    pub fn kill(&mut self, i: usize) {
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
