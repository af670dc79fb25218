"""speed_vs_pose: a person's speed against the motion of their legs (gliding without walking)."""

from __future__ import annotations

import numpy as np

from stages.normality.attributes.base import ByCalibrator, FrameView, Input, SkippedFrame
from stages.normality.features import speed_vs_pose


class SpeedVsPose(ByCalibrator):
    name = "speed_vs_pose"
    inputs = frozenset({Input.BOX, Input.TRACK, Input.POSE, Input.HISTORY})
    on_skipped_frame = SkippedFrame.FRAME_WINDOW  # leg motion over ScoringConfig.pose_window frames
    geometric = True
    sustained = True
    no_feedback = "no model part of its own: it is judged by its calibrator alone"

    def judge(self, frame: FrameView) -> np.ndarray:
        return np.where(frame.person, speed_vs_pose(frame.attrs.speed, frame.hist.leg_motion), np.nan)

    def text(self, name: str, speed: float) -> str:
        return f"gliding: {speed:.1f} body-heights/s with little leg motion"
