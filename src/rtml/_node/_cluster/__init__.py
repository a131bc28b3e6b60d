"""A node's part in a cluster: placement, forwarded tasks, objects owned or stored elsewhere.

::

    task ready ──place()──▶ here: local queue
                       └──▶ node B: "submit" + "fetch" its returns over the link to B
                            B runs it as if a local process had submitted it, holding the
                            returns for us; the "fetch" reply seals them here: small values
                            inline, large ones as REMOTE (they stay in B's store, B keeps them
                            for us until we release them)
    get / task input of a REMOTE object ──localize()──▶ "fetch" where it lives, then "pull"
                            it in chunks into this node's store (one transfer however many
                            readers wait); the entry turns into a local SHM object
    ref to an object another node owns ──adopt()──▶ a REMOTE proxy entry "ask its owner",
                            and a ref acquired at the owner (released when the proxy is freed)

A link to node B is this node acting as a client process of B (``client_hello`` with kind
"node"): B counts our references like any process's and drops them all if the link breaks.

The parts, each owning its own state and reaching the others through their public methods
(lower ones first; a part is handed those it calls)::

    _membership.py     Membership    the view of the nodes, links and their requests, the
                                     control-plane client
    _ownership.py      Ownership     objects borrowed or held elsewhere, pulls, locations
    _recovery.py       Recovery      lineage, lost objects rebuilt or asked for again
    _forwarding.py     Forwarding    placement, tasks forwarded and their results back
    _remote_actors.py  RemoteActors  actors created from here living elsewhere, their
                                     restarts, calls parked while they restart

``ClusterState`` wires them and is what the node, its dispatch and its server call. All
methods run under ``node.lock``; I/O goes through ``node.io`` (the shell), so the state can be
driven by tests with a fake shell.
"""

from __future__ import annotations

from typing import Any

from rtml._node._cluster._forwarding import PARKED, Forwarding
from rtml._node._cluster._membership import Link, Membership
from rtml._node._cluster._ownership import Ownership, Pull
from rtml._node._cluster._recovery import Recovery
from rtml._node._cluster._remote_actors import OwnedActor, RemoteActors
from rtml._node._lineage import Lineage
from rtml._protocol._ids import NODE_SHIFT

__all__ = ["PARKED", "ClusterState", "Link", "OwnedActor", "Pull"]


class ClusterState:
    """The cluster parts of one node, behind the calls the node makes."""

    def __init__(self, node: Any, node_id: str, index: int) -> None:
        self.node = node
        self.node_id = node_id
        self.index = index
        self.members = members = Membership(node, node_id, index)
        self.ownership = ownership = Ownership(node, members)
        self.recovery = recovery = Recovery(node, members, ownership)
        self.forwarding = forwarding = Forwarding(node, members, ownership)
        self.actors = actors = RemoteActors(node, members, ownership, recovery, forwarding)
        ownership.recovery = recovery
        recovery.actors = actors
        forwarding.park = actors.park
        node.next_wid = max(node.next_wid, (index << NODE_SHIFT) | 2)
        # The calls the node makes, bound once (the task path pays no extra call).
        self.is_peer = members.is_peer
        self.is_fenced = members.is_fenced
        self.on_link_message = members.on_link_message
        self.place = forwarding.place
        self.forward = forwarding.forward
        self.cancel = forwarding.cancel
        self.owns = ownership.owns
        self.owner_of = ownership.owner_of
        self.adopt = ownership.adopt
        self.localize = ownership.localize
        self.stored = ownership.stored
        self.serve_pull = ownership.serve_pull
        self.fetch_value = ownership.fetch_value
        self.is_lost = recovery.is_lost
        self.check_lost = recovery.check_lost
        self.lost = recovery.lost
        self.record_lineage = recovery.record_lineage
        self.actor_op = actors.actor_op
        self.actor_elsewhere = actors.actor_elsewhere
        self.send_call = actors.send_call
        self.unpark = actors.unpark
        self.actor_state = actors.actor_state
        self.actor_died = actors.actor_died

    # ------------------------------------------------------------------ what observers read
    @property
    def gcs(self) -> Any:
        return self.members.gcs

    @gcs.setter
    def gcs(self, client: Any) -> None:
        self.members.gcs = client

    @property
    def gcs_pool(self) -> Any:
        return self.members.gcs_pool

    @property
    def view(self) -> dict[str, Any]:
        return self.members.view

    @property
    def lineage(self) -> Lineage:
        return self.recovery.lineage

    @property
    def forwarded(self) -> dict[int, Any]:
        return self.forwarding.forwarded

    @property
    def parked(self) -> dict[int, list[Any]]:
        return self.actors.parked

    @property
    def refetch(self) -> dict[int, int]:
        return self.recovery.refetch

    @property
    def pulls(self) -> dict[int, Pull]:
        return self.ownership.pulls

    @property
    def remote_held(self) -> dict[int, str]:
        return self.ownership.remote_held

    @property
    def stats(self) -> dict[str, int]:
        """Counters for the heartbeat: forwarded, pulls, pulled/served bytes, rebuilds,
        actor restarts."""
        return {
            **self.forwarding.stats,
            **self.ownership.stats,
            **self.recovery.stats,
            **self.actors.stats,
        }

    # ------------------------------------------------------------------ membership
    def update_view(self, nodes: list[Any]) -> None:
        """Nodes as the control plane lists them (``NodeInfo``: heartbeat figures, alive or
        dead)."""
        self.members.update_view(nodes, self.on_node_dead)
        self.forwarding.retry_infeasible()  # a node that fits them may have joined

    def on_link_closed(self, wid: int) -> None:
        """A node's connection breaks when its process dies: treat it as dead now."""
        ln = self.members.link_closed(wid)
        if ln is not None:
            self._peer_lost(ln.node_id, f"the connection to node {ln.node_id} closed", ln)

    def on_node_dead(self, node_id: str) -> None:
        ln = self.members.drop_link(node_id)
        self._peer_lost(node_id, f"node {node_id} died", ln)

    def _peer_lost(self, node_id: str, why: str, ln: Link | None) -> None:
        """Everything we waited for from that node fails (tasks retry elsewhere); objects we
        held there are lost (rebuilt when read, see ``Recovery.lost``); actors created from
        here that lived there restart elsewhere."""
        self.members.fail_requests(ln)
        self.ownership.peer_lost(node_id, why)
        self.actors.peer_lost(node_id, why)
        self.actors.adopt_orphans(node_id)

    # ------------------------------------------------------------------ objects freed, records
    def on_free(self, oid: int, entry: Any) -> None:
        self.recovery.on_free(oid)
        self.actors.on_free(oid)
        self.ownership.on_free(oid, entry)

    def take_records(self) -> tuple[list[Any], list[int], list[tuple[int, int]], list[int]]:
        """What to send to the control plane since the last call (called under the lock):
        lineage added, lineage dropped, objects stored here, objects freed here."""
        lineage_add, lineage_drop = self.recovery.take_lineage()
        stored, freed = self.ownership.take_locations()
        return lineage_add, lineage_drop, stored, freed

    def tick(self) -> None:
        """Timers: objects to ask their owner for again, calls waiting for an actor."""
        self.recovery.run_timers()
        self.actors.poll_parked()
        self.ownership.flush_held()

    def validate(self) -> None:
        """Each part's invariants (for tests: call under the lock, with no event half-done)."""
        self.members.validate()
        self.ownership.validate()
        self.recovery.validate()
        self.forwarding.validate()
        self.actors.validate()
