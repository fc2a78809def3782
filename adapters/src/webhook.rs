//! Webhooks: the node announces halts and approval requests (or any other event type chosen
//! in the config) to HTTP endpoints, signed with HMAC-SHA256.
//!
//! ## A delivery
//! `POST <url>` with a JSON body `{"id", "type", "at_ms", "event"}` (`event` is the same JSON
//! as on `GET /v1/events`) and the headers:
//!
//! | header | value |
//! |---|---|
//! | `X-Warden-Event` | the event type, e.g. `halt` |
//! | `X-Warden-Delivery` | the delivery id (the same on every retry) |
//! | `X-Warden-Timestamp` | Unix seconds when this attempt was signed |
//! | `X-Warden-Signature` | `sha256=` + hex HMAC-SHA256 of `<timestamp>.<body>` keyed with the secret |
//!
//! A receiver recomputes the HMAC over the timestamp, a dot and the raw body, compares in
//! constant time, and rejects old timestamps (replays).
//!
//! ## Limits
//! Each webhook has its own delivery thread and a queue of [`WEBHOOK_QUEUE_EVENTS_MAX`] events; when the queue
//! is full (a receiver down for long), new events for it are dropped and counted
//! (`warden_webhook_deliveries_total{result="dropped"}`), never blocking governance. An
//! attempt times out after [`WEBHOOK_ATTEMPT_TIMEOUT`]; transport errors, 429 and 5xx are retried up
//! to [`WEBHOOK_ATTEMPTS_MAX`] times with exponential backoff from [`WEBHOOK_BACKOFF_FIRST`]; any other 4xx
//! is final (`rejected`). At shutdown, queued deliveries get one attempt each within
//! [`WEBHOOK_SHUTDOWN_GRACE`].

use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use warden_actors::{EventError, EventStream};

use crate::limits::{
    WEBHOOK_ATTEMPTS_MAX, WEBHOOK_ATTEMPT_TIMEOUT, WEBHOOK_BACKOFF_FIRST, WEBHOOK_QUEUE_EVENTS_MAX,
    WEBHOOK_SECRET_LEN_MIN, WEBHOOK_SHUTDOWN_GRACE,
};

/// Event types a webhook may subscribe to: every event's `type`.
pub const EVENT_TYPES: [&str; 7] = warden_actors::Event::TYPES;

/// One webhook, as configured.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WebhookConfig {
    /// `http://` or `https://` endpoint.
    pub url: String,
    /// Event types to send (default: `halt`, `approval_requested`).
    pub events: Vec<String>,
    /// The HMAC key.
    pub secret: String,
}

impl WebhookConfig {
    /// Checks the URL, the event names and the secret; the error says what to change.
    pub fn validate(&self) -> Result<(), String> {
        let uri: axum::http::Uri = self
            .url
            .parse()
            .map_err(|e| format!("url {:?} is not a URL: {e}", self.url))?;
        match uri.scheme_str() {
            Some("http" | "https") if uri.host().is_some() => {}
            _ => {
                return Err(format!(
                    "url {:?} must be an http:// or https:// URL with a host",
                    self.url
                ))
            }
        }
        for e in &self.events {
            if !EVENT_TYPES.contains(&e.as_str()) {
                return Err(format!(
                    "unknown event {e:?}; expected one of: {}",
                    EVENT_TYPES.join(", ")
                ));
            }
        }
        if self.secret.len() < WEBHOOK_SECRET_LEN_MIN {
            return Err(format!(
                "secret must be at least {WEBHOOK_SECRET_LEN_MIN} characters (it keys the HMAC signature)"
            ));
        }
        Ok(())
    }
}

/// `sha256=<hex>`: HMAC-SHA256 of `<timestamp>.<body>` keyed with `secret`.
pub fn signature(secret: &str, timestamp: u64, body: &[u8]) -> String {
    let ts = timestamp.to_string();
    format!("sha256={}", hmac_hex(secret, &[ts.as_bytes(), b".", body]))
}

