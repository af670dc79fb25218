"""limb_motion: how much a person's arms and legs move against the torso, against the normal for their speed.

Waving, dancing and fighting move the limbs against the torso more than standing or walking does;
gliding on a board moves the legs less than walking at that speed. The judged values are the arms'
and the legs' amplitude over the last LIMB_WINDOW_S seconds (features.limb_amplitudes) as a log
ratio to the torso keypoints' own amplitude, the keypoint noise of this person's measurement: a
person far away has coarser keypoints, which look like limb motion in body-heights but not in this
ratio. The normal median and spread of each ratio are learnt per speed bin (walking swings arms and
legs in proportion to speed), shrunk to all speeds and then to a shipped prior when the footage has
few measured people. Raw score: the largest robust z of arms above and legs above normal, and of legs
below normal where people walk (a glider).
"""

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
)
from stages.normality.calibration import TailPrior

#: speed bins (box-heights/s; a person's box is about their height): standing, slow, walking, fast
SPEED_EDGES = np.array([0.1, 0.3, 0.8])
SPEED_NAMES = ("standing", "moving slowly", "walking", "moving fast")
#: the first bin whose people walk: legs moving less than normal there is gliding
WALKING_BIN = 2
#: body-heights added to both sides of the ratio: about a pixel at 200 px, so still, sharp keypoints
#: do not make a ratio of nothing over nothing
NOISE_FLOOR = 0.005
#: shipped prior of the log ratios (arms, legs) x (10th, 50th, 90th percentile), from the people of
#: Avenue's normal training clips 12 and 16 (standing, talking, walking), and its weight in samples
PRIOR = np.array([[0.45, 1.15, 1.9], [0.3, 0.75, 1.5]])
PRIOR_SAMPLES = 50.0
#: least spread (log ratio) between the median and the 10th/90th percentile: a bin of near-identical
#: ratios would turn noise into large z
MIN_SPREAD = 0.2
ARMS, LEGS = 0, 1


def limb_ratios(limbs: np.ndarray) -> np.ndarray:
    """(N, 3) amplitudes (arms, legs, torso noise) -> (N, 2) log ratios of arms and legs to the noise."""
    return np.log((limbs[:, :2] + NOISE_FLOOR) / (limbs[:, 2:3] + NOISE_FLOOR))


def speed_bin(speed: np.ndarray) -> np.ndarray:
    return np.searchsorted(SPEED_EDGES, np.nan_to_num(np.asarray(speed, np.float64), nan=0.0), side="right")


class LimbMotion(ByCalibrator):
    name = "limb_motion"
    tail_prior = TailPrior.ROBUST_Z
    inputs = frozenset({Input.BOX, Input.TRACK, Input.POSE, Input.HISTORY})
    #: keypoints against the torso, in torso lengths: a box cut by the frame edge does not enter it
    #: (a keypoint out of the picture is unseen, and the torso must be seen whole)
    geometric = False
    sustained = True
    tables = ("limb_motion",)
    no_feedback = "its table keeps percentiles per speed, not the samples they came from"

    def learner(self) -> Learner:
        return _LimbTable()

    def judge(self, frame: FrameView) -> np.ndarray:
        q = frame.model.tables["limb_motion"]  # (bins, 2, 3): 10th, 50th, 90th percentile
        x = limb_ratios(frame.hist.limbs)
        b = speed_bin(frame.attrs.speed)
        q10, q50, q90 = q[b, :, 0], q[b, :, 1], q[b, :, 2]
        above = (x - q50) / np.maximum(q90 - q50, MIN_SPREAD)
        below = (q50[:, LEGS] - x[:, LEGS]) / np.maximum(q50[:, LEGS] - q10[:, LEGS], MIN_SPREAD)
        z = np.column_stack([above, np.where(b >= WALKING_BIN, below, np.nan)])
        ok = np.isfinite(z).any(axis=1) & frame.person
        return np.where(ok, np.nanmax(np.where(np.isfinite(z), z, -np.inf), axis=1), np.nan)

    def text(self, name: str, speed: float) -> str:
        where = SPEED_NAMES[int(speed_bin(np.array([speed]))[0])]
        return (
            f"arms or legs moving against the torso unlike people {where} here ({speed:.1f} body-heights/s): "
            "waving, dancing, fighting, or gliding without steps"
        )


class _LimbTable(Learner):
    """People's limb ratios and speeds, per analysed frame where their limbs were measured."""

    def __init__(self) -> None:
        self._x: list[np.ndarray] = []
        self._bin: list[np.ndarray] = []

    def add(self, frame: FitFrame) -> None:
        if not len(frame.attrs):
            return
        ok = ~frame.attrs.is_blob & np.isfinite(frame.hist.limbs[:, 2])
        self._x.append(limb_ratios(frame.hist.limbs[ok]))
        self._bin.append(speed_bin(frame.attrs.speed[ok]))

    def build(self, data: FitData, parts: ModelParts) -> None:
        # people only: the learner sees class ids on the detector's axis, so it keeps the rows whose
        # torso was measured (only people have keypoints)
        x = np.concatenate(self._x) if self._x else np.zeros((0, 2))
        b = np.concatenate(self._bin) if self._bin else np.zeros(0, np.int64)
        parts.tables["limb_motion"] = percentile_table(x, b)
        parts.counts["limb_motion_rows"] = int(np.isfinite(x).any(axis=1).sum())


def percentile_table(x: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(bins, 2, 3) 10th/50th/90th percentiles of the log ratios per speed bin, each shrunk to all
    speeds' (weight PRIOR_SAMPLES), which are shrunk to PRIOR."""
    pct = np.array([10.0, 50.0, 90.0])
    out = np.empty((len(SPEED_EDGES) + 1, 2, 3))
    for j in (ARMS, LEGS):
        col = x[:, j]
        seen = np.isfinite(col)
        overall = _shrunk(col[seen], PRIOR[j], pct)
        for k in range(len(SPEED_EDGES) + 1):
            out[k, j] = _shrunk(col[seen & (b == k)], overall, pct)
    return out


def _shrunk(values: np.ndarray, parent: np.ndarray, pct: np.ndarray) -> np.ndarray:
    if not len(values):
        return parent.copy()
    w = len(values) / (len(values) + PRIOR_SAMPLES)
    return w * np.percentile(values, pct) + (1 - w) * parent
