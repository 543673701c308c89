#!/usr/bin/env bash
# P2-h on the H200, one call on a warm machine after a call that carried .device-carry (bundles as in
# bench/fa4_into_fa3_carry.sh); this one carries .device-carry-fa3 (FA3, FA4, quack, TVM FFI) and .bwrap:
#   bash bench/p2h_device.sh
# 1. the copied FA4 SM90 seed through the evaluator, interleaved with the installed FA4 (within 2 %);
# 2. a short knob search on it, end to end (hardware=h200_fa4seed agent=knob, 2 iterations).
set -uo pipefail
source .device-carry-fa3/activate.sh
export PATH=$PWD/.bwrap:$PATH
tag=h200_$(date +%F)
t0=$SECONDS
timeout ${EVAL_TIMEOUT:-300} python3 bench/p2h_fa4seed.py --json $OUT/${tag}_p2h_fa4seed_mha.json --repeats ${REPEATS:-30} 2>&1 \
  | tee $OUT/${tag}_p2h_fa4seed.log | grep -v "^  " | tail -20
echo "eval done at $((SECONDS-t0))s"
timeout $((${LIMIT:-585}-(SECONDS-t0))) python3 -m avo +experiment=mha_h100 hardware=h200_fa4seed agent=knob model=none \
  logger=none search.max_iterations=2 evaluator.repeats=10 hydra.run.dir=/tmp/p2h_search 2>&1 | tail -12
python3 -m avo.runs versions /tmp/p2h_search 2>&1 | tail -5
tar -C /tmp -czf $OUT/${tag}_p2h_search.tgz --exclude='candidates/*/kernel.avopkg' --exclude='*/workspace' p2h_search 2>/dev/null
echo "total_s $((SECONDS-t0))"
