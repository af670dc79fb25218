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
from stages.normality.grids import DIRECTION_BINS, Q50, Q99, direction_bin
from stages.normality.judge import direction_probability
from stages.normality.model import NormalityModel
from stages.score import ANY_CAMERA, TrackSmoother

MAX_REASONS = 5
#: an attribute scoring under this (-log10 p: one normal object in ten scores higher) is nothing unusual
#: and gives no reason; most normal objects then need no sentences at all
MIN_REASON_SCORE = 1.0
COMPASS = ("right", "down-right", "down", "down-left", "left", "up-left", "up", "up-right")  # image axes


def _history_text(a: str, name: str, speed: float) -> str | None:
    """What a history or nearest-neighbour attribute's deviation means, without its numbers (None for
    attributes whose sentences are built from their own model parts)."""
    if a == "motion":
        return f"motion pattern of this {name} unlike normal ones"
    if a == "pose":
        return "body pose unlike any normal pose here"
    if a == "appearance":
        return f"this {name} looks unlike anything seen in training"
    if a == "dynamics":
        return "erratic movement: its next step does not follow from the last ones"
    if a == "speed_vs_pose":
        return f"gliding: {speed:.1f} body-heights/s with little leg motion"
    if a == "gait":
        return f"gliding: moving {speed:.1f} body-heights/s without the box swing of a walking stride"
    return None


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
            ranked = self._class_first(ranked, scores.attribute_names, i, k, attrs)
            top = ranked[: self.max_reasons]
            reasons = [self._ranked_reason(scores, j, i, k, attrs, graph, speed) for j in top]
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

    def _class_first(
        self, ranked: list[int], names: tuple[str, ...], i: int, k: int, attrs: ObjectAttributes
    ) -> list[int]:
        """A class never seen in this area in training explains the rest (a new kind of object also
        looks and moves unlike the known ones): its reason leads, whatever its score; the others
        follow by score. Moving regions have no class to explain them."""
        j = names.index("class_in_place") if "class_in_place" in names else -1
        if j not in ranked or attrs.is_blob[i]:
            return ranked
        cell, kk = np.array([int(attrs.cell[i])]), np.array([k])
        if float(self.model.place.count(cell, kk)[0]) >= 0.5:
            return ranked
        return [j, *(r for r in ranked if r != j)]

    def _ranked_reason(
        self,
        scores: Scores,
        j: int,
        i: int,
        k: int,
        attrs: ObjectAttributes,
        graph: SceneGraph | None,
        path_speed: tuple[float, float, float],
    ) -> Reason:
        """The attribute's reason from this frame's value; when the track's sustained evidence is the
        stronger score, the sentence says so, speaks of the track's mean speed over those frames
        and the normal one along its path (`path_speed`: mean, normal median, normal 99th pct) rather
        than this frame's, and the reason carries that score."""
        a = scores.attribute_names[j]
        now = float(scores.attribute_scores[i, j])
        held = float("nan") if scores.sustained_scores is None else float(scores.sustained_scores[i, j])
        if not (math.isfinite(held) and (not math.isfinite(now) or held > now)):
            return self._reason(a, now, i, k, attrs, graph)
        window = self.model.sustained_window
        cal = self.model.sustained_calibrators[a]
        median, q99 = cal.inverse(held), cal.q99
        mean_speed, normal, normal99 = path_speed
        text = None
        if a == "speed":
            text = (
                f"moving {mean_speed:.1f} body-heights/s on average (now {float(attrs.speed[i]):.1f}), "
                f"normal for {attrs.name_of(i)} where it went {normal:.1f} (99th pct {normal99:.1f})"
            )
        text = text or _history_text(a, attrs.name_of(i), mean_speed)
        if not text:  # the sentence of this frame's own reason
            text = self._reason(a, now if math.isfinite(now) else 0.0, i, k, attrs, graph).sentence
        return Reason(
            a,
            f"median score {median:.2f} over its last {window} analysed frames",
            f"<= {q99:.2f} (99th pct of normal tracks)",
            held,
            f"{text}; so for most of its last {window} analysed frames "
            f"(median score {median:.1f}, normal tracks <= {q99:.1f})",
        )

    def _reason(
        self, a: str, score: float, i: int, k: int, attrs: ObjectAttributes, graph: SceneGraph | None
    ) -> Reason:
        m = self.model
        name = attrs.name_of(i)
        cell = np.array([int(attrs.cell[i])])
        kk = np.array([k])
        frames = m.counts.get("frames", 0)
        if a == "class_in_place":
            p = float(m.place.probability(cell, kk)[0])
            seen = float(m.place.count(cell, kk)[0])
            if seen < 0.5:
                sentence = f"{name} never seen in this area in {frames:,} training frames"
            else:
                sentence = f"{name} rare in this area: {p:.1%} of the objects seen here in training"
            return Reason(a, f"{name} in cell {int(cell[0])}", f"p={p:.2%}", score, sentence)
        if a == "speed":
            q = m.quantities["speed"].lookup(cell, kk)[0][0]
            obs = float(attrs.speed[i])
            return Reason(
                a,
                f"{obs:.2f} body-heights/s",
                f"{q[Q50]:.2f} (99th pct {q[Q99]:.2f})",
                score,
                f"moving {obs:.1f} body-heights/s, normal here for {name} {q[Q50]:.1f} "
                f"(99th pct {q[Q99]:.1f})",
            )
        if a == "direction":
            b = direction_bin(np.array([float(attrs.direction[i])]))
            p = float(direction_probability(m, cell, kk, b)[0])
            heading = COMPASS[int(b[0]) % DIRECTION_BINS]
            return Reason(
                a,
                f"heading {heading}",
                f"{p:.0%} of moving {name}s here head that way",
                score,
                f"heading {heading}: only {p:.0%} of {name}s moving here in training went that way",
            )
        if a == "size":
            qh = np.exp(m.quantities["log_height"].lookup(cell, kk)[0][0])
            qa = np.exp(m.quantities["log_aspect"].lookup(cell, kk)[0][0])
            h, asp = float(attrs.height[i]), float(attrs.aspect[i])
            return Reason(
                a,
                f"height {h:.2f} of frame, aspect {asp:.2f}",
                f"height {qh[Q50]:.2f}, aspect {qa[Q50]:.2f}",
                score,
                f"size unusual for {name} here: height {h:.2f} of the frame and aspect {asp:.2f}, "
                f"normal {qh[Q50]:.2f} and {qa[Q50]:.2f}",
            )
        if a == "relations":
            return self._relation_reason(score, i, name, attrs, graph)
        if a == "dwell":
            q = m.quantities["dwell"].lookup(cell, kk)[0][0]
            d = float(attrs.dwell[i])
            return Reason(
                a,
                f"{d:.0f} s in place",
                f"{q[Q50]:.0f} s (99th pct {q[Q99]:.0f} s)",
                score,
                f"staying {d:.0f} s in one place, normal here for {name} {q[Q50]:.0f} s "
                f"(99th pct {q[Q99]:.0f} s)",
            )
        if a == "scale_change":
            r = float(attrs.scale_rate[i])
            way = "approaching the camera" if r > 0 else "moving away from the camera"
            q = m.quantities["scale_rate"].lookup(cell, kk)[0][0]
            return Reason(
                a,
                f"size changing {r:+.2f}/s",
                f"{q[Q50]:+.2f}/s (1-99th pct {q[0]:+.2f}..{q[Q99]:+.2f})",
                score,
                f"{way} fast: size changing {r:+.0%} per second, normal here {q[0]:+.0%}..{q[Q99]:+.0%}",
            )
        if a == "unexplained_motion":
            f = float(attrs.flow_speed[i])
            q, level = m.quantities["blob_flow"].lookup(cell, kk)
            normal = f"flow <= {q[0][Q99]:.2f} (99th pct)"
            if level[0] == 3:
                normal = "no unexplained motion in training"
            return Reason(
                a,
                f"flow {f:.2f} region-heights/s",
                normal,
                score,
                f"something moves here ({f:.1f} region-heights/s) that no detected object explains",
            )
        # history and nearest-neighbour attributes: the raw value is recovered from the calibrator
        cal = m.calibrators[a]
        raw, q99 = cal.inverse(score), cal.q99
        text = _history_text(a, name, float(attrs.speed[i])) or f"{a} unusual"
        return Reason(
            a, f"{raw:.2f}", f"<= {q99:.2f} (99th pct)", score, f"{text} ({raw:.2f}, normal <= {q99:.2f})"
        )

    def _relation_reason(
        self, score: float, i: int, name: str, attrs: ObjectAttributes, graph: SceneGraph | None
    ) -> Reason:
        tid = int(attrs.track_id[i])
        rarest: tuple[float, str, str, str] | None = None
        if graph is not None:
            labels = dict(zip(graph.node_ids.tolist(), graph.node_labels, strict=True))
            for s, o, p, c in zip(
                graph.subject.tolist(),
                graph.object.tolist(),
                graph.predicate,
                graph.confidence.tolist(),
                strict=True,
            ):
                if tid not in (s, o):
                    continue
                prob = self.model.triplets.probability(labels[s], p, labels[o])
                v = -math.log(prob) * c
                if rarest is None or v > rarest[0]:
                    rarest = (v, labels[s], p, labels[o])
        if rarest is None:
            return Reason("relations", "no relations", "", score, "relations normal")
        _, s, p, o = rarest
        n = self.model.triplets.count(s, p, o)
        frames = self.model.triplets.frames
        seen = "never seen in training" if n == 0 else f"seen in {n} of {frames:,} training frames"
        art = "an" if o[:1] in "aeiou" else "a"
        return Reason("relations", f"{s} {p} {o}", seen, score, f"{p} {art} {o}: relation {seen}")


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
        model = self.models.get(packet.frame.camera, self.models.get(ANY_CAMERA))
        if model is None:
            packet.explanations = Explanations(())
            return
        explainer = self._explainers.get(packet.frame.camera)
        if explainer is None or explainer.model is not model:  # new camera, or its warm-up model arrived
            explainer = self._explainers[packet.frame.camera] = Explainer(model)
        packet.explanations = explainer.explain(attrs, scores, packet.scene_graph)
