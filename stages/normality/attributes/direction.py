"""direction: the object's heading against the headings of its class moving in its place."""

from __future__ import annotations

from typing import TYPE_CHECKING

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
    check_weight,
)
from stages.normality.calibration import TailPrior
from stages.normality.grids import DIRECTION_BINS, direction_bin, smooth_spatially

if TYPE_CHECKING:
    from stages.normality.model import NormalityModel

MIN_DIRECTION_SPEED = 0.3  # box-heights/s; slower objects have no meaningful heading
COMPASS = ("right", "down-right", "down", "down-left", "left", "up-left", "up", "up-right")  # image axes


def direction_probability(
    model: NormalityModel, cell: np.ndarray, cls: np.ndarray, b: np.ndarray
) -> np.ndarray:
    """p(direction sector | cell, class), backed off to the class's image-wide sector frequencies."""
    d = model.direction
    per_class, class_total, cell_total = model.direction_totals
    p_class = (per_class[cls, b] + 1.0) / (class_total[cls] + DIRECTION_BINS)
    n_cell = cell_total[cell, cls]
    prior = 4.0
    return (d[cell, cls, b] + prior * p_class) / (n_cell + prior)


class Direction(Attribute):
    name = "direction"
    tail_prior = TailPrior.SURPRISE
    inputs = frozenset({Input.BOX, Input.TRACK})
    geometric = True
    sustained = True

    def learner(self) -> Learner:
        return _DirectionCounts()

    def judge(self, frame: FrameView) -> np.ndarray:
        attrs = frame.attrs
        moving = frame.det & (attrs.speed >= MIN_DIRECTION_SPEED)
        p = direction_probability(frame.model, frame.cell, frame.cls, direction_bin(attrs.direction))
        return np.where(moving, -np.log(p), np.nan)

    def explain(self, obj: ObjectView, score: float) -> Reason:
        b = direction_bin(np.array([float(obj.attrs.direction[obj.i])]))
        p = float(direction_probability(obj.model, obj.cell, obj.kk, b)[0])
        heading = COMPASS[int(b[0]) % DIRECTION_BINS]
        return Reason(
            self.name,
            f"heading {heading}",
            f"{p:.0%} of moving {obj.name}s here head that way",
            score,
            f"heading {heading}: only {p:.0%} of {obj.name}s moving here in training went that way",
        )

    def absorb_normal(self, frame: FrameView, rows: np.ndarray, weight: int = 1) -> None:
        """The heading counts `weight` more times in the object's cell, for objects moving fast enough
        to have one (no spatial smoothing)."""
        check_weight(weight)
        attrs = frame.attrs
        rows = rows[(frame.det & (attrs.speed >= MIN_DIRECTION_SPEED))[rows]]
        frame.model.add_direction(
            frame.cell[rows], frame.cls[rows], direction_bin(attrs.direction[rows]), weight
        )


class _DirectionCounts(ColumnLearner):
    """Per (cell, class): how many moving objects headed into each sector, spread a little to the
    neighbouring cells."""

    def columns(self, frame: FitFrame) -> dict[str, np.ndarray]:
        attrs, cut = frame.attrs, frame.cut
        return {
            "moving": np.where(cut, np.nan, attrs.speed.astype(np.float64)) >= MIN_DIRECTION_SPEED,
            "direction": np.where(cut, np.nan, attrs.direction.astype(np.float64)),
        }

    def fit(self, columns: dict[str, np.ndarray], data: FitData, parts: ModelParts) -> None:
        cells, k_all = data.cells, len(data.class_names)
        direction = np.zeros((cells, k_all, DIRECTION_BINS))
        moving = data.det & columns["moving"]
        sector = direction_bin(columns["direction"][moving])
        np.add.at(direction, (data.cell[moving], data.cls[moving], sector), 1.0)
        parts.direction = smooth_spatially(direction.reshape(cells, -1), data.grid).reshape(direction.shape)
