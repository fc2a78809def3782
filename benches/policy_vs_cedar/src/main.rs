//! warden's policy evaluation against the `cedar-policy` crate, on rule sets that decide the
//! same allow/deny for every request, at 10, 100, 1,000 and 10,000 rules.
//!
//! For each size N the harness
//! 1. generates a warden policy (YAML) and a Cedar policy set (text) from one rule spec,
//! 2. parses + compiles each once (timed),
//! 3. checks on a few thousand random requests that both engines agree (aborts otherwise),
//! 4. times single evaluations of pre-built requests, alternating the engines in blocks,
//! 5. prints p50 / p99 per engine and the cedar/warden ratios.
//!
//! A third, supplementary engine is Cedar with the policies pre-sliced by tool by the caller
//! (one small `PolicySet` per tool, picked from a `HashMap`): it separates Cedar's cost per
//! policy from the cost of the stock `Authorizer` evaluating every policy in the set.
//!
//! Run with `CARGO_TARGET_DIR=/tmp/cedar-target cargo run --release` (see README.md).

use std::collections::HashMap;
use std::hint::black_box;
use std::process::exit;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cedar_policy::{Authorizer, Context, Decision, Entities, EntityUid, Request};
use serde_json::{json, Map, Value};
use warden_actors::policy::PolicySet as WardenSet;
use warden_actors::{Account, ActionClass, AgentId, Limits, PolicyContext, PolicyOutcome, Step};

// ---------------------------------------------------------------------------------------------
// Options

struct Opts {
    sizes: Vec<usize>,
    iters: usize,
    block: usize,
    warmup: usize,
    verify: usize,
    pool: usize,
    seed: u64,
}

impl Default for Opts {
    fn default() -> Self {
        Self {
            sizes: vec![10, 100, 1_000, 10_000],
            iters: 20_000,
            block: 500,
            warmup: 2_000,
            verify: 5_000,
            pool: 4_096,
            seed: 0x5eed_cafe,
        }
    }
}

const USAGE: &str = "usage: policy_vs_cedar [--sizes 10,100,1000,10000] [--iters 20000] \
[--block 500] [--warmup 2000] [--verify 5000] [--pool 4096] [--seed N]";

fn parse_opts() -> Opts {
    let mut o = Opts::default();
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        if flag == "-h" || flag == "--help" {
            println!("{USAGE}");
            exit(0);
        }
        let Some(val) = args.next() else {
            eprintln!("missing value for {flag}\n{USAGE}");
            exit(2);
        };
        let num = |v: &str| -> usize {
            v.replace('_', "").parse().unwrap_or_else(|_| {
                eprintln!("bad number {v:?} for {flag}\n{USAGE}");
                exit(2)
            })
        };
        match flag.as_str() {
            "--sizes" => o.sizes = val.split(',').map(num).collect(),
            "--iters" => o.iters = num(&val),
            "--block" => o.block = num(&val).max(1),
            "--warmup" => o.warmup = num(&val),
            "--verify" => o.verify = num(&val),
            "--pool" => o.pool = num(&val).max(1),
            "--seed" => o.seed = num(&val) as u64,
            _ => {
                eprintln!("unknown flag {flag}\n{USAGE}");
                exit(2);
            }
        }
    }
    o
}

// ---------------------------------------------------------------------------------------------
// A tiny deterministic RNG (splitmix64), so the crate needs no `rand`.

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    /// True with probability `pct` percent.
    fn pct(&mut self, pct: u64) -> bool {
        self.below(100) < pct
    }
}

// ---------------------------------------------------------------------------------------------
// The rule spec both policies are generated from: one rule per registered tool `t{i}`.

#[derive(Clone, Copy, Debug)]
enum Rule {
    /// Deny when `path` matches `/secret/{i}/*`.
    PathGlob,
    /// Deny when `amount > threshold`.
    AmountOver(i64),
    /// Deny when `user == "root"`.
    UserRoot,
    /// Allow when `user in ["alice", "bob"]` (does not change the outcome: a registered tool
    /// is allowed anyway; it is there so both engines carry and evaluate permit rules too).
    PermitUsers,
}

fn rule_for(i: usize) -> Rule {
    match i % 4 {
        0 => Rule::PathGlob,
        1 => Rule::AmountOver(100 + ((i as i64 * 37) % 900)),
        2 => Rule::UserRoot,
        _ => Rule::PermitUsers,
    }
}

