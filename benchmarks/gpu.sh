#!/usr/bin/env bash
# GPU benchmarks: on a machine with an NVIDIA GPU, make sure JAX sees it (installing the CUDA build
# of JAX into the environment when it does not), then run the Gv-cost, HF-update and autoencoder
# suites and the RNN CG-iteration roofline split; every result line carries the device name.  Usage:
#   bash benchmarks/gpu.sh [python] [--full]
# HFLAB_BENCH_RESULTS=path moves the JSON-lines output (default benchmarks/results/results.jsonl).
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${1:-.venv/bin/python}"; shift || true
if ! "$PY" -c 'import jax, sys; sys.exit(0 if jax.devices()[0].platform == "gpu" else 1)' 2>/dev/null; then
  echo "# JAX sees no GPU: installing the CUDA build of JAX"
  "$PY" -m pip install -q -U "jax[cuda12]==$("$PY" -c 'import jax; print(jax.__version__)')"
fi
"$PY" -c 'import jax; print("# devices:", jax.devices())'
export PYTHONUNBUFFERED=1
"$PY" -m benchmarks --only gv_cost hf_update rnn_cost autoencoders --no-report "$@"
