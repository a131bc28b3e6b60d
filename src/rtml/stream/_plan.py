"""From a Dataflow's nodes to stages: which operators share an actor, and the edges between.

::

    source ─ map ─ filter ─ key_by ══shuffle══▶ window ─ map ─ sink      (two stages)
    └──────── stage 0 (one actor per ────┘       └── stage 1 (parallelism actors,
              group of source partitions)             each owning a range of key groups)

A stage is a source and everything fused after it, or a keyed operator whose input is
shuffled by key and everything fused after it. Operators inside a stage call each other
directly (no actor call); only shuffle edges cross actors.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from rtml.stream._errors import StreamConfigError
from rtml.stream._graph import Dataflow, Node

__all__ = ["Edge", "Plan", "Stage", "plan"]


@dataclass
class Edge:
    id: int
    src_stage: int
    src_node: int
    src_port: str
    dst_stage: int
    dst_node: int
    side: int  # which input of dst_node (0, or 1 for a join's right side)


@dataclass
class Stage:
    id: int
    name: str
    kind: str  # "source" or "keyed"
    nodes: list[int] = field(default_factory=list)
    parallelism: int = 1
    inputs: list[int] = field(default_factory=list)  # edge ids arriving
    outputs: list[int] = field(default_factory=list)  # edge ids leaving
    partitions: list[str] = field(default_factory=list)  # source stages only


@dataclass
class Plan:
    name: str
    nodes: dict[int, Node]
    stages: list[Stage]
    edges: list[Edge]
    stage_of: dict[int, int]
    # (node, port) -> consumers: ("node", node id, side) or ("edge", edge id, 0)
    consumers: dict[tuple[int, str], list[tuple[str, int, int]]]

    def channels(self, stage: int) -> list[tuple[int, int]]:
        """The input channels of an actor of ``stage``: (edge id, upstream actor index)."""
        return [
            (e, i)
            for e in self.stages[stage].inputs
            for i in range(self.stages[self.edges[e].src_stage].parallelism)
        ]

    def actor_name(self, stage: int, index: int) -> str:
        return f"{self.name}:{self.stages[stage].name}:{index}"


def plan(flow: Dataflow, parallelism: int, partitions: dict[int, list[str]]) -> Plan:
    """Plan ``flow`` with ``parallelism`` actors per keyed stage; ``partitions`` gives each
    source node's partition names."""
    if not isinstance(parallelism, int) or parallelism < 1:
        raise StreamConfigError(f"parallelism must be a positive int, got {parallelism!r}")
    nodes = {n.id: n for n in flow.nodes}
    if not any(n.kind == "source" for n in flow.nodes):
        raise StreamConfigError(
            f"dataflow {flow.name!r} has no source: add one with flow.source(...)"
        )
    if not any(n.kind == "sink" for n in flow.nodes):
        raise StreamConfigError(
            f"dataflow {flow.name!r} has no sink: its output would go "
            "nowhere; add one with stream.sink(...)"
        )
    stages: list[Stage] = []
    edges: list[Edge] = []
    stage_of: dict[int, int] = {}
    consumers: dict[tuple[int, str], list[tuple[str, int, int]]] = {}
    for n in flow.nodes:  # ids are in creation order, which is topological
        if n.kind == "source":
            parts = partitions[n.id]
            if not parts:
                raise StreamConfigError(f"source {n.name!r} has no partitions")
            st = Stage(
                len(stages),
                n.name,
                "source",
                partitions=list(parts),
                parallelism=min(parallelism, len(parts)),
            )
            stages.append(st)
        elif any(shuffled for _, _, shuffled in n.inputs):
            st = Stage(len(stages), n.name, "keyed", parallelism=parallelism)
            stages.append(st)
        else:
            st = stages[stage_of[n.inputs[0][0]]]
        st.nodes.append(n.id)
        stage_of[n.id] = st.id
        for side, (u, port, shuffled) in enumerate(n.inputs):
            if shuffled:
                e = Edge(len(edges), stage_of[u], u, port, st.id, n.id, side)
                edges.append(e)
                stages[e.src_stage].outputs.append(e.id)
                st.inputs.append(e.id)
                consumers.setdefault((u, port), []).append(("edge", e.id, 0))
            else:
                consumers.setdefault((u, port), []).append(("node", n.id, side))
        if n.kind == "event_time":
            if st.kind != "source":
                raise StreamConfigError(
                    f"with_event_time ({n.name!r}) must come before key_by, in the part of the "
                    "dataflow that reads the source (watermarks start at the source)"
                )
            if sum(nodes[x].kind == "event_time" for x in st.nodes) > 1:
                raise StreamConfigError(
                    "one with_event_time per source: set it once, right after flow.source(...)"
                )
    return Plan(flow.name, nodes, stages, edges, stage_of, consumers)
