//! Property tests for the ledger: under arbitrary interleavings of concurrent reservations,
//! settlements and cancellations from many agents over a pool tree, no account ever spends
//! past its limit, and when everything is settled nothing is lost:
//! `spent + remaining == limit` and `spent == Σ charged`.

use std::sync::{Arc, Barrier};

use proptest::prelude::*;
use warden_actors::{Account, Amounts, LedgerDim, Limits, Reservation};

#[derive(Clone, Debug)]
enum Op {
    Reserve {
        agent: usize,
        tokens: u64,
        cost: u64,
    },
    Settle {
        pick: usize,
        used_pct: u8,
        over: u64,
    },
    Cancel {
        pick: usize,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..6usize, 0..400u64, 0..50u64)
            .prop_map(|(agent, tokens, cost)| Op::Reserve { agent, tokens, cost }),
        3 => (any::<usize>(), 0..=100u8, prop_oneof![3 => Just(0u64), 1 => 0..300u64])
            .prop_map(|(pick, used_pct, over)| Op::Settle { pick, used_pct, over }),
        1 => any::<usize>().prop_map(|pick| Op::Cancel { pick }),
    ]
}

struct Tree {
    root: Arc<Account>,
    teams: Vec<Arc<Account>>,
    agents: Vec<Arc<Account>>,
}

fn tree(root_tokens: u64, team_tokens: u64, agent_tokens: u64, cost: u64) -> Tree {
    let root = Account::root(
        "swarm",
        Limits::UNLIMITED
            .with(LedgerDim::Tokens, Some(root_tokens))
            .with(LedgerDim::CostMicroUsd, Some(cost))
            .with(LedgerDim::Steps, Some(10_000)),
    );
    let teams: Vec<_> = (0..2)
        .map(|i| {
            root.child(
                format!("swarm/t{i}"),
                Limits::UNLIMITED.with(LedgerDim::Tokens, Some(team_tokens)),
            )
            .unwrap()
        })
        .collect();
    let agents = (0..6)
        .map(|i| {
            teams[i % 2]
                .child(
                    format!("a{i}"),
                    Limits::UNLIMITED.with(LedgerDim::Tokens, Some(agent_tokens)),
                )
                .unwrap()
        })
        .collect();
    Tree {
        root,
        teams,
        agents,
    }
}

fn all_accounts(t: &Tree) -> Vec<Arc<Account>> {
    let mut v = vec![Arc::clone(&t.root)];
    v.extend(t.teams.iter().cloned());
    v.extend(t.agents.iter().cloned());
    v
}

fn check_bound(accounts: &[Arc<Account>]) {
    for a in accounts {
        let s = a.snapshot();
        for dim in LedgerDim::ALL {
            if let Some(limit) = s.limits.get(dim) {
                assert!(
                    s.spent.get(dim) + s.reserved.get(dim) <= limit,
                    "{}: {} spent + {} reserved > {limit} ({})",
                    s.name,
                    s.spent.get(dim),
                    s.reserved.get(dim),
                    dim.name()
                );
            }
        }
    }
}