/// The warden policy. Written compactly (tools `t{i}`, one flow mapping per line, no optional
/// spaces) because warden caps a policy at 1 MiB (`MAX_POLICY_BYTES`): 10,000 rules plus their
/// registry entries have to fit in about 100 bytes each.
fn warden_yaml(n: usize) -> String {
    let mut s = String::with_capacity(n * 110 + 64);
    s.push_str("version: 1\ndefault_decision: deny\ntools:\n");
    for i in 0..n {
        s.push_str(&format!(" t{i}: {{action: read}}\n"));
    }
    s.push_str("rules:\n");
    for i in 0..n {
        let cond = match rule_for(i) {
            Rule::PathGlob => format!("path: {{glob: '/secret/{i}/*'}}}}}},decision: deny"),
            Rule::AmountOver(t) => format!("amount: {{gt: {t}}}}}}},decision: deny"),
            Rule::UserRoot => "user: {eq: root}}},decision: deny".to_string(),
            Rule::PermitUsers => "user: {in: [alice,bob]}}},decision: allow".to_string(),
        };
        s.push_str(&format!("- {{id: r{i},match: {{tool: t{i},args: {{{cond}}}\n"));
    }
    s
}

fn cedar_text(n: usize) -> String {
    let mut s = String::with_capacity(n * 220);
    for i in 0..n {
        s.push_str(&cedar_tool_text(i));
    }
    s
}

/// The two Cedar policies for tool `t{i}`: its registry permit and its rule.
fn cedar_tool_text(i: usize) -> String {
    let scope = format!("principal, action == Action::\"call\", resource == Tool::\"t{i}\"");
    let (effect, cond) = match rule_for(i) {
        Rule::PathGlob => ("forbid", format!("context has path && context.path like \"/secret/{i}/*\"")),
        Rule::AmountOver(t) => ("forbid", format!("context has amount && context.amount > {t}")),
        Rule::UserRoot => ("forbid", "context has user && context.user == \"root\"".to_string()),
        Rule::PermitUsers => ("permit", "context has user && [\"alice\", \"bob\"].contains(context.user)".to_string()),
    };
    // The registry (a registered tool is allowed unless a forbid applies), then the rule.
    format!(
        "@id(\"reg{i}\")\npermit({scope});\n@id(\"r{i}\")\n{effect}({scope}) when {{ {cond} }};\n"
    )
}

/// Supplementary variant: Cedar with the policies pre-sliced by tool (the application keeps a
/// map tool -> its own small `PolicySet`), as a deployment could do by hand. The stock
/// `Authorizer` evaluates every policy of the set it is given.
struct CedarSliced {
    by_tool: HashMap<String, cedar_policy::PolicySet>,
    empty: cedar_policy::PolicySet,
    entities: Entities,
    authorizer: Authorizer,
}

impl CedarSliced {
    fn parse(n: usize) -> Self {
        let by_tool = (0..n)
            .map(|i| {
                let set = cedar_policy::PolicySet::from_str(&cedar_tool_text(i))
                    .unwrap_or_else(|e| fail(&format!("cedar policy for t{i}: {e}")));
                (format!("t{i}"), set)
            })
            .collect();
        Self {
            by_tool,
            empty: cedar_policy::PolicySet::new(),
            entities: Entities::empty(),
            authorizer: Authorizer::new(),
        }
    }

    #[inline(always)]
    fn slice(&self, tool: &str) -> &cedar_policy::PolicySet {
        self.by_tool.get(tool).unwrap_or(&self.empty)
    }

    fn allows(&self, tool: &str, req: &Request) -> bool {
        let resp = self.authorizer.is_authorized(req, self.slice(tool), &self.entities);
        if let Some(e) = resp.diagnostics().errors().next() {
            fail(&format!("cedar (sliced) evaluation error: {e}"));
        }
        resp.decision() == Decision::Allow
    }
}

// ---------------------------------------------------------------------------------------------
// Requests: the same (tool, args) turned into a warden Step and a Cedar Request.

struct Req {
    tool: String,
    args: Value,
}

