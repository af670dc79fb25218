"""Calibrators: CalibratorTable matches each TailCalibrator; evidence counted in tracks; prior tails."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.errors import ModelError
from stages.normality.calibration import KEEP, CalibratorTable, TailCalibrator, TailPrior


def _calibrators(rng: np.random.Generator) -> list[TailCalibrator | None]:
    """Columns as a model has them: many held-out values (stored as KEEP quantiles), a few, ties
    (counts, as dwell), none (unfitted), and no calibrator at all (no sustained evidence)."""
    return [
        TailCalibrator.fit(rng.gamma(2.0, 1.0, 3 * KEEP)),
        TailCalibrator.fit(rng.lognormal(0.0, 0.7, 500)),
        TailCalibrator.fit(rng.integers(0, 5, 4000).astype(np.float64)),
        TailCalibrator.fit(np.array([0.2, 0.4, 3.0])),
        TailCalibrator.fit(np.zeros(0)),
        None,
        TailCalibrator.fit(-rng.exponential(1.0, 1000)),
    ]


@pytest.mark.parametrize("rows", [0, 1, 7, 40])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_table_gives_exactly_each_calibrators_scores(rows: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    calibrators = _calibrators(rng)
    table = CalibratorTable(calibrators)
    raw = rng.gamma(2.0, 1.0, (rows, len(calibrators))) * rng.choice([0.01, 1.0, 30.0], (rows, 1))
    raw[rng.random(raw.shape) < 0.2] *= -1.0
    raw[rng.random(raw.shape) < 0.2] = np.nan
    raw[rng.random(raw.shape) < 0.05] = np.inf
    if rows:  # values exactly on stored quantiles, where "values < x" and "values <= x" differ
        for j, cal in enumerate(calibrators):
            if cal is not None and cal.fitted:
                raw[0, j] = cal.values[rng.integers(len(cal.values))]
    expected = np.full(raw.shape, np.nan)
    for j, cal in enumerate(calibrators):
        if cal is not None:
            expected[:, j] = cal(raw[:, j])
    got = table(raw)
    assert got.shape == raw.shape
    assert np.array_equal(got, expected, equal_nan=True)
    assert np.isnan(got[:, 5]).all()  # the column without a calibrator
    assert np.isfinite(got[:, 0]).sum() == np.isfinite(raw[:, 0]).sum()


def test_table_rejects_a_raw_matrix_of_another_width() -> None:
    table = CalibratorTable([TailCalibrator.fit(np.arange(10.0))] * 3)
    with pytest.raises(ModelError, match="3 columns"):
        table(np.zeros((2, 4)))


@pytest.mark.parametrize("score", [0.5, 1.5, 2.0, 4.0, 5.0])
@pytest.mark.parametrize("shape", [0.5, 2.0])
def test_inverse_round_trips_in_the_body_and_in_the_tail(score: float, shape: float) -> None:
    """Above q99 the score is the larger of the empirical and the exponential tail's (whose scale has a
    floor): the inverse is the smaller raw value that reaches it. (Between q99 and the largest held-out
    value the empirical score is a staircase of the stored quantiles, which no inverse hits exactly.)"""
    cal = TailCalibrator.fit(np.random.default_rng(3).gamma(shape, 1.0, 5000))
    raw = cal.inverse(score)
    assert float(cal(np.array([raw]))[0]) == pytest.approx(score, abs=0.05)
    assert all(np.diff([cal.inverse(s) for s in np.arange(0.0, 6.0, 0.1)]) >= 0)


# ---- evidence counted in held-out tracks, tails shrunk toward a prior ---------------------------


@pytest.mark.parametrize("tracks", [1, 5, 40])
def test_rows_of_one_track_count_once(tracks: int) -> None:
    rng = np.random.default_rng(tracks)
    raw = rng.gamma(2.0, 1.0, 50 * tracks)
    cal = TailCalibrator.fit(raw, np.repeat(np.arange(tracks), 50))
    assert cal.n == tracks
    # up to the 99th percentile nothing scores beyond what `tracks` samples can tell (+1 smoothing)
    assert float(cal(np.array([cal.q99]))[0]) <= np.log10(tracks + 1) + 1e-9


@pytest.mark.parametrize("prior", list(TailPrior))
@pytest.mark.parametrize("excess_tracks", [0, 2, 200])
def test_tail_scale_shrinks_toward_the_prior(prior: TailPrior, excess_tracks: int) -> None:
    """Few tracks over the 99th percentile: about the prior's scale; many: about their mean excess."""
    body = np.linspace(0.0, 1.0, 10_000)
    excess = np.full(excess_tracks, 1.0 + 0.05)  # each track 0.05 past the body
    raw = np.concatenate([body, excess])
    groups = np.concatenate([np.arange(len(body)) // 100, 1000 + np.arange(excess_tracks)])
    cal = TailCalibrator.fit(raw, groups, prior)
    q99 = cal.q99
    per_track = float(np.mean(raw[raw > q99] - q99)) if (raw > q99).any() else 0.0
    prior_scale = prior.scale(q99 - 0.5)
    lo, hi = sorted((per_track, prior_scale))
    assert lo - 1e-9 <= cal.tail_scale <= hi + 1e-9
    if excess_tracks == 0:
        assert cal.tail_scale == pytest.approx(prior_scale, rel=0.5)


@pytest.mark.parametrize("tracks", [3, 30, 3000])
def test_no_jump_at_the_99th_percentile(tracks: int) -> None:
    rng = np.random.default_rng(0)
    raw = rng.gamma(2.0, 1.0, 30 * tracks)
    cal = TailCalibrator.fit(raw, np.arange(len(raw)) % tracks, TailPrior.SPREAD)
    below, above = cal(np.array([cal.q99 - 1e-6, cal.q99 + 1e-6]))
    assert above - below < 0.05
