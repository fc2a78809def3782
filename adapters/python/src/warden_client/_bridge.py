"""Async faces for sync clients, for integrations whose framework calls them from asyncio."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from ._sync import WardenClient
from ._types import Decision, OutcomeResult


class InThread:
    """The async face of a `WardenClient`: each call runs in a worker thread, so the event
    loop is not blocked. Only the calls the integrations need."""

    def __init__(self, client: WardenClient) -> None:
        self._client = client

    async def step(self, tool: str, **kwargs: Any) -> Decision:
        return await asyncio.to_thread(self._client.step, tool, **kwargs)

    async def wait_for_approval(self, step: Decision, timeout_s: float) -> Decision:
        return await asyncio.to_thread(self._client.wait_for_approval, step, timeout_s)

    async def outcome(
        self, step: Decision, success: bool, *, cost: Mapping[str, Any] | None = None
    ) -> OutcomeResult:
        return await asyncio.to_thread(self._client.outcome, step, success, cost=cost)
