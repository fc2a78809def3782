//! What differs between the three LLM APIs the proxy speaks: OpenAI's Chat Completions
//! (`POST /v1/chat/completions`) and Responses (`POST /v1/responses`), and Anthropic's
//! Messages (`POST /v1/messages`). Where the output bound is written, where usage is
//! reported (whole answers and streams), where tool calls are, what streamed text is, and the
//! API's own error shape.
//!
//! Sources: OpenAI API reference (chat/create, responses/create, their streaming events);
//! Anthropic API reference (messages, streaming messages).

use serde_json::{json, Map, Value};

use super::super::judge::Proposal;
use crate::config::UpstreamKind;

/// One of the APIs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Api {
    /// OpenAI Chat Completions.
    Chat,
    /// OpenAI Responses.
    Responses,
    /// Anthropic Messages.
    Messages,
}

/// Tokens a request can use, at most.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bound {
    /// Input tokens (an upper bound of the prompt).
    pub input: u64,
    /// Output tokens (all choices together).
    pub output: u64,
}

/// Tokens an answer reports it used.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Used {
    /// Input tokens (cached ones included).
    pub input: u64,
    /// Output tokens (reasoning included).
    pub output: u64,
}

/// Values of `type` a request may hold: text, function tools and their calls and results,
/// and the settings around them. Anything else (images, audio, files, hosted tools such as
/// web search, whose price is not per token) makes the cost unboundable: refused.
const TYPES_ALLOWED: [&str; 29] = [
    "text",
    "input_text",
    "output_text",
    "refusal",
    "reasoning_text",
    "custom_tool_call",
    "custom_tool_call_output",
    "function",
    "function_call",
    "function_call_output",
    "custom",
    "message",
    "tool_use",
    "tool_result",
    "tool",
    "auto",
    "any",
    "none",
    "required",
    "ephemeral",
    "json_object",
    "json_schema",
    "thinking",
    "redacted_thinking",
    "enabled",
    "adaptive",
    "disabled",
    "reasoning",
    "summary_text",
];

/// Keys whose values are JSON Schemas (their `type` is a schema's type, not content).
const SCHEMA_KEYS: [&str; 4] = ["parameters", "input_schema", "schema", "metadata"];

/// Keys that make the prompt larger than the request shows (server-side state).
const STATEFUL_KEYS: [&str; 3] = ["previous_response_id", "conversation", "prompt"];

