"""Every step a client or an integration gives up on is settled, against a real node:
refused reports, reused governed blocks, approvals answered during or after the wait, and
calls the Agents SDK never ran."""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from typing import Any

import pytest
from agents import Agent, Model, ModelResponse, Runner, Usage, function_tool
from langchain.agents import create_agent
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from langchain_core.tools import tool
from openai.types.responses import (
    ResponseFunctionToolCall,
    ResponseOutputMessage,
    ResponseOutputText,
)

from warden_client import ApprovalTimeout, AsyncWardenClient, StepDenied, WardenClient, WardenError
from warden_client.langchain import WardenCallbackHandler, WardenMiddleware
from warden_client.openai_agents import WardenToolGuard

from .conftest import ACTIONS, Node, new_agent_id
from .scripted_node import Chunks, ScriptedNode, answer
from .test_langchain import calls, turns

BIG = {"amount": 5000, "to": "acme"}
"""A transfer the policy parks for approval (rule big-transfer)."""


def record(operator: WardenClient, agent_id: str | None) -> dict[str, Any]:
    return dict(operator.get_agent(agent_id).raw)


def answer_when_listed(
    operator: WardenClient, agent_id: str | None, approve: bool
) -> threading.Thread:
    """Answers the agent's first approval from another thread as soon as it is listed."""

    def run() -> None:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            mine = [a for a in operator.approvals() if a["agent"] == agent_id]
            if mine:
                (operator.approve if approve else operator.deny)(str(mine[0]["id"]), by="t")
                return
            time.sleep(0.02)

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def approve_all(operator: WardenClient, agent_id: str | None) -> int:
    """Approves every waiting step of the agent; how many."""
    mine = [a for a in operator.approvals() if a["agent"] == agent_id]
    for a in mine:
        assert operator.approve(str(a["id"]), by="t").decision == "allow"
    return len(mine)


# --- governed blocks ------------------------------------------------------------------


def test_a_report_the_client_refuses_settles_the_step_as_reserved(
    operator: WardenClient, agent: WardenClient
) -> None:
    with pytest.raises(WardenError) as caught:
        with agent.governed("flaky", args={"fail": False}, cost={"cost_usd": 0.5}) as step:
            step.report(tokens=-50)
    assert caught.value.code == "bad_outcome"
    after = record(operator, agent.agent_id)
    assert after["open_steps"] == 0
    assert after["spent"]["cost_micro_usd"] == 500_000


def test_a_report_the_node_refuses_is_followed_by_an_outcome_without_cost() -> None:
    def node(method: str, path: str, body: bytes) -> Chunks:
        if path.endswith("/steps"):
            return answer(200, json.dumps({"decision": "allow", "step": "s-1"}))
        if b'"cost"' in body:
            return answer(400, '{"error":{"code":"bad_outcome","message":"no"}}')
        return answer(200, json.dumps({"step": "s-1"}))

    scripted = ScriptedNode(node)
    try:
        with WardenClient(scripted.url, "t", agent_id="a") as client:
            with pytest.raises(WardenError) as caught:
                with client.governed("lookup") as step:
                    step.report(tokens=5)
        assert caught.value.code == "bad_outcome" and step.result is not None
        outcomes = [json.loads(b) for m, p, b in scripted.requests if p.endswith("/outcome")]
        assert outcomes == [
            {"status": "success", "cost": {"tokens": 5}},
            {"status": "success"},
        ]
    finally:
        scripted.close()


def test_a_dimension_not_reported_is_charged_as_reserved(
    operator: WardenClient, agent: WardenClient
) -> None:
    with agent.governed("flaky", args={"fail": False}, cost={"cost_usd": 0.5, "tokens": 80}) as s:
        s.report(tokens=30)
    spent = record(operator, agent.agent_id)["spent"]
    assert (spent["tokens"], spent["cost_micro_usd"]) == (30, 500_000)


