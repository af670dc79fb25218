"""unexplained_motion: a moving region no detection explains, its flow speed and area against normal."""

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
from stages.normality.grids import Q99


def log_area(height: np.ndarray, aspect: np.ndarray) -> np.ndarray:
    """ln of the region's area (height^2 x aspect, shares of the frame height squared)."""
    return np.log(np.maximum(height * height * aspect, 1e-8))


class UnexplainedMotion(Attribute):
    name = "unexplained_motion"
    tail_prior = TailPrior.ROBUST_Z
    inputs = frozenset({Input.FLOW})
    geometric = False
    sustained = False  # moving regions have no track
    quantities = ("blob_flow", "blob_area")
    no_feedback = QUANTILE_TABLES

    def learner(self) -> Learner:
        return _RegionTables()

    def judge(self, frame: FrameView) -> np.ndarray:
        q, attrs, cell, cls = frame.model.quantities, frame.attrs, frame.cell, frame.cls
        zf = q["blob_flow"].robust_z(cell, cls, attrs.flow_speed, "upper", 0.1)
        zs = q["blob_area"].robust_z(cell, cls, log_area(attrs.height, attrs.aspect), "upper", 0.1)
        return np.where(attrs.is_blob, np.fmax(zf, zs), np.nan)

    def explain(self, obj: ObjectView, score: float) -> Reason:
        f = float(obj.attrs.flow_speed[obj.i])
        q, level = obj.model.quantities["blob_flow"].lookup(obj.cell, obj.kk)
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


class _RegionTables(ColumnLearner):
    """Flow speed and area of the moving regions (detections' values are gathered but not learnt)."""

    def columns(self, frame: FitFrame) -> dict[str, np.ndarray]:
        a = frame.attrs
        return {
            "flow_speed": a.flow_speed.astype(np.float64),
            "area": log_area(a.height, a.aspect).astype(np.float64),
        }

    def fit(self, columns: dict[str, np.ndarray], data: FitData, parts: ModelParts) -> None:
        parts.quantities["blob_flow"] = data.quantile_grid(columns["flow_speed"], data.blob)
        parts.quantities["blob_area"] = data.quantile_grid(columns["area"], data.blob)
