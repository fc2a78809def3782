"""The OpenAI Agents SDK against a real node: agents whose model calls go through the node's
LLM proxy to the scripted fake server (see `llm_base_url` in conftest), function tools
governed by `WardenToolGuard`, and the helpers that point the OpenAI and Anthropic SDKs at
the proxy.

Through the proxy, every model call is a step of the agent (tool `openai`), and each tool call
the model proposes is judged as a step before the SDK sees it: a call the policy forbids never
reaches the SDK (the answer becomes a 403 `tool_call_refused`). A call the proxy lets through
is asked again by the guard when the tool is about to run, with what the call really costs."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import openai
import pytest
from agents import (
    Agent,
    RunContextWrapper,
    RunHooks,
    Runner,
    Tool,
    ToolInputGuardrailTripwireTriggered,
    function_tool,
    set_default_openai_api,
)
from agents.items import ModelResponse
from agents.models.openai_chatcompletions import OpenAIChatCompletionsModel
from agents.tracing import get_trace_provider, trace
from agents.tracing.traces import NoOpTrace
from openai import AsyncOpenAI

from warden_client import (
    AsyncWardenClient,
    Cost,
    Decision,
    WardenClient,
    anthropic_client,
    openai_client,
)
from warden_client.openai_agents import WardenToolGuard, configure_agents_sdk, warden_model

from .conftest import ACTIONS, UPSTREAM_KEY, Node, new_agent_id, settled, spend_micro_usd
from .fake_llm import CHAT, MESSAGES, RESPONSES, FakeLLM


@pytest.fixture
def registered(operator: WardenClient) -> Any:
    return operator.register_agent(new_agent_id("pyo"), pool="swarm")


@pytest.fixture
async def client(node: Node, registered: Any) -> Any:
    async with AsyncWardenClient(node.base_url, node.operator_token, actions=ACTIONS) as op:
        async with op.as_agent(registered) as me:
            yield me


def make_tools(ran: list[tuple[str, Any]], guard: WardenToolGuard) -> list[Tool]:
    @function_tool(failure_error_function=guard.failure_error_function)
    def lookup(query: str) -> str:
        """Looks something up."""
        ran.append(("lookup", query))
        return f"found {query}"

    @function_tool(failure_error_function=guard.failure_error_function)
    def delete_database(name: str) -> str:
        """Deletes a database."""
        ran.append(("delete_database", name))
        return "deleted"

    @function_tool(failure_error_function=guard.failure_error_function)
    def shell(command: str) -> str:
        """Runs a shell command (never really: this is a test)."""
        ran.append(("shell", command))
        return "ran"

    @function_tool(failure_error_function=guard.failure_error_function)
    def flaky(fail: bool) -> str:
        """Fails when asked to."""
        ran.append(("flaky", fail))
        raise RuntimeError("flaky failed")

    @function_tool(failure_error_function=guard.failure_error_function)
    def transfer(amount: float, to: str) -> str:
        """Transfers money."""
        ran.append(("transfer", amount))
        return "sent"

    return guard.govern(lookup, delete_database, shell, flaky, transfer)


def transfer_cost(name: str, args: Any) -> Cost | None:
    """A transfer costs the money it moves (the node then checks it against the budgets)."""
    return {"cost_usd": float(args["amount"])} if name == "transfer" else None


def chat_model(llm_base_url: str, token: str) -> OpenAIChatCompletionsModel:
    """The agent's model: chat completions through the node's LLM proxy (`llm_base_url`)."""
    return OpenAIChatCompletionsModel(
        model="fake-model",
        openai_client=AsyncOpenAI(base_url=llm_base_url, api_key=token, max_retries=0),
    )


def tool_results(request_body: dict[str, Any]) -> dict[str, str]:
    """The tool results a chat completions request sends back to the model, by call id."""
    return {
        m["tool_call_id"]: str(m["content"])
        for m in request_body["messages"]
        if m.get("role") == "tool"
    }


async def test_guardrail_rejects_the_denied_tool_and_lets_the_allowed_one_run(
    operator: WardenClient,
    client: AsyncWardenClient,
    registered: Any,
    fake_llm: FakeLLM,
    llm_base_url: str,
) -> None:
    ran: list[tuple[str, Any]] = []
    # The proxy lets both proposals through (a transfer of 20 breaks no rule); the guard
    # asks again with the money the transfer moves, which the agent's $5 budget cannot hold.
    guard = WardenToolGuard(client, step_cost=transfer_cost)
    fake_llm.chat_tool_calls(
        ("transfer", {"amount": 20, "to": "acme"}), ("lookup", {"query": "pools"})
    )
    fake_llm.chat_text("done")
    agent = Agent(
        name="tidy", model=chat_model(llm_base_url, registered.token), tools=make_tools(ran, guard)
    )

    result = await Runner.run(agent, "pay acme and look up pools")

    assert result.final_output == "done"
    assert ran == [("lookup", "pools")], "the denied tool never ran"
    second = fake_llm.requests_to(CHAT)[1]
    results = tool_results(second.body)
    assert "warden denied" in results["call_0"] and "budget.cost_usd" in results["call_0"]
    assert results["call_1"] == "found pools"
    record = settled(operator, registered.id)
    # Two model calls, two proposals judged by the proxy, two tool calls asked by the guard
    # (the transfer denied).
    assert (record["steps_decided"], record["steps_allowed"], record["open_steps"]) == (6, 5, 0)
    assert record["spent"]["cost_micro_usd"] == 2 * spend_micro_usd(10, 5)


@pytest.mark.parametrize(
    ("call", "verdict", "state"),
    [
        (("shell", {"command": "rm -rf /"}), "halt", "halted"),
        (("delete_database", {"name": "prod"}), "deny", "running"),
    ],
)
async def test_a_forbidden_tool_call_the_model_proposes_is_refused_by_the_proxy(
    operator: WardenClient,
    client: AsyncWardenClient,
    registered: Any,
    fake_llm: FakeLLM,
    llm_base_url: str,
    call: tuple[str, dict[str, Any]],
    verdict: str,
    state: str,
) -> None:
    ran: list[tuple[str, Any]] = []
    fake_llm.chat_tool_calls(call)
    agent = Agent(
        name="rogue",
        model=chat_model(llm_base_url, registered.token),
        tools=make_tools(ran, WardenToolGuard(client)),
    )
    # The SDK never sees the call: the model's answer is a 403, which it raises as is.
    with pytest.raises(openai.PermissionDeniedError) as caught:
        await Runner.run(agent, "clean everything")
    assert caught.value.code == "tool_call_refused"
    assert f"`{call[0]}`" in caught.value.message
    decision = caught.value.response.json()["warden"]
    assert decision["decision"] == verdict
    assert ran == []
    assert operator.get_agent(registered.id).state == state


class HaltAfterTheModel(RunHooks[Any]):
    """An operator halts the agent once the model's answer is in (and before its tool runs)."""

    def __init__(self, operator: WardenClient, agent_id: str) -> None:
        self.operator = operator
        self.agent_id = agent_id

    async def on_llm_end(
        self, context: RunContextWrapper[Any], agent: Agent[Any], response: ModelResponse
    ) -> None:
        self.operator.halt(self.agent_id, reason="enough", by="tests")


