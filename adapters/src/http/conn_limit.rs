//! The connection limit: a listener that serves a bounded number of connections at once and
//! closes idle ones. At the bound, new connections wait in the kernel's accept backlog
//! (backpressure, not refusal); an idle connection ends so idle clients cannot hold the slots.
//! One client (an IPv4 address, an IPv6 /64) holds at most its share of the slots: past it,
//! a new connection of that client is answered 503 and closed at once, so one client that
//! opens connections and trickles its headers (slowloris) cannot take every slot.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::limits::ACCEPT_RETRY_MS;

/// A listener that holds at most `permits` connections open: at the limit it stops
/// accepting (new connections wait in the kernel's backlog) until one closes. Sets
/// `TCP_NODELAY` on every connection (answers are small and latency matters), and ends a
/// connection that neither reads nor writes for `idle` (so idle clients cannot hold the
/// slots; event streams write a keep-alive every 15 s).
pub struct Limited {
    inner: tokio::net::TcpListener,
    permits: Arc<tokio::sync::Semaphore>,
    clients: Arc<Clients>,
    idle: Duration,
}

impl Limited {
    /// Serves at most `connections_max` connections of `inner` at once (any number of them
    /// from one client: see [`per_client`](Self::per_client)); closes one that stays idle
    /// for `idle`.
    pub fn new(inner: tokio::net::TcpListener, connections_max: usize, idle: Duration) -> Self {
        Self {
            inner,
            permits: Arc::new(tokio::sync::Semaphore::new(connections_max.max(1))),
            clients: Arc::new(Clients::new(connections_max.max(1))),
            idle,
        }
    }

    /// At most `max` (at least 1) of the connections open at once from one client.
    pub fn per_client(mut self, max: usize) -> Self {
        self.clients = Arc::new(Clients::new(max.max(1)));
        self
    }
}

/// Open connections per client, each at most `max`. The map holds only clients with a
/// connection open, so it is bounded by the listener's permits.
struct Clients {
    open: Mutex<HashMap<IpAddr, usize>>,
    max: usize,
}

/// A client's claim on one of its connection slots, given back when the connection ends.
pub struct ClientSlot {
    clients: Arc<Clients>,
    client: IpAddr,
}

/// What a client past its share is told before its connection is closed.
const PER_CLIENT_REFUSAL: &str = r#"{"error":{"code":"too_many_connections","message":"this client holds its share of the node's connections (limits.max_connections_per_client); reuse them, or close some"}}"#;

/// [`PER_CLIENT_REFUSAL`] as a whole HTTP/1.1 answer.
fn per_client_refusal() -> Vec<u8> {
    let body = PER_CLIENT_REFUSAL;
    format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

impl Clients {
    fn new(max: usize) -> Self {
        Self {
            open: Mutex::new(HashMap::new()),
            max,
        }
    }

    /// The client a peer address counts as: an IPv4 address (IPv4-mapped IPv6 included), or
    /// an IPv6 /64 (one host's usual allocation; a client owning a /64 has 2^64 addresses).
    fn client_of(addr: IpAddr) -> IpAddr {
        match addr {
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => IpAddr::V4(v4),
                None => IpAddr::V6((u128::from(v6) & !((1u128 << 64) - 1)).into()),
            },
            v4 => v4,
        }
    }

    /// A slot for one more connection of `addr`'s client, or `None` at its share.
    fn enter(self: &Arc<Self>, addr: IpAddr) -> Option<ClientSlot> {
        let client = Self::client_of(addr);
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let n = open.entry(client).or_insert(0);
        if *n >= self.max {
            return None;
        }
        *n += 1;
        Some(ClientSlot {
            clients: Arc::clone(self),
            client,
        })
    }
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        let mut open = self.clients.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = open.get_mut(&self.client) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.client);
            }
        }
    }
}

/// A [`Limited`] listener's socket, duplicated, with the same permits: to accept on another
/// runtime ([`SharedListener::register`]). Every runtime accepting from one socket takes the
/// connections it has room for first, and the permits still bound them all together.
pub struct SharedListener {
    socket: std::net::TcpListener,
    permits: Arc<tokio::sync::Semaphore>,
    clients: Arc<Clients>,
    idle: Duration,
}

impl Limited {
    /// A duplicate of this listener's socket (a new descriptor of the same listening socket)
    /// sharing its permits. Errors: out of file descriptors.
    pub fn share(&self) -> std::io::Result<SharedListener> {
        use std::os::fd::AsFd;
        let fd = self.inner.as_fd().try_clone_to_owned()?;
        Ok(SharedListener {
            socket: std::net::TcpListener::from(fd),
            permits: Arc::clone(&self.permits),
            clients: Arc::clone(&self.clients),
            idle: self.idle,
        })
    }
}

impl SharedListener {
    /// The listener, registered with the calling runtime's reactor: call it on the runtime
    /// that will accept, so its connections' I/O is driven there.
    pub fn register(self) -> std::io::Result<Limited> {
        self.socket.set_nonblocking(true)?;
        Ok(Limited {
            inner: tokio::net::TcpListener::from_std(self.socket)?,
            permits: self.permits,
            clients: self.clients,
            idle: self.idle,
        })
    }
}

/// A connection holding its permit.
pub struct LimitedIo {
    stream: tokio::net::TcpStream,
    _permit: tokio::sync::OwnedSemaphorePermit,
    _client: ClientSlot,
    idle: Duration,
    timer: std::pin::Pin<Box<tokio::time::Sleep>>,
}

