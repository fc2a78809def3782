"""The asyncio client against a real node: the same calls as the blocking client, awaited."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from warden_client import (
    AgentHalted,
    ApprovalTimeout,
    AsyncWardenClient,
    StepDenied,
    WardenClient,
    WardenError,
)

from .conftest import ACTIONS, Node, new_agent_id


async def test_async_step_outcome_heartbeat(
    operator: WardenClient, aagent: AsyncWardenClient
) -> None:
    decision = await aagent.step("lookup", args={"query": "escrow"}, cost={"tokens": 50})
    assert decision.allowed
    settled = await aagent.outcome(decision, True, tokens=20)
    assert settled.charged["tokens"] == 20
    await aagent.heartbeat()
    record = await aagent.get_agent()
    assert record.spent["tokens"] == 20 and record.raw["open_steps"] == 0


async def test_async_deny_and_halt_raise_typed_errors(aagent: AsyncWardenClient) -> None:
    with pytest.raises(StepDenied) as denied:
        await aagent.check("delete_database", args={"name": "prod"})
    assert denied.value.decision.rule == "no-db-delete"
    with pytest.raises(AgentHalted) as halted:
        await aagent.check("shell", args={"command": "rm -rf /"})
    assert halted.value.decision.kind == "safety"


async def test_async_governed_block_reports_cost(
    operator: WardenClient, aagent: AsyncWardenClient
) -> None:
    async with aagent.governed(
        "payments.transfer", args={"amount": 3, "to": "acme"}, cost={"cost_usd": 2.0}
    ) as step:
        step.report(cost_usd=1.5, tokens=0)
    assert step.result is not None
    record = operator.get_agent(aagent.agent_id)
    assert record.spent["cost_micro_usd"] == 1_500_000
    assert record.reserved["cost_micro_usd"] == 0


async def test_async_wait_for_approval_long_polls_until_the_operator_answers(
    node: Node, operator: WardenClient
) -> None:
    polls = _CountingTransport()
    registered = operator.register_agent(new_agent_id("pya"), pool="swarm")
    async with AsyncWardenClient(node.base_url, "unused", actions=ACTIONS, transport=polls) as base:
        me = base.as_agent(registered)
        parked = await me.step("payments.transfer", args={"amount": 2500, "to": "acme"})
        assert parked.decision == "require_approval"
        waiting = asyncio.create_task(me.wait_for_approval(parked, timeout_s=15))
        await asyncio.wait_for(polls.long_poll_sent.wait(), timeout=5)
        # Give the request time to reach the node, so the answer comes while it is held.
        await asyncio.sleep(0.1)
        answer = await asyncio.to_thread(operator.approve, parked, by="test")
        assert answer.decision == "allow"
        final = await asyncio.wait_for(waiting, timeout=15)
        assert final.decision == "allow" and final.step == parked.step
        assert polls.long_polls == 1, "one held request delivered the answer"

        again = await me.step("payments.transfer", args={"amount": 2600, "to": "acme"})
        with pytest.raises(ApprovalTimeout):
            await me.wait_for_approval(again, timeout_s=0.2)


class _CountingTransport(httpx.AsyncBaseTransport):
    """The default transport, counting the long polls (`?wait=`) it sends."""

    def __init__(self) -> None:
        self._inner = httpx.AsyncHTTPTransport()
        self.long_polls = 0
        self.long_poll_sent = asyncio.Event()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if "wait" in request.url.params:
            self.long_polls += 1
            self.long_poll_sent.set()
        return await self._inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self._inner.aclose()


async def test_async_many_concurrent_steps_are_each_decided(
    operator: WardenClient, aagent: AsyncWardenClient
) -> None:
    decisions = await asyncio.gather(
        *(aagent.step("lookup", args={"query": f"q{i}"}) for i in range(20))
    )
    assert len({d.step for d in decisions}) == 20
    assert all(d.allowed for d in decisions)
    await asyncio.gather(*(aagent.outcome(d) for d in decisions))
    assert operator.get_agent(aagent.agent_id).raw["open_steps"] == 0


async def test_async_wrong_token_is_unauthorized(node: Node) -> None:
    async with AsyncWardenClient(node.base_url, "wrong", agent_id="whoever") as stranger:
        with pytest.raises(WardenError) as caught:
            await stranger.heartbeat()
    assert (caught.value.code, caught.value.status) == ("unauthorized", 401)
