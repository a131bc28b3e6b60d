"""Workers that cannot start: a node whose worker processes die before they are up (here a
module on the workers' PYTHONPATH that shadows one the worker imports) stops respawning them
after a few tries and fails the work waiting for them with WorkerStartError, carrying what
the worker printed; without that, every get below hangs. The runtime stays up, and a later
probe brings workers back once the environment is fixed."""

from __future__ import annotations

import pytest

import rtml
from conftest import wait_for
from rtml._node import _workers

BROKEN = 'raise ImportError("this environment is broken on purpose")\n'


@pytest.fixture
def broken_env(tmp_path):
    (tmp_path / "json.py").write_text(BROKEN)  # the worker's entry point imports json
    rtml.init(num_cpus=1, runtime_env={"env_vars": {"PYTHONPATH": str(tmp_path)}})
    try:
        yield tmp_path
    finally:
        rtml.shutdown()


@rtml.remote
def one():
    return 1


@rtml.remote
class Counter:
    def get(self):
        return 0


def test_a_task_fails_with_the_workers_stderr_instead_of_hanging(broken_env):
    with pytest.raises(rtml.exceptions.WorkerStartError) as info:
        rtml.get(one.remote(), timeout=60)
    err = info.value
    assert isinstance(err, rtml.exceptions.RuntimeEnvSetupError)
    assert "this environment is broken on purpose" in err.stderr
    assert err.failures >= _workers.MAX_START_FAILURES
    assert "exit code 1" in str(err)
    # The runtime is still up: it answers, and more work fails the same way, promptly.
    assert rtml.cluster_resources()["CPU"] == 1
    with pytest.raises(rtml.exceptions.WorkerStartError):
        rtml.get([one.remote() for _ in range(5)], timeout=60)


def test_an_actor_dies_with_the_cause(broken_env):
    c = Counter.remote()
    with pytest.raises(rtml.exceptions.ActorDiedError, match="broken on purpose"):
        rtml.get(c.get.remote(), timeout=60)


def test_workers_come_back_when_the_environment_is_fixed(broken_env, monkeypatch):
    monkeypatch.setattr(_workers, "START_RETRY_S", 0.2)
    with pytest.raises(rtml.exceptions.WorkerStartError):
        rtml.get(one.remote(), timeout=60)
    (broken_env / "json.py").unlink()

    def runs():
        try:
            return rtml.get(one.remote(), timeout=60) == 1
        except rtml.exceptions.WorkerStartError:
            return False

    wait_for(runs, timeout=60, interval=0.3, what="a probe worker to start and run the task")
    assert rtml.get(Counter.remote().get.remote(), timeout=60) == 0


def test_start_up_output_of_a_healthy_worker_still_reaches_stderr(tmp_path, capfd):
    (tmp_path / "sitecustomize.py").write_text(
        "import sys\nsys.stderr.write('start-up note from sitecustomize\\n')\n"
    )
    rtml.init(num_cpus=1, runtime_env={"env_vars": {"PYTHONPATH": str(tmp_path)}})
    try:
        assert rtml.get(one.remote(), timeout=60) == 1
    finally:
        rtml.shutdown()
    assert "start-up note from sitecustomize" in capfd.readouterr().err
