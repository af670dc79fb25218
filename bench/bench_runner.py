"""Runner overhead: replay a Ped2 test clip through a decode-only graph vs a bare PyAV decode loop.

Both are measured in the same run, alternating, several repetitions; the ratio of medians is the
runner's overhead (aim: <= 1.2x). Results are printed and written as JSON.

    python bench/bench_runner.py [--clip PATH] [--repeats 5] [--out var/bench/runner.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import threading
import time
from pathlib import Path

import av

from pipeline.graph import build_graph
from pipeline.metrics import Metrics
from pipeline.runner import Runner, RunnerOptions
from pipeline.sources.file import FileSource

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CLIP = REPO.parent / "shared" / "data" / "ucsd_ped2" / "test" / "Test004.mp4"


def bare_decode(clip: Path) -> int:
    """What a user would write: open, decode every frame to a BGR array."""
    n = 0
    with av.open(str(clip)) as container:
        for frame in container.decode(video=0):
            frame.to_ndarray(format="bgr24")
            n += 1
    return n


def runner_decode(clip: Path) -> int:
    runner = Runner(
        build_graph([]), [FileSource("bench", clip)], Metrics(), threading.Event(), options=RunnerOptions()
    )
    report = runner.run()
    if report.source_errors:
        raise RuntimeError(report.source_errors)
    return report.frames_completed.get("bench", 0)


def timed(fn, clip: Path) -> tuple[float, int]:  # type: ignore[no-untyped-def]
    t0 = time.perf_counter()
    n = fn(clip)
    return time.perf_counter() - t0, n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clip", type=Path, default=DEFAULT_CLIP)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--loops", type=int, default=5, help="clip replays per measurement")
    parser.add_argument("--out", type=Path, default=REPO / "var" / "bench" / "runner.json")
    args = parser.parse_args()

    bare_s, runner_s, frames = [], [], 0
    for _ in range(args.repeats):
        for name, fn, acc in (("bare", bare_decode, bare_s), ("runner", runner_decode, runner_s)):
            total, n = 0.0, 0
            for _ in range(args.loops):
                dt, k = timed(fn, args.clip)
                total, n = total + dt, n + k
            acc.append(total)
            if name == "bare":
                frames = n
            elif n != frames:
                raise SystemExit(f"runner delivered {n} frames, bare decode {frames}")
    bare_fps = frames / statistics.median(bare_s)
    runner_fps = frames / statistics.median(runner_s)
    result = {
        "clip": str(args.clip),
        "frames_per_measurement": frames,
        "repeats": args.repeats,
        "bare_pyav_fps": round(bare_fps, 1),
        "runner_fps": round(runner_fps, 1),
        "overhead_ratio": round(bare_fps / runner_fps, 3),
        "target_ratio": 1.2,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(
        f"bare PyAV decode {bare_fps:.0f} fps | runner decode-only graph {runner_fps:.0f} fps | "
        f"overhead {result['overhead_ratio']:.3f}x (target <= 1.2x) -> {args.out}"
    )


if __name__ == "__main__":
    main()
