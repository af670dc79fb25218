"""One benchmark evaluation: fit on the normal training clips, replay the test clips, score them.

Everything is learnt from the training clips (thresholds, calibration); test labels are only read
by the metric functions. `run_eval` takes an `EvalRequest` (what `vigil eval`'s options ask for),
writes the result JSON, the events JSONL, the model and the plot, and returns the typed result.
The cross-validation's held-out training frames are also counted as normal frames in a second AUC
variant (training_normals.py), and the events are judged against the labels and, where a description
of the anomalies exists, their reasons (explanations.py, anomaly_reasons.py).
With `from_cache` the fit uses the cached training samples and the replay the cached test clips
(pipeline/evaluation/cache.py); `ablate_each` scores every attribute left out and alone instead.
"""

from __future__ import annotations

import json
import logging
import platform
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.config import VigilConfig
from pipeline.errors import ConfigError
from pipeline.evaluation.ablation import AblationResult, ablate_each
from pipeline.evaluation.anomaly_reasons import AnomalyReasons, load_anomaly_reasons, reasons_file
from pipeline.evaluation.cache import PerceptionCache, perception_key
from pipeline.evaluation.footage import Clip, LabelledFootage
from pipeline.evaluation.replay import ReplayInfo, replay_cached, replay_streaming
from pipeline.evaluation.report import EvalResult, FitInfo, RunHeader, evaluate, plot, rounded
from pipeline.evaluation.trace import save_scores
from pipeline.evaluation.training_normals import training_normals
from pipeline.fitting import collect_samples, footage_names
from pipeline.logs import fields

if TYPE_CHECKING:
    from stages.normality import NormalityModel

log = logging.getLogger("vigil.eval")

DEFAULT_OUT = Path("var/eval")
#: the config sections the result JSON records
RECORDED_SECTIONS = {"detector", "pose", "appearance", "flow", "attributes", "scene_graph", "scoring"}


@dataclass(frozen=True)
class EvalRequest:
    """What to evaluate and how (the options of `vigil eval`)."""

    data: Path
    dataset: str = "ped2"
    clips: list[str] | None = None
    train_clips: list[str] | None = None
    max_frames: int | None = None
    model: Path | None = None  # a saved normality model: no fitting
    seed: int = 0
    attributes: list[str] | None = None  # judge only these
    ablate: list[str] | None = None  # judge all but these
    plot: bool = True
    cache: Path | None = None  # also save the perception output here
    from_cache: Path | None = None  # score from the perception output saved here
    ablate_each: bool = False
    out: Path | None = None  # result JSON, or a folder for it
    anomaly_reasons: Path | None = None  # what each anomaly should be explained by (anomaly_reasons.py)

    @property
    def cached(self) -> bool:
        return self.from_cache is not None

    def check(self) -> None:
        """ConfigError for options that do not go together."""
        if self.max_frames is not None and self.max_frames < 1:
            raise ConfigError("--max-frames must be >= 1")
        if self.ablate_each and not self.cached:
            raise ConfigError("--ablate-each needs --from-cache DIR (perception is not re-run per attribute)")
        if self.ablate_each and (self.attributes or self.ablate):
            raise ConfigError("--ablate-each runs every attribute itself; drop --attributes / --ablate")

    def result_path(self) -> Path:
        name = result_name(self.dataset, self.attributes, self.ablate, cached=self.cached)
        if self.out is None:
            return DEFAULT_OUT / name
        return self.out if self.out.suffix == ".json" else self.out / name

    def ablation_path(self) -> Path:
        if self.out is not None and self.out.suffix == ".json":
            return self.out
        return self.result_path().parent / "ablation.json"


