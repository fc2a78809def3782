//! Part 3: false denials and overspend of the LLM proxy's reservation.
//!
//! The proxy reserves, before forwarding, an upper bound of a request's cost: input tokens ≤
//! the forwarded body's bytes + 16, output ≤ `max_tokens` (capped by the model's maximum).
//! The real cost (the fake model's `usage`, [`crate::upstream::usage_for`]) is lower, so near
//! the end of a budget the proxy denies requests that would have fitted. Each run sends a
//! fixed workload (realistic chat requests: a system prompt, 0–4 earlier exchanges, a
//! question; `max_tokens` 256–4,096) against a pool about half of it fits in, and counts:
//! - allowed, denied, and **false denials**: denied although the request's real cost was at
//!   most what the deny itself reported remaining (`warden.remaining`), and, separately, at
//!   most the harness's own ledger (limit − real cost of what was allowed);
//! - an oracle that knows every request's real cost and admits it when it fits: how many it
//!   admits and how much of the budget it uses;
//! - **overspend**: the pool's `used` (settled + overrun) over its limit after the run (must
//!   be 0), and whether what the pool settled equals the real cost of what was allowed.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use crate::load::{self, Conn};
use crate::upstream::{self, usage_for};
use crate::{Node, Opts};

const WORDS: [&str; 64] = [
    "the",
    "model",
    "results",
    "of",
    "a",
    "study",
    "on",
    "distributed",
    "systems",
    "and",
    "their",
    "failure",
    "modes",
    "under",
    "load",
    "we",
    "find",
    "that",
    "latency",
    "grows",
    "with",
    "queue",
    "depth",
    "while",
    "throughput",
    "saturates",
    "near",
    "capacity",
    "this",
    "report",
    "summarises",
    "evidence",
    "from",
    "several",
    "sources",
    "including",
    "papers",
    "blog",
    "posts",
    "benchmarks",
    "measured",
    "in",
    "production",
    "clusters",
    "please",
    "compare",
    "approaches",
    "cite",
    "each",
    "claim",
    "briefly",
    "explain",
    "trade-offs",
    "between",
    "consistency",
    "availability",
    "partition",
    "tolerance",
    "for",
    "agents",
    "budgets",
    "tokens",
    "governance",
    "policy",
];

const SYSTEM: &str = "You are a careful research assistant working inside a swarm of agents. Answer the question using the conversation so far. Cite every source you rely on by its URL, keep answers short unless asked for detail, say when the evidence is weak, and never invent a citation. If a question needs a tool, say which one and why instead of guessing.";

/// splitmix64.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
    /// Log-normal characters around `median`, clamped.
    fn chars(&mut self, median: f64) -> usize {
        // Box-Muller.
        let (u1, u2) = (self.unit().max(1e-12), self.unit());
        let z = (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos();
        (median * (0.9 * z).exp()).clamp(40.0, 12_000.0) as usize
    }
    fn text(&mut self, chars: usize) -> String {
        let mut s = String::with_capacity(chars + 16);
        while s.len() < chars {
            if !s.is_empty() {
                s.push(' ');
            }
            s.push_str(WORDS[(self.next() % WORDS.len() as u64) as usize]);
        }
        s
    }
}

/// One request of a workload.
struct Req {
    body: String,
    max_tokens: u64,
    /// What the model will report: (prompt, completion) tokens.
    real: (u64, u64),
}

fn workload(seed: u64, n: usize, model: &str, stream: bool) -> Vec<Req> {
    let mut rng = Rng(seed);
    (0..n)
        .map(|i| {
            let mut messages = vec![json!({"role": "system", "content": SYSTEM})];
            for _ in 0..(rng.next() % 5) {
                let q = rng.chars(300.0);
                let a = rng.chars(900.0);
                messages.push(json!({"role": "user", "content": rng.text(q)}));
                messages.push(json!({"role": "assistant", "content": rng.text(a)}));
            }
            let q = rng.chars(500.0);
            messages.push(json!({"role": "user", "content": format!("Request {i} of seed {seed}: {}", rng.text(q))}));
            let u = rng.unit();
            let max_tokens = match u {
                u if u < 0.20 => 256,
                u if u < 0.45 => 512,
                u if u < 0.70 => 1_024,
                u if u < 0.90 => 2_048,
                _ => 4_096,
            };
            let mut req = json!({"model": model, "messages": messages, "max_tokens": max_tokens, "temperature": 0.2});
            if stream {
                req["stream"] = json!(true);
            }
            let real = usage_for(&req);
            Req {
                body: req.to_string(),
                max_tokens,
                real,
            }
        })
        .collect()
}

