"""Raw attribute scores of one frame's objects against a normality model, and their calibration.

Raw scores are "how far from normal" in each attribute's own unit (robust z, -ln probability,
k-NN distance, prediction error); `calibrate` maps each onto -log10(tail probability under held-out
normal data), and `combine` turns an object's calibrated scores into its object score.
"""

from __future__ import annotations

from contextlib import ExitStack

import numpy as np

from pipeline.errors import ModelError
from pipeline.packets import ObjectAttributes, SceneGraph
from stages.normality.features import (
    HistoryFeatures,
    entangled,
    gait,
    motion_features,
    pose_features,
    speed_vs_pose,
    truncated,
)
from stages.normality.grids import DIRECTION_BINS, direction_bin
from stages.normality.model import ATTRIBUTES, BLOB, NormalityModel

MIN_DIRECTION_SPEED = 0.3  # box-heights/s; slower objects have no meaningful heading
PERSON = "person"


#: attributes measured from the box's extent or ground point: not judged while the box is cut by the
#: frame edge (features.truncated)
GEOMETRIC = frozenset(
    {"size", "speed", "direction", "scale_change", "dwell", "motion", "pose", "dynamics"}
    | {"speed_vs_pose", "gait"}
)


def raw_scores(
    model: NormalityModel,
    attrs: ObjectAttributes,
    graph: SceneGraph | None,
    hist: HistoryFeatures,
    k: int,
    attributes: tuple[str, ...] = ATTRIBUTES,
    frame_size: tuple[int, int] | None = None,
) -> np.ndarray:
    """(N, len(attributes)) raw scores; NaN where an attribute does not apply to an object.

    `frame_size` (height, width): boxes cut by the frame edge get no GEOMETRIC attribute."""
    n = len(attrs)
    out = np.full((n, len(attributes)), np.nan)
    if n == 0:
        return out
    if int(attrs.cell.max()) >= model.cells or int(attrs.cell.min()) < 0:
        raise ModelError(
            f"attributes use grid cell {int(attrs.cell.max())}, the model of camera {model.camera} has "
            f"{model.cells} cells ({model.grid[0]}x{model.grid[1]}); attributes.grid differs from the fit"
        )
    cell = attrs.cell.astype(np.int64)
    cls = model.class_index(attrs.class_names, attrs.class_id, attrs.is_blob)
    det = ~attrs.is_blob
    person = det & model.is_class(PERSON)[cls]
    with one_blas_thread(model):
        _fill(out, model, attrs, graph, hist, k, attributes, cell, cls, det, person)
    cut = truncated(attrs.xyxy, frame_size)
    if cut.any():
        geometric = [j for j, a in enumerate(attributes) if a in GEOMETRIC]
        out[np.ix_(cut, geometric)] = np.nan
    return out


def one_blas_thread(model: NormalityModel) -> ExitStack:
    """The one-BLAS-thread limits of the model's CPU banks (one, shared, for a loaded model), held around
    all of a frame's k-NN calls at once."""
    stack = ExitStack()
    limits = {id(b.blas): b.blas for b in model.banks.values() if b.blas is not None}
    for limit in limits.values():
        stack.enter_context(limit)
    return stack


def _fill(
    out: np.ndarray,
    model: NormalityModel,
    attrs: ObjectAttributes,
    graph: SceneGraph | None,
    hist: HistoryFeatures,
    k: int,
    attributes: tuple[str, ...],
    cell: np.ndarray,
    cls: np.ndarray,
    det: np.ndarray,
    person: np.ndarray,
) -> None:
    """Column j of `out` = the raw score of attributes[j] for each object."""
    q = model.quantities
    for j, a in enumerate(attributes):
        if a == "class_in_place":
            # a detection's class is only as certain as the detector: weigh the surprise by confidence
            certainty = np.where(det, attrs.confidence, 1.0)
            v = -np.log(model.place.probability(cell, cls)) * certainty
        elif a == "speed":
            v = np.where(det, q["speed"].robust_z(cell, cls, attrs.speed, "upper", 0.1), np.nan)
        elif a == "direction":
            moving = det & (attrs.speed >= MIN_DIRECTION_SPEED)
            v = np.where(moving, _direction(model, cell, cls, attrs), np.nan)
        elif a == "size":  # not for boxes entangled with another: their size is the detector's guess
            zh = q["log_height"].robust_z(cell, cls, np.log(np.maximum(attrs.height, 1e-6)), "both", 0.05)
            za = q["log_aspect"].robust_z(cell, cls, np.log(np.maximum(attrs.aspect, 1e-6)), "both", 0.05)
            v = np.where(det & ~entangled(attrs), np.fmax(zh, za), np.nan)
        elif a == "motion":
            v = np.where(det, model.banks["motion"].distance(motion_features(attrs.motion_hist), k), np.nan)
        elif a == "pose":
            feats = pose_features(attrs.pose, model.pose_fill)
            v = np.where(person, model.banks["pose"].distance(feats, k), np.nan)
        elif a == "appearance":
            app = attrs.appearance.astype(np.float64)
            v = np.where(det, model.banks["appearance"].distance(app, k), np.nan)
        elif a == "relations":
            v = _relations(model, attrs, graph)
        elif a == "dynamics":
            v = np.where(det, model.dynamics.error(hist.windows), np.nan)
        elif a == "scale_change":
            v = np.where(det, q["scale_rate"].robust_z(cell, cls, attrs.scale_rate, "both", 0.05), np.nan)
        elif a == "dwell":
            v = np.where(det, q["dwell"].robust_z(cell, cls, attrs.dwell, "upper", 1.0), np.nan)
        elif a == "unexplained_motion":
            zf = q["blob_flow"].robust_z(cell, cls, attrs.flow_speed, "upper", 0.1)
            area = np.log(np.maximum(attrs.height * attrs.height * attrs.aspect, 1e-8))
            zs = q["blob_area"].robust_z(cell, cls, area, "upper", 0.1)
            v = np.where(attrs.is_blob, np.fmax(zf, zs), np.nan)
        elif a == "speed_vs_pose":
            v = np.where(person, speed_vs_pose(attrs.speed, hist.leg_motion), np.nan)
        elif a == "gait":
            v = np.where(person, gait(hist.track_speed, hist.stride), np.nan)
        else:
            raise ModelError(f"unknown attribute {a!r}; known: {', '.join(ATTRIBUTES)}")
        out[:, j] = v


