"""``rtml.util.dask``: Dask graphs (arrays, dataframes, delayed, persist) computed by rtml tasks,
Dask's own ``get`` conformance tests, errors, nested keys and the config switch."""

from __future__ import annotations

import pytest

dask = pytest.importorskip("dask")
da = pytest.importorskip("dask.array")
dd = pytest.importorskip("dask.dataframe")
np = pytest.importorskip("numpy")
pd = pytest.importorskip("pandas")

from dask.utils_test import GetFunctionTestMixin, add, inc  # noqa: E402

import rtml  # noqa: E402
from rtml.util.dask import (  # noqa: E402
    disable_dask_on_ray,
    enable_dask_on_ray,
    ray_dask_get,
    ray_dask_get_sync,
    rtml_dask_get,
)

pytestmark = pytest.mark.usefixtures("shared_runtime")


class TestDaskGetProtocol(GetFunctionTestMixin):
    """Dask's own tests of the ``get`` protocol, against ray_dask_get."""

    get = staticmethod(ray_dask_get)


class TestDaskGetProtocolSync(GetFunctionTestMixin):
    get = staticmethod(ray_dask_get_sync)

    def test_get_stack_limit(self):  # one task at a time: a shorter chain keeps it quick
        d = {f"x{i + 1}": (inc, f"x{i}") for i in range(300)}
        d["x0"] = 0
        assert self.get(d, "x300") == 300


def test_array_reduction_matches_numpy():
    rs = np.random.RandomState(0)
    a = rs.random_sample((300, 300))
    x = da.from_array(a, chunks=(100, 100))
    got = (x + x.T).sum().compute(scheduler=ray_dask_get)
    assert got == pytest.approx((a + a.T).sum())
    m = (x @ x.T)[::7, 3:50].compute(scheduler=rtml_dask_get)
    np.testing.assert_allclose(m, (a @ a.T)[::7, 3:50])


def test_dataframe_groupby_matches_pandas():
    df = pd.DataFrame({"k": np.arange(2000) % 7, "v": np.arange(2000.0), "w": np.arange(2000) % 3})
    ddf = dd.from_pandas(df, npartitions=6)
    got = ddf.groupby("k").v.mean().compute(scheduler=ray_dask_get).sort_index()
    pd.testing.assert_series_equal(got, df.groupby("k").v.mean().sort_index())
    agg = ddf.groupby(["k", "w"]).agg({"v": ["sum", "count"]}).compute(scheduler=ray_dask_get)
    want = df.groupby(["k", "w"]).agg({"v": ["sum", "count"]})
    pd.testing.assert_frame_equal(agg.sort_index(), want.sort_index())


def test_delayed_and_nested_keys():
    @dask.delayed
    def double(v):
        return 2 * v

    parts = [double(i) for i in range(5)]
    total = dask.delayed(sum)(parts)
    assert dask.compute(total, parts[:2], scheduler=ray_dask_get) == (20, [0, 2])
    d = {"a": 1, "b": (inc, "a"), "c": (add, "a", "b"), "e": "c"}
    assert ray_dask_get(d, [["a", ["b"]], "e"]) == ((1, (2,)), 3)


def test_persist_keeps_working_and_refs_feed_later_graphs():
    x = da.arange(100, chunks=10)
    (y,) = dask.persist(x * 2, scheduler=ray_dask_get)
    assert int(y.sum().compute(scheduler=ray_dask_get)) == 9900
    d = {"a": (inc, 1), "b": (add, "a", 10)}
    refs = ray_dask_get(d, ["a", "b"], ray_persist=True)
    assert all(isinstance(r, rtml.ObjectRef) for r in refs)
    assert rtml.get(list(refs), timeout=60) == [2, 12]
    # A graph whose data are ObjectRefs reads them in the workers, also where Dask's
    # optimizer inlined them into the tasks' arguments.
    assert ray_dask_get({"p": refs[1], "q": (inc, "p")}, "q") == 13
    assert ray_dask_get({"q": (add, (inc, refs[0]), [refs[1]][0])}, "q") == 15
    (z,) = dask.persist(x + 1, scheduler=ray_dask_get, ray_persist=True)
    assert all(isinstance(v, rtml.ObjectRef) for v in dict(z.__dask_graph__()).values())
    assert int(z.sum().compute(scheduler=ray_dask_get)) == 5050


class Boom(ValueError):
    pass


def _explode(v):
    raise Boom(f"no {v}")


def test_errors_keep_their_type():
    d = {"a": 1, "b": (_explode, "a"), "c": (inc, "b")}
    with pytest.raises(Boom, match="no 1"):
        ray_dask_get(d, "c")
    with pytest.raises(ValueError, match="no 1"):
        ray_dask_get_sync(d, ["a", "c"])
    x = da.ones(10, chunks=5).map_blocks(_explode, dtype=float)
    with pytest.raises(Boom):
        x.compute(scheduler=ray_dask_get)


def test_bad_arguments_are_refused():
    with pytest.raises(KeyError):
        ray_dask_get({"a": 1}, ["a", "zz"])
    with pytest.raises(TypeError, match="Dask graph"):
        ray_dask_get(42, "a")
    with pytest.raises(ValueError, match="timeout"):
        ray_dask_get({"a": 1}, "a", timeout=-1)
    with pytest.raises(RuntimeError, match="cycle"):
        ray_dask_get({"a": (inc, "b"), "b": (inc, "a")}, "a")


def test_remote_args_and_no_fusion_give_the_same_answer():
    x = da.ones((40, 40), chunks=10)
    e = (x + 1).sum()
    assert e.compute(scheduler=ray_dask_get, fuse=False) == 3200
    assert e.compute(scheduler=ray_dask_get, ray_remote_args={"num_cpus": 0.5}) == 3200


def test_enable_and_disable_set_the_default_scheduler():
    with enable_dask_on_ray():
        assert dask.config.get("scheduler") is ray_dask_get
        assert dask.config.get("dataframe.shuffle.method") == "tasks"
        assert int(da.arange(10, chunks=3).sum().compute()) == 45
    assert dask.config.get("scheduler", None) is not ray_dask_get
    enable_dask_on_ray(shuffle=None)
    try:
        assert dask.config.get("scheduler") is ray_dask_get
    finally:
        disable_dask_on_ray()
    assert dask.config.get("scheduler") is None


def test_without_dask_the_import_error_names_the_extra():
    import subprocess
    import sys

    code = (
        "import sys\n"
        "sys.modules['dask'] = None\n"
        "try:\n"
        "    import rtml.util.dask\n"
        "except ImportError as e:\n"
        "    print(e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "pip install 'rtml[frontends]'" in out.stdout
