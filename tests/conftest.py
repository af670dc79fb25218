"""Shared test fixtures: offline ultralytics, paths to the shared footage and weights."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

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
