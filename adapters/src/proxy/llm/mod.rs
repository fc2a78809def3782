//! The LLM proxy: `POST /v1/chat/completions` and `POST /v1/responses` in OpenAI's shapes,
//! `POST /v1/messages` in Anthropic's, streaming (SSE) or not, with the agent's token as the
//! API key. A drop-in base URL for the `openai` and `anthropic` clients.
//!
//! Every request is **reserved before it is forwarded** at an upper bound of its cost:
//! input tokens at most the request body's bytes plus [`INPUT_OVERHEAD_TOKENS`] (a BPE token
//! is at least one byte of the text it encodes, and the JSON body holds every text plus its
//! quoting, more than the chat formats' few tokens of framing per message), output tokens at
//! most the request's own limit, never above the model's `max_output_tokens` from `prices`
//! (the limit is written into the forwarded request, so the upstream keeps to it), times the
//! choices (`n`), at the model's price. A model without a price, or a request whose cost
//! cannot be bounded (images, audio, files, hosted tools, server-side conversation state),
//! is refused, never forwarded unreserved.
//!
//! The step: tool = the upstream's name in the config (list it in the policy's registry, e.g.
//! `openai: {action: network, upstream: openai}`; unlisted, the default decision applies),
//! args = `{model, api, stream, max_output_tokens, n, tools, input_digest, instructions,
//! prompt, tool_output}` (the function names offered; the text the model reads: what the
//! developer wrote, the conversation, and what tools returned, see [`prompt`], so detector
//! rules judge what an agent sends a model).
//! Settled from the answer's `usage` (the rest refunded); an answer without usage is charged
//! its reservation, a stream without usage what it streamed (see [`meter`]); an upstream error
//! answer (not 2xx) is a failure that used nothing. Tool calls the model returns are judged
//! before the agent receives them ([`crate::proxy::judge`]).

pub mod meter;
pub mod prompt;
pub mod shape;
pub mod sse;
mod stream;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use bytes::Bytes;
use http_body_util::BodyExt;
use serde_json::{json, Map, Value};
use warden_actors::{ActionClass, Outcome, Step, StepId, Usage, Verdict};

use warden_supervisor::AgentHandle;

use super::gate::{admit, Refused};
use super::parked::fingerprint;
use super::settle::Settlement;
use super::{forward, Forwarded, Route};
use crate::api::agents::handle;
use crate::config::Price;
use crate::http::auth::TokenAgent;
use crate::http::error::ApiError;
use crate::http::AppState;
use crate::limits::LLM_ANSWER_BYTES_MAX;
use shape::{Api, Bound, Used};

/// Tokens added to the input bound for the framing a chat format adds around the messages.
pub const INPUT_OVERHEAD_TOKENS: u64 = 16;

/// Tokens added to a Messages request's input bound when it offers tools: Anthropic adds a
/// tool-use system prompt the body does not show (159 to 530 tokens by model and
/// `tool_choice` in Anthropic's "Tool use" pricing table; rounded up).
pub const TOOL_PROMPT_TOKENS: u64 = 1_000;

/// The LLM routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/chat/completions", post(chat))
        .route("/v1/responses", post(responses))
        .route("/v1/messages", post(messages))
}

async fn chat(agent: TokenAgent, State(state): State<AppState>, req: Request) -> Response {
    serve(Api::Chat, agent, state, req).await
}

async fn responses(agent: TokenAgent, State(state): State<AppState>, req: Request) -> Response {
    serve(Api::Responses, agent, state, req).await
}

async fn messages(agent: TokenAgent, State(state): State<AppState>, req: Request) -> Response {
    serve(Api::Messages, agent, state, req).await
}

async fn serve(api: Api, agent: TokenAgent, state: AppState, req: Request) -> Response {
    let (resp, tool) = match run(api, agent, &state, req).await {
        Ok(r) => r,
        Err((e, tool)) => (render(api, e), tool),
    };
    metrics::counter!("warden_proxy_requests_total", "tool" => tool, "status" => resp.status().as_str().to_string())
        .increment(1);
    resp
}

/// An error in the API's own shape (the client's SDK shows its message).
fn render(api: Api, e: ApiError) -> Response {
    let status = e.status;
    let extra = e.extra.map(|x| *x).unwrap_or_default();
    let body = match extra.body {
        Some(b) => b,
        None => api.error_body(status.as_u16(), e.code, &e.message, None),
    };
    let mut resp = (status, axum::Json(body)).into_response();
    for (k, v) in extra.headers {
        resp.headers_mut().insert(k, v);
    }
    resp
}

