//! Live answers (LLM streams) end when their agent is halted, whoever halts it (an operator, a
//! cascade, a breaker, a pool's policy). One task follows the swarm's event bus and flips a
//! `watch` per agent that has a live answer; each stream selects on its agent's watch, so a
//! halt reaches it within one scheduling round, not after the next upstream frame.
//!
//! If the task falls behind the bus (it lagged and missed events), it asks every watched
//! agent's state instead: a missed halt is never a stream left running.

use std::sync::Arc;

use dashmap::DashMap;
use tokio::sync::watch;
use tokio_stream::StreamExt;
use warden_actors::{AgentId, AgentState, Event};
use warden_supervisor::Swarm;

/// The halt watches of agents with live answers: per agent, a count of halts seen. A stream
/// ends at the first change after it subscribed (a count, not a flag: a halt and a resume
/// between two looks of a stream still change it).
#[derive(Clone, Default)]
pub struct HaltWatch {
    agents: Arc<DashMap<AgentId, watch::Sender<u64>>>,
}

impl HaltWatch {
    /// Starts following `swarm`'s events (on the current runtime); stops when the bus closes.
    pub fn start(swarm: &Swarm) -> Self {
        let w = HaltWatch::default();
        let mut events = swarm.events_without_decisions();
        let (me, swarm) = (w.clone(), swarm.clone());
        tokio::spawn(async move {
            while let Some(e) = events.next().await {
                match e {
                    Ok(Event::Halt { agent, .. }) => me.flip(&agent),
                    Ok(_) => {}
                    Err(_) => me.recheck(&swarm),
                }
            }
        });
        w
    }

    /// A receiver whose `changed()` fires when `agent` is halted (at once if it is halted
    /// now).
    pub fn watch(&self, swarm: &Swarm, agent: &AgentId) -> watch::Receiver<u64> {
        let rx = self
            .agents
            .entry(agent.clone())
            .or_insert_with(|| watch::channel(0).0)
            .subscribe();
        // Registered first, then asked: a halt between the two is seen by one or the other.
        if halted(swarm, agent) {
            self.flip(agent);
        }
        rx
    }

    /// Drops the watches no stream holds any more.
    pub fn tidy(&self) {
        self.agents.retain(|_, tx| tx.receiver_count() > 0);
    }

    fn flip(&self, agent: &AgentId) {
        if let Some(tx) = self.agents.get(agent) {
            tx.send_modify(|n| *n += 1);
        }
    }

    fn recheck(&self, swarm: &Swarm) {
        let watched: Vec<AgentId> = self.agents.iter().map(|e| e.key().clone()).collect();
        for a in watched {
            if halted(swarm, &a) {
                self.flip(&a);
            }
        }
    }
}

fn halted(swarm: &Swarm, agent: &AgentId) -> bool {
    swarm
        .agent(agent)
        .is_none_or(|h| h.snapshot().state == AgentState::Halted)
}
