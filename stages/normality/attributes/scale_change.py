"""scale_change: how fast an object grows or shrinks (approaching or leaving the camera) against the
normal rate of its class in its place, measured from what of it is reliably visible.

The rate is `HistoryFeatures.scale_rate` (stages.normality.scale): the box height only in frames where
its top and bottom edges are clear of other boxes and of the frame edge, and a person's torso length,
each a robust slope over the last second, the two agreeing. A walker coming out from behind another, a
dancer raising the arms, a box entering the picture change one ruler and not the other, and do not read
as an approach; a walk at the camera grows both. Judged both ways against the rates of normal footage
in the same place (people seen large walk across as well as toward the camera, and only the place's
normal tells which is usual): a robust z whose spread is the place's normal spread and the rate's own
standard error together, so the jitter of a 30-pixel box is not an approach.
"""

from __future__ import annotations

import numpy as np

from pipeline.packets import Reason
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
from stages.normality.features import HistoryFeatures
from stages.normality.grids import Q10, Q50, Q90, Q99, QuantileGrid

#: the spread floor of the robust z (per second): rates within a few % per second of the normal
#: median are jitter of the rulers, whatever the normal footage's spread
SPREAD_FLOOR = 0.05


def visible_scale_rate(hist: HistoryFeatures, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(n,) the history's scale rate and (n,) its standard error, NaN where they were not measured."""
    if hist.scale_rate is None or hist.scale_se is None:
        return np.full(n, np.nan), np.full(n, np.nan)
    return hist.scale_rate, hist.scale_se


def rate_z(
    table: QuantileGrid, cell: np.ndarray, cls: np.ndarray, rate: np.ndarray, se: np.ndarray
) -> np.ndarray:
    """(N,) |rate - normal median| over the normal spread on its side (10-50 or 50-90 %, floored) and
    the rate's standard error in quadrature; NaN where the rate or any normal is missing."""
    q, level = table.lookup(cell, cls)
    med = q[:, Q50]
    up = rate >= med
    spread = np.maximum(np.where(up, q[:, Q90] - med, med - q[:, Q10]), SPREAD_FLOOR)
    z = np.abs(rate - med) / np.sqrt(spread * spread + np.nan_to_num(se) ** 2)
    return np.where((level == 3) | ~np.isfinite(rate), np.nan, z)


class ScaleChange(Attribute):
    name = "scale_change"
    tail_prior = TailPrior.ROBUST_Z
    inputs = frozenset({Input.BOX, Input.POSE, Input.HISTORY})
    geometric = True
    sustained = True
    quantities = ("visible_scale_rate",)
    no_feedback = (
        "its rate is the track's history of reliable sizes (HistoryFeatures.scale_rate), which the "
        "recorded observations of an event do not keep"
    )

    def learner(self) -> Learner:
        return _ScaleRateTable()

    def judge(self, frame: FrameView) -> np.ndarray:
        rate, se = visible_scale_rate(frame.hist, len(frame.attrs))
        z = rate_z(frame.model.quantities["visible_scale_rate"], frame.cell, frame.cls, rate, se)
        return np.where(frame.det, z, np.nan)

    def explain(self, obj: ObjectView, score: float) -> Reason:
        """The rate is the history's, which the explainer does not see: its least distance from the
        normal median is recovered from the calibrated score (the raw z, ByCalibrator's way) times the
        normal spread on its side (the rate's own error only adds to it), and stated against the
        place's normal rates."""
        q = obj.model.quantities["visible_scale_rate"].lookup(obj.cell, obj.kk)[0][0]
        z = obj.model.calibrators[self.name].inverse(score)
        return self._reason(q, z, score, obj.attrs.scale_rate[obj.i])

    def _reason(self, q: np.ndarray, z: float, score: float, box_rate: float) -> Reason:
        # the side: the tracker's box rate says which way the size went (the visible rate's sign agrees
        # with it wherever the visible rate is far from normal: both rulers grew or both shrank)
        up = bool(np.isfinite(box_rate) and box_rate >= q[Q50])
        spread = max((q[Q90] - q[Q50]) if up else (q[Q50] - q[Q10]), SPREAD_FLOOR)
        rate = float(q[Q50] + (z * spread if up else -z * spread))
        way = "approaching the camera" if rate > 0 else "moving away from the camera"
        return Reason(
            self.name,
            f"size changing >= {rate:+.2f}/s" if up else f"size changing <= {rate:+.2f}/s",
            f"{q[Q50]:+.2f}/s (1-99th pct {q[0]:+.2f}..{q[Q99]:+.2f})",
            score,
            f"{way}: size changing {rate:+.0%} per second or {'more' if up else 'less'} (box and body "
            f"agree), normal here {q[0]:+.0%}..{q[Q99]:+.0%}",
        )


class _ScaleRateTable(ColumnLearner):
    def columns(self, frame: FitFrame) -> dict[str, np.ndarray]:
        rate, _ = visible_scale_rate(frame.hist, len(frame.attrs))
        return {"visible_scale_rate": np.where(frame.cut, np.nan, rate)}

    def fit(self, columns: dict[str, np.ndarray], data: FitData, parts: ModelParts) -> None:
        x = columns["visible_scale_rate"]
        parts.quantities["visible_scale_rate"] = data.quantile_grid(x, data.det & np.isfinite(x))
