"""The blocking client of the node's API, and its `governed` block."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import httpx

from . import _api
from ._config import ClientConfig
from ._governed import Governed
from ._types import (
    ActionClass,
    Agent,
    Cost,
    Decision,
    OutcomeResult,
    Signals,
)


class WardenClient:
    """A blocking client of a warden node, for one token: an agent's or the operator's.

    ```python
    op = WardenClient("http://127.0.0.1:7700", operator_token)
    agent = op.as_agent(op.register_agent("coder-1", pool="swarm"))
    with agent.governed("shell", "execute", args={"command": "ls"}) as step:
        ...  # runs only if warden allowed it; the outcome is reported when the block ends
    ```

    Every request has a timeout (`timeout_s`, `connect_timeout_s`); idempotent requests
    (reads, heartbeats) are retried at most `retries` times when the connection fails, never
    steps, outcomes or answers. Errors are `WardenError`s. Thread-safe: one client may serve
    parallel tool calls. Close it (or use `with`) to release its connections.
    `transport` replaces httpx's own (tests, custom TLS); the clients `as_agent` makes share
    it, so closing any of them closes it for all.
    """

    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        agent_id: str | None = None,
        timeout_s: float = _api.TIMEOUT_S_DEFAULT,
        connect_timeout_s: float = _api.CONNECT_TIMEOUT_S_DEFAULT,
        retries: int = _api.RETRIES_DEFAULT,
        actions: Mapping[str, ActionClass] | None = None,
        default_action: ActionClass = "execute",
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self._init(
            ClientConfig(
                base_url,
                token,
                agent_id=agent_id,
                timeout_s=timeout_s,
                connect_timeout_s=connect_timeout_s,
                retries=retries,
                actions=dict(actions or {}),
                default_action=default_action,
            ),
            transport,
        )

    def _init(self, config: ClientConfig, transport: httpx.BaseTransport | None) -> None:
        self.config = config
        self._transport = transport
        self._settled = _api.Settled()
        self._http = httpx.Client(
            base_url=config.base_url,
            headers={"authorization": f"Bearer {config.token}", "accept": "application/json"},
            transport=transport,
            follow_redirects=False,
        )

    @classmethod
    def _from_config(
        cls, config: ClientConfig, transport: httpx.BaseTransport | None
    ) -> WardenClient:
        client = cls.__new__(cls)
        client._init(config, transport)
        return client

    @property
    def agent_id(self) -> str | None:
        """The agent this client speaks for (None for an operator's client)."""
        return self.config.agent_id

    def as_agent(self, agent: Agent | str, token: str | None = None) -> WardenClient:
        """A new client that speaks for `agent`: a registration's answer (which carries the
        token), or an agent id with its `token`. Same node, timeouts and action classes."""
        agent_id, agent_token = _api.identity(agent, token)
        return WardenClient._from_config(
            self.config.for_agent(agent_id, agent_token), self._transport
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> WardenClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- operator ---------------------------------------------------------------------

    def register_agent(
        self,
        agent_id: str | None = None,
        *,
        pool: str | None = None,
        budgets: Mapping[str, Any] | None = None,
        labels: Mapping[str, str] | None = None,
        heartbeat_timeout: str | None = None,
        parent: str | None = None,
        depends_on: list[str] | None = None,
    ) -> Agent:
        """Registers an agent (operator token). The answer's `token` is the agent's own;
        pass the answer to `as_agent`. `budgets` override the policy's defaults
        (`{"steps": 100, "cost_usd": 2.5, "wall_time": "30m"}`); `heartbeat_timeout` is a
        duration (`"2m"`). Raises `WardenError` (`duplicate_agent`, `unknown_pool`, ...)."""
        req = _api.register(
            agent_id,
            pool=pool,
            budgets=budgets,
            labels=labels,
            heartbeat_timeout=heartbeat_timeout,
            parent=parent,
            depends_on=depends_on,
        )
        return Agent.from_json(self._object(req, "register agent"))

    def get_agent(self, agent_id: str | None = None) -> Agent:
        """An agent's record (its own with an agent's token; any with the operator's)."""
        agent_id = agent_id or self.config.agent()
        return Agent.from_json(self._object(_api.get_agent(agent_id), f"agent {agent_id}"))

    def approvals(self) -> list[Mapping[str, Any]]:
        """The steps waiting for a human, oldest first (operator token)."""
        return _api.approvals_of(self._object(_api.approvals(), "approvals"))

    def approve(
        self, approval: str | Decision, *, reason: str | None = None, by: str | None = None
    ) -> Decision:
        """Approves a waiting step (operator token). The answer is the step's final decision,
        which may still be a deny (late) or a halt (a newer, stricter policy)."""
        return self._answer(approval, True, reason, by)

    def deny(
        self, approval: str | Decision, *, reason: str | None = None, by: str | None = None
    ) -> Decision:
        """Denies a waiting step (operator token); the answer is its final decision."""
        return self._answer(approval, False, reason, by)

    def _answer(
        self, approval: str | Decision, approve: bool, reason: str | None, by: str | None
    ) -> Decision:
        approval_id = _api.approval_id_of(approval)
        req = _api.answer_approval(approval_id, approve, reason, by)
        return Decision.from_json(self._object(req, f"approval {approval_id}"))

    def halt(self, agent_id: str, *, reason: str | None = None, by: str | None = None) -> None:
        """Halts an agent (kind external; operator token). Cascade rules apply."""
        self._send(_api.halt(agent_id, reason, by), f"halt {agent_id}")

    def resume(self, agent_id: str, *, reason: str | None = None, by: str | None = None) -> None:
        """Lifts an agent's halt (operator token); audited."""
        self._send(_api.resume(agent_id, reason, by), f"resume {agent_id}")

    # --- agent ------------------------------------------------------------------------

    def step(
        self,
        tool: str,
        action: ActionClass | None = None,
        *,
        args: Any = None,
        cost: Cost | Mapping[str, Any] | None = None,
        signals: Signals | Mapping[str, Any] | None = None,
    ) -> Decision:
        """Asks the node whether the agent may take a step, and reserves its cost if so.

        `action` defaults to the client's `actions[tool]`, else its `default_action`. `cost`
        is what the step expects to use (`{"tokens": 1200, "cost_usd": 0.004}`); a cost not
        declared is reserved at the tool's minimum, never taken as zero. Returns the decision
        whatever it is (see `check` for one that raises); raises `WardenError` when the
        node could not decide (bad step, unknown agent, wrong token, unreachable).
        """
        agent_id = self.config.agent()
        req = _api.step(
            agent_id,
            tool,
            self.config.action_for(tool, action),
            args=args,
            cost=cost,
            signals=signals,
        )
        return Decision.from_json(self._object(req, f"step {tool}"))

    def check(
        self,
        tool: str,
        action: ActionClass | None = None,
        *,
        args: Any = None,
        cost: Cost | Mapping[str, Any] | None = None,
        signals: Signals | Mapping[str, Any] | None = None,
        approval_timeout_s: float | None = None,
    ) -> Decision:
        """Like `step`, but returns only an allow: a halt raises `AgentHalted`, a deny
        `StepDenied`; a require_approval raises `ApprovalRequired` when `approval_timeout_s`
        is None, else waits that long for a human (`ApprovalTimeout` if nobody answers) and
        judges the final decision the same way."""
        decision = self.step(tool, action, args=args, cost=cost, signals=signals)
        if decision.decision == "require_approval" and approval_timeout_s is not None:
            decision = self.wait_for_approval(decision, timeout_s=approval_timeout_s)
        return decision.raise_unless_allowed()

    def wait_for_approval(self, step: str | Decision, timeout_s: float = 300.0) -> Decision:
        """Waits for the final decision of a step parked for approval: allow, deny or halt.

        `step` is the require_approval Decision, its step id (`s-91`) or its approval id
        (`agent/s-91`; another agent's is refused, `wrong_agent`). Long-polls the node (at
        most 30 s a request) until the decision is final or `timeout_s` has passed, then
        raises `ApprovalTimeout` with the last decision. A step this client has already
        settled is refused (`step_settled`): its allow may not run the action again.
        """
        agent_id = self.config.agent()
        step_id = _api.step_id_of(step, agent_id)
        self._settled.check(step_id)
        deadline = time.monotonic() + _api.check_wait(timeout_s)
        while True:
            left = deadline - time.monotonic()
            wait_s = min(_api.LONG_POLL_S_MAX, max(0.0, left))
            asked = time.monotonic()
            req = _api.read_step(agent_id, step_id, wait_s)
            decision = _api.decision_of(self._object(req, f"step {step_id}"), step_id)
            if decision.decision != "require_approval":
                return decision
            now = time.monotonic()
            if now >= deadline:
                raise _api.approval_timeout(decision, timeout_s)
            time.sleep(_api.early_pause_s(asked, now, wait_s, deadline))

    def outcome(
        self,
        step: str | Decision,
        success: bool = True,
        *,
        cost: Cost | Mapping[str, Any] | None = None,
        tokens: int | None = None,
        cost_usd: float | None = None,
        cost_micro_usd: int | None = None,
    ) -> OutcomeResult:
        """Settles an allowed step with what it really used; the rest of the reservation is
        refunded. Every dimension not reported is settled as reserved (never as zero). A cost
        the node would refuse raises `bad_outcome` before anything is sent."""
        agent_id = self.config.agent()
        step_id = _api.step_id_of(step, agent_id)
        spent = _api.outcome_cost(cost, tokens, cost_usd, cost_micro_usd)
        req = _api.outcome(agent_id, step_id, success, spent)
        self._settled.add(step_id)
        return _api.outcome_of(self._object(req, f"outcome of {step_id}"), step_id)

    def heartbeat(self) -> None:
        """A sign of life, so the node does not halt the agent as `lost`."""
        agent_id = self.config.agent()
        self._send(_api.heartbeat(agent_id), f"heartbeat of {agent_id}")

    def governed(
        self,
        tool: str,
        action: ActionClass | None = None,
        *,
        args: Any = None,
        cost: Cost | Mapping[str, Any] | None = None,
        signals: Signals | Mapping[str, Any] | None = None,
        approval_timeout_s: float | None = None,
    ) -> Governed:
        """A block that runs only if warden allows the step, and reports its outcome.

        Entering asks (`check`: raises `AgentHalted`, `StepDenied`, `ApprovalRequired` or
        `ApprovalTimeout`, so the block does not run). Leaving reports success, or failure
        when the block raised; `report(...)` in the block sets what it really used.
        """
        return Governed(
            lambda: self.check(
                tool,
                action,
                args=args,
                cost=cost,
                signals=signals,
                approval_timeout_s=approval_timeout_s,
            ),
            self.outcome,
        )

    # --- transport --------------------------------------------------------------------

    def _object(self, req: _api.Request, what: str) -> Mapping[str, Any]:
        return _api.expect_mapping(self._send(req, what), what)

    def _send(self, req: _api.Request, what: str) -> Any:
        cfg = self.config
        limit_s = cfg.timeout_s + req.extra_timeout_s
        deadline = time.monotonic() + limit_s
        attempts = 1 + (cfg.retries if req.idempotent else 0)
        for attempt in range(attempts):
            try:
                status, body = _before(deadline, lambda: self._exchange(req, what, deadline))
                return _api.read_answer(status, body, what, req.status)
            except _api.RETRYABLE as e:
                pause = _api.RETRY_BACKOFF_S * 2**attempt
                if attempt + 1 < attempts and time.monotonic() + pause < deadline:
                    time.sleep(pause)
                    continue
                raise _api.unreachable(cfg.base_url, what, e) from e
            except (httpx.TimeoutException, TimeoutError):
                raise _api.too_slow(cfg.base_url, what, limit_s) from None
            except httpx.HTTPError as e:
                raise _api.unreachable(cfg.base_url, what, e) from e
        raise AssertionError("unreachable: the loop returns or raises")

    def _exchange(self, req: _api.Request, what: str, deadline: float) -> tuple[int, bytes]:
        cfg = self.config
        timeout = httpx.Timeout(cfg.timeout_s + req.extra_timeout_s, connect=cfg.connect_timeout_s)
        with self._http.stream(
            req.method, req.path, json=req.body, params=req.params, timeout=timeout
        ) as resp:
            body = bytearray()
            for chunk in resp.iter_bytes():
                _api.append_bounded(body, chunk, cfg.answer_bytes_max, what)
                if time.monotonic() >= deadline:
                    raise TimeoutError  # the caller has given up: stop reading
            return resp.status_code, bytes(body)


T = TypeVar("T")


def _before(deadline: float, work: Callable[[], T]) -> T:
    """`work()`, run in a worker thread, or TimeoutError once `deadline` passes: httpx
    bounds each read, not a whole answer, and a node that trickles bytes must not hold the
    caller past its timeout (the worker stops at its next chunk, or its read timeout)."""
    done = threading.Event()
    result: list[T] = []
    error: list[BaseException] = []

    def run() -> None:
        try:
            result.append(work())
        except BaseException as e:
            error.append(e)
        finally:
            done.set()

    threading.Thread(target=run, name="warden-request", daemon=True).start()
    if not done.wait(max(0.0, deadline - time.monotonic())):
        raise TimeoutError
    if error:
        raise error[0]
    return result[0]
