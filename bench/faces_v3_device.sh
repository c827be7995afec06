#!/usr/bin/env bash
# faces_v3 on one accelerator: the device half of docs/training.md "faces_v3 on the accelerator".
#
#   bench/faces_v3_device.sh                         # on the device machine ($OUT comes back)
#   OUT=/tmp/v3 PYTHON=.venv/bin/python bench/faces_v3_device.sh --smoke   # CPU check, first
#
# Trains modeformer_jax.train_device on the clip package $PKG (default device_pkg, built by
# python -m data_prep.device_package) and writes $OUT/train.log beside its model files,
# metrics.jsonl and run.json. Hard budget LIMIT_S (default 480 s = 8 minutes, decode and
# compile included): the trainer plans its steps to end MINUTES (7.5) after its start and
# saves every 2 minutes, and `timeout` kills it at the limit, so a timeout still returns the
# last model file. Further arguments go to train_device (--variant, --batch, --steps, ...).
set -euo pipefail
export PYTHONUNBUFFERED=1
: "${OUT:?set OUT to the folder whose files come back}"
PY=${PYTHON:-python3}
PKG=${PKG:-device_pkg}
LIMIT_S=${LIMIT_S:-480}
MINUTES=${MINUTES:-7.5}
cd "$(dirname "$0")/.."
# The repository is not installed on the device machine: import it from here.
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
mkdir -p "$OUT"
{
  echo "== $(date -u +%FT%TZ) $(uname -n); package $PKG; limit ${LIMIT_S}s; args: $*"
  nvidia-smi -L 2>/dev/null || true
  timeout -k 5 "$((LIMIT_S - 5))" "$PY" -m modeformer_jax.train_device --package "$PKG" \
      --out "$OUT" --minutes "$MINUTES" "$@"
} 2>&1 | tee "$OUT/train.log"
