"""Labelled footage for `vigil eval`: any scene laid out as train/ and test/ folders with frame labels.

Layout (UCSD Ped2 and the Avenue development clips in ../shared/data are two examples):

    train/CLIP.<any container PyAV reads>    normal footage, what the model is fitted on
    test/CLIP.<...>                          footage to score
    frame_labels.npz                         per test clip stem, (T,) with 1 = anomalous frame
    pixel_masks.npz                          optional: per test clip stem, (T, H, W) bool anomalous region
    anomaly_reasons.json                     optional: per test clip stem, the attributes that should
                                             explain each anomaly (ground truth for the report only;
                                             format in anomaly_reasons.py, presets for ped2 and
                                             avenue dev bundled in presets/)

A preset describes how the footage is stored only (its label and mask files; the frame rate comes from
each clip's own timestamps), never detection, scoring or threshold settings: those are the same
defaults on every scene. Masks are large (Ped2: ~15 MB per clip unpacked), so they are read one clip
at a time, when asked for.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from pipeline.errors import SourceError


@dataclass(frozen=True)
class FootageFormat:
    """How a labelled data set is stored."""

    name: str
    labels: str = "frame_labels.npz"
    masks: str | None = "pixel_masks.npz"  # None: no pixel masks (no RBDC/TBDC/localisation)


PRESETS: dict[str, FootageFormat] = {
    "ped2": FootageFormat("ped2"),  # UCSD Ped2: 360x240 H.264 mp4 at 10 fps
    "avenue": FootageFormat("avenue"),  # CUHK Avenue: 640x360 MPEG-4 Part 2 avi at 25 fps
    "custom": FootageFormat("custom"),  # your own footage in the layout above
}


@dataclass(frozen=True)
class Clip:
    name: str
    path: Path
    labels: np.ndarray | None  # (T,) bool for test clips, None for training clips


@dataclass(frozen=True)
class LabelledFootage:
    root: Path
    format: FootageFormat

    @classmethod
    def open(cls, root: Path, format: FootageFormat | str = "custom") -> LabelledFootage:
        fmt = PRESETS[format] if isinstance(format, str) else format
        root = Path(root)
        needed = ["train", "test", fmt.labels]
        missing = [p for p in needed if not (root / p).exists()]
        if missing:
            raise SourceError(f"{root}: missing {', '.join(missing)} (expected train/, test/, {fmt.labels})")
        if fmt.masks is not None and not (root / fmt.masks).exists():
            fmt = replace(fmt, masks=None)  # masks are optional
        return cls(root, fmt)

    @property
    def has_masks(self) -> bool:
        return self.format.masks is not None

    def train_clips(self, names: Sequence[str] | None = None) -> list[Clip]:
        return [Clip(n, p, None) for n, p in self._select("train", names)]

    def test_clips(self, names: Sequence[str] | None = None) -> list[Clip]:
        labels_path = self.root / self.format.labels
        with np.load(labels_path, allow_pickle=False) as f:
            labels = {k: f[k] for k in f.files}
        out = []
        for name, path in self._select("test", names):
            if name not in labels:
                raise SourceError(f"{labels_path}: no frame labels for test clip {name}")
            y = labels[name]
            if y.ndim != 1 or not np.isin(y, (0, 1)).all():
                raise SourceError(f"{labels_path}: {name}: expected a (T,) array of 0/1, got {y.shape}")
            out.append(Clip(name, path, y.astype(bool)))
        return out

    def masks(self, name: str) -> np.ndarray:
        """(T, H, W) bool pixel mask of test clip `name`."""
        if self.format.masks is None:
            raise SourceError(f"{self.root}: no pixel masks in this data set")
        path = self.root / self.format.masks
        with np.load(path, allow_pickle=False) as f:
            if name not in f.files:
                raise SourceError(f"{path}: no pixel masks for test clip {name}")
            return f[name].astype(bool)

    def _select(self, split: str, names: Sequence[str] | None) -> list[tuple[str, Path]]:
        folder = self.root / split
        available = {
            p.stem: p for p in sorted(folder.iterdir()) if p.is_file() and not p.name.startswith(".")
        }
        if not available:
            raise SourceError(f"{folder}: no clips")
        if names is None:
            return sorted(available.items())
        unknown = [n for n in names if n not in available]
        if unknown:
            have = (
                ", ".join(sorted(available)) if len(available) <= 6 else f"{min(available)}..{max(available)}"
            )
            raise SourceError(f"{folder}: unknown clips {', '.join(unknown)} (have {have})")
        return [(n, available[n]) for n in names]
