"""What the framework integrations share: how a refusal reads to a model, and the shape of
a cost estimate. No framework is imported here."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ._types import Cost, Decision

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
