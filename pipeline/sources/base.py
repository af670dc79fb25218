"""The source contract: a camera yields Frames until it ends or the stop event is set."""

from __future__ import annotations

import logging
import threading
from abc import ABC, abstractmethod
from collections.abc import Iterator

from pipeline.logs import fields
from pipeline.metrics import Metrics
from pipeline.packets import Frame

log = logging.getLogger("vigil.source")


class SourceMonitor:
    """What a source reports about itself: connection state, reconnects and frames."""

    def __init__(self, camera: str, live: bool, metrics: Metrics) -> None:
        self.camera = camera
        self.metrics = metrics
        metrics.source_registered(camera, live)

    def connected(self, url_for_log: str) -> None:
        self.metrics.source_connected(self.camera, True)
        log.info("source connected", extra=fields(camera=self.camera, url=url_for_log))

    def disconnected(self, reason: str) -> None:
        self.metrics.source_connected(self.camera, False)
        log.warning("source lost", extra=fields(camera=self.camera, reason=reason))

    def reconnecting(self, attempt: int, delay_s: float) -> None:
        self.metrics.source_reconnects.labels(self.camera).inc()
        log.info(
            "source reconnecting",
            extra=fields(camera=self.camera, attempt=attempt, delay_s=round(delay_s, 2)),
        )

    def frame(self, frame: Frame) -> None:
        self.metrics.source_frame(self.camera, frame.captured_at)


class Source(ABC):
    """One camera. `frames` runs in the source's own thread.

    A finite source (file, folder) ends when its content ends. A live source (RTSP) never ends
    by itself: on errors, timeouts or end of stream it reconnects with capped backoff until
    `stop` is set. Errors that make a finite source unreadable raise SourceError.
    """

    camera: str
    live: bool

    @abstractmethod
    def frames(self, stop: threading.Event, monitor: SourceMonitor) -> Iterator[Frame]:
        """Yield decoded frames in order; return when the source ends or `stop` is set."""
