//! Rebuilding a swarm from its journal (crash recovery, [`Swarm::recover`]) and re-running a
//! journal's decisions ([`Swarm::replay_journal`], `warden audit replay`): one walk over the
//! entries, which re-applies each record (recovery) or re-judges each decision (replay).
//!
//! The walk: parse every entry, pick where to start (the last complete snapshot for
//! recovery; the beginning, or else the first complete snapshot, for a replay), find the
//! registrations that spawns rolled back, then apply the entries in order, one function per
//! record kind.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;

use warden_actors::{
    AgentId, HaltKind, HaltRecord, KernelRecord, ManualClock, ParkedSink, Verdict,
};

use super::{AgentSpec, Swarm, SwarmError};
use crate::journal::records::{
    AgentRecord, Difference, Note, PolicyRecord, Record, RecoveryClock, RecoveryReport,
    Registration, SnapshotItem,
};
use crate::journal::Entry;

impl Swarm {
    /// Rebuilds the swarm's state from journal entries (recovery after a restart or a
    /// crash): agents, their budgets and spend, open steps, halts, pending approvals, pool
    /// marks and the policy in force. Effects are re-applied as journaled, not judged again.
    /// With `clock` (the swarm's own clock), time is pinned to each entry's time while it is
    /// applied. Background sweeps (heartbeats, approval timeouts) pause from here until
    /// [`attach_journal`](Self::attach_journal), so no change goes unjournaled; every agent's
    /// heartbeat clock starts now (downtime is not the agents' silence). Approval deadlines
    /// keep their journaled times: one that passed during downtime is denied by the first
    /// sweep after attaching. Fails naming the first entry it cannot apply.
    pub async fn recover(
        &self,
        entries: &[Entry],
        clock: Option<&RecoveryClock>,
    ) -> Result<RecoveryReport, SwarmError> {
        let pin = |ms: u64| {
            if let Some(c) = clock {
                c.pin(ms);
            }
        };
        let release = || {
            if let Some(c) = clock {
                c.release();
            }
        };
        self.recover_pinned(entries, &pin, &release).await
    }

    /// [`recover`](Self::recover) for a swarm whose clock is `clock` (a fresh manual clock,
    /// at or before the journal's first entry): time is set forward to each entry's time
    /// while it is applied, then to `resume_at_ms`, where the rebuilt swarm goes on. The
    /// simulator restarts its node this way, so the restarted swarm's time stays virtual.
    pub async fn recover_on(
        &self,
        entries: &[Entry],
        clock: &ManualClock,
        resume_at_ms: u64,
    ) -> Result<RecoveryReport, SwarmError> {
        let pin = |ms: u64| clock.set_ms(ms);
        let release = || clock.set_ms(resume_at_ms);
        self.recover_pinned(entries, &pin, &release).await
    }

    /// Recovery with time pinned by `pin` to each entry's time, and `release`d at the end.
    async fn recover_pinned(
        &self,
        entries: &[Entry],
        pin: &dyn Fn(u64),
        release: &dyn Fn(),
    ) -> Result<RecoveryReport, SwarmError> {
        if self.inner.journal.get().is_some() {
            return Err(SwarmError::Recovery(
                "recover before attaching the journal".into(),
            ));
        }
        self.inner.sweeps_paused.store(true, Ordering::SeqCst);
        let result = self.recover_entries(entries, pin, None).await;
        release();
        let now = self.inner.clock.now_ms();
        for e in self.inner.agents.iter() {
            e.value().core.with_kernel(|k| k.heartbeat(now));
        }
        // Sweeps stay paused until the journal is attached: a timeout applied before that
        // would never be journaled.
        result
    }

