"""Top-down pose on upscaled Ped2 person crops with the real yolo11n-pose weights."""

from __future__ import annotations

import time

import cv2
import numpy as np
import pytest
from conftest import POSE, TEST004_170_PEOPLE, ped2_test_frames

from pipeline.config import PoseConfig
from pipeline.errors import PacketError
from pipeline.packets import Detections, Frame, FramePacket, SourceEvent
from stages.pose import PoseEstimator, PoseStage

# Test004 frame 170, hand-checked people 29-37 px tall (the fifth is 26 px)
PEOPLE = TEST004_170_PEOPLE[:4]
HEAD, ANKLES = slice(0, 7), slice(15, 17)  # nose, eyes, ears, shoulders (back views hide the face)


def frame170() -> np.ndarray:
    return ped2_test_frames("Test004", 170, 171)[0]


@pytest.fixture(scope="module")
def estimator() -> PoseEstimator:
    return PoseEstimator.from_config(PoseConfig(model=str(POSE), device="cpu"))


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    return frame170()


def plausible(kp: np.ndarray, conf: np.ndarray) -> None:
    sure = conf > 0.3
    assert sure.sum() >= 8, conf
    assert ((kp[sure] > -0.15) & (kp[sure] < 1.15)).all(), kp[sure]  # inside the box (small margin)
    head = kp[HEAD, 1][sure[HEAD]].mean()
    ankles = kp[ANKLES, 1][sure[ANKLES]].mean()
    assert head < 0.35 and ankles > 0.7, (head, ankles)


def test_crops_give_plausible_poses(estimator: PoseEstimator, image: np.ndarray) -> None:
    """All four found in one batched call; measured: all keypoints with conf > 0.3 inside the box."""
    kp, conf = estimator.estimate(image, np.array(PEOPLE, np.float32))
    assert kp.shape == (4, 17, 2) and conf.shape == (4, 17)
    for k, c in zip(kp, conf, strict=True):
        plausible(k, c)


def test_large_person_uses_full_frame(estimator: PoseEstimator, image: np.ndarray) -> None:
    """A person filling > full_frame_min_height of the picture goes through the full-frame path."""
    x1, y1, x2, y2 = PEOPLE[0]
    window = image[y1 - 20 : y2 + 20, x1 - 30 : x2 + 30]
    big = cv2.resize(window, None, fx=4, fy=4, interpolation=cv2.INTER_CUBIC)
    box = np.array([[30 * 4, 20 * 4, (x2 - x1 + 30) * 4, (y2 - y1 + 20) * 4]], np.float32)
    assert (box[0, 3] - box[0, 1]) / big.shape[0] > estimator.full_frame_min_height
    kp, conf = estimator.estimate(big, box)
    plausible(kp[0], conf[0])


def test_empty_and_wrong_input(estimator: PoseEstimator, image: np.ndarray) -> None:
    kp, conf = estimator.estimate(image, np.zeros((0, 4), np.float32))
    assert kp.shape == (0, 17, 2) and conf.shape == (0, 17)
    with pytest.raises(PacketError, match=r"expected boxes of shape \(N, 4\)"):
        estimator.estimate(image, np.zeros((3, 5), np.float32))
    with pytest.raises(PacketError, match="uint8 image"):
        estimator.estimate(image[..., 0], np.zeros((0, 4), np.float32))


def _packet(index: int, image: np.ndarray, dets: Detections) -> FramePacket:
    return FramePacket(Frame("cam", index, index / 10, image, time.time()), detections=dets)


@pytest.mark.parametrize("every_k", [1, 3])
def test_stage_tracked_persons_only_and_reuse(
    estimator: PoseEstimator, image: np.ndarray, every_k: int
) -> None:
    names = ("person", "bicycle")
    dets = Detections(
        xyxy=np.array([*PEOPLE[:2], [228, 149, 263, 167], PEOPLE[2]], np.float32),
        class_id=np.array([0, 0, 1, 0], np.int32),
        confidence=np.full(4, 0.8, np.float32),
        track_id=np.array([5, 6, 7, -1], np.int64),
        class_names=names,
    )
    stage = PoseStage(estimator, every_k_frames=every_k)
    stage.on_source_added(SourceEvent("cam", "added"))
    first = _packet(0, image, dets)
    stage.process(first)
    assert first.poses is not None
    assert first.poses.track_id.tolist() == [5, 6] and first.poses.detection_index.tolist() == [0, 1]
    # two frames later: the same people shifted 2 px; with k=3 the pose is reused (frame 2 is neither
    # track's phase: (2 + 5) % 3, (2 + 6) % 3 != 0), with k=1 re-estimated
    moved = Detections(dets.xyxy + 2, dets.class_id, dets.confidence, dets.track_id, names)
    second = _packet(2, np.roll(image, (2, 2), axis=(0, 1)), moved)
    stage.process(second)
    assert second.poses is not None and second.poses.track_id.tolist() == [5, 6]
    same = np.array_equal(first.poses.keypoints, second.poses.keypoints)
    assert same == (every_k > 1)
    black = _packet(3, np.zeros_like(image), Detections.empty(names))
    stage.process(black)
    assert black.poses is not None and len(black.poses) == 0
    stage.on_source_eos(SourceEvent("cam", "eos"))
    assert "cam" not in stage._cache


