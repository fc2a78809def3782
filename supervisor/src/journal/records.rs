//! What the journal's payloads hold: the typed records the swarm journals and recovery reads,
//! the recorder that journals every agent's state changes in order, and what recovery
//! reports. (This was `wal.rs`: the journal as the swarm's write-ahead log.)
//!
//! ## Payloads (JSON, [format version](super::format) 1)
//! | entry kind | payload |
//! |---|---|
//! | `agent_registered` | [`Registration`]: id, team, resolved configuration, opaque `meta` |
//! | `decision`, `settlement`, `halt`, `resume`, `approval` | `{"agent": id, ...}` + a [`KernelRecord`] |
//! | `policy_change` | [`PolicyRecord`]: version, BLAKE3 of the text, the YAML text |
//! | `note` | [`Note`]: team halted marks, agents removed again during spawn, node starts, finished cascades |
//! | `snapshot` | [`SnapshotItem`]: one piece of a state snapshot |
//!
//! A record that cannot be encoded fails the journal ([`JournalError::Encode`](super::JournalError::Encode)); one too
//! large for an entry is shortened first (step arguments dropped, long texts cut), never
//! replaced by an empty entry.
//!
//! ## Ordering
//! An agent's records are submitted under its kernel lock ([`warden_actors::Recorder`]), so
//! they are journaled in the order the kernel made them. Across agents the journal order is
//! the order of submission; recovery never depends on it, because it re-applies effects (a
//! decision reserves what it reserved) instead of judging again.
//!
//! ## Durability
//! [`AgentHandle::step`](crate::AgentHandle::step) waits until its decision's entry is
//! acknowledged (durable with `fsync: always`) before returning it; outcomes, halts, resumes,
//! approvals, registrations and policy changes wait for everything submitted before them.

use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use warden_actors::{AgentId, Clock, KernelConfig, KernelRecord, Recorded, Recorder};

use super::{Entry, EntryKind, Journal};
use crate::limits::{ENTRY_PAYLOAD_BYTES_MAX, RECORD_TEXT_BYTES_MAX};

/// An agent as registered.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Registration {
    /// The agent.
    pub agent: AgentId,
    /// Its team path.
    pub team: String,
    /// Its configuration, resolved against the policy defaults of the time.
    pub config: KernelConfig,
    /// The agent that spawned it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<AgentId>,
    /// Agents it depends on.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub depends_on: Vec<AgentId>,
    /// Whatever the embedder keeps with the agent (the node: its token's hash and labels).
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub meta: Value,
    /// When.
    pub at_ms: u64,
}

/// One agent's state change.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AgentRecord {
    /// The agent.
    pub agent: AgentId,
    /// What changed.
    #[serde(flatten)]
    pub record: KernelRecord,
}

/// A policy that became active.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PolicyRecord {
    /// The version the swarm gave it (1 for the first).
    pub version: u64,
    /// BLAKE3 of the text, hex.
    pub hash: String,
    /// The YAML text.
    pub text: String,
    /// Who installed it.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub by: String,
}

impl PolicyRecord {
    /// The hex BLAKE3 hash of a policy text.
    pub fn hash_of(text: &str) -> String {
        warden_actors::ids::hex(blake3::hash(text.as_bytes()).as_bytes())
    }
}

