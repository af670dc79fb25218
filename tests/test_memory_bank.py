"""MemoryBank's CPU k-NN (float32 search, float64 refinement) against brute-force float64 distances."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from threadpoolctl import threadpool_info

from stages.normality.memory import CANDIDATE_MARGIN, MemoryBank

CPU = torch.device("cpu")


def brute_force(bank: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """Mean distance to the k nearest rows, each distance computed directly in float64."""
    rows = bank.astype(np.float32).astype(np.float64)
    q = queries.astype(np.float32).astype(np.float64)
    return np.array([np.sort(np.linalg.norm(rows - x, axis=1))[:k].mean() for x in q])


def unit_rows(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    x = np.abs(rng.standard_normal((n, dim)))  # like the motion histograms / pooled features: one orthant
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def banks(kind: str, rng: np.random.Generator) -> np.ndarray:
    """Banks shaped like a fitted model's (4000 rows; motion 32-d, pose 34-d, appearance 256-d)."""
    if kind == "motion":
        return unit_rows(rng, 4000, 32)
    if kind == "appearance":
        return unit_rows(rng, 4000, 256)
    if kind == "pose_far_from_origin":  # large common offset: the float32 expansion's worst case
        return 50.0 + rng.standard_normal((4000, 34))
    if kind == "duplicates":  # ties: far more equal rows than the candidate margin
        return np.repeat(unit_rows(rng, 40, 32), 100, axis=0)
    raise ValueError(kind)


@pytest.mark.parametrize("kind", ["motion", "appearance", "pose_far_from_origin", "duplicates"])
@pytest.mark.parametrize(("k", "chunk"), [(1, 4096), (5, 4096), (5, 777), (20, 1500)])
def test_cpu_knn_matches_float64(kind: str, k: int, chunk: int) -> None:
    rng = np.random.default_rng(k + chunk)
    rows = banks(kind, rng)
    picks = rng.choice(len(rows), 40)
    near = rows[picks] + rng.normal(0, 1e-3, (40, rows.shape[1]))  # close neighbours: small distances
    queries = np.concatenate([rows[picks[:10]], near, rows[picks[:10]] + 1.0])  # exact, near, far
    queries[3] = np.nan
    got = MemoryBank(rows, CPU).distance(queries, k, chunk=chunk)
    want = brute_force(rows, queries, k)
    assert np.isnan(got[3])
    ok = np.arange(len(queries)) != 3
    np.testing.assert_allclose(got[ok], want[ok], rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("n_rows", [1, CANDIDATE_MARGIN, CANDIDATE_MARGIN + 3])
def test_cpu_knn_small_banks(n_rows: int) -> None:
    rng = np.random.default_rng(n_rows)
    rows, queries = rng.standard_normal((n_rows, 8)), rng.standard_normal((5, 8))
    got = MemoryBank(rows, CPU).distance(queries, 5)
    np.testing.assert_allclose(got, brute_force(rows, queries, min(5, n_rows)), rtol=1e-9)


def test_cpu_knn_leaves_blas_threads_as_they_were() -> None:
    rng = np.random.default_rng(0)
    before = [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]
    MemoryBank(unit_rows(rng, 4000, 32), CPU).distance(unit_rows(rng, 8, 32), 5)
    assert [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"] == before


@pytest.mark.parametrize("kind", ["motion", "appearance"])
def test_repeated_rows_of_frames_get_the_distances_of_one_call(kind: str) -> None:
    """Frames whose rows repeat (a track's cached embedding) get, row for row, the distances the whole
    sequence gets in one call: remembered rows change nothing, and the memory stays bounded."""
    from stages.normality.memory import RECENT_ROWS

    rng = np.random.default_rng(1)
    rows = banks(kind, rng)
    pool = rows[rng.choice(len(rows), 700)] + rng.normal(0, 1e-3, (700, rows.shape[1]))
    frames = [pool[rng.choice(700, int(rng.integers(1, 15)))] for _ in range(150)]  # rows repeat
    bank = MemoryBank(rows, CPU)
    got = np.concatenate([bank.distance(f, 5) for f in frames])
    want = MemoryBank(rows, CPU).distance(np.concatenate(frames), 5)  # one call: nothing remembered
    np.testing.assert_array_equal(got, want)
    assert len(bank._recent) == RECENT_ROWS  # more distinct rows than it keeps
    k3 = bank.distance(frames[-1], 3)  # k is part of what is remembered
    np.testing.assert_array_equal(k3, MemoryBank(rows, CPU).distance(frames[-1], 3))