def direction_probability(
    model: NormalityModel, cell: np.ndarray, cls: np.ndarray, b: np.ndarray
) -> np.ndarray:
    """p(direction sector | cell, class), backed off to the class's image-wide sector frequencies."""
    d = model.direction
    per_class, class_total, cell_total = model.direction_totals
    p_class = (per_class[cls, b] + 1.0) / (class_total[cls] + DIRECTION_BINS)
    n_cell = cell_total[cell, cls]
    prior = 4.0
    return (d[cell, cls, b] + prior * p_class) / (n_cell + prior)


def _direction(
    model: NormalityModel, cell: np.ndarray, cls: np.ndarray, attrs: ObjectAttributes
) -> np.ndarray:
    return -np.log(direction_probability(model, cell, cls, direction_bin(attrs.direction)))


def _relations(model: NormalityModel, attrs: ObjectAttributes, graph: SceneGraph | None) -> np.ndarray:
    """Per object: its rarest relation to another detected object, -ln P(triplet | both classes present)
    x confidence (relations to moving regions are left out)."""
    n = len(attrs)
    if graph is None:
        return np.full(n, np.nan)
    row = {int(t): i for i, t in enumerate(attrs.track_id.tolist())}
    out = np.zeros(n)
    for (s, p, o), sid, oid, c in zip(
        graph.triplets(),
        graph.subject.tolist(),
        graph.object.tolist(),
        graph.confidence.tolist(),
        strict=True,
    ):
        if BLOB in (s, o):  # an untracked, unclassified region: its rarity is its own score, and
            continue  # every person near it would inherit it as an "unseen relation"
        v = -np.log(model.triplets.probability(s, p, o)) * float(c)
        for tid in (sid, oid):
            if tid in row:
                out[row[tid]] = max(out[row[tid]], v)
    return out


def calibrate(model: NormalityModel, raw: np.ndarray, attributes: tuple[str, ...]) -> np.ndarray:
    out = np.empty_like(raw)
    for j, a in enumerate(attributes):
        out[:, j] = model.calibrators[a](raw[:, j])
    return out


def calibrate_sustained(
    model: NormalityModel, sustained: np.ndarray, attributes: tuple[str, ...]
) -> np.ndarray:
    """Sustained evidence (mean calibrated score over a track's recent frames) on the -log10 p scale of
    held-out normal tracks; NaN for attributes without sustained evidence (all when the model has none)."""
    out = np.full_like(sustained, np.nan, dtype=np.float64)
    for j, a in enumerate(attributes):
        if a in model.sustained_calibrators:
            out[:, j] = model.sustained_calibrators[a](sustained[:, j])
    return out


#: mean of -log10(p) for p uniform on (0, 1]: what a normal attribute contributes on average
MEAN_SURPRISE = 1.0 / np.log(10.0)


def combine(calibrated: np.ndarray, how: str) -> np.ndarray:
    """Uncalibrated object statistic from its calibrated attribute scores.

    `max`: the largest; `top2_mean`: the mean of the two largest; `sum`: the summed excess surprise
    over what normal attributes give on average (Fisher's combination of the tail probabilities,
    centred so objects with more applicable attributes are not favoured): evidence from several
    attributes adds up, a lone fluctuation among thirteen does not dominate. NaN (not applicable)
    attributes are ignored; an object with none scores 0.
    """
    if calibrated.shape[1] == 0:
        return np.zeros(len(calibrated))
    if how == "sum":
        excess = np.where(np.isfinite(calibrated), calibrated - MEAN_SURPRISE, 0.0)
        return excess.sum(axis=1)
    filled = np.where(np.isfinite(calibrated), calibrated, -np.inf)
    top = -np.sort(-filled, axis=1)[:, :2]
    best = top[:, 0]
    if how == "top2_mean" and top.shape[1] == 2:
        best = np.where(np.isfinite(top[:, 1]), (top[:, 0] + top[:, 1]) / 2.0, best)
    return np.where(np.isfinite(best), best, 0.0)
