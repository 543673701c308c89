#!/bin/bash
# Call B (carry .device-carry-fa3 .bwrap .old, made at once after call A on the warm machine):
# wall time of a full mha evaluation, old evaluator (one process) vs new (judge + workers), then
# the paper suite against FA3, cuDNN and FA4 through the new evaluator.
source .device-carry-fa3/activate.sh
export PATH=$PWD/.bwrap:$PATH
K=$PWD/kernels/cute_dsl/sm90/fmha_fwd.py
s=$SECONDS; ( cd .old && python3 -m avo.evaluate $K --suite mha --baselines cudnn,fa4 --json $OUT/old_mha.json -q ) 2>&1 | tail -3; echo "old_wall_s $((SECONDS-s))"
s=$SECONDS; python3 -m avo.evaluate $K --suite mha --baselines cudnn,fa4 --json $OUT/new_mha.json -q 2>&1 | tail -3; echo "new_wall_s $((SECONDS-s))"
s=$SECONDS; python3 -m avo.evaluate $K --suite paper --baselines fa3,cudnn,fa4 --repeats 50 --json $OUT/paper.json 2>&1 | tail -40; echo "paper_wall_s $((SECONDS-s))"
