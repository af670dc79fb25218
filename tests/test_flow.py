"""FlowStage: DIS optical flow on real Ped2 frames, units, first-frame and bad-input handling."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from pipeline.config import AttributesConfig, FlowConfig
from pipeline.errors import ConfigError, PacketError
from pipeline.harness import FramesSource, run_stages
from pipeline.packets import Detections, FlowField, Frame
from stages.attributes import AttributeExtractor
from stages.flow import DisFlow, FlowEstimator, FlowStage, to_grey


def read_frames(path: Path, start: int, count: int) -> list[np.ndarray]:
    with av.open(str(path)) as container:
        out = []
        for i, frame in enumerate(container.decode(video=0)):
            if i >= start + count:
                break
            if i >= start:
                out.append(frame.to_ndarray(format="bgr24"))
    return out


@pytest.fixture(scope="module")
def train_frames(ped2: Path) -> list[np.ndarray]:
    return read_frames(ped2 / "train" / "Train001.mp4", 20, 6)


def frame(image: np.ndarray, index: int, pts: float, camera: str = "cam") -> Frame:
    return Frame(camera=camera, index=index, pts=pts, image=image, captured_at=time.time())


def motion_masks(images: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Where the 2nd frame differs from the 1st (people moved) and where nothing changed over all frames."""
    grey = [to_grey(im, 1.0).astype(np.int16) for im in images]
    moving = np.abs(grey[1] - grey[0]) > 25
    still = np.max([np.abs(g - grey[0]) for g in grey[1:]], axis=0) < 3
    return moving, still


@pytest.mark.parametrize(
    ("preset", "scale"), [("fast", 1.0), ("fast", 0.5), ("ultrafast", 1.0), ("medium", 0.5)]
)
def test_real_frames_moving_people_have_flow_background_none(
    train_frames: list[np.ndarray], preset: str, scale: float
) -> None:
    est = FlowEstimator(preset, scale)
    first = est(frame(train_frames[0], 0, 0.0))
    assert not first.valid and not first.flow.any()
    second = est(frame(train_frames[1], 1, 0.1))
    assert second.valid and second.dt == pytest.approx(0.1)
    assert second.flow.shape == (round(240 * scale), round(360 * scale), 2)
    assert second.scale == pytest.approx(scale)
    moving, still = motion_masks(train_frames)
    assert moving.sum() > 200 and still.sum() > 0.5 * still.size  # the clip has walkers and a static scene
    mag = cv2.resize(np.linalg.norm(second.flow, axis=2), (360, 240), interpolation=cv2.INTER_NEAREST)
    # walkers move ~1 full-res px per frame at 10 fps (the difference mask also holds their flat insides,
    # where flow is weaker); the static background has almost none
    assert np.median(mag[moving]) > 0.25
    assert np.median(mag[still]) < 0.06
    assert np.median(mag[moving]) > 5 * np.median(mag[still])


def test_downscaled_flow_is_in_full_resolution_pixels(train_frames: list[np.ndarray]) -> None:
    full, half = FlowEstimator("medium", 1.0), FlowEstimator("medium", 0.5)
    for est in (full, half):
        est(frame(train_frames[0], 0, 0.0))
    f1 = full(frame(train_frames[1], 1, 0.1)).flow
    f2 = half(frame(train_frames[1], 1, 0.1)).flow
    moving, _ = motion_masks(train_frames)
    m1 = np.median(np.linalg.norm(f1, axis=2)[moving])
    m2 = np.median(np.linalg.norm(f2, axis=2).repeat(2, 0).repeat(2, 1)[moving])
    assert m2 == pytest.approx(m1, rel=0.35)


def test_dt_from_pts_and_clock_jumps(train_frames: list[np.ndarray]) -> None:
    est = FlowEstimator()
    assert not est(frame(train_frames[0], 0, 5.0)).valid
    assert est(frame(train_frames[2], 2, 5.2)).dt == pytest.approx(0.2)  # a stride of 2 frames
    assert not est(frame(train_frames[3], 3, 1.0)).valid  # the clock went back (reconnect): start over
    assert est(frame(train_frames[4], 4, 1.1)).valid
    small = np.ascontiguousarray(train_frames[5][:120, :180])
    assert not est(frame(small, 5, 1.2)).valid  # the picture size changed


def test_cameras_are_independent(train_frames: list[np.ndarray]) -> None:
    est = FlowEstimator()
    assert not est(frame(train_frames[0], 0, 0.0, "a")).valid
    assert not est(frame(train_frames[0], 0, 0.0, "b")).valid
    assert est(frame(train_frames[1], 1, 0.1, "a")).valid
    est.drop_camera("a")
    assert est.cameras == ("b",)