/// A request, checked and bounded.
struct Priced {
    body: Bytes,
    price: Price,
    route: std::sync::Arc<Route>,
    bound: Bound,
    stream: bool,
    /// The client asked for usage in its stream itself.
    usage_asked: bool,
    step: Step,
}

type Failed = (ApiError, String);

async fn run(
    api: Api,
    TokenAgent(agent): TokenAgent,
    state: &AppState,
    req: Request,
) -> Result<(Response, String), Failed> {
    let unknown = |e| (e, "unknown".to_string());
    let (parts, body) = req.into_parts();
    forward::refuse_rewrites(&parts.headers).map_err(unknown)?;
    let original = super::tool::read_body(state, body).await.map_err(unknown)?;
    let p = price_request(api, state, &original).map_err(unknown)?;
    refuse_betas(&parts.headers, &p.route).map_err(unknown)?;
    // Checked before anything is decided: a malformed request changes nothing.
    let headers = upstream_headers(&parts.headers, &p.route).map_err(unknown)?;
    let tool = p.route.name.clone();
    let fail = |e| (e, tool.clone());
    let h = handle(state, &agent).map_err(fail)?;
    let slot = p.route.slot().map_err(fail)?;
    let fp = fingerprint(&[api.name().as_bytes(), &original]);
    let retry = parts.headers.get(super::tool::STEP_HEADER);
    let step = match admit(state, &h, p.step.clone(), || fp, retry).await {
        Ok(s) => s,
        Err(Refused::Decision(d)) => return Err(fail(refusal(api, &agent, &d))),
        Err(Refused::Error(e)) => return Err(fail(e)),
    };
    let settlement = Settlement::new(h.clone(), step);
    let step = step.step;
    let uri = forward::join(&p.route.url, api.path(), None).map_err(fail)?;
    let (resp, took) = forward::send(
        state.proxy.client,
        &p.route.name,
        axum::http::Method::POST,
        uri,
        headers,
        Body::from(p.body.clone()),
        p.route.timeout,
    )
    .await
    .map_err(fail)?;
    p.route.observe(took);
    let live = LiveCall {
        api,
        state: state.clone(),
        h,
        step,
        price: p.price.clone(),
        bound: p.bound,
        usage_asked: p.usage_asked,
        settlement,
    };
    let is_sse = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/event-stream"));
    let resp = if p.stream && is_sse && resp.status().is_success() {
        stream::start(live, resp, slot, &p.route)
    } else {
        whole(live, resp, &p.route).await.map_err(fail)?
    };
    Ok((resp, tool))
}

/// Whether a header's value has the shape its API documents.
type Shape = fn(&str) -> bool;

/// Agent request headers an LLM upstream receives, each with the shape its value must have:
/// the API's version and betas, whose values are names and dates from a fixed vocabulary.
const FORWARDED: [(&str, Shape); 3] = [
    ("anthropic-version", is_date),
    ("anthropic-beta", |v| {
        v.split(',').count() <= PRICE_NEUTRAL_BETAS.len()
            && v.split(',')
                .map(str::trim)
                .all(|n| n.is_empty() || beta_allowed(n))
    }),
    ("openai-beta", is_openai_beta),
];

/// The headers a request reaches an LLM upstream with: the agent's [`FORWARDED`] headers
/// (a value of another shape, or one sent twice, is 400 `bad_request`), then the upstream's configured headers
/// over them (its credentials, and whom it bills: `openai-organization`, `openai-project`),
/// and `content-type: application/json`. Nothing else the agent sends is forwarded: a header
/// is text leaving the swarm that no rule would judge (a key in `x-note`, a user agent, an
/// idempotency key), and answers must arrive uncompressed to be metered and judged (no
/// `accept-encoding`).
fn upstream_headers(agent: &HeaderMap, route: &Route) -> Result<HeaderMap, ApiError> {
    let mut out = HeaderMap::new();
    for (name, shape) in FORWARDED {
        if route.headers.iter().any(|(k, _)| k == name) {
            continue; // the upstream's own value replaces the agent's
        }
        if agent.get_all(name).iter().count() > 1 {
            return Err(ApiError::bad_request(
                "bad_request",
                format!("the {name} header is sent more than once; send it once (names comma-separated)"),
            ));
        }
        for v in agent.get_all(name) {
            let text = v.to_str().unwrap_or("\u{fffd}");
            if !shape(text) {
                return Err(ApiError::bad_request(
                    "bad_request",
                    format!("the {name} header's value `{}` is not of the shape the proxy forwards (a date, or names from the API's own list); send it as the API documents it, or leave it out", text.escape_debug()),
                ));
            }
            out.append(HeaderName::from_static(name), v.clone());
        }
    }
    for (k, v) in route.headers.iter() {
        out.insert(k.clone(), v.clone());
    }
    out.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Ok(out)
}

