"""The threaded runner: lossless replay, bounded latency when live, failing stages, hook order."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from pipeline.graph import build_graph
from pipeline.harness import FramesSource, run_stages
from pipeline.metrics import Metrics
from pipeline.packets import Detections, FlowField, Frame, FramePacket, SourceEvent
from pipeline.runner import Runner, RunnerOptions
from pipeline.sources.base import Source, SourceMonitor
from pipeline.sources.file import FileSource
from pipeline.stage import Stage


def frames(camera: str, n: int, fps: float = 10.0) -> list[Frame]:
    image = np.zeros((24, 32, 3), np.uint8)
    return [Frame(camera, i, i / fps, image, time.time(), fps) for i in range(n)]


class Recorder(Stage):
    """Records hooks and frames in the order its worker saw them."""

    name = "recorder"

    def __init__(self) -> None:
        self.seen: list[tuple[str, str, int]] = []
        self.added: dict[str, SourceEvent] = {}

    def on_source_added(self, event: SourceEvent) -> None:
        self.seen.append(("added", event.camera, -1))
        self.added[event.camera] = event

    def on_source_eos(self, event: SourceEvent) -> None:
        self.seen.append(("eos", event.camera, -1))

    def process(self, packet: FramePacket) -> None:
        self.seen.append(("frame", packet.frame.camera, packet.frame.index))


class Detect(Stage):
    """Fills `detections` (empty) after `delay_s`; raises on the frame indices in `fail_on`."""

    name = "detect"
    provides = ("detections",)

    def __init__(self, delay_s: float = 0.0, fail_on: frozenset[int] = frozenset()) -> None:
        self.delay_s = delay_s
        self.fail_on = fail_on

    def process(self, packet: FramePacket) -> None:
        if self.delay_s:
            time.sleep(self.delay_s)
        if packet.frame.index in self.fail_on:
            raise ValueError(f"cannot detect in frame {packet.frame.index}")
        packet.detections = Detections.empty()


class Downstream(Stage):
    """Needs `detections`: runs only on frames where `detect` succeeded."""

    name = "downstream"
    needs = ("frame", "detections")
    provides = ("flow",)

    def __init__(self) -> None:
        self.indices: list[int] = []

    def process(self, packet: FramePacket) -> None:
        self.indices.append(packet.frame.index)
        h, w = packet.frame.height, packet.frame.width
        packet.flow = FlowField(np.zeros((h, w, 2), np.float32), dt=0.1, scale=1.0)


class LiveFrames(Source):
    """A live camera in memory: frames stamped at yield time, at `fps`, for `seconds`."""

    live = True

    def __init__(self, camera: str, fps: float, seconds: float) -> None:
        self.camera, self.fps, self.seconds = camera, fps, seconds

    def frames(self, stop: threading.Event, monitor: SourceMonitor) -> Iterator[Frame]:
        monitor.connected("memory")
        image = np.zeros((24, 32, 3), np.uint8)
        start = time.monotonic()
        i = 0
        while not stop.is_set() and time.monotonic() - start < self.seconds:
            yield Frame(self.camera, i, i / self.fps, image, time.time(), self.fps)
            i += 1
            stop.wait(max(0.0, start + i / self.fps - time.monotonic()))


@pytest.fixture
def runner_log() -> Iterator[list[logging.LogRecord]]:
    """Records of the runner's logger (independent of how logging was set up)."""
    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.DEBUG)
    handler.emit = records.append  # type: ignore[method-assign]
    logger = logging.getLogger("vigil.runner")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        yield records
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def test_sources_are_replayed_losslessly_and_in_order(ped2: Path) -> None:
    """Two real Ped2 clips through a slow-ish graph with small queues: every frame, in order."""
    clips = {"t1": ped2 / "test" / "Test001.mp4", "t3": ped2 / "test" / "Test003.mp4"}
    with np.load(ped2 / "frame_labels.npz") as labels:
        expected = {"t1": len(labels["Test001"]), "t3": len(labels["Test003"])}
    recorder = Recorder()
    options = RunnerOptions(live=False, ingress_capacity=2, pipe_capacity=1)
    packets, report = run_stages(
        [Detect(delay_s=0.001), recorder], [FileSource(c, p) for c, p in clips.items()], options=options
    )
    assert report.frames_decoded == expected
    assert report.frames_completed == expected
    assert report.frames_dropped == {} and report.stage_errors == {} and report.source_errors == {}
    for camera, n in expected.items():
        assert [p.frame.index for p in packets if p.frame.camera == camera] == list(range(n))
        assert all(p.detections is not None for p in packets if p.frame.camera == camera)
    assert recorder.added["t1"].width == 360 and recorder.added["t1"].height == 240


