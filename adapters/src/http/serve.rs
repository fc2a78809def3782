//! The accept loop: every connection of the [`Limited`] listener is served by hyper's HTTP/1
//! connection with a **header read deadline** (a client that trickles its request headers is
//! cut off, so slow headers cannot hold the connection slots; the request deadline covers the
//! body and the handler), and all of them shut down gracefully on the stop signal. axum's own
//! `serve` sets no timer, so its connections have no such deadline.

use std::time::Duration;

use axum::serve::Listener;
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;

use super::conn_limit::Limited;

/// Serves `app` on `listener` until `stop` fires (or its sender is dropped), then asks every
/// open connection to finish its request in flight and close, and waits for them.
pub async fn serve(
    mut listener: Limited,
    app: Router,
    header_read_timeout: Duration,
    mut stop: tokio::sync::oneshot::Receiver<()>,
) {
    let graceful = GracefulShutdown::new();
    loop {
        let (io, _peer) = tokio::select! {
            conn = listener.accept() => conn,
            _ = &mut stop => break,
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
    drop(listener);
    graceful.shutdown().await;
}
