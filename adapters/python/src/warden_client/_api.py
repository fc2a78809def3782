"""The node's routes as requests, and its answers as values or errors, without any I/O.

Both clients build every request here and read every answer here, so the sync and the async
client cannot drift apart: they only move the bytes.
"""

from __future__ import annotations

import json
import math
import threading
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx

from ._types import (
    Agent,
    ApprovalTimeout,
    Cost,
    Decision,
    OutcomeResult,
    Signals,
    WardenError,
    _short,
)

TIMEOUT_S_DEFAULT = 10.0
"""How long a request may take in all (connect, send, answer) unless the client says
otherwise; a long poll adds its wait."""
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
SETTLED_MAX = 4096
"""How many settled steps a client remembers, so that their allow is not used again."""
AMOUNT_MAX = 10**15
"""The largest integer amount (tokens, micro-dollars, custom) the node accepts."""
USD_MAX = 1e9
"""The largest `cost_usd` the node accepts."""
CUSTOM_MAX = 16
"""The most custom dimensions one cost may name."""


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
    status: int = 200
    """The status of a good answer (the API's): any other is an error, 2xx included."""


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
    return Request("POST", "/v1/agents", body, status=201)


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
        body["cost"] = check_cost(cost, f"outcome of {step_id}")
    return Request("POST", f"/v1/agents/{seg(agent_id)}/steps/{seg(step_id)}/outcome", body)


def heartbeat(agent_id: str) -> Request:
    # A sign of life said twice is still one: safe to retry.
    return Request("POST", f"/v1/agents/{seg(agent_id)}/heartbeat", {}, idempotent=True, status=204)


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


def check_cost(cost: Mapping[str, Any], what: str) -> dict[str, Any]:
    """An outcome's cost as the node accepts it (integers of 0..10^15 for tokens,
    micro-dollars and custom dimensions; a finite `cost_usd` of 0..10^9; one spelling of
    money), else a `bad_outcome` error, before anything is sent."""

    def bad(why: str) -> WardenError:
        return WardenError(f"{what}: {why}", code="bad_outcome")

    for key, value in cost.items():
        if key in ("tokens", "cost_micro_usd"):
            if not _is_amount(value):
                raise bad(f"{key} must be an integer of 0..{AMOUNT_MAX}, got {_short(value)}")
        elif key == "cost_usd":
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
            if not ok or not math.isfinite(value) or not 0 <= value <= USD_MAX:
                raise bad(f"cost_usd must be a number of 0..{USD_MAX:g}, got {_short(value)}")
        elif key == "custom":
            if not isinstance(value, Mapping) or len(value) > CUSTOM_MAX:
                raise bad(f"custom must map at most {CUSTOM_MAX} names to amounts")
            for name, amount in value.items():
                if not isinstance(name, str) or not _is_amount(amount):
                    raise bad(f"custom {name!r} must be an integer of 0..{AMOUNT_MAX}")
        else:
            raise bad(f"unknown cost dimension {key!r}")
    if "cost_usd" in cost and "cost_micro_usd" in cost:
        raise bad("money is cost_usd or cost_micro_usd, not both")
    return dict(cost)


