//! Reading a live stream as it passes: the usage it reports, the text it delivers (counted,
//! so a stream that ends without usage is charged at least what was streamed), and the tool
//! calls, whose events are held until the call is complete and judged. Text passes at once.
//!
//! Per API: Chat Completions chunks carry `choices[].delta.content` and
//! `choices[].delta.tool_calls[]` (held until a chunk with `finish_reason`), and `usage` in the
//! last chunk (the proxy asks for it with `stream_options.include_usage`). Responses events
//! carry `response.output_text.delta`, a function call from `response.output_item.added` to
//! `response.output_item.done` (held), and usage in `response.completed`. Messages events
//! carry `content_block_delta` text, a `tool_use` block from `content_block_start` to
//! `content_block_stop` (held), input usage in `message_start` and output usage in
//! `message_delta`.

use std::collections::BTreeMap;

use bytes::Bytes;
use serde_json::Value;

use super::shape::{Api, Bound, Used};
use super::sse::Event;
use crate::proxy::judge::Proposal;

/// What to do with an event.
pub enum Next {
    /// Pass it on now.
    Send(Bytes),
    /// Keep it: it belongs to a tool call not yet complete.
    Hold,
    /// Drop it: the proxy asked for it, the client did not (a Chat Completions usage chunk).
    Skip,
    /// Judge these calls, then pass these events on (or end the stream if one is refused).
    Judge(Vec<Proposal>, Vec<Bytes>),
    /// End the stream with an error event of this code (`tool_call_refused` for a call that
    /// cannot be judged, `upstream_error` for an event that cannot be read) and message.
    Fail(&'static str, String),
}

/// A tool call being held.
#[derive(Default)]
struct Held {
    events: Vec<Bytes>,
    name: String,
    args: String,
    /// A custom tool call's input as its deltas build it.
    input: String,
    /// Bytes of its argument deltas already counted as streamed.
    counted: u64,
}

/// The state of one live stream.
pub struct Meter {
    api: Api,
    input: Option<u64>,
    output: Option<u64>,
    streamed: u64,
    held: BTreeMap<u64, Held>,
    held_bytes: usize,
    max_held_bytes: usize,
    /// Calls already released for judging, by key (Responses: output indexes), with the
    /// arguments they were judged with.
    judged: std::collections::HashMap<u64, String>,
    done: bool,
    /// The stream reached an end event of its API, successful or not (`[DONE]`,
    /// `response.completed`/`incomplete`/`failed`, `message_stop`, or an `error` event).
    ended: bool,
    /// The usage read is the answer's last (Chat's usage chunk, a Responses end event,
    /// Messages' `message_delta`).
    usage_final: bool,
    /// The client did not ask for the usage chunk (the proxy did, to settle).
    hide_usage: bool,
}

impl Meter {
    /// A meter for a stream of `api`, holding at most `max_held_bytes` of tool calls;
    /// `hide_usage`: drop the usage-only chunk the client did not ask for.
    pub fn new(api: Api, max_held_bytes: usize, hide_usage: bool) -> Self {
        Self {
            api,
            input: None,
            output: None,
            streamed: 0,
            held: BTreeMap::new(),
            held_bytes: 0,
            max_held_bytes,
            judged: std::collections::HashMap::new(),
            done: false,
            ended: false,
            usage_final: false,
            hide_usage,
        }
    }

    /// True once the stream said it is complete.
    pub fn complete(&self) -> bool {
        self.done
    }

    /// True once the stream reached one of its API's end events, a failed or incomplete
    /// answer's or an error event included: it did not stop short.
    pub fn ended(&self) -> bool {
        self.done || self.ended
    }

    /// What the stream used: its reported usage, else the bound's input and (at least) the
    /// text streamed. A stream's text bytes bound its tokens from above (a token is at least
    /// one byte of text). With `hidden_output` (the model may bill reasoning it does not
    /// stream: the price's `reasoning`), a stream that did not end with its output usage is
    /// charged the bound's whole output: what it streamed says nothing of what it thought.
    pub fn used(&self, bound: Bound, hidden_output: bool) -> Used {
        let output = match self.output {
            Some(o) if self.done => o,
            // The last usage (a cut before the stream's end event): no more was thought.
            Some(o) if self.usage_final => o.max(self.streamed),
            _ if hidden_output => bound.output,
            o => o.unwrap_or(0).max(self.streamed),
        };
        Used {
            input: self.input.unwrap_or(bound.input),
            output,
        }
    }

