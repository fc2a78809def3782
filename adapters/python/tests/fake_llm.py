"""A scripted model server for tests: OpenAI's chat completions and Responses API and
Anthropic's messages, whole or streamed (SSE), on 127.0.0.1. In the suite it is the node's
upstream (`openai` and `anthropic` in the node's config), so the clients reach it through the
node's LLM proxy.

Tests queue turns (text or tool calls, with the usage the answer reports); the server records
every request. A request with no turn queued gets a 500, so a test that makes more model calls
than it planned fails loudly instead of hanging. A request with `"stream": true` gets the turn
as the API streams it: chat chunks as `data:` lines ending in `data: [DONE]` (with a usage
chunk when `stream_options.include_usage` asks for it), Responses and Anthropic events as
typed `event:`/`data:` pairs, sent with chunked transfer encoding, `chunk_delay_s` apart.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

REQUEST_BYTES_MAX = 1 << 20
CHAT = "/v1/chat/completions"
RESPONSES = "/v1/responses"
MESSAGES = "/v1/messages"
ROUTES = (CHAT, RESPONSES, MESSAGES)
MODEL = "fake-model"

USAGE = (10, 5)
"""The (input, output) tokens an answer reports unless the turn says otherwise."""


@dataclass(frozen=True)
class Recorded:
    path: str
    headers: dict[str, str]
    body: dict[str, Any]


ToolCall = tuple[str, dict[str, Any]]
"""A tool call the model makes: the tool's name and its arguments."""


@dataclass(frozen=True)
class Turn:
    """One scripted answer: text, or tool calls (in parallel), and the usage it reports.
    Streamed, the text goes out a word at a time, `chunk_delay_s` between events."""

    text: str | None = None
    calls: tuple[ToolCall, ...] = ()
    usage: tuple[int, int] = USAGE
    chunk_delay_s: float = 0.0


