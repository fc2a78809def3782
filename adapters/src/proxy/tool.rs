//! The tool proxy, `ANY /proxy/{tool}/{path...}`: the one door to a tool's upstream. The
//! agent calls with its own token; the step is built from the request, decided, journaled,
//! and only an allow is forwarded (with the upstream's credentials); the step is settled from
//! the upstream's answer.
//!
//! The step: `tool` from the path; `action` (and the registry's risk, minimum cost and
//! upstream) from the policy's registry entry; `args` = the query string's parameters and the
//! body's (a JSON object, or `application/x-www-form-urlencoded`), plus `path` (the
//! percent-decoded sub-path) when there is one and `method` when it is not `POST`. A key
//! given twice (in the query and the body, or twice in the query) is refused: the policy and
//! the upstream must never read two different values. `cost` and `signals` come from the
//! optional `Warden-Cost` and `Warden-Signals` headers (the step JSON's objects).
//!
//! Answers: forwarded → the upstream's status, headers (hop-by-hop dropped) and body,
//! streamed, with `Warden-Step`; deny or halt → 403 with the decision JSON (and an `error`
//! object); require_approval → 202 with the decision JSON, `Location` naming the step read to
//! long-poll (`GET /v1/agents/{id}/steps/{step}?wait=30s`); once it says `allow`, the agent
//! sends the same request again with `Warden-Step: <step>` (see [`super::parked`]).
//!
//! Settled: a 2xx answer whose body arrives whole is a success, anything else (another
//! status, a body that breaks off, a timeout, a reset) a failure; the cost is what was
//! reserved. A request body is read whole (up to the node's body limit) since the policy
//! judges it; answers stream.

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum::Router;
use bytes::Bytes;
use serde_json::{json, Map, Value};
use warden_actors::{Decision, Outcome, Step, StepId, Verdict};

use super::gate::{admit, Refused};
use super::parked::fingerprint;
use super::settle::{PassThrough, SettledBody, Settlement};
use super::{forward, Forwarded};
use crate::api::agents::handle;
use crate::http::auth::TokenAgent;
use crate::http::error::ApiError;
use crate::http::wire::DecisionView;
use crate::http::AppState;

/// The tool proxy's routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/proxy/{tool}", any(call))
        .route("/proxy/{tool}/", any(call))
        .route("/proxy/{tool}/{*rest}", any(call))
}

/// The header a retry names its approved step in.
pub const STEP_HEADER: &str = "warden-step";

async fn call(agent: TokenAgent, State(state): State<AppState>, req: Request) -> Response {
    let tool = tool_name(req.uri().path());
    let label = state.proxy.tool_label(tool.as_deref().unwrap_or(""));
    let resp = match tool {
        Ok(tool) => proxy(agent, &state, &tool, req).await,
        Err(e) => Err(e),
    };
    let resp = resp.unwrap_or_else(IntoResponse::into_response);
    metrics::counter!("warden_proxy_requests_total", "tool" => label, "status" => resp.status().as_str().to_string())
        .increment(1);
    resp
}

/// A request, read and judged.
struct Judged {
    step: Step,
    body: Bytes,
}

async fn proxy(
    TokenAgent(agent): TokenAgent,
    state: &AppState,
    tool: &str,
    req: Request,
) -> Result<Response, ApiError> {
    let (route, action) = state.proxy.tool_route(tool)?;
    let (parts, body) = req.into_parts();
    refuse_method(&parts.method)?;
    forward::refuse_rewrites(&parts.headers)?;
    refuse_large_headers(&parts.headers)?;
    let raw_rest = sub_path(parts.uri.path());
    let rest = decoded_path(raw_rest)?;
    let body = read_body(state, body).await?;
    let judged = judge_request(&parts, tool, action, &rest, body)?;
    let h = handle(state, &agent)?;
    let slot = route.slot()?;
    let retry = parts.headers.get(STEP_HEADER);
    let fp = || request_fingerprint(&parts, tool, &judged.body);
    let step = match admit(state, &h, judged.step, fp, retry).await {
        Ok(step) => step,
        Err(Refused::Decision(d)) => return Err(answer(h.id(), &d)),
        Err(Refused::Error(e)) => return Err(e),
    };
    let mut settlement = Settlement::new(h, step);
    let step = step.step;
    let uri = forward::join(&route.url, raw_rest, parts.uri.query())?;
    let headers = forwarded_headers(&parts.headers, &route.headers, !judged.body.is_empty());
    let sent = forward::send(
        state.proxy.client,
        &route.name,
        parts.method,
        uri,
        headers,
        Body::from(judged.body),
        route.timeout,
    )
    .await;
    let (resp, took) = sent?;
    route.observe(took);
    let (mut head, body) = resp.into_parts();
    if head.status.is_success() {
        settlement.set(Outcome::success());
    }
    forward::response_headers(&mut head.headers, &route.secrets);
    head.headers.insert(STEP_HEADER, step_value(step));
    head.extensions.insert(Forwarded);
    let body = SettledBody::new(body, PassThrough, settlement, Some(slot));
    Ok(Response::from_parts(head, Body::new(body)))
}

