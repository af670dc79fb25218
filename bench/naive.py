"""The loop a user would write without Vigil: ultralytics `track` + pose on every frame, same weights.

Used as the baseline that the perception and throughput benchmarks divide by, measured in the same run.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import av


def naive_loop(
    clip: Path, detector: str, pose: str, max_frames: int | None = None, device: str = "cpu"
) -> dict:
    os.environ.setdefault("YOLO_OFFLINE", "1")
    from ultralytics import YOLO  # imported here so the bench module loads without torch side effects

    det_model = YOLO(detector, task="detect")
    pose_model = YOLO(pose, task="pose")
    frames = 0
    with av.open(str(clip)) as container:
        images = [f.to_ndarray(format="bgr24") for f in container.decode(video=0)]
    if max_frames:
        images = images[:max_frames]
    # warm-up outside the timing, as for Vigil's stages (model load + first inference)
    det_model.track(images[0], persist=True, verbose=False, device=device)
    pose_model(images[0], verbose=False, device=device)
    det_model.predictor.trackers[0].reset()
    t0 = time.perf_counter()
    for image in images:
        det_model.track(image, persist=True, verbose=False, device=device)
        pose_model(image, verbose=False, device=device)
        frames += 1
    wall = time.perf_counter() - t0
    return {"frames": frames, "wall_s": wall, "fps": frames / wall, "ms_per_frame": 1000 * wall / frames}
