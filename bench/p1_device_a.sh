#!/bin/bash
# Call A (carry .device-carry .bwrap): unpack CuTe DSL into /tmp/site; the GPU tests of the
# evaluator (TESTS, default: all of tests/gpu/test_hostile_gpu.py and tests/test_evaluate_gpu.py);
# DIAG (factors, e.g. "1.0 0.95 0.5"): bench/clock_diag.py first; then self-confirmations of our
# sm90 kernel on mha until BUDGET seconds of the call are spent.
source .device-carry/activate.sh
export PATH=$PWD/.bwrap:$PATH
T0=$SECONDS
nvidia-smi --query-gpu=name,driver_version,clocks.sm,temperature.gpu,power.draw --format=csv
if [ -n "$DIAG" ]; then
  python3 bench/clock_diag.py --json $OUT/clock_diag.json $DIAG 2>&1 | tee $OUT/clock_diag.txt | grep -v "^  message" | cut -c1-400
  echo "diag_s $((SECONDS-T0))"
fi
python3 -m pytest -q -p no:cacheprovider -o addopts="" ${TESTS:-tests/gpu/test_hostile_gpu.py tests/test_evaluate_gpu.py} \
  -rA 2>&1 | tee $OUT/gpu_tests.txt | grep -E "PASS|FAIL|ERROR|passed|failed|Error:" | tail -40
echo "tests_s $((SECONDS-T0))"
python3 bench/self_confirm.py kernels/cute_dsl/sm90/fmha_fwd.py --suite mha --device cuda -n 20 \
  --warmup-ms 500 --budget-s $((${BUDGET:-500}-(SECONDS-T0))) --json $OUT/self_confirm_a.json 2>&1 | tail -4
echo "total_s $((SECONDS-T0))"
