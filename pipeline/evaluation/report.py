"""The figures of an evaluation, typed, and how they are shown: the result JSON, text tables, a plot.

`evaluate` turns the replay's traces into `Figures` (frame AUC micro/macro with causal and centred
smoothing, the same with the held-out normal training frames added, RBDC/TBDC, localisation, per-clip
figures and diagnostics; the explanation figures are added from the events); `EvalResult` is the whole
result of one `vigil eval` run and `to_json` writes the same keys, in the same order, as the JSON
that bench/results and other tools read.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.evaluation.anomaly_reasons import AnomalyReasons
from pipeline.evaluation.explanations import Alert, ExplanationFigures, explanation_figures, on_region
from pipeline.evaluation.footage import Clip, LabelledFootage
from pipeline.evaluation.metrics import (
    GroundTruthRegions,
    MacroAUC,
    frame_auc_macro,
    frame_auc_macro_padded,
    frame_auc_micro,
    frame_auc_with_normals,
    localisation,
    rbdc_tbdc,
    regions_from_masks,
    smooth_causal,
    smooth_centred,
)
from pipeline.evaluation.replay import ReplayInfo
from pipeline.evaluation.trace import ClipTrace, TraceCollector
from pipeline.evaluation.training_normals import NormalClip
from pipeline.packets import Event
from pipeline.runner import RunReport

TOP_NORMAL_FRAMES = 10  # per clip: the highest-scoring normal frames whose reasons are reported
WITH_NORMALS_NOTE = (
    "the held-out normal training frames of the cross-validated false-alert estimate (each scored by "
    "a model not fitted on its clip) added as normal frames, smoothed per clip like test clips; micro "
    "pools every frame once; macro / macro_padded: each test clip with all those frames appended"
)
MODE_NOTE = (
    "from-cache: scoring stages replayed over cached perception (ablations, diagnostics); "
    "headline figures come only from mode=streaming"
)


def rounded(x: float | None, nd: int = 4) -> float | None:
    """`x` rounded for the JSON; None (null) for None, NaN and infinities."""
    return None if x is None or not np.isfinite(x) else round(float(x), nd)


# ---- the typed result ----------------------------------------------------------------------------


@dataclass(frozen=True)
class RunHeader:
    """What was evaluated, on what, with which settings: the first keys of every result JSON."""

    dataset: str
    cached: bool
    perception_cache: dict[str, object] | None  # dir, key, written
    created: str
    git: str | None
    machine: dict[str, str]
    attributes: list[str] | None  # judged attributes; None: all of them
    train_clips: list[str]
    test_clips: list[str]
    max_frames: int | None
    seed: int
    config: dict[str, Any]  # the perception and scoring sections, as JSON

    def to_json(self, with_attributes: bool = True) -> dict[str, object]:
        out: dict[str, object] = {
            "dataset": self.dataset,
            "mode": "from-cache" if self.cached else "streaming",
            "mode_note": MODE_NOTE,
            "perception_cache": self.perception_cache,
            "created": self.created,
            "git": self.git,
            "machine": self.machine,
            "attributes": self.attributes or "all",
            "train_clips": self.train_clips,
            "test_clips": self.test_clips,
            "max_frames": self.max_frames,
            "seed": self.seed,
            "config": self.config,
        }
        if not with_attributes:  # an ablation judges every variant's own attributes
            del out["attributes"]
        return out


@dataclass(frozen=True)
class FitInfo:
    """Where the normality model came from: loaded from `model`, or fitted (and saved there)."""

    model: str
    loaded: bool = False
    frames: int = 0
    objects: int = 0
    collect_s: float = 0.0
    fit_s: float = 0.0
    crossval_s: float = 0.0
    #: the cross-validated false-alert estimate on the training clips (stages.normality.crossval)
    false_alerts: dict[str, object] | None = None
    #: the same cross-validation's held-out clips as normal clips (not in the JSON: the figures are)
    training_normals: tuple[NormalClip, ...] = ()

    def to_json(self) -> dict[str, object]:
        if self.loaded:
            return {"model": self.model, "loaded": True}
        return {
            "model": self.model,
            "frames": self.frames,
            "objects": self.objects,
            "collect_s": self.collect_s,
            "fit_s": self.fit_s,
            "crossval_s": self.crossval_s,
            "false_alerts": self.false_alerts,
        }


@dataclass(frozen=True)
class AucFigures:
    micro: float | None
    macro: float | None  # mean over the clips with both classes
    macro_clips: int
    macro_skipped: list[str]
    macro_padded: float | None = None  # the published code's convention: every clip, min-max scaled, padded


@dataclass(frozen=True)
class TrainingNormals:
    """The held-out normal training frames an AUC variant counts as normal frames."""

    clips: list[str]
    frames: int
    frames_without_score: int  # grid frames with no held-out score (filled as for test frames)


@dataclass(frozen=True)
class LocalisationFigures:
    share: float | None
    hits: int
    evaluated: int
    no_box: int


@dataclass(frozen=True)
class ClipDiagnostics:
    """What drives one clip's scores (report only: nothing is tuned on it)."""

    top_normal_frames: list[int]
    top_normal_scores: list[float | None]
    false_alarm_attributes: dict[str, int]
    anomaly_attributes: dict[str, int]