/// The tool's name: the path's segment after `/proxy/`, percent-decoded (400 `bad_path` when
/// that is not UTF-8).
fn tool_name(path: &str) -> Result<String, ApiError> {
    let after = path.strip_prefix("/proxy/").unwrap_or("");
    let raw = after.split('/').next().unwrap_or("");
    percent_encoding::percent_decode_str(raw)
        .decode_utf8()
        .map(|t| t.into_owned())
        .map_err(|_| ApiError::bad_request("bad_path", "the tool's name is not UTF-8 once decoded"))
}

/// The part of the path after `/proxy/{tool}`, as sent (empty or starting with `/`).
fn sub_path(path: &str) -> &str {
    let after = path.strip_prefix("/proxy/").unwrap_or("");
    after.find('/').map_or("", |i| &after[i..])
}

/// The sub-path as the upstream will read it (percent-decoded). Refused (400 `bad_path`),
/// since an upstream may read them as another path than the one the policy judges: `.` and
/// `..` segments in either spelling (they climb out of the upstream's base path), an encoded
/// `/` or `\\` (`%2F`, `%5C`: one segment to the policy, two to many servers), and empty
/// segments (`//admin`: `/admin` to nginx and most frameworks) except a trailing slash.
fn decoded_path(raw: &str) -> Result<String, ApiError> {
    let decoded = percent_encoding::percent_decode_str(raw)
        .decode_utf8()
        .map_err(|_| ApiError::bad_request("bad_path", "the path is not UTF-8 once decoded"))?;
    // A segment's `;parameters` are cut off by many servers (Tomcat, Jetty, Spring) before
    // they normalise: `..;` is `..` to them, and `;` alone an empty segment.
    let dots = |p: &str| {
        p.split(['/', '\\'])
            .map(|s| s.split(';').next().unwrap_or(""))
            .any(|s| s == "." || s == "..")
    };
    if dots(raw) || dots(&decoded) {
        return Err(ApiError::bad_request(
            "bad_path",
            "a proxied path may not hold `.` or `..` segments (with or without `;parameters`)",
        ));
    }
    // Windows and IIS drop a segment's trailing dots and spaces (`/admin.`, `/admin%20` are
    // `/admin` there).
    let padded = |seg: &str| seg.ends_with(['.', ' ']) || seg.starts_with(' ');
    if decoded.split('/').any(padded) {
        return Err(ApiError::bad_request(
            "bad_path",
            "a proxied path segment may not start with a space or end with a dot or a space (Windows servers drop them: `/admin.` is `/admin` there)",
        ));
    }
    if decoded.contains(';') {
        return Err(ApiError::bad_request(
            "bad_path",
            "a proxied path may not hold `;` (Tomcat, Jetty and Spring cut a segment's `;parameters` off before routing: `/admin;x` is `/admin` to them); send the path without it",
        ));
    }
    if decoded.chars().any(char::is_control) {
        return Err(ApiError::bad_request(
            "bad_path",
            "a proxied path may not hold control characters (`%00`, `%0A`, ...)",
        ));
    }
    if holds_escape(&decoded, |_| true) || holds_u_escape(&decoded) {
        return Err(ApiError::bad_request(
            "bad_path",
            "a proxied path may not hold an escape once decoded (`%2561` is `%61` to the policy and `a` to a server that decodes twice; `%25u0061` is `a` to IIS); send the path as the upstream should read it",
        ));
    }
    if decoded.contains('\\') || decoded.matches('/').count() != raw.matches('/').count() {
        return Err(ApiError::bad_request(
            "bad_path",
            "a proxied path may not hold an encoded `/` or a `\\` (`%2F`, `%5C`); send the path as the upstream should read it",
        ));
    }
    let inner = decoded.strip_prefix('/').unwrap_or(&decoded);
    let inner = inner.strip_suffix('/').unwrap_or(inner);
    let empty = |seg: &str| seg.split(';').next().unwrap_or("").is_empty();
    if !decoded.is_empty() && decoded != "/" && inner.split('/').any(empty) {
        return Err(ApiError::bad_request(
            "bad_path",
            "a proxied path may not hold empty segments (`//`, `/;/`); send each segment once",
        ));
    }
    Ok(decoded.into_owned())
}

