"""The judge: the trusted side of an evaluation. It alone owns what a verdict depends on.

It draws the inputs from a secret seed, keeps private copies of them, computes the reference,
holds the tolerance and the comparison, keeps its own clock, and decides. The kernels it judges
(candidate, incumbent) and the baselines each run in a worker process of their own
(workers.py), under a sandbox (sandbox.py), on memory the judge lends each of them (arena.py).

One timed call of a kernel on a GPU, from the judge's side:
  NaN into the worker's output slot -> request "call" with a fresh token: the worker queues its
  work behind the release flag (judge/arena.py) and says "armed" -> only now write fresh inputs
  into its slots, flush L2, synchronise, write the token (the judge's clock starts) -> the worker
  runs, times itself with events, copies the output into the slot, its stream writes the token
  into the "done" word -> the judge, spinning on that word, queues tiny kernels of its own until
  one runs with nothing ahead of it, then copies the outputs into its own memory with a copy
  that ran alone (its clock ends there: whatever the worker's GPU still had to do, after a "done"
  or a reply it sent early, is inside it, and what it does later is not in the copy that is
  verified) -> the worker replies with its events' times -> pause the worker's
  processes (SIGSTOP), check that q/k/v are byte-identical to the private copies and time that
  work on the judge's own stream (slowed only if the GPU is still busy with the worker's work:
  a kernel that returns before it finishes), then verify the judge's copy of the output on rows
  drawn now. All of this assumes contexts take turns on the GPU (no MPS).
On a GPU a timed sample is a block of calls, not one: B calls, each on an input set and into an
output slot of its own, all queued behind the one release, their outputs all verified afterwards.
Ended at the reply, the judge's clock resolved what crosses two processes only to ~0.1 ms (the
reply path's jitter and the asymmetry between processes, H200: bench/results/h200_2026-12-02d_SUMMARY.md);
the "done" word takes the reply path out of it, and over a
block of >= evaluator.timing_block_ms of work that error is shared by B calls, so a report the
clock contradicts by a few percent of the block is seen, and a lie in the events below that
gains nothing: a kernel's time is the judge's clock, its wall time less the null worker's median
overhead (which holds no output copy: timed calls pass out=, the null worker writes its slots
inside its events, a kernel without out= pays its worker's copies). B
comes from the trusted null worker's time on the shape (a candidate cannot make its own blocks
shorter) and is the same for every side of the shape.
Every timed output of a kernel is verified, so no call can tell a checked call from another. The
overhead is that of the same protocol measured on a trusted null worker (torch's SDPA on a GPU,
no work on a CPU), timed interleaved with the others; on a CPU a kernel's own reported time is
used where the judge's clock allows it (never below that clock less the overhead).
A CPU has no release flag: inputs are written just before the call, and a sample is one call
unless evaluator.timing_block_calls says otherwise.
"""

from __future__ import annotations

import hashlib
import math
import random
import secrets
import select
import statistics
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import torch

from avo.evaluate.judge import owncode
from avo.evaluate.judge.arena import slot_bytes
from avo.evaluate.judge.reference import compare, describe, make_inputs, reference, sample_rows
from avo.evaluate.judge.timing import L2Flush, median_log_se, percentile, spread
from avo.evaluate.judge.workers import WorkerGone, WorkerProc, WorkerSpec
from avo.evaluate.plan import shape_from
from avo import package
from avo.evaluate.result import COMPILE_ERROR, CRASH, IMPORT_ERROR, INCORRECT, OK, TIMEOUT
from avo.suites import Shape

SAMPLE_ROWS = {"cuda": 256, "cpu": 512}
SHARP_Q_STD = 3.0
# A scale the kernel must honour: not 1/sqrt(d), not 1.
ODD_SCALE = 0.8
# The worker's median reported time below this share of what the judge's clock saw (its median
# wall time less the null worker's median overhead), minus an absolute slack (ms), is a false
# report. A smaller lie in the events gains nothing: on a GPU a kernel's time is the judge's clock alone
# (Judge.used_times). Loose on a CPU: a loaded machine delays the wake-up of a busy worker far
# more than the idle null worker's (a 2-core machine running the test suite beside a smoke
# search: an honest 3.5 ms report against 7.4 ms of the judge's clock; two test processes at
# once: 3.75 ms against 12.6 ms), and there each call is taken at no less than its wall time
# less the null worker's median overhead, so a lie the floor lets through gains only that
# median's noise: on a CPU the floor is a tripwire for gross lies, not what makes lying pointless.
CLOCK_FLOOR = {"cuda": (0.9, 0.03), "cpu": (0.25, 2.0)}
# How far an honest side's median overhead strays from the null worker's (ms): on the H200 the
# host's reply path shifted by up to 0.067 ms between sides of one evaluation
# (bench/results/h200_2026-12-02_*), up to 0.09 ms per block for our sm90 kernel
# (h200_2026-12-03c). Only the clock check allows for it. A kernel's time does not: until
# 2026-12-04 each sample was taken at no less than its wall time less the null worker's median
# overhead *plus* this, a free gain to every liar (an identical kernel whose events said 0.85x
# ran 5.4 % "faster" than the truth on a 3.4 ms block, H200). An honest kernel's time now
# carries its own excess overhead over the null worker's (0.01 ms per block typical for our
# sm90 kernel, 0.3 % of a 4 ms block), as its events never did. A worker controls its own
# protocol path, so a kernel can also make that excess negative: what it can cut is what the
# null worker's overhead holds that a kernel's need not (hence no output copy in it), and a
# "done" word written early is bounded by the drain probe's tolerance (judge.drain).
GAP_SLACK = {"cuda": 0.08, "cpu": 0.0}
# Post-call work slower than this (times the same work on an idle GPU, plus ms) means the GPU
# was still busy with the worker's launches after its call had returned; more than BUSY_CALLS of
# a shape's calls like that (a share of its repeats, at least 2) fail it.
BUSY_AFTER = (1.5, 0.05)
BUSY_CALLS = 0.1
# A GPU call not queued behind the release flag within this many seconds is released anyway (a
# JIT compile, or a kernel that waits for the GPU inside attention()); in a timed call it counts.
ARM_WAIT_S = 2.0
# The judge spins on a released call's "done" word this long, then looks every ~0.1 ms.
DONE_SPIN_S = 0.05
# A drain probe (judge.drain) slower than 3x its idle latency plus this (ms) waited for someone
# else's work, and is followed by another; so is an output snapshot slower than COPY_SLOWER x
# its idle time plus this. After DRAIN_LIMIT_S the GPU is taken as it is.
DRAIN_SLACK_MS = 0.02
COPY_SLOWER = 1.25
DRAIN_LIMIT_S = 1.0
# The most protocol overhead (ms) a timed sample is allowed, whatever the null worker measured,
# beside its calls' output copies (timed by the judge itself, BLOCK_COPY_ALLOWANCE times).
OVERHEAD_CEILING = {"cuda": 1.0, "cpu": 10.0}
BLOCK_COPY_ALLOWANCE = 2.0
# The most memory (bytes) one side's input sets for a timing block may take on a GPU: every
# call of a block needs inputs and an output of its own (a kernel that memoizes by address or
# content must not profit), so a block of B calls costs B sets, in each side's arena.
BLOCK_BYTES = 6 << 30
# Rows of each output of a block that are verified: SAMPLE_ROWS shared by the block's outputs,
# but never fewer than this per output (a call that skipped its work is wrong on every row).
BLOCK_MIN_ROWS = 32
# A timed call of the incumbent or a baseline that takes longer than this is a lost column, not a
# stage that waits for its deadline (a candidate's own hang is its own timeout).
OTHERS_CALL_LIMIT_S = 60.0
# Warm-up per shape (ms): a kernel gets evaluator.warmup_ms on the benchmark's first shape, when
# the GPU's clocks ramp from idle; on later shapes the GPU is hot and a warm-up only has to reach
# steady times (it runs on until it does), so it gets at most LATER_WARMUP_MS. Our own baselines
# and the null worker, timed after a kernel's warm-up, at most TRUSTED_WARMUP_MS.
LATER_WARMUP_MS = 300.0
TRUSTED_WARMUP_MS = 150.0


class StageFailure(Exception):
    def __init__(self, status: str, message: str):
        super().__init__(message)
        self.status = status
        self.message = message
        self.worker_gone = False


