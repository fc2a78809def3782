"""What both clients are configured with, and the rules that do not depend on I/O."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from . import _api
from ._types import ACTION_CLASSES, ActionClass, WardenError


@dataclass(frozen=True)
class ClientConfig:
    """Where the node is, who speaks, and the limits of every request.

    `actions` maps tool names to their action class for steps that do not name one;
    `default_action` is used for tools it does not list. The node denies a step whose class
    differs from the class its policy registers for the tool (`registry.action`), so a wrong
    guess here never lets anything through; it can only deny.
    """

    base_url: str
    token: str
    agent_id: str | None = None
    timeout_s: float = _api.TIMEOUT_S_DEFAULT
    connect_timeout_s: float = _api.CONNECT_TIMEOUT_S_DEFAULT
    retries: int = _api.RETRIES_DEFAULT
    answer_bytes_max: int = _api.ANSWER_BYTES_MAX_DEFAULT
    actions: Mapping[str, ActionClass] = field(default_factory=dict)
    default_action: ActionClass = "execute"

    def __post_init__(self) -> None:
        if not self.base_url.startswith(("http://", "https://")):
            raise ValueError(f"base_url must be an http(s) URL, got {self.base_url!r}")
        object.__setattr__(self, "base_url", self.base_url.rstrip("/"))
        for name in ("timeout_s", "connect_timeout_s"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not 0 < value < math.inf:
                raise ValueError(f"{name} must be a finite number of seconds > 0, got {value!r}")
        if not 0 <= self.retries <= 10:
            raise ValueError(f"retries must be within 0..10, got {self.retries}")
        for tool, action in {**self.actions, "(default_action)": self.default_action}.items():
            if action not in ACTION_CLASSES:
                raise ValueError(
                    f"{tool}: unknown action class {action!r}; "
                    f"one of {', '.join(sorted(ACTION_CLASSES))}"
                )

    def action_for(self, tool: str, action: ActionClass | None) -> ActionClass:
        """The action class a step of `tool` claims."""
        if action is not None:
            return action
        return self.actions.get(tool, self.default_action)

    def agent(self) -> str:
        """The agent this client speaks for; an error if it speaks for none."""
        if self.agent_id is None:
            raise WardenError(
                "this client has no agent id: register an agent and use as_agent(), "
                "or pass agent_id=",
                code="no_agent",
            )
        return self.agent_id

    def for_agent(self, agent_id: str, token: str) -> ClientConfig:
        return replace(self, agent_id=agent_id, token=token)
