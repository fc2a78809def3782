"""What the framework integrations share: how a refusal reads to a model, and the shape of
a cost estimate. No framework is imported here."""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from typing import Any

from . import _api
from ._async import AsyncWardenClient
from ._bridge import InThread
from ._sync import WardenClient
from ._types import ApprovalTimeout, Cost, Decision, WardenError

StepCost = Callable[[str, Any], Cost | None]
"""What a call of a tool is expected to cost, from the tool's name and its arguments
(None: nothing declared, so the node reserves the tool's minimum)."""


def refusal_text(decision: Decision, timed_out: bool = False) -> str:
    """What the model reads instead of the tool's result when warden did not allow the call."""
    if decision.decision == "require_approval":
        waited = "nobody answered in time" if timed_out else "it was not waited for"
        return (
            f"warden: this tool call needs a human's approval (approval {decision.approval}) "
            f"and {waited}; it was not run."
        )
    rule = f" (rule {decision.rule})" if decision.rule else ""
    reason = f": {decision.reason}" if decision.reason else ""
    return f"warden denied this tool call{rule}{reason}. It was not run."


ABANDONED_MAX = 1024
"""The most approval steps an integration keeps collecting; past it the oldest is dropped
(the node's own approval timeout still ends it)."""


class Abandoned:
    """Steps parked for approval that an integration stopped waiting for (not waited, or
    nobody answered in time). An operator may still approve one later: the node then holds
    its reservation as an allow that nothing will run. Each call of the integration first
    collects them: a final allow is settled as not run (failure, zero tokens and money), a
    deny or halt is dropped, a step still waiting is kept."""

    def __init__(self) -> None:
        self._steps: deque[Decision] = deque(maxlen=ABANDONED_MAX)
        self._lock = threading.Lock()

    def add(self, decision: Decision) -> None:
        if decision.decision == "require_approval":
            with self._lock:
                self._steps.append(decision)

    def __len__(self) -> int:
        return len(self._steps)

    def _take(self) -> list[Decision]:
        with self._lock:
            steps = list(self._steps)
            self._steps.clear()
        return steps

    def collect(self, client: WardenClient) -> None:
        """Collects the steps whose approval was answered (blocking client)."""
        for parked in self._take():
            try:
                final = client.wait_for_approval(parked, timeout_s=0)
                if final.allowed:
                    client.outcome(final, False, cost=_api.NOT_RUN)
            except WardenError as e:
                self._keep(parked, e)

    async def acollect(self, client: AsyncWardenClient | InThread) -> None:
        """Collects the steps whose approval was answered (async client)."""
        for parked in self._take():
            try:
                final = await client.wait_for_approval(parked, timeout_s=0)
                if final.allowed:
                    await client.outcome(final, False, cost=_api.NOT_RUN)
            except WardenError as e:
                self._keep(parked, e)

    def _keep(self, parked: Decision, e: WardenError) -> None:
        """Keeps a step still waiting, or one the node could not be asked about now; drops
        one the node refused to say anything about (unknown, settled)."""
        if isinstance(e, ApprovalTimeout) or e.status is None:
            if e.code != "step_settled":
                self.add(parked)
