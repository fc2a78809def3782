"""The provider SDKs, unmodified, through the node's LLM proxy: the `openai` client's chat
completions and Responses API and the `anthropic` client's messages, whole and streamed, with
the agent's warden token as their API key. The node forwards to the scripted fake server (its
upstream, with the provider key it holds), settles each call from the usage the answer
reports at the configured price, judges the tool calls the model proposes, and cuts a live
stream when the agent is halted."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import anthropic
import openai
import pytest
from anthropic.types import MessageParam
from openai.types.chat import ChatCompletionMessageParam
from openai.types.shared_params import ResponseFormatJSONSchema

from warden_client import Agent, WardenClient, anthropic_client, openai_client

from .conftest import (
    MAX_OUTPUT_TOKENS,
    UPSTREAM_KEY,
    Node,
    new_agent_id,
    settled,
    spend_micro_usd,
    wait_until,
)
from .fake_llm import CHAT, MESSAGES, RESPONSES, FakeLLM

USER: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hi"}]
CLAUDE_USER: list[MessageParam] = [{"role": "user", "content": "hi"}]
SLOW_TEXT = " ".join(f"word{i}" for i in range(200))
"""A long answer: streamed a word every SLOW_DELAY_S, it would take 10 s unless cut."""
SLOW_DELAY_S = 0.05


@pytest.fixture
def registered(operator: WardenClient) -> Agent:
    return operator.register_agent(new_agent_id("pyp"), pool="swarm")


@pytest.fixture
def chat(node: Node, registered: Agent) -> Iterator[openai.OpenAI]:
    client = openai_client(node.base_url, registered, max_retries=0)
    yield client
    client.close()


@pytest.fixture
def claude(node: Node, registered: Agent) -> Iterator[anthropic.Anthropic]:
    client = anthropic_client(node.base_url, registered, max_retries=0)
    yield client
    client.close()


def spent(operator: WardenClient, agent_id: str) -> tuple[int, int]:
    """The agent's spent (tokens, micro-USD)."""
    record = settled(operator, agent_id)
    return record["spent"]["tokens"], record["spent"]["cost_micro_usd"]


def test_openai_chat_completions_whole_and_streamed_are_charged_the_usage_at_the_price(
    operator: WardenClient, registered: Agent, chat: openai.OpenAI, fake_llm: FakeLLM
) -> None:
    fake_llm.chat_text("hello world", usage=(12, 7))
    answer = chat.chat.completions.create(model="fake-model", messages=USER, max_tokens=50)
    assert answer.choices[0].message.content == "hello world"
    assert answer.usage is not None and answer.usage.prompt_tokens == 12
    assert spent(operator, registered.id) == (19, spend_micro_usd(12, 7))

    fake_llm.chat_text("streamed to you", usage=(30, 9))
    stream = chat.chat.completions.create(model="fake-model", messages=USER, stream=True)
    pieces, usages = [], []
    for chunk in stream:
        pieces += [c.delta.content or "" for c in chunk.choices]
        usages += [chunk.usage] if chunk.usage else []
    assert "".join(pieces) == "streamed to you"
    # The proxy asked the upstream for the usage chunk (stream_options.include_usage) to
    # settle from it; the client did not ask, so it does not get it.
    assert usages == []
    assert spent(operator, registered.id) == (19 + 39, spend_micro_usd(12 + 30, 7 + 9))

    whole, streamed = fake_llm.requests_to(CHAT)
    # The upstream got the provider key, never the agent's token, and an output bound.
    assert whole.headers["authorization"] == f"Bearer {UPSTREAM_KEY}"
    assert str(registered.token) not in str(whole.headers)
    # The limit the client sent is kept (clamped to the model's); with none, one is written.
    assert whole.body["max_tokens"] == 50 and "max_completion_tokens" not in whole.body
    assert streamed.body["max_completion_tokens"] == MAX_OUTPUT_TOKENS
    assert streamed.body["stream_options"] == {"include_usage": True}