impl Api {
    /// The path after the upstream's base URL.
    pub fn path(self) -> &'static str {
        match self {
            Api::Chat => "/chat/completions",
            Api::Responses => "/responses",
            Api::Messages => "/messages",
        }
    }

    /// The name in args and errors.
    pub fn name(self) -> &'static str {
        match self {
            Api::Chat => "chat.completions",
            Api::Responses => "responses",
            Api::Messages => "messages",
        }
    }

    /// The upstream kind that speaks it.
    pub fn kind(self) -> UpstreamKind {
        match self {
            Api::Chat | Api::Responses => UpstreamKind::OpenAi,
            Api::Messages => UpstreamKind::Anthropic,
        }
    }

    /// The request keys that bound the output, the first being the one the proxy writes.
    fn output_keys(self) -> &'static [&'static str] {
        match self {
            Api::Chat => &["max_completion_tokens", "max_tokens"],
            Api::Responses => &["max_output_tokens"],
            Api::Messages => &["max_tokens"],
        }
    }

    /// Checks a request can be bounded and makes the bound binding: the output limit is set
    /// (to the model's `max_output_tokens` when absent or larger; on Chat Completions also as
    /// `max_tokens` with `write_max_tokens`, for servers that read only that key), streams of
    /// Chat Completions ask for usage. Returns the output tokens per choice and the choices.
    ///
    /// # Errors
    /// A sentence saying why the request's cost cannot be bounded.
    pub fn prepare(
        self,
        req: &mut Map<String, Value>,
        model_max: u64,
        write_max_tokens: bool,
    ) -> Result<(u64, u64), String> {
        check_types(&Value::Object(req.clone()), "")?;
        for k in STATEFUL_KEYS {
            if req.get(k).is_some_and(|v| !v.is_null()) {
                return Err(format!("`{k}` makes the upstream add context the proxy cannot see, so the prompt cannot be bounded; send the whole conversation instead"));
            }
        }
        if req.get("background") == Some(&Value::Bool(true)) {
            return Err("`background: true` answers later, outside this request; the proxy settles each request from its own answer".into());
        }
        check_pricing(req)?;
        if self == Api::Responses {
            check_input_items(req.get("input"))?;
        }
        if req
            .get("stream")
            .is_some_and(|s| !s.is_boolean() && !s.is_null())
        {
            return Err("`stream` must be true or false".into());
        }
        let mut out = model_max;
        let mut sent = Vec::new();
        for k in self.output_keys() {
            if let Some(v) = req.get(*k).filter(|v| !v.is_null()) {
                let n = v
                    .as_u64()
                    .filter(|n| *n >= 1)
                    .ok_or_else(|| format!("`{k}` must be a whole number of tokens, at least 1"))?;
                out = out.min(n);
                sent.push(*k);
            }
        }
        // The limits the client sent are kept (clamped), so servers that read only one of
        // them are bound too; with none, the API's current one is written.
        if sent.is_empty() {
            sent.push(self.output_keys()[0]);
        }
        if self == Api::Chat && write_max_tokens && !sent.contains(&"max_tokens") {
            sent.push("max_tokens");
        }
        for k in sent {
            req.insert(k.into(), json!(out));
        }
        let choices = match (self, req.get("n")) {
            (Api::Chat, Some(v)) if !v.is_null() => match v.as_u64() {
                Some(n @ 1..=128) => n,
                _ => return Err("`n` must be a whole number from 1 to 128".into()),
            },
            _ => 1,
        };
        if self == Api::Chat && req.get("stream") == Some(&Value::Bool(true)) {
            let opts = req.entry("stream_options").or_insert_with(|| json!({}));
            match opts.as_object_mut() {
                Some(o) => {
                    o.insert("include_usage".into(), Value::Bool(true));
                }
                None => return Err("`stream_options` must be an object".into()),
            }
        }
        Ok((out, choices))
    }

    /// The usage a whole answer reports.
    pub fn usage(self, answer: &Value) -> Option<Used> {
        let u = match self {
            Api::Responses => answer
                .get("usage")
                .or_else(|| answer.pointer("/response/usage")),
            _ => answer.get("usage"),
        }?;
        let n = |k: &str| u.get(k).and_then(Value::as_u64);
        match self {
            Api::Chat => chat_usage(u),
            Api::Responses => Some(Used {
                input: n("input_tokens")?,
                output: n("output_tokens")?,
            }),
            Api::Messages => Some(Used {
                input: messages_input(u)?,
                output: n("output_tokens")?,
            }),
        }
    }

    /// The tool calls of a whole answer.
    pub fn tool_calls(self, answer: &Value) -> Vec<Proposal> {
        let mut out = Vec::new();
        match self {
            Api::Chat => {
                for choice in answer["choices"].as_array().into_iter().flatten() {
                    // The legacy `functions` API's one call per message.
                    if let Some(f) = choice
                        .pointer("/message/function_call")
                        .filter(|f| f.is_object())
                    {
                        out.push(proposal(&f["name"], &f["arguments"]));
                    }
                    for call in choice
                        .pointer("/message/tool_calls")
                        .and_then(Value::as_array)
                        .into_iter()
                        .flatten()
                    {
                        out.push(proposal(
                            &call["function"]["name"],
                            &call["function"]["arguments"],
                        ));
                    }
                }
            }
            Api::Responses => {
                for item in answer["output"].as_array().into_iter().flatten() {
                    if item["type"] == "function_call" || item["type"] == "custom_tool_call" {
                        let args = if item["type"] == "custom_tool_call" {
                            json!({"input": item["input"]})
                        } else {
                            item["arguments"].clone()
                        };
                        out.push(proposal(&item["name"], &args));
                    }
                }
            }
            Api::Messages => {
                for block in answer["content"].as_array().into_iter().flatten() {
                    if block["type"] == "tool_use" {
                        out.push(proposal(&block["name"], &block["input"]));
                    }
                }
            }
        }
        out
    }

    /// The API's own error body for an answer of `status`; `code` is warden's (also in
    /// Anthropic's shape, beside its `type`).
    pub fn error_body(
        self,
        status: u16,
        code: &str,
        message: &str,
        decision: Option<Value>,
    ) -> Value {
        let kind = self.error_type(status);
        let mut v = match self {
            Api::Messages => {
                // `details.error_code` is where Anthropic's SDK looks for a machine code.
                json!({"type": "error", "error": {"type": kind, "message": message, "code": code,
                       "details": {"error_code": code}}})
            }
            _ => json!({"error": {"message": message, "type": kind, "code": code, "param": null}}),
        };
        if let Some(d) = decision {
            v["warden"] = d;
        }
        v
    }

    /// The error `type` the API uses for a status.
    fn error_type(self, status: u16) -> &'static str {
        let anthropic = self == Api::Messages;
        match status {
            401 => "authentication_error",
            403 => "permission_error",
            404 => "not_found_error",
            413 if anthropic => "request_too_large",
            429 => "rate_limit_error",
            503 if anthropic => "overloaded_error",
            s if s >= 500 && anthropic => "api_error",
            s if s >= 500 => "server_error",
            _ => "invalid_request_error",
        }
    }

    /// The API's own error event, ending a stream (as a 403 would: the policy or an operator
    /// stopped it).
    pub fn error_event(self, code: &str, message: &str) -> String {
        match self {
            Api::Messages => format!(
                "event: error\ndata: {}\n\n",
                self.error_body(403, code, message, None)
            ),
            Api::Responses => format!(
                "event: error\ndata: {}\n\n",
                json!({"type": "error", "code": code, "message": message, "param": null, "sequence_number": 0})
            ),
            Api::Chat => format!("data: {}\n\n", self.error_body(403, code, message, None)),
        }
    }
}