async def test_guardrail_ends_the_run_on_halt(
    operator: WardenClient,
    client: AsyncWardenClient,
    registered: Any,
    fake_llm: FakeLLM,
    llm_base_url: str,
) -> None:
    ran: list[tuple[str, Any]] = []
    fake_llm.chat_tool_calls(("lookup", {"query": "q"}))
    agent = Agent(
        name="halted",
        model=chat_model(llm_base_url, registered.token),
        tools=make_tools(ran, WardenToolGuard(client)),
    )
    with pytest.raises(ToolInputGuardrailTripwireTriggered) as caught:
        await Runner.run(agent, "look", hooks=HaltAfterTheModel(operator, registered.id))
    decision = caught.value.output.output_info
    assert isinstance(decision, Decision) and decision.decision == "halt"
    assert ran == []
    assert operator.get_agent(registered.id).state == "halted"


async def test_guardrail_reports_a_failing_tool_as_a_failure(
    operator: WardenClient,
    client: AsyncWardenClient,
    registered: Any,
    fake_llm: FakeLLM,
    llm_base_url: str,
) -> None:
    ran: list[tuple[str, Any]] = []
    fake_llm.chat_tool_calls(("flaky", {"fail": True}))
    agent = Agent(
        name="flaky",
        model=chat_model(llm_base_url, registered.token),
        tools=make_tools(ran, WardenToolGuard(client)),
        # The run ends with the tool's result: another model call, a success, would reset
        # the agent's consecutive failures.
        tool_use_behavior="stop_on_first_tool",
    )
    result = await Runner.run(agent, "try")
    assert result.final_output == "The tool failed: RuntimeError."
    record = settled(operator, registered.id)
    assert record["consecutive_failures"] == 1 and record["open_steps"] == 0


