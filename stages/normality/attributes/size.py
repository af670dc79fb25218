"""size: the box's height (share of the frame) and aspect against those of its class in its place."""

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
    NormalRange,
    ObjectView,
    check_weight,
)
from stages.normality.calibration import TailPrior
from stages.normality.features import entangled
from stages.normality.grids import Q50, QUANTILES


class Size(Attribute):
    name = "size"
    tail_prior = TailPrior.ROBUST_Z
    inputs = frozenset({Input.BOX})
    geometric = True
    sustained = False  # an object's size persists: a track's mean adds nothing
    quantities = ("log_height", "log_aspect")

    def learner(self) -> Learner:
        return _SizeTables()

    def judge(self, frame: FrameView) -> np.ndarray:
        """Not for boxes entangled with another: their size is the detector's guess."""
        q, attrs, cell, cls = frame.model.quantities, frame.attrs, frame.cell, frame.cls
        zh = q["log_height"].robust_z(cell, cls, np.log(np.maximum(attrs.height, 1e-6)), "both", 0.05)
        za = q["log_aspect"].robust_z(cell, cls, np.log(np.maximum(attrs.aspect, 1e-6)), "both", 0.05)
        return np.where(frame.det & ~entangled(attrs), np.fmax(zh, za), np.nan)

    def absorb_normal(self, frame: FrameView, rows: np.ndarray, weight: int = 1) -> None:
        """The log height and log aspect of the detections it judges (not entangled with another box)
        count `weight` more times in their cell's tables (QuantileGrid.absorb)."""
        check_weight(weight)
        attrs = frame.attrs
        rows = rows[(frame.det & ~entangled(attrs))[rows]]
        cell, cls, q = frame.cell[rows], frame.cls[rows], frame.model.quantities
        q["log_height"].absorb(cell, cls, np.log(np.maximum(attrs.height[rows], 1e-6)), float(weight))
        q["log_aspect"].absorb(cell, cls, np.log(np.maximum(attrs.aspect[rows], 1e-6)), float(weight))

    def normal_range(self, obj: ObjectView) -> NormalRange:
        """The height (the size's first part; the aspect's range is in the reason's sentence)."""
        row = np.exp(obj.model.quantities["log_height"].lookup(obj.cell, obj.kk)[0][0])
        observed = float(obj.attrs.height[obj.i])
        return NormalRange("of the frame's height", tuple(QUANTILES.tolist()), tuple(row.tolist()), observed)

    def explain(self, obj: ObjectView, score: float) -> Reason:
        q = obj.model.quantities
        qh = np.exp(q["log_height"].lookup(obj.cell, obj.kk)[0][0])
        qa = np.exp(q["log_aspect"].lookup(obj.cell, obj.kk)[0][0])
        h, asp = float(obj.attrs.height[obj.i]), float(obj.attrs.aspect[obj.i])
        return Reason(
            self.name,
            f"height {h:.2f} of frame, aspect {asp:.2f}",
            f"height {qh[Q50]:.2f}, aspect {qa[Q50]:.2f}",
            score,
            f"size unusual for {obj.name} here: height {h:.2f} of the frame and aspect {asp:.2f}, "
            f"normal {qh[Q50]:.2f} and {qa[Q50]:.2f}",
        )


class _SizeTables(ColumnLearner):
    """Sizes of boxes cut by the frame edge or entangled with another are not learnt."""

    def columns(self, frame: FitFrame) -> dict[str, np.ndarray]:
        a = frame.attrs
        clear = ~entangled(a) & ~frame.cut
        return {
            "log_height": np.where(clear, np.log(np.maximum(a.height, 1e-6)), np.nan),
            "log_aspect": np.where(clear, np.log(np.maximum(a.aspect, 1e-6)), np.nan),
        }

    def fit(self, columns: dict[str, np.ndarray], data: FitData, parts: ModelParts) -> None:
        for name in ("log_height", "log_aspect"):
            x = columns[name]
            parts.quantities[name] = data.quantile_grid(x, data.det & np.isfinite(x))
