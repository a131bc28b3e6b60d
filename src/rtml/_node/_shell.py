"""The node's I/O shell: worker processes, their channels, and the thread that serves them.

::

    worker ──socketpair──▶ NodeChannel ──▶ selector thread ──(node.lock)──▶ Node.dispatch
    driver thread ──(node.lock)──▶ Node ──▶ io.send ──▶ NodeChannel queue ──flush──▶ worker

Every call into the Node happens under ``node.lock``; queued messages are flushed by whoever
holds the lock at the end of its call (never blocking: a socket that is full gets the rest
written by the selector thread when it becomes writable).
"""

from __future__ import annotations

import json
import os
import select
import selectors
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections import deque
from typing import Any

from rtml._node._dispatch import dispatch
from rtml._node._memory import monitor_from_env
from rtml._transport import FrameError, NodeChannel


class NodeShell:
    """Implements the ``io`` interface the Node expects and runs the selector thread."""

    def __init__(
        self,
        session: str,
        shm_dir: str,
        env_vars: dict[str, str] | None,
        log_to_driver: bool,
        log_sink: Any,
    ) -> None:
        self.session = session
        self.shm_dir = shm_dir
        self.node: Any = None
        self.channels: dict[int, NodeChannel] = {}
        self.procs: dict[int, subprocess.Popen] = {}
        self.dirty: set[NodeChannel] = set()
        self.selector = selectors.DefaultSelector()
        # The epoll object under it (Linux), to mute a connection in one system call.
        raw = getattr(self.selector, "_selector", None)
        self._epoll = raw if hasattr(select, "epoll") and isinstance(raw, select.epoll) else None
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self.selector.register(self._wake_r, selectors.EVENT_READ, None)
        self._to_register: list[tuple[int, NodeChannel]] = []
        self._writers: set[NodeChannel] = set()
        self._interrupts: list[int] = []
        self._stopping = False
        self.env_vars = dict(env_vars or {})
        self.log_to_driver = log_to_driver
        self.log_sink = log_sink
        self.thread = threading.Thread(target=self._loop, name="rtml-node-io", daemon=True)
        self.on_idle: list[Any] = []
        self.node_info: dict[str, Any] = {}  # what a client learns at "client_hello"
        self.on_client_log: Any = None  # cluster node: routes worker output to drivers
        self.token: bytes | None = None  # cluster node: for links to other nodes
        self.link_frame = 1 << 30
        self._next_link = -1  # links to other nodes get negative channel ids
        self._link_backlog: dict[int, list[Any]] = {}  # messages sent while connecting
        self._soon: deque[Any] = deque()  # callables to run on the selector thread
        self.served = 0  # waits that serve_worker saw answered
        self.log_dir = ""  # per-worker log files go here (set by build_node)
        self._log_files: dict[int, Any] = {}
        self._early: dict[int, Any] = {}  # wid -> the file a worker's stderr went to at start
        self.memory = monitor_from_env()  # kills a worker when the node runs out of memory

    def start(self) -> None:
        self.thread.start()

    # ------------------------------------------------------------------ io interface
    def send(self, wid: int, msg: Any) -> None:
        ch = self.channels.get(wid)
        if ch is not None:
            ch.queue(msg)
            self.dirty.add(ch)
        elif wid < 0:
            backlog = self._link_backlog.get(wid)
            if backlog is not None:
                backlog.append(msg)

    def send_raw(self, wid: int, req: int, data: bytes) -> None:
        """Answer request ``req`` with bytes sent as they are (object chunks for a pull)."""
        ch = self.channels.get(wid)
        if ch is not None:
            ch.queue_raw(req, data)
            self.dirty.add(ch)

    # ------------------------------------------------------------------ links to other nodes
    def open_link(self, node_id: str, address: str, hello: dict[str, Any]) -> int:
        """Connect (on a thread) to another node as its client; returns the channel id that
        ``send`` takes at once (messages wait until the connection is up)."""
        wid = self._next_link
        self._next_link -= 1
        self._link_backlog[wid] = [("client_hello", 0, hello)]
        threading.Thread(
            target=self._connect_link, args=(wid, address), daemon=True, name="rtml-node-link"
        ).start()
        return wid

    def _connect_link(self, wid: int, address: str) -> None:
        from rtml._transport._auth import connect

        try:
            assert self.token is not None
            sock = connect(address, self.token)
        except (ConnectionError, OSError) as e:
            print(f"rtml node: cannot reach node at {address}: {e}", file=sys.stderr)  # noqa: T201
            with self.node.lock:
                self._link_backlog.pop(wid, None)
                self.node.cluster.on_link_closed(wid)
                self.flush()
            return
        ch = NodeChannel(sock, self.link_frame)
        with self.node.lock:
            backlog = self._link_backlog.pop(wid, None)
            if backlog is None or self._stopping:  # closed meanwhile
                ch.close()
                return
            self.channels[wid] = ch
            for m in backlog:
                ch.queue(m)
            self.dirty.add(ch)
            self._to_register.append((wid, ch))
            self.flush()
        self.wake()

    def close_link(self, wid: int) -> None:
        """Drop a link (its node is dead); the selector thread sees the close."""
        self._link_backlog.pop(wid, None)
        ch = self.channels.get(wid)
        if ch is not None:
            try:
                ch.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def call_soon(self, fn: Any) -> None:
        """Run ``fn()`` on the selector thread under node.lock (from any thread, e.g. the
        completion of a control-plane request)."""
        self._soon.append(fn)
        self.wake()

    def log_remote(self, args: tuple) -> None:
        """Worker output another node forwarded: to this node's drivers of that job."""
        if self.on_client_log is not None:
            self.on_client_log(*args)

    def batching(self, wid: int, most: int = 16) -> bool:
        """May messages queued for ``wid`` wait for the next flush (fewer than ``most``)?"""
        ch = self.channels.get(wid)
        return ch is not None and ch.n_queued < most

    def flush(self) -> None:
        """Flush queued messages; call with node.lock held."""
        if not self.dirty:
            if self._interrupts:
                self._send_interrupts()
            return
        wake = False
        for ch in self.dirty:
            if ch.flush() and ch not in self._writers:
                self._writers.add(ch)
                wake = True
        self.dirty.clear()
        if self._interrupts:
            self._send_interrupts()
        if wake and threading.current_thread() is not self.thread:
            self.wake()

    def wake(self) -> None:
        try:
            os.write(self._wake_w, b"x")
        except (BlockingIOError, OSError):
            pass

    def spawn(self, wid: int, actor: Any) -> None:
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        for s in (parent, child):
            s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        env = dict(os.environ)
        env.update(self.env_vars)
        env["RTML_SYS_PATH"] = json.dumps([p for p in sys.path if p])
        if "OMP_NUM_THREADS" not in env:  # as Ray: each task's num_cpus, unless the user set it
            env["OMP_NUM_THREADS"] = "1"
            env["RTML_OMP_MANAGED"] = "1"
        cmd = [
            sys.executable,
            "-m",
            "rtml._worker",
            str(child.fileno()),
            str(wid),
            self.session,
            self.shm_dir,
        ]
        # Until it is up, the worker's stderr goes to a file, read if it dies before then (a
        # broken environment: WorkerStartError carries it); the worker then points its stderr
        # back at ours, passed as RTML_STDERR_FD, and copies what the file got there.
        early = tempfile.TemporaryFile()  # noqa: SIM115 - closed in _close/stop
        ours = os.dup(2)
        env["RTML_STDERR_FD"] = str(ours)
        try:
            proc = subprocess.Popen(
                cmd,
                pass_fds=(child.fileno(), ours),
                env=env,
                stdin=subprocess.DEVNULL,
                stderr=early,
                cwd=os.getcwd(),
            )
        except BaseException:
            early.close()
            raise
        finally:
            child.close()
            os.close(ours)
        self.procs[wid] = proc
        self._early[wid] = early
        ch = NodeChannel(parent)
        self.channels[wid] = ch
        self._to_register.append((wid, ch))
        if threading.current_thread() is not self.thread:
            self.wake()

    def attach(self, sock: socket.socket, max_frame: int) -> int:
        """Serve an authenticated connection (a cluster driver) as a client process."""
        ch = NodeChannel(sock, max_frame)
        with self.node.lock:
            wid = self.node.add_client().wid
            self.channels[wid] = ch
            self._to_register.append((wid, ch))
        self.wake()
        return wid

    def kill(self, wid: int) -> None:
        proc = self.procs.get(wid)
        if proc is not None and proc.poll() is None:
            try:
                proc.kill()
            except OSError:
                pass

    def interrupt(self, wid: int) -> None:
        # Sent by flush(), after the cancel message that precedes it is written: the worker's
        # signal handler reads the channel, so the message must already be there.
        self._interrupts.append(wid)

    def _send_interrupts(self) -> None:
        while self._interrupts:
            proc = self.procs.get(self._interrupts.pop())
            if proc is not None and proc.poll() is None:
                try:
                    os.kill(proc.pid, signal.SIGUSR1)
                except OSError:
                    pass

    def log(self, wid: int, stream: str, text: str, name: str, job: str | None) -> None:
        proc = self.procs.get(wid)
        pid = proc.pid if proc is not None else "?"
        if self.log_dir:  # kept per worker, for `rtml logs` and the dashboard
            f = self._log_files.get(wid)
            if f is None:
                try:
                    f = self._log_files[wid] = open(  # noqa: SIM115 - closed with the worker
                        os.path.join(self.log_dir, f"worker-{pid}.log"), "a", buffering=1
                    )
                except OSError:
                    f = None
            if f is not None:
                mark = "[stderr] " if stream == "stderr" else ""
                try:
                    f.write("".join(f"{mark}({name}) {line}\n" for line in text.split("\n")))
                except (OSError, ValueError):
                    pass
        if self.log_to_driver:
            self.log_sink(stream, name, pid, text, job)

    def serve_worker(self, wid: int, done: Any, seconds: float) -> None:
        """Serve worker ``wid``'s connection on the calling thread (node.lock not held) until
        ``done()`` or for ``seconds``, polling without sleeping.

        A driver about to block on a result the worker is computing calls this: the result is
        then read by the thread that wants it, instead of waking the selector thread, which
        would then wake this one (two wake-ups, ~20 µs here; decision 0010). The selector
        leaves the connection alone meanwhile; every message read is dispatched as it would
        have dispatched it, under node.lock."""
        node = self.node
        with node.lock:
            ch = self.channels.get(wid)
            if ch is None or ch.closed or ch.borrowed or ch in self._writers:
                return
            if not self._mute(wid, ch, True):
                return
            ch.borrowed = True
        end = time.perf_counter() + seconds
        try:
            while True:
                with node.lock:
                    if not self._serve(wid, ch):
                        return  # closed (and handled as the selector would)
                    self.flush()
                if done():
                    self.served += 1
                    return
                if time.perf_counter() >= end:
                    return
                os.sched_yield()
        finally:
            with node.lock:
                ch.borrowed = False
                if not ch.closed and self.channels.get(wid) is ch:
                    # Level-triggered: whatever arrived after the last read wakes the selector.
                    self._mute(wid, ch, False)
                    if ch.wants_write:  # the selector waits for room to write the rest
                        self._writers.add(ch)
                        self.wake()

    def _mute(self, wid: int, ch: NodeChannel, mute: bool) -> bool:
        """Stop (or resume) the selector's watching of ``ch`` (node.lock held); False if it
        is not registered."""
        ep = self._epoll
        if ep is not None:  # the key stays; only the kernel's interest changes
            try:
                ep.modify(ch.fileno, 0 if mute else select.EPOLLIN)
            except (OSError, ValueError):
                return False
            return True
        try:
            if mute:
                self.selector.unregister(ch.sock)
            else:
                self.selector.register(ch.sock, selectors.EVENT_READ, (wid, ch))
        except (KeyError, ValueError, OSError):
            return False
        return True

    def _serve(self, wid: int, ch: NodeChannel) -> bool:
        """Read and dispatch what ``ch`` has (node.lock held); False if it is closed now."""
        node = self.node
        try:
            msgs = ch.receive()
        except FrameError as e:  # a broken or hostile peer: drop only it
            print(f"rtml node: closing connection {wid}: {e}", file=sys.stderr)  # noqa: T201
            msgs = None
        if msgs is None:
            self._close(wid, ch)
            return False
        try:
            if wid < 0:
                for m in msgs:
                    node.cluster.on_link_message(wid, m)
            else:
                for m in msgs:
                    dispatch(node, self, wid, m)
        except Exception:  # a malformed message: drop that peer, not the node
            print(  # noqa: T201
                f"rtml node: closing connection {wid} after a bad message:\n"
                f"{traceback.format_exc()}",
                file=sys.stderr,
            )
            self._close(wid, ch)
            return False
        return True

    # ------------------------------------------------------------------ the selector thread
    def _loop(self) -> None:
        node = self.node
        sel = self.selector
        last_stall_check = 0.0
        memory = self.memory
        while not self._stopping:
            try:
                events = sel.select(0.2)
            except OSError:
                if self._stopping:
                    return
                raise
            usage = memory.sample(time.monotonic()) if memory is not None else None
            with node.lock:
                if usage is not None:
                    memory.act(node, usage, time.monotonic())  # type: ignore[union-attr]
                for key, mask in events:
                    ch = key.data
                    if ch is None:
                        try:
                            while os.read(self._wake_r, 4096):
                                pass
                        except (BlockingIOError, OSError):
                            pass
                        continue
                    wid, ch = ch
                    if ch.borrowed:  # another thread serves it for now (serve_worker)
                        continue
                    if mask & selectors.EVENT_WRITE and ch.flush() is False:
                        self._writers.discard(ch)
                    if mask & selectors.EVENT_READ:
                        self._serve(wid, ch)
                while self._soon:
                    self._soon.popleft()()
                now = time.monotonic()
                if now - last_stall_check > 0.05:
                    last_stall_check = now
                    node.check_stalls()
                self.flush()
                self._update_registrations()
                for fn in self.on_idle:
                    fn()

    def _update_registrations(self) -> None:
        sel = self.selector
        while self._to_register:
            wid, ch = self._to_register.pop()
            if not ch.closed:
                sel.register(ch.sock, selectors.EVENT_READ, (wid, ch))
        for ch in list(self._writers):
            if ch.closed:
                self._writers.discard(ch)
                continue
            if ch.borrowed:  # muted while another thread serves it; see serve_worker
                continue
            want = selectors.EVENT_READ | (selectors.EVENT_WRITE if ch.wants_write else 0)
            try:
                key = sel.get_key(ch.sock)
            except (KeyError, ValueError):
                continue
            if key.events != want:
                sel.modify(ch.sock, want, key.data)
            if not ch.wants_write:
                self._writers.discard(ch)

    def _close(self, wid: int, ch: NodeChannel) -> None:
        try:
            self.selector.unregister(ch.sock)
        except (KeyError, ValueError):
            pass
        ch.close()
        self.channels.pop(wid, None)
        self._writers.discard(ch)
        self.dirty.discard(ch)
        if wid < 0:
            self.node.cluster.on_link_closed(wid)
            return
        f = self._log_files.pop(wid, None)
        if f is not None:
            f.close()
        proc = self.procs.pop(wid, None)
        how = "connection closed"
        output = None
        early = self._early.pop(wid, None)
        if proc is not None:
            try:
                code = proc.wait(timeout=2)
            except subprocess.TimeoutExpired:
                proc.kill()
                code = proc.wait()
            how = f"killed by signal {-code}" if code < 0 else f"exit code {code}"
            if early is not None and code not in (0, -signal.SIGKILL, -signal.SIGTERM):
                output = _tail(early)
        if early is not None:
            early.close()
        self.node.on_worker_exit(wid, how, output)

    def stop(self, timeout: float = 1.0) -> None:
        """Stop the thread, ask workers to exit, kill stragglers, reap every process."""
        with self.node.lock:
            self.node.closed = True
            for wid in list(self.channels):
                if wid > 0:  # workers and drivers; not our links to other nodes
                    self.send(wid, ("exit",))
            self.flush()
        self._stopping = True
        self.wake()
        if self.thread.is_alive() and threading.current_thread() is not self.thread:
            self.thread.join(timeout)
        import time

        deadline = time.monotonic() + timeout
        for proc in list(self.procs.values()):
            try:
                proc.wait(max(0.05, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.procs.clear()
        for f in self._early.values():
            f.close()
        self._early.clear()
        for ch in list(self.channels.values()):
            ch.close()
        self.channels.clear()
        for f in self._log_files.values():
            f.close()
        self._log_files.clear()
        self.selector.close()
        for fd in (self._wake_r, self._wake_w):
            try:
                os.close(fd)
            except OSError:
                pass


def _tail(f: Any, most: int = 16384) -> str:
    """The end of what a worker wrote to its start-up stderr file."""
    try:
        size = f.seek(0, os.SEEK_END)
        f.seek(max(0, size - most))
        return f.read().decode("utf-8", "replace")
    except (OSError, ValueError):
        return ""