def test_live_mode_drops_oldest_frames_and_keeps_latency_bounded() -> None:
    """A 50 ms stage fed 50 fps: the runner drops frames rather than building a backlog."""
    metrics = Metrics()
    ages: list[float] = []
    stop = threading.Event()
    runner = Runner(
        build_graph([Detect(delay_s=0.05)]),
        [LiveFrames("live", fps=50, seconds=3.0)],
        metrics,
        stop,
        options=RunnerOptions(live=True),
        on_packet=lambda p: ages.append(time.time() - p.frame.captured_at),
    )
    report = runner.run()
    decoded, completed = report.frames_decoded["live"], report.frames_completed["live"]
    dropped = report.frames_dropped.get("live", 0)
    assert decoded >= 100  # the source really ran at ~50 fps
    assert dropped >= decoded // 3, (decoded, completed, dropped)
    assert completed + dropped == decoded
    sample = metrics.registry.get_sample_value
    assert sample("vigil_frames_dropped_total", {"camera": "live", "reason": "behind"}) == dropped
    # bounded: ingress 2 + the stage + pipe 1 at 50 ms each, whatever the run's length
    assert max(ages) < 0.6, sorted(ages)[-5:]
    count = sample("vigil_end_to_end_latency_seconds_count", {"camera": "live"})
    within = sample("vigil_end_to_end_latency_seconds_bucket", {"camera": "live", "le": "0.5"})
    assert count == completed and within == count
    # the same graph in replay mode is lossless instead, and its backlog (latency) grows
    replay_ages: list[float] = []
    replay = Runner(
        build_graph([Detect(delay_s=0.05)]),
        [FramesSource("file", frames("file", 40))],
        Metrics(),
        threading.Event(),
        options=RunnerOptions(live=False),
        on_packet=lambda p: replay_ages.append(time.time() - p.frame.captured_at),
    ).run()
    assert replay.frames_completed["file"] == 40 and replay.frames_dropped == {}
    assert max(replay_ages) > 1.0


def test_failing_frames_are_counted_logged_and_skipped_downstream(
    runner_log: list[logging.LogRecord],
) -> None:
    fail_on = frozenset(range(1, 40, 4))
    downstream = Downstream()
    metrics = Metrics()
    packets, report = run_stages(
        [Detect(fail_on=fail_on), downstream], [FramesSource("cam", frames("cam", 40))], metrics=metrics
    )
    assert report.frames_completed == {"cam": 40}  # the run went on
    assert report.stage_errors == {"detect": len(fail_on)}
    assert (
        metrics.registry.get_sample_value("vigil_stage_errors_total", {"camera": "cam", "stage": "detect"})
        == 10
    )
    assert downstream.indices == [i for i in range(40) if i not in fail_on]
    assert [p.frame.index for p in packets if p.detections is None] == sorted(fail_on)
    failed = [r for r in runner_log if r.getMessage().startswith("stage failed")]
    assert [(r.stage, r.frame) for r in failed] == [("detect", i) for i in sorted(fail_on)]  # type: ignore[attr-defined]
    assert "cannot detect in frame 1" in failed[0].getMessage()
    assert metrics.unhealthy_stages() == []  # isolated failures never reach unhealthy_after in a row


