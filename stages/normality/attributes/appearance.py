"""appearance: the box's embedding against the nearest normal ones."""

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


class Appearance(ByCalibrator):
    name = "appearance"
    inputs = frozenset({Input.BOX, Input.APPEARANCE})
    geometric = False  # a cut box still shows what the object looks like
    bank = "appearance"
    sustained = False  # what an object looks like persists: a track's mean adds nothing

    def learner(self) -> Learner:
        return _AppearanceBank()

    def judge(self, frame: FrameView) -> np.ndarray:
        app = frame.attrs.appearance.astype(np.float64)
        return np.where(frame.det, frame.model.banks["appearance"].distance(app, frame.k), np.nan)

    def text(self, name: str, speed: float) -> str:
        return f"this {name} looks unlike anything seen in training"

    def absorb_normal(self, frame: FrameView, rows: np.ndarray, weight: int = 1) -> None:
        check_weight(weight)
        absorb_rows(frame, "appearance", frame.attrs.appearance.astype(np.float64), rows[frame.det[rows]])


class _AppearanceBank(ColumnLearner):
    def columns(self, frame: FitFrame) -> dict[str, np.ndarray]:
        a = frame.attrs
        return {"appearance": np.where(a.is_blob[:, None], np.nan, a.appearance.astype(np.float64))}

    def fit(self, columns: dict[str, np.ndarray], data: FitData, parts: ModelParts) -> None:
        parts.banks["appearance"] = build_bank("appearance", columns["appearance"], data)
