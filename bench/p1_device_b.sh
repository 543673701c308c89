#!/bin/bash
# Call B (carry .device-carry-fa3 .bwrap, made at once after call A on the warm machine): one
# kernel evaluated three times on mha against cuDNN and FA4 (the noise check: every repeat's
# speedups inside the others' intervals; each is also a wall-time measurement), then, with PAPER=1,
# the paper suite against FA3, cuDNN and FA4 (50 repeats), then self-confirmations for BUDGET s.
source .device-carry-fa3/activate.sh
export PATH=$PWD/.bwrap:$PATH
K=$PWD/kernels/cute_dsl/sm90/fmha_fwd.py
for i in 1 2 3; do
  s=$SECONDS; python3 -m avo.evaluate $K --suite mha --baselines cudnn,fa4 --json $OUT/mha_$i.json -q 2>&1 | tail -3
  echo "mha_${i}_wall_s $((SECONDS-s))"
done
if [ "${PAPER:-0}" = 1 ]; then
  s=$SECONDS; python3 -m avo.evaluate $K --suite paper --baselines fa3,cudnn,fa4 --repeats 50 --json $OUT/paper.json 2>&1 | tail -34
  echo "paper_wall_s $((SECONDS-s))"
fi
python3 bench/self_confirm.py $K --suite mha --device cuda -n 20 --warmup-ms 500 --budget-s ${BUDGET:-0} \
  --json $OUT/self_confirm_b.json 2>&1 | tail -3
