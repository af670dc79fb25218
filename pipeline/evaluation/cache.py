"""Perception cache for `vigil eval`: each clip's per-frame ObjectAttributes and SceneGraph on disk.

Perception is the slow part of an evaluation; scoring is cheap. A normal `vigil eval --cache DIR`
also writes what scoring needs, one npz per clip, and `--from-cache DIR` replays it through the
scoring stages (ablations, diagnostics). Files hold plain arrays only (no pickle): each field of the
packets is concatenated over frames with row offsets. A file's name carries a key that hashes the
perception-relevant config sections and the frame limit, so a stale cache is a miss, never reused.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from pipeline.config import PERCEPTION_SECTIONS, VigilConfig, resolved_model
from pipeline.errors import ConfigError, PacketError
from pipeline.packets import Frame, FramePacket, ObjectAttributes, SceneGraph
from pipeline.sources.base import Source, SourceMonitor

if TYPE_CHECKING:
    from stages.normality import FrameSample

FORMAT_VERSION = 1
_ATTR_ARRAYS = tuple(f.name for f in fields(ObjectAttributes) if f.name != "class_names")
_NODE_ARRAYS = ("node_ids", "node_labels")
_EDGE_ARRAYS = ("subject", "object", "predicate", "confidence")


def perception_key(config: VigilConfig, max_frames: int | None) -> str:
    """12 hex digits over the perception config sections, the frame limit and the file format."""
    sections = config.model_dump(mode="json", include=set(PERCEPTION_SECTIONS))
    for section in sections.values():  # the same weights reached from another checkout: the same key
        if isinstance(section, dict) and "model" in section:
            section["model"] = resolved_model(section["model"])
    spec = {"format": FORMAT_VERSION, "max_frames": max_frames, "config": sections}
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:12]


@dataclass(frozen=True, slots=True)
class CachedFrame:
    """One frame of a clip as perception left it (attributes / scene graph None if a stage failed)."""

    index: int
    pts: float
    width: int
    height: int
    fps: float
    analysed: bool
    attributes: ObjectAttributes | None
    scene_graph: SceneGraph | None

    @classmethod
    def of(cls, packet: FramePacket) -> CachedFrame:
        f = packet.frame
        return cls(
            f.index, f.pts, f.width, f.height, f.fps, packet.analysed, packet.attributes, packet.scene_graph
        )


@dataclass(frozen=True, slots=True)
class ClipRecord:
    """A clip's frames in index order, and how many frames its source decoded."""

    clip: str
    camera: str
    frames: tuple[CachedFrame, ...]
    frames_decoded: int

    @classmethod
    def from_samples(cls, clip: str, samples: Sequence[FrameSample]) -> ClipRecord:
        """Training clips: `collect_samples` keeps no frame index, so frames are numbered by pts."""
        ordered = sorted(samples, key=lambda s: s.pts)
        frames = tuple(
            CachedFrame(i, s.pts, s.width, s.height, 0.0, True, s.attributes, s.scene_graph)
            for i, s in enumerate(ordered)
        )
        return cls(clip, ordered[0].camera if ordered else clip, frames, len(frames))

    def by_index(self) -> dict[int, CachedFrame]:
        return {f.index: f for f in self.frames}

    # ---- npz -------------------------------------------------------------------------------------

    def to_arrays(self) -> dict[str, np.ndarray]:
        fr = self.frames
        out: dict[str, np.ndarray] = {
            "format": np.array(FORMAT_VERSION),
            "clip": np.array(self.clip),
            "camera": np.array(self.camera),
            "frames_decoded": np.array(self.frames_decoded, np.int64),
            "index": np.array([f.index for f in fr], np.int64),
            "pts": np.array([f.pts for f in fr], np.float64),
            "width": np.array([f.width for f in fr], np.int32),
            "height": np.array([f.height for f in fr], np.int32),
            "fps": np.array([f.fps for f in fr], np.float64),
            "analysed": np.array([f.analysed for f in fr], bool),
            "has_attributes": np.array([f.attributes is not None for f in fr], bool),
            "has_graph": np.array([f.scene_graph is not None for f in fr], bool),
        }
        attrs = [f.attributes for f in fr if f.attributes is not None]
        names = {a.class_names for a in attrs}
        if len(names) > 1:
            raise PacketError(f"perception cache: clip {self.clip} changes class names between frames")
        out["class_names"] = np.array(sorted(names)[0] if names else (), dtype=str)
        out["attr_offsets"] = _offsets([len(a) for a in attrs])
        for name in _ATTR_ARRAYS:
            out[f"attr.{name}"] = _concat(self.clip, name, [getattr(a, name) for a in attrs])
        graphs = [f.scene_graph for f in fr if f.scene_graph is not None]
        out["node_offsets"] = _offsets([len(g.node_ids) for g in graphs])
        out["edge_offsets"] = _offsets([len(g.subject) for g in graphs])
        for name in (*_NODE_ARRAYS, *_EDGE_ARRAYS):
            parts = [np.asarray(getattr(g, name)) for g in graphs]
            if name in ("node_labels", "predicate"):
                parts = [p.astype(str) for p in parts]
            out[f"graph.{name}"] = _concat(self.clip, name, parts)
        return out

    @classmethod
    def from_arrays(cls, a: dict[str, np.ndarray]) -> ClipRecord:
        if int(a["format"]) != FORMAT_VERSION:
            raise ConfigError(f"perception cache: format {int(a['format'])}, expected {FORMAT_VERSION}")
        class_names = tuple(str(s) for s in a["class_names"].tolist())
        ao, no, eo = a["attr_offsets"], a["node_offsets"], a["edge_offsets"]
        frames: list[CachedFrame] = []
        ai = gi = 0
        for k in range(len(a["index"])):
            attributes = graph = None
            if a["has_attributes"][k]:
                rows = slice(int(ao[ai]), int(ao[ai + 1]))
                attributes = ObjectAttributes(
                    class_names=class_names, **{n: a[f"attr.{n}"][rows] for n in _ATTR_ARRAYS}
                )
                ai += 1
            if a["has_graph"][k]:
                nodes, edges = slice(int(no[gi]), int(no[gi + 1])), slice(int(eo[gi]), int(eo[gi + 1]))
                graph = SceneGraph(
                    node_ids=a["graph.node_ids"][nodes],
                    node_labels=tuple(str(s) for s in a["graph.node_labels"][nodes].tolist()),
                    subject=a["graph.subject"][edges],
                    object=a["graph.object"][edges],
                    predicate=tuple(str(s) for s in a["graph.predicate"][edges].tolist()),
                    confidence=a["graph.confidence"][edges],
                )
                gi += 1
            frames.append(
                CachedFrame(
                    index=int(a["index"][k]),
                    pts=float(a["pts"][k]),
                    width=int(a["width"][k]),
                    height=int(a["height"][k]),
                    fps=float(a["fps"][k]),
                    analysed=bool(a["analysed"][k]),
                    attributes=attributes,
                    scene_graph=graph,
                )
            )
        return cls(str(a["clip"]), str(a["camera"]), tuple(frames), int(a["frames_decoded"]))


