"""What an event's object was observed to be, kept so an operator's "normal here" can teach the model.

An alert names an object and why it is unusual; feedback must add *those* observations (its attribute
values, in the places and as the class it was seen) to the camera's normality. `EventObservations`
holds one event's frames: the object's row of `ObjectAttributes` per analysed frame while the event is
open, and the relations it took part in. The event stage records them (`ObservationRecorder`) and
writes `<media_dir>/<camera>/<event id>.obs.npz` beside the snapshot; `stages.normality.feedback`
reads it back and hands it to each attribute's own `absorb_normal`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np

from pipeline.atomic import atomic_file
from pipeline.errors import ModelError
from pipeline.packets import ObjectAttributes, SceneGraph

FORMAT = 1
#: ObjectAttributes' array fields (every field but class_names)
_ARRAYS = tuple(f.name for f in fields(ObjectAttributes) if f.name != "class_names")


def take_rows(attrs: ObjectAttributes, rows: np.ndarray) -> ObjectAttributes:
    """The objects `rows` of `attrs` (in that order) as ObjectAttributes of their own."""
    return ObjectAttributes(
        class_names=attrs.class_names, **{name: getattr(attrs, name)[rows] for name in _ARRAYS}
    )


def concat_rows(parts: list[ObjectAttributes]) -> ObjectAttributes:
    """The rows of `parts` one after another (their class names must agree)."""
    names = {p.class_names for p in parts}
    if len(names) != 1:
        raise ModelError(f"observations: {len(names)} different class-name lists, expected one")
    return ObjectAttributes(
        class_names=parts[0].class_names,
        **{name: np.concatenate([getattr(p, name) for p in parts]) for name in _ARRAYS},
    )


@dataclass
class EventObservations:
    """One event's object, frame by frame: `attrs` has one row per recorded frame (one track), `edges`
    the distinct relations it took part in: (subject id, subject label, predicate, object id, object
    label). `frame_size` (height, width) tells cut boxes (not learnt by geometric attributes)."""

    camera: str
    event_id: str
    track_id: int
    frame_size: tuple[int, int]
    attrs: ObjectAttributes
    edges: list[tuple[int, str, str, int, str]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.attrs)

    def graph(self) -> SceneGraph | None:
        """The relations as one scene graph (each distinct relation once); None without any."""
        if not self.edges:
            return None
        nodes: dict[int, str] = {}
        for s, sl, _, o, ol in self.edges:
            nodes.setdefault(s, sl)
            nodes.setdefault(o, ol)
        return SceneGraph(
            node_ids=np.array(list(nodes), np.int64),
            node_labels=tuple(nodes.values()),
            subject=np.array([e[0] for e in self.edges], np.int64),
            object=np.array([e[3] for e in self.edges], np.int64),
            predicate=tuple(e[2] for e in self.edges),
            confidence=np.ones(len(self.edges), np.float32),
        )

    # ---- file ------------------------------------------------------------------------------------

    def save(self, path: Path) -> Path:
        """Write atomically (a reader never sees half a file; the file is rewritten while the event runs)."""
        arrays: dict[str, np.ndarray] = {
            "format": np.array(FORMAT),
            "camera": np.array(self.camera),
            "event_id": np.array(self.event_id),
            "track_id": np.array(self.track_id, np.int64),
            "frame_size": np.array(self.frame_size, np.int64),
            "class_names": np.array(self.attrs.class_names, dtype=str),
            "edge_ids": np.array([(e[0], e[3]) for e in self.edges], np.int64).reshape(-1, 2),
            "edge_text": np.array([(e[1], e[2], e[4]) for e in self.edges], dtype=str).reshape(-1, 3),
        }
        arrays.update({f"attr.{name}": getattr(self.attrs, name) for name in _ARRAYS})
        with atomic_file(path) as f:
            np.savez_compressed(f, **arrays)  # type: ignore[arg-type]
        return path

    @classmethod
    def load(cls, path: Path) -> EventObservations:
        try:
            with np.load(path, allow_pickle=False) as a:
                if int(a["format"]) != FORMAT:
                    raise ModelError(f"observations {path}: format {int(a['format'])}, expected {FORMAT}")
                attrs = ObjectAttributes(
                    class_names=tuple(str(s) for s in a["class_names"].tolist()),
                    **{name: a[f"attr.{name}"] for name in _ARRAYS},
                )
                edges = [
                    (int(ids[0]), str(t[0]), str(t[1]), int(ids[1]), str(t[2]))
                    for ids, t in zip(a["edge_ids"].tolist(), a["edge_text"].tolist(), strict=True)
                ]
                h, w = (int(v) for v in a["frame_size"])
                return cls(str(a["camera"]), str(a["event_id"]), int(a["track_id"]), (h, w), attrs, edges)
        except (OSError, KeyError, ValueError) as exc:
            raise ModelError(f"observations {path}: cannot read: {exc}") from exc


def observations_path(media_dir: Path, camera: str, event_id: str) -> Path:
    """Where an event's observations live: beside its snapshot and clip."""
    return Path(media_dir) / camera / f"{event_id}.obs.npz"


