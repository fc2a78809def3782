//! The QUIC transport between nodes: a thin shell that moves the replication core's opaque
//! messages. It never looks inside a message, never decides, never retries a message (the
//! core resends until acknowledged): it connects, authenticates, bounds and counts.
//!
//! # Connections
//! One UDP socket ([`TransportConfig::listen`]) both accepts and dials. Every configured peer
//! address is dialed, and dialed again after a failure or a lost connection with exponential
//! backoff ([`TransportLimits::backoff_initial_ms`] doubling up to
//! [`TransportLimits::backoff_max_ms`], less a random part of up to half, from a cheap
//! generator seeded by [`TransportConfig::seed`]); a dial waits while its peer is connected.
//! Peers that were not configured may dial in. A peer that vanishes is Down after
//! [`IDLE_TIMEOUT_MS`](crate::limits::IDLE_TIMEOUT_MS); one that comes back after a crash
//! resets its peers' stale connections at their first packet (its stateless-reset and
//! connection-ID keys derive from its private key, so they survive the restart). Both sides authenticate with mutual TLS
//! against the cluster CA ([`crate::certs`]); a peer is known by the node name in its
//! certificate, never by its address or by what it says.
//!
//! After TLS each side sends a Hello on the connection's first unidirectional stream: a codec
//! frame ([`crate::codec`], so it carries the protocol version) with the node name and an
//! instance number chosen at each start. A Hello of another protocol version is refused with
//! one log line and the close code [`codes::VERSION`]; a Hello naming another node than the
//! certificate with [`codes::BAD_HELLO`].
//!
//! # Two connections to one peer
//! Two nodes that dial each other at once end up with two connections. One per peer carries
//! messages (the *link*); the rule, the same on both sides so they agree without talking:
//! - a connection whose Hello has another instance number than the link's means the peer
//!   restarted: the new connection replaces the link (the old one is closed with
//!   [`codes::RESTARTED`]), and the core sees [`Inbound::Down`] then [`Inbound::Up`];
//! - otherwise the connection dialed by the node whose name sorts first is kept, the other
//!   closed with [`codes::DUPLICATE`], and the core sees nothing (it may see one Down and Up
//!   while the two sides settle).
//!
//! Messages from any connection of a peer are delivered as from that peer; messages queued on
//! a link that is replaced or lost are dropped (the core resends).
//!
//! # Messages
//! Each message is one QUIC unidirectional stream: no framing to get wrong, a size limit per
//! read, one bad stream never harms the rest. There is no order between messages. A stream
//! longer than [`TransportLimits::message_bytes_max`] is stopped with [`codes::STREAM_TOO_LARGE`]
//! and dropped (counted in [`PeerStatus::dropped_oversize`]); the connection lives on.
//! Beyond [`TransportLimits::messages_per_second`] from one peer, streams are stopped unread
//! with [`codes::STREAM_RATE`] and counted in [`PeerStatus::dropped_rate`].
//!
//! # Limits
//! Peers by name ([`TransportLimits::peers_max`]: more are closed with
//! [`codes::TOO_MANY_PEERS`]), connections being set up (twice that: more are refused before
//! TLS), the send queue per peer ([`Transport::send`] never waits: a full queue is an error),
//! events waiting for the core (the readers wait: backpressure), QUIC's concurrent streams,
//! windows, idle timeout and keep-alive: see [`crate::limits`].
//!
//! # Logging
//! A refusal (a certificate, a version, a name, a limit) is one `warden sync: ...` line on
//! stderr, once per peer and reason (a peer refused again for the same reason is counted,
//! not logged again).
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use warden_sync::certs::{Identity, NodeName};
//! use warden_sync::transport::{Inbound, Transport, TransportConfig};
//!
//! let identity = Identity::load("certs".as_ref(), &NodeName::new("eu-1")?)?;
//! let mut cfg = TransportConfig::new("0.0.0.0:7801".parse()?, identity);
//! cfg.peers = vec!["10.0.0.2:7801".parse()?];
//! let (transport, mut inbound) = Transport::start(cfg).await?;
//! while let Some(event) = inbound.recv().await {
//!     if let Inbound::Message { peer, body } = event {
//!         transport.send(&peer, body)?; // echo
//!     }
//! }
//! # Ok(()) }
//! ```