    /// Re-runs a journal's decisions (`warden audit replay`) in a swarm built for it (with
    /// `clock` as its clock and no journal attached): state is rebuilt entry by entry as in
    /// [`recover`](Self::recover), but each decision is judged again, by the policy the
    /// journal had in force at the time, or by `candidate` throughout when given (its
    /// policy changes are then ignored). Decisions that come out differently are listed in
    /// the report's `differences`; the state then follows the journal.
    pub async fn replay_journal(
        &self,
        entries: &[Entry],
        clock: &ManualClock,
        candidate: bool,
    ) -> Result<RecoveryReport, SwarmError> {
        self.inner.sweeps_paused.store(true, Ordering::SeqCst);
        let pin = |ms: u64| clock.set_ms(ms);
        self.recover_entries(entries, &pin, Some(candidate)).await
    }

    /// `replay`: `None` recovers; `Some(candidate)` re-judges decisions (ignoring journaled
    /// policies when `candidate`).
    async fn recover_entries(
        &self,
        entries: &[Entry],
        pin: &dyn Fn(u64),
        replay: Option<bool>,
    ) -> Result<RecoveryReport, SwarmError> {
        let mut parsed = Vec::with_capacity(entries.len());
        for entry in entries {
            parsed.push((entry, Record::parse(entry).map_err(SwarmError::Recovery)?));
        }
        let snapshot = start_snapshot(&parsed, replay)?;
        let parsed: Vec<_> = parsed
            .into_iter()
            .skip(snapshot.map_or(0, |(start, _)| start))
            .collect();
        let mut walk = Walk {
            swarm: self,
            replay,
            // Snapshot entries are applied only for the snapshot started from.
            snapshot_len: snapshot.map_or(0, |(start, end)| end - start + 1),
            rollbacks: Rollbacks::find(&parsed),
            skipping: HashSet::new(),
            unfinished: HashMap::new(),
            report: RecoveryReport::default(),
        };
        for (i, (entry, record)) in parsed.into_iter().enumerate() {
            pin(entry.ts_ms);
            walk.apply(i, entry, record).await?;
            walk.report.entries += 1;
        }
        // Halts and resumes were restored without the sweep's knowledge.
        self.inner.heartbeat_watch.recheck_all();
        Ok(walk.finish())
    }

    /// The spec that re-creates a journaled registration: its exact configuration, and its
    /// parent and dependencies if they exist (one whose registration was rolled back is gone).
    fn spec_from(&self, reg: Registration) -> AgentSpec {
        let mut spec = AgentSpec::new(reg.agent).pool(reg.team).meta(reg.meta);
        spec.exact = Some(reg.config);
        spec.parent = reg.parent.filter(|p| self.inner.agents.contains_key(p));
        spec.depends_on = reg
            .depends_on
            .into_iter()
            .filter(|d| self.inner.agents.contains_key(d))
            .collect();
        spec
    }
}

/// Where to start: `(first entry, last entry)` of the snapshot started from, or `None` for
/// the beginning. Recovery starts at the last complete snapshot (everything before it is in
/// it); a replay at the beginning if the journal still has it (snapshots are then skipped:
/// the state is built entry by entry), else at its first complete snapshot.
fn start_snapshot(
    parsed: &[(&Entry, Record)],
    replay: Option<bool>,
) -> Result<Option<(usize, usize)>, SwarmError> {
    let complete: Vec<(usize, usize)> = parsed
        .iter()
        .enumerate()
        .filter_map(|(end, (_, r))| match r {
            Record::Snapshot(item) => match item.as_ref() {
                SnapshotItem::End { begin } => parsed
                    .iter()
                    .position(|(e, _)| e.seq == *begin)
                    .map(|start| (start, end)),
                _ => None,
            },
            _ => None,
        })
        .collect();
    let has_beginning = parsed.first().is_none_or(|(e, _)| e.seq == 1);
    let snapshot = match replay {
        None => complete.last().copied(),
        Some(_) if has_beginning => None,
        Some(_) => complete.first().copied(),
    };
    if !has_beginning && snapshot.is_none() {
        return Err(SwarmError::Recovery(format!(
            "the journal starts at entry {} and holds no complete snapshot to start from",
            parsed.first().map_or(0, |(e, _)| e.seq)
        )));
    }
    Ok(snapshot)
}