    /// Looks at one event.
    pub fn event(&mut self, e: Event) -> Next {
        if e.data == "[DONE]" {
            self.done = true;
            return self.release_all(e.raw);
        }
        if e.data.is_empty() {
            // A comment or a keep-alive: nothing to read.
            return Next::Send(e.raw);
        }
        let Ok(v) = serde_json::from_str::<Value>(&e.data) else {
            // What cannot be read cannot be judged: it is not passed on.
            return Next::Fail(
                "upstream_error",
                "warden: the upstream sent an event the proxy cannot read; the stream is cut"
                    .into(),
            );
        };
        // An error event is its stream's end (Responses and Messages name it so; Chat sends an
        // object with `error` and no `choices`).
        if v["type"] == "error" || (v.get("error").is_some() && v.get("choices").is_none()) {
            self.ended = true;
        }
        let next = match self.api {
            Api::Chat => self.chat(&v, e.raw),
            Api::Responses => self.responses(&v, e.raw),
            Api::Messages => self.messages(&v, e.raw),
        };
        if self.held_bytes > self.max_held_bytes {
            return Next::Fail(
                "tool_call_refused",
                format!(
                    "warden: a tool call in this stream is over {} bytes, too large to judge",
                    self.max_held_bytes
                ),
            );
        }
        next
    }

    /// At the end of the stream: tool calls still held are judged before anything ends.
    pub fn finish(&mut self) -> Option<Next> {
        if self.held.is_empty() {
            return None;
        }
        Some(self.release_all(Bytes::new()))
    }

    fn hold(&mut self, key: u64, raw: Bytes) -> &mut Held {
        self.held_bytes += raw.len();
        let h = self.held.entry(key).or_default();
        h.events.push(raw);
        h
    }

    fn release(&mut self, key: u64, last: Bytes) -> Next {
        let Some(h) = self.held.remove(&key) else {
            return Next::Send(last);
        };
        self.judged.insert(key, h.args.clone());
        self.held_bytes -= h.events.iter().map(Bytes::len).sum::<usize>();
        let mut events = h.events;
        events.push(last);
        Next::Judge(vec![proposal(h.name, h.args)], events)
    }

    fn release_all(&mut self, last: Bytes) -> Next {
        if self.held.is_empty() {
            return Next::Send(last);
        }
        let mut calls = Vec::new();
        let mut events = Vec::new();
        for (k, h) in std::mem::take(&mut self.held) {
            self.judged.insert(k, h.args.clone());
            calls.push(proposal(h.name, h.args));
            events.extend(h.events);
        }
        self.held_bytes = 0;
        if !last.is_empty() {
            events.push(last);
        }
        Next::Judge(calls, events)
    }

    fn count(&mut self, text: Option<&str>) {
        self.streamed += text.map_or(0, |t| t.len() as u64);
    }