mod conn;
mod dial;
mod table;
mod tls;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use tokio::sync::{mpsc, watch, Notify};
use tokio::task::JoinSet;

use crate::certs::{CertError, Identity, NodeName};
use crate::limits;

/// Close codes (QUIC application error codes) and stream stop codes, as seen by peers.
pub mod codes {
    use quinn::VarInt;

    /// Connection: the node shuts down.
    pub const SHUTDOWN: VarInt = VarInt::from_u32(0);
    /// Connection: the peer's Hello has another protocol version.
    pub const VERSION: VarInt = VarInt::from_u32(1);
    /// Connection: no valid Hello (malformed, or naming another node than the certificate).
    pub const BAD_HELLO: VarInt = VarInt::from_u32(2);
    /// Connection: the node has [`TransportLimits::peers_max`](super::TransportLimits::peers_max) peers.
    pub const TOO_MANY_PEERS: VarInt = VarInt::from_u32(3);
    /// Connection: another connection with the same peer is kept (see the module doc).
    pub const DUPLICATE: VarInt = VarInt::from_u32(4);
    /// Connection: the peer's certificate has this node's own name.
    pub const SELF: VarInt = VarInt::from_u32(5);
    /// Connection: no Hello within [`HELLO_TIMEOUT_MS`](crate::limits::HELLO_TIMEOUT_MS).
    pub const HELLO_TIMEOUT: VarInt = VarInt::from_u32(6);
    /// Connection: replaced by a connection from the peer's new instance (it restarted).
    pub const RESTARTED: VarInt = VarInt::from_u32(7);
    /// Stream: the message is larger than the receiver's limit.
    pub const STREAM_TOO_LARGE: VarInt = VarInt::from_u32(1);
    /// Stream: the sender exceeded its messages per second.
    pub const STREAM_RATE: VarInt = VarInt::from_u32(2);
    /// Stream: the message did not arrive within
    /// [`MESSAGE_READ_TIMEOUT_MS`](crate::limits::MESSAGE_READ_TIMEOUT_MS).
    pub const STREAM_STALLED: VarInt = VarInt::from_u32(3);
}

/// The bounds of one transport. [`Default`] takes the values of [`crate::limits`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransportLimits {
    /// Largest message accepted from a peer (bytes; at most [`limits::MAX_MESSAGE_BYTES`],
    /// which also bounds [`Transport::send`]).
    pub message_bytes_max: usize,
    /// Distinct peers connected at once.
    pub peers_max: usize,
    /// Messages queued for one peer before [`Transport::send`] answers
    /// [`SendError::QueueFull`].
    pub send_queue_messages: usize,
    /// Messages accepted per second from one peer (a bucket of one second's worth).
    pub messages_per_second: u32,
    /// First wait before a redial, in milliseconds.
    pub backoff_initial_ms: u64,
    /// Longest wait between dials of one peer, in milliseconds.
    pub backoff_max_ms: u64,
}

impl Default for TransportLimits {
    fn default() -> Self {
        TransportLimits {
            message_bytes_max: limits::MAX_MESSAGE_BYTES,
            peers_max: limits::PEERS_MAX_DEFAULT,
            send_queue_messages: limits::SEND_QUEUE_MESSAGES_DEFAULT,
            messages_per_second: limits::MESSAGES_PER_SECOND_PER_PEER_DEFAULT,
            backoff_initial_ms: limits::BACKOFF_INITIAL_MS_DEFAULT,
            backoff_max_ms: limits::BACKOFF_MAX_MS_DEFAULT,
        }
    }
}

/// What [`Transport::start`] needs.
#[derive(Debug, Clone)]
pub struct TransportConfig {
    /// The UDP address to listen on (and to dial from). Port 0 picks one
    /// ([`Transport::local_addr`] says which).
    pub listen: SocketAddr,
    /// Peers to dial. Peers may also dial in without being listed here.
    pub peers: Vec<SocketAddr>,
    /// This node's certificate and key and the cluster CA ([`Identity::load`]).
    pub identity: Identity,
    /// The bounds.
    pub limits: TransportLimits,
    /// Seed of the backoff jitter and of the instance number (which also mixes in the time,
    /// so that a restarted node always differs).
    pub seed: u64,
    /// The protocol version put in the Hello and expected in the peer's. Tests only: a node
    /// that speaks another version.
    #[doc(hidden)]
    pub protocol_version: u16,
}

