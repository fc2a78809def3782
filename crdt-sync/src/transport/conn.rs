//! One connection's life, either direction: the peer's name from its certificate, the
//! Hello, the link, then the reader (here) and the writer (its own task) until it ends.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use quinn::{ConnectionError, ReadError, ReadToEndError};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::table::{Attach, Link};
use super::{codes, Inbound, Refusal, Shared};
use crate::certs::{self, NodeName};
use crate::codec::{self, CodecError};
use crate::limits;

/// The first message on every connection, each way (a codec frame: it carries the version).
#[derive(bincode::Encode, bincode::Decode, Debug)]
struct Hello {
    /// The sender's node name (must be its certificate's).
    node: String,
    /// The sender's instance number, new at each start.
    instance: u64,
}

/// How a connection ended, for the dial loop's backoff.
pub(super) enum Ended {
    /// It was the peer's link, then ended (why).
    WasUp(String),
    /// Another connection with the peer is kept.
    Duplicate,
    /// Refused, by either side (already counted and logged).
    Refused,
    /// It failed before becoming a link (why).
    Failed(String),
}

/// A place among the connections being set up or established; released on drop.
pub(super) struct Slot(Arc<Shared>);

impl Slot {
    /// A place, if fewer than [`limits::CONNECTIONS_PER_PEER_MAX`] per allowed peer are taken.
    pub fn take(shared: &Arc<Shared>) -> Option<Slot> {
        let mut table = shared.lock_table();
        if table.connections >= shared.limits.peers_max * limits::CONNECTIONS_PER_PEER_MAX {
            return None;
        }
        table.connections += 1;
        Some(Slot(shared.clone()))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.lock_table().connections -= 1;
    }
}

/// Accepts connections until the endpoint closes; each is set up in its own task.
pub(super) async fn accept_loop(shared: Arc<Shared>) {
    let mut shutdown = shared.shutdown.clone();
    loop {
        let incoming = tokio::select! {
            incoming = shared.endpoint.accept() => match incoming {
                Some(incoming) => incoming,
                None => return,
            },
            _ = shutdown.changed() => return,
        };
        let addr = incoming.remote_address();
        let Some(slot) = Slot::take(&shared) else {
            incoming.refuse();
            shared.refused(
                None,
                None,
                addr,
                Refusal::Here("too many connections at once"),
            );
            continue;
        };
        let task = shared.clone();
        shared.spawn(async move {
            let _slot = slot;
            let connected = match incoming.accept() {
                Ok(connecting) => connecting.await,
                Err(e) => Err(e),
            };
            match connected {
                Ok(conn) => run(&task, conn, None).await,
                Err(e) => failed(&task, None, None, addr, &e),
            };
        });
    }
}

/// Counts a connection that could not be set up: a refusal if TLS or the peer refused it.
pub(super) fn failed(
    shared: &Shared,
    dial: Option<usize>,
    name: Option<&NodeName>,
    addr: SocketAddr,
    e: &ConnectionError,
) -> Ended {
    match describe(e) {
        Closed::Failure(why) => Ended::Failed(why),
        Closed::RefusedHere(why) => {
            shared.refused(dial, name, addr, Refusal::Here(&why));
            Ended::Refused
        }
        Closed::RefusedByPeer(why) => {
            shared.refused(dial, name, addr, Refusal::ByPeer(&why));
            Ended::Refused
        }
    }
}

