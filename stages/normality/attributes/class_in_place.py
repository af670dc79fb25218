"""class_in_place: how often this class was seen in this place (grid cell) in training."""

from __future__ import annotations

import numpy as np

from pipeline.packets import Reason
from stages.normality.attributes.base import (
    Attribute,
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
from stages.normality.grids import CountGrid, smooth_spatially


class ClassInPlace(Attribute):
    name = "class_in_place"
    tail_prior = TailPrior.SURPRISE
    inputs = frozenset({Input.BOX})
    geometric = False  # a box cut by the frame edge still shows its class and roughly its place
    sustained = False  # what and where an object is persists by nature: a track's mean adds nothing
    leads = True

    def learner(self) -> Learner:
        return _PlaceCounts()

    def judge(self, frame: FrameView) -> np.ndarray:
        # a detection's class is only as certain as the detector: weigh the surprise by confidence
        certainty = np.where(frame.det, frame.attrs.confidence, 1.0)
        return -np.log(frame.model.place.probability(frame.cell, frame.cls)) * certainty

    def explain(self, obj: ObjectView, score: float) -> Reason:
        m, name, cell, kk = obj.model, obj.name, obj.cell, obj.kk
        p = float(m.place.probability(cell, kk)[0])
        seen = float(m.place.count(cell, kk)[0])
        if seen < 0.5:
            sentence = f"{name} never seen in this area in {m.counts.get('frames', 0):,} training frames"
        else:
            sentence = f"{name} rare in this area: {p:.1%} of the objects seen here in training"
        return Reason(self.name, f"{name} in cell {int(cell[0])}", f"p={p:.2%}", score, sentence)

    def leads_reasons(self, obj: ObjectView) -> bool:
        """A class never seen in this area in training explains the rest (a new kind of object also
        looks and moves unlike the known ones). Moving regions have no class to explain them."""
        if obj.attrs.is_blob[obj.i]:
            return False
        return float(obj.model.place.count(obj.cell, obj.kk)[0]) < 0.5

    def absorb_normal(self, frame: FrameView, rows: np.ndarray, weight: int = 1) -> None:
        """The class counts `weight` more times in the object's cell (no spatial smoothing)."""
        check_weight(weight)
        frame.model.place.add(frame.cell[rows], frame.cls[rows], float(weight))


class _PlaceCounts(Learner):
    """Every object counts in its cell, cut boxes and moving regions included; spread a little to the
    neighbouring cells (ground points near a cell edge are noisy)."""

    def add(self, frame: FitFrame) -> None:
        pass  # FitData's cell and class columns are all it needs

    def build(self, data: FitData, parts: ModelParts) -> None:
        place = np.zeros((data.cells, len(data.class_names)))
        np.add.at(place, (data.cell, data.cls), 1.0)
        parts.place = CountGrid(smooth_spatially(place, data.grid))
