"""Build and validate the stage graph before anything runs.

Stages are nodes; an edge A -> B means B needs a slot that A provides. The source provides
`frame`. The graph must have exactly one provider per needed slot and no cycle; the runner then
executes the stages as a pipeline in a topological order (each stage its own worker, or consecutive
interpreter-bound stages one worker together, so different frames are in different stages at once).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import networkx as nx

from pipeline.errors import GraphError
from pipeline.stage import Stage

SOURCE = "source"


@dataclass(frozen=True)
class StageGraph:
    graph: nx.DiGraph
    order: tuple[Stage, ...]

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.order)


def build_graph(stages: Sequence[Stage]) -> StageGraph:
    names = [s.name for s in stages]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise GraphError(f"duplicate stage names: {', '.join(duplicates)}")
    if SOURCE in names:
        raise GraphError(f"stage name {SOURCE!r} is reserved for the frame source")

    providers: dict[str, str] = {"frame": SOURCE}
    for stage in stages:
        for slot in stage.provides:
            if slot in providers:
                raise GraphError(f"slot {slot!r} is provided by both {providers[slot]!r} and {stage.name!r}")
            providers[slot] = stage.name

    graph = nx.DiGraph()
    graph.add_node(SOURCE)
    for index, stage in enumerate(stages):
        graph.add_node(stage.name, stage=stage, index=index)
    for stage in stages:
        for slot in stage.needs:
            if slot not in providers:
                raise GraphError(f"stage {stage.name!r} needs {slot!r} but no stage provides it")
            graph.add_edge(providers[slot], stage.name, slot=slot)

    try:
        cycle = nx.find_cycle(graph)
    except nx.NetworkXNoCycle:
        cycle = None
    if cycle:
        path = " -> ".join(f"{a} ({graph.edges[a, b]['slot']})" for a, b in cycle) + f" -> {cycle[0][0]}"
        raise GraphError(f"stage graph has a cycle: {path}")

    position = {s.name: i for i, s in enumerate(stages)}
    position[SOURCE] = -1
    ordered = nx.lexicographical_topological_sort(graph, key=lambda n: position[n])
    order = tuple(graph.nodes[n]["stage"] for n in ordered if n != SOURCE)
    return StageGraph(graph=graph, order=order)
