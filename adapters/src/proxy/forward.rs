//! Forwarding to an upstream: a pooled hyper client per thread (keep-alive per upstream, HTTP/1.1,
//! `http://` and `https://` with the Mozilla roots), header hygiene both ways (RFC 9110 §7.6.1
//! hop-by-hop headers dropped, the agent's own credentials and `warden-*` controls never
//! forwarded, the upstream's credentials added), and a deadline up to the answer's head.

use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Method, Request, Response, Uri};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::http::error::ApiError;
use crate::limits::{UPSTREAM_CONNECT_TIMEOUT, UPSTREAM_IDLE_CONNECTIONS_MAX};

/// The proxy's outbound client.
pub type HttpClient = Client<HttpsConnector<HttpConnector>, Body>;

/// The proxy's outbound clients: one per thread, each with its own connection pools, so an
/// upstream connection is driven by the thread whose handler uses it (the node serves each
/// connection on one thread: [`crate::http::serve`]), never handed to another thread's
/// reactor and back. Cheap to clone.
#[derive(Clone, Copy, Debug, Default)]
pub struct Clients;

impl Clients {
    /// This thread's client (made at its first use).
    pub fn here(&self) -> HttpClient {
        thread_local! {
            static CLIENT: HttpClient = client();
        }
        CLIENT.with(HttpClient::clone)
    }
}

/// A client with a connection pool per upstream host.
fn client() -> HttpClient {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(UPSTREAM_CONNECT_TIMEOUT));
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_webpki_roots()
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(90))
        .pool_max_idle_per_host(UPSTREAM_IDLE_CONNECTIONS_MAX)
        .build(https)
}

/// Hop-by-hop headers (RFC 9110 §7.6.1): they describe one connection, never forwarded.
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Parts of a credential this long or longer are secrets of their own (`Bearer` is not).
const SECRET_PART_BYTES_MIN: usize = 8;

/// Drops the hop-by-hop headers and every header the `Connection` header names.
fn drop_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for n in named {
        headers.remove(n);
    }
    for n in HOP_BY_HOP {
        headers.remove(n);
    }
}

/// The headers an agent's request reaches the upstream with: without hop-by-hop headers, the
/// `Host` (the client sets the upstream's), the agent's own credentials (`authorization`,
/// `x-api-key`), `content-length` (set from the body sent) and warden's own `warden-*`
/// controls; then the upstream's configured headers (its credentials) over them.
pub fn request_headers(agent: &HeaderMap, upstream: &[(HeaderName, HeaderValue)]) -> HeaderMap {
    let mut out = agent.clone();
    drop_hop_by_hop(&mut out);
    for n in [
        header::HOST,
        header::AUTHORIZATION,
        header::CONTENT_LENGTH,
        HeaderName::from_static("x-api-key"),
    ] {
        out.remove(n);
    }
    let controls: Vec<HeaderName> = out
        .keys()
        .filter(|k| k.as_str().starts_with("warden-"))
        .cloned()
        .collect();
    for k in controls {
        out.remove(k);
    }
    for (k, v) in upstream {
        out.insert(k.clone(), v.clone());
    }
    out
}

/// The headers an upstream's answer reaches the agent with: without hop-by-hop headers and
/// without any header whose value holds one of the upstream's credentials in any form
/// [`Secrets`] knows. Bodies are not rewritten: an upstream that echoes credentials in its
/// body leaks them.
pub fn response_headers(headers: &mut HeaderMap, secrets: &Secrets) {
    drop_hop_by_hop(headers);
    let leaking: Vec<HeaderName> = headers
        .iter()
        .filter(|(_, v)| secrets.held_by(v.as_bytes()))
        .map(|(k, _)| k.clone())
        .collect();
    for k in leaking {
        headers.remove(k);
    }
}

/// Request headers that make an upstream read another method or path than the request
/// line's (method overrides and URL rewrites, honoured by Express's `method-override`,
/// Symfony, IIS, Google's APIs, Envoy): the policy judged the request line, so a request
/// carrying one is refused ([`refuse_rewrites`]), never forwarded.
pub const REWRITE_HEADERS: [&str; 15] = [
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
    "x-original-method",
    "x-forwarded-method",
    "x-original-url",
    "x-original-uri",
    "x-original-path",
    "x-rewrite-url",
    "x-rewrite-uri",
    "x-forwarded-path",
    "x-forwarded-prefix",
    "x-forwarded-uri",
    "x-forwarded-url",
    "x-envoy-original-path",
];

