"""The sink contract: receive events in order, flush on close."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

from pipeline.packets import Event


class EventSink(ABC):
    name: str

    @abstractmethod
    def write(self, events: Sequence[Event]) -> None:
        """Persist or deliver `events`; raise on failure (the runner counts and logs it)."""

    def close(self) -> None:
        """Flush and release resources; called once after the last write."""
