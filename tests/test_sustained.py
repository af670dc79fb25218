"""Sustained evidence: the running median per track and attribute, its calibration in the fit, and
what it adds to the score and the explanation of a moderately unusual object."""

from __future__ import annotations

import numpy as np
import pytest
from synthetic import Walker, frame_sample, normal_clip, normal_footage

from pipeline.config import ScoringConfig
from pipeline.packets import Scores
from stages.explain import Explainer
from stages.normality import NormalityModel, fit_normality
from stages.normality.fit import MIN_SUSTAINED_TRACKS
from stages.normality.grids import Q50
from stages.normality.model import ATTRIBUTES
from stages.normality.sustained import SUSTAINED_ATTRIBUTES, SustainedEvidence
from stages.score import Scorer

# ---- the running median --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("window", "min_frames", "series", "expected"),
    [
        (3, 1, [1.0, 2.0, 3.0, 4.0], [1.0, 1.5, 2.0, 3.0]),  # the last 3 once full
        (3, 2, [1.0, 2.0, 3.0], [np.nan, 1.5, 2.0]),  # too young before min_frames
        (4, 2, [1.0, np.nan, np.nan, 3.0], [np.nan, np.nan, np.nan, 2.0]),  # NaN frames are not counted
        (2, 2, [5.0, np.nan, 1.0, 3.0], [np.nan, np.nan, np.nan, 2.0]),  # a NaN leaves the window too
        (5, 1, [0.5, 0.5, 9.0, 8.0, 0.5], [0.5, 0.5, 0.5, 4.25, 0.5]),  # two extreme frames of five: not most
        (4, 2, [3.0, 3.0, 0.0, 3.0], [np.nan, 3.0, 3.0, 3.0]),  # one normal frame among unusual ones
    ],
)
def test_running_median(window: int, min_frames: int, series: list[float], expected: list[float]) -> None:
    ev = SustainedEvidence(window, min_frames)
    got = [float(ev(np.array([7]), np.array([[v]]))[0, 0]) for v in series]
    np.testing.assert_allclose(got, expected)


def test_tracks_are_separate_and_untracked_objects_have_none() -> None:
    ev = SustainedEvidence(2, 1)
    ev(np.array([1, 2]), np.array([[1.0], [10.0]]))
    out = ev(np.array([2, -1, 1]), np.array([[20.0], [99.0], [3.0]]))
    np.testing.assert_allclose(out[:, 0], [15.0, np.nan, 2.0])


def test_unseen_tracks_expire() -> None:
    ev = SustainedEvidence(5, 1, expiry_frames=10)
    ev(np.array([1]), np.array([[1.0]]))
    for _ in range(25):
        ev(np.array([2]), np.array([[1.0]]))
    assert set(ev.tracks) == {2}


@pytest.mark.parametrize(("window", "min_frames"), [(0, 1), (5, 0), (5, 6)])
def test_bad_window_is_refused(window: int, min_frames: int) -> None:
    with pytest.raises(ValueError, match="sustained evidence"):
        SustainedEvidence(window, min_frames)


def test_config_refuses_min_frames_beyond_window() -> None:
    with pytest.raises(ValueError, match="sustained_min_frames"):
        ScoringConfig(sustained_frames=5, sustained_min_frames=8)


# ---- fitted on a walkway with many held-out tracks -------------------------------------------------


@pytest.fixture(scope="module")
def footage():
    return normal_footage(clips=25, frames=60, walkers=8)  # 5 held-out clips x 8 walkers = 40 tracks


@pytest.fixture(scope="module")
def model(footage) -> NormalityModel:
    return fit_normality(footage, ScoringConfig(), seed=0)


@pytest.fixture(scope="module")
def model_without(footage) -> NormalityModel:
    return fit_normality(footage, ScoringConfig(sustained_frames=0), seed=0)


def glider_scores(model: NormalityModel, leg_swing: float, stride: float, frames: int = 40) -> list[Scores]:
    """Two walkers and a third person moving at walking speed with weak leg motion and box swing."""
    rng = np.random.default_rng(5)
    scorer = Scorer(model, ScoringConfig())
    out = []
    for i in range(frames):
        people = [
            Walker(1, x=0.2),
            Walker(2, x=0.7, speed=-1.0),
            Walker(3, x=0.4, leg_swing=leg_swing, stride=stride),
        ]
        s = frame_sample(people, i / 10, rng, clip="glide")
        out.append(scorer.score(s.attributes, s.scene_graph, s.pts))
    return out


def test_fit_calibrates_the_attributes_it_applies_to(model: NormalityModel) -> None:
    assert model.sustained_window == 20 and model.sustained_min_frames == 10
    assert model.counts["sustained_tracks"] >= MIN_SUSTAINED_TRACKS
    assert set(model.sustained_calibrators) == {a for a in SUSTAINED_ATTRIBUTES}
    assert "class_in_place" not in model.sustained_calibrators
    assert model.holdout_sustained.shape == model.holdout_raw.shape
    assert np.isfinite(model.holdout_sustained).any()


def test_few_held_out_tracks_leave_it_off() -> None:
    m = fit_normality(normal_footage(clips=10, frames=50), ScoringConfig(), seed=0)  # 2 x 3 tracks
    assert m.sustained_window == 0 and not m.sustained_calibrators
    assert m.counts["sustained_tracks"] < MIN_SUSTAINED_TRACKS
    scores = glider_scores(m, 0.03, 0.06, frames=3)
    assert scores[-1].sustained_scores is None


