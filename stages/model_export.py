"""Export PyTorch weights once into fast formats (ONNX, OpenVINO, TensorRT), cached on disk.

Exports are keyed by the weights' content hash, the format, the input size, the batch and (for the
appearance backbone) the layer, so a changed checkpoint or setting gets a new export and an unchanged
one is reused on the next start. An export is built in a temporary folder beside the cache entry and
renamed into place, so a crash mid-export never leaves a half-written model that a later start loads.
Nothing here downloads: ultralytics' exporter runs with the packages already installed.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Literal

import torch

from pipeline.errors import ModelError

log = logging.getLogger(__name__)

Format = Literal["pytorch", "onnx", "openvino", "engine"]
FORMATS: tuple[Format, ...] = ("pytorch", "onnx", "openvino", "engine")


def resolve_format(fmt: str, device: str) -> Format:
    """'auto' -> PyTorch on CUDA, OpenVINO on the CPU (measured fastest there, see bench/README)."""
    if fmt == "auto":
        return "pytorch" if device.startswith("cuda") else "openvino"
    if fmt not in FORMATS:
        raise ModelError(f"model format {fmt!r}: expected one of auto, {', '.join(FORMATS)}")
    if fmt == "engine":
        check_tensorrt(device)
    return fmt  # type: ignore[return-value]


def check_tensorrt(device: str) -> None:
    """TensorRT needs a CUDA device and the `tensorrt` package; say which one is missing."""
    if not device.startswith("cuda") or not torch.cuda.is_available():
        raise ModelError(f"format 'engine' (TensorRT) needs a CUDA device, got device {device!r}")
    try:
        import tensorrt  # noqa: F401
    except ImportError as e:
        raise ModelError("format 'engine' (TensorRT): the tensorrt package is not installed") from e


def weights_hash(path: Path) -> str:
    """First 16 hex digits of the file's SHA-256 (content, not name or mtime)."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


def _artifact(folder: Path, fmt: Format) -> Path:
    """The exported model inside a cache entry: an OpenVINO folder, an .onnx or an .engine file."""
    pattern = {"onnx": "*.onnx", "openvino": "*_openvino_model", "engine": "*.engine"}[fmt]  # type: ignore[index]
    found = sorted(folder.glob(pattern))
    if not found:
        raise ModelError(f"{folder}: cache entry holds no {fmt} model (delete the folder to re-export)")
    return found[0]


def _publish(tmp: Path, final: Path) -> None:
    """Rename a finished export into place; if another process won the race, keep theirs."""
    try:
        os.rename(tmp, final)
    except OSError:
        if not final.is_dir():
            raise
        shutil.rmtree(tmp, ignore_errors=True)


def export_yolo(
    weights: Path, fmt: Format, imgsz: int, batch: int, cache_dir: Path, device: str = "cpu"
) -> Path:
    """The `fmt` export of a YOLO `.pt` checkpoint (dynamic batch up to `batch`), exported on first use."""
    if fmt == "pytorch":
        return weights
    if not weights.is_file():
        raise ModelError(f"{weights}: model file not found")
    key = f"{weights.stem}-{weights_hash(weights)}-{fmt}-{imgsz}-b{batch}"
    final = cache_dir / key
    if final.is_dir():
        return _artifact(final, fmt)
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{key}.", dir=cache_dir))
    try:
        from ultralytics import YOLO

        local = tmp / weights.name
        shutil.copyfile(weights, local)  # ultralytics writes the export next to the weights
        log.info("exporting %s to %s (imgsz %d, batch %d) into %s", weights.name, fmt, imgsz, batch, final)
        YOLO(str(local)).export(
            format=fmt,
            imgsz=imgsz,
            batch=batch,
            dynamic=True,
            simplify=True,
            device="0" if fmt == "engine" else "cpu",
            verbose=False,
        )
        local.unlink()
        for extra in tmp.glob("*.onnx") if fmt == "engine" else ():
            extra.unlink()  # TensorRT is built from an intermediate ONNX file
        _artifact(tmp, fmt)
    except Exception as e:  # the exporter raises many types (missing package, conversion error)
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(e, ModelError):
            raise
        msg = str(e).splitlines()[0] if str(e) else ""
        raise ModelError(f"{weights}: {fmt} export failed ({e.__class__.__name__}: {msg[:200]})") from e
    _publish(tmp, final)
    return _artifact(final, fmt)


def export_module(module: torch.nn.Module, imgsz: int, fmt: Format, cache_dir: Path, key: str) -> Path:
    """The `fmt` export of a plain (B, 3, imgsz, imgsz) -> tensor module with a dynamic batch.

    For parts of a model ultralytics cannot export on their own (the appearance backbone): ONNX via
    torch.onnx.export, OpenVINO via openvino.convert_model, both in-process from the CPU module.
    """
    if fmt not in ("onnx", "openvino"):
        raise ModelError(f"{key}: format {fmt!r} is not available for this model (use onnx or openvino)")
    name = "backbone.onnx" if fmt == "onnx" else "backbone_openvino_model"
    final = cache_dir / f"{key}-{fmt}-{imgsz}"
    if final.is_dir():
        return final / name
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=cache_dir))
    module = module.to("cpu").eval()
    example = torch.zeros(1, 3, imgsz, imgsz)
    try:
        if fmt == "onnx":
            torch.onnx.export(
                module,
                (example,),
                str(tmp / name),
                input_names=["images"],
                output_names=["features"],
                dynamic_axes={"images": {0: "batch"}, "features": {0: "batch"}},
                dynamo=False,
            )
        else:
            import openvino as ov

            ov_model = ov.convert_model(module, example_input=example, input=[(-1, 3, imgsz, imgsz)])
            (tmp / name).mkdir()
            ov.save_model(ov_model, str(tmp / name / "backbone.xml"), compress_to_fp16=False)
    except Exception as e:  # torch.onnx / openvino raise many types; all mean "cannot export"
        shutil.rmtree(tmp, ignore_errors=True)
        msg = str(e).splitlines()[0] if str(e) else ""
        raise ModelError(f"{key}: {fmt} export failed ({e.__class__.__name__}: {msg[:200]})") from e
    _publish(tmp, final)
    return final / name
