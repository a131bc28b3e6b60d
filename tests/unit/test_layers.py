"""The floors of rtml: every import under ``src/rtml`` looks down, never up or sideways.

Every module stands on one floor (``FLOORS``; a module takes the floor of the longest name
listed that is it or contains it). An import is allowed when it names a module of the same
floor or of a lower one, with two more rules:

* ``sideways``: the node (``_node``) and the worker (``_worker``) are two processes on one floor;
  neither imports the other.
* ``public-only``: ``util`` and the real-time ML subpackages stand on rtml's public API only
  (no module whose name has a component starting with ``_``), apart from their own modules.

Every import counts: top-level ones, those inside functions and those under ``TYPE_CHECKING``.
``EXCEPTIONS`` lists today's breaks, one ``(importer, imported)`` pair each; it only shrinks:
a pair that no longer occurs fails the test too, so that whoever mends one crosses it off. The
floors are drawn, with the reason for each, in ``docs/architecture.md``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import rtml

SRC = Path(rtml.__file__).parent

# floor: (name, module prefixes). Lower floors are imported by higher ones, never the reverse.
FLOOR_TABLE: list[tuple[str, list[str]]] = [
    ("vocabulary", ["rtml.exceptions", "rtml._serialization", "rtml._protocol"]),
    (
        "leaves",
        [
            "rtml._object_store",
            "rtml._control",
            "rtml._scheduler",
            "rtml._transport",
            "rtml._checkpoint",
            "rtml._launch",
        ],
    ),
    # what every process that holds ObjectRefs runs: the driver and every worker
    (
        "client core",
        [
            "rtml._runtime._refs",
            "rtml._runtime._payload",
            "rtml._runtime._client",
            "rtml._runtime._context",
            "rtml._runtime._async",
        ],
    ),
    ("node / worker", ["rtml._node", "rtml._worker"]),
    ("runtime", ["rtml._runtime"]),
    ("observability", ["rtml._observability"]),
    ("dashboard", ["rtml.dashboard"]),
    # the layers that start a process and wire the floors below together
    (
        "process",
        ["rtml._api", "rtml._node.__main__", "rtml._worker.__main__", "rtml._control.__main__"],
    ),
    ("public API", ["rtml", "rtml.actor", "rtml.cloudpickle", "rtml.dag", "rtml.testing"]),
    (
        "users of the public API",
        [
            "rtml.util",
            "rtml.cli",
            "rtml.__main__",
            "rtml._chaos",
            "rtml.stream",
            "rtml.online",
            "rtml.serve",
            "rtml.rl",
        ],
    ),
]
FLOORS: dict[str, int] = {p: i for i, (_, ps) in enumerate(FLOOR_TABLE) for p in ps}
SIDEWAYS = [("rtml._node", "rtml._worker")]
PUBLIC_ONLY = ["rtml.util", "rtml.stream", "rtml.online", "rtml.serve", "rtml.rl"]

# Today's breaks. Each later step of issue 18 crosses some off; the list ends empty.
EXCEPTIONS: set[tuple[str, str]] = {
    ("rtml.util.scheduling_strategies", "rtml._scheduler._strategy"),
    ("rtml.util.state", "rtml._observability._listing"),
    # A face of the runtime's placement-group calls (the current client's pg_* methods).
    ("rtml.util.placement_group", "rtml._runtime._context"),
}


def _within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def floor_of(module: str, floors: dict[str, int] = FLOORS) -> int:
    best = max((p for p in floors if _within(module, p)), key=len, default=None)
    if best is None:
        raise AssertionError(f"{module} stands on no floor: add it to FLOOR_TABLE")
    return floors[best]


def modules_of(src: Path) -> dict[str, Path]:
    """``{dotted module name: path}`` of every module of the package in ``src``."""
    out = {}
    for path in sorted(src.rglob("*.py")):
        parts = [src.name, *path.relative_to(src).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def imports_of(module: str, path: Path, known: dict[str, Path]) -> list[tuple[int, str]]:
    """``(line, imported module)`` for every import in the file, wherever it stands."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            for a in node.names:  # ``from pkg import module`` imports the module
                sub = f"{mod}.{a.name}"
                out.append((node.lineno, sub if sub in known else mod))
    return out


def violations(
    src: Path,
    floors: dict[str, int] = FLOORS,
    names: list[str] | None = None,
) -> list[tuple[str, str, int, str]]:
    """``(importer, imported, line, rule)`` for every import that breaks a floor rule."""
    names = names or [n for n, _ in FLOOR_TABLE]
    known = modules_of(src)
    top = src.name
    out = []
    for module, path in known.items():
        mine = floor_of(module, floors)
        for line, target in imports_of(module, path, known):
            if not _within(target, top) or _within(target, module):
                continue
            theirs = floor_of(target, floors)
            rule = None
            if theirs > mine:
                rule = f"up: {names[mine]} (floor {mine}) imports {names[theirs]} (floor {theirs})"
            for a, b in SIDEWAYS:
                for x, y in ((a, b), (b, a)):
                    if _within(module, x) and _within(target, y):
                        rule = f"sideways: {x} imports {y}"
            for p in PUBLIC_ONLY:
                if (
                    _within(module, p)
                    and not _within(target, p)
                    and any(c.startswith("_") for c in target.split(".")[1:])
                ):
                    rule = f"public-only: {p} imports the private {target}"
            if rule:
                out.append((module, target, line, rule))
    return out


def _report(found: list[tuple[str, str, int, str]]) -> str:
    return "\n".join(f"  {m} line {line} imports {t}: {rule}" for m, t, line, rule in found)


def test_every_module_stands_on_a_floor():
    for module in modules_of(SRC):
        floor_of(module)


def test_no_import_goes_up_a_floor_or_sideways():
    found = violations(SRC)
    new = [v for v in found if (v[0], v[1]) not in EXCEPTIONS]
    assert not new, "imports that break the floors (see docs/architecture.md):\n" + _report(new)


def test_the_exception_list_only_holds_breaks_that_still_occur():
    occurring = {(m, t) for m, t, _, _ in violations(SRC)}
    stale = sorted(EXCEPTIONS - occurring)
    assert not stale, f"mended: cross these off EXCEPTIONS in {__file__}: {stale}"


def test_the_check_catches_an_import_up_sideways_and_private(tmp_path):
    fake = tmp_path / "rtml"
    for pkg in ("_protocol", "_node", "_worker", "_runtime", "util"):
        (fake / pkg).mkdir(parents=True)
        (fake / pkg / "__init__.py").write_text("")
    (fake / "__init__.py").write_text("")
    (fake / "_protocol" / "_ids.py").write_text(
        "def f():\n    from rtml._runtime import _driver\n"
    )  # up, inside a function
    (fake / "_runtime" / "_driver.py").write_text("from rtml._protocol import _ids\n")  # down
    (fake / "_node" / "_node.py").write_text("from .._worker import _worker\n")  # sideways
    (fake / "_worker" / "_worker.py").write_text("import rtml._protocol._ids\n")  # down
    (fake / "util" / "queue.py").write_text("from rtml._runtime._driver import x\n")  # private
    found = {(m, t, line, rule.split(":")[0]) for m, t, line, rule in violations(fake)}
    assert found == {
        ("rtml._protocol._ids", "rtml._runtime._driver", 2, "up"),
        ("rtml._node._node", "rtml._worker._worker", 1, "sideways"),
        ("rtml.util.queue", "rtml._runtime._driver", 1, "public-only"),
    }
