"""Load ultralytics YOLO models from a config path, with one-line ModelErrors for what goes wrong.

Supports PyTorch checkpoints (`.pt`), export folders (OpenVINO `*_openvino_model/`, with a
`metadata.yaml`), ONNX and TensorRT engines. Exports can have a static input size and batch 1; what the
export says about itself is read from its metadata so a config that asks for something the export
cannot do fails at load time instead of silently resizing or crashing in the first frame.

A static square OpenVINO detect export can instead run at each frame's letterbox rectangle (`rect`):
ultralytics runs such exports at their square size only (its AutoBackend letterboxes to the metadata's
imgsz, and the IR cannot simply be reshaped: the attention block's views and the head's anchor grid are
constants of the 640x640 trace), so `RectInputs` rewrites those constants for the rectangle and
compiles one network per frame shape. A 640x360 frame then costs a 640x384 pass instead of 640x640.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
import yaml
from ultralytics import YOLO
from ultralytics.data.augment import LetterBox
from ultralytics.utils.nms import non_max_suppression
from ultralytics.utils.ops import scale_boxes

from pipeline.errors import ModelError
from stages.cuda_graphs import GraphedModule, first_output
from stages.model_export import Format, check_tensorrt, export_yolo, resolve_format

log = logging.getLogger(__name__)

#: OpenVINO pins each compiled model's threads to cores; with several single-thread models in one
#: process (detector, pose, appearance; each in its own stage thread) they were pinned to the SAME core
#: and ran one at a time (about twice as slow each). Let the OS schedule them.
OPENVINO_SHARED_CPU: dict[str, object] = {"ENABLE_CPU_PINNING": False}

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
    #: per-frame-shape networks of a static OpenVINO detect export (detector.rect), else None
    rect: RectInputs | None = None

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
    rect: bool = False,
) -> LoadedModel:
    """Load a YOLO model for `task` ("detect", "pose", or a tuple of accepted tasks) from `path`.

    A bare name that is not a file (e.g. "yolo11n.pt") is left to ultralytics to download unless
    YOLO_OFFLINE is set; any other missing path is an error. `inference_threads` > 0 recompiles an
    OpenVINO export with that INFERENCE_NUM_THREADS (this model only; other formats ignore it).
    `rect`: a static square OpenVINO detect export runs at each frame's letterbox rectangle with
    `imgsz` (default: the export's size) on the long side (see RectInputs); other models ignore it.
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
    openvino = p.is_dir() and p.name.endswith("_openvino_model")
    if rect and openvino and static_imgsz is not None and model.task == "detect":
        rect_inputs = RectInputs(model, p, imgsz or static_imgsz, static_imgsz, dev, inference_threads)
        return LoadedModel(model, str(path), str(model.task), names, dev, None, max_batch, rect_inputs)
    if static_imgsz is not None and imgsz is not None and imgsz != static_imgsz:
        raise ModelError(
            f"{path}: export has a static {static_imgsz}x{static_imgsz} input but config asks imgsz={imgsz}"
        )
    if inference_threads > 0 and openvino:
        _openvino_threads(model, p, static_imgsz or imgsz or 640, dev, inference_threads)
    return LoadedModel(model, str(path), str(model.task), names, dev, static_imgsz, max_batch)


def _openvino_config(threads: int) -> dict[str, object]:
    config: dict[str, object] = {"PERFORMANCE_HINT": "LATENCY", **OPENVINO_SHARED_CPU}
    if threads > 0:
        config["INFERENCE_NUM_THREADS"] = threads
    return config


def _openvino_backend(model: YOLO, folder: Path, imgsz: int, device: str) -> object:
    """The OpenVINO backend inside `model`'s predictor (built by one predict on a blank image)."""
    model.predict(np.zeros((imgsz, imgsz, 3), np.uint8), imgsz=imgsz, device=device, verbose=False)
    backend = getattr(getattr(model.predictor, "model", None), "backend", None)
    if backend is None or not hasattr(backend, "compile_model"):
        raise ModelError(f"{folder}: no OpenVINO backend found in the loaded model")
    return backend


def _openvino_threads(model: YOLO, folder: Path, imgsz: int, device: str, threads: int) -> None:
    """Recompile the OpenVINO network of `model` with INFERENCE_NUM_THREADS = `threads`."""
    backend = _openvino_backend(model, folder, imgsz, device)
    xml = next(folder.glob("*.xml"))
    ov_model = backend.ov.Core().read_model(model=str(xml), weights=xml.with_suffix(".bin"))  # type: ignore[attr-defined]
    backend.ov_compiled_model = backend.compile_model(ov_model, config=_openvino_config(threads))  # type: ignore[attr-defined]


def letterbox_shape(height: int, width: int, imgsz: int, stride: int = 32) -> tuple[int, int]:
    """(h, w) of ultralytics' minimal ('rect') letterbox: long side scaled to `imgsz`, sides padded
    up to a multiple of `stride` (360x240 at 640 -> 640x448; 640x360 -> 640x384)."""
    r = min(imgsz / height, imgsz / width)
    h, w = round(height * r), round(width * r)
    return math.ceil(h / stride) * stride, math.ceil(w / stride) * stride


def anchor_grid(height: int, width: int, strides: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """A YOLO head's anchor centres (2, A) in grid units and strides (A,), as ultralytics' make_anchors."""
    points, stride = [], []
    for s in strides:
        h, w = height // s, width // s
        y, x = np.meshgrid(
            np.arange(h, dtype=np.float32) + 0.5, np.arange(w, dtype=np.float32) + 0.5, indexing="ij"
        )
        points.append(np.stack([x.ravel(), y.ravel()]))
        stride.append(np.full(h * w, s, np.float32))
    return np.concatenate(points, axis=1), np.concatenate(stride)


def reshape_detect_ir(model: object, height: int, width: int, strides: tuple[int, ...] = (8, 16, 32)) -> None:
    """Rewrite a static YOLO detect IR (ov.Model, in place) for a (1, 3, height, width) input.

    The trace fixed what depends on the input size as constants: Reshape targets (the attention
    block's token count H*W and its (H, W) view back; the head's per-level and total anchor counts)
    and the head's anchor centres and strides. Each is recomputed for the new size; an anchor or stride
    constant that is not the expected grid of the old size is refused (an unknown graph layout).
    """
    import openvino as ov
    import openvino.opset13 as ops

    in_shape = model.input(0).get_partial_shape()  # type: ignore[attr-defined]
    h0, w0 = in_shape[2].get_length(), in_shape[3].get_length()
    old_points, old_strides = anchor_grid(h0, w0, strides)
    new_points, new_strides = anchor_grid(height, width, strides)
    a0, a1 = old_points.shape[1], new_points.shape[1]
    grids = {(h0 // s, w0 // s): (height // s, width // s) for s in strides}
    counts = {h * w: nh * nw for (h, w), (nh, nw) in grids.items()} | {a0: a1}
    for op in model.get_ordered_ops():  # type: ignore[attr-defined]
        kind = op.get_type_name()
        if kind == "Reshape" and op.input_value(1).get_node().get_type_name() == "Constant":
            target = [int(v) for v in op.input_value(1).get_node().get_data().ravel()]
            if len(target) == 4 and tuple(target[2:]) in grids:  # (B, C, H, W) view of a feature map
                new = target[:2] + list(grids[(target[2], target[3])])
            else:  # flattened H*W or anchor counts (never the batch dimension)
                new = target[:1] + [counts.get(v, v) for v in target[1:]]
            if new != target:
                op.input(1).replace_source_output(ops.constant(np.array(new, np.int64)).output(0))
        elif kind == "Constant" and a0 in list(op.get_output_shape(0)):
            data = op.get_data()
            if data.shape == (1, 2, a0) and np.array_equal(data[0], old_points):
                value = new_points[None]
            elif data.shape == (1, 1, a0) and np.array_equal(data[0, 0], old_strides):
                value = new_strides[None, None]
            else:
                raise ModelError(f"cannot reshape the detector: unknown constant of shape {data.shape}")
            op.output(0).replace(ops.constant(value.astype(data.dtype)).output(0))
    model.get_parameters()[0].set_partial_shape(ov.PartialShape([1, 3, height, width]))  # type: ignore[attr-defined]
    try:
        model.validate_nodes_and_infer_types()  # type: ignore[attr-defined]
    except RuntimeError as e:
        msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise ModelError(f"cannot reshape the detector to {height}x{width} ({msg[:200]})") from e
    out = model.output(0).get_partial_shape()  # type: ignore[attr-defined]
    if out.is_dynamic or out[2].get_length() != a1:
        raise ModelError(
            f"cannot reshape the detector to {height}x{width}: output {out}, expected {a1} anchors"
        )


#: uint8 -> float32 in [0, 1] as ultralytics' predict computes it (a float32 division by 255)
UNIT_SCALE = np.arange(256, dtype=np.float32) / np.float32(255.0)


class RectInputs:
    """A static square OpenVINO detect export, run at each frame's letterbox rectangle.

    One network per input shape, rewritten by `reshape_detect_ir` and compiled on first use (~1 s);
    `predict` letterboxes a frame to its rectangle, runs that network and maps the boxes back as
    ultralytics' predict does. An inference costs about its share of the square's pixels (640x384:
    ~60 %; figures in bench/results/README.md).
    """

    def __init__(
        self, model: YOLO, folder: Path, imgsz: int, export_imgsz: int, device: str, threads: int
    ) -> None:
        if imgsz % 32:
            raise ModelError(f"{folder}: imgsz {imgsz} is not a multiple of 32")
        self.imgsz = imgsz
        self.folder = folder
        self._backend = _openvino_backend(model, folder, export_imgsz, device)
        self._xml = next(folder.glob("*.xml"))
        self._config = _openvino_config(threads)
        self._compiled: dict[tuple[int, int], object] = {}

    def shape(self, height: int, width: int) -> tuple[int, int]:
        return letterbox_shape(height, width, self.imgsz)

    def network(self, shape: tuple[int, int]) -> object:
        """The compiled network for input `shape` (h, w), compiled the first time."""
        if shape not in self._compiled:
            backend = self._backend
            ov_model = backend.ov.Core().read_model(
                model=str(self._xml), weights=self._xml.with_suffix(".bin")
            )  # type: ignore[attr-defined]
            try:
                reshape_detect_ir(ov_model, *shape)
            except ModelError as e:
                raise ModelError(f"{self.folder}: {e} (set detector.rect: false)") from e
            self._compiled[shape] = backend.compile_model(ov_model, config=self._config)  # type: ignore[attr-defined]
        return self._compiled[shape]

    def predict(
        self, image: np.ndarray, conf: float, iou: float, classes: list[int] | None, max_det: int = 300
    ) -> np.ndarray:
        """(N, 6) [x1, y1, x2, y2, conf, cls] float32 boxes of one BGR image: ultralytics' predict, step
        by step, without its per-call machinery (argument checks, source loading, Results objects) and
        with a cheaper conversion to the network's input (a few CPU-ms per frame less). The same
        letterbox, input values, NMS and box scaling, so the same boxes to the bit (tests/test_detect.py).
        """
        shape = self.shape(*image.shape[:2])
        network = self.network(shape)
        boxed = LetterBox(shape, auto=False, stride=32)(image=image)
        x = np.empty((1, 3, *boxed.shape[:2]), np.float32)
        for channel, plane in enumerate(reversed(cv2.split(boxed))):  # BGR -> RGB planes in [0, 1]
            cv2.LUT(plane, UNIT_SCALE, dst=x[0, channel])
        raw = torch.from_numpy(_first_output(network(x)))  # type: ignore[operator]
        found = non_max_suppression(raw, conf, iou, classes, False, max_det=max_det, nc=0)[0]
        found[:, :4] = scale_boxes(boxed.shape[:2], found[:, :4], image.shape)
        return found[:, :6].numpy().astype(np.float32)

    @property
    def compiled_shapes(self) -> tuple[tuple[int, int], ...]:
        return tuple(self._compiled)


# --- raw networks in a chosen format (pose, appearance): tensors in, the first output tensor out ------------


class TorchNet:
    """A PyTorch module on its device."""

    format: Format = "pytorch"

    def __init__(self, module: torch.nn.Module, device: str, graph_imgsz: int | None = None) -> None:
        self.device = device
        self.module = module.to(torch.device(device)).eval().float()
        # on CUDA, square inputs of `graph_imgsz` (the crops) replay captured graphs: one launch per
        # call (stages/cuda_graphs.py); other inputs and the CPU run eagerly
        shape = None if graph_imgsz is None else (3, graph_imgsz, graph_imgsz)
        self._graphed = GraphedModule(self.module, shape) if torch.device(device).type == "cuda" else None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            x = x.to(self.device, non_blocking=True)
            if self._graphed is not None:
                return self._graphed(x)
            y = self.module(x)
        return first_output(y)

    def input_dims(self) -> tuple[int | None, int | None, int | None]:
        return None, None, None


#: crop batches of an OpenVINO net with a `static_size` run in chunks of at most this many, each through
#: a network compiled for exactly that (batch, 3, size, size) input (see OpenVINONet)
OPENVINO_STATIC_BATCH = 4


class OpenVINONet:
    """An OpenVINO IR compiled for the CPU with a fixed thread count (LATENCY hint).

    With `static_size`, (B, 3, static_size, static_size) inputs (the crops) run in chunks of at most
    `static_batch` through networks compiled for exactly that input shape, one per chunk size,
    compiled on first use or by `prepare`; other inputs run on the export's dynamic-shape network.
    A dynamic-shape network costs more per call on the CPU, and the static networks give the same
    outputs to the bit, whole or chunked (tests/test_model_formats.py); each compiled network costs
    memory, and the appearance backbone (64 px, batches of 5-14) gained nothing from them, so only
    pose uses them (figures in bench/results/README.md).
    """

    format: Format = "openvino"
    device = "cpu"

    def __init__(
        self,
        xml: Path,
        threads: int,
        static_size: int | None = None,
        static_batch: int = OPENVINO_STATIC_BATCH,
    ) -> None:
        import openvino as ov

        # f32 explicitly: OpenVINO picks bf16 on CPUs with AMX, and formats must agree (test_model_formats)
        config: dict[str, object] = {
            "PERFORMANCE_HINT": "LATENCY",
            "INFERENCE_PRECISION_HINT": "f32",
            **OPENVINO_SHARED_CPU,
        }
        if threads > 0:
            config["INFERENCE_NUM_THREADS"] = threads
        self._xml = xml
        self._config = config
        self._core = ov.Core()
        self.compiled = self._compile(None)
        self.request = self.compiled.create_infer_request()
        self.static_size = static_size
        self.static_batch = max(1, static_batch)
        self._static: dict[int, object] = {}  # batch -> infer request of the network compiled for it

    def _compile(self, shape: list[int] | None) -> object:
        try:
            model = self._core.read_model(str(self._xml))
            if shape is not None:
                model.reshape(shape)
            return self._core.compile_model(model, "CPU", self._config)
        except RuntimeError as e:
            msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
            at = "" if shape is None else f" for input {shape}"
            raise ModelError(f"{self._xml}: cannot compile OpenVINO model{at} ({msg[:200]})") from e

    def _static_request(self, batch: int) -> object:
        request = self._static.get(batch)
        if request is None:
            size = self.static_size
            request = self._compile([batch, 3, size, size]).create_infer_request()  # type: ignore[attr-defined]
            self._static[batch] = request
        return request

    def prepare(self) -> None:
        """Compile the static networks of every chunk size now rather than on their first use
        (pose: ~1 s each on this CPU; a stage calls it when it starts)."""
        if self.static_size is not None:
            for batch in range(1, self.static_batch + 1):
                self._static_request(batch)

    def input_dims(self) -> tuple[int | None, int | None, int | None]:
        """(batch, height, width) of the input; None where the export leaves it dynamic."""
        shape = self.compiled.input(0).get_partial_shape()
        return tuple(None if d.is_dynamic else d.get_length() for d in (shape[0], shape[2], shape[3]))  # type: ignore[return-value]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        arr = np.ascontiguousarray(x.cpu().numpy(), np.float32)
        size = self.static_size
        if size is None or arr.shape[2:] != (size, size) or len(arr) == 0:
            return torch.from_numpy(_first_output(self.request.infer([arr])))
        step = self.static_batch
        parts = [
            _first_output(self._static_request(len(chunk)).infer([chunk]))  # type: ignore[attr-defined]
            for chunk in (arr[i : i + step] for i in range(0, len(arr), step))
        ]
        return torch.from_numpy(parts[0] if len(parts) == 1 else np.concatenate(parts))


def _first_output(out: object) -> np.ndarray:
    """The first output of an OpenVINO infer result, as an array that owns its memory."""
    return np.array(next(iter(out.values())))  # type: ignore[attr-defined]


class OnnxNet:
    """An ONNX Runtime session; CUDA execution provider when asked for and installed, else the CPU."""

    format: Format = "onnx"

    def __init__(self, path: Path, device: str, threads: int) -> None:
        import onnxruntime as ort

        providers = ["CPUExecutionProvider"]
        self.device = "cpu"
        if device.startswith("cuda"):
            if "CUDAExecutionProvider" in ort.get_available_providers():
                index = int(device.split(":")[1]) if ":" in device else 0
                providers.insert(0, ("CUDAExecutionProvider", {"device_id": index}))  # type: ignore[arg-type]
                self.device = device
            else:
                log.warning("%s: onnxruntime has no CUDA provider here; this model runs on the CPU", path)
        options = ort.SessionOptions()
        if threads > 0:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        try:
            self.session = ort.InferenceSession(str(path), options, providers=providers)
        except Exception as e:  # onnxruntime raises its own exception types for bad files
            msg = str(e).splitlines()[0] if str(e) else ""
            raise ModelError(f"{path}: cannot load ONNX model ({e.__class__.__name__}: {msg[:200]})") from e
        self.input = self.session.get_inputs()[0].name

    def input_dims(self) -> tuple[int | None, int | None, int | None]:
        """(batch, height, width) of the input; None where the export leaves it dynamic."""
        shape = self.session.get_inputs()[0].shape
        return tuple(d if isinstance(d, int) else None for d in (shape[0], shape[2], shape[3]))  # type: ignore[return-value]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        out = self.session.run(None, {self.input: np.ascontiguousarray(x.cpu().numpy(), np.float32)})[0]
        return torch.from_numpy(out)


class TensorRTNet:
    """A TensorRT engine through ultralytics' AutoBackend (which owns the bindings)."""

    format: Format = "engine"

    def __init__(self, path: Path, device: str) -> None:
        check_tensorrt(device)
        from ultralytics.nn.autobackend import AutoBackend

        self.device = device
        try:
            self.backend = AutoBackend(str(path), device=torch.device(device), verbose=False)
        except Exception as e:  # TensorRT raises many types for bad or mismatched engines
            msg = str(e).splitlines()[0] if str(e) else ""
            raise ModelError(
                f"{path}: cannot load TensorRT engine ({e.__class__.__name__}: {msg[:200]})"
            ) from e

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        y = self.backend(x.to(self.device))
        return y[0] if isinstance(y, (list, tuple)) else y

    def input_dims(self) -> tuple[int | None, int | None, int | None]:
        """Batches up to the export batch; the size is the export's (None: unknown, the caller's imgsz)."""
        size = getattr(self.backend, "imgsz", None) or [None, None]
        return int(getattr(self.backend, "batch", 1) or 1), size[0], size[1]


InferenceNet = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True, slots=True)
class LoadedNet:
    """A YOLO network in one format, called on (B, 3, H, W) float tensors in [0, 1] (RGB)."""

    net: TorchNet | OpenVINONet | OnnxNet | TensorRTNet
    path: str
    format: Format
    task: str
    names: tuple[str, ...]
    #: where the network computes (an explicit fallback to "cpu" is logged when asked for CUDA)
    device: str
    #: input size the export was built for; `any_size` exports also take other multiples of 32
    imgsz: int
    any_size: bool
    #: largest batch one call accepts (None: any)
    max_batch: int | None
    #: the PyTorch checkpoint's model (for parts of it, e.g. the appearance backbone); None for exports
    torch_model: torch.nn.Module | None


def fallback_device(fmt: Format, device: str, what: str) -> str:
    """The device a format can run on: OpenVINO is CPU-only here, so CUDA falls back with a log line."""
    if fmt in ("openvino", "openvino_int8") and device.startswith("cuda"):
        log.warning("%s: format %r runs on the CPU; device %r is not used for it", what, fmt, device)
        return "cpu"
    return device


def _export_kind(p: Path) -> Format | None:
    if p.suffix == ".pt":
        return "pytorch"
    if p.suffix == ".onnx":
        return "onnx"
    if p.suffix == ".engine":
        return "engine"
    if p.is_dir() and p.name.endswith("_openvino_model"):
        return "openvino"
    return None


def open_net(
    path: Path, fmt: Format, device: str, threads: int, crop_size: int | None = None
) -> TorchNet | OpenVINONet | OnnxNet | TensorRTNet:
    """The runnable network of an exported model file or folder; `crop_size`: the square input that
    most calls have (OpenVINO compiles static networks for it)."""
    if fmt in ("openvino", "openvino_int8"):
        xml = next(iter(sorted(path.glob("*.xml"))), None) if path.is_dir() else None
        if xml is None:
            raise ModelError(f"{path}: OpenVINO folder has no .xml model")
        return OpenVINONet(xml, threads, crop_size)
    if fmt == "onnx":
        return OnnxNet(path, device, threads)
    if fmt == "engine":
        return TensorRTNet(path, device)
    raise ModelError(f"{path}: not an exported model")


def load_net(
    path: str,
    task: str | tuple[str, ...],
    fmt: str,
    device: str,
    imgsz: int,
    batch: int,
    cache_dir: str | Path,
    inference_threads: int = 0,
    calibration: list[Path] | tuple[Path, ...] = (),
) -> LoadedNet:
    """Load `path` as a raw network in format `fmt` ('auto' or one of model_export.FORMATS).

    A `.pt` checkpoint is exported once to `fmt` into `cache_dir` (dynamic batch up to `batch`, input
    `imgsz`) and the export is what runs; an export given directly runs as it is (its format must match
    `fmt` unless that is 'auto'). `inference_threads` > 0 sets OpenVINO / ONNX Runtime intra-op threads.
    `calibration`: normal footage for 'openvino_int8' ('auto' picks INT8 on the CPU when it is given).
    """
    loaded = load_yolo(path, task, device)
    dev = loaded.device
    p = Path(path).expanduser()
    if not p.exists():  # a bare name that ultralytics fetched: the file it loaded
        p = Path(str(getattr(loaded.model, "ckpt_path", "") or path))
    kind = _export_kind(p)
    if kind is None:
        raise ModelError(f"{path}: unknown model format (expected .pt, .onnx, .engine or *_openvino_model/)")
    want = resolve_format(fmt, dev, bool(calibration)) if (fmt != "auto" or kind == "pytorch") else kind
    if kind != "pytorch" and want != kind and not (kind == "openvino" and want == "openvino_int8"):
        raise ModelError(f"{path}: is a {kind} export but format {fmt!r} was asked (give the .pt weights)")
    dev = fallback_device(want, dev, path)
    if want == "pytorch":
        module = loaded.model.model
        if not isinstance(module, torch.nn.Module):
            raise ModelError(f"{path}: not a PyTorch model")
        if hasattr(module, "fuse"):
            module = module.fuse(verbose=False)  # conv+bn folded, as ultralytics' predict does
        net: TorchNet | OpenVINONet | OnnxNet | TensorRTNet = TorchNet(module, dev, imgsz)
        return LoadedNet(net, str(p), want, loaded.task, loaded.names, dev, imgsz, True, None, module)
    source = p if kind != "pytorch" else export_yolo(p, want, imgsz, batch, Path(cache_dir), dev, calibration)
    net = open_net(source, want, dev, inference_threads, imgsz)
    batch_dim, height, width = net.input_dims()
    # a TensorRT profile ends at the export's size: never feed it a larger full frame
    any_size = height is None and width is None and want != "engine"
    built = int(height or imgsz)
    return LoadedNet(
        net, str(source), want, loaded.task, loaded.names, net.device, built, any_size, batch_dim, None
    )