/// Registrations rolled back during their spawn never existed: each `agent_removed` note
/// cancels the registration of that id just before it (a later registration of the same id
/// stands).
struct Rollbacks {
    /// Registrations (by entry) that a later `agent_removed` note cancels.
    removed: HashSet<u64>,
    /// `agent_removed` notes (by entry) whose registration is before the start (in the
    /// snapshot).
    from_snapshot: HashSet<u64>,
}

impl Rollbacks {
    fn find(parsed: &[(&Entry, Record)]) -> Rollbacks {
        let mut found = Rollbacks {
            removed: HashSet::new(),
            from_snapshot: HashSet::new(),
        };
        let mut last_registration: HashMap<&AgentId, u64> = HashMap::new();
        for (entry, r) in parsed {
            match r {
                Record::Registered(reg) => {
                    last_registration.insert(&reg.agent, entry.seq);
                }
                Record::Note(Note::AgentRemoved { agent }) => match last_registration.get(agent) {
                    Some(seq) => {
                        found.removed.insert(*seq);
                    }
                    None => {
                        found.from_snapshot.insert(entry.seq);
                    }
                },
                _ => {}
            }
        }
        found
    }
}

/// The walk over the entries: what it has rebuilt so far and what it still owes.
struct Walk<'a> {
    swarm: &'a Swarm,
    replay: Option<bool>,
    snapshot_len: usize,
    rollbacks: Rollbacks,
    /// Agents whose current registration does not count: their records are skipped.
    skipping: HashSet<AgentId>,
    /// Halts the supervisor spreads (all but cascades themselves and the root's give-up),
    /// until their `cascade_done` note.
    unfinished: HashMap<AgentId, HaltRecord>,
    report: RecoveryReport,
}

/// A recovery error naming the entry.
fn at(entry: &Entry, what: impl std::fmt::Display) -> SwarmError {
    SwarmError::Recovery(format!(
        "entry {} ({}): {what}",
        entry.seq,
        entry.kind.name()
    ))
}

