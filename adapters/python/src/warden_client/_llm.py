"""Plain OpenAI and Anthropic SDK clients pointed at the node's LLM proxy.

The node meters every model call it forwards (`POST /v1/chat/completions`, `/v1/responses`,
`/v1/messages`) against the agent's budgets and holds the real provider keys; the agent's
own warden token is its API key. The SDKs are optional: install `warden-client[openai]` or
`warden-client[anthropic]`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._types import Agent

if TYPE_CHECKING:
    import anthropic
    import openai


def proxy_base_url(base_url: str, api: str) -> str:
    """The base URL an SDK needs for the node at `base_url`: the OpenAI SDK appends
    `/chat/completions` and `/responses` to it (so it ends in `/v1`), the Anthropic SDK
    appends `/v1/messages` (so it is the node's root)."""
    root = base_url.rstrip("/")
    if root.endswith("/v1"):
        root = root[: -len("/v1")]
    return root + "/v1" if api == "openai" else root


def openai_client(base_url: str, token: str | Agent, **kwargs: Any) -> openai.OpenAI:
    """An `openai.OpenAI` whose calls go through the node's LLM proxy as the agent whose
    token (or registration) is given. Other keyword arguments go to `openai.OpenAI`."""
    import openai

    return openai.OpenAI(
        base_url=proxy_base_url(base_url, "openai"), api_key=_token(token), **kwargs
    )


def async_openai_client(base_url: str, token: str | Agent, **kwargs: Any) -> openai.AsyncOpenAI:
    """An `openai.AsyncOpenAI` through the node's LLM proxy; see `openai_client`."""
    import openai

    return openai.AsyncOpenAI(
        base_url=proxy_base_url(base_url, "openai"), api_key=_token(token), **kwargs
    )


def anthropic_client(base_url: str, token: str | Agent, **kwargs: Any) -> anthropic.Anthropic:
    """An `anthropic.Anthropic` whose calls go through the node's LLM proxy (its Anthropic
    shape, `POST /v1/messages`); the agent's token is the API key (the SDK sends it as
    `x-api-key` or as a bearer token, depending on its version)."""
    import anthropic

    return anthropic.Anthropic(
        base_url=proxy_base_url(base_url, "anthropic"), api_key=_token(token), **kwargs
    )


def async_anthropic_client(
    base_url: str, token: str | Agent, **kwargs: Any
) -> anthropic.AsyncAnthropic:
    """An `anthropic.AsyncAnthropic` through the node's LLM proxy; see `anthropic_client`."""
    import anthropic

    return anthropic.AsyncAnthropic(
        base_url=proxy_base_url(base_url, "anthropic"), api_key=_token(token), **kwargs
    )


def _token(token: str | Agent) -> str:
    value = token.token if isinstance(token, Agent) else token
    if not value:
        raise ValueError("the agent's token is needed: pass the registration's answer or its token")
    return value