/// The methods the tool proxy forwards (docs/openapi.json).
const METHODS: [Method; 5] = [
    Method::GET,
    Method::POST,
    Method::PUT,
    Method::PATCH,
    Method::DELETE,
];

/// 405 `method_not_allowed` for any other method, names are case-sensitive (RFC 9110 §9.1):
/// a rule on `args.method` lists what it forbids, and a server that reads `delete`, `HEAD`
/// (as a GET) or an extension method (`PURGE`, `MOVE`) its own way would run what no rule
/// named.
fn refuse_method(method: &Method) -> Result<(), ApiError> {
    if METHODS.contains(method) {
        return Ok(());
    }
    Err(ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("the proxy forwards GET, POST, PUT, PATCH and DELETE; `{method}` is none of them"),
    )
    .with_header(
        header::ALLOW,
        HeaderValue::from_static("GET, POST, PUT, PATCH, DELETE"),
    ))
}

/// 431 `headers_too_large` when the request's headers (names and values) add up to more than
/// [`PROXIED_HEADER_BYTES_MAX`](crate::limits::PROXIED_HEADER_BYTES_MAX).
fn refuse_large_headers(headers: &HeaderMap) -> Result<(), ApiError> {
    let max = crate::limits::PROXIED_HEADER_BYTES_MAX;
    let bytes: usize = headers
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len())
        .sum();
    if bytes > max {
        return Err(ApiError::new(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "headers_too_large",
            format!("the request's headers hold {bytes} bytes, over the proxy's limit of {max}; send less in headers"),
        ));
    }
    Ok(())
}

/// Whether `text` (already percent-decoded once) still holds a percent-escape (`%` and two
/// hex digits) of a byte `of` accepts: sent double-encoded, it reads one way to the policy
/// and another to an upstream or framework that decodes twice.
fn holds_escape(text: &str, of: impl Fn(u8) -> bool) -> bool {
    let hex = |b: u8| char::from(b).to_digit(16).map(|d| d as u8);
    text.as_bytes()
        .windows(3)
        .any(|w| match (w[0], hex(w[1]), hex(w[2])) {
            (b'%', Some(hi), Some(lo)) => of(hi << 4 | lo),
            _ => false,
        })
}

/// Whether `text` (already percent-decoded once) holds IIS's non-standard `%uXXXX` escape
/// (`%u0065` is `e` to IIS and to decoders that copied it), which [`holds_escape`] does not
/// see: its third byte is `u`, not a hex digit.
fn holds_u_escape(text: &str) -> bool {
    text.as_bytes().windows(6).any(|w| {
        w[0] == b'%' && matches!(w[1], b'u' | b'U') && w[2..].iter().all(u8::is_ascii_hexdigit)
    })
}

/// Whether a query or form value (already percent-decoded once) would read as other text to
/// a server that decodes it again: an escape of a byte no one needs to escape ([`needless`]),
/// an IIS `%uXXXX` escape, or escapes whose bytes are not UTF-8 (`%25C1%25A5` is `%C1%A5`,
/// an overlong `e` that lenient decoders read as `e`). Escapes of reserved characters and of
/// UTF-8 text stay allowed: that is how a URL is carried as a value.
fn hides_text(text: &str) -> bool {
    if !text.contains('%') {
        return false;
    }
    holds_escape(text, needless)
        || holds_u_escape(text)
        || std::str::from_utf8(&percent_encoding::percent_decode_str(text).collect::<Vec<u8>>())
            .is_err()
}

