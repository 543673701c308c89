#!/usr/bin/env bash
# P1-g device calls on the H200 (two calls on one warm machine; bundles: WITH_FA4=0
# ../shared/device/cute-bundle.sh, ../shared/device/fa3-bundle.sh, then bench/fa4_into_fa3_carry.sh):
#   call A (carry .device-carry):     bash bench/p1g_device.sh A   GPU tests + ncu of our kernel
#   call B (carry .device-carry-fa3): bash bench/p1g_device.sh B   paper grid vs FA3/cuDNN/FA4 + ncu of FA3
# Everything lands in $OUT (one tarball for the ncu files: at most 8 files come back).
set -uo pipefail
phase=$1
tag=h200_2026-12-01
t0=$(date +%s)
if [ "$phase" = A ]; then
  source .device-carry/activate.sh
  nvidia-smi > $OUT/${tag}_nvidia-smi.txt 2>&1
  echo "== tests/gpu"
  timeout 300 python3 -m pytest -q -p no:cacheprovider -o addopts="" tests/gpu 2>&1 | tee $OUT/${tag}_gpu_tests.log | tail -15
  echo "tests done at $(( $(date +%s) - t0 ))s"
  bash bench/paper_ncu.sh ours /tmp/ncu
  tar -C /tmp -czf $OUT/${tag}_ncu_ours.tgz ncu
  echo "A done at $(( $(date +%s) - t0 ))s"
else
  source .device-carry-fa3/activate.sh
  export FA3_VERSION=3.0.0.post20260810  # the bundle carries no dist-info
  python3 -c "import flash_attn_interface, flash_attn.cute, cutlass; print('imports ok')" 2>&1 | tail -2
  echo "== paper grid"
  timeout ${BENCH_TIMEOUT:-330} python3 bench/paper_h200.py --json $OUT/${tag}_paper_grid.json --repeats ${REPEATS:-60} \
    --variants '{"n176": {"block_n_d128": 176}, "n176pp": {"block_n_d128": 176, "pingpong_d128": true}, "n128pp": {"pingpong_d128": true}}' \
    --extra-rows '8,4096,64,8,0;4,8192,64,8,0;2,16384,64,8,0' 2>&1 | tee $OUT/${tag}_paper_grid.log | tail -45
  echo "bench done at $(( $(date +%s) - t0 ))s"
  bash bench/paper_ncu.sh fa3 /tmp/ncu3 1,32768,16,16,0
  bash bench/paper_ncu.sh fa3 /tmp/ncu3c 1,32768,16,16,1   # FA3's causal kernel: 128x128, no cluster
  tar -C /tmp -czf $OUT/${tag}_ncu_fa3.tgz ncu3 ncu3c
  echo "B done at $(( $(date +%s) - t0 ))s"
fi
