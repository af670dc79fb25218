"""Appearance embeddings of tracked boxes: pooled backbone features of a COCO-trained YOLO.

The box crops (padded squares, resized to `crop_size`) run through the backbone layers of the
PyTorch YOLO model only (no neck, no head) in one batched call per frame; the chosen layer's output
is global-average-pooled and L2-normalised. A COCO backbone separates "person-like" from
"bicycle/cart-like" appearance well, which is what the normality model needs from this attribute;
it is not a re-identification model.

The stage re-embeds a track every `every_k_frames` frames and reuses its cached vector between
(appearance of a tracked object changes slowly); all due boxes of a frame go in one batch.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from pipeline.config import AppearanceConfig, ModelsConfig
from pipeline.errors import ModelError, PacketError
from pipeline.packets import Embeddings, FramePacket, SourceEvent
from pipeline.stage import Stage
from stages.crops import square_crop, square_window
from stages.detect import check_image
from stages.model_export import export_module, resolve_format, weights_hash
from stages.pose import set_torch_threads
from stages.yolo_loading import (
    LoadedModel,
    OnnxNet,
    OpenVINONet,
    TensorRTNet,
    TorchNet,
    fallback_device,
    load_yolo,
    open_net,
)


class PooledBackbone(torch.nn.Module):
    """Backbone layers 0..layer of a YOLO model, global-average-pooled: (B, 3, S, S) -> (B, C)."""

    def __init__(self, layers: torch.nn.Sequential) -> None:
        super().__init__()
        self.layers = layers

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x).mean(dim=(2, 3))


class AppearanceEncoder:
    """Box crops of one image -> (N, D) L2-normalised float32 embeddings.

    The backbone runs in the configured format: PyTorch as it is, or exported once (ONNX via
    torch.onnx, OpenVINO via openvino.convert_model) into the model cache. It is not fused with the
    pose pass: pose crops are person boxes at 128 px with 25 % padding, appearance crops are all tracked
    boxes at 64 px with 10 %, and the 64 px backbone costs a quarter of a 128 px pass per box.
    """

    def __init__(
        self,
        loaded: LoadedModel,
        crop_size: int = 64,
        layer: int = 10,
        pad: float = 0.1,
        batch: int = 32,
        fmt: str = "pytorch",
        cache_dir: str | Path = "var/models/exports",
        inference_threads: int = 0,
    ) -> None:
        if not loaded.is_torch:
            raise ModelError(f"{loaded.path}: appearance needs a PyTorch .pt model to read backbone features")
        if crop_size % 32:
            raise ModelError(
                f"appearance crop_size {crop_size} must be a multiple of 32 (the model's stride)"
            )
        net = loaded.model.model
        if hasattr(net, "fuse"):
            net = net.fuse(verbose=False)  # type: ignore[operator]  # conv+bn folded: same output, faster
        layers = list(net.model)  # type: ignore[union-attr]
        if layer >= len(layers) or any(m.f != -1 for m in layers[1 : layer + 1]):
            raise ModelError(f"{loaded.path}: layers 0..{layer} are not a plain backbone chain")
        self.format = resolve_format(fmt, loaded.device)
        self.device = torch.device(fallback_device(self.format, loaded.device, loaded.path))
        self.layers = torch.nn.Sequential(*layers[: layer + 1]).eval().float()
        self.crop_size = crop_size
        self.pad = pad
        self.batch = batch
        pooled = PooledBackbone(self.layers)
        with torch.inference_mode():
            self.dim = int(pooled(torch.zeros(1, 3, crop_size, crop_size)).shape[1])
        if self.format == "pytorch":
            self.net: TorchNet | OpenVINONet | OnnxNet | TensorRTNet = TorchNet(
                pooled, str(self.device), crop_size
            )
        else:
            key = f"{Path(loaded.path).stem}-{weights_hash(Path(loaded.path))}-layer{layer}"
            path = export_module(pooled, crop_size, self.format, Path(cache_dir), key)
            self.net = open_net(path, self.format, str(self.device), inference_threads)
            self.device = torch.device(self.net.device)

    @classmethod
    def from_config(cls, cfg: AppearanceConfig, models: ModelsConfig | None = None) -> AppearanceEncoder:
        loaded = load_yolo(cfg.model, ("detect", "pose", "segment"), cfg.device)
        return cls(
            loaded,
            cfg.crop_size,
            cfg.layer,
            batch=cfg.batch,
            fmt=cfg.format,
            cache_dir=(ModelsConfig() if models is None else models).cache_dir,
            inference_threads=cfg.inference_threads,
        )

    def _crops(self, image: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        out = np.empty((len(boxes), self.crop_size, self.crop_size, 3), np.uint8)
        for k, box in enumerate(boxes.tolist()):
            out[k] = square_crop(image, *square_window(box, self.pad), self.crop_size)
        return out

    def encode(self, image: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        check_image("AppearanceEncoder.encode", image)
        if not isinstance(boxes, np.ndarray) or boxes.ndim != 2 or boxes.shape[1] != 4:
            got = boxes.shape if isinstance(boxes, np.ndarray) else type(boxes).__name__
            raise PacketError(f"AppearanceEncoder.encode: expected boxes of shape (N, 4), got {got}")
        if len(boxes) == 0:
            return np.zeros((0, self.dim), np.float32)
        crops = self._crops(image, boxes)
        parts = []
        for start in range(0, len(crops), self.batch):
            x = torch.from_numpy(crops[start : start + self.batch][..., ::-1].copy()).to(self.device)
            f = self.net(x.permute(0, 3, 1, 2).float().div_(255.0))
            parts.append(torch.nn.functional.normalize(f.float(), dim=1).cpu().numpy())
        return np.concatenate(parts).astype(np.float32)


class AppearanceStage(Stage):
    """An embedding per tracked box (all classes), re-computed per track every `every_k_frames` frames."""

    name = "appearance"
    needs = ("frame", "detections")
    provides = ("appearance",)

    def __init__(self, encoder: AppearanceEncoder, every_k_frames: int = 1, torch_threads: int = 0) -> None:
        if every_k_frames < 1:
            raise ModelError(f"appearance.every_k_frames: expected >= 1, got {every_k_frames}")
        self.encoder = encoder
        self.every_k_frames = every_k_frames
        self.torch_threads = torch_threads
        # camera -> track id -> (frame index of the embedding, vector)
        self._cache: dict[str, dict[int, tuple[int, np.ndarray]]] = {}

    @classmethod
    def from_config(cls, cfg: AppearanceConfig, models: ModelsConfig | None = None) -> AppearanceStage:
        return cls(AppearanceEncoder.from_config(cfg, models), cfg.every_k_frames, cfg.torch_threads)

    def on_start(self) -> None:
        set_torch_threads(self.torch_threads)

    def on_source_added(self, event: SourceEvent) -> None:
        self._cache[event.camera] = {}

    def on_source_eos(self, event: SourceEvent) -> None:
        self._cache.pop(event.camera, None)

    def process(self, packet: FramePacket) -> None:
        dets = packet.detections
        if dets is None:
            raise PacketError("AppearanceStage: packet has no detections (is the detect stage in the graph?)")
        index = packet.frame.index
        cache = self._cache.setdefault(packet.frame.camera, {})
        rows = np.flatnonzero(dets.track_id >= 0)
        tids = [int(t) for t in dets.track_id[rows]]
        due = [
            k
            for k, t in enumerate(tids)
            if (c := cache.get(t)) is None or not 0 <= index - c[0] < self.every_k_frames
        ]
        if due:
            fresh = self.encoder.encode(packet.frame.image, dets.xyxy[rows[due]])
            for k, vector in zip(due, fresh, strict=True):
                cache[tids[k]] = (index, vector)
        live = set(tids)
        for t in [t for t, (i, _) in cache.items() if t not in live and index - i > 10 * self.every_k_frames]:
            del cache[t]
        vectors = (
            np.stack([cache[t][1] for t in tids]).astype(np.float32, copy=False)
            if tids
            else np.zeros((0, self.encoder.dim), np.float32)
        )
        packet.appearance = Embeddings(
            detection_index=rows.astype(np.int64),
            track_id=dets.track_id[rows].astype(np.int64),
            vectors=vectors,
        )
