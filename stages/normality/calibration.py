"""Raw score -> calibrated score = -log10(tail probability under normal data).

The empirical survival function of held-out normal raw scores is used up to its 99th percentile;
above it the tail is an exponential fitted to the excesses (maximum likelihood: mean excess), so
scores beyond anything seen in training still grow smoothly instead of saturating.
"""

from __future__ import annotations

import numpy as np

from pipeline.errors import ModelError

MAX_SCORE = 12.0
TAIL_P = 0.01
KEEP = 2000


class TailCalibrator:
    """Monotone map fitted on held-out normal raw scores (`values` sorted, at most KEEP of them)."""

    def __init__(self, values: np.ndarray, n: int, tail_scale: float) -> None:
        self.values = np.sort(values.astype(np.float64))
        self.n = n
        self.tail_scale = tail_scale
        self._q99 = float(np.quantile(self.values, 1 - TAIL_P)) if n > 0 else float("nan")

    @classmethod
    def fit(cls, raw: np.ndarray) -> TailCalibrator:
        raw = raw[np.isfinite(raw)].astype(np.float64)
        n = len(raw)
        if n == 0:
            return cls(np.zeros(0), 0, 1.0)
        q99 = float(np.quantile(raw, 1 - TAIL_P))
        excess = raw[raw > q99] - q99
        spread = float(np.quantile(raw, 0.99) - np.quantile(raw, 0.5))
        tail_scale = float(excess.mean()) if len(excess) >= 3 else 0.0
        tail_scale = max(tail_scale, 0.1 * spread, 1e-3)
        keep = np.quantile(raw, np.linspace(0, 1, KEEP)) if n > KEEP else np.sort(raw)
        return cls(keep, n, tail_scale)

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
            return np.clip(raw / np.log(10), 0.0, MAX_SCORE)
        m = len(self.values)
        # share of held-out values >= x, on the stored quantiles (they stand for n values evenly)
        ge = m - np.searchsorted(self.values, raw, side="left")
        surv = (ge / m * self.n + 1.0) / (self.n + 1.0)
        q99 = self.q99
        tail = TAIL_P * np.exp(-np.maximum(raw - q99, 0.0) / self.tail_scale)  # used above q99 only
        surv = np.where(raw > q99, np.minimum(surv, tail), surv)
        out = np.clip(-np.log10(np.clip(surv, 1e-300, 1.0)), 0.0, MAX_SCORE)
        return np.where(np.isfinite(raw), out, np.nan)

    def inverse(self, score: float) -> float:
        """Raw value whose calibrated score is `score` (for explanations)."""
        if not np.isfinite(score) or not self.fitted:
            return float("nan")
        p = 10.0 ** (-score)
        if p >= TAIL_P:  # the stored values are evenly spaced quantiles: interpolate their ranks
            ranks = np.linspace(0.0, 1.0, len(self.values))
            return float(np.interp(1.0 - p, ranks, self.values))
        return self.q99 + self.tail_scale * float(np.log(TAIL_P / p))

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