/// Runs an established connection (`dial`: the configured address it was dialed at, if
/// this side dialed) to its end.
pub(super) async fn run(
    shared: &Arc<Shared>,
    conn: quinn::Connection,
    dial: Option<usize>,
) -> Ended {
    let addr = conn.remote_address();
    let name = match peer_name(&conn) {
        Ok(name) => name,
        Err(why) => return refuse(shared, &conn, dial, None, codes::BAD_HELLO, &why),
    };
    if let Some(dial) = dial {
        shared.lock_table().dial_named(dial, &name);
    }
    if name == shared.me {
        let why = "its certificate has this node's own name";
        return refuse(shared, &conn, dial, Some(&name), codes::SELF, why);
    }
    let hello = tokio::time::timeout(
        Duration::from_millis(limits::HELLO_TIMEOUT_MS),
        exchange_hello(shared, &conn),
    );
    let instance = match hello.await {
        Err(_) => {
            conn.close(codes::HELLO_TIMEOUT, b"no Hello in time");
            return Ended::Failed("no Hello in time".into());
        }
        Ok(Err(HelloError::Lost(e))) => return failed(shared, dial, Some(&name), addr, &e),
        Ok(Err(HelloError::Version { theirs, ours })) => {
            // The log says it from here; the peer is told it from its side.
            let told = format!("it speaks protocol version {ours} only, not {theirs}");
            conn.close(codes::VERSION, told.as_bytes());
            let why = format!("protocol version {theirs}, this node speaks {ours}");
            shared.refused(dial, Some(&name), addr, Refusal::Here(&why));
            return Ended::Refused;
        }
        Ok(Err(HelloError::Bad(why))) => {
            return refuse(shared, &conn, dial, Some(&name), codes::BAD_HELLO, &why)
        }
        Ok(Ok(hello)) if hello.node != name.as_str() => {
            let why = format!("its Hello says `{}`, its certificate `{name}`", hello.node);
            return refuse(shared, &conn, dial, Some(&name), codes::BAD_HELLO, &why);
        }
        Ok(Ok(hello)) => hello.instance,
    };
    let (id, queue) = match attach(shared, &conn, &name, instance, dial).await {
        Ok(attached) => attached,
        Err(ended) => return ended,
    };
    shared.spawn(write_loop(
        shared.clone(),
        conn.clone(),
        name.clone(),
        queue,
    ));
    let reason = read_loop(shared, &conn, &name).await;
    let down = shared.lock_table().detach(&name, id, &reason);
    shared.changed.notify_waiters();
    if down {
        let peer = name.to_string();
        shared
            .emit(Inbound::Down {
                peer,
                reason: reason.clone(),
            })
            .await;
    }
    Ended::WasUp(reason)
}

/// Makes the connection `name`'s link if the table's rules allow and tells the core; else
/// closes it: as a duplicate, or for too many peers (a refusal, counted).
async fn attach(
    shared: &Arc<Shared>,
    conn: &quinn::Connection,
    name: &NodeName,
    instance: u64,
    dial: Option<usize>,
) -> Result<(u64, mpsc::Receiver<Bytes>), Ended> {
    let (queue, rx) = mpsc::channel(shared.limits.send_queue_messages);
    let dialer = if dial.is_some() {
        shared.me.clone()
    } else {
        name.clone()
    };
    let attached = {
        let mut table = shared.lock_table();
        let id = table.link_id();
        let link = Link {
            id,
            conn: conn.clone(),
            instance,
            dialer,
            queue,
        };
        (id, table.attach(&shared.me, name, link))
    };
    shared.changed.notify_waiters();
    let (id, attached) = attached;
    let up = || Inbound::Up {
        peer: name.to_string(),
        addr: conn.remote_address(),
    };
    match attached {
        Attach::Up => shared.emit(up()).await,
        Attach::Restarted(old) => {
            old.conn
                .close(codes::RESTARTED, b"replaced by the peer's new instance");
            let reason = "the peer restarted".to_owned();
            shared
                .emit(Inbound::Down {
                    peer: name.to_string(),
                    reason,
                })
                .await;
            shared.emit(up()).await;
        }
        Attach::Replaced(old) => old
            .conn
            .close(codes::DUPLICATE, b"another connection is kept"),
        Attach::Refused(code, why) => {
            if code == codes::TOO_MANY_PEERS {
                return Err(refuse(shared, conn, dial, Some(name), code, why));
            }
            conn.close(code, why.as_bytes());
            return Err(Ended::Duplicate);
        }
    }
    Ok((id, rx))
}

/// Closes `conn` with `code`, counts and logs the refusal.
fn refuse(
    shared: &Shared,
    conn: &quinn::Connection,
    dial: Option<usize>,
    name: Option<&NodeName>,
    code: quinn::VarInt,
    why: &str,
) -> Ended {
    conn.close(code, why.as_bytes());
    shared.refused(dial, name, conn.remote_address(), Refusal::Here(why));
    Ended::Refused
}

