"""The label-free false-alert estimate: whole normal clips held out, scored by the real scorer and events."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import DETECTOR, POSE
from synthetic import FPS, Walker, frame_sample, normal_clip, normal_footage

from pipeline.config import EventsConfig, ScoringConfig, VigilConfig
from pipeline.errors import ModelError
from stages.events import budget_start_score
from stages.normality.alert_budget import AlertCurve
from stages.normality.crossval import cross_validate, folds_of, time_blocks
from stages.normality.learn import estimate_false_alerts


@pytest.mark.parametrize(
    ("clips", "folds", "expected"),
    [
        (["c", "a", "b"], 4, [["a"], ["b"], ["c"]]),  # fewer clips than folds: leave one clip out
        (["a", "b", "c", "d", "e"], 2, [["a", "c", "e"], ["b", "d"]]),
        (["a"], 3, [["a"]]),
    ],
)
def test_folds_are_whole_clips(clips: list[str], folds: int, expected: list[list[str]]) -> None:
    assert folds_of(clips, folds) == expected


@pytest.mark.parametrize(
    ("pts", "blocks", "expected"),
    [
        ([0, 1, 2, 3, 4, 5, 6], 3, ["w@0-2s"] * 2 + ["w@2-4s"] * 2 + ["w@4-6s"] * 3),
        ([0, 1, 2, 3], 1, ["w@0-3s"] * 4),
        ([0, 0.5, 1, 5, 5.5, 6], 3, ["w@0-2s"] * 3 + ["w@4-6s"] * 3),  # a gap: no empty stretch
        ([0, 0.25, 0.5, 0.75, 1], 3, ["w@0-0.3s"] * 2 + ["w@0.3-0.7s"] + ["w@0.7-1s"] * 2),  # to 0.1 s
        ([7, 7], 3, ["w", "w"]),  # no duration: nothing to cut
    ],
)
def test_one_clip_is_cut_into_consecutive_stretches(
    pts: list[float], blocks: int, expected: list[str]
) -> None:
    rng = np.random.default_rng(0)
    samples = [frame_sample([Walker(1)], t, rng, clip="w") for t in pts]
    cut = time_blocks(samples, blocks)
    assert [s.clip for s in cut] == expected
    assert [s.pts for s in cut] == pts
    assert all(a.attributes is b.attributes for a, b in zip(cut, samples, strict=True))


def test_only_one_clip_is_cut() -> None:
    with pytest.raises(ValueError, match="one continuous clip"):
        time_blocks(normal_footage(clips=2, frames=5), 3)


def test_one_continuous_clip_gets_a_false_alert_estimate() -> None:
    """A warm-up (or `vigil fit` on one file): its stretches are held out in turn, as clips would be."""
    clip = normal_clip(5, frames=180, clip="warmup")
    estimate = estimate_false_alerts(VigilConfig(), clip, seed=0)
    assert estimate is not None
    curve = estimate.curve(VigilConfig().events)
    assert curve.clips == 3 and curve.folds == 3 and curve.frames == 180
    assert curve.seconds == pytest.approx(18.0)
    assert estimate_false_alerts(VigilConfig(scoring=ScoringConfig(crossval_folds=0)), clip, seed=0) is None


def racing_clip(frames: int = 60) -> list:
    """Normal walkers and one 'person' crossing at five times their speed all along."""
    rng = np.random.default_rng(99)
    people = [Walker(900, x=0.1, speed=5.0), Walker(901, x=0.5), Walker(902, x=0.7, speed=-1.0)]
    out = []
    for f in range(frames):
        for w in people:
            w.x = float(np.clip(w.x + w.speed * w.height / 1.5 / FPS * 0.3, 0.02, 0.98))
        out.append(frame_sample(people, f / FPS, rng, clip="zz_racer"))
    return out


def test_every_clip_is_held_out_once_and_an_odd_one_alerts() -> None:
    footage = normal_footage(clips=12, frames=60)
    estimate = cross_validate([*footage, *racing_clip()], ScoringConfig(), seed=0, folds=4)
    events = EventsConfig()
    assert estimate.folds == 4
    assert estimate.frames == 13 * 60
    assert estimate.seconds == pytest.approx(13 * 60 / FPS, rel=0.02)
    assert sorted(c.clip for c in estimate.clips) == sorted({s.clip for s in footage} | {"zz_racer"})
    assert "zz_racer" in estimate.clips_with_alerts(events)  # held out, its speed is new to the model
    quantiles = estimate.quantiles()
    assert quantiles["p50"] < events.start_score <= quantiles["max"]
    assert 0 < estimate.share_above(events.start_score) < 0.5
    assert estimate.alerts_per_hour(events) == pytest.approx(
        estimate.alerts(events) / (estimate.seconds / 3600)
    )


def test_a_budget_raises_the_threshold_until_it_holds() -> None:
    footage = normal_footage(clips=6, frames=60)
    estimate = cross_validate([*footage, *racing_clip()], ScoringConfig(), seed=0, folds=3)
    events = EventsConfig()
    curve = AlertCurve.from_dict(estimate.curve(events).to_dict())  # as a model keeps it
    assert curve.alerts_per_hour(events.start_score) == pytest.approx(estimate.alerts_per_hour(events))
    assert list(curve.alerts) == sorted(curve.alerts, reverse=True)
    assert curve.threshold_for(1e9, floor=events.start_score) == events.start_score  # never lowers the bar
    strict = curve.threshold_for(0.0, floor=events.start_score)
    assert strict > events.start_score
    at_strict = events.model_copy(update={"start_score": strict, "end_score": strict - 1.0})
    assert estimate.alerts(at_strict) == 0
    assert "false alerts/hour at score 3" in curve.summary(events.start_score)


def test_one_clip_cannot_be_cross_validated() -> None:
    with pytest.raises(ModelError, match="at least 2 clips"):
        cross_validate(normal_footage(clips=1), ScoringConfig(), seed=0)


@pytest.mark.slow
def test_vigil_fit_measures_false_alerts_and_a_budget_sets_the_start_score(
    ped2: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Real perception over three Ped2 training clips, cross-validated by `vigil fit`, kept in the model."""
    from pipeline.cli import main
    from pipeline.configfile import load_config
    from stages.normality import NormalityModel

    config = tmp_path / "config.yaml"
    config.write_text(
        f"detector:\n  model: {DETECTOR}\npose:\n  model: {POSE}\nappearance:\n  model: {POSE}\n"
        f"scoring:\n  models_dir: {tmp_path / 'models'}\n  crossval_folds: 3\n"
        "events:\n  alerts_per_hour: 0\n"
    )
    clips = [str(ped2 / "train" / f"Train00{i}.mp4") for i in (1, 2, 3)]
    assert main(["fit", *clips, "--camera", "walkway", "-c", str(config), "--max-frames", "40"]) == 0
    model = NormalityModel.load(tmp_path / "models" / "walkway.npz")
    curve = model.false_alerts
    assert curve is not None and curve.clips == 3 and curve.folds == 3 and curve.frames == 120
    assert curve.seconds == pytest.approx(12.0, rel=0.05)  # 40 frames at 10 fps, three times
    assert "false alerts/hour at score 3" in capsys.readouterr().err
    loaded = load_config(config)
    start = budget_start_score(loaded.events, "walkway", curve)
    assert start >= loaded.events.start_score
    assert start == curve.threshold_for(0.0, floor=loaded.events.start_score)
    assert curve.alerts_per_hour(start) == 0 or start == curve.start_scores[-1]


@pytest.mark.parametrize(("start", "expected"), [(1.0, 3600.0), (1.1, 0.0), (5.0, 0.0)])
def test_past_the_curves_end_no_alert(start: float, expected: float) -> None:
    """Above every held-out object's score the curve ends: no false alert there, not 'unknown'."""
    curve = AlertCurve(
        seconds=1.0,
        frames=10,
        clips=2,
        folds=2,
        quantiles={},
        start_scores=(1.0,),
        alerts=(1,),
        share_above=(0.1,),
    )
    assert curve.alerts_per_hour(start) == pytest.approx(expected)