def test_a_reused_governed_object_starts_each_block_afresh(
    operator: WardenClient, agent: WardenClient
) -> None:
    block = agent.governed("flaky", args={"fail": False}, cost={"cost_usd": 0.5})
    with block as step:
        step.report(cost_usd=0.0, success=False)
    first = step.decision
    with block as step:
        pass  # reports nothing: settled as reserved, a success
    assert step.decision is not None and first is not None and step.decision.step != first.step
    assert step.result is not None and step.result.charged["cost_micro_usd"] == 500_000
    after = record(operator, agent.agent_id)
    assert after["spent"]["cost_micro_usd"] == 500_000 and after["consecutive_failures"] == 0


async def test_an_async_governed_block_that_raises_is_a_failure_at_its_reservation(
    operator: WardenClient, aagent: AsyncWardenClient
) -> None:
    with pytest.raises(RuntimeError, match="broke"):
        async with aagent.governed("flaky", args={"fail": True}, cost={"cost_usd": 0.25}):
            raise RuntimeError("broke")
    after = record(operator, aagent.agent_id)
    assert after["consecutive_failures"] == 1 and after["open_steps"] == 0
    assert after["spent"]["cost_micro_usd"] == 250_000


async def test_an_async_governed_block_cancelled_while_reporting_still_settles(
    operator: WardenClient, aagent: AsyncWardenClient
) -> None:
    async def block() -> None:
        async with aagent.governed("flaky", args={"fail": False}, cost={"cost_usd": 0.25}):
            await asyncio.sleep(10)

    task = asyncio.create_task(block())
    for _ in range(250):
        await asyncio.sleep(0.02)
        if (await asyncio.to_thread(record, operator, aagent.agent_id))["open_steps"] == 1:
            break
    task.cancel()
    await asyncio.sleep(0)
    task.cancel()  # again, while __aexit__ reports
    with pytest.raises(asyncio.CancelledError):
        await task
    for _ in range(100):
        if (await asyncio.to_thread(record, operator, aagent.agent_id))["open_steps"] == 0:
            break
        await asyncio.sleep(0.02)
    assert (await asyncio.to_thread(record, operator, aagent.agent_id))["open_steps"] == 0


def test_another_agents_approval_id_is_refused(operator: WardenClient, agent: WardenClient) -> None:
    other = operator.as_agent(operator.register_agent(new_agent_id(), pool="swarm"))
    mine = agent.step("payments.transfer", args=BIG)
    operator.approve(mine, by="t")
    theirs = other.step("payments.transfer", args=BIG)
    assert theirs.step == mine.step, "each agent numbers its own steps"
    with pytest.raises(WardenError) as caught:
        agent.wait_for_approval(theirs.approval or "", timeout_s=1)
    assert caught.value.code == "wrong_agent"


# --- LangChain ------------------------------------------------------------------------


def pay_tools(ran: list[Any]) -> list[Any]:
    @tool("payments.transfer")
    def pay(amount: int, to: str) -> str:
        """Pays."""
        ran.append(amount)
        return "paid"

    @tool
    def lookup(query: str) -> str:
        """Looks up."""
        ran.append(query)
        return "found"

    return [pay, lookup]


@pytest.mark.parametrize("approve", [True, False])
def test_middleware_acts_on_an_approval_answered_during_the_wait(
    operator: WardenClient, agent: WardenClient, approve: bool
) -> None:
    ran: list[Any] = []
    answering = answer_when_listed(operator, agent.agent_id, approve)
    graph = create_agent(
        turns(calls(("payments.transfer", BIG)), AIMessage(content="done")),
        tools=pay_tools(ran),
        middleware=[WardenMiddleware(agent, approval_timeout_s=10)],
    )
    result = graph.invoke({"messages": [HumanMessage("pay")]})
    answering.join(10)
    reply = [m for m in result["messages"] if isinstance(m, ToolMessage)][0]
    assert ran == ([5000] if approve else [])
    assert reply.status == ("success" if approve else "error")
    after = record(operator, agent.agent_id)
    assert (after["steps_allowed"], after["open_steps"]) == (int(approve), 0)


