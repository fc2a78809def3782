"""LangChain integrations: middleware for `langchain` 1.x agents, and a callback handler for
`langchain-core` tools. Install with `pip install 'warden-client[langchain]'`.

```python
from langchain.agents import create_agent
from warden_client import WardenClient
from warden_client.langchain import WardenMiddleware

agent_client = WardenClient(node_url, agent_token, agent_id="coder-1",
                            actions={"read_file": "read", "run_shell": "execute"})
agent = create_agent(model, tools=[read_file, run_shell],
                     middleware=[WardenMiddleware(agent_client)])
```

Every tool call the model makes becomes one warden step (tool = the LangChain tool's name,
args = the call's arguments), decided before the tool runs and settled after it. Parallel
tool calls in one model turn are decided one by one by the node, each on its own.
"""

from __future__ import annotations

import threading
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Literal
from uuid import UUID

from langchain.agents.middleware import AgentMiddleware
from langchain.agents.middleware.types import ToolCallRequest
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.messages import ToolMessage
from langgraph.types import Command

from . import _api
from ._async import AsyncWardenClient
from ._bridge import InThread
from ._integrations import Abandoned, StepCost, refusal_text
from ._sync import WardenClient
from ._types import (
    ApprovalRequired,
    ApprovalTimeout,
    Cost,
    Decision,
    OutcomeResult,
    WardenError,
    decision_error,
)


