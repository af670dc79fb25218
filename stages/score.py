"""ScoreStage: every object's attributes judged against its camera's normality model.

Per object, each attribute's raw score is calibrated to -log10(tail probability under held-out
normal data). The object score combines them (`scoring.combine`: the max, or the mean of the top
two) and calibrates that statistic again on the same held-out objects, so "3" means one normal
object in a thousand scores higher, whatever the number of attributes. The reported object score is
the causal mean of that value over the track's last `track_window` analysed frames (a younger track:
over the frames it has), so a flicker within a track (a box that briefly changes class or size, a
flow artefact) is damped, while a new object is scored from its first frame: counting a young
track's missing frames as 0 delayed every anomaly's onset by the window (a cyclist entering the
view, a moving region whose id changes from frame to frame), which the frame-level causal mean
then delays again.
Frame score = max over objects (0 with none); `smoothed_score` = causal trailing mean over
`smoothing_frames` frames.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from pipeline.config import ScoringConfig
from pipeline.errors import ConfigError
from pipeline.packets import FramePacket, ObjectAttributes, SceneGraph, Scores, SourceEvent
from pipeline.stage import Stage
from stages.normality.attributes import ATTRIBUTES
from stages.normality.calibration import CalibratorTable, TailCalibrator
from stages.normality.features import UNTRACKED, TrackMemory
from stages.normality.fit import FrameSample
from stages.normality.judge import combine, raw_scores
from stages.normality.model import NormalityModel
from stages.normality.sustained import SustainedEvidence

log = logging.getLogger("vigil.score")

#: key of `models` that serves every camera without a model of its own
ANY_CAMERA = "*"

#: learns a camera's model from its warm-up frames (the composition root wires
#: stages.normality.learn.learn_model: the same fit and false-alert estimate as `vigil fit`)
Learn = Callable[[Sequence[FrameSample]], NormalityModel]
#: keeps a model learnt online (the composition root's ModelStore.save: its camera's model file)
Save = Callable[[NormalityModel], object]
#: the camera's model when a newer version replaced it since the last call, else None (the composition
#: root's ModelFollower: operator feedback takes effect without a restart)
Follow = Callable[[str], "NormalityModel | None"]


def model_for(models: Mapping[str, NormalityModel], camera: str) -> NormalityModel | None:
    """The camera's own model, else the one for every camera (ANY_CAMERA), else None."""
    return models.get(camera, models.get(ANY_CAMERA))


def selected_attributes(config: ScoringConfig) -> tuple[str, ...]:
    if config.attributes is None:
        return ATTRIBUTES
    unknown = [a for a in config.attributes if a not in ATTRIBUTES]
    if unknown:
        raise ConfigError(f"scoring.attributes: unknown {unknown}; known: {', '.join(ATTRIBUTES)}")
    if not config.attributes:
        raise ConfigError("scoring.attributes: empty list; leave it out to judge every attribute")
    return tuple(a for a in ATTRIBUTES if a in config.attributes)


class TrackSmoother:
    """Causal per-track mean of the last `window` values (a younger track: of the values it has).

    A NaN value (not measured this frame) is not kept: the mean of the others, NaN while none.
    Values (N, C) are C series per track, each smoothed on its own (one call instead of C smoothers)."""

    def __init__(self, window: int, expiry_frames: int = 50) -> None:
        self.window = window
        self.expiry_frames = expiry_frames
        # id -> (last frame seen, the recent values of each series)
        self._tracks: dict[int, tuple[int, list[deque[float]]]] = {}
        self._frame = 0

    def __call__(self, track_ids: np.ndarray, scores: np.ndarray) -> np.ndarray:
        """(N,) or (N, C) smoothed values, float64."""
        self._frame += 1
        if self.window <= 1:
            return scores
        values = np.asarray(scores, np.float64)
        out = []
        rows = values if values.ndim == 2 else values[:, None]
        for tid, row in zip(track_ids.tolist(), rows.tolist(), strict=True):
            if tid == UNTRACKED:  # no identity to accumulate over: the frame's own score
                out.append(row)
                continue
            entry = self._tracks.get(tid)
            series = entry[1] if entry is not None else [deque(maxlen=self.window) for _ in row]
            smoothed = []
            for recent, value in zip(series, row, strict=True):
                if math.isfinite(value):
                    recent.append(value)
                smoothed.append(sum(recent) / len(recent) if recent else math.nan)
            self._tracks[tid] = (self._frame, series)
            out.append(smoothed)
        if self._frame % self.expiry_frames == 0:
            cutoff = self._frame - self.expiry_frames
            self._tracks = {t: v for t, v in self._tracks.items() if v[0] >= cutoff}
        return np.array(out, np.float64).reshape(values.shape)