def test_openai_responses_whole_and_streamed(
    operator: WardenClient, registered: Agent, chat: openai.OpenAI, fake_llm: FakeLLM
) -> None:
    fake_llm.responses_text("a response", usage=(20, 4))
    response = chat.responses.create(model="fake-model", input="hi", max_output_tokens=64)
    assert response.output_text == "a response"
    assert spent(operator, registered.id) == (24, spend_micro_usd(20, 4))

    fake_llm.responses_text("streamed response", usage=(8, 3))
    events = list(chat.responses.create(model="fake-model", input="hi", stream=True))
    kinds = [e.type for e in events]
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
    deltas = [e.delta for e in events if e.type == "response.output_text.delta"]
    assert "".join(deltas) == "streamed response"

    # The SDK's stream helper, which rebuilds the response from the events.
    fake_llm.responses_text("helped", usage=(5, 1))
    with chat.responses.stream(model="fake-model", input="hi") as helper:
        final = helper.get_final_response()
    assert final.output_text == "helped"
    assert final.usage is not None and final.usage.output_tokens == 1

    assert spent(operator, registered.id) == (24 + 11 + 6, spend_micro_usd(33, 8))
    assert [r.body["max_output_tokens"] for r in fake_llm.requests_to(RESPONSES)] == [
        64,
        MAX_OUTPUT_TOKENS,
        MAX_OUTPUT_TOKENS,
    ]


def test_anthropic_messages_whole_and_streamed(
    operator: WardenClient, registered: Agent, claude: anthropic.Anthropic, fake_llm: FakeLLM
) -> None:
    fake_llm.messages_text("from claude", usage=(15, 6))
    message = claude.messages.create(model="fake-claude", max_tokens=100, messages=CLAUDE_USER)
    assert [b.text for b in message.content if b.type == "text"] == ["from claude"]
    assert spent(operator, registered.id) == (21, spend_micro_usd(15, 6))

    fake_llm.messages_text("streamed claude", usage=(9, 2))
    events = list(
        claude.messages.create(
            model="fake-claude", max_tokens=100, messages=CLAUDE_USER, stream=True
        )
    )
    assert [e.type for e in events][0] == "message_start"
    text = [e.delta.text for e in events if e.type == "content_block_delta"]  # type: ignore[union-attr]
    assert "".join(text) == "streamed claude"

    fake_llm.messages_text("helped claude", usage=(4, 3))
    with claude.messages.stream(
        model="fake-claude", max_tokens=100, messages=CLAUDE_USER
    ) as helper:
        assert "".join(helper.text_stream) == "helped claude"
        final = helper.get_final_message()
    assert final.usage.input_tokens == 4 and final.usage.output_tokens == 3

    assert spent(operator, registered.id) == (21 + 11 + 7, spend_micro_usd(28, 11))
    sent = fake_llm.requests_to(MESSAGES)
    assert {r.headers["x-api-key"] for r in sent} == {UPSTREAM_KEY}
    assert all(str(registered.token) not in str(r.headers) for r in sent)


def test_a_model_without_a_price_is_refused_naming_model_not_priced(
    operator: WardenClient, registered: Agent, chat: openai.OpenAI, fake_llm: FakeLLM
) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        chat.chat.completions.create(model="gpt-unpriced", messages=USER)
    assert caught.value.status_code == 400
    assert caught.value.code == "model_not_priced"
    assert "gpt-unpriced" in str(caught.value) and "prices" in str(caught.value)
    assert fake_llm.requests == [], "nothing was forwarded"
    assert spent(operator, registered.id) == (0, 0)


def test_a_forbidden_tool_call_in_a_whole_answer_is_refused_with_the_decision(
    operator: WardenClient, registered: Agent, chat: openai.OpenAI, fake_llm: FakeLLM
) -> None:
    fake_llm.chat_tool_calls(("delete_database", {"name": "prod"}), usage=(10, 5))
    with pytest.raises(openai.PermissionDeniedError) as caught:
        chat.chat.completions.create(model="fake-model", messages=USER)
    error = caught.value
    assert error.code == "tool_call_refused"
    assert "delete_database" in error.message and "no-db-delete" in error.message
    assert error.response.json()["warden"]["rule"] == "no-db-delete"
    # The call was made and is paid for; the agent goes on (a deny, not a halt).
    assert spent(operator, registered.id)[1] == spend_micro_usd(10, 5)
    assert operator.get_agent(registered.id).state == "running"


def test_a_forbidden_tool_call_in_a_stream_ends_it_with_an_error(
    operator: WardenClient, registered: Agent, chat: openai.OpenAI, fake_llm: FakeLLM
) -> None:
    fake_llm.chat_tool_calls(("delete_database", {"name": "prod"}))
    stream = chat.chat.completions.create(model="fake-model", messages=USER, stream=True)
    calls = []
    with pytest.raises(openai.APIError) as caught:
        for chunk in stream:
            calls += [c.delta.tool_calls for c in chunk.choices if c.delta.tool_calls]
    assert caught.value.code == "tool_call_refused"
    assert "no-db-delete" in caught.value.message
    assert calls == [], "the refused call never reached the client"
    assert settled(operator, registered.id)["state"] == "running"


