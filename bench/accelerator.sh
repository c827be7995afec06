#!/usr/bin/env bash
# The one-accelerator bench (bench/accelerator.py) as the device tool runs it, from the
# repository root, with no pip install of the package: carried wheels in .whl/ (if any) go to
# /tmp/site, results to $OUT (accelerator.json, accelerator.log).
#
#   bash bench/accelerator.sh                 # on the device: 7-minute budget
#   OUT=/tmp/x bash bench/accelerator.sh --smoke   # the same command on a CPU
#
# Extra arguments go to `python -m bench.accelerator` (after the defaults, so they win).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-/tmp/accelerator_out}"
mkdir -p "$OUT"
PY="${PYTHON:-python3}"

if compgen -G ".whl/*.whl" >/dev/null; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target /tmp/site .whl/*.whl
  export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
fi

{
  echo "== $(date -u +%FT%TZ) $(git rev-parse --short HEAD 2>/dev/null || echo '(no git)')"
  nvidia-smi 2>&1 || echo "(no nvidia-smi)"
  "$PY" -c 'import jax, jaxlib, flax, optax; print("jax", jax.__version__, "jaxlib",
jaxlib.__version__, "flax", flax.__version__, "optax", optax.__version__)'
} 2>&1 | tee "$OUT/accelerator.log"

# The bench keeps its own 420-s budget (checked before each item); `timeout` is the
# backstop that still leaves the device tool's 10-minute command limit some margin.
PYTHONUNBUFFERED=1 timeout 540 "$PY" -m bench.accelerator --out "$OUT/accelerator.json" \
    --budget_s 420 "$@" 2>&1 | tee -a "$OUT/accelerator.log"
