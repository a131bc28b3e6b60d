"""Actors across nodes: actors created from here that live elsewhere, calls to them, restarts.

Owns the actors created from this node on other nodes (``OwnedActor``: restarted from here if
their node dies and they have restarts left), where actors live now (``actor_home``), and the
calls parked while their actor restarts (polled at the control plane until it is back).
Control-plane calls run on the membership's thread and answer back under the node's lock.
"""

from __future__ import annotations

import pickle
import time
from dataclasses import dataclass
from typing import Any

from rtml import _checkpoint
from rtml import exceptions as exc
from rtml._node._cluster._forwarding import Forwarding
from rtml._node._cluster._membership import Membership, blob, lost_blob
from rtml._node._cluster._ownership import Ownership
from rtml._node._cluster._recovery import Recovery
from rtml._node._objects import PENDING
from rtml._node._tasks import TaskRec
from rtml._protocol._ids import return_id, task_of, to_hex
from rtml._protocol._payload import ERR, INLINE
from rtml._protocol._spec import WAITING
from rtml._scheduler._placement import place

ACTOR_POLL_S = 0.2  # how often calls waiting for a restarting actor ask where it is
ACTOR_RESTART_WAIT_S = 60.0  # ... and for how long before they fail


@dataclass
class OwnedActor:
    """An actor created from this node that lives on another one: restarted from here (on a
    live node) if that node dies and it has restarts left."""

    spec: Any
    info: dict[str, Any]
    proc: int
    home: str
    pins: list[int]
    restarting: bool = False
    # A detached actor with restarts is restarted from here even after every handle (and its
    # creating driver) is gone: this node holds its handle object itself until it dies.
    held: bool = False