/// Chat Completions usage: output is the larger of `completion_tokens` and `total_tokens`
/// less `prompt_tokens` (some OpenAI-compatible servers report reasoning outside
/// `completion_tokens`). `None` without `prompt_tokens` or `completion_tokens`.
pub fn chat_usage(u: &Value) -> Option<Used> {
    let n = |k: &str| u.get(k).and_then(Value::as_u64);
    let input = n("prompt_tokens")?;
    let output = n("completion_tokens")?;
    let beyond = n("total_tokens").map_or(0, |t| t.saturating_sub(input));
    Some(Used {
        input,
        output: output.max(beyond),
    })
}

/// Messages usage's input tokens, at the input price: `input_tokens`, cache reads (billed at
/// a tenth; counted whole) and cache writes weighted by what Anthropic bills for them: 1.25
/// times for a 5-minute entry, 2 times for a 1-hour one, 2 times when the usage does not say
/// which (`cache_creation.ephemeral_5m_input_tokens` / `ephemeral_1h_input_tokens`). `None`
/// without `input_tokens`.
pub fn messages_input(u: &Value) -> Option<u64> {
    let n = |p: &str| u.pointer(p).and_then(Value::as_u64).unwrap_or(0);
    let written = n("/cache_creation_input_tokens");
    let (short, long) = (
        n("/cache_creation/ephemeral_5m_input_tokens"),
        n("/cache_creation/ephemeral_1h_input_tokens"),
    );
    let unsplit = written.saturating_sub(short.saturating_add(long));
    let writes = (short.saturating_mul(5).div_ceil(4))
        .saturating_add(long.saturating_mul(2))
        .saturating_add(unsplit.saturating_mul(2));
    u.get("input_tokens")?
        .as_u64()?
        .checked_add(n("/cache_read_input_tokens"))?
        .checked_add(writes)
}

/// Whether a request asks for prompt caching anywhere (`cache_control`), whose writes
/// Anthropic bills at up to twice the input price.
pub fn asks_cache_writes(v: &Value) -> bool {
    match v {
        Value::Object(m) => m
            .iter()
            .any(|(k, x)| k == "cache_control" && !x.is_null() || asks_cache_writes(x)),
        Value::Array(a) => a.iter().any(asks_cache_writes),
        _ => false,
    }
}

/// Refuses Responses input items that point at content stored at the upstream instead of
/// carrying it (the upstream adds it to the prompt, unseen by the bound): an item with an
/// `id` and no content of its own (an item reference without its `type`), and a reasoning
/// item without its `encrypted_content`.
fn check_input_items(input: Option<&Value>) -> Result<(), String> {
    for (i, item) in input
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        let has = |k: &str| {
            item.get(k)
                .is_some_and(|v| !v.is_null() && v.as_str() != Some(""))
        };
        let carries = match item.get("type").and_then(Value::as_str) {
            Some("reasoning") => has("encrypted_content"),
            Some("function_call") => has("arguments"),
            Some("function_call_output" | "custom_tool_call_output") => has("output"),
            Some("custom_tool_call") => has("input"),
            Some("message") | None => has("content"),
            Some(_) => true,
        };
        if !carries {
            return Err(format!("/input/{i} refers to content stored at the upstream (an `id` without its content, or reasoning without `encrypted_content`), which the proxy cannot see or bound; send the item's content"));
        }
    }
    Ok(())
}

