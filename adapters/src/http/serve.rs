//! The accept loops: every connection of the [`Limited`] listener is served by hyper's HTTP/1
//! connection with a **header read deadline** (a client that trickles its request headers is
//! cut off, so slow headers cannot hold the connection slots; the request deadline covers the
//! body and the handler), and all of them shut down gracefully on the stop signal. axum's own
//! `serve` sets no timer, so its connections have no such deadline.
//!
//! **One runtime per core.** Connections are served on [`HttpThreads`]: one single-worker
//! runtime per core, each accepting from the same listening socket, balanced by open
//! connections (`Balance`: a thread that accepts while another serves fewer hands the
//! connection over, once). A connection, its handler and the handler's upstream calls (the
//! proxy's client keeps one pool per thread: [`crate::proxy::forward::Clients`]) then stay on
//! one thread, as in nginx's workers: no work-stealing hand-offs and wake-ups between worker
//! threads within a call. The runtime that calls [`serve`] keeps everything else (actors'
//! shards are their own runtimes). The price: no work stealing between serving threads
//! either, so a request that takes long to judge (a body up to the node's limit) delays the
//! other connections of its thread only, and balance is by connections, not by their load.

use std::sync::Arc;
use std::time::Duration;

use std::sync::atomic::{AtomicUsize, Ordering};

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::sync::{mpsc, watch};

use super::conn_limit::{Accepted, Detached, Limited, SharedListener};
use crate::limits::HTTP_THREADS_MAX;

/// The runtimes connections are served on: one per core (at most [`HTTP_THREADS_MAX`]), of
/// one worker thread each (`warden-http-N`). The multi-threaded flavour with one worker, as
/// the agent shards, for its LIFO slot: a task woken by the running one runs next, on the
/// same thread. Dropped without blocking, so also from async code.
pub struct HttpThreads(Vec<tokio::runtime::Runtime>);

impl HttpThreads {
    /// Starts one runtime per available core. Errors: a thread could not be started.
    pub fn start() -> std::io::Result<Self> {
        let n = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .min(HTTP_THREADS_MAX);
        let runtimes = (0..n)
            .map(|i| {
                tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(1)
                    .thread_name(format!("warden-http-{i}"))
                    .enable_all()
                    .build()
            })
            .collect::<std::io::Result<Vec<_>>>()?;
        Ok(Self(runtimes))
    }

    fn handles(&self) -> Vec<tokio::runtime::Handle> {
        self.0.iter().map(|rt| rt.handle().clone()).collect()
    }
}

impl Drop for HttpThreads {
    fn drop(&mut self) {
        for rt in self.0.drain(..) {
            rt.shutdown_background();
        }
    }
}

/// Serves `app` on `listener` until `stop` fires (or its sender is dropped), then asks every
/// open connection to finish its request in flight and close, and waits for them. Serves on
/// [`HttpThreads`], balanced by open connections; if they cannot start (or the socket cannot be
/// shared), on the calling runtime.
pub async fn serve(
    listener: Limited,
    app: Router,
    header_read_timeout: Duration,
    stop: tokio::sync::oneshot::Receiver<()>,
) {
    let serving = Serving {
        app,
        header_read_timeout,
        graceful: Arc::new(GracefulShutdown::new()),
    };
    let (halt, halted) = watch::channel(false);
    let threads = HttpThreads::start();
    let handles = threads
        .as_ref()
        .map(HttpThreads::handles)
        .unwrap_or_default();
    let shared: Vec<SharedListener> = handles
        .iter()
        .map_while(|_| listener.share().ok())
        .collect();
    let (balance, inboxes) = Balance::new(shared.len().max(1));
    let mut loops = Vec::new();
    for ((rt, shared), (me, inbox)) in handles
        .iter()
        .zip(shared)
        .zip(inboxes.into_iter().enumerate())
    {
        let accept = accept_shared(
            shared,
            me,
            inbox,
            balance.clone(),
            serving.clone(),
            halted.clone(),
        );
        loops.push(rt.spawn(accept));
    }
    let here = loops.is_empty().then(|| {
        let (balance, mut inboxes) = Balance::new(1);
        let inbox = inboxes.pop().expect("one inbox");
        let accept = accept_loop(listener, 0, inbox, balance, serving.clone(), halted);
        tokio::spawn(accept)
    });
    let _ = stop.await;
    let _ = halt.send(true);
    for l in loops.into_iter().chain(here) {
        let _ = l.await;
    }
    if let Ok(graceful) = Arc::try_unwrap(serving.graceful) {
        graceful.shutdown().await;
    }
    drop(threads);
}

