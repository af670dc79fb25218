"""Relations between the objects of a frame, each with a confidence in [0, 1].

Every criterion is graded linearly so that a value exactly at its threshold scores 0.5 and a clear
case scores 1; a relation that needs several criteria takes their minimum (fuzzy AND), so with the
default `min_confidence` 0.5 a relation is emitted when all its criteria pass their thresholds.
Distances are ground-point distances in box-heights (mean height of the pair), speeds in
box-heights per second; nothing is in pixels.

Predicates: `near`, `overlapping`, `same_direction`, `approaching`, `moving_away` are symmetric and
emitted in both directions; `on` (a person on top of a rideable box: centred over it, lower body
inside it, head above it) and `riding` (`on` AND moving with it AND the vehicle faster than a walk)
go from the person to the vehicle. "Moving with it" compares the two velocities relative to the
faster one's speed; the speed that must beat a walk is the vehicle's (its rigid box gives the
steadier estimate), in the person's heights per second. A person walking a bicycle beside them
is neither centred over it nor fast, so it is not `riding`.
Objects with track id -1 (untracked detections) are left out: they have no history.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from pipeline.boxes import box_iou
from pipeline.config import SceneGraphConfig
from pipeline.packets import FramePacket, ObjectAttributes, SceneGraph, SourceEvent
from pipeline.stage import Stage
from stages.track_history import slope

Emit = Callable[[int, int, str, float, bool], None]


def grade(x: float, at_half: float, at_one: float) -> float:
    """Linear confidence: 0.5 at `at_half`, 1 at `at_one` (either direction), clipped to [0, 1]."""
    if not math.isfinite(x):
        return 0.0
    return float(min(1.0, max(0.0, 0.5 + 0.5 * (x - at_half) / (at_one - at_half))))


def on_top(person: np.ndarray, vehicle: np.ndarray) -> float:
    """How surely the `person` box (xyxy) sits on top of the `vehicle` box: the fuzzy AND of
    centred over it, lower body inside it, and head above it."""
    px1, py1, px2, py2 = person.tolist()
    vx1, vy1, vx2, vy2 = vehicle.tolist()
    ph, vw = max(py2 - py1, 1e-6), max(vx2 - vx1, 1e-6)
    offset = abs((px1 + px2) / 2 - (vx1 + vx2) / 2) / vw
    centred = grade(offset, 0.35, 0.1)
    lower_y1 = (py1 + py2) / 2
    ix = max(0.0, min(px2, vx2) - max(px1, vx1))
    iy = max(0.0, min(py2, vy2) - max(lower_y1, vy1))
    inside = grade(ix * iy / max((px2 - px1) * (py2 - lower_y1), 1e-6), 0.4, 0.8)
    above = grade((vy1 - py1) / ph, 0.1, 0.4)
    return min(centred, inside, above)


@dataclass(slots=True)
class _PairHistory:
    """What one camera remembers about a pair of tracks."""

    last: float  # when the pair was last seen
    t: list[float] = field(default_factory=list)  # recent distances (box-heights) and their times
    d: list[float] = field(default_factory=list)
    ride_motion: float = 0.0  # "moving with it, faster than a walk", decayed since `ride_t`
    ride_t: float = float("-inf")


class RelationBuilder:
    """Builds SceneGraphs frame by frame; keeps a short per-camera history of pair distances."""

    def __init__(self, config: SceneGraphConfig | None = None, expiry_s: float = 2.0) -> None:
        self.config = config or SceneGraphConfig()
        self.expiry_s = expiry_s
        self._cameras: dict[str, dict[tuple[int, int], _PairHistory]] = {}

    def add_camera(self, camera: str) -> None:
        self._cameras[camera] = {}

    def drop_camera(self, camera: str) -> None:
        self._cameras.pop(camera, None)

    @property
    def cameras(self) -> tuple[str, ...]:
        return tuple(self._cameras)

    def __call__(self, camera: str, t: float, attrs: ObjectAttributes) -> SceneGraph:
        cfg = self.config
        pairs = self._cameras.setdefault(camera, {})
        rows = np.flatnonzero(attrs.track_id != -1).tolist()
        ids = attrs.track_id[rows].astype(np.int64)
        labels = tuple(attrs.name_of(i) for i in rows)
        xyxy = attrs.xyxy[rows].astype(np.float64)
        h_px = np.maximum(xyxy[:, 3] - xyxy[:, 1], 1e-6)
        ground = np.stack([(xyxy[:, 0] + xyxy[:, 2]) / 2, xyxy[:, 3]], axis=1)
        v_px = attrs.velocity[rows].astype(np.float64) * h_px[:, None]  # pixels per second
        flow_px = attrs.flow_speed[rows].astype(np.float64) * h_px
        iou = box_iou(xyxy, xyxy)
        rideable = set(cfg.rideable)
        cos_same = math.cos(math.radians(cfg.direction_deg))

        rel: list[tuple[int, int, str, float]] = []

        def emit(a: int, b: int, predicate: str, conf: float, symmetric: bool) -> None:
            if conf >= cfg.min_confidence and conf > 0:
                rel.append((id_l[a], id_l[b], predicate, conf))
                if symmetric:
                    rel.append((id_l[b], id_l[a], predicate, conf))

        # pair geometry at once: distance in mean box-heights, velocities in those units, their cosine
        hb = (h_px[:, None] + h_px[None, :]) / 2
        dist = (np.linalg.norm(ground[:, None] - ground[None, :], axis=2) / hb).tolist()
        speed_px = np.linalg.norm(v_px, axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            cos_m = ((v_px @ v_px.T) / (speed_px[:, None] * speed_px[None, :])).tolist()
            slow = (np.minimum(speed_px[:, None], speed_px[None, :]) / hb < cfg.moving_speed).tolist()
        moving_known = np.isfinite(speed_px).tolist()
        iou_l = iou.tolist()
        id_l = ids.tolist()
        for a in range(len(rows)):
            for b in range(a + 1, len(rows)):
                d = dist[a][b]
                emit(a, b, "near", grade(d, cfg.near, 0.5 * cfg.near), True)
                overlap = grade(iou_l[a][b], cfg.overlap_iou, min(1.0, 3 * cfg.overlap_iou))
                emit(a, b, "overlapping", overlap, True)
                if d < cfg.group_within and moving_known[a] and moving_known[b] and not slow[a][b]:
                    emit(a, b, "same_direction", grade(cos_m[a][b], cos_same, 0.5 * (1 + cos_same)), True)
                if d < cfg.approach_within:
                    key = (min(id_l[a], id_l[b]), max(id_l[a], id_l[b]))
                    rate = self._distance_rate(pairs, key, t, d)
                    emit(a, b, "approaching", grade(-rate, cfg.approach_rate, 2 * cfg.approach_rate), True)
                    emit(a, b, "moving_away", grade(rate, cfg.approach_rate, 2 * cfg.approach_rate), True)
                for p, v in ((a, b), (b, a)):
                    if labels[p] == "person" and labels[v] in rideable:
                        hist = self._pair(pairs, (id_l[p], id_l[v]), t)
                        self._ride(p, v, xyxy, v_px, flow_px, h_px, hist, t, emit)
        self._expire(pairs, t)
        return SceneGraph(
            node_ids=ids,
            node_labels=labels,
            subject=np.array([r[0] for r in rel], np.int64),
            object=np.array([r[1] for r in rel], np.int64),
            predicate=tuple(r[2] for r in rel),
            confidence=np.array([r[3] for r in rel], np.float32),
        )

    def _ride(
        self,
        p: int,
        v: int,
        xyxy: np.ndarray,
        v_px: np.ndarray,
        flow_px: np.ndarray,
        h_px: np.ndarray,
        hist: _PairHistory,
        t: float,
        emit: Emit,
    ) -> None:
        cfg = self.config
        on = on_top(xyxy[p], xyxy[v])
        emit(p, v, "on", on, False)
        if on < cfg.min_confidence:
            return
        h = h_px[p]  # the person's height is the unit: the vehicle box height varies with its pose
        vp, vv = v_px[p], v_px[v]
        known_p, known_v = bool(np.isfinite(vp).all()), bool(np.isfinite(vv).all())
        if known_p and known_v:
            together = self._agreement(float(np.linalg.norm(vp - vv)), np.linalg.norm(vp), np.linalg.norm(vv))
        else:  # a track too young for a velocity: compare the flow speeds inside the boxes instead
            fs_p, fs_v = float(flow_px[p]), float(flow_px[v])
            together = self._agreement(abs(fs_p - fs_v), fs_p, fs_v)
        # how fast the pair goes is the vehicle's speed: its box is rigid and its track lasts, while a
        # rider's box deforms with the pedalling legs, merges with people passed and is lost and found
        # again under new track ids (velocities from two or three jittery boxes); `together` has
        # already checked that the person keeps up with it
        if known_v:
            speed = float(np.linalg.norm(vv)) / h
        elif known_p:
            speed = float(np.linalg.norm(vp)) / h
        else:  # flow medians are diluted by the background inside the boxes: a lower bound
            speed = min(float(flow_px[p]), float(flow_px[v])) / h
        moving = grade(speed, cfg.ride_min_speed, 2 * cfg.ride_min_speed)
        # riding is a state: a noisy frame (a young track's jittery box) should not break it at once,
        # so the motion evidence decays with time constant `ride_memory_s` instead of vanishing
        motion = min(together, moving)
        if cfg.ride_memory_s > 0 and t > hist.ride_t:
            motion = max(motion, hist.ride_motion * math.exp(-(t - hist.ride_t) / cfg.ride_memory_s))
        hist.ride_motion, hist.ride_t = motion, t
        emit(p, v, "riding", min(on, motion), False)

    def _agreement(self, diff: float, speed_a: float, speed_b: float) -> float:
        """How surely two objects move together: their velocity (or flow speed) difference as a share of
        the faster one's speed, graded 0.5 at `ride_speed_tol` and 1 at 0. A share, not box-heights/s:
        the same tolerance then holds for a slow or a fast pair, for diluted flow medians as for box
        velocities, and a person at walking pace on top of a fast vehicle does not keep up with it."""
        return grade(diff / max(float(speed_a), float(speed_b), 1e-9), self.config.ride_speed_tol, 0.0)

    def _distance_rate(
        self, pairs: dict[tuple[int, int], _PairHistory], key: tuple[int, int], t: float, d: float
    ) -> float:
        """Slope (box-heights/s) of the pair's distance over the last `history_frames` samples."""
        hist = self._pair(pairs, key, t)
        if hist.t and t <= hist.t[-1]:
            hist.t.clear()
            hist.d.clear()
        hist.t.append(t)
        hist.d.append(d)
        keep = self.config.history_frames
        del hist.t[:-keep], hist.d[:-keep]
        if len(hist.t) < 2:
            return float("nan")
        return slope(hist.t, hist.d)

    @staticmethod
    def _pair(pairs: dict[tuple[int, int], _PairHistory], key: tuple[int, int], t: float) -> _PairHistory:
        hist = pairs.get(key)
        if hist is None:
            hist = pairs[key] = _PairHistory(last=t)
        hist.last = t
        return hist

    def _expire(self, pairs: dict[tuple[int, int], _PairHistory], now: float) -> None:
        stale = [k for k, h in pairs.items() if not 0 <= now - h.last <= self.expiry_s]
        for k in stale:
            del pairs[k]


class SceneGraphStage(Stage):
    """Relations between the objects of a frame, from their attributes."""

    name = "scene_graph"
    interpreter_bound = True
    needs = ("attributes",)
    provides = ("scene_graph",)

    def __init__(self, config: SceneGraphConfig | None = None) -> None:
        self.builder = RelationBuilder(config)

    def on_source_added(self, event: SourceEvent) -> None:
        self.builder.add_camera(event.camera)

    def on_source_eos(self, event: SourceEvent) -> None:
        self.builder.drop_camera(event.camera)

    def process(self, packet: FramePacket) -> None:
        assert packet.attributes is not None  # guaranteed by `needs`
        packet.scene_graph = self.builder(packet.frame.camera, packet.frame.pts, packet.attributes)
