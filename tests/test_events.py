"""Event lifecycle: hysteresis, minimum duration, cooldown, updates, end on EOS, media paths."""

from __future__ import annotations

import itertools
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
from synthetic import normal_footage

from pipeline.config import EventsConfig, ScoringConfig
from pipeline.harness import FramesSource, run_stages
from pipeline.packets import (
    Event,
    Explanations,
    Frame,
    FramePacket,
    ObjectAttributes,
    ObjectExplanation,
    Reason,
    Scores,
    SourceEvent,
)
from pipeline.sinks.base import EventSink
from pipeline.stage import Stage
from stages.events import EventStage, EventTracker, Observation
from stages.normality import NormalityModel, fit_normality
from stages.normality.alert_budget import AlertCurve

FPS = 10.0
BOX = (100.0, 60.0, 140.0, 140.0)


def cfg(**kw: object) -> EventsConfig:
    base: dict[str, object] = dict(
        start_score=3.0,
        end_score=2.0,
        min_duration_s=0.5,
        end_after_s=1.0,
        cooldown_s=5.0,
        update_every_s=1.0,
        snapshots=False,
        clips=False,
    )
    base.update(kw)
    return EventsConfig(**base)  # type: ignore[arg-type]


def reasons(attribute: str, score: float) -> tuple[Reason, ...]:
    return (Reason(attribute, "3.4 bh/s", "0.9 ± 0.3", score, f"{attribute} is unusual"),)


def run_tracker(tracker: EventTracker, scores: Sequence[float | None], track: int = 7) -> list[Event]:
    """Feed one track's score per frame (None: track not seen) and collect every message."""
    out: list[Event] = []
    for i, s in enumerate(scores):
        obs = [] if s is None else [Observation(track, "bicycle", BOX, s, reasons("speed", s))]
        out += tracker.step(i / FPS, i, FPS, obs)
    return out


def kinds(events: list[Event]) -> list[str]:
    return [e.kind for e in events]


@pytest.mark.parametrize(
    ("scores", "expected"),
    [
        # sustained high score with a short dip under end_score: ONE event (hysteresis)
        ([5.0] * 10 + [1.0] * 3 + [5.0] * 10 + [0.0] * 15, ["new", "end"]),
        # dip between end_score and start_score keeps it open as well
        ([5.0] * 10 + [2.5] * 30 + [0.0] * 15, ["new", "end"]),
        # one-frame spike, shorter than min_duration: nothing
        ([0.0] * 5 + [9.0] + [0.0] * 20, []),
        # four frames (0.4 s) above start: still shorter than 0.5 s
        ([0.0] * 5 + [9.0] * 4 + [0.0] * 20, []),
        # exactly five frames (0.5 s): opens
        ([0.0] * 5 + [9.0] * 5 + [0.0] * 20, ["new", "end"]),
        # long quiet gap (> end_after_s) ends it; a second burst inside the cooldown is ignored
        ([5.0] * 10 + [0.0] * 15 + [5.0] * 10 + [0.0] * 15, ["new", "end"]),
    ],
)
def test_lifecycle(scores: list[float], expected: list[str]) -> None:
    events = run_tracker(EventTracker("cam", cfg()), scores)
    assert [k for k in kinds(events) if k != "update"] == expected
    assert len({e.id for e in events}) == (1 if expected else 0)


def test_event_timing_and_payload() -> None:
    scores = [0.0] * 3 + [4.0] * 6 + [6.0] * 4 + [0.0] * 12
    events = run_tracker(EventTracker("cam", cfg()), scores)
    new, end = events[0], events[-1]
    assert (new.kind, end.kind) == ("new", "end")
    assert new.start_frame == 3 and new.start_time == pytest.approx(0.3)
    assert new.end_frame == 7  # opened after 5 frames = 0.5 s above start_score
    assert end.end_frame == 12  # last frame at or above end_score
    assert end.peak_score == 6.0 and end.score == 0.0
    assert end.reasons[0].attribute == "speed" and end.reasons[0].score == 6.0
    # trajectory: from the first frame above start_score to the last frame seen while open
    assert end.trajectory[0][0] == pytest.approx(0.3)
    assert len(end.trajectory) == 22 - 3 + 1  # frames 3..22: ended once 1.0 s quiet after frame 12
    assert end.box == BOX and end.class_name == "bicycle" and end.track_id == 7