/// 400 `rewrite_header` if the agent's request carries one of [`REWRITE_HEADERS`], spelled
/// with `-` or `_` (CGI, WSGI and Rack servers read both as the same variable).
pub fn refuse_rewrites(agent: &HeaderMap) -> Result<(), ApiError> {
    let same = |listed: &str, sent: &str| {
        listed.len() == sent.len()
            && listed
                .bytes()
                .zip(sent.bytes())
                .all(|(l, s)| l == s || (l == b'-' && s == b'_'))
    };
    let found = agent
        .keys()
        .find(|k| REWRITE_HEADERS.iter().any(|r| same(r, k.as_str())));
    match found {
        Some(n) => Err(ApiError::bad_request(
            "rewrite_header",
            format!("the `{n}` header would make the upstream read another method or path than the one the policy judged, so the request is not forwarded; send it with the method and path it means"),
        )),
        None => Ok(()),
    }
}

/// Every 12-byte stretch of a credential's part is a needle of its own (a truncated echo).
const SECRET_STRETCH_BYTES: usize = 12;

/// The forms an upstream's credentials are looked for in its answers' headers: each
/// configured header value whole, and each of its parts of 8 bytes or more (split at
/// whitespace, `,`, `;` and `=`: `Bearer <token>`'s token, not `Bearer`). For each of those
/// and each 12-byte stretch of it (a prefix or a piece): the bytes, reversed, in hex, and in
/// base64 (RFC 4648 standard and URL-safe alphabets) at each of the three alignments it can
/// have inside a longer encoded text (`Basic base64(user:key)`), the characters that depend
/// on its bytes alone. Compared without ASCII case, all at once (Aho-Corasick: one pass over
/// a header's value whatever the number of needles). Made once per upstream, when the config
/// is read.
#[derive(Clone, Debug, Default)]
pub struct Secrets {
    matcher: Option<aho_corasick::AhoCorasick>,
}

/// The base64 characters that only `piece`'s bytes decide, when `piece` starts `offset`
/// (0, 1 or 2) bytes into the encoded text: character `i` holds bits `6i..6i+6` of it.
fn base64_core(piece: &[u8], offset: usize, engine: &base64::engine::GeneralPurpose) -> Vec<u8> {
    use base64::Engine as _;
    let mut framed = vec![0u8; offset];
    framed.extend_from_slice(piece);
    framed.extend_from_slice(&[0, 0]);
    let text = engine.encode(&framed).into_bytes();
    let (start, end) = (8 * offset, 8 * (offset + piece.len()));
    (0..text.len())
        .filter(|i| 6 * i >= start && 6 * i + 6 <= end)
        .map(|i| text[i])
        .collect()
}

/// What [`Secrets`] looks for of one credential or piece of one.
fn forms_of(piece: &[u8], into: &mut Vec<Vec<u8>>) {
    into.push(piece.to_vec());
    into.push(piece.iter().rev().copied().collect());
    into.push(
        piece
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
            .into_bytes(),
    );
    for engine in [
        &base64::engine::general_purpose::STANDARD_NO_PAD,
        &base64::engine::general_purpose::URL_SAFE_NO_PAD,
    ] {
        for offset in 0..3 {
            let core = base64_core(piece, offset, engine);
            // Too short to be told from ordinary text (a piece of under 6 bytes).
            if core.len() >= SECRET_PART_BYTES_MIN {
                into.push(core);
            }
        }
    }
}

impl Secrets {
    /// The needles of `upstream`'s configured headers.
    ///
    /// # Errors
    /// The matcher could not be built (credentials too large for it): the upstream is refused
    /// rather than served without the check.
    pub fn new(upstream: &[(HeaderName, HeaderValue)]) -> Result<Self, String> {
        let mut needles: Vec<Vec<u8>> = Vec::new();
        for (_, v) in upstream {
            let whole = v.as_bytes();
            let parts = whole
                .split(|b| b.is_ascii_whitespace() || *b == b',' || *b == b';' || *b == b'=')
                .filter(|part| part.len() >= SECRET_PART_BYTES_MIN);
            for part in std::iter::once(whole).chain(parts) {
                if part.is_empty() {
                    continue;
                }
                forms_of(part, &mut needles);
                if part.len() > SECRET_STRETCH_BYTES {
                    for stretch in part.windows(SECRET_STRETCH_BYTES) {
                        forms_of(stretch, &mut needles);
                    }
                }
            }
        }
        needles.sort();
        needles.dedup();
        if needles.is_empty() {
            return Ok(Self { matcher: None });
        }
        let matcher = aho_corasick::AhoCorasick::builder()
            .ascii_case_insensitive(true)
            .build(&needles)
            .map_err(|e| format!("the credentials cannot be looked for in answers: {e}"))?;
        Ok(Self {
            matcher: Some(matcher),
        })
    }

