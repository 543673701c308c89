#!/usr/bin/env bash
# P3 device call: correctness of a candidate, then the evaluator on mha and gqa with the previous
# version as interleaved incumbent and cuDNN + FA4 as (interleaved) baselines. H100.
#   bash bench/p3_device.sh TAG CAND INC [FALLBACK]
# CAND/INC/FALLBACK: kernel files (see kernels/cute_dsl/sm90/LINEAGE.md). When CAND fails
# tests/gpu and FALLBACK is given, FALLBACK is evaluated instead (one device call either way).
# Env: SUITES (default "mha gqa"), EVAL_ARGS (passed on to python -m avo.evaluate).
source .device-carry/activate.sh
tag=$1 cand=$2 inc=$3 fallback=${4:-}
O=/tmp/o; mkdir -p $O
t0=$(date +%s)
SM90_KERNEL=$cand timeout 200 python3 -m pytest -q -o addopts="" tests/gpu 2>&1 | tail -6 | tee $OUT/${tag}_tests.txt
if ! grep -q " passed" $OUT/${tag}_tests.txt || grep -qE "failed|error" $OUT/${tag}_tests.txt; then
  echo "candidate $cand failed tests/gpu"
  [ -n "$fallback" ] || exit 1
  cand=$fallback tag=${tag}_fallback
  SM90_KERNEL=$cand timeout 150 python3 -m pytest -q -o addopts="" tests/gpu 2>&1 | tail -4 | tee $OUT/${tag}_tests.txt
fi
echo "tests done at $(( $(date +%s) - t0 ))s"
for suite in ${SUITES:-mha gqa}; do
  INCUMBENT=$inc BASELINES=cudnn,fa4 timeout 240 bash bench/run_device.sh $O/$suite $suite $cand > $O/$suite.log 2>&1
  echo "$suite rc=$? at $(( $(date +%s) - t0 ))s"
  cp $O/$suite/$(basename $cand .py)_$suite.json $OUT/${tag}_$suite.json
  grep -E "status|error|FAIL|Error" $O/$suite.log | tail -3
done
python3 - "$OUT" <<'PY'
import json, glob, sys
for f in sorted(glob.glob(sys.argv[1] + "/*.json")):
    d = json.load(open(f))
    sp = {k: "%.3f±%.3f" % (v, (d.get("speedup_noise") or {}).get(k) or 0) for k, v in (d.get("speedups") or {}).items() if v}
    print(f.split("/")[-1], d["status"], "score %.1f" % (d["score"] or 0), "inc %.4f ±%.4f" % (d["incumbent_ratio"] or 0, d["incumbent_ratio_spread"] or 0), sp)
    for s in d["shapes"]:
        r = s.get("baseline_ratios") or {}
        print("  %-28s %6.1f inc %.3f  cudnn %s fa4 %s" % (s["label"], s["tflops"] or 0, s.get("incumbent_ratio") or 0,
              "%.3f" % r["cudnn"] if "cudnn" in r else "-", "%.3f" % r["fa4"] if "fa4" in r else "-"))
PY
