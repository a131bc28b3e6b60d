"""OMP_NUM_THREADS in workers follows each task's num_cpus (1 by default), as in Ray, so
numerical libraries do not start a thread per core in every worker; a value the user set
(in the environment or runtime_env) is left alone."""

from __future__ import annotations

import os

import pytest

import rtml


@rtml.remote
def omp():
    return os.environ.get("OMP_NUM_THREADS")


@rtml.remote
class Omp:
    def get(self):
        return os.environ.get("OMP_NUM_THREADS")


@pytest.fixture
def runtime(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    rtml.init(num_cpus=2)
    try:
        yield
    finally:
        rtml.shutdown()


def test_it_follows_num_cpus(runtime):
    assert rtml.get(omp.remote(), timeout=60) == "1"
    assert rtml.get(omp.options(num_cpus=2).remote(), timeout=60) == "2"
    assert rtml.get(omp.remote(), timeout=60) == "1"  # (also on a reused worker)
    assert rtml.get(omp.options(num_cpus=0.5).remote(), timeout=60) == "1"
    assert rtml.get(Omp.remote().get.remote(), timeout=60) == "1"
    task_env = {"env_vars": {"OMP_NUM_THREADS": "7"}}
    assert rtml.get(omp.options(runtime_env=task_env).remote(), timeout=60) == "7"


def test_a_value_the_user_set_is_kept(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    rtml.init(num_cpus=2)
    try:
        assert rtml.get(omp.options(num_cpus=2).remote(), timeout=60) == "3"
        assert rtml.get(omp.remote(), timeout=60) == "3"
    finally:
        rtml.shutdown()
