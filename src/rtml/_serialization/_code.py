"""Pickling functions and classes by value with their source file kept.

cloudpickle 3.1.3 writes every code object's file name as ``"<dynamic-code>"`` (for
deterministic payloads). A task's remote traceback then cannot show its source lines, which is
what users read first. This pickler keeps the real file name: a worker on the same machine
(or with the same checkout) finds the lines again. Other cloudpickle versions are unaffected.
"""

from __future__ import annotations

import io
import types
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
