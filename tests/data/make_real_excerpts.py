"""Write tests/data/real_excerpts.npz: what perception saw in real normal footage, for the attribute tests.

From a perception cache written by `vigil eval --cache` (the default config, key 6e541760832e) of
../shared/data: CUHK Avenue training clip 12 (all 145 frames) and clip 16 frames 90-140 (a walker
whose box regains the legs another walker hid, track 131, frames 108-127), and of the 16 UCSD Ped2
training clips the frames with a person and something else (a moving region or another detection).
Slimmed to stay small: no scene graphs, no appearance embeddings, keypoints and motion histograms as
float16, and for Ped2 no keypoints and no motion histograms of people (the tests of thrown objects
read the histograms of the other objects only). Run from the repository root:

    python tests/data/make_real_excerpts.py /work/main/var/eval/cache-av /work/main/var/eval/cache-final
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import numpy as np

from pipeline.evaluation.cache import CachedFrame, ClipRecord, PerceptionCache

KEY = "6e541760832e"
OUT = Path(__file__).with_name("real_excerpts.npz")


def slim(frame: CachedFrame, keep_pose: bool) -> CachedFrame:
    a = frame.attributes
    if a is not None:
        n = len(a)
        hist = a.motion_hist.astype(np.float16)
        pose = a.pose.astype(np.float16) if keep_pose else np.full((n, 1), np.nan, np.float16)
        if not keep_pose:
            hist[~a.is_blob & (a.class_id == 0)] = np.nan
        appearance = np.full((n, 1), np.nan, np.float16)
        a = dataclasses.replace(a, pose=pose, motion_hist=hist, appearance=appearance)
    return dataclasses.replace(frame, attributes=a, scene_graph=None)


def excerpt(record: ClipRecord, frames: range | list[int] | None, keep_pose: bool) -> ClipRecord:
    kept = [slim(f, keep_pose) for f in record.frames if frames is None or f.index in frames]
    return dataclasses.replace(record, frames=tuple(kept))


def mixed(frame: CachedFrame) -> bool:
    """A frame with a person and something else: where something may leave a person."""
    a = frame.attributes
    if a is None:
        return False
    person = ~a.is_blob & (a.class_id == 0)
    return bool(person.any() and (~person).any())


def main(avenue_root: Path, ped2_root: Path) -> None:
    avenue = PerceptionCache(avenue_root, "avenue", KEY)
    ped2 = PerceptionCache(ped2_root, "ped2", KEY)
    records = {
        "avenue/12": excerpt(avenue.load("train", "12"), None, True),
        "avenue/16": excerpt(avenue.load("train", "16"), range(90, 141), True),
    }
    for k in range(1, 17):
        clip = f"Train{k:03d}"
        record = ped2.load("train", clip)
        records[f"ped2/{clip}"] = excerpt(record, [f.index for f in record.frames if mixed(f)], False)
    arrays = {f"{name}/{k}": v for name, r in records.items() for k, v in r.to_arrays().items()}
    np.savez_compressed(OUT, **arrays)
    print(f"{OUT}: {OUT.stat().st_size} bytes")


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
