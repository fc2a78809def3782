//! A typed, blocking client of the node's `/v1` API, for the CLI, the end-to-end tests and the
//! benchmarks. Bodies are the types of [`crate::http::wire`], so client and server share one
//! definition of every shape. Errors keep the node's status, code and message.
//!
//! ```no_run
//! use warden_adapters::client::Client;
//! use warden_adapters::http::wire::RegisterRequest;
//!
//! let operator = Client::new("http://127.0.0.1:7700", "the-operator-token");
//! let agent = operator
//!     .register(&RegisterRequest { id: Some("scout-1".into()), ..Default::default() })
//!     .unwrap();
//! let me = operator.with_token(agent.token.as_deref().unwrap());
//! let decision = me
//!     .step("scout-1", &serde_json::json!({"tool": "web.search", "action": "read"}))
//!     .unwrap();
//! println!("{:?}", decision.decision);
//! ```

use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;
use warden_actors::StepId;

use crate::http::wire::{
    AgentPage, AgentView, AnswerRequest, ApprovalView, AuditPage, DecisionView, OutcomeRequest,
    OutcomeView, PolicyVersionView, PoolView, ReasonRequest, RegisterRequest,
};
use crate::limits::{
    CLIENT_ANSWER_BYTES_MAX, CLIENT_EVENT_LINE_BYTES_MAX, CLIENT_IDLE_CONNECTIONS_MAX,
    CLIENT_TIMEOUT_DEFAULT,
};

/// What a call can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The node could not be reached, or its answer could not be read.
    #[error("cannot reach the node at {base}: {message}")]
    Transport {
        /// The node's base URL.
        base: String,
        /// What failed.
        message: String,
    },
    /// The node answered with an error.
    #[error("the node answered {status}: {message}")]
    Api {
        /// The HTTP status.
        status: u16,
        /// The error code (`unknown_agent`, ...), empty when the body was not the error shape.
        code: String,
        /// The node's message.
        message: String,
        /// The whole error body.
        body: Value,
    },
    /// A 2xx answer that does not have the expected shape.
    #[error("unexpected answer to {what}: {message}")]
    Shape {
        /// The request.
        what: String,
        /// The decoding error.
        message: String,
    },
}

impl ClientError {
    /// The HTTP status of an API error.
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Api { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// An answer: its status and its body (JSON, or the text as a JSON string).
#[derive(Clone, Debug, PartialEq)]
pub struct Answer {
    /// The HTTP status.
    pub status: u16,
    /// The body as JSON (text that is not JSON becomes a JSON string).
    pub body: Value,
    /// The body as it came (the policy's YAML, say, which may also parse as JSON).
    pub text: String,
    /// Response headers the caller may need (`x-warden-policy-version`).
    pub policy_version: Option<u64>,
}

/// A client bound to a node and a token (the operator's or an agent's).
#[derive(Clone)]
pub struct Client {
    base: String,
    token: Option<String>,
    http: ureq::Agent,
}

impl Client {
    /// A client of the node at `base` (`http://127.0.0.1:7700`) sending `token`.
    pub fn new(base: impl Into<String>, token: impl Into<String>) -> Self {
        Self::build(base.into(), Some(token.into()), CLIENT_TIMEOUT_DEFAULT)
    }

    /// A client that sends no token (for `/healthz`, `/readyz`, `/metrics`, and to test
    /// refusals).
    pub fn anonymous(base: impl Into<String>) -> Self {
        Self::build(base.into(), None, CLIENT_TIMEOUT_DEFAULT)
    }

    fn build(base: String, token: Option<String>, timeout: Duration) -> Self {
        let http = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(timeout))
            // Clones share the pool: a load generator's threads each keep their connection
            // (ureq keeps 3 per host by default, so more threads would reconnect per request).
            .max_idle_connections(CLIENT_IDLE_CONNECTIONS_MAX)
            .max_idle_connections_per_host(CLIENT_IDLE_CONNECTIONS_MAX)
            .build()
            .into();
        Self {
            base: base.trim_end_matches('/').to_string(),
            token,
            http,
        }
    }

    /// The same node with another token (an agent's, say); shares the connection pool.
    pub fn with_token(&self, token: &str) -> Self {
        Self {
            token: Some(token.to_string()),
            ..self.clone()
        }
    }

    /// The same node and token with another timeout per request.
    pub fn with_timeout(&self, timeout: Duration) -> Self {
        Self::build(self.base.clone(), self.token.clone(), timeout)
    }

    /// The node's base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// Subscribes to `/v1/events` (operator token). The stream has no overall timeout: it
    /// lasts until the node ends it or the [`EventStream`] is dropped.
    pub fn events(&self) -> Result<EventStream, ClientError> {
        let url = format!("{}/v1/events", self.base);
        let http: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(CLIENT_TIMEOUT_DEFAULT))
            .build()
            .into();
        let mut r = http.get(&url).header("Accept", "text/event-stream");
        if let Some(t) = &self.token {
            r = r.header("Authorization", format!("Bearer {t}"));
        }
        let resp = r.call().map_err(|e| ClientError::Transport {
            base: self.base.clone(),
            message: e.to_string(),
        })?;
        let status = resp.status().as_u16();
        if status != 200 {
            return Err(ClientError::Api {
                status,
                code: String::new(),
                message: format!("GET /v1/events answered {status}"),
                body: Value::Null,
            });
        }
        let reader = resp.into_body().into_reader();
        Ok(EventStream {
            reader: std::io::BufReader::new(reader),
            after_cr: false,
            done: false,
        })
    }

