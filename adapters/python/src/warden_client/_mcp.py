"""The node's MCP gateway (`POST /mcp`, streamable HTTP) for the `mcp` SDK's clients.

The gateway is one MCP server in front of the node's MCP upstreams: upstream `files`' tool
`read_file` is listed as `files__read_file` (a name the LLM APIs accept for a function), and
each call is decided by the policy (as the step `mcp.files.read_file`) before it reaches the
tool; its result is judged again before the agent reads it. The agent authenticates with its
warden token as a bearer token. A call that is not allowed is a JSON-RPC error whose `data`
is warden's decision; `mcp_refusal` reads it. `connect_mcp` needs the `mcp` SDK
(`warden-client[mcp]`); the rest does not.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

from ._llm import _token
from ._types import Agent, Decision, WardenError

if TYPE_CHECKING:
    from mcp import ClientSession

MCP_REFUSALS: Mapping[int, str] = {
    -32060: "denied",
    -32061: "halted",
    -32062: "approval_required",
    -32063: "result_refused",
}
"""The JSON-RPC error codes of the gateway's refusals, each carrying warden's decision: the
policy denied the call, the agent is halted, the call waits for approval (call again with the
header `Warden-Step: <step>` once approved), the tool's result was refused (e.g. by a
prompt-injection detector rule). They are clear of the codes MCP and its SDKs use (-32001
request timeout, -32002 resource not found)."""

MCP_UPSTREAM_FAILED = -32064
"""The gateway's JSON-RPC error code when an MCP upstream failed (did not answer, or could
not be reached). Not a refusal: it carries no decision."""


def mcp_url(base_url: str) -> str:
    """The gateway's endpoint on the node at `base_url`: `<node>/mcp`."""
    root = base_url.rstrip("/")
    if root.endswith("/v1"):
        root = root[: -len("/v1")]
    return root + "/mcp"


def mcp_headers(token: str | Agent) -> dict[str, str]:
    """The HTTP headers an MCP client sends the gateway as the agent whose token (or
    registration) is given: `Authorization: Bearer <token>`."""
    return {"Authorization": f"Bearer {_token(token)}"}


def mcp_refusal(error: BaseException | Any) -> Decision | None:
    """Warden's decision in a gateway refusal, or None when `error` is not one.

    `error` is what the `mcp` SDK raises for a JSON-RPC error (`mcp.MCPError`, whose
    `.error` is the `ErrorData`) or the `ErrorData` itself: anything with `code` and `data`.
    """
    data = getattr(error, "error", error)
    code = getattr(data, "code", None)
    body = getattr(data, "data", None)
    if code not in MCP_REFUSALS or not isinstance(body, Mapping):
        return None
    try:
        return Decision.from_json(body)
    except WardenError:
        return None


@asynccontextmanager
async def connect_mcp(
    base_url: str, token: str | Agent, *, timeout_s: float = 30.0
) -> AsyncIterator[ClientSession]:
    """An `mcp.ClientSession` on the node's gateway as the agent, initialized (MCP
    2025-11-25 handshake; the gateway answers it without a session id).

    ```python
    async with connect_mcp(node_url, agent_token) as session:
        tools = await session.list_tools()          # only what the policy can allow
        result = await session.call_tool("files__read_file", {"path": "/tmp/a"})
    ```

    `timeout_s` bounds each request (a call waits for the tool). A refused call raises
    `mcp.MCPError`; `mcp_refusal(e)` is warden's decision.
    """
    import httpx2
    from mcp import ClientSession
    from mcp.client.streamable_http import streamable_http_client

    async with httpx2.AsyncClient(
        headers=mcp_headers(token), timeout=httpx2.Timeout(timeout_s)
    ) as http:
        async with streamable_http_client(mcp_url(base_url), http_client=http) as (
            read,
            write,
        ):
            async with ClientSession(read, write) as session:
                await session.initialize()
                yield session