impl TransportConfig {
    /// A configuration with no peers to dial, default limits and seed 0.
    pub fn new(listen: SocketAddr, identity: Identity) -> TransportConfig {
        TransportConfig {
            listen,
            peers: Vec::new(),
            identity,
            limits: TransportLimits::default(),
            seed: 0,
            protocol_version: crate::codec::PROTOCOL_VERSION,
        }
    }
}

/// What the transport tells the core, in the order it happened for each peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inbound {
    /// A peer is connected (its Hello came): messages to it can be sent.
    Up {
        /// Its node name, from its certificate.
        peer: String,
        /// Its address.
        addr: SocketAddr,
    },
    /// A message from a peer: its bytes as sent (a codec frame, unchecked).
    Message {
        /// Its node name.
        peer: String,
        /// The message.
        body: Bytes,
    },
    /// A peer's connection is gone (after an [`Inbound::Up`]); sends fail until the next Up.
    Down {
        /// Its node name.
        peer: String,
        /// Why (the connection's error).
        reason: String,
    },
}

/// Where a peer is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerState {
    /// Being dialed, not connected yet.
    Connecting,
    /// Connected: sends go out.
    Up,
    /// Not connected (waiting to redial if it is configured).
    Down,
}

/// One peer as [`Transport::peers`] shows it: a configured address, a named node, or both.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerStatus {
    /// Its node name, once a connection told it (`None`: a configured address never reached).
    pub name: Option<String>,
    /// The configured address, else the address it last connected from.
    pub addr: SocketAddr,
    /// Whether the address is one of [`TransportConfig::peers`].
    pub dialed: bool,
    /// Where it is.
    pub state: PeerState,
    /// Since when.
    pub since: SystemTime,
    /// Message bytes received from it (QUIC's own overhead not counted).
    pub bytes_in: u64,
    /// Message bytes sent to it.
    pub bytes_out: u64,
    /// Messages received and delivered.
    pub messages_in: u64,
    /// Messages sent.
    pub messages_out: u64,
    /// Messages dropped for its rate limit.
    pub dropped_rate: u64,
    /// Messages dropped for being larger than the limit.
    pub dropped_oversize: u64,
    /// Messages dropped for arriving too slowly.
    pub dropped_stalled: u64,
    /// Connections refused, either way (certificate, version, name, limits).
    pub refusals: u64,
    /// The last error or refusal.
    pub last_error: Option<String>,
}

/// Why [`Transport::send`] did not queue a message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// No connection to that peer now.
    #[error("peer `{0}` is not connected")]
    NotConnected(String),
    /// The peer's queue holds [`TransportLimits::send_queue_messages`] messages.
    #[error("the send queue of peer `{0}` is full")]
    QueueFull(String),
    /// The message is larger than [`limits::MAX_MESSAGE_BYTES`].
    #[error("message of {len} bytes is larger than the limit of {max} bytes")]
    TooLarge {
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
}

/// Why [`Transport::start`] failed.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// The identity does not verify or does not parse.
    #[error("sync identity: {0}")]
    Identity(#[from] CertError),
    /// rustls or quinn refused the TLS configuration.
    #[error("sync TLS configuration: {0}")]
    Tls(String),
    /// The UDP socket could not be bound.
    #[error("sync listen address {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// A limit is out of range.
    #[error("sync limits: {0}")]
    Limits(String),
}

/// A running transport. Dropping it without [`Transport::shutdown`] leaves its tasks
/// running until the runtime ends.
pub struct Transport {
    shared: Arc<Shared>,
    shutdown: watch::Sender<bool>,
}

/// State the transport's tasks share.
pub(crate) struct Shared {
    /// This node's name.
    me: NodeName,
    /// This start's instance number (in the Hello).
    instance: u64,
    /// The protocol version spoken.
    version: u16,
    limits: TransportLimits,
    endpoint: quinn::Endpoint,
    client: quinn::ClientConfig,
    table: Mutex<table::Table>,
    /// Signalled at every change of a link (dials wait on it while their peer is up).
    changed: Notify,
    events: mpsc::Sender<Inbound>,
    shutdown: watch::Receiver<bool>,
    tasks: Mutex<JoinSet<()>>,
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
    refusals: AtomicU64,
    /// The last line logged per peer, so a repeated refusal is not logged again.
    logged: Mutex<std::collections::HashMap<String, String>>,
}

