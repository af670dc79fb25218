"""gait: a person's track speed against the swing of their box's aspect (a walking stride)."""

from __future__ import annotations

import numpy as np

from stages.normality.attributes.base import ByCalibrator, FrameView, Input, SkippedFrame
from stages.normality.features import gait


class Gait(ByCalibrator):
    name = "gait"
    inputs = frozenset({Input.BOX, Input.TRACK, Input.HISTORY})
    on_skipped_frame = SkippedFrame.FRAME_WINDOW  # stride and speed over ScoringConfig.gait_window frames
    geometric = True
    sustained = True
    no_feedback = "no model part of its own: it is judged by its calibrator alone"

    def judge(self, frame: FrameView) -> np.ndarray:
        return np.where(frame.person, gait(frame.hist.track_speed, frame.hist.stride), np.nan)

    def text(self, name: str, speed: float) -> str:
        return f"gliding: moving {speed:.1f} body-heights/s without the box swing of a walking stride"
