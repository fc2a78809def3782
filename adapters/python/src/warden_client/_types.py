"""The shapes of the node's API as Python values, and the errors a call can end in.

One place for both clients (sync and async): they differ only in how bytes move.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, TypedDict

DecisionKind = Literal["allow", "deny", "require_approval", "halt"]
"""What the node decided for a step; the strongest wins: halt > deny > require_approval > allow."""

ActionClass = Literal["read", "write", "execute", "network", "spend"]
"""A step's action class. A tool listed in the policy's registry with another class is denied."""

ACTION_CLASSES: frozenset[str] = frozenset({"read", "write", "execute", "network", "spend"})


class Cost(TypedDict, total=False):
    """What a step expects to use (in a step) or really used (in an outcome).

    Money is `cost_usd` (dollars, the node rounds to micro-dollars) or `cost_micro_usd`
    (integer), never both. `custom` names the policy's custom dimensions (integers).
    """

    tokens: int
    cost_usd: float
    cost_micro_usd: int
    custom: Mapping[str, int]


class Signals(TypedDict, total=False):
    """What the agent says about itself: `progress` in 0..1, `risk` in 0..1000."""

    progress: float
    risk: float


@dataclass(frozen=True)
class Decision:
    """The node's answer to a step (the decision JSON), one attribute per field.

    `remaining` is what is left of the agent's own budget per limited dimension
    (`steps`, `tokens`, `cost_micro_usd`, `risk_micro`, custom names), in integer units.
    `raw` keeps the whole answer, fields this client does not know included.
    """

    decision: DecisionKind
    step: str
    rule: str | None = None
    kind: str | None = None
    reason: str = ""
    approval: str | None = None
    remaining: Mapping[str, int] = field(default_factory=dict)
    audit_seq: int | None = None
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> Decision:
        """Reads a decision JSON; raises `WardenError` (code `bad_answer`) on another shape."""
        decision = body.get("decision")
        step = body.get("step")
        if decision not in ("allow", "deny", "require_approval", "halt") or not isinstance(
            step, str
        ):
            raise WardenError(
                f"the node's answer is not a decision: {_short(body)}", code="bad_answer"
            )
        remaining = body.get("remaining")
        audit_seq = body.get("audit_seq")
        return cls(
            decision=decision,
            step=step,
            rule=_opt_str(body.get("rule")),
            kind=_opt_str(body.get("kind")),
            reason=_opt_str(body.get("reason")) or "",
            approval=_opt_str(body.get("approval")),
            remaining=dict(remaining) if isinstance(remaining, Mapping) else {},
            audit_seq=audit_seq if isinstance(audit_seq, int) else None,
            raw=dict(body),
        )

    @property
    def allowed(self) -> bool:
        """True when the step may run."""
        return self.decision == "allow"

    def raise_unless_allowed(self) -> Decision:
        """Returns this decision if it is an allow; otherwise raises the matching error:
        `AgentHalted` (halt), `StepDenied` (deny), `ApprovalRequired` (require_approval)."""
        if self.decision == "allow":
            return self
        raise decision_error(self)

    def describe(self) -> str:
        """One line for people and models: the decision, its rule and its reason."""
        text: str = self.decision
        if self.rule:
            text += f" by rule {self.rule}"
        if self.kind:
            text += f" ({self.kind})"
        if self.reason:
            text += f": {self.reason}"
        if self.approval and self.decision == "require_approval":
            text += f" [approval {self.approval}]"
        return text


@dataclass(frozen=True)
class Agent:
    """An agent's record (`GET /v1/agents/{id}`). Amounts are integer units per dimension:
    `steps`, `tokens`, `cost_micro_usd`, `risk_micro`, custom names. `token` is set only in
    the answer to a registration."""

    id: str
    pool: str
    state: Literal["running", "halted"]
    spent: Mapping[str, int]
    reserved: Mapping[str, int]
    remaining: Mapping[str, int]
    token: str | None = None
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> Agent:
        """Reads an agent record; raises `WardenError` (code `bad_answer`) on another shape."""
        state = body.get("state")
        if not isinstance(body.get("id"), str) or state not in ("running", "halted"):
            raise WardenError(
                f"the node's answer is not an agent: {_short(body)}", code="bad_answer"
            )
        return cls(
            id=body["id"],
            pool=str(body.get("pool", "")),
            state=state,
            spent=_amounts(body.get("spent")),
            reserved=_amounts(body.get("reserved")),
            remaining=_amounts(body.get("remaining")),
            token=_opt_str(body.get("token")),
            raw=dict(body),
        )


@dataclass(frozen=True)
class OutcomeResult:
    """The node's answer to an outcome: what was `charged` within the limits, `refunded`
    from the reservation and recorded as `overrun` (usage no budget covered; it halts the
    agent), per dimension in integer units; `halt` is the halt it caused, if any; `late` says
    the reservation had been released (a `lost` halt) before the outcome came."""

    step: str
    charged: Mapping[str, int]
    refunded: Mapping[str, int]
    overrun: Mapping[str, int]
    halt: Any = None
    late: bool = False
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> OutcomeResult:
        """Reads an outcome answer; raises `WardenError` (code `bad_answer`) on another shape."""
        if not isinstance(body.get("step"), str):
            raise WardenError(
                f"the node's answer is not an outcome: {_short(body)}", code="bad_answer"
            )
        return cls(
            step=body["step"],
            charged=_amounts(body.get("charged")),
            refunded=_amounts(body.get("refunded")),
            overrun=_amounts(body.get("overrun")),
            halt=body.get("halt"),
            late=body.get("late") is True,
            raw=dict(body),
        )


class WardenError(Exception):
    """Every error of this package.

    `code` is the node's error code for an HTTP error (`unauthorized`, `unknown_agent`,
    `bad_step`, ...; see the API's Error schema), or one of this client's: `unreachable` (no
    connection), `client_timeout` (no answer in time), `bad_answer` (an answer of the wrong
    shape or size). `status` is the HTTP status when the node answered, else None.
    `decision` is set on the errors that a decision caused (the subclasses below).
    """

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        status: int | None = None,
        decision: Decision | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.status = status
        self.decision = decision

    def __str__(self) -> str:
        if self.status is not None:
            return f"{self.message} (HTTP {self.status} {self.code})"
        return f"{self.message} ({self.code})" if self.code else self.message


class StepDenied(WardenError):
    """The node denied the step (`decision.rule` and `decision.reason` say why); the agent may
    go on with another step."""

    decision: Decision


class AgentHalted(WardenError):
    """The node halted the agent (`decision.kind`: safety, exhaustion, ...): no step of this
    agent will be allowed until an operator resumes it."""

    decision: Decision


class ApprovalRequired(WardenError):
    """The step waits for a human (`decision.approval` is the approval id); ask again with
    `wait_for_approval`, or give up."""

    decision: Decision


class ApprovalTimeout(WardenError):
    """Nobody answered the approval within the client's wait; `decision` is the last
    `require_approval` read. The node still holds the step until its own approval timeout."""

    decision: Decision


def decision_error(decision: Decision) -> WardenError:
    """The error that stands for a decision other than allow."""
    cls: type[WardenError]
    if decision.decision == "halt":
        cls = AgentHalted
    elif decision.decision == "deny":
        cls = StepDenied
    elif decision.decision == "require_approval":
        cls = ApprovalRequired
    else:
        raise ValueError(f"an allow is not an error: {decision}")
    return cls(f"warden: {decision.describe()}", code=decision.decision, decision=decision)


def _opt_str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _amounts(value: Any) -> dict[str, int]:
    if not isinstance(value, Mapping):
        return {}
    return {str(k): v for k, v in value.items() if isinstance(v, int)}


def _short(value: Any, limit: int = 200) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."
