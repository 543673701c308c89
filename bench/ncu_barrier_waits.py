"""Which mbarrier the warps of our sm90 kernel wait on, from an ncu SASS source-counters CSV.

    python bench/ncu_barrier_waits.py call3_ncu_sass_source_ours_b1_s32768_causal.csv[.xz]

Each `SYNCS.PHASECHK.TRANS64.TRYWAIT` is one barrier wait; its stall samples (and those of the
branch right after it, where the long-scoreboard stall lands) are summed. Which barrier an
offset is follows from the kernel's SharedStorage (fmha_fwd.py `_shared_storage`): mbar_q (full,
empty) at 0x0, mbar_k (num_stages full, then num_stages empty) at 0x10, mbar_v at 0x10 + 16 *
num_stages, then the scheduler ring; a stage's index is folded into the base register. Who
waits follows from the execution count: once per KV tile by one warp (the producer), or by
every consumer warp.
"""

from __future__ import annotations

import csv
import io
import lzma
import re
import sys
from pathlib import Path


def barrier_name(offset: int, stages: int = 2) -> str:
    k, v = 0x10, 0x10 + 16 * stages
    if offset < k:
        return "Q " + ("full" if offset < 8 else "empty")
    if offset < v:
        return "K " + ("full" if offset - k < 8 * stages else "empty")
    if offset < v + 16 * stages:
        return "V " + ("full" if offset - v < 8 * stages else "empty")
    return "scheduler ring"


def main(path: str) -> int:
    raw = lzma.open(path, "rt") if path.endswith(".xz") else open(path)
    rows = list(csv.reader(io.StringIO(raw.read())))
    hdr, data = rows[1], rows[2:]
    col = {h: i for i, h in enumerate(hdr)}
    num = lambda r, h: int(r[col[h]] or 0)  # noqa: E731
    total = sum(num(r, "Warp Stall Sampling (All Samples)") for r in data)
    print(f"{total} samples; long scoreboard {sum(num(r, 'stall_long_sb') for r in data)}")
    print(f"{'barrier':16s} {'offset':>7s} {'executed':>10s} {'samples':>8s} {'long sb':>8s} {'share':>6s}")
    for k, r in enumerate(data):
        m = re.search(r"SYNCS\.PHASECHK\.TRANS64\.TRYWAIT P\d, \[UR\d+(?:\+0x([0-9a-f]+))?\]", r[1])
        if not m:
            continue
        group = data[k:k + 4]
        samples = sum(num(x, "Warp Stall Sampling (All Samples)") for x in group)
        if samples < 0.001 * total:
            continue
        off = int(m.group(1) or "0", 16)
        print(f"{barrier_name(off):16s} {hex(off):>7s} {num(r, 'Instructions Executed'):>10d} {samples:>8d} "
              f"{sum(num(x, 'stall_long_sb') for x in group):>8d} {samples / total:>6.1%}")
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
