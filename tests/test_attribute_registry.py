"""The attribute registry of the normality model: its order and declarations, and operator feedback
("this is normal here")."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from synthetic import Walker, frame_sample, normal_footage

from pipeline.config import ScoringConfig
from pipeline.errors import ModelError
from stages.normality import NormalityModel, fit_normality
from stages.normality.attributes import ATTRIBUTES, REGISTRY, _registry, attribute
from stages.normality.attributes.base import (
    Attribute,
    FeedbackUnsupported,
    Input,
    ObjectView,
    SkippedFrame,
)
from stages.normality.features import TrackMemory
from stages.normality.judge import frame_view, raw_scores
from stages.normality.model import BANKS, QUANTITIES, TABLES

#: the column order of scores and of the model file's held-out arrays: appending is the only change
FILE_ORDER = (
    "class_in_place",
    "speed",
    "direction",
    "size",
    "motion",
    "pose",
    "appearance",
    "relations",
    "dynamics",
    "scale_change",
    "dwell",
    "unexplained_motion",
    "limb_motion",
    "gait",
)


def test_registry_keeps_the_model_file_order() -> None:
    assert ATTRIBUTES == FILE_ORDER
    assert QUANTITIES == (
        "speed",
        "log_height",
        "log_aspect",
        "visible_scale_rate",
        "blob_flow",
        "blob_area",
    )
    assert BANKS == ("motion", "pose", "appearance")
    assert TABLES == ("dwell.counts", "dwell.horizon", "limb_motion")


@pytest.mark.parametrize("name", FILE_ORDER)
def test_every_attribute_declares_itself(name: str) -> None:
    a = REGISTRY[name]
    assert a.name == name and attribute(name) is a
    assert a.inputs and all(isinstance(i, Input) for i in a.inputs)
    assert isinstance(a.on_skipped_frame, SkippedFrame)
    # feedback is supported exactly where absorb_normal is implemented, and refused with a reason elsewhere
    implemented = type(a).absorb_normal is not Attribute.absorb_normal
    assert a.absorbs_feedback == implemented
    assert implemented or (a.no_feedback and len(a.no_feedback) > 20)


def test_window_attributes_are_those_counted_in_analysed_frames() -> None:
    windowed = {n for n, a in REGISTRY.items() if a.on_skipped_frame is SkippedFrame.FRAME_WINDOW}
    assert windowed == {"dynamics", "gait"}
    assert all(Input.HISTORY in REGISTRY[n].inputs for n in windowed)


def test_unknown_and_duplicate_attributes_are_refused() -> None:
    with pytest.raises(ModelError, match="unknown attribute 'loitering'; known: class_in_place"):
        attribute("loitering")
    with pytest.raises(ModelError, match="registered twice: speed"):
        _registry(REGISTRY["speed"], REGISTRY["size"], REGISTRY["speed"])


# ---- operator feedback -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def model_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    model = fit_normality(normal_footage(clips=10, frames=50), ScoringConfig(), seed=0)
    return model.save(tmp_path_factory.mktemp("feedback") / "model.npz")


def unusual(name: str):
    """A frame with object 0 unusual in attribute `name` (after a few frames of its track)."""
    rng = np.random.default_rng(4)
    walkers, relations = [Walker(1), Walker(2, x=0.3)], None
    if name == "class_in_place":
        walkers[0] = Walker(1, cls="bicycle")
    if name == "relations":
        relations = [(1, "riding", 2)]
    if name == "size":  # twice as tall as people here
        walkers[0] = Walker(1, height=0.3)
    memory = TrackMemory(4, 8)
    for i in range(10):
        fs = frame_sample(walkers, i / 10, rng, relations)
        a = fs.attributes
        if name == "speed":
            a.speed[0] = 4.0
        if name == "direction":
            a.velocity[0] = (0.0, -1.0)
            a.speed[0], a.direction[0] = 1.0, np.float32(-np.pi / 2)
        if name == "motion":
            a.motion_hist[0] = 0.0
            a.motion_hist[0, 31] = 1.0
        if name == "pose":
            a.pose[0, :34] = np.tile([0.1, 0.9], 17)
        if name == "dwell":  # standing 30 s where people walk by
            a.dwell[0] = 30.0
        if name == "appearance":
            a.appearance[0] = 0.0
            a.appearance[0, 0] = 1.0
        hist = memory.update(a, fs.pts)
    return fs, hist


@pytest.mark.parametrize("name", [n for n, a in REGISTRY.items() if a.absorbs_feedback])
def test_feedback_makes_the_observation_normal(model_file: Path, name: str) -> None:
    model = NormalityModel.load(model_file)
    fs, hist = unusual(name)
    j = ATTRIBUTES.index(name)
    before = raw_scores(model, fs.attributes, fs.scene_graph, hist, 3)[0, j]
    frame = frame_view(model, fs.attributes, fs.scene_graph, hist, 3)
    REGISTRY[name].absorb_normal(frame, np.array([0]), weight=20)
    after = raw_scores(model, fs.attributes, fs.scene_graph, hist, 3)[0, j]
    assert np.isfinite(before) and after < before, (before, after)
    # the change is in the model: a loaded copy of the file still judges as before
    again = raw_scores(NormalityModel.load(model_file), fs.attributes, fs.scene_graph, hist, 3)[0, j]
    assert again == before


@pytest.mark.parametrize("name", [n for n, a in REGISTRY.items() if not a.absorbs_feedback])
def test_feedback_is_refused_where_the_model_cannot_take_it(model_file: Path, name: str) -> None:
    model = NormalityModel.load(model_file)
    fs, hist = unusual(name)
    frame = frame_view(model, fs.attributes, fs.scene_graph, hist, 3)
    with pytest.raises(FeedbackUnsupported, match=f"{name}: operator feedback not supported"):
        REGISTRY[name].absorb_normal(frame, np.array([0]))


def test_feedback_weight_is_a_count(model_file: Path) -> None:
    model = NormalityModel.load(model_file)
    fs, hist = unusual("class_in_place")
    frame = frame_view(model, fs.attributes, fs.scene_graph, hist, 3)
    with pytest.raises(ValueError, match="expected >= 1"):
        REGISTRY["class_in_place"].absorb_normal(frame, np.array([0]), weight=0)


@pytest.mark.parametrize("name", ["speed", "size", "dwell"])
def test_normal_range_is_ordered_and_in_the_reason_unit(model_file: Path, name: str) -> None:
    """The console's plot of a reason: quantiles of normal objects here, non-decreasing, and the value."""
    model = NormalityModel.load(model_file)
    fs, hist = unusual(name)
    frame = frame_view(model, fs.attributes, fs.scene_graph, hist, 3)
    obj = ObjectView(model, fs.attributes, fs.scene_graph, 0, int(frame.cls[0]))
    normal = REGISTRY[name].normal_range(obj)
    assert normal is not None and normal.unit
    values = np.array(normal.values)
    assert len(values) == len(normal.levels) and np.all(np.diff(values) >= -1e-9)
    assert np.isfinite(normal.observed) and normal.observed > values[len(values) // 2]  # it is unusual