/// A budget dimension and the model's price (USD per million tokens, in and out).
#[derive(Clone, Copy)]
struct Dim {
    key: &'static str,
    price: (f64, f64),
}

impl Dim {
    /// The real cost of `(prompt, completion)` tokens in this dimension (µUSD rounded up per
    /// part, as the proxy prices).
    fn cost(self, (p, c): (u64, u64)) -> u64 {
        match self.key {
            "tokens" => p + c,
            _ => {
                let part = |t: u64, usd: f64| (t as f64 * usd).ceil() as u64;
                part(p, self.price.0) + part(c, self.price.1)
            }
        }
    }
}

#[derive(Default)]
struct Tally {
    sent: usize,
    allowed: usize,
    denied: usize,
    false_by_decision: usize,
    false_by_ledger: usize,
    /// Denials whose `remaining` was below the harness's ledger (limit − real cost allowed):
    /// an earlier answer's settlement had not landed yet (or, concurrently, others' open
    /// reservations held the difference).
    behind_ledger: usize,
    other: usize,
    first_other: Option<String>,
    real_allowed: u64,
    real_tokens_allowed: u64,
    reserved_bound_allowed: u64,
    usage_mismatch: usize,
    /// The real cost allowed (harness ledger) when this client was first denied.
    ledger_at_first_denial: Option<u64>,
}

