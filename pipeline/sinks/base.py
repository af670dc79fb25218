"""The sink contracts: a local `EventSink` receives events in order and flushes on close; a network
`Transport` delivers one outbox row at a time for the delivery workers (pipeline/sinks/delivery.py)."""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import TYPE_CHECKING

from pipeline.errors import VigilError
from pipeline.packets import Event

if TYPE_CHECKING:
    from pipeline.sinks.sqlite import OutboxItem


class EventSink(ABC):
    name: str

    @abstractmethod
    def write(self, events: Sequence[Event]) -> None:
        """Persist or deliver `events`; raise on failure (the runner counts and logs it)."""

    def close(self) -> None:
        """Flush and release resources; called once after the last write."""


class DeliveryError(VigilError):
    """One event could not be delivered now (target down, refused, timed out); the worker retries it.

    Messages must not contain secrets or URLs with credentials: they are logged and stored in the outbox.
    """


class Transport(ABC):
    """Sends one event to one network target and returns only once the target acknowledged it."""

    name: str

    @abstractmethod
    def deliver(self, item: OutboxItem) -> None:
        """Deliver `item.event`; raise `DeliveryError` when it was not acknowledged."""

    def idle(self, stop: threading.Event, seconds: float) -> None:
        """Wait up to `seconds` (or until `stop`) with nothing to send; connections may do keepalive here."""
        stop.wait(seconds)

    def close(self) -> None:
        """Release connections (called once, from the worker thread, when it stops)."""