fn hmac_hex(secret: &str, parts: &[&[u8]]) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
    let mut ctx = ring::hmac::Context::with_key(&key);
    for p in parts {
        ctx.update(p);
    }
    warden_actors::ids::hex(ctx.sign().as_ref())
}

struct Delivery {
    id: String,
    kind: String,
    body: Vec<u8>,
}

/// Running webhook delivery: a dispatcher task over the event stream and a thread per hook.
pub struct Webhooks {
    dispatcher: tokio::task::JoinHandle<()>,
    threads: Vec<std::thread::JoinHandle<()>>,
    deadline: Arc<parking_lot::Mutex<Option<Instant>>>,
}

fn count(result: &'static str) {
    metrics::counter!("warden_webhook_deliveries_total", "result" => result).increment(1);
}

/// Starts delivering `events` to `hooks`.
pub fn start(hooks: Vec<WebhookConfig>, mut events: EventStream) -> Webhooks {
    let deadline = Arc::new(parking_lot::Mutex::new(None::<Instant>));
    let mut senders: Vec<(WebhookConfig, SyncSender<Arc<Delivery>>)> = Vec::new();
    let mut threads = Vec::new();
    for hook in hooks {
        let (tx, rx) = mpsc::sync_channel(WEBHOOK_QUEUE_EVENTS_MAX);
        let (h, d) = (hook.clone(), Arc::clone(&deadline));
        let spawned = std::thread::Builder::new()
            .name("warden-webhook".into())
            .spawn(move || deliver_loop(&h, &rx, &d));
        if let Ok(t) = spawned {
            threads.push(t);
            senders.push((hook, tx));
        }
    }
    let prefix = {
        let mut b = [0u8; 6];
        let _ = getrandom::fill(&mut b);
        warden_actors::ids::hex(&b)
    };
    let dispatcher = tokio::spawn(async move {
        use tokio_stream::StreamExt;
        let mut n: u64 = 0;
        while let Some(item) = events.next().await {
            let event = match item {
                Ok(e) => e,
                Err(EventError::Lagged(missed)) => {
                    // The bus outran this reader: those events are gone for every hook.
                    metrics::counter!("warden_webhook_deliveries_total", "result" => "dropped")
                        .increment(missed);
                    continue;
                }
            };
            // Decide on the type before any encoding: decisions can come a million a second.
            let kind = event.type_name();
            if !senders
                .iter()
                .any(|(h, _)| h.events.iter().any(|e| e == kind))
            {
                continue;
            }
            let kind = kind.to_string();
            let value = serde_json::to_value(&event).unwrap_or(Value::Null);
            n += 1;
            let at_ms = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64);
            let id = format!("{prefix}-{n}");
            let body = json!({"id": id, "type": kind, "at_ms": at_ms, "event": value});
            let delivery = Arc::new(Delivery {
                id,
                kind: kind.clone(),
                body: body.to_string().into_bytes(),
            });
            for (hook, tx) in &senders {
                if hook.events.contains(&kind) {
                    match tx.try_send(Arc::clone(&delivery)) {
                        Ok(()) => {}
                        Err(TrySendError::Full(_)) => count("dropped"),
                        Err(TrySendError::Disconnected(_)) => {}
                    }
                }
            }
        }
    });
    Webhooks {
        dispatcher,
        threads,
        deadline,
    }
}

impl Webhooks {
    /// Stops taking events; queued deliveries get one attempt each within
    /// [`WEBHOOK_SHUTDOWN_GRACE`], then the threads end.
    pub async fn shutdown(self) {
        *self.deadline.lock() = Some(Instant::now() + WEBHOOK_SHUTDOWN_GRACE);
        self.dispatcher.abort();
        let _ = self.dispatcher.await; // drops the senders: threads see the end of the queue
        let threads = self.threads;
        let _ = tokio::task::spawn_blocking(move || {
            for t in threads {
                let _ = t.join();
            }
        })
        .await;
    }
}