/// `YYYY-MM-DD` (`anthropic-version: 2023-06-01`).
fn is_date(v: &str) -> bool {
    let b = v.as_bytes();
    b.len() == 10
        && b.iter()
            .enumerate()
            .all(|(i, c)| matches!(i, 4 | 7) == (*c == b'-') && (c.is_ascii_digit() || *c == b'-'))
}

/// OpenAI's beta names (`openai-beta: assistants=v2`).
const OPENAI_BETAS: [&str; 3] = ["assistants", "realtime", "responses"];

/// `name=vN` of [`OPENAI_BETAS`] (one digit), comma-separated, at most three.
fn is_openai_beta(v: &str) -> bool {
    v.split(',').count() <= OPENAI_BETAS.len()
        && v.split(',').all(|one| {
            let Some((name, version)) = one.trim().split_once("=v") else {
                return false;
            };
            OPENAI_BETAS.contains(&name)
                && version.len() == 1
                && version.bytes().all(|b| b.is_ascii_digit())
        })
}

/// Anthropic betas that change what a request may do but not what its tokens cost (each
/// name's prefix; the date after it varies): prompt caching (whose writes the reservation
/// covers), tool and thinking formats, longer outputs (bound by the request's own limit), and
/// Claude Code's own.
const PRICE_NEUTRAL_BETAS: [&str; 8] = [
    "prompt-caching-",
    "token-efficient-tools-",
    "fine-grained-tool-streaming-",
    "interleaved-thinking-",
    "output-128k-",
    "claude-code-",
    "oauth-",
    "extended-cache-ttl-",
];

/// Refuses an agent's `anthropic-beta` header (400 `unbounded_cost`) naming a beta outside
/// [`PRICE_NEUTRAL_BETAS`]: others turn on features priced above the model's price (fast mode,
/// a 1M-token context) or not yet known to the proxy. An upstream whose config sets the
/// header (`upstreams.NAME.headers`) replaces the agent's, so nothing is refused there.
fn refuse_betas(headers: &axum::http::HeaderMap, route: &Route) -> Result<(), ApiError> {
    let beta = axum::http::HeaderName::from_static("anthropic-beta");
    if route.headers.iter().any(|(k, _)| *k == beta) {
        return Ok(());
    }
    for value in headers.get_all(&beta) {
        let text = value.to_str().unwrap_or("\u{fffd}");
        let names = text.split(',').map(str::trim).filter(|n| !n.is_empty());
        for name in names {
            if !beta_allowed(name) {
                return Err(ApiError::bad_request(
                    "unbounded_cost",
                    format!("the beta `{name}` (`anthropic-beta`) may turn on features priced above the model's price in the node's config (fast mode, a 1M-token context); leave it out, or have the operator set the header for the upstream (`upstreams.NAME.headers`)"),
                ));
            }
        }
    }
    Ok(())
}

/// A [`PRICE_NEUTRAL_BETAS`] name followed by its date (`prompt-caching-2024-07-31`,
/// `claude-code-20250219`): nothing else, so a name carries no other text (one name per
/// comma: `a b`, `a;b` or a tab would hide a second name).
fn beta_allowed(name: &str) -> bool {
    PRICE_NEUTRAL_BETAS.iter().any(|p| {
        name.strip_prefix(p).is_some_and(|date| {
            is_date(date) || (date.len() == 8 && date.bytes().all(|b| b.is_ascii_digit()))
        })
    })
}

