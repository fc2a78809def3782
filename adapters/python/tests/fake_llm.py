"""A scripted model server for tests: OpenAI's chat completions and Responses API and
Anthropic's messages, non-streaming, on 127.0.0.1. Tests queue the replies; the server
records every request. A request with no reply queued gets a 500, so a test that makes more
model calls than it planned fails loudly instead of hanging."""

from __future__ import annotations

import json
import threading
from collections import deque
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

REQUEST_BYTES_MAX = 1 << 20
ROUTES = ("/v1/chat/completions", "/v1/responses", "/v1/messages")


@dataclass(frozen=True)
class Recorded:
    path: str
    headers: dict[str, str]
    body: dict[str, Any]


ToolCall = tuple[str, dict[str, Any]]
"""A tool call the model makes: the tool's name and its arguments."""


class FakeLLM:
    """The server; `base_url` is its root (`http://127.0.0.1:PORT`)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._replies: dict[str, deque[dict[str, Any]]] = {route: deque() for route in ROUTES}
        self.requests: list[Recorded] = []
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

    # --- scripting --------------------------------------------------------------------

    def chat_tool_calls(self, *calls: ToolCall) -> None:
        """The next chat completion asks for these tool calls (in parallel)."""
        tool_calls = [
            {
                "id": f"call_{i}",
                "type": "function",
                "function": {"name": name, "arguments": json.dumps(args)},
            }
            for i, (name, args) in enumerate(calls)
        ]
        self._queue(
            "/v1/chat/completions",
            _chat({"role": "assistant", "content": None, "tool_calls": tool_calls}, "tool_calls"),
        )

    def chat_text(self, text: str) -> None:
        """The next chat completion answers with text."""
        self._queue("/v1/chat/completions", _chat({"role": "assistant", "content": text}, "stop"))

    def responses_tool_calls(self, *calls: ToolCall) -> None:
        """The next Responses API answer asks for these tool calls."""
        output = [
            {
                "type": "function_call",
                "id": f"fc_{i}",
                "call_id": f"call_{i}",
                "name": name,
                "arguments": json.dumps(args),
                "status": "completed",
            }
            for i, (name, args) in enumerate(calls)
        ]
        self._queue("/v1/responses", _response(output))

    def responses_text(self, text: str) -> None:
        """The next Responses API answer is text."""
        output = [
            {
                "type": "message",
                "id": "msg_0",
                "role": "assistant",
                "status": "completed",
                "content": [{"type": "output_text", "text": text, "annotations": []}],
            }
        ]
        self._queue("/v1/responses", _response(output))

    def messages_text(self, text: str) -> None:
        """The next Anthropic messages answer is text."""
        self._queue(
            "/v1/messages",
            {
                "id": "msg_0",
                "type": "message",
                "role": "assistant",
                "model": "fake-model",
                "content": [{"type": "text", "text": text}],
                "stop_reason": "end_turn",
                "stop_sequence": None,
                "usage": {"input_tokens": 3, "output_tokens": 2},
            },
        )

    def requests_to(self, path: str) -> list[Recorded]:
        with self._lock:
            return [r for r in self.requests if r.path == path]

    def _queue(self, route: str, reply: dict[str, Any]) -> None:
        with self._lock:
            self._replies[route].append(reply)

    def _next(self, route: str) -> dict[str, Any] | None:
        with self._lock:
            queue = self._replies.get(route)
            return queue.popleft() if queue else None

    # --- serving ----------------------------------------------------------------------

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
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
                reply = fake._next(path)
                if reply is None:
                    self._send(
                        500,
                        {
                            "error": {
                                "message": f"no reply scripted for {path}",
                                "type": "server_error",
                            }
                        },
                    )
                else:
                    self._send(200, reply)

            def _send(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler


def _chat(message: dict[str, Any], finish_reason: str) -> dict[str, Any]:
    return {
        "id": "chatcmpl-0",
        "object": "chat.completion",
        "created": 0,
        "model": "fake-model",
        "choices": [{"index": 0, "message": message, "finish_reason": finish_reason}],
        "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
    }


def _response(output: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "id": "resp_0",
        "object": "response",
        "created_at": 0,
        "model": "fake-model",
        "status": "completed",
        "output": output,
        "parallel_tool_calls": True,
        "tool_choice": "auto",
        "tools": [],
        "usage": {
            "input_tokens": 10,
            "output_tokens": 5,
            "total_tokens": 15,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens_details": {"reasoning_tokens": 0},
        },
    }
