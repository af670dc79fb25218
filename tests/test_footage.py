"""Labelled footage in the train/ test/ frame_labels.npz layout, on the real Ped2 and Avenue folders."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pipeline.errors import SourceError
from pipeline.evaluation.footage import PRESETS, LabelledFootage

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.mark.parametrize(
    ("folder", "preset", "train", "test", "anomalous"),
    [
        ("ucsd_ped2", "ped2", 16, 12, None),
        ("avenue_dev", "avenue", 2, 2, {"17": 384, "21": 53}),
    ],
)
def test_presets_open_the_shared_data_sets(
    folder: str, preset: str, train: int, test: int, anomalous
) -> None:
    root = SHARED / folder
    if not root.exists():
        pytest.skip(f"{root} not here")
    data = LabelledFootage.open(root, preset)
    assert len(data.train_clips()) == train
    clips = data.test_clips()
    assert len(clips) == test
    assert all(c.labels is not None and c.labels.dtype == bool for c in clips)
    if anomalous:
        assert {c.name: int(c.labels.sum()) for c in clips} == anomalous
    first = clips[0]
    masks = data.masks(first.name)
    assert masks.shape[0] == len(first.labels) and masks.dtype == bool


def make(tmp_path: Path, labels: dict[str, np.ndarray], masks: bool = False) -> Path:
    for split, names in (("train", ["a"]), ("test", list(labels))):
        (tmp_path / split).mkdir()
        for n in names:
            (tmp_path / split / f"{n}.mkv").write_bytes(b"")
    np.savez(tmp_path / "frame_labels.npz", **labels)
    if masks:
        np.savez(
            tmp_path / "pixel_masks.npz", **{k: np.zeros((len(v), 4, 4), bool) for k, v in labels.items()}
        )
    return tmp_path


def test_own_footage_without_masks(tmp_path: Path) -> None:
    data = LabelledFootage.open(make(tmp_path, {"x": np.array([0, 1, 1], np.uint8)}))
    assert data.format.name == PRESETS["custom"].name and not data.has_masks
    assert [c.name for c in data.train_clips()] == ["a"]
    assert data.test_clips()[0].labels.tolist() == [False, True, True]
    with pytest.raises(SourceError, match="no pixel masks"):
        data.masks("x")


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        ({"other": np.array([0, 1])}, r"frame_labels.npz: no frame labels for test clip x"),
        ({"x": np.array([0, 2])}, r"x: expected a \(T,\) array of 0/1"),
    ],
)
def test_bad_labels_are_one_line_naming_the_file(tmp_path: Path, labels: dict, message: str) -> None:
    root = make(tmp_path, {"x": np.array([0, 1])})
    np.savez(root / "frame_labels.npz", **labels)
    with pytest.raises(SourceError, match=message):
        LabelledFootage.open(root).test_clips()


def test_missing_parts_are_named(tmp_path: Path) -> None:
    (tmp_path / "train").mkdir()
    with pytest.raises(SourceError, match=r"missing test, frame_labels.npz"):
        LabelledFootage.open(tmp_path)