/// Reads the request, finds its price and upstream, bounds it and builds its step.
fn price_request(api: Api, state: &AppState, original: &[u8]) -> Result<Priced, ApiError> {
    let text = std::str::from_utf8(original)
        .map_err(|_| ApiError::bad_request("bad_json", "the body is not UTF-8"))?;
    let Ok(Value::Object(mut req)) = warden_actors::step::parse_unique_json(text) else {
        return Err(ApiError::bad_request(
            "bad_json",
            "the body must be one JSON object with each key once",
        ));
    };
    let model = req
        .get("model")
        .and_then(Value::as_str)
        .ok_or_else(|| ApiError::bad_request("bad_request", "`model` (a string) is required"))?
        .to_string();
    let price = state.proxy.prices.get(&model).cloned().ok_or_else(|| {
        ApiError::bad_request(
            "model_not_priced",
            format!("model `{model}` has no price in the node's config (`prices`); the proxy forwards only what it can bound and charge"),
        )
    })?;
    let route = state
        .proxy
        .route(&price.upstream)
        .filter(|r| r.kind == api.kind())
        .ok_or_else(|| {
            ApiError::bad_request(
                "wrong_api",
                format!(
                    "model `{model}` is served by upstream `{}`, which does not speak the {} API",
                    price.upstream,
                    api.name()
                ),
            )
        })?;
    let usage_asked = req
        .get("stream_options")
        .and_then(|o| o.get("include_usage"))
        == Some(&Value::Bool(true));
    let (out, n) = api
        .prepare(&mut req, price.max_output_tokens, route.write_max_tokens)
        .map_err(|m| ApiError::bad_request("unbounded_cost", m))?;
    let body = Bytes::from(rewrite(text, &req));
    let bound = Bound {
        input: input_bound(api, &req, body.len() as u64),
        output: out.saturating_mul(n),
    };
    let stream = req.get("stream") == Some(&Value::Bool(true));
    let step = llm_step(state, api, &route.name, &req, &model, bound, out, n, &price)?;
    Ok(Priced {
        body,
        price,
        route,
        bound,
        stream,
        usage_asked,
        step,
    })
}

/// The input tokens a request can be billed, at the input price: the forwarded body's bytes
/// plus [`INPUT_OVERHEAD_TOKENS`]; on Messages plus [`TOOL_PROMPT_TOKENS`] when it offers
/// tools and again when it asks for structured output (each adds a system prompt the body
/// does not show), and twice all that when it asks for cache writes (billed at up to twice
/// the input price: [`shape::messages_input`]).
fn input_bound(api: Api, req: &Map<String, Value>, body_bytes: u64) -> u64 {
    let mut input = body_bytes.saturating_add(INPUT_OVERHEAD_TOKENS);
    if api != Api::Messages {
        return input;
    }
    let offers_tools = req
        .get("tools")
        .and_then(Value::as_array)
        .is_some_and(|t| !t.is_empty());
    // Structured outputs add a system prompt of their own.
    let structured = ["output_config", "output_format"]
        .iter()
        .any(|k| req.get(*k).is_some_and(|v| !v.is_null()));
    for hidden in [offers_tools, structured] {
        if hidden {
            input = input.saturating_add(TOOL_PROMPT_TOKENS);
        }
    }
    let cache = req
        .iter()
        .any(|(k, x)| (k == "cache_control" && !x.is_null()) || shape::asks_cache_writes(x));
    if cache {
        input = input.saturating_mul(2);
    }
    input
}

/// The request as forwarded: its members in the order sent, each one the proxy did not
/// change byte for byte as sent (a JSON schema's property order is the order a model
/// generates in), then the members the proxy added. `req` is the request after
/// [`Api::prepare`]; `text` what the client sent (already parsed, so it is valid).
fn rewrite(text: &str, req: &Map<String, Value>) -> Vec<u8> {
    let sent = serde_json::from_str::<Ordered>(text)
        .map(|o| o.0)
        .unwrap_or_default();
    let mut out = Vec::with_capacity(text.len() + 64);
    out.push(b'{');
    let mut first = true;
    let mut member = |out: &mut Vec<u8>, k: &str, v: &[u8]| {
        if !std::mem::take(&mut first) {
            out.push(b',');
        }
        out.extend_from_slice(Value::String(k.to_string()).to_string().as_bytes());
        out.push(b':');
        out.extend_from_slice(v);
    };
    for (k, raw) in &sent {
        let Some(now) = req.get(k) else { continue };
        let unchanged = serde_json::from_str::<Value>(raw.get()).is_ok_and(|v| &v == now);
        let bytes = if unchanged {
            raw.get().to_string()
        } else {
            now.to_string()
        };
        member(&mut out, k, bytes.as_bytes());
    }
    for (k, v) in req {
        if !sent.iter().any(|(s, _)| s == k) {
            member(&mut out, k, v.to_string().as_bytes());
        }
    }
    out.push(b'}');
    out
}