/// Swarm-level facts that are not one agent's change.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Note {
    /// A team (and its subtree) was marked halted, or reopened.
    TeamHalted {
        /// The team path.
        team: String,
        /// Halted (true) or reopened (false).
        halted: bool,
        /// Why.
        #[serde(default, skip_serializing_if = "String::is_empty")]
        reason: String,
    },
    /// A registration was rolled back (its team was halted while the agent started).
    AgentRemoved {
        /// The agent.
        agent: AgentId,
    },
    /// A node attached this journal (started): what it does not rebuild (rate-limit
    /// buckets) starts afresh here, and `audit replay` does the same.
    NodeStarted {},
    /// The supervisor finished what `agent`'s halt sets off (cascades, breakers). A halt
    /// without one was cut by a crash: recovery finishes it.
    CascadeDone {
        /// The halted agent.
        agent: AgentId,
        /// The finished halt's time (which halt, if the agent was halted again since).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        at_ms: Option<u64>,
    },
    /// This node's cluster: every member's name, sorted (journaled when the set of members a
    /// shared pool's rights were split among is first used; a node refuses to start under
    /// other members while its journal holds shared pools).
    ClusterMembers {
        /// The names.
        members: Vec<String>,
    },
    /// A pool shared between nodes: this node's escrow state of one dimension (rights
    /// received, given, granted, reclaimed), written before the state leaves the node, so a
    /// restarted node recovers its rights exactly.
    Escrow {
        /// The pool's path.
        pool: String,
        /// The dimension (`steps`, `tokens`, `cost_usd`, `risk` or a custom one).
        dim: String,
        /// The state.
        state: warden_sync::Escrow,
    },
}

/// One entry of a state snapshot. A snapshot is written in one go while every agent's kernel
/// and the team tree are locked, so it is the exact state at one point of the journal:
/// `begin`, the policy, every team and pool, every agent (registration and state), `end`.
/// Recovery starts at the last complete snapshot; retention removes the segments before it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
// Nearly every item of a snapshot is an `Agent`: boxing it would add an allocation to each.
#[allow(clippy::large_enum_variant)]
pub enum SnapshotItem {
    /// The first entry (it starts a new segment).
    Begin {
        /// Agents in it.
        agents: u64,
    },
    /// The policy in force.
    Policy(PolicyRecord),
    /// A team: its halted mark and its pool account's own totals.
    Team {
        /// The team path.
        team: String,
        /// Marked halted.
        halted: bool,
        /// Spent (its own account, which includes everything below it).
        spent: warden_actors::Amounts,
        /// Overrun.
        #[serde(default, skip_serializing_if = "warden_actors::Amounts::is_zero")]
        overrun: warden_actors::Amounts,
    },
    /// An agent: its registration and its state.
    Agent {
        /// As registered.
        registration: Registration,
        /// Its state ([`KernelRecord::State`]).
        state: KernelRecord,
    },
    /// The cluster's members ([`Note::ClusterMembers`]).
    ClusterMembers {
        /// The names.
        members: Vec<String>,
    },
    /// The last escrow state of a replicated pool dimension ([`Note::Escrow`]).
    Escrow {
        /// The pool's path.
        pool: String,
        /// The dimension.
        dim: String,
        /// The state.
        state: warden_sync::Escrow,
    },
    /// Halts whose spreading was not yet journaled as done at the snapshot.
    Cascades {
        /// Agent and halt.
        pending: Vec<(AgentId, warden_actors::HaltRecord)>,
    },
    /// The last entry: the snapshot is complete.
    End {
        /// The sequence number of its `begin`.
        begin: u64,
    },
}

/// A journal entry, read.
#[derive(Clone, Debug, PartialEq)]
pub enum Record {
    /// `agent_registered`.
    Registered(Registration),
    /// `decision`, `settlement`, `halt`, `resume`, `approval`.
    Agent(AgentRecord),
    /// `policy_change`.
    Policy(PolicyRecord),
    /// `note`.
    Note(Note),
    /// `snapshot`.
    Snapshot(Box<SnapshotItem>),
}

impl Record {
    /// Reads an entry's payload, by the rules of its [format version](super::format).
    pub fn parse(entry: &Entry) -> Result<Record, String> {
        match entry.format {
            1 => Self::parse_v1(entry),
            v => Err(format!(
                "entry {} ({}) has format version {v}, which this warden cannot read",
                entry.seq,
                entry.kind.name()
            )),
        }
    }

