"""Shared test fixtures: offline ultralytics, paths to the shared footage and weights."""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import av
import numpy as np
import pytest
from rtsp_server import LoopbackCamera, gi_missing_reason

# Nothing may reach the internet: ultralytics must not try to download or phone home.
os.environ["YOLO_OFFLINE"] = "1"
os.environ.setdefault("YOLO_CONFIG_DIR", tempfile.mkdtemp(prefix="vigil-yolo-cfg-"))
os.environ.setdefault("YOLO_VERBOSE", "False")

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("VIGIL_SHARED", REPO.parent / "shared")).resolve()
PED2 = SHARED / "data" / "ucsd_ped2"
MODELS = SHARED / "models"
DETECTOR = MODELS / "yolo11n_int8_openvino_model"
POSE = MODELS / "yolo11n-pose.pt"

# Test004 frame 170, hand-checked (tests/data/ped2_hand_checked.json): five people, the bicycle, the cart
TEST004_170_PEOPLE = [
    [250, 187, 268, 224],
    [145, 129, 160, 162],
    [23, 109, 42, 138],
    [108, 111, 125, 142],
    [64, 106, 83, 132],
]
TEST004_170_BICYCLE, TEST004_170_CART = [228, 149, 263, 167], [107, 197, 172, 240]


def ped2_test_frames(clip: str, start: int, stop: int) -> list[np.ndarray]:
    """Frames [start, stop) of a Ped2 test clip as BGR arrays."""
    with av.open(str(PED2 / "test" / f"{clip}.mp4")) as c:
        out = []
        for i, f in enumerate(c.decode(video=0)):
            if i >= stop:
                break
            if i >= start:
                out.append(f.to_ndarray(format="bgr24"))
    if len(out) < stop - start:
        raise AssertionError(f"{clip} has fewer than {stop} frames")
    return out


@pytest.fixture(scope="session")
def ped2() -> Path:
    if not PED2.is_dir():
        pytest.fail(f"UCSD Ped2 not found at {PED2} (set VIGIL_SHARED)")
    return PED2


@pytest.fixture(scope="session")
def models_dir() -> Path:
    if not MODELS.is_dir():
        pytest.fail(f"models not found at {MODELS} (set VIGIL_SHARED)")
    return MODELS


@pytest.fixture(scope="module")
def camsim() -> None:
    """Skip (with the reason) where the system python cannot run gst-rtsp-server."""
    reason = gi_missing_reason()
    if reason is not None:
        pytest.skip(reason)


@pytest.fixture
def camera(camsim: None, ped2: Path) -> Iterator[LoopbackCamera]:
    """The real RTSP camera simulator on a free loopback port, looping Ped2's Test001."""
    cam = LoopbackCamera(ped2 / "test" / "Test001.mp4").start()
    try:
        yield cam
    finally:
        cam.stop()


def wait_for(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    """Poll `condition` until true; fail naming `what` after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        time.sleep(0.02)
