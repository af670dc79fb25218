"""Fit a camera's normality model from normal footage, and calibrate it on held-out footage.

Held out for calibration: every 5th clip when there are at least five (the parts are built from the
rest). With fewer clips the footage is cross-fitted, and the final parts are built from all of it:
two to four clips are each scored by parts built from the others; a single clip is cut into
1 / `ScoringConfig.holdout` consecutive time blocks, each scored by parts built from the others.
Raw scores of the held-out objects give each attribute's calibrator and the calibrator of the
object combination, with evidence counted in held-out tracks:
a held-out track the parts also learnt from (it crosses a block's edge) tells how the model scores
what it has seen, so all such tracks of a block count as one sample (calibration.TailCalibrator).
The memory banks (appearance, motion, pose: nearest neighbours) of a time block's parts leave such
tracks out: a k-NN distance to the same person's other frames says nothing of how a new person
scores, and every later clip brings new people (Avenue: parts of training clip 12 scored clip 16's
ordinary people >= 3 in two frames of three, by appearance, when calibrated on 12's own people).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import torch
from tqdm import tqdm

from pipeline.config import ScoringConfig
from pipeline.errors import ModelError
from pipeline.packets import COCO_KEYPOINTS, ObjectAttributes, SceneGraph
from stages.normality.attributes import ATTRIBUTES, REGISTRY
from stages.normality.attributes.base import FitData, FitFrame, Learner, ModelParts
from stages.normality.calibration import TailCalibrator, TailPrior
from stages.normality.classes import BLOB, UNKNOWN
from stages.normality.features import UNTRACKED, TrackMemory, truncated
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


@dataclass(frozen=True)
class Fold:
    """Frames the parts are built from and frames scored by them for calibration; `shared_tracks`:
    the (clip, track id) both show (only time blocks of one clip share any): familiar to the parts
    when calibrating, and left out of their memory banks."""

    fit: list[FrameSample]
    held_out: list[FrameSample]
    shared_tracks: frozenset[tuple[str, int]]

    @classmethod
    def of(cls, fit: list[FrameSample], held_out: list[FrameSample]) -> Fold:
        return cls(fit, held_out, _tracks(fit) & _tracks(held_out))


def calibration_folds(samples: list[FrameSample], share: float) -> list[Fold]:
    """Every 5th clip held out when there are five or more (one fold). Two to four clips: each clip
    held out in turn (leave one clip out). One clip: round(1 / share) consecutive time blocks of equal
    frame counts, each held out in turn."""
    by_clip = _by_clip(samples)
    clips = sorted(by_clip)
    if len(clips) >= 5:
        held = {c for i, c in enumerate(clips) if i % 5 == 4}
        return [Fold.of([s for s in samples if s.clip not in held], [s for s in samples if s.clip in held])]
    if len(clips) > 1:
        return [Fold.of([s for c in clips if c != h for s in by_clip[c]], list(by_clip[h])) for h in clips]
    clip = by_clip[clips[0]]
    k = max(2, round(1.0 / share))
    edges = np.linspace(0, len(clip), k + 1).round().astype(int)
    folds = []
    for i in range(k):
        held_out = clip[edges[i] : edges[i + 1]]
        fit = clip[: edges[i]] + clip[edges[i + 1] :]
        if held_out and fit:
            folds.append(Fold.of(fit, held_out))
    return folds


def _tracks(samples: list[FrameSample]) -> frozenset[tuple[str, int]]:
    """The (clip, track id) of the tracked detections in `samples`."""
    return frozenset(
        (s.clip, int(t))
        for s in samples
        for t, blob in zip(s.attributes.track_id.tolist(), s.attributes.is_blob.tolist(), strict=True)
        if not blob and t != UNTRACKED
    )


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
    names = samples[0].attributes.class_names
    device = resolve_device(config.device)
    folds = calibration_folds(samples, config.holdout)
    if not folds or not any(f.held_out for f in folds):
        raise ModelError("fit: too little footage to hold out any frames for calibration")
    cross_fitted = len(folds) > 1
    final_fit = samples if cross_fitted else folds[0].fit

    raws: list[np.ndarray] = []
    ids: list[np.ndarray] = []
    groups: list[np.ndarray] = []
    starts: list[int] = []  # index in `raws` where each held-out stretch starts (no track carries over)
    group_keys: dict[tuple[int, str, int], int] = {}
    model = _build(samples[0].camera, final_fit, config, seed, (rows, cols), names, device)
    for f, fold in enumerate(folds):
        fold_model = model
        if cross_fitted:
            fold_model = _build(
                samples[0].camera, fold.fit, config, seed, (rows, cols), names, device, fold.shared_tracks
            )
        for clip in tqdm(_by_clip(fold.held_out).values(), desc="fit: calibration", unit="clip"):
            memory = TrackMemory.of(config)
            starts.append(len(raws))
            for s in clip:
                hist = memory.update(s.attributes, s.pts, (s.height, s.width))
                if not len(s.attributes):
                    continue
                size = (s.height, s.width)
                a = s.attributes
                raws.append(raw_scores(fold_model, a, s.scene_graph, hist, config.knn_k, frame_size=size))
                ids.append(a.track_id.astype(np.int64))
                groups.append(
                    _sample_groups(group_keys, f, s.clip, a.track_id, a.is_blob, fold.shared_tracks)
                )
    raw = np.concatenate(raws) if raws else np.zeros((0, len(ATTRIBUTES)))
    group = np.concatenate(groups) if groups else np.zeros(0, np.int64)
    model.calibrators = {
        a: TailCalibrator.fit(raw[:, j], group, REGISTRY[a].tail_prior) for j, a in enumerate(ATTRIBUTES)
    }
    sustained = _calibrate_sustained(model, raws, ids, groups, starts, config)
    model.counts["frames"] = len(final_fit)
    model.counts["frames_held_out"] = sum(len(f.held_out) for f in folds)
    model.counts["calibration_folds"] = len(folds)
    model.counts["objects_held_out"] = len(raw)
    model.counts["held_out_samples"] = len(np.unique(group))
    if len(raw) > HOLDOUT_ROWS:
        keep = np.sort(np.random.default_rng(seed).choice(len(raw), HOLDOUT_ROWS, replace=False))
        raw, sustained, group = raw[keep], sustained[keep], group[keep]
    model.holdout_raw = raw
    model.holdout_sustained = sustained
    model.holdout_groups = group
    return model


def _sample_groups(
    keys: dict[tuple[int, str, int], int],
    fold: int,
    clip: str,
    track_id: np.ndarray,
    is_blob: np.ndarray,
    familiar: frozenset[tuple[str, int]],
) -> np.ndarray:
    """Each held-out row's independent sample: its track in this fold; untracked rows and moving
    regions one per (fold, clip); tracks the fold's parts learnt from all one per (fold, clip)."""
    out = np.empty(len(track_id), np.int64)
    for i, (t, blob) in enumerate(zip(track_id.tolist(), is_blob.tolist(), strict=True)):
        if blob or t == UNTRACKED:
            key = (fold, clip, UNTRACKED)
        elif (clip, t) in familiar:
            key = (fold, clip, UNTRACKED - 1)
        else:
            key = (fold, clip, int(t))
        out[i] = keys.setdefault(key, len(keys))
    return out


