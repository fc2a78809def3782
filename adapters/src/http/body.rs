//! Request bodies: JSON **objects** only. Serde's derived readers also take a JSON array as
//! the fields in order, so `[]` or `["p1", "swarm"]` would be read as a registration; every body
//! is therefore read as a JSON value first (a key given twice refused), refused unless it is
//! an object, and only then turned into its type. Errors are 400 `bad_json` (413
//! `body_too_large`, 415 `unsupported_media_type` from the JSON reader), and nothing changes.

use axum::extract::{FromRequest, Json, Request};
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::error::ApiError;

/// A JSON object body read as `T`.
pub struct JsonObject<T>(pub T);

impl<S, T> FromRequest<S> for JsonObject<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let Json(raw) = Json::<Box<serde_json::value::RawValue>>::from_request(req, state).await?;
        // A key given twice would be read as its last copy: refused, as in steps' args.
        let value = warden_actors::step::parse_unique_json(raw.get()).map_err(|e| {
            ApiError::bad_request(
                "bad_json",
                format!("the body cannot be read: {e}; send a JSON object with each key once"),
            )
        })?;
        object(value).map(JsonObject)
    }
}

/// `value` as `T` if it is a JSON object; 400 `bad_json` naming what is wrong otherwise.
pub fn object<T: DeserializeOwned>(value: Value) -> Result<T, ApiError> {
    if !value.is_object() {
        return Err(ApiError::bad_request(
            "bad_json",
            "the body must be a JSON object ({...}); see /v1/openapi.json for its fields",
        ));
    }
    serde_json::from_value(value).map_err(|e| {
        ApiError::bad_request(
            "bad_json",
            format!("Failed to deserialize the JSON body into the target type: {e}"),
        )
    })
}

/// A request body that notes when it has been read to its end.
struct Tracked {
    inner: axum::body::Body,
    done: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl http_body::Body for Tracked {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<bytes::Bytes>, axum::Error>>> {
        let polled = std::pin::Pin::new(&mut self.inner).poll_frame(cx);
        if matches!(polled, std::task::Poll::Ready(None)) {
            self.done.store(true, std::sync::atomic::Ordering::Relaxed);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// Answers a request whose body was not read to its end (refused before it was needed: a
/// wrong token, a busy upstream) with `Connection: close`. HTTP/1.1 cannot reuse such a
/// connection (the unread rest would be taken for the next request), so the server closes
/// it; saying so lets a client with a connection pool retry on a fresh one instead of
/// failing on a closed one.
pub async fn close_if_unread(
    req: Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use http_body::Body as _;
    if req.body().is_end_stream() {
        return next.run(req).await;
    }
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = done.clone();
    let req = req.map(|inner| axum::body::Body::new(Tracked { inner, done: flag }));
    let mut resp = next.run(req).await;
    if !done.load(std::sync::atomic::Ordering::Relaxed) {
        resp.headers_mut().insert(
            axum::http::header::CONNECTION,
            axum::http::HeaderValue::from_static("close"),
        );
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::wire::{ReasonRequest, RegisterRequest};
    use serde_json::json;

    #[test]
    fn arrays_and_scalars_are_refused_even_where_every_field_is_optional() {
        for body in [
            json!([]),
            json!(["p1", "swarm/a"]),
            json!(null),
            json!("x"),
            json!(3),
        ] {
            let e = object::<RegisterRequest>(body.clone()).err().unwrap();
            assert_eq!((e.status.as_u16(), e.code), (400, "bad_json"), "{body}");
            assert!(object::<ReasonRequest>(body).is_err());
        }
        let nested = object::<RegisterRequest>(json!({"budgets": [5, 100]}))
            .err()
            .unwrap();
        assert_eq!(nested.code, "bad_json");
        let ok: RegisterRequest = object(json!({"id": "a1"})).unwrap();
        assert_eq!(ok.id.as_deref(), Some("a1"));
    }
}