@dataclass
class ClipFigures:
    frames: int
    anomalous: int
    frames_without_score: int
    diagnostics: ClipDiagnostics
    auc: dict[str, float | None] = field(default_factory=dict)  # variant -> this clip's AUC
    #: variant -> this clip's AUC with the held-out normal training frames appended
    auc_with_training_normals: dict[str, float | None] = field(default_factory=dict)
    events: dict[str, int] | None = None  # new / update / end messages of this clip

    def to_json(self) -> dict[str, object]:
        out: dict[str, object] = {
            "frames": self.frames,
            "anomalous": self.anomalous,
            "frames_without_score": self.frames_without_score,
            "diagnostics": vars(self.diagnostics),
        }
        out.update({f"auc_{variant}": value for variant, value in self.auc.items()})
        out.update({f"auc_with_training_normals_{v}": x for v, x in self.auc_with_training_normals.items()})
        if self.events is not None:
            out["events"] = self.events
        return out


@dataclass(frozen=True)
class Diagnostics:
    """Top attributes summed over the clips."""

    false_alarm_attributes: dict[str, int]
    anomaly_attributes: dict[str, int]

    def to_json(self) -> dict[str, object]:
        return {
            "note": (
                "top attribute = largest attribute score of the frame's highest-scoring object; "
                f"false alarms: the {TOP_NORMAL_FRAMES} highest-scoring normal frames of each clip; "
                "anomalies: every anomalous frame. Diagnostics only: nothing is tuned on test labels"
            ),
            "false_alarm_attributes": self.false_alarm_attributes,
            "anomaly_attributes": self.anomaly_attributes,
        }


@dataclass
class Figures:
    """Every metric of one replay; `frame_auc` is keyed raw, causal_<k>, centred_<k>."""

    k: int
    frame_auc: dict[str, AucFigures]
    rbdc: float | None
    tbdc: float | None
    gt_regions: int
    gt_tracks: int
    localisation: LocalisationFigures
    frames_without_score: int
    diagnostics: Diagnostics
    per_clip: dict[str, ClipFigures]
    #: frame_auc's variants with the held-out normal training frames added (None: no estimate)
    frame_auc_with_training_normals: dict[str, AucFigures] | None = None
    training_normals: TrainingNormals | None = None
    explanations: ExplanationFigures | None = None  # from the events (explanations.py)

    def to_json(self) -> dict[str, object]:
        k = self.k
        with_normals = self.frame_auc_with_training_normals
        return {
            "frame_auc": {label: vars(auc) for label, auc in self.frame_auc.items()},
            "frame_auc_note": (
                f"raw = frame score (max over objects); causal_{k} = trailing mean of {k} frames "
                f"(what alerts use); centred_{k} = centred mean (offline only); "
                "macro skips clips with a single class; macro_padded scales each clip to [0, 1] and adds "
                "one normal frame scored 0 and one anomalous frame scored 1 (the published evaluation code)"
            ),
            "frame_auc_with_training_normals": None
            if with_normals is None
            else {label: vars(auc) for label, auc in with_normals.items()},
            "frame_auc_with_training_normals_note": WITH_NORMALS_NOTE,
            "training_normals": None if self.training_normals is None else vars(self.training_normals),
            "rbdc": self.rbdc,
            "tbdc": self.tbdc,
            "rbdc_tbdc_note": "object boxes with raw object scores; beta=0.1 IoU, alpha=0.1, FPR in [0, 1]",
            "gt_regions": self.gt_regions,
            "gt_tracks": self.gt_tracks,
            "localisation": vars(self.localisation),
            "frames_without_score": self.frames_without_score,
            "diagnostics": self.diagnostics.to_json(),
            "explanations": None if self.explanations is None else self.explanations.to_json(),
            "per_clip": {name: clip.to_json() for name, clip in self.per_clip.items()},
        }


