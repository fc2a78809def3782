"""LangChain against a real node: `create_agent` agents governed by `WardenMiddleware`, with a
scripted in-process model or langchain-openai's `ChatOpenAI` through the node's LLM proxy
(to the fake model server), and tools run with `WardenCallbackHandler`."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from typing import Any

import openai
import pytest
from langchain.agents import create_agent
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI

from warden_client import AgentHalted, AsyncWardenClient, StepDenied, WardenClient
from warden_client.langchain import WardenCallbackHandler, WardenMiddleware

from .conftest import Node, settled, spend_micro_usd
from .fake_llm import CHAT, FakeLLM


class ScriptedModel(GenericFakeChatModel):
    """langchain-core's GenericFakeChatModel answers with the messages it is given, but
    its `bind_tools` is the base class's NotImplementedError; the script already holds the
    tool calls, so binding tools changes nothing."""

    def bind_tools(self, tools: Sequence[Any], **kwargs: Any) -> ScriptedModel:
        return self


def turns(*messages: AIMessage) -> ScriptedModel:
    return ScriptedModel(messages=iter(messages))


def calls(*named: tuple[str, dict[str, Any]]) -> AIMessage:
    """One model turn asking for these tool calls, in parallel."""
    return AIMessage(
        content="",
        tool_calls=[{"name": n, "args": a, "id": f"call-{i}"} for i, (n, a) in enumerate(named)],
    )


class Ran:
    """What the tools really ran (thread-safe: parallel tool calls run in threads)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.calls: list[tuple[str, Any]] = []

    def add(self, name: str, value: Any) -> None:
        with self._lock:
            self.calls.append((name, value))

    def names(self) -> list[str]:
        return sorted(name for name, _ in self.calls)


@pytest.fixture
def ran() -> Ran:
    return Ran()


@pytest.fixture
def tools(ran: Ran) -> Iterator[list[Any]]:
    @tool
    def lookup(query: str) -> str:
        """Looks something up."""
        ran.add("lookup", query)
        return f"found {query}"

    @tool
    def delete_database(name: str) -> str:
        """Deletes a database."""
        ran.add("delete_database", name)
        return "deleted"

    @tool
    def shell(command: str) -> str:
        """Runs a shell command (never really: this is a test)."""
        ran.add("shell", command)
        return "ran"

    @tool
    def flaky(fail: bool) -> str:
        """Fails when asked to."""
        ran.add("flaky", fail)
        if fail:
            raise RuntimeError("flaky failed")
        return "ok"

    yield [lookup, delete_database, shell, flaky]


def tool_messages(result: dict[str, Any]) -> dict[str, ToolMessage]:
    return {m.tool_call_id: m for m in result["messages"] if isinstance(m, ToolMessage)}


def test_middleware_runs_the_allowed_tool_and_tells_the_model_about_the_denied_one(
    operator: WardenClient, agent: WardenClient, tools: list[Any], ran: Ran
) -> None:
    model = turns(
        calls(("lookup", {"query": "pools"}), ("delete_database", {"name": "prod"})),
        AIMessage(content="done"),
    )
    graph = create_agent(model, tools=tools, middleware=[WardenMiddleware(agent)])
    result = graph.invoke({"messages": [HumanMessage("tidy up")]})

    assert ran.calls == [("lookup", "pools")], "the denied tool never ran"
    answers = tool_messages(result)
    assert answers["call-0"].status == "success" and answers["call-0"].content == "found pools"
    denied = answers["call-1"]
    assert denied.status == "error"
    assert "warden denied" in str(denied.content) and "no-db-delete" in str(denied.content)
    assert result["messages"][-1].content == "done"

    record = operator.get_agent(agent.agent_id).raw
    assert (record["steps_decided"], record["steps_allowed"], record["open_steps"]) == (2, 1, 0)


