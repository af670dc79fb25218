"""ExplainStage: per object, the reasons behind its score, ranked by their calibrated scores.

The explanation is the score itself: each Reason carries the attribute, what was observed, what
is normal for that class in that place (from the same model parts that produced the score), the
calibrated score and a plain sentence.
"""

from __future__ import annotations

import math

import numpy as np

from pipeline.config import ScoringConfig
from pipeline.packets import (
    Explanations,
    FramePacket,
    ObjectAttributes,
    ObjectExplanation,
    Reason,
    SceneGraph,
    Scores,
    SourceEvent,
)
from pipeline.stage import Stage
from stages.normality.attributes import REGISTRY, attribute
from stages.normality.attributes.base import ObjectView, PathSpeed
from stages.normality.grids import Q50, Q99
from stages.normality.model import NormalityModel
from stages.score import TrackSmoother, model_for

MAX_REASONS = 5
#: an attribute scoring under this (-log10 p: one normal object in ten scores higher) is nothing unusual
#: and gives no reason; most normal objects then need no sentences at all
MIN_REASON_SCORE = 1.0


class Explainer:
    """Turns one camera's frames of attributes + scores into ranked reasons, using its model.

    Feed it the camera's frames in order: a reason from sustained evidence speaks of the track's
    mean speed over the frames that evidence covers, and of the normal speed (median and 99th
    percentile) along the path it took in those frames, which the explainer keeps per track: the
    evidence judged each frame against its own place, so the current place's normal alone could
    contradict it."""

    def __init__(self, model: NormalityModel, max_reasons: int = MAX_REASONS) -> None:
        self.model = model
        self.max_reasons = max_reasons
        # per track: the mean of its speed, and of the normal speed's median and 99th pct where it was
        self._path_speed = TrackSmoother(max(model.sustained_window, 1))

    def explain(self, attrs: ObjectAttributes, scores: Scores, graph: SceneGraph | None) -> Explanations:
        objects = []
        cls = self.model.class_index(attrs.class_names, attrs.class_id, attrs.is_blob)
        strongest = scores.strongest()
        q = self.model.quantities["speed"].lookup(attrs.cell.astype(np.int64), cls)[0]
        speeds = np.stack([attrs.speed.astype(np.float64), q[:, Q50], q[:, Q99]], axis=1)
        path_speed = self._path_speed(attrs.track_id, speeds)
        # ranked by calibrated score (every object's row sorted at once); attributes under
        # MIN_REASON_SCORE give no reason
        order = np.argsort(-np.nan_to_num(strongest, nan=-1.0), axis=1, kind="stable").tolist()
        leaders = [j for j, a in enumerate(scores.attribute_names) if REGISTRY[a].leads]
        rows = zip(
            order,
            strongest.tolist(),
            cls.tolist(),
            [tuple(row) for row in path_speed.tolist()],
            attrs.xyxy.tolist(),
            attrs.track_id.tolist(),
            scores.object_score.tolist(),
            strict=True,
        )
        for i, (ranked_all, row, k, speed, box, track_id, score) in enumerate(rows):
            ranked = [j for j in ranked_all if math.isfinite(row[j]) and row[j] >= MIN_REASON_SCORE]
            obj = ObjectView(self.model, attrs, graph, i, k)
            ranked = self._leading_first(ranked, leaders, scores.attribute_names, obj)
            top = ranked[: self.max_reasons]
            reasons = [self._ranked_reason(scores, j, obj, speed) for j in top]
            objects.append(
                ObjectExplanation(
                    track_id=track_id,
                    class_name=attrs.name_of(i),
                    xyxy=(box[0], box[1], box[2], box[3]),
                    score=score,
                    reasons=tuple(reasons),
                )
            )
        return Explanations(tuple(objects))

    # ---------------------------------------------------------------------------------------------

    def _leading_first(
        self, ranked: list[int], leaders: list[int], names: tuple[str, ...], obj: ObjectView
    ) -> list[int]:
        """An attribute that explains the others (`leaders`: those that can) leads, whatever its score
        (a class never seen in this area: a new kind of object also looks and moves unlike the known
        ones); the others follow by score."""
        leading = [j for j in ranked if j in leaders and REGISTRY[names[j]].leads_reasons(obj)]
        if not leading:
            return ranked
        return [*leading, *(r for r in ranked if r not in leading)]

    def _ranked_reason(self, scores: Scores, j: int, obj: ObjectView, path_speed: PathSpeed) -> Reason:
        """The attribute's reason from this frame's value; when the track's sustained evidence is the
        stronger score, the sentence says so, speaks of the track's mean speed over those frames
        and the normal one along its path (`path_speed`: mean, normal median, normal 99th pct) rather
        than this frame's, and the reason carries that score."""
        a = scores.attribute_names[j]
        judged = attribute(a)
        now = float(scores.attribute_scores[obj.i, j])
        held = float("nan") if scores.sustained_scores is None else float(scores.sustained_scores[obj.i, j])
        if not (math.isfinite(held) and (not math.isfinite(now) or held > now)):
            return judged.explain(obj, now)
        window = self.model.sustained_window
        cal = self.model.sustained_calibrators[a]
        median, q99 = cal.inverse(held), cal.q99
        text = judged.sustained_text(obj, path_speed)
        if not text:  # the sentence of this frame's own reason
            text = judged.explain(obj, now if math.isfinite(now) else 0.0).sentence
        return Reason(
            a,
            f"median score {median:.2f} over its last {window} analysed frames",
            f"<= {q99:.2f} (99th pct of normal tracks)",
            held,
            f"{text}; so for most of its last {window} analysed frames "
            f"(median score {median:.1f}, normal tracks <= {q99:.1f})",
        )


class ExplainStage(Stage):
    name = "explain"
    interpreter_bound = True
    needs = ("attributes", "scores")
    provides = ("explanations",)

    def __init__(self, models: dict[str, NormalityModel], config: ScoringConfig) -> None:
        self.models = models
        self.config = config
        self._explainers: dict[str, Explainer] = {}  # per camera: it keeps its tracks' recent speeds

    def on_source_eos(self, event: SourceEvent) -> None:
        self._explainers.pop(event.camera, None)

    def process(self, packet: FramePacket) -> None:
        attrs, scores = packet.attributes, packet.scores
        assert attrs is not None and scores is not None
        model = model_for(self.models, packet.frame.camera)
        if model is None:
            packet.explanations = Explanations(())
            return
        explainer = self._explainers.get(packet.frame.camera)
        if explainer is None or explainer.model is not model:  # new camera, or its warm-up model arrived
            explainer = self._explainers[packet.frame.camera] = Explainer(model)
        packet.explanations = explainer.explain(attrs, scores, packet.scene_graph)
