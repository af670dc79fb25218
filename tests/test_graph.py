"""Stage graph validation: every invalid graph is a GraphError naming the stages involved."""

from __future__ import annotations

import pytest

from pipeline.errors import GraphError
from pipeline.graph import build_graph
from pipeline.packets import FramePacket
from pipeline.stage import Stage


def stage(name: str, needs: tuple[str, ...] = ("frame",), provides: tuple[str, ...] = ()) -> Stage:
    """A Stage subclass made on the spot (the contract is class-level), instantiated."""

    def process(self: Stage, packet: FramePacket) -> None:
        return None

    cls = type(
        f"S_{name}", (Stage,), {"name": name, "needs": needs, "provides": provides, "process": process}
    )
    return cls()


DETECT = stage("detect", provides=("detections",))
POSE = stage("pose", needs=("frame", "detections"), provides=("poses",))
FLOW = stage("flow", provides=("flow",))
ATTRS = stage("attributes", needs=("detections", "poses", "flow"), provides=("attributes",))


@pytest.mark.parametrize(
    "given",
    [
        [DETECT, POSE, FLOW, ATTRS],
        [ATTRS, POSE, FLOW, DETECT],  # any listing order: the graph orders by data dependencies
        [FLOW, ATTRS, DETECT, POSE],
    ],
)
def test_valid_graph_runs_providers_before_consumers(given: list[Stage]) -> None:
    graph = build_graph(given)
    order = list(graph.names)
    assert sorted(order) == sorted(s.name for s in given)
    for s in given:
        for slot in s.needs:
            provider = next((p.name for p in given if slot in p.provides), None)
            if provider is not None:
                assert order.index(provider) < order.index(s.name), (provider, s.name, order)
    assert (
        graph.graph.has_edge("detect", "pose") and graph.graph.edges["detect", "pose"]["slot"] == "detections"
    )


def test_listing_order_breaks_ties() -> None:
    assert build_graph([FLOW, DETECT, POSE]).names == ("flow", "detect", "pose")
    assert build_graph([DETECT, FLOW, POSE]).names == ("detect", "flow", "pose")


def test_empty_graph_is_valid() -> None:
    assert build_graph([]).names == ()


@pytest.mark.parametrize(
    ("stages", "message"),
    [
        ([DETECT, ATTRS], r"stage 'attributes' needs 'poses' but no stage provides it"),
        ([POSE], r"stage 'pose' needs 'detections' but no stage provides it"),
        (
            [DETECT, stage("detect2", provides=("detections",))],
            r"slot 'detections' is provided by both 'detect' and 'detect2'",
        ),
        ([stage("frames", provides=("frame",))], r"slot 'frame' is provided by both 'source' and 'frames'"),
        ([DETECT, stage("detect", provides=("flow",))], r"duplicate stage names: detect"),
        ([stage("source", provides=("flow",))], r"stage name 'source' is reserved"),
        (
            [
                stage("a", needs=("scores",), provides=("attributes",)),
                stage("b", needs=("attributes",), provides=("scores",)),
            ],
            r"stage graph has a cycle: (a \(attributes\) -> b \(scores\) -> a"
            r"|b \(scores\) -> a \(attributes\) -> b)",
        ),
        ([stage("self", needs=("flow",), provides=("flow",))], r"cycle: self \(flow\) -> self"),
    ],
    ids=[
        "missing",
        "missing-first",
        "duplicate-provider",
        "frame-provider",
        "duplicate-name",
        "reserved",
        "cycle",
        "self-loop",
    ],
)
def test_invalid_graphs_name_the_stages(stages: list[Stage], message: str) -> None:
    with pytest.raises(GraphError, match=message):
        build_graph(stages)


def test_unknown_slot_is_rejected_when_the_stage_is_defined() -> None:
    with pytest.raises(TypeError, match="unknown slot 'detectoins'"):
        stage("typo", needs=("detectoins",))
