"""CalibratorTable: every column through its own TailCalibrator in one call, with identical numbers."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.errors import ModelError
from stages.normality.calibration import KEEP, CalibratorTable, TailCalibrator


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
