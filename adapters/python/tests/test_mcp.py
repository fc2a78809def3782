"""The node's MCP gateway (`POST /mcp`) with the real `mcp` SDK: its streamable-HTTP client
and `ClientSession` (and its `Client`), through a real `warden node`, in front of a real MCP
server (the SDK's `MCPServer`, see `mcp_upstream.py`) that is the node's upstream `files`.

The gateway lists upstream `files`' tools as `files__<tool>`, only those the policy can allow;
each call is the step `mcp.files.<tool>`, decided before it reaches the server; its result
is judged again (args `{"result": <text>}`) before the agent reads it. A refusal is a JSON-RPC
error (-32060 denied, -32061 halted, -32063 result refused) whose `data` is warden's decision,
which the SDK raises as `MCPError`. Both protocol eras are driven: `ClientSession` with
`initialize()` (2025-11-25) and `Client` (mode "auto", which discovers 2026-07-28). An OpenAI
Agents SDK agent uses the gateway as its MCP server and its model goes through the node's LLM
proxy, which judges the model's `files__read_file` under the same policy name.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import httpx2
import openai
import pytest
from agents import Agent as SdkAgent
from agents import RunContextWrapper, Runner
from mcp import Client, ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from mcp_types import TextContent

from warden_client import (
    MCP_REFUSALS,
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

DENIED = -32060
HALTED = -32061
RESULT_REFUSED = -32063
INVALID_PARAMS = -32602
LISTED = ["files__read_file", "files__write_file"]
"""What the gateway lists for MCP_POLICY: delete_file can never be allowed (rule no-deletes)."""


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
    assert sorted(by_name) == LISTED
    assert by_name["files__read_file"].description == "Reads a file."
    assert by_name["files__read_file"].input_schema["required"] == ["path"]
    # initialize, notifications/initialized (202), tools/list; no session, GET nor DELETE.
    assert seen == [("POST", 200, None), ("POST", 202, None), ("POST", 200, None)]


async def test_an_allowed_call_returns_the_upstreams_result(
    mcp_node: Node, me: Agent, files: FilesServer, mcp_operator: WardenClient
) -> None:
    async with connect_mcp(mcp_node.base_url, me) as session:
        result = await session.call_tool("files__read_file", {"path": "/tmp/a"})

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
    [("files__read_file", "/etc/passwd", "no-etc"), ("files__delete_file", "/x", "no-deletes")],
)
async def test_a_denied_call_raises_mcp_error_with_the_decision(
    mcp_node: Node, me: Agent, files: FilesServer, tool: str, path: str, rule: str
) -> None:
    async with connect_mcp(mcp_node.base_url, me) as session:
        with pytest.raises(MCPError) as raised:
            await session.call_tool(tool, {"path": path})

    error = raised.value.error
    assert error.code == DENIED and MCP_REFUSALS[error.code] == "denied"
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
            await session.call_tool("files__read_file", {"path": "/evil"})

    error = raised.value.error
    assert error.code == RESULT_REFUSED and MCP_REFUSALS[error.code] == "result_refused"
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
            await session.call_tool("files__read_file", {"path": "/tmp/a"})
        listed = await session.list_tools()

    assert raised.value.error.code == HALTED and MCP_REFUSALS[HALTED] == "halted"
    decision = mcp_refusal(raised.value)
    assert decision is not None and decision.decision == "halt"
    assert files.calls == []
    # Listing is not a step: a halted agent still sees its tools.
    assert [t.name for t in listed.tools] == LISTED


async def test_the_journal_has_each_decision(
    mcp_node: Node, me: Agent, mcp_operator: WardenClient
) -> None:
    async with connect_mcp(mcp_node.base_url, me) as session:
        await session.call_tool("files__read_file", {"path": "/tmp/j"})
        for path in ("/etc/shadow", "/evil"):
            with pytest.raises(MCPError):
                await session.call_tool("files__read_file", {"path": path})
        mcp_operator.halt(me.id, reason="stop")
        with pytest.raises(MCPError):
            await session.call_tool("files__read_file", {"path": "/tmp/j"})

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


async def test_a_call_may_not_send_the_result_key_undeclared(
    mcp_node: Node, me: Agent, files: FilesServer
) -> None:
    """`result` is the key a tool's result is judged under: a call sending it without the
    registry declaring it is invalid (-32602), refused before it is decided or forwarded."""
    async with connect_mcp(mcp_node.base_url, me) as session:
        with pytest.raises(MCPError) as raised:
            await session.call_tool("files__read_file", {"path": "/tmp/a", "result": "fine"})

    assert raised.value.error.code == INVALID_PARAMS
    assert "`result` is reserved" in raised.value.error.message
    assert mcp_refusal(raised.value) is None, "not a decision"
    assert files.calls == []
    assert decisions(mcp_node, me.id, "mcp.files.read_file") == []


async def test_a_tool_with_declared_args_returns_its_result(
    mcp_node: Node, me: Agent, files: FilesServer
) -> None:
    """`mcp.files.write_file` declares `args: [path, text]`; its result is still judged (with
    args {result}) and passed on: registry entries of `mcp.*` tools accept that key."""
    async with connect_mcp(mcp_node.base_url, me) as session:
        result = await session.call_tool("files__write_file", {"path": "/tmp/w", "text": "hi"})

    assert text_of(result) == "wrote 2 bytes to /tmp/w"
    assert files.calls == [("write_file", "/tmp/w")]
    assert decisions(mcp_node, me.id, "mcp.files.write_file") == [
        ("allow", None, "path,text"),
        ("allow", None, "result"),
    ]


@asynccontextmanager
async def client_2026(node: Node, me: Agent) -> AsyncIterator[Client]:
    """The SDK's `Client` (mode "auto") on the gateway as the agent, once it negotiated
    2026-07-28 (no `initialize`: it probes `server/discover`)."""
    async with httpx2.AsyncClient(headers=mcp_headers(me)) as http:
        async with Client(streamable_http_client(mcp_url(node.base_url), http_client=http)) as c:
            assert c.protocol_version == "2026-07-28"
            yield c


async def test_a_2026_client_discovers_the_gateway_without_a_handshake(
    mcp_node: Node, me: Agent
) -> None:
    """A refusal is an error there as in 2025-11-25 (errors carry no `resultType`)."""
    async with client_2026(mcp_node, me) as client:
        assert client.server_info is not None and client.server_info.name == "warden"
        with pytest.raises(MCPError) as raised:
            await client.call_tool("files__read_file", {"path": "/etc/passwd"})
    assert raised.value.error.code == DENIED
    decision = mcp_refusal(raised.value)
    assert decision is not None and decision.rule == "no-etc"


async def test_a_2026_client_lists_tools(mcp_node: Node, me: Agent) -> None:
    """At 2026-07-28 a listing says its `resultType` and how long it may be cached; the
    gateway's is per agent (its policy) and not to be cached."""
    async with client_2026(mcp_node, me) as client:
        listed = await client.list_tools()
    assert [t.name for t in listed.tools] == LISTED
    assert (listed.result_type, listed.ttl_ms, listed.cache_scope) == ("complete", 0, "private")