impl Transport {
    /// Binds [`TransportConfig::listen`], starts accepting and dialing every configured peer.
    /// Events come on the returned receiver (at most [`limits::INBOUND_QUEUE_EVENTS`] wait;
    /// past that the readers wait for the core).
    ///
    /// Must run inside a tokio runtime. Errors: [`TransportError`] (identity, TLS, bind,
    /// limits); nothing is left running then.
    pub async fn start(
        cfg: TransportConfig,
    ) -> Result<(Transport, mpsc::Receiver<Inbound>), TransportError> {
        check_limits(&cfg.limits)?;
        let parsed = cfg.identity.parse()?;
        let (server, client) = tls::configs(&parsed)?;
        let bind = |source| TransportError::Bind {
            addr: cfg.listen,
            source,
        };
        let socket = std::net::UdpSocket::bind(cfg.listen).map_err(bind)?;
        let endpoint_config = tls::endpoint_config(&parsed.key);
        let runtime = Arc::new(quinn::TokioRuntime);
        let endpoint =
            quinn::Endpoint::new(endpoint_config, Some(server), socket, runtime).map_err(bind)?;
        let (events, inbound) = mpsc::channel(limits::INBOUND_QUEUE_EVENTS);
        let (shutdown, shutdown_rx) = watch::channel(false);
        let mut rng = dial::Jitter::new(cfg.seed ^ clock_nanos());
        let table = table::Table::new(&cfg.peers, cfg.limits.peers_max);
        let shared = Arc::new(Shared {
            me: parsed.name,
            instance: rng.next_u64(),
            version: cfg.protocol_version,
            limits: cfg.limits,
            endpoint,
            client,
            table: Mutex::new(table),
            changed: Notify::new(),
            events,
            shutdown: shutdown_rx,
            tasks: Mutex::new(JoinSet::new()),
            bytes_in: AtomicU64::new(0),
            bytes_out: AtomicU64::new(0),
            refusals: AtomicU64::new(0),
            logged: Mutex::new(Default::default()),
        });
        shared.spawn(conn::accept_loop(shared.clone()));
        for (index, addr) in cfg.peers.iter().enumerate() {
            let jitter = dial::Jitter::new(cfg.seed ^ (index as u64).wrapping_mul(0x9e37_79b9));
            shared.spawn(dial::dial_loop(shared.clone(), index, *addr, jitter));
        }
        Ok((Transport { shared, shutdown }, inbound))
    }

    /// The bound UDP address (the actual port when [`TransportConfig::listen`] had port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.shared
            .endpoint
            .local_addr()
            .expect("a bound UDP socket has an address")
    }

    /// This node's name, from its certificate.
    pub fn node_name(&self) -> &NodeName {
        &self.shared.me
    }

    /// Queues `body` for `peer` (a node name). Never waits.
    ///
    /// Errors: [`SendError::TooLarge`] over [`TransportLimits::message_bytes_max`],
    /// [`SendError::NotConnected`] when the peer is not up, [`SendError::QueueFull`] when
    /// its queue is full. A queued message can still be lost with its connection: the core
    /// resends until acknowledged.
    pub fn send(&self, peer: &str, body: Bytes) -> Result<(), SendError> {
        let max = self.shared.limits.message_bytes_max;
        if body.len() > max {
            return Err(SendError::TooLarge {
                len: body.len(),
                max,
            });
        }
        let queue = self.shared.lock_table().queue(peer);
        let queue = queue.ok_or_else(|| SendError::NotConnected(peer.to_owned()))?;
        queue.try_send(body).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => SendError::QueueFull(peer.to_owned()),
            mpsc::error::TrySendError::Closed(_) => SendError::NotConnected(peer.to_owned()),
        })
    }

    /// Every configured address and every peer seen, with its counters.
    pub fn peers(&self) -> Vec<PeerStatus> {
        self.shared.lock_table().status()
    }

    /// Message bytes received and sent since the start, over all peers: `(in, out)`.
    pub fn bytes_total(&self) -> (u64, u64) {
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        (load(&self.shared.bytes_in), load(&self.shared.bytes_out))
    }

    /// Connections refused since the start, either way, including those from peers whose
    /// name is unknown (a certificate from another CA).
    pub fn refusals_total(&self) -> u64 {
        self.shared.refusals.load(Ordering::Relaxed)
    }

    /// Closes every connection (code [`codes::SHUTDOWN`]), waits up to
    /// [`limits::SHUTDOWN_GRACE_MS`] for peers to hear it, and stops every task. The socket
    /// is released when this returns (or very soon after: quinn's driver drops it once it
    /// sees the last handle go). The event receiver then ends.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        let shared = self.shared;
        shared.endpoint.close(codes::SHUTDOWN, b"shutting down");
        let grace = Duration::from_millis(limits::SHUTDOWN_GRACE_MS);
        let _ = tokio::time::timeout(grace, shared.endpoint.wait_idle()).await;
        let mut tasks = std::mem::take(&mut *shared.tasks.lock().expect("tasks lock"));
        if tokio::time::timeout(grace, async { while tasks.join_next().await.is_some() {} })
            .await
            .is_err()
        {
            tasks.shutdown().await;
        }
        shared.lock_table().clear_links();
    }
}

