"""`vigil eval`: fit on a benchmark's normal clips, replay its test clips through the streaming graph,
report frame AUC (micro/macro, causal and centred smoothing), RBDC/TBDC, localisation and speed.

The work is in pipeline/evaluation/benchmark.py (and the trace, replay, report and ablation modules
beside it); this module turns the options into an `EvalRequest`, runs it and prints the tables.

`--cache DIR` also saves each clip's perception output (pipeline.evaluation.cache); `--from-cache DIR`
skips perception: the fit uses the cached training samples and the runner replays the cached test
clips through cached_perception -> score -> explain -> events (no media). `--ablate-each` scores every
attribute left out and alone over one cache and one model. The JSON's `mode` says which path made it;
headline figures come from the streaming path only. Per-clip `diagnostics` name the attributes behind
the highest-scoring normal frames and behind the anomalous frames (report only, nothing tuned on them).
`frame_auc_with_training_normals` counts the cross-validated held-out training frames as normal frames
too; `explanations` splits the alerts into true and false with their top reasons and, given a
description of the anomalies (`--anomaly-reasons`, the footage's anomaly_reasons.json or the bundled
preset), the share of true alerts whose top reason is a right one.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pipeline.config import VigilConfig
from pipeline.configfile import load_config
from pipeline.evaluation.ablation import AblationResult, ablation_table
from pipeline.evaluation.benchmark import EvalRequest, run_eval
from pipeline.evaluation.footage import PRESETS
from pipeline.evaluation.report import diagnostics_table, explanations_table, table
from pipeline.terminal import stdout_for_events_only


def _names(text: str | None) -> list[str] | None:
    return [t.strip() for t in text.split(",") if t.strip()] if text else None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--dataset",
        choices=sorted(PRESETS),
        default="ped2",
        help="how the footage is stored (label and mask files); the layout is always "
        "train/, test/, frame_labels.npz [, pixel_masks.npz]; custom: your own footage",
    )
    parser.add_argument(
        "--data", required=True, type=Path, help="dataset folder, e.g. ../shared/data/ucsd_ped2"
    )
    parser.add_argument(
        "-c", "--config", default=None, help="config file (default: ./config.yaml if present)"
    )
    parser.add_argument(
        "--out", type=Path, default=None, help="result JSON file, or a folder for <dataset>[-ablation].json"
    )
    parser.add_argument("--clips", help="test clips, comma separated (default: all)")
    parser.add_argument("--train-clips", help="training clips, comma separated (default: all)")
    parser.add_argument("--max-frames", type=int, default=None, help="analyse at most N frames of each clip")
    parser.add_argument(
        "--model", type=Path, default=None, help="use this saved normality model; skip fitting"
    )
    parser.add_argument("--seed", type=int, default=0)
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--attributes", help="judge only these attributes (comma separated)")
    group.add_argument("--ablate", help="judge every attribute except these (comma separated)")
    parser.add_argument("--no-plot", action="store_true", help="skip the score-vs-ground-truth PNG")
    cache = parser.add_mutually_exclusive_group()
    cache.add_argument(
        "--cache", type=Path, default=None, help="also save every clip's perception output in this folder"
    )
    cache.add_argument(
        "--from-cache",
        type=Path,
        default=None,
        help="skip perception: fit and score from the clips saved by --cache (ablations, diagnostics)",
    )
    parser.add_argument(
        "--anomaly-reasons",
        type=Path,
        default=None,
        help="JSON of the attributes each test anomaly should be explained by (report only; default: the "
        "footage's anomaly_reasons.json, else the preset bundled for --dataset, if any)",
    )
    parser.add_argument(
        "--ablate-each",
        action="store_true",
        help="with --from-cache: every attribute left out and alone; table and <out>/ablation.json",
    )


def run(args: argparse.Namespace) -> int:
    request = EvalRequest(
        data=args.data,
        dataset=args.dataset,
        clips=_names(args.clips),
        train_clips=_names(args.train_clips),
        max_frames=args.max_frames,
        model=args.model,
        seed=args.seed,
        attributes=_names(args.attributes),
        ablate=_names(args.ablate),
        plot=not args.no_plot,
        cache=args.cache,
        from_cache=args.from_cache,
        ablate_each=args.ablate_each,
        out=args.out,
        anomaly_reasons=args.anomaly_reasons,
    )
    request.check()
    with stdout_for_events_only(True) as real_stdout:  # library banners to stderr; stdout: the tables
        stdout = real_stdout or sys.stdout
        result = run_eval(request, _load_config(args.config))
        if isinstance(result, AblationResult):
            print(ablation_table(result.rows), file=stdout)
            print(f"vigil: ablation written to {request.ablation_path()}", file=sys.stderr)
            return 0
        print(table(result), file=stdout)
        print(diagnostics_table(result.figures), file=stdout)
        print(explanations_table(result.figures), file=stdout)
    print(f"vigil: eval written to {request.result_path()}", file=sys.stderr)
    return 0


def _load_config(path: str | None) -> VigilConfig:
    """The given config; else ./config.yaml when there is one; else the defaults."""
    if path is not None:
        return load_config(path)
    if Path("config.yaml").is_file():
        return load_config("config.yaml")
    return VigilConfig()
