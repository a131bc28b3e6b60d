"""rtml.online benchmark: quality parity with River, learning throughput, freshness.

    python bench/online.py --quick [--json PATH]

- parity: prequential Accuracy and ROC AUC of StandardScaler|LogisticRegression, a Hoeffding
  tree and a bagging ensemble on Phishing, Bananas and a synthetic concept-drift stream, rtml's
  OnlineState against river.evaluate.progressive_val_score (equal to the last digit).
- throughput: the same test-then-train loop in one process (the floor) against a Learner actor
  fed by an rtml.stream dataflow (IterableSource -> LearnerSink).
- freshness: events at a fixed rate into a learner publishing every 200 ms to a directory
  registry; an rtml.serve deployment holding a Subscriber answers HTTP requests at a fixed
  rate; freshness = time from an event's append to the first response (x-model-version) from a
  version whose newest event time is at or after it; "subscriber" holds the replica's own
  Subscriber.stats() (per version: first served prediction minus its newest event time).
Measures only; never asserts.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time

from river import datasets, ensemble, evaluate, linear_model, metrics, preprocessing, tree
from river.datasets import synth

import rtml
from rtml.online import DataParallelLearner, Learner, ModelRegistry, OnlineState, PartitionedLearner


def _models():
    return {
        "logreg": lambda: preprocessing.StandardScaler() | linear_model.LogisticRegression(),
        "hoeffding": lambda: tree.HoeffdingTreeClassifier(),
        "bagging": lambda: ensemble.BaggingClassifier(tree.HoeffdingTreeClassifier(),
                                                      n_models=3, seed=42),
    }


def parity(n: int) -> dict:
    data = {"phishing": list(datasets.Phishing()), "bananas": list(datasets.Bananas())[:n],
            "drift": list(synth.ConceptDriftStream(seed=7, position=n // 2, width=100).take(n))}
    rows = []
    for dname, d in data.items():
        for mname, mk in _models().items():
            acc, auc = list(evaluate.progressive_val_score(d, mk(),
                                                           metrics.Accuracy() + metrics.ROCAUC()))
            st = OnlineState(mk(), [metrics.Accuracy(), metrics.ROCAUC()], window=0)
            for x, y in d:
                st.learn(x, y)
            mv = st.metric_values()
            rows.append({"data": dname, "model": mname, "river_accuracy": acc.get(),
                         "rtml_accuracy": mv["Accuracy"], "river_auc": float(auc.get()),
                         "rtml_auc": float(mv["ROCAUC"]),
                         "equal": bool(mv["Accuracy"] == acc.get() and mv["ROCAUC"] == auc.get())})
    return {"parity_ok": all(r["equal"] for r in rows), "parity": rows}


def throughput(n: int) -> dict:
    base = list(datasets.Phishing())
    data = [base[i % len(base)] for i in range(n)]
    mk = _models()["logreg"]
    m, acc = mk(), metrics.Accuracy()
    t0 = time.perf_counter()
    for x, y in data:
        p = m.predict_one(x)
        if p is not None:
            acc.update(y, p)
        m.learn_one(x, y)
    floor = n / (time.perf_counter() - t0)
    from rtml.stream import Dataflow, IterableSource
    lr = Learner(mk(), [metrics.Accuracy()], window=0)
    lr.get("position")  # actor up
    flow = Dataflow("online-bench")
    flow.source(IterableSource(data)).sink(lr.sink())
    t0 = time.perf_counter()
    flow.run().wait(timeout=300)
    while lr.get("position") < n:
        time.sleep(0.01)
    rate = n / (time.perf_counter() - t0)
    lr.kill()
    pl = PartitionedLearner(mk(), [metrics.Accuracy()], n_actors=2)
    pl.stats()
    keyed = [(i % 16, x, y) for i, (x, y) in enumerate(data)]
    t0 = time.perf_counter()
    pl.learn_from(keyed, batch=500)
    part = n / (time.perf_counter() - t0)
    pl.kill()
    dp = DataParallelLearner(mk(), [metrics.Accuracy()], n_actors=2, sync_every=1000)
    dp.learn_from(data[:5000], batch=100)
    st = dp.stats()
    dp_acc = sum(s["metrics"]["Accuracy"] * s["position"] for s in st) / sum(
        s["position"] for s in st)
    dp.kill()
    single = OnlineState(mk(), [metrics.Accuracy()], window=0)
    for x, y in data[:5000]:
        single.learn(x, y)
    return {"floor_learn_per_s": round(floor), "learn_per_s": round(rate),
            "partitioned_2_actors_learn_per_s": round(part),
            "data_parallel_accuracy": round(dp_acc, 4),
            "single_accuracy": round(single.metric_values()["Accuracy"], 4)}


def _ctr_deployment():
    from starlette.requests import Request

    from rtml import serve

    @serve.deployment
    class CTR:
        """The README's serving deployment: a Subscriber answers, naming its version."""

        def __init__(self, registry: ModelRegistry) -> None:
            self.model = registry.subscriber(interval=0.005)

        def stats(self) -> dict:
            return self.model.stats()

        async def __call__(self, request: Request):
            return self.model.response(await request.json())

    return CTR