/// A byte no one needs to escape (RFC 3986 §2.3's unreserved characters), or `%` itself: its
/// escape inside a decoded value is there to hide a letter from a check (`%65vil`), while an
/// escape of a reserved character or a space is how a URL carried as a value is written
/// (`url=https%3A%2F%2Fx.com%2Fa%2520b`).
fn needless(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'%')
}

pub(crate) async fn read_body(state: &AppState, body: Body) -> Result<Bytes, ApiError> {
    let limit = state.proxy.max_body_bytes;
    // Read up to the limit even when the declared length is over it: a 413 sent at once
    // would close the connection under a client still sending (a broken pipe, not the 413).
    let read = axum::body::to_bytes(body, limit);
    match tokio::time::timeout(state.proxy.body_timeout, read).await {
        Ok(Ok(b)) => Ok(b),
        Ok(Err(_)) => Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("the request body is over the node's limit of {limit} bytes"),
        )),
        Err(_) => Err(ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "timeout",
            "the request body did not arrive in time; send it at once",
        )),
    }
}

/// Builds the step from the request.
fn judge_request(
    parts: &axum::http::request::Parts,
    tool: &str,
    action: warden_actors::ActionClass,
    rest: &str,
    body: Bytes,
) -> Result<Judged, ApiError> {
    let mut args = Map::new();
    if let Some(q) = parts.uri.query() {
        insert_pairs(&mut args, q.as_bytes(), "query string")?;
    }
    insert_body(&mut args, &parts.headers, &body)?;
    if let Some(h) = judged_headers(&parts.headers)? {
        insert_once(&mut args, "headers", Value::Object(h), "headers")?;
    }
    if !rest.is_empty() {
        insert_once(&mut args, "path", Value::String(rest.to_string()), "path")?;
    }
    if parts.method != Method::POST {
        insert_once(
            &mut args,
            "method",
            Value::String(parts.method.to_string()),
            "method",
        )?;
    }
    let mut step = json!({"tool": tool, "action": action, "args": Value::Object(args)});
    for (key, name) in [("cost", "warden-cost"), ("signals", "warden-signals")] {
        if let Some(parsed) = control_header(&parts.headers, name)? {
            // Checked alone first, so an error names the header it is in.
            let alone = json!({"tool": tool, "action": action, key: parsed});
            serde_json::from_value::<Step>(alone).map_err(|e| {
                ApiError::bad_request("bad_step", format!("the {name} header: {e}"))
            })?;
            step[key] = parsed;
        }
    }
    let step: Step = serde_json::from_value(step)
        .map_err(|e| ApiError::bad_request("bad_step", e.to_string()))?;
    Ok(Judged { step, body })
}

/// The JSON object in control header `name` (`warden-cost`, `warden-signals`), if sent: sent
/// twice, not UTF-8, not one object, or with a key repeated is 400 `bad_step` (the node and
/// the agent must never read two different costs).
fn control_header(headers: &HeaderMap, name: &str) -> Result<Option<Value>, ApiError> {
    let mut all = headers.get_all(name).iter();
    let Some(v) = all.next() else {
        return Ok(None);
    };
    if all.next().is_some() {
        return Err(ApiError::bad_request(
            "bad_step",
            format!("the {name} header is sent more than once; send it once"),
        ));
    }
    v.to_str()
        .ok()
        .and_then(|t| warden_actors::step::parse_unique_json(t).ok())
        .filter(Value::is_object)
        .map(Some)
        .ok_or_else(|| {
            ApiError::bad_request(
                "bad_step",
                format!("the {name} header is not one JSON object with each key once"),
            )
        })
}

