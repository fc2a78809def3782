"""OpenAI Agents SDK (`openai-agents`) integration: tool guardrails that ask warden before
each function tool call and report its outcome after, and helpers that send the SDK's model
calls through the node's LLM proxy. Install with `pip install 'warden-client[agents]'`.

```python
from agents import Agent, Runner, function_tool
from warden_client import AsyncWardenClient
from warden_client.openai_agents import WardenToolGuard, configure_agents_sdk

configure_agents_sdk(node_url, agent_token)        # model calls via the node, Responses API
guard = WardenToolGuard(AsyncWardenClient(node_url, agent_token, agent_id="coder-1"))

@function_tool(failure_error_function=guard.failure_error_function)
def run_shell(command: str) -> str: ...

agent = Agent(name="coder", tools=guard.govern(run_shell))
```

`warden_mcp_server(node_url, agent_token)` is the node's MCP gateway as an agent's MCP server.

Tracing: the SDK exports traces to OpenAI's servers by default. Inside an isolated network
turn that off: `configure_agents_sdk(...)` does (`disable_tracing=True`), or call
`agents.set_tracing_disabled(True)`, or set `OPENAI_AGENTS_DISABLE_TRACING=1` (read once,
when tracing is first used).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Mapping
from typing import Any, Literal

from agents import (
    FunctionTool,
    RunContextWrapper,
    Tool,
    ToolGuardrailFunctionOutput,
    ToolInputGuardrail,
    ToolInputGuardrailData,
    ToolOutputGuardrail,
    ToolOutputGuardrailData,
    set_default_openai_api,
    set_default_openai_client,
    set_default_openai_responses_transport,
    set_tracing_disabled,
)
from agents.mcp import MCPServerStreamableHttp
from agents.models.openai_chatcompletions import OpenAIChatCompletionsModel
from agents.models.openai_responses import OpenAIResponsesModel
from agents.tool import default_tool_error_function
from openai import AsyncOpenAI

from . import _api
from ._async import AsyncWardenClient
from ._bridge import InThread
from ._integrations import Abandoned, StepCost, refusal_text
from ._llm import async_openai_client
from ._mcp import MCP_REFUSALS, mcp_headers, mcp_refusal, mcp_url
from ._sync import WardenClient
from ._types import Agent, ApprovalTimeout, Cost, Decision, OutcomeResult, WardenError

OPEN_CALLS_MAX = 10_000
"""The most tool calls a guard tracks between their ask and their outcome; past it, a new
call is refused (fail closed) until running ones end."""


class WardenToolGuard:
    """Tool guardrails for the Agents SDK that govern function tools through warden.

    `input_guardrail` asks before the tool runs: allow lets it run; deny rejects the call
    with warden's reason as the tool's result, so the model can adapt (`on_deny="raise"`
    ends the run instead); halt ends the run (`ToolInputGuardrailTripwireTriggered`, whose
    `output.output_info` is the `Decision`); require_approval waits `approval_timeout_s`
    for a human if set, else (and when nobody answers) is handled like a deny.
    `output_guardrail` reports the outcome after the tool returned: success, unless the
    tool raised and its `failure_error_function` was this guard's. `govern(*tools)` adds
    both to tools.

    The SDK does not always run a tool the guard allowed: a later input guardrail may
    reject the call, the SDK may cancel it with its siblings, or its own `needs_approval`
    may be rejected (with `pre_approval_tool_input_guardrails`, an approved call is asked
    again when it runs). So: an allowed call asked again settles its first step as not run
    (failure, zero tokens and money); a step request cancelled after it was sent is still
    read, and an allow settled as not run; and `await guard.close()` after a run settles
    every call still open, as failure at its reservation (the guard cannot know whether
    the tool started), and collects late approvals. Approvals not waited for, or not
    answered in time, are collected at each call of the guard (a late allow is settled as
    not run) and by `close()`.

    The tool's action class comes from the client's `actions`/`default_action`;
    `tool_names` renames SDK tools to the policy's names; `step_cost(name, args)` declares
    what a call is expected to cost.
    """

    def __init__(
        self,
        client: AsyncWardenClient | WardenClient,
        *,
        on_deny: Literal["message", "raise"] = "message",
        approval_timeout_s: float | None = None,
        tool_names: Mapping[str, str] | None = None,
        step_cost: StepCost | None = None,
    ) -> None:
        if on_deny not in ("message", "raise"):
            raise ValueError(f"on_deny is 'message' or 'raise', not {on_deny!r}")
        self._client = InThread(client) if isinstance(client, WardenClient) else client
        self._on_deny = on_deny
        self._approval_timeout_s = approval_timeout_s
        self._tool_names = dict(tool_names or {})
        self._step_cost = step_cost
        # Allowed calls whose outcome is not reported yet, by tool call id; and the ids of
        # those whose tool raised. Entries leave when the outcome is reported.
        self._open: dict[str, Decision] = {}
        self._failed: set[str] = set()
        self._abandoned = Abandoned()
        self._background: set[asyncio.Task[Any]] = set()
        self.input_guardrail: ToolInputGuardrail[Any] = ToolInputGuardrail(
            guardrail_function=self._ask, name="warden"
        )
        self.output_guardrail: ToolOutputGuardrail[Any] = ToolOutputGuardrail(
            guardrail_function=self._report, name="warden_outcome"
        )

    def govern(self, *tools: FunctionTool) -> list[Tool]:
        """Adds the guard to function tools and returns them. The input guardrail runs
        after the tool's own ones (a call they reject never reserves budget), the output
        guardrail before them (the outcome is reported even if another one raises)."""
        for tool in tools:
            tool.tool_input_guardrails = [*(tool.tool_input_guardrails or []), self.input_guardrail]
            tool.tool_output_guardrails = [
                self.output_guardrail,
                *(tool.tool_output_guardrails or []),
            ]
        return list(tools)

    def failure_error_function(self, ctx: RunContextWrapper[Any], error: Exception) -> str:
        """Pass as a `function_tool`'s `failure_error_function`: marks the call as failed
        (its outcome is reported as a failure) and gives the model a short error message."""
        call_id = getattr(ctx, "tool_call_id", None)
        if isinstance(call_id, str) and call_id in self._open:
            self._failed.add(call_id)
        return f"The tool failed: {type(error).__name__}."

    async def close(self) -> None:
        """Settles what the SDK left: every call still open (allowed, its outcome never
        reported) as a failure at its reservation, and approvals answered late (a late allow
        as not run). Call it when a run has ended (no tool of this guard running); the
        guard may be used again after."""
        open_calls, self._open = self._open, {}
        self._failed.clear()
        for decision in open_calls.values():
            await self._settle_quietly(decision, None)
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)
        await self._abandoned.acollect(self._client)

    async def _ask(self, data: ToolInputGuardrailData) -> ToolGuardrailFunctionOutput:
        ctx = data.context
        name = ctx.qualified_tool_name
        args = _arguments(ctx.tool_arguments)
        if len(self._open) >= OPEN_CALLS_MAX:
            raise WardenError(
                f"{OPEN_CALLS_MAX} tool calls are waiting for their outcome; refusing more",
                code="too_many_open_calls",
            )
        await self._abandoned.acollect(self._client)
        cost: Cost | None = self._step_cost(name, args) if self._step_cost else None
        decision = await self._decide(self._tool_names.get(name, name), args, cost)
        timed_out = False
        if decision.decision == "require_approval" and self._approval_timeout_s is not None:
            try:
                decision = await self._client.wait_for_approval(decision, self._approval_timeout_s)
            except ApprovalTimeout as e:
                decision, timed_out = e.decision, True
            except asyncio.CancelledError:
                self._abandoned.add(decision)
                raise
        if decision.allowed:
            earlier = self._open.pop(ctx.tool_call_id, None)
            self._open[ctx.tool_call_id] = decision
            if earlier is not None:  # asked again before it ran (SDK approvals)
                self._failed.discard(ctx.tool_call_id)
                await self._settle_quietly(earlier, _api.NOT_RUN)
            return ToolGuardrailFunctionOutput.allow(output_info=decision)
        self._abandoned.add(decision)
        if decision.decision == "halt" or self._on_deny == "raise":
            return ToolGuardrailFunctionOutput.raise_exception(output_info=decision)
        return ToolGuardrailFunctionOutput.reject_content(
            refusal_text(decision, timed_out), output_info=decision
        )

    async def _decide(self, tool: str, args: Any, cost: Cost | None) -> Decision:
        """The step's decision. Shielded: if the SDK cancels the call once the request is
        sent, the answer is still read, and an allow settled as not run (a parked step
        is collected later), so no reservation is lost in flight."""
        asking = asyncio.ensure_future(self._client.step(tool, args=args, cost=cost))
        try:
            return await asyncio.shield(asking)
        except asyncio.CancelledError:
            asking.add_done_callback(self._abandon_in_flight)
            raise

    def _abandon_in_flight(self, asking: asyncio.Future[Decision]) -> None:
        if asking.cancelled() or asking.exception() is not None:
            return
        decision = asking.result()
        if decision.allowed:
            self._in_background(self._settle_quietly(decision, _api.NOT_RUN))
        self._abandoned.add(decision)

    def _in_background(self, work: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _settle_quietly(
        self, decision: Decision, cost: Mapping[str, int] | None
    ) -> OutcomeResult | None:
        """Settles a call that did not run as a failure; a failure to settle is not the
        run's concern (the node releases the reservation of an agent halted as lost)."""
        try:
            return await self._client.outcome(decision, False, cost=cost)
        except WardenError:
            return None

    async def _report(self, data: ToolOutputGuardrailData) -> ToolGuardrailFunctionOutput:
        call_id = data.context.tool_call_id
        decision = self._open.pop(call_id, None)
        failed = call_id in self._failed
        self._failed.discard(call_id)
        if decision is None:
            return ToolGuardrailFunctionOutput.allow()
        result = await self._client.outcome(decision, not failed)
        return ToolGuardrailFunctionOutput.allow(output_info=result)


