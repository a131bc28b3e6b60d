"""The real-time ML subpackages stand on rtml's public API only, so they also run on Ray.

Every import in ``rtml/{stream,online,serve,rl}`` must name public modules (no component that
starts with an underscore), apart from the subpackage's own private modules.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import rtml

SRC = Path(rtml.__file__).parent
ML = ("stream", "online", "serve", "rl")


def _violations(pkg: str) -> list[str]:
    out = []
    for path in sorted((SRC / pkg).rglob("*.py")):
        rel = path.relative_to(SRC)
        depth = len(rel.parts) - 1  # package depth below rtml
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    # Resolve the relative import against the file's package.
                    base = list(rel.parts[:-1])[: max(0, depth - node.level + 1)]
                    mod = ".".join(["rtml", *base] + ([node.module] if node.module else []))
                else:
                    mod = node.module or ""
                names = [mod] + [f"{mod}.{a.name}" for a in node.names]
            for name in names:
                parts = name.split(".")
                if parts[0] != "rtml" or len(parts) < 2:
                    continue
                if len(parts) >= 2 and parts[1] == pkg:
                    continue  # its own modules, private ones included
                if any(p.startswith("_") for p in parts[1:]):
                    out.append(f"{rel}:{node.lineno} imports {name}")
    return out


@pytest.mark.parametrize("pkg", ML)
def test_ml_subpackage_imports_only_public_rtml(pkg):
    if not (SRC / pkg).is_dir():
        pytest.skip(f"rtml.{pkg} not built")
    assert _violations(pkg) == []


def test_the_layer_check_catches_a_private_import(tmp_path, monkeypatch):
    fake = tmp_path / "rtml"
    (fake / "stream").mkdir(parents=True)
    (fake / "stream" / "bad.py").write_text(
        "from rtml._runtime import _refs\nfrom .. import _api\nfrom ._own import x\n"
        "import rtml.util.engine\n"
    )
    monkeypatch.setattr(__import__(__name__), "SRC", fake)
    found = _violations("stream")
    assert len(found) == 3, found  # _runtime, _refs via from-import, and .._api
    assert all("bad.py" in f for f in found)
