"""The relations learner counts occasions (pairs of tracks seen together), not frames."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.packets import SceneGraph
from stages.normality.attributes import REGISTRY
from stages.normality.attributes.base import FitFrame, ModelParts


def graph(ids: list[int], near: list[tuple[int, int]]) -> SceneGraph:
    return SceneGraph(
        node_ids=np.array(ids, np.int64),
        node_labels=tuple("person" for _ in ids),
        subject=np.array([s for s, _ in near], np.int64),
        object=np.array([o for _, o in near], np.int64),
        predicate=tuple("near" for _ in near),
        confidence=np.ones(len(near), np.float32),
    )


def learnt(frames: list[tuple[str, SceneGraph]]):
    learner = REGISTRY["relations"].learner()
    assert learner is not None
    for clip, g in frames:
        learner.add(FitFrame(None, g, None, np.zeros(0, bool), clip))  # type: ignore[arg-type]
    parts = ModelParts()
    learner.build(None, parts)  # type: ignore[arg-type]
    assert parts.triplets is not None
    return parts.triplets


@pytest.mark.parametrize("frames_per_clip", [1, 10, 250])
def test_a_pair_walking_together_is_one_occasion_however_long(frames_per_clip: int) -> None:
    """Clip a: tracks 1 and 2 near each other; clip b: tracks 1 and 2 (other people) apart."""
    together = [("a", graph([1, 2], [(1, 2)]))] * frames_per_clip
    apart = [("b", graph([1, 2], []))] * frames_per_clip
    t = learnt(together + apart)
    assert t.frames == 2 * frames_per_clip
    assert t.chances("person", "person") == 4  # (1, 2) and (2, 1) in each clip
    assert t.count("person", "near", "person") == 1
    assert t.probability("person", "near", "person") == pytest.approx(1.5 / 5.0)


def test_untracked_nodes_are_an_occasion_in_every_frame() -> None:
    t = learnt([("a", graph([1, -5], []))] * 3)
    assert t.chances("person", "person") == 6
