"""QuantileGrid: a cell's spread shrunk toward its class's by the tracks it rests on."""

from __future__ import annotations

import numpy as np
import pytest

from stages.normality.grids import Q10, Q50, Q90, QuantileGrid

SHRINK_TRACKS = 2.0


def _grid(tracks_in_cell: int, rows_per_track: int = 40, shrink: float = SHRINK_TRACKS) -> QuantileGrid:
    """Cell 0: `tracks_in_cell` tracks each at its own steady speed near 1.0 (spread 0.01 within a
    track); cell 1: 50 tracks spread widely (the class's spread)."""
    rng = np.random.default_rng(tracks_in_cell)
    speeds0 = 1.0 + 0.3 * rng.standard_normal(tracks_in_cell)
    x0 = np.repeat(speeds0, rows_per_track) + 0.01 * rng.standard_normal(tracks_in_cell * rows_per_track)
    x1 = np.repeat(rng.uniform(0.0, 3.0, 50), rows_per_track)
    x = np.concatenate([x0, x1])
    cell = np.concatenate([np.zeros(len(x0), int), np.ones(len(x1), int)])
    track = np.concatenate(
        [
            np.repeat(np.arange(tracks_in_cell), rows_per_track),
            1000 + np.repeat(np.arange(50), rows_per_track),
        ]
    )
    return QuantileGrid.fit(2, 1, cell, np.zeros(len(x), int), x, 10, track, shrink)


@pytest.mark.parametrize("tracks", [1, 3, 30])
def test_cell_spread_shrinks_toward_the_class_by_its_tracks(tracks: int) -> None:
    g = _grid(tracks)
    row, level = g.lookup(np.array([0]), np.array([0]))
    assert level[0] == 0
    own, parent = g.cell_q[0, 0], g.class_q[0]
    w = tracks / (tracks + SHRINK_TRACKS)
    assert row[0, Q50] == pytest.approx(own[Q50])  # where it is: the cell's own
    expected = w * (own[Q90] - own[Q50]) + (1 - w) * (parent[Q90] - parent[Q50])
    assert row[0, Q90] - row[0, Q50] == pytest.approx(expected)
    assert row[0, Q50] - row[0, Q10] > 0


def test_one_track_is_not_a_spread_of_speeds() -> None:
    """The next person in a cell one person crossed is judged against people's spread, not his."""
    g = _grid(1)
    z = g.robust_z(np.array([0]), np.array([0]), np.array([float(g.cell_q[0, 0, Q50]) + 0.3]), "both", 0.01)
    assert z[0] < 2.0
    unshrunk = 0.3 / max(g.cell_q[0, 0, Q90] - g.cell_q[0, 0, Q50], 0.01)
    assert unshrunk > 10


def test_track_counts_survive_the_model_file() -> None:
    g = _grid(3)
    back = QuantileGrid.from_arrays(g.to_arrays("q.x"), "q.x")
    np.testing.assert_array_equal(back.cell_t, g.cell_t)
    np.testing.assert_array_equal(back.class_t, g.class_t)
    np.testing.assert_allclose(
        back.lookup(np.array([0, 1]), np.array([0, 0]))[0], g.lookup(np.array([0, 1]), np.array([0, 0]))[0]
    )


def test_off_by_default_the_cell_keeps_its_own_spread() -> None:
    g = _grid(1, shrink=0.0)
    np.testing.assert_array_equal(g.lookup(np.array([0]), np.array([0]))[0][0], g.cell_q[0, 0])