@dataclass
class _Camera:
    model: NormalityModel
    object_cal: TailCalibrator
    memory: TrackMemory
    recent: deque[float]
    tracks: TrackSmoother
    sustained: SustainedEvidence | None
    calibrators: CalibratorTable  # the selected attributes' calibrators, applied in one call per frame
    sustained_calibrators: CalibratorTable


class Scorer:
    """Pure per-camera scorer (no runner): `score(attrs, graph, pts)` -> Scores."""

    def __init__(self, model: NormalityModel, config: ScoringConfig) -> None:
        self.config = config
        self.attributes = selected_attributes(config)
        self._idx = [ATTRIBUTES.index(a) for a in self.attributes]
        self.state = _Camera(
            model,
            model.object_calibrator(self.attributes, config.combine),
            TrackMemory.of(config),
            deque(maxlen=config.smoothing_frames),
            TrackSmoother(config.track_window),
            SustainedEvidence(model.sustained_window, model.sustained_min_frames)
            if model.sustained_window
            else None,
            CalibratorTable([model.calibrators[a] for a in self.attributes]),
            CalibratorTable([model.sustained_calibrators.get(a) for a in self.attributes]),
        )

    def replace_model(self, model: NormalityModel) -> None:
        """Judge with `model` from the next frame on, keeping the tracks' memory and smoothing (a new
        version of the same camera's model: its tracks go on)."""
        st = self.state
        same_window = st.sustained is not None and st.model.sustained_window == model.sustained_window
        self.state = _Camera(
            model,
            model.object_calibrator(self.attributes, self.config.combine),
            st.memory,
            st.recent,
            st.tracks,
            st.sustained
            if same_window
            else (
                SustainedEvidence(model.sustained_window, model.sustained_min_frames)
                if model.sustained_window
                else None
            ),
            CalibratorTable([model.calibrators[a] for a in self.attributes]),
            CalibratorTable([model.sustained_calibrators.get(a) for a in self.attributes]),
        )

    def score(
        self,
        attrs: ObjectAttributes,
        graph: SceneGraph | None,
        pts: float,
        frame_size: tuple[int, int] | None = None,
    ) -> Scores:
        """`frame_size` (height, width): boxes cut by the frame edge get no geometric attribute."""
        st = self.state
        hist = st.memory.update(attrs, pts, frame_size)
        raw = raw_scores(st.model, attrs, graph, hist, self.config.knn_k, self.attributes, frame_size)
        cal = st.calibrators(raw)
        sustained = None
        strongest = cal
        if st.sustained is not None:
            sustained = st.sustained_calibrators(st.sustained(attrs.track_id, cal))
            strongest = np.fmax(cal, sustained)
        obj = st.object_cal(combine(strongest, self.config.combine)) if len(attrs) else np.zeros(0)
        obj = st.tracks(attrs.track_id, obj)
        frame = float(obj.max()) if len(obj) else 0.0
        st.recent.append(frame)
        return Scores(
            track_id=attrs.track_id.astype(np.int64),
            attribute_names=self.attributes,
            attribute_scores=cal.astype(np.float32),
            object_score=obj.astype(np.float32),
            frame_score=frame,
            smoothed_score=float(np.mean(st.recent)),
            sustained_scores=None if sustained is None else sustained.astype(np.float32),
        )


