"""The run's figures: sampled while it runs, summarised at the end, drawn and printed.

Freshness is counted per learned sample: a sample learned first by version v (event time in
``(T[v-1], T[v]]``, T being the newest event time a version learned) is fresh when the first
response of version v or newer is served; event times inside a version are spread evenly
between its bounds (the events arrive at a constant rate).
"""

from __future__ import annotations

import json
import os
import statistics
from typing import Any

JSON_FIELDS = (
    "events_per_s",
    "requests_per_s",
    "freshness_p99_s",
    "serve_p99_ms",
    "failed_requests",
    "auc_continual_after_drift",
    "auc_frozen_after_drift",
)


def _stats(learner: Any) -> dict[str, Any] | None:
    try:
        return learner.get("stats", timeout=2.0)
    except Exception:  # the learner is being restarted (--chaos): no figure this round
        return None


def _auc(stats: dict[str, Any] | None) -> float | None:
    if stats is None or stats["position"] < 500:
        return None
    return round(float(stats["metrics"]["rolling ROCAUC"]), 4)


def sample(
    t: float, start: float, continual: Any, frozen: Any, registry: Any, results: list
) -> dict[str, Any] | None:
    """One point of every curve at ``t`` seconds after the start."""
    if t < 0:
        return None
    sc, sf = _stats(continual), _stats(frozen)
    recent = [r for r in results[-2000:] if r.sent >= results[-1].sent - 1.0] if results else []
    lat = sorted(r.latency_ms for r in recent if r.status == 200)
    return {
        "t": round(t, 2),
        "auc_continual": _auc(sc),
        "auc_frozen": _auc(sf),
        "learned": sc["position"] if sc else None,
        "version": registry.current(),
        "requests_per_s": len(recent),
        "p99_ms": round(lat[int(0.99 * (len(lat) - 1))], 2) if lat else None,
        "failed": sum(1 for r in results if r.status != 200),
        "drifts": [round(d["event_time"] - start, 2) for d in sc["drifts"]] if sc else [],
    }


def progress(row: dict[str, Any]) -> str:
    def f(x: Any, fmt: str) -> str:
        return "  -  " if x is None else format(x, fmt)

    return (
        f"t={row['t']:6.1f}s  learned {f(row['learned'], '>8')}  v{row['version']:<4} "
        f"AUC continual {f(row['auc_continual'], '.3f')} frozen "
        f"{f(row['auc_frozen'], '.3f')}  {row['requests_per_s']:>4} req/s  p99 "
        f"{f(row['p99_ms'], '.1f')} ms  failed {row['failed']}"
    )


