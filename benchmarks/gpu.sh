#!/usr/bin/env bash
# GPU benchmarks: on a machine with an NVIDIA GPU, make sure JAX sees it (installing the CUDA build
# of JAX into the environment when it does not), then run the RNN CG-iteration roofline split and
# the HF-update, Gv-cost and autoencoder suites, each in its own process so that one suite's
# failure or time limit does not lose the others' records; every result line carries the device
# name.  Usage:
#   bash benchmarks/gpu.sh [python] [--full]
# HFLAB_RECORDS=dir moves the JSON-lines records (default records/, one file per suite);
# HFLAB_GPU_SUITES="rnn_cost hf_update" picks suites; HFLAB_GPU_SUITE_SECONDS caps each suite's
# wall time (default: none), for a machine lent for minutes.
set -uo pipefail
cd "$(dirname "$0")/.."
PY="${1:-.venv/bin/python}"; shift || true
if ! "$PY" -c 'import jax, sys; sys.exit(0 if jax.devices()[0].platform == "gpu" else 1)' 2>/dev/null; then
  echo "# JAX sees no GPU: installing the CUDA build of JAX"
  "$PY" -m pip install -q -U "jax[cuda12]==$("$PY" -c 'import jax; print(jax.__version__)')" || exit 1
fi
"$PY" -c 'import jax; print("# jax", jax.__version__, "devices:", jax.devices())' || exit 1
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm \
  --format=csv,noheader
export PYTHONUNBUFFERED=1
limit=()
[ -n "${HFLAB_GPU_SUITE_SECONDS:-}" ] && limit=(timeout "$HFLAB_GPU_SUITE_SECONDS")
status=0
for suite in ${HFLAB_GPU_SUITES:-rnn_cost hf_update gv_cost autoencoders}; do
  t0=$SECONDS
  "${limit[@]}" "$PY" -m benchmarks --only "$suite" --no-report "$@"
  rc=$?
  echo "# suite $suite: exit $rc after $((SECONDS - t0)) s"
  [ $rc -ne 0 ] && status=$rc
done
exit $status
