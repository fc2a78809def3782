//! The gateway's side toward an upstream MCP server (streamable HTTP, MCP 2025-11-25): one
//! session per upstream, opened lazily with `initialize` and `notifications/initialized`,
//! its `Mcp-Session-Id` sent on every request, opened again once when the server says the
//! session is gone (404). Answers may come as JSON or as an SSE stream carrying the response.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use http_body_util::BodyExt;
use serde_json::{json, Value};

use crate::http::error::ApiError;
use crate::limits::MCP_ANSWER_BYTES_MAX;
use crate::proxy::llm::sse::Parser;
use crate::proxy::{forward, Proxy, Route};

/// The protocol version the gateway speaks to upstreams.
pub const UPSTREAM_VERSION: &str = "2025-11-25";

/// An upstream's session.
#[derive(Default)]
pub struct Session {
    state: tokio::sync::Mutex<Option<Option<String>>>,
}

/// One upstream answer: the JSON-RPC message, if any (a notification gets none).
type Answer = Option<Value>;

/// Sends `msg` to the upstream and returns its JSON-RPC answer.
///
/// # Errors
/// 502/504 when the upstream cannot be reached, answers with an HTTP error, or not with a
/// JSON-RPC message.
pub async fn request(
    proxy: &Proxy,
    route: &Route,
    session: &Arc<Session>,
    msg: &Value,
) -> Result<Answer, ApiError> {
    for attempt in 0..2 {
        let id = open(proxy, route, session).await?;
        match post(proxy, route, id.as_deref(), msg).await? {
            (StatusCode::NOT_FOUND, _, _) if id.is_some() && attempt == 0 => {
                // The server forgot the session: open a new one, once.
                *session.state.lock().await = None;
            }
            (s, _, _) if !s.is_success() => {
                return Err(bad_gateway(route, &format!("answered HTTP {s}")));
            }
            (_, _, answer) => return Ok(answer),
        }
    }
    Err(bad_gateway(route, "lost its session twice"))
}

/// The session id (none for a stateless server), opening the session if needed.
async fn open(proxy: &Proxy, route: &Route, session: &Session) -> Result<Option<String>, ApiError> {
    let mut state = session.state.lock().await;
    if let Some(id) = state.as_ref() {
        return Ok(id.clone());
    }
    let init = json!({"jsonrpc": "2.0", "id": "warden-initialize", "method": "initialize", "params": {
        "protocolVersion": UPSTREAM_VERSION, "capabilities": {},
        "clientInfo": {"name": "warden-gateway", "version": env!("CARGO_PKG_VERSION")}}});
    let (status, headers, answer) = post(proxy, route, None, &init).await?;
    if !status.is_success() || answer.as_ref().is_none_or(|a| a.get("result").is_none()) {
        return Err(bad_gateway(route, "refused to initialize"));
    }
    let id = headers
        .get("mcp-session-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let done = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
    post(proxy, route, id.as_deref(), &done).await?;
    *state = Some(id.clone());
    Ok(id)
}

/// One POST: status, headers and the JSON-RPC message of the answer (for a request, the
/// response with its id, from JSON or from an SSE stream).
async fn post(
    proxy: &Proxy,
    route: &Route,
    session: Option<&str>,
    msg: &Value,
) -> Result<(StatusCode, HeaderMap, Answer), ApiError> {
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(
        header::ACCEPT,
        HeaderValue::from_static("application/json, text/event-stream"),
    );
    headers.insert(
        HeaderName::from_static("mcp-protocol-version"),
        HeaderValue::from_static(UPSTREAM_VERSION),
    );
    if let Some(s) = session.and_then(|s| HeaderValue::from_str(s).ok()) {
        headers.insert(HeaderName::from_static("mcp-session-id"), s);
    }
    for (k, v) in &route.headers {
        headers.insert(k.clone(), v.clone());
    }
    let uri = forward::join(&route.url, "", None)?;
    let body = Body::from(serde_json::to_vec(msg).unwrap_or_default());
    let (resp, took) = forward::send(
        proxy.client,
        &route.name,
        Method::POST,
        uri,
        headers,
        body,
        route.timeout,
    )
    .await?;
    route.observe(took);
    let (head, body) = resp.into_parts();
    let read = http_body_util::Limited::new(body, MCP_ANSWER_BYTES_MAX).collect();
    let bytes = match tokio::time::timeout(route.timeout, read).await {
        Ok(Ok(b)) => b.to_bytes(),
        _ => {
            return Err(bad_gateway(
                route,
                "sent an answer that broke off, was too slow or too large",
            ))
        }
    };
    let sse = head
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/event-stream"));
    let answer = if bytes.is_empty() {
        None
    } else if sse {
        response_in_stream(&bytes, &msg["id"])
    } else {
        serde_json::from_slice(&bytes).ok()
    };
    Ok((head.status, head.headers, answer))
}

/// The JSON-RPC response to `id` inside an SSE answer.
fn response_in_stream(bytes: &[u8], id: &Value) -> Answer {
    let mut p = Parser::new(MCP_ANSWER_BYTES_MAX);
    p.push(bytes);
    p.push(b"\n\n");
    while let Ok(Some(e)) = p.next_event() {
        if let Ok(v) = serde_json::from_str::<Value>(&e.data) {
            if &v["id"] == id && (v.get("result").is_some() || v.get("error").is_some()) {
                return Some(v);
            }
        }
    }
    None
}

fn bad_gateway(route: &Route, what: &str) -> ApiError {
    ApiError::new(
        StatusCode::BAD_GATEWAY,
        "upstream_error",
        format!("MCP upstream `{}` {what}", route.name),
    )
}
