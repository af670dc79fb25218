"""UCSD Ped2 as laid out in ../shared/data/ucsd_ped2: clip files, frame labels and pixel masks.

Layout: `train/TrainNNN.mp4`, `test/TestNNN.mp4`, `frame_labels.npz` (per test clip, (T,) with
1 = anomalous) and `pixel_masks.npz` (per test clip, (T, H, W) bool). Masks are large (about
15 MB per clip unpacked), so they are read one clip at a time, when asked for.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.errors import SourceError

LABELS = "frame_labels.npz"
MASKS = "pixel_masks.npz"


@dataclass(frozen=True)
class Ped2Clip:
    name: str
    path: Path
    labels: np.ndarray | None  # (T,) bool for test clips, None for training clips


@dataclass(frozen=True)
class Ped2:
    root: Path

    @classmethod
    def open(cls, root: Path) -> Ped2:
        root = Path(root)
        missing = [p for p in ("train", "test", LABELS, MASKS) if not (root / p).exists()]
        if missing:
            raise SourceError(f"UCSD Ped2 at {root}: missing {', '.join(missing)}")
        return cls(root)

    def train_clips(self, names: Sequence[str] | None = None) -> list[Ped2Clip]:
        return [Ped2Clip(n, p, None) for n, p in self._select("train", names)]

    def test_clips(self, names: Sequence[str] | None = None) -> list[Ped2Clip]:
        with np.load(self.root / LABELS, allow_pickle=False) as f:
            labels = {k: f[k].astype(bool) for k in f.files}
        out = []
        for name, path in self._select("test", names):
            if name not in labels:
                raise SourceError(f"UCSD Ped2: no frame labels for {name} in {self.root / LABELS}")
            out.append(Ped2Clip(name, path, labels[name]))
        return out

    def masks(self, name: str) -> np.ndarray:
        """(T, H, W) bool pixel mask of test clip `name`."""
        with np.load(self.root / MASKS, allow_pickle=False) as f:
            if name not in f.files:
                raise SourceError(f"UCSD Ped2: no pixel masks for {name} in {self.root / MASKS}")
            return f[name].astype(bool)

    def _select(self, split: str, names: Sequence[str] | None) -> list[tuple[str, Path]]:
        available = {p.stem: p for p in sorted((self.root / split).glob("*.mp4"))}
        if not available:
            raise SourceError(f"UCSD Ped2: no .mp4 clips in {self.root / split}")
        if names is None:
            return sorted(available.items())
        unknown = [n for n in names if n not in available]
        if unknown:
            have = f"{min(available)}..{max(available)}"
            raise SourceError(f"UCSD Ped2 {split}: unknown clips {', '.join(unknown)} (have {have})")
        return [(n, available[n]) for n in names]