    /// One request, any status. `method` is `GET`, `PUT` or (anything else) `POST`; `body`
    /// is sent as JSON, or as the raw text for a [`Body::Text`] (a policy's YAML).
    pub fn call(&self, method: &str, path: &str, body: Body) -> Result<Answer, ClientError> {
        let url = format!("{}{path}", self.base);
        let auth = self.token.as_ref().map(|t| format!("Bearer {t}"));
        let result = if method == "GET" {
            let r = self.http.get(&url);
            match &auth {
                Some(a) => r.header("Authorization", a).call(),
                None => r.call(),
            }
        } else {
            let r = match method {
                "PUT" => self.http.put(&url),
                _ => self.http.post(&url),
            };
            let r = match &auth {
                Some(a) => r.header("Authorization", a),
                None => r,
            };
            match body {
                Body::None => r.header("Content-Type", "application/json").send("{}"),
                Body::Json(v) => r
                    .header("Content-Type", "application/json")
                    .send(v.to_string()),
                Body::Text(t, ctype) => r.header("Content-Type", ctype).send(t),
            }
        };
        let transport = |e: ureq::Error| ClientError::Transport {
            base: self.base.clone(),
            message: e.to_string(),
        };
        let mut resp = result.map_err(transport)?;
        let status = resp.status().as_u16();
        let policy_version = resp
            .headers()
            .get("x-warden-policy-version")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok());
        let text = resp
            .body_mut()
            .with_config()
            .limit(CLIENT_ANSWER_BYTES_MAX)
            .read_to_string()
            .map_err(transport)?;
        let body = serde_json::from_str(&text).unwrap_or_else(|_| Value::String(text.clone()));
        Ok(Answer {
            status,
            body,
            text,
            policy_version,
        })
    }

    /// A request whose success is a 2xx with a body of type `T`; anything else is an error.
    fn typed<T: DeserializeOwned>(
        &self,
        method: &str,
        path: &str,
        body: Body,
    ) -> Result<T, ClientError> {
        let answer = self.ok(method, path, body)?;
        serde_json::from_value(answer.body).map_err(|e| ClientError::Shape {
            what: format!("{method} {path}"),
            message: e.to_string(),
        })
    }

    /// A request whose success is any 2xx; the answer as it came.
    pub fn ok(&self, method: &str, path: &str, body: Body) -> Result<Answer, ClientError> {
        let answer = self.call(method, path, body)?;
        if (200..300).contains(&answer.status) {
            return Ok(answer);
        }
        let err = &answer.body["error"];
        Err(ClientError::Api {
            status: answer.status,
            code: err["code"].as_str().unwrap_or_default().to_string(),
            message: err["message"]
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| answer.body.to_string()),
            body: answer.body,
        })
    }

    /// `POST /v1/agents`: the new agent, with its token.
    pub fn register(&self, req: &RegisterRequest) -> Result<AgentView, ClientError> {
        self.typed("POST", "/v1/agents", Body::json(req))
    }

    /// `GET /v1/agents?...`: one page; `query` is the query string without `?` (`state=halted`).
    pub fn agents(&self, query: &str) -> Result<AgentPage, ClientError> {
        self.typed("GET", &with_query("/v1/agents", query), Body::None)
    }

    /// `GET /v1/agents/{id}`.
    pub fn agent(&self, id: &str) -> Result<AgentView, ClientError> {
        self.typed("GET", &format!("/v1/agents/{id}"), Body::None)
    }

    /// `POST /v1/agents/{id}/steps` with a step as JSON (the API validates it).
    pub fn step(&self, id: &str, step: &Value) -> Result<DecisionView, ClientError> {
        self.typed(
            "POST",
            &format!("/v1/agents/{id}/steps"),
            Body::Json(step.clone()),
        )
    }

    /// `GET /v1/agents/{id}/steps/{step}`: the step's final decision, or, while it is parked
    /// for approval, its `require_approval` decision. With `wait`, a parked step is waited on
    /// (the node grants at most 60 s, and at most its request timeout; then it answers the
    /// current state): this client's timeout is stretched by the wait.
    pub fn step_decision(
        &self,
        id: &str,
        step: StepId,
        wait: Option<Duration>,
    ) -> Result<DecisionView, ClientError> {
        let path = format!("/v1/agents/{id}/steps/{step}");
        match wait {
            None => self.typed("GET", &path, Body::None),
            Some(w) => self.with_timeout(CLIENT_TIMEOUT_DEFAULT + w).typed(
                "GET",
                &format!("{path}?wait={}ms", w.as_millis()),
                Body::None,
            ),
        }
    }

    /// `POST /v1/agents/{id}/steps/{step}/outcome`.
    pub fn outcome(
        &self,
        id: &str,
        step: StepId,
        req: &OutcomeRequest,
    ) -> Result<OutcomeView, ClientError> {
        let path = format!("/v1/agents/{id}/steps/{step}/outcome");
        self.typed("POST", &path, Body::json(req))
    }

    /// `POST /v1/agents/{id}/heartbeat`.
    pub fn heartbeat(&self, id: &str) -> Result<(), ClientError> {
        self.ok("POST", &format!("/v1/agents/{id}/heartbeat"), Body::None)
            .map(|_| ())
    }

    /// `POST /v1/agents/{id}/halt`: the agents halted (the cascade included).
    pub fn halt(&self, id: &str, req: &ReasonRequest) -> Result<Value, ClientError> {
        let path = format!("/v1/agents/{id}/halt");
        self.ok("POST", &path, Body::json(req)).map(|a| a.body)
    }

    /// `POST /v1/agents/{id}/resume`.
    pub fn resume(&self, id: &str, req: &ReasonRequest) -> Result<Value, ClientError> {
        let path = format!("/v1/agents/{id}/resume");
        self.ok("POST", &path, Body::json(req)).map(|a| a.body)
    }

    /// `GET /v1/pools`.
    pub fn pools(&self) -> Result<Vec<PoolView>, ClientError> {
        let v: Value = self.typed("GET", "/v1/pools", Body::None)?;
        decode("GET /v1/pools", v["pools"].clone())
    }

    /// `GET /v1/pools/{path}`.
    pub fn pool(&self, path: &str) -> Result<PoolView, ClientError> {
        self.typed("GET", &format!("/v1/pools/{path}"), Body::None)
    }

    /// `GET /v1/approvals`.
    pub fn approvals(&self) -> Result<Vec<ApprovalView>, ClientError> {
        let v: Value = self.typed("GET", "/v1/approvals", Body::None)?;
        decode("GET /v1/approvals", v["approvals"].clone())
    }

    /// `POST /v1/approvals/{id}`: the step's final decision.
    pub fn answer(&self, id: &str, req: &AnswerRequest) -> Result<DecisionView, ClientError> {
        self.typed("POST", &format!("/v1/approvals/{id}"), Body::json(req))
    }

    /// `GET /v1/policy`: the version and the YAML text in force.
    pub fn policy(&self) -> Result<(u64, String), ClientError> {
        let a = self.ok("GET", "/v1/policy", Body::None)?;
        Ok((a.policy_version.unwrap_or(0), a.text))
    }

    /// `PUT /v1/policy` with the YAML text.
    pub fn put_policy(&self, yaml: &str) -> Result<PolicyVersionView, ClientError> {
        self.typed(
            "PUT",
            "/v1/policy",
            Body::Text(yaml.to_string(), "application/yaml"),
        )
    }

    /// `GET /v1/audit?...`: one page; `query` without `?`.
    pub fn audit(&self, query: &str) -> Result<AuditPage, ClientError> {
        self.typed("GET", &with_query("/v1/audit", query), Body::None)
    }
}

