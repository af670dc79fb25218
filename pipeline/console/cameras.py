"""Each camera as the console's grid shows it: state, analysed fps, drops, alerts today, model version."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from prometheus_client import Counter, Gauge

from pipeline.console.alerts import AlertReader, AlertRow
from pipeline.console.live import LiveView
from pipeline.errors import VigilError
from pipeline.metrics import Metrics
from pipeline.model_store import ModelStore

if TYPE_CHECKING:
    from stages.normality.observations import EventObservations


@dataclass(frozen=True)
class CameraState:
    name: str
    state: str  # up | stalled | reconnecting | warming up | starting | ended | not running here
    fps: float
    drops: int
    alerts_today: int
    model_version: int | None
    live: bool

    def to_json(self) -> dict[str, object]:
        return {
            "name": self.name,
            "state": self.state,
            "analysed_fps": round(self.fps, 2),
            "drops": self.drops,
            "alerts_today": self.alerts_today,
            "model_version": self.model_version,
        }


def _value(metric: Counter | Gauge, camera: str, name_suffix: str = "") -> float:
    """Sum of the metric's samples for `camera` (over its other labels)."""
    total = 0.0
    for family in metric.collect():
        for sample in family.samples:
            if sample.labels.get("camera") == camera and sample.name.endswith(name_suffix):
                total += sample.value
    return total


class CameraBoard:
    def __init__(
        self,
        names: Sequence[str],
        reader: AlertReader,
        models: ModelStore,
        metrics: Metrics,
        live: LiveView | None,
        media_dir: Path,
        stall_limit_s: float = 30.0,
        warmup: bool = False,
    ) -> None:
        self._names = list(names)
        self.reader = reader
        self.models = models
        self.metrics = metrics
        self.live = live
        self.media_dir = Path(media_dir)
        self.stall_limit_s = stall_limit_s
        self.warmup = warmup

    def names(self) -> list[str]:
        seen = set(self._names) | set(self.reader.cameras()) | set(self.live.cameras() if self.live else [])
        return [*self._names, *sorted(seen - set(self._names))]

    def cameras(self) -> list[CameraState]:
        midnight = dt.datetime.combine(dt.date.today(), dt.time()).timestamp()
        today = self.reader.counts_since(midnight)
        return [self._state(name, today.get(name, 0)) for name in self.names()]

    def camera(self, name: str) -> CameraState:
        midnight = dt.datetime.combine(dt.date.today(), dt.time()).timestamp()
        return self._state(name, self.reader.counts_since(midnight).get(name, 0))

    def _state(self, name: str, alerts_today: int) -> CameraState:
        _, current = self.models.versions(name)
        drops = int(_value(self.metrics.dropped, name, "_total"))
        if self.live is None or name not in self._names:
            return CameraState(name, "not running here", 0.0, drops, alerts_today, current, False)
        age = self.live.last_frame_age(name)
        up = _value(self.metrics.source_up, name) >= 1
        reconnects = _value(self.metrics.source_reconnects, name, "_total")
        if age is None:
            state = "reconnecting" if reconnects and not up else "starting"
        elif age > self.stall_limit_s:
            state = "reconnecting" if reconnects and not up else "stalled"
        elif current is None and self.warmup:
            state = "warming up"
        else:
            state = "up"
        return CameraState(name, state, self.live.fps(name), drops, alerts_today, current, True)

    def observations(self, camera: str, event_id: str) -> EventObservations | None:
        """The event's recorded observations (for feedback, the normal ranges and the frame size); None:
        none recorded, or unreadable (the page shows none; "normal here" reports why)."""
        from stages.normality.observations import EventObservations, observations_path

        path = observations_path(self.media_dir, camera, event_id)
        if not path.exists():
            return None
        try:
            return EventObservations.load(path)
        except VigilError:
            return None

    @staticmethod
    def frame_size(row: AlertRow, seen: EventObservations | None) -> tuple[int, int]:
        """(width, height) of the event's frames, for drawing its trajectory over the snapshot: as the
        observations recorded it, else read from the snapshot."""
        if seen is not None and min(seen.frame_size) > 0:
            height, width = seen.frame_size
            return width, height
        import cv2

        if row.snapshot_path and Path(row.snapshot_path).is_file():
            image = cv2.imread(row.snapshot_path)
            if image is not None:
                return image.shape[1], image.shape[0]
        return 640, 360
