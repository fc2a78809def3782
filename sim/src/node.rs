//! The one simulated node: the real [`Swarm`] on a [`ManualClock`], with its real journal
//! ([`Journal`]) on a [`MemStorage`] (the simulator's disk, with injected faults), restarted
//! after a crash by the real recovery code ([`Swarm::recover_on`]).
//!
//! Async code runs only here, at setup and at restarts, inside a current-thread tokio
//! runtime the simulator owns: building the swarm, spawning agents (each has an idle actor;
//! the simulator decides inline and never sends it a message), recovering, and waiting for
//! the journal writer ([`Swarm::durable`], once per simulated millisecond that answered
//! someone). Every decision, settlement, halt, sweep and approval answer is a synchronous
//! call on the simulator's thread, in event order.

use std::sync::Arc;

use warden_actors::policy::PolicySet;
use warden_actors::{AgentId, Clock, EventStream, ManualClock};
use warden_supervisor::journal::records::RecoveryReport;
use warden_supervisor::journal::{Entry, Journal, JournalConfig, MemStorage, Storage};
use warden_supervisor::{AgentHandle, AgentSpec, Layout, Swarm};

/// Where the simulated time starts: 2025-01-01T00:00:00Z, in Unix ms (calendar windows in
/// policies see a real date).
pub const EPOCH_MS: u64 = 1_735_689_600_000;

/// The node under simulation.
pub struct SimNode {
    /// The swarm.
    pub swarm: Swarm,
    /// Its clock (replaced at each restart).
    pub clock: Arc<ManualClock>,
    /// The disk, when journaled.
    pub storage: Option<MemStorage>,
    /// The journal, when journaled.
    pub journal: Option<Journal>,
    /// Every agent's handle, by the simulator's agent index.
    pub handles: Vec<AgentHandle>,
    /// The swarm's events but decisions (halts, resumes) for the simulator's own record.
    pub events: EventStream,
    /// Last journal entry acknowledged (answers may name entries up to it).
    pub acked_seq: u64,
    /// `(segment, bytes)`: the end of what was acknowledged on the disk.
    pub acked_mark: (u64, u64),
    /// Restarts so far.
    pub restarts: u32,
}

/// What setting up or restarting a node needs.
pub struct NodeSetup<'a> {
    /// The policy's text.
    pub policy_text: &'a str,
    /// Journal on a simulated disk.
    pub journal: bool,
    /// Events the swarm's bus holds for the simulator between two reads.
    pub event_capacity: usize,
}

/// The simulated disk's journal: every entry written on the simulator's thread as it is
/// submitted, so an injected disk fault hits the same entry in every run of a seed.
fn journal_config() -> JournalConfig {
    let mut config = JournalConfig::new("sim-disk");
    config.inline_writes = true;
    config
}

async fn build_swarm(setup: &NodeSetup<'_>, clock: Arc<ManualClock>) -> Result<Swarm, String> {
    let set = PolicySet::parse(setup.policy_text).map_err(|e| format!("policy: {e}"))?;
    Swarm::builder()
        .clock(clock as Arc<dyn Clock>)
        .layout(Layout::Current)
        .heartbeat_sweep_ms(0)
        .event_capacity(setup.event_capacity)
        .policy_set(set)
        .build()
        .await
        .map_err(|e| format!("building the swarm: {e}"))
}

impl SimNode {
    /// A fresh node at time `now_ms` with `specs` spawned (in order), their registrations
    /// durable.
    pub fn start(
        rt: &tokio::runtime::Runtime,
        setup: &NodeSetup<'_>,
        specs: Vec<AgentSpec>,
        now_ms: u64,
    ) -> Result<SimNode, String> {
        let clock = Arc::new(ManualClock::new(now_ms));
        let (storage, journal) = match setup.journal {
            true => {
                let storage = MemStorage::new();
                let (journal, _) =
                    Journal::open_in(Arc::new(storage.clone()), journal_config(), |_| {})
                        .map_err(|e| format!("journal: {e}"))?;
                (Some(storage), Some(journal))
            }
            false => (None, None),
        };
        rt.block_on(async {
            let swarm = build_swarm(setup, Arc::clone(&clock)).await?;
            if let Some(j) = &journal {
                swarm
                    .attach_journal(j.clone(), Some(setup.policy_text))
                    .map_err(|e| e.to_string())?;
            }
            let mut handles = Vec::with_capacity(specs.len());
            for spec in specs {
                handles.push(
                    swarm
                        .spawn_agent(spec)
                        .await
                        .map_err(|e| format!("spawning: {e}"))?,
                );
            }
            swarm.durable().await.map_err(|e| e.to_string())?;
            let events = swarm.events_without_decisions();
            let mut node = SimNode {
                swarm,
                clock,
                storage,
                journal,
                handles,
                events,
                acked_seq: 0,
                acked_mark: (0, 0),
                restarts: 0,
            };
            node.mark_acked();
            Ok(node)
        })
    }

    /// The node's time now.
    pub fn now_ms(&self) -> u64 {
        self.clock.now_ms()
    }

