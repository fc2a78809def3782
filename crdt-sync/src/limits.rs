//! Every bound of node-to-node sync, in one place.
//!
//! Names carry their unit last (`_bytes`, `_ms`, `_messages`, `_peers`...); `_max` marks a
//! hard bound, `_default` a starting value that [`TransportLimits`] can change. Each doc
//! comment says what happens at the bound. Relationships between bounds are checked at
//! compile time at the end of this file.
//!
//! [`TransportLimits`]: crate::transport::TransportLimits

// ---------------------------------------------------------------------------------------
// The wire format
// ---------------------------------------------------------------------------------------

/// Largest frame (magic, version and body together) the codec writes or reads: 1 MiB.
/// [`encode`](crate::codec::encode) refuses a larger message and
/// [`decode`](crate::codec::decode) a larger frame, both with
/// [`CodecError::TooLarge`](crate::codec::CodecError::TooLarge); the transport stops reading
/// a stream at this size and drops the message (counted), so the core must split its deltas.
pub const MAX_MESSAGE_BYTES: usize = 1 << 20;

/// Longest node name: one DNS label (certificate names, `warden certs issue NODE`).
pub const NODE_NAME_BYTES_MAX: usize = 63;

/// Largest Hello frame read (a node name and an instance number need far less). A longer
/// one closes the connection with `BAD_HELLO`.
pub const HELLO_BYTES_MAX: usize = 1_024;

// ---------------------------------------------------------------------------------------
// Peers and connections
// ---------------------------------------------------------------------------------------

/// Distinct peers (by node name) one node keeps connections with. A connection from one more
/// is closed after its handshake with the application code `TOO_MANY_PEERS`, and counted.
pub const PEERS_MAX_DEFAULT: usize = 64;

/// Connections being set up or established at once, duplicates included (two nodes may dial
/// each other at the same moment). Further incoming connections are refused before the TLS
/// handshake, and counted.
pub const CONNECTIONS_PER_PEER_MAX: usize = 2;

/// Messages queued for sending to one peer. [`Transport::send`] never waits: at the bound it
/// answers [`SendError::QueueFull`] and the core retransmits later (it resends until acked).
///
/// [`Transport::send`]: crate::transport::Transport::send
/// [`SendError::QueueFull`]: crate::transport::SendError::QueueFull
pub const SEND_QUEUE_MESSAGES_DEFAULT: usize = 1_024;

/// Events ([`Inbound`](crate::transport::Inbound)) waiting for the core to take them. At the
/// bound the connections' readers wait (backpressure reaches the peer through QUIC flow
/// control); nothing is dropped.
pub const INBOUND_QUEUE_EVENTS: usize = 4_096;

/// Messages one peer may deliver per second (a token bucket that holds one second's worth).
/// Past it messages are read and dropped, and counted in
/// [`PeerStatus::dropped_rate`](crate::transport::PeerStatus::dropped_rate).
pub const MESSAGES_PER_SECOND_PER_PEER_DEFAULT: u32 = 2_000;

/// Unidirectional streams (one per message, the Hello included) a peer may have open toward
/// us at once; QUIC's flow control makes it wait past this.
pub const CONCURRENT_STREAMS_MAX: u32 = 64;

/// Bytes in flight on one connection, each way (QUIC's connection flow-control window): 8
/// messages of the largest size. A peer sending faster waits for us to read.
pub const CONNECTION_WINDOW_BYTES: u64 = 8 << 20;

// ---------------------------------------------------------------------------------------
// Time
// ---------------------------------------------------------------------------------------

/// A connection with no packet for this long is dropped (the peer is Down).
pub const IDLE_TIMEOUT_MS: u64 = 10_000;

/// How often an idle connection sends a QUIC PING, so a live link never hits the idle timeout.
pub const KEEP_ALIVE_INTERVAL_MS: u64 = 2_000;

/// How long one dial's QUIC handshake may take before it is dropped and the peer dialed again:
/// a dial that started while the path was cut would otherwise wait for its own exponentially
/// spaced retransmissions after the heal (seconds), where a new dial answers in one round
/// trip. Paths with round trips near a second need more.
pub const HANDSHAKE_TIMEOUT_MS: u64 = 1_000;

