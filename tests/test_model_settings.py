"""A normality model records the perception settings its footage was measured with; a camera whose
config measures differently is warned about (its scores may be off), naming the settings."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from synthetic import normal_footage

from pipeline.assembly import load_models, stale_settings
from pipeline.config import CameraConfig, ScoringConfig, VigilConfig, perception_settings
from stages.normality import NormalityModel, fit_normality


@pytest.fixture(scope="module")
def model() -> NormalityModel:
    fitted = fit_normality(normal_footage(clips=5, frames=30), ScoringConfig(), seed=0)
    fitted.perception = perception_settings(VigilConfig())
    return fitted


@pytest.mark.parametrize(
    ("change", "stale"),
    [
        ({}, []),
        ({"pose": {"min_box_area": 0.0}}, ["pose.min_box_area: 1024.0 -> 0.0"]),
        ({"detector": {"imgsz": 960}}, ["detector.imgsz: 640 -> 960"]),
        ({"attributes": {"grid": [4, 4]}}, ["attributes.grid: [6, 8] -> [4, 4]"]),
        ({"detector": {"device": "cuda"}, "pose": {"format": "onnx"}}, []),  # how it runs, not what
        ({"flow": {"opencv_threads": 4}}, []),  # threads: how it runs, not what
        ({"scoring": {"knn_k": 5}, "events": {"start_score": 4.0}}, []),  # not perception
    ],
)
def test_stale_settings_name_what_perception_measures_differently(
    model: NormalityModel, change: dict[str, dict[str, object]], stale: list[str]
) -> None:
    assert stale_settings(model, VigilConfig.model_validate(change)) == stale


def test_settings_survive_save_and_load(model: NormalityModel, tmp_path: Path) -> None:
    loaded = NormalityModel.load(model.save(tmp_path / "cam.npz"))
    assert loaded.perception == model.perception and loaded.perception["pose.min_box_area"] == 1024.0


def test_a_model_without_recorded_settings_is_not_stale(model: NormalityModel, tmp_path: Path) -> None:
    old = NormalityModel.load(model.save(tmp_path / "cam.npz"))
    old.perception = {}
    assert stale_settings(old, VigilConfig.model_validate({"pose": {"min_box_area": 0.0}})) == []


def test_runtime_and_retired_settings_recorded_by_older_models_are_not_stale(
    model: NormalityModel, tmp_path: Path
) -> None:
    """Models fitted before flow.opencv_threads counted as runtime and flow.enabled was removed."""
    old = NormalityModel.load(model.save(tmp_path / "cam.npz"))
    old.perception = {**old.perception, "flow.enabled": True, "flow.opencv_threads": 1}
    assert stale_settings(old, VigilConfig()) == []
    assert stale_settings(old, VigilConfig.model_validate({"flow": {"scale": 0.5}})) == [
        "flow.scale: 1.0 -> 0.5"
    ]


@pytest.mark.parametrize(("min_box_area", "warned"), [(1024.0, False), (0.0, True)])
def test_loading_a_camera_model_warns_when_settings_differ(
    model: NormalityModel, tmp_path: Path, caplog: pytest.LogCaptureFixture, min_box_area: float, warned: bool
) -> None:
    path = model.save(tmp_path / "cam.npz")
    config = VigilConfig.model_validate({"pose": {"min_box_area": min_box_area}})
    camera = CameraConfig(name="cam", url="clip.mp4", model=path)
    with caplog.at_level(logging.WARNING, logger="vigil"):
        models = load_models(config, [camera])
    assert "cam" in models
    records = [r for r in caplog.records if "other perception settings" in r.getMessage()]
    assert bool(records) == warned
    if warned:
        assert "pose.min_box_area: 1024.0 -> 0.0" in str(records[0].__dict__.get("settings"))
