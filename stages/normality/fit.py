"""Fit a camera's normality model from normal footage, and calibrate it on held-out clips.

Held out for calibration: every 5th clip when there are at least five, otherwise the last
`ScoringConfig.holdout` share of every clip. The parts are built from the rest; raw scores of the
held-out objects give each attribute's calibrator and the calibrator of the object combination.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from tqdm import tqdm

from pipeline.config import ScoringConfig
from pipeline.errors import ModelError
from pipeline.packets import COCO_KEYPOINTS, ObjectAttributes, SceneGraph
from stages.normality.attributes import ATTRIBUTES, REGISTRY
from stages.normality.attributes.base import FitData, FitFrame, Learner, ModelParts
from stages.normality.calibration import BODY_TAIL_FLOOR, TailCalibrator
from stages.normality.classes import BLOB, UNKNOWN
from stages.normality.features import TrackMemory, truncated
from stages.normality.grids import DIRECTION_BINS, CountGrid
from stages.normality.judge import calibrate, raw_scores
from stages.normality.memory import resolve_device
from stages.normality.model import NormalityModel
from stages.normality.sustained import SUSTAINED_ATTRIBUTES, SustainedEvidence
from stages.normality.triplets import TripletStats

log = logging.getLogger("vigil.fit")
HOLDOUT_ROWS = 20_000  # held-out raw score rows kept in the model for the object calibrator
#: held-out tracks with sustained evidence needed to calibrate it: fewer say little about how much
#: normal tracks differ from each other (one person walks fast all along), so it stays off
MIN_SUSTAINED_TRACKS = 30


@dataclass(frozen=True, slots=True)
class FrameSample:
    """What the perception graph saw in one analysed frame of normal footage."""

    camera: str
    clip: str
    pts: float
    width: int
    height: int
    attributes: ObjectAttributes
    scene_graph: SceneGraph | None


def split_holdout(samples: list[FrameSample], share: float) -> tuple[list[FrameSample], list[FrameSample]]:
    clips = sorted({s.clip for s in samples})
    if len(clips) >= 5:
        held = {c for i, c in enumerate(clips) if i % 5 == 4}
        return [s for s in samples if s.clip not in held], [s for s in samples if s.clip in held]
    fit, hold = [], []
    for c in clips:
        clip = sorted((s for s in samples if s.clip == c), key=lambda s: s.pts)
        cut = max(1, round(len(clip) * (1 - share)))
        fit += clip[:cut]
        hold += clip[cut:]
    return fit, hold


def _by_clip(samples: list[FrameSample]) -> dict[str, list[FrameSample]]:
    out: dict[str, list[FrameSample]] = defaultdict(list)
    for s in samples:
        out[s.clip].append(s)
    return {c: sorted(v, key=lambda s: s.pts) for c, v in out.items()}


def fit_normality(
    samples: Iterable[FrameSample], config: ScoringConfig, seed: int, grid: tuple[int, int] | None = None
) -> NormalityModel:
    """Build and calibrate the model of one camera. `grid` defaults to AttributesConfig's (6, 8)."""
    samples = list(samples)
    if not samples:
        raise ModelError("fit: no frames of normal footage to learn from")
    cameras = sorted({s.camera for s in samples})
    if len(cameras) != 1:
        raise ModelError(f"fit: samples of several cameras {cameras}; fit one camera at a time")
    rows, cols = grid or (6, 8)
    cells = rows * cols
    names = samples[0].attributes.class_names
    class_names = (*names, BLOB, UNKNOWN)
    k_all = len(class_names)
    device = resolve_device(config.device)
    fit_part, hold_part = split_holdout(samples, config.holdout)
    if not hold_part:
        raise ModelError("fit: too little footage to hold out any frames for calibration")

    # ---- pass 1: every attribute gathers what it learns from the fit part -------------------------
    learners: list[Learner] = [lr for a in REGISTRY.values() if (lr := a.learner()) is not None]
    shared: dict[str, list[np.ndarray]] = defaultdict(list)  # per object: where, what, cut by the edge
    shell = NormalityModel(
        samples[0].camera,
        class_names,
        (rows, cols),
        {},
        {},
        CountGrid.empty(cells, k_all),
        np.zeros((cells, k_all, DIRECTION_BINS)),
        {},
        {},
        np.zeros((COCO_KEYPOINTS, 2)),
        TripletStats.empty(),
        None,
        {},  # type: ignore[arg-type]
    )
    n_objects = 0
    for clip in tqdm(_by_clip(fit_part).values(), desc="fit: statistics", unit="clip"):
        memory = TrackMemory(config.dynamics_history, config.pose_window, config.gait_window)
        for s in clip:
            a = s.attributes
            if a.class_names != names:
                raise ModelError(f"fit: clip {s.clip} uses other class names than the first clip")
            if len(a) and int(a.cell.max()) >= cells:
                raise ModelError(f"fit: cell cell {int(a.cell.max())}, grid {rows}x{cols} has {cells}")
            hist = memory.update(a, s.pts, (s.height, s.width))
            cut = truncated(a.xyxy, (s.height, s.width))  # not learnt, as they are not judged
            frame = FitFrame(a, s.scene_graph, hist, cut)
            for learner in learners:
                learner.add(frame)
            if not len(a):
                continue
            n_objects += len(a)
            shared["cell"].append(a.cell.astype(np.int64))
            shared["cls"].append(shell.class_index(names, a.class_id, a.is_blob))
            shared["blob"].append(a.is_blob)
            shared["cut"].append(cut)
    if n_objects == 0:
        raise ModelError("fit: the normal footage has no objects at all; nothing to learn")
    c = {k: np.concatenate(v) for k, v in shared.items()}
    data = FitData(c["cell"], c["cls"], c["blob"], c["cut"], class_names, (rows, cols), config, seed, device)
    parts = ModelParts()
    for learner in learners:  # in registry order: the banks' coresets, then the dynamics training
        learner.build(data, parts)
    if parts.place is None or parts.direction is None or parts.pose_fill is None:
        raise ModelError(
            "fit: the registered attributes build no place counts, direction counts or pose fill"
        )
    if parts.triplets is None or parts.dynamics is None:
        raise ModelError("fit: the registered attributes build no triplet statistics or dynamics predictor")

    model = NormalityModel(
        camera=samples[0].camera,
        class_names=class_names,
        grid=(rows, cols),
        config=config.model_dump(mode="json"),
        counts={
            "frames": len(fit_part),
            "frames_held_out": len(hold_part),
            "objects": n_objects,
            "clips": len({s.clip for s in samples}),
            **dict(sorted(parts.counts.items())),
        },
        place=parts.place,
        direction=parts.direction,
        quantities=parts.quantities,
        banks=parts.banks,
        pose_fill=parts.pose_fill,
        triplets=parts.triplets,
        dynamics=parts.dynamics,
    )

    # ---- pass 2: calibrate on the held-out part ---------------------------------------------------
    raws: list[np.ndarray] = []
    ids: list[np.ndarray] = []
    starts: list[int] = []  # index in `raws` where each held-out clip starts
    for clip in tqdm(_by_clip(hold_part).values(), desc="fit: calibration", unit="clip"):
        memory = TrackMemory(config.dynamics_history, config.pose_window, config.gait_window)
        starts.append(len(raws))
        for s in clip:
            hist = memory.update(s.attributes, s.pts, (s.height, s.width))
            if len(s.attributes):
                size = (s.height, s.width)
                scores = raw_scores(model, s.attributes, s.scene_graph, hist, config.knn_k, frame_size=size)
                raws.append(scores)
                ids.append(s.attributes.track_id.astype(np.int64))
    raw = np.concatenate(raws) if raws else np.zeros((0, len(ATTRIBUTES)))
    model.calibrators = {a: TailCalibrator.fit(raw[:, j]) for j, a in enumerate(ATTRIBUTES)}
    sustained = _calibrate_sustained(model, raws, ids, starts, config)
    if len(raw) > HOLDOUT_ROWS:
        keep = np.sort(np.random.default_rng(seed).choice(len(raw), HOLDOUT_ROWS, replace=False))
        raw, sustained = raw[keep], sustained[keep]
    model.holdout_raw = raw
    model.holdout_sustained = sustained
    model.counts["objects_held_out"] = len(raws and np.concatenate(raws))
    return model