/// A JSON object's members in order, values as raw text.
struct Ordered(Vec<(String, Box<serde_json::value::RawValue>)>);

impl<'de> serde::Deserialize<'de> for Ordered {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Ordered;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut m: A,
            ) -> Result<Ordered, A::Error> {
                let mut out = Vec::new();
                while let Some(k) = m.next_key::<String>()? {
                    out.push((k, m.next_value()?));
                }
                Ok(Ordered(out))
            }
        }
        d.deserialize_map(V)
    }
}

/// The step a request is decided as.
#[allow(clippy::too_many_arguments)]
fn llm_step(
    state: &AppState,
    api: Api,
    tool: &str,
    req: &Map<String, Value>,
    model: &str,
    bound: Bound,
    out: u64,
    n: u64,
    price: &Price,
) -> Result<Step, ApiError> {
    let offered = offered_tools(req);
    let action = state
        .proxy
        .tool_action(tool)
        .unwrap_or(ActionClass::Network);
    // What the model is asked, as a digest: the same request again is the same step (a loop
    // the stagnation detector sees), another request another.
    let asked: Vec<&Value> = ["messages", "input", "system", "instructions"]
        .iter()
        .filter_map(|k| req.get(*k))
        .collect();
    let digest = warden_actors::ids::hex(
        &blake3::hash(serde_json::to_string(&asked).unwrap_or_default().as_bytes()).as_bytes()[..8],
    );
    let used = Used {
        input: bound.input,
        output: bound.output,
    };
    let text = prompt::prompt_text(req);
    let mut args = json!({
        "model": model, "api": api.name(), "stream": req.get("stream") == Some(&Value::Bool(true)),
        "max_output_tokens": out, "n": n, "tools": offered, "input_digest": digest,
        "instructions": text.instructions, "prompt": text.prompt, "tool_output": text.tool_output,
    });
    if text.cut {
        args["prompt_cut"] = Value::Bool(true);
    }
    let step = json!({
        "tool": tool,
        "action": action,
        "args": args,
        "cost": {"tokens": used.input + used.output, "cost_micro_usd": cost_micro_usd(price, used)},
    });
    serde_json::from_value(step).map_err(|e| ApiError::bad_request("bad_step", e.to_string()))
}

/// The names of the tools a request offers the model (the step's `args.tools`): function
/// tools (`function.name`; Responses' and Anthropic's `name`), custom tools (`custom.name`)
/// and the legacy `functions` list.
fn offered_tools(req: &Map<String, Value>) -> Vec<Value> {
    ["tools", "functions"]
        .iter()
        .filter_map(|k| req.get(*k).and_then(Value::as_array))
        .flatten()
        .filter_map(|t| {
            t.pointer("/function/name")
                .or_else(|| t.pointer("/custom/name"))
                .or_else(|| t.get("name"))
                .cloned()
        })
        .collect()
}

/// The price of `used` tokens in micro-USD, each part rounded up.
pub fn cost_micro_usd(price: &Price, used: Used) -> u64 {
    let part = |tokens: u64, per_mtok: u64| {
        (u128::from(tokens) * u128::from(per_mtok)).div_ceil(1_000_000)
    };
    let total = part(used.input, price.input_micro_usd_per_mtok)
        + part(used.output, price.output_micro_usd_per_mtok);
    u64::try_from(total).unwrap_or(u64::MAX)
}

/// A refusal in the API's shape, with the decision under `warden`.
fn refusal(api: Api, agent: &warden_actors::AgentId, d: &warden_actors::Decision) -> ApiError {
    let (code, message) = match d.decision {
        Verdict::RequireApproval => (
            "approval_required",
            format!(
                "warden: this request needs approval ({}): {}. Once approved (GET /v1/agents/{agent}/steps/{}?wait=30s says allow), send it again with the header Warden-Step: {}",
                d.approval.as_deref().unwrap_or("?"),
                d.reason,
                d.step,
                d.step
            ),
        ),
        Verdict::Halt => ("halted", format!("warden: agent {agent} is halted: {}", d.reason)),
        _ => ("denied", format!("warden: denied by rule {}: {}", d.rule.as_deref().unwrap_or("(none)"), d.reason)),
    };
    let decision = super::tool::decision_body(code, d);
    ApiError::with_body(
        StatusCode::FORBIDDEN,
        "denied",
        api.error_body(403, code, &message, Some(decision)),
    )
}