    /// Version 1: JSON payloads as described in the module docs.
    fn parse_v1(entry: &Entry) -> Result<Record, String> {
        let bad = |e: serde_json::Error| {
            format!(
                "entry {} ({}): payload does not parse: {e}",
                entry.seq,
                entry.kind.name()
            )
        };
        Ok(match entry.kind {
            EntryKind::AgentRegistered => {
                Record::Registered(serde_json::from_slice(&entry.payload).map_err(bad)?)
            }
            EntryKind::Decision
            | EntryKind::Settlement
            | EntryKind::Halt
            | EntryKind::Resume
            | EntryKind::Approval => {
                Record::Agent(serde_json::from_slice(&entry.payload).map_err(bad)?)
            }
            EntryKind::PolicyChange => {
                Record::Policy(serde_json::from_slice(&entry.payload).map_err(bad)?)
            }
            EntryKind::Note => Record::Note(serde_json::from_slice(&entry.payload).map_err(bad)?),
            EntryKind::Snapshot => Record::Snapshot(Box::new(
                serde_json::from_slice(&entry.payload).map_err(bad)?,
            )),
        })
    }
}

fn kind_of(record: &KernelRecord) -> EntryKind {
    match record {
        KernelRecord::Decision { .. } => EntryKind::Decision,
        KernelRecord::Settlement { .. } => EntryKind::Settlement,
        KernelRecord::Halt { .. } => EntryKind::Halt,
        KernelRecord::Resume { .. } => EntryKind::Resume,
        KernelRecord::Approval { .. } => EntryKind::Approval,
        KernelRecord::State(_) => EntryKind::Snapshot,
    }
}

/// Journals agents' records (see [`warden_actors::record`]).
#[derive(Debug)]
pub(crate) struct JournalRecorder {
    pub(crate) journal: Journal,
    /// The swarm's halts awaiting their spreading (see `Note::CascadeDone`).
    pub(crate) pending_cascades: std::sync::Arc<
        parking_lot::Mutex<std::collections::HashMap<AgentId, warden_actors::HaltRecord>>,
    >,
}

impl JournalRecorder {
    fn encode(agent: &AgentId, record: KernelRecord) -> Result<Vec<u8>, serde_json::Error> {
        let entry = AgentRecord {
            agent: agent.clone(),
            record,
        };
        // Too large: keep everything recovery needs (ids, verdicts, amounts) and shorten what
        // it does not: the step's arguments go, long texts (reasons) are cut.
        encode_fitting(&entry, |value, bytes| {
            if let Some(step) = value.get_mut("step") {
                step["args"] = serde_json::json!({ "_omitted_bytes": bytes });
            }
            shorten_texts(value);
        })
    }
}

/// Encodes `value` as JSON. If that is larger than [`ENTRY_PAYLOAD_BYTES_MAX`], `shorten`
/// first cuts its JSON form (given the full size) of what recovery does not need. Errors are
/// the encoder's: the caller fails the journal ([`Journal::encoded`]), it never writes an
/// empty entry instead.
pub(crate) fn encode_fitting<T: Serialize + ?Sized>(
    value: &T,
    shorten: impl FnOnce(&mut Value, usize),
) -> Result<Vec<u8>, serde_json::Error> {
    let bytes = serde_json::to_vec(value)?;
    if bytes.len() <= ENTRY_PAYLOAD_BYTES_MAX {
        return Ok(bytes);
    }
    let mut v = serde_json::to_value(value)?;
    shorten(&mut v, bytes.len());
    serde_json::to_vec(&v)
}

fn shorten_texts(v: &mut Value) {
    match v {
        Value::String(s) if s.len() > RECORD_TEXT_BYTES_MAX => {
            let mut cut = RECORD_TEXT_BYTES_MAX;
            while !s.is_char_boundary(cut) {
                cut -= 1;
            }
            let dropped = s.len() - cut;
            s.truncate(cut);
            s.push_str(&format!("… [{dropped} bytes cut]"));
        }
        Value::Array(items) => items.iter_mut().for_each(shorten_texts),
        Value::Object(map) => map.values_mut().for_each(shorten_texts),
        _ => {}
    }
}