class WardenMiddleware(AgentMiddleware):
    """Agent middleware (`create_agent(..., middleware=[WardenMiddleware(client)])`) that
    asks warden before every tool call, through the `wrap_tool_call` hook (sync and async).

    - allow: the tool runs; its outcome is reported when it returns (failure when it raises
      or returns an error `ToolMessage`), settling the step as reserved or at `step_cost`.
    - deny: the tool does not run; the model gets an error `ToolMessage` with warden's
      reason, so it can try something else (`on_deny="raise"` raises `StepDenied` instead).
    - halt: raises `AgentHalted`; the agent's run ends.
    - require_approval: with `approval_timeout_s` set, waits that long for a human and acts
      on the final decision; otherwise (or when nobody answers) it is handled like a deny.
      An operator may still approve it later: each call of the middleware first collects
      such steps and settles a late allow as not run (failure, zero tokens and money).

    `client` serves `invoke`/`stream`; `aclient` serves `ainvoke`/`astream` (without one,
    the sync client's calls run in a worker thread). The tool's action class comes from the
    client's `actions`/`default_action`; `tool_names` renames LangChain tools to the
    policy's names. Put this middleware last in the list (innermost), so it judges the
    arguments the tool really receives after other middleware has changed them.
    """

    def __init__(
        self,
        client: WardenClient | None = None,
        *,
        aclient: AsyncWardenClient | None = None,
        on_deny: Literal["message", "raise"] = "message",
        approval_timeout_s: float | None = None,
        tool_names: Mapping[str, str] | None = None,
        step_cost: StepCost | None = None,
    ) -> None:
        super().__init__()
        if client is None and aclient is None:
            raise ValueError("WardenMiddleware needs a WardenClient, an AsyncWardenClient, or both")
        if on_deny not in ("message", "raise"):
            raise ValueError(f"on_deny is 'message' or 'raise', not {on_deny!r}")
        self._client = client
        self._aclient = aclient
        self._on_deny = on_deny
        self._approval_timeout_s = approval_timeout_s
        self._names = _Names(tool_names, step_cost)
        self._abandoned = Abandoned()
        self.tools = []

    def wrap_tool_call(
        self,
        request: ToolCallRequest,
        handler: Callable[[ToolCallRequest], ToolMessage | Command[Any]],
    ) -> ToolMessage | Command[Any]:
        """Asks, runs the tool if allowed, reports the outcome (sync agents)."""
        if self._client is None:
            raise WardenError(
                "WardenMiddleware has only an AsyncWardenClient: run the agent with "
                "ainvoke/astream, or pass a WardenClient too",
                code="no_client",
            )
        client = self._client
        self._abandoned.collect(client)
        tool, args, cost = self._names.step_of(request.tool_call)
        decision = client.step(tool, args=args, cost=cost)
        if decision.decision == "require_approval" and self._approval_timeout_s is not None:
            try:
                decision = client.wait_for_approval(decision, self._approval_timeout_s)
            except ApprovalTimeout as e:
                return self._refuse(request, e.decision, timed_out=True)
        if not decision.allowed:
            return self._refuse(request, decision)
        try:
            result = handler(request)
        except BaseException as exc:
            _settle_after_error(exc, decision, lambda: client.outcome(decision, False))
            raise
        client.outcome(decision, _succeeded(result))
        return result

    async def awrap_tool_call(
        self,
        request: ToolCallRequest,
        handler: Callable[[ToolCallRequest], Awaitable[ToolMessage | Command[Any]]],
    ) -> ToolMessage | Command[Any]:
        """Asks, runs the tool if allowed, reports the outcome (async agents)."""
        client = self._async_client()
        await self._abandoned.acollect(client)
        tool, args, cost = self._names.step_of(request.tool_call)
        decision = await client.step(tool, args=args, cost=cost)
        if decision.decision == "require_approval" and self._approval_timeout_s is not None:
            try:
                decision = await client.wait_for_approval(decision, self._approval_timeout_s)
            except ApprovalTimeout as e:
                return self._refuse(request, e.decision, timed_out=True)
        if not decision.allowed:
            return self._refuse(request, decision)
        try:
            result = await handler(request)
        except BaseException as exc:
            await _asettle_after_error(exc, decision, client.outcome(decision, False))
            raise
        await client.outcome(decision, _succeeded(result))
        return result

    def close(self) -> None:
        """Collects what is left when the agent is done: approvals answered after their
        wait (a late allow is settled as not run), which otherwise wait for the
        middleware's next call. Sync agents; `aclose` for async ones."""
        if self._client is None:
            raise WardenError(
                "WardenMiddleware has only an AsyncWardenClient: await aclose() instead",
                code="no_client",
            )
        self._abandoned.collect(self._client)

    async def aclose(self) -> None:
        """`close` for async agents."""
        await self._abandoned.acollect(self._async_client())

    def _async_client(self) -> AsyncWardenClient | InThread:
        if self._aclient is not None:
            return self._aclient
        assert self._client is not None, "checked in __init__"
        return InThread(self._client)

    def _refuse(
        self, request: ToolCallRequest, decision: Decision, *, timed_out: bool = False
    ) -> ToolMessage:
        """The answer for a call that may not run: an error ToolMessage for the model, or
        an exception (a halt always; a deny or an unanswered approval when on_deny='raise')."""
        self._abandoned.add(decision)
        if decision.decision == "halt" or self._on_deny == "raise":
            if timed_out:
                raise _api.approval_timeout(decision, self._approval_timeout_s or 0.0)
            raise decision_error(decision)
        call = request.tool_call
        return ToolMessage(
            content=refusal_text(decision, timed_out),
            tool_call_id=call["id"],
            name=call["name"],
            status="error",
        )