@pytest.mark.parametrize(("failing", "healthy_at_end"), [(range(10, 40), False), (range(10, 20), True)])
def test_repeated_failures_mark_the_stage_unhealthy(
    failing: range, healthy_at_end: bool, runner_log: list[logging.LogRecord]
) -> None:
    metrics = Metrics()
    _, report = run_stages(
        [Detect(fail_on=frozenset(failing))],
        [FramesSource("cam", frames("cam", 40))],
        options=RunnerOptions(unhealthy_after=5),
        metrics=metrics,
    )
    assert report.stage_errors == {"detect": len(failing)}
    assert report.frames_completed == {"cam": 40}
    assert metrics.unhealthy_stages() == ([] if healthy_at_end else ["detect"])
    assert metrics.registry.get_sample_value("vigil_stage_healthy", {"stage": "detect"}) == float(
        healthy_at_end
    )
    recovered = [r for r in runner_log if r.getMessage() == "stage recovered"]
    assert len(recovered) == (1 if healthy_at_end else 0)


def test_source_hooks_arrive_in_order_around_each_cameras_frames() -> None:
    recorder = Recorder()
    counts = {"a": 25, "b": 7, "c": 1}
    _, report = run_stages(
        [Detect(), recorder],
        [FramesSource(cam, frames(cam, n, fps=12.5)) for cam, n in counts.items()],
        options=RunnerOptions(ingress_capacity=1, pipe_capacity=1),
    )
    assert report.frames_completed == counts
    for camera, n in counts.items():
        mine = [(kind, index) for kind, cam, index in recorder.seen if cam == camera]
        assert mine == [("added", -1), *[("frame", i) for i in range(n)], ("eos", -1)]
        assert (recorder.added[camera].width, recorder.added[camera].height) == (32, 24)
        assert recorder.added[camera].fps == 12.5


def test_stop_event_ends_a_live_run_promptly() -> None:
    stop = threading.Event()
    recorder = Recorder()
    runner = Runner(
        build_graph([recorder]),
        [LiveFrames("live", fps=20, seconds=600.0)],
        Metrics(),
        stop,
        options=RunnerOptions(live=True, drain_timeout_s=5.0),
    )
    threading.Timer(1.0, stop.set).start()
    t0 = time.monotonic()
    report = runner.run()
    assert time.monotonic() - t0 < 4.0
    assert report.clean_shutdown
    assert recorder.seen[0] == ("added", "live", -1) and recorder.seen[-1] == ("eos", "live", -1)


def test_replay_that_ends_by_itself_finishes_every_frame_whatever_the_drain_timeout() -> None:
    """The drain timeout bounds shutdown on a stop; a replay whose files ended keeps every queued frame."""
    packets, report = run_stages(
        [Detect(delay_s=0.05)],
        [FramesSource("cam", frames("cam", 60))],
        options=RunnerOptions(live=False, drain_timeout_s=0.3),
    )
    assert report.frames_completed == {"cam": 60}
    assert report.clean_shutdown
    assert [p.frame.index for p in packets] == list(range(60))


class Sleep(Stage):
    """A slow stage after detect: several of them make a deep pipeline."""

    needs = ("detections",)

    def __init__(self, name: str, delay_s: float) -> None:
        self.name = name  # type: ignore[misc]
        self.delay_s = delay_s

    def process(self, packet: FramePacket) -> None:
        time.sleep(self.delay_s)


@pytest.mark.parametrize("max_in_flight", [1, 2])
def test_live_latency_stays_bounded_in_a_deep_pipeline(max_in_flight: int) -> None:
    """Five 40 ms stages: frames wait at the ingress (where the oldest is dropped), not in the pipes."""
    stages: list[Stage] = [Detect(delay_s=0.04), *(Sleep(f"slow{i}", 0.04) for i in range(4))]
    ages: list[float] = []
    report = Runner(
        build_graph(stages),
        [LiveFrames("live", fps=50, seconds=3.0)],
        Metrics(),
        threading.Event(),
        options=RunnerOptions(live=True, max_in_flight=max_in_flight),
        on_packet=lambda p: ages.append(time.time() - p.frame.captured_at),
    ).run()
    assert report.frames_dropped.get("live", 0) > 0
    path = 5 * 0.04
    # a frame waits for at most `max_in_flight` frames inside and the other frame the live ingress
    # holds (capacity 2: at the end of the stream nothing newer pushes that one out), then crosses
    # the 5 stages: bounded, however long the stream
    assert max(ages) < path * (max_in_flight + 2) + 0.15, sorted(ages)[-5:]
    # while frames keep coming, the older one in the ingress is dropped: only the in-flight wait
    assert max(ages[:-2]) < path * (max_in_flight + 1) + 0.15, ages[:-2]
    # and the pipeline is used: with 2 in flight it completes more frames than with 1
    assert report.frames_completed["live"] >= 3.0 / path * max_in_flight * 0.6