def test_middleware_collects_an_approval_answered_after_its_wait(
    operator: WardenClient, agent: WardenClient
) -> None:
    ran: list[Any] = []
    middleware = WardenMiddleware(agent, approval_timeout_s=0.2)
    graph = create_agent(
        turns(calls(("payments.transfer", BIG)), AIMessage(content="done")),
        tools=pay_tools(ran),
        middleware=[middleware],
    )
    graph.invoke({"messages": [HumanMessage("pay")]})
    assert ran == [] and approve_all(operator, agent.agent_id) == 1
    assert record(operator, agent.agent_id)["open_steps"] == 1, "an allow nothing will run"
    graph = create_agent(
        turns(calls(("lookup", {"query": "q"})), AIMessage(content="done")),
        tools=pay_tools(ran),
        middleware=[middleware],
    )
    graph.invoke({"messages": [HumanMessage("look")]})
    after = record(operator, agent.agent_id)
    assert ran == ["q"] and after["open_steps"] == 0
    assert after["spent"]["cost_micro_usd"] == 0, "settled as not run"


def test_close_collects_late_approvals_and_settles_tools_cut_off(
    operator: WardenClient, agent: WardenClient
) -> None:
    ran: list[Any] = []
    middleware = WardenMiddleware(agent, approval_timeout_s=0.2)
    graph = create_agent(
        turns(calls(("payments.transfer", BIG)), AIMessage(content="done")),
        tools=pay_tools(ran),
        middleware=[middleware],
    )
    graph.invoke({"messages": [HumanMessage("pay")]})
    assert approve_all(operator, agent.agent_id) == 1
    assert record(operator, agent.agent_id)["open_steps"] == 1
    middleware.close()
    after = record(operator, agent.agent_id)
    assert (after["open_steps"], after["spent"]["cost_micro_usd"]) == (0, 0), after

    # A handler whose tool started and never ended (the run was cut off), and a late
    # approval: close settles both, the first at its reservation.
    pay, lookup = pay_tools(ran)
    handler = WardenCallbackHandler(agent, approval_timeout_s=0.2)
    handler.on_tool_start({"name": "lookup"}, "q", run_id=uuid.uuid4(), inputs={"query": "q"})
    with pytest.raises(ApprovalTimeout):
        pay.invoke(BIG, config={"callbacks": [handler]})
    assert approve_all(operator, agent.agent_id) == 1
    assert record(operator, agent.agent_id)["open_steps"] == 2
    handler.close()
    after = record(operator, agent.agent_id)
    assert after["open_steps"] == 0, after
    assert after["spent"]["steps"] == 3, after  # the two late allows and the cut-off lookup
    assert ran == []


def test_callback_handler_acts_on_approvals_during_and_after_the_wait(
    operator: WardenClient, agent: WardenClient
) -> None:
    ran: list[Any] = []
    pay, lookup = pay_tools(ran)
    handler = WardenCallbackHandler(agent, approval_timeout_s=10)
    config: Any = {"callbacks": [handler]}
    answering = answer_when_listed(operator, agent.agent_id, True)
    assert pay.invoke(BIG, config=config) == "paid"
    answering.join(10)
    answering = answer_when_listed(operator, agent.agent_id, False)
    with pytest.raises(StepDenied):
        pay.invoke(BIG, config=config)
    answering.join(10)
    assert ran == [5000]

    late = WardenCallbackHandler(agent, approval_timeout_s=0.2)
    with pytest.raises(ApprovalTimeout):
        pay.invoke(BIG, config={"callbacks": [late]})
    assert approve_all(operator, agent.agent_id) == 1
    lookup.invoke({"query": "q"}, config={"callbacks": [late]})
    after = record(operator, agent.agent_id)
    assert ran == [5000, "q"] and after["open_steps"] == 0
    assert after["steps_allowed"] == 3  # paid, the late allow, lookup


# --- OpenAI Agents SDK ----------------------------------------------------------------


