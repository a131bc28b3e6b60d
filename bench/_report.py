"""Tables, ratios and the bar chart of the comparison (used by compare.py and rl_loop.py)."""

from __future__ import annotations

import json
import math
import os
from typing import Any

LOWER_IS_BETTER = {"ms", "MB", "bytes"}


def fmt(x: float | None) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    ax = abs(x)
    if ax >= 100:
        return f"{x:,.0f}"
    if ax >= 1:
        return f"{x:.2f}"
    return f"{x:.3g}"


def git_head() -> str | None:
    """This checkout's commit, marked when ``src`` has uncommitted changes (for the figures'
    provenance)."""
    import subprocess

    here = os.path.dirname(os.path.abspath(__file__))
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=here,
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "../src"],
            cwd=here,
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
        return out.stdout.strip() + (" (src modified)" if dirty.stdout.strip() else "")
    except OSError:
        return None


def machine() -> dict[str, Any]:
    """What ran a benchmark, for its JSON: CPUs, Python, platform, commit."""
    import platform

    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "git": git_head(),
    }


def write_json_atomic(path: str, doc: Any) -> None:
    """Write ``path`` via ``path.tmp`` and a rename, so a reader never sees half a file."""
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(doc, f, indent=2)
        f.write("\n")
    os.replace(tmp, path)


def table(rows: list[dict], frameworks: list[str]) -> str:
    """rows: {"workload", "unit", "values": {fw: {"mean", "std", "n"}}} -> aligned text."""
    wl = max([len(r["workload"]) for r in rows] + [8])
    cols = [f"{'workload':<{wl}}  {'unit':<10}"] + [f"{fw:>22}" for fw in frameworks]
    lines = ["  ".join(cols), "-" * (wl + 12 + 24 * len(frameworks))]
    for r in rows:
        cells = [f"{r['workload']:<{wl}}  {r['unit']:<10}"]
        for fw in frameworks:
            v = r["values"].get(fw)
            if v is None:
                cells.append(f"{'n/a':>22}")
            elif v.get("status"):
                cells.append(f"{v['status']:>22}")
            else:
                cells.append(f"{fmt(v['mean']) + ' ± ' + fmt(v['std']):>22}")
        lines.append("  ".join(cells))
    return "\n".join(lines)


def ratios(rows: list[dict], base: str, peers: list[str]) -> tuple[str, list[dict]]:
    """rtml/peer per row (value ratio), with which side is better spelled out."""
    out = []
    wl = max([len(r["workload"]) for r in rows] + [8])
    lines = [
        f"{'workload':<{wl}}  " + "  ".join(f"{base + '/' + p:>24}" for p in peers),
        "-" * (wl + 2 + 26 * len(peers)),
    ]
    for r in rows:
        b = r["values"].get(base)
        cells = []
        entry = {"workload": r["workload"], "unit": r["unit"], "ratios": {}}
        for p in peers:
            v = r["values"].get(p)
            if not b or not v or b.get("status") or v.get("status") or not v["mean"]:
                cells.append(f"{'n/a':>24}")
                continue
            ratio = b["mean"] / v["mean"]
            entry["ratios"][p] = ratio
            better = (ratio < 1) if r["unit"] in LOWER_IS_BETTER else (ratio > 1)
            word = "better" if better else "worse"
            # How many times better or worse rtml is, whichever direction is "better".
            speedup = (1 / ratio if ratio else math.inf) if r["unit"] in LOWER_IS_BETTER else ratio
            times = speedup if better else (1 / speedup if speedup else math.inf)
            gain_txt = f"{times:.2f}x"
            cells.append(f"{fmt(ratio) + ' (' + gain_txt + ' ' + word + ')':>24}")
        out.append(entry)
        lines.append(f"{r['workload']:<{wl}}  " + "  ".join(cells))
    return "\n".join(lines), out


def chart(rows: list[dict], frameworks: list[str], path: str, title: str) -> str | None:
    """Grouped bars (one group per workload, one bar per framework), log-scale y."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed (run bench/setup_peers.sh)"
    n = len(frameworks)
    width = 0.8 / max(n, 1)
    fig, ax = plt.subplots(figsize=(max(10, 1.3 * len(rows) + 3), 6.5))
    for i, fw in enumerate(frameworks):
        xs, ys, es = [], [], []
        for j, r in enumerate(rows):
            v = r["values"].get(fw)
            if v and not v.get("status") and v["mean"] and v["mean"] > 0:
                xs.append(j - 0.4 + width * (i + 0.5))
                ys.append(v["mean"])
                es.append(min(v["std"], v["mean"] * 0.99))
        ax.bar(xs, ys, width, yerr=es, label=fw, capsize=2)
    ax.set_yscale("log")
    ax.set_xticks(range(len(rows)))
    labels = []
    for r in rows:
        hint = "lower is better" if r["unit"] in LOWER_IS_BETTER else "higher is better"
        labels.append(f"{r['workload']}\n[{r['unit']}; {hint}]")
    ax.set_xticklabels(labels, rotation=35, ha="right", fontsize=8)
    ax.set_title(title, fontsize=10)
    ax.grid(axis="y", which="both", alpha=0.3)
    ax.legend(loc="upper right", ncol=len(frameworks), fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return None
