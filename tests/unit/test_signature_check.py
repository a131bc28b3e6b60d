"""Arguments checked at ``.remote()`` against the function's signature (no processes)."""

from __future__ import annotations

import pytest

from rtml._runtime._signature import check_call, method_signatures, signature_of


def test_positional_counting_and_bind_agree():
    def f(a, b=1, *, c):
        return a, b, c

    s = signature_of(f)
    check_call(s, "f", (1,), {"c": 2})
    with pytest.raises(TypeError, match="'c'"):
        check_call(s, "f", (1, 2), {})  # a required keyword-only parameter is never counted
    with pytest.raises(TypeError, match=r"^f\(\): too many"):
        check_call(s, "f", (1, 2, 3), {"c": 0})


def test_anything_goes_for_star_args_and_unreadable_signatures():
    def g(*args, **kwargs):
        return args, kwargs

    assert signature_of(g) is None
    check_call(None, "x", (1, 2, 3), {"z": 1})

    def h(a, *rest):
        return a, rest

    s = signature_of(h)
    check_call(s, "h", (1, 2, 3, 4), {})
    with pytest.raises(TypeError):
        check_call(s, "h", (), {})


def test_methods_drop_self_but_not_for_static_and_class_methods():
    class K:
        def m(self, x):
            return x

        @staticmethod
        def s(y):
            return y

        @classmethod
        def c(cls, z):
            return z

        def anything(*args):
            return args

    sigs = method_signatures(K, ["m", "s", "c", "anything", "missing"])
    assert sorted(sigs) == ["c", "m", "s"]
    for name in ("m", "s", "c"):
        check_call(sigs[name], name, (1,), {})
        with pytest.raises(TypeError):
            check_call(sigs[name], name, (), {})
