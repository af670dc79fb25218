"""speed: the object's speed (box-heights/s) against the normal speed of its class in its place."""

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
    PathSpeed,
    check_weight,
)
from stages.normality.calibration import TailPrior
from stages.normality.grids import Q50, Q99, QUANTILES


class Speed(Attribute):
    name = "speed"
    tail_prior = TailPrior.ROBUST_Z
    inputs = frozenset({Input.BOX, Input.TRACK})
    geometric = True
    sustained = True
    quantities = ("speed",)

    def learner(self) -> Learner:
        return _SpeedTable()

    def judge(self, frame: FrameView) -> np.ndarray:
        z = frame.model.quantities["speed"].robust_z(frame.cell, frame.cls, frame.attrs.speed, "upper", 0.1)
        return np.where(frame.det, z, np.nan)

    def absorb_normal(self, frame: FrameView, rows: np.ndarray, weight: int = 1) -> None:
        """The detections' speeds count `weight` more times in their cell's table (QuantileGrid.absorb)."""
        check_weight(weight)
        rows = rows[frame.det[rows]]
        speed = frame.attrs.speed[rows].astype(np.float64)
        frame.model.quantities["speed"].absorb(frame.cell[rows], frame.cls[rows], speed, float(weight))

    def explain(self, obj: ObjectView, score: float) -> Reason:
        q = obj.model.quantities["speed"].lookup(obj.cell, obj.kk)[0][0]
        observed = float(obj.attrs.speed[obj.i])
        return Reason(
            self.name,
            f"{observed:.2f} body-heights/s",
            f"{q[Q50]:.2f} (99th pct {q[Q99]:.2f})",
            score,
            f"moving {observed:.1f} body-heights/s, normal here for {obj.name} {q[Q50]:.1f} "
            f"(99th pct {q[Q99]:.1f})",
        )

    def normal_range(self, obj: ObjectView) -> NormalRange:
        row = obj.model.quantities["speed"].lookup(obj.cell, obj.kk)[0][0]
        observed = float(obj.attrs.speed[obj.i])
        return NormalRange("body-heights/s", tuple(QUANTILES.tolist()), tuple(row.tolist()), observed)

    def sustained_text(self, obj: ObjectView, path: PathSpeed) -> str | None:
        """The track's mean speed over the frames of its evidence, against the normal speed along the
        path it took (the evidence judged each frame against its own place)."""
        mean_speed, normal, normal99 = path
        return (
            f"moving {mean_speed:.1f} body-heights/s on average (now {float(obj.attrs.speed[obj.i]):.1f}), "
            f"normal for {obj.name} where it went {normal:.1f} (99th pct {normal99:.1f})"
        )


class _SpeedTable(ColumnLearner):
    def columns(self, frame: FitFrame) -> dict[str, np.ndarray]:
        return {"speed": np.where(frame.cut, np.nan, frame.attrs.speed.astype(np.float64))}

    def fit(self, columns: dict[str, np.ndarray], data: FitData, parts: ModelParts) -> None:
        speed = columns["speed"]
        parts.quantities["speed"] = data.quantile_grid(speed, data.det & np.isfinite(speed))