@pytest.mark.parametrize("min_box_area", [0.0, 600.0, 1024.0, 1e6])
def test_stage_gives_no_pose_to_people_below_min_box_area(
    estimator: PoseEstimator, image: np.ndarray, min_box_area: float
) -> None:
    """Keypoints only for people whose box is at least `min_box_area` px^2 (Ped2's are 300-900 px^2)."""
    boxes = np.array(PEOPLE, np.float32)
    dets = Detections(
        xyxy=boxes,
        class_id=np.zeros(len(boxes), np.int32),
        confidence=np.full(len(boxes), 0.8, np.float32),
        track_id=np.arange(1, len(boxes) + 1, dtype=np.int64),
        class_names=("person",),
    )
    stage = PoseStage(estimator, min_box_area=min_box_area)
    stage.on_source_added(SourceEvent("cam", "added"))
    packet = _packet(0, image, dets)
    stage.process(packet)
    assert packet.poses is not None
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    expected = [int(t) for t, a in zip(dets.track_id, area, strict=True) if a >= min_box_area]
    assert packet.poses.track_id.tolist() == expected
    if min_box_area == 600.0:  # splits these people (495-666 px^2); 1024 leaves none of them a pose
        assert 0 < len(expected) < len(boxes)


def test_pose_config_leaves_out_people_under_32x32_by_default() -> None:
    assert PoseConfig().min_box_area == 32 * 32


def test_torch_threads_set_on_start(estimator: PoseEstimator) -> None:
    import torch

    before = torch.get_num_threads()
    try:
        torch.set_num_threads(3)  # neither the default nor the value asked for: the stage must set it
        PoseStage(estimator, torch_threads=2).on_start()
        assert torch.get_num_threads() == 2
        torch.set_num_threads(3)
        PoseStage(estimator).on_start()  # 0: left alone
        assert torch.get_num_threads() == 3
    finally:
        torch.set_num_threads(before)


def test_still_person_keeps_pose_longer(image: np.ndarray) -> None:
    """every_k 2, still_k 6: the still person is re-estimated every 6th frame, the moving one (box
    shifted 0, 0.06, 0.12, 0.06, 0, ... of its height: 0.12 between poses) every 2nd; both keep a
    pose on every frame."""
    estimator = PoseEstimator.from_config(PoseConfig(model=str(POSE), device="cpu"))
    still, walking = np.array(PEOPLE[0], np.float32), np.array(PEOPLE[1], np.float32)
    runs: dict[str, list[int]] = {"still": [], "walking": []}
    estimate = estimator.estimate
    index = 0

    def counted(frame: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        for box in boxes:
            runs["still" if np.array_equal(box, still) else "walking"].append(index)
        return estimate(frame, boxes)

    estimator.estimate = counted  # type: ignore[method-assign]
    stage = PoseStage(estimator, every_k_frames=2, still_k_frames=6, still_box_change=0.1)
    step = 0.06 * (walking[3] - walking[1])
    for index in range(12):
        dx = step * (0, 1, 2, 1)[index % 4]
        moved = walking + np.array([dx, 0, dx, 0], np.float32)
        dets = Detections(
            np.stack([still, moved]),
            np.zeros(2, np.int32),
            np.full(2, 0.8, np.float32),
            np.array([1, 2], np.int64),
            ("person",),
        )
        packet = _packet(index, image, dets)
        stage.process(packet)
        assert packet.poses is not None and packet.poses.track_id.tolist() == [1, 2]
    assert runs == {"still": [0, 6], "walking": [0, 2, 4, 6, 8, 10]}


@pytest.mark.parametrize("every_k", [2, 3])
def test_tracks_refresh_in_phases(image: np.ndarray, every_k: int) -> None:
    """Four people appearing on one frame: afterwards each is refreshed every k-th frame, on the
    frames of its phase (track id mod k), so frames carry ~4/k crops each instead of 4, 0, 0, ..."""
    estimator = PoseEstimator.from_config(PoseConfig(model=str(POSE), device="cpu"))
    crops: list[int] = []
    estimate = estimator.estimate

    def counted(frame: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        crops[-1] += len(boxes)
        return estimate(frame, boxes)

    estimator.estimate = counted  # type: ignore[method-assign]
    stage = PoseStage(estimator, every_k_frames=every_k)
    n = len(PEOPLE)
    dets = Detections(
        np.array(PEOPLE, np.float32),
        np.zeros(n, np.int32),
        np.full(n, 0.8, np.float32),
        np.arange(10, 10 + n, dtype=np.int64),
        ("person",),
    )
    for index in range(1 + 3 * every_k):
        crops.append(0)
        packet = _packet(index, image, dets)
        stage.process(packet)
        assert packet.poses is not None and len(packet.poses) == n
    assert crops[0] == n
    steady = crops[1 + every_k :]  # after each track's first refresh on its phase
    assert sum(steady) == n * len(steady) // every_k and max(steady) <= -(-n // every_k), crops