fn proposal(name: &Value, args: &Value) -> Proposal {
    Proposal {
        name: name.as_str().unwrap_or("").to_string(),
        arguments: args.clone(),
    }
}

/// Request keys that buy what is priced apart from text tokens, with no `type` to show it:
/// Chat Completions' hosted web search (priced per call), audio output (priced above text)
/// and predicted outputs (rejected prediction tokens are billed beyond the answer).
const PRICED_APART: [(&str, &str); 3] = [
    ("web_search_options", "hosted web search, priced per search"),
    ("audio", "audio output, priced above text tokens"),
    (
        "prediction",
        "predicted outputs, whose rejected tokens are billed too",
    ),
];

/// Refuses what makes a request cost more than the model's price says: a priority service
/// tier, routing to other models (`models`, OpenRouter's fallbacks), [`PRICED_APART`] keys,
/// and `modalities` other than text.
fn check_pricing(req: &Map<String, Value>) -> Result<(), String> {
    for (key, what) in PRICED_APART {
        if req.get(key).is_some_and(|v| !v.is_null()) {
            return Err(format!("`{key}` asks for {what}: the proxy meters text tokens only, so it cannot bound the cost; leave it out"));
        }
    }
    if let Some(m) = req.get("modalities").filter(|m| !m.is_null()) {
        let text_only = m
            .as_array()
            .is_some_and(|a| a.iter().all(|x| x.as_str() == Some("text")));
        if !text_only {
            return Err(format!("`modalities: {m}` asks for output other than text, priced apart from text tokens; the proxy cannot bound it: send `[\"text\"]` or leave it out"));
        }
    }
    if let Some(tier) = req.get("service_tier").filter(|t| !t.is_null()) {
        let ok = tier
            .as_str()
            .is_some_and(|t| matches!(t, "auto" | "default" | "flex" | "standard_only"));
        if !ok {
            return Err(format!("`service_tier: {tier}` is priced above the model's price in the node's config; leave it out"));
        }
    }
    // Anthropic's fast mode (up to 6 times the price) and regional inference (1.1 times).
    if let Some(speed) = req.get("speed").filter(|v| !v.is_null()) {
        if speed.as_str() != Some("standard") {
            return Err(format!("`speed: {speed}` is priced above the model's price in the node's config; leave it out"));
        }
    }
    if let Some(geo) = req.get("inference_geo").filter(|v| !v.is_null()) {
        if geo.as_str() != Some("global") {
            return Err(format!("`inference_geo: {geo}` is priced above the model's price in the node's config; leave it out"));
        }
    }
    for key in ["models", "fallbacks"] {
        if req.get(key).is_some_and(|v| !v.is_null()) {
            return Err(format!("`{key}` routes to other models, whose prices the proxy cannot bound; send one `model`"));
        }
    }
    Ok(())
}