def freshness(seconds: float, rate: int, qps: int) -> dict:
    """Events at ``rate``/s into a learner publishing every 200 ms; an rtml.serve deployment
    holding a Subscriber answers ``qps`` HTTP requests/s. Per event: append time to the first
    response (x-model-version) from a version whose newest event time is at or after it; per
    version, the replica's own Subscriber.stats()."""
    import socket

    import httpx

    from rtml import serve

    base = list(datasets.Phishing())
    with socket.socket() as sk:
        sk.bind(("127.0.0.1", 0))
        port = sk.getsockname()[1]
    serve.start(http_options={"port": port})
    with tempfile.TemporaryDirectory() as d:
        reg = ModelRegistry(d)
        lr = Learner(_models()["logreg"](), [metrics.Accuracy()], window=0, registry=reg,
                     publish_every=10**9, publish_interval=0.2)
        lr.get("publish")
        handle = serve.run(_ctr_deployment().bind(reg), name="ctr", route_prefix="/ctr")
        url = f"http://127.0.0.1:{port}/ctr"
        stop = threading.Event()
        served: list[tuple[float, int]] = []
        failed = [0]

        def requests() -> None:
            i = 0
            with httpx.Client(timeout=5) as c:
                while not stop.is_set():
                    t = time.time()
                    try:
                        r = c.post(url, json=base[i % len(base)][0])
                        r.raise_for_status()
                        served.append((time.time(), int(r.headers["x-model-version"])))
                    except Exception:
                        failed[0] += 1
                    i += 1
                    time.sleep(max(0.0, 1.0 / qps - (time.time() - t)))

        th = threading.Thread(target=requests, daemon=True)
        th.start()
        events: list[float] = []
        batch = max(1, rate // 100)
        t_end = time.time() + seconds
        i = 0
        pending = []
        while time.time() < t_end:
            t = time.time()
            samples = [(*base[(i + k) % len(base)], t) for k in range(batch)]
            i += batch
            events.append(t)
            pending.append(lr.learn_many.remote(samples))
            if len(pending) > 4:
                rtml.get(pending.pop(0), timeout=30)
            time.sleep(max(0.0, batch / rate - (time.time() - t)))
        for p in pending:
            rtml.get(p, timeout=30)
        time.sleep(1.0)
        stop.set()
        th.join(timeout=10)
        sub = handle.stats.remote().result(timeout_s=30)
        lr.kill()
        event_time = {n: reg.get(n).event_time for n in {v for _, v in served}}
        serve.shutdown()
    lat = []
    j = 0
    for te in events:
        while j < len(served) and (event_time[served[j][1]] is None
                                   or event_time[served[j][1]] < te):
            j += 1
        if j == len(served):
            break
        lat.append(served[j][0] - te)
    lat.sort()

    def q(p: float) -> float | None:
        return round(lat[min(len(lat) - 1, int(p * len(lat)))], 4) if lat else None

    return {"freshness_p50_s": q(0.5), "freshness_p99_s": q(0.99),
            "failed_predictions": failed[0], "predictions": len(served),
            "events": len(events) * batch,
            "server": "rtml.serve deployment (HTTP) + Subscriber",
            "subscriber": {k: sub[k] for k in (
                "version", "swaps", "predictions", "freshness_p50_s", "freshness_p99_s",
                "version_lag", "load_ms_p99", "unserved_versions")}}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--json")
    a = ap.parse_args()
    n = 2000 if a.quick else 5300
    out: dict = {}
    out.update(parity(n))
    rtml.init(num_cpus=2)
    try:
        out.update(throughput(20000 if a.quick else 100000))
        out.update(freshness(8.0 if a.quick else 30.0, 5000, 200))
    finally:
        rtml.shutdown()
    text = json.dumps(out)
    if a.json:
        os.makedirs(os.path.dirname(os.path.abspath(a.json)), exist_ok=True)
        with open(a.json, "w") as f:
            f.write(text)
    if not a.quick:
        for r in out["parity"]:
            print(f"{r['data']:9} {r['model']:9} acc {r['rtml_accuracy']:.4f} "
                  f"auc {r['rtml_auc']:.4f} equal={r['equal']}", file=sys.stderr)
    print(json.dumps({k: v for k, v in out.items() if k != "parity"}))


if __name__ == "__main__":
    main()