impl Recorder for JournalRecorder {
    fn record(&self, agent: &AgentId, records: Vec<KernelRecord>) -> Option<Recorded> {
        let mut recorded: Option<Recorded> = None;
        for record in records {
            if let KernelRecord::Halt { record: h } = &record {
                // Spread by the supervisor later (all but cascades themselves and the root's
                // give-up): pending until its `cascade_done`.
                if h.kind != warden_actors::HaltKind::Cascade
                    && h.rule.as_deref() != Some(warden_actors::rules::RESTART_INTENSITY)
                {
                    self.pending_cascades
                        .lock()
                        .insert(agent.clone(), h.clone());
                }
            }
            let kind = kind_of(&record);
            let at = record.at_ms();
            let submitted = self
                .journal
                .encoded(Self::encode(agent, record))
                .and_then(|payload| self.journal.submit(kind, at, payload));
            match submitted {
                Ok(seq) => {
                    recorded
                        .get_or_insert(Recorded {
                            first: seq,
                            last: seq,
                        })
                        .last = seq;
                }
                // A change that cannot be journaled must not be acknowledged, nor anything
                // after it: the journal fails, and every wait for durability with it.
                Err(e) => self.journal.fail(format!(
                    "agent {agent}: a {} entry was refused: {e}",
                    kind.name()
                )),
            }
        }
        recorded
    }
}

/// A clock that recovery can pin to the journaled times, so agents rebuilt from the journal
/// get the start times, approval deadlines and halt times they had; otherwise the system
/// clock.
#[derive(Debug)]
pub struct RecoveryClock {
    live: warden_actors::SystemClock,
    /// 0 when live.
    pinned: AtomicU64,
}

impl RecoveryClock {
    /// A live clock.
    pub fn new() -> Self {
        Self {
            live: warden_actors::SystemClock::new(),
            pinned: AtomicU64::new(0),
        }
    }

    /// Pins the time (recovery).
    pub fn pin(&self, ms: u64) {
        self.pinned.store(ms.max(1), Ordering::SeqCst);
    }

    /// Back to the system clock.
    pub fn release(&self) {
        self.pinned.store(0, Ordering::SeqCst);
    }
}

impl Clock for RecoveryClock {
    fn now_ms(&self) -> u64 {
        match self.pinned.load(Ordering::SeqCst) {
            0 => self.live.now_ms(),
            t => t,
        }
    }
}

/// What recovery rebuilt.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RecoveryReport {
    /// Entries applied.
    pub entries: u64,
    /// Agents registered (and not removed again).
    pub agents: usize,
    /// Decisions re-applied.
    pub decisions: u64,
    /// Agents halted after recovery.
    pub halted: usize,
    /// Steps parked for approval after recovery.
    pub pending_approvals: usize,
    /// Open (allowed, unsettled) steps after recovery.
    pub open_steps: usize,
    /// The last policy journaled, if any.
    pub policy: Option<PolicyRecord>,
    /// Each agent's `meta`, as registered.
    pub meta: Vec<(AgentId, Value)>,
    /// Replay only: decisions that came out differently.
    pub differences: Vec<Difference>,
    /// Halts whose cascades a crash cut off; finished when the journal is attached.
    pub unfinished_cascades: usize,
    /// Replay only: records that could not be applied to the re-judged state (an approval
    /// answer for a step that was not parked this time, say).
    pub unapplied: u64,
}

/// A decision that a replay judged differently from the journal.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Difference {
    /// The decision's journal entry.
    pub seq: u64,
    /// When it was decided.
    pub ts_ms: u64,
    /// The agent.
    pub agent: AgentId,
    /// The step.
    pub step_id: warden_actors::StepId,
    /// Its tool.
    pub tool: String,
    /// What the journal says.
    pub journaled: warden_actors::Verdict,
    /// The rule then.
    pub journaled_rule: Option<String>,
    /// What the replay decided.
    pub replayed: warden_actors::Verdict,
    /// The rule now.
    pub replayed_rule: Option<String>,
}

impl Default for RecoveryClock {
    fn default() -> Self {
        Self::new()
    }
}
