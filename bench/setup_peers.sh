#!/usr/bin/env bash
# Create bench/.peers-venv: the frameworks rtml is compared against, plus rtml itself
# (editable, from this checkout), so bench/compare.py can run each in its own subprocess.
#
#   bash bench/setup_peers.sh            # create or update
#   PYTHON=python3.11 bash bench/setup_peers.sh
#
# Installs: ray (with Serve and RLlib), dask[distributed], numpy, matplotlib, psutil, pyzmq
# (transport benchmark), uvloop (transport benchmark, optional: skipped if it does not install),
# and for the real-time ML benchmarks: bytewax 0.21 (streams), torch's CPU build (RLlib), and
# rtml's own ML extras (river, gymnasium, confluent-kafka, pyarrow).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/.." && pwd)"
venv="$here/.peers-venv"
py="${PYTHON:-python3}"

if [ ! -x "$venv/bin/python" ]; then
    "$py" -m venv "$venv"
fi
pip=("$venv/bin/python" -m pip --disable-pip-version-check -q)
"${pip[@]}" install --upgrade pip
"${pip[@]}" install "ray[default]" "dask[distributed]" numpy matplotlib psutil pyzmq click \
    || "${pip[@]}" install ray "dask[distributed]" numpy matplotlib psutil pyzmq click
"${pip[@]}" install uvloop || echo "setup_peers: uvloop did not install; transport.py skips it"
# torch first, pinned: an unpinned torch would pull a multi-GB CUDA build for RLlib.
"${pip[@]}" install "torch==2.13.0" || echo "setup_peers: torch 2.13.0 did not install; RLlib rows skip"
"${pip[@]}" install "ray[serve,rllib]" || echo "setup_peers: ray[serve,rllib] did not install"
"${pip[@]}" install "bytewax==0.21.*" || echo "setup_peers: bytewax 0.21 did not install; streams.py skips it"
"${pip[@]}" install -e "$repo[ml]"
"$venv/bin/python" - <<'PY'
import importlib
for name in ("rtml", "ray", "ray.serve", "ray.rllib", "bytewax", "torch", "dask", "distributed",
             "numpy", "matplotlib", "zmq", "uvloop", "river", "gymnasium"):
    try:
        mod = importlib.import_module(name)
        print(f"  {name:12s} {getattr(mod, '__version__', '?')}")
    except ImportError as e:
        print(f"  {name:12s} missing ({e})")
PY
echo "setup_peers: ready: $venv"