def _is_amount(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= AMOUNT_MAX


def refused(e: WardenError) -> bool:
    """The outcome was refused for what it says (the client's check or a 4xx): settling
    again without a cost may still succeed."""
    return e.code == "bad_outcome" or (e.status is not None and 400 <= e.status < 500)


NOT_RUN: Mapping[str, int] = {"tokens": 0, "cost_micro_usd": 0}
"""The cost of a step whose tool never ran: nothing in tokens and money (custom
dimensions, which it cannot know, settle as reserved)."""


def step_id_of(step_or_approval: str | Decision, agent_id: str) -> str:
    """The step id in a Decision, a step id (`s-91`) or an approval id (`agent/s-91`); an
    error for an approval of another agent than `agent_id`."""
    if isinstance(step_or_approval, Decision):
        approval, step_id = step_or_approval.approval, step_or_approval.step
    elif "/" in step_or_approval:
        approval, step_id = step_or_approval, step_or_approval.rsplit("/", 1)[1]
    else:
        approval, step_id = None, step_or_approval
    if approval is not None and approval.rsplit("/", 1)[0] != agent_id:
        raise WardenError(
            f"approval {approval} is not one of agent {agent_id}'s steps", code="wrong_agent"
        )
    return step_id


def decision_of(answer: Mapping[str, Any], step_id: str) -> Decision:
    """The decision of step `step_id` in an answer; `bad_answer` if it is another step's."""
    decision = Decision.from_json(answer)
    if decision.step != step_id:
        raise WardenError(
            f"asked for step {step_id}, the node answered step {decision.step}",
            code="bad_answer",
        )
    return decision


def outcome_of(answer: Mapping[str, Any], step_id: str) -> OutcomeResult:
    """The outcome of step `step_id` in an answer; `bad_answer` if it is another step's."""
    result = OutcomeResult.from_json(answer)
    if result.step != step_id:
        raise WardenError(
            f"settled step {step_id}, the node answered step {result.step}", code="bad_answer"
        )
    return result


def approvals_of(answer: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The list of `GET /v1/approvals`; `bad_answer` on another shape."""
    items = answer.get("approvals")
    if not isinstance(items, list) or not all(isinstance(a, Mapping) for a in items):
        raise WardenError(
            f"approvals: not a list of approvals: {_short(answer)}", code="bad_answer"
        )
    return items


def check_wait(timeout_s: float) -> float:
    """A wait in seconds: finite and not negative, else a ValueError."""
    if not isinstance(timeout_s, (int, float)) or not 0 <= timeout_s < math.inf:
        raise ValueError(f"a wait must be a finite number of seconds >= 0, got {timeout_s!r}")
    return float(timeout_s)


class Settled:
    """The steps a client has settled (the latest SETTLED_MAX), so that a final allow read
    again after its outcome is refused instead of running the action twice."""

    def __init__(self) -> None:
        self._ids: OrderedDict[str, None] = OrderedDict()
        self._lock = threading.Lock()

    def add(self, step_id: str) -> None:
        with self._lock:
            self._ids[step_id] = None
            self._ids.move_to_end(step_id)
            while len(self._ids) > SETTLED_MAX:
                self._ids.popitem(last=False)

    def check(self, step_id: str) -> None:
        with self._lock:
            settled = step_id in self._ids
        if settled:
            raise WardenError(
                f"step {step_id} was settled by this client: its allow may not be used again",
                code="step_settled",
            )


def read_answer(status: int, body: bytes, what: str, expected: int = 200) -> Any:
    """The JSON of an answer with the `expected` status (None for an empty one); a
    `WardenError` with the node's code and message for an error status, and `bad_answer`
    for any other status or an answer that is not plain JSON (duplicate keys, NaN, nesting
    too deep, an `error` beside a 2xx answer's fields)."""
    if status == expected:
        if not body:
            return None
        try:
            value = parse_json(body)
        except ValueError as e:
            raise WardenError(
                f"{what}: the node's answer is not JSON: {e}", code="bad_answer", status=status
            ) from None
        if isinstance(value, Mapping) and "error" in value:
            raise WardenError(
                f"{what}: the node's answer carries an error: {_short(value)}",
                code="bad_answer",
                status=status,
            )
        return value
    if 200 <= status < 300:
        raise WardenError(
            f"{what}: the node answered HTTP {status}, not {expected}",
            code="bad_answer",
            status=status,
        )
    code, message = "http_error", body.decode("utf-8", "replace")[:500]
    try:
        error = parse_json(body)["error"]
        code, message = str(error["code"]), str(error["message"])
    except (ValueError, KeyError, TypeError):
        pass
    raise WardenError(f"{what}: {message}", code=code, status=status)


def parse_json(body: bytes) -> Any:
    """Strict JSON: a ValueError for duplicate keys, NaN or Infinity, or nesting too deep."""
    try:
        return json.loads(body, object_pairs_hook=_unique_keys, parse_constant=_no_constant)
    except RecursionError:
        raise ValueError("nested too deeply") from None


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    value: dict[str, Any] = {}
    for key, item in pairs:
        if key in value:
            raise ValueError(f"duplicate key {key!r}")
        value[key] = item
    return value


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


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


def too_slow(base_url: str, what: str, timeout_s: float) -> WardenError:
    return WardenError(
        f"{what}: no whole answer from {base_url} within {timeout_s:g} s", code="client_timeout"
    )


def add_note(exc: BaseException, text: str) -> None:
    """Adds a note to an exception where Python supports notes (3.11+)."""
    note = getattr(exc, "add_note", None)
    if note is not None:
        note(text)
