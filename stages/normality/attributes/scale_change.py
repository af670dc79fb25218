"""scale_change: how fast the box grows or shrinks (approaching or leaving the camera) against normal."""

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
from stages.normality.attributes.quantities import QUANTILE_TABLES
from stages.normality.calibration import TailPrior
from stages.normality.grids import Q50, Q99


class ScaleChange(Attribute):
    name = "scale_change"
    tail_prior = TailPrior.ROBUST_Z
    inputs = frozenset({Input.BOX, Input.TRACK})
    geometric = True
    sustained = True
    quantities = ("scale_rate",)
    no_feedback = QUANTILE_TABLES

    def learner(self) -> Learner:
        return _ScaleRateTable()

    def judge(self, frame: FrameView) -> np.ndarray:
        q = frame.model.quantities["scale_rate"]
        return np.where(
            frame.det, q.robust_z(frame.cell, frame.cls, frame.attrs.scale_rate, "both", 0.05), np.nan
        )

    def explain(self, obj: ObjectView, score: float) -> Reason:
        r = float(obj.attrs.scale_rate[obj.i])
        way = "approaching the camera" if r > 0 else "moving away from the camera"
        q = obj.model.quantities["scale_rate"].lookup(obj.cell, obj.kk)[0][0]
        return Reason(
            self.name,
            f"size changing {r:+.2f}/s",
            f"{q[Q50]:+.2f}/s (1-99th pct {q[0]:+.2f}..{q[Q99]:+.2f})",
            score,
            f"{way} fast: size changing {r:+.0%} per second, normal here {q[0]:+.0%}..{q[Q99]:+.0%}",
        )


class _ScaleRateTable(ColumnLearner):
    def columns(self, frame: FitFrame) -> dict[str, np.ndarray]:
        return {"scale_rate": np.where(frame.cut, np.nan, frame.attrs.scale_rate.astype(np.float64))}

    def fit(self, columns: dict[str, np.ndarray], data: FitData, parts: ModelParts) -> None:
        x = columns["scale_rate"]
        parts.quantities["scale_rate"] = data.quantile_grid(x, data.det & np.isfinite(x))