def freshness(registry: Any, results: list) -> tuple[list[float], list[tuple[float, float]]]:
    """Freshness of every learned sample (seconds, weighted by repetition) and, per version,
    ``(time its first response was served, freshness of its newest sample)``."""
    first: dict[int, float] = {}
    for r in results:
        if r.status == 200 and r.version is not None:
            done = r.sent + r.latency_ms / 1e3
            if r.version not in first or done < first[r.version]:
                first[r.version] = done
    numbers = registry.versions()
    served_from: dict[int, float] = {}
    best = float("inf")
    for n in reversed(numbers):  # the first response of this version *or a newer one*
        best = min(best, first.get(n, float("inf")))
        served_from[n] = best
    samples: list[float] = []
    per_version: list[tuple[float, float]] = []
    newest_t, newest_pos = None, 0
    for n in numbers:
        meta = registry.get(n)
        t_v, pos = meta.event_time, meta.position
        if t_v is None or served_from[n] == float("inf"):
            continue
        if newest_t is not None and (t_v <= newest_t or pos <= newest_pos):
            continue  # replayed after a restart: nothing it learned is new
        lo = newest_t if newest_t is not None else t_v
        k = max(1, min(pos - newest_pos, 20))
        weight = max(1, (pos - newest_pos) // k)
        for j in range(k):
            e = lo + (t_v - lo) * (j + 1) / k
            samples.extend([served_from[n] - e] * weight)
        per_version.append((served_from[n], served_from[n] - t_v))
        newest_t, newest_pos = t_v, pos
    return samples, per_version


def _pct(xs: list[float], q: float) -> float | None:
    if not xs:
        return None
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def _mean(xs: list[float | None]) -> float | None:
    xs = [x for x in xs if x is not None]
    return round(statistics.fmean(xs), 4) if xs else None


def summarize(
    args: Any,
    world: Any,
    freeze_at: float,
    series: list[dict],
    results: list,
    registry: Any,
    run: Any,
    continual: Any,
    frozen: Any,
    chaos: list,
    setup_s: float,
    start: float,
) -> dict[str, Any]:
    ok = [r for r in results if r.status == 200]
    failed = [r for r in results if r.status != 200]
    lat = [r.latency_ms for r in ok]
    fresh, _ = freshness(registry, results)
    m = run.metrics()
    events = m["operators"]["events"]["out"]
    span = (max(r.sent for r in results) - min(r.sent for r in results)) if results else 0
    before = [
        row["auc_continual"] for row in series if world.drift_at - 4 <= row["t"] < world.drift_at
    ]
    tail = args.duration * 0.8
    after_c = [row["auc_continual"] for row in series if tail <= row["t"] <= args.duration]
    after_f = [row["auc_frozen"] for row in series if tail <= row["t"] <= args.duration]
    before_f = [
        row["auc_frozen"] for row in series if world.drift_at - 4 <= row["t"] < world.drift_at
    ]
    sc, sf = continual.get("stats", timeout=30), frozen.get("stats", timeout=30)
    auc_before, auc_after = _mean(before), _mean(after_c)
    return {
        "source": args.source,
        "chaos": chaos,
        "duration_s": args.duration,
        "setup_s": round(setup_s, 2),
        "events": events,
        "events_per_s": round(events / (args.duration + world.window), 1),
        "samples_learned": sc["position"],
        "requests": len(results),
        "requests_per_s": round(len(ok) / span, 1) if span else 0.0,
        "failed_requests": len(failed),
        "failures": sorted({r.error for r in failed})[:5],
        "serve_p50_ms": round(_pct(lat, 0.5) or 0, 2),
        "serve_p99_ms": round(_pct(lat, 0.99) or 0, 2),
        "freshness_p50_s": round(_pct(fresh, 0.5) or 0, 3),
        "freshness_p99_s": round(_pct(fresh, 0.99) or 0, 3),
        "versions": len(registry.versions()),
        "versions_served": len({r.version for r in ok}),
        "auc_continual_before_drift": auc_before,
        "auc_continual_after_drift": auc_after,
        "auc_frozen_before_drift": _mean(before_f),
        "auc_frozen_after_drift": _mean(after_f),
        "recovered": (
            auc_before is not None and auc_after is not None and auc_after >= auc_before - 0.02
        ),
        "auc_continual_whole_run": round(float(sc["metrics"]["ROCAUC"]), 4),
        "auc_frozen_whole_run": round(float(sf["metrics"]["ROCAUC"]), 4),
        "drift_at_s": world.drift_at,
        "freeze_at_s": freeze_at,
        "drifts_detected": [round(d["event_time"] - start, 2) for d in sc["drifts"]],
        "dataflow_restarts": run.restarts,
        "dead_letters": m["dead_letters"],
        "learner_counts": sc["counts"],
    }


def page_doc(
    series: list[dict], world: Any, freeze_at: float, chaos: list, summary: dict | None = None
) -> dict[str, Any]:
    """What the live page draws."""
    cols = ("t", "auc_continual", "auc_frozen", "version", "requests_per_s", "p99_ms", "failed")
    return {
        "series": {c: [row[c] for row in series] for c in cols},
        "marks": {
            "drift": world.drift_at,
            "freeze": freeze_at,
            "chaos": chaos,
            "duration": world.duration,
            "detected": series[-1]["drifts"] if series else [],
        },
        "summary": summary or {},
    }


def table(s: dict[str, Any]) -> str:
    rows = [
        ("events through the dataflow", f"{s['events']:,} ({s['events_per_s']:,.0f}/s)"),
        ("samples learned", f"{s['samples_learned']:,}"),
        (
            "requests served",
            f"{s['requests']:,} ({s['requests_per_s']:,.0f}/s), {s['failed_requests']} failed",
        ),
        ("serving latency p50 / p99", f"{s['serve_p50_ms']:.2f} / {s['serve_p99_ms']:.2f} ms"),
        ("freshness p50 / p99", f"{s['freshness_p50_s']:.3f} / {s['freshness_p99_s']:.3f} s"),
        ("model versions published / served", f"{s['versions']} / {s['versions_served']}"),
        (
            "AUC continual, before -> after drift",
            f"{s['auc_continual_before_drift']} -> {s['auc_continual_after_drift']}"
            + ("  (recovered)" if s["recovered"] else "  (NOT recovered)"),
        ),
        (
            "AUC frozen, before -> after drift",
            f"{s['auc_frozen_before_drift']} -> {s['auc_frozen_after_drift']}",
        ),
        (
            "drift at / first detected after it",
            f"{s['drift_at_s']:.1f} s / "
            + _first_after(s["drifts_detected"], s["drift_at_s"])
            + f" (ADWIN alarms in the run: {len(s['drifts_detected'])})",
        ),
    ]
    if s["chaos"]:
        rows.append(
            ("chaos", ", ".join(f"{c['what']} killed at {c['t']:.1f} s" for c in s["chaos"]))
        )
        rows.append(
            (
                "learner restarts / dataflow restarts",
                f"{s.get('learner_restarts', 0)} / {s['dataflow_restarts']}",
            )
        )
    w = max(len(k) for k, _ in rows)
    head = f"live recommender, {s['duration_s']:.0f} s, source: {s['source']}"
    return "\n".join([head, "-" * len(head)] + [f"{k:<{w}}  {v}" for k, v in rows])


def _first_after(detected: list[float], t: float) -> str:
    after = [d for d in detected if d >= t]
    return f"{after[0]:.1f} s" if after else "-"


def write(
    out: str, summary: dict[str, Any], series: list[dict], world: Any, freeze_at: float
) -> None:
    """summary.json, series.json and (with matplotlib) chart.png into ``out``."""
    with open(os.path.join(out, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2)
    with open(os.path.join(out, "series.json"), "w") as f:
        json.dump(series, f)
    summary["chart"] = chart(os.path.join(out, "chart.png"), series, world, freeze_at, summary)


def chart(
    path: str, series: list[dict], world: Any, freeze_at: float, summary: dict[str, Any]
) -> str | None:
    """AUC continual vs frozen, model version, requests/s and p99 over time; the path."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    t = [r["t"] for r in series]
    fig, (ax1, ax2, ax3) = plt.subplots(
        3, 1, figsize=(9, 8), sharex=True, height_ratios=[3, 1.3, 1.3]
    )
    ax1.plot(t, [r["auc_continual"] for r in series], label="continual (learns all the time)")
    ax1.plot(t, [r["auc_frozen"] for r in series], label="frozen (trained once, first 40 %)")
    ax1.set_ylabel("ROC AUC (last 5k samples)")
    ax1.legend(loc="lower left", fontsize=8)
    ax2.plot(t, [r["version"] for r in series], color="tab:green")
    ax2.set_ylabel("model version")
    ax3.plot(t, [r["requests_per_s"] for r in series], color="tab:gray", label="requests/s")
    ax3.set_ylabel("requests/s")
    ax3b = ax3.twinx()
    ax3b.plot(t, [r["p99_ms"] for r in series], color="tab:red", label="p99 ms")
    ax3b.set_ylabel("p99 ms", color="tab:red")
    ax3.set_xlabel("seconds since the first event")
    for ax in (ax1, ax2, ax3):
        ax.axvline(world.drift_at, color="black", linestyle="--", linewidth=1)
        ax.axvline(freeze_at, color="tab:orange", linestyle=":", linewidth=1)
        for c in summary["chaos"]:
            ax.axvline(c["t"], color="tab:red", linestyle="-.", linewidth=1)
    ax1.text(world.drift_at, ax1.get_ylim()[1], " drift", va="top", fontsize=8)
    ax1.text(freeze_at, ax1.get_ylim()[0], " frozen from here", va="bottom", fontsize=8)
    ax1.set_title(
        f"freshness p99 {summary['freshness_p99_s']:.2f} s, serving p99 "
        f"{summary['serve_p99_ms']:.1f} ms, {summary['failed_requests']} failed "
        "requests",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