/// The node name in the peer's certificate (which rustls verified against the CA).
fn peer_name(conn: &quinn::Connection) -> Result<NodeName, String> {
    let identity = conn.peer_identity().ok_or("no peer certificate")?;
    let chain = identity
        .downcast::<Vec<rustls::pki_types::CertificateDer<'static>>>()
        .map_err(|_| "the peer's identity is not a certificate chain")?;
    let cert = chain.first().ok_or("an empty certificate chain")?;
    certs::node_name_of(cert).map_err(|e| e.to_string())
}

enum HelloError {
    /// The connection ended (refused by the peer, its certificate, or lost).
    Lost(ConnectionError),
    /// The peer speaks another protocol version.
    Version { theirs: u16, ours: u16 },
    /// Not a Hello.
    Bad(String),
}

/// Sends our Hello and reads the peer's (the first unidirectional stream each way).
async fn exchange_hello(shared: &Shared, conn: &quinn::Connection) -> Result<Hello, HelloError> {
    let ours = Hello {
        node: shared.me.to_string(),
        instance: shared.instance,
    };
    let frame = codec::encode_versioned(shared.version, &ours)
        .map_err(|e| HelloError::Bad(format!("our Hello: {e}")))?;
    let send = async {
        let mut stream = conn.open_uni().await?;
        // A write fails only with the connection, which the read below reports.
        let _ = stream.write_chunk(frame).await;
        let _ = stream.finish();
        Ok::<(), ConnectionError>(())
    };
    let recv = async {
        let mut stream = conn.accept_uni().await.map_err(HelloError::Lost)?;
        let bytes = stream
            .read_to_end(limits::HELLO_BYTES_MAX)
            .await
            .map_err(|e| match e {
                ReadToEndError::Read(ReadError::ConnectionLost(e)) => HelloError::Lost(e),
                e => HelloError::Bad(format!("Hello unreadable: {e}")),
            })?;
        codec::decode_versioned::<Hello>(shared.version, &bytes).map_err(|e| match e {
            CodecError::Version { theirs, ours } => HelloError::Version { theirs, ours },
            e => HelloError::Bad(format!("Hello malformed: {e}")),
        })
    };
    let (sent, hello) = tokio::join!(send, recv);
    let hello = hello?;
    sent.map_err(HelloError::Lost)?;
    Ok(hello)
}

/// Reads one message per stream until the connection ends; returns why it ended.
async fn read_loop(shared: &Shared, conn: &quinn::Connection, name: &NodeName) -> String {
    let mut bucket = Bucket::new(shared.limits.messages_per_second, Instant::now());
    let read_timeout = Duration::from_millis(limits::MESSAGE_READ_TIMEOUT_MS);
    loop {
        let mut stream = match conn.accept_uni().await {
            Ok(stream) => stream,
            Err(e) => return describe(&e).text(),
        };
        if !bucket.take(Instant::now()) {
            let _ = stream.stop(codes::STREAM_RATE);
            shared.lock_table().count(name, |c| c.dropped_rate += 1);
            continue;
        }
        let read = stream.read_to_end(shared.limits.message_bytes_max);
        match tokio::time::timeout(read_timeout, read).await {
            Ok(Ok(body)) => {
                let len = body.len() as u64;
                shared
                    .bytes_in
                    .fetch_add(len, std::sync::atomic::Ordering::Relaxed);
                shared.lock_table().count(name, |c| {
                    c.bytes_in += len;
                    c.messages_in += 1;
                });
                let body = Bytes::from(body);
                shared
                    .emit(Inbound::Message {
                        peer: name.to_string(),
                        body,
                    })
                    .await;
            }
            Ok(Err(ReadToEndError::TooLong)) => {
                let _ = stream.stop(codes::STREAM_TOO_LARGE);
                shared.lock_table().count(name, |c| c.dropped_oversize += 1);
            }
            Ok(Err(ReadToEndError::Read(ReadError::ConnectionLost(e)))) => {
                return describe(&e).text()
            }
            // Reset by the sender, or a stream-level error: that message only.
            Ok(Err(ReadToEndError::Read(_))) => {}
            Err(_) => {
                let _ = stream.stop(codes::STREAM_STALLED);
                shared.lock_table().count(name, |c| c.dropped_stalled += 1);
            }
        }
    }
}

