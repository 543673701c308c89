#!/bin/bash
# Call A of two (carry .device-carry .bwrap): unpack CuTe DSL into /tmp/site, GPU tests.
source .device-carry/activate.sh
export PATH=$PWD/.bwrap:$PATH
nvidia-smi --query-gpu=name,driver_version,clocks.sm,temperature.gpu,power.draw --format=csv
python3 -m pytest -q -p no:cacheprovider -o addopts="" tests/gpu/test_hostile_gpu.py tests/test_evaluate_gpu.py \
  tests/gpu/test_sm90_fmha.py tests/gpu/test_sm90_robustness.py -rA 2>&1 | tee $OUT/gpu_tests.txt | tail -40
