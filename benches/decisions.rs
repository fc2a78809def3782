//! Criterion benchmarks of one decision, by path:
//!
//! - `kernel/decide+settle`: the pure kernel, no actor (the floor).
//! - `actor/sharded_same_thread`: through the agent's ractor actor, the caller running on the
//!   agent's `current_thread` shard (warden's default layout and fast path).
//! - `actor/multi_thread_cross_thread`: through the actor, agents and callers on a 2-worker
//!   multi-threaded runtime ([`Layout::Current`]): every call is a cross-thread wake-up.
//! - `inline/caller_thread`: [`AgentHandle::step_inline`], the kernel on the caller's thread.
//!
//! Each iteration times one `step` (decide + reserve, and for the actor paths the message
//! round trip); its outcome is settled right after, outside the timed span, so budgets never
//! run dry. The timer itself (two `Instant::now()` calls) adds about 40 ns to every figure. Percentiles, throughput and memory are measured by
//! `benches/swarm_load.rs`; results are in docs/benchmarks.md.

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use serde_json::json;
use warden::{
    actors::{Account, AgentKernel},
    ActionClass, AgentId, AgentSpec, KernelConfig, Layout, Limits, Outcome, StagnationConfig, Step,
    Swarm,
};

fn steps() -> Vec<Step> {
    (0..64)
        .map(|i| {
            Step::builder("web.search", ActionClass::Read)
                .args(json!({ "q": i }))
                .tokens(100)
                .build()
                .unwrap()
        })
        .collect()
}

fn spec(name: &str) -> AgentSpec {
    AgentSpec::new(AgentId::new(name).unwrap()).stagnation(StagnationConfig::OFF)
}

/// Every decision path, one criterion group. One piece on purpose: the groups share the
/// swarms and runtimes built at the top, and the order of the rows is the order of the
/// table in docs/benchmarks.md.
fn bench(c: &mut Criterion) {
    let steps = Arc::new(steps());
    let mut group = c.benchmark_group("decision");
    group.measurement_time(Duration::from_secs(4));

    {
        let root = Account::root("swarm", Limits::UNLIMITED);
        let account = root.child("a", Limits::UNLIMITED).unwrap();
        let config = KernelConfig {
            stagnation: StagnationConfig::OFF,
            ..Default::default()
        };
        let mut k = AgentKernel::new(AgentId::new("a").unwrap(), account, &config, None, 0);
        let mut n = 0u64;
        group.bench_function("kernel/decide", |b| {
            b.iter_custom(|iters| {
                let mut spent = Duration::ZERO;
                for _ in 0..iters {
                    n += 1;
                    let step = &steps[n as usize % steps.len()];
                    let start = Instant::now();
                    let d = std::hint::black_box(k.decide(step, n)).decision;
                    spent += start.elapsed();
                    k.settle(d.step, &Outcome::success(), n).unwrap();
                }
                spent
            })
        });
    }

    let driver = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    {
        let swarm = driver
            .block_on(
                Swarm::builder()
                    .layout(Layout::Sharded { shards: 2 })
                    .build(),
            )
            .unwrap();
        let agent = driver.block_on(swarm.spawn_agent(spec("a"))).unwrap();
        group.bench_function("actor/sharded_same_thread", |b| {
            b.iter_custom(|iters| {
                let (agent, steps) = (agent.clone(), Arc::clone(&steps));
                let task = swarm.spawn_on_shard_of(&agent.clone(), async move {
                    let mut spent = Duration::ZERO;
                    for i in 0..iters as usize {
                        let step = steps[i % steps.len()].clone();
                        let start = Instant::now();
                        let d = agent.step(step).await.unwrap();
                        spent += start.elapsed();
                        agent.outcome(d.step, Outcome::success()).await.unwrap();
                    }
                    spent
                });
                driver.block_on(task).unwrap()
            })
        });
        driver.block_on(swarm.shutdown());
    }

    {
        let mt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let swarm = mt
            .block_on(Swarm::builder().layout(Layout::Current).build())
            .unwrap();
        let agent = mt.block_on(swarm.spawn_agent(spec("a"))).unwrap();
        group.bench_function("actor/multi_thread_cross_thread", |b| {
            b.iter_custom(|iters| {
                let (agent, steps) = (agent.clone(), Arc::clone(&steps));
                mt.block_on(async move {
                    tokio::spawn(async move {
                        let mut spent = Duration::ZERO;
                        for i in 0..iters as usize {
                            let step = steps[i % steps.len()].clone();
                            let start = Instant::now();
                            let d = agent.step(step).await.unwrap();
                            spent += start.elapsed();
                            agent.outcome(d.step, Outcome::success()).await.unwrap();
                        }
                        spent
                    })
                    .await
                    .unwrap()
                })
            })
        });
        mt.block_on(swarm.shutdown());
    }

    {
        let swarm = driver
            .block_on(
                Swarm::builder()
                    .layout(Layout::Sharded { shards: 2 })
                    .build(),
            )
            .unwrap();
        let agent = driver.block_on(swarm.spawn_agent(spec("a"))).unwrap();
        let mut n = 0usize;
        group.bench_function("inline/caller_thread", |b| {
            b.iter_custom(|iters| {
                let mut spent = Duration::ZERO;
                for _ in 0..iters {
                    n += 1;
                    let step = &steps[n % steps.len()];
                    let start = Instant::now();
                    let d = std::hint::black_box(agent.step_inline(step));
                    spent += start.elapsed();
                    agent.outcome_inline(d.step, &Outcome::success()).unwrap();
                }
                spent
            })
        });
        driver.block_on(swarm.shutdown());
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
