"""Fail early and loudly when the GPU machine lacks a package, the GPU, or the carried data.

    python -m bench.gpu.check_env [--device cuda]

Exit 0: everything is there. Exit 3: only OpenVINO is missing (call A's /tmp/site is gone: the machine
was not kept warm between the two calls). Exit 2: anything else is missing.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import os
import sys
from pathlib import Path

MODULES = {  # import name -> distribution name (for its version)
    "numpy": "numpy",
    "torch": "torch",
    "torchvision": "torchvision",
    "cv2": None,
    "av": "av",
    "pydantic": "pydantic",
    "pydantic_core": "pydantic_core",
    "yaml": "PyYAML",
    "networkx": "networkx",
    "prometheus_client": "prometheus_client",
    "psutil": "psutil",
    "tqdm": "tqdm",
    "lap": "lap",
    "paho.mqtt.client": "paho-mqtt",
    "ultralytics": "ultralytics",
    "openvino": "openvino",
    "pytest": "pytest",
}
DATA = [
    "models/yolo11n-pose.pt",
    "models/yolo11n_int8_openvino_model/metadata.yaml",
    "data/ucsd_ped2/test/Test004.mp4",
    "data/ucsd_ped2/train/Train001.mp4",
    "data/ucsd_ped2/train/Train004.mp4",
]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda")
    args = ap.parse_args()
    print(
        f"python {sys.version.split()[0]} at {sys.executable}; PYTHONPATH={os.environ.get('PYTHONPATH', '')}"
    )
    missing: list[str] = []
    for module, dist in MODULES.items():
        try:
            mod = importlib.import_module(module)
        except Exception as exc:  # ImportError, or a broken binary (OSError, AttributeError...)
            print(f"MISSING {module}: {type(exc).__name__}: {exc}")
            missing.append(module)
            continue
        version = getattr(mod, "__version__", None)
        if dist is not None:
            try:
                version = importlib.metadata.version(dist)
            except importlib.metadata.PackageNotFoundError:
                version = f"{version} (no metadata for {dist})"
        print(f"ok {module} {version} ({Path(str(mod.__file__)).parent})")
    if "torch" not in missing:
        import torch

        print(f"torch cuda available: {torch.cuda.is_available()}, cuda {torch.version.cuda}")
        if args.device.startswith("cuda"):
            if not torch.cuda.is_available():
                print(f"FATAL: device {args.device} asked but torch sees no CUDA device")
                return 2
            p = torch.cuda.get_device_properties(0)
            print(f"GPU: {p.name}, {p.total_memory / 2**30:.0f} GiB, {p.multi_processor_count} SMs")
    if "openvino" not in missing:
        import openvino as ov

        print(f"openvino devices: {ov.Core().available_devices}")
    shared = Path(os.environ.get("VIGIL_SHARED", ""))
    for rel in DATA:
        if not (shared / rel).exists():
            print(f"MISSING data {shared / rel} (run scripts/gpu_prepare.sh and carry .gpu/shared)")
            missing.append(rel)
    if missing == ["openvino"]:
        print("FATAL (partial): openvino missing: call A's /tmp/site is gone (machine not kept warm?)")
        return 3
    if missing:
        print(f"FATAL: missing {', '.join(missing)}")
        return 2
    print("environment complete")
    return 0


if __name__ == "__main__":
    sys.exit(main())
