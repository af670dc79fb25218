"""Model files: one path rule for every reader and writer, saves that fail loudly but harmlessly, and
the provenance a model keeps in its header."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from synthetic import normal_footage

from pipeline.config import CameraConfig, ScoringConfig, VigilConfig
from pipeline.errors import ModelError
from pipeline.model_store import ModelStore
from stages.normality import NormalityModel, fit_normality
from stages.normality.provenance import Provenance


@pytest.fixture(scope="module")
def model() -> NormalityModel:
    return fit_normality(normal_footage(clips=2, frames=30), ScoringConfig(), seed=0)


def config_in(folder: Path, own_model: Path | None = None) -> VigilConfig:
    cameras = [
        CameraConfig(name="gate", url="gate.mp4", model=own_model),
        CameraConfig(name="hall", url="h.mp4"),
    ]
    return VigilConfig(cameras=cameras, scoring=ScoringConfig(models_dir=folder / "models"))


@pytest.mark.parametrize("own", [False, True])
def test_path_is_the_cameras_model_else_models_dir(tmp_path: Path, own: bool) -> None:
    mine = tmp_path / "elsewhere" / "gate-model.npz"
    store = ModelStore(config_in(tmp_path, mine if own else None))
    assert store.path("gate") == (mine if own else tmp_path / "models" / "gate.npz")
    assert store.path("hall") == tmp_path / "models" / "hall.npz"
    assert store.path("unlisted") == tmp_path / "models" / "unlisted.npz"  # `vigil replay` of a new file


@pytest.mark.parametrize("how", ["warm-up", "vigil fit"])
def test_provenance_round_trips_through_the_model_file(
    tmp_path: Path, model: NormalityModel, how: str
) -> None:
    provenance = Provenance.now(how, seconds=12.345678, frames=120, clips=3)  # type: ignore[arg-type]
    assert provenance.version == 1 and provenance.seconds == 12.346
    assert Provenance.from_dict(provenance.to_dict()) == provenance
    model.provenance = provenance
    path = ModelStore(config_in(tmp_path)).save(model)
    assert path is not None and path.name == f"{model.camera}.npz"
    assert NormalityModel.load(path).provenance == provenance
    assert not list(path.parent.glob("*.tmp.npz"))


@pytest.mark.parametrize(("field", "value"), [("how", "guessed"), ("version", 0), ("frames", -1)])
def test_bad_provenance_is_refused(tmp_path: Path, field: str, value: object) -> None:
    d = Provenance.now("warm-up", 1.0, 10, 1).to_dict() | {field: value}
    with pytest.raises(ValueError, match="Provenance"):
        Provenance.from_dict(d)


def test_model_without_provenance_loads_as_none(tmp_path: Path, model: NormalityModel) -> None:
    model.provenance = None
    assert NormalityModel.load(model.save(tmp_path / "m.npz")).provenance is None


def test_a_failed_save_is_one_error_line_with_the_path(
    tmp_path: Path, model: NormalityModel, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "models").write_text("a file where the models folder should be")
    store = ModelStore(config_in(tmp_path))
    with caplog.at_level(logging.INFO, logger="vigil.models"):
        assert store.save(model) is None
    (record,) = caplog.records
    assert record.levelno == logging.ERROR and "cannot save the normality model" in record.getMessage()
    assert record.__dict__["path"] == str(store.path(model.camera))
    with pytest.raises(ModelError, match="file not found"):  # nothing half-written to load next time
        NormalityModel.load(store.path(model.camera))