def configure_agents_sdk(
    base_url: str,
    token: str | Agent,
    *,
    api: Literal["responses", "chat_completions"] = "responses",
    disable_tracing: bool = True,
    **client_kwargs: Any,
) -> AsyncOpenAI:
    """Makes the Agents SDK send every model call of agents without their own model client
    through the node's LLM proxy as the agent whose token is given: sets the SDK's default
    client (an `openai.AsyncOpenAI` on `base_url + "/v1"` with the agent's token as API key,
    not used for tracing), the API (the Responses API by default; plain HTTP, no websocket)
    and, unless `disable_tracing=False`, turns the SDK's trace export off (it would send
    traces to OpenAI's servers, unreachable in an isolated network). Returns the client.
    This is process-wide SDK state; for several agents in one process, give each agent its
    own `warden_model(...)` instead."""
    client = async_openai_client(base_url, token, **client_kwargs)
    set_default_openai_client(client, use_for_tracing=False)
    set_default_openai_api(api)
    set_default_openai_responses_transport("http")
    if disable_tracing:
        set_tracing_disabled(True)
    return client


def warden_model(
    base_url: str,
    token: str | Agent,
    model: str,
    *,
    api: Literal["responses", "chat_completions"] = "responses",
    **client_kwargs: Any,
) -> OpenAIResponsesModel | OpenAIChatCompletionsModel:
    """A model for one agent (`Agent(model=warden_model(...))`) whose calls go through the
    node's LLM proxy with that agent's token, without touching the SDK's global defaults."""
    client = async_openai_client(base_url, token, **client_kwargs)
    if api == "responses":
        return OpenAIResponsesModel(model=model, openai_client=client)
    return OpenAIChatCompletionsModel(model=model, openai_client=client)