    /// Whether `value` holds any of the needles.
    pub fn held_by(&self, value: &[u8]) -> bool {
        self.matcher.as_ref().is_some_and(|m| m.is_match(value))
    }
}

/// `base` (an upstream's URL, perhaps with a path) joined with `path` (empty or starting with
/// `/`) and `query`.
///
/// # Errors
/// 502 `bad_upstream` when the result is not a valid URI (a config fault).
pub fn join(base: &str, path: &str, query: Option<&str>) -> Result<Uri, ApiError> {
    let mut uri = format!("{}{path}", base.trim_end_matches('/'));
    if uri.ends_with("://") || !uri[uri.find("://").map_or(0, |i| i + 3)..].contains('/') {
        uri.push('/');
    }
    if let Some(q) = query {
        uri.push('?');
        uri.push_str(q);
    }
    uri.parse().map_err(|e| {
        ApiError::new(
            axum::http::StatusCode::BAD_GATEWAY,
            "bad_upstream",
            format!("the upstream URL {base:?} joined with the request's path is not a URL: {e}"),
        )
    })
}

/// Sends a request and waits up to `timeout` for the answer's head; the body then streams.
/// Returns the answer and how long the upstream took to start answering.
///
/// # Errors
/// 504 `upstream_timeout` past the deadline, 502 `upstream_unreachable` when the connection
/// fails or is reset; neither says more than the upstream's name (its URL and credentials stay
/// on the node).
pub async fn send(
    clients: Clients,
    upstream: &str,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
    timeout: Duration,
) -> Result<(Response<hyper::body::Incoming>, Duration), ApiError> {
    let mut req = Request::builder().method(method).uri(uri);
    if let Some(h) = req.headers_mut() {
        *h = headers;
    }
    let req = req
        .body(body)
        .map_err(|e| ApiError::internal(format!("building the upstream request: {e}")))?;
    let started = Instant::now();
    match tokio::time::timeout(timeout, clients.here().request(req)).await {
        Ok(Ok(resp)) => Ok((resp, started.elapsed())),
        Ok(Err(e)) => Err(ApiError::new(
            axum::http::StatusCode::BAD_GATEWAY,
            "upstream_unreachable",
            format!(
                "upstream `{upstream}` could not be reached: {}",
                if e.is_connect() {
                    "connection failed"
                } else {
                    "the connection was reset"
                }
            ),
        )),
        Err(_) => Err(ApiError::new(
            axum::http::StatusCode::GATEWAY_TIMEOUT,
            "upstream_timeout",
            format!(
                "upstream `{upstream}` did not answer within {} ms",
                timeout.as_millis()
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_credentials_hop_by_hop_and_controls_never_reach_the_upstream() {
        let mut h = HeaderMap::new();
        h.insert("authorization", "Bearer agent-token".parse().unwrap());
        h.insert("x-api-key", "agent-token".parse().unwrap());
        h.insert("connection", "close, x-secret-hop".parse().unwrap());
        h.insert("x-secret-hop", "1".parse().unwrap());
        h.insert("warden-cost", "{}".parse().unwrap());
        h.insert("te", "trailers".parse().unwrap());
        h.insert("content-type", "application/json".parse().unwrap());
        let up = [(
            HeaderName::from_static("authorization"),
            HeaderValue::from_static("Bearer upstream"),
        )];
        let out = request_headers(&h, &up);
        assert_eq!(out["authorization"], "Bearer upstream");
        assert_eq!(out["content-type"], "application/json");
        for gone in [
            "x-api-key",
            "connection",
            "x-secret-hop",
            "warden-cost",
            "te",
        ] {
            assert!(out.get(gone).is_none(), "{gone} was forwarded");
        }
    }

    #[test]
    fn an_answer_echoing_a_credential_loses_that_header() {
        let up = [(
            HeaderName::from_static("x-api-key"),
            HeaderValue::from_static("s3cret"),
        )];
        let mut h = HeaderMap::new();
        h.insert("x-echo", "s3cret".parse().unwrap());
        h.insert("content-type", "text/plain".parse().unwrap());
        response_headers(&mut h, &Secrets::new(&up).unwrap());
        assert!(h.get("x-echo").is_none());
        assert!(h.get("content-type").is_some());
        let up = [(
            HeaderName::from_static("authorization"),
            HeaderValue::from_static("Bearer sk-live-0123456789"),
        )];
        let mut h = HeaderMap::new();
        h.insert(
            "set-cookie",
            "s=sk-live-0123456789; Path=/".parse().unwrap(),
        );
        h.insert("x-partial", "key=sk-live-0123456789".parse().unwrap());
        h.insert("x-fine", "Bearer of good news".parse().unwrap());
        response_headers(&mut h, &Secrets::new(&up).unwrap());
        assert!(
            h.get("set-cookie").is_none() && h.get("x-partial").is_none(),
            "{h:?}"
        );
        assert!(h.get("x-fine").is_some(), "`Bearer` alone is no secret");
    }

    #[test]
    fn an_answer_echoing_part_of_a_credential_or_an_encoding_of_it_loses_that_header() {
        use base64::Engine as _;
        let key = "sk-TOOLSECRET-abcdef123456";
        let up = [(
            HeaderName::from_static("x-api-key"),
            HeaderValue::from_static("sk-TOOLSECRET-abcdef123456"),
        )];
        let secrets = Secrets::new(&up).unwrap();
        let reversed: String = key.chars().rev().collect();
        let basic = |s: &str| {
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(s)
            )
        };
        let hex: String = key.bytes().map(|b| format!("{b:02x}")).collect();
        for echo in [
            &key[..25],
            &key[..13],
            &key[6..20],
            &key.to_uppercase(),
            &reversed,
            &base64::engine::general_purpose::STANDARD.encode(key),
            &base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(key),
            &hex.to_uppercase(),
            &basic(&format!("{key}:")),
            &basic(&format!("api:{key}")),
            &basic(&format!("AC0123456789abcdef0123456789abcdef:{key}")),
            &basic(&format!("{{\"key\":\"{key}\"}}")),
            &hex[6..40],
            &reversed[3..17],
            &base64::engine::general_purpose::STANDARD.encode(&key[4..20]),
        ] {
            let mut h = HeaderMap::new();
            h.insert("x-out", format!("v={echo}").parse().unwrap());
            h.insert("x-fine", "sk-OTHER-value".parse().unwrap());
            response_headers(&mut h, &secrets);
            assert!(h.get("x-out").is_none(), "{echo} reached the agent");
            assert!(h.get("x-fine").is_some(), "{echo}");
        }
        // A short credential is looked for whole (no 12-byte stretch of it exists).
        let short = Secrets::new(&[(
            HeaderName::from_static("x-api-key"),
            HeaderValue::from_static("s3cret"),
        )])
        .unwrap();
        assert!(short.held_by(b"S3CRET") && !short.held_by(b"s3cre"));
        // Ordinary headers stay, even beside an 8-byte credential.
        let eight = Secrets::new(&[(
            HeaderName::from_static("x-api-key"),
            HeaderValue::from_static("k8Sh0rtZ"),
        )])
        .unwrap();
        for fine in [
            "application/json; charset=utf-8",
            "W/\"5e1f-0123456789\"",
            "Wed, 02 Dec 2026 03:40:00 GMT",
            "max-age=0, no-cache",
            "req_01HZX3K8Q2M9T7V4",
            "k8Sh",
        ] {
            assert!(!eight.held_by(fine.as_bytes()), "{fine}");
        }
        assert!(
            eight.held_by(b"Basic YXBpOms4U2gwcnRa"),
            "base64 of api:k8Sh0rtZ"
        );
    }

    #[test]
    fn a_method_override_or_url_rewrite_header_is_refused() {
        for name in REWRITE_HEADERS {
            let mut h = HeaderMap::new();
            h.insert(HeaderName::from_static(name), "DELETE".parse().unwrap());
            let err = refuse_rewrites(&h).unwrap_err();
            assert_eq!(err.code, "rewrite_header");
        }
        let mut h = HeaderMap::new();
        h.insert("x_http_method_override", "DELETE".parse().unwrap());
        assert!(
            refuse_rewrites(&h).is_err(),
            "underscores: the same to CGI servers"
        );
        let mut h = HeaderMap::new();
        h.insert("x-request-id", "1".parse().unwrap());
        assert!(refuse_rewrites(&h).is_ok());
    }

    #[test]
    fn paths_join_onto_the_base_with_or_without_its_own_path() {
        let j = |b, p, q| join(b, p, q).unwrap().to_string();
        assert_eq!(j("http://h:1", "", None), "http://h:1/");
        assert_eq!(j("http://h:1/", "/a/b", Some("x=1")), "http://h:1/a/b?x=1");
        assert_eq!(j("http://h:1/v1", "/chat", None), "http://h:1/v1/chat");
        assert_eq!(j("http://h:1/v1/", "", None), "http://h:1/v1");
    }
}
