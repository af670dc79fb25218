"""Prometheus metrics on the process's own registry, passed to whatever reports.

Stage names and camera names are the labels. Source freshness (last-frame age) is computed at
scrape time, so a stalled camera shows a growing age even though nothing updates it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.035, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0)
E2E_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 2.0, 5.0, 10.0, 30.0)


@dataclass
class _SourceState:
    live: bool
    last_frame_wall: float | None = None
    connected: bool = False


class _Freshness(Collector):
    """Reports seconds since each camera's last frame, evaluated at scrape time."""

    def __init__(self) -> None:
        self.sources: dict[str, _SourceState] = {}
        self.lock = threading.Lock()

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "vigil_source_last_frame_age_seconds",
            "Seconds since the camera's last decoded frame (since start if none yet)",
            labels=["camera"],
        )
        now = time.time()
        with self.lock:
            for camera, state in self.sources.items():
                if state.last_frame_wall is not None:
                    family.add_metric([camera], now - state.last_frame_wall)
        yield family


class Metrics:
    """All of Vigil's metrics. One instance per process, created by the CLI and passed down."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        r = self.registry
        self.frames_in = Counter(
            "vigil_stage_frames_in", "Frames received by a stage", ["camera", "stage"], registry=r
        )
        self.frames_out = Counter(
            "vigil_stage_frames_out", "Frames passed on by a stage", ["camera", "stage"], registry=r
        )
        self.stage_latency = Histogram(
            "vigil_stage_latency_seconds",
            "Time a stage spends on one frame (a batch's time divided by its size)",
            ["stage"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.queue_depth = Gauge(
            "vigil_stage_queue_depth", "Packets waiting in front of a stage", ["stage"], registry=r
        )
        self.stage_errors = Counter(
            "vigil_stage_errors",
            "Exceptions raised by a stage while processing",
            ["camera", "stage"],
            registry=r,
        )
        self.stage_healthy = Gauge(
            "vigil_stage_healthy", "1 while a stage is not failing repeatedly", ["stage"], registry=r
        )
        self.dropped = Counter(
            "vigil_frames_dropped",
            "Frames dropped to keep a live camera's latency bounded",
            ["camera", "reason"],
            registry=r,
        )
        self.source_frames = Counter(
            "vigil_source_frames", "Frames decoded from a camera or file", ["camera"], registry=r
        )
        self.source_up = Gauge("vigil_source_up", "1 while the source is connected", ["camera"], registry=r)
        self.source_reconnects = Counter(
            "vigil_source_reconnects",
            "Reconnection attempts after a lost or failed source",
            ["camera"],
            registry=r,
        )
        self.e2e_latency = Histogram(
            "vigil_end_to_end_latency_seconds",
            "From a frame's decode to the end of the pipeline",
            ["camera"],
            buckets=E2E_BUCKETS,
            registry=r,
        )
        self.events = Counter(
            "vigil_events", "Events emitted, by lifecycle kind", ["camera", "kind"], registry=r
        )
        self.event_latency = Histogram(
            "vigil_event_latency_seconds",
            "From the decode of the frame that opened an event to the event handed to the sinks",
            ["camera"],
            buckets=E2E_BUCKETS,
            registry=r,
        )
        self.events_by_reason = Counter(
            "vigil_events_by_reason",
            "New events by the attribute of their top reason",
            ["camera", "attribute"],
            registry=r,
        )
        self.frame_score = Gauge(
            "vigil_frame_score",
            "Causally smoothed anomaly score of the camera's latest frame",
            ["camera"],
            registry=r,
        )
        self.sink_errors = Counter(
            "vigil_sink_errors", "Failures writing events to a sink", ["sink"], registry=r
        )
        # network sinks draining the SQLite outbox (pipeline/sinks/delivery.py); label = sink name only
        self.outbox_depth = Gauge(
            "vigil_outbox_depth", "Outbox events not yet delivered to a network sink", ["sink"], registry=r
        )
        self.deliveries = Counter(
            "vigil_deliveries", "Events delivered and acknowledged by a network sink", ["sink"], registry=r
        )
        self.delivery_failures = Counter(
            "vigil_delivery_failures", "Failed delivery attempts (each is retried)", ["sink"], registry=r
        )
        self.delivery_latency = Histogram(
            "vigil_delivery_latency_seconds",
            "From sending one event to its acknowledgement (MQTT PUBACK, webhook 2xx)",
            ["sink"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        # retention of events, snapshots and clips (pipeline/retention.py), set by each run
        self.retention_deleted = Counter(
            "vigil_retention_events_deleted", "Events deleted by retention (age or disk budget)", registry=r
        )
        self.retention_media_bytes = Gauge(
            "vigil_media_bytes", "Bytes of snapshots, clips and observations of the events kept", registry=r
        )
        self.retention_oldest_age = Gauge(
            "vigil_retention_oldest_event_age_seconds",
            "Seconds since the oldest event kept was last seen (0 when none is kept)",
            registry=r,
        )
        self._freshness = _Freshness()
        r.register(self._freshness)

    # ---- sources -------------------------------------------------------------------------------

    def source_registered(self, camera: str, live: bool) -> None:
        with self._freshness.lock:
            self._freshness.sources[camera] = _SourceState(live=live, last_frame_wall=time.time())
        self.source_up.labels(camera).set(0)
        self.source_reconnects.labels(camera)
        self.source_frames.labels(camera)

    def source_connected(self, camera: str, up: bool) -> None:
        with self._freshness.lock:
            state = self._freshness.sources.get(camera)
            if state is not None:
                state.connected = up
        self.source_up.labels(camera).set(1 if up else 0)

    def source_frame(self, camera: str, wall: float) -> None:
        with self._freshness.lock:
            state = self._freshness.sources.get(camera)
            if state is not None:
                state.last_frame_wall = wall
        self.source_frames.labels(camera).inc()

    def stalled_cameras(self, limit_s: float) -> list[str]:
        """Live cameras with no frame for longer than `limit_s`."""
        now = time.time()
        with self._freshness.lock:
            return sorted(
                camera
                for camera, s in self._freshness.sources.items()
                if s.live and s.last_frame_wall is not None and now - s.last_frame_wall > limit_s
            )

    def unhealthy_stages(self) -> list[str]:
        out = []
        for metric in self.stage_healthy.collect():
            for sample in metric.samples:
                if sample.value < 1:
                    out.append(sample.labels["stage"])
        return sorted(out)