fn random_req(rng: &mut Rng, n: usize) -> Req {
    // 5% unregistered tools (denied by both defaults), else a uniformly random registered tool.
    let (tool, i) = if rng.pct(5) {
        (format!("ghost_{}", rng.below(1000)), None)
    } else {
        let i = rng.below(n as u64) as usize;
        (format!("t{i}"), Some(i))
    };
    let own = i.unwrap_or(0);
    let mut args = Map::new();
    let r = rng.below(100);
    let path = match r {
        0..=34 => Some(format!("/secret/{own}/file{}.txt", rng.below(100))), // hits own glob
        35..=39 => Some(format!("/secret/{own}/")),                           // hits (empty *)
        40..=44 => Some(format!("/secret/{own}")),                            // misses: no slash
        45..=49 => Some(format!("/secret/{own}0/x")),                         // misses: other id
        50..=64 => Some(format!("/secret/{}/x", rng.below(n as u64))),       // another tool's
        65..=89 => Some(format!("/tmp/work/{}", rng.below(1000))),           // misses
        _ => None,                                                           // absent
    };
    if let Some(p) = path {
        args.insert("path".into(), Value::String(p));
    }
    let r = rng.below(100);
    let threshold = match i.map(rule_for) {
        Some(Rule::AmountOver(t)) => t,
        _ => 500,
    };
    let amount = match r {
        0..=9 => None,
        10..=19 => Some(threshold),     // equal: not greater
        20..=24 => Some(threshold + 1), // just over
        _ => Some(rng.below(2000) as i64),
    };
    if let Some(a) = amount {
        args.insert("amount".into(), json!(a));
    }
    let user = match rng.below(100) {
        0..=9 => None,
        10..=34 => Some("root"),
        35..=39 => Some("Root"),
        40..=59 => Some("alice"),
        60..=74 => Some("bob"),
        _ => Some("carol"),
    };
    if let Some(u) = user {
        args.insert("user".into(), Value::String(u.into()));
    }
    Req { tool, args: Value::Object(args) }
}

fn warden_step(r: &Req) -> Step {
    Step::builder(r.tool.as_str(), ActionClass::Read)
        .args(r.args.clone())
        .build()
        .unwrap_or_else(|e| fail(&format!("bad warden step for {}: {e}", r.tool)))
}

struct CedarEnv {
    principal: EntityUid,
    action: EntityUid,
}

