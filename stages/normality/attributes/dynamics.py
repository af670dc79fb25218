"""dynamics: how well a small model trained on normal tracks predicts the track's next step."""

from __future__ import annotations

import numpy as np

from stages.normality.attributes.base import (
    ByCalibrator,
    FitData,
    FitFrame,
    FrameView,
    Input,
    Learner,
    ModelParts,
    SkippedFrame,
)
from stages.normality.dynamics import DynamicsPredictor


class Dynamics(ByCalibrator):
    name = "dynamics"
    inputs = frozenset({Input.BOX, Input.TRACK, Input.HISTORY})
    on_skipped_frame = SkippedFrame.FRAME_WINDOW  # the step between analysed frames, after dynamics_history
    geometric = True
    sustained = True
    no_feedback = "its model part is a trained predictor: one more observation needs retraining"

    def learner(self) -> Learner:
        return _Windows()

    def judge(self, frame: FrameView) -> np.ndarray:
        return np.where(frame.det, frame.model.dynamics.error(frame.hist.windows), np.nan)

    def text(self, name: str, speed: float) -> str:
        return "erratic movement: its next step does not follow from the last ones"


class _Windows(Learner):
    """The complete velocity windows of the fit part's tracks (cut boxes included, as they always were)."""

    def __init__(self) -> None:
        self.windows: list[np.ndarray] = []

    def add(self, frame: FitFrame) -> None:
        if len(frame.attrs):
            w = frame.hist.windows
            self.windows.append(w[np.all(np.isfinite(w), axis=(1, 2))])

    def build(self, data: FitData, parts: ModelParts) -> None:
        c = data.config
        win = np.concatenate(self.windows) if self.windows else np.zeros((0, c.dynamics_history + 1, 2))
        parts.dynamics = DynamicsPredictor.train(
            win, c.dynamics_history, c.dynamics_epochs, data.seed, data.device
        )
        parts.counts["dynamics_windows"] = len(win)
