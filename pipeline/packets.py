"""Typed packets that travel between stages.

Every packet is a dataclass of parallel numpy arrays whose shapes and dtypes are checked on
construction, so a stage that produces a wrong-shaped array fails where the mistake is made, with a
message that states what was expected and what arrived.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import networkx as nx
import numpy as np

from pipeline.errors import PacketError

# --------------------------------------------------------------------------------------------------
# validation helpers


def check_array(
    owner: str,
    name: str,
    value: object,
    shape: tuple[int | str | None, ...],
    dtype: type | tuple[type, ...],
    sizes: dict[str, int] | None = None,
) -> np.ndarray:
    """Check `value` is an ndarray of `shape` and a dtype kind of `dtype`.

    Shape entries: an int must match exactly, a str is a named dimension that must agree with
    every other use of that name (recorded in `sizes`), None matches anything.
    """
    if not isinstance(value, np.ndarray):
        raise PacketError(f"{owner}.{name}: expected numpy array, got {type(value).__name__}")
    if value.ndim != len(shape):
        raise PacketError(
            f"{owner}.{name}: expected {len(shape)}-d array of shape {_fmt(shape)}, got shape {value.shape}"
        )
    dtypes = dtype if isinstance(dtype, tuple) else (dtype,)
    if not any(np.issubdtype(value.dtype, d) for d in dtypes):
        raise PacketError(
            f"{owner}.{name}: expected dtype {'/'.join(d.__name__ for d in dtypes)}, got {value.dtype}"
        )
    sizes = {} if sizes is None else sizes
    for axis, (want, got) in enumerate(zip(shape, value.shape, strict=True)):
        if want is None:
            continue
        if isinstance(want, str):
            if want in sizes and sizes[want] != got:
                raise PacketError(
                    f"{owner}.{name}: expected shape {_fmt(shape)} with {want}={sizes[want]}, "
                    f"got shape {value.shape} (axis {axis} is {got})"
                )
            sizes[want] = got
        elif want != got:
            raise PacketError(f"{owner}.{name}: expected shape {_fmt(shape)}, got shape {value.shape}")
    return value


def _fmt(shape: tuple[int | str | None, ...]) -> str:
    return "(" + ", ".join("*" if s is None else str(s) for s in shape) + ")"


# --------------------------------------------------------------------------------------------------
# frames


@dataclass(frozen=True, slots=True)
class Frame:
    """One decoded picture of one camera.

    `pts` is the presentation time in seconds on the source's clock (monotonic within a source
    session); `captured_at` is the wall-clock time (time.time()) at which it was decoded and is
    what end-to-end latency is measured from.
    """

    camera: str
    index: int
    pts: float
    image: np.ndarray
    captured_at: float
    fps: float = 10.0

    def __post_init__(self) -> None:
        check_array("Frame", "image", self.image, (None, None, 3), np.uint8)
        if self.index < 0:
            raise PacketError(f"Frame.index: expected >= 0, got {self.index}")
        if not math.isfinite(self.pts):
            raise PacketError(f"Frame.pts: expected a finite time in seconds, got {self.pts}")
        if not self.fps > 0:
            raise PacketError(f"Frame.fps: expected > 0, got {self.fps}")

    @property
    def height(self) -> int:
        return int(self.image.shape[0])

    @property
    def width(self) -> int:
        return int(self.image.shape[1])


# --------------------------------------------------------------------------------------------------
# perception


@dataclass(frozen=True, slots=True)
class Detections:
    """Boxes of one frame in pixel xyxy, with class, confidence and track id (-1: not tracked)."""

    xyxy: np.ndarray
    class_id: np.ndarray
    confidence: np.ndarray
    track_id: np.ndarray
    class_names: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        n: dict[str, int] = {}
        check_array("Detections", "xyxy", self.xyxy, ("N", 4), np.floating, n)
        check_array("Detections", "class_id", self.class_id, ("N",), np.integer, n)
        check_array("Detections", "confidence", self.confidence, ("N",), np.floating, n)
        check_array("Detections", "track_id", self.track_id, ("N",), np.integer, n)
        if len(self.class_id) and self.class_names and int(self.class_id.max()) >= len(self.class_names):
            raise PacketError(
                f"Detections.class_id: id {int(self.class_id.max())} has no name "
                f"({len(self.class_names)} class names)"
            )

    @classmethod
    def empty(cls, class_names: tuple[str, ...] = ()) -> Detections:
        return cls(
            xyxy=np.zeros((0, 4), np.float32),
            class_id=np.zeros(0, np.int32),
            confidence=np.zeros(0, np.float32),
            track_id=np.zeros(0, np.int64),
            class_names=class_names,
        )

    def __len__(self) -> int:
        return len(self.xyxy)

    def __getitem__(self, index: np.ndarray | slice) -> Detections:
        return Detections(
            xyxy=self.xyxy[index],
            class_id=self.class_id[index],
            confidence=self.confidence[index],
            track_id=self.track_id[index],
            class_names=self.class_names,
        )

    def name_of(self, i: int) -> str:
        cid = int(self.class_id[i])
        return self.class_names[cid] if cid < len(self.class_names) else str(cid)


COCO_KEYPOINTS = 17


@dataclass(frozen=True, slots=True)
class Poses:
    """Keypoints of person tracks, normalised to their box: (x - x1) / w, (y - y1) / h."""

    detection_index: np.ndarray
    track_id: np.ndarray
    keypoints: np.ndarray
    keypoint_conf: np.ndarray

    def __post_init__(self) -> None:
        n: dict[str, int] = {}
        check_array("Poses", "detection_index", self.detection_index, ("N",), np.integer, n)
        check_array("Poses", "track_id", self.track_id, ("N",), np.integer, n)
        check_array("Poses", "keypoints", self.keypoints, ("N", COCO_KEYPOINTS, 2), np.floating, n)
        check_array("Poses", "keypoint_conf", self.keypoint_conf, ("N", COCO_KEYPOINTS), np.floating, n)

    @classmethod
    def empty(cls) -> Poses:
        return cls(
            detection_index=np.zeros(0, np.int64),
            track_id=np.zeros(0, np.int64),
            keypoints=np.zeros((0, COCO_KEYPOINTS, 2), np.float32),
            keypoint_conf=np.zeros((0, COCO_KEYPOINTS), np.float32),
        )

    def __len__(self) -> int:
        return len(self.track_id)


@dataclass(frozen=True, slots=True)
class Embeddings:
    """Appearance embeddings of tracked boxes (L2-normalised rows)."""

    detection_index: np.ndarray
    track_id: np.ndarray
    vectors: np.ndarray

    def __post_init__(self) -> None:
        n: dict[str, int] = {}
        check_array("Embeddings", "detection_index", self.detection_index, ("N",), np.integer, n)
        check_array("Embeddings", "track_id", self.track_id, ("N",), np.integer, n)
        check_array("Embeddings", "vectors", self.vectors, ("N", None), np.floating, n)

    @classmethod
    def empty(cls, dim: int) -> Embeddings:
        return cls(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros((0, dim), np.float32))

    def __len__(self) -> int:
        return len(self.track_id)


@dataclass(frozen=True, slots=True)
class FlowField:
    """Dense optical flow from the previous analysed frame to this one.

    `flow` is (h, w, 2) in pixels of the *full-resolution* frame per `dt` seconds, sampled on a grid
    that is `scale` times the frame size (scale < 1 when flow is computed on a downscaled image).
    `valid` is False for the first frame of a source, where there is nothing to compare with.
    """

    flow: np.ndarray
    dt: float
    scale: float
    valid: bool = True

    def __post_init__(self) -> None:
        check_array("FlowField", "flow", self.flow, (None, None, 2), np.float32)
        if not self.dt > 0:
            raise PacketError(f"FlowField.dt: expected > 0 seconds, got {self.dt}")
        if not 0 < self.scale <= 1:
            raise PacketError(f"FlowField.scale: expected in (0, 1], got {self.scale}")


@dataclass(frozen=True, slots=True)
class ObjectAttributes:
    """Per-object attributes of one frame, in scale-free units where possible.

    Rows are objects: tracked detections, then moving regions no detection explains (`is_blob`).
    Speeds are in box-heights per second; place is the box's ground point (bottom centre) in
    normalised image coordinates; missing values (no pose for a car, no history yet) are NaN.
    """

    track_id: np.ndarray  # (N,) int64; blobs get negative ids
    class_id: np.ndarray  # (N,) int32; -1 for blobs
    class_names: tuple[str, ...]
    xyxy: np.ndarray  # (N, 4) float32 pixels
    confidence: np.ndarray  # (N,) float32
    ground: np.ndarray  # (N, 2) float32 in [0, 1]
    cell: np.ndarray  # (N,) int32 index into the camera grid
    height: np.ndarray  # (N,) float32 box height / frame height
    aspect: np.ndarray  # (N,) float32 width / height
    velocity: np.ndarray  # (N, 2) float32 box-heights/s, smoothed from the track
    speed: np.ndarray  # (N,) float32 |velocity|
    direction: np.ndarray  # (N,) float32 radians, image coordinates (x right, y down)
    flow_speed: np.ndarray  # (N,) float32 box-heights/s, median flow inside the box
    motion_hist: np.ndarray  # (N, B) float32, magnitude x orientation histogram, sums to 1 or 0
    pose: np.ndarray  # (N, P) float32 normalised keypoints and conf; NaN when absent
    appearance: np.ndarray  # (N, D) float32 embedding, L2-normalised; NaN when absent
    scale_rate: np.ndarray  # (N,) float32 d(log height)/dt per second
    dwell: np.ndarray  # (N,) float32 seconds spent within one box-height of the current place
    age: np.ndarray  # (N,) int32 frames the track has existed
    is_blob: np.ndarray  # (N,) bool

    def __post_init__(self) -> None:
        n: dict[str, int] = {}
        a = "ObjectAttributes"
        check_array(a, "track_id", self.track_id, ("N",), np.integer, n)
        check_array(a, "class_id", self.class_id, ("N",), np.integer, n)
        check_array(a, "xyxy", self.xyxy, ("N", 4), np.floating, n)
        check_array(a, "confidence", self.confidence, ("N",), np.floating, n)
        check_array(a, "ground", self.ground, ("N", 2), np.floating, n)
        check_array(a, "cell", self.cell, ("N",), np.integer, n)
        for name in ("height", "aspect", "speed", "direction", "flow_speed", "scale_rate", "dwell"):
            check_array(a, name, getattr(self, name), ("N",), np.floating, n)
        check_array(a, "velocity", self.velocity, ("N", 2), np.floating, n)
        check_array(a, "motion_hist", self.motion_hist, ("N", None), np.floating, n)
        check_array(a, "pose", self.pose, ("N", None), np.floating, n)
        check_array(a, "appearance", self.appearance, ("N", None), np.floating, n)
        check_array(a, "age", self.age, ("N",), np.integer, n)
        check_array(a, "is_blob", self.is_blob, ("N",), np.bool_, n)

    def __len__(self) -> int:
        return len(self.track_id)

    def name_of(self, i: int) -> str:
        cid = int(self.class_id[i])
        if cid < 0:
            return "moving region"
        return self.class_names[cid] if cid < len(self.class_names) else str(cid)


@dataclass(frozen=True, slots=True)
class SceneGraph:
    """Objects of one frame and the relations between them.

    Relations are parallel arrays (subject track id, object track id, predicate, confidence);
    `graph` is the same information as a networkx MultiDiGraph whose nodes are track ids carrying
    the row index into ObjectAttributes and whose edges carry `predicate` and `confidence`.
    """

    node_ids: np.ndarray  # (N,) int64 track ids
    node_labels: tuple[str, ...]  # class name per node
    subject: np.ndarray  # (E,) int64 track id
    object: np.ndarray  # (E,) int64 track id
    predicate: tuple[str, ...]  # (E,)
    confidence: np.ndarray  # (E,) float32

    def __post_init__(self) -> None:
        n: dict[str, int] = {}
        e: dict[str, int] = {}
        check_array("SceneGraph", "node_ids", self.node_ids, ("N",), np.integer, n)
        if len(self.node_labels) != n["N"]:
            raise PacketError(
                f"SceneGraph.node_labels: expected {n['N']} labels, got {len(self.node_labels)}"
            )
        check_array("SceneGraph", "subject", self.subject, ("E",), np.integer, e)
        check_array("SceneGraph", "object", self.object, ("E",), np.integer, e)
        check_array("SceneGraph", "confidence", self.confidence, ("E",), np.floating, e)
        if len(self.predicate) != e["E"]:
            raise PacketError(
                f"SceneGraph.predicate: expected {e['E']} predicates, got {len(self.predicate)}"
            )
        known = set(self.node_ids.tolist())
        unknown = (set(self.subject.tolist()) | set(self.object.tolist())) - known
        if unknown:
            raise PacketError(f"SceneGraph: relations refer to unknown nodes {sorted(unknown)}")

    @property
    def graph(self) -> nx.MultiDiGraph:
        g = nx.MultiDiGraph()
        for row, (tid, label) in enumerate(zip(self.node_ids.tolist(), self.node_labels, strict=True)):
            g.add_node(tid, label=label, row=row)
        for s, o, p, c in zip(
            self.subject.tolist(), self.object.tolist(), self.predicate, self.confidence.tolist(), strict=True
        ):
            g.add_edge(s, o, key=p, predicate=p, confidence=c)
        return g

    def triplets(self) -> list[tuple[str, str, str]]:
        label = dict(zip(self.node_ids.tolist(), self.node_labels, strict=True))
        return [
            (label[s], p, label[o])
            for s, o, p in zip(self.subject.tolist(), self.object.tolist(), self.predicate, strict=True)
        ]

    def relations_of(self, track_id: int) -> list[tuple[str, int, float]]:
        """(predicate, other track id, confidence) for relations whose subject is `track_id`."""
        return [
            (p, int(o), float(c))
            for s, o, p, c in zip(self.subject, self.object, self.predicate, self.confidence, strict=True)
            if int(s) == track_id
        ]


# --------------------------------------------------------------------------------------------------
# scoring and explanation


@dataclass(frozen=True, slots=True)
class Scores:
    """Calibrated anomaly scores: per object and attribute, per object, and for the frame.

    Attribute scores share one scale (-log10 of the tail probability under normal data), so they
    can be ranked against each other; NaN means the attribute does not apply to that object.
    """

    track_id: np.ndarray  # (N,)
    attribute_names: tuple[str, ...]  # (A,)
    attribute_scores: np.ndarray  # (N, A)
    object_score: np.ndarray  # (N,)
    frame_score: float
    smoothed_score: float
    #: (N, A) sustained evidence of each attribute over the track's recent frames, same scale; NaN: none
    sustained_scores: np.ndarray | None = None

    def __post_init__(self) -> None:
        n: dict[str, int] = {"A": len(self.attribute_names)}
        check_array("Scores", "track_id", self.track_id, ("N",), np.integer, n)
        check_array("Scores", "attribute_scores", self.attribute_scores, ("N", "A"), np.floating, n)
        check_array("Scores", "object_score", self.object_score, ("N",), np.floating, n)
        if self.sustained_scores is not None:
            check_array("Scores", "sustained_scores", self.sustained_scores, ("N", "A"), np.floating, n)

    def strongest(self) -> np.ndarray:
        """(N, A) per attribute the larger of its per-frame and sustained score (what the object score
        combined)."""
        if self.sustained_scores is None:
            return self.attribute_scores
        return np.fmax(self.attribute_scores, self.sustained_scores)


@dataclass(frozen=True, slots=True)
class Reason:
    """One attribute's contribution to an object's score, with what was seen and what is normal."""

    attribute: str
    observed: str
    expected: str
    score: float
    sentence: str


@dataclass(frozen=True, slots=True)
class ObjectExplanation:
    track_id: int
    class_name: str
    xyxy: tuple[float, float, float, float]
    score: float
    reasons: tuple[Reason, ...]


@dataclass(frozen=True, slots=True)
class Explanations:
    objects: tuple[ObjectExplanation, ...]

    def for_track(self, track_id: int) -> ObjectExplanation | None:
        return self.by_track().get(track_id)

    def by_track(self) -> dict[int, ObjectExplanation]:
        """Track id -> its explanation (the first, should a track appear twice)."""
        out: dict[int, ObjectExplanation] = {}
        for o in self.objects:
            out.setdefault(o.track_id, o)
        return out


EventKind = Literal["new", "update", "end"]


@dataclass(frozen=True, slots=True)
class Event:
    """An alert's lifecycle message, serialisable to JSON as is."""

    id: str
    kind: EventKind
    camera: str
    start_time: float
    end_time: float
    start_frame: int
    end_frame: int
    track_id: int
    class_name: str
    box: tuple[float, float, float, float]
    trajectory: tuple[tuple[float, float, float, float, float], ...] = ()  # (pts, x1, y1, x2, y2)
    score: float = 0.0
    peak_score: float = 0.0
    reasons: tuple[Reason, ...] = ()
    snapshot_path: str | None = None
    clip_path: str | None = None
    created_at: float = 0.0  # wall clock when emitted

    def __post_init__(self) -> None:
        if self.kind not in ("new", "update", "end"):
            raise PacketError(f"Event.kind: expected new/update/end, got {self.kind!r}")
        if len(self.box) != 4:
            raise PacketError(f"Event.box: expected 4 numbers (x1, y1, x2, y2), got {len(self.box)}")

    def to_json(self) -> dict[str, object]:
        return {
            "id": self.id,
            "kind": self.kind,
            "camera": self.camera,
            "start_time": self.start_time,
            "end_time": self.end_time,
            "start_frame": self.start_frame,
            "end_frame": self.end_frame,
            "track_id": self.track_id,
            "class_name": self.class_name,
            "box": [round(v, 1) for v in self.box],
            "trajectory": [[round(v, 3) for v in p] for p in self.trajectory],
            "score": round(self.score, 3),
            "peak_score": round(self.peak_score, 3),
            "reasons": [
                {
                    "attribute": r.attribute,
                    "observed": r.observed,
                    "expected": r.expected,
                    "score": round(r.score, 3),
                    "sentence": r.sentence,
                }
                for r in self.reasons
            ],
            "snapshot_path": self.snapshot_path,
            "clip_path": self.clip_path,
            "created_at": self.created_at,
        }