    /// Waits for the journal writer: everything submitted so far durable. On success, the
    /// acknowledged point moves there; an error means the journal has failed (fail closed:
    /// nothing since may be answered).
    pub fn flush(&mut self, rt: &tokio::runtime::Runtime) -> Result<(), String> {
        let Some(journal) = &self.journal else {
            return Ok(());
        };
        let upto = journal.last_submitted();
        if upto == self.acked_seq {
            return match journal.failure() {
                Some(why) => Err(why),
                None => Ok(()),
            };
        }
        rt.block_on(self.swarm.durable())
            .map_err(|e| e.to_string())?;
        self.acked_seq = upto;
        self.mark_acked();
        Ok(())
    }

    fn mark_acked(&mut self) {
        if let (Some(storage), Some(journal)) = (&self.storage, &self.journal) {
            self.acked_seq = journal.last_submitted();
            let segments = storage.segments().unwrap_or_default();
            if let Some(&last) = segments.last() {
                self.acked_mark = (last, storage.size_bytes(last).unwrap_or(0));
            }
        }
    }

    /// Bytes written past the acknowledged point (the part a crash may tear), once the
    /// writer has written everything submitted (waited for here, without acknowledging
    /// anything: the count must not depend on the writer thread's timing).
    pub fn unacked_bytes(&self, rt: &tokio::runtime::Runtime) -> u64 {
        let _ = rt.block_on(self.swarm.durable());
        let Some(storage) = &self.storage else {
            return 0;
        };
        let segments = storage.segments().unwrap_or_default();
        let (first, len) = self.acked_mark;
        segments
            .iter()
            .filter(|s| **s >= first)
            .map(|s| {
                let size = storage.size_bytes(*s).unwrap_or(0);
                if *s == first {
                    size.saturating_sub(len)
                } else {
                    size
                }
            })
            .sum()
    }

    /// Every entry on the disk now (flush first for everything submitted).
    pub fn entries(&self) -> Result<Vec<Entry>, String> {
        let Some(storage) = &self.storage else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        warden_supervisor::journal::read_storage(storage, |e| out.push(e.clone()))
            .map_err(|e| format!("reading the journal: {e}"))?;
        Ok(out)
    }

    /// A power cut keeping the acknowledged journal and `torn_bytes` of what followed, then
    /// a restart: journal reopened (torn tail cut), swarm rebuilt by recovery at `now_ms`,
    /// journal attached. Returns the new node, the entries it recovered from and the report.
    pub fn crash_and_restart(
        self,
        rt: &tokio::runtime::Runtime,
        setup: &NodeSetup<'_>,
        ids: &[AgentId],
        torn_bytes: u64,
        now_ms: u64,
    ) -> Result<(SimNode, Vec<Entry>, RecoveryReport), String> {
        let storage = self.storage.clone().ok_or("a crash needs the journal")?;
        let _ = rt.block_on(self.swarm.durable());
        let (first, len) = self.acked_mark;
        storage.crash_at(
            first,
            len,
            usize::try_from(torn_bytes).unwrap_or(usize::MAX),
        );
        let restarts = self.restarts + 1;
        let SimNode {
            swarm,
            handles,
            events,
            journal,
            ..
        } = self;
        drop((handles, events, journal));
        rt.block_on(swarm.shutdown());
        let mut entries = Vec::new();
        let (journal, _open) = Journal::open_in(Arc::new(storage.clone()), journal_config(), |e| {
            entries.push(e.clone())
        })
        .map_err(|e| format!("reopening the journal after a crash: {e}"))?;
        let clock = Arc::new(ManualClock::new(0));
        let (swarm, report) = rt.block_on(async {
            let swarm = build_swarm(setup, Arc::clone(&clock)).await?;
            let report = swarm
                .recover_on(&entries, &clock, now_ms)
                .await
                .map_err(|e| format!("recovery: {e}"))?;
            let text = report.policy.is_none().then_some(setup.policy_text);
            swarm
                .attach_journal(journal.clone(), text)
                .map_err(|e| e.to_string())?;
            swarm.durable().await.map_err(|e| e.to_string())?;
            Ok::<_, String>((swarm, report))
        })?;
        let handles = ids
            .iter()
            .map(|id| {
                swarm
                    .agent(id)
                    .ok_or_else(|| format!("agent {id} was not recovered"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let events = swarm.events_without_decisions();
        let mut node = SimNode {
            swarm,
            clock,
            storage: Some(storage),
            journal: Some(journal),
            handles,
            events,
            acked_seq: 0,
            acked_mark: (0, 0),
            restarts,
        };
        node.mark_acked();
        Ok((node, entries, report))
    }

    /// Stops the swarm and the journal writer.
    pub fn shutdown(self, rt: &tokio::runtime::Runtime) {
        let SimNode {
            swarm,
            handles,
            events,
            journal,
            ..
        } = self;
        drop((handles, events));
        rt.block_on(async {
            swarm.shutdown().await;
            if let Some(j) = journal {
                j.shutdown().await;
            }
        });
    }
}

/// Replays `entries` with the journal's own policy (`warden audit replay`) and returns the
/// report: its `differences` must be empty.
pub fn replay(rt: &tokio::runtime::Runtime, entries: &[Entry]) -> Result<RecoveryReport, String> {
    rt.block_on(warden_supervisor::audit::replay_entries(entries, None))
        .map_err(|e| format!("replay: {e}"))
}