impl Tally {
    fn merge(&mut self, o: Tally) {
        self.sent += o.sent;
        self.allowed += o.allowed;
        self.denied += o.denied;
        self.false_by_decision += o.false_by_decision;
        self.false_by_ledger += o.false_by_ledger;
        self.behind_ledger += o.behind_ledger;
        self.other += o.other;
        self.first_other = self.first_other.take().or(o.first_other);
        self.real_allowed += o.real_allowed;
        self.real_tokens_allowed += o.real_tokens_allowed;
        self.reserved_bound_allowed += o.reserved_bound_allowed;
        self.usage_mismatch += o.usage_mismatch;
        self.ledger_at_first_denial = match (self.ledger_at_first_denial, o.ledger_at_first_denial)
        {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }
}

fn http(addr: SocketAddr, token: &str, body: &str) -> Vec<u8> {
    format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Sends `reqs` one after another on one connection, as one agent.
async fn drive(
    addr: SocketAddr,
    token: String,
    reqs: Vec<Arc<Req>>,
    dim: Dim,
    limit: u64,
    ledger: Arc<std::sync::atomic::AtomicU64>,
) -> Tally {
    use std::sync::atomic::Ordering;
    let mut t = Tally::default();
    let mut conn = Conn::open(addr).await.expect("connect");
    for r in reqs {
        t.sent += 1;
        let a = match conn.roundtrip(&http(addr, &token, &r.body)).await {
            Ok(a) => a,
            Err(e) => {
                t.other += 1;
                t.first_other.get_or_insert_with(|| format!("io: {e}"));
                conn = Conn::open(addr).await.expect("connect");
                continue;
            }
        };
        let cost = dim.cost(r.real);
        let text = String::from_utf8_lossy(&a.body).to_string();
        if a.status == 200 {
            t.allowed += 1;
            t.real_allowed += cost;
            t.real_tokens_allowed += r.real.0 + r.real.1;
            // The bound the proxy reserved: body bytes as forwarded (`max_tokens` becomes
            // `max_completion_tokens`, 11 bytes longer) + 16, and max_tokens.
            t.reserved_bound_allowed += dim.cost((r.body.len() as u64 + 11 + 16, r.max_tokens));
            ledger.fetch_add(cost, Ordering::SeqCst);
            let reported = if text.contains("data:") {
                // A stream (the client asked for no usage; the proxy hid it): trust usage_for.
                Some(r.real)
            } else {
                serde_json::from_str::<Value>(&text).ok().map(|v| {
                    (
                        v["usage"]["prompt_tokens"].as_u64().unwrap_or(0),
                        v["usage"]["completion_tokens"].as_u64().unwrap_or(0),
                    )
                })
            };
            if reported != Some(r.real) {
                t.usage_mismatch += 1;
            }
            continue;
        }
        let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        if a.status == 403 && v["error"]["code"] == "denied" {
            t.denied += 1;
            t.ledger_at_first_denial
                .get_or_insert(ledger.load(Ordering::SeqCst));
            let remaining = v["warden"]["remaining"][dim.key].as_u64().unwrap_or(0);
            if cost <= remaining {
                t.false_by_decision += 1;
            }
            let by_ledger = limit.saturating_sub(ledger.load(Ordering::SeqCst));
            if cost <= by_ledger {
                t.false_by_ledger += 1;
            }
            if remaining < by_ledger {
                t.behind_ledger += 1;
            }
        } else {
            t.other += 1;
            t.first_other
                .get_or_insert_with(|| format!("{} {}", a.status, &text[..text.len().min(300)]));
        }
    }
    t
}

struct Scenario {
    name: &'static str,
    pool: &'static str,
    model: &'static str,
    dim: Dim,
    limit: u64,
    agents: usize,
    stream: bool,
    requests: usize,
    seed: u64,
}

fn scenario(node: &Node, s: &Scenario) {
    let tokens = node.agents(&format!("{}-", s.name), s.pool, s.agents);
    let reqs: Vec<Arc<Req>> = workload(s.seed, s.requests, s.model, s.stream)
        .into_iter()
        .map(Arc::new)
        .collect();
    // The oracle: admits a request when its real cost fits what is left, in the same order.
    let mut left = s.limit;
    let mut oracle = 0usize;
    for r in &reqs {
        let c = s.dim.cost(r.real);
        if c <= left {
            left -= c;
            oracle += 1;
        }
    }
    let oracle_used = s.limit - left;
    let total_real: u64 = reqs.iter().map(|r| s.dim.cost(r.real)).sum();
    let max_mix = reqs.iter().fold([0usize; 5], |mut m, r| {
        m[(r.max_tokens.trailing_zeros() - 8) as usize] += 1;
        m
    });
    let prompt_tokens: Vec<u64> = {
        let mut v: Vec<u64> = reqs.iter().map(|r| r.real.0).collect();
        v.sort_unstable();
        v
    };
    let ledger = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let addr = node.addr;
    let rt = load::runtime();
    let tally = rt.block_on(async {
        let mut tasks = Vec::new();
        for (j, token) in tokens.iter().enumerate() {
            let mine: Vec<Arc<Req>> = reqs.iter().skip(j).step_by(s.agents).cloned().collect();
            tasks.push(tokio::spawn(drive(
                addr,
                token.clone(),
                mine,
                s.dim,
                s.limit,
                ledger.clone(),
            )));
        }
        let mut all = Tally::default();
        for t in tasks {
            all.merge(t.await.unwrap());
        }
        all
    });
    // Settlements are reported after the answer; give the last ones a moment.
    std::thread::sleep(Duration::from_millis(500));
    let pool = node.operator().pool(s.pool).expect("the pool");
    let get = |m: &std::collections::BTreeMap<String, u64>| m.get(s.dim.key).copied().unwrap_or(0);
    let used = get(&pool.used);
    let overspend = used.saturating_sub(s.limit);
    let unit = if s.dim.key == "tokens" {
        "tokens"
    } else {
        "µUSD"
    };
    println!(
        "\n### {} — {} request(s) at once, {} ({}), pool {} limited to {} {unit}\n",
        s.name,
        s.agents,
        s.model,
        if s.stream {
            "streamed"
        } else {
            "whole answers"
        },
        s.pool,
        s.limit
    );
    println!(
        "workload: {} requests, max_tokens 256/512/1,024/2,048/4,096 × {:?}, prompt tokens p50 {} / p90 {} / max {}; real cost of all of it {} {unit} ({:.2}× the limit)",
        reqs.len(),
        max_mix,
        prompt_tokens[prompt_tokens.len() / 2],
        prompt_tokens[prompt_tokens.len() * 9 / 10],
        prompt_tokens.last().unwrap(),
        total_real,
        total_real as f64 / s.limit as f64
    );
    println!("\n| what | warden | oracle (knows the real cost) |");
    println!("|---|---|---|");
    println!("| allowed | {} | {oracle} |", tally.allowed);
    println!("| denied | {} | {} |", tally.denied, reqs.len() - oracle);
    println!(
        "| false denials (real cost ≤ the deny's own `remaining`) | {} ({:.1}% of requests, {:.1}% of denials) | 0 |",
        tally.false_by_decision,
        100.0 * tally.false_by_decision as f64 / tally.sent as f64,
        100.0 * tally.false_by_decision as f64 / tally.denied.max(1) as f64
    );
    println!(
        "| false denials (real cost ≤ limit − real cost allowed so far) | {} ({:.1}% of requests) | 0 |",
        tally.false_by_ledger,
        100.0 * tally.false_by_ledger as f64 / tally.sent as f64
    );
    println!(
        "| denials whose `remaining` was below limit − real cost allowed (a settlement not yet in, or others' open reservations) | {} | |",
        tally.behind_ledger
    );
    let mut first_oracle_denial = None;
    let mut seen = 0u64;
    for r in &reqs {
        let c = s.dim.cost(r.real);
        if seen + c > s.limit {
            first_oracle_denial = Some(seen);
            break;
        }
        seen += c;
    }
    println!(
        "| budget used (real cost allowed) at the first denial | {} | {} |",
        tally.ledger_at_first_denial.map_or("—".into(), |u| format!(
            "{u} ({:.1}%)",
            100.0 * u as f64 / s.limit as f64
        )),
        first_oracle_denial.map_or("—".into(), |u| format!(
            "{u} ({:.1}%)",
            100.0 * u as f64 / s.limit as f64
        )),
    );
    println!(
        "| budget used (pool `used` / limit) | {used} ({:.1}%) | {oracle_used} ({:.1}%) |",
        100.0 * used as f64 / s.limit as f64,
        100.0 * oracle_used as f64 / s.limit as f64
    );
    println!(
        "| reservation bound / real cost, allowed requests | {:.2}× | 1× |",
        tally.reserved_bound_allowed as f64 / tally.real_allowed.max(1) as f64
    );
    println!("| **overspend** (used − limit, if positive) | **{overspend}** | 0 |");
    println!(
        "| pool settled = real cost of what was allowed | {} (settled {}, real {}, still reserved {}) | |",
        if get(&pool.spent) == tally.real_allowed { "yes" } else { "NO" },
        get(&pool.spent),
        tally.real_allowed,
        get(&pool.reserved)
    );
    if tally.other > 0 || tally.usage_mismatch > 0 {
        println!(
            "| other answers / usage mismatches | {} / {} — first: {} | |",
            tally.other,
            tally.usage_mismatch,
            tally.first_other.unwrap_or_default()
        );
    }
}

/// Runs the three false-denial scenarios on a fresh node.
pub fn run(opts: &Opts, up: SocketAddr) {
    use std::sync::atomic::Ordering;
    let fsync = opts.text("fsync", "always");
    let requests: usize = opts.get("requests", 1_000);
    // Streams in the concurrent run: short and quick, so calls overlap without taking long.
    upstream::CHUNKS.store(3, Ordering::Relaxed);
    upstream::CHUNK_DELAY_US.store(5_000, Ordering::Relaxed);
    let node = Node::start("denials", &fsync, up);
    println!("\n## LLM proxy: false denials and overspend (fsync {fsync})");
    let mini = Dim {
        key: "tokens",
        price: (0.15, 0.60),
    };
    let large_usd = Dim {
        key: "cost_micro_usd",
        price: (2.50, 10.00),
    };
    for s in [
        Scenario {
            name: "tokens-sequential",
            pool: "swarm/deny-tokens",
            model: "bench-mini",
            dim: mini,
            limit: 1_000_000,
            agents: 1,
            stream: false,
            requests,
            seed: 1,
        },
        Scenario {
            name: "usd-sequential",
            pool: "swarm/deny-usd",
            model: "bench-large",
            dim: large_usd,
            limit: 5_000_000,
            agents: 1,
            stream: false,
            requests,
            seed: 2,
        },
        Scenario {
            name: "tokens-32-concurrent",
            pool: "swarm/deny-concurrent",
            model: "bench-mini",
            dim: mini,
            limit: 1_000_000,
            agents: 32,
            stream: true,
            requests,
            seed: 3,
        },
    ] {
        scenario(&node, &s);
    }
    drop(node);
}
