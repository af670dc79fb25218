"""The one way a camera's model is learnt from normal footage: fit, false-alert estimate, provenance.

`vigil fit` (over files) and a camera's online warm-up (over its first `scoring.warmup_s` seconds)
both call `learn_model`, so a warmed-up camera gets the same priors, the same cross-validated
false-alert estimate (what `events.alerts_per_hour` turns into its start score) and a header saying
how it was learnt.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Sequence

import numpy as np

from pipeline.config import VigilConfig, perception_settings
from pipeline.errors import ModelError
from pipeline.logs import fields
from stages.normality.crossval import MIN_CLIPS, FalseAlertEstimate, cross_validate, time_blocks
from stages.normality.fit import FrameSample, fit_normality
from stages.normality.model import NormalityModel
from stages.normality.provenance import How, Provenance

log = logging.getLogger("vigil.fit")


def learn_model(config: VigilConfig, samples: Sequence[FrameSample], seed: int, how: How) -> NormalityModel:
    """Fit the camera's model, measure its false alerts, and record its perception settings and
    provenance (the camera's first model version)."""
    model = fit_normality(samples, config.scoring, seed, grid=config.attributes.grid)
    model.perception = perception_settings(config)
    estimate = estimate_false_alerts(config, samples, seed)
    model.false_alerts = None if estimate is None else estimate.curve(config.events)
    clips = len({s.clip for s in samples})
    model.provenance = Provenance.now(how, footage_seconds(samples), len(samples), clips)
    return model


def estimate_false_alerts(
    config: VigilConfig, samples: Sequence[FrameSample], seed: int
) -> FalseAlertEstimate | None:
    """Cross-validation over the normal clips, on the perception already computed. One clip is cut
    into `scoring.crossval_folds` stretches of time first. None (with a warning saying why) when
    cross-validation is off or the footage cannot be split into folds that each fit a model. The
    held-out clips' scores are kept: the model keeps the alert curve (`.curve(config.events)`),
    `vigil eval` also counts the held-out frames as normal frames."""
    folds = config.scoring.crossval_folds
    clips = len({s.clip for s in samples})
    if folds > 0 and clips < MIN_CLIPS:
        samples = time_blocks(samples, folds)
        clips = len({s.clip for s in samples})
    if folds == 0 or clips < MIN_CLIPS:
        log.warning(
            "no false-alert estimate: it needs scoring.crossval_folds > 0 and footage that lasts",
            extra=fields(clips=clips, folds=folds),
        )
        return None
    try:
        estimate = cross_validate(samples, config.scoring, seed, grid=config.attributes.grid, folds=folds)
    except ModelError as exc:  # a fold too small to fit (no objects, nothing to hold out): the model stands
        log.warning(f"no false-alert estimate: {exc}", extra=fields(clips=clips, folds=folds))
        return None
    return estimate


def footage_seconds(samples: Sequence[FrameSample]) -> float:
    """Seconds of footage: per clip, first to last frame plus one frame period (the last frame's)."""
    by_clip: dict[str, list[float]] = defaultdict(list)
    for s in samples:
        by_clip[s.clip].append(s.pts)
    total = 0.0
    for pts in by_clip.values():
        if len(pts) > 1:
            pts.sort()
            total += pts[-1] - pts[0] + float(np.median(np.diff(pts)))
    return total