@dataclass
class Slots:
    """One input set of one worker: the judge's views of its q, k, v, out and their specs."""
    q: torch.Tensor
    k: torch.Tensor
    v: torch.Tensor
    out: torch.Tensor
    spec: dict[str, Any]


class Side:
    """One worker in a timing loop: a kernel (candidate / incumbent) or a baseline."""

    def __init__(self, name: str, worker: WorkerProc, trusted: bool):
        self.name = name
        self.worker = worker
        self.trusted = trusted
        self.sets: list[Slots] = []
        self.reported: list[float] = []
        self.wall: list[float] = []
        self.post: list[float] = []
        self.host: list[list[float]] = []
        self.load: list[float] = []  # ms the judge spent writing each sample's inputs, inside its clock
        self.tail: list[float] = []  # ms from a sample's end (its "done" word, or reply) to a drained GPU
        self.done: list[bool] = []  # whether that end was the "done" word
        self.calls = 1  # calls per timed sample (the shape's block); reported/wall/post are per sample
        self.busy = 0  # calls after which the GPU was still busy with this side's work
        self.late = 0  # timed calls that were not queued behind the release flag in time
        self.failed: Optional[str] = None
        self.expanded = False
        self.takes_out = False  # a kernel whose worker said it takes out= (its copies are its own then)


