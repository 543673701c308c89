#!/bin/bash
# One device call (carry .device-carry .bwrap .old): the split-tail attack against this evaluator
# and against the one in .old/avo (the commit before the "done" word: git archive <rev> avo | tar
# -x -C .old), the clock check's honest and 0.95x cases, then the hostile GPU tests (TESTS; TESTS=none
# skips them), then self-confirmations of our sm90 kernel on mha (SELF=1) until LIMIT s of the call
# are spent. Outputs under $OUT.
source .device-carry/activate.sh
export PATH=$PWD/.bwrap:$PATH
T0=$SECONDS
nvidia-smi --query-gpu=name,driver_version,clocks.sm,temperature.gpu,power.draw --format=csv
python3 bench/split_tail_demo.py --json $OUT/split_new.json ${TAILS:-0.25 0.0625} 2>&1 | tee $OUT/split_new.txt | tail -8
if [ -d .old/avo ]; then
  PYTHONPATH=$PWD/.old:$PYTHONPATH python3 bench/split_tail_demo.py --json $OUT/split_old.json 0.25 2>&1 | tee $OUT/split_old.txt | tail -4
fi
python3 bench/clock_diag.py --json $OUT/clock_diag.json ${DIAG:-1.0 0.95} 2>&1 | tee $OUT/clock_diag.txt | cut -c1-600 | tail -6
echo "before_tests_s $((SECONDS-T0))"
if [ "${TESTS}" != none ]; then
  timeout $((${LIMIT:-585}-(SECONDS-T0))) python3 -m pytest -q -p no:cacheprovider -o addopts="" ${TESTS:-tests/gpu/test_hostile_gpu.py} \
    -rA 2>&1 | tee $OUT/gpu_tests.txt | grep -E "PASS|FAIL|ERROR|passed|failed|Error:" | tail -40
fi
if [ "${SELF:-0}" = 1 ]; then
  python3 bench/self_confirm.py kernels/cute_dsl/sm90/fmha_fwd.py --suite mha --device cuda -n 20 --warmup-ms 500 \
    --budget-s $((${LIMIT:-585}-75-(SECONDS-T0))) --json $OUT/self_confirm.json 2>&1 | tail -3
fi
echo "total_s $((SECONDS-T0))"
