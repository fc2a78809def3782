//! Node-to-node sync on real `warden node` processes (release build) on loopback, three
//! nodes sharing pool `swarm` in tokens over QUIC, each dialing its peers through a UDP relay
//! this process owns (so a node can be cut off and healed; `tests/common/cluster.rs`).
//!
//! Four measurements, one sitting:
//! 1. **Spends per second through one node**: closed loop, `CLIENTS` threads each with its own
//!    agent on node a, a step of 1 token and its outcome (two requests per spend), for
//!    `SECONDS`; the same on a single node without sync; three rounds alternating the two, the
//!    medians compared. The ratio is the cost of the escrow (target: within 10%).
//! 2. **Bytes on the wire per replicated spend**: every message byte node a sent and
//!    received (`GET /v1/cluster`) during run 1, divided by its spends.
//! 3. **Convergence after a heal**: node c is cut off for 3 s while both sides spend, then
//!    healed; the time until every node shows the same pool (Σ of what each holds reserved or
//!    spent = every node's `used_cluster`, Σ held = the limit), `ROUNDS` times (target < 1 s).
//! 4. **False denials under a partition against a static equal split**: after a warm-up, c is
//!    cut off and skewed demand (a 70%, b 20%, c 10% of steps of 10 tokens) runs for twice
//!    what the pool has left; a denial is false when more than 1% of the pool was still free
//!    cluster-wide (the last percent is where any split fragments), and how much of the pool
//!    the workload got in the end is printed beside it. The static split (each node a third,
//!    nothing moves) is computed on the same sequence of requests.
//!
//! 5. **Convergence after a long partition** (12 s, past QUIC's 10 s idle timeout: the links
//!    must be dialed again), up to 3 rounds.
//!
//! Run: `cargo bench --bench sync` or `cargo bench --bench sync -- SECONDS CLIENTS ROUNDS
//! [long]` (`long`: only the long partitions).

#[path = "../tests/common/mod.rs"]
mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::cluster::{Cluster, OPERATOR, POLICY};
use common::{call, client, register, start_node, Body, Client};
use serde_json::json;

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let arg = |i: usize, d: u64| args.get(i).and_then(|a| a.parse().ok()).unwrap_or(d);
    let (seconds, clients, rounds) = (arg(0, 10), arg(1, 8) as usize, arg(2, 5) as usize);
    let part = args.get(3).map_or("all", String::as_str);
    if part == "all" {
        throughput(seconds, clients);
        convergence(rounds, 3);
        false_denials();
    }
    // Longer than QUIC's 10 s idle timeout: the connections are gone and must be dialed again.
    convergence(rounds.min(3), 12);
}

/// An agent's step: `POST /v1/agents/{id}/steps` of `tokens`, with distinct args, and its
/// outcome when allowed (a success that used what it reserved).
fn step(c: &Client, id: &str, n: u64, tokens: u64) -> (bool, String) {
    let body =
        json!({"tool": "work", "action": "read", "args": {"n": n}, "cost": {"tokens": tokens}});
    let (status, d) = call(
        c,
        "POST",
        &format!("/v1/agents/{id}/steps"),
        Body::Json(body),
    );
    assert!(status == 200 || status == 403, "{status} {d}");
    let allowed = d["decision"] == "allow";
    if allowed {
        let path = format!(
            "/v1/agents/{id}/steps/{}/outcome",
            d["step"].as_str().unwrap()
        );
        let (status, o) = call(c, "POST", &path, Body::Json(json!({"status": "success"})));
        assert_eq!(status, 200, "{o}");
    }
    (allowed, d["rule"].as_str().unwrap_or("").to_owned())
}