class ScriptedModel(Model):
    """An in-process model: each turn is a list of (tool, arguments JSON, call id), or text."""

    def __init__(self, *script: Any) -> None:
        self.script = list(script)

    async def get_response(self, *args: Any, **kwargs: Any) -> ModelResponse:
        turn = self.script.pop(0)
        output: list[Any]
        if isinstance(turn, str):
            text = ResponseOutputText(type="output_text", text=turn, annotations=[])
            output = [
                ResponseOutputMessage(
                    id="m", type="message", role="assistant", status="completed", content=[text]
                )
            ]
        else:
            output = [
                ResponseFunctionToolCall(
                    id=f"fc-{i}", call_id=cid, name=n, arguments=a, type="function_call"
                )
                for i, (n, a, cid) in enumerate(turn)
            ]
        return ModelResponse(output=output, usage=Usage(), response_id=None)

    def stream_response(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError


@pytest.fixture
async def sdk_agent(node: Node, operator: WardenClient) -> Any:
    registered = operator.register_agent(new_agent_id("pys"), pool="swarm")
    async with AsyncWardenClient(node.base_url, node.operator_token, actions=ACTIONS) as op:
        async with op.as_agent(registered) as me:
            yield me


def sdk_tools(guard: WardenToolGuard, ran: list[Any]) -> list[Any]:
    @function_tool(name_override="payments.transfer")
    def pay(amount: int, to: str) -> str:
        """Pays."""
        ran.append(amount)
        return "paid"

    @function_tool
    def lookup(query: str) -> str:
        """Looks up."""
        ran.append(query)
        return "found"

    return guard.govern(pay, lookup)


PAY = ("payments.transfer", '{"amount": 5000, "to": "acme"}', "c0")


@pytest.mark.parametrize("approve", [True, False])
async def test_guard_acts_on_an_approval_answered_during_the_wait(
    operator: WardenClient, sdk_agent: AsyncWardenClient, approve: bool
) -> None:
    ran: list[Any] = []
    guard = WardenToolGuard(sdk_agent, approval_timeout_s=10)
    agent = Agent(name="p", model=ScriptedModel([PAY], "done"), tools=sdk_tools(guard, ran))
    answering = answer_when_listed(operator, sdk_agent.agent_id, approve)
    result = await Runner.run(agent, "pay")
    await asyncio.to_thread(answering.join, 10)
    assert result.final_output == "done" and ran == ([5000] if approve else [])
    after = record(operator, sdk_agent.agent_id)
    assert (after["steps_allowed"], after["open_steps"]) == (int(approve), 0)


async def test_guard_collects_an_approval_answered_after_its_wait(
    operator: WardenClient, sdk_agent: AsyncWardenClient
) -> None:
    ran: list[Any] = []
    guard = WardenToolGuard(sdk_agent, approval_timeout_s=0.2)
    agent = Agent(name="p", model=ScriptedModel([PAY], "done"), tools=sdk_tools(guard, ran))
    await Runner.run(agent, "pay")
    assert ran == [] and approve_all(operator, sdk_agent.agent_id) == 1
    await guard.close()
    after = record(operator, sdk_agent.agent_id)
    assert after["open_steps"] == 0 and after["spent"]["cost_micro_usd"] == 0


async def test_guard_close_settles_a_call_the_sdk_never_ran(
    operator: WardenClient, sdk_agent: AsyncWardenClient
) -> None:
    ran: list[Any] = []
    guard = WardenToolGuard(sdk_agent)
    lookup = sdk_tools(guard, ran)[1]

    async def refuse(data: Any) -> Any:
        from agents import ToolGuardrailFunctionOutput

        return ToolGuardrailFunctionOutput.reject_content("the app says no")

    from agents import ToolInputGuardrail

    # A guardrail after warden's rejects the call: warden allowed it, the tool never runs.
    lookup.tool_input_guardrails.append(ToolInputGuardrail(guardrail_function=refuse))
    query = ("lookup", '{"query": "a"}', "c0")
    agent = Agent(name="g", model=ScriptedModel([query], "done"), tools=[lookup])
    await Runner.run(agent, "look")
    after = record(operator, sdk_agent.agent_id)
    assert ran == [] and (after["steps_allowed"], after["open_steps"]) == (1, 1)
    await guard.close()
    assert record(operator, sdk_agent.agent_id)["open_steps"] == 0
