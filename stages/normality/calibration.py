"""Raw score -> calibrated score = -log10(tail probability under normal data).

The empirical survival function of held-out normal raw scores is used up to its 99th percentile;
above it the tail is an exponential, so scores beyond anything seen in training still grow smoothly
instead of saturating.

Evidence is counted in independent samples, not rows: a held-out track gives dozens of rows that
are nearly one sample of how the model scores a normal object, so the survival function is
smoothed with the number of independent held-out groups (tracks), and the exponential's scale is
the mean excess over the 99th percentile per track, shrunk toward a prior scale by how many tracks
show an excess (`PRIOR_TRACKS` pseudo-tracks). The prior depends on what the raw score is
(`TailPrior`): a robust z-score falls no faster than a Laplace whose 90th percentile is 1, a
-ln p surprise no faster than e^-x, the object's strongest calibrated score (-log10 p) by one decade
per unit, anything else no faster than the exponential through its median and 99th percentile.
Little or familiar held-out evidence thus gives scores set by the prior, not by a tail guessed from
one or two tracks (that turned the 99.9th percentile of 500 frames into "never seen").
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import Enum

import numpy as np

from pipeline.errors import ModelError

MAX_SCORE = 12.0
TAIL_P = 0.01
KEEP = 2000
#: tail scale (share of q99 - q50) of an exponential tail through the median and the 99th
#: percentile: 1 / ln(0.5 / TAIL_P)
BODY_TAIL_FLOOR = float(1.0 / np.log(0.5 / TAIL_P))
#: weight of the prior tail scale, in held-out tracks showing an excess over the 99th percentile
PRIOR_TRACKS = 2.0


class TailPrior(Enum):
    """What a raw score is, and so the prior scale of its tail beyond the held-out data."""

    #: a robust z-score ((x - median) / (q90 - median)): a Laplace with P(z > 1) = 0.1 has scale 1/ln 5
    ROBUST_Z = "robust z"
    #: a surprise -ln p of a categorical probability: P(-ln p >= x) <= e^-x per value, scale 1
    SURPRISE = "surprise"
    #: a calibrated score -log10 p (the object's strongest attribute): one decade per unit
    LOG10_SCORE = "log10 score"
    #: anything else (a k-NN distance, a prediction error): the exponential through q50 and q99
    SPREAD = "spread"

    def scale(self, spread: float) -> float:
        """The prior tail scale in raw units; `spread` = q99 - q50 of the held-out raw scores."""
        if self is TailPrior.ROBUST_Z:
            return float(1.0 / np.log(5.0))
        if self is TailPrior.SURPRISE:
            return 1.0
        if self is TailPrior.LOG10_SCORE:
            return float(1.0 / np.log(10.0))
        return max(BODY_TAIL_FLOOR * spread, 1e-3)


_HUGE = float(np.finfo(np.float64).max)  # q99 placeholder of a column with no fitted calibrator


class TailCalibrator:
    """Monotone map fitted on held-out normal raw scores (`values` sorted, at most KEEP of them)."""

    def __init__(self, values: np.ndarray, n: int, tail_scale: float) -> None:
        self.values = np.sort(values.astype(np.float64))
        self.n = n
        self.tail_scale = tail_scale
        self._q99 = float(np.quantile(self.values, 1 - TAIL_P)) if n > 0 else float("nan")
        self._ranks = np.linspace(0.0, 1.0, len(self.values))  # of the stored quantiles, for `inverse`

    @classmethod
    def fit(
        cls, raw: np.ndarray, groups: np.ndarray | None = None, prior: TailPrior = TailPrior.SPREAD
    ) -> TailCalibrator:
        """`groups`: each row's independent sample (held-out track), None: every row its own."""
        raw = np.asarray(raw, np.float64)
        finite = np.isfinite(raw)
        groups = np.arange(len(raw)) if groups is None else np.asarray(groups)
        raw, groups = raw[finite], groups[finite]
        if len(raw) == 0:
            return cls(np.zeros(0), 0, 1.0)
        n = len(np.unique(groups))
        q99 = float(np.quantile(raw, 1 - TAIL_P))
        prior_scale = prior.scale(q99 - float(np.quantile(raw, 0.5)))
        over = raw > q99
        # mean excess per track, then over tracks: one track's many rows are one sample of the tail
        tracks, where = np.unique(groups[over], return_inverse=True)
        per_track = np.bincount(where, raw[over] - q99) / np.maximum(np.bincount(where), 1)
        k = len(tracks)
        tail_scale = (float(per_track.sum()) + PRIOR_TRACKS * prior_scale) / (k + PRIOR_TRACKS)
        keep = np.quantile(raw, np.linspace(0, 1, KEEP)) if len(raw) > KEEP else np.sort(raw)
        return cls(keep, n, max(tail_scale, 1e-3))

    @property
    def fitted(self) -> bool:
        return self.n > 0

    @property
    def q99(self) -> float:
        return self._q99

    @property
    def median(self) -> float:
        return float(np.median(self.values)) if self.fitted else float("nan")

    def __call__(self, raw: np.ndarray) -> np.ndarray:
        """Calibrated scores; NaN stays NaN. Unfitted (no held-out data): raw is taken as -ln p."""
        raw = np.asarray(raw, np.float64)
        if not self.fitted:
            return _unfitted_scores(raw)
        m = len(self.values)
        ge = m - np.searchsorted(self.values, raw, side="left")
        out = _tail_scores(raw, ge / m, self.n, self.q99, self.tail_scale)
        return np.where(np.isfinite(raw), out, np.nan)

    def inverse(self, score: float) -> float:
        """Raw value whose calibrated score is `score` (for explanations)."""
        if not np.isfinite(score) or not self.fitted:
            return float("nan")
        p = 10.0 ** (-score)
        if p >= TAIL_P:  # the stored values are evenly spaced quantiles: interpolate their ranks
            return float(np.interp(1.0 - p, self._ranks, self.values))
        # above q99 the score is the larger of the empirical one and the exponential tail's: the raw
        # value is the smaller of the two that reach it (the empirical one only within the data)
        tail = self.q99 + self.tail_scale * float(np.log(_anchor(self.n) / p))
        share_ge = (p * (self.n + 1.0) - 1.0) / self.n  # the inverse of the +1-smoothed survival
        if share_ge < 1.0 / len(self.values):  # rarer than the stored quantiles resolve: the tail only
            return tail
        return min(tail, float(np.interp(1.0 - share_ge, self._ranks, self.values)))

    def to_arrays(self, prefix: str) -> dict[str, np.ndarray]:
        return {
            f"{prefix}.values": self.values,
            f"{prefix}.n": np.array(self.n),
            f"{prefix}.tail_scale": np.array(self.tail_scale),
        }

    @classmethod
    def from_arrays(cls, a: dict[str, np.ndarray], prefix: str) -> TailCalibrator:
        values = a[f"{prefix}.values"]
        if values.ndim != 1:
            raise ModelError(f"calibrator {prefix}: expected 1-d values, got shape {values.shape}")
        return cls(values, int(a[f"{prefix}.n"]), float(a[f"{prefix}.tail_scale"]))


