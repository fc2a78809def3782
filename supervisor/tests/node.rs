//! The durable node without a network or a disk: `Node::open` on an in-memory journal, as the
//! simulator runs it, recovers what it acknowledged after a crash.

use std::sync::Arc;

use warden_actors::{ActionClass, AgentId, LedgerDim, Step};
use warden_supervisor::journal::storage::MemStorage;
use warden_supervisor::{AgentSpec, Node, NodeOptions};

const POLICY: &str = "
version: 1
defaults:
  budgets: {steps: 10, tokens: 1000}
pools:
  - {path: swarm, limits: {tokens: 5000}}
tools:
  web.search: {action: read}
";

fn options(store: &Arc<MemStorage>) -> NodeOptions {
    let mut opts = NodeOptions::new("mem", POLICY);
    opts.storage = Some(Arc::clone(store) as _);
    opts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_on_an_in_memory_journal_recovers_what_it_acknowledged_after_a_crash() {
    let store = Arc::new(MemStorage::new());
    let node = Node::open(options(&store)).await.unwrap();
    let agent = node
        .swarm()
        .spawn_agent(AgentSpec::new(AgentId::new("a1").unwrap()))
        .await
        .unwrap();
    let step = Step::builder("web.search", ActionClass::Read)
        .tokens(300)
        .build()
        .unwrap();
    assert!(agent.step(step).await.unwrap().is_allow());
    // Everything above was acknowledged, so it is synced; the crash keeps none of the rest.
    store.crash(0);
    drop(agent);
    drop(node);

    let node = Node::open(options(&store)).await.unwrap();
    assert_eq!(node.recovered.agents, 1);
    assert_eq!(node.recovered.open_steps, 1);
    let pool = node.swarm().pool("swarm").unwrap();
    assert_eq!(pool.reserved.get(LedgerDim::Tokens), 300);
    assert!(
        node.policy_from_journal,
        "the journal recorded the policy at the first start"
    );
    node.shutdown().await;
}

/// A pool shared between nodes: the escrow ceiling binds below the pool's limit with rule
/// `escrow.exhausted`, and the escrow states journaled come back after a crash, also from a
/// snapshot once retention would have dropped the notes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn escrow_ceilings_deny_with_their_rule_and_escrow_states_survive_a_crash() {
    use warden_actors::Dimension;
    use warden_supervisor::SwarmLedger;
    use warden_sync::{Escrow, LocalLedger};

    let store = Arc::new(MemStorage::new());
    let node = Node::open(options(&store)).await.unwrap();
    let swarm = node.swarm().clone();
    let ledger = SwarmLedger::new(swarm.clone());
    assert!(ledger.set_ceiling("swarm", "tokens", 400, true));
    assert!(!ledger.set_ceiling("nowhere", "tokens", 400, true));
    let agent = swarm
        .spawn_agent(AgentSpec::new(AgentId::new("a1").unwrap()))
        .await
        .unwrap();
    let step = |tokens| {
        Step::builder("web.search", ActionClass::Read)
            .tokens(tokens)
            .build()
            .unwrap()
    };
    assert!(agent.step(step(300)).await.unwrap().is_allow());
    assert_eq!(ledger.used("swarm", "tokens"), 300);
    let denied = agent.step(step(200)).await.unwrap();
    assert_eq!(
        denied.rule.as_deref(),
        Some("escrow.exhausted"),
        "{denied:?}"
    );
    assert!(
        !ledger.set_ceiling("swarm", "tokens", 200, true),
        "300 are in use"
    );
    assert!(swarm.set_escrow_ceiling("swarm", &Dimension::Tokens, 5_000, true));

    let mut state = Escrow::new(5_000, 3, 1000);
    state.transfer(0, 2, 100).unwrap();
    swarm.record_escrow("swarm", "tokens", &state).unwrap();
    swarm.durable().await.unwrap();
    store.crash(0);
    drop(agent);
    drop(node);

    let node = Node::open(options(&store)).await.unwrap();
    let states = node.swarm().escrow_states();
    assert_eq!(
        states,
        [("swarm".to_owned(), "tokens".to_owned(), state.clone())]
    );
    // From a snapshot: the state is repeated there.
    node.swarm().write_snapshot().unwrap();
    node.swarm().durable().await.unwrap();
    store.crash(0);
    drop(node);
    let node = Node::open(options(&store)).await.unwrap();
    assert_eq!(node.swarm().escrow_states()[0].2, state);
    node.shutdown().await;
}