def result_name(
    dataset: str,
    attributes: Sequence[str] | None = None,
    ablate: Sequence[str] | None = None,
    cached: bool = False,
) -> str:
    """File name of a result: `ped2.json`, `ped2-only-speed+pose.json`, `ped2-minus-appearance.json`;
    `ped2-cached*.json` when scored from the perception cache (never the headline file)."""
    if cached:
        dataset = f"{dataset}-cached"
    if attributes:
        return f"{dataset}-only-{'+'.join(attributes)}.json"
    if ablate:
        return f"{dataset}-minus-{'+'.join(ablate)}.json"
    return f"{dataset}.json"


def judged_attributes(attributes: Sequence[str] | None, ablate: Sequence[str] | None) -> list[str] | None:
    """The `scoring.attributes` list for `--attributes` / `--ablate` (None: all of them)."""
    from stages.normality import ATTRIBUTES

    chosen = attributes or ablate
    if not chosen:
        return None
    unknown = [a for a in chosen if a not in ATTRIBUTES]
    if unknown:
        raise ConfigError(f"unknown attributes {', '.join(unknown)}; known: {', '.join(ATTRIBUTES)}")
    if attributes:
        return list(attributes)
    kept = [a for a in ATTRIBUTES if a not in chosen]
    if not kept:
        raise ConfigError("--ablate removes every attribute; nothing would be judged")
    return kept


def eval_config(config: VigilConfig, judged: list[str] | None, out: Path, cached: bool) -> VigilConfig:
    """Scoring judges `judged`; media go next to the result; from the cache, no media at all."""
    events: dict[str, object] = {"media_dir": out.parent / f"{out.stem}-media", "clips": False}
    if cached:
        events["snapshots"] = False
    return config.model_copy(
        update={
            "scoring": config.scoring.model_copy(update={"attributes": judged}),
            "events": config.events.model_copy(update=events),
        }
    )


def train_sources(train: Sequence[Clip]) -> dict[str, str]:
    """Source (camera) name `collect_samples` gives each training file -> clip name.

    The names `collect_samples` gives, so cached samples fit the same model (the held-out split
    depends on these names).
    """
    return dict(zip(footage_names([c.path for c in train]), (c.name for c in train), strict=True))


def git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def fit_model(
    request: EvalRequest,
    config: VigilConfig,
    train: Sequence[Clip],
    cache: PerceptionCache | None,
    out: Path,
) -> tuple[NormalityModel, FitInfo]:
    """The saved model of `request.model`, or one fitted on the training clips (saved beside `out`)."""
    from stages.normality import NormalityModel, fit_normality
    from stages.normality.learn import estimate_false_alerts

    if request.model is not None:
        return NormalityModel.load(request.model, config.scoring.device), FitInfo(
            str(request.model), loaded=True
        )
    t0 = time.monotonic()
    names = train_sources(train)
    if request.from_cache is not None:
        assert cache is not None
        samples = cache.load_samples(names, request.dataset)
    else:
        samples = collect_samples(config, request.dataset, [c.path for c in train], request.max_frames)
        if cache is not None:
            cache.save_samples(names, samples)
    collect_s = time.monotonic() - t0
    model = fit_normality(samples, config.scoring, request.seed, grid=config.attributes.grid)
    fit_s = time.monotonic() - t0 - collect_s
    estimate = estimate_false_alerts(config, samples, request.seed)
    model.false_alerts = None if estimate is None else estimate.curve(config.events)
    model_path = model.save(out.parent / f"{out.stem}-model.npz")
    curve = model.false_alerts
    info = FitInfo(
        model=str(model_path),
        frames=len(samples),
        objects=int(sum(len(s.attributes) for s in samples)),
        collect_s=round(collect_s, 1),
        fit_s=round(fit_s, 1),
        crossval_s=round(time.monotonic() - t0 - collect_s - fit_s, 1),
        false_alerts=None
        if curve is None
        else {
            "summary": curve.summary(config.events.start_score),
            "alerts_per_hour": rounded(curve.alerts_per_hour(config.events.start_score)),
            "share_above_start_score": rounded(curve.share_at(config.events.start_score)),
            **curve.to_dict(),
        },
        training_normals=training_normals(estimate, names),
    )
    log.info("model ready", extra=fields(stage="eval", **info.to_json()))
    return model, info


