"""Replay a benchmark's test clips through the real runner, recording traces and events.

The streaming path (the headline figures) runs the whole graph from the composition root over the
clips, one camera per clip, in lossless replay mode, and can save each clip's perception output to
the cache; the cached path replays that output through score -> explain -> events only.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from pipeline import assembly
from pipeline.config import VigilConfig
from pipeline.errors import SourceError
from pipeline.evaluation.cache import CachedSource, ClipRecord, ClipRecorder, PerceptionCache
from pipeline.evaluation.footage import Clip
from pipeline.evaluation.trace import EventLog, TraceCollector
from pipeline.packets import FramePacket
from pipeline.runner import RunnerOptions, RunReport
from pipeline.sinks.base import EventSink
from pipeline.sources.base import Source
from pipeline.sources.file import FileSource
from pipeline.sources.limited import LimitedSource
from pipeline.stage import Stage

if TYPE_CHECKING:
    from stages.normality import NormalityModel

DRAIN_TIMEOUT_S = 3600.0  # replay: stages must finish every queued frame, however slow the machine


@dataclass
class ReplayResult:
    collector: TraceCollector
    events: EventLog
    report: RunReport


@dataclass(frozen=True)
class ReplayInfo:
    """The replay's size and speed, as the result JSON reports them."""

    frames: int
    wall_s: float
    fps: float | None
    fps_note: str
    cameras_at_once: int
    stage_errors: dict[str, int]
    events: int
    clean_shutdown: bool

    @classmethod
    def of(cls, rr: ReplayResult, cameras: int, cached: bool) -> ReplayInfo:
        report = rr.report
        frames = sum(report.frames_completed.values())
        fps = frames / report.wall_s if report.wall_s > 0 else float("nan")
        return cls(
            frames=frames,
            wall_s=round(report.wall_s, 2),
            fps=round(float(fps), 2) if np.isfinite(fps) else None,  # no time measured: null
            fps_note="scoring stages only (perception from the cache)" if cached else "whole streaming graph",
            cameras_at_once=cameras,
            stage_errors=report.stage_errors,
            events=report.events,
            clean_shutdown=report.clean_shutdown,
        )


def clip_sources(clips: Sequence[Clip], max_frames: int | None) -> list[Source]:
    return [LimitedSource(FileSource(c.name, c.path), max_frames) for c in clips]


def replay(
    stages: list[Stage],
    sources: list[Source],
    on_packet: Callable[[FramePacket], None],
    sinks: Sequence[EventSink] = (),
) -> RunReport:
    options = RunnerOptions(live=False, realtime=False, drain_timeout_s=DRAIN_TIMEOUT_S)
    return assembly.replay(stages, sources, options, sinks=sinks, on_packet=on_packet)


def _check(report: RunReport) -> None:
    if report.source_errors:
        raise SourceError(f"test clips failed: {report.source_errors}")
    if not report.clean_shutdown:
        raise SourceError("eval: the replay did not drain; frames were lost, no figures written")


def replay_streaming(
    config: VigilConfig,
    model: NormalityModel,
    test: Sequence[Clip],
    max_frames: int | None,
    cache: PerceptionCache | None,
) -> ReplayResult:
    """The headline path: the whole streaming graph over the test clips (and the cache written)."""
    collector, events = TraceCollector(), EventLog()
    recorder = ClipRecorder() if cache is not None else None

    def on_packet(packet: FramePacket) -> None:
        collector(packet)
        if recorder is not None:
            recorder(packet)

    stages = assembly.analysis_stages(config, {"*": model})
    report = replay(stages, clip_sources(test, max_frames), on_packet, [events])
    _check(report)
    if cache is not None and recorder is not None:
        for clip in test:
            cache.save("test", recorder.record(clip.name, report.frames_decoded.get(clip.name, 0)))
    return ReplayResult(collector, events, report)


def replay_cached(config: VigilConfig, model: NormalityModel, records: Sequence[ClipRecord]) -> ReplayResult:
    """Scoring only, through the real runner: cached perception -> score -> explain -> events."""
    from stages.cached_perception import CachedPerceptionStage

    collector, events = TraceCollector(), EventLog()
    stages = [
        CachedPerceptionStage({r.camera: r for r in records}),
        *assembly.scoring_stages(config, {"*": model}),
    ]
    report = replay(stages, [CachedSource(r) for r in records], collector, [events])
    _check(report)
    # what the streaming run decoded (frames_decoded cuts the labels to the analysed frames)
    report.frames_decoded = {r.camera: r.frames_decoded for r in records}
    return ReplayResult(collector, events, report)
