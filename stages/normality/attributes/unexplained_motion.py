"""unexplained_motion: motion no detected person explains: a moving region (no detection explains it) whose
flow speed or area is unusual here, or something small leaving a person faster than people walk here
(thrown or dropped).

Thrown. A thing someone throws or drops is small, starts at their body and moves away from it fast;
the detector has rarely a class for it (a sheet of paper, a bag), so it is a moving region of the flow
(stages.blobs), or a detection of a thing people carry (HELD; a bicycle beside a walker leaves nobody).
Each moving region and each such detection near a person (within REACH of their box's height, at most
CARRIED of it tall) gets a departure speed: its
velocity relative to that person's, along the line from the person's box centre to its own, in the
person's body-heights per second. The region's velocity is the flow inside it: the median flow speed,
in the direction of the orientation histogram's resultant (motion_hist), shortened by that resultant's
length, so an incoherent region (flicker, a swinging limb's halo) moves little. The departure is judged
against the normal speed of people in the person's place (the `speed` tables of the speed attribute):
"faster than anyone walks here, away from them" is what learnt normal footage can say of a throw that
the footage never showed. The judged score is the larger of the region's and the departure's; the
reason tells a departure faster than the place's 99th percentile of people's speed as a throw.
"""

from __future__ import annotations

import numpy as np

from pipeline.config import AttributesConfig
from pipeline.packets import ObjectAttributes, Reason
from stages.normality.attributes.base import (
    Attribute,
    ColumnLearner,
    FitData,
    FitFrame,
    FrameView,
    Input,
    Learner,
    ModelParts,
    ObjectView,
)
from stages.normality.calibration import TailPrior
from stages.normality.classes import PERSON
from stages.normality.grids import Q99, QuantileGrid

#: an object within this many body-heights of a person's box may have left them
REACH = 1.5
#: an object at most this share of a person's height can be something they held
CARRIED = 0.75
#: orientation sectors of the motion histogram (AttributesConfig.motion_bins: magnitude-major rows)
ORIENTATIONS = AttributesConfig().motion_bins[1]
#: the robust-z spread floor of the departure (body-heights/s), as the speed attribute's
SPEED_FLOOR = 0.1
#: COCO classes of things a person can hold, and so throw or drop (vehicles, animals, furniture and
#: boards people ride are not)
HELD = frozenset(
    {
        "backpack", "umbrella", "handbag", "tie", "suitcase", "frisbee", "sports ball", "kite",
        "baseball bat", "baseball glove", "tennis racket", "bottle", "wine glass", "cup", "fork",
        "knife", "spoon", "bowl", "banana", "apple", "sandwich", "orange", "broccoli", "carrot",
        "hot dog", "pizza", "donut", "cake", "laptop", "mouse", "remote", "keyboard", "cell phone",
        "book", "clock", "vase", "scissors", "teddy bear", "hair drier", "toothbrush",
    }
)  # fmt: skip


def held(attrs: ObjectAttributes) -> np.ndarray:
    """(N,) True for detections of a class in HELD."""
    flags = np.array([name in HELD for name in attrs.class_names] or [False])
    cid = attrs.class_id
    ok = ~attrs.is_blob & (cid >= 0) & (cid < len(attrs.class_names))
    return ok & flags[np.where(ok, cid, 0)]


def log_area(height: np.ndarray, aspect: np.ndarray) -> np.ndarray:
    """ln of the region's area (height^2 x aspect, shares of the frame height squared)."""
    return np.log(np.maximum(height * height * aspect, 1e-8))


def flow_velocity(attrs: ObjectAttributes) -> np.ndarray:
    """(N, 2) each object's flow velocity in pixels/s: median flow speed times the mean unit vector of
    its orientation histogram (the still bin left out); NaN where the histogram has no moving mass."""
    hist = attrs.motion_hist.astype(np.float64)
    n = len(attrs)
    out = np.full((n, 2), np.nan)
    if n == 0 or hist.shape[1] % ORIENTATIONS:
        return out
    mass = np.nan_to_num(hist.reshape(n, -1, ORIENTATIONS)[:, 1:].sum(axis=1))  # (N, sectors), moving bins
    centre = (np.arange(ORIENTATIONS) + 0.5) * (2 * np.pi / ORIENTATIONS)
    total = mass.sum(axis=1)
    unit = np.stack([mass @ np.cos(centre), mass @ np.sin(centre)], axis=1)
    unit = np.divide(unit, total[:, None], out=np.full((n, 2), np.nan), where=total[:, None] > 0)
    height_px = (attrs.xyxy[:, 3] - attrs.xyxy[:, 1]).astype(np.float64)
    return unit * (attrs.flow_speed.astype(np.float64) * height_px)[:, None]


