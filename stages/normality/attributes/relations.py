"""relations: an object's rarest relation to another detected object (scene-graph triplets)."""

from __future__ import annotations

import math
from collections import Counter, defaultdict

import numpy as np

from pipeline.packets import Reason
from stages.normality.attributes.base import (
    Attribute,
    FitData,
    FitFrame,
    FrameView,
    Input,
    Learner,
    ModelParts,
    ObjectView,
    check_weight,
)
from stages.normality.calibration import TailPrior
from stages.normality.classes import BLOB
from stages.normality.triplets import TripletStats


class Relations(Attribute):
    name = "relations"
    tail_prior = TailPrior.SURPRISE
    inputs = frozenset({Input.BOX, Input.SCENE_GRAPH})
    geometric = False
    sustained = False  # two objects walking together keep their relation: a track's mean adds nothing

    def learner(self) -> Learner:
        return _TripletCounts()

    def judge(self, frame: FrameView) -> np.ndarray:
        """Per object: its rarest relation to another detected object, -ln P(triplet | both classes
        present) x confidence (relations to moving regions are left out)."""
        attrs, graph, triplets = frame.attrs, frame.graph, frame.model.triplets
        n = len(attrs)
        if graph is None:
            return np.full(n, np.nan)
        row = {int(t): i for i, t in enumerate(attrs.track_id.tolist())}
        out = np.zeros(n)
        for (s, p, o), sid, oid, c in zip(
            graph.triplets(),
            graph.subject.tolist(),
            graph.object.tolist(),
            graph.confidence.tolist(),
            strict=True,
        ):
            if BLOB in (s, o):  # an untracked, unclassified region: its rarity is its own score, and
                continue  # every person near it would inherit it as an "unseen relation"
            v = -np.log(triplets.probability(s, p, o)) * float(c)
            for tid in (sid, oid):
                if tid in row:
                    out[row[tid]] = max(out[row[tid]], v)
        return out

    def explain(self, obj: ObjectView, score: float) -> Reason:
        graph, triplets = obj.graph, obj.model.triplets
        tid = int(obj.attrs.track_id[obj.i])
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
                v = -math.log(triplets.probability(labels[s], p, labels[o])) * c
                if rarest is None or v > rarest[0]:
                    rarest = (v, labels[s], p, labels[o])
        if rarest is None:
            return Reason(self.name, "no relations", "", score, "relations normal")
        _, s, p, o = rarest
        n, chances = triplets.count(s, p, o), triplets.chances(s, o)
        pairs = f"{chances:,} pairs of {s} and {o}"
        seen = (
            f"never seen among the {pairs} in training"
            if n == 0
            else f"seen for {n} of the {pairs} in training"
        )
        art = "an" if o[:1] in "aeiou" else "a"
        return Reason(self.name, f"{s} {p} {o}", seen, score, f"{p} {art} {o}: relation {seen}")

    def absorb_normal(self, frame: FrameView, rows: np.ndarray, weight: int = 1) -> None:
        """Every relation of the objects `rows` in the frame's scene graph counts `weight` more times,
        and so do the chances to see it (the pair of classes present)."""
        check_weight(weight)
        if frame.graph is None:
            return
        tracks = set(frame.attrs.track_id[rows].tolist())
        for (s, p, o), sid, oid in zip(
            frame.graph.triplets(), frame.graph.subject.tolist(), frame.graph.object.tolist(), strict=True
        ):
            if BLOB not in (s, o) and (sid in tracks or oid in tracks):
                frame.model.triplets.absorb(s, p, o, weight)


class _TripletCounts(Learner):
    """Triplets counted per pair of tracks, not per frame: two people walking side by side for 10 s
    are one occasion to see "person near person", not 250 (frames of one pair are one sample; counted
    per frame, a relation absent from 8 s of footage read as 1 in 400). Chances: the pairs of tracks
    of the two classes seen together; seen: those of them that showed the relation at least once."""

    def __init__(self) -> None:
        self.frames = 0
        self.chances: dict[tuple[str, str], set[tuple]] = defaultdict(set)
        self.seen: dict[tuple[str, str, str], set[tuple]] = defaultdict(set)

    def add(self, frame: FitFrame) -> None:
        graph = frame.graph
        if graph is None:
            return
        self.frames += 1
        # a node without a track of its own (negative id) is an occasion of its own in each frame
        node = [(frame.clip, t) if t >= 0 else (frame.clip, t, self.frames) for t in graph.node_ids.tolist()]
        label = graph.node_labels
        for i, a in enumerate(node):
            for j, b in enumerate(node):
                if i != j:
                    self.chances[(label[i], label[j])].add((a, b))
        where = {t: i for i, t in enumerate(graph.node_ids.tolist())}
        for (s, p, o), sid, oid in zip(
            graph.triplets(), graph.subject.tolist(), graph.object.tolist(), strict=True
        ):
            self.seen[(s, p, o)].add((node[where[sid]], node[where[oid]]))

    def build(self, data: FitData, parts: ModelParts) -> None:
        parts.triplets = TripletStats(
            Counter({k: len(v) for k, v in self.seen.items()}),
            Counter({k: len(v) for k, v in self.chances.items()}),
            self.frames,
        )
        parts.counts["triplet_frames"] = self.frames
        parts.counts["triplet_track_pairs"] = sum(len(v) for v in self.chances.values())