def _build(
    camera: str,
    samples: list[FrameSample],
    config: ScoringConfig,
    seed: int,
    grid: tuple[int, int],
    names: tuple[str, ...],
    device: torch.device,
    unbanked: frozenset[tuple[str, int]] = frozenset(),
) -> NormalityModel:
    """An uncalibrated model: every registered attribute's parts, learnt from `samples`; the tracks
    `unbanked` (clip, track id) stay out of the memory banks."""
    rows, cols = grid
    cells = rows * cols
    class_names = (*names, BLOB, UNKNOWN)
    k_all = len(class_names)
    learners: list[Learner] = [lr for a in REGISTRY.values() if (lr := a.learner()) is not None]
    shared: dict[str, list[np.ndarray]] = defaultdict(list)  # per object: where, what, cut by the edge
    shell = NormalityModel(
        camera,
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
    tracks: dict[tuple[str, int], int] = {}  # (clip, track id) -> its number in this fit
    for clip in tqdm(_by_clip(samples).values(), desc="fit: statistics", unit="clip"):
        memory = TrackMemory.of(config)
        for s in clip:
            a = s.attributes
            if a.class_names != names:
                raise ModelError(f"fit: clip {s.clip} uses other class names than the first clip")
            if len(a) and int(a.cell.max()) >= cells:
                raise ModelError(f"fit: cell cell {int(a.cell.max())}, grid {rows}x{cols} has {cells}")
            hist = memory.update(a, s.pts, (s.height, s.width))
            cut = truncated(a.xyxy, (s.height, s.width))  # not learnt, as they are not judged
            frame = FitFrame(a, s.scene_graph, hist, cut, s.clip)
            for learner in learners:
                learner.add(frame)
            if not len(a):
                continue
            n_objects += len(a)
            shared["cell"].append(a.cell.astype(np.int64))
            shared["cls"].append(shell.class_index(names, a.class_id, a.is_blob))
            shared["blob"].append(a.is_blob)
            shared["cut"].append(cut)
            shared["track"].append(_track_numbers(tracks, s.clip, a.track_id, a.is_blob))
            if unbanked:
                in_both = [(s.clip, int(t)) in unbanked for t in a.track_id.tolist()]
                shared["unbanked"].append(np.array(in_both, bool) & ~a.is_blob)
    if n_objects == 0:
        raise ModelError("fit: the normal footage has no objects at all; nothing to learn")
    c = {k: np.concatenate(v) for k, v in shared.items()}
    data = FitData(
        c["cell"],
        c["cls"],
        c["blob"],
        c["cut"],
        c["track"],
        class_names,
        (rows, cols),
        config,
        seed,
        device,
        c.get("unbanked"),
    )
    parts = ModelParts()
    for learner in learners:  # in registry order: the banks' coresets, then the dynamics training
        learner.build(data, parts)
    if parts.place is None or parts.direction is None or parts.pose_fill is None:
        raise ModelError(
            "fit: the registered attributes build no place counts, direction counts or pose fill"
        )
    if parts.triplets is None or parts.dynamics is None:
        raise ModelError("fit: the registered attributes build no triplet statistics or dynamics predictor")

    return NormalityModel(
        camera=camera,
        class_names=class_names,
        grid=(rows, cols),
        config=config.model_dump(mode="json"),
        counts={
            "frames": len(samples),
            "objects": n_objects,
            "clips": len({s.clip for s in samples}),
            **dict(sorted(parts.counts.items())),
        },
        place=parts.place,
        direction=parts.direction,
        quantities=parts.quantities,
        banks=parts.banks,
        tables=parts.tables,
        pose_fill=parts.pose_fill,
        triplets=parts.triplets,
        dynamics=parts.dynamics,
    )


def _track_numbers(
    numbers: dict[tuple[str, int], int], clip: str, track_id: np.ndarray, is_blob: np.ndarray
) -> np.ndarray:
    """Each object's track numbered over the fit (`numbers` grows); untracked objects and moving
    regions get a number of their own each."""
    out = np.empty(len(track_id), np.int64)
    for i, (t, blob) in enumerate(zip(track_id.tolist(), is_blob.tolist(), strict=True)):
        key = (clip, int(t)) if not blob and t != UNTRACKED else ("", -len(numbers) - 1)
        out[i] = numbers.setdefault(key, len(numbers))
    return out


def _calibrate_sustained(
    model: NormalityModel,
    raws: list[np.ndarray],
    ids: list[np.ndarray],
    groups: list[np.ndarray],
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
    group = np.concatenate(groups) if groups else np.zeros(0, np.int64)
    # a track's frames are nearly one sample of its sustained evidence: count tracks, not rows
    tracks = np.unique(group[np.isfinite(values).any(axis=1)])
    model.counts["sustained_tracks"] = len(tracks)
    if len(tracks) < MIN_SUSTAINED_TRACKS:
        log.warning(
            "sustained evidence off: too few held-out tracks",
            extra={"tracks": len(tracks), "needed": MIN_SUSTAINED_TRACKS},
        )
        return np.full((rows, len(ATTRIBUTES)), np.nan)
    model.sustained_window = config.sustained_frames
    model.sustained_min_frames = config.sustained_min_frames
    # a mean over a track's frames: its tail is judged as a spread (no steeper than the body's)
    model.sustained_calibrators = {
        a: TailCalibrator.fit(values[:, j], group, TailPrior.SPREAD)
        for j, a in enumerate(ATTRIBUTES)
        if a in SUSTAINED_ATTRIBUTES
    }
    return values