impl CedarEnv {
    fn new() -> Self {
        Self {
            principal: uid(r#"User::"a1""#),
            action: uid(r#"Action::"call""#),
        }
    }

    fn request(&self, r: &Req) -> Request {
        let resource = uid(&format!("Tool::\"{}\"", r.tool));
        let context = Context::from_json_value(r.args.clone(), None)
            .unwrap_or_else(|e| fail(&format!("bad cedar context {}: {e}", r.args)));
        Request::new(self.principal.clone(), self.action.clone(), resource, context, None)
            .unwrap_or_else(|e| fail(&format!("bad cedar request: {e}")))
    }
}

fn uid(s: &str) -> EntityUid {
    EntityUid::from_str(s).unwrap_or_else(|e| fail(&format!("bad entity uid {s}: {e}")))
}

fn fail(msg: &str) -> ! {
    eprintln!("ABORT: {msg}");
    exit(1)
}

// ---------------------------------------------------------------------------------------------
// The two engines, each behind one call.

struct Warden {
    set: WardenSet,
    agent: AgentId,
    account: Arc<Account>,
}

impl Warden {
    /// `true` = allow. Any outcome other than allow or deny is a modelling error.
    fn allows(&self, step: &Step) -> bool {
        let ctx = self.ctx(step);
        match self.set.evaluate(&ctx).outcome {
            PolicyOutcome::Allow => true,
            PolicyOutcome::Deny { .. } => false,
            other => fail(&format!("warden gave {other:?} for {}", step.tool())),
        }
    }

    #[inline(always)]
    fn ctx<'a>(&'a self, step: &'a Step) -> PolicyContext<'a> {
        PolicyContext {
            agent: &self.agent,
            step,
            consecutive_failures: 0,
            steps_decided: 0,
            now_ms: 0,
            team: "swarm",
            account: &self.account,
        }
    }
}

struct Cedar {
    set: cedar_policy::PolicySet,
    entities: Entities,
    authorizer: Authorizer,
}

impl Cedar {
    fn allows(&self, req: &Request) -> bool {
        let resp = self.authorizer.is_authorized(req, &self.set, &self.entities);
        if let Some(e) = resp.diagnostics().errors().next() {
            fail(&format!("cedar evaluation error (policies must not error): {e}"));
        }
        resp.decision() == Decision::Allow
    }
}

// ---------------------------------------------------------------------------------------------
// Measurement

struct Stats {
    p50: f64,
    p99: f64,
}

/// Nearest-rank percentiles, in microseconds.
fn stats(mut ns: Vec<u64>) -> Stats {
    ns.sort_unstable();
    let at = |p: f64| {
        let rank = ((p * ns.len() as f64).ceil() as usize).clamp(1, ns.len());
        ns[rank - 1] as f64 / 1_000.0
    };
    Stats { p50: at(0.50), p99: at(0.99) }
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "n/a".into())
}

struct Row {
    n: usize,
    warden: Stats,
    cedar: Stats,
    sliced: Stats,
    warden_parse: Duration,
    sliced_parse: Duration,
    cedar_parse: Duration,
    cedar_policies: usize,
    yaml_bytes: usize,
    cedar_bytes: usize,
    allow_pct: f64,
}

/// One size, both engines, in the same order every time: parse and compile each, check that
/// they decide the same on every request, then time each over the same request stream. One
/// piece on purpose: the two engines must see identical inputs in an identical order.
fn run_size(o: &Opts, n: usize) -> Row {
    // Policies, from text, each parsed + compiled once (timed).
    let yaml = warden_yaml(n);
    let ctext = cedar_text(n);
    let t = Instant::now();
    let wset = WardenSet::parse(&yaml).unwrap_or_else(|e| fail(&format!("warden policy: {e}")));
    let warden_parse = t.elapsed();
    let t = Instant::now();
    let cset = cedar_policy::PolicySet::from_str(&ctext)
        .unwrap_or_else(|e| fail(&format!("cedar policy: {e}")));
    let cedar_parse = t.elapsed();
    let t = Instant::now();
    let sliced = CedarSliced::parse(n);
    let sliced_parse = t.elapsed();
    if wset.rule_count() != n {
        fail(&format!("warden compiled {} rules, expected {n}", wset.rule_count()));
    }
    let cedar_policies = cset.policies().count();
    if cedar_policies != 2 * n {
        fail(&format!("cedar parsed {cedar_policies} policies, expected {}", 2 * n));
    }

    let root = Account::root("swarm", Limits::UNLIMITED);
    let warden = Warden {
        set: wset,
        agent: AgentId::new("a1").unwrap_or_else(|e| fail(&e.to_string())),
        account: root.child("a1", Limits::UNLIMITED).unwrap_or_else(|e| fail(&e.to_string())),
    };
    let cedar = Cedar { set: cset, entities: Entities::empty(), authorizer: Authorizer::new() };
    let env = CedarEnv::new();

    // Equivalence: fresh random requests, plus every request of the timing pool below.
    let mut rng = Rng(o.seed ^ (n as u64).wrapping_mul(0x9e37_79b9));
    let mut allows = 0usize;
    let mut checked = 0usize;
    let mut check = |req: &Req| {
        let w = warden.allows(&warden_step(req));
        let creq = env.request(req);
        let c = cedar.allows(&creq);
        let cs = sliced.allows(&req.tool, &creq);
        if cs != c {
            fail(&format!("N={n}: sliced cedar disagrees with cedar on tool {} args {}", req.tool, req.args));
        }
        if w != c {
            fail(&format!(
                "N={n}: engines disagree on tool {} args {}: warden {}, cedar {}",
                req.tool,
                req.args,
                if w { "allow" } else { "deny" },
                if c { "allow" } else { "deny" }
            ));
        }
        allows += usize::from(w);
        checked += 1;
    };
    for _ in 0..o.verify {
        check(&random_req(&mut rng, n));
    }
    let pool: Vec<Req> = (0..o.pool).map(|_| random_req(&mut rng, n)).collect();
    for r in &pool {
        check(r);
    }
    let allow_pct = 100.0 * allows as f64 / checked as f64;
    if allows == 0 || allows == checked {
        fail(&format!("N={n}: requests are all {}: not a useful check", if allows == 0 { "denied" } else { "allowed" }));
    }

    // Requests built once, outside the timed loop.
    let steps: Vec<Step> = pool.iter().map(warden_step).collect();
    let reqs: Vec<Request> = pool.iter().map(|r| env.request(r)).collect();

    // Engine e in 0..3 (warden, cedar, cedar sliced): time `count` single evaluations of the
    // pool requests from `from` on, one `Instant` pair per call.
    let time = |e: usize, from: usize, count: usize, out: &mut Vec<u64>| {
        for k in from..from + count {
            let at = k % steps.len();
            let ns = match e {
                0 => {
                    let ctx = warden.ctx(&steps[at]);
                    let t = Instant::now();
                    let r = warden.set.evaluate(black_box(&ctx));
                    let d = t.elapsed();
                    black_box(r);
                    d
                }
                1 => {
                    let t = Instant::now();
                    let r = cedar.authorizer.is_authorized(black_box(&reqs[at]), &cedar.set, &cedar.entities);
                    let d = t.elapsed();
                    black_box(r);
                    d
                }
                _ => {
                    let t = Instant::now();
                    let set = sliced.slice(black_box(&pool[at].tool));
                    let r = sliced.authorizer.is_authorized(black_box(&reqs[at]), set, &sliced.entities);
                    let d = t.elapsed();
                    black_box(r);
                    d
                }
            };
            out.push(ns.as_nanos() as u64);
        }
    };

    let mut scratch = Vec::with_capacity(o.warmup);
    for e in 0..3 {
        scratch.clear();
        time(e, 0, o.warmup, &mut scratch);
    }

    // Alternate blocks, rotating which engine goes first each round, so drift hits all.
    let mut ns: [Vec<u64>; 3] = std::array::from_fn(|_| Vec::with_capacity(o.iters));
    let mut done = 0;
    let mut round = 0;
    while done < o.iters {
        let count = o.block.min(o.iters - done);
        let from = o.warmup + done;
        for j in 0..3 {
            let e = (round + j) % 3;
            time(e, from, count, &mut ns[e]);
        }
        done += count;
        round += 1;
    }
    let [wns, cns, sns] = ns;

    Row {
        n,
        warden: stats(wns),
        cedar: stats(cns),
        sliced: stats(sns),
        warden_parse,
        sliced_parse,
        cedar_parse,
        cedar_policies,
        yaml_bytes: yaml.len(),
        cedar_bytes: ctext.len(),
        allow_pct,
    }
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1_000.0)
}