class RemoteActors:
    def __init__(
        self,
        node: Any,
        members: Membership,
        ownership: Ownership,
        recovery: Recovery,
        forwarding: Forwarding,
    ) -> None:
        self.node = node
        self.members = members
        self.ownership = ownership
        self.recovery = recovery
        self.forwarding = forwarding
        self.owned_actors: dict[int, OwnedActor] = {}
        self.actor_home: dict[int, str] = {}
        self.parked: dict[int, list[TaskRec]] = {}
        self.parked_at: dict[int, float] = {}
        self.polled_at: dict[int, float] = {}
        self.polling: set[int] = set()
        self.stats = {"actors_restarted": 0}

    # ------------------------------------------------------------------ operations
    def actor_op(self, proc: int, req: int, op: str, args: tuple) -> bool:
        """An actor operation from a local process, if it concerns other nodes (True: handled,
        the reply is sent here, maybe later); False: the local manager answers it."""
        actors = self.node.actors
        members = self.members
        if op == "create":
            self._create_actor(proc, req, *args)
            return True
        if op == "get":
            name, namespace = args
            if (namespace or actors.namespace, name) in actors.names:
                return False
            members.gcs_call(
                lambda g: g.lookup_actor(namespace or actors.namespace, name),
                lambda rec, err: members.reply(proc, req, *self._found(rec, err, name, namespace)),
            )
            return True
        if op == "kill":
            aid, no_restart, home = (*args, None)[:3]
            home = self.actor_home.get(aid, home)
            if aid in actors.actors or home in (None, members.node_id):
                return False
            ln = members.link(home)
            members.request(
                ln,
                lambda r: ("actor_op", r, "kill", args),
                lambda value: members.reply(proc, req, *(value or ("ok", None))),
            )
            return True
        return False

    @staticmethod
    def _found(rec: Any, err: Any, name: str, namespace: str | None) -> tuple[str, Any]:
        if err is not None:
            return "err", exc.RtmlSystemError(f"the control plane failed to look up: {err}")
        if rec is None or rec.state == "DEAD":
            return "err", ValueError(
                f"there is no live actor named {name!r} in namespace {namespace!r}; create it "
                f"with Cls.options(name={name!r}).remote(), or check the namespace"
            )
        return "ok", (rec.actor_id, {**rec.extra.get("meta", {}), "node": rec.node_id})

    def _create_actor(
        self, proc: int, req: int, spec: Any, blob_: bytes | None, info: dict[str, Any]
    ) -> None:
        node = self.node
        members = self.members
        aid = spec.task_id
        ns = info.get("namespace") or node.actors.namespace
        if blob_ is not None:
            node.register_function(spec.fn_id, blob_)
        record = {
            "namespace": ns,
            "name": info.get("name"),
            "job_id": int(spec.job[0], 16) if spec.job else None,
            "class_name": info.get("class_name", ""),
            "detached": info.get("detached"),
            "max_restarts": info.get("max_restarts", 0),
            "meta": info.get("meta", {}),
            "owner": members.node_id,
        }
        # What any node needs to restart a detached actor once its creator is gone too (see
        # ``adopt_orphans``); arguments that are refs would die with their owner.
        if (
            info.get("detached")
            and info.get("max_restarts", 0) != 0
            and not spec.deps
            and not spec.contained
        ):
            fn = node.functions.get(spec.fn_id)
            record["restart"] = pickle.dumps((spec, info, fn), protocol=5)

        def registered(_rec: Any, err: Any) -> None:
            if err is None:
                self._place_actor(proc, req, spec, info)
            elif not isinstance(err, ValueError) or not info.get("get_if_exists"):
                members.reply(
                    proc,
                    req,
                    "err",
                    err
                    if isinstance(err, ValueError)
                    else exc.RtmlSystemError(f"the control plane failed: {err}"),
                )
            else:  # the name is taken and the caller wants that actor
                members.gcs_call(
                    lambda g: g.lookup_actor(ns, info["name"]),
                    lambda rec, e: self._existing(proc, req, rec, e, info["name"], ns),
                )

        members.gcs_call(lambda g: g.register_actor(aid, dict(record)), registered)

    def _existing(self, proc: int, req: int, rec: Any, err: Any, name: str, ns: str) -> None:
        status, value = self._found(rec, err, name, ns)
        self.members.reply(proc, req, status, ("existing", *value) if status == "ok" else value)

    def _place_actor(self, proc: int, req: int, spec: Any, info: dict[str, Any]) -> None:
        node = self.node
        members = self.members
        aid = spec.task_id
        members.local_view()
        try:
            home = place(
                spec.resources,
                spec.strategy,
                members.node_id,
                members.view,
                {},
                None,
                members.spread_turn,
            )
        except exc.TaskUnschedulableError as e:
            why = str(e)
            members.gcs_call(lambda g: g.update_actor(aid, "DEAD", death_cause=why), _ignore)
            members.reply(proc, req, "err", e)
            return
        if spec.strategy == "SPREAD":
            members.spread()
        members.gcs_call(lambda g: g.update_actor(aid, "ALIVE", node_id=home), _ignore)
        if home == members.node_id:
            status, value = node.actors.op(proc, "create", (spec, None, info))
            if status == "ok" and value[0] == "created":
                value = ("created", aid, {"node": members.node_id})
            members.reply(proc, req, status, value)
            return
        # Runs on ``home``: it holds the handle object for us, as for a forwarded task.
        handle = return_id(aid, 1)
        objects = node.objects
        objects.create(handle, proc)
        node._hold(proc, handle)
        pins = [*spec.deps, *spec.contained]
        for d in pins:
            if d not in objects:
                self.ownership.adopt(d)
            objects.add_ref(d)
        oa = OwnedActor(spec, info, proc, home, pins)
        if info.get("detached") and info.get("max_restarts", 0) != 0:
            oa.held = objects.add_ref(handle)

        def created(status: str, result: Any) -> None:
            if status == "ok":
                members.reply(proc, req, "ok", ("created", aid, {"node": home}))
            else:
                members.reply(proc, req, status, result)

        self._create_remote(oa, info, created)

    def _create_remote(self, oa: OwnedActor, info: dict[str, Any], then: Any) -> None:
        """Create ``oa``'s actor on ``oa.home`` and fetch its handle object from there (kept
        there for us, which keeps the actor alive). The actor stays in ``owned_actors`` (a
        restartable one with its constructor's arguments pinned) to be restarted, or declared
        dead, if that node dies; ``then(status, value)`` gets the creation's answer."""
        objects = self.node.objects
        members = self.members
        spec = oa.spec
        aid = spec.task_id
        home = oa.home
        handle = return_id(aid, 1)
        restartable = info.get("max_restarts", 0) != 0
        ln = members.link(home)
        fn_blob = members.function_for(ln, spec.fn_id)
        self.actor_home[aid] = home

        def fetched(vals: list | None) -> None:
            if vals is not None:
                self.ownership.seal_returned(ln, vals, keep=True)
            elif aid not in self.owned_actors:  # (else restarted: fetched from the new home)
                objects.seal(handle, ERR, lost_blob(handle, f"node {home} died"), 0, ())
            if not restartable:
                self._unpin(oa)

        def created(value: Any) -> None:
            if value is None:
                value = ("err", exc.NodeDiedError(f"node {home} died while creating the actor"))
            status, result = value
            if status == "ok" and result[0] == "created":
                self.owned_actors[aid] = oa
                members.request(ln, lambda r: ("fetch", r, [handle]), fetched)
                then("ok", result)
                return
            then(status, result)
            objects.seal(
                handle,
                ERR,
                pickle.dumps(
                    result if status == "err" else exc.RtmlSystemError("actor not created")
                ),
                0,
                (),
            )
            self._drop_owned(aid)
            self._unpin(oa)

        members.request(ln, lambda r: ("actor_op", r, "create", (spec, fn_blob, info)), created)

    def _unpin(self, oa: OwnedActor) -> None:
        pins, oa.pins = oa.pins, []
        for d in pins:
            self.node.objects.release(d)

    def _drop_owned(self, aid: int, dead: bool = False) -> None:
        oa = self.owned_actors.pop(aid, None)
        if oa is not None:
            self._unpin(oa)
            if oa.held:  # (a detached actor: this node's own hold on its handle object)
                oa.held = False
                self.node.objects.release(return_id(aid, 1))
            if dead:  # for good, and maybe with no node's actor manager to see it
                _checkpoint.remove(oa.info)
            handle = return_id(aid, 1)
            e = self.node.objects.get(handle)
            if e is not None and e.state == PENDING:
                self.node.objects.seal(handle, ERR, lost_blob(handle, "the actor died"), 0, ())

    def on_free(self, oid: int) -> None:
        oa = self.owned_actors.get(task_of(oid))
        if oa is not None and oid == return_id(oa.spec.task_id, 1):  # every handle is gone
            self._drop_owned(oa.spec.task_id)

    # ------------------------------------------------------------------ restarts
    def peer_lost(self, node_id: str, why: str) -> None:
        """Actors created from here that lived on that node restart elsewhere."""
        for oa in list(self.owned_actors.values()):
            if oa.home == node_id and not oa.restarting:
                self._restart_actor(oa, why)

    def adopt_orphans(self, dead: str) -> None:
        """Node ``dead`` is gone: detached actors with restarts whose node and creator are
        both gone have nobody to restart them. The live node with the lowest index adopts
        them from their control-plane records (spec, options, class) and restarts them as
        if it had created them (``_restart_actor``); it is their owner from then on."""
        members = self.members
        live = sorted((v.index, nid) for nid, v in members.view.items() if v.alive)
        if not live or live[0][1] != members.node_id or members.gcs is None:
            return
        why = f"node {dead} died"
        members.gcs_call(lambda g: g.list_actors(None), lambda recs, err: self._orphans(recs, why))

    def _orphans(self, recs: list[Any] | None, why: str) -> None:
        members = self.members
        node = self.node
        for rec in recs or ():
            material = rec.extra.get("restart")
            owner = rec.extra.get("owner")
            aid = rec.actor_id
            if (
                material is None
                or rec.state == "DEAD"
                or aid in self.owned_actors
                or aid in node.actors.actors
                or members.alive(rec.node_id)
                or (owner is not None and members.alive(owner))
            ):
                continue
            spec, info, fn = pickle.loads(material)
            if fn is not None:
                node.register_function(spec.fn_id, fn)
            handle = return_id(aid, 1)
            node.objects.create(handle, 0)  # (refs=1: this node's own hold, ``held``)
            oa = self.owned_actors[aid] = OwnedActor(spec, info, 0, rec.node_id, [], held=True)
            self._restart_actor(
                oa, f"{why}; its node {rec.node_id} and its creator {owner} are both gone"
            )

    def _dead(self, aid: int, cause: str) -> None:
        """Declare the actor dead for good (at the control plane); its parked calls fail."""
        self._drop_owned(aid, dead=True)
        self.members.gcs_call(
            lambda g: g.update_actor(aid, "DEAD", death_cause=cause[:2000]),
            lambda *_: self._fail_parked(aid, cause),
        )

    def _restart_actor(self, oa: OwnedActor, why: str) -> None:
        """The node of an actor created from here died: re-create it on a live node if it has
        restarts left (counted in the control plane, with those its node made itself)."""
        aid = oa.spec.task_id
        oa.restarting = True
        limit = oa.info.get("max_restarts", 0)
        members = self.members

        def counted(rec: Any, err: Any) -> None:
            if self.owned_actors.get(aid) is not oa:
                return
            if err is not None or rec is None:
                self._dead(
                    aid,
                    f"its node {oa.home} died and the control plane could not restart it "
                    f"({err or 'no record'})",
                )
                return
            if rec.state == "DEAD":
                self._drop_owned(aid, dead=True)
                self._fail_parked(aid, rec.death_cause or "it died")
                return
            if limit != -1 and rec.num_restarts >= limit:
                self._dead(
                    aid,
                    f"its node {oa.home} died ({why}) and it had no restarts left "
                    f"(max_restarts={limit}, restarted {rec.num_restarts} time(s))",
                )
                return
            members.gcs_call(
                lambda g: g.update_actor(aid, "RESTARTING"),
                lambda rec2, err2: self._replace_actor(oa, rec2, err2, why),
            )

        members.gcs_call(lambda g: g.get_actor(aid), counted)

    def _replace_actor(self, oa: OwnedActor, rec: Any, err: Any, why: str) -> None:
        node = self.node
        members = self.members
        spec = oa.spec
        aid = spec.task_id
        if self.owned_actors.get(aid) is not oa:
            return
        handle = return_id(aid, 1)
        e = node.objects.get(handle)
        if err is not None or rec is None or e is None:
            self._dead(aid, f"its node {oa.home} died ({why}) and it could not be restarted")
            return
        limit = oa.info.get("max_restarts", 0)
        info = {
            **oa.info,
            "max_restarts": -1 if limit == -1 else max(0, limit - rec.num_restarts),
            "get_if_exists": False,
        }
        strategy = spec.strategy
        if isinstance(strategy, tuple) and not members.alive(strategy[1]):
            strategy = None  # (a hard affinity to the dead node would never place it again)
        members.local_view()
        try:
            home = place(
                spec.resources,
                strategy,
                members.node_id,
                members.view,
                {},
                None,
                members.spread_turn,
            )
        except exc.TaskUnschedulableError as u:
            self._dead(aid, f"its node {oa.home} died and no live node can host it: {u}")
            return
        self.stats["actors_restarted"] += 1
        self.recovery.reset(handle)
        if e.state != PENDING:  # (sealed as an error meanwhile: nothing to fetch it into)
            e.state, e.kind, e.payload = PENDING, INLINE, None
        me = members.node_id
        members.gcs_call(lambda g: g.update_actor(aid, "ALIVE", node_id=home, owner=me), _ignore)
        if home == members.node_id:  # here: the local actor manager runs and restarts it now
            self._drop_owned(aid)
            self.actor_home[aid] = home
            status, value = node.actors.op(0, "create", (spec, None, info))
            if status != "ok":
                node.objects.seal(handle, ERR, blob(value), 0, ())
                self._fail_parked(aid, str(value))
                return
            self._release_parked(aid, home)
            return
        oa.home = home
        oa.restarting = False

        def created(status: str, value: Any) -> None:
            if status == "ok":
                self._release_parked(aid, home)
            else:
                self._fail_parked(aid, f"its restart on node {home} failed: {value}")

        self._create_remote(oa, info, created)

    # ------------------------------------------------------------------ calls to actors elsewhere
    def actor_elsewhere(self, spec: Any) -> str | None:
        """The node a method call must go to, if its actor does not live here."""
        where = spec.strategy
        if not (isinstance(where, tuple) and where[0] == "actor"):
            return None
        aid = spec.actor_id
        rec = self.node.actors.actors.get(aid)
        if rec is not None and (rec.state != "DEAD" or aid not in self.actor_home):
            return None
        home = self.actor_home.get(aid, where[1])
        return None if home == self.members.node_id else home

    def send_call(self, t: TaskRec, home: str) -> None:
        """Forward a method call to its actor's node, or hold it while the actor restarts."""
        if t.spec.actor_id in self.parked or not self.members.alive(home):
            self.park(t)
        else:
            self.forwarding.forward(t, home)

    def park(self, t: TaskRec) -> None:
        aid: int = t.spec.actor_id or 0
        t.state = WAITING
        if aid not in self.parked:
            self.parked[aid] = []
            self.parked_at[aid] = time.monotonic()
        self.parked[aid].append(t)

    def unpark(self, t: TaskRec) -> bool:
        calls = self.parked.get(t.spec.actor_id or 0)
        if calls is not None and t in calls:
            calls.remove(t)
            return True
        return False

    def _release_parked(self, aid: int, home: str) -> None:
        calls = self.parked.pop(aid, [])
        self.parked_at.pop(aid, None)
        self.polled_at.pop(aid, None)
        self.actor_home[aid] = home
        for t in calls:
            if t.state != WAITING or t.cancelled:
                continue
            if home == self.members.node_id:
                self.node.actors.enqueue(t)
            else:
                self.forwarding.forward(t, home)

    def _fail_parked(self, aid: int, cause: str) -> None:
        calls = self.parked.pop(aid, [])
        self.parked_at.pop(aid, None)
        self.polled_at.pop(aid, None)
        if not calls:
            return
        err = exc.ActorDiedError(f"the actor died: {cause}", actor_id=to_hex(aid))
        for t in calls:
            if t.state == WAITING:
                self.node._fail(t, err)

    def poll_parked(self) -> None:
        """Ask the control plane where actors with waiting calls live now."""
        if not self.parked:
            return
        now = time.monotonic()
        for aid in list(self.parked):
            if aid in self.polling or now - self.polled_at.get(aid, 0.0) < ACTOR_POLL_S:
                continue
            self.polling.add(aid)
            self.polled_at[aid] = now
            self.members.gcs_call(
                lambda g, aid=aid: g.get_actor(aid),
                lambda rec, err, aid=aid: self._polled(aid, rec, err),
            )

    def _polled(self, aid: int, rec: Any, err: Any) -> None:
        self.polling.discard(aid)
        if aid not in self.parked:
            return
        alive = self.members.alive
        if err is None:
            if rec is None:
                self._fail_parked(aid, "the control plane has no record of it")
                return
            if rec.state == "DEAD":
                self._fail_parked(aid, rec.death_cause or "it was killed")
                return
            if rec.state == "ALIVE" and alive(rec.node_id):
                self._release_parked(aid, rec.node_id)
                return
            owner = rec.extra.get("owner")
            if (
                not alive(rec.node_id)
                and owner is not None
                and not alive(owner)
                and "restart" not in rec.extra  # (else a live node adopts and restarts it)
            ):
                self._fail_parked(
                    aid,
                    f"its node {rec.node_id} died, and so did the node "
                    f"{owner} that created it, which restarts it",
                )
                return
        if time.monotonic() - self.parked_at.get(aid, 0.0) > ACTOR_RESTART_WAIT_S:
            self._fail_parked(
                aid, f"it did not come back within {ACTOR_RESTART_WAIT_S:.0f} s after its node died"
            )

    # ------------------------------------------------------------------ local actors, counted
    def actor_state(self, actor_id: int, state: str) -> None:
        """A local restart of an actor living here (counted by the control plane)."""
        node_id = self.members.node_id
        self.members.gcs_call(lambda g: g.update_actor(actor_id, state, node_id=node_id), _ignore)

    def actor_died(self, actor_id: int, cause: Any) -> None:
        self.members.gcs_call(
            lambda g: g.update_actor(actor_id, "DEAD", death_cause=str(cause)[:2000]), _ignore
        )

    def validate(self) -> None:
        """Parked calls wait, each actor with calls parked has its time; owned actors live
        elsewhere (or are being restarted)."""
        assert set(self.parked) == set(self.parked_at), "parked actors without a time"
        for aid, oa in self.owned_actors.items():
            assert oa.spec.task_id == aid, f"owned actor {to_hex(aid)} filed wrongly"
        for aid, calls in self.parked.items():
            for t in calls:
                assert t.spec.actor_id == aid, f"call of another actor parked for {to_hex(aid)}"


def _ignore(*_: Any) -> None:
    pass
