"""The `governed` block of both clients: ask before, settle after."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from types import TracebackType
from typing import Any

from . import _api
from ._types import Cost, Decision, OutcomeResult, WardenError

Settle = Callable[..., Any]


class _Step:
    """What both kinds of governed block hold: the decision once entered, what the block
    reports, and the outcome once left."""

    def __init__(self) -> None:
        self._begin()

    def _begin(self) -> None:
        """A fresh block: nothing of a block this object governed before is carried over."""
        self._cost: dict[str, Any] = {}
        self._success: bool | None = None
        self.decision: Decision | None = None
        self.result: OutcomeResult | None = None

    def report(
        self,
        *,
        tokens: int | None = None,
        cost_usd: float | None = None,
        cost_micro_usd: int | None = None,
        custom: Mapping[str, int] | None = None,
        success: bool | None = None,
    ) -> None:
        """What the block really used (a dimension not named settles as reserved, never as
        zero), and, if given, whether it succeeded, whatever the block raises. A cost the node
        would refuse (negative, fractional tokens, both spellings of money) raises
        `WardenError` (`bad_outcome`) here, and the step then settles as reserved."""
        extra: Cost = {"custom": dict(custom)} if custom else {}
        merged = _api.outcome_cost({**self._cost, **extra}, tokens, cost_usd, cost_micro_usd)
        step = self.decision.step if self.decision else "?"
        self._cost = _api.check_cost(merged, f"report of step {step}")
        if success is not None:
            self._success = success

    def _settlement(self, exc: BaseException | None) -> tuple[Decision, bool, dict[str, Any]]:
        assert self.decision is not None, "a governed block is entered before it is left"
        success = self._success if self._success is not None else exc is None
        return self.decision, success, self._cost

    def _refused(self, e: WardenError, cost: Mapping[str, Any]) -> bool:
        """Whether to settle again without a cost (as reserved) after `e`: the node
        refused what the block reported, and the step must not stay open."""
        return bool(cost) and _api.refused(e)

    def _not_recorded(self, exc: BaseException | None, e: WardenError) -> None:
        """The outcome failed: raise that, unless the block's own exception is on its way
        (then it carries a note instead, and is not masked)."""
        if exc is None:
            raise e
        step = self.decision.step if self.decision else "?"
        _api.add_note(exc, f"warden: the outcome of step {step} was not recorded: {e}")


class Governed(_Step):
    """The step of a `with client.governed(...) as step:` block. `step.decision` is the
    allow; `step.report(tokens=..., cost_usd=...)` sets what the block really used. Leaving
    settles the step: success, or failure when the block raised. When the node refuses
    the reported cost, the step is settled as reserved and the refusal raised. The object
    may be entered again: each block starts afresh (a new step, nothing reported)."""

    def __init__(self, ask: Callable[[], Decision], settle: Settle) -> None:
        super().__init__()
        self._ask = ask
        self._settle = settle

    def __enter__(self) -> Governed:
        self._begin()
        self.decision = self._ask()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        decision, success, cost = self._settlement(exc)
        try:
            self.result = self._settle(decision, success, cost=cost)
        except WardenError as e:
            if self._refused(e, cost):
                try:
                    self.result = self._settle(decision, success)
                except WardenError as again:
                    _api.add_note(e, f"warden: settling it as reserved failed too: {again}")
            self._not_recorded(exc, e)


class AsyncGoverned(_Step):
    """The step of an `async with client.governed(...) as step:` block; as `Governed`."""

    def __init__(
        self, ask: Callable[[], Awaitable[Decision]], settle: Callable[..., Awaitable[Any]]
    ) -> None:
        super().__init__()
        self._ask = ask
        self._settle = settle

    async def __aenter__(self) -> AsyncGoverned:
        self._begin()
        self.decision = await self._ask()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        decision, success, cost = self._settlement(exc)
        # Shielded: a task cancelled again while it reports still sends the outcome.
        try:
            self.result = await asyncio.shield(self._settle(decision, success, cost=cost))
        except WardenError as e:
            if self._refused(e, cost):
                try:
                    self.result = await asyncio.shield(self._settle(decision, success))
                except WardenError as again:
                    _api.add_note(e, f"warden: settling it as reserved failed too: {again}")
            self._not_recorded(exc, e)
