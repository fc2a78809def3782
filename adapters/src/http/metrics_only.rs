//! A listener that serves only `GET /metrics` (Prometheus text format), for processes that are
//! not nodes but have metrics worth scraping: `warden sim --metrics ADDR`, so Grafana can watch
//! a simulated swarm with the node's dashboards. Its own thread and current-thread runtime;
//! stopped when the [`MetricsServer`] is dropped. Every other path is a 404 in the API's
//! error shape.

use std::net::SocketAddr;

use axum::routing::get;
use axum::Router;

use super::error::ApiError;
use super::MetricsRender;

/// A running `/metrics` listener.
pub struct MetricsServer {
    /// Where it listens (the port chosen when the address asked for port 0).
    pub addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Binds `addr` and serves `render()` at `GET /metrics` until the returned server is dropped.
/// Errors: the address cannot be bound (in use, not local), or the thread cannot start.
pub fn serve_metrics(addr: SocketAddr, render: MetricsRender) -> std::io::Result<MetricsServer> {
    let listener = std::net::TcpListener::bind(addr)?;
    listener.set_nonblocking(true)?;
    let addr = listener.local_addr()?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::Builder::new()
        .name("metrics-listener".into())
        .spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async move {
                let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
                    return;
                };
                let app = Router::new()
                    .route("/metrics", get(move || async move { render() }))
                    .fallback(|| async {
                        ApiError::new(
                            axum::http::StatusCode::NOT_FOUND,
                            "not_found",
                            "only GET /metrics is served here",
                        )
                    });
                let _ = axum::serve(listener, app)
                    .with_graceful_shutdown(async {
                        let _ = stopped.await;
                    })
                    .await;
            });
        })?;
    Ok(MetricsServer {
        addr,
        stop: Some(stop),
        thread: Some(thread),
    })
}
