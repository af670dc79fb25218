"""Dwell and limb motion on real footage (the perception cache of Avenue's development clips and Ped2):
where they must fire and where they must not. Skipped where the evaluation cache is absent."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO
from synthetic import Walker, frame_sample, normal_footage

from pipeline.config import ScoringConfig
from stages.normality import NormalityModel, fit_normality
from stages.normality.attributes import ATTRIBUTES
from stages.normality.features import TrackMemory, truncated
from stages.normality.judge import calibrate, raw_scores

CACHE = Path(os.environ.get("VIGIL_EVAL_CACHE", REPO / "var" / "eval"))
KEY = "6e541760832e"
AVENUE = (CACHE / "cache-av", "avenue")
PED2 = (CACHE / "cache-final", "ped2")
DANCER = 1  # track id of the person dancing in Avenue test clip 17


def cache(where: tuple[Path, str]):
    from pipeline.evaluation.cache import PerceptionCache

    root, dataset = where
    if not (root / dataset).is_dir():
        pytest.skip(f"no perception cache at {root / dataset} (set VIGIL_EVAL_CACHE; `vigil eval` makes it)")
    return PerceptionCache(root, dataset, KEY)


def fit(where: tuple[Path, str], clips: list[str]) -> NormalityModel:
    samples = cache(where).load_samples({c: c for c in clips}, "cam")
    return fit_normality(samples, ScoringConfig(), seed=0)


def judged(model: NormalityModel, where: tuple[Path, str], split: str, clip: str) -> list[tuple]:
    """(frame index, track id, class name, calibrated score of each attribute) of every object of a clip."""
    config = ScoringConfig()
    memory = TrackMemory(config.dynamics_history, config.pose_window, config.gait_window)
    out = []
    for f in cache(where).load(split, clip).frames:
        a = f.attributes
        if a is None:
            continue
        hist = memory.update(a, f.pts)
        if not len(a):
            continue
        raw = raw_scores(model, a, f.scene_graph, hist, config.knn_k, frame_size=(f.height, f.width))
        cal = calibrate(model, raw, ATTRIBUTES)
        cut = truncated(a.xyxy, (f.height, f.width))
        for i in range(len(a)):
            if not a.is_blob[i] and not cut[i]:
                out.append((f.index, int(a.track_id[i]), a.name_of(i), cal[i]))
    return out


def column(rows: list[tuple], name: str) -> np.ndarray:
    return np.array([r[3][ATTRIBUTES.index(name)] for r in rows])


@pytest.fixture(scope="module")
def avenue() -> NormalityModel:
    return fit(AVENUE, ["12", "16"])


@pytest.fixture(scope="module")
def dancer(avenue: NormalityModel) -> list[tuple]:
    return [r for r in judged(avenue, AVENUE, "test", "17") if r[1] == DANCER]


@pytest.fixture(scope="module")
def training_people() -> list[tuple]:
    """Avenue's training people, each clip judged by a model fitted on the other (16 s of footage)."""
    rows = judged(fit(AVENUE, ["12"]), AVENUE, "train", "16") + judged(
        fit(AVENUE, ["16"]), AVENUE, "train", "12"
    )
    return [r for r in rows if r[2] == "person"]


def test_the_dancer_does_not_lead_with_dwell(dancer: list[tuple]) -> None:
    """He stays 17 s where people stand in training clips of 6 and 10 s: not a surprise by itself."""
    dwell = column(dancer, "dwell")
    assert len(dwell) > 50  # the frames his box is not cut by the left edge
    assert np.nanmean(dwell > 2.0) < 0.05
    assert np.nanmean(dwell >= column(dancer, "limb_motion")) < 0.5


@pytest.mark.parametrize(("attribute", "share"), [("limb_motion", 0.05), ("dwell", 0.1)])
def test_training_people_rarely_score_high(
    training_people: list[tuple], attribute: str, share: float
) -> None:
    """People standing, talking and walking in one normal clip, judged by a model of the other."""
    v = column(training_people, attribute)
    assert np.isfinite(v).sum() > 1000
    assert np.nanmean(v > 3.0) < share


def test_the_dancers_limbs_move_unlike_training_people(dancer: list[tuple], training_people) -> None:
    """The tenth of his frames where he moves most score beyond what nine in ten normal people do."""
    his = np.nanquantile(column(dancer, "limb_motion"), 0.9)
    normal = np.nanquantile(column(training_people, "limb_motion"), 0.9)
    assert his > 2.0 > normal


@pytest.mark.parametrize(("dwell", "fires"), [(1.2, False), (30.0, True)])
def test_staying_where_everyone_walks(dwell: float, fires: bool) -> None:
    """On a synthetic walkway nobody stays: a person standing there 30 s is a surprise, a passer-by not."""
    model = fit_normality(normal_footage(clips=6, frames=60), ScoringConfig(), seed=0)
    s = frame_sample([Walker(1, speed=0.0), Walker(2, speed=-1.0)], 0.0, np.random.default_rng(5))
    s.attributes.dwell[0] = dwell
    memory = TrackMemory(4, 8)
    hist = memory.update(s.attributes, 0.0)
    raw = raw_scores(model, s.attributes, s.scene_graph, hist, 3, frame_size=(240, 360))
    score = calibrate(model, raw, ATTRIBUTES)[0, ATTRIBUTES.index("dwell")]
    assert (score > 3.0) == fires, score
