"""Model versions from operator feedback, on a real (small) normality model: commit keeps the original as
v1 and makes the new one live, undo puts the parent back, and a running camera's follower loads each
replacement once."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pytest
from synthetic import normal_footage

from pipeline.config import ScoringConfig, VigilConfig
from pipeline.errors import VigilError
from pipeline.model_store import ModelFollower, ModelStore, ModelVersion
from stages.normality import NormalityModel, fit_normality
from stages.normality.provenance import Provenance


@pytest.fixture(scope="module")
def fitted() -> NormalityModel:
    return fit_normality(normal_footage(clips=2, frames=30), ScoringConfig(), seed=0)


@pytest.fixture
def store(tmp_path: Path) -> ModelStore:
    return ModelStore(VigilConfig(scoring=ScoringConfig(models_dir=tmp_path / "models")))


def labelled(model: NormalityModel, frames: int) -> NormalityModel:
    """`model` told apart by its provenance (its saved bytes differ, and the loaded model says which)."""
    model.provenance = Provenance.now("vigil fit", 1.0, frames=frames, clips=1)
    return model


@pytest.fixture
def live(store: ModelStore, fitted: NormalityModel) -> bytes:
    """The camera's model as fitted (frames=1), in its live file; its bytes."""
    path = store.save(labelled(fitted, 1))
    assert path == store.path(fitted.camera)
    return path.read_bytes()


def version_file(store: ModelStore, camera: str, number: int) -> Path:
    return store.versions_dir(camera) / f"v{number:04d}.npz"


def test_commit_keeps_the_original_as_v1_and_makes_the_new_one_live(
    store: ModelStore, fitted: NormalityModel, live: bytes
) -> None:
    camera = fitted.camera
    before = store.stamp(camera)
    made = store.commit(labelled(fitted, 2), "feedback", by="alice", event_id="cam-7", note="5 x 3")

    assert (made.number, made.source, made.by, made.event_id, made.parent, made.note) == (
        2, "feedback", "alice", "cam-7", 1, "5 x 3"
    )  # fmt: skip
    versions, current = store.versions(camera)
    assert current == 2
    assert [(v.number, v.source, v.parent, v.undone_at) for v in versions] == [
        (1, "fitted", None, None),
        (2, "feedback", 1, None),
    ]
    assert versions[1] == made
    assert version_file(store, camera, 1).read_bytes() == live  # v1 is the file as it was
    assert store.path(camera).read_bytes() == version_file(store, camera, 2).read_bytes() != live
    assert NormalityModel.load(store.path(camera)).provenance.frames == 2  # type: ignore[union-attr]
    assert store.stamp(camera) not in (None, before)
    index = json.loads((store.versions_dir(camera) / "index.json").read_text())
    assert index["current"] == 2 and len(index["versions"]) == 2
    assert not [p.name for p in store.path(camera).parent.glob("*.tmp")]  # no temporary file left


def test_undo_makes_the_parent_current_again(store: ModelStore, fitted: NormalityModel, live: bytes) -> None:
    camera = fitted.camera
    store.commit(labelled(fitted, 2), "feedback", by="alice", event_id="cam-7")
    after_commit = store.stamp(camera)

    undone = store.undo(camera, 2, by="bob")
    assert (undone.number, undone.parent, undone.undone_by) == (2, 1, "bob")
    assert undone.undone_at is not None
    versions, current = store.versions(camera)
    assert current == 1
    assert (versions[1].undone_at, versions[1].undone_by) == (undone.undone_at, "bob")
    assert store.path(camera).read_bytes() == live
    assert store.stamp(camera) not in (None, after_commit)
    assert version_file(store, camera, 2).exists()  # kept for the record

    again = store.commit(labelled(fitted, 3), "feedback", by="carol")  # numbering goes on from the last
    assert (again.number, again.parent) == (3, 1)
    assert store.versions(camera)[1] == 3
    assert store.path(camera).read_bytes() == version_file(store, camera, 3).read_bytes()


@pytest.mark.parametrize(
    ("commits", "number", "error"),
    [
        (0, 1, "no versions to undo"),
        (1, 1, "version 1 cannot be undone"),  # the fitted model has no parent
        (2, 2, r"version 2 is not current \(3 is\)"),
        (1, 9, "version 9 cannot be undone"),
    ],
)
def test_only_the_current_feedback_version_can_be_undone(
    store: ModelStore, fitted: NormalityModel, live: bytes, commits: int, number: int, error: str
) -> None:
    camera = fitted.camera
    for k in range(commits):
        store.commit(labelled(fitted, 2 + k), "feedback", by="alice")
    before = (store.versions(camera), store.path(camera).read_bytes())
    with pytest.raises(VigilError, match=error):
        store.undo(camera, number, by="alice")
    assert (store.versions(camera), store.path(camera).read_bytes()) == before  # nothing changed


