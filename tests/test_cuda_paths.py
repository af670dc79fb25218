"""The GPU code paths: pose, appearance, k-NN memory bank, coreset, dynamics and the full graph on a device.

The device is `VIGIL_TEST_DEVICE` (default "cuda"); without CUDA these tests skip, so CI stays on CPU.
`VIGIL_TEST_DEVICE=cpu` runs the same code on the CPU (a dry run of the GPU check). Each result on the
device is compared with the same computation on the CPU. The detector stays the INT8 OpenVINO export on
the CPU (no PyTorch detector weights offline).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import (
    DETECTOR,
    PED2,
    POSE,
    TEST004_170_BICYCLE,
    TEST004_170_CART,
    TEST004_170_PEOPLE,
    ped2_test_frames,
)

from pipeline.config import (
    AppearanceConfig,
    AttributesConfig,
    DetectorConfig,
    PoseConfig,
    ScoringConfig,
    VigilConfig,
)
from pipeline.harness import run_stages
from pipeline.sources.file import FileSource
from stages.appearance import AppearanceEncoder
from stages.normality import NormalityModel, fit_normality
from stages.normality.dynamics import DynamicsPredictor
from stages.normality.memory import MemoryBank, coreset
from stages.pose import PoseEstimator
from stages.score import Scorer

DEVICE = os.environ.get("VIGIL_TEST_DEVICE", "cuda")
CPU = torch.device("cpu")
DEV = torch.device(DEVICE)

pytestmark = pytest.mark.skipif(
    DEVICE.startswith("cuda") and not torch.cuda.is_available(),
    reason=f"VIGIL_TEST_DEVICE={DEVICE} but CUDA is not available",
)

PEOPLE, BICYCLE, CART = TEST004_170_PEOPLE, TEST004_170_BICYCLE, TEST004_170_CART


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    return ped2_test_frames("Test004", 170, 171)[0]


def assert_on_device() -> None:
    """On CUDA, something was allocated there (the model just built lives on the GPU)."""
    if DEV.type == "cuda":
        assert torch.cuda.memory_allocated() > 0


def test_device_is_what_was_asked() -> None:
    x = torch.ones(4, device=DEV)
    assert x.device.type == DEV.type and float(x.sum()) == 4.0


def test_pose_on_device_matches_cpu(image: np.ndarray) -> None:
    boxes = np.array([*PEOPLE, [0, 0, 360, 240]], np.float32)  # the last one takes the full-frame path
    on_dev = PoseEstimator.from_config(PoseConfig(model=str(POSE), device=DEVICE))
    # the CPU reference is the PyTorch network itself (an OpenVINO export may run in bf16 on the CPU)
    on_cpu = PoseEstimator.from_config(PoseConfig(model=str(POSE), device="cpu", format="pytorch"))
    assert_on_device()
    kd, cd = on_dev.estimate(image, boxes)
    kc, cc = on_cpu.estimate(image, boxes)
    found = ~np.isnan(kc[:, 0, 0])
    assert found[: len(PEOPLE)].sum() >= 4  # the people have a pose
    np.testing.assert_array_equal(~np.isnan(kd[:, 0, 0]), found)
    sure = (cc > 0.5) & (cd > 0.5)
    assert sure.sum() > 20
    assert np.median(np.abs(kd - kc)[sure]) < 0.02  # box-normalised units
    assert np.abs(cd - cc).max() < 0.1


def test_appearance_on_device_matches_cpu(image: np.ndarray) -> None:
    boxes = np.array([*PEOPLE, BICYCLE, CART], np.float32)
    on_dev = AppearanceEncoder.from_config(AppearanceConfig(model=str(POSE), device=DEVICE))
    on_cpu = AppearanceEncoder.from_config(AppearanceConfig(model=str(POSE), device="cpu", format="pytorch"))
    assert_on_device()
    vd, vc = on_dev.encode(image, boxes), on_cpu.encode(image, boxes)
    assert vd.shape == vc.shape == (7, on_cpu.dim) and vd.dtype == np.float32
    cosine = (vd * vc).sum(axis=1)
    assert cosine.min() > 0.999, cosine


@pytest.mark.parametrize(("k", "dim", "rows"), [(1, 4, 3000), (3, 32, 20_000), (7, 256, 9000)])
def test_knn_on_device_is_exact(k: int, dim: int, rows: int) -> None:
    rng = np.random.default_rng(k)
    bank_rows, queries = rng.standard_normal((rows, dim)), rng.standard_normal((300, dim))
    queries[5] = np.nan
    got = MemoryBank(bank_rows, DEV).distance(queries, k, chunk=4096)
    want = MemoryBank(bank_rows, CPU).distance(queries, k, chunk=4096)
    assert np.isnan(got[5]) and np.isnan(want[5])
    np.testing.assert_allclose(got, want, rtol=1e-9)


def test_greedy_coreset_on_device_covers_like_cpu() -> None:
    x = np.concatenate([np.random.default_rng(0).standard_normal((5000, 16)), [[50.0] * 16]])
    on_dev, on_cpu = coreset(x, 300, "greedy", 5, DEV), coreset(x, 300, "greedy", 5, CPU)
    assert len(on_dev) == 300 and len(np.unique(on_dev)) == 300 and 5000 in on_dev

    def radius(keep: np.ndarray) -> float:  # farthest point from its nearest kept row
        return float(torch.cdist(torch.from_numpy(x), torch.from_numpy(x[keep])).min(dim=1).values.max())

    assert radius(on_dev) < 1.05 * radius(on_cpu)


def test_cuda_graphs_replay_equals_eager_across_buckets() -> None:
    """Graphs captured up front give the eager outputs for every batch size, also when buckets
    alternate (each graph reads its own module copy); other shapes and larger batches run eagerly."""
    from ultralytics import YOLO

    from stages.cuda_graphs import GraphedModule

    module = YOLO(str(POSE), task="pose").model.fuse(verbose=False).to(DEVICE).eval().float()
    tf32 = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False  # TF32 convs differ by algorithm; compare the fp32 arithmetic
    try:
        graphed = GraphedModule(module, (3, 128, 128), max_batch=32)
        rng = np.random.default_rng(0)
        with torch.inference_mode():
            for n, size in [
                (1, 128),
                (3, 128),
                (8, 128),
                (5, 128),
                (1, 128),
                (16, 128),
                (2, 128),
                (40, 128),
                (3, 96),
            ]:
                x = torch.from_numpy(rng.random((n, 3, size, size), np.float32)).to(DEVICE)
                want = module(x)[0]
                got = graphed(x)
                assert got.shape == want.shape
                torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-3)
    finally:
        torch.backends.cudnn.allow_tf32 = tf32
    if torch.device(DEVICE).type == "cuda":
        assert graphed.graphs == 6 and graphed.eager_calls == 2  # buckets 1..32; n=40 and 96 px eager
    else:
        assert graphed.graphs == 0 and graphed.eager_calls == 9


def _windows(seed: int, n: int = 600) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.normal(0, 1, (n, 1, 2)) + 0.05 * rng.standard_normal((n, 5, 2))  # steady walkers


def test_dynamics_trains_on_device_and_moves_to_cpu() -> None:
    model = DynamicsPredictor.train(_windows(0), 4, 30, seed=3, device=DEV)
    assert next(model.net.parameters()).device.type == DEV.type
    test = _windows(1, 200)
    jerky = test.copy()
    jerky[:, -1] = -jerky[:, -1] * 3
    assert np.median(model.error(jerky)) > 5 * np.median(model.error(test))
    back = DynamicsPredictor.from_arrays(model.to_arrays("dynamics"), "dynamics", CPU)
    np.testing.assert_allclose(back.error(test), model.error(test), rtol=1e-4, atol=1e-6)


@pytest.mark.slow
def test_full_graph_on_device_through_the_runner(tmp_path: Path) -> None:
    """Fit on a Ped2 training clip with the device, then the whole graph over a test clip, live scoring."""
    from pipeline.fitting import collect_samples
    from stages.factory import build_stages

    config = VigilConfig(
        detector=DetectorConfig(model=str(DETECTOR), device="cpu"),
        pose=PoseConfig(model=str(POSE), device=DEVICE),
        appearance=AppearanceConfig(model=str(POSE), device=DEVICE),
        attributes=AttributesConfig(appearance_dim=256),
        scoring=ScoringConfig(device=DEVICE, warmup_s=0),
    )
    samples = collect_samples(config, "ped2", [PED2 / "train" / "Train001.mp4"], max_frames=60)
    fitted = fit_normality(samples, config.scoring, seed=0, grid=config.attributes.grid)
    path = fitted.save(tmp_path / "ped2.npz")
    model = NormalityModel.load(path, device=DEVICE)
    assert_on_device()

    frames = 40
    packets, report = run_stages(
        build_stages(config, {"ped2": model}),
        [FileSource("ped2", PED2 / "test" / "Test004.mp4")],
    )
    assert report.stage_errors == {} and report.source_errors == {}
    assert report.frames_completed["ped2"] == len(packets) == 180
    scored = [p for p in packets if p.scores is not None]
    assert len(scored) == 180 and sum(len(p.scores.track_id) for p in scored) > 100
    assert all(np.isfinite(p.scores.frame_score) and p.scores.frame_score >= 0 for p in scored)
    assert all(p.explanations is not None for p in scored[:frames])

    # the same attributes scored by the model on the CPU: identical up to float rounding
    on_cpu = Scorer(NormalityModel.load(path, device="cpu"), config.scoring)
    on_dev = Scorer(model, config.scoring)
    # The calibrators are empirical survival functions (steps of one held-out rank): a float32
    # difference between the devices' arithmetic can move a raw score across one step (seen on an
    # H200: 1 of 112 scores, 0.1356 vs 0.1389). So: almost all equal, and none more than a few steps apart.
    same, total = 0, 0
    for p in scored[:frames]:
        assert p.attributes is not None and p.scene_graph is not None
        a = on_dev.score(p.attributes, p.scene_graph, p.frame.pts).attribute_scores
        b = on_cpu.score(p.attributes, p.scene_graph, p.frame.pts).attribute_scores
        assert np.array_equal(np.isnan(a), np.isnan(b))
        finite = ~np.isnan(a)
        same += int(np.isclose(a[finite], b[finite], rtol=1e-6, atol=1e-9).sum())
        total += int(finite.sum())
        assert np.all(np.abs(a[finite] - b[finite]) < 0.25)
    assert total > 100 and same / total > 0.97
