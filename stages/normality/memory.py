"""Memory banks of normal feature vectors: coreset subsampling, exact k-NN (numpy on CPU, torch on CUDA)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from itertools import islice
from types import TracebackType
from typing import Any

import numpy as np
import torch
from threadpoolctl import ThreadpoolController

from pipeline.errors import ModelError

POOL = 50_000
PROJECTED_DIMS = 32
#: rows beyond k kept by the float32 k-NN search before the float64 refinement
CANDIDATE_MARGIN = 8
#: distances of this many recent query rows are remembered per bank (CPU; calls of <= RECENT_CALL_ROWS rows)
RECENT_ROWS = 512
RECENT_CALL_ROWS = 64


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ModelError(f"scoring device {device!r} requested but CUDA is not available")
    return torch.device(device)


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run a block with `n` torch intra-op threads, then restore the setting.

    Fitting does thousands of tiny ops (coreset steps, MLP steps) in a process where nothing else
    runs torch at that moment; extra threads only cost wake-ups there (on busy cores, many times
    the step itself; bench/results/README.md).
    """
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def coreset(features: np.ndarray, size: int, method: str, seed: int, device: torch.device) -> np.ndarray:
    """Indices of at most `size` rows: greedy k-center (farthest point) or uniform random."""
    n = len(features)
    if n <= size:
        return np.arange(n)
    rng = np.random.default_rng(seed)
    if method == "random":
        return np.sort(rng.choice(n, size, replace=False))
    # greedy k-center (PatchCore-style): on a random projection to at most 32 dims, over at most
    # POOL rows (a random pre-sample only when there are more), so the cost stays O(size x POOL x 32)
    pool = np.sort(rng.choice(n, POOL, replace=False)) if n > POOL else np.arange(n)
    feats = features[pool].astype(np.float32)
    if feats.shape[1] > PROJECTED_DIMS:
        proj = rng.standard_normal((feats.shape[1], PROJECTED_DIMS)).astype(np.float32)
        feats = feats @ (proj / np.sqrt(PROJECTED_DIMS))
    x = torch.from_numpy(feats).to(device)
    chosen = [int(rng.integers(len(pool)))]
    with torch_threads(1 if device.type == "cpu" else torch.get_num_threads()):
        dist = torch.cdist(x, x[chosen[0] : chosen[0] + 1]).squeeze(1)
        for _ in range(size - 1):
            nxt = int(torch.argmax(dist))
            chosen.append(nxt)
            dist = torch.minimum(dist, torch.cdist(x, x[nxt : nxt + 1]).squeeze(1))
    return np.sort(pool[chosen])


class OneBlasThread:
    """Context manager: the BLAS libraries run one thread inside it (see `MemoryBank._distance_numpy`).

    OpenBLAS' thread count is process-wide; it is set to one on the outermost entry and restored on
    its exit. Nested entries cost nothing, so a caller that makes several small k-NN calls (a frame's
    three banks) sets and restores it once: each setting is a few ctypes calls that also give up the
    GIL, ~5 % of the score stage when made per k-NN call."""

    def __init__(self) -> None:
        self._blas = ThreadpoolController().select(user_api="blas")
        self._lock = threading.Lock()
        self._depth = 0
        self._limiter: AbstractContextManager[Any] | None = None

    def __enter__(self) -> None:
        with self._lock:
            if self._depth == 0:
                self._limiter = self._blas.limit(limits=1)
            self._depth += 1

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        with self._lock:
            self._depth -= 1
            if self._depth == 0 and self._limiter is not None:
                self._limiter.__exit__(None, None, None)  # restores the original limits
                self._limiter = None


