//! The config's `sync` section: this node's place in a cluster of nodes sharing pools.
//!
//! ```yaml
//! sync:
//!   listen: 0.0.0.0:7701                  # QUIC (UDP); --sync-listen overrides it
//!   peers: ["10.0.0.2:7701", "warden-3:7701"]   # the other nodes; --peer adds to it
//!   members: [warden-1, warden-2, warden-3]     # every node's name, this one too
//!   ca: /etc/warden/certs/ca.pem          # made by `warden certs init`
//!   cert: /etc/warden/certs/warden-1.pem  # made by `warden certs issue warden-1`
//!   key: /etc/warden/certs/warden-1.key
//!   pools:                                # the pools shared by the cluster, with their limits
//!     swarm: {cost_usd: 200, tokens: 50000000}
//!   lease: 5m                 # how long a heir waits on a silent node before reclaiming
//!   max_offline: 7d           # the longest lease `prepare-offline` may ask for
//!   max_clock_drift_ppm: 10000
//!   reclaim_margin: 5s
//!   float_window: 5m          # rights a node asks to spend alone: this much of its demand
//!   initial_cap_permille: 1000
//! ```
//!
//! Every node of a cluster must have the same `members`, `pools` and `initial_cap_permille`
//! (they are hashed into the first message; nodes that differ refuse to sync). A node's name
//! is the one in its certificate.

use std::path::PathBuf;

use warden_actors::yaml::{Entry, Node, Reader};
use warden_supervisor::escrow_dimension;
use warden_sync::members::valid_name;
use warden_sync::replica::{ReplicatedPool, Timing, Tuning};

/// The `sync` section, read.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SyncSection {
    /// `listen`.
    pub listen: Option<String>,
    /// `peers`: addresses (`host:port`).
    pub peers: Vec<String>,
    /// `members`: every node's name.
    pub members: Vec<String>,
    /// `ca`, `cert`, `key`: PEM files.
    pub ca: Option<PathBuf>,
    /// This node's certificate.
    pub cert: Option<PathBuf>,
    /// Its private key.
    pub key: Option<PathBuf>,
    /// The replicated pools.
    pub pools: Vec<ReplicatedPool>,
    /// Timers (defaults where absent).
    pub timing: Timing,
    /// How rights move (defaults where absent).
    pub tuning: Tuning,
}

const KEYS: [&str; 14] = [
    "listen",
    "peers",
    "members",
    "ca",
    "cert",
    "key",
    "pools",
    "lease",
    "max_offline",
    "max_clock_drift_ppm",
    "reclaim_margin",
    "float_window",
    "initial_cap_permille",
    "gossip_interval",
];

/// Reads the `sync` section, reporting every problem at its line and column.
pub(super) fn read_sync(r: &mut Reader, v: &Node) -> Option<SyncSection> {
    let m = r.mapping(v, "sync", &KEYS)?;
    let mut s = SyncSection::default();
    for e in m.iter() {
        read_key(r, &mut s, e);
    }
    for key in ["members", "ca", "cert", "key", "pools"] {
        r.require(&m, key, "sync", Some(hint(key)));
    }
    Some(s)
}

fn hint(key: &str) -> String {
    match key {
        "members" => "e.g. members: [warden-1, warden-2, warden-3] (every node's name)".into(),
        "pools" => "e.g. pools: {swarm: {cost_usd: 200}}".into(),
        _ => format!("the PEM file `warden certs` made, e.g. {key}: certs/..."),
    }
}

