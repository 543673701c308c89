#!/usr/bin/env bash
# Evaluate kernels and the baselines on the GPU machine, one JSON per kernel.
#   source .device-carry/activate.sh
#   bash bench/run_device.sh OUTDIR SUITE KERNEL.py [KERNEL.py ...]
# Writes OUTDIR/<kernel-stem>_<SUITE>.json, OUTDIR/summary.md and OUTDIR/nvidia-smi.txt.
# Env: INCUMBENT=OTHER.py  time every kernel interleaved against it (per-shape ratios)
#      BASELINES=cudnn,fa2,fa4 (default; empty string for none)
#      EVAL_ARGS="--repeats 50 --timeout 1200"  passed on to python -m avo.evaluate
# Exit status: 0 when every kernel passed, 1 when one failed, 2 on a usage mistake.
set -uo pipefail
if [ $# -lt 3 ]; then
    echo "usage: bash bench/run_device.sh OUTDIR SUITE KERNEL.py [KERNEL.py ...]" >&2
    exit 2
fi
out=$1 suite=$2
shift 2
mkdir -p "$out"
nvidia-smi > "$out/nvidia-smi.txt" 2>&1 || true
worst=0
for kernel in "$@"; do
    stem=$(basename "$kernel" .py)
    echo "== $kernel ($suite)"
    # shellcheck disable=SC2086  # EVAL_ARGS is a list of words on purpose
    python -m avo.evaluate "$kernel" --suite "$suite" --device cuda \
        --baselines "${BASELINES-cudnn,fa2,fa4}" --json "$out/${stem}_${suite}.json" \
        ${INCUMBENT:+--incumbent "$INCUMBENT"} ${EVAL_ARGS:-}
    rc=$?
    [ "$rc" -gt "$worst" ] && worst=$rc
done
python bench/summarize.py "$out" > "$out/summary.md" && cat "$out/summary.md"
exit "$worst"