def run_eval(request: EvalRequest, base: VigilConfig) -> EvalResult | AblationResult:
    """Fit, replay, score and write the result files; `base` is the loaded config."""
    cached = request.cached
    judged = judged_attributes(request.attributes, request.ablate)
    out = request.result_path()
    config = eval_config(base, judged, out, cached)
    data = LabelledFootage.open(request.data, request.dataset)
    train = data.train_clips(request.train_clips)
    test = data.test_clips(request.clips)
    reasons = None if request.ablate_each else expected_reasons(request, data, test)  # bad file: fail early
    key = perception_key(config, request.max_frames)
    cache_dir = request.from_cache if cached else request.cache
    cache = PerceptionCache(cache_dir, request.dataset, key) if cache_dir is not None else None
    records = [cache.load("test", c.name) for c in test] if cached and cache is not None else []
    header = RunHeader(
        dataset=request.dataset,
        cached=cached,
        perception_cache={"dir": str(cache_dir), "key": key, "written": not cached} if cache else None,
        created=datetime.now(UTC).isoformat(timespec="seconds"),
        git=git_commit(),
        machine={"python": platform.python_version(), "cpu": platform.processor() or platform.machine()},
        attributes=judged,
        train_clips=[c.name for c in train],
        test_clips=[c.name for c in test],
        max_frames=request.max_frames,
        seed=request.seed,
        config=config.model_dump(mode="json", include=RECORDED_SECTIONS),
    )
    model, fit = fit_model(request, config, train, cache, out)

    if request.ablate_each:
        rows, seconds = ablate_each(
            lambda judged: eval_config(base, judged, out, cached=True), data, test, model, records
        )
        ablation = AblationResult(header, fit, rows, seconds)
        _write_json(request.ablation_path(), ablation.to_json())
        return ablation

    if cached:
        rr = replay_cached(config, model, records)
    else:
        rr = replay_streaming(config, model, test, request.max_frames, cache)
    k = config.scoring.smoothing_frames
    figures = evaluate(
        data,
        test,
        rr.collector,
        k,
        rr.report,
        training_normals=fit.training_normals,
        events=rr.events.events,
        reasons=reasons,
    )
    for clip in test:
        figures.per_clip[clip.name].events = rr.events.counts(clip.name)
    events_path = out.parent / f"{out.stem}-events.jsonl"
    events_path.parent.mkdir(parents=True, exist_ok=True)
    events_path.write_text("".join(json.dumps(ev.to_json()) + "\n" for ev in rr.events.events))
    scores_path = save_scores(
        out.parent / f"{out.stem}-scores.npz",
        [(c.name, figures.per_clip[c.name].frames, c.labels) for c in test if c.labels is not None],
        rr.collector.traces,
        [(c.name, c.scores) for c in fit.training_normals],
    )
    result = EvalResult(header, fit, ReplayInfo.of(rr, len(test), cached), figures, str(events_path))
    result.scores_file = str(scores_path)
    _write_json(out, result.to_json())
    if request.plot:
        png = plot(out.with_suffix(".png"), test, rr.collector, k, config.events.start_score)
        result.plot = str(png)
        _write_json(out, result.to_json())
    return result


def expected_reasons(
    request: EvalRequest, data: LabelledFootage, test: Sequence[Clip]
) -> AnomalyReasons | None:
    """The description of the test anomalies (anomaly_reasons.reasons_file), checked against the
    test clips' lengths; None when there is none."""
    from stages.normality import ATTRIBUTES

    path = reasons_file(data.root, request.dataset, request.anomaly_reasons)
    if path is None:
        return None
    reasons = load_anomaly_reasons(path, ATTRIBUTES)
    reasons.check_lengths({c.name: len(c.labels) for c in test if c.labels is not None})
    log.info("anomaly reasons", extra=fields(stage="eval", file=str(path)))
    return reasons


def _write_json(path: Path, data: dict[str, object]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n")