class MemoryBank:
    """Normal feature vectors; `distance(q, k)` = mean Euclidean distance to the k nearest rows.

    `blas` (CPU): its one-BLAS-thread limit, shared with the other banks of a model so that a caller can
    hold it around all of them (a new one when None); None on CUDA."""

    def __init__(self, features: np.ndarray, device: torch.device, blas: OneBlasThread | None = None) -> None:
        if features.ndim != 2:
            raise ModelError(f"memory bank: expected a 2-d array, got shape {features.shape}")
        self.features = features.astype(np.float32)
        self.device = device
        self.blas: OneBlasThread | None = (blas or OneBlasThread()) if device.type == "cpu" else None
        self._index()

    def _index(self) -> None:
        """The search copies of `features`, and an empty cache of recent distances."""
        if self.device.type == "cpu":
            self._bank_np = self.features.astype(np.float64)
            # float32 search copy, centred: distances do not change, and the |q|^2 + |b|^2 - 2 q.b
            # expansion loses less to cancellation with small norms
            self._mean = self.features.mean(axis=0) if len(self.features) else np.zeros(self.dim, np.float32)
            self._bank32 = np.ascontiguousarray(self.features - self._mean)
            self._norms32 = (self._bank32 * self._bank32).sum(axis=1)
        else:
            self._bank = torch.from_numpy(self.features).to(self.device, torch.float64)
        # (query row bytes, k) -> distance of recent frames' rows: a track's appearance and pose rows are
        # re-estimated every few frames only and repeat in between (half the appearance rows of the 640x360
        # benchmark, 1.7 -> ~0.9 ms per frame); a row's distance does not depend on the other rows of its call
        self._recent: dict[tuple[bytes, int], float] = {}

    def add(self, rows: np.ndarray) -> None:
        """Append normal rows (operator feedback); the search copies are rebuilt, recent distances dropped."""
        if rows.ndim != 2 or rows.shape[1] != self.dim:
            raise ModelError(f"memory bank: rows of shape {rows.shape} for a bank of {self.dim} dims")
        if len(rows):
            self.features = np.concatenate([self.features, rows.astype(np.float32)])
            self._index()

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
        kk = min(k, len(self.features))
        if self.device.type == "cpu":
            rows = queries[ok].astype(np.float32)
            if len(rows) > RECENT_CALL_ROWS:  # fitting, evaluation: no repeats worth remembering
                out[ok] = self._distance_numpy(rows.astype(np.float64), kk, chunk)
                return out
            keys = [(row.tobytes(), kk) for row in rows]
            recent = self._recent
            new = [i for i, key in enumerate(keys) if key not in recent]
            if new:
                fresh = self._distance_numpy(rows[new].astype(np.float64), kk, chunk)
                recent.update((keys[i], float(d)) for i, d in zip(new, fresh, strict=True))
            out[ok] = [recent[key] for key in keys]
            for key in keys:  # most recently used last
                recent[key] = recent.pop(key)
            for key in list(islice(recent, max(0, len(recent) - RECENT_ROWS))):  # the least recently used
                del recent[key]
            return out
        q = torch.from_numpy(queries[ok].astype(np.float32)).to(self.device, torch.float64)
        means = []
        with torch.no_grad():
            for s in range(0, len(q), 256):
                best: torch.Tensor | None = None
                for b in range(0, len(self._bank), chunk):
                    d = torch.cdist(q[s : s + 256], self._bank[b : b + chunk])
                    best = d if best is None else torch.cat([best, d], dim=1)
                    best = torch.topk(best, min(kk, best.shape[1]), dim=1, largest=False).values
                assert best is not None
                means.append(best.mean(dim=1))
        out[ok] = torch.cat(means).cpu().numpy()
        return out

    def _distance_numpy(self, q: np.ndarray, k: int, chunk: int) -> np.ndarray:
        """Exact k-NN on the CPU: candidates by a float32 product, the k nearest refined in float64.

        The float32 search keeps the `k + CANDIDATE_MARGIN` nearest rows by the expanded distance; a
        true neighbour is missed only when more than the margin of rows lie within float32 rounding
        (~1e-6 of |q - mean|^2) of it, and then the swapped rows are equally near. The kept rows'
        distances are computed directly in float64, so the result matches the float64 search.
        One BLAS thread: the calls are tiny (a frame's objects x a few thousand rows), and OpenBLAS'
        threads waiting on cores busy with other stages cost far more than the arithmetic (two
        orders of magnitude on 2 busy cores; bench/results/README.md).
        """
        m = min(len(self._bank32), k + CANDIDATE_MARGIN)
        out = np.empty(len(q))
        q32 = (q - self._mean).astype(np.float32)
        qn = (q32 * q32).sum(axis=1)
        with self.blas:
            for s in range(0, len(q), 256):
                cand_i = self._candidates(q32[s : s + 256], qn[s : s + 256], m, chunk)
                diff = q[s : s + 256, None, :] - self._bank_np[cand_i]
                d = np.sqrt(np.einsum("qmd,qmd->qm", diff, diff))
                out[s : s + 256] = np.partition(d, k - 1, axis=1)[:, :k].mean(axis=1)
        return out

    def _candidates(self, q32: np.ndarray, qn: np.ndarray, m: int, chunk: int) -> np.ndarray:
        """(Q, m) bank rows nearest each query by the float32 expansion, chunk by chunk of the bank."""
        bank = self._bank32
        if len(bank) <= chunk:  # one chunk (a fitted model's 4000 rows): the partition's columns are rows
            d2 = qn[:, None] + self._norms32[None]
            d2 -= 2.0 * (q32 @ bank.T)
            if d2.shape[1] > m:
                return np.argpartition(d2, m - 1, axis=1)[:, :m]
            return np.broadcast_to(np.arange(d2.shape[1]), d2.shape)
        cand_d: np.ndarray | None = None
        cand_i: np.ndarray | None = None
        for b in range(0, len(bank), chunk):
            d2 = qn[:, None] + self._norms32[b : b + chunk][None]
            d2 -= 2.0 * (q32 @ bank[b : b + chunk].T)
            idx = np.broadcast_to(np.arange(b, b + d2.shape[1]), d2.shape)
            if cand_d is not None and cand_i is not None:
                d2, idx = np.concatenate([cand_d, d2], axis=1), np.concatenate([cand_i, idx], axis=1)
            if d2.shape[1] > m:
                keep = np.argpartition(d2, m - 1, axis=1)[:, :m]
                d2, idx = np.take_along_axis(d2, keep, axis=1), np.take_along_axis(idx, keep, axis=1)
            cand_d, cand_i = d2, idx
        assert cand_i is not None
        return cand_i
