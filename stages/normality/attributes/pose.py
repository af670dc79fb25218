"""pose: a person's box-normalised keypoints against the nearest normal poses."""

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
from stages.normality.classes import PERSON
from stages.normality.features import KP_CONF, pose_features, split_pose


class Pose(ByCalibrator):
    name = "pose"
    inputs = frozenset({Input.BOX, Input.POSE})
    geometric = True
    bank = "pose"
    sustained = True

    def learner(self) -> Learner:
        return _PoseBank()

    def _features(self, frame: FrameView) -> np.ndarray:
        return pose_features(frame.attrs.pose, frame.model.pose_fill)

    def judge(self, frame: FrameView) -> np.ndarray:
        return np.where(
            frame.person, frame.model.banks["pose"].distance(self._features(frame), frame.k), np.nan
        )

    def text(self, name: str, speed: float) -> str:
        return "body pose unlike any normal pose here"

    def absorb_normal(self, frame: FrameView, rows: np.ndarray, weight: int = 1) -> None:
        """The pose joins the bank; the mean pose that stands in for unseen keypoints stays."""
        check_weight(weight)
        absorb_rows(frame, "pose", self._features(frame), rows[frame.person[rows]])


class _PoseBank(ColumnLearner):
    """People's poses; the mean of each keypoint where seen stands in for unseen ones (`pose_fill`)."""

    def columns(self, frame: FitFrame) -> dict[str, np.ndarray]:
        return {"pose": np.where(frame.cut[:, None], np.nan, frame.attrs.pose.astype(np.float64))}

    def fit(self, columns: dict[str, np.ndarray], data: FitData, parts: ModelParts) -> None:
        pose = columns["pose"]
        xy, conf = split_pose(pose)
        seen = (conf >= KP_CONF) & np.all(np.isfinite(xy), axis=2)
        fill = np.where(seen.sum(0)[:, None] > 0, np.nansum(np.where(seen[..., None], xy, 0), 0), 0.5)
        fill = fill / np.maximum(seen.sum(0), 1)[:, None]
        is_person = data.det & ~data.cut & (np.array(data.class_names)[data.cls] == PERSON)
        rows = pose_features(pose, fill)[is_person]
        parts.pose_fill = fill
        parts.banks["pose"] = build_bank("pose", rows, data, is_person)
        parts.counts["pose_rows"] = len(rows)