# --------------------------------------------------------------------------------------------------
# the unit that flows through the runner

SLOTS = (
    "frame",
    "detections",
    "poses",
    "appearance",
    "flow",
    "attributes",
    "scene_graph",
    "scores",
    "explanations",
    "events",
)


@dataclass(slots=True)
class FramePacket:
    """Everything known about one frame so far; each stage fills the slots it `provides`.

    Slots are typed fields, not a dict: a stage reads the packets it `needs` by attribute.
    """

    frame: Frame
    detections: Detections | None = None
    poses: Poses | None = None
    appearance: Embeddings | None = None
    flow: FlowField | None = None
    attributes: ObjectAttributes | None = None
    scene_graph: SceneGraph | None = None
    scores: Scores | None = None
    explanations: Explanations | None = None
    events: list[Event] = field(default_factory=list)
    analysed: bool = True  # False for frames decoded but skipped by the analysis stride

    def missing(self, slots: tuple[str, ...]) -> list[str]:
        return [s for s in slots if s != "events" and getattr(self, s) is None]


SourceEventKind = Literal["added", "eos"]


@dataclass(frozen=True, slots=True)
class SourceEvent:
    """In-band control message: a camera was attached or reached its end.

    It travels through the same queues as frames so every stage sees it after the camera's last
    frame and can free that camera's state at the right moment.
    """

    camera: str
    kind: SourceEventKind
    width: int = 0
    height: int = 0
    fps: float = 0.0
    #: events a stage produced while handling this message (e.g. alerts ended at end of stream)
    events: tuple[Event, ...] = ()
