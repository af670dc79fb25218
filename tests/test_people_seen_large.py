"""Dwell and limb motion on real footage (the perception of Avenue's development clips, taken from
`vigil eval`'s cache): where they must fire and where they must not. Where no cache is at hand
($VIGIL_EVAL_CACHE/cache-av, as `vigil eval --cache` writes it), the real `vigil eval` makes one
first (training clips 12 and 16, test clip 17: about two minutes on two cores)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO
from synthetic import Walker, frame_sample, normal_footage

from pipeline.config import ScoringConfig
from pipeline.evaluation.cache import PerceptionCache
from stages.normality import NormalityModel, fit_normality
from stages.normality.attributes import ATTRIBUTES
from stages.normality.features import TrackMemory, truncated
from stages.normality.judge import calibrate, raw_scores

CACHE = Path(os.environ.get("VIGIL_EVAL_CACHE", REPO / "var" / "eval"))
DANCER = 1  # track id of the person dancing in Avenue test clip 17


@pytest.fixture(scope="module")
def avenue_cache(tmp_path_factory: pytest.TempPathFactory) -> PerceptionCache:
    """Avenue's perception: the cache at hand, else one made by the real `vigil eval --cache`."""
    root = CACHE / "cache-av"
    if not any((root / "avenue" / "test").glob("17-*.npz")):
        from conftest import SHARED

        from pipeline.cli import main

        root = tmp_path_factory.mktemp("cache-av")
        out = root / "out"
        args = ["eval", "--dataset", "avenue", "--data", str(SHARED / "data" / "avenue_dev"), "--clips", "17"]
        assert main([*args, "--cache", str(root), "--out", str(out / "avenue.json"), "--no-plot"]) == 0
    keys = {f.stem.rsplit("-", 1)[1] for f in (root / "avenue" / "test").glob("17-*.npz")}
    assert len(keys) == 1, f"several perception keys in {root}: {sorted(keys)}"
    return PerceptionCache(root, "avenue", keys.pop())


def fit(cache: PerceptionCache, clips: list[str]) -> NormalityModel:
    samples = cache.load_samples({c: c for c in clips}, "cam")
    return fit_normality(samples, ScoringConfig(), seed=0)


def judged(model: NormalityModel, cache: PerceptionCache, split: str, clip: str) -> list[tuple]:
    """(frame index, track id, class name, calibrated score of each attribute) of every object of a clip."""
    config = ScoringConfig()
    memory = TrackMemory.of(config)
    out = []
    for f in cache.load(split, clip).frames:
        a = f.attributes
        if a is None:
            continue
        hist = memory.update(a, f.pts, (f.height, f.width))
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
def avenue(avenue_cache: PerceptionCache) -> NormalityModel:
    return fit(avenue_cache, ["12", "16"])


@pytest.fixture(scope="module")
def dancer(avenue: NormalityModel, avenue_cache: PerceptionCache) -> list[tuple]:
    return [r for r in judged(avenue, avenue_cache, "test", "17") if r[1] == DANCER]


@pytest.fixture(scope="module")
def training_people(avenue_cache: PerceptionCache) -> list[tuple]:
    """Avenue's training people, each clip judged by a model fitted on the other (16 s of footage)."""
    rows = judged(fit(avenue_cache, ["12"]), avenue_cache, "train", "16") + judged(
        fit(avenue_cache, ["16"]), avenue_cache, "train", "12"
    )
    return [r for r in rows if r[2] == "person"]


@pytest.mark.slow
def test_the_dancer_does_not_lead_with_dwell(dancer: list[tuple]) -> None:
    """He stays 17 s where people stand in training clips of 6 and 10 s: not a surprise by itself."""
    dwell = column(dancer, "dwell")
    assert len(dwell) > 50  # the frames his box is not cut by the left edge
    assert np.nanmean(dwell > 2.0) < 0.05


@pytest.mark.slow
@pytest.mark.parametrize(("attribute", "share"), [("limb_motion", 0.05), ("dwell", 0.1)])
def test_training_people_rarely_score_high(
    training_people: list[tuple], attribute: str, share: float
) -> None:
    """People standing, talking and walking in one normal clip, judged by a model of the other."""
    v = column(training_people, attribute)
    assert np.isfinite(v).sum() > 1000
    assert np.nanmean(v > 3.0) < share


@pytest.mark.slow
@pytest.mark.xfail(
    strict=True,
    reason="known gap (issue 16, item 4): the dancer's limb motion reaches only the training people's "
    "99th percentile (his p90 1.43 where theirs is 0.70), and leads over his dwell in a quarter of "
    "his frames",
)
def test_the_dancers_limbs_move_unlike_training_people(dancer: list[tuple], training_people) -> None:
    """The tenth of his frames where he moves most score beyond what nine in ten normal people do, and
    his limb motion says more than his dwell in most of his frames."""
    his = np.nanquantile(column(dancer, "limb_motion"), 0.9)
    normal = np.nanquantile(column(training_people, "limb_motion"), 0.9)
    assert his > 2.0 > normal
    assert np.nanmean(column(dancer, "dwell") >= column(dancer, "limb_motion")) < 0.5


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