def test_cooldown_then_new_event_after_it() -> None:
    tracker = EventTracker("cam", cfg(cooldown_s=2.0))
    # ends at frame 20 (t=2.0); cooldown until 4.0; high again from t=2.5 (ignored) and t=4.5 (new event)
    scores = [5.0] * 10 + [0.0] * 15 + [5.0] * 10 + [0.0] * 10 + [5.0] * 10 + [0.0] * 15
    events = run_tracker(tracker, scores)
    news = [e for e in events if e.kind == "new"]
    assert len(news) == 2 and news[0].id != news[1].id
    assert news[1].start_time >= 4.0


def test_cooldown_is_per_track() -> None:
    tracker = EventTracker("cam", cfg())
    out: list[Event] = []
    for i in range(30):
        obs = [Observation(1, "person", BOX, 5.0 if i < 10 else 0.0)]
        if i >= 22:  # track 2 is high while track 1 is cooling down
            obs.append(Observation(2, "cart", BOX, 5.0))
        out += tracker.step(i / FPS, i, FPS, obs)
    assert [(e.kind, e.track_id) for e in out if e.kind != "update"] == [("new", 1), ("end", 1), ("new", 2)]


def test_updates_are_rate_limited_and_only_on_rising_peak() -> None:
    tracker = EventTracker("cam", cfg(update_every_s=1.0, end_after_s=1.0))
    rising = [3.0 + 0.1 * i for i in range(40)]  # peak rises every frame for 4 s
    flat = [5.0] * 30  # peak constant: no updates
    events = run_tracker(tracker, rising + flat + [0.0] * 12)
    updates = [e for e in events if e.kind == "update"]
    assert 2 <= len(updates) <= 4
    frames = [e.end_frame for e in updates]
    assert all(b - a >= 10 for a, b in itertools.pairwise(frames))  # >= update_every_s apart
    peaks = [e.peak_score for e in updates]
    assert peaks == sorted(set(peaks))  # each update carries a higher peak
    assert frames[-1] <= 50  # the last rise is reported within update_every_s; the flat part is silent


def test_track_disappearing_ends_event() -> None:
    events = run_tracker(EventTracker("cam", cfg()), [5.0] * 8 + [None] * 12)
    assert kinds(events) == ["new", "end"]
    assert events[-1].end_frame == 7


def test_trajectory_is_bounded() -> None:
    events = run_tracker(EventTracker("cam", cfg(), max_trajectory=16), [5.0] * 100 + [0.0] * 12)
    assert len(events[-1].trajectory) == 16


# ---- through the real runner ---------------------------------------------------------------------


class ListSink(EventSink):
    name = "list"

    def __init__(self) -> None:
        self.events: list[Event] = []

    def write(self, events: Sequence[Event]) -> None:
        self.events.extend(events)


class ScriptedScores(Stage):
    """Fills attributes/scores/explanations from a per-frame script (stand-in for the scorer)."""

    name = "script"
    needs = ("frame",)
    provides = ("attributes", "scene_graph", "scores", "explanations")

    def __init__(self, script: Sequence[float]) -> None:
        self.script = script

    def process(self, packet: FramePacket) -> None:
        score = self.script[packet.frame.index]
        packet.attributes = attributes_one(BOX)
        packet.scores = Scores(
            track_id=np.array([7]),
            attribute_names=("speed",),
            attribute_scores=np.array([[score]]),
            object_score=np.array([score]),
            frame_score=score,
            smoothed_score=score,
        )
        packet.explanations = Explanations(
            (ObjectExplanation(7, "bicycle", BOX, score, reasons("speed", score) + reasons("place", 1.0)),)
        )


