"""motion: the histogram of flow inside the box against the nearest normal ones."""

from __future__ import annotations

import numpy as np

from stages.normality.attributes.banks import absorb_rows, build_bank
from stages.normality.attributes.base import (
    ByCalibrator,
    ColumnLearner,
    FitData,
    FitFrame,
    FrameView,
    Input,
    Learner,
    ModelParts,
    check_weight,
)
from stages.normality.features import motion_features


class Motion(ByCalibrator):
    name = "motion"
    inputs = frozenset({Input.BOX, Input.FLOW})
    geometric = True  # box-normalised: a cut box's histogram describes the cut
    bank = "motion"
    sustained = True

    def learner(self) -> Learner:
        return _MotionBank()

    def _features(self, frame: FrameView) -> np.ndarray:
        return motion_features(frame.attrs.motion_hist)

    def judge(self, frame: FrameView) -> np.ndarray:
        return np.where(
            frame.det, frame.model.banks["motion"].distance(self._features(frame), frame.k), np.nan
        )

    def text(self, name: str, speed: float) -> str:
        return f"motion pattern of this {name} unlike normal ones"

    def absorb_normal(self, frame: FrameView, rows: np.ndarray, weight: int = 1) -> None:
        check_weight(weight)
        absorb_rows(frame, "motion", self._features(frame), rows[frame.det[rows]])


class _MotionBank(ColumnLearner):
    def columns(self, frame: FitFrame) -> dict[str, np.ndarray]:
        a = frame.attrs
        no_motion = (a.is_blob | frame.cut)[:, None]
        return {"motion": np.where(no_motion, np.nan, motion_features(a.motion_hist))}

    def fit(self, columns: dict[str, np.ndarray], data: FitData, parts: ModelParts) -> None:
        parts.banks["motion"] = build_bank("motion", columns["motion"], data)