@dataclass
class EvalResult:
    """One `vigil eval` run: header, model, replay, figures and the files written beside the JSON."""

    header: RunHeader
    fit: FitInfo
    replay: ReplayInfo
    figures: Figures
    events_file: str
    plot: str | None = None
    scores_file: str | None = (
        None  # every frame's score and scored box (pipeline/evaluation/trace.save_scores)
    )

    def to_json(self) -> dict[str, object]:
        out = {
            **self.header.to_json(),
            "fit": self.fit.to_json(),
            "replay": vars(self.replay),
            **self.figures.to_json(),
            "events_file": self.events_file,
            "scores_file": self.scores_file,
        }
        if self.plot is not None:
            out["plot"] = self.plot
        return out


# ---- metrics from the traces ---------------------------------------------------------------------


def evaluate(
    data: LabelledFootage,
    test: Sequence[Clip],
    collector: TraceCollector,
    k: int,
    report: RunReport,
    masks: dict[str, np.ndarray] | None = None,
    training_normals: Sequence[NormalClip] = (),
    events: Sequence[Event] | None = None,
    reasons: AnomalyReasons | None = None,
) -> Figures:
    """All metrics from the recorded traces; labels are cut to the frames that were analysed.

    `masks` (clip -> pixel masks) saves re-reading them when one test set is scored many times.
    `training_normals` (held-out normal training clips) adds the `frame_auc_with_training_normals`
    variants; they must have been scored with the same attributes as the test clips. `events` (the
    replay's event messages) adds the explanation figures, judged against `reasons` when given.
    """
    raw, labels, names = [], [], []
    gts: list[GroundTruthRegions] = []
    boxes, box_scores = [], []
    per_clip: dict[str, ClipFigures] = {}
    missing_total = 0
    for clip in test:
        assert clip.labels is not None
        n = min(len(clip.labels), report.frames_decoded.get(clip.name, 0))
        trace = collector.traces.get(clip.name, ClipTrace())
        series, missing = trace.series(n)
        missing_total += missing
        y = clip.labels[:n]
        raw.append(series)
        labels.append(y)
        names.append(clip.name)
        if data.has_masks:
            mask = masks[clip.name] if masks is not None else data.masks(clip.name)
            gts.append(regions_from_masks(mask[:n]))
        b, s = trace.per_frame_boxes(n)
        boxes.append(b)
        box_scores.append(s)
        per_clip[clip.name] = ClipFigures(
            frames=n,
            anomalous=int(y.sum()),
            frames_without_score=missing,
            diagnostics=clip_diagnostics(trace, series, y),
        )

    smoothing = smoothings(k)
    auc: dict[str, AucFigures] = {}
    for label, smooth in smoothing.items():
        series_list = [smooth(x) for x in raw]
        macro = frame_auc_macro(series_list, labels)
        auc[label] = auc_figures(
            frame_auc_micro(series_list, labels), macro, frame_auc_macro_padded(series_list, labels), names
        )
        for name, value in zip(names, macro.per_clip, strict=True):
            per_clip[name].auc[label] = rounded(value)
    with_normals: dict[str, AucFigures] | None = None
    if training_normals:
        with_normals = {}
        for label, smooth in smoothing.items():
            r = frame_auc_with_normals(
                [smooth(x) for x in raw], labels, [smooth(c.scores) for c in training_normals]
            )
            with_normals[label] = auc_figures(r.micro, r.macro, r.macro_padded, names)
            for name, value in zip(names, r.macro.per_clip, strict=True):
                per_clip[name].auc_with_training_normals[label] = rounded(value)
    if data.has_masks:
        rt = rbdc_tbdc(boxes, box_scores, gts)
        loc = localisation(boxes, box_scores, gts, labels)
        region_figures = {
            "rbdc": rounded(rt.rbdc.area),
            "tbdc": rounded(rt.tbdc.area),
            "gt_regions": rt.n_regions,
            "gt_tracks": rt.n_tracks,
            "localisation": LocalisationFigures(
                share=rounded(loc.share), hits=loc.hits, evaluated=loc.evaluated, no_box=loc.no_box
            ),
        }
    else:  # no pixel masks: frame labels only
        region_figures = {
            "rbdc": None,
            "tbdc": None,
            "gt_regions": 0,
            "gt_tracks": 0,
            "localisation": LocalisationFigures(share=None, hits=0, evaluated=0, no_box=0),
        }
    explanations = None
    if events is not None:
        located = locator(collector, dict(zip(names, gts, strict=True))) if data.has_masks else None
        cut = dict(zip(names, labels, strict=True))
        explanations = explanation_figures(cut, events, reasons, located)
    return Figures(
        k=k,
        frame_auc=auc,
        **region_figures,  # type: ignore[arg-type]
        frames_without_score=missing_total,
        diagnostics=overall_diagnostics(per_clip),
        per_clip=per_clip,
        frame_auc_with_training_normals=with_normals,
        training_normals=TrainingNormals(
            clips=[c.name for c in training_normals],
            frames=sum(len(c.scores) for c in training_normals),
            frames_without_score=sum(c.missing for c in training_normals),
        )
        if training_normals
        else None,
        explanations=explanations,
    )