class CalibratorTable:
    """Column j of a raw (N, A) score matrix through calibrator j, for all columns in one call.

    The same numbers as calling each `TailCalibrator` on its column (the same float operations,
    element by element), without ~20 small numpy calls per column: the ranks of every column come
    from ONE `searchsorted` over all calibrators' stored values, keyed (column, value) as complex
    numbers (numpy orders complex lexicographically: real part = column, imaginary part = value),
    and the tail and log arithmetic runs once on the whole matrix. A None calibrator gives NaN
    (an attribute without one, e.g. no sustained evidence).
    """

    def __init__(self, calibrators: Sequence[TailCalibrator | None]) -> None:
        self.calibrators = tuple(calibrators)
        self._present = np.array([c is not None for c in self.calibrators], bool)
        self._fitted = np.array([c is not None and c.fitted for c in self.calibrators], bool)
        # every calibrator fitted (a missing one's column is NaN anyway): no unfitted scores to compute
        self._all_fitted = bool((self._fitted | ~self._present).all())
        # per column; a column without a fitted calibrator gets placeholders (its result is replaced)
        cal = [c if c is not None and c.fitted else None for c in self.calibrators]
        sizes = np.array([0 if c is None else len(c.values) for c in cal], np.int64)
        self._m = np.maximum(sizes, 1)
        self._start = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
        self._n = np.array([1 if c is None else c.n for c in cal], np.int64)
        self._q99 = np.array([_HUGE if c is None else c.q99 for c in cal], np.float64)
        self._scale = np.array([1.0 if c is None else c.tail_scale for c in cal], np.float64)
        stored = [(j, c.values) for j, c in enumerate(cal) if c is not None]
        self._keys = _column_keys(
            np.concatenate([np.full(len(v), j, np.float64) for j, v in stored] or [np.zeros(0)]),
            np.concatenate([v for _, v in stored] or [np.zeros(0)]),
        )
        self._columns = np.arange(len(self.calibrators), dtype=np.float64)

    def __call__(self, raw: np.ndarray) -> np.ndarray:
        """(N, A) calibrated scores; NaN where raw is NaN (fitted: not finite) or a column has none."""
        raw = np.asarray(raw, np.float64)
        if raw.ndim != 2 or raw.shape[1] != len(self.calibrators):
            raise ModelError(
                f"calibrator table of {len(self.calibrators)} columns: got raw of shape {raw.shape}"
            )
        if raw.shape[0] == 0:
            return np.zeros(raw.shape)
        finite = np.isfinite(raw)
        # rank of x in its column's stored values, side "left" (values < x), like TailCalibrator
        key = _column_keys(np.broadcast_to(self._columns, raw.shape), np.where(finite, raw, 0.0))
        below = np.searchsorted(self._keys, key, side="left") - self._start
        ge = self._m - below
        out = _tail_scores(raw, ge / self._m, self._n, self._q99, self._scale)
        if not self._all_fitted:
            out = np.where(self._fitted, out, _unfitted_scores(raw))
        # as TailCalibrator: a fitted one gives NaN for any non-finite raw, an unfitted one clips +-inf
        return np.where((finite | ~self._fitted) & self._present, out, np.nan)


