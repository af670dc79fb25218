"""What perception saw in real normal footage (tests/data/real_excerpts.npz, see make_real_excerpts.py),
loaded as ClipRecords, and a normality model fitted on it, for the attribute tests on real footage."""

from __future__ import annotations

import dataclasses
from functools import cache
from pathlib import Path

import numpy as np

from pipeline.config import ScoringConfig
from pipeline.evaluation.cache import CachedFrame, ClipRecord
from pipeline.packets import ObjectAttributes
from stages.normality.features import TrackMemory
from stages.normality.fit import FrameSample, fit_normality
from stages.normality.judge import raw_scores
from stages.normality.model import NormalityModel

EXCERPTS = Path(__file__).parent / "data" / "real_excerpts.npz"


@cache
def record(name: str) -> ClipRecord:
    """One clip of the excerpts: "avenue/12", "avenue/16" (frames 90-140), "ped2/Train001" ..."""
    with np.load(EXCERPTS, allow_pickle=False) as f:
        prefix = f"{name}/"
        arrays = {k[len(prefix) :]: f[k] for k in f.files if k.startswith(prefix)}
    if not arrays:
        raise KeyError(f"{EXCERPTS} has no clip {name}")
    return ClipRecord.from_arrays(arrays)


def names(dataset: str) -> list[str]:
    with np.load(EXCERPTS, allow_pickle=False) as f:
        return sorted(
            {k.rsplit("/", 1)[0] for k in f.files if k.startswith(f"{dataset}/") and k.endswith("/clip")}
        )


def samples(rec: ClipRecord) -> list[FrameSample]:
    return [
        FrameSample(rec.camera, rec.clip, f.pts, f.width, f.height, f.attributes, f.scene_graph)
        for f in rec.frames
        if f.attributes is not None
    ]


@cache
def avenue_model() -> NormalityModel:
    """The model of Avenue training clip 12 alone (145 frames), default scoring config."""
    return fit_normality(samples(record("avenue/12")), ScoringConfig(), seed=0)


def calibrated(model: NormalityModel, frames: list[CachedFrame], attribute: str) -> list[np.ndarray]:
    """Per frame, (N,) the calibrated score of `attribute` of each object, judged in order with a
    fresh track memory (as the scorer judges a clip)."""
    from stages.normality.attributes import ATTRIBUTES

    config = ScoringConfig.model_validate(model.config)
    memory = TrackMemory.of(config)
    j = ATTRIBUTES.index(attribute)
    out = []
    for f in frames:
        a = f.attributes
        assert a is not None
        hist = memory.update(a, f.pts, (f.height, f.width))
        raw = raw_scores(model, a, f.scene_graph, hist, config.knn_k, frame_size=(f.height, f.width))
        out.append(model.calibrators[attribute](raw[:, j]))
    return out


def with_rows(a: ObjectAttributes, rows: dict[str, np.ndarray]) -> ObjectAttributes:
    """`a` with the arrays of `rows` (one or more objects, every field but class_names) appended."""
    fields = {f.name: getattr(a, f.name) for f in dataclasses.fields(a) if f.name != "class_names"}
    joined = {k: np.concatenate([v, rows[k].astype(v.dtype)]) for k, v in fields.items()}
    return ObjectAttributes(class_names=a.class_names, **joined)
