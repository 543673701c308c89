"""The timing protocol: sustained warm-up, then repeats with a flushed L2 and rotated inputs.

Each `fn` here is `fn(i)`: one call of a kernel on input set `i`. Several fns are timed
*interleaved* (alternating their order every repeat), so slow drifts of the clock hit all of
them alike and their per-repeat ratio is a fair comparison.
"""

from __future__ import annotations

import math
import statistics
import time
from typing import Callable, Optional, Sequence

import torch

Fn = Callable[[int], object]

SETTLE_WINDOW = 8  # the last this many warm-up iterations ...
SETTLE_TOLERANCE = {"cuda": 0.03, "cpu": 0.25}  # ... must lie within this relative band
# CPUs have no clock ramp to wait out and a shared CPU never looks steady: a short, capped warm-up
# (caches and the allocator settle in a few calls); the median over repeats does the rest.
CPU_WARMUP_CAP_MS = 250.0


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


class Clock:
    """Times single calls: CUDA events on a GPU, perf_counter on a CPU."""

    def __init__(self, device: str, l2_flush: bool = True):
        self.cuda = device == "cuda"
        self._flush_buf: Optional[torch.Tensor] = None
        if self.cuda and l2_flush:
            props = torch.cuda.get_device_properties(torch.cuda.current_device())
            l2 = getattr(props, "L2_cache_size", 0) or 50 * 2**20
            # Writing twice the L2 size evicts every line the previous call left behind.
            self._flush_buf = torch.empty(2 * l2, dtype=torch.uint8, device="cuda")

    def flush(self) -> None:
        if self._flush_buf is not None:
            self._flush_buf.zero_()

    def time_once(self, fn: Fn, i: int) -> float:
        """Milliseconds of one synchronous call (used while warming up)."""
        if self.cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn(i)
            end.record()
            end.synchronize()
            return start.elapsed_time(end)
        t0 = time.perf_counter()
        fn(i)
        return (time.perf_counter() - t0) * 1e3

    def warm_up(self, fns: Sequence[Fn], min_ms: float, rotate: int) -> bool:
        """Call every fn in turn until `min_ms` has passed and each one's recent times are steady
        (GPU clocks ramp over seconds). Gives up at 4x min_ms + 1 s on a GPU, 2x min_ms + 0.1 s on
        a CPU; returns whether it settled."""
        if self.cuda:
            cap_ms, tol = 4 * min_ms + 1000.0, SETTLE_TOLERANCE["cuda"]
        else:
            min_ms = min(min_ms, CPU_WARMUP_CAP_MS)
            cap_ms, tol = 2 * min_ms + 100.0, SETTLE_TOLERANCE["cpu"]
        history: list[list[float]] = [[] for _ in fns]
        for fn in fns:  # a first call may JIT-compile for this shape: not part of the warm-up clock
            self.time_once(fn, 0)
        t0 = time.perf_counter()
        it = 0
        while True:
            for j, fn in enumerate(fns):
                history[j].append(self.time_once(fn, it % rotate))
            it += 1
            elapsed = (time.perf_counter() - t0) * 1e3
            if elapsed >= min_ms and it >= SETTLE_WINDOW and all(_settled(h, tol) for h in history):
                return True
            if elapsed >= cap_ms and it >= 2:
                return False

    def measure(self, fns: Sequence[Fn], repeats: int, rotate: int,
                before_repeat: Optional[Callable[[int], None]] = None) -> list[list[float]]:
        """`repeats` timed calls of each fn (ms), interleaved, alternating the order every repeat,
        L2 flushed before every call, input set rotated every repeat. `before_repeat(r)` runs
        untimed before repeat r (on a GPU: enqueued on the same stream, so ordered before it)."""
        times: list[list[float]] = [[] for _ in fns]
        order = list(range(len(fns)))
        if self.cuda:
            events = []
            for r in range(repeats):
                if before_repeat is not None:
                    before_repeat(r)
                for j in (order if r % 2 == 0 else order[::-1]):
                    self.flush()
                    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                    start.record()
                    fns[j](r % rotate)
                    end.record()
                    events.append((j, start, end))
            torch.cuda.synchronize()
            for j, start, end in events:
                times[j].append(start.elapsed_time(end))
            return times
        for r in range(repeats):
            if before_repeat is not None:
                before_repeat(r)
            for j in (order if r % 2 == 0 else order[::-1]):
                t0 = time.perf_counter()
                fns[j](r % rotate)
                times[j].append((time.perf_counter() - t0) * 1e3)
        return times


    def wall_per_call(self, fn: Fn, n: int, rotate: int) -> float:
        """Milliseconds per call of n back-to-back calls between device-wide synchronisations: a
        cross-check of the event timing, which sees only work on torch's current stream."""
        if self.cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        for i in range(n):
            fn(i % rotate)
        if self.cuda:
            torch.cuda.synchronize()
        return (time.perf_counter() - t0) * 1e3 / n


def _settled(history: list[float], tol: float) -> bool:
    last = history[-SETTLE_WINDOW:]
    if len(last) < SETTLE_WINDOW:
        return False
    return (max(last) - min(last)) / statistics.median(last) <= tol


def median_log_se(ratios: Sequence[float]) -> Optional[float]:
    """Standard error of log(median ratio): the normal-theory 1.2533·sigma/sqrt(n), with sigma
    estimated robustly from the 20th-80th percentile range of the log ratios (1.683 sigma wide)."""
    if len(ratios) < 3 or any(r <= 0 for r in ratios):
        return None
    logs = [math.log(r) for r in ratios]
    sigma = (percentile(logs, 0.8) - percentile(logs, 0.2)) / 1.683
    return 1.2533 * sigma / math.sqrt(len(logs))