def _calibrate_sustained(
    model: NormalityModel,
    raws: list[np.ndarray],
    ids: list[np.ndarray],
    starts: list[int],
    config: ScoringConfig,
) -> np.ndarray:
    """Sustained evidence of the held-out tracks, replayed frame by frame as the scorer sees it; fits
    `model.sustained_calibrators` and returns the held-out rows' values (NaN where too young)."""
    rows = sum(len(r) for r in raws)
    if config.sustained_frames == 0:
        return np.full((rows, len(ATTRIBUTES)), np.nan)
    out: list[np.ndarray] = []
    evidence = SustainedEvidence(config.sustained_frames, config.sustained_min_frames)
    clip_starts = set(starts)
    for f, (r, t) in enumerate(zip(raws, ids, strict=True)):
        if f in clip_starts:  # a new clip: no track carries over
            evidence = SustainedEvidence(config.sustained_frames, config.sustained_min_frames)
        out.append(evidence(t, calibrate(model, r, ATTRIBUTES)))
    values = np.concatenate(out) if out else np.zeros((0, len(ATTRIBUTES)))
    # a track's frames are nearly one sample of its sustained evidence: count tracks, not rows
    clip_of = np.searchsorted(np.array(starts), np.arange(len(out)), side="right") - 1
    tracks = {
        (int(clip_of[f]), t)
        for f, (r, ids_f) in enumerate(zip(out, ids, strict=True))
        for t, ok in zip(ids_f.tolist(), np.isfinite(r).any(axis=1).tolist(), strict=True)
        if ok
    }
    model.counts["sustained_tracks"] = len(tracks)
    if len(tracks) < MIN_SUSTAINED_TRACKS:
        log.warning(
            "sustained evidence off: too few held-out tracks",
            extra={"tracks": len(tracks), "needed": MIN_SUSTAINED_TRACKS},
        )
        return np.full((rows, len(ATTRIBUTES)), np.nan)
    model.sustained_window = config.sustained_frames
    model.sustained_min_frames = config.sustained_min_frames
    # ~50 held-out tracks: the few excesses over q99 cannot tell the tail's scale; no steeper than the body's
    model.sustained_calibrators = {
        a: TailCalibrator.fit(values[:, j], BODY_TAIL_FLOOR)
        for j, a in enumerate(ATTRIBUTES)
        if a in SUSTAINED_ATTRIBUTES
    }
    return values
