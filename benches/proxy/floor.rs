//! The HTTP floor: the node's own serving stack (its [`serve`] on one runtime per core, its
//! [`Limited`] listener) and its forward client ([`forward`]), with nothing governed: no
//! token, no decision, no journal, no detectors, no metrics. The request's body is read whole
//! and forwarded, as the tool proxy does. What warden costs above this line is governance;
//! what this costs above nginx is the HTTP stack (hyper, axum, tokio).
//!
//! Runs as a child process of the bench (`proxy floor-proxy LISTEN UPSTREAM`), so its CPU
//! is read like the node's.

use std::net::SocketAddr;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, Request};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum::Router;
use warden::adapters::http::conn_limit::Limited;
use warden::adapters::http::serve::serve;
use warden::adapters::proxy::forward::{self, Clients, Secrets};

/// Largest body read (the node's default `limits.max_body_bytes`).
const BODY_BYTES_MAX: usize = 1 << 20;
/// Upstream deadline up to the answer's head, as the bench node's.
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(30);

/// Serves `listen` until the process is killed. Panics if it cannot bind.
pub fn run(listen: SocketAddr, up: SocketAddr) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    rt.block_on(async move {
        let tcp = tokio::net::TcpListener::bind(listen)
            .await
            .expect("binding the floor proxy");
        let base = format!("http://{up}");
        let app = Router::new().route(
            "/proxy/{tool}/{*rest}",
            any(
                move |Path((_, rest)): Path<(String, String)>, req: Request| {
                    let base = base.clone();
                    async move { relay(&base, &rest, req).await }
                },
            ),
        );
        let (_keep, stop) = tokio::sync::oneshot::channel();
        serve(
            Limited::new(tcp, 16_384, Duration::from_secs(300)),
            app,
            Duration::from_secs(10),
            stop,
        )
        .await;
    });
}

async fn relay(base: &str, rest: &str, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let Ok(body) = axum::body::to_bytes(body, BODY_BYTES_MAX).await else {
        return StatusCode::PAYLOAD_TOO_LARGE.into_response();
    };
    let uri = match forward::join(base, &format!("/{rest}"), parts.uri.query()) {
        Ok(uri) => uri,
        Err(e) => return e.into_response(),
    };
    let headers: HeaderMap = forward::request_headers(&parts.headers, &[]);
    let sent = forward::send(
        Clients,
        "bench",
        parts.method,
        uri,
        headers,
        Body::from(body),
        UPSTREAM_TIMEOUT,
    )
    .await;
    match sent {
        Ok((resp, _)) => {
            let (mut head, body) = resp.into_parts();
            forward::response_headers(&mut head.headers, &Secrets::default());
            Response::from_parts(head, Body::new(body))
        }
        Err(e) => e.into_response(),
    }
}