/// What an approval covers: the method, tool, path, query, body, the `Warden-*` cost and
/// signals and every header the upstream will see (an added `X-HTTP-Method-Override` makes
/// another request). Computed only when a request is parked or retried.
fn request_fingerprint(
    parts: &axum::http::request::Parts,
    tool: &str,
    body: &[u8],
) -> super::parked::Fingerprint {
    let header = |n: &str| parts.headers.get(n).map_or(&b""[..], HeaderValue::as_bytes);
    let mut sent: Vec<String> = forwarded_headers(&parts.headers, &[], !body.is_empty())
        .iter()
        .map(|(k, v)| format!("{k}: {}", String::from_utf8_lossy(v.as_bytes())))
        .collect();
    sent.sort();
    let sent = sent.join("\n");
    fingerprint(&[
        parts.method.as_str().as_bytes(),
        tool.as_bytes(),
        parts.uri.path().as_bytes(),
        parts.uri.query().unwrap_or("").as_bytes(),
        body,
        header("warden-cost"),
        header("warden-signals"),
        sent.as_bytes(),
    ])
}

/// Agent headers a tool's upstream never receives, nor judged: what HTTP clients send on
/// their own that a call does not need, and that would otherwise be text leaving the swarm
/// unread (`user-agent`; without `accept-encoding` the answer comes uncompressed; `expect:
/// 100-continue` is answered by the node, which reads the whole body before judging it; what
/// Node's `fetch` and browsers add: `accept-language`, `sec-fetch-*` and other `sec-*`
/// headers, `priority`, `dnt`, and caching directives). An upstream that wants a user agent
/// or a language has it set in its config (`upstreams.NAME.headers`).
const NOT_FORWARDED: [&str; 8] = [
    "user-agent",
    "accept-encoding",
    "accept-language",
    "expect",
    "pragma",
    "cache-control",
    "priority",
    "dnt",
];

/// True for a header [`forwarded_headers`] drops: [`NOT_FORWARDED`] and `sec-*`.
fn not_forwarded(name: &HeaderName) -> bool {
    NOT_FORWARDED.contains(&name.as_str()) || name.as_str().starts_with("sec-")
}

/// The usual values of `content-type` and `accept`, compared without case, spaces and tabs
/// (`application/json;charset=UTF-8` is one of them): forwarded without being judged. Any
/// other value is judged as the other headers are.
const PLAIN_VALUES: [&str; 11] = [
    "*/*",
    "application/json",
    "application/json;charset=utf-8",
    "application/json,text/plain,*/*",
    "application/x-www-form-urlencoded",
    "application/x-www-form-urlencoded;charset=utf-8",
    "application/xml",
    "text/event-stream",
    "text/html",
    "text/plain",
    "text/plain;charset=utf-8",
];

/// True when `v` is one of [`PLAIN_VALUES`].
fn plain_value(v: &str) -> bool {
    let bare: String = v
        .chars()
        .filter(|c| !matches!(c, ' ' | '\t'))
        .map(|c| c.to_ascii_lowercase())
        .collect();
    PLAIN_VALUES.contains(&bare.as_str())
}

/// The agent's headers the upstream will receive, for the step's `args.headers` (`{name:
/// value}`, names in lower case, a repeated header's values as a list): every header
/// [`forwarded_headers`] passes on but a `content-type` or `accept` of [`PLAIN_VALUES`].
/// A header's value is text leaving the swarm like a query's, so rules and detectors read
/// it (a tool whose `args:` list lacks `headers` is then denied by `registry.args`). `None`
/// when there are none; a value that is not text is 400 `bad_header`.
fn judged_headers(agent: &HeaderMap) -> Result<Option<Map<String, Value>>, ApiError> {
    let sent = forwarded_headers(agent, &[], false);
    let mut out = Map::new();
    for name in sent.keys() {
        let values = sent
            .get_all(name)
            .iter()
            .map(|v| v.to_str().map(|t| Value::String(t.to_string())))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| {
                ApiError::bad_request(
                    "bad_header",
                    format!("the {name} header is not text (visible ASCII); send it as text, or leave it out"),
                )
            })?;
        let plain = (name == header::CONTENT_TYPE || name == header::ACCEPT)
            && values.len() == 1
            && values[0].as_str().is_some_and(plain_value);
        if !plain {
            let value = match <[Value; 1]>::try_from(values) {
                Ok([one]) => one,
                Err(many) => Value::Array(many),
            };
            out.insert(name.as_str().to_string(), value);
        }
    }
    Ok((!out.is_empty()).then_some(out))
}

