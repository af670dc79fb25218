"""Appearance embeddings from the yolo11n-pose backbone, and the three perception stages in the runner."""

from __future__ import annotations

import time

import numpy as np
import pytest
from conftest import (
    DETECTOR,
    POSE,
    TEST004_170_BICYCLE,
    TEST004_170_CART,
    TEST004_170_PEOPLE,
    ped2_test_frames,
)

from pipeline.config import AppearanceConfig, DetectorConfig, PoseConfig
from pipeline.errors import ModelError, PacketError
from pipeline.harness import FramesSource, run_stages
from pipeline.packets import Detections, Frame, FramePacket, SourceEvent
from pipeline.runner import RunnerOptions
from stages.appearance import AppearanceEncoder, AppearanceStage
from stages.detect import DetectStage
from stages.pose import PoseStage
from stages.yolo_loading import load_yolo

# Test004 frame 170 (hand-checked): people, the bicycle and the cart
PEOPLE, BICYCLE, CART = TEST004_170_PEOPLE, TEST004_170_BICYCLE, TEST004_170_CART


@pytest.fixture(scope="module")
def encoder() -> AppearanceEncoder:
    return AppearanceEncoder.from_config(AppearanceConfig(model=str(POSE), device="cpu"))


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    return ped2_test_frames("Test004", 170, 171)[0]


def test_embeddings_separate_people_from_vehicles(encoder: AppearanceEncoder, image: np.ndarray) -> None:
    """Measured (layer 8, 64 px): person-person cosine 0.67 mean, person-(bicycle, cart) 0.47."""
    v = encoder.encode(image, np.array([*PEOPLE, BICYCLE, CART], np.float32))
    assert v.shape == (7, encoder.dim) and v.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    sim = v @ v.T
    n = len(PEOPLE)
    person_person = sim[:n, :n][~np.eye(n, dtype=bool)].mean()
    person_vehicle = sim[:n, n:].mean()
    assert person_person - person_vehicle > 0.1, (person_person, person_vehicle)


def test_empty_and_wrong_input(encoder: AppearanceEncoder, image: np.ndarray) -> None:
    assert encoder.encode(image, np.zeros((0, 4), np.float32)).shape == (0, encoder.dim)
    with pytest.raises(PacketError, match=r"expected boxes of shape \(N, 4\)"):
        encoder.encode(image, np.zeros((4,), np.float32))
    with pytest.raises(PacketError, match="uint8 image"):
        encoder.encode(image.astype(np.float32), np.zeros((0, 4), np.float32))


def test_export_without_backbone_is_model_error() -> None:
    with pytest.raises(ModelError, match=r"needs a PyTorch \.pt model"):
        AppearanceEncoder(load_yolo(str(DETECTOR), "detect", "cpu", 640))


def test_three_stages_in_the_runner(encoder: AppearanceEncoder) -> None:
    """detect -> pose, appearance over 12 Ped2 frames plus a black frame, through the real runner."""
    images = [*ped2_test_frames("Test004", 160, 172), np.zeros((240, 360, 3), np.uint8)]
    frames = [Frame("ped2", i, i / 10.0, im, time.time()) for i, im in enumerate(images)]
    # the detector on every frame: this graph has no flow stage to carry boxes between runs
    detect = DetectStage.from_config(DetectorConfig(model=str(DETECTOR), device="cpu", every_k_frames=1))
    pose = PoseStage.from_config(
        PoseConfig(model=str(POSE), device="cpu", every_k_frames=2, min_box_area=0)  # Ped2's people are small
    )
    appearance = AppearanceStage(encoder)
    # replay is lossless; a generous drain timeout because a shared 2-core CI box can be slow
    options = RunnerOptions(drain_timeout_s=300.0)
    packets, report = run_stages([detect, pose, appearance], [FramesSource("ped2", frames)], options=options)
    assert report.clean_shutdown and not any(report.stage_errors.values()), report
    assert [p.frame.index for p in packets] == list(range(len(frames)))
    for p in packets[:-1]:
        assert p.detections is not None and p.poses is not None and p.appearance is not None
        assert len(p.detections) >= 8 and (p.detections.track_id >= 0).all()
        persons = p.detections.class_id == p.detections.class_names.index("person")
        assert set(p.poses.track_id.tolist()) <= set(p.detections.track_id[persons].tolist())
        assert len(p.poses) >= 0.7 * persons.sum()
        np.testing.assert_array_equal(p.appearance.track_id, p.detections.track_id)
        assert p.appearance.vectors.shape == (len(p.detections), encoder.dim)
    last = packets[-1]
    assert last.detections is not None and len(last.detections) == 0
    assert last.poses is not None and len(last.poses) == 0
    assert last.appearance is not None and len(last.appearance) == 0
    # per-camera state was freed at end of stream
    assert detect.cameras == () and "ped2" not in pose._cache


def test_every_k_reuses_cached_embeddings(encoder: AppearanceEncoder, image: np.ndarray) -> None:
    names = ("person", "bicycle")

    def packet(index: int, shift: int, rows: int) -> FramePacket:
        boxes = np.array([*PEOPLE[:rows], BICYCLE], np.float32) + shift
        dets = Detections(
            xyxy=boxes,
            class_id=np.array([0] * rows + [1], np.int32),
            confidence=np.full(rows + 1, 0.8, np.float32),
            track_id=np.array([*range(10, 10 + rows), 99], np.int64),
            class_names=names,
        )
        # same picture, boxes moved: the crops (and so the embeddings) change
        return FramePacket(Frame("cam", index, index / 10, image, time.time()), detections=dets)

    stage = AppearanceStage(encoder, every_k_frames=2)
    stage.on_source_added(SourceEvent("cam", "added"))
    a, b, c = packet(0, 0, 2), packet(1, 2, 3), packet(2, 4, 3)
    for p in (a, b, c):
        stage.process(p)
    assert a.appearance is not None and b.appearance is not None and c.appearance is not None
    assert b.appearance.track_id.tolist() == [10, 11, 12, 99]
    # frame 1: the old tracks reuse frame 0's vectors; the new track (12) is embedded now
    np.testing.assert_array_equal(b.appearance.vectors[[0, 1, 3]], a.appearance.vectors)
    fresh = encoder.encode(b.frame.image, b.detections.xyxy[[2]])  # type: ignore[union-attr]
    np.testing.assert_allclose(b.appearance.vectors[2], fresh[0], atol=1e-5)
    # frame 2: tracks 10, 11, 99 are due again (k=2), 12 is not
    assert not np.array_equal(c.appearance.vectors[0], a.appearance.vectors[0])
    np.testing.assert_array_equal(c.appearance.vectors[2], b.appearance.vectors[2])
    stage.on_source_eos(SourceEvent("cam", "eos"))
    assert "cam" not in stage._cache


def test_factory_rejects_an_appearance_dim_that_differs_from_the_encoder() -> None:
    """A mismatch is one ConfigError at start-up, not a PacketError on every frame."""
    from pipeline.config import AttributesConfig, VigilConfig
    from pipeline.errors import ConfigError
    from stages.factory import perception_stages

    config = VigilConfig(
        detector=DetectorConfig(model=str(DETECTOR)),
        pose=PoseConfig(enabled=False),
        appearance=AppearanceConfig(model=str(POSE), layer=8),
        attributes=AttributesConfig(appearance_dim=64),
    )
    with pytest.raises(ConfigError, match=r"appearance_dim is 64 .* gives 256"):
        perception_stages(config)