fn read_key(r: &mut Reader, s: &mut SyncSection, e: &Entry<'_>) {
    let v = e.value;
    let t = &mut s.timing;
    match e.key() {
        "listen" => s.listen = r.text(v, "sync.listen"),
        "peers" => s.peers = texts(r, v, "sync.peers"),
        "members" => s.members = members(r, v),
        "ca" => s.ca = r.text(v, "sync.ca").map(PathBuf::from),
        "cert" => s.cert = r.text(v, "sync.cert").map(PathBuf::from),
        "key" => s.key = r.text(v, "sync.key").map(PathBuf::from),
        "pools" => s.pools = pools(r, v),
        "lease" => set(&mut t.lease_ms, r.duration_ms(v, "sync.lease")),
        "max_offline" => set(&mut t.max_offline_ms, r.duration_ms(v, "sync.max_offline")),
        "reclaim_margin" => set(&mut t.margin_ms, r.duration_ms(v, "sync.reclaim_margin")),
        "gossip_interval" => set(&mut t.gossip_ms, r.duration_ms(v, "sync.gossip_interval")),
        "max_clock_drift_ppm" => {
            let ppm = r.uint(v, "sync.max_clock_drift_ppm");
            if ppm.is_some_and(|p| p >= 500_000) {
                r.error(
                    v.pos,
                    "sync.max_clock_drift_ppm must be below 500000 (50%)",
                    None,
                );
            } else {
                set(&mut t.max_drift_ppm, ppm);
            }
        }
        "float_window" => set(
            &mut s.tuning.float_window_ms,
            r.duration_ms(v, "sync.float_window"),
        ),
        _ => {
            let permille = r.uint(v, "sync.initial_cap_permille");
            match permille {
                Some(p) if p <= 1000 => s.tuning.initial_cap_permille = p as u16,
                Some(_) => r.error(v.pos, "sync.initial_cap_permille is at most 1000", None),
                None => {}
            }
        }
    }
}

fn set<T>(slot: &mut T, value: Option<T>) {
    if let Some(v) = value {
        *slot = v;
    }
}

fn texts(r: &mut Reader, v: &Node, what: &str) -> Vec<String> {
    let Some(items) = r.sequence(v, what, None) else {
        return Vec::new();
    };
    items.iter().filter_map(|n| r.text(n, what)).collect()
}

fn members(r: &mut Reader, v: &Node) -> Vec<String> {
    let Some(items) = r.sequence(v, "sync.members", Some(hint("members"))) else {
        return Vec::new();
    };
    let mut out: Vec<String> = Vec::new();
    for n in items {
        let Some(name) = r.text(n, "a member") else {
            continue;
        };
        if !valid_name(&name) {
            let why = format!("member `{name}` is not a node name: 1-63 of a-z, 0-9 and '-'");
            r.error(n.pos, why, None);
        } else if out.contains(&name) {
            r.error(n.pos, format!("member `{name}` is listed twice"), None);
        } else {
            out.push(name);
        }
    }
    if out.len() > warden_sync::members::MAX_MEMBERS {
        let max = warden_sync::members::MAX_MEMBERS;
        r.error(v.pos, format!("a cluster has at most {max} members"), None);
    }
    out
}

fn pools(r: &mut Reader, v: &Node) -> Vec<ReplicatedPool> {
    let Some(m) = r.mapping(v, "sync.pools", &[]) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for e in m.iter() {
        let what = format!("sync.pools.{}", e.key());
        let Some(dims) = r.mapping(e.value, &what, &[]) else {
            continue;
        };
        let mut limits = Vec::new();
        for d in dims.iter() {
            let name = d.key().to_string();
            let what = format!("{what}.{name}");
            let limit = match (name.as_str(), escrow_dimension(&name)) {
                (_, None) => {
                    let why = format!("`{name}` is not a dimension a pool limits");
                    let hint = "steps, tokens, cost_usd, risk, or a custom dimension".into();
                    r.error(d.key_pos, why, Some(hint));
                    None
                }
                ("cost_usd" | "risk", _) => r.micros(d.value, &what, "200"),
                _ => r.uint(d.value, &what),
            };
            if let Some(limit) = limit {
                limits.push((name, limit));
            }
        }
        out.push(ReplicatedPool {
            path: e.key().to_string(),
            limits,
        });
    }
    out
}