fn deliver_loop(
    hook: &WebhookConfig,
    rx: &Receiver<Arc<Delivery>>,
    deadline: &parking_lot::Mutex<Option<Instant>>,
) {
    while let Ok(d) = rx.recv() {
        let mut backoff = WEBHOOK_BACKOFF_FIRST;
        for attempt in 1..=WEBHOOK_ATTEMPTS_MAX {
            let stopping = *deadline.lock();
            // An attempt never outlives the shutdown grace.
            let limit = match stopping {
                Some(t) => t
                    .saturating_duration_since(Instant::now())
                    .min(WEBHOOK_ATTEMPT_TIMEOUT),
                None => WEBHOOK_ATTEMPT_TIMEOUT,
            };
            if limit.is_zero() {
                count("dropped");
                break;
            }
            let agent: ureq::Agent = ureq::Agent::config_builder()
                .http_status_as_error(false)
                .timeout_global(Some(limit))
                .build()
                .into();
            let ts = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            let sent = agent
                .post(&hook.url)
                .header("Content-Type", "application/json")
                .header("User-Agent", concat!("warden/", env!("CARGO_PKG_VERSION")))
                .header("X-Warden-Event", &d.kind)
                .header("X-Warden-Delivery", &d.id)
                .header("X-Warden-Timestamp", &ts.to_string())
                .header("X-Warden-Signature", &signature(&hook.secret, ts, &d.body))
                .send(&d.body[..]);
            let retry = match sent {
                Ok(resp) if resp.status().is_success() => {
                    count("delivered");
                    false
                }
                Ok(resp) if resp.status().as_u16() == 429 || resp.status().is_server_error() => {
                    true
                }
                Ok(_) => {
                    count("rejected");
                    false
                }
                Err(_) => true,
            };
            if !retry {
                break;
            }
            if attempt == WEBHOOK_ATTEMPTS_MAX || stopping.is_some() {
                count("failed");
                break;
            }
            count("retried");
            // Sleep in short slices, so a shutdown does not wait out a long backoff.
            let until = Instant::now() + backoff;
            while Instant::now() < until && deadline.lock().is_none() {
                std::thread::sleep(Duration::from_millis(50).min(until - Instant::now()));
            }
            backoff *= 2;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_are_hmac_sha256_of_timestamp_dot_body() {
        // RFC 4231, test case 2.
        assert_eq!(
            hmac_hex("Jefe", &[b"what do ya ", b"want for nothing?"]),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        let sig = signature("Jefe", 0, b"what do ya want for nothing?");
        assert_eq!(
            sig,
            format!(
                "sha256={}",
                hmac_hex("Jefe", &[b"0.what do ya want for nothing?"])
            )
        );
        assert!(sig.starts_with("sha256="));
        assert_eq!(sig.len(), 7 + 64);
        assert_ne!(sig, signature("Jefe", 1, b"what do ya want for nothing?"));
        assert_ne!(sig, signature("Jeff", 0, b"what do ya want for nothing?"));
    }

    #[test]
    fn configs_are_checked() {
        let ok = WebhookConfig {
            url: "https://hooks.example.com/warden".into(),
            events: vec!["halt".into()],
            secret: "0123456789abcdef".into(),
        };
        assert_eq!(ok.validate(), Ok(()));
        let bad_url = WebhookConfig {
            url: "ftp://x".into(),
            ..ok.clone()
        };
        assert!(bad_url
            .validate()
            .unwrap_err()
            .contains("http:// or https://"));
        let bad_event = WebhookConfig {
            events: vec!["halts".into()],
            ..ok.clone()
        };
        assert!(bad_event.validate().unwrap_err().contains("unknown event"));
        let short = WebhookConfig {
            secret: "short".into(),
            ..ok
        };
        assert!(short.validate().unwrap_err().contains("at least 16"));
    }
}
