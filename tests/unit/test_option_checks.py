"""Option validation as Ray 2.60 does it (issue 20, item 6): ``max_calls``, the 0.0001
precision of resource amounts, ``memory=`` as a resource; and the size limit on what a remote
function or actor class pickles to, naming what its definition captures."""

from __future__ import annotations

import warnings

import pytest

import rtml
from rtml._scheduler import normalize_request
from rtml._serialization import _code
from rtml._serialization._code import check_size, dumps_code, largest_capture


def _f():
    return 1


@pytest.mark.parametrize("value", [-1, -5])
def test_max_calls_below_zero_is_a_value_error(value):
    with pytest.raises(ValueError, match="'max_calls' only accepts None, 0 or a positive"):
        rtml.remote(max_calls=value)(_f)
    with pytest.raises(ValueError, match="max_calls"):
        rtml.remote(_f).options(max_calls=value)


def test_max_calls_of_the_wrong_type_is_a_type_error_and_valid_ones_pass():
    with pytest.raises(TypeError, match="'max_calls' must be int or None"):
        rtml.remote(max_calls=1.5)(_f)
    for ok in (None, 0, 1, 10):
        rtml.remote(max_calls=ok)(_f)


def test_max_calls_is_not_an_actor_option():
    class A:
        pass

    with pytest.raises(ValueError, match="invalid option 'max_calls' for an actor class"):
        rtml.remote(max_calls=2)(A)


@pytest.mark.parametrize(
    ("options", "resource"),
    [
        ({"num_gpus": 0.00001}, "num_gpus"),
        ({"num_cpus": 0.00009}, "num_cpus"),
        ({"resources": {"sensor": 1e-5}}, "sensor"),
        ({"memory": 0.00001}, "memory"),
    ],
)
def test_amounts_finer_than_a_ten_thousandth_are_refused(options, resource):
    with pytest.raises(ValueError, match=f"precision .* resource {resource} cannot go beyond"):
        rtml.remote(**options)(_f)

    class A:
        pass

    with pytest.raises(ValueError, match=r"cannot go beyond 0\.0001"):
        rtml.remote(**options)(A)


def test_amounts_at_ray_precision_pass():
    rtml.remote(num_gpus=0.0001)(_f)
    rtml.remote(num_gpus=0.00015)(_f)  # truncated to one unit, as in Ray
    rtml.remote(num_cpus=0)(_f)


def test_memory_is_a_resource_of_the_request():
    assert normalize_request(1, 0, None, memory=2e9) == {"CPU": 1.0, "memory": 2e9}
    assert normalize_request(1, 0, None, memory=0) == {"CPU": 1.0}
    with pytest.raises(TypeError, match="'memory'"):
        normalize_request(1, 0, None, memory="1GB")
    with pytest.raises(ValueError, match="memory"):
        normalize_request(1, 0, None, memory=-1)
    with pytest.raises(ValueError, match="memory"):
        rtml.remote(memory=-1)(_f)


# ---------------------------------------------------------------- pickled size
_BIG_GLOBAL = b"g" * (11 * 1024 * 1024)


def test_largest_capture_names_a_global_a_closure_variable_and_a_class_attribute():
    def uses_global():
        return len(_BIG_GLOBAL)

    what, value, size = largest_capture(uses_global)
    assert "'_BIG_GLOBAL'" in what
    assert value is _BIG_GLOBAL
    assert size > len(_BIG_GLOBAL)

    local = b"c" * 1000

    def closes_over():
        return len(local)

    assert "'local'" in largest_capture(closes_over)[0]

    class Holder:
        table = b"t" * 1000

        def m(self):
            return 1

    assert "Holder.table" in largest_capture(Holder)[0]


def test_a_large_function_warns_and_names_what_it_captures():
    def uses_global():
        return len(_BIG_GLOBAL)

    blob = dumps_code(uses_global)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check_size(blob, uses_global, "remote function", "m.uses_global")
    [w] = caught
    text = str(w.message)
    assert "The remote function m.uses_global is very large (11 MiB)" in text
    assert "'_BIG_GLOBAL'" in text
    assert "rtml.put()" in text
    assert w.filename == __file__  # points at the caller, not at rtml


def test_a_small_function_passes_silently():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_size(dumps_code(_f), _f, "remote function", "m._f")


def test_beyond_the_limit_it_is_refused_with_rays_message(monkeypatch):
    def uses_global():
        return len(_BIG_GLOBAL)

    blob = dumps_code(uses_global)
    monkeypatch.setenv("RTML_FUNCTION_SIZE_ERROR_THRESHOLD", str(10 * 1024 * 1024))
    with pytest.raises(ValueError) as info:
        check_size(blob, uses_global, "remote function", "m.uses_global")
    text = str(info.value)
    assert "The remote function m.uses_global is too large (11 MiB > " in text
    assert "FUNCTION_SIZE_ERROR_THRESHOLD=10 MiB)" in text
    assert "'_BIG_GLOBAL'" in text
    assert _code.FUNCTION_SIZE_ERROR_THRESHOLD == 10**8  # Ray's default limit
    monkeypatch.setenv("RTML_FUNCTION_SIZE_ERROR_THRESHOLD", "lots")
    with pytest.raises(ValueError, match="must be an integer"):
        check_size(blob, uses_global, "remote function", "m.uses_global")