@dataclass
class _Recording:
    """One open event: its track, the rows kept (every `stride`-th frame showing it) and its relations."""

    track: int
    rows: list[ObjectAttributes] = field(default_factory=list)
    edges: dict[tuple[int, str, int], tuple[int, str, str, int, str]] = field(default_factory=dict)
    stride: int = 1
    seen: int = 0  # frames that showed the track


class ObservationRecorder:
    """Per open event of one camera: the object's row each analysed frame (at most `max_frames`,
    thinned to every other frame when full, so a long event keeps its whole span) and its relations."""

    def __init__(self, camera: str, max_frames: int = 200) -> None:
        self.camera = camera
        self.max_frames = max_frames
        self._open: dict[str, _Recording] = {}
        self.frame_size = (0, 0)

    def start(self, event_id: str, track_id: int) -> None:
        self._open.setdefault(event_id, _Recording(track_id))

    def add(self, attrs: ObjectAttributes, graph: SceneGraph | None, frame_size: tuple[int, int]) -> None:
        """Record this frame's row of every open event's track (frames without it add nothing)."""
        self.frame_size = frame_size
        if not self._open or len(attrs) == 0:
            return
        ids = attrs.track_id
        for rec in self._open.values():
            hit = np.flatnonzero(ids == rec.track)
            if len(hit) == 0:
                continue
            rec.seen += 1
            if (rec.seen - 1) % rec.stride == 0:
                rec.rows.append(take_rows(attrs, hit[:1]))
                if len(rec.rows) >= self.max_frames:
                    del rec.rows[1::2]
                    rec.stride *= 2
            if graph is not None:
                self._relations(rec.track, graph, rec.edges)

    @staticmethod
    def _relations(track: int, graph: SceneGraph, edges: dict[tuple[int, str, int], tuple]) -> None:
        labels = dict(zip(graph.node_ids.tolist(), graph.node_labels, strict=True))
        for s, o, p in zip(graph.subject.tolist(), graph.object.tolist(), graph.predicate, strict=True):
            if track in (s, o):
                edges.setdefault((s, p, o), (s, labels[s], p, o, labels[o]))

    def observations(self, event_id: str) -> EventObservations | None:
        """What is recorded of the event so far; None when unknown or no frame showed its object."""
        rec = self._open.get(event_id)
        if rec is None or not rec.rows:
            return None
        return EventObservations(
            self.camera, event_id, rec.track, self.frame_size, concat_rows(rec.rows), list(rec.edges.values())
        )

    def finish(self, event_id: str) -> EventObservations | None:
        out = self.observations(event_id)
        self._open.pop(event_id, None)
        return out