/// What serving a connection needs, shared by the serving threads.
#[derive(Clone)]
struct Serving {
    app: Router,
    header_read_timeout: Duration,
    graceful: Arc<GracefulShutdown>,
}

impl Serving {
    /// Serves `conn` as its own task on the calling runtime, counted as open on serving
    /// thread `me` until it ends (the count was raised by whoever chose `me`).
    fn spawn(&self, conn: Accepted, me: usize, balance: Arc<Balance>) {
        let mut http = hyper::server::conn::http1::Builder::new();
        http.timer(TokioTimer::new())
            .header_read_timeout(self.header_read_timeout);
        let service = TowerToHyperService::new(self.app.clone());
        let conn = http.serve_connection(TokioIo::new(conn.into_io()), service);
        let conn = self.graceful.watch(conn);
        tokio::spawn(async move {
            let _open = Open { balance, me };
            // A client going away mid-request is its own business.
            let _ = conn.await;
        });
    }
}

/// **Least-connections balancing** of the serving threads. Every thread accepts from the
/// same socket, and which one the kernel wakes for a new connection is up to it (a profile
/// under 64 benchmark connections showed the two threads at 68% and 32% of the node's CPU). So a thread that accepts a connection while
/// another serves fewer hands it over (through that thread's inbox, once per connection,
/// not per request); a tie stays where it was accepted. The counts are read without a lock,
/// so concurrent accepts may leave the threads one or two connections apart.
struct Balance {
    /// Connections open (or on their way) per serving thread.
    open: Vec<AtomicUsize>,
    /// Each thread's inbox of connections handed to it. Unbounded, yet bounded by the
    /// listener's permits: every connection in an inbox holds one.
    inboxes: Vec<mpsc::UnboundedSender<Detached>>,
}

/// Lowers a serving thread's open count when its connection ends.
struct Open {
    balance: Arc<Balance>,
    me: usize,
}

impl Drop for Open {
    fn drop(&mut self) {
        self.balance.open[self.me].fetch_sub(1, Ordering::Relaxed);
    }
}

impl Balance {
    /// Balancing over `n` threads, and their inboxes (the `i`th for thread `i`).
    fn new(n: usize) -> (Arc<Self>, Vec<mpsc::UnboundedReceiver<Detached>>) {
        let (senders, receivers) = (0..n).map(|_| mpsc::unbounded_channel()).unzip();
        let open = (0..n).map(|_| AtomicUsize::new(0)).collect();
        let balance = Self {
            open,
            inboxes: senders,
        };
        (Arc::new(balance), receivers)
    }

    /// The thread that serves a connection accepted on thread `me`: the one with the fewest
    /// open connections, `me` on a tie. Counts the connection as open there.
    fn choose(&self, me: usize) -> usize {
        let load = |i: usize| self.open[i].load(Ordering::Relaxed);
        let (best, fewest) = (0..self.open.len())
            .map(|i| (i, load(i)))
            .min_by_key(|&(_, n)| n)
            .unwrap_or((me, 0));
        let target = if load(me) <= fewest { me } else { best };
        self.open[target].fetch_add(1, Ordering::Relaxed);
        target
    }

