"""What an evaluation replay records: per test clip, each frame's scores and object boxes, and every
event message; the metrics are computed from these afterwards (pipeline/evaluation/report.py)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pipeline.packets import Event, FramePacket, Scores
from pipeline.sinks.base import EventSink


@dataclass
class ClipTrace:
    """What the replay recorded for one test clip, indexed by frame."""

    frame_score: dict[int, float] = field(default_factory=dict)
    smoothed: dict[int, float] = field(default_factory=dict)
    boxes: dict[int, np.ndarray] = field(default_factory=dict)
    box_scores: dict[int, np.ndarray] = field(default_factory=dict)
    track_ids: dict[int, np.ndarray] = field(default_factory=dict)  # the track of each of `boxes`
    #: the highest-scoring attribute of the frame's highest-scoring object ("" when nothing scored)
    top_attribute: dict[int, str] = field(default_factory=dict)

    def series(self, n: int) -> tuple[np.ndarray, int]:
        """(n,) frame scores; frames with no score (skipped or failed) repeat the last one (causal)."""
        out = np.zeros(n, np.float64)
        last, missing = 0.0, 0
        for t in range(n):
            value = self.frame_score.get(t)
            if value is None or not np.isfinite(value):
                missing += 1
                value = last
            out[t] = last = value
        return out, missing

    def track_boxes(self, track_id: int, start: int, end: int) -> list[tuple[int, np.ndarray]]:
        """(frame, xyxy box) of one track in frames start..end (inclusive) where it was scored."""
        out = []
        for t in range(start, end + 1):
            ids = self.track_ids.get(t)
            if ids is not None and (rows := np.flatnonzero(ids == track_id)).size:
                out.append((t, self.boxes[t][rows[0]]))
        return out

    def per_frame_boxes(self, n: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
        empty_b, empty_s = np.zeros((0, 4)), np.zeros(0)
        return (
            [self.boxes.get(t, empty_b) for t in range(n)],
            [self.box_scores.get(t, empty_s) for t in range(n)],
        )


def save_scores(
    path: Path,
    clips: Sequence[tuple[str, int, np.ndarray]],
    traces: dict[str, ClipTrace],
    training_normals: Sequence[tuple[str, np.ndarray]] = (),
) -> Path:
    """Every frame's score and every scored box of the test clips, so anyone can recompute a metric.

    Per clip NAME (given as (name, frames, labels)): `NAME.frame_score` (T,) as recorded (NaN: not
    scored), `NAME.labels` (T,), `NAME.box_frame` (B,) the frame of each box, `NAME.boxes` (B, 4) xyxy
    in pixels and `NAME.box_score` (B,) the object score. The held-out normal training clips (given as
    (name, scores), every frame normal): `training_normals` (C,) their names and per name
    `training_normal.NAME.frame_score` (T,) on the clip's frame grid (training_normals.py). npz, no pickles.
    """
    arrays: dict[str, np.ndarray] = {}
    if training_normals:
        arrays["training_normals"] = np.array([name for name, _ in training_normals], dtype=str)
    for name, scores in training_normals:
        arrays[f"training_normal.{name}.frame_score"] = np.asarray(scores, np.float64)
    for name, n, labels in clips:
        trace = traces.get(name, ClipTrace())
        arrays[f"{name}.frame_score"] = np.array([trace.frame_score.get(t, np.nan) for t in range(n)])
        arrays[f"{name}.labels"] = np.asarray(labels[:n], np.uint8)
        frames = [t for t in range(n) if t in trace.boxes]
        arrays[f"{name}.box_frame"] = np.repeat(frames, [len(trace.boxes[t]) for t in frames]).astype(
            np.int32
        )
        arrays[f"{name}.boxes"] = (
            np.concatenate([trace.boxes[t] for t in frames]).astype(np.float32)
            if frames
            else np.zeros((0, 4))
        )
        arrays[f"{name}.box_score"] = (
            np.concatenate([trace.box_scores[t] for t in frames]).astype(np.float32)
            if frames
            else np.zeros(0)
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, **arrays)
    return path


class TraceCollector:
    """`on_packet` callback: keeps per-frame scores, object boxes and event counts per camera."""

    def __init__(self) -> None:
        self.traces: dict[str, ClipTrace] = {}

    def __call__(self, packet: FramePacket) -> None:
        frame = packet.frame
        trace = self.traces.setdefault(frame.camera, ClipTrace())
        scores, attrs = packet.scores, packet.attributes
        if scores is None or attrs is None:
            return
        trace.frame_score[frame.index] = float(scores.frame_score)
        trace.smoothed[frame.index] = float(scores.smoothed_score)
        rows = {int(t): i for i, t in enumerate(attrs.track_id.tolist())}
        idx = [rows.get(int(t), -1) for t in scores.track_id.tolist()]
        keep = np.array([i >= 0 for i in idx], bool)
        trace.boxes[frame.index] = attrs.xyxy[np.array(idx)[keep]].astype(np.float64).reshape(-1, 4)
        trace.box_scores[frame.index] = scores.object_score[keep].astype(np.float64)
        trace.track_ids[frame.index] = scores.track_id[keep].astype(np.int64)
        trace.top_attribute[frame.index] = top_attribute(scores)


def top_attribute(scores: Scores) -> str:
    """Name of the largest attribute score of the frame's top object ("" when no object has one)."""
    if len(scores.object_score) == 0:
        return ""
    row = scores.attribute_scores[int(np.argmax(scores.object_score))]
    if not np.isfinite(row).any():
        return ""
    return scores.attribute_names[int(np.nanargmax(row))]


class EventLog(EventSink):
    """Keeps every event message of the replay (including those sent at end of stream)."""

    name = "eval"

    def __init__(self) -> None:
        self.events: list[Event] = []

    def write(self, events: Sequence[Event]) -> None:
        self.events.extend(events)

    def counts(self, camera: str) -> dict[str, int]:
        out = {"new": 0, "update": 0, "end": 0}
        for ev in self.events:
            if ev.camera == camera:
                out[ev.kind] += 1
        return out
