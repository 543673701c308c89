"""The judge: the trusted side of an evaluation. It alone owns what a verdict depends on.

It draws the inputs from a secret seed, keeps private copies of them, computes the reference,
holds the tolerance and the comparison, keeps its own clock, and decides. The kernels it judges
(candidate, incumbent) and the baselines each run in a worker process of their own
(workers.py), under a sandbox (sandbox.py), on memory the judge lends each of them (arena.py).

One call of a kernel, from the judge's side:
  write fresh inputs into the worker's slots and NaN into its output slot; flush L2 (CUDA)
  -> request "call" (the worker runs, times itself with events, copies the output into the slot)
  -> pause the worker's processes (SIGSTOP), snapshot the output slot, check that q/k/v are
     byte-identical to the private copies, time that post-call work on the judge's own stream.
Which timed calls are verified is drawn after all repeats of a shape ran. The worker's reported
time is bounded below by the judge's wall clock minus the protocol overhead measured on trusted
workers; the post-call work, slowed down only if the GPU is still busy with the worker's work,
catches kernels that return before they finish.
"""

from __future__ import annotations

import math
import random
import secrets
import statistics
import time
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
from avo.evaluate.result import COMPILE_ERROR, CRASH, IMPORT_ERROR, INCORRECT, OK, TIMEOUT
from avo.suites import Shape

SAMPLE_ROWS = {"cuda": 256, "cpu": 512}
SHARP_Q_STD = 3.0
# A scale the kernel must honour: not 1/sqrt(d), not 1.
ODD_SCALE = 0.8
# The worker's median reported time below this share of what the judge's clock allows (minus an
# absolute slack) is a false report. Loose on a CPU: a loaded machine delays replies.
CLOCK_FLOOR = {"cuda": (0.8, 0.1), "cpu": (0.5, 2.0)}
# Post-call work slower than this (times the same work on an idle GPU, plus ms) means the GPU
# was still busy with the worker's launches after its call had returned.
BUSY_AFTER = (1.5, 0.05)
# Protocol overhead allowed when no trusted worker is there to measure it (ms). Honest calls of
# 128 MiB outputs on an H200 cost 0.75-0.9 ms beyond their events (bench/results/h200_2026-12-01_*).
OVERHEAD_CAP = {"cuda": 1.0, "cpu": 3.0}
FALLBACK_GAP = {"cuda": 0.8, "cpu": 1.5}
SNAPSHOT_BUDGET_BYTES = 8 << 30


