//! The API's one error shape, `{"error": {"code", "message", "details"?}}`, and the mapping
//! of every failure to it: 4xx for the caller's mistakes (with what to do), 5xx for the node's
//! own faults (journal, recovery, runtime), each with its own code. Plain-text answers of the
//! HTTP framework (a bad path parameter, a body over the limit) are rewritten to the same
//! shape by [`json_errors`].

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};
use warden_actors::SettleError;
use warden_supervisor::{AgentError, SwarmError};

use crate::limits::FRAMEWORK_ERROR_BYTES_MAX;

/// A JSON error answer.
#[derive(Debug)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// A stable, machine-readable code (`unknown_agent`, `journal_unavailable`, ...); the
    /// OpenAPI document lists them per endpoint.
    pub code: &'static str,
    /// What went wrong and what to do, for a person.
    pub message: String,
    /// Structured details (a policy's diagnostics, say).
    pub details: Option<Value>,
    /// A body in place of the error shape and headers to add (rare: boxed).
    pub extra: Option<Box<Extra>>,
}

/// What a few answers carry beyond the error shape.
#[derive(Debug, Default)]
pub struct Extra {
    /// A whole body in place of the error shape (the proxy answers a decision it does not
    /// forward with the decision JSON, which holds an `error` object too).
    pub body: Option<Value>,
    /// Headers to answer with (a `Location` to follow, say).
    pub headers: Vec<(header::HeaderName, header::HeaderValue)>,
}

impl ApiError {
    /// An error without details.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            details: None,
            extra: None,
        }
    }

    /// An answer whose body is `body` as is (it should hold an `error` object).
    pub fn with_body(status: StatusCode, code: &'static str, body: Value) -> Self {
        let mut e = Self::new(status, code, String::new());
        e.extra.get_or_insert_default().body = Some(body);
        e
    }

    /// 400 with `code`.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// 500 `internal`: a fault of the node, never of the caller.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }

    /// A query string that does not parse, with the parameters the endpoint takes.
    pub fn bad_query(rejection: QueryRejection, expected: &str) -> Self {
        Self::bad_request(
            "bad_query",
            format!("{}; {expected}", rejection.body_text()),
        )
    }

    /// Adds a header to the answer.
    pub fn with_header(mut self, name: header::HeaderName, value: header::HeaderValue) -> Self {
        self.extra
            .get_or_insert_default()
            .headers
            .push((name, value));
        self
    }

    /// Adds structured details.
    pub fn with_details(mut self, details: Value) -> Self {
        self.details = Some(details);
        self
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let extra = self.extra.map(|e| *e).unwrap_or_default();
        let body = match extra.body {
            Some(b) => b,
            None => {
                let mut body = json!({"error": {"code": self.code, "message": self.message}});
                if let Some(d) = self.details {
                    body["error"]["details"] = d;
                }
                body
            }
        };
        let mut resp = (self.status, Json(body)).into_response();
        for (k, v) in extra.headers {
            resp.headers_mut().insert(k, v);
        }
        resp
    }
}

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> Self {
        let status = r.status();
        let code = match status {
            StatusCode::PAYLOAD_TOO_LARGE => "body_too_large",
            StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
            _ => "bad_json",
        };
        let status = if status == StatusCode::UNPROCESSABLE_ENTITY {
            StatusCode::BAD_REQUEST
        } else {
            status
        };
        ApiError::new(status, code, r.body_text())
    }
}

impl From<SwarmError> for ApiError {
    fn from(e: SwarmError) -> Self {
        use StatusCode as S;
        let (status, code) = match &e {
            SwarmError::UnknownAgent(_) => (S::NOT_FOUND, "unknown_agent"),
            SwarmError::DuplicateAgent(_) => (S::CONFLICT, "duplicate_agent"),
            SwarmError::UnknownPool { .. } => (S::BAD_REQUEST, "unknown_pool"),
            SwarmError::BadPool { .. } => (S::BAD_REQUEST, "bad_pool"),
            SwarmError::BadSpec { .. } => (S::BAD_REQUEST, "bad_agent"),
            SwarmError::NotHalted(_) => (S::CONFLICT, "not_halted"),
            SwarmError::Approval(_) => (S::NOT_FOUND, "unknown_approval"),
            SwarmError::PoolHalted(_) => (S::CONFLICT, "pool_halted"),
            SwarmError::TooManyAgents(_) => (S::SERVICE_UNAVAILABLE, "too_many_agents"),
            SwarmError::Policy(_) => (S::BAD_REQUEST, "invalid_policy"),
            SwarmError::Wait(_) => (S::CONFLICT, "bad_wait"),
            SwarmError::Journal(_) => (S::SERVICE_UNAVAILABLE, "journal_unavailable"),
            SwarmError::Recovery(_) => (S::INTERNAL_SERVER_ERROR, "recovery_failed"),
            SwarmError::Runtime(_) => (S::INTERNAL_SERVER_ERROR, "runtime_failed"),
        };
        ApiError::new(status, code, e.to_string())
    }
}

