"""The blocking client against a real node: steps, outcomes, heartbeats, typed errors,
approvals and governed blocks."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from warden_client import (
    AgentHalted,
    ApprovalRequired,
    ApprovalTimeout,
    Decision,
    StepDenied,
    WardenClient,
    WardenError,
)

from .conftest import ACTIONS, Node, new_agent_id


def test_register_step_outcome_heartbeat_round_trip(
    operator: WardenClient, agent: WardenClient
) -> None:
    decision = agent.step("lookup", args={"query": "bounded counters"}, cost={"tokens": 300})
    assert decision.decision == "allow" and decision.allowed
    assert decision.rule is None and decision.approval is None
    assert decision.step.startswith("s-")
    assert isinstance(decision.audit_seq, int)
    assert decision.remaining["steps"] == 99

    settled = agent.outcome(decision, True, tokens=120)
    assert settled.step == decision.step
    assert settled.charged["tokens"] == 120
    assert settled.refunded["tokens"] == 180
    agent.heartbeat()

    record = operator.get_agent(agent.agent_id)
    assert record.state == "running"
    assert record.spent["tokens"] == 120 and record.reserved["tokens"] == 0
    assert record.raw["steps_allowed"] == 1 and record.raw["open_steps"] == 0
    # The agent reads its own record with its own token.
    assert agent.get_agent().id == agent.agent_id


def test_action_class_comes_from_the_clients_map_and_a_wrong_one_is_denied(
    agent: WardenClient,
) -> None:
    assert agent.config.action_for("payments.transfer", None) == "spend"
    wrong = agent.step("lookup", "write", args={"query": "x"})
    assert wrong.decision == "deny" and wrong.rule == "registry.action", wrong


def test_deny_raises_step_denied_carrying_the_decision(agent: WardenClient) -> None:
    plain = agent.step("delete_database", args={"name": "prod"})
    assert (plain.decision, plain.rule) == ("deny", "no-db-delete")

    with pytest.raises(StepDenied) as caught:
        agent.check("delete_database", args={"name": "prod"})
    err = caught.value
    assert isinstance(err, WardenError) and err.code == "deny"
    assert err.decision is not None and err.decision.rule == "no-db-delete"
    assert "no-db-delete" in str(err)


def test_halt_raises_agent_halted_and_no_step_is_allowed_after(
    operator: WardenClient, agent: WardenClient
) -> None:
    with pytest.raises(AgentHalted) as caught:
        agent.check("shell", args={"command": "rm -rf /"})
    assert caught.value.decision.kind == "safety"
    assert caught.value.decision.rule == "no-rm-rf"

    after = agent.step("lookup", args={"query": "anything"})
    assert after.decision == "halt", after
    assert operator.get_agent(agent.agent_id).state == "halted"


def test_unknown_tool_is_denied_by_default(agent: WardenClient) -> None:
    assert agent.step("teleport", "execute").decision == "deny"


def test_operator_approves_and_wait_for_approval_returns_allow(
    operator: WardenClient, agent: WardenClient
) -> None:
    parked = agent.step("payments.transfer", args={"amount": 5000, "to": "acme"})
    assert parked.decision == "require_approval" and parked.rule == "big-transfer"
    assert parked.approval == f"{agent.agent_id}/{parked.step}"
    assert parked.approval in [a["id"] for a in operator.approvals()]

    approver, answers = _approve_when_listed(operator, parked)
    final = agent.wait_for_approval(parked, timeout_s=15)
    approver.join(timeout=15)
    assert not approver.is_alive()
    assert [(a.decision, a.step) for a in answers] == [("allow", parked.step)]
    assert final.decision == "allow", final
    assert final.step == parked.step
    # Read again before it is settled, by approval id: the final decision is kept.
    assert agent.wait_for_approval(parked.approval or "", timeout_s=0).decision == "allow"
    settled = agent.outcome(final, True, cost_usd=0.01)
    assert settled.step == parked.step and settled.charged["cost_micro_usd"] == 10_000
    # Once settled, its allow may not run the action again.
    for again in (parked, parked.step, parked.approval or ""):
        with pytest.raises(WardenError) as caught:
            agent.wait_for_approval(again, timeout_s=0)
        assert caught.value.code == "step_settled"


def test_a_denied_approval_is_the_final_decision(
    operator: WardenClient, agent: WardenClient
) -> None:
    parked = agent.step("payments.transfer", args={"amount": 7000, "to": "acme"})
    answer = operator.deny(parked, reason="unknown payee", by="test")
    assert answer.decision == "deny"
    final = agent.wait_for_approval(parked.step, timeout_s=5)
    assert final.decision == "deny" and "unknown payee" in final.reason


def test_nobody_answering_is_an_approval_timeout(agent: WardenClient) -> None:
    parked = agent.step("payments.transfer", args={"amount": 9000, "to": "acme"})
    started = time.monotonic()
    with pytest.raises(ApprovalTimeout) as caught:
        agent.wait_for_approval(parked, timeout_s=0.3)
    assert 0.25 <= time.monotonic() - started < 5
    assert caught.value.decision.decision == "require_approval"
    assert caught.value.decision.approval == parked.approval

    with pytest.raises(ApprovalRequired):
        agent.check("payments.transfer", args={"amount": 9001, "to": "acme"})


def test_governed_block_reports_its_cost(operator: WardenClient, agent: WardenClient) -> None:
    with agent.governed(
        "payments.transfer", args={"amount": 10, "to": "acme"}, cost={"cost_usd": 1.0}
    ) as step:
        assert step.decision is not None and step.decision.allowed
        reserved = operator.get_agent(agent.agent_id).reserved
        assert reserved["cost_micro_usd"] == 1_000_000
        step.report(cost_usd=0.25)
    assert step.result is not None and step.result.charged["cost_micro_usd"] == 250_000

    record = operator.get_agent(agent.agent_id)
    assert record.spent["cost_micro_usd"] == 250_000
    assert record.reserved["cost_micro_usd"] == 0
    assert record.raw["open_steps"] == 0


def test_governed_block_that_raises_reports_a_failure(
    operator: WardenClient, agent: WardenClient
) -> None:
    with pytest.raises(RuntimeError, match="tool broke"):
        with agent.governed("flaky", args={"fail": True}, cost={"cost_usd": 0.5}):
            raise RuntimeError("tool broke")
    record = operator.get_agent(agent.agent_id)
    assert record.raw["consecutive_failures"] == 1
    assert record.raw["open_steps"] == 0
    # Not reported, so settled as reserved: never as zero.
    assert record.spent["cost_micro_usd"] == 500_000


def test_governed_block_does_not_run_when_denied(agent: WardenClient) -> None:
    ran = []
    with pytest.raises(StepDenied):
        with agent.governed("delete_database", args={"name": "prod"}):
            ran.append(True)
    assert ran == []


def test_governed_block_waits_for_an_approval_when_asked_to(
    operator: WardenClient, agent: WardenClient
) -> None:
    listed = threading.Event()

    def approve() -> None:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            mine = [a for a in operator.approvals() if a["agent"] == agent.agent_id]
            if mine:
                listed.set()
                operator.approve(str(mine[0]["id"]), by="test")
                return
            time.sleep(0.02)

    approver = threading.Thread(target=approve)
    approver.start()
    with agent.governed(
        "payments.transfer", args={"amount": 4000, "to": "acme"}, approval_timeout_s=15
    ) as step:
        assert step.decision is not None and step.decision.allowed
        step.report(cost_usd=0.1)
    approver.join(timeout=15)
    assert not approver.is_alive() and listed.is_set()
    # The block settled the step it was approved for, with what it reported.
    assert step.result is not None and step.result.step == step.decision.step
    assert step.result.charged["cost_micro_usd"] == 100_000
    record = operator.get_agent(agent.agent_id)
    assert record.raw["open_steps"] == 0 and record.spent["cost_micro_usd"] == 100_000


def test_wrong_token_is_unauthorized(node: Node, agent: WardenClient) -> None:
    with WardenClient(node.base_url, "not-a-token", agent_id=agent.agent_id) as stranger:
        with pytest.raises(WardenError) as caught:
            stranger.step("lookup", args={"query": "x"})
        assert (caught.value.code, caught.value.status) == ("unauthorized", 401)
    # A new client: the node closes the connection after refusing a body it did not read,
    # without saying so, and a request sent on it then finds it closed.
    with WardenClient(node.base_url, "not-a-token") as stranger:
        with pytest.raises(WardenError) as caught:
            stranger.register_agent(new_agent_id())
        assert (caught.value.code, caught.value.status) == ("unauthorized", 401)


def test_another_agents_token_is_forbidden_and_unknown_agents_are_named(
    node: Node, operator: WardenClient, agent: WardenClient
) -> None:
    other = operator.register_agent(new_agent_id(), pool="swarm")
    assert other.token
    with WardenClient(node.base_url, other.token, agent_id=agent.agent_id) as impostor:
        with pytest.raises(WardenError) as caught:
            impostor.step("lookup", args={"query": "x"})
        assert (caught.value.code, caught.value.status) == ("forbidden", 403)
    with pytest.raises(WardenError) as caught:
        operator.get_agent("nobody-here")
    assert caught.value.status == 404


def test_bad_input_is_the_nodes_error_code(operator: WardenClient, agent: WardenClient) -> None:
    with pytest.raises(WardenError) as caught:
        agent.step("lookup", "fly", args={"query": "x"})  # type: ignore[arg-type]
    assert (caught.value.code, caught.value.status) == ("bad_step", 400)
    with pytest.raises(WardenError) as caught:
        operator.register_agent(agent.agent_id)
    assert (caught.value.code, caught.value.status) == ("duplicate_agent", 409)


def test_an_unreachable_node_is_a_bounded_error() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # Nothing listens there now.
    client = WardenClient(f"http://127.0.0.1:{port}", "t", agent_id="a", retries=1, actions=ACTIONS)
    started = time.monotonic()
    with pytest.raises(WardenError) as caught:
        client.heartbeat()
    assert caught.value.code == "unreachable" and caught.value.status is None
    assert time.monotonic() - started < 5


def test_a_client_without_an_agent_says_so(operator: WardenClient) -> None:
    with pytest.raises(WardenError) as caught:
        operator.step("lookup")
    assert caught.value.code == "no_agent"


def _approve_when_listed(
    operator: WardenClient, parked: Decision
) -> tuple[threading.Thread, list[Decision]]:
    """Approves `parked` from another thread as soon as the node lists it; the list gets
    the operator's answer."""
    answers: list[Decision] = []

    def run() -> None:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if parked.approval in [a["id"] for a in operator.approvals()]:
                answers.append(operator.approve(parked, reason="looks fine", by="test"))
                return
            time.sleep(0.02)

    thread = threading.Thread(target=run)
    thread.start()
    return thread, answers