    fn chat(&mut self, v: &Value, raw: Bytes) -> Next {
        if let Some(u) = v.get("usage").filter(|u| !u.is_null()) {
            let used = super::shape::chat_usage(u);
            self.input = used.map(|u| u.input);
            self.output = used.map(|u| u.output);
            let usage_only = v["choices"].as_array().is_some_and(Vec::is_empty);
            // The last chunk carries usage and no choices; usage beside choices is a running
            // count (vLLM's `continuous_usage_stats`), not the answer's.
            self.usage_final = used.is_some() && usage_only;
            if self.hide_usage && usage_only {
                return Next::Skip;
            }
        }
        let mut calls = Vec::new();
        let mut finished = false;
        for c in v["choices"].as_array().into_iter().flatten() {
            let choice = c["index"].as_u64().unwrap_or(0);
            self.count(c.pointer("/delta/content").and_then(Value::as_str));
            // Reasoning under either name servers use, and a refusal, are output too.
            for k in [
                "/delta/reasoning_content",
                "/delta/reasoning",
                "/delta/refusal",
            ] {
                self.count(c.pointer(k).and_then(Value::as_str));
            }
            for t in c
                .pointer("/delta/tool_calls")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let key = (choice << 16) | t["index"].as_u64().unwrap_or(0);
                let name = t
                    .pointer("/function/name")
                    .and_then(Value::as_str)
                    .map(str::to_string);
                let Ok(args) = text_or_absent(t.pointer("/function/arguments")) else {
                    return not_text();
                };
                calls.push((key, name, args));
            }
            // The legacy `functions` API: one call per choice, under its own key.
            if let Some(f) = c.pointer("/delta/function_call").filter(|f| f.is_object()) {
                let name = f["name"].as_str().map(str::to_string);
                let Ok(args) = text_or_absent(f.get("arguments")) else {
                    return not_text();
                };
                calls.push(((choice << 16) | 0xFFFF, name, args));
            }
            finished |= !c["finish_reason"].is_null();
        }
        if !calls.is_empty() {
            let first = calls[0].0;
            for (key, name, args) in calls {
                self.count(args.as_deref());
                let h = self.held.entry(key).or_default();
                if let Some(n) = name {
                    h.name.push_str(&n);
                }
                if let Some(a) = args {
                    h.args.push_str(&a);
                }
            }
            // The chunk is held once, with the first call it names.
            self.hold(first, raw.clone());
            if !finished {
                return Next::Hold;
            }
            return self.release_all(Bytes::new());
        }
        if finished {
            return self.release_all(raw);
        }
        Next::Send(raw)
    }

    fn responses(&mut self, v: &Value, raw: Bytes) -> Next {
        let kind = v["type"].as_str().unwrap_or("");
        let index = v["output_index"].as_u64();
        match kind {
            "response.output_text.delta"
            | "response.refusal.delta"
            | "response.reasoning_summary_text.delta"
            | "response.reasoning_text.delta" => {
                self.count(v["delta"].as_str());
            }
            "response.completed" | "response.incomplete" | "response.failed" | "response.done" => {
                if let Some(u) = v.pointer("/response/usage").filter(|u| !u.is_null()) {
                    self.input = u["input_tokens"].as_u64();
                    self.output = u["output_tokens"].as_u64();
                    self.usage_final = self.input.is_some() && self.output.is_some();
                }
                self.done = kind == "response.completed" || kind == "response.done";
                self.ended = true;
                return self.final_response(&v["response"], raw);
            }
            "response.output_item.added" | "response.output_item.done" => {
                let item = &v["item"];
                match item_kind(item) {
                    ItemKind::Other => return unknown_item(item),
                    ItemKind::Plain => {}
                    ItemKind::Call => {
                        let key = index.unwrap_or(0);
                        let Ok(args) = call_args(item) else {
                            return not_text();
                        };
                        let h = self.held.entry(key).or_default();
                        h.name = item["name"].as_str().unwrap_or("").to_string();
                        if let Some(a) = args.filter(|a| !a.is_empty()) {
                            // What the item itself carries is what the call is (the deltas
                            // before it were its pieces).
                            h.args = a;
                        }
                        if kind == "response.output_item.added" {
                            self.hold(key, raw);
                            return Next::Hold;
                        }
                        // What its deltas did not already count.
                        let more = (h.args.len() as u64).saturating_sub(h.counted);
                        self.streamed += more;
                        return self.release(key, raw);
                    }
                }
            }
            "response.function_call_arguments.delta" | "response.custom_tool_call_input.delta" => {
                let Some(delta) = v["delta"].as_str() else {
                    return not_text();
                };
                self.count(Some(delta));
                if let Some(i) = index.filter(|i| self.held.contains_key(i)) {
                    let custom = kind == "response.custom_tool_call_input.delta";
                    let h = self.hold(i, raw);
                    h.counted += delta.len() as u64;
                    h.input.push_str(delta);
                    if !custom {
                        h.args.push_str(delta);
                    } else {
                        h.args = serde_json::json!({"input": h.input}).to_string();
                    }
                    return Next::Hold;
                }
            }
            "response.function_call_arguments.done" => {
                let Some(args) = v["arguments"].as_str() else {
                    return not_text();
                };
                if let Some(i) = index.filter(|i| self.held.contains_key(i)) {
                    let h = self.hold(i, raw);
                    h.args = args.to_string();
                    return Next::Hold;
                }
            }
            _ => {}
        }
        match index {
            Some(i) if self.held.contains_key(&i) => {
                self.hold(i, raw);
                Next::Hold
            }
            _ => Next::Send(raw),
        }
    }