impl From<AgentError> for ApiError {
    fn from(e: AgentError) -> Self {
        use StatusCode as S;
        let (status, code) = match &e {
            AgentError::Journal(_) => (S::SERVICE_UNAVAILABLE, "journal_unavailable"),
            AgentError::Settle(SettleError::UnknownStep { .. }) => (S::NOT_FOUND, "unknown_step"),
            AgentError::Settle(SettleError::BadUsage(_)) => (S::BAD_REQUEST, "bad_outcome"),
            AgentError::Settle(SettleError::Sealed { .. }) => (S::CONFLICT, "proxy_settles"),
            AgentError::NotAwaiting(..) => (S::NOT_FOUND, "not_awaiting"),
            AgentError::Interrupted(_) | AgentError::Unavailable(_) => {
                (S::SERVICE_UNAVAILABLE, "agent_unavailable")
            }
        };
        ApiError::new(status, code, e.to_string())
    }
}

/// The answer for a path no route serves.
pub async fn not_found() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        "no such endpoint; GET /v1/openapi.json (with the operator token) lists every route",
    )
}

/// The answer for a method a route does not take.
pub async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this endpoint does not take that method; see /v1/openapi.json",
    )
}

/// Turns any error the framework answers in plain text (a bad path parameter or query string,
/// a body that is not UTF-8, a body over the limit read as text) into the JSON error shape.
pub async fn json_errors(resp: Response) -> Response {
    if resp.extensions().get::<crate::proxy::Forwarded>().is_some() {
        // An upstream's own answer goes to the agent as it was.
        return resp;
    }
    let status = resp.status();
    let is_json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return resp;
    }
    let (parts, body) = resp.into_parts();
    let text = axum::body::to_bytes(body, FRAMEWORK_ERROR_BYTES_MAX)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_string())
        .unwrap_or_default();
    let code = match status {
        StatusCode::PAYLOAD_TOO_LARGE => "body_too_large",
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        s if s.is_server_error() => "internal",
        _ => "bad_request",
    };
    let message = if text.is_empty() {
        status.canonical_reason().unwrap_or("error").to_string()
    } else {
        text
    };
    let mut out = ApiError::new(status, code, message).into_response();
    if let Some(allow) = parts.headers.get(header::ALLOW) {
        out.headers_mut().insert(header::ALLOW, allow.clone());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_nodes_own_faults_are_5xx_with_their_own_codes() {
        let cases = [
            (
                SwarmError::Journal("disk full".into()),
                503,
                "journal_unavailable",
            ),
            (
                SwarmError::Recovery("bad entry".into()),
                500,
                "recovery_failed",
            ),
            (
                SwarmError::Runtime("actor died".into()),
                500,
                "runtime_failed",
            ),
            (SwarmError::TooManyAgents(10), 503, "too_many_agents"),
        ];
        for (e, status, code) in cases {
            let api = ApiError::from(e);
            assert_eq!((api.status.as_u16(), api.code), (status, code));
        }
        let agent = warden_actors::AgentId::new("a").unwrap();
        let cases = [
            (AgentError::Journal("x".into()), 503, "journal_unavailable"),
            (
                AgentError::Unavailable(agent.clone()),
                503,
                "agent_unavailable",
            ),
            (AgentError::Interrupted(agent), 503, "agent_unavailable"),
        ];
        for (e, status, code) in cases {
            let api = ApiError::from(e);
            assert_eq!((api.status.as_u16(), api.code), (status, code));
        }
    }

    #[test]
    fn the_callers_mistakes_are_4xx() {
        let api = ApiError::from(SwarmError::PoolHalted("swarm/a".into()));
        assert_eq!((api.status.as_u16(), api.code), (409, "pool_halted"));
        let api = ApiError::from(SwarmError::BadPool {
            path: "x".into(),
            reason: "y".into(),
        });
        assert_eq!((api.status.as_u16(), api.code), (400, "bad_pool"));
    }
}