/// Runs one thread's script; returns what it charged per agent (tokens, cost).
fn run_script(t: &Tree, script: &[Op], accounts: &[Arc<Account>]) -> Vec<(u64, u64)> {
    let mut open: Vec<(usize, Reservation)> = Vec::new();
    let mut charged = vec![(0u64, 0u64); t.agents.len()];
    for op in script {
        match op {
            Op::Reserve {
                agent,
                tokens,
                cost,
            } => {
                if let Ok((r, _)) = t.agents[*agent].reserve(&Amounts::new(1, *tokens, *cost, 0)) {
                    open.push((*agent, r));
                }
            }
            Op::Settle {
                pick,
                used_pct,
                over,
            } if !open.is_empty() => {
                let (agent, r) = open.swap_remove(pick % open.len());
                let held = r.amounts().clone();
                let used = Amounts::new(
                    1,
                    held.get(LedgerDim::Tokens) * u64::from(*used_pct) / 100 + over,
                    held.get(LedgerDim::CostMicroUsd) * u64::from(*used_pct) / 100,
                    0,
                );
                let s = r.settle(&used);
                charged[agent].0 += s.charged.get(LedgerDim::Tokens);
                charged[agent].1 += s.charged.get(LedgerDim::CostMicroUsd);
            }
            Op::Cancel { pick } if !open.is_empty() => {
                let (_, r) = open.swap_remove(pick % open.len());
                r.cancel();
            }
            _ => {}
        }
        check_bound(accounts);
    }
    for (_, r) in open {
        r.cancel();
    }
    charged
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, .. ProptestConfig::default() })]

    #[test]
    fn concurrent_interleavings_never_overspend_and_refunds_lose_nothing(
        scripts in proptest::collection::vec(proptest::collection::vec(op(), 1..120), 2..5),
        root_tokens in 200..3_000u64,
        team_tokens in 100..2_000u64,
        agent_tokens in 50..1_500u64,
        cost in 10..500u64,
    ) {
        let t = tree(root_tokens, team_tokens, agent_tokens, cost);
        let accounts = all_accounts(&t);
        let barrier = Barrier::new(scripts.len());
        let charged: Vec<Vec<(u64, u64)>> = std::thread::scope(|s| {
            let handles: Vec<_> = scripts
                .iter()
                .map(|script| {
                    let (t, accounts, barrier) = (&t, &accounts, &barrier);
                    s.spawn(move || {
                        barrier.wait();
                        run_script(t, script, accounts)
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        check_bound(&accounts);
        // Everything is settled or cancelled: nothing stays reserved, and every account's
        // spend is exactly what was charged below it.
        let mut per_agent = vec![(0u64, 0u64); t.agents.len()];
        for c in &charged {
            for (i, (tok, usd)) in c.iter().enumerate() {
                per_agent[i].0 += tok;
                per_agent[i].1 += usd;
            }
        }
        for (i, a) in t.agents.iter().enumerate() {
            let s = a.snapshot();
            prop_assert_eq!(s.reserved.get(LedgerDim::Tokens), 0);
            prop_assert_eq!(s.spent.get(LedgerDim::Tokens), per_agent[i].0);
            prop_assert_eq!(
                s.remaining(LedgerDim::Tokens).unwrap() + s.spent.get(LedgerDim::Tokens),
                agent_tokens
            );
        }
        for (ti, team) in t.teams.iter().enumerate() {
            let s = team.snapshot();
            let below: u64 = (0..t.agents.len())
                .filter(|i| i % 2 == ti)
                .map(|i| per_agent[i].0)
                .sum();
            prop_assert_eq!(s.spent.get(LedgerDim::Tokens), below);
            prop_assert_eq!(s.remaining(LedgerDim::Tokens).unwrap() + below, team_tokens);
        }
        let root = t.root.snapshot();
        let total_tokens: u64 = per_agent.iter().map(|c| c.0).sum();
        let total_cost: u64 = per_agent.iter().map(|c| c.1).sum();
        prop_assert_eq!(root.spent.get(LedgerDim::Tokens), total_tokens);
        prop_assert_eq!(root.spent.get(LedgerDim::CostMicroUsd), total_cost);
        prop_assert_eq!(root.remaining(LedgerDim::Tokens).unwrap() + total_tokens, root_tokens);
        prop_assert_eq!(root.remaining(LedgerDim::CostMicroUsd).unwrap() + total_cost, cost);
        prop_assert!(root.reserved.is_zero());
    }
}

#[test]
fn a_thousand_concurrent_reservations_on_room_for_ten_admit_exactly_ten() {
    for _round in 0..20 {
        let pool = Account::root(
            "swarm",
            Limits::UNLIMITED.with(LedgerDim::Tokens, Some(1_000)),
        );
        let agents: Vec<_> = (0..100)
            .map(|i| pool.child(format!("a{i}"), Limits::UNLIMITED).unwrap())
            .collect();
        let barrier = Barrier::new(4);
        let held: Vec<Vec<Reservation>> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..4)
                .map(|t| {
                    let (agents, barrier) = (&agents, &barrier);
                    s.spawn(move || {
                        barrier.wait();
                        (0..250)
                            .filter_map(|i| {
                                agents[(t * 250 + i) % 100]
                                    .reserve(&Amounts::new(1, 100, 0, 0))
                                    .ok()
                                    .map(|(r, _)| r)
                            })
                            .collect()
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let admitted: usize = held.iter().map(Vec::len).sum();
        assert_eq!(admitted, 10);
        assert_eq!(pool.snapshot().reserved.get(LedgerDim::Tokens), 1_000);
        drop(held);
        assert_eq!(pool.snapshot().reserved.get(LedgerDim::Tokens), 0);
    }
}

#[test]
fn limit_changes_racing_with_reservations_never_break_the_bound() {
    for round in 0..20u64 {
        let root = Account::root(
            "swarm",
            Limits::UNLIMITED.with(LedgerDim::Tokens, Some(10_000)),
        );
        let team = root
            .child(
                "swarm/t",
                Limits::UNLIMITED.with(LedgerDim::Tokens, Some(5_000)),
            )
            .unwrap();
        let agents: Vec<_> = (0..4)
            .map(|i| team.child(format!("a{i}"), Limits::UNLIMITED).unwrap())
            .collect();
        let accounts = vec![Arc::clone(&root), Arc::clone(&team)];
        let stop = std::sync::atomic::AtomicBool::new(false);
        std::thread::scope(|s| {
            for a in &agents {
                let (stop, accounts) = (&stop, &accounts);
                s.spawn(move || {
                    let mut held = Vec::new();
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        if let Ok((r, _)) = a.reserve(&Amounts::new(0, 97, 0, 0)) {
                            held.push(r);
                        }
                        if held.len() > 8 {
                            held.remove(0).cancel();
                        }
                        check_bound(accounts);
                    }
                });
            }
            // Meanwhile, lower and raise the limits, all-or-none, many times.
            let mut applied = 0;
            for i in 0..500u64 {
                let team_limit = 1_000 + ((i * 7 + round) % 40) * 100;
                let changes = vec![
                    (
                        Arc::clone(&team),
                        Limits::UNLIMITED.with(LedgerDim::Tokens, Some(team_limit)),
                    ),
                    (
                        Arc::clone(&root),
                        Limits::UNLIMITED.with(LedgerDim::Tokens, Some(team_limit + 500)),
                    ),
                ];
                if Account::set_limits_all(&changes).is_ok() {
                    applied += 1;
                    // Both changed together: the team's limit never exceeds what the root allows.
                    let (t, r) = (team.snapshot(), root.snapshot());
                    assert!(t.limits.get(LedgerDim::Tokens) <= r.limits.get(LedgerDim::Tokens));
                }
                check_bound(&accounts);
            }
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
            assert!(applied > 0, "some limit changes must fit");
        });
        check_bound(&accounts);
    }
}

#[test]
fn set_limits_all_refuses_the_same_account_twice() {
    let root = Account::root("swarm", Limits::UNLIMITED);
    let l = Limits::UNLIMITED.with(LedgerDim::Tokens, Some(10));
    let err = Account::set_limits_all(&[(Arc::clone(&root), l.clone()), (Arc::clone(&root), l)])
        .unwrap_err();
    assert!(err.contains("listed twice"), "{err}");
}
