"""Arguments checked at ``.remote()``, as calling the function would check them (as Ray does).

A wrong call (an argument missing, one too many, an unknown keyword) raises ``TypeError`` in
the caller at once, instead of a task error later from the worker. The signature is read once
per function or method; a callable whose signature cannot be read is not checked.
"""

from __future__ import annotations

import inspect
from typing import Any

# A checked signature and the (least, most) positional arguments that fit it when no keyword
# is passed: the common call is checked by counting, without bind().
Check = tuple[inspect.Signature, int, int]


def signature_of(fn: Any, drop_first: bool = False) -> Check | None:
    """What calls are checked against; ``drop_first`` drops ``self``."""
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return None
    params = list(sig.parameters.values())
    if drop_first:
        if not params or params[0].kind not in (
            inspect.Parameter.POSITIONAL_ONLY,
            inspect.Parameter.POSITIONAL_OR_KEYWORD,
        ):
            return None  # (def m(*args): self arrives in args; nothing to check)
        sig = sig.replace(parameters=params[1:])
    if (
        all(
            p.kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
            for p in sig.parameters.values()
        )
        and len(sig.parameters) == 2
    ):
        return None  # (*args, **kwargs): anything goes
    return (sig, *_positional_bounds(sig))


def method_signatures(cls: type, names: Any) -> dict[str, Check]:
    """Signatures of an actor class's methods (without ``self``), by name."""
    out: dict[str, Check] = {}
    for name in names:
        try:
            static = inspect.getattr_static(cls, name)
        except AttributeError:
            continue
        if isinstance(static, staticmethod):
            sig = signature_of(static.__func__)
        elif isinstance(static, classmethod):
            sig = signature_of(getattr(cls, name))  # bound to the class: no cls parameter
        elif inspect.isfunction(static):
            sig = signature_of(static, drop_first=True)
        else:
            continue
        if sig is not None:
            out[name] = sig
    return out


def check_call(check: Check | None, name: str, args: tuple, kwargs: dict) -> None:
    """Raise TypeError if ``name(*args, **kwargs)`` does not fit ``check``."""
    if check is None:
        return
    sig, lo, hi = check
    if not kwargs and lo <= len(args) <= hi:
        return
    try:
        sig.bind(*args, **kwargs)
    except TypeError as e:
        raise TypeError(f"{name}(): {e}") from None


def _positional_bounds(sig: inspect.Signature) -> tuple[int, int]:
    """(least, most) positional arguments that fit when no keyword is passed; (1, 0) (never
    fits, so bind() decides) if a keyword-only parameter is required."""
    lo = hi = 0
    for p in sig.parameters.values():
        if p.kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD):
            hi += 1
            if p.default is p.empty:
                lo = hi
        elif p.kind == inspect.Parameter.VAR_POSITIONAL:
            hi = 1 << 30
        elif p.kind == inspect.Parameter.KEYWORD_ONLY and p.default is p.empty:
            return (1, 0)
    return (lo, hi)