/// Retention removes a segment only once every export has confirmed its entries: with an
/// export's mark behind, the snapshot is written but the segments before it stay; once the
/// mark passes them they go, with their seals.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_waits_for_the_exports_and_seals_every_closed_segment() {
    use warden_supervisor::journal::seal::{check_seals, SigningKey};
    use warden_supervisor::SealOptions;
    let dir = std::env::temp_dir().join(format!("warden-node-marks-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let (mark, marks) = tokio::sync::watch::channel(0u64);
    let key = SigningKey::generate();
    let mut opts = NodeOptions::new(&dir, POLICY);
    opts.segment_bytes = 4_096;
    opts.journal_bytes = 16_384;
    opts.export_marks = vec![marks];
    opts.seal = Some(SealOptions {
        key: key.clone(),
        interval_ms: 3_600_000,
    });
    let node = Node::open(opts).await.unwrap();
    let first_segment = || {
        std::fs::read_dir(dir.join("journal"))
            .unwrap()
            .filter_map(|e| {
                e.ok()?
                    .file_name()
                    .to_str()?
                    .strip_suffix(".seg")?
                    .parse()
                    .ok()
            })
            .min()
            .unwrap_or(0u64)
    };
    let mut n = 0;
    while node.journal().size_bytes() < 40_000 {
        let id = AgentId::new(format!("a{n}")).unwrap();
        node.swarm().spawn_agent(AgentSpec::new(id)).await.unwrap();
        n += 1;
    }
    // Retention runs every second: give it three, with the export's mark at 0.
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    assert_eq!(
        first_segment(),
        1,
        "nothing is removed before the export confirms it"
    );
    let sealed = check_seals(&dir, &[key.public_key()]).unwrap();
    assert!(
        sealed.sealed >= 5 && sealed.bad.is_empty() && sealed.unsealed.is_empty(),
        "{sealed:?}"
    );
    // The export catches up: the segments before the snapshot go.
    mark.send(node.journal().head().0).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while first_segment() == 1 {
        assert!(
            std::time::Instant::now() < deadline,
            "retention never removed anything"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let report = check_seals(&dir, &[key.public_key()]).unwrap();
    assert!(report.bad.is_empty(), "{report:?}");
    assert_eq!(node.audit_keys(), vec![key.public_key()]);
    node.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// A sealing node seals what it wrote when it stops cleanly: nothing is left unsealed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_stop_closes_and_seals_the_open_segment() {
    use warden_supervisor::journal::seal::{check_seals, SigningKey};
    use warden_supervisor::SealOptions;
    let dir = std::env::temp_dir().join(format!("warden-node-seal-stop-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let key = SigningKey::generate();
    let open = || {
        let mut opts = NodeOptions::new(&dir, POLICY);
        opts.segment_bytes = 4_096;
        opts.seal = Some(SealOptions {
            key: key.clone(),
            interval_ms: 3_600_000,
        });
        Node::open(opts)
    };
    // Registers agents `ids` on a fresh run, stops it cleanly; the journal's head then.
    let run = |ids: std::ops::Range<u32>| async {
        let node = open().await.unwrap();
        for n in ids {
            let id = AgentId::new(format!("a{n}")).unwrap();
            node.swarm().spawn_agent(AgentSpec::new(id)).await.unwrap();
        }
        let head = node.journal().head().0;
        node.shutdown().await;
        head
    };
    let head = run(0..40).await;
    let report = check_seals(&dir, &[key.public_key()]).unwrap();
    assert!(
        report.sealed >= 2 && report.unsealed.is_empty() && report.bad.is_empty(),
        "{report:?}"
    );
    assert_eq!(
        report.open,
        Some(head + 1),
        "the segment open at the stop was closed and sealed; the one left open is empty"
    );
    // Again after a restart: what the second run wrote is sealed at its stop too.
    let head = run(40..50).await;
    let report = check_seals(&dir, &[key.public_key()]).unwrap();
    assert!(
        report.unsealed.is_empty() && report.bad.is_empty(),
        "{report:?}"
    );
    assert_eq!(report.open, Some(head + 1), "{report:?}");
    let _ = std::fs::remove_dir_all(&dir);
}