    /// Hands `conn` to thread `target`'s inbox; when that fails (the thread is gone, or the
    /// socket failed), the connection is closed and no longer counted there.
    fn hand_over(&self, conn: Accepted, target: usize) {
        let sent = conn
            .into_std()
            .is_ok_and(|detached| self.inboxes[target].send(detached).is_ok());
        if !sent {
            self.open[target].fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// [`accept_loop`] on a shared socket, registered with the runtime that runs this.
async fn accept_shared(
    shared: SharedListener,
    me: usize,
    inbox: mpsc::UnboundedReceiver<Detached>,
    balance: Arc<Balance>,
    serving: Serving,
    halted: watch::Receiver<bool>,
) {
    match shared.register() {
        Ok(listener) => accept_loop(listener, me, inbox, balance, serving, halted).await,
        Err(e) => {
            // Never the least loaded, so no connection is handed to a thread that is gone.
            balance.open[me].store(usize::MAX / 2, Ordering::Relaxed);
            eprintln!("warden node: a serving thread cannot listen: {e}");
        }
    }
}

/// Serving thread `me` until `halted`: accepts connections (serving each as its own task
/// here, or handing it to a thread with fewer: [`Balance`]) and serves those handed to it.
async fn accept_loop(
    mut listener: Limited,
    me: usize,
    mut inbox: mpsc::UnboundedReceiver<Detached>,
    balance: Arc<Balance>,
    serving: Serving,
    mut halted: watch::Receiver<bool>,
) {
    loop {
        let conn = tokio::select! {
            conn = listener.accept_raw() => {
                let target = balance.choose(me);
                if target != me {
                    balance.hand_over(conn, target);
                    continue;
                }
                conn
            }
            Some(detached) = inbox.recv() => match detached.register() {
                Ok(conn) => conn,
                Err(_) => {
                    balance.open[me].fetch_sub(1, Ordering::Relaxed);
                    continue;
                }
            },
            _ = halted.wait_for(|h| *h) => break,
        };
        serving.spawn(conn, me, balance.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// One request on an open connection; the answer's body (the serving thread's name).
    async fn ask(conn: &mut tokio::net::TcpStream) -> String {
        conn.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut buf = vec![0u8; 1024];
        let n = conn.read(&mut buf).await.unwrap();
        let text = String::from_utf8_lossy(&buf[..n]).to_string();
        text.rsplit("\r\n\r\n").next().unwrap_or("").to_string()
    }

    /// One client holds at most its share of the connections: past it, a new connection is
    /// answered 503 and closed (while the listener still has room), and a slot given back is
    /// usable again.
    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn one_client_holds_at_most_its_share_of_the_connections() {
        let app = Router::new().route("/", axum::routing::get(|| async { "ok" }));
        let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = tcp.local_addr().unwrap();
        let listener = Limited::new(tcp, 64, Duration::from_secs(30)).per_client(2);
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let server = tokio::spawn(serve(listener, app, Duration::from_secs(5), stopped));
        let mut held = Vec::new();
        for _ in 0..2 {
            let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
            assert_eq!(ask(&mut c).await, "ok");
            held.push(c);
        }
        let mut third = tokio::net::TcpStream::connect(addr).await.unwrap();
        let mut answer = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(5), third.read_to_end(&mut answer));
        read.await.expect("closed at once").unwrap();
        let text = String::from_utf8_lossy(&answer);
        assert!(text.starts_with("HTTP/1.1 503"), "{text}");
        assert!(text.contains("too_many_connections"), "{text}");
        let body = text.rsplit("\r\n\r\n").next().unwrap();
        serde_json::from_str::<serde_json::Value>(body).expect("a JSON body of its stated length");
        drop(held.pop());
        tokio::time::sleep(Duration::from_millis(200)).await;
        let mut again = tokio::net::TcpStream::connect(addr).await.unwrap();
        assert_eq!(ask(&mut again).await, "ok");
        let _ = stop.send(());
        drop((held, again));
        server.await.unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn connections_are_spread_evenly_over_the_serving_threads() {
        let app = Router::new().route(
            "/",
            axum::routing::get(|| async {
                std::thread::current().name().unwrap_or("?").to_string()
            }),
        );
        let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = tcp.local_addr().unwrap();
        let listener = Limited::new(tcp, 64, Duration::from_secs(30));
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let server = tokio::spawn(serve(listener, app, Duration::from_secs(5), stopped));
        let threads = HttpThreads::start().map_or(1, |t| t.0.len());
        // Held open, one after the other: whichever thread the kernel wakes, each new
        // connection goes to a thread with the fewest.
        let mut conns = Vec::new();
        for _ in 0..threads * 4 {
            let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
            conns.push((ask(&mut c).await, c));
        }
        let mut served = std::collections::BTreeMap::<String, usize>::new();
        for (name, _) in &conns {
            *served.entry(name.clone()).or_default() += 1;
        }
        assert_eq!(served.len(), threads, "{served:?}");
        assert!(served.values().all(|n| *n == 4), "{served:?}");
        // Two connections of one thread close: the next two go to that thread.
        let first = conns[0].0.clone();
        for _ in 0..2 {
            let i = conns.iter().position(|(n, _)| *n == first).unwrap();
            drop(conns.remove(i));
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        for _ in 0..2 {
            let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
            assert_eq!(ask(&mut c).await, first);
            conns.push((first.clone(), c));
        }
        let _ = stop.send(());
        drop(conns);
        server.await.unwrap();
    }
}