/// The round-trip time QUIC assumes before it has measured one: its first retransmission
/// timers are a few of these (quinn's default, 333 ms, spaces a cut dial's retries by seconds).
pub const INITIAL_RTT_MS: u64 = 100;

/// How long the Hello exchange (after the TLS handshake) may take before the connection is
/// closed with `HELLO_TIMEOUT`.
pub const HELLO_TIMEOUT_MS: u64 = 5_000;

/// Longest a peer may take to send one message once its stream is open. Past it the stream
/// is stopped with `STREAM_STALLED` and the message dropped (counted), so a stalled stream
/// cannot hold up the connection's reader.
pub const MESSAGE_READ_TIMEOUT_MS: u64 = 5_000;

/// First wait before redialing a peer after a failed or lost connection; doubled at each
/// failure, up to [`BACKOFF_MAX_MS_DEFAULT`], with jitter (a random half of it is taken off).
pub const BACKOFF_INITIAL_MS_DEFAULT: u64 = 200;

/// Longest wait between two dials of one peer: short, so that a healed partition is noticed
/// within half a second (one dial per peer per second is nothing for at most `PEERS_MAX`
/// peers), which the cluster's convergence after a heal rests on.
pub const BACKOFF_MAX_MS_DEFAULT: u64 = 500;

/// How long [`Transport::shutdown`](crate::transport::Transport::shutdown) waits for the
/// peers to acknowledge the close before dropping the socket.
pub const SHUTDOWN_GRACE_MS: u64 = 1_000;

// ---------------------------------------------------------------------------------------
// Certificates
// ---------------------------------------------------------------------------------------

/// Validity of a node certificate made by `warden certs issue`: one year.
pub const NODE_CERT_VALIDITY_DAYS: i64 = 365;

/// Validity of the cluster CA made by `warden certs init`: ten years.
pub const CA_CERT_VALIDITY_DAYS: i64 = 3_652;

// ---------------------------------------------------------------------------------------
// Relationships
// ---------------------------------------------------------------------------------------

// The keep-alive must fire several times within the idle timeout, or live links drop.
const _: () = assert!(KEEP_ALIVE_INTERVAL_MS * 3 <= IDLE_TIMEOUT_MS);
// The Hello must be possible within one idle timeout.
const _: () = assert!(HELLO_TIMEOUT_MS <= IDLE_TIMEOUT_MS);
// Backoff doubles from a positive start up to a larger cap.
const _: () =
    assert!(0 < BACKOFF_INITIAL_MS_DEFAULT && BACKOFF_INITIAL_MS_DEFAULT <= BACKOFF_MAX_MS_DEFAULT);
// A largest message fits the window, and a Hello is a small message.
const _: () = assert!(MAX_MESSAGE_BYTES as u64 <= CONNECTION_WINDOW_BYTES);
const _: () =
    assert!(HELLO_BYTES_MAX < MAX_MESSAGE_BYTES && HELLO_BYTES_MAX > NODE_NAME_BYTES_MAX + 32);
// A stalled message is given up before the connection would be.
const _: () = assert!(MESSAGE_READ_TIMEOUT_MS <= IDLE_TIMEOUT_MS);
// A frame's length fits the u32 that QUIC streams and the codec's limit use.
const _: () = assert!(MAX_MESSAGE_BYTES <= u32::MAX as usize);
// Every queue and limit lets at least one thing through.
const _: () = assert!(PEERS_MAX_DEFAULT >= 1 && SEND_QUEUE_MESSAGES_DEFAULT >= 1);
const _: () = assert!(INBOUND_QUEUE_EVENTS >= 1 && MESSAGES_PER_SECOND_PER_PEER_DEFAULT >= 1);
// The Hello and at least one message can be open at once.
const _: () = assert!(CONCURRENT_STREAMS_MAX >= 2 && CONNECTIONS_PER_PEER_MAX >= 2);
// A node certificate never outlives the CA that signs it.
const _: () = assert!(NODE_CERT_VALIDITY_DAYS < CA_CERT_VALIDITY_DAYS);
