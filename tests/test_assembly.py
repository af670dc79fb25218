"""The composition root builds one camera's pipeline alone, from the same config as the whole fleet."""

from __future__ import annotations

import io
import threading
from pathlib import Path

import pytest
from conftest import DETECTOR, PED2
from synthetic import normal_footage

from pipeline import assembly
from pipeline.config import ScoringConfig, VigilConfig, perception_settings
from pipeline.errors import ModelError
from stages.normality import fit_normality


@pytest.fixture
def config(tmp_path: Path) -> VigilConfig:
    model = fit_normality(normal_footage(clips=5, frames=30), ScoringConfig(), seed=0)
    model.perception = perception_settings(VigilConfig())
    clip = str(PED2 / "test" / "Test001.mp4")
    return VigilConfig.model_validate(
        {
            "cameras": [
                {
                    "name": "door",
                    "url": clip,
                    "model": str(model.save(tmp_path / "door.npz")),
                    "analysis_fps": 5,
                },
                {"name": "yard", "url": clip, "model": str(tmp_path / "missing.npz")},  # a bad camera
            ],
            "detector": {"model": str(DETECTOR)},
            "pose": {"enabled": False},
            "appearance": {"enabled": False},
            "http": {"enabled": False},
            "sinks": {"sqlite": {"path": str(tmp_path / "events.db")}},
        }
    )


def test_one_camera_pipeline_alone(config: VigilConfig) -> None:
    door, yard = config.cameras
    services = assembly.Services(threading.Event())
    try:
        services.start(config, [door.name], io.StringIO())
        runner = assembly.camera_runner(config, door, services, live=False, realtime=False)
        assert [s.camera for s in runner.sources] == ["door"]
        assert dict(runner.options.analysis_fps) == {"door": 5}
        assert runner.sinks == services.sinks and len(runner.sinks) == 2
        assert {"detect", "flow", "attributes", "scene_graph", "score", "explain", "events"} <= set(
            runner.graph.names
        )
        with pytest.raises(ModelError):  # the other camera's model is only read when it is built
            assembly.build_runner(config, [door, yard], services, live=False, realtime=False)
    finally:
        services.close()
    assert services.stop.is_set()
