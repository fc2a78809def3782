//! The benchmark's upstream, in the harness's own process: a bare hyper HTTP/1.1 server on one
//! thread. `POST /search` (any path but the LLM one) answers 200 with a small JSON at once;
//! `POST .../chat/completions` is a fake OpenAI-compatible model: a whole answer, or a stream
//! of [`CHUNKS`] content chunks [`CHUNK_DELAY_US`] apart (the first at once), then the finish
//! chunk, the usage chunk when `stream_options.include_usage` asks for it, and `[DONE]`.
//!
//! Every streamed content chunk carries the time it was sent (`@<ns>@`, nanoseconds since
//! [`now_ns`]'s epoch, which the clients in this process share), so a client can tell each
//! frame's transit time. The usage an answer reports is [`usage_for`] of the request: the
//! prompt's characters / 4 (plus the chat format's framing), and a deterministic share of
//! the request's output limit, so the harness knows the real cost of a request it never sent.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};

static EPOCH: OnceLock<Instant> = OnceLock::new();

/// Nanoseconds since the harness's epoch (one clock for the upstream and every client).
pub fn now_ns() -> u64 {
    EPOCH.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

/// Content chunks per streamed answer.
pub static CHUNKS: AtomicU64 = AtomicU64::new(20);
/// Delay between two streamed chunks, µs.
pub static CHUNK_DELAY_US: AtomicU64 = AtomicU64::new(20_000);

/// The tool's answer: 200, `application/json`, 105 bytes.
pub const TOOL_ANSWER: &[u8] = br#"{"results":[{"title":"Benchmark result","url":"https://example.org/a","score":0.93}],"took_ms":0,"n":1}"#;

type Body = UnsyncBoxBody<Bytes, Infallible>;

/// Starts the upstream on its own thread; its address.
pub fn start() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a loopback port");
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    now_ns();
    std::thread::Builder::new()
        .name("upstream".into())
        .spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let l = tokio::net::TcpListener::from_std(listener).unwrap();
                loop {
                    let Ok((s, _)) = l.accept().await else {
                        tokio::time::sleep(Duration::from_millis(5)).await;
                        continue;
                    };
                    let _ = s.set_nodelay(true);
                    tokio::spawn(async move {
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(s), hyper::service::service_fn(handle))
                            .await;
                    });
                }
            });
        })
        .unwrap();
    addr
}

async fn handle(req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let path = req.uri().path().to_owned();
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => Bytes::new(),
    };
    if path.ends_with("/chat/completions") {
        return Ok(chat(&body));
    }
    Ok(Response::builder()
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from_static(TOOL_ANSWER)).boxed_unsync())
        .unwrap())
}

/// FNV-1a, 64 bits.
pub fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The usage the fake model reports for a request: (prompt tokens, completion tokens).
/// Prompt: 3 + per message 4 + ⌈content characters / 4⌉ (English text runs about four
/// characters per token). Completion: 10% of requests use their whole output limit (they stop
/// on `length`), the rest a share of it between 5% and 90%, skewed short (most answers end
/// well before the limit), chosen by a hash of the last message.
pub fn usage_for(req: &Value) -> (u64, u64) {
    let mut prompt = 3;
    let mut last = "";
    for m in req["messages"].as_array().into_iter().flatten() {
        let c = m["content"].as_str().unwrap_or("");
        prompt += 4 + (c.chars().count() as u64).div_ceil(4);
        last = c;
    }
    let max = req["max_completion_tokens"]
        .as_u64()
        .or(req["max_tokens"].as_u64())
        .unwrap_or(4_096);
    let u = (fnv(last.as_bytes()) % 10_000) as f64 / 10_000.0;
    let share = if u < 0.10 {
        1.0
    } else {
        let x = (u - 0.10) / 0.90;
        0.05 + 0.85 * x * x
    };
    let completion = ((max as f64) * share).ceil() as u64;
    (prompt, completion.min(max))
}

fn chat(body: &[u8]) -> Response<Body> {
    let req: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let (prompt, completion) = usage_for(&req);
    let model = req["model"].as_str().unwrap_or("bench-model").to_string();
    let usage = json!({"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion});
    if req["stream"] != true {
        let answer = json!({
            "id": "chatcmpl-bench", "object": "chat.completion", "created": 0, "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "A benchmark answer."}, "finish_reason": "stop"}],
            "usage": usage,
        });
        return Response::builder()
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(answer.to_string())).boxed_unsync())
            .unwrap();
    }
    let include_usage = req["stream_options"]["include_usage"] == true;
    let chunks = CHUNKS.load(Ordering::Relaxed);
    let delay = Duration::from_micros(CHUNK_DELAY_US.load(Ordering::Relaxed));
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, Infallible>>(4);
    tokio::spawn(async move {
        let event = |v: Value| Ok(Frame::data(Bytes::from(format!("data: {v}\n\n"))));
        let chunk = |delta: Value, finish: Value| {
            json!({"id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": 0, "model": model,
                   "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
        };
        for i in 0..chunks {
            if i > 0 {
                tokio::time::sleep(delay).await;
            }
            let text = format!("@{}@ ", now_ns());
            if tx
                .send(event(chunk(json!({"content": text}), Value::Null)))
                .await
                .is_err()
            {
                return;
            }
        }
        let _ = tx.send(event(chunk(json!({}), json!("stop")))).await;
        if include_usage {
            let u = json!({"id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": 0,
                           "model": model, "choices": [], "usage": usage});
            let _ = tx.send(event(u)).await;
        }
        let _ = tx
            .send(Ok(Frame::data(Bytes::from_static(b"data: [DONE]\n\n"))))
            .await;
    });
    let stream = StreamBody::new(tokio_stream::wrappers::ReceiverStream::new(rx));
    Response::builder()
        .header("content-type", "text/event-stream")
        .header("cache-control", "no-cache")
        .body(stream.boxed_unsync())
        .unwrap()
}
