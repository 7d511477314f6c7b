#!/usr/bin/env bash
# On the GPU machine: run scripts/gpu_check.py on the unpacked carry (see scripts/gpu_pack.sh), then
# hand its outputs back through $OUT (at most 8 files of 16 MiB): gpu_out.tar, summary.md, steps.json.
#
#   bash scripts/gpu_run.sh [STEPS] [LIMIT_S]
#     STEPS    comma-separated (default: all); outputs accumulate in /tmp/gpu_out between warm calls
#     LIMIT_S  seconds this command may take (the device call's timeout_s minus ~30 s); default 560
#     further arguments go to gpu_check.py (e.g. --train-seconds 180; --dry-run to try this wrapper on a CPU)
set -uo pipefail
steps=${1:-tests,train,eval,bench,summary}
limit=${2:-560}
shift $(( $# < 2 ? $# : 2 ))
cd "$(dirname "$0")/.."
carry=${GPU_CARRY:-/tmp/gpu_carry}
out=${GPU_OUT_DIR:-/tmp/gpu_out}
if [ ! -d "$carry/data" ]; then
  echo "gpu_run: $carry/data is missing: not every carry chunk was unpacked on this machine (a fresh one?);" \
       "send them again from gpu_carry/c0" >&2
  exit 3
fi
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
"${PYTHON:-python3}" scripts/gpu_check.py --out "$out" --data "$carry/data" --wheels "$carry/wheels" --site /tmp/gpu_site \
  --steps "$steps" --deadline-s $((limit - 15)) "$@"
rc=$?
if [ -n "${OUT:-}" ] && [ -d "$out" ]; then
  tar -C "$(dirname "$out")" -cf "$OUT/gpu_out.tar" "$(basename "$out")"
  cp "$out/summary.md" "$out/steps.json" "$OUT/" 2>/dev/null
  ls -la "$OUT"
fi
cat "$out/summary.md" 2>/dev/null | head -60
exit $rc
