"""Memory: where a camera's process memory goes, and what each added camera costs.

Two measurements, each in fresh processes (a process's resident memory only grows back slowly, so
parts must not share one):

- breakdown: one process builds the graph of `config.yaml`'s settings step by step and records its
  resident set size (RSS, and USS: the pages only it holds) after the interpreter, after importing the
  stack (numpy, torch, ultralytics, OpenVINO, PyAV, OpenCV), after each perception stage is built,
  after the scoring stages with the camera's model, and after a replay of one clip (the networks
  compiled for the frame's input shape, buffers at steady state);
- cameras: `vigil replay` of 1, 2 and 4 copies of the clip as concurrent cameras (lossless), sampling
  the process's RSS every 0.2 s; per added camera = the slope of peak RSS over cameras. The baseline
  is the 1-camera run of the same invocation.

    python bench/bench_memory.py [--clip PATH] [--model var/models/ped2.npz] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import yaml

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CLIP = REPO.parent / "shared" / "data" / "ucsd_ped2" / "test" / "Test004.mp4"
MB = 1024 * 1024

BREAKDOWN = r"""
import json, sys, threading, psutil
proc = psutil.Process()
steps = []
def mark(name):
    info = proc.memory_full_info()
    steps.append({"step": name, "rss_mb": round(info.rss / 2**20, 1), "uss_mb": round(info.uss / 2**20, 1)})
mark("interpreter")
import numpy, cv2, av
mark("numpy, OpenCV, PyAV")
import torch
mark("torch")
import ultralytics, openvino
mark("ultralytics, OpenVINO")
from pipeline.configfile import load_config
from pipeline import assembly
config = load_config(sys.argv[1])
from stages.detect import DetectStage
from stages.pose import PoseStage
from stages.appearance import AppearanceStage
from stages.flow import FlowStage
from stages.attributes import AttributesStage
from stages.scene_graph import SceneGraphStage
mark("Vigil's modules")
stages = [DetectStage.from_config(config.detector)]
mark("detector")
stages.append(PoseStage.from_config(config.pose, config.models))
mark("pose")
stages.append(AppearanceStage.from_config(config.appearance, config.models))
mark("appearance")
stages += [FlowStage(config.flow), AttributesStage(config.attributes), SceneGraphStage(config.scene_graph)]
mark("flow, attributes, scene graph")
from stages.normality import NormalityModel
models = {"bench": NormalityModel.load(sys.argv[3])} if sys.argv[3] != "-" else {}
stages += assembly.scoring_stages(config, models)
mark("normality model, score, explain, events")
from pipeline.sources.file import FileSource
from pipeline.runner import RunnerOptions
assembly.replay(stages, [FileSource("bench", sys.argv[2])], RunnerOptions())
mark("after replaying the clip")
print(json.dumps(steps))
"""


def breakdown(config: Path, clip: Path, model: str, env: dict[str, str]) -> list[dict[str, object]]:
    result = subprocess.run(
        [sys.executable, "-c", BREAKDOWN, str(config), str(clip), model],
        capture_output=True, text=True, env=env, cwd=REPO, timeout=900,
    )  # fmt: skip
    if result.returncode != 0:
        raise RuntimeError(result.stderr[-3000:])
    return json.loads(result.stdout.strip().splitlines()[-1])


def cameras_run(config: Path, clip: Path, n: int, env: dict[str, str], folder: Path) -> dict[str, float]:
    """Peak and median RSS of `vigil replay` of `n` copies of the clip as concurrent cameras."""
    copies = []
    for i in range(n):
        copy = folder / f"cam{i}{clip.suffix}"
        if not copy.exists():
            shutil.copyfile(clip, copy)
        copies.append(str(copy))
    started = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipeline.cli", "replay", *copies, "-c", str(config)],
        cwd=folder, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    watched = psutil.Process(proc.pid)
    samples = []
    while proc.poll() is None:
        try:
            samples.append(watched.memory_info().rss / MB)
        except psutil.NoSuchProcess:
            break
        time.sleep(0.2)
    if proc.returncode != 0:
        raise RuntimeError(f"vigil replay of {n} cameras failed: exit {proc.returncode}")
    samples.sort()
    return {
        "cameras": n,
        "peak_rss_mb": round(samples[-1], 1),
        "median_rss_mb": round(samples[len(samples) // 2], 1),
        "wall_s": round(time.perf_counter() - started, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clip", type=Path, default=DEFAULT_CLIP)
    parser.add_argument("--config", type=Path, default=REPO / "config.yaml")
    parser.add_argument(
        "--model", default=str(REPO / "var" / "models" / "ped2.npz"), help="the cameras' model ('-': none)"
    )
    parser.add_argument("--cameras", default="1,2,4")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "memory.json")
    args = parser.parse_args()
    env = {**os.environ, "YOLO_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    folder = Path(tempfile.mkdtemp(prefix="vigil-memory-"))
    model = args.model if args.model == "-" or Path(args.model).exists() else "-"
    # the replay's config: the same settings, the cameras' model, no HTTP or JSONL (nothing else to
    # measure); written beside the given one, so its relative paths resolve against the same folder
    cameras = [int(n) for n in args.cameras.split(",")]
    models = folder / "models"
    models.mkdir()
    if model != "-":
        for i in range(max(cameras)):
            shutil.copyfile(model, models / f"cam{i}.npz")
    doc = yaml.safe_load(args.config.read_text())
    doc.pop("cameras", None)
    doc["http"] = {"enabled": False}
    doc["sinks"] = {"jsonl": {"enabled": False}, "sqlite": {"path": str(folder / "events.db")}}
    doc.setdefault("scoring", {})["models_dir"] = str(models)
    doc.setdefault("events", {})["media_dir"] = str(folder / "media")
    replay_config = args.config.with_name(f".bench-memory-{os.getpid()}.yaml")
    replay_config.write_text(yaml.safe_dump(doc))
    try:
        steps = breakdown(args.config, args.clip, model, env)
        runs = [cameras_run(replay_config, args.clip, n, env, folder) for n in cameras]
    finally:
        replay_config.unlink()
    first, last = runs[0], runs[-1]
    per_camera = (last["peak_rss_mb"] - first["peak_rss_mb"]) / max(1, last["cameras"] - first["cameras"])
    result = {
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "load": os.getloadavg()},
        "clip": str(args.clip),
        "model": model,
        "breakdown": steps,
        "cameras": runs,
        "base_rss_mb_one_camera": first["peak_rss_mb"],
        "per_added_camera_mb": round(per_camera, 1),
        "ratio_peak_last_over_one_camera": round(last["peak_rss_mb"] / first["peak_rss_mb"], 3),
    }
    print(json.dumps(result, indent=1))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
