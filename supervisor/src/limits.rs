//! Every bound of the swarm and the journal, in one place.
//!
//! Names carry their unit last (`_ms`, `_bytes`, `_entries`, `_agents`...); `_max` marks a
//! hard bound, `_default` a starting value that a builder or [`JournalConfig`] can change.
//! Each doc comment says what happens at the bound: nothing here is silently dropped.
//! Relationships between bounds are checked at compile time at the end of this file.
//!
//! [`JournalConfig`]: crate::journal::JournalConfig

use crate::journal::format::{FRAME_BODY_FIXED_BYTES, FRAME_HEADER_BYTES, SEGMENT_HEADER_BYTES};

// ---------------------------------------------------------------------------------------
// The swarm
// ---------------------------------------------------------------------------------------

/// Agents one swarm accepts unless [`SwarmBuilder::max_agents`](crate::SwarmBuilder::max_agents)
/// says otherwise. Past it, a spawn fails with
/// [`SwarmError::TooManyAgents`](crate::SwarmError::TooManyAgents).
pub const AGENTS_MAX_DEFAULT: usize = 2_000_000;

/// Halt notices queued from the agent actors to the swarm's halt loop (which runs cascades and
/// breakers). At the bound the halting actor waits (backpressure): no halt is dropped.
pub const HALT_QUEUE_NOTICES_MAX: usize = 65_536;

/// How often one request (a step, an outcome) is delivered to an agent whose actor is being
/// restarted before the caller gets [`AgentError::Unavailable`](crate::AgentError::Unavailable).
pub const DELIVERY_ATTEMPTS_MAX: usize = 3;

/// How long one delivery attempt waits for a restarting actor to come back.
pub const RESTART_WAIT_TIMEOUT_MS: u64 = 2_000;

/// Events an [`EventStream`](warden_actors::EventStream) subscriber may fall behind before it
/// is told it lagged ([`SwarmBuilder::event_capacity`](crate::SwarmBuilder::event_capacity)).
pub const EVENTS_BUFFERED_DEFAULT: usize = warden_actors::event::DEFAULT_EVENT_CAPACITY;

/// How often the background sweep looks for silent agents and expired approvals
/// ([`SwarmBuilder::heartbeat_sweep_ms`](crate::SwarmBuilder::heartbeat_sweep_ms); 0 turns it
/// off).
pub const SWEEP_INTERVAL_MS_DEFAULT: u64 = 250;

/// How long [`AgentHandle::await_approval`](crate::AgentHandle::await_approval) waits past an
/// approval's deadline for the sweep to answer it, before giving up with
/// [`AgentError::NotAwaiting`](crate::AgentError::NotAwaiting).
pub const APPROVAL_ANSWER_MARGIN_MS: u64 = 60_000;

/// Wait-for edges one agent may declare (and dependencies one spec may list). Past it the
/// edge is refused ([`WaitError::TooMany`](crate::WaitError::TooMany)).
pub const WAITS_PER_AGENT_MAX: usize = 64;

/// Runtime shards one swarm starts at most, whatever the layout asks for.
pub const SHARDS_MAX: usize = 256;

/// Segments of a team path (`swarm/research/web` has 3): one account level of the ledger is
/// left for the agents below the deepest team. Deeper paths are refused.
pub const TEAM_PATH_SEGMENTS_MAX: usize = warden_actors::ledger::MAX_ACCOUNT_DEPTH - 1;

// ---------------------------------------------------------------------------------------
// The journal
// ---------------------------------------------------------------------------------------

/// Largest payload of one journal entry (1 MiB). Larger appends are refused
/// ([`JournalError::TooLarge`](crate::journal::JournalError::TooLarge)); the swarm shortens
/// oversized records first (step arguments dropped, long texts cut), so only a pathological
/// record reaches it, and the journal then fails closed.
pub const ENTRY_PAYLOAD_BYTES_MAX: usize = 1 << 20;