def locator(collector: TraceCollector, regions: dict[str, GroundTruthRegions]) -> Callable[[Alert], bool]:
    """Whether an alert's own boxes (its track in its span, as recorded) lie on its clip's regions."""

    def located(a: Alert) -> bool:
        trace = collector.traces.get(a.clip, ClipTrace())
        return on_region(trace.track_boxes(a.track_id, a.start_frame, a.end_frame), regions[a.clip])

    return located


def smoothings(k: int) -> dict[str, Callable[[np.ndarray], np.ndarray]]:
    """The frame-score variants, by label: raw, causal_<k>, centred_<k> (each applied per clip)."""
    return {
        "raw": lambda x: x,
        f"causal_{k}": lambda x: smooth_causal(x, k),
        f"centred_{k}": lambda x: smooth_centred(x, k),
    }


def auc_figures(micro: float, macro: MacroAUC, padded: MacroAUC, names: Sequence[str]) -> AucFigures:
    return AucFigures(
        micro=rounded(micro),
        macro=rounded(macro.mean),
        macro_clips=len(names) - len(macro.skipped),
        macro_skipped=[names[i] for i in macro.skipped],
        macro_padded=rounded(padded.mean),
    )


def _count(names: list[str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for n in names:
        out[n or "none"] = out.get(n or "none", 0) + 1
    return dict(sorted(out.items(), key=lambda kv: (-kv[1], kv[0])))


def clip_diagnostics(trace: ClipTrace, series: np.ndarray, y: np.ndarray) -> ClipDiagnostics:
    """What drives the scores of one clip (for the report only: nothing is tuned on it).

    The top attribute of a frame is the largest attribute score of its highest-scoring object.
    `false_alarm_attributes`: over the TOP_NORMAL_FRAMES highest-scoring normal frames;
    `anomaly_attributes`: over every anomalous frame.
    """
    normal = np.flatnonzero(~y)
    top = normal[np.argsort(-series[normal], kind="stable")[:TOP_NORMAL_FRAMES]]
    anomalous = np.flatnonzero(y)
    return ClipDiagnostics(
        top_normal_frames=[int(t) for t in top],
        top_normal_scores=[rounded(series[t], 3) for t in top],
        false_alarm_attributes=_count([trace.top_attribute.get(int(t), "") for t in top]),
        anomaly_attributes=_count([trace.top_attribute.get(int(t), "") for t in anomalous]),
    )


def overall_diagnostics(per_clip: dict[str, ClipFigures]) -> Diagnostics:
    false_alarms: dict[str, int] = {}
    anomalies: dict[str, int] = {}
    for c in per_clip.values():
        for total, counts in (
            (false_alarms, c.diagnostics.false_alarm_attributes),
            (anomalies, c.diagnostics.anomaly_attributes),
        ):
            for name, n in counts.items():
                total[name] = total.get(name, 0) + n
    return Diagnostics(
        false_alarm_attributes=dict(sorted(false_alarms.items(), key=lambda kv: (-kv[1], kv[0]))),
        anomaly_attributes=dict(sorted(anomalies.items(), key=lambda kv: (-kv[1], kv[0]))),
    )


# ---- text and plot -------------------------------------------------------------------------------


def diagnostics_table(figures: Figures) -> str:
    d = figures.diagnostics
    lines = []
    for counts, title in (
        (d.false_alarm_attributes, f"top attribute, {TOP_NORMAL_FRAMES} highest normal frames/clip"),
        (d.anomaly_attributes, "top attribute, anomalous frames"),
    ):
        lines.append(f"{title}: " + ", ".join(f"{a} {n}" for a, n in counts.items()))
    return "\n".join(lines)


def _clip_names(names: list[str]) -> str:
    return ",".join(names) if len(names) <= 4 else f"{len(names)} clips, {names[0]}..{names[-1]}"


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{a} {n}" for a, n in counts.items()) or "-"


def explanations_table(figures: Figures) -> str:
    """Alerts true/false with their top reasons, intervals hit, and right top reasons when described."""
    e = figures.explanations
    if e is None:
        return ""
    lines = [
        f"alerts {e.alerts}: true {e.true_alerts}, false {e.false_alerts}; "
        f"false by top reason: {_counts(e.false_by_top_reason)}",
        "true alerts by top reason: "
        + ("; ".join(f"{clip}: {_counts(c)}" for clip, c in e.true_by_top_reason.items()) or "-"),
    ]
    if e.true_on_region is not None and e.true_off_region_by_top_reason is not None:
        lines.append(
            f"true alerts on the anomaly's region {e.true_on_region}/{e.true_alerts}; elsewhere by top "
            f"reason: {_counts(e.true_off_region_by_top_reason)}"
        )
    missed = [f"{i.clip} {i.start_frame}-{i.end_frame}" for i in e.intervals if not i.hit]
    lines.append(
        f"anomalous intervals hit {e.intervals_hit}/{len(e.intervals)}"
        + (f" (missed: {', '.join(missed)})" if missed else "")
    )
    r = e.reasons
    if r is not None:
        lines.append(
            f"right top reason: {r.right}/{r.described} described true alerts = {r.share_right} "
            f"(wrong: {_counts(r.wrong_by_top_reason)}; {Path(r.file).name})"
            + (
                f"; on the region {r.right_on_region}/{r.described_on_region} = {r.share_right_on_region}"
                if r.described_on_region is not None
                else ""
            )
        )
    return "\n".join(lines)


def table(result: EvalResult) -> str:
    figures, replay = result.figures, result.replay
    lines = [f"{'variant':<14}{'micro AUC':>10}{'macro AUC':>10}{'padded':>8}  macro skipped"]
    for label, v in figures.frame_auc.items():
        skipped = ",".join(v.macro_skipped) or "-"
        lines.append(f"{label:<14}{v.micro!s:>10}{v.macro!s:>10}{v.macro_padded!s:>8}  {skipped}")
    normals = figures.training_normals
    if figures.frame_auc_with_training_normals is not None and normals is not None:
        lines.append(
            f"with the held-out normal training frames ({normals.frames} frames of "
            f"{_clip_names(normals.clips)}) counted as normal:"
        )
        for label, v in figures.frame_auc_with_training_normals.items():
            skipped = ",".join(v.macro_skipped) or "-"
            lines.append(f"{label:<14}{v.micro!s:>10}{v.macro!s:>10}{v.macro_padded!s:>8}  {skipped}")
    loc = figures.localisation
    lines.append(
        f"RBDC {figures.rbdc}  TBDC {figures.tbdc}  localisation {loc.share} ({loc.hits}/{loc.evaluated})"
    )
    lines.append(f"analysed fps {replay.fps} ({replay.frames} frames in {replay.wall_s} s)")
    if result.fit.false_alerts is not None:
        lines.append(f"training clips, cross-validated: {result.fit.false_alerts['summary']}")
    variants = list(next(iter(figures.per_clip.values())).auc) if figures.per_clip else []
    lines.append(f"{'clip':<10}{'frames':>7}{'anom':>6}" + "".join(f"{v:>12}" for v in variants) + "  events")
    for name, c in figures.per_clip.items():
        lines.append(
            f"{name:<10}{c.frames:>7}{c.anomalous:>6}"
            + "".join(f"{c.auc[v]!s:>12}" for v in variants)
            + f"  {(c.events or {}).get('new', 0)}"
        )
    return "\n".join(lines)


def plot(
    path: Path, test: Sequence[Clip], collector: TraceCollector, k: int, alert_at: float | None = None
) -> Path:
    """One grid PNG: per clip, the raw and causal-smoothed frame score with anomalous frames shaded.

    Scores are calibrated, so every panel shares one y axis; `alert_at` draws the events' start_score.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = 3
    rows = max(1, -(-len(test) // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 2.4 * rows), squeeze=False, sharey=True)
    for ax, clip in zip(axes.flat, test, strict=False):
        assert clip.labels is not None
        trace = collector.traces.get(clip.name, ClipTrace())
        n = min(len(clip.labels), max(trace.frame_score, default=-1) + 1)
        series, _ = trace.series(n)
        t = np.arange(n)
        y = clip.labels[:n]
        ax.fill_between(
            t, 0, 1, where=y, transform=ax.get_xaxis_transform(), color="tab:red", alpha=0.15, lw=0
        )
        ax.plot(t, series, color="0.6", lw=0.8, label="frame score")
        ax.plot(t, smooth_causal(series, k) if n else series, color="tab:blue", lw=1.2, label=f"causal {k}")
        if alert_at is not None:
            ax.axhline(alert_at, color="tab:red", lw=0.8, ls="--")
        ax.set_title(clip.name, fontsize=9)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(test) :]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