async def test_a_2026_client_calls_a_tool(
    mcp_node: Node, me: Agent, files: FilesServer, mcp_operator: WardenClient
) -> None:
    """The upstream (a 2025-11-25 server) answers without `resultType`; the gateway adds it."""
    async with client_2026(mcp_node, me) as client:
        result = await client.call_tool("files__read_file", {"path": "/tmp/c"})
        written = await client.call_tool("files__write_file", {"path": "/tmp/d", "text": "abc"})
        with pytest.raises(MCPError) as raised:
            await client.call_tool("files__read_file", {"path": "/evil"})
    assert result.result_type == "complete" and not result.is_error
    assert text_of(result) == "contents of /tmp/c"
    assert result.structured_content == {"result": "contents of /tmp/c"}
    assert text_of(written) == "wrote 3 bytes to /tmp/d"
    assert raised.value.error.code == RESULT_REFUSED
    assert files.calls == [
        ("read_file", "/tmp/c"),
        ("write_file", "/tmp/d"),
        ("read_file", "/evil"),
    ]
    assert settled(mcp_operator, me.id)["steps_allowed"] == 5, "3 calls, 2 results passed"


async def run_agent(node: Node, me: Agent, prompt: str) -> tuple[Any, str | None]:
    """An Agents SDK agent whose MCP server is the gateway (`warden_mcp_server`, in the SDK's
    default mode: its `Client(mode="auto")`) and whose model goes through the node's LLM
    proxy; runs it on `prompt`: (its result, the MCP protocol version it negotiated)."""
    model = warden_model(node.base_url, me, "fake-model", max_retries=0)
    async with warden_mcp_server(node.base_url, me) as server:
        version = server.session.protocol_version if server.session else None
        agent = SdkAgent(name="reader", model=model, mcp_servers=[server])
        return await Runner.run(agent, prompt), version