def attributes_one(box: tuple[float, float, float, float]) -> ObjectAttributes:
    def f(*shape: int) -> np.ndarray:
        return np.zeros(shape, np.float32)

    return ObjectAttributes(
        track_id=np.array([7]),
        class_id=np.array([1], np.int32),
        class_names=("person", "bicycle"),
        xyxy=np.array([box], np.float32),
        confidence=np.array([0.9], np.float32),
        ground=f(1, 2),
        cell=np.zeros(1, np.int32),
        height=f(1),
        aspect=f(1),
        velocity=f(1, 2),
        speed=f(1),
        direction=f(1),
        flow_speed=f(1),
        motion_hist=f(1, 32),
        pose=f(1, 51),
        appearance=f(1, 8),
        scale_rate=f(1),
        dwell=f(1),
        age=np.ones(1, np.int32),
        is_blob=np.zeros(1, bool),
    )


def ped2_frames(ped2: Path, n: int) -> list[Frame]:
    frames = []
    with av.open(str(ped2 / "test" / "Test004.mp4")) as c:
        for i, vf in enumerate(c.decode(video=0)):
            if i == n:
                break
            frames.append(Frame("cam0", i, i / FPS, vf.to_ndarray(format="bgr24"), time.time(), FPS))
    return frames


def test_stage_ends_open_event_on_eos_and_writes_media(ped2: Path, tmp_path: Path) -> None:
    n = 40
    script = [0.0] * 10 + [6.0] * 30  # still high when the clip ends
    config = cfg(snapshots=True, clips=True, media_dir=tmp_path, clip_pre_s=0.5, clip_post_s=1.0)
    sink = ListSink()
    _packets, report = run_stages(
        [ScriptedScores(script), EventStage(config)],
        [FramesSource("cam0", ped2_frames(ped2, n))],
        sinks=[sink],
    )
    assert report.frames_completed["cam0"] == n
    assert [e.kind for e in sink.events if e.kind != "update"] == ["new", "end"]
    new, end = sink.events[0], sink.events[-1]
    assert new.id == end.id and end.end_frame == n - 1
    # snapshot: a JPEG of the frame's size, written when the event opened
    assert new.snapshot_path is not None and new.snapshot_path.startswith(str(tmp_path / "cam0"))
    image = cv2.imread(new.snapshot_path)
    assert image is not None and image.shape == (240, 360, 3)
    assert Path(new.snapshot_path).read_bytes()[:2] == b"\xff\xd8"
    # clip: pre-roll (0.5 s = 5 frames + the opening frame) + every frame until EOS cut the post-roll
    assert new.clip_path is not None and end.clip_path == new.clip_path
    opened_at = new.end_frame
    with av.open(new.clip_path) as c:
        decoded = [vf.to_ndarray(format="bgr24") for vf in c.decode(video=0)]
    assert len(decoded) == (n - opened_at) + 5
    assert decoded[0].shape == (240, 360, 3)


def test_stage_clip_post_roll(ped2: Path, tmp_path: Path) -> None:
    n = 60
    script = [0.0] * 10 + [6.0] * 10 + [0.0] * 40
    config = cfg(
        snapshots=False, clips=True, media_dir=tmp_path, clip_pre_s=0.3, clip_post_s=0.5, end_after_s=0.5
    )
    sink = ListSink()
    run_stages(
        [ScriptedScores(script), EventStage(config)],
        [FramesSource("cam0", ped2_frames(ped2, n))],
        sinks=[sink],
    )
    new, end = sink.events[0], sink.events[-1]
    assert (new.kind, end.kind) == ("new", "end") and new.snapshot_path is None
    # opened at frame 14 (5 frames high), last high frame 19, end decided at frame 24 (0.5 s quiet),
    # recording continues 0.5 s after that decision: frames 11..29 (pre-roll 0.3 s = frames 11..13)
    assert new.end_frame == 14 and end.end_frame == 19
    assert end.clip_path is not None
    with av.open(end.clip_path) as c:
        stream = c.streams.video[0]
        count = sum(1 for _ in c.decode(stream))
    assert count == 29 - 11 + 1