class Judge:
    def __init__(self, job: dict[str, Any], send: Callable[..., None], workers: Callable[[WorkerSpec], WorkerProc]):
        self.job = job
        self.send = send
        self.start_worker = workers
        self.device: str = job["device"]
        self.dtype = getattr(torch, job.get("dtype", "bfloat16"))
        self.s = job["settings"]
        self.tol: float = self.s["tolerance"]
        self.suite = [shape_from(d) for d in job["shapes"]]
        self.cshapes = [shape_from(d) for d in job["correctness_shapes"]]
        self.rng = random.Random(secrets.randbits(64))  # which calls/rows are checked: never seen by workers
        self._seed = self.seed = secrets.randbits(62)
        self.result: dict[str, Any] = {
            "status": OK, "stage": None, "message": "", "suite": job["suite"], "device": self.device,
            "shapes": [], "notes": [], "checks": [], "baseline_scores": {}, "speedups": {},
        }
        self.stage = "startup"
        self.deadline = math.inf
        self.cand: Optional[WorkerProc] = None
        self.inc: Optional[WorkerProc] = None
        self.inc_takes_out = False
        self.baselines: dict[str, WorkerProc] = {}
        self.null: Optional[WorkerProc] = None
        self.maps_before: set[str] = set()
        self.armed = False  # GPU calls are released by the judge's flag (set in stage_import)
        self.pending_row: Optional[dict[str, Any]] = None
        self.last_load_ms = 0.0  # the judge's own time writing a released sample's inputs (ms)
        self.flush = L2Flush(self.device, self.s["l2_flush"])
        self._probe_buf = torch.zeros(1 << 20, device="cuda") if self.device == "cuda" else None
        self._drain_buf = torch.zeros(1, device="cuda") if self.device == "cuda" else None
        self._drain_ev = torch.cuda.Event() if self.device == "cuda" else None
        self.drain_fast: Optional[float] = None  # ms: a drain probe this fast had nothing ahead of it
        self.last_end: dict[str, Any] = {}  # how the last released call's clock ended
        self.snapshot: Optional[list[torch.Tensor]] = None  # the last released call's outputs, the judge's copy
        self._snap_buf: Optional[torch.Tensor] = None
        self._copy_refs: dict[tuple, float] = {}
        self.idle_probe: Optional[float] = None  # ms, measured before any worker exists
        self.warmed = False  # the benchmark's first shape has been warmed up
        self.sources: dict[str, str] = {}  # role -> sha256 of the kernel bytes its worker imported
        # The own-code rule's profiled call (GPU): a process where the profiler has run pays more
        # per CUDA call from then on (H200, 2026-12-02: an incumbent timed against its profiled
        # twin was 13 % faster on a 0.2 ms shape; with the profiler run in every worker, the
        # reply path of all of them grew from ~0.39 to ~0.7 ms, which widens what a lie can hide).
        # So where anything is timed, the candidate is profiled only once timing is over.
        self.profile_late = self.device == "cuda" and "benchmark" in job["stages"]
        # Where the evaluation's seconds went (result["judge_s"]): stages, and within the
        # benchmark the judge's own work around the calls; for whoever tunes the protocol.
        self.spent: dict[str, float] = {}

    @contextmanager
    def clocked(self, what: str):
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.spent[what] = self.spent.get(what, 0.0) + time.perf_counter() - t0

    # -- plumbing --------------------------------------------------------------------------------
    def fresh_seed(self) -> int:
        self._seed += 1
        return self._seed

    def enter(self, stage: str) -> float:
        self.stage = stage
        self.deadline = time.monotonic() + float(self.job["limits"].get(stage, self.job["limits"]["compile"]))
        self.send(ev="stage", stage=stage)
        return time.perf_counter()

    def leave(self, stage: str, t0: float) -> float:
        seconds = time.perf_counter() - t0
        self.spent[stage] = self.spent.get(stage, 0.0) + seconds
        self.send(ev="end", stage=stage, seconds=seconds)
        return seconds

    def progress(self, label: str) -> None:
        self.send(ev="progress", stage=self.stage, shape=label)

    def sync(self) -> None:
        if self.device == "cuda":
            torch.cuda.synchronize()

    def note(self, text: str) -> None:
        if text not in self.result["notes"]:
            self.result["notes"].append(text)

    def gone(self, exc: WorkerGone, who: WorkerProc, context: str) -> StageFailure:
        status = {"timeout": TIMEOUT, "crash": CRASH}.get(exc.kind, INCORRECT)
        if exc.kind == "timeout":
            who.dump_stack()
            why = f"{self.stage} exceeded its limit of {self.job['limits'].get(self.stage, 0):g} s {context}"
        else:
            why = f"{exc.message} {context}"
        tail = who.output_tail().strip()
        tail = "\n".join(ln for ln in tail.splitlines() if not ln.startswith("Extension modules:"))[-1500:]
        failure = StageFailure(status, why + (f"\nlast output of the kernel's process:\n{tail}" if tail else ""))
        failure.worker_gone = True  # dead, hung or off the protocol: not to be asked again
        return failure

    def ask(self, w: WorkerProc, msg: dict[str, Any], context: str):
        try:
            return w.request(msg, self.deadline)
        except WorkerGone as exc:
            raise self.gone(exc, w, context)

    # -- slots -----------------------------------------------------------------------------------
    def slots(self, w: WorkerProc, shape: Shape, n: int) -> list[Slots]:
        """n input sets for one shape in w's arena (the arena is re-laid for every shape)."""
        w.arena.reset()
        b, s, d = shape.batch, shape.seqlen, shape.head_dim
        out = []
        for _ in range(n):
            (q, qs), (k, ks), (v, vs), (o, os_) = (w.arena.place((b, s, h, d), self.dtype) for h in
                                                   (shape.heads_q, shape.heads_kv, shape.heads_kv, shape.heads_q))
            out.append(Slots(q, k, v, o, {"q": qs, "k": ks, "v": vs, "out": os_}))
        return out

    def arena_bytes(self) -> int:
        rotate = max(1, int(self.s["rotate_inputs"]))
        need = 0
        for shape in self.suite + self.cshapes:
            b, s, d = shape.batch, shape.seqlen, shape.head_dim
            per = slot_bytes([(b, s, shape.heads_q, d), (b, s, shape.heads_kv, d), (b, s, shape.heads_kv, d),
                              (b, s, shape.heads_q, d)], self.dtype)
            need = max(need, per * (max(rotate, block_cap(self.s, self.device, per)) if shape in self.suite else 1))
        return need

    @staticmethod
    def load(slot: Slots, q, k, v) -> None:
        slot.q.copy_(q)
        slot.k.copy_(k)
        slot.v.copy_(v)

    def call_msg(self, slot: Slots, shape: Shape, *, scale=None, pass_out=False, profile=False, block=None):
        msg = {"op": "call", "t": slot.spec, "causal": shape.causal, "scale": scale, "pass_out": pass_out}
        if block is not None:  # a timing block: one call per slot, in this order
            del msg["t"]
            msg["ts"] = [sl.spec for sl in block]
        if profile:
            msg["profile"] = True
        if self.device == "cuda" and not self.armed:
            msg["lead_cycles"] = int(self.s.get("launch_cover_cycles", 0))
        return msg

    def call(self, w: WorkerProc, slot, inputs, msg: dict[str, Any], context: str,
             limit_s: Optional[float] = None) -> tuple[dict[str, Any], float, bool]:
        """One call of w on `inputs` written into `slot` (or a block: a list of slots and one of
        input sets): (its reply, the judge's wall ms, whether it was late to arm). Raises
        StageFailure when the worker dies or hangs past the stage's deadline, or past `limit_s`
        (a baseline or the incumbent must not hold up the stage)."""
        deadline = self.deadline if limit_s is None else min(self.deadline, time.monotonic() + limit_s)
        pairs = list(zip(slot, inputs)) if isinstance(slot, list) else [(slot, inputs)]
        self.snapshot = None
        for sl, _ in pairs:
            sl.out.fill_(float("nan"))
        if not self.armed or msg.get("profile"):
            for sl, inp in pairs:
                self.load(sl, *inp)
            self.flush.flush()
            self.sync()
            try:
                rep = w.request(msg, deadline)
            except WorkerGone as exc:
                raise self.gone(exc, w, context)
            return rep.data, rep.wall_ms, False
        token = w.arena.token
        while token == w.arena.token:  # the flag still holds the last one: that would release at once
            token = self.rng.getrandbits(31) | 1
        msg = {**msg, "arm": token}
        self.copy_ref([sl.out for sl, _ in pairs])  # outside the clock: its yardstick, once per size
        early = StageFailure(INCORRECT, f"the {w.role}'s process answered before its call was released "
                                        f"{context}: its reply did not wait for its work")
        try:
            nonce, t0 = w.send(msg)
            late = False
            try:
                first = w.receive("call", nonce, min(deadline, time.monotonic() + ARM_WAIT_S), t0,
                                  pause=False, more=True)
            except WorkerGone as exc:
                if exc.kind != "timeout":
                    raise
                first, late = None, True
            if first is not None and first.data.get("phase") != "armed":
                # Its final reply with no "armed" first: only an error may come that way (the call
                # raised before its work was queued); a result would be one made before the release.
                w.arena.release(token)
                w.pause()
                if first.data.get("error") or first.data.get("problem"):
                    return first.data, first.wall_ms, late
                raise early
            # The judge's clock runs from here: the inputs exist only from now on (work that did
            # not wait for the release computes on the previous call's values), and a kernel that
            # watches its slots to start the moment they are written is timed from the start too.
            t1 = time.perf_counter()
            for sl, inp in pairs:
                self.load(sl, *inp)
            self.flush.flush()
            self.sync()
            # Inside the clock, for everybody alike; what it took bounds the overhead's ceiling.
            self.last_load_ms = (time.perf_counter() - t1) * 1e3
            if w.pending_lines() >= (1 if first is not None else 2):
                # A result already there before the release: an honest worker is still waiting.
                w.arena.release(token)
                w.pause()
                raise early
            w.arena.release(token)
            if first is None:
                first = w.receive("call", nonce, deadline, t1, pause=False, more=True)
                if first.data.get("phase") != "armed":
                    w.pause()
                    if first.data.get("error") or first.data.get("problem"):
                        return first.data, first.wall_ms, late
                    raise early
            # The clock ends when the worker's GPU is done and the judge's GPU is free of its work:
            # at its "done" word (written by its stream after the last output), or at its reply
            # when it wrote none; either way only once a kernel of the judge's own has run with
            # nothing ahead of it, so work a worker left queued behind a "done" or a reply (a call
            # split in two launches that answers after the first) is inside its time.
            outs = [sl.out for sl, _ in pairs]
            seen = self.await_done(w, token, deadline)
            if seen:
                end = time.perf_counter()
                idle = self.settle(outs)
            done = w.receive("call", nonce, deadline, t1)
            if not seen:
                end = t1 + done.wall_ms / 1e3
                idle = self.settle(outs)
            self.last_end = {"done": seen, "tail_ms": (idle - end) * 1e3}
            return done.data, (idle - t1) * 1e3, late
        except WorkerGone as exc:
            raise self.gone(exc, w, context)

    def await_done(self, w: WorkerProc, token: int, deadline: float) -> bool:
        """Spin until the worker's "done" word holds `token` (True) or something is there to read
        on its channel, or the deadline (False: its reply, or its absence, decides)."""
        spin_until = time.perf_counter() + DONE_SPIN_S
        n = 0
        while True:
            if w.arena.done() == token:
                return True
            n += 1
            if n % 64 == 0:
                if w.readable() or time.monotonic() >= deadline:
                    return False
                if time.perf_counter() >= spin_until:
                    # A long call: nothing of a percent is lost by looking less often.
                    select.select([], [], [], 0.0001)

    def settle(self, outs: list[torch.Tensor]) -> float:
        """The end of a released call, as perf_counter(): the GPU drained of everybody's work, then
        the outputs copied into the judge's own memory (`self.snapshot`, what gets verified) by a
        copy that ran with nothing ahead of it or beside it. Work a worker queues after that
        cannot change what is verified, so the worker need not be stopped inside the clock."""
        ref = self.copy_ref(outs)
        views = self.snapshot_views(outs)
        stop = time.perf_counter() + DRAIN_LIMIT_S
        while True:
            self.drain()
            t0 = time.perf_counter()
            for dst, src in zip(views, outs):
                dst.copy_(src)
            self._drain_ev.record()
            self._drain_ev.synchronize()
            t = time.perf_counter()
            if (t - t0) * 1e3 <= COPY_SLOWER * ref + DRAIN_SLACK_MS or t >= stop:
                self.snapshot = views
                return t

    def snapshot_views(self, outs: list[torch.Tensor]) -> list[torch.Tensor]:
        need = sum(o.numel() * o.element_size() for o in outs)
        if self._snap_buf is None or self._snap_buf.numel() < need:
            self._snap_buf = None
            self._snap_buf = torch.empty(need, dtype=torch.uint8, device=self.device)
        views, at = [], 0
        for o in outs:
            n = o.numel() * o.element_size()
            views.append(self._snap_buf[at:at + n].view(o.dtype).view(o.shape))
            at += n
        return views

    def copy_ref(self, outs: list[torch.Tensor]) -> float:
        """What the snapshot of these outputs takes (ms, host-observed) on a GPU with nothing
        else on it: the fastest of a few, measured the first time a size is seen, outside any
        clock (called before the release, when only the judge's work can run)."""
        key = (len(outs), tuple(outs[0].shape), outs[0].dtype)
        if key not in self._copy_refs:
            views = self.snapshot_views(outs)
            lat = []
            for _ in range(5):
                self.drain()
                t0 = time.perf_counter()
                for dst, src in zip(views, outs):
                    dst.copy_(src)
                self._drain_ev.record()
                self._drain_ev.synchronize()
                lat.append((time.perf_counter() - t0) * 1e3)
            self._copy_refs[key] = min(lat)
        return self._copy_refs[key]

    def drain(self) -> float:
        """perf_counter() once a tiny kernel of the judge's own, queued now, has run with no other
        process's work ahead of it. Without MPS contexts take turns: a probe queued while another
        context's work runs completes only after that work, or after the time slice ends, and then
        it is slow and the judge queues another, until one is fast (or DRAIN_LIMIT_S)."""
        stop = time.perf_counter() + DRAIN_LIMIT_S
        fast = self.drain_fast if self.drain_fast is not None else 0.05
        while True:
            t0 = time.perf_counter()
            self._drain_buf.add_(1.0)
            self._drain_ev.record()
            self._drain_ev.synchronize()
            t = time.perf_counter()
            if (t - t0) * 1e3 <= fast or t >= stop:
                return t

    def untouched(self, slot: Slots, q, k, v) -> Optional[str]:
        for name, mine, theirs in (("q", q, slot.q), ("k", k, slot.k), ("v", v, slot.v)):
            if not torch.equal(mine, theirs):
                return name
        return None

    # -- checked calls ---------------------------------------------------------------------------
    def checked_call(self, w: WorkerProc, shape: Shape, *, sharp: bool = False, scale: Optional[float] = None,
                     pass_out: bool = False, rows_limit: Optional[int] = None, profile: bool = False,
                     compare_output: bool = True) -> float:
        """One call on fresh inputs in the form asked, compared with the reference (the compile
        stage only asks that the call runs: a wrong answer is the correctness stage's to report)."""
        (slot,) = self.slots(w, shape, 1)
        q, k, v = make_inputs(shape, self.device, self.dtype, self.fresh_seed(), SHARP_Q_STD if sharp else 1.0)
        where = describe(shape)
        reply, _, _ = self.call(w, slot, (q, k, v), self.call_msg(slot, shape, scale=scale, pass_out=pass_out,
                                                                   profile=profile), f"(attention() on {where})")
        if reply.get("error"):
            status = INCORRECT if reply.get("not_implemented") else (CRASH if reply.get("oom") else INCORRECT)
            raise StageFailure(status, f"attention() raised on {where}:\n{str(reply['error'])[:2000]}")
        if reply.get("problem"):
            raise StageFailure(INCORRECT, f"{str(reply['problem'])[:500]} on {where}")
        self.own_code_check(w, reply.get("kernels"))
        # A released call's outputs as the judge copied them when its clock ended.
        out = self.snapshot[0].clone() if self.snapshot else slot.out.clone()
        changed = self.untouched(slot, q, k, v)
        if changed:
            raise StageFailure(INCORRECT, f"attention() modified its input {changed} on {where}: "
                                          f"inputs are read-only")
        if not compare_output:
            return 0.0
        form = ("with softmax_scale" + (" and out=" if pass_out else "")) if scale is not None else "plain call"
        return self.verify(out, q, k, v, shape, scale, rows_limit, f"({form}) ",
                           unwritten_hint=pass_out)

    def verify(self, out, q, k, v, shape: Shape, scale: Optional[float], rows_limit: Optional[int],
               what: str = "", unwritten_hint: bool = False) -> float:
        rows = None
        if rows_limit:
            g = torch.Generator().manual_seed(self.rng.getrandbits(62))
            rows = sample_rows(shape.seqlen, rows_limit, g, self.device)
        ref = reference(q, k, v, shape.causal, scale if scale is not None else 1.0 / math.sqrt(shape.head_dim), rows)
        cmp = compare(out, ref, rows, self.tol)
        where = f"{what}on {describe(shape)}"
        if cmp.nonfinite:
            why = ("the output memory was NaN-poisoned before the call: NaN means elements left unwritten"
                   + (" (out= must be written in place)" if unwritten_hint else ""))
            raise StageFailure(INCORRECT, f"{cmp.nonfinite} of {cmp.numel} output elements are NaN/Inf {where} "
                                          f"({why}); first bad (batch, row, head) = {cmp.worst}")
        if cmp.error > self.tol:
            b, r, h = cmp.worst
            raise StageFailure(INCORRECT, (
                f"relative error {cmp.error:.2e} > tolerance {self.tol:.1e} {where}; "
                f"{100 * cmp.bad_row_fraction:.0f}% of the (batch, row, head) output vectors are off; "
                f"worst at batch {b}, query row {r}, head {h} (error {cmp.worst_error:.2e})"))
        return cmp.error

    def own_code_check(self, w: WorkerProc, kernels) -> None:
        if self.device != "cuda" or not self.s.get("own_code_only", True) or w is not self.cand:
            return
        why = owncode.maps_violation(self.maps_before, owncode.mapped_libraries(w.proc.pid))
        why = why or (owncode.kernel_violation(kernels) if kernels else None)
        if why:
            self.library_use(why)

    def library_use(self, why: str) -> None:
        self.result["own_code"] = False
        if self.job.get("allow_library"):
            self.note(f"not own code: the kernel {why}; it cannot be compared as ours against a library")
            return
        raise StageFailure(INCORRECT, f"the kernel {why}: candidates must run their own attention code "
                                      f"(evaluator.own_code_only); write the kernel instead of calling a library")

    # -- stages ----------------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        stages = self.job["stages"]
        t_start = time.perf_counter()
        try:
            try:
                import_s = self.stage_import()
                self.stage_compile(import_s)
                if "correctness" in stages:
                    self.stage_correctness()
                if "benchmark" in stages:
                    self.stage_benchmark()
                if "reverify" in stages and self.s["reverify"]:
                    self.stage_reverify()
                if self.cand is not None:
                    self.own_code_check(self.cand, None)
            except StageFailure as f:
                self.result.update(status=f.status, stage=self.stage, message=f.message)
        finally:
            self.close()
        self.result.setdefault("own_code", None if self.device != "cuda" else True)
        # Published only now: every input of this evaluation has been drawn and used.
        self.result["env"] = {"seed": self.seed, "sources": self.sources}
        self.result["wall_s"] = time.perf_counter() - t_start
        self.result["judge_s"] = {k: round(v, 3) for k, v in self.spent.items()}
        return self.result

    def close(self) -> None:
        for w in [self.cand, self.inc, self.null, *self.baselines.values()]:
            if w is not None:
                w.close()

    def probe(self) -> float:
        """A small piece of the judge's own GPU work, timed on its stream: slow only while another
        process has work on the GPU (contexts take turns without MPS)."""
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        self._probe_buf.add_(1.0)
        b.record()
        b.synchronize()
        return a.elapsed_time(b)

    def stage_import(self) -> float:
        t0 = self.enter("import")
        if self.device == "cuda":
            self.probe()
            self.idle_probe = statistics.median(self.probe() for _ in range(9))
            self.drain_fast = None
            lat = []
            for _ in range(21):
                t0 = time.perf_counter()
                lat.append((self.drain() - t0) * 1e3)
            # A probe that waited for a time slice takes ~ms; one that paid a switch between
            # contexts some tens of microseconds.
            self.drain_fast = 3 * statistics.median(lat) + DRAIN_SLACK_MS
        # Both kernels' bytes are read before any of their code runs: a candidate that rewrites
        # the incumbent's file at import (process isolation lets it) cannot change what is timed.
        source = Path(self.job["kernel"]).read_bytes()
        inc_source = Path(self.job["incumbent"]).read_bytes() if self.job.get("incumbent") else None
        self.sources = {"candidate": hashlib.sha256(source).hexdigest()}
        if inc_source is not None:
            self.sources["incumbent"] = hashlib.sha256(inc_source).hexdigest()
        try:  # what a package may hold is checked before any file of it is written
            cand_pkg = package.parse(source.decode(errors="replace"))
        except package.PackageError as exc:
            raise StageFailure(IMPORT_ERROR, f"the kernel is not a valid candidate: {exc}") from None
        if self.device == "cuda" and self.s.get("own_code_only", True):
            why = owncode.package_violation(dict(cand_pkg.files))
            if why:
                self.library_use(why)
        need = self.arena_bytes()
        self.cand = self.start_worker(WorkerSpec("candidate", self.device, kernel_source=source,
                                                  kernel_name=Path(self.job["kernel"]).name, arena_bytes=need))
        if inc_source is not None:
            self.inc = self.start_worker(WorkerSpec("incumbent", self.device, kernel_source=inc_source,
                                                     kernel_name=Path(self.job["incumbent"]).name, arena_bytes=need))
        if self.device == "cuda":
            for name in self.job["baselines"]:
                self.baselines[name] = self.start_worker(WorkerSpec(f"baseline:{name}", self.device, baseline=name,
                                                                    arena_bytes=need))
        elif self.job["baselines"]:
            for name in self.job["baselines"]:
                self.note(f"{name}: skipped (baselines are timed on CUDA only)")
        if "benchmark" in self.job["stages"]:
            # Our yardstick for the protocol's own cost (and, on a GPU, for which libraries a
            # process maps without calling any attention): trusted, and no kernel ever runs in it.
            self.null = self.start_worker(WorkerSpec("null", self.device, baseline="null", arena_bytes=need))
        self.result["isolation"] = self.cand.proc.isolation.__dict__.copy()
        ready = self.expect_ready(self.cand, "candidate")
        self.takes_out = bool(ready.get("takes_out"))
        if self.inc is not None:
            try:
                self.inc_takes_out = bool(self.expect_ready(self.inc, "incumbent").get("takes_out"))
            except StageFailure as f:
                self.drop_incumbent(f"import_error: {f.message}")
        for name in list(self.baselines):
            try:
                self.expect_ready(self.baselines[name], name)
            except StageFailure as f:
                self.note(f"{name}: unavailable ({f.message.splitlines()[0][:200]})")
                self.baselines.pop(name).close()
        if self.null is not None:
            self.expect_ready(self.null, "null", trusted=True)
        flags: dict[str, str] = {}  # our own workers that could not use the release flag
        refused: dict[str, str] = {}  # the kernels' workers that did not
        trusted_ok = 0
        # Sent to all, then read: they map the judge's memory at once.
        sent: dict[int, Any] = {}
        for w in [self.cand, self.inc, self.null, *self.baselines.values()]:
            if w is not None:
                try:
                    sent[id(w)] = w.send({"op": "map", "arena": w.arena.spec()})
                except WorkerGone as exc:
                    sent[id(w)] = exc
        for w in [self.cand, self.inc, self.null, *self.baselines.values()]:
            if w is None:
                continue
            try:
                how = sent[id(w)]
                if isinstance(how, WorkerGone):
                    raise how
                rep = w.receive("map", how[0], self.deadline, how[1])
            except WorkerGone as exc:
                if w is self.cand or w is self.null:
                    raise self.gone(exc, w, "(mapping the judge's memory)")
                self.lost(w, f"{exc.kind}: {exc.message}")
                continue
            if rep.data.get("error"):
                # Our own code failed to map the judge's memory: the machine's fault, never the kernel's.
                raise StageFailure(CRASH, f"the {w.role} worker could not map the judge's memory: "
                                          f"{str(rep.data['error']).splitlines()[-1][:300]}")
            if self.device == "cuda" and not rep.data.get("flag"):
                why = str(rep.data.get("flag_error") or "no release flag")
                if w is self.cand or w is self.inc:
                    refused[w.role] = why
                else:
                    flags[w.role] = why
            elif w is not self.cand and w is not self.inc:
                trusted_ok += 1
        if (self.device == "cuda" and refused and trusted_ok and not flags
                and self.s.get("gpu_release", "flag") == "flag"):
            # Our own workers use it here, so the machine can: only they may switch everyone to
            # the weaker timing, never a kernel's process by refusing.
            for role, why in refused.items():
                failure = StageFailure(INCORRECT, f"the {role}'s process refused the judge's release flag "
                                                  f"({why[:200]}), which every worker here must use")
                if role == "candidate":
                    raise failure
                self.drop_incumbent(f"incorrect: {failure.message}")
        if refused and (flags or not trusted_ok):
            flags.update(refused)
        if self.device == "cuda":
            self.armed = self.s.get("gpu_release", "flag") == "flag" and not flags
            self.result["timing"] = "release-flag" if self.armed else "launch-cover-spin"
            if flags and self.s.get("gpu_release", "flag") == "flag":
                role, why = next(iter(flags.items()))
                self.note(f"GPU calls timed without the release flag ({role}: {why[:160]}): a kernel can "
                          f"under-report its time by up to the launch-cover spin")
        if self.device == "cuda" and self.null is not None:
            self.maps_before = owncode.mapped_libraries(self.null.proc.pid)
        return self.leave("import", t0)

    def lost(self, w: WorkerProc, why: str) -> None:
        """A worker other than the candidate's died outside a timing loop."""
        if w is self.inc:
            self.drop_incumbent(why)
            return
        for name, b in list(self.baselines.items()):
            if b is w:
                self.note(f"{name}: no result ({why.splitlines()[0][:200]})")
                self.baselines.pop(name).close()

    def expect_ready(self, w: WorkerProc, who: str, trusted: bool = False) -> dict[str, Any]:
        try:
            try:
                ready = w.ready(self.deadline)
            finally:
                w.pause()
        except WorkerGone as exc:
            if trusted:
                raise StageFailure(CRASH, f"the judge's {who} worker did not start: {exc.message}")
            raise self.gone(exc, w, "(importing the kernel)")
        if ready.get("error"):
            if ready.get("kind") == "fatal" or trusted:
                # The worker's machine, not the kernel: no CUDA there, or our own code broke.
                raise StageFailure(CRASH, f"the {who} worker could not start: {str(ready['error'])[:500]}")
            msg = str(ready["error"])[:4000]
            raise StageFailure(IMPORT_ERROR, msg)
        return ready

    def drop_incumbent(self, why: str) -> None:
        if self.inc is not None:
            self.inc.close()
        self.inc = None
        for row in self.result["shapes"]:
            for key in ("incumbent_ratio", "incumbent_ratio_spread", "incumbent_tflops", "incumbent_ratio_se"):
                row.pop(key, None)
        self.result["incumbent_status"] = why[:2000]
        self.note("incumbent not compared: " + why.splitlines()[0][:200])

    def stage_compile(self, import_s: float) -> None:
        """The first call on a small shape: JIT-compiling kernels compile here."""
        t0 = self.enter("compile")
        shape = self.cshapes[0]
        try:
            self.checked_call(self.cand, shape, profile=self.device == "cuda" and not self.profile_late,
                              compare_output=False)
        except StageFailure as f:
            if f.status == INCORRECT and f.message.startswith("attention() raised") and "NotImplementedError" not in f.message:
                raise StageFailure(COMPILE_ERROR, f.message.replace("attention() raised", "first call (compile) raised", 1))
            raise
        self.result["compile_s"] = import_s + self.leave("compile", t0)
        if self.inc is not None:
            try:
                self.checked_call(self.inc, shape, compare_output=False)
            except StageFailure as f:
                self.drop_incumbent(f"compile_error: {f.message}")

    def stage_correctness(self) -> None:
        t0 = self.enter("correctness")
        # One of these calls, drawn now, is profiled too (the kernels it launches are listed for the
        # own-code rule): a tripwire for a kernel that calls a library only after its first call.
        gpu = self.device == "cuda" and not self.profile_late
        profiled = self.rng.randrange(3 * len(self.cshapes))
        for n, shape in enumerate(self.cshapes):
            self.progress(shape.label)
            scale = ODD_SCALE / math.sqrt(shape.head_dim)
            # Three fresh inputs in three call forms: a result cached from an earlier call fails,
            # a kernel that ignores softmax_scale fails, one that does not write out= fails.
            e1 = self.checked_call(self.cand, shape, scale=scale, pass_out=self.takes_out,
                                   profile=gpu and profiled == 3 * n)
            e2 = self.checked_call(self.cand, shape, sharp=True, profile=gpu and profiled == 3 * n + 1)
            e3 = self.checked_call(self.cand, shape, scale=1.0 / math.sqrt(shape.head_dim),
                                   profile=gpu and profiled == 3 * n + 2)
            self.result["checks"].append({"label": shape.label, "error": max(e1, e2, e3)})
        if self.inc is not None:
            try:
                for shape in self.cshapes:
                    self.checked_call(self.inc, shape)
            except StageFailure as f:
                self.drop_incumbent(f"{f.status}: {f.message}")
        self.leave("correctness", t0)

    def stage_reverify(self) -> None:
        """After timing, fresh inputs on every suite shape, in the benchmark's call form."""
        t0 = self.enter("reverify")
        rows = {s["label"]: s for s in self.result["shapes"]}
        for shape in self.suite:
            self.progress(shape.label)
            err = self.checked_call(self.cand, shape, rows_limit=SAMPLE_ROWS[self.device], pass_out=self.takes_out)
            if shape.label in rows:
                rows[shape.label]["error"] = err
        self.leave("reverify", t0)

    # -- benchmark -------------------------------------------------------------------------------
    def stage_benchmark(self) -> None:
        from avo.evaluate.judge import gpu_state

        t0 = self.enter("benchmark")
        if self.null is None:
            raise StageFailure(CRASH, "the judge's null worker is missing: the benchmark cannot check any clock")
        for shape in self.suite:
            self.progress(shape.label)
            before = gpu_state.read(self.device)
            self.pending_row = None
            try:
                row = self.bench_shape(shape)
            except StageFailure:
                if self.pending_row is not None:
                    self.result["shapes"].append(self.pending_row)
                raise
            row["gpu_state"] = {"before": before, "after": gpu_state.read(self.device)}
            self.result["shapes"].append(row)
            self.own_code_check(self.cand, None)  # a library loaded while timed is caught here
            if self.device == "cuda":
                torch.cuda.empty_cache()
        if self.profile_late:
            # The kernels a call launches, listed by the profiler, now that nothing is timed any
            # more: a suite shape drawn now, checked like any other call.
            shape = self.rng.choice(self.suite)
            self.progress(shape.label)
            self.checked_call(self.cand, shape, profile=True, rows_limit=SAMPLE_ROWS[self.device],
                              pass_out=self.takes_out)  # the timed calls' form: out= where taken
        if self.inc is not None:
            self.result["incumbent_status"] = OK
        self.leave("benchmark", t0)

    def bench_shape(self, shape: Shape) -> dict[str, Any]:
        rotate = max(1, int(self.s["rotate_inputs"]))
        repeats = max(1, int(self.s["repeats"]))
        sides = [Side("candidate", self.cand, False)]
        sides[0].takes_out = self.takes_out
        if self.inc is not None:
            sides.append(Side("incumbent", self.inc, False))
            sides[-1].takes_out = self.inc_takes_out
        sides += [Side(name, w, True) for name, w in self.baselines.items()]
        null = Side("null", self.null, True)
        sides.append(null)
        b, s_, d = shape.batch, shape.seqlen, shape.head_dim
        set_bytes = slot_bytes([(b, s_, shape.heads_q, d), (b, s_, shape.heads_kv, d), (b, s_, shape.heads_kv, d),
                                (b, s_, shape.heads_q, d)], self.dtype)
        cap = block_cap(self.s, self.device, set_bytes)
        for side in sides:
            side.sets = self.slots(side.worker, shape, max(rotate, cap))
        # The warm-up's inputs; every repeat then draws new ones, written into each side's slot
        # just before its own call: nothing cached by address, by content seen in the warm-up, or
        # by a previous call is right, and no process sees a repeat's inputs before its turn.
        with self.clocked("bench_inputs"):
            for i in range(rotate):
                inputs = make_inputs(shape, self.device, self.dtype, self.fresh_seed())
                for side in sides:
                    self.load(side.sets[i], *inputs)
            self.sync()
        with self.clocked("bench_warm_up"):
            null_ms = self.warm_up(sides, shape)
        calls = block_calls(self.s, cap, null_ms)
        if calls > 1 and self.armed and not null.failed:
            # The null worker warms up one call at a time, the GPU idle between them (H200: 0.27-
            # 0.29 ms a call where a block's calls took 0.21): one released block of its calls
            # says what a call takes where it is timed.
            in_block = self.null_block_ms(null, shape, calls, inputs)
            if in_block:
                calls = block_calls(self.s, cap, in_block)
        for side in sides:
            side.calls = calls
        idle_post = self.calibrate_post([inputs] * calls)
        copy_ms = self.calibrate_copy(inputs[0])
        # A trusted baseline is our code: one of its timed outputs is checked, drawn now.
        checked_trusted = self.rng.randrange(repeats)
        hogged, probes = 0, 0
        factor, slack = BUSY_AFTER
        n_sets = len(sides[0].sets)
        for r in range(repeats):
            # Slots of this repeat's block: consecutive, wrapping, so addresses rotate between repeats.
            idx = [(r * calls + j) % n_sets for j in range(calls)] if calls > 1 else [r % rotate]
            with self.clocked("bench_inputs"):
                inputs = [make_inputs(shape, self.device, self.dtype, self.fresh_seed()) for _ in idx]
                # Drawn now, not inside the first side's clock: the loads inside it would wait for
                # the generation (a block's B sets took ~1.6 ms on the H200 and made whoever came
                # first in a repeat look that much slower than its events).
                self.sync()
            for side in (sides if r % 2 == 0 else sides[::-1]):
                if not side.failed:
                    if self.idle_probe is not None and side is not sides[0]:
                        # Nobody's call is in flight now: GPU work here is a kernel's leftover,
                        # slowing whoever is timed next (SIGSTOP does not stop a GPU kernel).
                        probes += 1
                        with self.clocked("bench_probes"):
                            # The smaller of two: the first after another process's call can pay
                            # the switch between contexts (H200: an honest kernel's calls tripped
                            # one probe in ten); work still running slows both.
                            hogged += min(self.probe(), self.probe()) > factor * self.idle_probe + slack
                    self.timed_call(side, shape, idx, inputs, check=not side.trusted or (
                        r == checked_trusted and side is not null))
            if null.failed:
                raise StageFailure(CRASH, f"the judge's null worker failed: {null.failed.splitlines()[0][:300]}")
        if probes and hogged >= max(2, math.ceil(BUSY_CALLS * probes)):
            raise StageFailure(CRASH, (
                f"the GPU was busy with work nobody was being timed for before {hogged} of {probes} calls on "
                f"{describe(shape)} (a kernel left running by the candidate's or the incumbent's process, or "
                f"another user of this GPU): the timings of this evaluation cannot be trusted"))
        return self.summarize_shape(shape, sides, idle_post, copy_ms)

    def null_block_ms(self, null: Side, shape: Shape, calls: int, inputs) -> Optional[float]:
        """The null worker's median time per call in one released block of `calls` calls."""
        slots = null.sets[:calls]
        try:
            data, _, _ = self.call(null.worker, slots, [inputs] * len(slots),
                                   self.call_msg(slots[0], shape, block=slots, pass_out=True),
                                   f"(sizing blocks on {describe(shape)})",
                                   limit_s=OTHERS_CALL_LIMIT_S)
        except StageFailure:
            return None
        ms = data.get("ms")
        if not isinstance(ms, list) or not ms or not all(isinstance(x, (int, float)) for x in ms):
            return None
        return statistics.median(ms)

    def warm_up(self, sides: list[Side], shape: Shape) -> Optional[float]:
        """Warm every side up on this shape; the null worker's settled time per call (ms)."""
        null_ms = None
        min_ms = float(self.s["warmup_ms"])
        if self.device == "cpu":
            min_ms = min(min_ms, 250.0)
        cap = 4 * min_ms + 1000.0 if self.device == "cuda" else 2 * min_ms + 100.0
        kernel_ms = min_ms if not self.warmed else min(min_ms, LATER_WARMUP_MS)
        self.warmed = True
        rotate = max(1, int(self.s["rotate_inputs"]))
        for side in sides:
            calls = [self.call_msg(sl, shape, pass_out=True) for sl in side.sets[:rotate]]  # as timed
            wall0 = time.monotonic()
            try:
                rep = side.worker.request({"op": "warm", "calls": calls, "min_ms": min(kernel_ms, TRUSTED_WARMUP_MS)
                                           if side.trusted else kernel_ms, "cap_ms": cap},
                                          min(self.deadline, wall0 + cap / 1e3 + 60.0))
            except WorkerGone as exc:
                self.side_failed(side, self.gone(exc, side.worker, f"(warming up on {describe(shape)})"))
                continue
            data = rep.data
            if data.get("error") and side.trusted and shape.heads_q != shape.heads_kv and not side.expanded:
                # A backend that refuses GQA: its k/v heads repeated outside the timed calls.
                side.expanded = True
                self.note(f"{side.name}: GQA timed with k/v expanded to {shape.heads_q} heads "
                          f"(backend refused: {str(data['error']).splitlines()[-1][:120]})")
                try:
                    self.ask(side.worker, {"op": "gqa_expand"}, "(gqa)")
                    data = self.ask(side.worker, {"op": "warm", "calls": calls, "min_ms": min(min_ms, TRUSTED_WARMUP_MS),
                                                  "cap_ms": cap}, "(warm-up)").data
                except StageFailure as f:  # a baseline that died is a missing column, not a verdict
                    self.side_failed(side, f)
                    continue
            if data.get("error") or data.get("problem"):
                why = str(data.get("error") or data.get("problem"))
                self.side_failed(side, StageFailure(INCORRECT, f"attention() raised while timing {describe(shape)}:\n{why[:2000]}"))
            elif not data.get("settled"):
                self.note(f"warm-up of {side.name} did not settle within its cap on {shape.label}")
            if side.name == "null" and isinstance(data.get("ms"), (int, float)):
                null_ms = float(data["ms"])
        return null_ms

    def side_failed(self, side: Side, f: StageFailure) -> None:
        if side.name == "candidate":
            raise f
        side.failed = f.message
        if side.name == "incumbent":
            self.drop_incumbent(f"{f.status}: {f.message}")
            return
        self.note(f"{side.name}: no result ({f.message.splitlines()[0][:200]})")
        if getattr(f, "worker_gone", False) and side.name in self.baselines:
            # Dead or hung: it would hold up every later call of the stage.
            self.baselines.pop(side.name).close()

    def post_call(self, slots: list[Slots], inputs: list) -> tuple[Optional[str], float]:
        """The input check of a sample's calls, timed on the judge's own stream: (the input
        changed, ms)."""
        if self.device == "cuda":
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
        t0 = time.perf_counter()
        changed = None
        for sl, inp in zip(slots, inputs):
            changed = changed or self.untouched(sl, *inp)
        if self.device == "cuda":
            b.record()
            b.synchronize()
            return changed, a.elapsed_time(b)
        return changed, (time.perf_counter() - t0) * 1e3

    def calibrate_post(self, sets: list) -> float:
        """The post-call work of a sample on an idle GPU, on the judge's own memory only (no
        worker's slot, so no worker's leftover work can slow the yardstick down)."""
        mine = [t.clone() for t in sets[0]]
        posts = []
        for _ in range(5):
            if self.device == "cuda":
                a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                a.record()
                for inputs in sets:
                    all(torch.equal(x, y) for x, y in zip(mine, inputs))
                b.record()
                b.synchronize()
                posts.append(a.elapsed_time(b))
            else:
                t0 = time.perf_counter()
                for inputs in sets:
                    all(torch.equal(x, y) for x, y in zip(mine, inputs))
                posts.append((time.perf_counter() - t0) * 1e3)
        return statistics.median(posts)

    def calibrate_copy(self, like: torch.Tensor) -> float:
        """What copying one output costs (ms), timed by the judge: a kernel without out= pays it
        per call outside its events (the clock check allows it); the judge's own snapshot of a
        block's outputs, inside everyone's clock, costs about as much (the overhead's ceiling)."""
        src, dst = torch.empty_like(like), torch.empty_like(like)
        times = []
        for _ in range(5):
            if self.device == "cuda":
                a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                a.record()
                torch.mul(src, 1, out=dst)  # as the worker delivers an output (worker/__main__.py)
                b.record()
                b.synchronize()
                times.append(a.elapsed_time(b))
            else:
                t0 = time.perf_counter()
                dst.copy_(src)
                times.append((time.perf_counter() - t0) * 1e3)
        return statistics.median(times)

    def timed_call(self, side: Side, shape: Shape, idx: list[int], inputs: list, check: bool) -> None:
        """One timed sample of `side`: a call, or a block of calls (one per slot in `idx`)."""
        slots = [side.sets[i] for i in idx]
        block = len(slots) > 1
        where = describe(shape)
        # Every side is handed its slots as out=: a kernel that takes it writes there itself, one
        # that does not has its result copied by its worker, inside its wall time. The null worker
        # writes its slots inside its events, so the overhead subtracted from everyone's wall time
        # holds no copy a kernel could skip (by writing the slot behind its worker's back).
        msg = self.call_msg(slots[0], shape, block=slots if block else None, pass_out=True)
        self.last_load_ms = 0.0
        self.last_end = {}
        try:
            with self.clocked("bench_calls"):
                data, wall, late = self.call(side.worker, slots if block else slots[0], inputs if block else inputs[0],
                                             msg, f"(timing {where})",
                                             limit_s=None if side.name == "candidate" else OTHERS_CALL_LIMIT_S)
        except StageFailure as f:
            self.side_failed(side, f)
            return
        if data.get("error") or data.get("problem"):
            why = str(data.get("error") or data.get("problem"))
            self.side_failed(side, StageFailure(INCORRECT, f"attention() raised while timing {where}:\n{why[:2000]}"))
            return
        side.late += late
        if late and not side.trusted and side.late >= 2:
            self.side_failed(side, StageFailure(INCORRECT, (
                f"attention() did not return within {ARM_WAIT_S:g} s of being called on {where}, twice, "
                f"while timed: it waits for the GPU inside the call (torch.cuda.synchronize(), .item(), "
                f".cpu(), a blocking copy) or compiles every call; timed calls must only queue GPU work")))
            return
        with self.clocked("bench_input_checks"):
            changed, post = self.post_call(slots, inputs)
        if changed and side.name != "null":
            self.side_failed(side, StageFailure(INCORRECT, f"attention() modified its input {changed} while timed on "
                                                           f"{where}: inputs are read-only"))
            return
        ms = _times(data.get("ms"), len(slots) if block else None)
        if ms is None:
            self.side_failed(side, StageFailure(INCORRECT, "the kernel's process sent no time for a timed call"))
            return
        side.reported.append(ms)
        side.wall.append(wall)
        side.load.append(self.last_load_ms)
        if self.last_end:
            side.tail.append(float(self.last_end["tail_ms"]))
            side.done.append(bool(self.last_end["done"]))
        host = data.get("host_ms")
        if isinstance(host, list) and len(host) == 2 and all(isinstance(x, (int, float)) for x in host):
            side.host.append([float(x) for x in host])
        side.post.append(post)
        if check:
            # Every timed output of a kernel, on rows drawn only now: nothing a call can observe
            # tells a checked call from another. A block's outputs share the rows' budget.
            rows = SAMPLE_ROWS[self.device] if not block else max(BLOCK_MIN_ROWS,
                                                                  math.ceil(SAMPLE_ROWS[self.device] / len(slots)))
            try:
                with self.clocked("bench_output_checks"):
                    outs = self.snapshot or [sl.out for sl in slots]
                    for o, inp in zip(outs, inputs):
                        self.verify(o, *inp, shape, None, rows, "(an output timed in the benchmark) ")
            except StageFailure as f:
                self.side_failed(side, f)

    def overhead(self, null: Side, copy_ms: float = 0.0) -> tuple[float, float]:
        """(median, high) ms a timed sample costs beyond its reported time when nobody lies: the
        null worker's, on this shape, interleaved with everybody's samples; high (reported, not
        used by the clamp) is its p90, but at most GAP_SLACK above its median."""
        gaps = [w - r for r, w in zip(null.reported, null.wall)]
        if not gaps:
            raise StageFailure(CRASH, "the judge's null worker timed no call")
        o_med, o_hi = statistics.median(gaps), percentile(gaps, 0.9)
        # Beside the reply path: what the judge itself spent writing the inputs inside its clock
        # (its own measure), and its snapshot of the outputs (copies; the null worker's own copies
        # into its slots are inside its events since 2026-12-04, so this ceiling is looser than it was).
        load = statistics.median(null.load) if null.load else 0.0
        cap = OVERHEAD_CEILING[self.device] + load + BLOCK_COPY_ALLOWANCE * null.calls * copy_ms
        if o_hi > cap:
            # A slowed null worker (a same-uid process can renice it without bubblewrap) must not
            # widen what a kernel may under-report.
            self.note(f"the null worker's overhead ({o_hi:.3f} ms at p90) exceeded {cap:g} ms: capped")
        o_hi = min(o_hi, o_med + GAP_SLACK[self.device]) if GAP_SLACK[self.device] else o_hi
        return min(o_med, cap), min(o_hi, cap)

    def used_times(self, side: Side, o_med: float) -> list[float]:
        """Per sample: a trusted baseline's own events. A kernel's time on a GPU is the judge's
        clock alone, its wall time less the null worker's median overhead: its events only face the
        clock check. Taking the larger of the two (as on a CPU) leaks: a liar's events make it the
        clock's time on every sample, an honest kernel's make it the larger on samples whose
        overhead fell below the median, so an identical liar came out ~0.5 % ahead per shape (in
        simulation, 8 % of single-shape confirmations accepted against 1 % here). On a CPU, where a
        loaded machine's reply jitter is as large as a smoke call, the events keep the figure
        usable, and the clamp at the median bounds what they can hide."""
        if side.trusted:
            return list(side.reported)
        if self.device == "cuda":
            return [wall - o_med for wall in side.wall]
        return [max(rep, wall - o_med) for rep, wall in zip(side.reported, side.wall)]

    def check_clock(self, side: Side, shape: Shape, o_med: float, copy_ms: float = 0.0) -> None:
        if side.trusted or not side.reported:
            return
        rep = statistics.median(side.reported)
        # A kernel without out= has its outputs copied outside its events (the null worker does
        # not): allowed here, as the judge timed that copy. Its time still holds the copies. (A
        # worker that says it takes out= and does not only loosens this check, not its time.)
        copies = 0.0 if side.takes_out else side.calls * copy_ms
        est = statistics.median(side.wall) - o_med - GAP_SLACK[self.device] - copies
        share, slack = CLOCK_FLOOR[self.device]
        if rep < share * est - slack:
            n = side.calls
            per = f"per block of {n} calls" if n > 1 else "per call"
            self.side_failed(side, StageFailure(INCORRECT, (
                f"the {side.name}'s process reported {rep:.3f} ms {per} on {describe(shape)} but the judge's "
                f"clock saw {est:.3f} ms: its timing was tampered with (patched clocks or events), or its work "
                f"ran outside torch.cuda.current_stream()")))

    def check_busy_after(self, side: Side, shape: Shape, idle_post: float) -> None:
        if self.device != "cuda" or side.trusted or not side.post:
            return
        factor, slack = BUSY_AFTER
        busy = [p for p in side.post if p > factor * idle_post + slack]
        if len(busy) >= max(2, math.ceil(BUSY_CALLS * len(side.post))):
            self.side_failed(side, StageFailure(INCORRECT, (
                f"the GPU was still busy with the {side.name}'s work after attention() returned on {describe(shape)} "
                f"in {len(busy)} of {len(side.post)} calls (the judge's own work took up to {max(busy):.3f} ms instead "
                f"of {idle_post:.3f}): finish all work on torch.cuda.current_stream() before returning")))

    def summarize_shape(self, shape: Shape, sides: list[Side], idle_post: float,
                        copy_ms: float = 0.0) -> dict[str, Any]:
        null = sides[-1]
        sides = sides[:-1]
        o_med, o_hi = self.overhead(null, copy_ms)
        row = self.shape_row(shape, sides, o_med)
        n = null.calls
        # Per call (a block's overhead shared by its calls), as the row's times are; per_block as
        # the judge's clock saw it: its median is what the times subtract and the check allows.
        row["overhead_ms"] = {"median": o_med / n, "high": o_hi / n, "calls_per_block": n,
                              "per_block": {"median": o_med, "high": o_hi, "copy": copy_ms,
                                            "load": statistics.median(null.load) if null.load else None},
                              "post_idle": idle_post,
                              "post": {s.name: statistics.median(s.post) for s in sides if s.post},
                              "load": {s.name: statistics.median(s.load) for s in sides if s.load},
                              # How each side's clock ended: the share of samples ended by the
                              # "done" word, and the median wait from that end to a drained GPU.
                              "end": {s.name: {"done": sum(s.done) / len(s.done), "tail": statistics.median(s.tail)}
                                      for s in sides + [null] if s.tail},
                              "host": {s.name: [statistics.median(h[0] for h in s.host),
                                                statistics.median(h[1] for h in s.host)] for s in sides if s.host}}
        self.pending_row = row  # kept in the result even when a check below fails
        for side in sides:
            if not side.failed:
                self.check_clock(side, shape, o_med, copy_ms)
                self.check_busy_after(side, shape, idle_post)
        if any(s.failed for s in sides[1:]):  # a side dropped by a check: its columns go
            row = self.shape_row(shape, sides, o_med)
            row["overhead_ms"] = self.pending_row["overhead_ms"]
        return row

    def shape_row(self, shape: Shape, sides: list[Side], o_med: float) -> dict[str, Any]:
        cand = sides[0]
        n = cand.calls
        times = [x / n for x in self.used_times(cand, o_med)]  # per call
        t = statistics.median(times)
        if t <= 0:
            raise StageFailure(INCORRECT, f"the candidate's timed calls of {describe(shape)} took no time by every "
                                          f"clock: nothing was measured")
        row: dict[str, Any] = {
            "label": shape.label, "shape": _shape_dict(shape), "time_ms": t,
            "wall_ms": statistics.median(cand.wall) / n, "reported_ms": statistics.median(cand.reported) / n,
            "tflops": shape.flops / (t * 1e-3) / 1e12, "spread": spread(times), "baselines": {},
        }
        for side in sides[1:]:
            if side.failed or len(side.reported) != len(cand.reported):
                if side.name != "incumbent" and not side.failed:
                    self.note(f"{side.name}: no result on {shape.label}")
                if side.name != "incumbent":
                    row["baselines"][side.name] = None
                continue
            other = [x / n for x in self.used_times(side, o_med)]
            if min(times) <= 0 or min(other) <= 0:
                raise StageFailure(INCORRECT, f"a timed call of {describe(shape)} took no time by every clock: "
                                              f"nothing was measured")
            ratios = [to / tc for tc, to in zip(times, other)]
            if side.name == "incumbent":
                row["incumbent_ratio"] = statistics.median(ratios)
                row["incumbent_ratio_spread"] = percentile(ratios, 0.8) - percentile(ratios, 0.2)
                row["incumbent_ratio_se"] = block_se(ratios)
                row["incumbent_tflops"] = shape.flops / (statistics.median(other) * 1e-3) / 1e12
            else:
                row["baselines"][side.name] = shape.flops / (statistics.median(other) * 1e-3) / 1e12
                row.setdefault("baseline_ratios", {})[side.name] = statistics.median(ratios)
                row.setdefault("baseline_ratio_se", {})[side.name] = block_se(ratios)
        return row


