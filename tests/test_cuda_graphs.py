"""CUDA-graph replay helpers that run anywhere (the replay itself is tested in test_cuda_paths.py)."""

from __future__ import annotations

import pytest
import torch

from stages.cuda_graphs import GraphedModule, bucket


@pytest.mark.parametrize(
    "n, max_batch, expected",
    [(1, 16, 1), (2, 16, 2), (3, 16, 4), (5, 16, 8), (9, 16, 16), (16, 16, 16), (20, 16, 20), (5, 6, 6)],
)
def test_bucket(n: int, max_batch: int, expected: int) -> None:
    assert bucket(n, max_batch) == expected


def test_cpu_tensors_run_eagerly() -> None:
    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU()).eval()
    graphed = GraphedModule(module, (3, 16, 16), select=lambda y: y)
    x = torch.rand(3, 3, 16, 16)
    with torch.inference_mode():
        torch.testing.assert_close(graphed(x), module(x))
    assert graphed.graphs == 0 and graphed.eager_calls == 1
