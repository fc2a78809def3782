//! `GET /v1/events`: server-sent events (operator only). Every decision, halt, resume,
//! approval and restart, as JSON, with the event type as the SSE event name. A subscriber that
//! falls more than the bus capacity behind gets a `lagged` event with the number it missed,
//! then continues. Streams end when the node shuts down; a keep-alive comment every 15 s keeps
//! idle connections from being closed.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::extract::State;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde_json::{json, Value};
use tokio_stream::StreamExt;
use warden_actors::{Event, EventError};

use crate::http::auth::Operator;
use crate::http::AppState;

/// `GET /v1/events`.
pub fn router() -> Router<AppState> {
    Router::new().route("/v1/events", get(events))
}

/// One bus item as an SSE event.
fn sse(item: Result<Event, EventError>) -> SseEvent {
    match item {
        Ok(e) => {
            let data = serde_json::to_value(&e).unwrap_or(Value::Null);
            let name = data["type"].as_str().unwrap_or("event").to_string();
            SseEvent::default().event(name).data(data.to_string())
        }
        Err(EventError::Lagged(n)) => SseEvent::default()
            .event("lagged")
            .data(json!({"missed": n}).to_string()),
    }
}

async fn events(_: Operator, State(state): State<AppState>) -> Response {
    let stream = state
        .swarm
        .events()
        .map(|item| Ok::<_, std::convert::Infallible>(sse(item)));
    let mut rx = state.shutting_down.subscribe();
    let stream = UntilShutdown {
        inner: stream,
        stop: Box::pin(async move {
            let _ = rx.wait_for(|down| *down).await;
        }),
    };
    Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response()
}

/// A stream that ends when the node shuts down.
struct UntilShutdown<S> {
    inner: S,
    stop: Pin<Box<dyn Future<Output = ()> + Send>>,
}

impl<S: futures_core::Stream + Unpin> futures_core::Stream for UntilShutdown<S> {
    type Item = S::Item;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<S::Item>> {
        if self.stop.as_mut().poll(cx).is_ready() {
            return Poll::Ready(None);
        }
        Pin::new(&mut self.inner).poll_next(cx)
    }
}
