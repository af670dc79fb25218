"""Load ultralytics YOLO models from a config path, with one-line ModelErrors for what goes wrong.

Supports PyTorch checkpoints (`.pt`), export folders (OpenVINO `*_openvino_model/`, with a
`metadata.yaml`), ONNX and TensorRT engines. Exports can have a static input size and batch 1; what the
export says about itself is read from its metadata so a config that asks for something the export
cannot do fails at load time instead of silently resizing or crashing in the first frame.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml
from ultralytics import YOLO

from pipeline.errors import ModelError

_EXPORT_SUFFIXES = (".onnx", ".engine", ".torchscript", ".mlpackage", ".tflite")


@dataclass(frozen=True, slots=True)
class LoadedModel:
    """A YOLO model plus the facts about it that stages must respect."""

    model: YOLO
    path: str
    task: str
    names: tuple[str, ...]
    device: str
    #: input size an export was built for when it cannot take another one, else None
    static_imgsz: int | None
    #: largest batch one call accepts (None: any)
    max_batch: int | None

    @property
    def is_torch(self) -> bool:
        return self.path.endswith(".pt")


def resolve_device(device: str) -> str:
    """'auto' -> 'cuda' when a GPU is visible, else 'cpu'; explicit devices are checked to exist."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ModelError(f"device {device!r}: CUDA is not available on this machine (use 'cpu' or 'auto')")
    return device


def _read_metadata(path: Path) -> dict[str, object]:
    meta = path / "metadata.yaml" if path.is_dir() else path.with_name("metadata.yaml")
    if not meta.is_file():
        return {}
    try:
        data = yaml.safe_load(meta.read_text())
    except yaml.YAMLError as e:
        raise ModelError(f"{meta}: unreadable metadata ({e.__class__.__name__})") from e
    if not isinstance(data, dict):
        raise ModelError(f"{meta}: metadata is not a mapping")
    return data


def load_yolo(
    path: str,
    task: str | tuple[str, ...],
    device: str,
    imgsz: int | None = None,
    inference_threads: int = 0,
) -> LoadedModel:
    """Load a YOLO model for `task` ("detect", "pose", or a tuple of accepted tasks) from `path`.

    A bare name that is not a file (e.g. "yolo11n.pt") is left to ultralytics to download unless
    YOLO_OFFLINE is set; any other missing path is an error. `inference_threads` > 0 recompiles an
    OpenVINO export with that INFERENCE_NUM_THREADS (this model only; other formats ignore it).
    """
    p = Path(path).expanduser()
    offline = os.environ.get("YOLO_OFFLINE", "").lower() in ("1", "true", "yes")
    if not p.exists() and (offline or p.parent != Path(".") or not p.name.endswith(".pt")):
        raise ModelError(f"{path}: model file not found")
    meta = _read_metadata(p) if p.exists() and (p.is_dir() or p.suffix in _EXPORT_SUFFIXES) else {}
    allowed = (task,) if isinstance(task, str) else task
    wanted = " or ".join(repr(t) for t in allowed)
    meta_task = meta.get("task")
    if meta_task is not None and meta_task not in allowed:
        raise ModelError(f"{path}: is a {meta_task!r} model, expected a {wanted} model")
    dev = resolve_device(device)
    try:
        # .pt checkpoints know their task; exports are told it (their metadata was checked above)
        model = YOLO(str(p), task=None if p.suffix == ".pt" else str(meta_task or allowed[0]))
    except Exception as e:  # ultralytics raises many types for bad files; all mean "cannot load"
        msg = str(e).splitlines()[0] if str(e) else ""
        raise ModelError(f"{path}: cannot load YOLO model ({e.__class__.__name__}: {msg[:200]})") from e
    if model.task not in allowed:
        raise ModelError(f"{path}: is a {model.task!r} model, expected a {wanted} model")
    names_map = model.names if p.suffix == ".pt" else meta.get("names", model.names)
    if not isinstance(names_map, dict) or not names_map:
        raise ModelError(f"{path}: model has no class names")
    names = tuple(str(names_map[i]) for i in sorted(names_map))

    static_imgsz: int | None = None
    max_batch: int | None = None
    if p.suffix != ".pt":
        args = meta.get("args", {}) if isinstance(meta.get("args"), dict) else {}
        dynamic = bool(args.get("dynamic", False))  # type: ignore[union-attr]
        size = meta.get("imgsz")
        if not dynamic and isinstance(size, list) and len(size) == 2:
            if size[0] != size[1]:
                raise ModelError(f"{path}: non-square static input {size} is not supported")
            static_imgsz = int(size[0])
        max_batch = None if dynamic else int(meta.get("batch", 1))  # type: ignore[arg-type]
    if static_imgsz is not None and imgsz is not None and imgsz != static_imgsz:
        raise ModelError(
            f"{path}: export has a static {static_imgsz}x{static_imgsz} input but config asks imgsz={imgsz}"
        )
    if inference_threads > 0 and p.is_dir() and p.name.endswith("_openvino_model"):
        _openvino_threads(model, p, static_imgsz or imgsz or 640, dev, inference_threads)
    return LoadedModel(model, str(path), str(model.task), names, dev, static_imgsz, max_batch)


def _openvino_threads(model: YOLO, folder: Path, imgsz: int, device: str, threads: int) -> None:
    """Recompile the OpenVINO network of `model` with INFERENCE_NUM_THREADS = `threads`."""
    import numpy as np

    # ultralytics builds its backend on the first predict; build it, then swap the compiled model
    model.predict(np.zeros((imgsz, imgsz, 3), np.uint8), imgsz=imgsz, device=device, verbose=False)
    backend = getattr(getattr(model.predictor, "model", None), "backend", None)
    if backend is None or not hasattr(backend, "compile_model"):
        raise ModelError(f"{folder}: cannot set inference_threads (no OpenVINO backend found)")
    xml = next(folder.glob("*.xml"))
    ov_model = backend.ov.Core().read_model(model=str(xml), weights=xml.with_suffix(".bin"))
    config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": threads}
    backend.ov_compiled_model = backend.compile_model(ov_model, config=config)
