#!/usr/bin/env bash
# Nsight Compute on one kernel of bench/paper_h200.py at one shape (default: the paper grid's
# weakest row for us, b1 s32768 MHA non-causal), clocks left alone (--clock-control none).
#   bash bench/paper_ncu.sh ours|fa3 OUTDIR [b,s,hq,hk,causal]
# Writes OUTDIR/ncu_<kernel>.ncu-rep, a details page (.txt) and the raw metrics (.csv).
set -uo pipefail
which=$1 out=$2 shape=${3:-1,32768,16,16,0}  # FA3's kernel shows in ncu as "device_kernel"
mkdir -p "$out"
# tensor-pipe metrics by the names this ncu knows (they differ between versions)
extra=$(ncu --query-metrics 2>/dev/null | awk '{print $1}' | grep -E '^sm__pipe_tensor_op_(gmma|hmma)[a-z_]*cycles_active$' | sed 's/$/.avg.pct_of_peak_sustained_active/' | paste -sd, -)
extra2=$(ncu --query-metrics 2>/dev/null | awk '{print $1}' | grep -E '^sm__inst_executed_pipe_tensor_op_(gmma|hmma)$' | sed 's/$/.sum/' | paste -sd, -)
metrics="dram__throughput.avg.pct_of_peak_sustained_elapsed,lts__t_bytes.sum.per_second,sm__throughput.avg.pct_of_peak_sustained_elapsed,sm__warps_active.avg.pct_of_peak_sustained_active,launch__registers_per_thread,smsp__issue_active.avg.pct_of_peak_sustained_active"
[ -n "$extra" ] && metrics="$metrics,$extra"
[ -n "$extra2" ] && metrics="$metrics,$extra2"
echo "metrics: $metrics"
timeout 240 ncu --clock-control none -k regex:'Sm90FlashAttentionForward|FlashAttnFwdSm90|^device_kernel$' -s 2 -c 1 \
  --section SpeedOfLight --section ComputeWorkloadAnalysis --section MemoryWorkloadAnalysis \
  --section LaunchStats --section Occupancy --section SchedulerStats --section WarpStateStats \
  --section InstructionStats --metrics "$metrics" \
  --export "$out/ncu_$which" --force-overwrite \
  python3 bench/paper_h200.py --ncu "$which" --shape "$shape" 2>&1 | tail -5
ncu --import "$out/ncu_$which.ncu-rep" --page details > "$out/ncu_$which.txt" 2>&1
ncu --import "$out/ncu_$which.ncu-rep" --page raw --csv > "$out/ncu_$which.csv" 2>&1
grep -E "Duration|Registers Per|Compute \(SM\) Throughput|Memory Throughput|DRAM Throughput|L2 Cache Throughput|Achieved Occupancy|Issue Slots Busy|Dynamic Shared|Executed Ipc A|Block Limit Reg|tensor|Stall|Warp Cycles Per Issued" "$out/ncu_$which.txt" | head -40