class StageFailure(Exception):
    def __init__(self, status: str, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


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
        self.snapshots: list[Optional[torch.Tensor]] = []
        self.failed: Optional[str] = None
        self.expanded = False


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
        self.baselines: dict[str, WorkerProc] = {}
        self.maps_before: set[str] = set()
        self.overhead_ms: Optional[tuple[float, float]] = None
        self.pending_row: Optional[dict[str, Any]] = None
        self.lead_ms = 0.0
        self.flush = L2Flush(self.device, self.s["l2_flush"])

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
        return StageFailure(status, why + (f"\nlast output of the kernel's process:\n{tail}" if tail else ""))

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
            need = max(need, per * (rotate if shape in self.suite else 1))
        return need

    @staticmethod
    def load(slot: Slots, q, k, v) -> None:
        slot.q.copy_(q)
        slot.k.copy_(k)
        slot.v.copy_(v)

    def call_msg(self, slot: Slots, shape: Shape, *, scale=None, pass_out=False, profile=False, epoch=0):
        return {"op": "call", "t": slot.spec, "causal": shape.causal, "scale": scale, "pass_out": pass_out,
                "profile": profile, "epoch": epoch, "lead_cycles": int(self.s.get("launch_cover_cycles", 0))}

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
        self.load(slot, q, k, v)
        slot.out.fill_(float("nan"))
        self.sync()
        where = describe(shape)
        reply = self.ask(w, self.call_msg(slot, shape, scale=scale, pass_out=pass_out, profile=profile),
                         f"(attention() on {where})").data
        if reply.get("error"):
            status = INCORRECT if reply.get("not_implemented") else (CRASH if reply.get("oom") else INCORRECT)
            raise StageFailure(status, f"attention() raised on {where}:\n{str(reply['error'])[:2000]}")
        if reply.get("problem"):
            raise StageFailure(INCORRECT, f"{str(reply['problem'])[:500]} on {where}")
        self.own_code_check(w, reply.get("kernels"))
        out = slot.out.clone()
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
        self.result["env"] = {"seed": self.seed}
        self.result["wall_s"] = time.perf_counter() - t_start
        return self.result

    def close(self) -> None:
        for w in [self.cand, self.inc, *self.baselines.values()]:
            if w is not None:
                w.close()

    def stage_import(self) -> float:
        t0 = self.enter("import")
        source = Path(self.job["kernel"]).read_bytes()
        if self.device == "cuda" and self.s.get("own_code_only", True):
            why = owncode.static_violation(source.decode(errors="replace"))
            if why:
                self.library_use(why)
        need = self.arena_bytes()
        self.cand = self.start_worker(WorkerSpec("candidate", self.device, kernel_source=source,
                                                  kernel_name=Path(self.job["kernel"]).name, arena_bytes=need))
        inc_source = Path(self.job["incumbent"]).read_bytes() if self.job.get("incumbent") else None
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
        self.result["isolation"] = self.cand.proc.isolation.__dict__.copy()
        ready = self.expect_ready(self.cand, "candidate")
        self.takes_out = bool(ready.get("takes_out"))
        if self.inc is not None:
            try:
                self.expect_ready(self.inc, "incumbent")
            except StageFailure as f:
                self.drop_incumbent(f"import_error: {f.message}")
        for name in list(self.baselines):
            try:
                self.expect_ready(self.baselines[name], name)
            except StageFailure as f:
                self.note(f"{name}: unavailable ({f.message.splitlines()[0][:200]})")
                self.baselines.pop(name).close()
        for w in [self.cand, self.inc, *self.baselines.values()]:
            if w is not None:
                self.ask(w, {"op": "map", "arena": w.arena.spec()}, "(mapping the judge's memory)")
        self.maps_before = owncode.mapped_libraries(self.cand.proc.pid)
        return self.leave("import", t0)

    def expect_ready(self, w: WorkerProc, who: str) -> dict[str, Any]:
        try:
            ready = w.ready(self.deadline)
        except WorkerGone as exc:
            raise self.gone(exc, w, "(importing the kernel)")
        finally:
            w.pause()
        if ready.get("error"):
            kind = ready.get("kind")
            if kind == "fatal":
                raise RuntimeError(str(ready["error"]))
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
            self.checked_call(self.cand, shape, profile=self.device == "cuda", compare_output=False)
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
        for shape in self.cshapes:
            self.progress(shape.label)
            scale = ODD_SCALE / math.sqrt(shape.head_dim)
            # Three fresh inputs in three call forms: a result cached from an earlier call fails,
            # a kernel that ignores softmax_scale fails, one that does not write out= fails.
            e1 = self.checked_call(self.cand, shape, scale=scale, pass_out=self.takes_out)
            e2 = self.checked_call(self.cand, shape, sharp=True)
            e3 = self.checked_call(self.cand, shape, scale=1.0 / math.sqrt(shape.head_dim))
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
            err = self.checked_call(self.cand, shape, rows_limit=SAMPLE_ROWS[self.device])
            if shape.label in rows:
                rows[shape.label]["error"] = err
        self.leave("reverify", t0)

    # -- benchmark -------------------------------------------------------------------------------
    def stage_benchmark(self) -> None:
        from avo.evaluate.judge import gpu_state

        t0 = self.enter("benchmark")
        self.overhead_ms = self.measure_overhead()
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
            if self.device == "cuda":
                torch.cuda.empty_cache()
        if self.inc is not None:
            self.result["incumbent_status"] = OK
        self.leave("benchmark", t0)

    def measure_overhead(self) -> tuple[float, float]:
        """(median, p90) ms of a call with no work, on a trusted worker (a baseline); without one,
        a fixed allowance (the candidate's own pings could be slowed to widen it)."""
        self.lead_ms = self.time_lead()
        trusted = next(iter(self.baselines.values()), None)
        if trusted is None:
            return 0.0, 0.0  # overhead() falls back to fixed allowances
        try:
            walls = [self.ask(trusted, {"op": "ping"}, "(ping)").wall_ms for _ in range(30)]
        except StageFailure:
            return 0.0, 0.0  # the baseline died: overhead() falls back to fixed allowances
        return statistics.median(walls), percentile(walls, 0.9)

    def time_lead(self) -> float:
        """How long the launch-covering spin lasts on this GPU now, on the judge's own clock."""
        cycles = int(self.s.get("launch_cover_cycles", 0))
        if self.device != "cuda" or cycles <= 0:
            return 0.0
        times = []
        for _ in range(3):
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            torch.cuda._sleep(cycles)
            b.record()
            b.synchronize()
            times.append(a.elapsed_time(b))
        return min(times)

    def bench_shape(self, shape: Shape) -> dict[str, Any]:
        rotate = max(1, int(self.s["rotate_inputs"]))
        repeats = max(1, int(self.s["repeats"]))
        sides = [Side("candidate", self.cand, False)]
        if self.inc is not None:
            sides.append(Side("incumbent", self.inc, False))
        sides += [Side(name, w, True) for name, w in self.baselines.items()]
        for side in sides:
            side.sets = self.slots(side.worker, shape, rotate)
        # Inputs come from secret seeds; a timed output is verified against inputs re-made from
        # its repeat's seed, so the judge keeps only the current sets and the output snapshots.
        seeds = [self.fresh_seed() for _ in range(rotate)]
        inputs = [make_inputs(shape, self.device, self.dtype, sd) for sd in seeds]
        for i, (q, k, v) in enumerate(inputs):
            for side in sides:
                self.load(side.sets[i], q, k, v)
        self.sync()
        out_bytes = sides[0].sets[0].out.numel() * sides[0].sets[0].out.element_size()
        kernels = sum(1 for s in sides if not s.trusted)
        if self.device == "cpu" or repeats * out_bytes * kernels <= SNAPSHOT_BUDGET_BYTES:
            keep = set(range(repeats))
        else:  # too many to keep: a secret subset, drawn before (the worker cannot see it either way)
            keep = set(self.rng.sample(range(repeats), max(3, SNAPSHOT_BUDGET_BYTES // (out_bytes * kernels))))
        keep_trusted = set(self.rng.sample(range(repeats), min(2, repeats)))
        self.warm_up(sides, shape)
        copy_ms, idle_post = self.calibrate_post(sides[0], inputs[0])
        epoch = 1
        repeat_seed: list[int] = []
        for r in range(repeats):
            i = r % rotate
            # New values for every repeat, written just before it: nothing cached by address, by
            # content seen in the warm-up, or by a previous call is right. (Rotating slots still
            # keeps the previous inputs out of the L2 of this one.)
            seeds[i] = self.fresh_seed()
            inputs[i] = make_inputs(shape, self.device, self.dtype, seeds[i])
            for side in sides:
                if not side.failed:
                    self.load(side.sets[i], *inputs[i])
            epoch += 1
            repeat_seed.append(seeds[i])
            for side in (sides if r % 2 == 0 else sides[::-1]):
                if not side.failed:
                    # A baseline is our code: one snapshot of it is checked, so two are kept.
                    kept = r in keep_trusted if side.trusted else r in keep
                    self.timed_call(side, shape, i, inputs[i], epoch, keep=kept)
        self.verify_timed(sides, shape, repeat_seed)
        return self.summarize_shape(shape, sides, copy_ms, idle_post)

    def warm_up(self, sides: list[Side], shape: Shape) -> None:
        min_ms = float(self.s["warmup_ms"])
        if self.device == "cpu":
            min_ms = min(min_ms, 250.0)
        cap = 4 * min_ms + 1000.0 if self.device == "cuda" else 2 * min_ms + 100.0
        for side in sides:
            calls = [self.call_msg(sl, shape) for sl in side.sets]
            wall0 = time.monotonic()
            try:
                rep = side.worker.request({"op": "warm", "calls": calls, "min_ms": min_ms if side.name == "candidate"
                                           or side.name == "incumbent" else min(min_ms, 500.0), "cap_ms": cap},
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
                    data = self.ask(side.worker, {"op": "warm", "calls": calls, "min_ms": min(min_ms, 500.0),
                                                  "cap_ms": cap}, "(warm-up)").data
                except StageFailure as f:  # a baseline that died is a missing column, not a verdict
                    self.side_failed(side, f)
                    continue
            if data.get("error") or data.get("problem"):
                why = str(data.get("error") or data.get("problem"))
                self.side_failed(side, StageFailure(INCORRECT, f"attention() raised while timing {describe(shape)}:\n{why[:2000]}"))
            elif not data.get("settled"):
                self.note(f"warm-up of {side.name} did not settle within its cap on {shape.label}")

    def side_failed(self, side: Side, f: StageFailure) -> None:
        if side.name == "candidate":
            raise f
        side.failed = f.message
        if side.name == "incumbent":
            self.drop_incumbent(f"{f.status}: {f.message}")
        else:
            self.note(f"{side.name}: no result ({f.message.splitlines()[0][:200]})")

    def post_call(self, side: Side, slot: Slots, inputs, keep: bool) -> tuple[Optional[torch.Tensor], Optional[str], float]:
        """Snapshot + input check, timed on the judge's own stream."""
        if self.device == "cuda":
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
        t0 = time.perf_counter()
        snap = slot.out.clone() if keep else None
        changed = self.untouched(slot, *inputs)
        if self.device == "cuda":
            b.record()
            b.synchronize()
            return snap, changed, a.elapsed_time(b)
        return snap, changed, (time.perf_counter() - t0) * 1e3

    def calibrate_post(self, side: Side, inputs) -> tuple[float, float]:
        """(one output-sized copy, the whole post-call work) in ms with nobody else running:
        the worker's own copy of its output costs the first, the judge's check the second."""
        slot = side.sets[0]
        copies, posts = [], []
        for _ in range(5):
            if self.device == "cuda":
                a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                a.record()
                slot.out.clone()
                b.record()
                b.synchronize()
                copies.append(a.elapsed_time(b))
            else:
                t0 = time.perf_counter()
                slot.out.clone()
                copies.append((time.perf_counter() - t0) * 1e3)
            posts.append(self.post_call(side, slot, inputs, keep=True)[2])
        return statistics.median(copies), statistics.median(posts)

    def timed_call(self, side: Side, shape: Shape, i: int, inputs, epoch: int, keep: bool) -> None:
        slot = side.sets[i]
        slot.out.fill_(float("nan"))
        self.flush.flush()
        self.sync()
        try:
            rep = side.worker.request(self.call_msg(slot, shape, epoch=epoch), self.deadline)
        except WorkerGone as exc:
            self.side_failed(side, self.gone(exc, side.worker, f"(timing {describe(shape)})"))
            return
        data = rep.data
        if data.get("error") or data.get("problem"):
            why = str(data.get("error") or data.get("problem"))
            self.side_failed(side, StageFailure(INCORRECT, f"attention() raised while timing {describe(shape)}:\n{why[:2000]}"))
            return
        snap, changed, post = self.post_call(side, slot, inputs, keep)
        if changed:
            self.side_failed(side, StageFailure(INCORRECT, f"attention() modified its input {changed} while timed on "
                                                           f"{describe(shape)}: inputs are read-only"))
            return
        try:
            ms = float(data["ms"])
        except (KeyError, TypeError, ValueError):
            self.side_failed(side, StageFailure(INCORRECT, "the kernel's process sent no time for a timed call"))
            return
        if not math.isfinite(ms) or ms < 0:
            ms = 0.0
        side.reported.append(ms)
        side.wall.append(rep.wall_ms)
        host = data.get("host_ms")
        if isinstance(host, list) and len(host) == 2 and all(isinstance(x, (int, float)) for x in host):
            side.host.append([float(x) for x in host])
        side.post.append(post)
        side.snapshots.append(snap)

    def verify_timed(self, sides: list[Side], shape: Shape, repeat_seed: list[int]) -> None:
        """Check timed outputs drawn now, after every call of the shape has run: several of the
        candidate's and the incumbent's (every one on a CPU), one of each baseline's."""
        for side in sides:
            if side.failed:
                continue
            have = [r for r, snap in enumerate(side.snapshots) if snap is not None]
            n = 1 if side.trusted else (len(have) if self.device == "cpu" else max(3, len(have) // 5))
            for r in sorted(self.rng.sample(have, min(n, len(have)))):
                q, k, v = make_inputs(shape, self.device, self.dtype, repeat_seed[r])
                try:
                    self.verify(side.snapshots[r], q, k, v, shape, None, SAMPLE_ROWS[self.device],
                                "(an output timed in the benchmark) ")
                except StageFailure as f:
                    self.side_failed(side, f)
                    break
            side.snapshots = []

    def overhead(self, sides: list[Side], copy_ms: float) -> tuple[float, float]:
        """(median, high) ms a timed call costs beyond its reported time when nobody lies: from
        the trusted baselines' own calls of this shape where there are any (they pay the same
        protocol, output copy and synchronisation), else from pings plus one output copy."""
        gaps = [w - r for s in sides if s.trusted and not s.failed for r, w in zip(s.reported, s.wall)]
        o_med, o_hi = self.overhead_ms
        if len(gaps) >= 5:
            return max(statistics.median(gaps), o_med + copy_ms), max(percentile(gaps, 0.9), o_hi + copy_ms)
        lead = self.lead_ms  # the spin in front of each timed call is in the wall time, not the events
        return (max(o_med + copy_ms, FALLBACK_GAP[self.device]) + lead,
                max(o_hi + copy_ms, OVERHEAD_CAP[self.device]) + lead)

    @staticmethod
    def used_times(side: Side, o_hi: float) -> list[float]:
        """Per call: the worker's own time, but never below what the judge's clock allows it
        (its wall time less the most an honest call's overhead takes)."""
        return [max(rep, wall - o_hi) for rep, wall in zip(side.reported, side.wall)]

    def check_clock(self, side: Side, shape: Shape, o_med: float) -> None:
        if side.trusted or not side.reported:
            return
        rep = statistics.median(side.reported)
        est = statistics.median(w - o_med for w in side.wall)
        share, slack = CLOCK_FLOOR[self.device]
        if rep < share * est - slack:
            self.side_failed(side, StageFailure(INCORRECT, (
                f"the {side.name}'s process reported {rep:.3f} ms per call on {describe(shape)} but the judge's "
                f"clock saw {est:.3f} ms: its timing was tampered with (patched clocks or events), or its work "
                f"ran outside torch.cuda.current_stream()")))

    def check_busy_after(self, side: Side, shape: Shape, idle_post: float) -> None:
        if self.device != "cuda" or side.trusted or not side.post:
            return
        post = statistics.median(side.post)
        factor, slack = BUSY_AFTER
        if post > factor * idle_post + slack:
            self.side_failed(side, StageFailure(INCORRECT, (
                f"the GPU was still busy with the {side.name}'s work after attention() returned on {describe(shape)} "
                f"(the judge's own work took {post:.3f} ms instead of {idle_post:.3f}): finish all work on "
                f"torch.cuda.current_stream() before returning")))

    def summarize_shape(self, shape: Shape, sides: list[Side], copy_ms: float, idle_post: float) -> dict[str, Any]:
        o_med, o_hi = self.overhead(sides, copy_ms)
        row = self.shape_row(shape, sides, o_hi)
        row["overhead_ms"] = {"median": o_med, "high": o_hi, "ping": list(self.overhead_ms), "copy": copy_ms,
                              "post_idle": idle_post,
                              "post": {s.name: statistics.median(s.post) for s in sides if s.post},
                              "host": {s.name: [statistics.median(h[0] for h in s.host),
                                                statistics.median(h[1] for h in s.host)] for s in sides if s.host}}
        self.pending_row = row  # kept in the result even when a check below fails
        for side in sides:
            if not side.failed:
                self.check_clock(side, shape, o_med)
                self.check_busy_after(side, shape, idle_post)
        if any(s.failed for s in sides[1:]):  # a side dropped by a check: its columns go
            row = self.shape_row(shape, sides, o_hi)
            row["overhead_ms"] = self.pending_row["overhead_ms"]
        return row

    def shape_row(self, shape: Shape, sides: list[Side], o_hi: float) -> dict[str, Any]:
        cand = sides[0]
        times = self.used_times(cand, o_hi)
        t = statistics.median(times)
        row: dict[str, Any] = {
            "label": shape.label, "shape": _shape_dict(shape), "time_ms": t,
            "wall_ms": statistics.median(cand.wall), "reported_ms": statistics.median(cand.reported),
            "tflops": shape.flops / (t * 1e-3) / 1e12, "spread": spread(times), "baselines": {},
        }
        for side in sides[1:]:
            if side.failed or len(side.reported) != len(cand.reported):
                if side.name != "incumbent" and not side.failed:
                    self.note(f"{side.name}: no result on {shape.label}")
                if side.name != "incumbent":
                    row["baselines"][side.name] = None
                continue
            other = self.used_times(side, o_hi)
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
