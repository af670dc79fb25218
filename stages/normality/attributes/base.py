"""What every judged attribute is: how it is learnt from normal footage, judged on a frame, explained,
and what operator feedback can do to it.

One `Attribute` object per attribute, stateless (per-camera state lives in the model and the scorer),
registered by name in `stages.normality.attributes`. The fitter, the judge and the explainer loop over
the registry instead of naming attributes; the views below carry what several attributes share, so
each attribute's own code is only its own arithmetic.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING

import numpy as np
import torch

from pipeline.config import ScoringConfig
from pipeline.errors import ModelError
from pipeline.packets import ObjectAttributes, Reason, SceneGraph
from stages.normality.calibration import TailPrior
from stages.normality.features import HistoryFeatures
from stages.normality.grids import CountGrid, QuantileGrid

if TYPE_CHECKING:
    from stages.normality.dynamics import DynamicsPredictor
    from stages.normality.memory import MemoryBank
    from stages.normality.model import NormalityModel
    from stages.normality.triplets import TripletStats


class Input(Enum):
    """A per-frame input an attribute is judged from, and the stage that measures it."""

    BOX = "box"  # detect: class, confidence and box (place cell, height, aspect) of each object
    TRACK = (
        "track"  # attributes, from the track's recent boxes: velocity, speed, direction, scale rate, dwell
    )
    FLOW = "flow"  # flow: motion histogram and flow speed inside a box; moving regions no box explains
    POSE = "pose"  # pose: box-normalised keypoints of people
    APPEARANCE = "appearance"  # appearance: the box's embedding
    SCENE_GRAPH = "scene_graph"  # scene_graph: relations between objects
    HISTORY = "history"  # the scorer's TrackMemory: per-track windows of the last analysed frames


class SkippedFrame(Enum):
    """How an attribute is judged on a frame analysed at a lowered rate or skipped.

    Frames the analysis stride skips (`analysis_fps`) are judged by no attribute: the runner runs no
    stage on them. On an analysed frame where a stage running at a lowered rate (detector, pose,
    appearance: `every_k_frames`) did not measure, that stage carries its last measurement (boxes
    moved by the flow, the last pose, the last embedding), and every attribute is judged on what its
    inputs hold, as on any other frame. What differs is what a lowered analysis rate does to it:
    """

    #: judged as usual: its value is per second, or a state of the frame, whatever the analysis rate
    AS_USUAL = "as usual"
    #: judged as usual, but over a window counted in analysed frames (ScoringConfig.dynamics_history,
    #: pose_window, gait_window): at another analysis rate than the fit's the window spans another time
    #: than the one the model learnt, and the judgement is against that other span's normal
    FRAME_WINDOW = "over a window of analysed frames"


class FeedbackUnsupported(ModelError):
    """An attribute whose model part cannot take one more normal observation (see Attribute.absorb_normal)."""


# ---- views: what an attribute's code sees --------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FrameView:
    """One frame's objects as the judges see them: the packets and what several attributes share.

    `cell` and `cls` index the model's grids and class axis; `det` is True for detections (not moving
    regions), `person` for detections of people; `k` is the number of neighbours of the k-NN attributes.
    """

    model: NormalityModel
    attrs: ObjectAttributes
    graph: SceneGraph | None
    hist: HistoryFeatures
    k: int
    cell: np.ndarray
    cls: np.ndarray
    det: np.ndarray
    person: np.ndarray


@dataclass(frozen=True)
class NormalRange:
    """What is normal for an object's attribute where it was seen, in the unit its reason states: the
    values at `levels` (quantiles of the normal objects of its class in its place) and its own value.
    For the console's plot of a reason."""

    unit: str
    levels: tuple[float, ...]
    values: tuple[float, ...]
    observed: float


@dataclass(frozen=True, slots=True)
class ObjectView:
    """One object of a frame as the explainer sees it: row `i` of `attrs`, class `k` on the model's axis."""

    model: NormalityModel
    attrs: ObjectAttributes
    graph: SceneGraph | None
    i: int
    k: int

    @property
    def name(self) -> str:
        return self.attrs.name_of(self.i)

    @property
    def cell(self) -> np.ndarray:
        """(1,) the object's grid cell, for the model parts' vectorised lookups."""
        return np.array([int(self.attrs.cell[self.i])])

    @property
    def kk(self) -> np.ndarray:
        """(1,) the object's class index on the model's class axis."""
        return np.array([self.k])


