"""The node's routes as requests, and its answers as values or errors, without any I/O.

Both clients build every request here and read every answer here, so the sync and the async
client cannot drift apart: they only move the bytes.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx

from ._types import Agent, ApprovalTimeout, Cost, Decision, Signals, WardenError, _short

TIMEOUT_S_DEFAULT = 10.0
"""How long a request may take (connect, send, answer) unless the client says otherwise."""
CONNECT_TIMEOUT_S_DEFAULT = 5.0
"""How long connecting may take."""
RETRIES_DEFAULT = 2
"""How often an idempotent request is tried again after a failed connection."""
RETRY_BACKOFF_S = 0.2
"""The pause before the first retry; it doubles with each."""
ANSWER_BYTES_MAX_DEFAULT = 16 << 20
"""The largest answer read; a larger one is an error (`bad_answer`), never buffered."""
RETRYABLE: tuple[type[Exception], ...] = (
    httpx.ConnectError,
    httpx.ConnectTimeout,
    httpx.RemoteProtocolError,
)
"""Connection failures after which an idempotent request is tried again: no connection, or
a kept-alive connection the node closed without answering."""
LONG_POLL_S_MAX = 30.0
"""The longest single wait asked of the node (it grants at most 60 s and its request timeout)."""
LONG_POLL_S_MIN = 0.001
"""Below this, a wait is not worth a long poll."""


@dataclass(frozen=True)
class Request:
    """One call of the API. `idempotent` calls may be retried after a failed connection;
    `extra_timeout_s` lengthens the answer timeout (long polls)."""

    method: str
    path: str
    body: Any = None
    params: Mapping[str, str] | None = None
    idempotent: bool = False
    extra_timeout_s: float = 0.0


def seg(value: str) -> str:
    """A path segment, percent-encoded ('/' in approval ids and pool paths included)."""
    return quote(value, safe="")


def register(
    agent_id: str | None,
    *,
    pool: str | None,
    budgets: Mapping[str, Any] | None,
    labels: Mapping[str, str] | None,
    heartbeat_timeout: str | None,
    parent: str | None,
    depends_on: list[str] | None,
) -> Request:
    body = _compact(
        id=agent_id,
        pool=pool,
        budgets=_opt_dict(budgets),
        labels=_opt_dict(labels),
        heartbeat_timeout=heartbeat_timeout,
        parent=parent,
        depends_on=depends_on,
    )
    return Request("POST", "/v1/agents", body)


def get_agent(agent_id: str) -> Request:
    return Request("GET", f"/v1/agents/{seg(agent_id)}", idempotent=True)


def step(
    agent_id: str,
    tool: str,
    action: str,
    *,
    args: Any,
    cost: Cost | Mapping[str, Any] | None,
    signals: Signals | Mapping[str, Any] | None,
) -> Request:
    body = _compact(
        tool=tool,
        action=action,
        args=args,
        cost=_opt_dict(cost),
        signals=_opt_dict(signals),
    )
    return Request("POST", f"/v1/agents/{seg(agent_id)}/steps", body)


def read_step(agent_id: str, step_id: str, wait_s: float) -> Request:
    """The step's decision; with `wait_s` > 0, a long poll of a parked step."""
    params: dict[str, str] = {}
    if wait_s >= LONG_POLL_S_MIN:
        params["wait"] = f"{max(1, math.floor(wait_s * 1000))}ms"
    return Request(
        "GET",
        f"/v1/agents/{seg(agent_id)}/steps/{seg(step_id)}",
        params=params or None,
        idempotent=True,
        extra_timeout_s=wait_s,
    )


def outcome(agent_id: str, step_id: str, success: bool, cost: Mapping[str, Any]) -> Request:
    body: dict[str, Any] = {"status": "success" if success else "failure"}
    if cost:
        body["cost"] = dict(cost)
    return Request("POST", f"/v1/agents/{seg(agent_id)}/steps/{seg(step_id)}/outcome", body)


def heartbeat(agent_id: str) -> Request:
    # A sign of life said twice is still one: safe to retry.
    return Request("POST", f"/v1/agents/{seg(agent_id)}/heartbeat", {}, idempotent=True)


def halt(agent_id: str, reason: str | None, by: str | None) -> Request:
    return Request("POST", f"/v1/agents/{seg(agent_id)}/halt", _compact(reason=reason, by=by))


def resume(agent_id: str, reason: str | None, by: str | None) -> Request:
    return Request("POST", f"/v1/agents/{seg(agent_id)}/resume", _compact(reason=reason, by=by))


