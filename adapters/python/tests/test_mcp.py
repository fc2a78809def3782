"""The node's MCP gateway (`POST /mcp`) with the real `mcp` SDK: its streamable-HTTP client
and `ClientSession` (and its `Client`), through a real `warden node`, in front of a real MCP
server (the SDK's `MCPServer`, see `mcp_upstream.py`) that is the node's upstream `files`.

The gateway lists upstream `files`' tools as `files.<tool>`, only those the policy can allow;
each call is the step `mcp.files.<tool>`, decided before it reaches the server; its result
is judged again before the agent reads it. A refusal is a JSON-RPC error (-32001 denied,
-32002 halted, -32004 result refused) whose `data` is warden's decision, which the SDK
raises as `MCPError`. An OpenAI Agents SDK agent uses the gateway as its MCP server.

Tests marked `xfail(strict=True)` document where the gateway falls short of what the SDK
expects; they fail (XPASS) once the node is fixed.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

import httpx
import httpx2
import pytest
from agents import Agent as SdkAgent
from agents import RunContextWrapper, Runner
from mcp import Client, ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from mcp_types import TextContent
from pydantic import ValidationError

from warden_client import (
    Agent,
    WardenClient,
    connect_mcp,
    mcp_headers,
    mcp_refusal,
    mcp_url,
)
from warden_client.openai_agents import (
    mcp_failure_error_function,
    warden_mcp_server,
    warden_model,
)

from .conftest import Node, new_agent_id, settled
from .fake_llm import RESPONSES, FakeLLM
from .mcp_upstream import INJECTION, FilesServer

T = TypeVar("T")

DENIED = -32001
HALTED = -32002
RESULT_REFUSED = -32004


@pytest.fixture(scope="module")
def mcp_operator(mcp_node: Node) -> Iterator[WardenClient]:
    with WardenClient(mcp_node.base_url, mcp_node.operator_token) as client:
        yield client


@pytest.fixture
def me(mcp_operator: WardenClient) -> Agent:
    """A freshly registered agent on the MCP node: its registration, with its token."""
    return mcp_operator.register_agent(new_agent_id("pym"), pool="swarm")


def text_of(result: Any) -> str:
    return "".join(c.text for c in result.content if isinstance(c, TextContent))


def journal(node: Node, agent_id: str) -> list[dict[str, Any]]:
    """The agent's journal entries (`GET /v1/audit?agent=...`, operator token)."""
    answer = httpx.get(
        f"{node.base_url}/v1/audit",
        params={"agent": agent_id, "limit": 1000},
        headers={"authorization": f"Bearer {node.operator_token}"},
        timeout=10,
    )
    answer.raise_for_status()
    entries: list[dict[str, Any]] = answer.json()["entries"]
    return entries


def decisions(node: Node, agent_id: str, tool: str) -> list[tuple[str, str | None, str]]:
    """Each journaled decision of the agent on `tool`, in order: (decision, rule, the names of
    the step's args)."""
    return [
        (entry["decision"], entry.get("rule"), ",".join(entry["step"]["args"]))
        for entry in (e["entry"] for e in journal(node, agent_id))
        if entry.get("type") == "decision" and entry["step"]["tool"] == tool
    ]