def warden_mcp_server(
    base_url: str, token: str | Agent, *, name: str = "warden", **kwargs: Any
) -> MCPServerStreamableHttp:
    """The node's MCP gateway as the agent's MCP server (`Agent(mcp_servers=[...])`): its
    tools are the node's MCP upstreams' tools the policy can allow, each call decided by
    the node. A refused call reaches the model as `mcp_failure_error_function`'s text unless
    `failure_error_function` is given; other keyword arguments go to
    `MCPServerStreamableHttp` (enter it with `async with`, or `connect()`)."""
    kwargs.setdefault("failure_error_function", mcp_failure_error_function)
    return MCPServerStreamableHttp(
        params={"url": mcp_url(base_url), "headers": mcp_headers(token)}, name=name, **kwargs
    )


def mcp_failure_error_function(ctx: RunContextWrapper[Any], error: Exception) -> str:
    """An MCP server's `failure_error_function` that tells the model what warden decided when
    the gateway refused a call (the SDK's default says only that the tool failed); any other
    failure gets the SDK's default text."""
    decision = mcp_refusal(error)
    if decision is None:
        return default_tool_error_function(ctx, error)
    code = getattr(getattr(error, "error", error), "code", None)
    if isinstance(code, int) and MCP_REFUSALS.get(code) == "result_refused":
        rule = f" (rule {decision.rule})" if decision.rule else ""
        return f"warden withheld this tool's result{rule}: {decision.reason}."
    return refusal_text(decision)


def _arguments(raw: str) -> Any:
    """The call's arguments as JSON; the raw text when they are not JSON (the node then
    judges the text: a rule expecting an object never lets it pass as an allow)."""
    try:
        return json.loads(raw) if raw else {}
    except ValueError:
        return raw


__all__ = [
    "OPEN_CALLS_MAX",
    "WardenToolGuard",
    "configure_agents_sdk",
    "mcp_failure_error_function",
    "warden_mcp_server",
    "warden_model",
]
