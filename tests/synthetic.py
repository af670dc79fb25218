"""Hand-built attribute streams of a synthetic walkway, for the normality, scoring and explain tests.

People walk left or right along the middle rows of the image at about 1 body-height/s with
swinging legs and a box that widens and narrows with each stride; `Walker` describes one object
and `frame_sample` turns a frame's walkers into the ObjectAttributes and SceneGraph packets the
perception stages would have produced.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.packets import COCO_KEYPOINTS, ObjectAttributes, SceneGraph
from stages.normality.fit import FrameSample

CLASSES = ("person", "bicycle", "car")
GRID = (6, 8)
MOTION_BINS = 32
APPEARANCE_DIM = 16
FPS = 10.0

# a standing person's keypoints, normalised to the box (x, y)
_BASE_POSE = np.array(
    [
        [0.5, 0.08], [0.45, 0.06], [0.55, 0.06], [0.4, 0.08], [0.6, 0.08],
        [0.3, 0.22], [0.7, 0.22], [0.25, 0.38], [0.75, 0.38], [0.25, 0.5], [0.75, 0.5],
        [0.4, 0.52], [0.6, 0.52], [0.4, 0.72], [0.6, 0.72], [0.4, 0.95], [0.6, 0.95],
    ]
)  # fmt: skip


@dataclass
class Walker:
    track_id: int
    cls: str = "person"
    x: float = 0.5  # ground point, normalised
    y: float = 0.55
    speed: float = 1.0  # body-heights/s, signed along x
    height: float = 0.15
    aspect: float = 0.4
    leg_swing: float = 0.08  # amplitude of knee/ankle motion in box units
    stride: float = 0.15  # relative amplitude of the box-aspect swing of walking (0: a rigid glider)
    is_blob: bool = False


def frame_sample(
    walkers: list[Walker],
    t: float,
    rng: np.random.Generator,
    relations: list[tuple[int, str, int]] | None = None,
    clip: str = "clip",
    camera: str = "cam",
) -> FrameSample:
    n = len(walkers)
    rows, cols = GRID
    ground = np.array([[w.x, w.y] for w in walkers], np.float32).reshape(n, 2)
    height = np.array([w.height for w in walkers], np.float32) * (1 + 0.03 * rng.standard_normal(n))
    swing = np.array([w.stride * np.sin(2 * np.pi * 2.0 * t + w.track_id) for w in walkers])
    aspect = np.array([w.aspect for w in walkers], np.float32) * (1 + swing + 0.02 * rng.standard_normal(n))
    vx = np.array([w.speed for w in walkers]) + 0.05 * rng.standard_normal(n)
    vy = 0.05 * rng.standard_normal(n)
    velocity = np.stack([vx, vy], axis=1).astype(np.float32)
    r = np.clip((ground[:, 1] * rows).astype(int), 0, rows - 1)
    c = np.clip((ground[:, 0] * cols).astype(int), 0, cols - 1)
    h_px = height * 240
    w_px = h_px * aspect
    x_px, y_px = ground[:, 0] * 360, ground[:, 1] * 240
    xyxy = np.stack([x_px - w_px / 2, y_px - h_px, x_px + w_px / 2, y_px], axis=1).astype(np.float32)
    # motion histogram: most mass in the orientation bin of the walking direction, magnitude ~ speed
    hist = np.zeros((n, MOTION_BINS), np.float32)
    for i, w in enumerate(walkers):
        mag = min(3, int(abs(w.speed) * 1.5))
        ori = 0 if w.speed >= 0 else 4
        hist[i] = rng.dirichlet(np.full(MOTION_BINS, 0.3)) * 0.3
        hist[i, mag * 8 + ori] += 0.7
        hist[i] /= hist[i].sum()
    pose = np.full((n, 3 * COCO_KEYPOINTS), np.nan, np.float32)
    for i, w in enumerate(walkers):
        if w.cls != "person" or w.is_blob:
            continue
        kp = _BASE_POSE + 0.01 * rng.standard_normal(_BASE_POSE.shape)
        phase = np.sin(2 * np.pi * 1.0 * t + w.track_id)
        kp[[13, 15], 0] += w.leg_swing * phase
        kp[[14, 16], 0] -= w.leg_swing * phase
        pose[i] = np.concatenate([kp.reshape(-1), np.full(COCO_KEYPOINTS, 0.9)])
    mean_app = np.ones(APPEARANCE_DIM) / np.sqrt(APPEARANCE_DIM)
    app = mean_app + 0.1 * rng.standard_normal((n, APPEARANCE_DIM))
    app = (app / np.linalg.norm(app, axis=1, keepdims=True)).astype(np.float32)
    cls_id = np.array([-1 if w.is_blob else CLASSES.index(w.cls) for w in walkers], np.int32)
    attrs = ObjectAttributes(
        track_id=np.array([w.track_id for w in walkers], np.int64),
        class_id=cls_id,
        class_names=CLASSES,
        xyxy=xyxy,
        confidence=np.full(n, 0.8, np.float32),
        ground=ground,
        cell=(r * cols + c).astype(np.int32),
        height=height.astype(np.float32),
        aspect=aspect.astype(np.float32),
        velocity=velocity,
        speed=np.linalg.norm(velocity, axis=1).astype(np.float32),
        direction=np.arctan2(velocity[:, 1], velocity[:, 0]).astype(np.float32),
        flow_speed=np.abs(vx).astype(np.float32),
        motion_hist=hist,
        pose=pose,
        appearance=app,
        scale_rate=(0.02 * rng.standard_normal(n)).astype(np.float32),
        dwell=(1.0 + 0.3 * rng.random(n)).astype(np.float32),
        age=np.full(n, int(t * FPS), np.int32),
        is_blob=np.array([w.is_blob for w in walkers], bool),
    )
    rel = relations or []
    graph = SceneGraph(
        node_ids=attrs.track_id.copy(),
        node_labels=tuple(attrs.name_of(i) for i in range(n)),
        subject=np.array([s for s, _, _ in rel], np.int64),
        object=np.array([o for _, _, o in rel], np.int64),
        predicate=tuple(p for _, p, _ in rel),
        confidence=np.full(len(rel), 0.9, np.float32),
    )
    return FrameSample(camera, clip, t, 360, 240, attrs, graph)


def normal_clip(seed: int, frames: int = 60, clip: str = "clip", walkers: int = 3) -> list[FrameSample]:
    """People walking left and right on the walkway; neighbours are `near` each other."""
    rng = np.random.default_rng(seed)
    people = [
        Walker(
            track_id=seed * 100 + i,
            x=float(rng.uniform(0.1, 0.9)),
            y=float(rng.uniform(0.45, 0.65)),
            speed=float(rng.choice([-1, 1]) * rng.uniform(0.8, 1.2)),
        )
        for i in range(walkers)
    ]
    strides = np.random.default_rng(seed + 10_000).uniform(0.1, 0.2, walkers)  # people's strides differ
    for w, stride in zip(people, strides, strict=True):
        w.stride = float(stride)
    out = []
    for f in range(frames):
        t = f / FPS
        for w in people:
            w.x = float(np.clip(w.x + w.speed * w.height * (360 / 240) ** -1 / FPS * 0.3, 0.02, 0.98))
        rel = [(people[0].track_id, "near", people[1].track_id)] if walkers > 1 else []
        out.append(frame_sample(people, t, rng, rel, clip=clip))
    return out


def normal_footage(clips: int = 6, frames: int = 60, seed: int = 0, walkers: int = 3) -> list[FrameSample]:
    clip_list = [normal_clip(seed + k + 1, frames, f"clip{k:02d}", walkers) for k in range(clips)]
    return [s for clip in clip_list for s in clip]
