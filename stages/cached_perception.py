"""Perception replayed from `vigil eval --cache` files: fills `attributes` and `scene_graph` by frame.

It stands in for detect -> ... -> scene_graph so the scoring stages run through the real runner,
lifecycle hooks included, without re-running perception (ablations and diagnostics).
"""

from __future__ import annotations

from collections.abc import Mapping

from pipeline.errors import ConfigError, PacketError
from pipeline.evaluation.cache import CachedFrame, ClipRecord
from pipeline.packets import FramePacket, SourceEvent
from pipeline.stage import Stage


class CachedPerceptionStage(Stage):
    name = "cached_perception"
    needs = ("frame",)
    provides = ("attributes", "scene_graph")

    def __init__(self, records: Mapping[str, ClipRecord]) -> None:
        self.records = records  # camera -> its clip's record
        self._frames: dict[str, dict[int, CachedFrame]] = {}

    def on_source_added(self, event: SourceEvent) -> None:
        record = self.records.get(event.camera)
        if record is None:
            raise ConfigError(f"perception cache: no cached clip for camera {event.camera}")
        self._frames[event.camera] = record.by_index()

    def on_source_eos(self, event: SourceEvent) -> None:
        self._frames.pop(event.camera, None)

    def process(self, packet: FramePacket) -> None:
        frame = packet.frame
        if frame.camera not in self._frames:  # direct use without an 'added' message
            self.on_source_added(SourceEvent(frame.camera, "added"))
        cached = self._frames[frame.camera].get(frame.index)
        if cached is None:
            raise PacketError(f"perception cache: camera {frame.camera} has no frame {frame.index}")
        packet.attributes = cached.attributes
        packet.scene_graph = cached.scene_graph