def approvals() -> Request:
    return Request("GET", "/v1/approvals", idempotent=True)


def answer_approval(approval_id: str, approve: bool, reason: str | None, by: str | None) -> Request:
    body = _compact(decision="approve" if approve else "deny", reason=reason, by=by)
    return Request("POST", f"/v1/approvals/{seg(approval_id)}", body)


def outcome_cost(
    cost: Cost | Mapping[str, Any] | None,
    tokens: int | None,
    cost_usd: float | None,
    cost_micro_usd: int | None,
) -> dict[str, Any]:
    """One cost object from a mapping and keyword amounts (the keywords win)."""
    merged: dict[str, Any] = dict(cost or {})
    merged.update(_compact(tokens=tokens, cost_usd=cost_usd, cost_micro_usd=cost_micro_usd))
    return merged


def step_id_of(step_or_approval: str | Decision) -> str:
    """The step id in a Decision, a step id (`s-91`) or an approval id (`agent/s-91`)."""
    if isinstance(step_or_approval, Decision):
        return step_or_approval.step
    return step_or_approval.rsplit("/", 1)[-1]


def read_answer(status: int, body: bytes, what: str) -> Any:
    """The JSON of a 2xx answer (None for an empty one); a `WardenError` with the node's
    code and message for any other status."""
    if 200 <= status < 300:
        if not body:
            return None
        try:
            return json.loads(body)
        except ValueError as e:
            raise WardenError(
                f"{what}: the node's answer is not JSON: {e}", code="bad_answer", status=status
            ) from None
    code, message = "http_error", body.decode("utf-8", "replace")[:500]
    try:
        error = json.loads(body)["error"]
        code, message = str(error["code"]), str(error["message"])
    except (ValueError, KeyError, TypeError):
        pass
    raise WardenError(f"{what}: {message}", code=code, status=status)


def expect_mapping(value: Any, what: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise WardenError(f"{what}: expected a JSON object, got {_short(value)}", code="bad_answer")
    return value


def _opt_dict(value: Mapping[str, Any] | None) -> dict[str, Any] | None:
    return dict(value) if value is not None else None


def _compact(**fields: Any) -> dict[str, Any]:
    return {k: v for k, v in fields.items() if v is not None}


def identity(agent: Agent | str, token: str | None) -> tuple[str, str]:
    """The (id, token) of an agent: a registration's answer, or an id and its token."""
    if isinstance(agent, Agent):
        token = token or agent.token
        agent = agent.id
    if not token:
        raise ValueError(f"no token for agent {agent}: pass the registration's answer or token=")
    return agent, token


def approval_id_of(approval: str | Decision) -> str:
    """The approval id in a require_approval Decision, or the id itself."""
    if isinstance(approval, Decision):
        if approval.approval is None:
            raise ValueError(
                f"step {approval.step} is not waiting for approval ({approval.decision})"
            )
        return approval.approval
    return approval


def append_bounded(body: bytearray, chunk: bytes, limit: int, what: str) -> None:
    """Adds a chunk of an answer; past `limit` bytes, a `bad_answer` error."""
    body += chunk
    if len(body) > limit:
        raise WardenError(f"{what}: the answer is larger than {limit} bytes", code="bad_answer")


def early_pause_s(asked: float, now: float, wait_s: float, deadline: float) -> float:
    """How long to pause after a long poll that the node ended early (it is shutting down,
    or granted less than asked), so a wait loop does not spin; never past the deadline."""
    if now - asked >= min(wait_s, 1.0) / 2:
        return 0.0
    return max(0.0, min(0.25, deadline - now))


def approval_timeout(decision: Decision, timeout_s: float) -> ApprovalTimeout:
    return ApprovalTimeout(
        f"warden: nobody answered approval {decision.approval} within {timeout_s:g} s",
        code="approval_timeout",
        decision=decision,
    )


def unreachable(base_url: str, what: str, e: Exception) -> WardenError:
    return WardenError(f"{what}: cannot reach the node at {base_url}: {e!r}", code="unreachable")


def too_slow(base_url: str, what: str, e: Exception) -> WardenError:
    return WardenError(f"{what}: no answer from {base_url} in time ({e!r})", code="client_timeout")


def add_note(exc: BaseException, text: str) -> None:
    """Adds a note to an exception where Python supports notes (3.11+)."""
    note = getattr(exc, "add_note", None)
    if note is not None:
        note(text)