async def test_the_sdk_client_initializes_without_a_session_and_lists_only_allowed_tools(
    mcp_node: Node, me: Agent
) -> None:
    """The SDK's own pieces, with the wire recorded: `initialize` is answered at 2025-11-25
    without a session id, so the client opens no GET stream and sends no DELETE; tools/list
    shows only what the policy can allow, with the upstream's schemas."""
    seen: list[tuple[str, int, str | None]] = []

    async def record(response: httpx2.Response) -> None:
        seen.append(
            (response.request.method, response.status_code, response.headers.get("mcp-session-id"))
        )

    async with httpx2.AsyncClient(
        headers=mcp_headers(me), event_hooks={"response": [record]}
    ) as http:
        async with streamable_http_client(mcp_url(mcp_node.base_url), http_client=http) as (
            read,
            write,
        ):
            async with ClientSession(read, write) as s:
                init = await s.initialize()
                listed = await s.list_tools()

    assert init.protocol_version == "2025-11-25"
    assert init.server_info.name == "warden"
    assert init.capabilities.tools is not None
    assert init.instructions and "policy" in init.instructions
    # delete_file can never be allowed (rule no-deletes): not listed.
    by_name = {t.name: t for t in listed.tools}
    assert sorted(by_name) == ["files.read_file", "files.write_file"]
    assert by_name["files.read_file"].description == "Reads a file."
    assert by_name["files.read_file"].input_schema["required"] == ["path"]
    # initialize, notifications/initialized (202), tools/list; no session, GET nor DELETE.
    assert seen == [("POST", 200, None), ("POST", 202, None), ("POST", 200, None)]


async def test_an_allowed_call_returns_the_upstreams_result(
    mcp_node: Node, me: Agent, files: FilesServer, mcp_operator: WardenClient
) -> None:
    async with connect_mcp(mcp_node.base_url, me) as session:
        result = await session.call_tool("files.read_file", {"path": "/tmp/a"})

    assert not result.is_error
    assert text_of(result) == "contents of /tmp/a"
    assert result.structured_content == {"result": "contents of /tmp/a"}
    assert files.calls == [("read_file", "/tmp/a")]
    assert settled(mcp_operator, me.id)["steps_allowed"] == 2, "the call, then its result"
    assert decisions(mcp_node, me.id, "mcp.files.read_file") == [
        ("allow", None, "path"),
        ("allow", None, "result"),
    ]


@pytest.mark.parametrize(
    ("tool", "path", "rule"),
    [("files.read_file", "/etc/passwd", "no-etc"), ("files.delete_file", "/x", "no-deletes")],
)
async def test_a_denied_call_raises_mcp_error_with_the_decision(
    mcp_node: Node, me: Agent, files: FilesServer, tool: str, path: str, rule: str
) -> None:
    async with connect_mcp(mcp_node.base_url, me) as session:
        with pytest.raises(MCPError) as raised:
            await session.call_tool(tool, {"path": path})

    error = raised.value.error
    assert error.code == DENIED
    assert isinstance(error.data, dict)
    assert error.data["rule"] == rule
    assert error.data["decision"] == "deny"
    assert rule in error.message
    decision = mcp_refusal(raised.value)
    assert decision is not None and decision.rule == rule and decision.decision == "deny"
    assert files.calls == [], "a refused call never reaches the server"


async def test_a_result_carrying_a_prompt_injection_is_refused(
    mcp_node: Node, me: Agent, files: FilesServer
) -> None:
    async with connect_mcp(mcp_node.base_url, me) as session:
        with pytest.raises(MCPError) as raised:
            await session.call_tool("files.read_file", {"path": "/evil"})

    error = raised.value.error
    assert error.code == RESULT_REFUSED
    assert isinstance(error.data, dict) and error.data["rule"] == "no-injection"
    assert error.data["error"]["code"] == "result_refused"
    assert files.calls == [("read_file", "/evil")], "the tool ran; its result is held back"
    assert INJECTION not in str(error), "the agent never reads the injection"


async def test_a_halted_agent_gets_halted_and_the_server_is_not_called(
    mcp_node: Node, me: Agent, files: FilesServer, mcp_operator: WardenClient
) -> None:
    async with connect_mcp(mcp_node.base_url, me) as session:
        mcp_operator.halt(me.id, reason="enough", by="tests")
        with pytest.raises(MCPError) as raised:
            await session.call_tool("files.read_file", {"path": "/tmp/a"})
        listed = await session.list_tools()

    assert raised.value.error.code == HALTED
    decision = mcp_refusal(raised.value)
    assert decision is not None and decision.decision == "halt"
    assert files.calls == []
    # Listing is not a step: a halted agent still sees its tools.
    assert [t.name for t in listed.tools] == ["files.read_file", "files.write_file"]