#: the per-track mean speed over the frames sustained evidence covers, and the normal speed's median
#: and 99th percentile along the path the track took in those frames (stages.explain keeps it)
PathSpeed = tuple[float, float, float]


@dataclass(frozen=True, slots=True)
class FitFrame:
    """One analysed frame of normal footage as the learners see it; `cut`: boxes cut by the frame edge
    (features.truncated), which the attributes measured from the box neither learn nor judge; `clip`:
    the clip it is from (track ids are the tracker's within a clip)."""

    attrs: ObjectAttributes
    graph: SceneGraph | None
    hist: HistoryFeatures
    cut: np.ndarray
    clip: str = ""


@dataclass(frozen=True)
class FitData:
    """The fit part's objects, all frames concatenated (`cell`, `cls`, `blob`, `cut` and `track`, the
    object's track numbered over the fit's clips, each untracked object its own, per object, in the
    order the learners' columns were added), and what the learners build their parts with.
    `unbanked`: objects left out of the nearest-neighbour memory banks (a calibration fold's tracks
    that its held-out block shows too: see stages.normality.fit)."""

    cell: np.ndarray
    cls: np.ndarray
    blob: np.ndarray
    cut: np.ndarray
    track: np.ndarray
    class_names: tuple[str, ...]
    grid: tuple[int, int]
    config: ScoringConfig
    seed: int
    device: torch.device
    unbanked: np.ndarray | None = None

    @property
    def det(self) -> np.ndarray:
        return ~self.blob

    @property
    def cells(self) -> int:
        return self.grid[0] * self.grid[1]

    def quantile_grid(self, x: np.ndarray, mask: np.ndarray) -> QuantileGrid:
        """Quantile tables of `x` over the objects where `mask` holds, per (cell, class)."""
        k_all = len(self.class_names)
        cell, cls, track = self.cell[mask], self.cls[mask], self.track[mask]
        config = self.config
        return QuantileGrid.fit(
            self.cells, k_all, cell, cls, x[mask], config.min_cell_samples, track, config.spread_shrink_tracks
        )


@dataclass
class ModelParts:
    """The parts of a NormalityModel the learners build, each written by the attribute that owns it."""

    place: CountGrid | None = None
    direction: np.ndarray | None = None
    quantities: dict[str, QuantileGrid] = field(default_factory=dict)
    banks: dict[str, MemoryBank] = field(default_factory=dict)
    tables: dict[str, np.ndarray] = field(default_factory=dict)
    pose_fill: np.ndarray | None = None
    triplets: TripletStats | None = None
    dynamics: DynamicsPredictor | None = None
    #: what the attributes counted in the footage (merged into NormalityModel.counts in name order)
    counts: dict[str, int] = field(default_factory=dict)


class Learner(ABC):
    """What one attribute gathers from normal footage while the fitter streams it, and builds from it."""

    @abstractmethod
    def add(self, frame: FitFrame) -> None:
        """Every analysed frame of the fit part, in clip order (frames without objects too)."""

    @abstractmethod
    def build(self, data: FitData, parts: ModelParts) -> None:
        """Write this attribute's part(s) of the model into `parts`."""


class ColumnLearner(Learner):
    """A learner of per-object columns: `columns` of each frame with objects, concatenated for `fit`
    (row for row with FitData's objects)."""

    def __init__(self) -> None:
        self._columns: dict[str, list[np.ndarray]] = {}

    def add(self, frame: FitFrame) -> None:
        if not len(frame.attrs):
            return
        for name, values in self.columns(frame).items():
            self._columns.setdefault(name, []).append(values)

    def build(self, data: FitData, parts: ModelParts) -> None:
        self.fit({name: np.concatenate(v) for name, v in self._columns.items()}, data, parts)

    @abstractmethod
    def columns(self, frame: FitFrame) -> dict[str, np.ndarray]:
        """Per-object values this attribute learns from, (N, ...) each."""

    @abstractmethod
    def fit(self, columns: dict[str, np.ndarray], data: FitData, parts: ModelParts) -> None:
        """Write the part(s) built from the concatenated columns into `parts`."""


# ---- the attribute -------------------------------------------------------------------------------


