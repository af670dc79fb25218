"""Drains the SQLite outbox into one network sink (MQTT, webhook), so a sink that is down delays events
and never loses them.

One worker thread per sink takes that sink's pending rows in insertion order and hands them to its
`Transport` one at a time; a row is marked delivered only after the target acknowledged it (MQTT
PUBACK, HTTP 2xx), and the next row is not sent before that, so events arrive in order. A failure is
recorded on the row (attempts, last error), counted, and the same row is retried after a capped
exponential backoff. Rows left pending when Vigil stops stay in the SQLite file and go out on the
next start.

Wiring (pipeline/sinks/factory.py): the pipeline's store must queue rows for the enabled network
sinks (`SqliteEventStore(path, outbox_sinks=outbox_sink_names(config.sinks))`), and `Delivery` runs
the workers on a store connection of its own, so their lifecycle does not depend on when the runner
closes its sinks::

    delivery = make_delivery(config, camera_names, metrics)  # None when no network sink is on
    delivery.start()
    ...  # run the pipeline
    delivery.close(flush_s=5.0)  # a last chance to send what the drain produced, then stop
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from pipeline.backoff import Backoff
from pipeline.config import DeliveryConfig
from pipeline.errors import VigilError
from pipeline.logs import fields
from pipeline.metrics import Metrics
from pipeline.sinks.base import DeliveryError, Transport
from pipeline.sinks.sqlite import OutboxItem, SqliteEventStore

log = logging.getLogger("vigil.delivery")


class OutboxDepth:
    """Counts a sink's pending outbox rows on a read-only connection of its own (WAL lets it read
    while the pipeline writes), for the `vigil_outbox_depth` gauge."""

    def __init__(self, path: Path, sink: str) -> None:
        self.path = path
        self.sink = sink
        self._db: sqlite3.Connection | None = None

    def count(self) -> int:
        if self._db is None:
            self._db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=5.0)
        row = self._db.execute(
            "SELECT COUNT(*) FROM outbox WHERE sink = ? AND status = 'pending'", (self.sink,)
        ).fetchone()
        return int(row[0])

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None


class DeliveryWorker:
    """Drains one sink's outbox rows in order on its own thread until the stop event is set."""

    def __init__(
        self, store: SqliteEventStore, transport: Transport, metrics: Metrics, settings: DeliveryConfig
    ) -> None:
        if transport.name not in store.outbox_sinks:
            raise VigilError(
                f"delivery: the event store queues no outbox rows for sink {transport.name!r}"
                f" (outbox_sinks={list(store.outbox_sinks)})"
            )
        self.store = store
        self.transport = transport
        self.metrics = metrics
        self.settings = settings
        self.backoff = Backoff(settings.backoff_initial_s, settings.backoff_max_s)
        self._depth = OutboxDepth(store.path, transport.name)
        self._thread: threading.Thread | None = None
        sink = transport.name
        self._delivered = metrics.deliveries.labels(sink)
        self._failed = metrics.delivery_failures.labels(sink)
        self._latency = metrics.delivery_latency.labels(sink)
        self._errors = metrics.sink_errors.labels(sink)
        self._depth_gauge = metrics.outbox_depth.labels(sink)

    @property
    def name(self) -> str:
        return self.transport.name

    def start(self, stop: threading.Event) -> None:
        self._thread = threading.Thread(
            target=self.run, args=(stop,), name=f"deliver-{self.name}", daemon=True
        )
        self._thread.start()

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the thread to end after the stop event; True when it has."""
        if self._thread is None:
            return True
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def run(self, stop: threading.Event) -> None:
        log.info("delivery started", extra=fields(sink=self.name))
        try:
            while not stop.is_set():
                try:
                    outcome = self.drain(stop)
                except Exception as exc:  # a bug or a broken store: keep the thread, say so loudly
                    self._errors.inc()
                    log.error("delivery loop failed", exc_info=True, extra=fields(sink=self.name, error=exc))
                    outcome = "failed"
                if outcome == "failed":
                    self.transport.idle(stop, self.backoff.next_delay())
                elif outcome == "empty":
                    self.transport.idle(stop, self.settings.poll_s)
        finally:
            self.transport.close()
            self._depth.close()
            log.info("delivery stopped", extra=fields(sink=self.name))

    def drain(self, stop: threading.Event) -> str:
        """Deliver pending rows in order until none are left ("empty"), one fails ("failed") or `stop`."""
        self._depth_gauge.set(self._depth.count())
        while not stop.is_set():
            items = self.store.pending(self.name, limit=self.settings.batch)
            if not items:
                return "empty"
            for item in items:
                if stop.is_set():
                    return "stopped"
                if not self._deliver_one(item):
                    return "failed"
        return "stopped"

    def _deliver_one(self, item: OutboxItem) -> bool:
        started = time.monotonic()
        try:
            self.transport.deliver(item)
        except DeliveryError as exc:
            self._failed.inc()
            self.store.mark_failed(item.id, str(exc))
            log.warning(
                "delivery failed, will retry",
                extra=fields(sink=self.name, outbox_id=item.id, attempts=item.attempts + 1, error=exc),
            )
            return False
        self._latency.observe(time.monotonic() - started)
        self.store.mark_delivered([item.id])
        self._delivered.inc()
        self._depth_gauge.dec()
        if self.backoff.failures:
            log.info("delivery recovered", extra=fields(sink=self.name, retries=self.backoff.failures))
            self.backoff.reset()
        return True


class Delivery:
    """The network sinks' workers for one run, on their own connection to the event store."""

    def __init__(self, store: SqliteEventStore, workers: Sequence[DeliveryWorker]) -> None:
        self.store = store
        self.workers = list(workers)
        self._stop = threading.Event()

    def start(self) -> None:
        for worker in self.workers:
            worker.start(self._stop)

    def pending(self) -> int:
        """Rows still waiting, over all sinks (at most `batch` per sink are counted)."""
        return sum(len(self.store.pending(w.name, limit=w.settings.batch)) for w in self.workers)

    def close(self, flush_s: float = 5.0) -> None:
        """Give the workers up to `flush_s` to empty the outbox, then stop them; the rest stays pending."""
        deadline = time.monotonic() + flush_s
        while self.pending() and time.monotonic() < deadline:
            time.sleep(0.05)
        self._stop.set()
        for worker in self.workers:
            if not worker.join(timeout=30.0):
                log.error("delivery worker did not stop", extra=fields(sink=worker.name))
        self.store.close()