class Warmup:
    """Online learning for a camera with no model: collect `warmup_s` seconds of its frames, then learn.

    Everything seen during warm-up is taken as normal; scores stay 0 until the model exists. The
    frames are one continuous clip, "warmup".
    """

    def __init__(self, camera: str, config: ScoringConfig, learn: Learn) -> None:
        self.camera = camera
        self.config = config
        self.learn = learn
        self.samples: list[FrameSample] = []
        self.started: float | None = None

    def add(
        self,
        attrs: ObjectAttributes,
        graph: SceneGraph | None,
        pts: float,
        frame_size: tuple[int, int] = (0, 0),
    ) -> NormalityModel | None:
        """Keep the frame; once warm-up has lasted long enough, return the learnt model."""
        self.started = pts if self.started is None else self.started
        height, width = frame_size
        self.samples.append(FrameSample(self.camera, "warmup", pts, width, height, attrs, graph))
        if pts - self.started < self.config.warmup_s or sum(len(s.attributes) for s in self.samples) == 0:
            return None
        log.info("warm-up over: learning", extra={"camera": self.camera, "frames": len(self.samples)})
        return self.learn(self.samples)


class ScoreStage(Stage):
    """Calibrated per-attribute, per-object and per-frame scores (frame = max over objects).

    `models` maps camera name to its model; the key "*" serves cameras without their own. A camera
    with neither learns online for `scoring.warmup_s` seconds with `learn` (scores 0 meanwhile;
    warmup_s = 0 or no `learn`: never), then its model is added to `models`, which ExplainStage and
    EventStage share, so it explains and its alert budget applies too, and is handed to `save`.
    """

    name = "score"
    interpreter_bound = True
    needs = ("attributes", "scene_graph")
    provides = ("scores",)

    def __init__(
        self,
        models: dict[str, NormalityModel],
        config: ScoringConfig,
        learn: Learn | None = None,
        save: Save | None = None,
        follow: Follow | None = None,
    ) -> None:
        self.models = models
        self.config = config
        self.learn = learn
        self.save = save
        self.follow = follow
        self.attributes = selected_attributes(config)
        self._scorers: dict[str, Scorer] = {}
        self._warmups: dict[str, Warmup] = {}

    def on_source_added(self, event: SourceEvent) -> None:
        model = model_for(self.models, event.camera)
        if model is not None:
            self._scorers[event.camera] = Scorer(model, self.config)
        elif self.config.warmup_s > 0 and self.learn is not None:
            log.warning(
                "no normality model: learning online first",
                extra={"camera": event.camera, "warmup_s": self.config.warmup_s},
            )
            self._warmups[event.camera] = Warmup(event.camera, self.config, self.learn)
        else:
            log.warning("no normality model and no warm-up; scores stay 0", extra={"camera": event.camera})

    def on_source_eos(self, event: SourceEvent) -> None:
        self._scorers.pop(event.camera, None)
        self._warmups.pop(event.camera, None)

    def process(self, packet: FramePacket) -> None:
        attrs = packet.attributes
        assert attrs is not None
        camera = packet.frame.camera
        size = (packet.frame.height, packet.frame.width)
        warmup = self._warmups.get(camera)
        if warmup is not None:
            model = warmup.add(attrs, packet.scene_graph, packet.frame.pts, size)
            if model is not None:
                del self._warmups[camera]
                self.models[camera] = model
                self._scorers[camera] = Scorer(model, self.config)
                if self.save is not None:
                    self.save(model)
        scorer = self._scorers.get(camera)
        newer = self.follow(camera) if self.follow is not None and scorer is not None else None
        if newer is not None and scorer is not None:
            self.models[camera] = newer  # explain and events follow the mapping
            scorer.replace_model(newer)
            log.info("normality model replaced by a newer version", extra={"camera": camera})
        if scorer is None:
            n = len(attrs)
            packet.scores = Scores(
                track_id=attrs.track_id.astype(np.int64),
                attribute_names=self.attributes,
                attribute_scores=np.full((n, len(self.attributes)), np.nan, np.float32),
                object_score=np.zeros(n, np.float32),
                frame_score=0.0,
                smoothed_score=0.0,
            )
            return
        packet.scores = scorer.score(attrs, packet.scene_graph, packet.frame.pts, size)
