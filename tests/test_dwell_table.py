"""dwell's stay table: a product-limit estimate of P(a visit here stays >= d), censored at the horizon."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from stages.normality.attributes.dwell import DURATIONS, StayTable


def table(stays: list[tuple[float, float]], cells: int = 4) -> StayTable:
    """Visits of class 0 to cell 0: (stayed s, followed s) each."""
    t = StayTable(np.zeros((cells, 1, len(DURATIONS), 2)), np.zeros(1), (2, 2))
    stayed, seen = np.array(stays).T
    t.add(np.zeros(len(stays), np.int64), np.zeros(len(stays), np.int64), stayed, seen, 1.0)
    return t


def probability(t: StayTable, d: float) -> float:
    return float(t.probability(np.array([0]), np.array([0]), np.array([d]))[0])


@pytest.mark.parametrize(
    "stays",
    [
        [(1.0, 2.0)] * 30 + [(20.0, 20.0)],  # passers-by and one who stayed long
        [(1.0, 60.0)] * 5 + [(0.5, 1.0)] * 40,  # few followed long: the old estimate rose back to 1
        [(d, d + 5.0) for d in np.linspace(0.3, 30.0, 25)],
    ],
)
def test_the_probability_never_rises_with_the_duration(stays: list[tuple[float, float]]) -> None:
    t = table(stays)
    p = [probability(t, d) for d in np.geomspace(0.1, 600.0, 60)]
    assert all(b <= a + 1e-12 for a, b in itertools.pairwise(p)), np.round(p, 4)


def test_walkers_only_make_a_long_stay_rare() -> None:
    t = table([(1.0, 3.0)] * 40)
    assert probability(t, 0.5) > 0.9
    assert probability(t, 30.0) < 0.05


def test_beyond_the_horizon_it_falls_as_horizon_over_duration() -> None:
    t = table([(10.0, 10.0)] * 50)  # everybody stood the whole 10 s they were followed
    assert probability(t, 10.0) > 0.95
    assert probability(t, 40.0) == pytest.approx(probability(t, 10.0) * 10.0 / 40.0, rel=0.02)