/// The headers a proxied tool request reaches its upstream with: [`forward::request_headers`]
/// without [`NOT_FORWARDED`], and the `Content-Type` the proxy judged the body as, whatever
/// `Connection` named (a body sent without one was judged as JSON, and goes as
/// `application/json`).
fn forwarded_headers(
    agent: &HeaderMap,
    upstream: &[(HeaderName, HeaderValue)],
    has_body: bool,
) -> HeaderMap {
    let mut out = forward::request_headers(agent, upstream);
    let dropped: Vec<HeaderName> = out
        .keys()
        .filter(|n| not_forwarded(n) && !upstream.iter().any(|(k, _)| k == *n))
        .cloned()
        .collect();
    for n in dropped {
        out.remove(n);
    }
    match agent.get(header::CONTENT_TYPE) {
        Some(ct) => {
            out.insert(header::CONTENT_TYPE, ct.clone());
        }
        None if has_body => {
            out.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
        }
        None => {}
    }
    out
}

/// The body's parameters: a JSON object's keys, or a form's pairs; an empty body has none.
/// Any other body is refused (415): what the policy cannot read is never forwarded.
fn insert_body(
    args: &mut Map<String, Value>,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(), ApiError> {
    if body.is_empty() {
        return Ok(());
    }
    let encoded = headers
        .get(header::CONTENT_ENCODING)
        .is_some_and(|v| !v.as_bytes().eq_ignore_ascii_case(b"identity"));
    if encoded {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "a compressed body (Content-Encoding) cannot be judged, so it is not forwarded; send it uncompressed",
        ));
    }
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    let mime = ct.split(';').next().unwrap_or("").trim();
    crate::http::body::check_charset(&ct)?;
    if mime == "application/x-www-form-urlencoded" {
        return insert_pairs(args, body, "form body");
    }
    if mime != "application/json" && !mime.ends_with("+json") && !mime.is_empty() {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            format!("the proxy judges JSON objects and forms; a {mime} body cannot be judged, so it is not forwarded"),
        ));
    }
    // The one way JSON text becomes step args: a repeated key is refused, not merged.
    let text = std::str::from_utf8(body)
        .map_err(|_| ApiError::bad_request("bad_json", "the body is not UTF-8"))?;
    let obj = match warden_actors::step::parse_unique_json(text) {
        Ok(Value::Object(obj)) => obj,
        Ok(other) => {
            let what = match other {
                Value::Array(_) => "a list",
                Value::String(_) => "a string",
                Value::Number(_) => "a number",
                _ => "not an object",
            };
            return Err(ApiError::bad_request(
                "bad_json",
                format!("the body is {what}; send one JSON object with each key once"),
            ));
        }
        // serde_json's message says what and where: a syntax error, a repeated key, nesting
        // past 128 levels ("recursion limit exceeded").
        Err(e) => {
            return Err(ApiError::bad_request(
                "bad_json",
                format!("the body is not JSON the proxy reads ({e}); send one object with each key once, nested at most 128 levels"),
            ))
        }
    };
    for (k, v) in obj {
        insert_once(args, &k, v, "body")?;
    }
    Ok(())
}