def _offsets(lengths: list[int]) -> np.ndarray:
    return np.concatenate([[0], np.cumsum(lengths, dtype=np.int64)]).astype(np.int64)


def _concat(clip: str, name: str, parts: list[np.ndarray]) -> np.ndarray:
    if not parts:
        return np.zeros(0, np.float32)
    widths = {p.shape[1:] for p in parts}
    if len(widths) > 1:
        raise PacketError(f"perception cache: clip {clip}: {name} changes shape between frames ({widths})")
    return np.concatenate(parts, axis=0)


class PerceptionCache:
    """A folder of clip records: `<dir>/<dataset>/<split>/<clip>-<key>.npz`."""

    def __init__(self, root: Path, dataset: str, key: str) -> None:
        self.root = Path(root)
        self.dataset = dataset
        self.key = key

    def path(self, split: str, clip: str) -> Path:
        return self.root / self.dataset / split / f"{clip}-{self.key}.npz"

    def save(self, split: str, record: ClipRecord) -> Path:
        path = self.path(split, record.clip)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.npz")
        np.savez_compressed(tmp, **record.to_arrays())
        tmp.replace(path)
        return path

    def load(self, split: str, clip: str) -> ClipRecord:
        path = self.path(split, clip)
        if not path.is_file():
            others = sorted(p.stem.rsplit("-", 1)[-1] for p in path.parent.glob(f"{clip}-*.npz"))
            found = f"keys there: {', '.join(others)}" if others else "no entry for this clip"
            raise ConfigError(
                f"perception cache {self.root}: no {split} clip {clip} for key {self.key} ({found}); "
                "perception config or --max-frames differ: rebuild with vigil eval --cache"
            )
        with np.load(path, allow_pickle=False) as f:
            record = ClipRecord.from_arrays({k: f[k] for k in f.files})
        if record.clip != clip:
            raise ConfigError(f"perception cache {path}: holds clip {record.clip}, expected {clip}")
        return record

    def save_samples(self, clips: dict[str, str], samples: Sequence[FrameSample]) -> list[Path]:
        """Training samples; `clips` maps a sample's `clip` (the fit's source name) to the clip name."""
        grouped: dict[str, list[FrameSample]] = {name: [] for name in clips.values()}
        for s in samples:
            if s.clip not in clips:
                raise ConfigError(f"perception cache: sample of unknown training source {s.clip}")
            grouped[clips[s.clip]].append(s)
        return [self.save("train", ClipRecord.from_samples(c, grouped[c])) for c in clips.values()]

    def load_samples(self, clips: dict[str, str], camera: str) -> list[FrameSample]:
        """FrameSamples as `collect_samples` returned them; `clips` maps source name to clip name."""
        from stages.normality import FrameSample

        out = []
        for source, clip in clips.items():
            for f in self.load("train", clip).frames:
                if f.attributes is None:
                    continue
                out.append(FrameSample(camera, source, f.pts, f.width, f.height, f.attributes, f.scene_graph))
        return out


class CachedSource(Source):
    """A cached clip as a finite camera: its frames with blank pictures (scoring never reads pixels)."""

    live = False

    def __init__(self, record: ClipRecord) -> None:
        if any(not f.fps > 0 for f in record.frames):
            raise ConfigError(f"perception cache: clip {record.clip} has no frame rate (a training clip?)")
        self.record = record
        self.camera = record.camera

    def frames(self, stop: threading.Event, monitor: SourceMonitor) -> Iterator[Frame]:
        monitor.connected("perception cache")
        blank = np.zeros((1, 1, 3), np.uint8)
        for f in self.record.frames:
            if stop.is_set():
                return
            image = np.broadcast_to(blank, (f.height, f.width, 3))  # read-only, no memory per frame
            yield Frame(self.camera, f.index, f.pts, image, time.time(), f.fps)


class ClipRecorder:
    """`on_packet` callback: keeps each camera's frames (without pixels) for the cache."""

    def __init__(self) -> None:
        self.frames: dict[str, list[CachedFrame]] = {}

    def __call__(self, packet: FramePacket) -> None:
        self.frames.setdefault(packet.frame.camera, []).append(CachedFrame.of(packet))

    def record(self, camera: str, frames_decoded: int) -> ClipRecord:
        frames = sorted(self.frames.get(camera, []), key=lambda f: f.index)
        return ClipRecord(camera, camera, tuple(frames), frames_decoded)
