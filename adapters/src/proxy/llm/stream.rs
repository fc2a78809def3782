//! A live stream: a task pumps the upstream's events to the client through a bounded channel,
//! passing text at once, holding tool calls until they are judged ([`super::meter`]), and
//! ending with the API's own error event when the agent is halted (any halt: the task selects
//! on the agent's halt watch, so the cut does not wait for the next upstream frame), a tool
//! call is refused, or the upstream breaks. A client that goes away ends the task, which
//! drops the upstream's answer (closing that connection: the upstream stops generating).
//! Whatever ends it, the step is settled once, from the stream's usage or what it streamed.

use axum::body::Body;
use axum::http::header;
use axum::response::Response;
use bytes::Bytes;
use http_body_util::BodyExt;
use tokio::sync::{mpsc, OwnedSemaphorePermit};
use tokio_stream::wrappers::ReceiverStream;

use super::meter::{Meter, Next};
use super::sse::Parser;
use super::LiveCall;
use crate::limits::{
    LLM_HELD_BYTES_MAX, SSE_EVENT_BYTES_MAX, STREAM_FRAMES_BUFFERED, STREAM_KEEP_ALIVE,
};
use crate::proxy::{forward, Forwarded, Route};

type Frame = Result<Bytes, std::io::Error>;

/// Starts pumping `resp` and answers with the stream the client reads.
pub(super) fn start(
    live: LiveCall,
    resp: axum::http::Response<hyper::body::Incoming>,
    slot: OwnedSemaphorePermit,
    route: &Route,
) -> Response {
    let (mut head, body) = resp.into_parts();
    forward::response_headers(&mut head.headers, &route.secrets);
    head.headers.remove(header::CONTENT_LENGTH);
    if let Ok(v) = live.step.to_string().parse() {
        head.headers.insert(crate::proxy::tool::STEP_HEADER, v);
    }
    head.extensions.insert(Forwarded);
    let (tx, rx) = mpsc::channel::<Frame>(STREAM_FRAMES_BUFFERED);
    tokio::spawn(pump(live, body, tx, slot));
    Response::from_parts(head, Body::from_stream(ReceiverStream::new(rx)))
}

/// How a stream ended.
enum End {
    /// The upstream finished it.
    Finished,
    /// It was cut (halt, refused call, broken upstream, client gone).
    Cut,
}

async fn pump(
    live: LiveCall,
    mut body: hyper::body::Incoming,
    tx: mpsc::Sender<Frame>,
    _slot: OwnedSemaphorePermit,
) {
    let mut halt = live.state.proxy.halts.watch(&live.state.swarm, live.h.id());
    let mut meter = Meter::new(live.api, LLM_HELD_BYTES_MAX, !live.usage_asked);
    let mut parser = Parser::new(SSE_EVENT_BYTES_MAX);
    // A comment now and then keeps the client's connection (and the node's idle limit) from
    // taking a silent stretch (a model thinking, a tool call held) for a dead peer.
    let mut keep_alive = tokio::time::interval(STREAM_KEEP_ALIVE);
    keep_alive.tick().await;
    let end = loop {
        let frame = tokio::select! {
            biased;
            // A closed watch (never at run time: the watch lives while a receiver does) is
            // not a halt; the branch is then off for this round.
            Ok(()) = halt.changed() => {
                let msg = format!("warden: agent {} was halted; the stream is cut", live.h.id());
                let _ = tx.send(Ok(live.api.error_event("halted", &msg).into())).await;
                break End::Cut;
            }
            _ = tx.closed() => break End::Cut,
            _ = keep_alive.tick() => {
                if tx.send(Ok(Bytes::from_static(b": keep-alive\n\n"))).await.is_err() {
                    break End::Cut;
                }
                continue;
            }
            f = body.frame() => f,
        };
        let data = match frame {
            None => break finish(&live, &mut meter, &tx).await,
            Some(Err(_)) => {
                let msg = "warden: the upstream's stream broke off";
                let _ = tx
                    .send(Ok(live.api.error_event("upstream_error", msg).into()))
                    .await;
                break End::Cut;
            }
            Some(Ok(f)) => match f.into_data() {
                Ok(d) => d,
                Err(_) => continue,
            },
        };
        parser.push(&data);
        if let Some(end) = drain(&live, &mut parser, &mut meter, &tx).await {
            break end;
        }
    };
    drop(body);
    let rest = parser.rest();
    if matches!(end, End::Finished) && rest.iter().all(u8::is_ascii_whitespace) && !rest.is_empty()
    {
        // The line ends after the last event; anything else unended is not passed on.
        let _ = tx.send(Ok(rest)).await;
    }
    let finished = matches!(end, End::Finished) && meter.complete();
    let used = meter.used(live.bound, live.price.reasoning);
    live.state.proxy.halts.tidy();
    live.settle(finished, used);
}

/// Passes on every whole event received so far; `Some` when the stream must end.
async fn drain(
    live: &LiveCall,
    parser: &mut Parser,
    meter: &mut Meter,
    tx: &mpsc::Sender<Frame>,
) -> Option<End> {
    loop {
        let event = match parser.next_event() {
            Ok(Some(e)) => e,
            Ok(None) => return None,
            Err(n) => {
                let msg = format!(
                    "warden: the upstream sent an event of {n} bytes, over the proxy's bound"
                );
                let _ = tx
                    .send(Ok(live.api.error_event("upstream_error", &msg).into()))
                    .await;
                return Some(End::Cut);
            }
        };
        let next = meter.event(event);
        if let Some(end) = act(live, next, tx).await {
            return Some(end);
        }
    }
}

/// The upstream ended the stream: held calls are judged, what is left is passed on. A stream
/// that stopped before any of its API's end events (`[DONE]`; `response.completed`,
/// `incomplete` or `failed`; `message_stop`; an `error` event) ends with an `upstream_error`
/// event: a client reading a bare end would take the answer for complete.
async fn finish(live: &LiveCall, meter: &mut Meter, tx: &mpsc::Sender<Frame>) -> End {
    if let Some(next) = meter.finish() {
        if let Some(end) = act(live, next, tx).await {
            return end;
        }
    }
    if meter.ended() {
        return End::Finished;
    }
    let msg =
        "warden: the upstream ended the stream before its end event; the answer is incomplete";
    let _ = tx
        .send(Ok(live.api.error_event("upstream_error", msg).into()))
        .await;
    End::Cut
}

/// Carries out what the meter said; `Some` when the stream must end.
async fn act(live: &LiveCall, next: Next, tx: &mpsc::Sender<Frame>) -> Option<End> {
    let out = match next {
        Next::Send(b) => vec![b],
        Next::Hold | Next::Skip => return None,
        Next::Fail(code, msg) => {
            let _ = tx.send(Ok(live.api.error_event(code, &msg).into())).await;
            return Some(End::Cut);
        }
        Next::Judge(calls, events) => {
            if let Some(f) = crate::proxy::judge::judge(&live.state, &live.h, &calls).await {
                let _ = tx
                    .send(Ok(live
                        .api
                        .error_event("tool_call_refused", &f.message)
                        .into()))
                    .await;
                return Some(End::Cut);
            }
            events
        }
    };
    for b in out {
        if !b.is_empty() && tx.send(Ok(b)).await.is_err() {
            return Some(End::Cut);
        }
    }
    None
}
