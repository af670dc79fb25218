"""Spatial expectation grids: what is normal per (place cell, class), shrunk by their evidence.

Counts give the frequency of each class in each cell (with a prior so unseen pairs get a finite,
small probability); quantile tables give the expected value and spread of continuous attributes
(speed, log height, log aspect...). A cell with too few samples falls back to the class's
statistics over the whole image, then to all classes. Where a cell has samples, its spread can be
shrunk toward the class's by how many tracks it rests on (empirical Bayes, t / (t + shrink_tracks),
`ScoringConfig.spread_shrink_tracks`): one person crossing a cell gives dozens of samples of one
speed, not a spread of speeds. The same holds for a class's spread against all classes'. It is off
by default: with 2 tracks it raised Ped2's cross-validated false alerts (84.7 -> 98.8/h) and left
its AUC and Avenue's cross-validated share of frames >= 3 unchanged (bench/results, session 8).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.errors import ModelError

#: probabilities of the stored quantile tables
QUANTILES = np.array([0.01, 0.1, 0.25, 0.5, 0.75, 0.9, 0.99])
Q10, Q50, Q90, Q99 = 1, 3, 5, 6


class CountGrid:
    """Frequency of a categorical value per (cell, class) with hierarchical smoothing.

    p(value | cell) = (count[cell, value] + a * p(value)) / (n[cell] + a), where p(value) is the
    image-wide frequency with add-half smoothing over `n_values` possible values.
    """

    def __init__(self, counts: np.ndarray, prior_strength: float = 2.0) -> None:
        if counts.ndim != 2:
            raise ModelError(f"count grid: expected a 2-d array (cells, values), got shape {counts.shape}")
        self.counts = counts.astype(np.float64)
        self.prior_strength = prior_strength
        total = self.counts.sum(axis=0)
        self.global_p = (total + 0.5) / (total.sum() + 0.5 * counts.shape[1])
        self._n_cell: np.ndarray | None = None  # counts per cell, summed on first use after a change

    @classmethod
    def empty(cls, cells: int, values: int) -> CountGrid:
        return cls(np.zeros((cells, values)))

    def add(self, cell: np.ndarray, value: np.ndarray, weight: float = 1.0) -> None:
        """Count `weight` more observations of each (cell, value) pair; the image-wide prior follows."""
        np.add.at(self.counts, (cell, value), weight)
        total = self.counts.sum(axis=0)
        self.global_p = (total + 0.5) / (total.sum() + 0.5 * self.counts.shape[1])
        self._n_cell = None

    def finalize(self) -> CountGrid:
        """Spread a little mass to neighbouring cells is done by the caller; recompute the prior."""
        return CountGrid(self.counts, self.prior_strength)

    def probability(self, cell: np.ndarray, value: np.ndarray) -> np.ndarray:
        a = self.prior_strength
        if self._n_cell is None:
            self._n_cell = self.counts.sum(axis=1)
        n_cell = self._n_cell[cell]
        return (self.counts[cell, value] + a * self.global_p[value]) / (n_cell + a)

    def count(self, cell: np.ndarray, value: np.ndarray) -> np.ndarray:
        return self.counts[cell, value]


def smooth_spatially(counts: np.ndarray, grid: tuple[int, int], weight: float = 0.25) -> np.ndarray:
    """Add `weight` x the mean of the 4-neighbours: ground points near a cell edge are noisy."""
    rows, cols = grid
    c = counts.reshape(rows, cols, -1)
    padded = np.pad(c, ((1, 1), (1, 1), (0, 0)))
    neigh = (padded[:-2, 1:-1] + padded[2:, 1:-1] + padded[1:-1, :-2] + padded[1:-1, 2:]) / 4.0
    return (c + weight * neigh).reshape(rows * cols, -1)


@dataclass
class QuantileGrid:
    """Quantile tables of one continuous attribute per (cell, class), per class and overall.

    `cell_q` (C, K, Q), `cell_n` (C, K), `class_q` (K, Q), `class_n` (K,), `all_q` (Q,), `all_n`;
    `cell_t` (C, K) and `class_t` (K,): the distinct tracks the samples come from; `shrink_tracks`:
    the weight, in tracks, of the parent's spread (class for a cell, all classes for a class).
    """

    cell_q: np.ndarray
    cell_n: np.ndarray
    class_q: np.ndarray
    class_n: np.ndarray
    all_q: np.ndarray
    all_n: int
    min_samples: int
    cell_t: np.ndarray
    class_t: np.ndarray
    shrink_tracks: float = 0.0

    @classmethod
    def fit(
        cls,
        cells: int,
        classes: int,
        cell: np.ndarray,
        cls_: np.ndarray,
        x: np.ndarray,
        min_samples: int,
        track: np.ndarray | None = None,
        shrink_tracks: float = 0.0,
    ) -> QuantileGrid:
        """`track`: each sample's track (None: every sample its own)."""
        ok = np.isfinite(x)
        track = np.arange(len(x)) if track is None else np.asarray(track)
        cell, cls_, x, track = cell[ok], cls_[ok], x[ok], track[ok]
        q = len(QUANTILES)
        cell_q = np.full((cells, classes, q), np.nan)
        cell_n = np.zeros((cells, classes), np.int64)
        cell_t = np.zeros((cells, classes), np.int64)
        class_q = np.full((classes, q), np.nan)
        class_n = np.zeros(classes, np.int64)
        class_t = np.zeros(classes, np.int64)
        for k in np.unique(cls_):
            mk = cls_ == k
            class_n[k] = int(mk.sum())
            class_t[k] = len(np.unique(track[mk]))
            class_q[k] = np.quantile(x[mk], QUANTILES)
            for c in np.unique(cell[mk]):
                mc = mk & (cell == c)
                cell_n[c, k] = int(mc.sum())
                cell_t[c, k] = len(np.unique(track[mc]))
                if cell_n[c, k] >= min_samples:
                    cell_q[c, k] = np.quantile(x[mc], QUANTILES)
        all_q = np.quantile(x, QUANTILES) if len(x) else np.full(q, np.nan)
        return cls(
            cell_q, cell_n, class_q, class_n, all_q, len(x), min_samples, cell_t, class_t, shrink_tracks
        )

    def __post_init__(self) -> None:
        self._table, self._level = self._resolved()

    def _resolved(self) -> tuple[np.ndarray, np.ndarray]:
        """Per (cell, class): the quantile row `lookup` uses and its level, resolved once.

        The cell's own row when it has `min_samples`, its spread around its median shrunk toward the
        class row's by its tracks; else the class's when that has them (its spread shrunk toward all
        classes'), else all; one more class column, the overall row, for classes beyond the tables'."""
        overall = 2 if self.all_n else 3
        by_cell = self.cell_n >= self.min_samples  # (C, K)
        by_class = self.class_n >= self.min_samples  # (K,)
        class_rows = _shrunk(self.class_q, self.all_q[None], self.class_t, self.shrink_tracks)
        per_class = np.where(by_class[:, None], class_rows, self.all_q[None])  # (K, Q)
        cell_rows = _shrunk(self.cell_q, per_class[None], self.cell_t, self.shrink_tracks)
        table = np.where(by_cell[..., None], cell_rows, per_class[None]).astype(self.all_q.dtype)
        level = np.where(by_cell, 0, np.where(by_class, 1, overall)[None]).astype(np.int8)
        cells = len(table)
        table = np.concatenate([table, np.broadcast_to(self.all_q, (cells, 1, len(self.all_q)))], axis=1)
        level = np.concatenate([level, np.full((cells, 1), overall, np.int8)], axis=1)
        return table, level

    def lookup(self, cell: np.ndarray, cls_: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Quantile rows (N, Q) for each object and the level used (0 cell, 1 class, 2 all, 3 none);
        a class beyond the tables' (none in a model's own class axis) gets the overall row."""
        k = np.minimum(cls_, self.class_q.shape[0])  # beyond: the overall column
        return self._table[cell, k], self._level[cell, k]

    def robust_z(
        self, cell: np.ndarray, cls_: np.ndarray, x: np.ndarray, sided: str, floor: float
    ) -> np.ndarray:
        """(x - median) / spread, spread from the 10-90 % range (floored); `sided` is 'upper' or 'both'."""
        q, level = self.lookup(cell, cls_)
        med = q[:, Q50]
        up = np.maximum(q[:, Q90] - med, floor)
        lo = np.maximum(med - q[:, Q10], floor)
        z = np.where(x >= med, (x - med) / up, (med - x) / lo)
        if sided == "upper":
            z = np.where(x >= med, z, 0.0)
        z = np.where(level == 3, np.nan, z)
        return np.where(np.isfinite(x), z, np.nan)

    def absorb(self, cell: np.ndarray, cls_: np.ndarray, x: np.ndarray, weight: float) -> None:
        """Operator feedback: the finite values `x` become `weight` observations each of their (cell, class).

        The tables keep quantiles, not samples, so each (cell, class) row `lookup` resolves is taken as a
        distribution (a piecewise-linear CDF through QUANTILES) worth `n_base` observations (the cell's own
        count where its row is in use, else `min_samples`: a prior is worth what the tables need before
        trusting a cell), mixed with the new values, and stored as that cell's own row, counted with the
        new observations and one more track. Classes beyond the class axis (the overall column) are left."""
        if not weight > 0:
            raise ValueError(f"quantile feedback weight: expected > 0 observations, got {weight}")
        cell, cls_, x = np.asarray(cell, np.int64), np.asarray(cls_, np.int64), np.asarray(x, np.float64)
        ok = np.isfinite(x) & (cls_ >= 0) & (cls_ < self.class_q.shape[0])
        if not ok.any():
            return
        cell_q, cell_n, cell_t = self.cell_q.copy(), self.cell_n.copy(), self.cell_t.copy()
        for c, k in np.unique(np.stack([cell[ok], cls_[ok]], axis=1), axis=0):
            values = x[ok & (cell == c) & (cls_ == k)]
            row = self._table[c, k]
            n_base = float(self.cell_n[c, k] if self._level[c, k] == 0 else self.min_samples)
            if not np.all(np.isfinite(row)):  # no normal here at all: the values are the distribution
                n_base = 0.0
            cell_q[c, k] = mixed_quantiles(row, n_base, values, weight)
            cell_n[c, k] = max(round(n_base + weight * len(values)), self.min_samples)
            cell_t[c, k] += 1
        self.cell_q, self.cell_n, self.cell_t = cell_q, cell_n, cell_t
        self._table, self._level = self._resolved()

    def to_arrays(self, prefix: str) -> dict[str, np.ndarray]:
        return {
            f"{prefix}.cell_q": self.cell_q,
            f"{prefix}.cell_n": self.cell_n,
            f"{prefix}.class_q": self.class_q,
            f"{prefix}.class_n": self.class_n,
            f"{prefix}.all_q": self.all_q,
            f"{prefix}.all_n": np.array(self.all_n),
            f"{prefix}.min_samples": np.array(self.min_samples),
            f"{prefix}.cell_t": self.cell_t,
            f"{prefix}.class_t": self.class_t,
            f"{prefix}.shrink_tracks": np.array(self.shrink_tracks),
        }

    @classmethod
    def from_arrays(cls, a: dict[str, np.ndarray], prefix: str) -> QuantileGrid:
        return cls(
            a[f"{prefix}.cell_q"],
            a[f"{prefix}.cell_n"],
            a[f"{prefix}.class_q"],
            a[f"{prefix}.class_n"],
            a[f"{prefix}.all_q"],
            int(a[f"{prefix}.all_n"]),
            int(a[f"{prefix}.min_samples"]),
            a[f"{prefix}.cell_t"],
            a[f"{prefix}.class_t"],
            float(a[f"{prefix}.shrink_tracks"]),
        )


def mixed_quantiles(row: np.ndarray, n_base: float, values: np.ndarray, weight: float) -> np.ndarray:
    """QUANTILES of the mixture of quantile row `row` (worth `n_base` observations) and `values` (`weight`
    observations each): F'(v) = (n_base F_row(v) + weight #{values <= v}) / (n_base + weight m).

    F_row is piecewise linear through (row, QUANTILES), its outer 1 % at the row's ends. F' is inverted
    on a fine grid spanning both that holds the row's and the values' points, between which it is linear,
    so the inverse is exact: an atom of equal values is found where it is."""
    values = np.sort(np.asarray(values, np.float64))
    base = float(n_base) if n_base > 0 and np.all(np.isfinite(row)) else 0.0
    points = np.concatenate([row, values]) if base else values
    grid = np.unique(np.concatenate([np.linspace(points.min(), points.max(), 1025), points]))
    if base:
        inner = np.interp(grid, row, QUANTILES)
        row_right = np.where(grid < row[0], 0.0, np.where(grid >= row[-1], 1.0, inner))
        row_left = np.where(grid <= row[0], 0.0, np.where(grid > row[-1], 1.0, inner))
    else:
        row_right = row_left = np.zeros(len(grid))
    total = base + weight * len(values)
    new_right = np.searchsorted(values, grid, side="right") / len(values)
    new_left = np.searchsorted(values, grid, side="left") / len(values)
    cdf = (base * row_right + weight * len(values) * new_right) / total  # F'(g)
    before = (base * row_left + weight * len(values) * new_left) / total  # F'(g-)
    hi = np.minimum(np.searchsorted(cdf, QUANTILES, side="left"), len(grid) - 1)  # first F'(g) >= p
    lo = np.maximum(hi - 1, 0)
    rise = before[hi] - cdf[lo]  # F' is linear on (g_lo, g_hi): p is reached there, or in the jump at g_hi
    inside = (hi > 0) & (before[hi] >= QUANTILES) & (rise > 0)
    frac = np.clip(np.divide(QUANTILES - cdf[lo], rise, out=np.ones(len(QUANTILES)), where=inside), 0, 1)
    return np.where(inside, grid[lo] + frac * (grid[hi] - grid[lo]), grid[hi])


def _shrunk(rows: np.ndarray, parent: np.ndarray, tracks: np.ndarray, shrink_tracks: float) -> np.ndarray:
    """Quantile rows with their deviations from their own median shrunk toward the parent rows'
    (w = t / (t + shrink_tracks)); the median stays the row's own (where it is, not how it varies,
    is what one track does tell). Rows or parents of NaN are left as they are."""
    if shrink_tracks <= 0:
        return rows
    w = (tracks / np.maximum(tracks + shrink_tracks, 1e-12))[..., None]
    med, parent_med = rows[..., Q50 : Q50 + 1], parent[..., Q50 : Q50 + 1]
    out = med + w * (rows - med) + (1.0 - w) * (parent - parent_med)
    return np.where(np.isfinite(out), out, rows)


DIRECTION_BINS = 8


def direction_bin(direction: np.ndarray) -> np.ndarray:
    """Radians -> one of DIRECTION_BINS sectors centred on 0, pi/4, ..."""
    step = 2 * np.pi / DIRECTION_BINS
    direction = np.nan_to_num(np.asarray(direction, np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    return (np.floor((np.mod(direction, 2 * np.pi) + step / 2) / step).astype(np.int64)) % DIRECTION_BINS