def _tail_scores(
    raw: np.ndarray,
    share_ge: np.ndarray,
    n: np.ndarray | int,
    q99: np.ndarray | float,
    scale: np.ndarray | float,
) -> np.ndarray:
    """-log10 of the tail probability of `raw`: the share of stored held-out quantiles >= raw (they stand
    for n independent samples evenly; +1 smoothing) up to the 99th percentile, above it the smaller of
    that and the exponential tail from the smoothed survival at q99. The one formula of TailCalibrator
    and CalibratorTable."""
    surv = (share_ge * n + 1.0) / (n + 1.0)
    tail = _anchor(n) * np.exp(-np.maximum(raw - q99, 0.0) / scale)  # used above q99 only
    surv = np.where(raw > q99, np.minimum(surv, tail), surv)
    return np.clip(-np.log10(np.clip(surv, 1e-300, 1.0)), 0.0, MAX_SCORE)


def _anchor(n: np.ndarray | int) -> np.ndarray | float:
    """The smoothed survival at the 99th percentile of n independent samples: where the tail starts."""
    return (TAIL_P * n + 1.0) / (n + 1.0)


def _unfitted_scores(raw: np.ndarray) -> np.ndarray:
    """No held-out data: the raw score is taken as -ln p."""
    return np.clip(raw / np.log(10), 0.0, MAX_SCORE)


def _column_keys(column: np.ndarray, value: np.ndarray) -> np.ndarray:
    """Complex keys column + i*value (exact: both parts are set, not computed), ordered by (column, value)."""
    out = np.empty(np.shape(value), np.complex128)
    out.real = column
    out.imag = value
    return out
