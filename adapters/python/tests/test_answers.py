"""What the clients and integrations do when the node answers something unexpected, too
slowly, or not at all: they raise a `WardenError` and nothing governed runs (fail closed).
Against a scripted stand-in (`scripted_node.py`), since a real node never answers so."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest
from langchain.agents import create_agent
from langchain_core.messages import AIMessage, HumanMessage
from langchain_core.tools import tool

from warden_client import AsyncWardenClient, Decision, WardenClient, WardenError
from warden_client.langchain import WardenCallbackHandler, WardenMiddleware
from warden_client.openai_agents import mcp_failure_error_function

from .scripted_node import Chunks, ScriptedNode, answer, trickle
from .test_langchain import calls, turns

ALLOW = json.dumps({"decision": "allow", "step": "s-1"})
TRUNCATED = (
    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n"
    + ALLOW[:20].encode()
)
GARBAGE: dict[str, tuple[Chunks, str]] = {
    "5xx text": (answer(500, "oops"), "http_error"),
    "5xx json": (answer(503, '{"error":{"code":"busy","message":"x"}}'), "busy"),
    "html": (answer(200, "<html>ok</html>"), "bad_answer"),
    "truncated": ([(TRUNCATED, 0.0)], "unreachable"),
    "202 allow": (answer(202, ALLOW), "bad_answer"),
    "204": (answer(204, ""), "bad_answer"),
    "redirect": (answer(307, "", "location: /elsewhere\r\n"), "http_error"),
    "deeply nested": (answer(200, "[" * 100_000 + "]" * 100_000), "bad_answer"),
    "duplicate key": (
        answer(200, '{"decision":"deny","step":"s-1","decision":"allow"}'),
        "bad_answer",
    ),
    "allow with error": (
        answer(200, json.dumps({"decision": "allow", "step": "s-1", "error": {"code": "denied"}})),
        "bad_answer",
    ),
    "NaN": (
        answer(200, '{"decision":"allow","step":"s-1","remaining":{"steps":NaN}}'),
        "bad_answer",
    ),
    "uppercase": (answer(200, '{"decision":"ALLOW","step":"s-1"}'), "bad_answer"),
    "array": (answer(200, f"[{ALLOW}]"), "bad_answer"),
}


def scripted(chunks: Chunks) -> Iterator[ScriptedNode]:
    node = ScriptedNode(lambda method, path, body: chunks)
    try:
        yield node
    finally:
        node.close()


@pytest.fixture(params=sorted(GARBAGE))
def garbage(request: pytest.FixtureRequest) -> Iterator[tuple[ScriptedNode, str]]:
    chunks, code = GARBAGE[request.param]
    for node in scripted(chunks):
        yield node, code


@pytest.fixture
def slow() -> Iterator[ScriptedNode]:
    """A node that sends its answer (an allow) one byte every 0.4 s."""
    head = f"HTTP/1.1 200 OK\r\ncontent-length: {len(ALLOW)}\r\n\r\n".encode()
    yield from scripted([(head, 0.0), *trickle(ALLOW.encode(), 0.4)])


def test_a_step_with_an_unexpected_answer_is_an_error_and_the_block_does_not_run(
    garbage: tuple[ScriptedNode, str],
) -> None:
    node, code = garbage
    ran = []
    with WardenClient(node.url, "t", agent_id="a", retries=0) as client:
        with pytest.raises(WardenError) as caught:
            with client.governed("lookup"):
                ran.append(True)
    assert ran == [] and caught.value.code == code, caught.value


async def test_an_async_step_with_an_unexpected_answer_is_an_error(
    garbage: tuple[ScriptedNode, str],
) -> None:
    node, code = garbage
    ran = []
    async with AsyncWardenClient(node.url, "t", agent_id="a", retries=0) as client:
        with pytest.raises(WardenError) as caught:
            async with client.governed("lookup"):
                ran.append(True)
    assert ran == [] and caught.value.code == code, caught.value


def test_a_trickling_answer_is_a_client_timeout_bounded_by_timeout_s(slow: ScriptedNode) -> None:
    with WardenClient(slow.url, "t", agent_id="a", timeout_s=1.0) as client:
        started = time.monotonic()
        with pytest.raises(WardenError) as caught:
            client.step("lookup")
    assert caught.value.code == "client_timeout"
    assert time.monotonic() - started < 1.5


def test_trickled_headers_are_bounded_too() -> None:
    head = f"HTTP/1.1 200 OK\r\ncontent-length: {len(ALLOW)}\r\n\r\n".encode()
    for node in scripted(trickle(head + ALLOW.encode(), 0.3)):
        with WardenClient(node.url, "t", agent_id="a", timeout_s=1.0) as client:
            started = time.monotonic()
            with pytest.raises(WardenError) as caught:
                client.step("lookup")
        assert caught.value.code == "client_timeout"
        assert time.monotonic() - started < 1.5


async def test_an_async_trickling_answer_is_a_client_timeout(slow: ScriptedNode) -> None:
    async with AsyncWardenClient(slow.url, "t", agent_id="a", timeout_s=1.0) as client:
        started = time.monotonic()
        with pytest.raises(WardenError) as caught:
            await client.step("lookup")
    assert caught.value.code == "client_timeout"
    assert time.monotonic() - started < 1.5


def unreachable_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


def refusing_node(kind: str) -> Iterator[str]:
    """The URL of a node that answers a 5xx, HTML, slowly, or is not there."""
    if kind == "unreachable":
        yield unreachable_url()
        return
    chunks = {
        "5xx": answer(500, "oops"),
        "html": answer(200, "<html/>"),
        "slow": [(b"HTTP/1.1 200 OK\r\n", 0.0), *trickle(b"content-length: 2\r\n\r\n{}", 0.5)],
    }[kind]
    for node in scripted(chunks):
        yield node.url


KINDS = ["unreachable", "5xx", "html", "slow"]


@pytest.mark.parametrize("kind", KINDS)
def test_the_middleware_does_not_run_the_tool_when_warden_cannot_answer(kind: str) -> None:
    ran: list[str] = []

    @tool
    def shell(command: str) -> str:
        """Runs a command."""
        ran.append(command)
        return "ran"

    for url in refusing_node(kind):
        client = WardenClient(url, "t", agent_id="a", timeout_s=1.0, retries=0)
        graph = create_agent(
            turns(calls(("shell", {"command": "ls"})), AIMessage(content="never")),
            tools=[shell],
            middleware=[WardenMiddleware(client)],
        )
        with pytest.raises(WardenError) as caught:
            graph.invoke({"messages": [HumanMessage("go")]})
        assert caught.value.code in ("unreachable", "http_error", "bad_answer", "client_timeout")
    assert ran == []


@pytest.mark.parametrize("kind", KINDS)
def test_the_callback_handler_does_not_run_the_tool_when_warden_cannot_answer(kind: str) -> None:
    ran: list[str] = []

    @tool
    def shell(command: str) -> str:
        """Runs a command."""
        ran.append(command)
        return "ran"

    for url in refusing_node(kind):
        client = WardenClient(url, "t", agent_id="a", timeout_s=1.0, retries=0)
        with pytest.raises(WardenError):
            shell.invoke({"command": "ls"}, config={"callbacks": [WardenCallbackHandler(client)]})
    assert ran == []


@pytest.mark.parametrize("value", [0, -1, float("nan"), float("inf")])
def test_timeouts_must_be_finite_and_positive(value: float) -> None:
    with pytest.raises(ValueError, match="timeout_s"):
        WardenClient("http://127.0.0.1:1", "t", timeout_s=value)
    with pytest.raises(ValueError, match="connect_timeout_s"):
        AsyncWardenClient("http://127.0.0.1:1", "t", connect_timeout_s=value)


def test_approval_waits_must_be_finite() -> None:
    for node in scripted(answer(500, "never asked")):
        client = WardenClient(node.url, "t", agent_id="a")
        for value in (float("nan"), float("inf"), -1.0):
            with pytest.raises(ValueError):
                client.wait_for_approval("s-1", timeout_s=value)
        assert node.requests == []


def test_another_agents_approval_is_refused_before_anything_is_sent() -> None:
    for node in scripted(answer(200, ALLOW)):
        client = WardenClient(node.url, "t", agent_id="b")
        parked = Decision(decision="require_approval", step="s-1", approval="a/s-1")
        for other in (parked, "a/s-1", "b/x/s-1"):
            with pytest.raises(WardenError) as caught:
                client.wait_for_approval(other, timeout_s=1)
            assert caught.value.code == "wrong_agent"
        assert node.requests == []
        # Its own is asked for: the answer (step s-1) is that step's.
        assert client.wait_for_approval("b/s-1", timeout_s=1).step == "s-1"
        assert node.requests[-1][1].startswith("/v1/agents/b/steps/s-1")


def test_an_answer_about_another_step_is_a_bad_answer() -> None:
    for node in scripted(answer(200, ALLOW)):  # always step s-1
        client = WardenClient(node.url, "t", agent_id="a")
        with pytest.raises(WardenError) as caught:
            client.wait_for_approval("s-9", timeout_s=1)
        assert caught.value.code == "bad_answer"
        with pytest.raises(WardenError) as caught:
            client.outcome("s-9", True)  # the scripted node's answer has step s-1
        assert caught.value.code == "bad_answer"


@pytest.mark.parametrize(
    "cost",
    [
        {"tokens": -50},
        {"tokens": 1.5},
        {"tokens": True},
        {"cost_usd": float("nan")},
        {"cost_usd": -0.1},
        {"cost_usd": 0.1, "cost_micro_usd": 5},
        {"custom": {"gpu": -1}},
        {"calories": 3},
    ],
)
def test_an_outcome_the_node_would_refuse_is_refused_before_it_is_sent(
    cost: dict[str, Any],
) -> None:
    for node in scripted(answer(200, json.dumps({"step": "s-1"}))):
        client = WardenClient(node.url, "t", agent_id="a")
        with pytest.raises(WardenError) as caught:
            client.outcome("s-1", True, cost=cost)
        assert caught.value.code == "bad_outcome"
        assert node.requests == []


@pytest.mark.parametrize(
    ("body", "call"),
    [
        ({"id": "a", "state": "zombie"}, "get_agent"),
        ({"id": "a"}, "get_agent"),
        ({"approvals": {"id": "x"}}, "approvals"),
        ({"approvals": ["x"]}, "approvals"),
        ({}, "approvals"),
    ],
)
def test_malformed_records_are_bad_answers(body: dict[str, Any], call: str) -> None:
    for node in scripted(answer(200, json.dumps(body))):
        client = WardenClient(node.url, "t", agent_id="a")
        with pytest.raises(WardenError) as caught:
            getattr(client, call)()
        assert caught.value.code == "bad_answer"


def test_mcp_failure_text_reads_a_refusal_whose_error_field_is_text() -> None:
    data = {"decision": "deny", "step": "s-1", "rule": "no-etc", "error": "denied"}
    refused = SimpleNamespace(error=SimpleNamespace(code=-32060, data=data))
    text = mcp_failure_error_function(None, refused)  # type: ignore[arg-type]
    assert "warden denied" in text and "no-etc" in text
    withheld = SimpleNamespace(error=SimpleNamespace(code=-32063, data=data))
    assert "withheld" in mcp_failure_error_function(None, withheld)  # type: ignore[arg-type]