@pytest.mark.parametrize(
    "image",
    [np.zeros((24, 36), np.uint8), np.zeros((24, 36, 4), np.uint8), np.zeros((24, 36, 3), np.float32)],
    ids=["grey", "bgra", "float"],
)
def test_wrong_image_is_a_packet_error(image: np.ndarray) -> None:
    with pytest.raises(PacketError, match="expected a \\(h, w, 3\\) uint8 image"):
        to_grey(image, 1.0)


def test_mismatched_sizes_are_a_packet_error() -> None:
    with pytest.raises(PacketError, match="differ in size"):
        DisFlow()(np.zeros((24, 36), np.uint8), np.zeros((36, 24), np.uint8))


@pytest.mark.parametrize(
    ("config", "match"), [(FlowConfig(method="raft"), "raft"), (FlowConfig(scale=1.0, preset="fast"), None)]
)
def test_config(config: FlowConfig, match: str | None) -> None:
    if match:
        with pytest.raises(ConfigError, match=match):
            FlowStage(config)
    else:
        assert FlowStage(config).estimator.scale == 1.0


def test_stage_in_runner_frees_camera_state(train_frames: list[np.ndarray]) -> None:
    stage = FlowStage(FlowConfig(scale=0.5))
    frames = [frame(im, i, i / 10) for i, im in enumerate(train_frames)]
    packets, report = run_stages([stage], [FramesSource("cam", frames)])
    assert not report.stage_errors
    assert [p.flow.valid for p in packets if p.flow] == [False] + [True] * (len(frames) - 1)
    assert all(p.flow.flow.shape == (120, 180, 2) for p in packets if p.flow)
    assert stage.estimator.cameras == ()  # freed at end of stream


@pytest.fixture
def restore_opencv_threads() -> Iterator[None]:
    """OpenCV's pool is process-wide: put it back for the other tests."""
    before = cv2.getNumThreads()
    yield
    cv2.setNumThreads(before)


def _flow_and_regions(images: list[np.ndarray], scale: float) -> tuple[list[FlowField], list[np.ndarray]]:
    """Flow fields and moving-region attributes (no detections: every motion is a region) of `images`."""
    flows = FlowEstimator("fast", scale)
    # low thresholds, so Ped2's slow walkers (no detections here) make moving regions
    extractor = AttributeExtractor(AttributesConfig(blob_min_flow=0.2, blob_min_area=0.0005))
    fields, rows = [], []
    for i, im in enumerate(images):
        f = frame(im, i, i / 10)
        field = flows(f)
        attrs = extractor(f, Detections.empty(), field)
        fields.append(field)
        rows.append(np.concatenate([attrs.xyxy, attrs.motion_hist, attrs.flow_speed[:, None]], axis=1))
    return fields, rows


@pytest.mark.parametrize("scale", [1.0, 0.5])
def test_one_opencv_thread_gives_the_same_flow_and_regions(
    train_frames: list[np.ndarray], scale: float, restore_opencv_threads: None
) -> None:
    cv2.setNumThreads(2)
    pooled = _flow_and_regions(train_frames, scale)
    FlowStage(FlowConfig(scale=scale, opencv_threads=1)).on_start()
    assert cv2.getNumThreads() == 1
    single = _flow_and_regions(train_frames, scale)
    assert any(f.valid and float(np.abs(f.flow).max()) > 0.5 for f in single[0])  # people move
    if scale == 1.0:  # and form moving regions (the half-scale grid's are opened away)
        assert sum(len(r) for r in single[1]) > 0
    for a, b in zip(pooled[0], single[0], strict=True):
        assert np.array_equal(a.flow, b.flow)
    for a, b in zip(pooled[1], single[1], strict=True):
        assert np.array_equal(a, b, equal_nan=True)


def test_opencv_threads_zero_leaves_the_pool_alone(restore_opencv_threads: None) -> None:
    cv2.setNumThreads(2)
    FlowStage(FlowConfig(opencv_threads=0)).on_start()
    assert cv2.getNumThreads() == 2


@pytest.mark.parametrize("shape", [(1, 2), (2, 2), (7, 2), (400, 2), (401, 2), (9,), (10,)])
def test_median_is_numpys_to_the_bit(shape: tuple[int, ...]) -> None:
    """`median` (flow vectors of a box, speeds) gives np.median(axis=0) exactly, ties and odd/even counts."""
    from stages.flow import median

    rng = np.random.default_rng(len(shape) * 1000 + shape[0])
    for values in (rng.standard_normal(shape), np.round(rng.standard_normal(shape), 1)):  # ties
        values = values.astype(np.float32)
        want = np.median(values, axis=0)
        got = median(values)
        assert got.dtype == want.dtype and np.array_equal(got, want)