def departures(attrs: ObjectAttributes, person: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per object: the row of the person it is leaving (-1: none near) and its speed away from them in
    their body-heights per second (NaN: no person near, or no flow). Candidates are the moving regions
    and the detections of things people hold (HELD), at most CARRIED of the person's height; the
    person is the nearest within REACH of their box's height."""
    n = len(attrs)
    who = np.full(n, -1)
    away = np.full(n, np.nan)
    people = np.flatnonzero(person)
    candidates = np.flatnonzero(~person & (attrs.is_blob | held(attrs)))
    if len(people) == 0 or len(candidates) == 0:
        return who, away
    xyxy = attrs.xyxy.astype(np.float64)
    centre = (xyxy[:, :2] + xyxy[:, 2:]) / 2
    height = np.maximum(xyxy[:, 3] - xyxy[:, 1], 1.0)
    p, c = xyxy[people], centre[candidates]
    # (candidates, people): the candidate centre's distance to the box, in the person's heights
    dx = np.maximum(np.maximum(p[None, :, 0] - c[:, None, 0], c[:, None, 0] - p[None, :, 2]), 0)
    dy = np.maximum(np.maximum(p[None, :, 1] - c[:, None, 1], c[:, None, 1] - p[None, :, 3]), 0)
    dist = np.hypot(dx, dy) / height[people][None, :]
    ok = (dist <= REACH) & (height[candidates][:, None] <= CARRIED * height[people][None, :])
    dist = np.where(ok, dist, np.inf)
    nearest = dist.argmin(axis=1)
    found = np.isfinite(dist[np.arange(len(candidates)), nearest])
    if not found.any():
        return who, away
    obj, pers = candidates[found], people[nearest[found]]
    flow = flow_velocity(attrs)
    own = attrs.velocity.astype(np.float64)[pers] * height[pers][:, None]  # the person's, pixels/s
    own = np.where(np.isfinite(own), own, 0.0)
    radial = centre[obj] - centre[pers]
    radial /= np.maximum(np.hypot(radial[:, 0], radial[:, 1]), 1e-6)[:, None]
    who[obj] = pers
    away[obj] = ((flow[obj] - own) * radial).sum(axis=1) / height[pers]
    return who, away


def thrown_z(
    model_speed: QuantileGrid, cell: np.ndarray, cls: np.ndarray, who: np.ndarray, away: np.ndarray
) -> np.ndarray:
    """(N,) robust z of each departure against the normal speed of people in the person's place."""
    out = np.full(len(who), np.nan)
    has = who >= 0
    if has.any():
        p = who[has]
        out[has] = model_speed.robust_z(cell[p], cls[p], away[has], "upper", SPEED_FLOOR)
    return out


class UnexplainedMotion(Attribute):
    name = "unexplained_motion"
    tail_prior = TailPrior.ROBUST_Z
    inputs = frozenset({Input.BOX, Input.TRACK, Input.FLOW})
    geometric = False
    sustained = False  # moving regions have no track, and a throw lasts a few frames
    quantities = ("blob_flow", "blob_area")
    no_feedback = (
        "a departure from a person is judged against people's speed tables (the speed attribute's), which "
        "a thing leaving them must not teach, so its score would not drop with its region tables'"
    )

    def learner(self) -> Learner:
        return _RegionTables()

    def judge(self, frame: FrameView) -> np.ndarray:
        q, attrs, cell, cls = frame.model.quantities, frame.attrs, frame.cell, frame.cls
        zf = q["blob_flow"].robust_z(cell, cls, attrs.flow_speed, "upper", 0.1)
        zs = q["blob_area"].robust_z(cell, cls, log_area(attrs.height, attrs.aspect), "upper", 0.1)
        region = np.where(attrs.is_blob, np.fmax(zf, zs), np.nan)
        who, away = departures(attrs, frame.person)
        return np.fmax(region, thrown_z(q["speed"], cell, cls, who, away))

    def explain(self, obj: ObjectView, score: float) -> Reason:
        """Something leaving a person faster than the people here move (their 99th percentile) is told
        as thrown, whichever part scored higher (a small region's flow in its own heights per second
        is large whatever it is); anything else as motion no detection explains."""
        m, attrs, i = obj.model, obj.attrs, obj.i
        cls = m.class_index(attrs.class_names, attrs.class_id, attrs.is_blob)
        who, away = departures(attrs, ~attrs.is_blob & m.is_class(PERSON)[cls])
        if who[i] >= 0:
            p = int(who[i])
            q = m.quantities["speed"].lookup(np.array([int(attrs.cell[p])]), np.array([int(cls[p])]))[0][0]
            if away[i] > q[Q99] or not attrs.is_blob[i]:  # a detection is judged by its departure only
                return self._leaving(obj, p, float(away[i]), float(q[Q99]), score)
        f = float(attrs.flow_speed[i])
        q, level = m.quantities["blob_flow"].lookup(obj.cell, obj.kk)
        normal = f"flow <= {q[0][Q99]:.2f} (99th pct)"
        if level[0] == 3:
            normal = "no unexplained motion in training"
        return Reason(
            self.name,
            f"flow {f:.2f} region-heights/s",
            normal,
            score,
            f"something moves here ({f:.1f} region-heights/s) that no detected object explains",
        )

    def _leaving(self, obj: ObjectView, person: int, away: float, normal99: float, score: float) -> Reason:
        attrs = obj.attrs
        what = "object" if attrs.is_blob[obj.i] else obj.name
        tid = int(attrs.track_id[person])
        how = (
            f"{what} thrown or dropped by person #{tid}" if away > normal99 else f"{what} near person #{tid}"
        )
        return Reason(
            self.name,
            f"{away:.2f} body-heights/s away from person #{tid}",
            f"people here move <= {normal99:.2f} (99th pct)",
            score,
            f"{how}: moving {away:.1f} body-heights/s away from them, "
            f"people here move at most {normal99:.1f}",
        )


class _RegionTables(ColumnLearner):
    """Flow speed and area of the moving regions (detections' values are gathered but not learnt); the
    departures are judged against the speed attribute's tables."""

    def columns(self, frame: FitFrame) -> dict[str, np.ndarray]:
        a = frame.attrs
        return {
            "flow_speed": a.flow_speed.astype(np.float64),
            "area": log_area(a.height, a.aspect).astype(np.float64),
        }

    def fit(self, columns: dict[str, np.ndarray], data: FitData, parts: ModelParts) -> None:
        parts.quantities["blob_flow"] = data.quantile_grid(columns["flow_speed"], data.blob)
        parts.quantities["blob_area"] = data.quantile_grid(columns["area"], data.blob)