def test_min_duration_counts_analysed_frame_spacing() -> None:
    """With an analysis stride (here every 3rd frame of 10 fps), two analysed frames last 0.6 s."""
    tracker = EventTracker("cam", cfg(min_duration_s=0.5))
    out: list[Event] = []
    for k, i in enumerate(range(0, 30, 3)):
        score = 5.0 if k in (3, 4) else 0.0
        out += tracker.step(i / FPS, i, FPS, [Observation(1, "cart", BOX, score)])
    assert [e.kind for e in out] == ["new", "end"] and out[0].start_frame == 9 and out[0].end_frame == 12


# ---- the alert budget follows the camera's model ---------------------------------------------------


def packet_for(camera: str, index: int, track: int, score: float) -> FramePacket:
    """One frame of `camera` with one object: `track` at `score`, with one reason."""
    packet = FramePacket(Frame(camera, index, index / FPS, np.zeros((240, 360, 3), np.uint8), 0.0, FPS))
    packet.attributes = replace(attributes_one(BOX), track_id=np.array([track]))
    packet.scores = Scores(np.array([track]), ("speed",), np.array([[score]]), np.array([score]), score, 0.0)
    packet.explanations = Explanations(
        (ObjectExplanation(track, "bicycle", BOX, score, reasons("speed", score)),)
    )
    return packet


@pytest.fixture(scope="module")
def budgeted_model() -> NormalityModel:
    """A model whose held-out footage alerted 12 times an hour at start score 3, 6 at 4 and never at 5."""
    model = fit_normality(normal_footage(clips=2, frames=30), ScoringConfig(), seed=0)
    model.false_alerts = AlertCurve(3600.0, 36000, 3, 3, {}, (3.0, 4.0, 5.0), (12, 6, 0), (0.01, 0.005, 0.0))
    return model


@pytest.mark.parametrize(("budget", "start"), [(None, 3.0), (100.0, 3.0), (6.0, 4.0), (1.0, 5.0)])
def test_a_model_learnt_while_running_sets_the_budgets_start_score(
    budgeted_model: NormalityModel, budget: float | None, start: float
) -> None:
    """Warm-up: the camera starts with no model; the score stage adds one to the shared mapping while
    the camera runs, and from that frame on the camera alerts at the start score its budget gives."""
    models: dict[str, NormalityModel] = {}
    stage = EventStage(cfg(alerts_per_hour=budget, min_duration_s=0.0), models=models)
    stage.on_source_added(SourceEvent("cam", "added", 360, 240, FPS))
    stage.on_source_added(SourceEvent("other", "added", 360, 240, FPS))
    assert stage._trackers["cam"].config.start_score == 3.0  # no model yet
    models["cam"] = budgeted_model  # what ScoreStage does when warm-up ends
    opened = {}
    for i, (track, score) in enumerate([(1, 3.5), (2, 4.5), (3, 5.5)]):
        for camera in ("cam", "other"):
            packet = packet_for(camera, i, track, score)
            stage.process(packet)
            opened[camera, score] = [e.kind for e in packet.events] == ["new"]
    config = stage._trackers["cam"].config
    assert (config.start_score, config.end_score) == (start, start - 1.0)  # the hysteresis gap kept
    assert {s for (c, s), new in opened.items() if c == "cam" and new} == {
        s for s in (3.5, 4.5, 5.5) if s >= start
    }
    assert all(new for (c, _), new in opened.items() if c == "other")  # no model: events.start_score
