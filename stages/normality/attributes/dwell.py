"""dwell: how long the object has stayed in one place against the normal stay of its class there."""

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


class Dwell(Attribute):
    name = "dwell"
    tail_prior = TailPrior.ROBUST_Z
    inputs = frozenset({Input.BOX, Input.TRACK})
    geometric = True
    sustained = False  # itself accumulated over time
    quantities = ("dwell",)
    no_feedback = QUANTILE_TABLES

    def learner(self) -> Learner:
        return _DwellTable()

    def judge(self, frame: FrameView) -> np.ndarray:
        q = frame.model.quantities["dwell"]
        return np.where(frame.det, q.robust_z(frame.cell, frame.cls, frame.attrs.dwell, "upper", 1.0), np.nan)

    def explain(self, obj: ObjectView, score: float) -> Reason:
        q = obj.model.quantities["dwell"].lookup(obj.cell, obj.kk)[0][0]
        d = float(obj.attrs.dwell[obj.i])
        return Reason(
            self.name,
            f"{d:.0f} s in place",
            f"{q[Q50]:.0f} s (99th pct {q[Q99]:.0f} s)",
            score,
            f"staying {d:.0f} s in one place, normal here for {obj.name} {q[Q50]:.0f} s "
            f"(99th pct {q[Q99]:.0f} s)",
        )


class _DwellTable(ColumnLearner):
    def columns(self, frame: FitFrame) -> dict[str, np.ndarray]:
        return {"dwell": np.where(frame.cut, np.nan, frame.attrs.dwell.astype(np.float64))}

    def fit(self, columns: dict[str, np.ndarray], data: FitData, parts: ModelParts) -> None:
        x = columns["dwell"]
        parts.quantities["dwell"] = data.quantile_grid(x, data.det & np.isfinite(x))