    /// The last event of a Responses stream: held calls, and every call its `output` holds
    /// that was not judged as the stream showed it (never shown as an item of its own, or
    /// with other arguments than its deltas said), are judged before it passes.
    fn final_response(&mut self, response: &Value, raw: Bytes) -> Next {
        let mut unseen = Vec::new();
        for (i, item) in response["output"]
            .as_array()
            .into_iter()
            .flatten()
            .enumerate()
        {
            match item_kind(item) {
                ItemKind::Other => return unknown_item(item),
                ItemKind::Plain => continue,
                ItemKind::Call => {}
            }
            let Ok(args) = call_args(item) else {
                return not_text();
            };
            let args = args.unwrap_or_default();
            let key = i as u64;
            // The client reads the call from here too (the SDKs' final response): judged again
            // unless it is what was (or is about to be) judged.
            let same_as_held = self.held.get(&key).is_some_and(|h| h.args == args);
            let same_as_judged = self.judged.get(&key).is_some_and(|a| *a == args);
            if !same_as_held && !same_as_judged {
                unseen.push(proposal(
                    item["name"].as_str().unwrap_or("").to_string(),
                    args,
                ));
            }
        }
        match self.release_all(raw) {
            Next::Judge(mut calls, events) => {
                calls.extend(unseen);
                Next::Judge(calls, events)
            }
            Next::Send(b) if !unseen.is_empty() => Next::Judge(unseen, vec![b]),
            other => other,
        }
    }

    fn messages(&mut self, v: &Value, raw: Bytes) -> Next {
        let index = v["index"].as_u64().unwrap_or(0);
        match v["type"].as_str().unwrap_or("") {
            "message_start" => {
                if let Some(input) = super::shape::messages_input(&v["message"]["usage"]) {
                    self.input = Some(input);
                }
            }
            "message_delta" => {
                if let Some(o) = v.pointer("/usage/output_tokens").and_then(Value::as_u64) {
                    self.output = Some(o);
                    self.usage_final = true;
                }
            }
            "message_stop" => {
                self.done = true;
                return self.release_all(raw);
            }
            "content_block_start" => {
                let block = &v["content_block"];
                match block["type"].as_str() {
                    Some("text" | "thinking") => {}
                    // Its encrypted thinking is billed as output.
                    Some("redacted_thinking") => self.count(block["data"].as_str()),
                    Some("tool_use") => {
                        let name = block["name"].as_str().unwrap_or("").to_string();
                        let h = self.hold(index, raw);
                        h.name = name;
                        // Its input is normally `{}` and built by the deltas; an input given
                        // here is the call's (deltas after it make it ambiguous: the two
                        // texts joined are no JSON, and refused).
                        match &block["input"] {
                            Value::Object(m) if m.is_empty() => {}
                            Value::Null => {}
                            other => h.args = other.to_string(),
                        }
                        return Next::Hold;
                    }
                    _ => return unknown_item(block),
                }
            }
            "content_block_delta" => {
                let d = &v["delta"];
                self.count(d["text"].as_str());
                self.count(d["thinking"].as_str());
                if d.get("partial_json").is_some_and(|p| !p.is_string()) {
                    return not_text();
                }
                if let Some(part) = d["partial_json"].as_str() {
                    self.count(Some(part));
                    if self.held.contains_key(&index) {
                        self.hold(index, raw).args.push_str(part);
                        return Next::Hold;
                    }
                }
            }
            "content_block_stop" if self.held.contains_key(&index) => {
                return self.release(index, raw);
            }
            _ => {}
        }
        Next::Send(raw)
    }
}

/// What a Responses output item is to the meter.
enum ItemKind {
    /// A call the policy judges (`function_call`, `custom_tool_call`).
    Call,
    /// Text or reasoning: nothing to judge.
    Plain,
    /// Anything else (a hosted tool's call: web search, code, a computer, a remote MCP
    /// server): the request could not have asked for it, and it cannot be judged.
    Other,
}

fn item_kind(item: &Value) -> ItemKind {
    match item["type"].as_str() {
        Some("function_call" | "custom_tool_call") => ItemKind::Call,
        Some("message" | "reasoning" | "output_text") => ItemKind::Plain,
        _ => ItemKind::Other,
    }
}

