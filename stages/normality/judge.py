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
from stages.normality.attributes import ATTRIBUTES, REGISTRY, attribute
from stages.normality.attributes.base import FrameView
from stages.normality.classes import PERSON
from stages.normality.features import HistoryFeatures, truncated
from stages.normality.model import NormalityModel

#: attributes measured from the box's extent or ground point: not judged while the box is cut by the
#: frame edge (features.truncated)
GEOMETRIC = frozenset(a.name for a in REGISTRY.values() if a.geometric)


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
    frame = frame_view(model, attrs, graph, hist, k)
    with one_blas_thread(model):
        for j, a in enumerate(attributes):  # each attribute vectorised over the frame's objects
            out[:, j] = attribute(a).judge(frame)
    cut = truncated(attrs.xyxy, frame_size)
    if cut.any():
        geometric = [j for j, a in enumerate(attributes) if a in GEOMETRIC]
        out[np.ix_(cut, geometric)] = np.nan
    return out


def frame_view(
    model: NormalityModel, attrs: ObjectAttributes, graph: SceneGraph | None, hist: HistoryFeatures, k: int
) -> FrameView:
    """The frame's objects on the model's grid and class axis, as the attributes judge them."""
    cls = model.class_index(attrs.class_names, attrs.class_id, attrs.is_blob)
    det = ~attrs.is_blob
    person = det & model.is_class(PERSON)[cls]
    return FrameView(model, attrs, graph, hist, k, attrs.cell.astype(np.int64), cls, det, person)


def one_blas_thread(model: NormalityModel) -> ExitStack:
    """The one-BLAS-thread limits of the model's CPU banks (one, shared, for a loaded model), held around
    all of a frame's k-NN calls at once."""
    stack = ExitStack()
    limits = {id(b.blas): b.blas for b in model.banks.values() if b.blas is not None}
    for limit in limits.values():
        stack.enter_context(limit)
    return stack


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