def tool_outputs(fake_llm: FakeLLM) -> list[str]:
    """The text of each tool output the model was given on its second turn (a string, or the
    tool's content as `input_text` items)."""
    _, second = fake_llm.requests_to(RESPONSES)
    outputs = [i["output"] for i in second.body["input"] if i.get("type") == "function_call_output"]
    return [
        o if isinstance(o, str) else "".join(c["text"] for c in o if c["type"] == "input_text")
        for o in outputs
    ]


async def test_an_agents_sdk_agent_calls_its_mcp_tool_judged_under_one_name(
    mcp_node: Node, me: Agent, files: FilesServer, fake_llm: FakeLLM
) -> None:
    """The model's `files__read_file` is judged by the LLM proxy as `mcp.files.read_file`,
    then called through the gateway as that same step, then its result is judged: three
    decisions under one policy name, none under the listed name."""
    fake_llm.responses_tool_calls(("files__read_file", {"path": "/tmp/x"}))
    fake_llm.responses_text("read it")
    result, version = await run_agent(mcp_node, me, "read /tmp/x")

    assert version == "2026-07-28"
    assert result.final_output == "read it"
    assert files.calls == [("read_file", "/tmp/x")]
    first = fake_llm.requests_to(RESPONSES)[0]
    assert [t["name"] for t in first.body["tools"]] == LISTED
    assert tool_outputs(fake_llm) == ["contents of /tmp/x"]
    assert decisions(mcp_node, me.id, "mcp.files.read_file") == [
        ("allow", None, "path"),  # the model's proposal, by the LLM proxy
        ("allow", None, "path"),  # the agent's call, by the gateway
        ("allow", None, "result"),  # what the tool returned
    ]
    assert decisions(mcp_node, me.id, "files__read_file") == []


async def test_an_agents_sdk_agent_reads_the_refusal_of_its_mcp_tool(
    mcp_node: Node, me: Agent, files: FilesServer, fake_llm: FakeLLM
) -> None:
    """The tool's result carries a prompt injection: the gateway refuses it (-32063) and the
    model reads `mcp_failure_error_function`'s account of warden's decision instead."""
    fake_llm.responses_tool_calls(("files__read_file", {"path": "/evil"}))
    fake_llm.responses_text("nothing to read there")
    result, _ = await run_agent(mcp_node, me, "read /evil")

    assert result.final_output == "nothing to read there"
    assert files.calls == [("read_file", "/evil")]
    assert tool_outputs(fake_llm) == [
        "warden withheld this tool's result (rule no-injection): rule no-injection matched."
    ]
    assert INJECTION not in str(fake_llm.requests_to(RESPONSES)[1].body)
    assert decisions(mcp_node, me.id, "mcp.files.read_file") == [
        ("allow", None, "path"),
        ("allow", None, "path"),
        ("deny", "no-injection", "result"),
    ]


async def test_a_proposal_the_gateway_would_deny_never_reaches_the_agent(
    mcp_node: Node, me: Agent, files: FilesServer, fake_llm: FakeLLM
) -> None:
    """The model proposes `files__read_file` on /etc/passwd: the LLM proxy judges it as
    `mcp.files.read_file`, so rule no-etc (written for the gateway's step) refuses it there
    (403 `tool_call_refused`); the SDK never sees the call, the gateway never gets it."""
    fake_llm.responses_tool_calls(("files__read_file", {"path": "/etc/passwd"}))
    with pytest.raises(openai.PermissionDeniedError) as caught:
        await run_agent(mcp_node, me, "read /etc/passwd")

    assert caught.value.code == "tool_call_refused"
    assert caught.value.response.json()["warden"]["rule"] == "no-etc"
    assert files.calls == []
    assert decisions(mcp_node, me.id, "mcp.files.read_file") == [("deny", "no-etc", "path")]
    assert decisions(mcp_node, me.id, "files__read_file") == []


async def test_mcp_failure_error_function_tells_the_model_what_warden_decided(
    mcp_node: Node, me: Agent
) -> None:
    errors: dict[str, MCPError] = {}
    async with connect_mcp(mcp_node.base_url, me) as session:
        for key, name, path in [
            ("denied", "files__read_file", "/etc/passwd"),
            ("withheld", "files__read_file", "/evil"),
            ("unknown", "nope__read_file", "/a"),
            ("old name", "files.read_file", "/a"),
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
    for key in ("unknown", "old name"):
        assert errors[key].error.code == INVALID_PARAMS
        assert mcp_refusal(errors[key]) is None, "not a refusal: -32602, no decision"
        assert mcp_failure_error_function(ctx, errors[key]) == (
            "An error occurred while running the tool. Please try again."
        )
