#!/bin/bash
# One device call (carry .device-carry .bwrap): P1-f's three-repeat noise check on the current judge
# (our sm90 kernel on `mha` against cuDNN, three evaluations, then bench/noise_check.py), then
# self-confirmations (SELF=1) until LIMIT s of the call are spent, then (PINGPONG=1) P1-g's
# pingpong comparison. Outputs under $OUT. REPEATS=0 skips the three evaluations.
source .device-carry/activate.sh
export PATH=$PWD/.bwrap:$PATH
T0=$SECONDS
K=kernels/cute_dsl/sm90/fmha_fwd.py
nvidia-smi --query-gpu=name,driver_version,clocks.sm,temperature.gpu,power.draw --format=csv
for i in $(seq 1 ${REPEATS:-3}); do
  s=$SECONDS; python3 -m avo.evaluate $K --suite mha --baselines cudnn --json $OUT/mha_$i.json -q 2>&1 | tail -3
  echo "mha_$i wall_s $((SECONDS-s))"
done
if [ "${REPEATS:-3}" -gt 1 ]; then
  python3 bench/noise_check.py $OUT/mha_*.json --json $OUT/noise_check.json
fi
if [ "${SELF:-0}" = 1 ]; then
  python3 bench/self_confirm.py $K --suite mha --device cuda -n ${N_SELF:-20} --warmup-ms 500 \
    --budget-s $((${LIMIT:-585}-${PP_S:-0}-85-(SECONDS-T0))) --json $OUT/self_confirm.json 2>&1 | tail -3
fi
if [ "${PINGPONG:-0}" = 1 ]; then
  timeout $((${LIMIT:-585}-(SECONDS-T0))) python3 bench/p1g_pingpong.py ${PP_ARGS:-} --json $OUT/p1g_pingpong.json 2>&1 | tail -30
fi
echo "total_s $((SECONDS-T0))"
