//! The connection limit: a listener that serves a bounded number of connections at once and
//! closes idle ones. At the bound, new connections wait in the kernel's accept backlog
//! (backpressure, not refusal); an idle connection ends so idle clients cannot hold the slots.

use std::net::SocketAddr;
use std::sync::Arc;
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
    idle: Duration,
}

impl Limited {
    /// Serves at most `connections_max` connections of `inner` at once; closes one that
    /// stays idle for `idle`.
    pub fn new(inner: tokio::net::TcpListener, connections_max: usize, idle: Duration) -> Self {
        Self {
            inner,
            permits: Arc::new(tokio::sync::Semaphore::new(connections_max.max(1))),
            idle,
        }
    }
}

/// A [`Limited`] listener's socket, duplicated, with the same permits: to accept on another
/// runtime ([`SharedListener::register`]). Every runtime accepting from one socket takes the
/// connections it has room for first, and the permits still bound them all together.
pub struct SharedListener {
    socket: std::net::TcpListener,
    permits: Arc<tokio::sync::Semaphore>,
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
            idle: self.idle,
        })
    }
}

/// A connection holding its permit.
pub struct LimitedIo {
    stream: tokio::net::TcpStream,
    _permit: tokio::sync::OwnedSemaphorePermit,
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
    /// handed to another runtime: [`Accepted::into_std`]). Waits for a permit first.
    pub async fn accept_raw(&mut self) -> Accepted {
        let permit = Arc::clone(&self.permits)
            .acquire_owned()
            .await
            .expect("the semaphore is never closed");
        loop {
            match self.inner.accept().await {
                Ok((stream, addr)) => {
                    let _ = stream.set_nodelay(true);
                    return Accepted {
                        stream,
                        permit,
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
    addr: SocketAddr,
    idle: Duration,
}

/// An accepted connection detached from the runtime that accepted it, to be served on another
/// ([`Detached::register`] there).
pub struct Detached {
    stream: std::net::TcpStream,
    permit: tokio::sync::OwnedSemaphorePermit,
    addr: SocketAddr,
    idle: Duration,
}

impl Accepted {
    /// The connection wrapped for serving on the calling runtime (its idle timer starts now).
    pub fn into_io(self) -> LimitedIo {
        LimitedIo {
            stream: self.stream,
            _permit: self.permit,
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