/// Refuses any `type` outside [`TYPES_ALLOWED`] (schemas excepted), naming where it is.
fn check_types(v: &Value, at: &str) -> Result<(), String> {
    match v {
        Value::Object(m) => {
            if let Some(t) = m.get("type") {
                let ok = t.as_str().is_some_and(|t| TYPES_ALLOWED.contains(&t));
                if !ok {
                    return Err(format!("{at}/type = {t} is content or a tool whose cost the proxy cannot bound (it meters text and function tools); leave it out or call the upstream through another route"));
                }
            }
            for (k, x) in m {
                if !SCHEMA_KEYS.contains(&k.as_str()) {
                    check_types(x, &format!("{at}/{k}"))?;
                }
            }
            Ok(())
        }
        Value::Array(a) => a
            .iter()
            .enumerate()
            .try_for_each(|(i, x)| check_types(x, &format!("{at}/{i}"))),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn the_output_bound_is_written_and_never_above_the_models_maximum() {
        let mut r = obj(json!({"model": "m", "messages": [], "max_tokens": 99999}));
        assert_eq!(Api::Chat.prepare(&mut r, 1000, false), Ok((1000, 1)));
        assert_eq!(
            r["max_tokens"], 1000,
            "the limit the client sent is kept, clamped"
        );
        assert!(r.get("max_completion_tokens").is_none());
        let mut r = obj(json!({"model": "m", "messages": []}));
        assert_eq!(Api::Chat.prepare(&mut r, 1000, false), Ok((1000, 1)));
        assert_eq!(
            r["max_completion_tokens"], 1000,
            "none sent: the current key is written"
        );
        let mut r = obj(json!({"model": "m", "messages": [], "max_completion_tokens": 9}));
        assert_eq!(Api::Chat.prepare(&mut r, 1000, true), Ok((9, 1)));
        assert_eq!(
            (&r["max_completion_tokens"], &r["max_tokens"]),
            (&json!(9), &json!(9)),
            "write_max_tokens: servers that read only max_tokens are bound too"
        );
        let mut r = obj(json!({"model": "m", "messages": [], "n": 3, "stream": true}));
        assert_eq!(Api::Chat.prepare(&mut r, 50, false), Ok((50, 3)));
        assert_eq!(r["stream_options"]["include_usage"], true);
        let mut r = obj(json!({"model": "m", "input": "hi", "max_output_tokens": 10}));
        assert_eq!(Api::Responses.prepare(&mut r, 50, false), Ok((10, 1)));
        let mut r = obj(json!({"model": "m", "messages": []}));
        assert_eq!(Api::Messages.prepare(&mut r, 64, false), Ok((64, 1)));
        assert_eq!(r["max_tokens"], 64);
    }

    #[test]
    fn what_cannot_be_bounded_is_refused() {
        let refused = [
            (
                Api::Chat,
                json!({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]}),
            ),
            (Api::Chat, json!({"messages": [], "max_tokens": -1})),
            (Api::Chat, json!({"messages": [], "max_tokens": "100"})),
            (Api::Chat, json!({"messages": [], "n": 0})),
            (Api::Chat, json!({"messages": [], "stream": "true"})),
            (
                Api::Chat,
                json!({"messages": [], "service_tier": "priority"}),
            ),
            (Api::Chat, json!({"messages": [], "models": ["a", "b"]})),
            (
                Api::Messages,
                json!({"messages": [], "fallbacks": [{"model": "b"}]}),
            ),
            (Api::Chat, json!({"messages": [], "web_search_options": {}})),
            (
                Api::Chat,
                json!({"messages": [], "modalities": ["text", "audio"], "audio": {"voice": "alloy", "format": "wav"}}),
            ),
            (Api::Chat, json!({"messages": [], "modalities": ["audio"]})),
            (
                Api::Chat,
                json!({"messages": [], "prediction": {"type": "content", "content": "x"}}),
            ),
            (
                Api::Responses,
                json!({"input": "x", "previous_response_id": "resp_1"}),
            ),
            (
                Api::Responses,
                json!({"input": "x", "tools": [{"type": "web_search"}]}),
            ),
            (Api::Responses, json!({"input": "x", "background": true})),
            (
                Api::Messages,
                json!({"messages": [{"role": "user", "content": [{"type": "image", "source": {}}]}]}),
            ),
            (
                Api::Messages,
                json!({"messages": [], "tools": [{"type": "web_search_20250305", "name": "web_search"}]}),
            ),
        ];
        for (api, r) in refused {
            assert!(api.prepare(&mut obj(r.clone()), 100, false).is_err(), "{r}");
        }
        // Function tools with schemas (whose `type`s are schema types) are fine.
        let mut ok = obj(
            json!({"messages": [], "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {"a": {"type": "string"}}}}}]}),
        );
        assert!(Api::Chat.prepare(&mut ok, 100, false).is_ok());
        let mut ok = obj(json!({"messages": [], "modalities": ["text"], "audio": null}));
        assert!(Api::Chat.prepare(&mut ok, 100, false).is_ok());
        let mut ok = obj(
            json!({"messages": [], "tools": [{"name": "f", "input_schema": {"type": "object"}}]}),
        );
        assert!(Api::Messages.prepare(&mut ok, 100, false).is_ok());
        for thinking in ["adaptive", "disabled"] {
            let mut ok = obj(json!({"messages": [], "thinking": {"type": thinking}}));
            assert!(
                Api::Messages.prepare(&mut ok, 100, false).is_ok(),
                "{thinking}"
            );
        }
    }

    #[test]
    fn cache_writes_are_weighted_by_their_price_and_unsplit_ones_at_the_most() {
        let u = |v: Value| messages_input(&v).unwrap();
        assert_eq!(u(json!({"input_tokens": 10})), 10);
        assert_eq!(
            u(json!({"input_tokens": 10, "cache_read_input_tokens": 5})),
            15
        );
        let split = json!({"input_tokens": 0, "cache_creation_input_tokens": 300,
            "cache_creation": {"ephemeral_5m_input_tokens": 100, "ephemeral_1h_input_tokens": 200}});
        assert_eq!(u(split), 125 + 400);
        assert_eq!(
            u(json!({"input_tokens": 0, "cache_creation_input_tokens": 100})),
            200
        );
        assert_eq!(messages_input(&json!({"output_tokens": 1})), None);
        assert!(asks_cache_writes(
            &json!({"system": [{"type": "text", "text": "x", "cache_control": {"type": "ephemeral", "ttl": "1h"}}]})
        ));
        assert!(!asks_cache_writes(
            &json!({"messages": [{"content": "x", "cache_control": null}]})
        ));
    }

    #[test]
    fn responses_input_items_must_carry_their_content() {
        let refused = [
            json!([{"id": "msg_1"}]),
            json!([{"type": "message", "id": "msg_1", "role": "user"}]),
            json!([{"type": "reasoning", "id": "rs_1", "summary": []}]),
            json!([{"type": "function_call", "id": "fc_1", "call_id": "c", "name": "f"}]),
            json!([{"type": "custom_tool_call", "id": "ctc_1", "call_id": "c", "name": "f"}]),
        ];
        let empty =
            json!([{"type": "reasoning", "id": "rs_1", "summary": [], "encrypted_content": ""}]);
        for input in refused.into_iter().chain([empty]) {
            let mut r = obj(json!({"model": "m", "input": input}));
            assert!(
                Api::Responses.prepare(&mut r, 10, false).is_err(),
                "{input}"
            );
        }
        let fine = json!([{"role": "user", "content": "hi"},
            {"type": "reasoning", "id": "rs_1", "summary": [{"type": "summary_text", "text": "t"}], "encrypted_content": "gAAA"},
            {"type": "function_call", "id": "fc_1", "call_id": "c", "name": "f", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "c", "output": "ok"},
            {"type": "custom_tool_call", "id": "ctc_1", "call_id": "d", "name": "g", "input": "ls"},
            {"type": "custom_tool_call_output", "call_id": "d", "output": "a b"},
            {"type": "reasoning", "id": "rs_2", "summary": [], "encrypted_content": "gAAA",
                "content": [{"type": "reasoning_text", "text": "think"}]}]);
        let mut r = obj(json!({"model": "m", "input": fine}));
        assert!(Api::Responses.prepare(&mut r, 10, false).is_ok());
        // A refusal a model gave earlier, sent back in the history.
        let mut r = obj(
            json!({"model": "m", "messages": [{"role": "assistant", "content": [{"type": "refusal", "refusal": "no"}]}]}),
        );
        assert!(Api::Chat.prepare(&mut r, 10, false).is_ok());
    }

    #[test]
    fn usage_and_tool_calls_are_read_in_each_apis_shape() {
        let chat = json!({"choices": [{"message": {"tool_calls": [{"function": {"name": "shell", "arguments": "{\"command\":\"ls\"}"}}]}}], "usage": {"prompt_tokens": 7, "completion_tokens": 3}});
        assert_eq!(
            Api::Chat.usage(&chat),
            Some(Used {
                input: 7,
                output: 3
            })
        );
        assert_eq!(Api::Chat.tool_calls(&chat)[0].name, "shell");
        let resp = json!({"output": [{"type": "function_call", "name": "f", "arguments": "{}"}], "usage": {"input_tokens": 5, "output_tokens": 2}});
        assert_eq!(
            Api::Responses.usage(&resp),
            Some(Used {
                input: 5,
                output: 2
            })
        );
        assert_eq!(Api::Responses.tool_calls(&resp).len(), 1);
        let msg = json!({"content": [{"type": "tool_use", "name": "g", "input": {"x": 1}}], "usage": {"input_tokens": 5, "cache_read_input_tokens": 4, "output_tokens": 2}});
        assert_eq!(
            Api::Messages.usage(&msg),
            Some(Used {
                input: 9,
                output: 2
            })
        );
        assert_eq!(Api::Messages.tool_calls(&msg)[0].arguments, json!({"x": 1}));
        assert_eq!(Api::Chat.usage(&json!({})), None);
        let legacy = json!({"choices": [{"message": {"function_call": {"name": "shell", "arguments": "{}"}}}]});
        assert_eq!(
            Api::Chat.tool_calls(&legacy)[0].name,
            "shell",
            "the legacy functions API"
        );
    }
}