/// A query string's or form's pairs (`application/x-www-form-urlencoded`: `+` is a space,
/// `%XX` a byte). A name or value that is not UTF-8 once decoded is refused (400
/// `bad_encoding`): judged with U+FFFD in its place, the policy would read another value
/// than the upstream.
fn insert_pairs(args: &mut Map<String, Value>, text: &[u8], what: &str) -> Result<(), ApiError> {
    // Some parsers (Rack 2, older Python and Perl ones) split pairs at `;` too: the policy
    // would read `page=1;q=x` as one value where the upstream reads two.
    if text.contains(&b';') {
        return Err(ApiError::bad_request(
            "bad_encoding",
            format!("the {what} holds a raw `;`, which some servers read as a separator; send it as %3B"),
        ));
    }
    // Raw bytes outside printable ASCII: a form is percent-encoded ASCII, and such a body is
    // more likely another encoding of something else (JSON in UTF-16, behind a BOM).
    if text.iter().any(|b| *b >= 0x80 || *b == 0) {
        return Err(ApiError::bad_request(
            "bad_encoding",
            format!("the {what} holds raw bytes outside ASCII or NUL; percent-encode them"),
        ));
    }
    // A JSON text sent as a form: the policy would read one odd key where an upstream that
    // ignores the Content-Type reads the object.
    if matches!(text.trim_ascii_start().first(), Some(b'{' | b'[')) {
        return Err(ApiError::bad_request(
            "bad_encoding",
            format!("the {what} looks like JSON; send JSON as application/json"),
        ));
    }
    for (k, v) in form_urlencoded::parse(text) {
        if k.contains('\u{FFFD}') || v.contains('\u{FFFD}') {
            check_utf8_pairs(text, what)?;
        }
        if hides_text(&k) || hides_text(&v) {
            return Err(ApiError::bad_request(
                "bad_encoding",
                format!("a parameter of the {what} holds, once decoded, an escape of a letter, digit, `-`, `.`, `_`, `~` or `%`, a `%uXXXX` escape, or escaped bytes that are not UTF-8 (`%2565vil` is `%65vil` to the policy and `evil` to a server that decodes twice); send each value encoded once"),
            ));
        }
        // PHP reads a name up to its first NUL (`_method%00x` is `_method` there).
        if k.chars().any(char::is_control) {
            return Err(ApiError::bad_request(
                "bad_encoding",
                format!("a parameter name in the {what} holds a control character (`%00`, ...); send names without them"),
            ));
        }
        let v = Value::String(v.into_owned());
        if k.contains(['[', ']']) {
            insert_bracketed(args, &k, v, what)?;
        } else {
            insert_once(args, &k, v, what)?;
        }
    }
    Ok(())
}

/// 400 `bad_encoding` if a name or value of `text`'s pairs is not UTF-8 once decoded (a
/// U+FFFD that was sent as such, encoded or not, passes).
fn check_utf8_pairs(text: &[u8], what: &str) -> Result<(), ApiError> {
    let bad = text.split(|b| *b == b'&').any(|pair| {
        let spaced: Vec<u8> = pair
            .iter()
            .map(|b| if *b == b'+' { b' ' } else { *b })
            .collect();
        spaced.split(|b| *b == b'=').any(|side| {
            std::str::from_utf8(&percent_encoding::percent_decode(side).collect::<Vec<u8>>())
                .is_err()
        })
    });
    if bad {
        return Err(ApiError::bad_request(
            "bad_encoding",
            format!("a parameter of the {what} is not UTF-8 once percent-decoded; send UTF-8"),
        ));
    }
    Ok(())
}

/// Most levels of a bracketed name (`a[b][c][d][e][f]`), as `qs` reads by default.
const BRACKET_DEPTH_MAX: usize = 5;

