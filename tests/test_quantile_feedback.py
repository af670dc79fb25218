"""Operator feedback on quantile tables (QuantileGrid.absorb): the resolved row of a (cell, class),
worth its observations, mixed with the new values and kept as that cell's own row."""

from __future__ import annotations

import numpy as np
import pytest

from stages.normality.grids import Q50, QuantileGrid, mixed_quantiles

MIN_SAMPLES = 10
CELLS, CLASSES = 4, 3


def grid(shrink_tracks: float = 0.0) -> QuantileGrid:
    """Class 0: 200 samples around 1 in cell 0, 3 in cell 1, none in cells 2-3; class 1: 40 around 5 in
    cell 2; class 2: 4 samples (below min_samples: resolved from all classes)."""
    rng = np.random.default_rng(0)
    cell = np.concatenate([np.zeros(200), np.ones(3), np.full(40, 2), np.full(4, 3)]).astype(np.int64)
    cls = np.concatenate([np.zeros(203), np.ones(40), np.full(4, 2)]).astype(np.int64)
    x = np.concatenate([rng.normal(1, 0.1, 203), rng.normal(5, 0.5, 40), rng.normal(3, 0.2, 4)])
    track = np.arange(len(x)) // 5  # five samples a track
    return QuantileGrid.fit(CELLS, CLASSES, cell, cls, x, MIN_SAMPLES, track, shrink_tracks)


def absorbed(g: QuantileGrid, c: int, k: int, x: list[float], weight: float) -> QuantileGrid:
    g.absorb(np.full(len(x), c), np.full(len(x), k), np.array(x), weight)
    return g


@pytest.mark.parametrize("shrink_tracks", [0.0, 3.0])
def test_a_cell_with_its_own_samples_moves_toward_the_new_values(shrink_tracks: float) -> None:
    g = grid(shrink_tracks)
    one = (np.array([0]), np.array([0]))
    before_q, before_z = g.lookup(*one)[0][0], g.robust_z(*one, np.array([2.0]), "both", 0.05)[0]
    absorbed(g, 0, 0, [2.0] * 10, 50.0)
    q, level = g.lookup(*one)
    assert level[0] == 0
    assert before_q[Q50] < 1.1 and q[0, Q50] > 1.9  # 500 observations at 2 outweigh 200 around 1
    assert g.robust_z(*one, np.array([2.0]), "both", 0.05)[0] < before_z
    assert g.cell_n[0, 0] == 200 + 500 and g.cell_t[0, 0] == 40 + 1


@pytest.mark.parametrize(("c", "k", "level"), [(1, 0, 1), (3, 0, 1), (3, 2, 2)])
def test_a_cell_without_enough_samples_becomes_its_own_row(c: int, k: int, level: int) -> None:
    g = grid()
    assert g.lookup(np.array([c]), np.array([k]))[1][0] == level
    prior = g.lookup(np.array([c]), np.array([k]))[0][0]
    absorbed(g, c, k, [prior[Q50] + 1.0], 1.0)  # one observation: the prior still counts min_samples
    q, lv = g.lookup(np.array([c]), np.array([k]))
    assert lv[0] == 0 and g.cell_n[c, k] == MIN_SAMPLES + 1
    np.testing.assert_allclose(q[0], mixed_quantiles(prior, MIN_SAMPLES, np.array([prior[Q50] + 1.0]), 1.0))
    assert prior[Q50] < q[0, Q50] < prior[Q50] + 1.0


@pytest.mark.parametrize(("c", "k"), [(0, 0), (1, 0), (2, 1)])
def test_other_cells_and_classes_are_unchanged(c: int, k: int) -> None:
    g, before = grid(), grid()
    absorbed(g, c, k, [7.0, 8.0], 5.0)
    others = np.ones((CELLS, CLASSES + 1), bool)
    others[c, k] = False
    np.testing.assert_array_equal(g._table[others], before._table[others])
    np.testing.assert_array_equal(g._level[others], before._level[others])
    for name in ("class_q", "class_n", "all_q", "class_t"):
        np.testing.assert_array_equal(getattr(g, name), getattr(before, name))
    assert g.cell_q.dtype == before.cell_q.dtype and g.cell_n.dtype == before.cell_n.dtype
    # a class beyond the class axis (the overall column) takes nothing, and raises nothing
    absorbed(before, c, CLASSES + 2, [7.0], 5.0)
    np.testing.assert_array_equal(before._table, grid()._table)


@pytest.mark.parametrize(("c", "k"), [(0, 0), (1, 0), (2, 1)])
def test_a_larger_weight_moves_the_row_further(c: int, k: int) -> None:
    start = grid().lookup(np.array([c]), np.array([k]))[0][0, Q50]
    target = start + 3.0
    light = absorbed(grid(), c, k, [target], 1.0).lookup(np.array([c]), np.array([k]))[0][0, Q50]
    heavy = absorbed(grid(), c, k, [target], 50.0).lookup(np.array([c]), np.array([k]))[0][0, Q50]
    assert start <= light < heavy <= target


@pytest.mark.parametrize(("c", "k"), [(0, 0), (3, 2)])
def test_nan_values_are_ignored(c: int, k: int) -> None:
    with_nan = absorbed(grid(), c, k, [np.nan, 4.0, np.inf], 3.0)
    without = absorbed(grid(), c, k, [4.0], 3.0)
    np.testing.assert_array_equal(with_nan._table, without._table)
    np.testing.assert_array_equal(with_nan.cell_n, without.cell_n)
    only_nan, untouched = absorbed(grid(), c, k, [np.nan], 3.0), grid()
    np.testing.assert_array_equal(only_nan.cell_t, untouched.cell_t)
    np.testing.assert_array_equal(only_nan._table, untouched._table)


@pytest.mark.parametrize("shrink_tracks", [0.0, 3.0])
def test_the_absorbed_tables_round_trip(shrink_tracks: float) -> None:
    g = absorbed(grid(shrink_tracks), 1, 0, [2.0, 2.5], 4.0)
    g.absorb(np.array([0, 3]), np.array([0, 2]), np.array([1.5, 9.0]), 2.0)
    again = QuantileGrid.from_arrays(g.to_arrays("q.x"), "q.x")
    cell = np.repeat(np.arange(CELLS), CLASSES + 1)
    cls = np.tile(np.arange(CLASSES + 1), CELLS)
    for a, b in zip(g.lookup(cell, cls), again.lookup(cell, cls), strict=True):
        np.testing.assert_array_equal(a, b)


def test_the_weight_must_be_positive() -> None:
    with pytest.raises(ValueError, match="expected > 0"):
        grid().absorb(np.array([0]), np.array([0]), np.array([1.0]), 0.0)