class Opens(Stage):
    """Opens one event on frame `at` (after `delay_s` of work) and sends an update on the next frame."""

    name = "opens"
    provides = ("events",)

    def __init__(self, at: int, delay_s: float) -> None:
        self.at = at
        self.delay_s = delay_s

    def process(self, packet: FramePacket) -> None:
        from pipeline.packets import Event

        i = packet.frame.index
        if i not in (self.at, self.at + 1):
            return
        time.sleep(self.delay_s)
        kind = "new" if i == self.at else "update"
        packet.events.append(
            Event(
                id="cam-1",
                kind=kind,
                camera=packet.frame.camera,
                start_time=0.0,
                end_time=packet.frame.pts,
                start_frame=self.at,
                end_frame=i,
                track_id=1,
                class_name="person",
                box=(1.0, 1.0, 5.0, 9.0),
                trajectory=(),
                score=4.0,
                peak_score=4.0,
                reasons=(),
                snapshot_path=None,
                clip_path=None,
                created_at=time.time(),
            )
        )


def test_frame_to_event_latency_is_measured_for_new_events() -> None:
    metrics = Metrics()
    report = Runner(
        build_graph([Opens(at=3, delay_s=0.05)]),
        [FramesSource("cam", frames("cam", 8))],
        metrics,
        threading.Event(),
    ).run()
    assert report.events == 2
    labels = {"camera": "cam"}
    count = metrics.registry.get_sample_value("vigil_event_latency_seconds_count", labels)
    total = metrics.registry.get_sample_value("vigil_event_latency_seconds_sum", labels)
    assert count == 1  # the update is not a new event
    assert total is not None and 0.05 <= total < 5.0


class InterpreterBound(Stage):
    """An interpreter-bound stage that records its worker thread, hooks and frames; fails on `fail_on`."""

    interpreter_bound = True
    needs = ("frame", "detections")

    def __init__(self, name: str, fail_on: frozenset[int] = frozenset()) -> None:
        self.name = name  # type: ignore[misc]
        self.fail_on = fail_on
        self.threads: set[int] = set()
        self.seen: list[tuple[str, int]] = []

    def on_source_added(self, event: SourceEvent) -> None:
        self.seen.append(("added", -1))

    def on_source_eos(self, event: SourceEvent) -> None:
        self.seen.append(("eos", -1))

    def process(self, packet: FramePacket) -> None:
        self.threads.add(threading.get_ident())
        if packet.frame.index in self.fail_on:
            raise ValueError(f"{self.name} fails on frame {packet.frame.index}")
        self.seen.append(("frame", packet.frame.index))


@pytest.mark.parametrize("share", [True, False])
def test_consecutive_interpreter_bound_stages_share_one_worker_and_keep_their_own_accounting(
    share: bool,
) -> None:
    first, second = InterpreterBound("first", fail_on=frozenset({3})), InterpreterBound("second")
    metrics = Metrics()
    packets, report = run_stages(
        [Detect(), first, second],
        [FramesSource("cam", frames("cam", 20))],
        options=RunnerOptions(share_interpreter_bound=share, pipe_capacity=1),
        metrics=metrics,
    )
    assert report.frames_completed == {"cam": 20}
    assert [p.frame.index for p in packets] == list(range(20))
    assert len(first.threads) == len(second.threads) == 1
    assert (first.threads == second.threads) is share
    assert report.stage_errors == {"first": 1}  # a failure stays the failing stage's, and the frame goes on
    for stage in (first, second):
        expected = [i for i in range(20) if stage is second or i != 3]
        assert stage.seen == [("added", -1), *[("frame", i) for i in expected], ("eos", -1)]
        frames_in = {"camera": "cam", "stage": stage.name}
        assert metrics.registry.get_sample_value("vigil_stage_frames_in_total", frames_in) == 20
        timed = metrics.registry.get_sample_value("vigil_stage_latency_seconds_count", {"stage": stage.name})
        assert timed == 20  # every frame it ran on, the failed one included