impl Shared {
    /// Runs `task` until it ends or the transport shuts down.
    fn spawn(&self, task: impl std::future::Future<Output = ()> + Send + 'static) {
        let mut tasks = self.tasks.lock().expect("tasks lock");
        while tasks.try_join_next().is_some() {}
        if !*self.shutdown.borrow() {
            tasks.spawn(task);
        }
    }

    fn lock_table(&self) -> std::sync::MutexGuard<'_, table::Table> {
        self.table
            .lock()
            .expect("no panic while the peer table is held")
    }

    /// Logs `line` for `key` (a peer name or address) unless it was the last line for it.
    fn log_once(&self, key: &str, line: &str) {
        let mut logged = self.logged.lock().expect("log lock");
        if logged.get(key).map(String::as_str) == Some(line) {
            return;
        }
        if logged.len() >= 4 * self.limits.peers_max {
            logged.clear();
        }
        logged.insert(key.to_owned(), line.to_owned());
        eprintln!("warden sync: {line}");
    }

    /// Counts and logs a refused connection; `dial` is the configured peer's index if this
    /// side dialed, `name` the peer's name if its certificate was trusted.
    fn refused(
        &self,
        dial: Option<usize>,
        name: Option<&NodeName>,
        addr: SocketAddr,
        why: Refusal,
    ) {
        self.refusals.fetch_add(1, Ordering::Relaxed);
        let who = match name {
            Some(name) => format!("peer `{name}` ({addr})"),
            None => format!("peer at {addr}"),
        };
        let line = match why {
            Refusal::Here(why) => format!("refused {who}: {why}"),
            Refusal::ByPeer(why) => format!("{who} refused this node: {why}"),
        };
        self.lock_table().refused(dial, name, addr, &line);
        self.log_once(
            &name.map_or_else(|| addr.to_string(), |n| n.to_string()),
            &line,
        );
    }

    fn shutting_down(&self) -> bool {
        *self.shutdown.borrow()
    }

    /// Hands `event` to the core, waiting while its queue is full, unless the transport
    /// shuts down meanwhile.
    async fn emit(&self, event: Inbound) {
        let mut shutdown = self.shutdown.clone();
        if *shutdown.borrow_and_update() {
            return;
        }
        tokio::select! {
            _ = self.events.send(event) => {}
            _ = shutdown.changed() => {}
        }
    }
}

/// Which side refused a connection, and why.
enum Refusal<'a> {
    /// This node refused the peer.
    Here(&'a str),
    /// The peer refused this node.
    ByPeer(&'a str),
}

fn check_limits(l: &TransportLimits) -> Result<(), TransportError> {
    let bad = |what: &str| Err(TransportError::Limits(what.to_owned()));
    if l.message_bytes_max == 0 || l.message_bytes_max > limits::MAX_MESSAGE_BYTES {
        return bad("message_bytes_max must be 1..=1 MiB");
    }
    if l.peers_max == 0 || l.send_queue_messages == 0 || l.messages_per_second == 0 {
        return bad("peers_max, send_queue_messages and messages_per_second must be at least 1");
    }
    if l.backoff_initial_ms == 0 || l.backoff_initial_ms > l.backoff_max_ms {
        return bad("backoff_initial_ms must be at least 1 and at most backoff_max_ms");
    }
    Ok(())
}

fn clock_nanos() -> u64 {
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    now.as_nanos() as u64 ^ u64::from(std::process::id()).rotate_left(32)
}
