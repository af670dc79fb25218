"""Export PyTorch weights once into fast formats (ONNX, OpenVINO, TensorRT), cached on disk.

Exports are keyed by the weights' content hash, the format, the input size, the batch and (for the
appearance backbone) the layer, so a changed checkpoint or setting gets a new export and an unchanged
one is reused on the next start. An export is built in a temporary folder beside the cache entry and
renamed into place, so a crash mid-export never leaves a half-written model that a later start loads.
Nothing here downloads: ultralytics' exporter runs with the packages already installed.

`openvino_int8` is the OpenVINO export quantized with NNCF (post-training, MIXED preset, the head's
sigmoids and keypoint decoding kept in float as ultralytics does for its own INT8 exports). Its
calibration images are random square windows (8-40 % of the frame's short side, the size range of
padded person crops) of frames spread over the configured normal footage, resized to the crop size:
the activations' ranges are what calibration needs, and this keeps the export free of the detector.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from pipeline.errors import ModelError

log = logging.getLogger(__name__)

Format = Literal["pytorch", "onnx", "openvino", "openvino_int8", "engine"]
FORMATS: tuple[Format, ...] = ("pytorch", "onnx", "openvino", "openvino_int8", "engine")
#: calibration crops for openvino_int8 (measured: 300 windows quantize in ~30 s on 2 cores)
CALIBRATION_CROPS = 300


def resolve_format(fmt: str, device: str, int8: bool = False) -> Format:
    """'auto' -> PyTorch on CUDA; on the CPU OpenVINO, INT8 when `int8` (calibration footage is given).

    On the CPU OpenVINO costs the least per pose crop, INT8 less still (bench/results/README.md).
    """
    if fmt == "auto":
        return "pytorch" if device.startswith("cuda") else ("openvino_int8" if int8 else "openvino")
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
    pattern = {
        "onnx": "*.onnx",
        "openvino": "*_openvino_model",
        "openvino_int8": "*_openvino_model",
        "engine": "*.engine",
    }[fmt]  # type: ignore[index]
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


def staging_dir(cache_dir: Path, name: str) -> Path:
    """A new hidden folder in `cache_dir` to build the cache entry `name` in, published by renaming.

    Its random part follows a '-', never a '.': ultralytics derives the export folder by replacing
    '.pt' in the weights' whole path, and a random part starting with "pt" after a '.' (about one
    folder in 700) sent the export elsewhere ("cache entry holds no openvino model")."""
    return Path(tempfile.mkdtemp(prefix=f".{name}.tmp-", dir=cache_dir))


def export_yolo(
    weights: Path,
    fmt: Format,
    imgsz: int,
    batch: int,
    cache_dir: Path,
    device: str = "cpu",
    calibration: list[Path] | tuple[Path, ...] = (),
) -> Path:
    """The `fmt` export of a YOLO `.pt` checkpoint (dynamic batch up to `batch`), exported on first use."""
    if fmt == "pytorch":
        return weights
    if not weights.is_file():
        raise ModelError(f"{weights}: model file not found")
    if fmt == "openvino_int8":
        return _quantized(
            export_yolo(weights, "openvino", imgsz, batch, cache_dir), imgsz, cache_dir, calibration
        )
    key = f"{weights.stem}-{weights_hash(weights)}-{fmt}-{imgsz}-b{batch}"
    final = cache_dir / key
    if final.is_dir():
        return _artifact(final, fmt)
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = staging_dir(cache_dir, key)
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
    tmp = staging_dir(cache_dir, final.name)
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


def calibration_crops(
    clips: list[Path] | tuple[Path, ...], size: int, count: int, seed: int = 0
) -> np.ndarray:
    """(count, size, size, 3) BGR uint8 random square windows of frames spread evenly over `clips`."""
    import av
    import cv2

    rng = np.random.default_rng(seed)
    frames: list[np.ndarray] = []
    per_clip = max(1, -(-count // 6) // len(clips))  # ~6 windows per frame
    for clip in clips:
        try:
            with av.open(str(clip)) as c:
                stream = c.streams.video[0]
                step = max(1, (stream.frames or 10 * per_clip) // per_clip)
                taken = 0
                for i, f in enumerate(c.decode(stream)):
                    if i % step == 0:
                        frames.append(f.to_ndarray(format="bgr24"))
                        taken += 1
                        if taken == per_clip:
                            break
        except (av.error.FFmpegError, OSError) as e:
            raise ModelError(f"{clip}: cannot read calibration footage ({e.__class__.__name__})") from e
    if not frames:
        raise ModelError("openvino_int8: the calibration footage has no frames")
    out = np.empty((count, size, size, 3), np.uint8)
    for k in range(count):
        image = frames[k % len(frames)]
        h, w = image.shape[:2]
        side = max(8, int(rng.uniform(0.08, 0.4) * min(h, w)))
        x0, y0 = int(rng.integers(0, w - side + 1)), int(rng.integers(0, h - side + 1))
        out[k] = cv2.resize(
            image[y0 : y0 + side, x0 : x0 + side], (size, size), interpolation=cv2.INTER_LINEAR
        )
    return out


def _quantized(fp32: Path, imgsz: int, cache_dir: Path, calibration: list[Path] | tuple[Path, ...]) -> Path:
    """NNCF post-training INT8 of an OpenVINO pose/detect export, calibrated on `calibration` footage."""
    if not calibration:
        raise ModelError(
            "format 'openvino_int8' needs calibration footage: set models.calibration (normal clips)"
        )
    missing = [str(c) for c in calibration if not Path(c).is_file()]
    if missing:
        raise ModelError(f"models.calibration: file not found: {missing[0]}")
    h = hashlib.sha256()
    for clip in sorted(str(c) for c in calibration):
        h.update(f"{Path(clip).name}:{Path(clip).stat().st_size}:{weights_hash(Path(clip))};".encode())
    final = cache_dir / f"{fp32.parent.name.replace('-openvino-', '-openvino_int8-')}-cal{h.hexdigest()[:12]}"
    if final.is_dir():
        return _artifact(final, "openvino_int8")
    try:
        import nncf
        import openvino as ov
    except ImportError as e:
        raise ModelError("format 'openvino_int8' needs the nncf package (pip install nncf)") from e
    crops = calibration_crops(list(calibration), imgsz, CALIBRATION_CROPS)
    tmp = staging_dir(cache_dir, final.name)
    try:
        log.info("quantizing %s to INT8 on %d calibration windows into %s", fp32.name, len(crops), final)
        xml = next(iter(sorted(fp32.glob("*.xml"))))
        model = ov.Core().read_model(str(xml))
        ops = model.get_ordered_ops()
        sigmoids = [op.get_friendly_name() for op in ops if op.get_type_name() == "Sigmoid"]
        head = sigmoids[-1].split("/", 1)[0] if sigmoids else None
        ignored = [
            op.get_friendly_name()
            for op in ops
            if op.get_type_name() == "Sigmoid"
            or (head is not None and op.get_friendly_name().startswith((f"{head}/", f"{head}.dfl")))
        ]

        def to_input(crop: np.ndarray) -> np.ndarray:
            return np.ascontiguousarray(crop[None, ..., ::-1].transpose(0, 3, 1, 2), np.float32) / 255.0

        quantized = nncf.quantize(
            model,
            nncf.Dataset(list(crops), to_input),
            preset=nncf.QuantizationPreset.MIXED,
            ignored_scope=nncf.IgnoredScope(names=ignored) if ignored else None,
            subset_size=len(crops),
        )
        folder = tmp / fp32.name
        folder.mkdir()
        ov.save_model(quantized, str(folder / xml.name))
        meta = fp32 / "metadata.yaml"
        if meta.is_file():
            shutil.copyfile(meta, folder / "metadata.yaml")
    except Exception as e:  # nncf / openvino raise many types; all mean "cannot quantize"
        shutil.rmtree(tmp, ignore_errors=True)
        msg = str(e).splitlines()[0] if str(e) else ""
        raise ModelError(f"{fp32}: INT8 quantization failed ({e.__class__.__name__}: {msg[:200]})") from e
    _publish(tmp, final)
    return _artifact(final, "openvino_int8")