/// A request body.
#[derive(Clone, Debug)]
pub enum Body {
    /// None (a POST sends `{}`).
    None,
    /// JSON.
    Json(Value),
    /// Text with its content type.
    Text(String, &'static str),
}

impl Body {
    /// Any serializable value as JSON (the wire types always serialize; a value that cannot
    /// is sent as `null`, which the node refuses).
    pub fn json(v: &impl Serialize) -> Body {
        Body::Json(serde_json::to_value(v).unwrap_or(Value::Null))
    }
}

/// One server-sent event of `/v1/events`: its name (`decision`, `halt`, `resume`,
/// `approval_requested`, `approval_resolved`, `restart`, `escalation`, `lagged`) and its
/// JSON data.
#[derive(Clone, Debug, PartialEq)]
pub struct ServerEvent {
    /// The SSE event name.
    pub name: String,
    /// The data line, as JSON (`null` if it was not JSON).
    pub data: Value,
}

/// A live `/v1/events` stream (SSE, the WHATWG HTML standard's `text/event-stream`):
/// blocking, one [`ServerEvent`] per `next`; keep-alive comments are skipped; lines end with
/// CRLF, LF or CR. Ends (`None`) when the node ends the stream; a line or an event's data
/// over [`CLIENT_EVENT_LINE_BYTES_MAX`] or a broken connection ends it with one error.
pub struct EventStream {
    reader: std::io::BufReader<ureq::BodyReader<'static>>,
    /// The last line ended with a CR: an LF right after it belongs to that line end.
    after_cr: bool,
    done: bool,
}

impl EventStream {
    /// Reads one line without its line end; `None` at the end of the stream.
    fn line(&mut self) -> std::io::Result<Option<String>> {
        use std::io::BufRead;
        let mut buf = Vec::new();
        loop {
            let chunk = self.reader.fill_buf()?;
            if chunk.is_empty() {
                return Ok((!buf.is_empty()).then(|| String::from_utf8_lossy(&buf).into_owned()));
            }
            let skip = usize::from(std::mem::take(&mut self.after_cr) && chunk[0] == b'\n');
            let rest = &chunk[skip..];
            let end = rest.iter().position(|b| matches!(b, b'\n' | b'\r'));
            let taken = end.unwrap_or(rest.len());
            buf.extend_from_slice(&rest[..taken]);
            if let Some(i) = end {
                self.after_cr = rest[i] == b'\r';
            }
            self.reader
                .consume(skip + taken + usize::from(end.is_some()));
            too_long(buf.len(), "an event line")?;
            if end.is_some() {
                return Ok(Some(String::from_utf8_lossy(&buf).into_owned()));
            }
        }
    }
}

/// An error once `len` bytes of `what` are over [`CLIENT_EVENT_LINE_BYTES_MAX`].
fn too_long(len: usize, what: &str) -> std::io::Result<()> {
    match len > CLIENT_EVENT_LINE_BYTES_MAX {
        true => Err(std::io::Error::other(format!(
            "{what} is longer than {CLIENT_EVENT_LINE_BYTES_MAX} bytes"
        ))),
        false => Ok(()),
    }
}

impl Iterator for EventStream {
    type Item = Result<ServerEvent, std::io::Error>;

