"""`rtml status` shows why a node's workers cannot start (the node reports it with its load)."""

from __future__ import annotations

from click.testing import CliRunner

from rtml._control import _client
from rtml._control._records import NodeInfo
from rtml.cli import _cluster


class _FakeControl:
    def __init__(self, *args: object) -> None:
        pass

    def __enter__(self) -> _FakeControl:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def list_nodes(self) -> list[NodeInfo]:
        return [
            NodeInfo("n-ok", 1, "127.0.0.1:1", {"CPU": 2.0}, available={"CPU": 2.0}),
            NodeInfo(
                "n-broken",
                2,
                "127.0.0.1:2",
                {"CPU": 2.0},
                available={"CPU": 2.0},
                load={"queued": 0, "worker_start_error": "3 start(s) failed\nImportError: x"},
            ),
        ]


def test_status_names_the_node_whose_workers_cannot_start(monkeypatch):
    monkeypatch.setattr(_client, "ControlClient", _FakeControl)
    monkeypatch.setattr("rtml._runtime._remote.resolve_address", lambda a: "127.0.0.1:9")
    monkeypatch.setattr(_cluster._auth, "find_token", lambda a: b"t")
    out = CliRunner().invoke(_cluster.status, ["--address", "127.0.0.1:9"])
    assert out.exit_code == 0, out.output
    lines = out.output.splitlines()
    broken = [i for i, line in enumerate(lines) if "n-broken" in line]
    assert broken
    assert "workers cannot start: 3 start(s) failed" in lines[broken[0] + 1]
    assert "ImportError: x" in lines[broken[0] + 2]
    assert "cannot start" not in "\n".join(lines[: broken[0]])
