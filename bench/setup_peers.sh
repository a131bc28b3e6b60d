#!/usr/bin/env bash
# Create bench/.peers-venv: the frameworks rtml is compared against, plus rtml itself
# (editable, from this checkout), so bench/compare.py can run each in its own subprocess.
#
#   bash bench/setup_peers.sh            # create or update
#   PYTHON=python3.11 bash bench/setup_peers.sh
#
# Installs: ray, dask[distributed], numpy, matplotlib, psutil, pyzmq (transport benchmark),
# uvloop (transport benchmark, optional: skipped if it does not install).
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
"${pip[@]}" install -e "$repo"
"$venv/bin/python" - <<'PY'
import importlib
for name in ("rtml", "ray", "dask", "distributed", "numpy", "matplotlib", "zmq", "uvloop"):
    try:
        mod = importlib.import_module(name)
        print(f"  {name:12s} {getattr(mod, '__version__', '?')}")
    except ImportError as e:
        print(f"  {name:12s} missing ({e})")
PY
echo "setup_peers: ready: $venv"