fn main() {
    let o = parse_opts();
    let load_before = loadavg();
    println!(
        "policy_vs_cedar: cedar-policy {} (Cedar language {}), {} timed evaluations per engine per size, \
         blocks of {}, warm-up {}, {} equivalence checks + {} pool requests per size",
        cedar_policy::get_sdk_version(),
        cedar_policy::get_lang_version(),
        o.iters,
        o.block,
        o.warmup,
        o.verify,
        o.pool
    );
    println!("load average (1/5/15 min) before: {load_before}");
    if cfg!(debug_assertions) {
        println!("WARNING: debug build; run with --release for meaningful numbers");
    }

    let mut rows = Vec::new();
    for &n in &o.sizes {
        let row = run_size(&o, n);
        println!(
            "N={:>6}: equivalent on {} requests ({:.1}% allowed); warden p50 {:.2} µs p99 {:.2} µs; \
             cedar p50 {:.2} µs p99 {:.2} µs; cedar sliced p50 {:.2} µs p99 {:.2} µs; load {}",
            row.n,
            o.verify + o.pool,
            row.allow_pct,
            row.warden.p50,
            row.warden.p99,
            row.cedar.p50,
            row.cedar.p99,
            row.sliced.p50,
            row.sliced.p99,
            loadavg()
        );
        rows.push(row);
    }

    println!();
    println!("| rules | warden p50 | warden p99 | cedar p50 | cedar p99 | p50 ratio | p99 ratio |");
    println!("|------:|-----------:|-----------:|----------:|----------:|----------:|----------:|");
    for r in &rows {
        println!(
            "| {} | {:.2} µs | {:.2} µs | {:.2} µs | {:.2} µs | {:.2}x | {:.2}x |",
            r.n,
            r.warden.p50,
            r.warden.p99,
            r.cedar.p50,
            r.cedar.p99,
            r.cedar.p50 / r.warden.p50,
            r.cedar.p99 / r.warden.p99
        );
    }
    println!();
    println!(
        "| rules | warden YAML | cedar text | cedar policies | warden parse+compile | cedar parse | cedar sliced parse |"
    );
    println!(
        "|------:|------------:|-----------:|---------------:|---------------------:|------------:|-------------------:|"
    );
    for r in &rows {
        println!(
            "| {} | {} B | {} B | {} | {} | {} | {} |",
            r.n,
            r.yaml_bytes,
            r.cedar_bytes,
            r.cedar_policies,
            ms(r.warden_parse),
            ms(r.cedar_parse),
            ms(r.sliced_parse)
        );
    }
    println!();
    println!("Supplementary: Cedar with policies pre-sliced by tool by the caller (2 policies per call):");
    println!("| rules | cedar sliced p50 | cedar sliced p99 | p50 ratio vs warden | p99 ratio vs warden |");
    println!("|------:|-----------------:|-----------------:|--------------------:|--------------------:|");
    for r in &rows {
        println!(
            "| {} | {:.2} µs | {:.2} µs | {:.2}x | {:.2}x |",
            r.n,
            r.sliced.p50,
            r.sliced.p99,
            r.sliced.p50 / r.warden.p50,
            r.sliced.p99 / r.warden.p99
        );
    }
    println!();
    println!("ratio = cedar / warden (above 1: warden is faster)");
    println!("load average (1/5/15 min) after: {}", loadavg());
}
