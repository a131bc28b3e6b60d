"""The public API is pinned: what each public module exports is listed in ``exports.txt``.

A change to the public surface (a name added, renamed or dropped) must show up in a diff of that
file, so it is reviewed as an API change, not slipped in with an implementation (as Trio's
``test_exports.py`` keeps its API). After a deliberate change, rewrite the file with

    .venv/bin/python tests/unit/test_exports.py --update

Each public module declares ``__all__``; every name in it resolves; and a public-looking name
that rtml itself defines in the module is either exported or renamed with an underscore, so
``dir()``, ``from m import *`` and the docs agree.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import sys
import types
from pathlib import Path

import pytest

import rtml

PINNED = Path(__file__).with_name("exports.txt")

# Modules whose names users import. Subpackages' private modules (a leading underscore anywhere
# in the dotted path) are not public; tests, benchmarks and the CLI's entry point are not either.
_ROOTS = ("rtml",)
_NOT_PUBLIC = {"rtml.__main__", "rtml.cli.__main__"}


def public_modules() -> list[str]:
    names = ["rtml"]
    for info in pkgutil.walk_packages(rtml.__path__, "rtml."):
        parts = info.name.split(".")
        if any(p.startswith("_") for p in parts) or info.name in _NOT_PUBLIC:
            continue
        names.append(info.name)
    return sorted(names)


def _importable(name: str) -> types.ModuleType | None:
    try:
        return importlib.import_module(name)
    except ImportError as e:
        # An optional extra that is not installed: the module says which one to install.
        if "pip install" in str(e) or "rtml[" in str(e):
            return None
        raise


def exports() -> list[str]:
    lines = []
    for name in public_modules():
        mod = _importable(name)
        if mod is None:
            continue
        for export in sorted(getattr(mod, "__all__", ())):
            lines.append(f"{name}: {export}")
    return lines


@pytest.mark.parametrize("name", public_modules())
def test_public_module_declares_and_resolves_all(name: str) -> None:
    mod = _importable(name)
    if mod is None:
        pytest.skip(f"{name} needs an optional extra")
    assert hasattr(mod, "__all__"), f"{name} has no __all__: declare what it exports"
    listed = list(mod.__all__)
    assert len(listed) == len(set(listed)), f"{name}.__all__ lists a name twice"
    missing = [n for n in listed if not hasattr(mod, n)]
    assert not missing, f"{name}.__all__ names {missing}, which the module does not have"


@pytest.mark.parametrize("name", public_modules())
def test_defined_public_names_are_exported(name: str) -> None:
    mod = _importable(name)
    if mod is None:
        pytest.skip(f"{name} needs an optional extra")
    exported = set(getattr(mod, "__all__", ()))
    stray = []
    for attr, value in vars(mod).items():
        if attr.startswith("_") or attr in exported or isinstance(value, types.ModuleType):
            continue
        if not (inspect.isclass(value) or inspect.isfunction(value)):
            continue
        if getattr(value, "__module__", "") == name:
            stray.append(attr)
    assert not stray, (
        f"{name} defines public names {sorted(stray)} that are not in its __all__: "
        "export them or give them a leading underscore"
    )


def test_exports_are_pinned() -> None:
    now = exports()
    pinned = PINNED.read_text().splitlines() if PINNED.exists() else []
    added = sorted(set(now) - set(pinned))
    removed = sorted(set(pinned) - set(now))
    assert (added, removed) == ([], []), (
        f"the public API changed: added {added[:20]}{' ...' if len(added) > 20 else ''}, "
        f"removed {removed[:20]}{' ...' if len(removed) > 20 else ''}. If that is deliberate, "
        "run `.venv/bin/python tests/unit/test_exports.py --update` and commit exports.txt"
    )


if __name__ == "__main__":
    if sys.argv[1:] != ["--update"]:
        sys.exit("usage: python tests/unit/test_exports.py --update")
    PINNED.write_text("\n".join(exports()) + "\n")
    print(f"wrote {PINNED}")  # noqa: T201
