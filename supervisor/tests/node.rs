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