@pytest.mark.parametrize(("leg_swing", "stride", "margin"), [(0.03, 0.06, 0.25), (0.05, 0.08, 0.0)])
def test_a_moderate_lasting_deviation_scores_higher(model, model_without, leg_swing, stride, margin) -> None:
    """Half the normal leg motion and stride: rarely extreme in one frame, unusual frame after frame.
    Sustained gait evidence is rarer than a frame's, and the object scores higher with it: by 0.25 on
    the -log10 p scale at a third of the normal motion; only higher at two thirds (the 40 held-out
    normal tracks are 40 samples of sustained evidence, so at most ~1.6 within them)."""
    gait = ATTRIBUTES.index("gait")
    scores = glider_scores(model, leg_swing, stride)[20:]
    with_ = np.median([s.object_score[2] for s in scores])
    without = np.median([s.object_score[2] for s in glider_scores(model_without, leg_swing, stride)[20:]])
    assert with_ > without + margin
    sustained = [s.sustained_scores[2, gait] for s in scores if s.sustained_scores is not None]
    assert np.nanmedian(sustained) > np.nanmedian([s.attribute_scores[2, gait] for s in scores])


def test_normal_people_stay_calibrated(model: NormalityModel) -> None:
    obj = []
    for k in range(4):  # new clips, walkers never seen in training
        scorer = Scorer(model, ScoringConfig())
        clip = normal_clip(31 + k, 60)
        obj += [scorer.score(s.attributes, s.scene_graph, s.pts).object_score for s in clip]
    obj = np.concatenate(obj)
    assert np.median(obj) < 1.0 and (obj > 3).mean() < 0.02


def test_saved_model_keeps_it(model: NormalityModel, tmp_path) -> None:
    loaded = NormalityModel.load(model.save(tmp_path / "m.npz"))
    assert loaded.sustained_window == model.sustained_window
    assert set(loaded.sustained_calibrators) == set(model.sustained_calibrators)
    a, b = glider_scores(model, 0.03, 0.06)[-1], glider_scores(loaded, 0.03, 0.06)[-1]
    np.testing.assert_allclose(a.object_score, b.object_score, rtol=1e-6)
    np.testing.assert_allclose(a.sustained_scores, b.sustained_scores, rtol=1e-6)


def test_explanation_says_the_deviation_lasts(model: NormalityModel) -> None:
    scores = glider_scores(model, 0.03, 0.06)
    s = scores[-1]
    rng = np.random.default_rng(5)
    people = [Walker(1, x=0.2), Walker(2, x=0.7, speed=-1.0), Walker(3, x=0.4, leg_swing=0.03, stride=0.06)]
    attrs = frame_sample(people, 3.9, rng, clip="glide").attributes
    top = Explainer(model).explain(attrs, s, None).objects[2].reasons[0]
    j = s.attribute_names.index(top.attribute)
    assert s.sustained_scores[2, j] > s.attribute_scores[2, j]  # the sustained score ranked it first
    assert top.score == pytest.approx(float(s.sustained_scores[2, j]))
    assert "so for most of its last 20 analysed frames" in top.sentence and "normal tracks" in top.sentence
    assert top.observed.startswith("median score")


@pytest.mark.parametrize(("fast_frames", "fast", "slow"), [(10, 3.0, 0.5), (30, 1.5, 1.5)])
def test_sustained_speed_reason_gives_the_tracks_mean_speed(
    model: NormalityModel, fast_frames: int, fast: float, slow: float
) -> None:
    """A sustained speed reason speaks of the track's mean speed over the frames the evidence covers,
    not of this frame's speed (which may be normal by now), and of the normal speed along the path it
    took in those frames, not of the current place only."""
    explainer, rng = Explainer(model), np.random.default_rng(3)
    names = ATTRIBUTES
    j = names.index("speed")
    speeds: list[float] = []
    normal: list[float] = []
    for t in range(30):
        attrs = frame_sample([Walker(1, speed=fast if t < fast_frames else slow)], t / 10, rng).attributes
        speeds.append(float(attrs.speed[0]))
        k = model.class_index(attrs.class_names, attrs.class_id, attrs.is_blob)
        normal.append(float(model.quantities["speed"].lookup(attrs.cell.astype(np.int64), k)[0][0, Q50]))
        now, held = np.zeros((1, len(names))), np.full((1, len(names)), np.nan)
        now[0, j], held[0, j] = 0.5, 4.0  # the sustained evidence is the stronger score
        s = Scores(attrs.track_id.astype(np.int64), names, now, np.array([4.0]), 4.0, 4.0, held)
        reason = explainer.explain(attrs, s, None).objects[0].reasons[0]
    mean = float(np.mean(speeds[-model.sustained_window :]))
    assert reason.attribute == "speed" and reason.score == pytest.approx(4.0)
    assert f"moving {mean:.1f} body-heights/s on average (now {speeds[-1]:.1f})" in reason.sentence
    path_normal = float(np.mean(normal[-model.sustained_window :]))
    assert f"normal for person where it went {path_normal:.1f} (99th pct" in reason.sentence
    assert "so for most of its last 20 analysed frames" in reason.sentence