class WardenCallbackHandler(BaseCallbackHandler):
    """A callback handler for `langchain-core` tools run with
    `tool.invoke(args, config={"callbacks": [handler]})` (or any runnable that runs tools):
    `on_tool_start` asks warden, and anything but an allow raises (`StepDenied`,
    `AgentHalted`, `ApprovalRequired`, `ApprovalTimeout`), so the tool does not run;
    `on_tool_end` / `on_tool_error` report the outcome. A step whose approval was not
    waited for, or not answered in time, is collected at a later `on_tool_start`: a late
    allow is settled as not run (failure, zero tokens and money).

    It is a synchronous handler on purpose: LangChain swallows the errors of async handlers
    on sync code paths, which would let a denied tool run. On async paths LangChain runs it
    in a worker thread, and its errors still stop the tool. Prefer `WardenMiddleware` for
    `create_agent` agents: a deny there goes back to the model instead of ending the run.
    """

    raise_error: bool = True

    def __init__(
        self,
        client: WardenClient,
        *,
        approval_timeout_s: float | None = None,
        tool_names: Mapping[str, str] | None = None,
        step_cost: StepCost | None = None,
    ) -> None:
        self._client = client
        self._approval_timeout_s = approval_timeout_s
        self._names = _Names(tool_names, step_cost)
        # Steps of tools now running, by LangChain run id; an entry lives from a tool's
        # start to its end or error, so the map holds at most the tools running at once.
        self._open: dict[UUID, Decision] = {}
        self._lock = threading.Lock()
        self._abandoned = Abandoned()

    def on_tool_start(
        self,
        serialized: dict[str, Any],
        input_str: str,
        *,
        run_id: UUID,
        inputs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        """Asks warden; raises unless the step is allowed."""
        name = serialized.get("name") or kwargs.get("name") or "unknown"
        args = inputs if inputs is not None else input_str
        tool, args, cost = self._names.step_of({"name": str(name), "args": args})
        self._abandoned.collect(self._client)
        try:
            decision = self._client.check(
                tool, args=args, cost=cost, approval_timeout_s=self._approval_timeout_s
            )
        except (ApprovalRequired, ApprovalTimeout) as e:
            self._abandoned.add(e.decision)
            raise
        with self._lock:
            self._open[run_id] = decision

    def on_tool_end(self, output: Any, *, run_id: UUID, **kwargs: Any) -> None:
        """Reports success (failure for an error ToolMessage)."""
        self._settle(run_id, _succeeded(output))

    def on_tool_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        """Reports failure."""
        self._settle(run_id, False)

    def close(self) -> None:
        """Settles what is left when the tools are done: a tool started but never ended
        (its run was cut off) as a failure at its reservation, and approvals answered after
        their wait (a late allow as not run), which otherwise wait for the next
        `on_tool_start`. Raises the first error the node gave, after trying every step.
        The handler may be used again after."""
        with self._lock:
            running, self._open = self._open, {}
        first: WardenError | None = None
        for decision in running.values():
            try:
                self._client.outcome(decision, False)
            except WardenError as e:  # settle the others first; say so after
                first = first or e
        self._abandoned.collect(self._client)
        if first is not None:
            raise first

    def _settle(self, run_id: UUID, success: bool) -> OutcomeResult | None:
        with self._lock:
            decision = self._open.pop(run_id, None)
        if decision is None:
            return None
        return self._client.outcome(decision, success)


class _Names:
    """How a LangChain tool call becomes a warden step: the policy's tool name, the
    arguments, the expected cost."""

    def __init__(self, tool_names: Mapping[str, str] | None, step_cost: StepCost | None) -> None:
        self._tool_names = dict(tool_names or {})
        self._step_cost = step_cost

    def step_of(self, call: Mapping[str, Any]) -> tuple[str, Any, Cost | None]:
        name = str(call["name"])
        args = call.get("args")
        cost = self._step_cost(name, args) if self._step_cost else None
        return self._tool_names.get(name, name), args, cost


def _succeeded(result: Any) -> bool:
    """A tool's result counts as a success unless it is an error ToolMessage."""
    return not (isinstance(result, ToolMessage) and result.status == "error")


def _settle_after_error(
    exc: BaseException, decision: Decision, settle: Callable[[], OutcomeResult]
) -> None:
    try:
        settle()
    except WardenError as e:
        _api.add_note(exc, f"warden: the outcome of step {decision.step} was not recorded: {e}")


async def _asettle_after_error(
    exc: BaseException, decision: Decision, settle: Awaitable[OutcomeResult]
) -> None:
    try:
        await settle
    except WardenError as e:
        _api.add_note(exc, f"warden: the outcome of step {decision.step} was not recorded: {e}")


__all__ = ["StepCost", "WardenCallbackHandler", "WardenMiddleware"]