def halt_after_first_event(operator: WardenClient, agent_id: str) -> Callable[[], None]:
    """Returns `first()`, to call when the client got its first event: the operator halts
    the agent then, while the stream is live (as an operator would)."""
    done = threading.Event()

    def first() -> None:
        if not done.is_set():
            done.set()
            operator.halt(agent_id, reason="stop that stream", by="tests")

    return first


def test_a_halt_cuts_a_live_chat_stream_and_the_openai_client_raises(
    operator: WardenClient, registered: Agent, chat: openai.OpenAI, fake_llm: FakeLLM
) -> None:
    fake_llm.chat_text(SLOW_TEXT, delay=SLOW_DELAY_S)
    first = halt_after_first_event(operator, registered.id)
    started = time.monotonic()
    received = []
    stream = chat.chat.completions.create(model="fake-model", messages=USER, stream=True)
    with pytest.raises(openai.APIError) as caught:
        for chunk in stream:
            received += [c.delta.content or "" for c in chunk.choices]
            first()
    assert caught.value.code == "halted"
    assert "halted" in caught.value.message
    assert time.monotonic() - started < 5, "cut at once, not at the stream's end"
    assert 0 < len(received) < 200
    record = settled(operator, registered.id)
    assert record["state"] == "halted"
    # The upstream's stream was dropped, so it stops generating.
    wait_until("the upstream's stream cut", lambda: fake_llm.streams_cut == 1)
    # Halted, the agent's next call is refused before anything is forwarded.
    with pytest.raises(openai.PermissionDeniedError) as refused:
        chat.chat.completions.create(model="fake-model", messages=USER)
    assert refused.value.code == "halted"
    assert len(fake_llm.requests_to(CHAT)) == 1


def test_a_halt_cuts_a_live_responses_stream_with_an_error_event(
    operator: WardenClient, registered: Agent, chat: openai.OpenAI, fake_llm: FakeLLM
) -> None:
    fake_llm.responses_text(SLOW_TEXT, delay=SLOW_DELAY_S)
    first = halt_after_first_event(operator, registered.id)
    events = []
    for event in chat.responses.create(model="fake-model", input="hi", stream=True):
        events.append(event)
        first()
    # The Responses API reports a stream's error as an `error` event (the SDK yields it as a
    # ResponseErrorEvent, it does not raise); the stream ends there.
    last = events[-1]
    assert last.type == "error" and last.code == "halted", last
    assert "response.completed" not in [e.type for e in events]
    assert settled(operator, registered.id)["state"] == "halted"


def test_a_halt_cuts_a_live_anthropic_stream_and_the_anthropic_client_raises(
    operator: WardenClient, registered: Agent, claude: anthropic.Anthropic, fake_llm: FakeLLM
) -> None:
    fake_llm.messages_text(SLOW_TEXT, delay=SLOW_DELAY_S)
    first = halt_after_first_event(operator, registered.id)
    stream = claude.messages.create(
        model="fake-claude", max_tokens=100, messages=CLAUDE_USER, stream=True
    )
    with pytest.raises(anthropic.APIStatusError) as caught:
        for _ in stream:
            first()
    assert isinstance(caught.value.body, dict)
    assert caught.value.body["error"]["code"] == "halted"
    assert caught.value.type == "permission_error"
    assert settled(operator, registered.id)["state"] == "halted"


def test_the_order_of_a_schemas_properties_reaches_the_upstream(
    chat: openai.OpenAI, fake_llm: FakeLLM
) -> None:
    schema = {
        "type": "object",
        "properties": {"reasoning": {"type": "string"}, "answer": {"type": "string"}},
        "required": ["reasoning", "answer"],
        "additionalProperties": False,
    }
    answer_format: ResponseFormatJSONSchema = {
        "type": "json_schema",
        "json_schema": {"name": "answer", "schema": schema, "strict": True},
    }
    fake_llm.chat_text('{"reasoning": "r", "answer": "a"}')
    chat.chat.completions.create(model="fake-model", messages=USER, response_format=answer_format)
    forwarded = fake_llm.requests_to(CHAT)[0].body["response_format"]["json_schema"]["schema"]
    assert list(forwarded["properties"]) == ["reasoning", "answer"]


def test_a_chat_stream_that_did_not_ask_for_usage_gets_no_usage_chunk(
    chat: openai.OpenAI, fake_llm: FakeLLM
) -> None:
    fake_llm.chat_text("one two")
    stream = chat.chat.completions.create(model="fake-model", messages=USER, stream=True)
    text = [chunk.choices[0].delta.content or "" for chunk in stream]
    assert "".join(text) == "one two"