impl Walk<'_> {
    /// Applies the `i`-th entry from the start.
    async fn apply(&mut self, i: usize, entry: &Entry, record: Record) -> Result<(), SwarmError> {
        match record {
            Record::Registered(reg) => self.registered(entry, reg).await,
            Record::Agent(rec) => self.agent_record(entry, rec),
            Record::Policy(p) => self.policy(entry, p),
            Record::Note(Note::TeamHalted { team, halted, .. }) => {
                let mut tree = self.swarm.inner.tree.write();
                let idx = tree.team_index(&team).map_err(|e| at(entry, e))?;
                tree.set_subtree_halted(idx, halted);
                Ok(())
            }
            Record::Note(Note::AgentRemoved { agent }) => {
                // A registration before the start point (in the snapshot) rolled back
                // after it: take the restored agent out again.
                if self.rollbacks.from_snapshot.contains(&entry.seq) {
                    self.swarm.inner.forget(&agent);
                    self.skipping.insert(agent);
                }
                Ok(())
            }
            Record::Note(Note::CascadeDone { agent, at_ms }) => {
                let finished = self.unfinished.get(&agent);
                if at_ms.is_none_or(|t| finished.is_some_and(|h| h.at_ms == t)) {
                    self.unfinished.remove(&agent);
                }
                Ok(())
            }
            Record::Note(Note::ClusterMembers { members }) => {
                *self.swarm.inner.cluster_members.lock() = Some(members);
                Ok(())
            }
            Record::Note(Note::Escrow { pool, dim, state }) => {
                self.swarm.restore_escrow(pool, dim, state);
                Ok(())
            }
            Record::Note(Note::NodeStarted {}) => {
                if self.replay.is_some() {
                    let policy = self.swarm.inner.policy.as_ref();
                    if let Some(set) = policy.and_then(|p| p.policy_set()) {
                        set.reset_rate_limits();
                    }
                }
                Ok(())
            }
            Record::Snapshot(_) if i >= self.snapshot_len => Ok(()),
            Record::Snapshot(item) => self.snapshot_item(entry, *item).await,
        }
    }

    /// `agent_registered`: spawns the agent again, unless a rollback cancels it.
    async fn registered(&mut self, entry: &Entry, reg: Registration) -> Result<(), SwarmError> {
        if self.rollbacks.removed.contains(&entry.seq) {
            self.skipping.insert(reg.agent.clone());
            return Ok(());
        }
        self.skipping.remove(&reg.agent);
        let (agent, meta) = (reg.agent.clone(), reg.meta.clone());
        match self.swarm.spawn_agent(self.swarm.spec_from(reg)).await {
            Ok(_) => self.report.meta.push((agent, meta)),
            // Registered while its team was being halted: the live node rolled it back (its
            // note may not have reached the disk before a crash).
            Err(SwarmError::PoolHalted(_)) => {
                self.skipping.insert(agent);
            }
            Err(e @ SwarmError::UnknownPool { .. }) => {
                return Err(at(
                    entry,
                    format!("re-registering agent {agent}: {e}; the journal has agents in a pool the policy given at start no longer declares: start with a policy that keeps it (the journaled one is used without --policy)"),
                ))
            }
            Err(e) => return Err(at(entry, format!("re-registering agent {agent}: {e}"))),
        }
        Ok(())
    }

    /// `decision`, `settlement`, `halt`, `resume`, `approval`: re-applied to the agent's
    /// kernel (recovery), or re-judged (replay).
    fn agent_record(&mut self, entry: &Entry, rec: AgentRecord) -> Result<(), SwarmError> {
        let AgentRecord { agent, record } = rec;
        if self.skipping.contains(&agent) {
            return Ok(());
        }
        let e = self
            .swarm
            .inner
            .entry(&agent)
            .map_err(|_| at(entry, format!("agent {agent} was never registered")))?;
        let parks = matches!(
            record,
            KernelRecord::Decision {
                decision: Verdict::RequireApproval,
                ..
            }
        );
        if matches!(record, KernelRecord::Decision { .. }) {
            self.report.decisions += 1;
        }
        if self.replay.is_some() {
            // A record the re-judged state cannot take (an approval answered for a step a
            // different verdict never parked) is counted, not fatal.
            let Ok(differs) = e.core.with_kernel_quiet(|k| k.replay_decision(&record)) else {
                self.report.unapplied += 1;
                return Ok(());
            };
            if let Some(difference) = difference(entry, &agent, &record, differs) {
                self.report.differences.push(difference);
            }
        } else {
            // An approval's resolution names its entry, as it did when it was answered.
            let seq = matches!(record, KernelRecord::Approval { .. }).then_some(entry.seq);
            e.core
                .with_kernel_quiet_at(seq, |k| k.restore(&record))
                .map_err(|why| at(entry, format!("agent {agent}: {why}")))?;
        }
        if parks {
            self.swarm.inner.approval_agents.parked(&agent);
        }
        if let KernelRecord::Halt { record: h } = &record {
            if h.kind != HaltKind::Cascade
                && h.rule.as_deref() != Some(warden_actors::rules::RESTART_INTENSITY)
            {
                self.unfinished.insert(agent.clone(), h.clone());
            }
        }
        Ok(())
    }

    /// `policy_change`: installed as recovery does (a candidate replay keeps the candidate
    /// throughout).
    fn policy(&mut self, entry: &Entry, p: PolicyRecord) -> Result<(), SwarmError> {
        if self.replay != Some(true) {
            self.swarm.restore_policy(&p).map_err(|e| at(entry, e))?;
        }
        self.report.policy = Some(p);
        Ok(())
    }

    /// One entry of the snapshot started from.
    async fn snapshot_item(&mut self, entry: &Entry, item: SnapshotItem) -> Result<(), SwarmError> {
        match item {
            SnapshotItem::Begin { .. } | SnapshotItem::End { .. } => Ok(()),
            SnapshotItem::Policy(p) => self.policy(entry, p),
            SnapshotItem::Cascades { pending } => {
                self.unfinished.extend(pending);
                Ok(())
            }
            SnapshotItem::ClusterMembers { members } => {
                *self.swarm.inner.cluster_members.lock() = Some(members);
                Ok(())
            }
            SnapshotItem::Escrow { pool, dim, state } => {
                self.swarm.restore_escrow(pool, dim, state);
                Ok(())
            }
            SnapshotItem::Team {
                team,
                halted,
                spent,
                overrun,
            } => {
                let mut tree = self.swarm.inner.tree.write();
                // Pools of an older policy that no longer exist are skipped.
                if let Ok(idx) = tree.team_index(&team) {
                    tree.teams[idx].halted = halted;
                    tree.teams[idx].account.restore_totals(&spent, &overrun);
                }
                Ok(())
            }
            SnapshotItem::Agent {
                registration,
                state,
            } => self.snapshot_agent(entry, registration, state).await,
        }
    }

    /// A snapshot's agent: spawned (into its pool even if the pool is halted: it is restored,
    /// not spawned anew), then its state restored.
    async fn snapshot_agent(
        &mut self,
        entry: &Entry,
        registration: Registration,
        state: KernelRecord,
    ) -> Result<(), SwarmError> {
        let inner = &self.swarm.inner;
        let agent = registration.agent.clone();
        let meta = registration.meta.clone();
        let spec = self.swarm.spec_from(registration);
        let halted_team = {
            let mut tree = inner.tree.write();
            let idx = tree.team_index(spec.team.as_deref().unwrap_or(&inner.root));
            idx.ok().map(|i| {
                let was = tree.teams[i].halted;
                tree.teams[i].halted = false;
                (i, was)
            })
        };
        let spawned = self.swarm.spawn_agent(spec).await;
        if let Some((i, was)) = halted_team {
            inner.tree.write().teams[i].halted = was;
        }
        let e = spawned.map_err(|e| at(entry, format!("restoring agent {agent}: {e}")))?;
        e.entry
            .core
            .with_kernel_quiet(|k| k.restore(&state))
            .map_err(|why| at(entry, format!("agent {agent}: {why}")))?;
        if e.snapshot().pending_approvals > 0 {
            inner.approval_agents.parked(&agent);
        }
        self.report.meta.push((agent, meta));
        Ok(())
    }

    /// The report, once every entry is applied; recovery also keeps the halts whose
    /// spreading a crash cut off, to finish when the journal attaches.
    fn finish(mut self) -> RecoveryReport {
        let inner = &self.swarm.inner;
        if self.replay.is_none() {
            let mut cut: Vec<(AgentId, HaltRecord)> = self.unfinished.into_iter().collect();
            cut.sort_by(|a, b| a.0.cmp(&b.0));
            self.report.unfinished_cascades = cut.len();
            *inner.unfinished_cascades.lock() = cut;
        }
        self.report.agents = inner.agents.len();
        // Sums: the order the agents are visited in does not matter.
        for e in inner.agents.iter() {
            let snap = e.value().core.with_kernel(|k| k.snapshot());
            self.report.halted += usize::from(snap.halt.is_some());
            self.report.pending_approvals += snap.pending_approvals;
            self.report.open_steps += snap.open_steps;
        }
        self.report
    }
}

/// A replayed decision that came out differently from the journal's, as a report line.
fn difference(
    entry: &Entry,
    agent: &AgentId,
    record: &KernelRecord,
    differs: Option<(Verdict, Option<std::sync::Arc<str>>)>,
) -> Option<Difference> {
    let (replayed, replayed_rule) = differs?;
    let KernelRecord::Decision {
        step,
        step_id,
        decision,
        rule,
        ..
    } = record
    else {
        return None;
    };
    Some(Difference {
        seq: entry.seq,
        ts_ms: entry.ts_ms,
        agent: agent.clone(),
        step_id: *step_id,
        tool: step.tool().to_string(),
        journaled: *decision,
        journaled_rule: rule.clone(),
        replayed,
        replayed_rule: replayed_rule.map(|r| r.to_string()),
    })
}