async def test_the_journal_has_each_decision(
    mcp_node: Node, me: Agent, mcp_operator: WardenClient
) -> None:
    async with connect_mcp(mcp_node.base_url, me) as session:
        await session.call_tool("files.read_file", {"path": "/tmp/j"})
        for path in ("/etc/shadow", "/evil"):
            with pytest.raises(MCPError):
                await session.call_tool("files.read_file", {"path": path})
        mcp_operator.halt(me.id, reason="stop")
        with pytest.raises(MCPError):
            await session.call_tool("files.read_file", {"path": "/tmp/j"})

    # Each call is a step of mcp.files.read_file with the call's arguments; an allowed
    # call's result is judged as one more, with args {"result": <its text>}.
    assert decisions(mcp_node, me.id, "mcp.files.read_file") == [
        ("allow", None, "path"),
        ("allow", None, "result"),
        ("deny", "no-etc", "path"),
        ("allow", None, "path"),
        ("deny", "no-injection", "result"),
        ("halt", "operator", "path"),
    ]


async def test_a_2026_client_discovers_the_gateway_without_a_handshake(
    mcp_node: Node, me: Agent
) -> None:
    """`Client` (mode "auto") probes `server/discover` and adopts 2026-07-28; a refusal is
    an error there as in 2025-11-25 (errors carry no `resultType`)."""
    async with httpx2.AsyncClient(headers=mcp_headers(me)) as http:
        async with Client(
            streamable_http_client(mcp_url(mcp_node.base_url), http_client=http)
        ) as client:
            assert client.protocol_version == "2026-07-28"
            assert client.server_info is not None and client.server_info.name == "warden"
            with pytest.raises(MCPError) as raised:
                await client.call_tool("files.read_file", {"path": "/etc/passwd"})
    assert raised.value.error.code == DENIED
    decision = mcp_refusal(raised.value)
    assert decision is not None and decision.rule == "no-etc"


RESULT_TYPE_MISSING = (
    "At 2026-07-28 every result must carry `resultType` and tools/list's also `ttlMs` and "
    "`cacheScope` (mcp_types._v2026_07_28 ListToolsResult, CallToolResult); the gateway "
    "answers tools/list with {tools} only and passes the upstream's 2025-11-25 tools/call "
    "result on as is, so the SDK's Client raises pydantic ValidationError"
)


async def as_2026_client(node: Node, me: Agent, action: Callable[[Client], Awaitable[T]]) -> T:
    """`action`'s result with a `Client` that negotiated 2026-07-28 with the gateway; its
    exception is raised after the client closed (not inside the transport's task group)."""
    error: Exception | None = None
    async with httpx2.AsyncClient(headers=mcp_headers(me)) as http:
        async with Client(streamable_http_client(mcp_url(node.base_url), http_client=http)) as c:
            assert c.protocol_version == "2026-07-28"
            try:
                return await action(c)
            except Exception as e:
                error = e
    assert error is not None
    raise error


@pytest.mark.xfail(strict=True, raises=ValidationError, reason=RESULT_TYPE_MISSING)
async def test_a_2026_client_lists_tools(mcp_node: Node, me: Agent) -> None:
    listed = await as_2026_client(mcp_node, me, lambda c: c.list_tools())
    assert [t.name for t in listed.tools] == ["files.read_file", "files.write_file"]


@pytest.mark.xfail(strict=True, raises=ValidationError, reason=RESULT_TYPE_MISSING)
async def test_a_2026_client_calls_a_tool(mcp_node: Node, me: Agent, files: FilesServer) -> None:
    result = await as_2026_client(
        mcp_node, me, lambda c: c.call_tool("files.read_file", {"path": "/tmp/c"})
    )
    assert text_of(result) == "contents of /tmp/c"