/// A call item's arguments as text (a custom call's input as `{"input": ...}`); `Ok(None)`
/// when it has none yet; `Err` when they are there but not text (cannot be judged).
fn call_args(item: &Value) -> Result<Option<String>, ()> {
    if item["type"] == "custom_tool_call" {
        return match &item["input"] {
            Value::Null => Ok(None),
            Value::String(t) if t.is_empty() => Ok(None),
            Value::String(t) => Ok(Some(serde_json::json!({"input": t}).to_string())),
            _ => Err(()),
        };
    }
    text_or_absent(item.get("arguments"))
}

/// A text field's value: `Ok(None)` when absent or null, `Err` when it is another type.
fn text_or_absent(v: Option<&Value>) -> Result<Option<String>, ()> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(t)) => Ok(Some(t.clone())),
        Some(_) => Err(()),
    }
}

fn not_text() -> Next {
    Next::Fail(
        "tool_call_refused",
        "warden: the upstream sent a tool call whose arguments are not text; it cannot be judged, and the stream is cut"
            .into(),
    )
}

fn unknown_item(item: &Value) -> Next {
    Next::Fail("upstream_error", format!(
        "warden: the upstream sent an output of type {} that the proxy cannot judge; the stream is cut",
        item["type"]
    ))
}

fn proposal(name: String, args: String) -> Proposal {
    let arguments = if args.trim().is_empty() {
        Value::String("{}".into())
    } else {
        Value::String(args)
    };
    Proposal { name, arguments }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::llm::sse::Parser;

    fn run(api: Api, stream: &str) -> (Meter, Vec<String>) {
        let mut p = Parser::new(1 << 20);
        p.push(stream.as_bytes());
        let mut m = Meter::new(api, 1 << 20, false);
        let mut log = Vec::new();
        while let Some(e) = p.next_event().unwrap() {
            log.push(match m.event(e) {
                Next::Send(_) => "send".to_string(),
                Next::Hold => "hold".to_string(),
                Next::Skip => "skip".to_string(),
                Next::Judge(calls, events) => format!(
                    "judge {} {} ({} events)",
                    calls[0].name,
                    calls[0].arguments.as_str().unwrap_or(""),
                    events.len()
                ),
                Next::Fail(code, _) => format!("fail {code}"),
            });
        }
        (m, log)
    }

    #[test]
    fn a_stream_ends_at_any_end_event_of_its_api_and_not_before() {
        let incomplete = "event: response.incomplete\ndata: {\"type\":\"response.incomplete\",\"response\":{\"output\":[]}}\n\n";
        let (m, _) = run(Api::Responses, incomplete);
        assert!(m.ended() && !m.complete());
        let error = "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\"}}\n\n";
        let (m, _) = run(Api::Messages, error);
        assert!(m.ended() && !m.complete());
        let (m, _) = run(Api::Chat, "data: {\"error\":{\"message\":\"boom\"}}\n\n");
        assert!(m.ended());
        let cut = "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"hi\"}}]}\n\n";
        let (m, _) = run(Api::Chat, cut);
        assert!(!m.ended(), "a stream cut before [DONE] did not end");
    }

    #[test]
    fn an_unreadable_event_is_the_upstreams_fault_and_an_unjudgeable_call_a_refusal() {
        let (_, log) = run(Api::Chat, "data: {not json\n\n");
        assert_eq!(log, ["fail upstream_error"]);
        let bad_args = "data: {\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"name\":\"shell\",\"arguments\":5}}]}}]}\n\n";
        let (_, log) = run(Api::Chat, bad_args);
        assert_eq!(log, ["fail tool_call_refused"]);
    }

    #[test]
    fn chat_text_passes_tool_calls_are_held_until_finished_and_usage_is_read() {
        let s = concat!(
            "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"hi\"}}]}\n\n",
            "data: {\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"name\":\"shell\",\"arguments\":\"{\\\"command\\\":\"}}]}}]}\n\n",
            "data: {\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"\\\"ls\\\"}\"}}]}}]}\n\n",
            "data: {\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"tool_calls\"}]}\n\n",
            "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":4}}\n\n",
            "data: [DONE]\n\n",
        );
        let (m, log) = run(Api::Chat, s);
        assert_eq!(
            log,
            [
                "send",
                "hold",
                "hold",
                "judge shell {\"command\":\"ls\"} (3 events)",
                "send",
                "send"
            ]
        );
        assert_eq!(
            m.used(
                Bound {
                    input: 100,
                    output: 100
                },
                false,
            ),
            Used {
                input: 9,
                output: 4
            }
        );
    }

    #[test]
    fn a_usage_chunk_the_client_did_not_ask_for_is_read_but_not_passed_on() {
        let mut p = Parser::new(1 << 20);
        p.push(
            b"data: {\"choices\":[],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":4}}\n\n",
        );
        let mut m = Meter::new(Api::Chat, 1 << 20, true);
        assert!(matches!(
            m.event(p.next_event().unwrap().unwrap()),
            Next::Skip
        ));
        assert_eq!(
            m.used(
                Bound {
                    input: 1,
                    output: 1
                },
                false,
            )
            .input,
            9
        );
    }

    #[test]
    fn calls_in_legacy_shapes_or_only_in_the_final_response_are_judged_and_unreadable_events_cut() {
        let legacy = concat!(
            "data: {\"choices\":[{\"index\":0,\"delta\":{\"function_call\":{\"name\":\"shell\",\"arguments\":\"{}\"}}}]}\n\n",
            "data: {\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"function_call\"}]}\n\n",
        );
        let (_, log) = run(Api::Chat, legacy);
        assert_eq!(log, ["hold", "judge shell {} (2 events)"]);
        let hidden = "event: response.completed\ndata: {\"type\":\"response.completed\",\"response\":{\"output\":[{\"type\":\"function_call\",\"name\":\"f\",\"arguments\":\"{}\"}]}}\n\n";
        let (_, log) = run(Api::Responses, hidden);
        assert_eq!(log, ["judge f {} (1 events)"]);
        let (_, log) = run(Api::Chat, "data: {NaN}\n\n: keep-alive\n\n");
        assert_eq!(log, ["fail upstream_error", "send"]);
    }

    #[test]
    fn a_stream_cut_without_usage_is_charged_what_it_streamed() {
        let s = "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"hello world\"}}]}\n\n";
        let (m, _) = run(Api::Chat, s);
        assert_eq!(
            m.used(
                Bound {
                    input: 50,
                    output: 100
                },
                false,
            ),
            Used {
                input: 50,
                output: 11
            }
        );
    }

    #[test]
    fn a_stream_of_a_reasoning_model_cut_without_its_usage_is_charged_its_whole_output_bound() {
        let bound = Bound {
            input: 50,
            output: 100,
        };
        let s = "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"hello world\"}}]}\n\n";
        let (m, _) = run(Api::Chat, s);
        assert_eq!(
            m.used(bound, true).output,
            100,
            "reasoning it did not stream"
        );
        // The usage chunk came (cut before [DONE]): what it says stands.
        let s = "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":4,\"total_tokens\":40}}\n\n";
        let (m, _) = run(Api::Chat, s);
        assert_eq!(
            m.used(bound, true),
            Used {
                input: 9,
                output: 31
            },
            "output is total less prompt when that is more"
        );
        // A running count beside choices (vLLM's continuous usage) is not the answer's.
        let s = "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"hi\"}}],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":1}}\n\n";
        let (m, _) = run(Api::Chat, s);
        assert_eq!(m.used(bound, true).output, 100, "cut after a running count");
        // Messages: the last usage is in message_delta.
        let s = "event: message_delta\ndata: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":7}}\n\n";
        let (m, _) = run(Api::Messages, s);
        assert_eq!(m.used(bound, true).output, 7);
    }

    #[test]
    fn refusals_other_reasoning_names_redacted_thinking_and_argument_deltas_count_as_streamed() {
        let bound = Bound {
            input: 1,
            output: 1,
        };
        let chat = concat!(
            "data: {\"choices\":[{\"index\":0,\"delta\":{\"refusal\":\"no way\"}}]}\n\n",
            "data: {\"choices\":[{\"index\":0,\"delta\":{\"reasoning\":\"hmm\"}}]}\n\n",
        );
        assert_eq!(run(Api::Chat, chat).0.used(bound, false).output, 9);
        let responses = concat!(
            "event: response.refusal.delta\ndata: {\"type\":\"response.refusal.delta\",\"output_index\":0,\"delta\":\"no way\"}\n\n",
            "event: response.output_item.added\ndata: {\"type\":\"response.output_item.added\",\"output_index\":1,\"item\":{\"type\":\"function_call\",\"name\":\"f\",\"arguments\":\"\"}}\n\n",
            "event: response.function_call_arguments.delta\ndata: {\"type\":\"response.function_call_arguments.delta\",\"output_index\":1,\"delta\":\"{\\\"a\\\":1}\"}\n\n",
        );
        assert_eq!(
            run(Api::Responses, responses).0.used(bound, false).output,
            13,
            "the refusal and the arguments streamed so far"
        );
        let messages = "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"redacted_thinking\",\"data\":\"EmwKAhgBEgy\"}}\n\n";
        assert_eq!(run(Api::Messages, messages).0.used(bound, false).output, 11);
    }

    /// Every call a stream judges, in order: `name args`.
    fn judged(api: Api, stream: &str) -> (Vec<String>, bool) {
        let mut p = Parser::new(1 << 20);
        p.push(stream.as_bytes());
        let mut m = Meter::new(api, 1 << 20, false);
        let (mut calls, mut failed) = (Vec::new(), false);
        let mut take = |n: Next| match n {
            Next::Judge(c, _) => calls.extend(
                c.into_iter()
                    .map(|c| format!("{} {}", c.name, c.arguments.as_str().unwrap_or("?"))),
            ),
            Next::Fail(..) => failed = true,
            _ => {}
        };
        while let Some(e) = p.next_event().unwrap() {
            take(m.event(e));
        }
        if let Some(n) = m.finish() {
            take(n);
        }
        (calls, failed)
    }

    #[test]
    fn a_call_is_judged_with_what_its_pieces_or_its_final_form_say_whatever_events_are_left_out() {
        let added = "event: response.output_item.added\ndata: {\"type\":\"response.output_item.added\",\"output_index\":0,\"item\":{\"type\":\"function_call\",\"name\":\"shell\",\"arguments\":\"\"}}\n\n";
        let delta = |d: &str| {
            format!("event: response.function_call_arguments.delta\ndata: {{\"type\":\"response.function_call_arguments.delta\",\"output_index\":0,\"delta\":{}}}\n\n", serde_json::to_string(d).unwrap())
        };
        let completed = |args: &str| {
            format!("event: response.completed\ndata: {{\"type\":\"response.completed\",\"response\":{{\"output\":[{{\"type\":\"function_call\",\"name\":\"shell\",\"arguments\":{}}}]}}}}\n\n", serde_json::to_string(args).unwrap())
        };
        let rm = r#"{"command":"rm -rf /"}"#;
        // Deltas without a `.done` event, then the final response listing the call.
        let s = format!(
            "{added}{}{}{}",
            delta(&rm[..5]),
            delta(&rm[5..]),
            completed(rm)
        );
        assert_eq!(
            judged(Api::Responses, &s),
            (vec![format!("shell {rm}")], false)
        );
        // Deltas, and the stream ends without any final event.
        let s = format!("{added}{}", delta(rm));
        assert_eq!(
            judged(Api::Responses, &s),
            (vec![format!("shell {rm}")], false)
        );
        // The final response says other arguments than the deltas: both are judged.
        let s = format!("{added}{}{}", delta(r#"{"command":"ls"}"#), completed(rm));
        let (calls, _) = judged(Api::Responses, &s);
        assert!(calls.contains(&format!("shell {rm}")), "{calls:?}");
        // The item itself carries the arguments.
        let s = "event: response.output_item.added\ndata: {\"type\":\"response.output_item.added\",\"output_index\":0,\"item\":{\"type\":\"function_call\",\"name\":\"shell\",\"arguments\":\"{\\\"command\\\":\\\"rm -rf /\\\"}\"}}\n\n";
        assert_eq!(
            judged(Api::Responses, s),
            (vec![format!("shell {rm}")], false)
        );
        // A custom tool call's input given when it starts.
        let s = "event: response.output_item.added\ndata: {\"type\":\"response.output_item.added\",\"output_index\":0,\"item\":{\"type\":\"custom_tool_call\",\"name\":\"shell\",\"input\":\"rm -rf /\"}}\n\n";
        assert_eq!(
            judged(Api::Responses, s),
            (vec![r#"shell {"input":"rm -rf /"}"#.to_string()], false)
        );
        // What cannot be judged cuts the stream: arguments that are not text, an output the
        // request could not have asked for.
        for s in [
            format!("{added}event: response.function_call_arguments.delta\ndata: {{\"type\":\"response.function_call_arguments.delta\",\"output_index\":0,\"delta\":{{\"command\":\"rm -rf /\"}}}}\n\n"),
            "event: response.output_item.added\ndata: {\"type\":\"response.output_item.added\",\"output_index\":0,\"item\":{\"type\":\"web_search_call\"}}\n\n".to_string(),
        ] {
            assert!(judged(Api::Responses, &s).1, "{s}");
        }
        // Chat Completions: arguments as an object instead of text.
        let s = "data: {\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"name\":\"shell\",\"arguments\":{\"command\":\"rm -rf /\"}}}]}}]}\n\n";
        assert!(judged(Api::Chat, s).1);
        // Messages: a tool_use whose input comes with its start, and a block of a server tool.
        let start = "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"tool_use\",\"name\":\"shell\",\"input\":{\"command\":\"rm -rf /\"}}}\n\n";
        let stop =
            "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n";
        assert_eq!(
            judged(Api::Messages, &format!("{start}{stop}")),
            (vec![format!("shell {rm}")], false)
        );
        let benign = "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"{\\\"command\\\":\\\"ls\\\"}\"}}\n\n";
        let (calls, _) = judged(Api::Messages, &format!("{start}{benign}{stop}"));
        assert!(
            calls[0].contains("rm -rf") && calls[0].contains("ls"),
            "both, joined: {calls:?}"
        );
        let server = "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"server_tool_use\",\"name\":\"shell\",\"input\":{}}}\n\n";
        assert!(judged(Api::Messages, server).1);
    }

    #[test]
    fn responses_and_messages_hold_each_call_from_its_start_to_its_end() {
        let r = concat!(
            "event: response.output_text.delta\ndata: {\"type\":\"response.output_text.delta\",\"output_index\":0,\"delta\":\"ok\"}\n\n",
            "event: response.output_item.added\ndata: {\"type\":\"response.output_item.added\",\"output_index\":1,\"item\":{\"type\":\"function_call\",\"name\":\"f\"}}\n\n",
            "event: response.function_call_arguments.delta\ndata: {\"type\":\"response.function_call_arguments.delta\",\"output_index\":1,\"delta\":\"{}\"}\n\n",
            "event: response.output_item.done\ndata: {\"type\":\"response.output_item.done\",\"output_index\":1,\"item\":{\"type\":\"function_call\",\"name\":\"f\",\"arguments\":\"{\\\"a\\\":1}\"}}\n\n",
            "event: response.completed\ndata: {\"type\":\"response.completed\",\"response\":{\"usage\":{\"input_tokens\":3,\"output_tokens\":2}}}\n\n",
        );
        let (m, log) = run(Api::Responses, r);
        assert_eq!(
            log,
            [
                "send",
                "hold",
                "hold",
                "judge f {\"a\":1} (3 events)",
                "send"
            ]
        );
        assert_eq!(
            m.used(
                Bound {
                    input: 10,
                    output: 10
                },
                false,
            ),
            Used {
                input: 3,
                output: 2
            }
        );
        let a = concat!(
            "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":12,\"output_tokens\":1}}}\n\n",
            "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"tool_use\",\"name\":\"g\"}}\n\n",
            "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"{\\\"x\\\":\"}}\n\n",
            "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"2}\"}}\n\n",
            "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n",
            "event: message_delta\ndata: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":7}}\n\n",
            "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
        );
        let (m, log) = run(Api::Messages, a);
        assert_eq!(
            log,
            [
                "send",
                "hold",
                "hold",
                "hold",
                "judge g {\"x\":2} (4 events)",
                "send",
                "send"
            ]
        );
        assert_eq!(
            m.used(
                Bound {
                    input: 50,
                    output: 50
                },
                false,
            ),
            Used {
                input: 12,
                output: 7
            }
        );
    }
}
