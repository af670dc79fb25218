"""Run a graph of stages over frames in memory and collect the packets (for stage tests).

It drives the real runner (replay mode, lossless), so what a test sees is what production does.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator, Sequence

from pipeline.graph import build_graph
from pipeline.metrics import Metrics
from pipeline.packets import Frame, FramePacket
from pipeline.runner import Runner, RunnerOptions, RunReport
from pipeline.sinks.base import EventSink
from pipeline.sources.base import Source, SourceMonitor
from pipeline.stage import Stage


class FramesSource(Source):
    """Frames already in memory, as one finite camera."""

    live = False

    def __init__(self, camera: str, frames: Iterable[Frame]) -> None:
        self.camera = camera
        self._frames = frames

    def frames(self, stop: threading.Event, monitor: SourceMonitor) -> Iterator[Frame]:
        monitor.connected("memory")
        for frame in self._frames:
            if stop.is_set():
                return
            yield frame


def run_stages(
    stages: Sequence[Stage],
    sources: Sequence[Source],
    sinks: Sequence[EventSink] = (),
    options: RunnerOptions | None = None,
    metrics: Metrics | None = None,
) -> tuple[list[FramePacket], RunReport]:
    """Run `stages` over `sources` to the end; returns completed packets in order and the report."""
    packets: list[FramePacket] = []
    runner = Runner(
        build_graph(stages),
        sources,
        metrics or Metrics(),
        threading.Event(),
        sinks=sinks,
        options=options,
        on_packet=packets.append,
    )
    report = runner.run()
    return packets, report