/// A forwarded call and what settles it.
pub(crate) struct LiveCall {
    api: Api,
    state: AppState,
    h: AgentHandle,
    step: StepId,
    price: Price,
    bound: Bound,
    usage_asked: bool,
    settlement: Settlement,
}

impl LiveCall {
    /// Settles at what was reserved (nothing says what was used).
    fn settle_reserved(mut self, success: bool) {
        let outcome = if success {
            Outcome::success()
        } else {
            Outcome::failure()
        };
        self.settlement.set(outcome);
    }

    /// Settles with `used` tokens (as success or failure) and counts them.
    fn settle(mut self, success: bool, used: Used) {
        let usage = Usage::new()
            .tokens(used.input.saturating_add(used.output))
            .cost_micro_usd(cost_micro_usd(&self.price, used));
        let outcome = if success {
            Outcome::success()
        } else {
            Outcome::failure()
        };
        self.settlement.set(outcome.with_usage(usage));
        let pool = self.h.pool();
        for (direction, n) in [("input", used.input), ("output", used.output)] {
            metrics::counter!("warden_tokens_total", "pool" => pool.clone(), "direction" => direction)
                .increment(n);
        }
    }
}

/// A whole (non-streamed) answer: read, settled from its usage, its tool calls judged.
async fn whole(
    live: LiveCall,
    resp: axum::http::Response<hyper::body::Incoming>,
    route: &Route,
) -> Result<Response, ApiError> {
    let (mut head, body) = resp.into_parts();
    let read = http_body_util::Limited::new(body, LLM_ANSWER_BYTES_MAX).collect();
    let bytes = match tokio::time::timeout(route.timeout, read).await {
        Ok(Ok(b)) => b.to_bytes(),
        _ => {
            // Cut, too large or too slow: it may have been generated, so the reservation
            // stands (the settlement's default).
            return Err(ApiError::new(
                StatusCode::BAD_GATEWAY,
                "upstream_unreachable",
                format!("upstream `{}`'s answer broke off, was too slow or over {LLM_ANSWER_BYTES_MAX} bytes", route.name),
            ));
        }
    };
    forward::response_headers(&mut head.headers, &route.secrets);
    head.headers.remove(header::CONTENT_LENGTH);
    head.headers.insert(
        super::tool::STEP_HEADER,
        HeaderValue::from_str(&live.step.to_string()).unwrap_or(HeaderValue::from_static("")),
    );
    head.extensions.insert(Forwarded);
    if !head.status.is_success() {
        live.settle(false, Used::default());
        return Ok(Response::from_parts(head, Body::from(bytes)));
    }
    let Ok(answer) = serde_json::from_slice::<Value>(&bytes) else {
        // What cannot be read cannot be judged (NaN, nesting past serde's depth, not JSON):
        // not passed on; it may have been generated, so the reservation stands.
        return Err(ApiError::new(
            StatusCode::BAD_GATEWAY,
            "unreadable_answer",
            format!("upstream `{}` answered with JSON the proxy cannot read, so it cannot judge it; it is not passed on", route.name),
        ));
    };
    let used = live.api.usage(&answer);
    let calls = live.api.tool_calls(&answer);
    let forbidden = super::judge::judge(&live.state, &live.h, &calls).await;
    let api = live.api;
    let halted = live.h.snapshot().state == warden_actors::AgentState::Halted;
    let agent = live.h.id().clone();
    match used {
        Some(u) => live.settle(true, u),
        // No usage to settle from: the reservation stands.
        None => live.settle_reserved(true),
    }
    if let Some(f) = forbidden {
        let decision = f
            .decision
            .as_ref()
            .map(|d| super::tool::decision_body("tool_call_refused", d));
        return Err(ApiError::with_body(
            StatusCode::FORBIDDEN,
            "tool_call_refused",
            api.error_body(403, "tool_call_refused", &f.message, decision),
        ));
    }
    if halted {
        // Halted while the answer was generated: like a live stream, it is cut.
        return Err(ApiError::with_body(
            StatusCode::FORBIDDEN,
            "halted",
            api.error_body(
                403,
                "halted",
                &format!("warden: agent {agent} was halted; the answer is not passed on"),
                None,
            ),
        ));
    }
    Ok(Response::from_parts(head, Body::from(bytes)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_headers_pass_only_in_their_documented_shapes() {
        for ok in ["2023-06-01", "2024-10-22"] {
            assert!(is_date(ok), "{ok}");
        }
        for bad in [
            "2023-06-1",
            "2023/06/01",
            "20230601xx",
            "AKIAQ3EGZ7",
            "2023-06-01 x",
            "",
        ] {
            assert!(!is_date(bad), "{bad}");
        }
        for ok in [
            "assistants=v2",
            "assistants=v2, realtime=v1",
            "responses=v1",
        ] {
            assert!(is_openai_beta(ok), "{ok}");
        }
        for bad in [
            "assistants",
            "assistants=v2x",
            "AKIA=v1",
            "a=v1;b=v2",
            "assistants=v12",
            "",
            "akiaqdegzglqjdxwbkfb=v1",
            "assistants=v1,assistants=v2,assistants=v1,assistants=v2",
        ] {
            assert!(!is_openai_beta(bad), "{bad}");
        }
        for ok in [
            "prompt-caching-2024-07-31",
            "claude-code-20250219",
            "oauth-2025-04-20",
        ] {
            assert!(beta_allowed(ok), "{ok}");
        }
        for bad in [
            "prompt-caching-",
            "prompt-caching-akiaq3egz7lqj4xw",
            "prompt-caching-2024-07-31-0123456789",
            "prompt-caching-9999999999",
            "oauth-12-34-5678",
            "context-1m-2025-08-07",
            "prompt-caching-2024-07-31 context-1m-2025-08-07",
        ] {
            assert!(!beta_allowed(bad), "{bad}");
        }
    }

    #[test]
    fn every_way_of_offering_a_tool_names_it_in_the_step() {
        let req = json!({"tools": [{"type": "function", "function": {"name": "web"}},
            {"type": "custom", "custom": {"name": "shell"}}, {"type": "function", "name": "f"},
            {"name": "g", "input_schema": {}}], "functions": [{"name": "legacy"}]});
        let names = offered_tools(req.as_object().unwrap());
        assert_eq!(
            names,
            [
                json!("web"),
                json!("shell"),
                json!("f"),
                json!("g"),
                json!("legacy")
            ]
        );
    }

    #[test]
    fn a_messages_request_with_tools_or_cache_writes_reserves_more_input() {
        let req = |v: Value| v.as_object().unwrap().clone();
        let plain = req(json!({"messages": []}));
        assert_eq!(input_bound(Api::Messages, &plain, 100), 116);
        let tools = req(json!({"messages": [], "tools": [{"name": "f", "input_schema": {}}]}));
        assert_eq!(
            input_bound(Api::Messages, &tools, 100),
            116 + TOOL_PROMPT_TOKENS
        );
        assert_eq!(
            input_bound(Api::Chat, &tools, 100),
            116,
            "OpenAI's tool definitions are in the body's bytes"
        );
        let cached = req(
            json!({"messages": [{"role": "user", "content": [{"type": "text", "text": "x", "cache_control": {"type": "ephemeral"}}]}]}),
        );
        assert_eq!(input_bound(Api::Messages, &cached, 100), 232);
        let structured =
            req(json!({"messages": [], "output_config": {"format": {"type": "json_schema"}}}));
        assert_eq!(
            input_bound(Api::Messages, &structured, 100),
            116 + TOOL_PROMPT_TOKENS
        );
    }

    #[test]
    fn a_forwarded_request_keeps_the_order_and_bytes_of_what_it_did_not_change() {
        let sent = r#"{"model":"m","response_format":{"type":"json_schema","json_schema":{"schema":{"properties":{"reasoning":{"type":"string"},"answer":{"type":"string"}}}}},"temperature":0.70,"max_tokens":99999}"#;
        let Value::Object(mut req) = serde_json::from_str(sent).unwrap() else {
            unreachable!()
        };
        Api::Chat.prepare(&mut req, 100, false).unwrap();
        let out = String::from_utf8(rewrite(sent, &req)).unwrap();
        assert!(
            out.contains(r#""properties":{"reasoning":{"type":"string"},"answer""#),
            "{out}"
        );
        assert!(out.contains(r#""temperature":0.70"#), "{out}");
        assert!(
            out.contains(r#""max_tokens":100}"#),
            "clamped in place: {out}"
        );
        let back: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(back, Value::Object(req));
    }
}
