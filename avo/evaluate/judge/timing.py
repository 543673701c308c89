"""Timing statistics and the judge's L2 flush.

Kernels are timed interleaved (judge.py alternates their order every repeat), so slow drifts of
the clock hit all of them alike and their per-repeat ratio is a fair comparison.
"""

from __future__ import annotations

import math
import statistics
from typing import Optional, Sequence

import torch




def percentile(values: Sequence[float], q: float) -> float:
    xs = sorted(values)
    if not xs:
        raise ValueError("no values")
    pos = (len(xs) - 1) * q
    lo = int(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def spread(values: Sequence[float]) -> float:
    """(p80 - p20) / median: the width of the middle of the distribution, relative."""
    return (percentile(values, 0.8) - percentile(values, 0.2)) / statistics.median(values)


class L2Flush:
    """Evicts the L2 before a timed call, from the judge's own process: the L2 is one for all
    processes on the GPU, and a worker cannot skip a flush it does not run."""

    def __init__(self, device: str, enabled: bool = True):
        self._buf: Optional[torch.Tensor] = None
        if device == "cuda" and enabled:
            props = torch.cuda.get_device_properties(torch.cuda.current_device())
            l2 = getattr(props, "L2_cache_size", 0) or 50 * 2**20
            # Writing twice the L2 size evicts every line the previous call left behind.
            self._buf = torch.empty(2 * l2, dtype=torch.uint8, device="cuda")

    def flush(self) -> None:
        if self._buf is not None:
            self._buf.zero_()


def median_log_se(ratios: Sequence[float]) -> Optional[float]:
    """Standard error of log(median ratio): the normal-theory 1.2533·sigma/sqrt(n), with sigma
    estimated robustly from the 20th-80th percentile range of the log ratios (1.683 sigma wide)."""
    if len(ratios) < 3 or any(r <= 0 for r in ratios):
        return None
    logs = [math.log(r) for r in ratios]
    sigma = (percentile(logs, 0.8) - percentile(logs, 0.2)) / 1.683
    return 1.2533 * sigma / math.sqrt(len(logs))
