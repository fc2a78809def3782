//! A tour of warden as a library: a YAML policy, two teams under one swarm, a safety halt that
//! cascades through a team, and a shared pool that runs dry.
//!
//! Run it with `cargo run --release --example swarm`.

use serde_json::json;
use warden::actors::policy::PolicySet;
use warden::{ActionClass, AgentId, AgentSpec, Event, LedgerDim, Outcome, Step, Swarm, Verdict};

fn id(s: &str) -> AgentId {
    AgentId::new(s).expect("valid id")
}

/// The policy of the tour: two teams under a $2 swarm pool, a tool registry, one safety rule.
const POLICY: &str = r#"
version: 1
defaults:
  budgets: {steps: 100, cost_usd: 1.00}
  stagnation: {repeat_limit: 0, window: 0}
pools:
  - {path: swarm, limits: {cost_usd: 2.00}}
  - {path: swarm/coders, cascade: {on: [safety, overrisk], scope: siblings}}
  - {path: swarm/research, limits: {tokens: 10000}}
tools:
  shell: {action: execute, risk: 0.5}
  web.search: {action: read}
rules:
  - id: no-rm-rf
    match: {tool: shell, args: {command: {regex: 'rm\s+-rf'}}}
    decision: halt
    kind: safety
    message: recursive delete
"#;

/// The tour, one piece on purpose: it reads top to bottom as the story the README tells
/// (spawn, step, cascade, pool running dry), each part printing what it shows.
#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // The YAML policy engine: its pools become the swarm's teams.
    let policy = PolicySet::parse(POLICY).map_err(|e| anyhow::anyhow!("{e}"))?;
    let swarm = Swarm::builder().policy_set(policy).build().await?;
    println!("swarm up: {} runtime shards", swarm.shards());

    // Print halts as they happen, with their cause chains.
    let mut events = swarm.events();
    let printer = tokio::spawn(async move {
        while let Some(Ok(event)) = events.recv().await {
            if let Event::Halt { agent, record } = event {
                let chain: Vec<String> = record
                    .cause
                    .iter()
                    .map(|c| format!("{} ({})", c.agent, c.kind))
                    .collect();
                println!(
                    "  [event] halt {agent}: {} by {} — {}{}",
                    record.kind,
                    record.rule.as_deref().unwrap_or("-"),
                    record.reason,
                    if chain.is_empty() {
                        String::new()
                    } else {
                        format!(" [cause: {}]", chain.join(" -> "))
                    }
                );
            }
        }
    });

    let mut coders = Vec::new();
    for name in ["coder-1", "coder-2", "coder-3"] {
        coders.push(
            swarm
                .spawn_agent(AgentSpec::new(id(name)).pool("swarm/coders"))
                .await?,
        );
    }
    let mut researchers = Vec::new();
    for name in ["scout-1", "scout-2"] {
        researchers.push(
            swarm
                .spawn_agent(AgentSpec::new(id(name)).pool("swarm/research"))
                .await?,
        );
    }
    println!("spawned {} agents in 2 teams", swarm.len());

    println!("\n1. coders work normally");
    for (i, c) in coders.iter().enumerate() {
        let step = Step::builder("shell", ActionClass::Execute)
            .args(json!({"command": format!("cargo test -p crate{i}")}))
            .tokens(800)
            .cost_micro_usd(20_000)
            .build()?;
        let d = c.step(step).await?;
        println!("  {} shell 'cargo test' -> {}", c.id(), d.decision);
        c.outcome(d.step, Outcome::success()).await?;
    }

    println!("\n2. coder-2 tries rm -rf: safety halt, which cascades to its siblings");
    let rm = Step::builder("shell", ActionClass::Execute)
        .args(json!({"command": "rm -rf /"}))
        .build()?;
    let d = coders[1].step(rm).await?;
    println!(
        "  coder-2 shell 'rm -rf /' -> {} ({:?}, rule {:?})",
        d.decision, d.kind, d.rule
    );
    // The cascade runs in the supervisor; wait (bounded) until it reached both siblings.
    for c in [&coders[0], &coders[2]] {
        for _ in 0..1_000 {
            if c.snapshot().halt.is_some() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
    }
    let ls = Step::builder("shell", ActionClass::Execute)
        .args(json!({"command": "ls"}))
        .build()?;
    let d = coders[0].step(ls).await?;
    println!("  coder-1 shell 'ls' -> {} (halted by cascade)", d.decision);

    println!("\n3. scouts share swarm/research's 10,000 tokens until the pool runs dry");
    let mut n = 0;
    'outer: loop {
        for s in &researchers {
            n += 1;
            let step = Step::builder("web.search", ActionClass::Read)
                .args(json!({"q": format!("query {n}")}))
                .tokens(1_500)
                .build()?;
            let d = s.step(step).await?;
            if d.decision != Verdict::Allow {
                println!(
                    "  {} search #{n} -> {} by {}: {}",
                    s.id(),
                    d.decision,
                    d.rule.as_deref().unwrap_or("-"),
                    d.reason
                );
                break 'outer;
            }
            let left = d.remaining.0.get(LedgerDim::Tokens).unwrap_or(u64::MAX);
            println!(
                "  {} search #{n} -> allow, {left} tokens left on its path",
                s.id()
            );
            s.outcome(d.step, Outcome::success()).await?;
        }
    }

    println!("\n4. an operator resumes coder-1 (an explicit act, published as a resume event)");
    let lifted = swarm.resume(&id("coder-1"), "operator:alice").await?;
    println!("  lifted a {} halt", lifted.kind);

    println!("\npools:");
    for p in swarm.pools() {
        println!(
            "  {:<16} tokens spent {:>6}  cost spent ${:.6}",
            p.name,
            p.spent.get(LedgerDim::Tokens),
            p.spent.get(LedgerDim::CostMicroUsd) as f64 / 1e6
        );
    }
    swarm.shutdown().await;
    printer.abort();
    Ok(())
}