class Attribute(ABC):
    """One judged attribute: how it is learnt (`learner`), judged (`judge`) and explained (`explain`).

    Declarations: `inputs`, what it is judged from; `on_skipped_frame`, how a lowered analysis rate
    affects its judgement; `geometric`, whether it is measured from the box's extent or ground point
    (then not learnt or judged while the box is cut by the frame edge); `sustained`, whether its
    per-frame noise averages out over a track, so a track's median score is evidence of its own;
    `leads`, whether its reason can lead an object's reasons whatever its score; `quantities` and
    `bank`, the model parts it owns, by name.
    """

    name: str
    inputs: frozenset[Input]
    on_skipped_frame: SkippedFrame = SkippedFrame.AS_USUAL
    geometric: bool
    sustained: bool
    leads: bool = False
    #: the model parts it owns: quantile tables (model.quantities, file entries `q.NAME`), memory bank,
    #: and plain arrays of counts or statistics (model.tables, file entries `t.NAME`)
    quantities: tuple[str, ...] = ()
    bank: str | None = None
    tables: tuple[str, ...] = ()
    #: why `absorb_normal` is not supported (None where it is)
    no_feedback: str | None = None
    #: what the raw score is, for the prior of its calibrator's tail (calibration.TailPrior)
    tail_prior: TailPrior = TailPrior.SPREAD

    def learner(self) -> Learner | None:
        """A fresh learner for one fit; None: nothing of its own in the model (judged by its calibrator)."""
        return None

    @abstractmethod
    def judge(self, frame: FrameView) -> np.ndarray:
        """(N,) raw scores of the frame's objects, in this attribute's own unit; NaN: not applicable."""

    @abstractmethod
    def explain(self, obj: ObjectView, score: float) -> Reason:
        """The reason of calibrated score `score`: observed, expected here, and a sentence."""

    def sustained_text(self, obj: ObjectView, path: PathSpeed) -> str | None:
        """The sentence of a reason from the track's sustained evidence (None: this frame's sentence)."""
        return None

    def leads_reasons(self, obj: ObjectView) -> bool:
        """With `leads`: True where this attribute's reason explains the others and leads them."""
        return False

    def normal_range(self, obj: ObjectView) -> NormalRange | None:
        """The normal distribution of this attribute for the object's class and place, and its value,
        in the reason's unit (None: the attribute has no such distribution to show, e.g. a k-NN
        distance; the console then shows the score against the calibrated normal tail)."""
        return None

    def absorb_normal(self, frame: FrameView, rows: np.ndarray, weight: int = 1) -> None:
        """Operator feedback, "this is normal here": the objects `rows` of `frame` are added to the
        model as `weight` more normal observations of this attribute, where they were seen. Judged
        raw scores of such objects drop; the calibrators (the scale of held-out normal data) stay.
        FeedbackUnsupported where the attribute's model part cannot take one observation."""
        raise FeedbackUnsupported(f"{self.name}: operator feedback not supported: {self.no_feedback}")

    @property
    def absorbs_feedback(self) -> bool:
        return self.no_feedback is None


def check_weight(weight: int) -> None:
    if weight < 1:
        raise ValueError(f"feedback weight: expected >= 1 observations, got {weight}")


class ByCalibrator(Attribute):
    """An attribute whose raw value means little to an operator (a k-NN distance, a prediction error, a
    ratio): its reason states the raw value recovered from the calibrator and the normal 99th
    percentile, with a sentence of what its deviation means (`text`)."""

    @abstractmethod
    def text(self, name: str, speed: float) -> str:
        """What a deviation means, without its numbers (`speed`: the object's, or its track's mean)."""

    def explain(self, obj: ObjectView, score: float) -> Reason:
        cal = obj.model.calibrators[self.name]
        raw, q99 = cal.inverse(score), cal.q99
        text = self.text(obj.name, float(obj.attrs.speed[obj.i]))
        return Reason(
            self.name,
            f"{raw:.2f}",
            f"<= {q99:.2f} (99th pct)",
            score,
            f"{text} ({raw:.2f}, normal <= {q99:.2f})",
        )

    def sustained_text(self, obj: ObjectView, path: PathSpeed) -> str | None:
        return self.text(obj.name, path[0])


def add_to_bank(bank: MemoryBank, features: np.ndarray) -> None:
    """Add the finite rows of `features` to a memory bank (feedback of the k-NN attributes)."""
    bank.add(features[np.all(np.isfinite(features), axis=1)])