/// Sends each queued message on its own stream until the queue closes (the link is gone) or
/// the connection fails.
async fn write_loop(
    shared: Arc<Shared>,
    conn: quinn::Connection,
    name: NodeName,
    mut queue: mpsc::Receiver<Bytes>,
) {
    while let Some(body) = queue.recv().await {
        let len = body.len() as u64;
        let Ok(mut stream) = conn.open_uni().await else {
            return;
        };
        if stream.write_chunk(body).await.is_err() || stream.finish().is_err() {
            return;
        }
        shared
            .bytes_out
            .fetch_add(len, std::sync::atomic::Ordering::Relaxed);
        shared.lock_table().count(&name, |c| {
            c.bytes_out += len;
            c.messages_out += 1;
        });
    }
}

/// How a connection closed, in words.
pub(super) enum Closed {
    /// Lost, timed out, shut down, closed as a duplicate.
    Failure(String),
    /// TLS here refused the peer's certificate.
    RefusedHere(String),
    /// The peer refused this node (its TLS, or one of the refusal codes).
    RefusedByPeer(String),
}

impl Closed {
    fn text(self) -> String {
        match self {
            Closed::Failure(t) | Closed::RefusedHere(t) | Closed::RefusedByPeer(t) => t,
        }
    }
}

/// Sorts a connection error into a failure or a refusal (by which side).
pub(super) fn describe(e: &ConnectionError) -> Closed {
    let crypto = |code: quinn::TransportErrorCode| (0x100..0x200).contains(&u64::from(code));
    match e {
        ConnectionError::ApplicationClosed(close) => {
            let reason = String::from_utf8_lossy(&close.reason).into_owned();
            let refusals = [
                codes::VERSION,
                codes::BAD_HELLO,
                codes::TOO_MANY_PEERS,
                codes::SELF,
            ];
            match close.error_code {
                code if refusals.contains(&code) => Closed::RefusedByPeer(reason),
                code if code == codes::SHUTDOWN => Closed::Failure("the peer shut down".to_owned()),
                _ => Closed::Failure(format!("closed by the peer: {reason}")),
            }
        }
        ConnectionError::TransportError(t) if crypto(t.code) => {
            Closed::RefusedHere(format!("TLS: {t}"))
        }
        ConnectionError::ConnectionClosed(c) if crypto(c.error_code) => {
            Closed::RefusedByPeer(format!("TLS: {c}"))
        }
        e => Closed::Failure(e.to_string()),
    }
}

/// A token bucket of messages: `per_s` a second, holding at most one second's worth. Kept in
/// thousandths of a message so that slow refills are not lost to rounding.
struct Bucket {
    per_s: u64,
    milli: u64,
    last: Instant,
}

impl Bucket {
    fn new(per_s: u32, now: Instant) -> Bucket {
        let per_s = u64::from(per_s);
        Bucket {
            per_s,
            milli: per_s * 1000,
            last: now,
        }
    }

    /// Takes one message's token; false if there is none.
    fn take(&mut self, now: Instant) -> bool {
        let elapsed_us = now.saturating_duration_since(self.last).as_micros();
        let add = (elapsed_us * u128::from(self.per_s) / 1000) as u64;
        if add > 0 {
            self.milli = (self.milli + add).min(self.per_s * 1000);
            self.last = now;
        }
        if self.milli >= 1000 {
            self.milli -= 1000;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bucket_allows_a_second_worth_then_refills_at_the_rate() {
        let start = Instant::now();
        let mut bucket = Bucket::new(10, start);
        assert_eq!((0..20).filter(|_| bucket.take(start)).count(), 10);
        assert!(!bucket.take(start + Duration::from_millis(50)));
        assert!(bucket.take(start + Duration::from_millis(100)));
        // Many small steps add up (no refill lost to rounding).
        let mut t = start + Duration::from_millis(100);
        let mut taken = 0;
        for _ in 0..1000 {
            t += Duration::from_micros(100);
            taken += usize::from(bucket.take(t));
        }
        assert_eq!(taken, 1, "100 ms at 10/s is one message");
        // Never more than a second's worth after a long pause.
        let later = t + Duration::from_secs(60);
        assert_eq!((0..20).filter(|_| bucket.take(later)).count(), 10);
    }
}
