#!/usr/bin/env bash
# P3 device call: correctness + interleaved evaluation of candidate vs incumbent (H100).
#   bash bench/p3_device.sh TAG CAND INC [CAND2 INC2]   (candidate and incumbent: kernel files; see kernels/cute_dsl/sm90/LINEAGE.md)
source .device-carry/activate.sh
tag=$1 cand=$2 inc=$3 cand2=${4:-} inc2=${5:-}
O=/tmp/o; mkdir -p $O
t0=$(date +%s)
timeout 130 python3 -m pytest -q tests/gpu 2>&1 | tail -4 | tee $OUT/${tag}_tests.txt
echo "tests done at $(( $(date +%s) - t0 ))s"
for suite in mha gqa; do
  INCUMBENT=$inc BASELINES=cudnn,fa4 timeout 175 bash bench/run_device.sh $O/$suite $suite $cand > $O/$suite.log 2>&1
  echo "$suite rc=$? at $(( $(date +%s) - t0 ))s"
  cp $O/$suite/$(basename $cand .py)_$suite.json $OUT/${tag}_$suite.json
  grep -E "score|geomean|error|FAIL|Error" $O/$suite.log | tail -4
done
if [ -n "$cand2" ]; then
  left=$(( 420 - ($(date +%s) - t0) ))
  [ $left -gt 60 ] || cand2=
  [ -n "$cand2" ] && INCUMBENT=$inc2 BASELINES= timeout $left bash bench/run_device.sh $O/c2 mha $cand2 > $O/c2.log 2>&1
  echo "cand2 rc=$? at $(( $(date +%s) - t0 ))s"
  cp $O/c2/$(basename $cand2 .py)_mha.json $OUT/${tag}_cand2_mha.json
fi
python3 - "$OUT" <<'PY'
import json, glob, sys
for f in sorted(glob.glob(sys.argv[1] + "/*.json")):
    d = json.load(open(f))
    print(f.split("/")[-1], d["status"], "score %.1f" % (d["score"] or 0), "inc_ratio", d["incumbent_ratio"], "spread", d["incumbent_ratio_spread"], "speedups", d.get("speedups"))
    for s in d["shapes"]:
        b = s.get("baselines") or {}
        print("  %-28s %6.1f inc %.3f  cudnn %s fa4 %s" % (s["label"], s["tflops"] or 0, s.get("incumbent_ratio") or 0,
              b.get("cudnn"), b.get("fa4")))
PY