    fn next(&mut self) -> Option<Self::Item> {
        let (mut name, mut data) = (String::from("message"), String::new());
        while !self.done {
            let line = match self.line() {
                Ok(Some(line)) => line,
                Ok(None) => break,
                Err(e) => {
                    self.done = true;
                    return Some(Err(e));
                }
            };
            if line.is_empty() {
                if data.is_empty() {
                    // An event without data is dropped, its name with it.
                    name = String::from("message");
                    continue;
                }
                let data = serde_json::from_str(&data).unwrap_or(Value::Null);
                return Some(Ok(ServerEvent { name, data }));
            }
            if let Some(v) = line.strip_prefix("event:") {
                name = v.trim_start().to_string();
            } else if let Some(v) = line.strip_prefix("data:") {
                if !data.is_empty() {
                    data.push('\n');
                }
                data.push_str(v.strip_prefix(' ').unwrap_or(v));
                if let Err(e) = too_long(data.len(), "an event's data") {
                    self.done = true;
                    return Some(Err(e));
                }
            }
        }
        self.done = true;
        None
    }
}

fn with_query(path: &str, query: &str) -> String {
    if query.is_empty() {
        path.to_string()
    } else {
        format!("{path}?{query}")
    }
}

fn decode<T: DeserializeOwned>(what: &str, v: Value) -> Result<T, ClientError> {
    serde_json::from_value(v).map_err(|e| ClientError::Shape {
        what: what.to_string(),
        message: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use std::io::{BufRead, Write};

    use super::*;

    /// A one-shot server answering `GET /v1/events` with 200 and then `body`, written in
    /// pieces of `piece` bytes; returns its base URL.
    fn serve(body: Vec<u8>, piece: usize) -> String {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        std::thread::spawn(move || {
            let (mut conn, _) = listener.accept().unwrap();
            let mut r = std::io::BufReader::new(conn.try_clone().unwrap());
            let mut line = String::new();
            while r.read_line(&mut line).unwrap_or(0) > 2 {
                line.clear();
            }
            let head =
                "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n";
            let _ = conn.write_all(head.as_bytes());
            for chunk in body.chunks(piece.max(1)) {
                if conn.write_all(chunk).and_then(|()| conn.flush()).is_err() {
                    return;
                }
            }
        });
        base
    }

    fn events(body: impl Into<Vec<u8>>, piece: usize) -> Vec<Result<ServerEvent, String>> {
        let base = serve(body.into(), piece);
        Client::new(base, "t")
            .events()
            .unwrap()
            .map(|e| e.map_err(|e| e.to_string()))
            .collect()
    }

    fn event(name: &str, data: Value) -> Result<ServerEvent, String> {
        Ok(ServerEvent {
            name: name.into(),
            data,
        })
    }

    /// Line ends of every kind the standard allows (CRLF, LF, CR alone), also split across
    /// reads; multi-line data; comments; data that is not JSON; an event name that does not
    /// outlive an event without data.
    #[test]
    fn events_are_read_with_any_line_end() {
        let body = "event: halt\r\ndata: {\"a\":\r\ndata: 1}\r\n\r\n: keep-alive\n\n\
                    event: x\rdata: {\"b\":2}\r\r\
                    event: lost\n\ndata: [3]\n\n\
                    data: not json\n\n\
                    data: {\"cut\":";
        let want = vec![
            event("halt", serde_json::json!({"a": 1})),
            event("x", serde_json::json!({"b": 2})),
            event("message", serde_json::json!([3])),
            event("message", Value::Null),
        ];
        for piece in [1, 3, usize::MAX] {
            assert_eq!(events(body, piece), want, "written {piece} bytes at a time");
        }
    }

    /// A hostile server cannot make the client hold more than a bounded amount: not with one
    /// endless line, nor with endless data lines of one event.
    #[test]
    fn an_endless_line_or_event_ends_the_stream_with_an_error() {
        let endless_line = vec![b'x'; CLIENT_EVENT_LINE_BYTES_MAX + 10];
        let mut endless_event = Vec::new();
        while endless_event.len() <= 2 * CLIENT_EVENT_LINE_BYTES_MAX {
            endless_event.extend_from_slice(b"data: ");
            endless_event.extend_from_slice(&[b'y'; 1000]);
            endless_event.push(b'\n');
        }
        for body in [endless_line, endless_event] {
            let got = events(body, 64 << 10);
            assert_eq!(
                got.len(),
                1,
                "{:?}",
                got.iter().map(|e| e.is_ok()).collect::<Vec<_>>()
            );
            let err = got[0].as_ref().unwrap_err();
            assert!(err.contains("longer than"), "{err}");
        }
    }
}