impl LimitedIo {
    fn touch(&mut self) {
        let at = tokio::time::Instant::now() + self.idle;
        self.timer.as_mut().reset(at);
    }
}

impl Limited {
    /// The next connection and its permit, before any timer is set on it (so it can still be
    /// handed to another runtime: [`Accepted::into_std`]). Waits for a permit first. A
    /// connection of a client past its share is answered 503 (as far as the socket takes it
    /// without waiting) and closed, and the next one accepted.
    pub async fn accept_raw(&mut self) -> Accepted {
        let permit = Arc::clone(&self.permits)
            .acquire_owned()
            .await
            .expect("the semaphore is never closed");
        loop {
            match self.inner.accept().await {
                Ok((stream, addr)) => {
                    let Some(client) = self.clients.enter(addr.ip()) else {
                        let _ = stream.try_write(&per_client_refusal());
                        continue;
                    };
                    let _ = stream.set_nodelay(true);
                    return Accepted {
                        stream,
                        permit,
                        client,
                        addr,
                        idle: self.idle,
                    };
                }
                // Out of file descriptors and the like: wait a little, as axum does.
                Err(_) => tokio::time::sleep(Duration::from_millis(ACCEPT_RETRY_MS)).await,
            }
        }
    }
}

/// An accepted connection holding its permit, not yet served.
pub struct Accepted {
    stream: tokio::net::TcpStream,
    permit: tokio::sync::OwnedSemaphorePermit,
    client: ClientSlot,
    addr: SocketAddr,
    idle: Duration,
}

/// An accepted connection detached from the runtime that accepted it, to be served on another
/// ([`Detached::register`] there).
pub struct Detached {
    stream: std::net::TcpStream,
    permit: tokio::sync::OwnedSemaphorePermit,
    client: ClientSlot,
    addr: SocketAddr,
    idle: Duration,
}

impl Accepted {
    /// The connection wrapped for serving on the calling runtime (its idle timer starts now).
    pub fn into_io(self) -> LimitedIo {
        LimitedIo {
            stream: self.stream,
            _permit: self.permit,
            _client: self.client,
            idle: self.idle,
            timer: Box::pin(tokio::time::sleep(self.idle)),
        }
    }

    /// The connection deregistered from this runtime's reactor. Errors: the socket failed
    /// (the connection is closed and its permit returned).
    pub fn into_std(self) -> std::io::Result<Detached> {
        Ok(Detached {
            stream: self.stream.into_std()?,
            permit: self.permit,
            client: self.client,
            addr: self.addr,
            idle: self.idle,
        })
    }
}

impl Detached {
    /// The connection registered with the calling runtime's reactor. Errors: it could not be
    /// registered (the connection is closed and its permit returned).
    pub fn register(self) -> std::io::Result<Accepted> {
        Ok(Accepted {
            stream: tokio::net::TcpStream::from_std(self.stream)?,
            permit: self.permit,
            client: self.client,
            addr: self.addr,
            idle: self.idle,
        })
    }
}

impl axum::serve::Listener for Limited {
    type Io = LimitedIo;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        let conn = self.accept_raw().await;
        let addr = conn.addr;
        (conn.into_io(), addr)
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.inner.local_addr()
    }
}

impl tokio::io::AsyncRead for LimitedIo {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match std::pin::Pin::new(&mut self.stream).poll_read(cx, buf) {
            std::task::Poll::Ready(r) => {
                self.touch();
                std::task::Poll::Ready(r)
            }
            // Idle too long: report end of stream, and the server closes the connection.
            std::task::Poll::Pending
                if std::future::Future::poll(self.timer.as_mut(), cx).is_ready() =>
            {
                std::task::Poll::Ready(Ok(()))
            }
            std::task::Poll::Pending => std::task::Poll::Pending,
        }
    }
}

impl tokio::io::AsyncWrite for LimitedIo {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let r = std::pin::Pin::new(&mut self.stream).poll_write(cx, buf);
        if r.is_ready() {
            self.touch();
        }
        r
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let r = std::pin::Pin::new(&mut self.stream).poll_write_vectored(cx, bufs);
        if r.is_ready() {
            self.touch();
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_is_an_ipv4_address_or_an_ipv6_slash_64() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let same = |a: &str, b: &str| Clients::client_of(ip(a)) == Clients::client_of(ip(b));
        assert!(same("2001:db8:1:2::1", "2001:db8:1:2:ffff:ffff:ffff:ffff"));
        assert!(!same("2001:db8:1:2::1", "2001:db8:1:3::1"));
        assert!(same("::ffff:10.0.0.1", "10.0.0.1"));
        assert!(!same("10.0.0.1", "10.0.0.2"));
    }

    #[test]
    fn slots_are_counted_per_client_and_given_back() {
        let clients = Arc::new(Clients::new(2));
        let a = "10.0.0.1".parse().unwrap();
        let b = "10.0.0.2".parse().unwrap();
        let (a1, a2) = (clients.enter(a).unwrap(), clients.enter(a).unwrap());
        assert!(clients.enter(a).is_none());
        let _b1 = clients.enter(b).expect("another client has its own share");
        drop(a1);
        let a3 = clients.enter(a).expect("a slot given back");
        drop((a2, a3));
        assert!(
            !clients.open.lock().unwrap().contains_key(&a),
            "no empty entries kept"
        );
    }
}