def test_parallel_tool_calls_are_each_decided_and_settled(
    operator: WardenClient, agent: WardenClient, tools: list[Any], ran: Ran
) -> None:
    model = turns(
        calls(
            ("lookup", {"query": "a"}),
            ("lookup", {"query": "b"}),
            ("delete_database", {"name": "x"}),
            ("lookup", {"query": "c"}),
        ),
        AIMessage(content="done"),
    )
    graph = create_agent(model, tools=tools, middleware=[WardenMiddleware(agent)])
    result = graph.invoke({"messages": [HumanMessage("go")]})

    assert ran.names() == ["lookup", "lookup", "lookup"]
    statuses = {k: m.status for k, m in tool_messages(result).items()}
    assert statuses == {
        "call-0": "success",
        "call-1": "success",
        "call-2": "error",
        "call-3": "success",
    }
    record = operator.get_agent(agent.agent_id).raw
    assert (record["steps_decided"], record["steps_allowed"], record["open_steps"]) == (4, 3, 0)


def test_middleware_raises_on_halt(
    operator: WardenClient, agent: WardenClient, tools: list[Any], ran: Ran
) -> None:
    model = turns(calls(("shell", {"command": "rm -rf /"})), AIMessage(content="never"))
    graph = create_agent(model, tools=tools, middleware=[WardenMiddleware(agent)])
    with pytest.raises(AgentHalted) as caught:
        graph.invoke({"messages": [HumanMessage("clean everything")]})
    assert caught.value.decision.rule == "no-rm-rf"
    assert ran.calls == []
    assert operator.get_agent(agent.agent_id).state == "halted"


def test_middleware_can_raise_on_deny_instead(
    agent: WardenClient, tools: list[Any], ran: Ran
) -> None:
    model = turns(calls(("delete_database", {"name": "prod"})), AIMessage(content="never"))
    graph = create_agent(model, tools=tools, middleware=[WardenMiddleware(agent, on_deny="raise")])
    with pytest.raises(StepDenied):
        graph.invoke({"messages": [HumanMessage("drop it")]})
    assert ran.calls == []


def test_middleware_reports_a_failing_tool_as_a_failure(
    operator: WardenClient, agent: WardenClient, tools: list[Any]
) -> None:
    model = turns(calls(("flaky", {"fail": True})), AIMessage(content="never"))
    graph = create_agent(model, tools=tools, middleware=[WardenMiddleware(agent)])
    with pytest.raises(RuntimeError, match="flaky failed"):
        graph.invoke({"messages": [HumanMessage("try")]})
    record = operator.get_agent(agent.agent_id).raw
    assert record["consecutive_failures"] == 1 and record["open_steps"] == 0


async def test_middleware_async_path_with_an_async_client(
    node: Node, operator: WardenClient, aagent: AsyncWardenClient, tools: list[Any], ran: Ran
) -> None:
    model = turns(
        calls(
            ("lookup", {"query": "x"}),
            ("lookup", {"query": "y"}),
            ("delete_database", {"name": "prod"}),
        ),
        AIMessage(content="done"),
    )
    graph = create_agent(model, tools=tools, middleware=[WardenMiddleware(aclient=aagent)])
    result = await graph.ainvoke({"messages": [HumanMessage("go")]})
    assert ran.names() == ["lookup", "lookup"]
    assert tool_messages(result)["call-2"].status == "error"
    record = operator.get_agent(aagent.agent_id).raw
    assert (record["steps_decided"], record["steps_allowed"], record["open_steps"]) == (3, 2, 0)


async def test_middleware_async_path_with_only_a_sync_client(
    operator: WardenClient, agent: WardenClient, tools: list[Any], ran: Ran
) -> None:
    model = turns(
        calls(("lookup", {"query": "z"}), ("delete_database", {"name": "prod"})),
        AIMessage(content="done"),
    )
    graph = create_agent(model, tools=tools, middleware=[WardenMiddleware(agent)])
    result = await graph.ainvoke({"messages": [HumanMessage("go")]})
    assert ran.calls == [("lookup", "z")], "the denied tool never ran"
    assert tool_messages(result)["call-1"].status == "error"
    record = operator.get_agent(agent.agent_id).raw
    assert (record["steps_decided"], record["steps_allowed"], record["open_steps"]) == (2, 1, 0)