class FakeLLM:
    """The server; `base_url` is its root (`http://127.0.0.1:PORT`)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._turns: dict[str, deque[Turn]] = {route: deque() for route in ROUTES}
        self.requests: list[Recorded] = []
        self.streams_cut = 0
        """Streams whose reader went away before their end (a write failed)."""
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        self.base_url = f"http://127.0.0.1:{self._server.server_address[1]}"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def reset(self) -> None:
        """Forgets queued turns and recorded requests (between tests)."""
        with self._lock:
            for queue in self._turns.values():
                queue.clear()
            self.requests.clear()
            self.streams_cut = 0

    # --- scripting --------------------------------------------------------------------

    def chat_tool_calls(self, *calls: ToolCall, usage: tuple[int, int] = USAGE) -> None:
        """The next chat completion asks for these tool calls (in parallel)."""
        self.queue(CHAT, Turn(calls=calls, usage=usage))

    def chat_text(self, text: str, *, usage: tuple[int, int] = USAGE, delay: float = 0.0) -> None:
        """The next chat completion answers with text."""
        self.queue(CHAT, Turn(text=text, usage=usage, chunk_delay_s=delay))

    def responses_tool_calls(self, *calls: ToolCall, usage: tuple[int, int] = USAGE) -> None:
        """The next Responses API answer asks for these tool calls."""
        self.queue(RESPONSES, Turn(calls=calls, usage=usage))

    def responses_text(
        self, text: str, *, usage: tuple[int, int] = USAGE, delay: float = 0.0
    ) -> None:
        """The next Responses API answer is text."""
        self.queue(RESPONSES, Turn(text=text, usage=usage, chunk_delay_s=delay))

    def messages_text(
        self, text: str, *, usage: tuple[int, int] = USAGE, delay: float = 0.0
    ) -> None:
        """The next Anthropic messages answer is text."""
        self.queue(MESSAGES, Turn(text=text, usage=usage, chunk_delay_s=delay))

    def messages_tool_calls(self, *calls: ToolCall, usage: tuple[int, int] = USAGE) -> None:
        """The next Anthropic messages answer asks for these tool calls."""
        self.queue(MESSAGES, Turn(calls=calls, usage=usage))

    def queue(self, route: str, turn: Turn) -> None:
        with self._lock:
            self._turns[route].append(turn)

    def requests_to(self, path: str) -> list[Recorded]:
        with self._lock:
            return [r for r in self.requests if r.path == path]

    def _next(self, route: str) -> Turn | None:
        with self._lock:
            queue = self._turns.get(route)
            return queue.popleft() if queue else None

    # --- serving ----------------------------------------------------------------------

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, and chunked streams

            def do_POST(self) -> None:  # noqa: N802 (the http.server name)
                length = min(int(self.headers.get("content-length") or 0), REQUEST_BYTES_MAX)
                raw = self.rfile.read(length)
                path = self.path.split("?", 1)[0]
                try:
                    body = json.loads(raw or b"{}")
                except ValueError:
                    body = {"unparsed": raw.decode("utf-8", "replace")}
                with fake._lock:
                    fake.requests.append(
                        Recorded(path, {k.lower(): v for k, v in self.headers.items()}, body)
                    )
                turn = fake._next(path)
                if turn is None:
                    message = f"no reply scripted for {path}"
                    self._send(500, {"error": {"message": message, "type": "server_error"}})
                elif body.get("stream") is True:
                    self._stream(_events(path, turn, body), turn.chunk_delay_s)
                else:
                    self._send(200, _whole(path, turn))

            def _send(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _stream(self, events: Iterator[bytes], delay: float) -> None:
                self.send_response(200)
                self.send_header("content-type", "text/event-stream; charset=utf-8")
                self.send_header("cache-control", "no-cache")
                self.send_header("transfer-encoding", "chunked")
                self.end_headers()
                try:
                    for i, event in enumerate(events):
                        if i and delay:
                            time.sleep(delay)
                        self.wfile.write(b"%x\r\n%s\r\n" % (len(event), event))
                        self.wfile.flush()
                    self.wfile.write(b"0\r\n\r\n")
                    self.wfile.flush()
                except OSError:  # the reader went away
                    with fake._lock:
                        fake.streams_cut += 1
                    self.close_connection = True

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler


# --- whole answers ----------------------------------------------------------------------


def _whole(path: str, turn: Turn) -> dict[str, Any]:
    if path == CHAT:
        return _chat(turn)
    if path == RESPONSES:
        return _response(_response_output(turn), turn.usage)
    return _message(turn)


def _chat(turn: Turn) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": turn.text}
    if turn.calls:
        message["tool_calls"] = [
            {
                "id": f"call_{i}",
                "type": "function",
                "function": {"name": name, "arguments": json.dumps(args)},
            }
            for i, (name, args) in enumerate(turn.calls)
        ]
    return {
        "id": "chatcmpl-0",
        "object": "chat.completion",
        "created": 0,
        "model": MODEL,
        "choices": [
            {
                "index": 0,
                "message": message,
                "finish_reason": "tool_calls" if turn.calls else "stop",
                "logprobs": None,
            }
        ],
        "usage": _chat_usage(turn.usage),
    }


def _chat_usage(usage: tuple[int, int]) -> dict[str, int]:
    return {"prompt_tokens": usage[0], "completion_tokens": usage[1], "total_tokens": sum(usage)}


def _text_item(text: str, status: str = "completed") -> dict[str, Any]:
    return {
        "type": "message",
        "id": "msg_0",
        "role": "assistant",
        "status": status,
        "content": [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}]
        if status == "completed"
        else [],
    }


def _call_item(i: int, name: str, arguments: str, status: str = "completed") -> dict[str, Any]:
    return {
        "type": "function_call",
        "id": f"fc_{i}",
        "call_id": f"call_{i}",
        "name": name,
        "arguments": arguments,
        "status": status,
    }


def _response_output(turn: Turn) -> list[dict[str, Any]]:
    output = [_text_item(turn.text)] if turn.text is not None else []
    offset = len(output)
    output += [
        _call_item(offset + i, name, json.dumps(args)) for i, (name, args) in enumerate(turn.calls)
    ]
    return output


def _response(
    output: list[dict[str, Any]], usage: tuple[int, int] | None, status: str = "completed"
) -> dict[str, Any]:
    return {
        "id": "resp_0",
        "object": "response",
        "created_at": 0,
        "model": MODEL,
        "status": status,
        "error": None,
        "incomplete_details": None,
        "instructions": None,
        "output": output,
        "parallel_tool_calls": True,
        "temperature": 1.0,
        "top_p": 1.0,
        "tool_choice": "auto",
        "tools": [],
        "usage": None
        if usage is None
        else {
            "input_tokens": usage[0],
            "output_tokens": usage[1],
            "total_tokens": sum(usage),
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens_details": {"reasoning_tokens": 0},
        },
    }


def _message_content(turn: Turn) -> list[dict[str, Any]]:
    content: list[dict[str, Any]] = []
    if turn.text is not None:
        content.append({"type": "text", "text": turn.text})
    content += [
        {"type": "tool_use", "id": f"toolu_{i}", "name": name, "input": args}
        for i, (name, args) in enumerate(turn.calls)
    ]
    return content


def _message(turn: Turn) -> dict[str, Any]:
    return {
        "id": "msg_0",
        "type": "message",
        "role": "assistant",
        "model": MODEL,
        "content": _message_content(turn),
        "stop_reason": "tool_use" if turn.calls else "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": turn.usage[0], "output_tokens": turn.usage[1]},
    }


# --- streams ----------------------------------------------------------------------------


def _words(text: str) -> list[str]:
    """The text in pieces of one word (and the spaces after it), as a model streams it."""
    return re.findall(r"\S+\s*|\s+", text) or [""]


def _events(path: str, turn: Turn, request: dict[str, Any]) -> Iterator[bytes]:
    if path == CHAT:
        options = request.get("stream_options") or {}
        return _chat_stream(turn, bool(options.get("include_usage")))
    if path == RESPONSES:
        return _responses_stream(turn)
    return _messages_stream(turn)


def _data(payload: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(payload).encode() + b"\n\n"


def _typed(payload: dict[str, Any]) -> bytes:
    return f"event: {payload['type']}\n".encode() + _data(payload)


def _chat_stream(turn: Turn, include_usage: bool) -> Iterator[bytes]:
    def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}
        payload: dict[str, Any] = {
            "id": "chatcmpl-0",
            "object": "chat.completion.chunk",
            "created": 0,
            "model": MODEL,
            "choices": [choice],
        }
        if include_usage:
            payload["usage"] = None
        return _data(payload)

    yield chunk({"role": "assistant", "content": "" if turn.text is not None else None})
    if turn.text is not None:
        for word in _words(turn.text):
            yield chunk({"content": word})
    for i, (name, args) in enumerate(turn.calls):
        yield chunk(
            {
                "tool_calls": [
                    {
                        "index": i,
                        "id": f"call_{i}",
                        "type": "function",
                        "function": {"name": name, "arguments": ""},
                    }
                ]
            }
        )
        text = json.dumps(args)
        for part in (text[: len(text) // 2], text[len(text) // 2 :]):
            yield chunk({"tool_calls": [{"index": i, "function": {"arguments": part}}]})
    yield chunk({}, "tool_calls" if turn.calls else "stop")
    if include_usage:
        yield _data(
            {
                "id": "chatcmpl-0",
                "object": "chat.completion.chunk",
                "created": 0,
                "model": MODEL,
                "choices": [],
                "usage": _chat_usage(turn.usage),
            }
        )
    yield b"data: [DONE]\n\n"


def _responses_stream(turn: Turn) -> Iterator[bytes]:
    seq = iter(range(1 << 30))

    def event(kind: str, **fields: Any) -> bytes:
        return _typed({"type": kind, "sequence_number": next(seq), **fields})

    yield event("response.created", response=_response([], None, "in_progress"))
    yield event("response.in_progress", response=_response([], None, "in_progress"))
    index = 0
    if turn.text is not None:
        item = {"item_id": "msg_0", "output_index": index, "content_index": 0}
        part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
        yield event(
            "response.output_item.added", output_index=index, item=_text_item("", "in_progress")
        )
        yield event("response.content_part.added", part=part, **item)
        for word in _words(turn.text):
            yield event("response.output_text.delta", delta=word, logprobs=[], **item)
        yield event("response.output_text.done", text=turn.text, logprobs=[], **item)
        yield event("response.content_part.done", part={**part, "text": turn.text}, **item)
        yield event("response.output_item.done", output_index=index, item=_text_item(turn.text))
        index += 1
    for name, args in turn.calls:
        arguments = json.dumps(args)
        started = _call_item(index, name, "", "in_progress")
        yield event("response.output_item.added", output_index=index, item=started)
        ids = {"item_id": f"fc_{index}", "output_index": index}
        yield event("response.function_call_arguments.delta", delta=arguments, **ids)
        yield event("response.function_call_arguments.done", arguments=arguments, **ids)
        done = _call_item(index, name, arguments)
        yield event("response.output_item.done", output_index=index, item=done)
        index += 1
    yield event("response.completed", response=_response(_response_output(turn), turn.usage))


def _messages_stream(turn: Turn) -> Iterator[bytes]:
    start = {**_message(turn), "content": [], "stop_reason": None}
    start["usage"] = {"input_tokens": turn.usage[0], "output_tokens": 1}
    yield _typed({"type": "message_start", "message": start})
    index = 0
    if turn.text is not None:
        block = {"type": "text", "text": ""}
        yield _typed({"type": "content_block_start", "index": index, "content_block": block})
        yield _typed({"type": "ping"})
        for word in _words(turn.text):
            delta = {"type": "text_delta", "text": word}
            yield _typed({"type": "content_block_delta", "index": index, "delta": delta})
        yield _typed({"type": "content_block_stop", "index": index})
        index += 1
    for i, (name, args) in enumerate(turn.calls):
        use: dict[str, Any] = {"type": "tool_use", "id": f"toolu_{i}", "name": name, "input": {}}
        yield _typed({"type": "content_block_start", "index": index, "content_block": use})
        partial = {"type": "input_json_delta", "partial_json": json.dumps(args)}
        yield _typed({"type": "content_block_delta", "index": index, "delta": partial})
        yield _typed({"type": "content_block_stop", "index": index})
        index += 1
    stop = {"stop_reason": "tool_use" if turn.calls else "end_turn", "stop_sequence": None}
    yield _typed(
        {"type": "message_delta", "delta": stop, "usage": {"output_tokens": turn.usage[1]}}
    )
    yield _typed({"type": "message_stop"})