/// Longest text (a reason, a message) kept in a record that had to be shortened to fit
/// [`ENTRY_PAYLOAD_BYTES_MAX`]; the rest is cut and the cut is said in the text.
pub const RECORD_TEXT_BYTES_MAX: usize = 4_096;

/// Entries submitted and not yet taken by the writer: 4,194,304 (about 1 GiB at typical entry
/// sizes). Large because one act can submit one entry per agent (a team halt over a million
/// agents); past it the journal refuses entries for good and fails closed.
pub const QUEUE_ENTRIES_MAX_DEFAULT: usize = 1 << 22;

/// Most entries the writer takes, writes and syncs as one group.
pub const GROUP_ENTRIES_MAX_DEFAULT: usize = 4_096;

/// A segment file is closed and a new one started before it would grow past this.
pub const SEGMENT_BYTES_DEFAULT: u64 = 64 << 20;

/// The largest segment size a node may be configured with (`limits.segment_bytes`, 1 GiB),
/// and so the largest segment a verifier reads into memory: a larger archived object is
/// named as damage, never read.
pub const SEGMENT_BYTES_MAX: u64 = 1 << 30;

/// Journal kept before retention writes a snapshot and removes the segments before it, by
/// default (4 GiB; the config's `limits.journal_bytes`).
pub const JOURNAL_BYTES_DEFAULT: u64 = 4 << 30;
/// How often retention looks at the journal's size.
pub const RETENTION_CHECK_MS: u64 = 1_000;

/// How often the sealer looks for closed, unsealed segments (and whether the open one is due
/// to be closed). A seal follows a closed segment within about this long.
pub const SEAL_CHECK_MS: u64 = 500;

/// How often the node closes its open segment (when it holds entries) so that it is sealed
/// and archived, unless `export.seal_interval` says otherwise: 15 minutes.
pub const SEAL_INTERVAL_MS_DEFAULT: u64 = 15 * 60 * 1_000;

/// With `fsync: batch`, the longest an acknowledged entry waits for its sync.
pub const BATCH_SYNC_INTERVAL_MS_DEFAULT: u64 = 10;

/// Reading: after a bad frame at the end of the last segment, a later frame counts as "valid
/// data after it" (corruption, not a torn tail) only if its sequence number is within this
/// many entries of the expected one; this keeps the scan of a garbage tail quick.
pub const TORN_TAIL_SEQ_WINDOW_ENTRIES: u64 = 1 << 32;

// ---------------------------------------------------------------------------------------
// Relationships
// ---------------------------------------------------------------------------------------

// A frame stores its body length as a u32.
const _: () = assert!(FRAME_BODY_FIXED_BYTES + ENTRY_PAYLOAD_BYTES_MAX <= u32::MAX as usize);
// The largest entry fits in a fresh segment of the default size.
const _: () = assert!(
    (SEGMENT_HEADER_BYTES + FRAME_HEADER_BYTES + FRAME_BODY_FIXED_BYTES + ENTRY_PAYLOAD_BYTES_MAX)
        as u64
        <= SEGMENT_BYTES_DEFAULT
);
// A group is taken from the queue: it can never be larger.
const _: () = assert!(GROUP_ENTRIES_MAX_DEFAULT <= QUEUE_ENTRIES_MAX_DEFAULT);
// Shortening a record must leave it far below the payload bound.
const _: () = assert!(RECORD_TEXT_BYTES_MAX * 16 <= ENTRY_PAYLOAD_BYTES_MAX);
// The approval wait must outlast the sweep that answers an expired approval.
const _: () = assert!(APPROVAL_ANSWER_MARGIN_MS > 2 * SWEEP_INTERVAL_MS_DEFAULT);
// A restart must be waited for at least once per delivery, and delivered at least once.
const _: () = assert!(DELIVERY_ATTEMPTS_MAX >= 1 && RESTART_WAIT_TIMEOUT_MS > 0);
const _: () = assert!(HALT_QUEUE_NOTICES_MAX >= 1 && WAITS_PER_AGENT_MAX >= 1);
const _: () = assert!(TEAM_PATH_SEGMENTS_MAX >= 1 && SHARDS_MAX >= 1);