/// A bracketed name's value put where PHP, Rails and `qs` put it, so the policy reads what the
/// upstream will: `to[country]=KP` is `{"to": {"country": "KP"}}`, `ids[]=1` and `a[0]=5000`
/// are elements of a list (`{"ids": ["1"]}`, `{"a": ["5000"]}`: a rule on `a` reads each).
/// Refused (400 `bad_encoding`): a name that is not `base[seg]...` (an empty base, a stray
/// `]`, text after a `]`), more than [`BRACKET_DEPTH_MAX`] levels; (400 `ambiguous_args`) a
/// name that is also given plainly, or a place given two shapes or values.
fn insert_bracketed(
    args: &mut Map<String, Value>,
    key: &str,
    v: Value,
    what: &str,
) -> Result<(), ApiError> {
    let malformed = || {
        ApiError::bad_request(
            "bad_encoding",
            format!("`{key}` in the {what} is not a name[key][...] path of at most {BRACKET_DEPTH_MAX} levels; send nested values as a JSON body"),
        )
    };
    let (base, mut rest) = key.split_at(key.find('[').ok_or_else(malformed)?);
    let mut segs = Vec::new();
    while let Some(inner) = rest.strip_prefix('[') {
        let end = inner.find(']').ok_or_else(malformed)?;
        segs.push(&inner[..end]);
        rest = &inner[end + 1..];
    }
    let bad_seg = |s: &&str| s.contains(['[', ']']);
    if base.is_empty() || base.contains(']') || !rest.is_empty() || segs.iter().any(bad_seg) {
        return Err(malformed());
    }
    if segs.len() > BRACKET_DEPTH_MAX {
        return Err(malformed());
    }
    check_method_name(base, what)?;
    let ambiguous = || {
        ApiError::bad_request(
            "ambiguous_args",
            format!("`{key}` in the {what} gives a value at a place already given another; send each parameter once"),
        )
    };
    let mut at = args.entry(base.to_string()).or_insert(Value::Null);
    for seg in segs {
        let list = seg.is_empty() || seg.bytes().all(|b| b.is_ascii_digit());
        at = match (at, list) {
            (slot @ Value::Null, true) => {
                *slot = Value::Array(vec![Value::Null]);
                slot.as_array_mut()
                    .and_then(|a| a.last_mut())
                    .ok_or_else(ambiguous)?
            }
            (Value::Array(a), true) => {
                a.push(Value::Null);
                a.last_mut().ok_or_else(ambiguous)?
            }
            (slot @ Value::Null, false) => {
                *slot = Value::Object(Map::new());
                slot.as_object_mut()
                    .ok_or_else(ambiguous)?
                    .entry(seg)
                    .or_insert(Value::Null)
            }
            (Value::Object(m), false) => m.entry(seg).or_insert(Value::Null),
            _ => return Err(ambiguous()),
        };
    }
    if !at.is_null() {
        return Err(ambiguous());
    }
    *at = v;
    Ok(())
}

/// Refuses a parameter PHP reads as `_method` (leading spaces dropped, `.` and ` ` made `_`):
/// Rails, Laravel and Symfony take it for the request's method (as the X-HTTP-Method-Override
/// header, which is refused too).
fn check_method_name(key: &str, what: &str) -> Result<(), ApiError> {
    let php: String = key
        .trim_start_matches(' ')
        .chars()
        .map(|c| if c == '.' || c == ' ' { '_' } else { c })
        .collect();
    if php.eq_ignore_ascii_case("_method") {
        return Err(ApiError::bad_request(
            "bad_step",
            format!("`{key}` in the {what} overrides the method at many servers; send the request with its real method"),
        ));
    }
    Ok(())
}

fn insert_once(
    args: &mut Map<String, Value>,
    key: &str,
    v: Value,
    what: &str,
) -> Result<(), ApiError> {
    check_method_name(key, what)?;
    if args.insert(key.to_string(), v).is_some() {
        return Err(ApiError::bad_request(
            "ambiguous_args",
            format!(
                "`{key}` is given more than once (again in the {what}); send each parameter once"
            ),
        ));
    }
    Ok(())
}

/// A decision that is not forwarded, as an answer: 403 (deny, halt) or 202
/// (require_approval), the decision JSON with an `error` object beside it.
fn answer(agent: &warden_actors::AgentId, d: &Decision) -> ApiError {
    let (status, code) = match d.decision {
        Verdict::RequireApproval => (StatusCode::ACCEPTED, "approval_required"),
        Verdict::Halt => (StatusCode::FORBIDDEN, "halted"),
        _ => (StatusCode::FORBIDDEN, "denied"),
    };
    let e = ApiError::with_body(status, code, decision_body(code, d))
        .with_header(HeaderName::from_static(STEP_HEADER), step_value(d.step));
    if d.decision != Verdict::RequireApproval {
        return e;
    }
    let wait = format!("/v1/agents/{agent}/steps/{}?wait=30s", d.step);
    match HeaderValue::from_str(&wait) {
        Ok(v) => e.with_header(header::LOCATION, v),
        Err(_) => e,
    }
}

fn step_value(step: StepId) -> HeaderValue {
    HeaderValue::from_str(&step.to_string()).unwrap_or(HeaderValue::from_static(""))
}

/// The decision JSON of a step the proxy did not forward.
pub fn decision_body(code: &str, d: &Decision) -> Value {
    let mut v = serde_json::to_value(DecisionView::from(d)).unwrap_or(Value::Null);
    v["error"] = json!({"code": code, "message": if d.reason.is_empty() { code.to_string() } else { d.reason.clone() }});
    v
}
