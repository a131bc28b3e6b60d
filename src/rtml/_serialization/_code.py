"""Pickling functions and classes by value with their source file kept.

cloudpickle 3.1.3 writes every code object's file name as ``"<dynamic-code>"`` (for
deterministic payloads). A task's remote traceback then cannot show its source lines, which is
what users read first. This pickler keeps the real file name: a worker on the same machine
(or with the same checkout) finds the lines again. Other cloudpickle versions are unaffected.
"""

from __future__ import annotations

import functools
import io
import os
import sys
import types
import warnings
from collections import ChainMap
from typing import Any

import cloudpickle

_ANONYMOUS = "<dynamic-code>"
# A private function of cloudpickle: if a version lacks it, plain cloudpickle is used.
_cloudpickle_code_reduce = getattr(getattr(cloudpickle, "cloudpickle", None), "_code_reduce", None)


def _code_reduce(code: types.CodeType) -> Any:
    fn, args = _cloudpickle_code_reduce(code)  # type: ignore[misc]
    if _ANONYMOUS in args:
        args = tuple(code.co_filename if a == _ANONYMOUS else a for a in args)
    return fn, args


class _Pickler(cloudpickle.Pickler):
    dispatch_table = ChainMap({types.CodeType: _code_reduce}, cloudpickle.Pickler.dispatch_table)


def dumps_code(obj: Any) -> bytes:
    """``cloudpickle.dumps(obj)`` for a function or class to run elsewhere."""
    if _cloudpickle_code_reduce is None:
        return cloudpickle.dumps(obj, protocol=5)
    buf = io.BytesIO()
    _Pickler(buf, protocol=5).dump(obj)
    return buf.getvalue()


# ---------------------------------------------------------------- size of what is pickled
# Ray's thresholds (ray_constants.FUNCTION_SIZE_WARN_THRESHOLD / _ERROR_THRESHOLD): a pickled
# function or actor class above 10 MB warns; from 100 MB on it is refused. The error threshold
# can be changed with $RTML_FUNCTION_SIZE_ERROR_THRESHOLD (or Ray's $FUNCTION_SIZE_ERROR_THRESHOLD).
FUNCTION_SIZE_WARN_THRESHOLD = 10**7
FUNCTION_SIZE_ERROR_THRESHOLD = 10**8
_MIB = 1024 * 1024


def _error_threshold() -> int:
    for var in ("RTML_FUNCTION_SIZE_ERROR_THRESHOLD", "FUNCTION_SIZE_ERROR_THRESHOLD"):
        raw = os.environ.get(var)
        if raw:
            try:
                return int(raw)
            except ValueError:
                raise ValueError(
                    f"${var} must be an integer number of bytes, got {raw!r}"
                ) from None
    return FUNCTION_SIZE_ERROR_THRESHOLD


def _names_used(code: types.CodeType) -> set[str]:
    """Global names a code object (and the functions and classes defined in it) refers to."""
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _names_used(const)
    return names


def _captured(obj: Any, seen: set[int], depth: int = 0) -> list[tuple[str, Any]]:
    """What pickling ``obj`` by value takes along: (description, value) pairs."""
    if id(obj) in seen or depth > 3:
        return []
    seen.add(id(obj))
    out: list[tuple[str, Any]] = []
    if isinstance(obj, functools.partial):
        for a in (obj.func, *obj.args):
            if isinstance(a, (types.FunctionType, type)):
                out += _captured(a, seen, depth)
            else:
                out.append(("an argument bound by functools.partial", a))
        return out
    if isinstance(obj, type):
        for key, value in vars(obj).items():
            if key.startswith("__") and key.endswith("__"):
                continue
            if isinstance(value, (staticmethod, classmethod)):
                value = value.__func__
            if isinstance(value, types.FunctionType):
                out += _captured(value, seen, depth + 1)
            elif not isinstance(value, (property, types.ModuleType)):
                out.append((f"the class attribute {obj.__name__}.{key}", value))
        init = vars(obj).get("__init__")
        if isinstance(init, types.FunctionType):
            out += _captured(init, seen, depth + 1)
        return out
    if not isinstance(obj, types.FunctionType):
        return out
    code = obj.__code__
    name = obj.__qualname__
    for var, cell in zip(code.co_freevars, obj.__closure__ or (), strict=False):
        try:
            value = cell.cell_contents
        except ValueError:  # an empty cell
            continue
        out.append((f"the variable {var!r} that {name} closes over", value))
        if isinstance(value, (types.FunctionType, type)):
            out += _captured(value, seen, depth + 1)
    g = obj.__globals__
    for var in sorted(_names_used(code)):
        if var in g:
            value = g[var]
            if isinstance(value, types.ModuleType):
                continue
            out.append((f"the global variable {var!r} that {name} uses", value))
            if isinstance(value, (types.FunctionType, type)):
                out += _captured(value, seen, depth + 1)
    for i, value in enumerate(obj.__defaults__ or ()):
        out.append((f"default argument {i + 1} of {name}", value))
    for key, value in (obj.__kwdefaults__ or {}).items():
        out.append((f"the default of keyword argument {key!r} of {name}", value))
    return out


def largest_capture(obj: Any) -> tuple[str, Any, int] | None:
    """The largest thing pickled along with ``obj``: (description, value, pickled bytes)."""
    best: tuple[str, Any, int] | None = None
    for what, value in _captured(obj, set()):
        if isinstance(value, (types.FunctionType, type)):
            continue  # their own captures are listed instead
        try:
            size = len(cloudpickle.dumps(value, protocol=5))
        except Exception:
            continue
        if best is None or size > best[2]:
            best = (what, value, size)
    return best


def check_size(blob: bytes, obj: Any, kind: str, name: str) -> None:
    """Warn when a pickled function or actor class is very large, refuse it beyond Ray's
    limit, naming the largest object its definition captures (as Ray, with that name added).

    Raises:
        ValueError: ``blob`` is at least the error threshold.
    """
    size = len(blob)
    if size <= FUNCTION_SIZE_WARN_THRESHOLD:
        return
    limit = _error_threshold()
    culprit = largest_capture(obj)
    captures = ""
    if culprit is not None and culprit[2] >= size // 10:
        what, value, csize = culprit
        captures = (
            f" Its definition captures {what} ({type(value).__name__}, "
            f"{csize // _MIB} MiB when pickled)."
        )
    advice = (
        " Check that its definition is not implicitly capturing a large array or other "
        "object in scope. Tip: use rtml.put() to put large objects in the object store and "
        "pass the ObjectRef as an argument."
    )
    if size < limit:
        warnings.warn(
            f"The {kind} {name} is very large ({size // _MIB} MiB).{captures}{advice}",
            UserWarning,
            stacklevel=_user_stacklevel(),
        )
        return
    raise ValueError(
        f"The {kind} {name} is too large ({size // _MIB} MiB > FUNCTION_SIZE_ERROR_THRESHOLD="
        f"{limit // _MIB} MiB).{captures}{advice}"
    )


def _user_stacklevel() -> int:
    """The stack level of the first frame outside rtml (where the user called .remote())."""
    frame = sys._getframe(1)
    level = 1
    while frame is not None and frame.f_globals.get("__name__", "").startswith("rtml."):
        frame = frame.f_back  # type: ignore[assignment]
        level += 1
    return level
