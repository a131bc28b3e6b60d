"""``rtml serve run module:app`` serves until Ctrl-C, then leaves nothing running."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import textwrap

import httpx
import psutil

from conftest import wait_for


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _answer(url: str) -> str | None:
    try:
        r = httpx.get(url, timeout=2)
    except httpx.HTTPError:
        return None
    return r.text if r.status_code == 200 else None


def test_serve_run_serves_until_interrupted(tmp_path):
    (tmp_path / "hello_app.py").write_text(
        textwrap.dedent("""
        from rtml import serve

        @serve.deployment
        def hello(request):
            return "hello from the cli"

        app = hello.bind()
    """)
    )
    port = _free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "rtml",
            "serve",
            "run",
            "hello_app:app",
            "--port",
            str(port),
            "--route-prefix",
            "/hi",
        ],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        text = wait_for(
            lambda: _answer(f"http://127.0.0.1:{port}/hi") or proc.poll() is not None,
            timeout=60,
            what="the CLI's application to answer",
        )
        assert text == "hello from the cli", proc.stderr.read() if proc.poll() else text
        children = psutil.Process(proc.pid).children(recursive=True)
        assert children  # replicas, proxies, the controller
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        assert "stopping" in out
        wait_for(
            lambda: (
                not any(c.is_running() and c.status() != psutil.STATUS_ZOMBIE for c in children)
            ),
            timeout=30,
            what="serve's processes to end",
        )
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=30)


def test_serve_run_rejects_a_bad_target(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "rtml", "serve", "run", "no_such_module:app"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode != 0
    assert "cannot import 'no_such_module'" in out.stderr


def test_serve_on_a_cluster_outlives_run_and_status_and_shutdown_reach_it(tmp_path, monkeypatch):
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    monkeypatch.setenv("RTML_STATE_DIR", str(state))
    for var in ("RTML_ADDRESS", "RTML_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    (tmp_path / "hello_app.py").write_text(
        textwrap.dedent("""
        from rtml import serve

        @serve.deployment
        def hello(request):
            return "hello from the cluster"

        app = hello.bind()
    """)
    )

    def rtml_cli(*args):
        return subprocess.run(
            [sys.executable, "-m", "rtml", *args],
            capture_output=True,
            text=True,
            timeout=120,
            env=env,
            cwd=tmp_path,
        )

    out = rtml_cli("start", "--head", "--port", "0", "--num-cpus", "2")
    assert out.returncode == 0, out.stderr
    try:
        address = re.search(r"control plane at (\S+),", out.stdout).group(1)
        port = _free_port()
        run = rtml_cli(
            "serve",
            "run",
            "hello_app:app",
            "--address",
            address,
            "--port",
            str(port),
            "--non-blocking",
        )
        assert run.returncode == 0, run.stderr
        assert _answer(f"http://127.0.0.1:{port}/") == "hello from the cluster"
        status = rtml_cli("serve", "status", "--address", address)
        assert status.returncode == 0, status.stderr
        assert '"status": "RUNNING"' in status.stdout
        assert '"hello"' in status.stdout
        down = rtml_cli("serve", "shutdown", "-y", "--address", address)
        assert down.returncode == 0 and "shut down" in down.stdout, down.stderr  # noqa: PT018
        assert _answer(f"http://127.0.0.1:{port}/") is None
    finally:
        rtml_cli("stop")