def test_versions_without_an_index_report_the_live_file_as_v1(
    store: ModelStore, fitted: NormalityModel, live: bytes
) -> None:
    camera = fitted.camera
    versions, current = store.versions(camera)
    assert current == 1
    footage = "vigil fit: 1 clip, 1 frames"  # the model's provenance, as its header records it
    assert len(versions) == 1 and versions[0].footage.startswith(footage)
    assert versions == [
        ModelVersion(1, store.path(camera).stat().st_mtime, "fitted", footage=versions[0].footage)
    ]
    assert store.versions("no-such-camera") == ([], None)
    assert store.stamp("no-such-camera") is None


def test_commit_without_a_live_file_is_refused(store: ModelStore, fitted: NormalityModel) -> None:
    with pytest.raises(VigilError, match="no model file at"):
        store.commit(fitted, "feedback", by="alice")
    assert not store.path(fitted.camera).exists()


def test_follower_loads_each_replacement_once(store: ModelStore, fitted: NormalityModel, live: bytes) -> None:
    camera = fitted.camera
    follow = ModelFollower(store, interval_s=0)
    assert follow(camera) is None  # first look: the file as it is is what the camera runs
    assert follow(camera) is None

    store.commit(labelled(fitted, 2), "feedback", by="alice")
    loaded = follow(camera)
    assert isinstance(loaded, NormalityModel) and loaded.camera == camera
    assert loaded.provenance is not None and loaded.provenance.frames == 2
    assert follow(camera) is None  # once

    store.undo(camera, 2, by="alice")
    back = follow(camera)
    assert back is not None and back.provenance is not None and back.provenance.frames == 1
    assert follow(camera) is None


def test_a_primed_follower_sees_the_first_change(
    store: ModelStore, fitted: NormalityModel, live: bytes
) -> None:
    camera = fitted.camera
    follow = ModelFollower(store, interval_s=0)
    follow.prime(camera)
    store.commit(labelled(fitted, 2), "feedback", by="alice")
    loaded = follow(camera)
    assert loaded is not None and loaded.provenance is not None and loaded.provenance.frames == 2


def test_follower_checks_at_most_every_interval(
    store: ModelStore, fitted: NormalityModel, live: bytes
) -> None:
    camera = fitted.camera
    follow = ModelFollower(store, interval_s=3600)
    follow.prime(camera)
    assert follow(camera) is None  # checked now: unchanged
    store.commit(labelled(fitted, 2), "feedback", by="alice")
    assert follow(camera) is None  # not looked at again within the hour


def test_a_bad_new_file_is_reported_and_skipped(
    store: ModelStore, fitted: NormalityModel, live: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    camera = fitted.camera
    path = store.path(camera)
    follow = ModelFollower(store, interval_s=0)
    follow.prime(camera)
    broken = path.with_name("broken.npz")
    broken.write_bytes(b"not a model")
    os.replace(broken, path)
    with caplog.at_level(logging.ERROR, logger="vigil.models"):
        assert follow(camera) is None
    assert [r.getMessage() for r in caplog.records if "newer model not loaded" in r.getMessage()]
    assert follow(camera) is None  # said once per change

    path.write_bytes(live)  # a good file again: loaded
    os.utime(path, ns=(1, 1))  # a different mtime even on a coarse clock
    restored = follow(camera)
    assert restored is not None and restored.provenance is not None and restored.provenance.frames == 1


def test_a_live_file_replaced_outside_becomes_a_version(
    store: ModelStore, fitted: NormalityModel, live: bytes
) -> None:
    """`vigil fit` (or a warm-up) rewrote the live file after v2: the next feedback builds on it, and it
    is kept as a version of its own, so undo cannot silently bring back what the refit replaced."""
    camera = fitted.camera
    store.commit(fitted, "feedback", by="alice", event_id="e1")
    v2 = store.path(camera).read_bytes()
    fitted.counts["frames"] = int(fitted.counts.get("frames", 0)) + 1  # another model: the refit
    fitted.save(store.path(camera))
    assert store.path(camera).read_bytes() != v2
    with pytest.raises(VigilError, match="not current"):
        store.undo(camera, 2, "alice")  # the refit (v3) is current now
    versions, current = store.versions(camera)
    assert current == 3 and versions[-1].source == "fitted" and "outside the console" in versions[-1].note
    v4 = store.commit(fitted, "feedback", by="bob", event_id="e2")
    assert v4.number == 4 and v4.parent == 3