/// Closed loop on `base` for `seconds`: spends per second.
fn spend_rate(base: &str, operator: &Client, seconds: u64, clients: usize, tag: &str) -> f64 {
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let threads: Vec<_> = (0..clients)
        .map(|t| {
            let id = format!("{tag}-{t}");
            let token = register(operator, &id, "swarm");
            let agent = client(base, Some(&token));
            let (stop, done) = (stop.clone(), done.clone());
            std::thread::spawn(move || {
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    let (allowed, rule) = step(&agent, &id, n, 1);
                    assert!(allowed, "denied by {rule}");
                    done.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    let started = Instant::now();
    std::thread::sleep(Duration::from_secs(seconds));
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().unwrap();
    }
    done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64()
}

fn wire_bytes(c: &Cluster, i: usize) -> u64 {
    c.view(i)["peers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["bytes_in"].as_u64().unwrap_or(0) + p["bytes_out"].as_u64().unwrap_or(0))
        .sum()
}

/// Rounds of the throughput comparison, alternating single node and cluster node so that
/// both see the same machine (a noisy neighbour hits both).
const THROUGHPUT_ROUNDS: usize = 3;

fn throughput(seconds: u64, clients: usize) {
    let dir = std::env::temp_dir().join(format!("warden-sync-bench-single-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let policy = dir.join("policy.yaml");
    std::fs::write(&policy, POLICY).unwrap();
    let extra = [std::ffi::OsStr::new("--policy"), policy.as_os_str()];
    let (mut single, base) = start_node(&dir.join("data"), &extra, OPERATOR);
    let single_op = client(&base, Some(OPERATOR));
    let c = Cluster::start_with("bench-rate", 1_000_000_000);
    let (mut alone, mut clustered) = (Vec::new(), Vec::new());
    let (mut bytes, mut spends) = (0, 0);
    for round in 0..THROUGHPUT_ROUNDS {
        alone.push(spend_rate(
            &base,
            &single_op,
            seconds,
            clients,
            &format!("alone{round}"),
        ));
        let (b0, s0) = (wire_bytes(&c, 0), c.rights(0)["used"].as_u64().unwrap());
        let tag = format!("clustered{round}");
        clustered.push(spend_rate(
            c.base(0),
            &c.operator(0),
            seconds,
            clients,
            &tag,
        ));
        std::thread::sleep(Duration::from_millis(500));
        bytes += wire_bytes(&c, 0) - b0;
        spends += c.rights(0)["used"].as_u64().unwrap() - s0;
    }
    let _ = single.kill();
    let _ = single.wait();
    let _ = std::fs::remove_dir_all(&dir);
    let median = |v: &mut Vec<f64>| {
        v.sort_by(|a, b| a.total_cmp(b));
        v[v.len() / 2]
    };
    let rounds = |v: &[f64]| {
        v.iter()
            .map(|x| format!("{x:.0}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let (a_rounds, c_rounds) = (rounds(&alone), rounds(&clustered));
    let (a, m) = (median(&mut alone), median(&mut clustered));
    println!(
        "spends/s through one node ({THROUGHPUT_ROUNDS} alternating rounds of {seconds} s, {clients} clients): single node median {a:.0} ({a_rounds}), node a of 3 median {m:.0} ({c_rounds}): {:.1}%",
        100.0 * m / a
    );
    println!(
        "wire bytes per replicated spend (node a, in + out, message bytes): {:.1} ({bytes} bytes, {spends} spends)",
        bytes as f64 / spends.max(1) as f64
    );
}

fn convergence(rounds: usize, cut_s: u64) {
    let c = Cluster::start_with(&format!("bench-heal-{cut_s}"), 1_000_000);
    let agents: Vec<(Client, String)> = (0..3)
        .map(|i| {
            let id = format!("heal-{i}");
            let token = register(&c.operator(i), &id, "swarm");
            (client(c.base(i), Some(&token)), id)
        })
        .collect();
    let mut n = 0;
    let mut took = Vec::new();
    for _ in 0..rounds {
        c.cut(2, true);
        let until = Instant::now() + Duration::from_secs(cut_s);
        while Instant::now() < until {
            for (agent, id) in &agents {
                n += 1;
                step(agent, id, n, 10);
            }
        }
        c.cut(2, false);
        let healed = Instant::now();
        while !converged(&c) {
            assert!(healed.elapsed() < Duration::from_secs(30), "no convergence");
            std::thread::sleep(Duration::from_millis(5));
        }
        took.push(healed.elapsed());
    }
    took.sort();
    println!(
        "convergence after a {cut_s} s partition heals (3 nodes, {rounds} rounds): median {:?}, max {:?}",
        took[took.len() / 2],
        took[took.len() - 1]
    );
}

fn converged(c: &Cluster) -> bool {
    let total: u64 = (0..3).map(|i| c.pool_used(i)).sum();
    let views: Vec<_> = (0..3).map(|i| c.rights(i)).collect();
    let held: u64 = views.iter().map(|v| v["held"].as_u64().unwrap()).sum();
    views
        .iter()
        .all(|v| v["used_cluster"].as_u64() == Some(total))
        && held == c.limit
}

fn false_denials() {
    const LIMIT: u64 = 30_000;
    const TOKENS: u64 = 10;
    let c = Cluster::start_with("bench-false", LIMIT);
    let agents: Vec<(Client, String)> = (0..3)
        .map(|i| {
            let id = format!("skew-{i}");
            let token = register(&c.operator(i), &id, "swarm");
            (client(c.base(i), Some(&token)), id)
        })
        .collect();
    // Warm-up with the same skew, so rights have followed demand, then cut c off.
    let mut load = Load {
        agents: &agents,
        n: 0,
        used: 0,
        requests: Vec::new(),
    };
    load.run(600, LIMIT, TOKENS);
    std::thread::sleep(Duration::from_millis(500));
    c.cut(2, true);
    let before = load.used;
    load.requests.clear();
    let denied = load.run((LIMIT - before) / TOKENS * 2, LIMIT, TOKENS);
    let requests = load.requests;
    let warden_allowed = requests.iter().filter(|r| r.1).count();
    // The static equal split on the same requests: each node a third, nothing moves; what the
    // warm-up used is taken from each node's third as it was spent (a 70%, b 20%, c 10%).
    let warm: [u64; 3] = [7, 2, 1].map(|share| before * share / 10);
    let mut left: [u64; 3] = warm.map(|w| (LIMIT / 3).saturating_sub(w));
    let mut static_used = before;
    let mut static_false = 0;
    for (node, _) in &requests {
        if left[*node] >= TOKENS {
            left[*node] -= TOKENS;
            static_used += TOKENS;
        } else if static_used + LIMIT / 100 <= LIMIT {
            static_false += 1;
        }
    }
    println!(
        "false denials under a partition (c cut off; demand a 70% / b 20% / c 10%; {} requests of {TOKENS} tokens after a warm-up of {before} of {LIMIT}): warden {denied}, pool used {} ({warden_allowed} allowed); static equal split {static_false}, pool used {static_used}",
        requests.len(),
        before + warden_allowed as u64 * TOKENS,
    );
    c.check_no_overspend();
}

/// Skewed steps on three nodes (a 70%, b 20%, c 10%), with what was allowed where.
struct Load<'a> {
    agents: &'a [(Client, String)],
    n: u64,
    used: u64,
    requests: Vec<(usize, bool)>,
}

impl Load<'_> {
    /// `count` steps of `tokens`; returns the false denials (the cluster still had room).
    fn run(&mut self, count: u64, limit: u64, tokens: u64) -> u64 {
        let mut false_denied = 0;
        for _ in 0..count {
            self.n += 1;
            let node = match self.n % 10 {
                0..=6 => 0,
                7 | 8 => 1,
                _ => 2,
            };
            let (agent, id) = &self.agents[node];
            let (allowed, _) = step(agent, id, self.n, tokens);
            if allowed {
                self.used += tokens;
            } else if self.used + limit / 100 <= limit {
                false_denied += 1;
            }
            self.requests.push((node, allowed));
        }
        false_denied
    }
}