def test_callback_handler_lets_allowed_tools_run_and_stops_denied_ones(
    operator: WardenClient, agent: WardenClient, tools: list[Any], ran: Ran
) -> None:
    lookup, delete_database, _, flaky = tools
    handler = WardenCallbackHandler(agent)
    config: Any = {"callbacks": [handler]}

    assert lookup.invoke({"query": "ok"}, config=config) == "found ok"
    with pytest.raises(StepDenied) as caught:
        delete_database.invoke({"name": "prod"}, config=config)
    assert caught.value.decision.rule == "no-db-delete"
    with pytest.raises(RuntimeError):
        flaky.invoke({"fail": True}, config=config)

    assert ran.calls == [("lookup", "ok"), ("flaky", True)], "the denied tool never ran"
    record = operator.get_agent(agent.agent_id).raw
    assert (record["steps_decided"], record["steps_allowed"], record["open_steps"]) == (3, 2, 0)
    assert record["consecutive_failures"] == 1


async def test_callback_handler_stops_denied_tools_on_the_async_path(
    agent: WardenClient, tools: list[Any], ran: Ran
) -> None:
    _, delete_database, _, _ = tools
    with pytest.raises(StepDenied):
        await delete_database.ainvoke(
            {"name": "prod"}, config={"callbacks": [WardenCallbackHandler(agent)]}
        )
    assert ran.calls == []


def proxied_model(llm_base_url: str, agent: WardenClient, *, streaming: bool) -> ChatOpenAI:
    """langchain-openai's chat model on the node's LLM proxy, the agent's token as API key."""
    return ChatOpenAI(
        model="fake-model",
        base_url=llm_base_url,
        api_key=agent.config.token,  # type: ignore[arg-type]
        max_retries=0,
        streaming=streaming,
    )


@pytest.mark.parametrize("streaming", [False, True])
def test_chat_openai_through_the_proxy_with_the_middleware(
    operator: WardenClient,
    agent: WardenClient,
    tools: list[Any],
    ran: Ran,
    fake_llm: FakeLLM,
    llm_base_url: str,
    streaming: bool,
) -> None:
    fake_llm.chat_tool_calls(("lookup", {"query": "pools"}), usage=(20, 6))
    fake_llm.chat_text("done", usage=(30, 2))
    model = proxied_model(llm_base_url, agent, streaming=streaming)
    graph = create_agent(model, tools=tools, middleware=[WardenMiddleware(agent)])

    result = graph.invoke({"messages": [HumanMessage("look up pools")]})

    assert result["messages"][-1].content == "done"
    assert ran.calls == [("lookup", "pools")]
    assert tool_messages(result)["call_0"].content == "found pools"
    sent = fake_llm.requests_to(CHAT)
    assert [r.body.get("stream", False) for r in sent] == [streaming, streaming]
    record = settled(operator, str(agent.agent_id))
    # Two model calls, the proposal of lookup judged by the proxy, lookup asked by the
    # middleware; the model calls charged their usage at the price.
    assert (record["steps_decided"], record["steps_allowed"], record["open_steps"]) == (4, 4, 0)
    assert record["spent"]["cost_micro_usd"] == spend_micro_usd(50, 8)


@pytest.mark.parametrize("streaming", [False, True])
def test_chat_openai_raises_when_the_proxy_refuses_the_models_tool_call(
    operator: WardenClient,
    agent: WardenClient,
    tools: list[Any],
    ran: Ran,
    fake_llm: FakeLLM,
    llm_base_url: str,
    streaming: bool,
) -> None:
    fake_llm.chat_tool_calls(("shell", {"command": "rm -rf /"}))
    model = proxied_model(llm_base_url, agent, streaming=streaming)
    graph = create_agent(model, tools=tools, middleware=[WardenMiddleware(agent)])
    # Whole, the answer is a 403 (PermissionDeniedError); streamed, an error event ends the
    # stream (APIError): LangChain passes either on as the openai client raised it.
    with pytest.raises(openai.APIError) as caught:
        graph.invoke({"messages": [HumanMessage("clean everything")]})
    assert caught.value.code == "tool_call_refused"
    assert "no-rm-rf" in caught.value.message
    assert ran.calls == []
    assert operator.get_agent(agent.agent_id).state == "halted"
