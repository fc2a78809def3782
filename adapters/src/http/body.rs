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

/// A JSON object body read as `T`, or `T::default()` when the request's body is empty
/// (for requests whose every field is optional: an operator halting an agent in a hurry need
/// not send `{}`). A body that is there is read as [`JsonObject`] reads it.
pub struct OptionalJsonObject<T>(pub T);

impl<S, T> FromRequest<S> for OptionalJsonObject<T>
where
    S: Send + Sync,
    T: DeserializeOwned + Default,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let (parts, body) = req.into_parts();
        // Read whole (within the body limit) to see whether there is one: a chunked body
        // may be empty too.
        let whole = Request::from_parts(parts.clone(), body);
        let bytes = axum::body::Bytes::from_request(whole, state)
            .await
            .map_err(|e| {
                let code = match e.status() {
                    axum::http::StatusCode::PAYLOAD_TOO_LARGE => "body_too_large",
                    _ => "bad_request",
                };
                ApiError::new(e.status(), code, e.body_text())
            })?;
        if bytes.is_empty() {
            return Ok(OptionalJsonObject(T::default()));
        }
        let req = Request::from_parts(parts, axum::body::Body::from(bytes));
        JsonObject::from_request(req, state)
            .await
            .map(|JsonObject(t)| OptionalJsonObject(t))
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

/// 415 `unsupported_media_type` when a (lower-cased) Content-Type names a charset other than
/// UTF-8: the body is judged as UTF-8 and forwarded with the agent's Content-Type, so an
/// upstream that honours `charset=utf-7` (or UTF-16, Latin-1) would read other text
/// (`+AGUAdgBpAGw-` is `evil` in UTF-7).
pub(crate) fn check_charset(content_type: &str) -> Result<(), ApiError> {
    for param in content_type.split(';').skip(1) {
        let Some((name, value)) = param.split_once('=') else {
            continue;
        };
        let value = value.trim().trim_matches('"');
        // US-ASCII is UTF-8's first 128 characters: read the same either way.
        // `charset*=utf-7''x` is RFC 2231's extended form of the same parameter.
        let name = name.trim();
        if name.starts_with("charset") && !matches!(value, "utf-8" | "utf8" | "us-ascii") {
            return Err(ApiError::new(
                axum::http::StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                format!("warden reads bodies as UTF-8; a charset={value} body would be read as other text (the proxy's upstreams would read it so too), so it is refused; send UTF-8 (charset=utf-8, or no charset)"),
            ));
        }
    }
    Ok(())
}

/// Middleware: a request whose `Content-Type` names a charset other than UTF-8 (or US-ASCII)
/// gets 415 on every route, as `check_charset` says: bodies are read as UTF-8 everywhere.
pub async fn refuse_other_charsets(
    req: Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let with_params = req
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .filter(|ct| ct.as_bytes().contains(&b';'));
    if let Some(ct) = with_params {
        let ct = String::from_utf8_lossy(ct.as_bytes()).to_ascii_lowercase();
        if let Err(e) = check_charset(&ct) {
            return e.into_response();
        }
    }
    next.run(req).await
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