@pytest.mark.xfail(
    strict=True,
    reason="A tool whose registry entry names its args (`args: [path, text]`) gets every "
    "result refused: the gateway judges the result as a step of the same tool with args "
    '{"result": <text>}, which registry.args denies (-32004, `takes args path, text, not '
    '"result"`), after the tool already ran',
)
async def test_a_tool_with_declared_args_returns_its_result(
    mcp_node: Node, me: Agent, files: FilesServer
) -> None:
    async with connect_mcp(mcp_node.base_url, me) as session:
        try:
            result = await session.call_tool("files.write_file", {"path": "/tmp/w", "text": "hi"})
        finally:
            assert files.calls == [("write_file", "/tmp/w")], "it ran either way"
    assert text_of(result) == "wrote 2 bytes to /tmp/w"


@pytest.mark.xfail(
    strict=True,
    raises=ValidationError,
    reason="openai-agents 0.24 connects with the mcp SDK's Client(mode='auto'), which "
    "negotiates 2026-07-28 with the gateway; then " + RESULT_TYPE_MISSING,
)
async def test_an_agents_sdk_agent_reads_the_refusal_of_its_mcp_tool(
    mcp_node: Node, me: Agent, files: FilesServer, fake_llm: FakeLLM
) -> None:
    """The OpenAI Agents SDK's `MCPServerStreamableHttp` on the gateway, its model through the
    node's LLM proxy: the model's call of `files.read_file` on /etc/passwd is judged twice,
    as the model's proposal (tool `files.read_file`, allowed) and as the gateway's call (step
    `mcp.files.read_file`, denied by no-etc); the model reads warden's refusal as the tool's
    output and the server never sees the call."""
    fake_llm.responses_tool_calls(("files.read_file", {"path": "/etc/passwd"}))
    fake_llm.responses_text("it is not mine to read")
    model = warden_model(mcp_node.base_url, me, "fake-model", max_retries=0)
    async with warden_mcp_server(mcp_node.base_url, me) as server:
        agent = SdkAgent(name="reader", model=model, mcp_servers=[server])
        result = await Runner.run(agent, "read /etc/passwd")

    assert result.final_output == "it is not mine to read"
    assert files.calls == []
    first, second = fake_llm.requests_to(RESPONSES)
    assert [t["name"] for t in first.body["tools"]] == ["files.read_file", "files.write_file"]
    outputs = [i for i in second.body["input"] if i.get("type") == "function_call_output"]
    assert len(outputs) == 1 and "(rule no-etc)" in outputs[0]["output"], outputs
    assert decisions(mcp_node, me.id, "files.read_file") == [("allow", None, "path")]
    assert decisions(mcp_node, me.id, "mcp.files.read_file") == [("deny", "no-etc", "path")]


async def test_mcp_failure_error_function_tells_the_model_what_warden_decided(
    mcp_node: Node, me: Agent
) -> None:
    errors: dict[str, MCPError] = {}
    async with connect_mcp(mcp_node.base_url, me) as session:
        for key, name, path in [
            ("denied", "files.read_file", "/etc/passwd"),
            ("withheld", "files.read_file", "/evil"),
            ("unknown", "nope.read_file", "/a"),
        ]:
            with pytest.raises(MCPError) as raised:
                await session.call_tool(name, {"path": path})
            errors[key] = raised.value

    ctx: RunContextWrapper[Any] = RunContextWrapper(context=None)
    assert mcp_failure_error_function(ctx, errors["denied"]) == (
        "warden denied this tool call (rule no-etc): rule no-etc matched. It was not run."
    )
    assert mcp_failure_error_function(ctx, errors["withheld"]) == (
        "warden withheld this tool's result (rule no-injection): rule no-injection matched."
    )
    assert mcp_refusal(errors["unknown"]) is None, "not a refusal: -32602, no decision"
    assert mcp_failure_error_function(ctx, errors["unknown"]) == (
        "An error occurred while running the tool. Please try again."
    )
