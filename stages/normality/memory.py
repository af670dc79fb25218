"""Memory banks of normal feature vectors with coreset subsampling and exact k-NN in torch."""

from __future__ import annotations

import numpy as np
import torch

from pipeline.errors import ModelError


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ModelError(f"scoring device {device!r} requested but CUDA is not available")
    return torch.device(device)


def coreset(features: np.ndarray, size: int, method: str, seed: int, device: torch.device) -> np.ndarray:
    """Indices of at most `size` rows: greedy k-center (farthest point) or uniform random."""
    n = len(features)
    if n <= size:
        return np.arange(n)
    rng = np.random.default_rng(seed)
    if method == "random":
        return np.sort(rng.choice(n, size, replace=False))
    # greedy k-center over a random pre-sample of at most 20 x size rows keeps it O(size * 20 size)
    pool = np.sort(rng.choice(n, min(n, 20 * size), replace=False))
    x = torch.from_numpy(features[pool].astype(np.float32)).to(device)
    chosen = [int(rng.integers(len(pool)))]
    dist = torch.cdist(x, x[chosen[0] : chosen[0] + 1]).squeeze(1)
    for _ in range(size - 1):
        nxt = int(torch.argmax(dist))
        chosen.append(nxt)
        dist = torch.minimum(dist, torch.cdist(x, x[nxt : nxt + 1]).squeeze(1))
    return np.sort(pool[chosen])


class MemoryBank:
    """Normal feature vectors; `distance(q, k)` = mean Euclidean distance to the k nearest rows."""

    def __init__(self, features: np.ndarray, device: torch.device) -> None:
        if features.ndim != 2:
            raise ModelError(f"memory bank: expected a 2-d array, got shape {features.shape}")
        self.features = features.astype(np.float32)
        self.device = device
        self._bank = torch.from_numpy(self.features).to(device, torch.float64)

    def __len__(self) -> int:
        return len(self.features)

    @property
    def dim(self) -> int:
        return int(self.features.shape[1])

    def distance(self, queries: np.ndarray, k: int, chunk: int = 4096) -> np.ndarray:
        """Exact k-NN distance per query row (NaN rows give NaN); NaN for all when the bank is empty."""
        out = np.full(len(queries), np.nan, np.float64)
        ok = np.all(np.isfinite(queries), axis=1)
        if not ok.any() or len(self.features) == 0:
            return out
        if queries.shape[1] != self.dim:
            raise ModelError(f"memory bank: queries have {queries.shape[1]} dims, bank has {self.dim}")
        q = torch.from_numpy(queries[ok].astype(np.float32)).to(self.device)
        kk = min(k, len(self.features))
        means = []
        with torch.no_grad():
            for s in range(0, len(q), 256):
                best: torch.Tensor | None = None
                for b in range(0, len(self._bank), chunk):
                    d = torch.cdist(q[s : s + 256].double(), self._bank[b : b + chunk])
                    best = d if best is None else torch.cat([best, d], dim=1)
                    best = torch.topk(best, min(kk, best.shape[1]), dim=1, largest=False).values
                assert best is not None
                means.append(best.mean(dim=1))
        out[ok] = torch.cat(means).cpu().numpy()
        return out