def test_guardrail_with_a_sync_client_and_run_sync(
    operator: WardenClient,
    agent: WardenClient,
    fake_llm: FakeLLM,
    llm_base_url: str,
) -> None:
    ran: list[tuple[str, Any]] = []
    fake_llm.chat_tool_calls(("lookup", {"query": "q"}), ("transfer", {"amount": 9, "to": "x"}))
    fake_llm.chat_text("done")
    model = chat_model(llm_base_url, agent.config.token)
    guard = WardenToolGuard(agent, step_cost=transfer_cost)
    sdk_agent = Agent(name="sync", model=model, tools=make_tools(ran, guard))
    assert Runner.run_sync(sdk_agent, "go").final_output == "done"
    assert ran == [("lookup", "q")]
    assert settled(operator, str(agent.agent_id))["open_steps"] == 0


@pytest.fixture
def sdk_defaults() -> Iterator[None]:
    """Puts back the SDK defaults `configure_agents_sdk` changes."""
    yield
    set_default_openai_api("chat_completions")
    get_trace_provider().set_disabled(True)


async def test_configure_agents_sdk_sends_model_calls_to_the_proxy_with_the_responses_api(
    sdk_defaults: None,
    operator: WardenClient,
    client: AsyncWardenClient,
    registered: Any,
    fake_llm: FakeLLM,
    llm_base_url: str,
) -> None:
    ran: list[tuple[str, Any]] = []
    configure_agents_sdk(llm_base_url, registered, max_retries=0)
    fake_llm.responses_tool_calls(("lookup", {"query": "escrow"}), usage=(30, 8))
    fake_llm.responses_text("done", usage=(40, 2))
    agent = Agent(
        name="default-model", model="fake-model", tools=make_tools(ran, WardenToolGuard(client))
    )

    result = await Runner.run(agent, "look it up")

    assert result.final_output == "done"
    assert ran == [("lookup", "escrow")]
    sent = fake_llm.requests_to(RESPONSES)
    assert len(sent) == 2
    # The node swapped the agent's token for the provider key it holds.
    assert sent[0].headers["authorization"] == f"Bearer {UPSTREAM_KEY}"
    assert sent[0].body["model"] == "fake-model"
    record = settled(operator, registered.id)
    assert record["spent"]["tokens"] == 30 + 8 + 40 + 2
    assert record["spent"]["cost_micro_usd"] == spend_micro_usd(70, 10)
    assert isinstance(trace("probe"), NoOpTrace), "tracing is off"


async def test_warden_model_gives_one_agent_its_own_proxy_client(
    operator: WardenClient,
    fake_llm: FakeLLM,
    llm_base_url: str,
    registered: Any,
) -> None:
    fake_llm.chat_text("hello")
    model = warden_model(
        llm_base_url, registered, "fake-model", api="chat_completions", max_retries=0
    )
    result = await Runner.run(Agent(name="own-model", model=model), "hi")
    assert result.final_output == "hello"
    sent = fake_llm.requests_to(CHAT)[0]
    assert sent.headers["authorization"] == f"Bearer {UPSTREAM_KEY}"
    assert settled(operator, registered.id)["steps_decided"] == 1


def test_openai_and_anthropic_clients_point_at_the_proxy_with_the_agents_token(
    node: Node,
    operator: WardenClient,
    fake_llm: FakeLLM,
    registered: Any,
) -> None:
    # Where they point at the node:
    assert str(openai_client(node.base_url, registered).base_url) == f"{node.base_url}/v1/"
    assert str(anthropic_client(node.base_url, registered).base_url).rstrip("/") == node.base_url

    # And that the SDKs reach the proxy's routes with the agent's token as their API key:
    # the node takes them as the agent's calls and forwards them with the provider's key.
    fake_llm.chat_text("from openai")
    chat = openai_client(node.base_url, registered.token, max_retries=0)
    answer = chat.chat.completions.create(
        model="fake-model", messages=[{"role": "user", "content": "hi"}]
    )
    assert answer.choices[0].message.content == "from openai"
    assert fake_llm.requests_to(CHAT)[0].headers["authorization"] == f"Bearer {UPSTREAM_KEY}"

    fake_llm.messages_text("from anthropic")
    claude = anthropic_client(node.base_url, registered.token, max_retries=0)
    message = claude.messages.create(
        model="fake-claude", max_tokens=10, messages=[{"role": "user", "content": "hi"}]
    )
    assert message.content[0].text == "from anthropic"  # type: ignore[union-attr]
    sent = fake_llm.requests_to(MESSAGES)[0]
    # Anthropic's SDK sends the key as x-api-key (0.x) or as a bearer token (2.x): the
    # proxy accepts both, and drops it for the provider's key.
    assert sent.headers["x-api-key"] == UPSTREAM_KEY
    assert registered.token not in str(sent.headers)
    assert sent.body["messages"] == [{"role": "user", "content": "hi"}]
    assert sent.body["max_tokens"] == 10
    assert settled(operator, registered.id)["steps_decided"] == 2
