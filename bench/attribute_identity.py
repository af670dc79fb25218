"""Identity check for refactors of the normality model's attributes: fit, score and explain synthetic
footage and dump every number and sentence, so a dump made before a change can be compared to the bit
with one made after it.

    python -m bench.attribute_identity dump OUT.npz        # record (e.g. at main's HEAD)
    python -m bench.attribute_identity compare REF.npz     # dump again and compare with REF

What is dumped: the saved model file's arrays (model.save), then for several scenarios (walkers with an
unusual class, speed, heading, size, scale change, dwell, pose, gait, relation, a moving region, a box
cut by the frame edge), each frame's raw attribute scores, calibrated and sustained scores, object and
frame scores, and every explanation reason (attribute, observed, expected, score, sentence); once with
all attributes and the model with sustained evidence, once with a subset of attributes and `sum`
combination, once with the model without sustained evidence. Takes about half a minute on one core.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

from pipeline.config import ScoringConfig
from stages.explain import Explainer
from stages.normality import NormalityModel, fit_normality
from stages.normality.features import TrackMemory
from stages.normality.judge import raw_scores
from stages.score import Scorer

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the synthetic walkway
from synthetic import Walker, frame_sample, normal_footage


def scenarios() -> dict[str, tuple[list[Walker], list[tuple[int, str, int]] | None]]:
    return {
        "normal": ([Walker(1, x=0.2), Walker(2, x=0.7, speed=-1.0), Walker(3, x=0.5)], [(1, "near", 2)]),
        "bicycle": ([Walker(1, cls="bicycle"), Walker(2, x=0.3)], None),
        "car_fast": ([Walker(1, cls="car", speed=3.0, y=0.3)], None),
        "fast": ([Walker(1, speed=4.0), Walker(2, x=0.3, speed=-3.0)], None),
        "upward": ([Walker(1, speed=0.0, y=0.5), Walker(2, x=0.8)], None),
        "tall": ([Walker(1, height=0.4, aspect=1.2), Walker(2, x=0.6, height=0.05)], None),
        "riding": ([Walker(1), Walker(2)], [(1, "riding", 2), (2, "near", 1)]),
        "still_legs": ([Walker(1, leg_swing=0.0), Walker(2, x=0.3, leg_swing=0.03, stride=0.06)], None),
        "no_stride": ([Walker(1, stride=0.0), Walker(2, x=0.8, stride=0.02)], None),
        "blob": (
            [Walker(-5, is_blob=True, speed=2.0, x=0.85, y=0.2), Walker(-6, is_blob=True, height=0.3)],
            None,
        ),
        "edge": ([Walker(1, x=0.005, speed=0.5), Walker(2, x=0.5, y=0.99)], None),
        "far_row": ([Walker(1, y=0.1, speed=-2.0), Walker(2, y=0.95, cls="bicycle")], None),
    }


def tweak(name: str, fs, i: int) -> None:
    """Per-scenario changes the Walker does not describe (dwell, scale change, direction)."""
    a = fs.attributes
    if name == "upward":
        a.velocity[0] = (0.1, -1.5)
        a.speed[0] = np.float32(np.hypot(0.1, -1.5))
        a.direction[0] = np.float32(np.arctan2(-1.5, 0.1))
    if name == "tall":
        a.scale_rate[0] = np.float32(0.8 + 0.01 * i)
        a.dwell[1] = np.float32(30.0 + i)
    if name == "far_row":
        a.pose[0, :] = np.nan


def blob_footage(clips: int = 10, frames: int = 50) -> list:
    """Walkers and a small moving region (a swaying branch) in every frame: unexplained motion learnt."""
    out = []
    for k in range(clips):
        rng = np.random.default_rng(100 + k)
        people = [Walker(k * 100 + i, x=0.2 + 0.3 * i, speed=(-1.0) ** i) for i in range(3)]
        branch = Walker(-1, x=0.85, y=0.2, speed=0.4, height=0.05, aspect=1.0, is_blob=True)
        for f in range(frames):
            for w in people:
                w.x = float(np.clip(w.x + w.speed * 0.01, 0.02, 0.98))
            out.append(
                frame_sample(
                    [*people, branch],
                    f / 10,
                    rng,
                    [(people[0].track_id, "near", people[1].track_id)],
                    clip=f"b{k:02d}",
                )
            )
    return out


def run(model: NormalityModel, config: ScoringConfig, out: dict[str, object], prefix: str) -> None:
    for name, (walkers, relations) in scenarios().items():
        rng = np.random.default_rng(sum(map(ord, name)))
        scorer = Scorer(model, config)
        explainer = Explainer(model)
        memory = TrackMemory.of(config)
        rows: dict[str, list[np.ndarray]] = {k: [] for k in ("raw", "cal", "sus", "obj", "frame")}
        texts: list[object] = []
        for i in range(30):
            fs = frame_sample(walkers, i / 10, rng, relations, clip=name)
            tweak(name, fs, i)
            size = (fs.height, fs.width)
            hist = memory.update(fs.attributes, fs.pts)
            raw = raw_scores(
                model, fs.attributes, fs.scene_graph, hist, config.knn_k, scorer.attributes, size
            )
            scores = scorer.score(fs.attributes, fs.scene_graph, fs.pts, size)
            ex = explainer.explain(fs.attributes, scores, fs.scene_graph)
            rows["raw"].append(raw)
            rows["cal"].append(scores.attribute_scores)
            rows["sus"].append(
                np.full(scores.attribute_scores.shape, -1.0, np.float32)
                if scores.sustained_scores is None
                else scores.sustained_scores
            )
            rows["obj"].append(scores.object_score)
            rows["frame"].append(np.array([scores.frame_score, scores.smoothed_score]))
            texts.append(
                [
                    [o.track_id, o.class_name, list(o.xyxy), o.score]
                    + [[r.attribute, r.observed, r.expected, r.score, r.sentence] for r in o.reasons]
                    for o in ex.objects
                ]
            )
        for k, v in rows.items():
            out[f"{prefix}.{name}.{k}"] = np.concatenate(v)
        out[f"{prefix}.{name}.explanations"] = np.array(json.dumps(texts))


def dump() -> dict[str, object]:
    out: dict[str, object] = {}
    footage = normal_footage(clips=25, frames=60, walkers=8)
    with_sustained = fit_normality(footage, ScoringConfig(), seed=0)
    without = fit_normality(blob_footage(), ScoringConfig(), seed=0)
    for label, model in (("model", with_sustained), ("small", without)):
        with tempfile.TemporaryDirectory() as tmp:
            path = model.save(Path(tmp) / "m.npz")
            with np.load(path, allow_pickle=False) as npz:
                for k in npz.files:
                    out[f"{label}.file.{k}"] = npz[k]
            loaded = NormalityModel.load(path)
        run(loaded, ScoringConfig(), out, f"{label}.loaded")
    run(with_sustained, ScoringConfig(), out, "all")
    subset = ScoringConfig(attributes=["speed", "pose", "relations", "gait", "class_in_place"], combine="sum")
    run(with_sustained, subset, out, "subset")
    run(without, ScoringConfig(), out, "small")
    return out


def compare(ref: dict[str, np.ndarray], now: dict[str, object]) -> list[str]:
    problems = []
    for k in sorted(set(ref) | set(now)):
        if k not in ref or k not in now:
            problems.append(f"{k}: only in {'reference' if k in ref else 'this run'}")
            continue
        a, b = np.asarray(ref[k]), np.asarray(now[k])
        if a.shape != b.shape or a.dtype != b.dtype:
            problems.append(f"{k}: {a.shape} {a.dtype} vs {b.shape} {b.dtype}")
        elif a.dtype.kind in "fc":
            if not np.array_equal(a.reshape(-1).view(np.uint8), b.reshape(-1).view(np.uint8)):  # to the bit
                problems.append(f"{k}: values differ (max abs {np.nanmax(np.abs(a - b))})")
        elif not np.array_equal(a, b):
            problems.append(f"{k}: differs")
    return problems


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("mode", choices=("dump", "compare"))
    p.add_argument("path", type=Path)
    args = p.parse_args(argv)
    now = dump()
    if args.mode == "dump":
        np.savez(args.path, **now)  # type: ignore[arg-type]
        print(f"{len(now)} entries -> {args.path}")
        return 0
    with np.load(args.path, allow_pickle=False) as npz:
        ref = {k: npz[k] for k in npz.files}
    problems = compare(ref, now)
    for line in problems:
        print(line)
    print(f"{len(ref)} entries compared: {'IDENTICAL' if not problems else f'{len(problems)} differ'}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
