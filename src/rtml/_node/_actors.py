"""Actor lifecycle and call ordering on the node: pure state, I/O through the node's ``io``.

::

    create ──▶ DEPENDENCIES_UNREADY ──constructor args sealed──▶ PENDING_CREATION
                                                                   │ resources held, worker spawned
                                                                   ▼ hello: "fn", "actor_init", "exec"
      calls ──▶ per-caller FIFO ──head's args sealed──▶ ALIVE ◀── "actor_ready" (constructor ran)
                (a slow argument only delays                │
                 its own caller's later calls)              │ worker died
                                                            ▼
                          restarts left? RESTARTING (constructor again) : DEAD (every call fails)

    exit_actor() / __rtml_terminate__ / last handle dropped ──▶ exiting ──▶ worker exits ──▶ DEAD

Ordering: calls from one caller (the submitting process, ``spec.owner``) are dispatched in the
order they reached the node, which is the order the caller made them, since every caller has
one ordered channel to the node. The head of a caller's queue waits for its arguments; the
calls behind it wait with it, and other callers' queues are independent. Dispatched calls are
pipelined to the actor's worker, which runs them in arrival order (or concurrently for threaded
and async actors).

Lifetime: the creation task's return object is the actor's "handle object". Every ActorHandle
holds an ObjectRef to it, so the node's reference counting sees handles being pickled, passed
and dropped; when the object is freed the actor exits after its queued calls. Named and
detached actors are pinned by the manager and live until killed or the runtime stops.

Runs under ``node.lock`` like the Node; ``io`` calls are the only effects.
"""

from __future__ import annotations

import pickle
import time
from collections import deque
from typing import Any

from rtml import _checkpoint
from rtml import exceptions as exc
from rtml._node._tasks import TaskRec
from rtml._protocol._actor import TERMINATE_METHODS
from rtml._protocol._ids import return_id, to_hex
from rtml._protocol._payload import ERR
from rtml._protocol._spec import ASSIGNED, FINISHED, WAITING, TaskSpec

DEPENDENCIES_UNREADY = "DEPENDENCIES_UNREADY"
PENDING_CREATION = "PENDING_CREATION"
ALIVE = "ALIVE"
RESTARTING = "RESTARTING"
DEAD = "DEAD"


class ActorRec:
    """The node's record of one actor, alive or dead (dead ones answer later calls)."""

    __slots__ = (
        "actor_id",
        "cause",
        "creation",
        "error_blob",
        "exit_cause",
        "exit_task",
        "info",
        "key",
        "num_restarts",
        "pinned",
        "pinned_handle",
        "queues",
        "restarts_left",
        "spec",
        "state",
        "terminating",
        "worker",
    )

    def __init__(self, spec: TaskSpec, info: dict[str, Any], key: tuple[str, str] | None):
        self.actor_id: int = spec.task_id
        self.spec = spec
        self.info = info
        self.key = key
        self.state = DEPENDENCIES_UNREADY
        self.worker: Any = None
        self.creation: TaskRec | None = None
        self.queues: dict[int, deque[TaskRec]] = {}
        self.restarts_left: int = info.get("max_restarts", 0)
        self.num_restarts = 0
        self.cause: Any = None
        self.error_blob: bytes | None = None
        self.exit_task: int | None = None
        self.exit_cause: str | None = None
        self.terminating: str | None = None
        self.pinned: list[int] = []
        self.pinned_handle = False

    @property
    def handle_oid(self) -> int:
        return return_id(self.actor_id, 1)

    @property
    def name(self) -> str:
        return self.info.get("class_name", "Actor")

    def meta(self) -> dict[str, Any]:
        """What a process needs to build a handle (rtml.get_actor, get_if_exists)."""
        return self.info["meta"]

    def worker_info(self) -> dict[str, Any]:
        i = self.info
        return {
            "class_name": i.get("class_name"),
            "methods": list(i["meta"]["methods"]),
            "is_async": i.get("is_async", False),
            "max_concurrency": i.get("max_concurrency", 1),
            "env_vars": i.get("env_vars"),
            "checkpoint": i.get("checkpoint"),
        }