def block_cap(settings: dict[str, Any], device: str, set_bytes: int) -> int:
    """The most calls a timing block may have on a shape whose input set takes `set_bytes` (the
    arenas are laid out for them before anything is timed)."""
    forced = int(settings.get("timing_block_calls", 0) or 0)
    if forced > 0:
        return forced
    if device != "cuda" or float(settings.get("timing_block_ms", 0.0)) <= 0:
        return 1
    return max(1, min(int(settings.get("timing_block_max", 16)), BLOCK_BYTES // max(1, set_bytes)))


def block_calls(settings: dict[str, Any], cap: int, null_ms: Optional[float]) -> int:
    """Calls per timing block: enough for evaluator.timing_block_ms of the trusted null worker's
    work on the shape (torch's SDPA; a candidate cannot make its own blocks shorter), at most
    `cap`; every side of the shape gets the same."""
    forced = int(settings.get("timing_block_calls", 0) or 0)
    if forced > 0:
        return min(forced, cap)
    if cap <= 1:
        return 1
    if not null_ms or null_ms <= 0 or not math.isfinite(null_ms):
        return cap
    return max(1, min(cap, math.ceil(float(settings["timing_block_ms"]) / null_ms)))


def _times(value: Any, n: Optional[int]) -> Optional[float]:
    """A sample's reported time (ms): one call's number, or the sum of a block's n numbers; None
    when the reply does not say. A negative or non-finite number counts as no time at all (the
    judge's clock then decides)."""
    if n is None:
        value = [value]
    elif not isinstance(value, list) or len(value) != n:
        return None
    total = 0.0
    for x in value:
        try:
            x = float(x)
        except (TypeError, ValueError):
            return None
        total += x if math.isfinite(x) and x >= 0 else 0.0
    return total


def block_se(ratios: list[float], blocks: int = 5) -> Optional[float]:
    """Standard error of log(median ratio), the larger of two estimates: from the scatter of the
    single ratios, and from the scatter of the medians of consecutive blocks of them, which also
    sees the slow drift of the clocks over the measurement that single ratios hide."""
    within = median_log_se(ratios)
    if within is None or len(ratios) < 2 * blocks:
        return within
    size = len(ratios) // blocks
    meds = [math.log(statistics.median(ratios[b * size:(b + 1) * size])) for b in range(blocks)]
    between = statistics.stdev(meds) / math.sqrt(blocks)
    return max(within, between)


def _shape_dict(shape: Shape) -> dict[str, Any]:
    return {"batch": shape.batch, "seqlen": shape.seqlen, "heads_q": shape.heads_q,
            "heads_kv": shape.heads_kv, "head_dim": shape.head_dim, "causal": shape.causal}
