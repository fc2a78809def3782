"""The OpenAI Agents SDK against a real node: function tools governed by `WardenToolGuard`,
an agent whose model is the scripted fake server (see `llm_base_url` in conftest), and the
helpers that point the OpenAI and Anthropic SDKs at the node's LLM proxy."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from agents import (
    Agent,
    Runner,
    Tool,
    ToolInputGuardrailTripwireTriggered,
    function_tool,
    set_default_openai_api,
)
from agents.models.openai_chatcompletions import OpenAIChatCompletionsModel
from agents.tracing import get_trace_provider, trace
from agents.tracing.traces import NoOpTrace
from openai import AsyncOpenAI

from warden_client import (
    AsyncWardenClient,
    Decision,
    WardenClient,
    anthropic_client,
    openai_client,
)
from warden_client.openai_agents import WardenToolGuard, configure_agents_sdk, warden_model

from .conftest import ACTIONS, Node, new_agent_id
from .fake_llm import FakeLLM


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

    return guard.govern(lookup, delete_database, shell, flaky)


def chat_model(llm_base_url: str, token: str) -> OpenAIChatCompletionsModel:
    # LLM PROXY: `llm_base_url` is the one line to switch to the node's proxy.
    return OpenAIChatCompletionsModel(
        model="fake-model", openai_client=AsyncOpenAI(base_url=llm_base_url, api_key=token)
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
    guard = WardenToolGuard(client)
    fake_llm.chat_tool_calls(("delete_database", {"name": "prod"}), ("lookup", {"query": "pools"}))
    fake_llm.chat_text("done")
    agent = Agent(
        name="tidy", model=chat_model(llm_base_url, registered.token), tools=make_tools(ran, guard)
    )

    result = await Runner.run(agent, "tidy up")

    assert result.final_output == "done"
    assert ran == [("lookup", "pools")], "the denied tool never ran"
    second = fake_llm.requests_to("/v1/chat/completions")[1]
    results = tool_results(second.body)
    assert "warden denied" in results["call_0"] and "no-db-delete" in results["call_0"]
    assert results["call_1"] == "found pools"
    record = operator.get_agent(registered.id).raw
    assert (record["steps_decided"], record["steps_allowed"], record["open_steps"]) == (2, 1, 0)


async def test_guardrail_ends_the_run_on_halt(
    operator: WardenClient,
    client: AsyncWardenClient,
    registered: Any,
    fake_llm: FakeLLM,
    llm_base_url: str,
) -> None:
    ran: list[tuple[str, Any]] = []
    fake_llm.chat_tool_calls(("shell", {"command": "rm -rf /"}))
    agent = Agent(
        name="rogue",
        model=chat_model(llm_base_url, registered.token),
        tools=make_tools(ran, WardenToolGuard(client)),
    )
    with pytest.raises(ToolInputGuardrailTripwireTriggered) as caught:
        await Runner.run(agent, "clean everything")
    decision = caught.value.output.output_info
    assert isinstance(decision, Decision) and decision.decision == "halt"
    assert decision.kind == "safety"
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
    fake_llm.chat_text("gave up")
    agent = Agent(
        name="flaky",
        model=chat_model(llm_base_url, registered.token),
        tools=make_tools(ran, WardenToolGuard(client)),
    )
    result = await Runner.run(agent, "try")
    assert result.final_output == "gave up"
    record = operator.get_agent(registered.id).raw
    assert record["consecutive_failures"] == 1 and record["open_steps"] == 0


def test_guardrail_with_a_sync_client_and_run_sync(
    operator: WardenClient,
    agent: WardenClient,
    fake_llm: FakeLLM,
    llm_base_url: str,
) -> None:
    ran: list[tuple[str, Any]] = []
    fake_llm.chat_tool_calls(("lookup", {"query": "q"}), ("delete_database", {"name": "d"}))
    fake_llm.chat_text("done")
    model = chat_model(llm_base_url, agent.config.token)
    sdk_agent = Agent(name="sync", model=model, tools=make_tools(ran, WardenToolGuard(agent)))
    assert Runner.run_sync(sdk_agent, "go").final_output == "done"
    assert ran == [("lookup", "q")]
    assert operator.get_agent(agent.agent_id).raw["open_steps"] == 0


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
    # LLM PROXY: with the node's proxy, the first argument becomes node.base_url.
    configure_agents_sdk(llm_base_url, registered)
    fake_llm.responses_tool_calls(("lookup", {"query": "escrow"}))
    fake_llm.responses_text("done")
    agent = Agent(
        name="default-model", model="fake-model", tools=make_tools(ran, WardenToolGuard(client))
    )

    result = await Runner.run(agent, "look it up")

    assert result.final_output == "done"
    assert ran == [("lookup", "escrow")]
    sent = fake_llm.requests_to("/v1/responses")
    assert len(sent) == 2
    assert sent[0].headers["authorization"] == f"Bearer {registered.token}"
    assert sent[0].body["model"] == "fake-model"
    assert isinstance(trace("probe"), NoOpTrace), "tracing is off"


async def test_warden_model_gives_one_agent_its_own_proxy_client(
    fake_llm: FakeLLM,
    llm_base_url: str,
    registered: Any,
) -> None:
    fake_llm.chat_text("hello")
    model = warden_model(llm_base_url, registered, "fake-model", api="chat_completions")
    result = await Runner.run(Agent(name="own-model", model=model), "hi")
    assert result.final_output == "hello"
    sent = fake_llm.requests_to("/v1/chat/completions")[0]
    assert sent.headers["authorization"] == f"Bearer {registered.token}"


def test_openai_and_anthropic_clients_point_at_the_proxy_with_the_agents_token(
    node: Node,
    fake_llm: FakeLLM,
    registered: Any,
) -> None:
    # Where they point at the node:
    assert str(openai_client(node.base_url, registered).base_url) == f"{node.base_url}/v1/"
    assert str(anthropic_client(node.base_url, registered).base_url).rstrip("/") == node.base_url

    # And that the SDKs reach those routes with the agent's token as their API key.
    # LLM PROXY: replace fake_llm.base_url with node.base_url once the proxy exists.
    fake_llm.chat_text("from openai")
    chat = openai_client(fake_llm.base_url, registered.token, max_retries=0)
    answer = chat.chat.completions.create(
        model="fake-model", messages=[{"role": "user", "content": "hi"}]
    )
    assert answer.choices[0].message.content == "from openai"
    assert fake_llm.requests_to("/v1/chat/completions")[0].headers["authorization"] == (
        f"Bearer {registered.token}"
    )

    fake_llm.messages_text("from anthropic")
    claude = anthropic_client(fake_llm.base_url, registered.token, max_retries=0)
    message = claude.messages.create(
        model="fake-model", max_tokens=10, messages=[{"role": "user", "content": "hi"}]
    )
    assert message.content[0].text == "from anthropic"  # type: ignore[union-attr]
    sent = fake_llm.requests_to("/v1/messages")[0]
    # Anthropic's SDK sends the key as x-api-key (0.x) or as a bearer token (2.x): the
    # proxy accepts both.
    assert registered.token in (
        sent.headers.get("x-api-key"),
        sent.headers.get("authorization", "").removeprefix("Bearer "),
    )
    assert json.dumps(sent.body["messages"]) == json.dumps([{"role": "user", "content": "hi"}])
