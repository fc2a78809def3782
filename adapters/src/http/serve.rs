//! The accept loops: every connection of the [`Limited`] listener is served by hyper's HTTP/1
//! connection with a **header read deadline** (a client that trickles its request headers is
//! cut off, so slow headers cannot hold the connection slots; the request deadline covers the
//! body and the handler), and all of them shut down gracefully on the stop signal. axum's own
//! `serve` sets no timer, so its connections have no such deadline.
//!
//! **One runtime per core.** Connections are served on [`HttpThreads`]: one single-worker
//! runtime per core, each accepting from the same listening socket. A connection, its
//! handler and the handler's upstream calls (the proxy's client keeps one pool per thread:
//! [`crate::proxy::forward::Clients`]) then stay on one thread, as in nginx's workers: no
//! work-stealing hand-offs and wake-ups between worker threads within a call. The runtime
//! that calls [`serve`] keeps everything else (actors' shards are their own runtimes). The
//! price: no work stealing between serving threads either, so a request that takes long to
//! judge (a body up to the node's limit) delays the other connections of its thread only.

use std::sync::Arc;
use std::time::Duration;

use axum::serve::Listener;
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::sync::watch;

use super::conn_limit::{Limited, SharedListener};
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
/// [`HttpThreads`]; if they cannot start (or the socket cannot be shared), on the calling
/// runtime.
pub async fn serve(
    listener: Limited,
    app: Router,
    header_read_timeout: Duration,
    stop: tokio::sync::oneshot::Receiver<()>,
) {
    let graceful = Arc::new(GracefulShutdown::new());
    let (halt, halted) = watch::channel(false);
    let threads = HttpThreads::start();
    let handles = threads
        .as_ref()
        .map(HttpThreads::handles)
        .unwrap_or_default();
    let mut loops = Vec::new();
    for rt in &handles {
        let Ok(shared) = listener.share() else { break };
        let accept = accept_shared(
            shared,
            app.clone(),
            header_read_timeout,
            graceful.clone(),
            halted.clone(),
        );
        loops.push(rt.spawn(accept));
    }
    let here = loops.is_empty().then(|| {
        let accept = accept_loop(listener, app, header_read_timeout, graceful.clone(), halted);
        tokio::spawn(accept)
    });
    let _ = stop.await;
    let _ = halt.send(true);
    for l in loops.into_iter().chain(here) {
        let _ = l.await;
    }
    if let Ok(graceful) = Arc::try_unwrap(graceful) {
        graceful.shutdown().await;
    }
    drop(threads);
}

/// [`accept_loop`] on a shared socket, registered with the runtime that runs this.
async fn accept_shared(
    shared: SharedListener,
    app: Router,
    header_read_timeout: Duration,
    graceful: Arc<GracefulShutdown>,
    halted: watch::Receiver<bool>,
) {
    match shared.register() {
        Ok(listener) => accept_loop(listener, app, header_read_timeout, graceful, halted).await,
        Err(e) => eprintln!("warden node: a serving thread cannot listen: {e}"),
    }
}

/// Accepts until `halted`, serving each connection as its own task on this runtime.
async fn accept_loop(
    mut listener: Limited,
    app: Router,
    header_read_timeout: Duration,
    graceful: Arc<GracefulShutdown>,
    mut halted: watch::Receiver<bool>,
) {
    loop {
        let (io, _peer) = tokio::select! {
            conn = listener.accept() => conn,
            _ = halted.wait_for(|h| *h) => break,
        };
        let mut http = hyper::server::conn::http1::Builder::new();
        http.timer(TokioTimer::new())
            .header_read_timeout(header_read_timeout);
        let conn = http.serve_connection(TokioIo::new(io), TowerToHyperService::new(app.clone()));
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            // A client going away mid-request is its own business.
            let _ = conn.await;
        });
    }
}
