#!/bin/bash
# One device call (carry .device-carry .bwrap): the hostile GPU tests on the current judge, failures
# printed the moment they happen (bench/instafail.py) and kept in $OUT/failures.txt, so a call cut
# by its time limit keeps its messages. FIRST (a -k expression) runs alone before the rest; the
# rest skips what FIRST ran. Then tests/test_evaluate_gpu.py if time is left (EVAL=1).
source .device-carry/activate.sh
export PATH=$PWD/.bwrap:$PATH AVO_INSTAFAIL=$OUT/failures.txt
T0=$SECONDS
LIMIT=${LIMIT:-585}
run() {  # run <file> [pytest args...]
  timeout $((LIMIT-(SECONDS-T0))) python3 -m pytest -q -p no:cacheprovider -p bench.instafail -o addopts="" -rA "$@" 2>&1 \
    | tee -a $OUT/gpu_tests.txt | grep -E "^PASSED|^FAILED|^ERROR|passed|failed" | tail -30
}
if [ -n "${FIRST:-}" ]; then
  run tests/gpu/test_hostile_gpu.py -k "$FIRST"
  run tests/gpu/test_hostile_gpu.py -k "not ($FIRST)"
else
  run tests/gpu/test_hostile_gpu.py
fi
[ "${EVAL:-0}" = 1 ] && run tests/test_evaluate_gpu.py
echo "total_s $((SECONDS-T0))"