class ActorManager:
    """Actor state of one node (see the module docstring)."""

    def __init__(self, node: Any, namespace: str = "default") -> None:
        self.node = node
        self.namespace = namespace
        self.actors: dict[int, ActorRec] = {}
        self.names: dict[tuple[str, str], int] = {}
        self.handles: dict[int, ActorRec] = {}  # handle object id -> live actor
        self.unplaced: deque[ActorRec] = deque()

    # ------------------------------------------------------------------ operations (request/reply)
    def op(self, proc: int, op: str, args: tuple) -> tuple[str, Any]:
        """Run an operation for process ``proc``: ("ok", value) or ("err", exception)."""
        fn = _OPS.get(op)
        if fn is None:
            return "err", exc.RtmlSystemError(f"unknown actor operation {op!r}")
        try:
            return "ok", fn(self, proc, *args)
        except (ValueError, TypeError, exc.RtmlError) as e:
            return "err", e

    def op_create(
        self, proc: int, spec: TaskSpec, fn_blob: bytes | None, info: dict[str, Any]
    ) -> tuple[str, int, Any]:
        name = info.get("name")
        key = None
        if name is not None:
            ns = info.get("namespace") or self.namespace
            key = (ns, name)
            aid = self.names.get(key)
            if aid is not None:
                if info.get("get_if_exists"):
                    return "existing", aid, self.actors[aid].meta()
                raise ValueError(
                    f"an actor named {name!r} already exists in namespace {ns!r}; pick another "
                    f"name, fetch the existing one with rtml.get_actor({name!r}), or pass "
                    "get_if_exists=True to reuse it"
                )
        if fn_blob is not None:
            self.node.register_function(spec.fn_id, fn_blob)
        rec = ActorRec(spec, info, key)
        self.actors[rec.actor_id] = rec
        if key is not None:
            self.names[key] = rec.actor_id
        self.handles[rec.handle_oid] = rec
        self.node.submit(proc, spec)  # comes back as submit() of the creation task
        return "created", rec.actor_id, None

    def op_get(self, proc: int, name: str, namespace: str | None) -> tuple[int, Any]:
        ns = namespace or self.namespace
        aid = self.names.get((ns, name))
        if aid is None:
            raise ValueError(
                f"there is no live actor named {name!r} in namespace {ns!r}; create it with "
                f"Cls.options(name={name!r}).remote(), check the namespace (rtml.init("
                "namespace=...) or get_actor(name, namespace=...)), or it may have died"
            )
        return aid, self.actors[aid].meta()

    def op_kill(
        self,
        proc: int,
        actor_id: int,
        no_restart: bool,
        node: str | None = None,
        cause: str = "it was killed with rtml.kill()",
    ) -> None:
        rec = self.actors.get(actor_id)
        if rec is None or rec.state == DEAD:
            return
        w = rec.worker
        if no_restart:
            self._die(rec, cause)
            if w is not None:
                self.node.io.kill(w.wid)
        elif w is not None:
            # Restart now (if it has restarts left) rather than when the process is seen to
            # exit, so that calls made after kill() wait for the new instance.
            self.node.io.kill(w.wid)
            tasks = list(w.assigned)
            w.assigned.clear()
            self._lost_worker(rec, w, tasks, "killed by rtml.kill(no_restart=False)")

    def owner_died(self, wid: int, pid: int | None, owner: ActorRec | None) -> None:
        """Fate sharing, as in Ray: the actors a worker process created die with it (the
        process of an actor, or of the tasks that created them), unless they are detached."""
        for rec in list(self.actors.values()):
            if rec.spec.owner != wid or rec.state == DEAD or rec.info.get("detached"):
                continue
            creator = f"the actor {owner.name}" if owner is not None else "a task"
            self.op_kill(
                wid,
                rec.actor_id,
                True,
                cause=(
                    f"The actor is dead because its owner has died: {creator} created it in "
                    f"worker process {pid or '(not started)'}, which exited, and an actor dies "
                    "with the process that created it unless it is detached (create it with "
                    "lifetime='detached' to outlive its creator)"
                ),
            )

    # ------------------------------------------------------------------ messages from workers
    def handle(self, wid: int, m: tuple) -> None:
        tag = m[0]
        if tag == "actor_op":
            _tag, req, op, args = m
            cluster = self.node.cluster
            if (
                cluster is not None
                and not cluster.is_peer(wid)
                and cluster.actor_op(wid, req, op, args)
            ):
                return  # answered by the cluster (maybe later)
            self.node.io.send(wid, ("reply", req, self.op(wid, op, args)))
        elif tag == "actor_ready":
            self._on_ready(wid, m[1], m[2])
        elif tag == "actor_exiting":
            rec = self.actors.get(m[1])
            if rec is not None and rec.state != DEAD and rec.exit_task is None:
                rec.exit_task = m[2]
                rec.exit_cause = m[3]
        else:
            raise exc.RtmlSystemError(f"unknown actor message {tag!r} from worker {wid}")

    def _on_ready(self, wid: int, actor_id: int, err_blob: bytes | None) -> None:
        rec = self.actors.get(actor_id)
        if rec is None or rec.worker is None or rec.worker.wid != wid or rec.state == DEAD:
            return
        if err_blob is not None:
            try:
                cause: Any = pickle.loads(err_blob)
            except Exception as e:
                cause = f"its constructor raised an exception that could not be unpickled ({e})"
            self._die(rec, cause)
            self.node.io.send(wid, ("exit",))
            return
        rec.state = ALIVE
        if rec.num_restarts and self.node.cluster is not None:
            self.node.cluster.actor_state(rec.actor_id, ALIVE)
        self._pump(rec)
        self._maybe_exit(rec)

    # ------------------------------------------------------------------ hooks called by the Node
    def submit(self, t: TaskRec) -> None:
        """A creation or a method call arrived (the node made its TaskRec and return objects)."""
        spec = t.spec
        rec = self.actors.get(spec.actor_id)  # type: ignore[arg-type]
        node = self.node
        if rec is None:
            node._fail(
                t,
                exc.ActorDiedError(
                    "no such actor on this runtime (the handle comes from another session, or "
                    "the actor was never created)",
                    actor_id=to_hex(spec.actor_id or 0),
                ),
                unpin=False,
            )
            return
        if spec.task_id == rec.actor_id:
            self._submit_creation(rec, t)
            return
        if rec.state == DEAD:
            node._fail_with_blob(t, rec.error_blob, unpin=False)
            return
        if not node._pin_deps(t):
            return
        self.enqueue(t)

    def enqueue(self, t: TaskRec) -> None:
        """Queue a call whose arguments are pinned (held elsewhere while its actor restarted
        on this node, or just submitted)."""
        spec = t.spec
        rec = self.actors.get(spec.actor_id)  # type: ignore[arg-type]
        if rec is None or rec.state == DEAD:
            self.node._fail_with_blob(
                t,
                rec.error_blob
                if rec is not None
                else pickle.dumps(
                    exc.ActorDiedError("the actor is gone", actor_id=to_hex(spec.actor_id or 0))
                ),
            )
            return
        node = self.node
        if node.cluster is not None and t.deps_left == 0:
            node._fetch_deps(t)  # inputs sealed on other nodes are pulled here first
        q = rec.queues.get(spec.owner)
        if q is None:
            q = rec.queues[spec.owner] = deque()
        tid = spec.task_id
        if not q or q[-1].spec.task_id < tid:
            q.append(t)
        else:  # a call re-run to rebuild its lost result: in its place, before later calls
            i = next(i for i, other in enumerate(q) if other.spec.task_id > tid)
            q.insert(i, t)  # (behind them, a later call waiting for its result would block)
        if t.deps_left == 0:
            self._pump(rec, spec.owner)

    def _submit_creation(self, rec: ActorRec, t: TaskRec) -> None:
        node = self.node
        rec.creation = t
        if rec.key is not None or rec.info.get("detached"):
            node.objects.add_ref(rec.handle_oid)
            rec.pinned_handle = True
        if not node._pin_deps(t):
            self._die(rec, self._creation_failure(rec))
            return
        if rec.restarts_left != 0:  # keep the constructor's arguments for restarts
            for oid in (*t.spec.deps, *t.spec.contained):
                if node.objects.add_ref(oid):
                    rec.pinned.append(oid)
        if t.deps_left == 0:
            self._place(rec)

    def _creation_failure(self, rec: ActorRec) -> Any:
        e = self.node.objects.get(rec.handle_oid)
        if e is not None and e.kind == ERR:
            try:
                return pickle.loads(e.payload)
            except Exception:
                pass
        return "an argument of its constructor was lost or failed"

    def deps_ready(self, t: TaskRec) -> None:
        """A queued call or creation has all its arguments (or failed on one of them)."""
        rec = self.actors.get(t.spec.actor_id)  # type: ignore[arg-type]
        if rec is None:
            return
        if t.spec.task_id == rec.actor_id:
            if t.state == FINISHED:
                self._die(rec, self._creation_failure(rec))
            elif rec.state == DEPENDENCIES_UNREADY:
                self._place(rec)
            return
        self._pump(rec, t.spec.owner)

    def retry(self, t: TaskRec) -> None:
        """An application error the call may be retried on (retry_exceptions)."""
        rec = self.actors.get(t.spec.actor_id)  # type: ignore[arg-type]
        if rec is None or rec.state == DEAD:
            self.node._fail_with_blob(
                t, rec.error_blob if rec else pickle.dumps(exc.ActorDiedError("the actor is gone"))
            )
            return
        self._requeue(rec, [t])
        self._pump(rec, t.spec.owner)

    def call_done(self, w: Any, t: TaskRec | None) -> None:
        rec = w.actor
        if t is not None and t.spec.task_id == rec.exit_task:
            self.node.io.send(w.wid, ("exit",))
        if rec.terminating is not None:
            self._maybe_exit(rec)

    def cancel(self, t: TaskRec, err: BaseException, force: bool) -> None:
        """Cancel a call: a queued one fails at once; a dispatched one is skipped by the worker
        if it has not started (async actors also cancel a running coroutine). ``force`` is
        treated as False: killing the process would take the whole actor down."""
        rec = self.actors.get(t.spec.actor_id)  # type: ignore[arg-type]
        if rec is None or t.spec.task_id == rec.actor_id:
            return
        if t.state == WAITING:
            self.node._fail(t, err)
            self._pump(rec, t.spec.owner)
        elif t.state == ASSIGNED and t.worker is not None:
            t.cancelled = True
            tag = "actor_cancel" if rec.info.get("is_async") else "cancel"
            self.node.io.send(t.worker.wid, (tag, t.spec.task_id))

    def worker_ready(self, w: Any) -> None:
        """The actor's worker said hello: send it the class and run the constructor."""
        rec = w.actor
        io = self.node.io
        if rec.state == DEAD or rec.worker is not w:
            io.send(w.wid, ("exit",))
            return
        spec = rec.spec
        io.send(w.wid, ("fn", spec.fn_id, self.node.functions[spec.fn_id]))
        io.send(w.wid, ("actor_init", rec.actor_id, spec.fn_id, rec.worker_info()))
        t = rec.creation
        if t is not None and t.state != FINISHED:
            t.state = ASSIGNED
            t.worker = w
            t.attempts += 1
            w.assigned.append(t)
        self._send_exec(w, spec)

    def worker_died(self, w: Any, tasks: list[TaskRec], how: str) -> None:
        rec = w.actor
        if rec.worker is w:
            self._lost_worker(rec, w, tasks, how)

    def _lost_worker(self, rec: ActorRec, w: Any, tasks: list[TaskRec], how: str) -> None:
        rec.worker = None
        pid = f"pid {w.pid}" if w.pid else "not yet started"
        if rec.state == DEAD:
            self._fail_all(rec, tasks)
            _checkpoint.remove(rec.info)  # (again: its process may have written since _die)
            return
        cause = rec.exit_cause or rec.terminating
        if cause is None and rec.restarts_left != 0:
            self._restart(rec, tasks, how, pid)
            return
        if cause is None and not w.pid:
            cause = f"its worker process could not start ({how})"
            if stderr := self.node.pool.last_stderr:
                cause += f"; the worker's stderr:\n{stderr}"
        if cause is None:
            cause = f"its worker process ({pid}) died unexpectedly ({how})"
            if rec.num_restarts:
                cause += (
                    f", after {rec.num_restarts} restart(s) (max_restarts="
                    f"{rec.info.get('max_restarts', 0)})"
                )
        self._die(rec, cause, tasks)

    def _restart(self, rec: ActorRec, tasks: list[TaskRec], how: str, pid: str) -> None:
        node = self.node
        if rec.restarts_left > 0:
            rec.restarts_left -= 1
        rec.num_restarts += 1
        rec.state = RESTARTING
        if node.cluster is not None:  # (counted there with restarts on other nodes)
            node.cluster.actor_state(rec.actor_id, RESTARTING)
        retry: list[TaskRec] = []
        for t in tasks:
            if t.state == FINISHED:
                continue
            if t is rec.creation:
                t.state = WAITING
                t.worker = None
                continue
            if t.retries_left != 0 and not t.cancelled:
                if t.retries_left > 0:
                    t.retries_left -= 1
                node.stats["retried"] += 1
                retry.append(t)
            else:
                err = self._died_error(
                    rec, f"its worker process ({pid}) died ({how}) while this call was in flight"
                )
                err.args = (
                    f"The actor {rec.name} lost its worker process ({pid}, {how}) while the call "
                    f"{t.spec.name}() was in flight; the actor is being restarted, but the call "
                    "was not retried. Pass max_task_retries=N to the actor (or -1) to re-send "
                    "in-flight calls after a restart (they may then run twice).",
                )
                node._fail(t, err)
        self._requeue(rec, retry)
        self._place(rec)

    def _requeue(self, rec: ActorRec, tasks: list[TaskRec]) -> None:
        """Put calls back at the front of their callers' queues, keeping their order."""
        by_caller: dict[int, list[TaskRec]] = {}
        for t in tasks:
            t.state = WAITING
            t.worker = None
            by_caller.setdefault(t.spec.owner, []).append(t)
        for caller, ts in by_caller.items():
            q = rec.queues.get(caller)
            if q is None:
                q = rec.queues[caller] = deque()
            q.extendleft(reversed(ts))

    # ------------------------------------------------------------------ handle object freed
    def out_of_scope(self, oid: int) -> None:
        """Every handle is gone (the handle object was freed): exit after the queued calls."""
        rec = self.handles.pop(oid, None)
        if rec is None or rec.state == DEAD:
            return
        rec.terminating = (
            "every handle to it was dropped, so it was terminated (keep a handle "
            "while you use the actor, or create it with a name or "
            "lifetime='detached')"
        )
        self._maybe_exit(rec)

    def _maybe_exit(self, rec: ActorRec) -> None:
        if rec.terminating is None or rec.state == DEAD:
            return
        for q in rec.queues.values():
            if any(t.state != FINISHED for t in q):
                return
        if rec.state in (DEPENDENCIES_UNREADY, PENDING_CREATION) and rec.worker is None:
            self._die(rec, rec.terminating)
        elif rec.state == ALIVE and not rec.worker.assigned and rec.exit_task is None:
            rec.exit_task = -1
            self.node.io.send(rec.worker.wid, ("exit",))

    # ------------------------------------------------------------------ placement
    def place_waiting(self) -> None:
        """Resources were freed: place actors waiting for them (called by Node.schedule)."""
        for _ in range(len(self.unplaced)):
            rec = self.unplaced.popleft()
            if rec.state != DEAD:
                self._place(rec)

    def _place(self, rec: ActorRec) -> None:
        node = self.node
        req = rec.spec.resources
        if not node.resources.feasible(req) and not node._group_waits(req):
            self._die(
                rec,
                (
                    f"it asks for {req}, but this node only has {node.resources.totals()} in "
                    "total, so it could never be placed; lower the request or start rtml with more "
                    "resources (rtml.init(num_cpus=, num_gpus=, resources=))"
                ),
            )
            return
        if rec.state == DEPENDENCIES_UNREADY:
            rec.state = PENDING_CREATION
        now = time.monotonic()
        if not node.pool.may_start(now):
            err = node.pool.cannot_start(now)
            if err is not None:  # worker processes cannot start on this node
                self._die(rec, f"no worker process could be started for it: {err}")
            elif rec not in self.unplaced:
                self.unplaced.append(rec)  # (a probe spawn is on its way)
            return
        alloc = node.resources.acquire(req)
        if alloc is None:
            if rec not in self.unplaced:
                self.unplaced.append(rec)
            return
        w = node.start_worker(actor=rec)
        w.alloc = alloc
        rec.worker = w

    # ------------------------------------------------------------------ dispatch
    def _pump(self, rec: ActorRec, caller: int | None = None) -> None:
        """Send every call whose turn has come (the head of its caller's queue, args ready)."""
        if rec.state != ALIVE or rec.exit_task is not None:
            return
        w = rec.worker
        queues = rec.queues
        for c in [caller] if caller is not None else list(queues):
            q = queues.get(c)
            if q is None:
                continue
            while q:
                t = q[0]
                if t.state == FINISHED:
                    q.popleft()
                    continue
                if t.deps_left:
                    break
                q.popleft()
                t.state = ASSIGNED
                t.worker = w
                t.attempts += 1
                w.assigned.append(t)
                self._send_exec(w, t.spec)
                if t.spec.fn_id in TERMINATE_METHODS:
                    rec.exit_task = t.spec.task_id
                    rec.exit_cause = (
                        f"it was terminated by {t.spec.fn_id}() (calls made "
                        "after that one are not run)"
                    )
                    return
            if not q:
                del queues[c]

    def _send_exec(self, w: Any, spec: TaskSpec) -> None:
        node = self.node
        deps = [node.payload(d) for d in spec.deps] if spec.deps else None
        node.io.send(w.wid, ("exec", spec, deps, w.alloc.gpu_ids if w.alloc else None))

    # ------------------------------------------------------------------ death
    def _died_error(self, rec: ActorRec, cause: Any) -> exc.ActorDiedError:
        return exc.ActorDiedError(
            cause,
            actor_id=to_hex(rec.actor_id),
            class_name=rec.name,
            actor_name=rec.key[1] if rec.key else None,
        )

    def _die(self, rec: ActorRec, cause: Any, tasks: list[TaskRec] | None = None) -> None:
        """Mark the actor dead: fail its in-flight and queued calls, free its name and pins."""
        if rec.state == DEAD:
            return
        node = self.node
        rec.state = DEAD
        rec.cause = cause
        rec.error_blob = pickle.dumps(self._died_error(rec, cause), protocol=5)
        if rec.worker is not None:
            tasks = list(rec.worker.assigned) + list(tasks or ())
        self._fail_all(rec, tasks or [])
        if rec in self.unplaced:
            self.unplaced.remove(rec)
        if rec.key is not None and self.names.get(rec.key) == rec.actor_id:
            del self.names[rec.key]
        self.handles.pop(rec.handle_oid, None)
        pinned, rec.pinned = rec.pinned, []
        for oid in pinned:
            node.objects.release(oid)
        if rec.pinned_handle:
            rec.pinned_handle = False
            node.objects.release(rec.handle_oid)
        if node.cluster is not None:
            node.cluster.actor_died(rec.actor_id, cause)
        _checkpoint.remove(rec.info)

    def _fail_all(self, rec: ActorRec, tasks: list[TaskRec]) -> None:
        node = self.node
        blob = rec.error_blob
        for t in tasks:
            if t.state != FINISHED:
                node._fail_with_blob(t, blob)
        c = rec.creation
        if c is not None and c.state != FINISHED:
            node._fail_with_blob(c, blob)
        queues, rec.queues = rec.queues, {}
        for q in queues.values():
            for t in q:
                if t.state != FINISHED:
                    node._fail_with_blob(t, blob)

    # ------------------------------------------------------------------ introspection
    def list_actors(self) -> list[dict[str, Any]]:
        return [
            {
                "actor_id": to_hex(r.actor_id),
                "class_name": r.name,
                "state": r.state,
                "name": r.key[1] if r.key else None,
                "namespace": r.key[0] if r.key else None,
                "pid": r.worker.pid if r.worker is not None else None,
                "num_restarts": r.num_restarts,
            }
            for r in self.actors.values()
        ]

    def validate(self) -> None:
        workers = self.node.workers
        for rec in self.actors.values():
            if rec.state == ALIVE:
                w = rec.worker
                assert w is not None
                assert workers.get(w.wid) is w
                assert w.actor is rec
            if rec.worker is not None:
                assert rec.state != DEAD or rec.worker.wid in workers
                for t in rec.worker.assigned:
                    assert t.state in (ASSIGNED, FINISHED)
                    assert t.worker is rec.worker
            for q in rec.queues.values():
                assert q, "empty caller queue kept"
                for t in q:
                    assert t.state in (WAITING, FINISHED), t.state
            if rec.state == DEAD:
                assert not rec.queues
                assert not rec.pinned
                assert not rec.pinned_handle
                assert rec not in self.unplaced
        for key, aid in self.names.items():
            assert self.actors[aid].state != DEAD
            assert self.actors[aid].key == key
        for rec in self.unplaced:
            assert rec.state in (PENDING_CREATION, RESTARTING)
            assert rec.worker is None
        for oid, rec in self.handles.items():
            assert rec.handle_oid == oid
            assert rec.state != DEAD


_OPS: dict[str, Any] = {
    "create": ActorManager.op_create,
    "get": ActorManager.op_get,
    "kill": ActorManager.op_kill,
}
