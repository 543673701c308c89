"""The sandboxed side of an evaluation: `python -m avo.evaluate._child` (started by api.evaluate).

Reads the job (JSON) on stdin, reports each stage's start and end as JSON lines on the file
descriptor in $AVO_EVAL_FD so the parent can enforce per-stage limits, and ends with one
"result" message. Whatever the kernel does to this process (hang, segfault, corrupt the CUDA
context) the parent survives; exceptions are caught here and become statuses.
"""

from __future__ import annotations

import faulthandler
import json
import math
import os
import secrets
import signal
import statistics
import sys
import time
from typing import Any, Callable, Optional

import torch

from avo.evaluate import baselines as bl
from avo.evaluate import envinfo
from avo.evaluate.loader import ContractError, accepts_out, format_exception, load_kernel
from avo.evaluate.plan import shape_from
from avo.evaluate.reference import compare, describe, make_inputs, reference, same_layout, sample_rows
from avo.evaluate.result import COMPILE_ERROR, CRASH, IMPORT_ERROR, INCORRECT, OK
from avo.evaluate.timing import Clock, median_log_se, percentile, spread
from avo.suites import Shape

# Query rows compared per shape where a full reference is too dear (timed outputs, re-verify).
SAMPLE_ROWS = {"cuda": 256, "cpu": 512}
# Second correctness check: a sharper softmax (logits std ~3) stresses max-tracking and rescaling.
SHARP_Q_STD = 3.0
# Event time below this share of the back-to-back wall time per call: fail; below the second: note.
WALL_FAIL, WALL_NOTE = 0.25, 0.67
_FATAL_CUDA = ("illegal memory access", "unspecified launch failure", "misaligned address",
               "illegal instruction", "CUDA error", "CUDA_ERROR", "cudaError", "device-side assert")


class StageFailure(Exception):
    def __init__(self, status: str, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


class IncumbentFailed(Exception):
    """The incumbent, not the candidate, raised while being timed."""


class BaselineFailed(Exception):
    """A baseline, not the candidate, raised while being timed."""


class Channel:
    def __init__(self, fd: int, token: str = ""):
        self.fd = fd
        self.token = token

    def send(self, **msg: Any) -> None:
        data = (json.dumps({**msg, "token": self.token}, default=str) + "\n").encode()
        while data:
            data = data[os.write(self.fd, data):]


class Kernel:
    """One loaded kernel file and how to call it."""

    def __init__(self, path: str, role: str):
        self.path = path
        self.role = role
        self.module = load_kernel(path, tag=role)
        self.fn: Callable = self.module.attention
        self.takes_out = accepts_out(self.fn)

    def bench_call(self, q, k, v, causal):
        # The benchmark's call form; correctness and re-verification use it too, so a kernel
        # cannot tell a timed call from a checked one.
        return self.fn(q, k, v, causal=causal)


class Child:
    def __init__(self, job: dict[str, Any], chan: Channel):
        self.job = job
        self.chan = chan
        self.device: str = job["device"]
        self.dtype = getattr(torch, job.get("dtype", "bfloat16"))
        self.s = job["settings"]
        self.tol: float = self.s["tolerance"]
        self.suite = [shape_from(d) for d in job["shapes"]]
        self.cshapes = [shape_from(d) for d in job["correctness_shapes"]]
        self.seed = secrets.randbits(31)  # unpredictable, recorded: kernels cannot expect inputs
        self._next_seed = self.seed
        self.result: dict[str, Any] = {
            "status": OK, "stage": None, "message": "", "suite": job["suite"], "device": self.device,
            "shapes": [], "notes": [], "checks": [], "baseline_scores": {}, "speedups": {},
        }
        self.stage = "startup"
        self.cand: Optional[Kernel] = None
        self.inc: Optional[Kernel] = None

    # -- plumbing --------------------------------------------------------------------------------
    def fresh_seed(self) -> int:
        self._next_seed += 1
        return self._next_seed

    def enter(self, stage: str) -> float:
        self.stage = stage
        self.chan.send(ev="stage", stage=stage)
        return time.perf_counter()

    def leave(self, stage: str, t0: float) -> float:
        seconds = time.perf_counter() - t0
        self.chan.send(ev="end", stage=stage, seconds=seconds)
        return seconds

    def progress(self, label: str) -> None:
        self.chan.send(ev="progress", stage=self.stage, shape=label)

    def sync(self) -> None:
        if self.device == "cuda":
            torch.cuda.synchronize()

    def note(self, text: str) -> None:
        if text not in self.result["notes"]:
            self.result["notes"].append(text)

    def failure(self, exc: BaseException, default_status: str, kernel: Kernel | None, context: str) -> StageFailure:
        if isinstance(exc, StageFailure):
            return exc
        text = str(exc)
        path = kernel.path if kernel else self.job["kernel"]
        if isinstance(exc, torch.cuda.OutOfMemoryError) or "out of memory" in text:
            return StageFailure(CRASH, f"out of memory {context}:\n{format_exception(exc, path)}")
        if any(marker in text for marker in _FATAL_CUDA):
            return StageFailure(CRASH, f"CUDA error {context}:\n{format_exception(exc, path)}")
        return StageFailure(default_status, f"{context}:\n{format_exception(exc, path)}")

    # -- poisoned, checked calls -----------------------------------------------------------------
    def poison_allocator(self, like: torch.Tensor) -> None:
        """Leave a NaN-filled block of the output's size in the caching allocator, so an output
        the kernel allocates and only partly writes shows NaN where it skipped."""
        if self.device == "cuda":
            junk = torch.full_like(like, float("nan"))
            del junk

    def check(self, kernel: Kernel, shape: Shape, *, sharp: bool, explicit: bool,
              rows_limit: Optional[int] = None) -> float:
        """One call on fresh inputs, compared with the reference. `explicit`: pass softmax_scale
        and (if accepted) a NaN-filled out= buffer; else the benchmark's call form."""
        q, k, v = make_inputs(shape, self.device, self.dtype, self.fresh_seed(),
                              SHARP_Q_STD if sharp else 1.0)
        scale = 1.0 / math.sqrt(shape.head_dim)
        try:
            self.poison_allocator(q)
            if explicit:
                kwargs: dict[str, Any] = {"causal": shape.causal, "softmax_scale": scale}
                if kernel.takes_out:
                    kwargs["out"] = torch.full_like(q, float("nan"))
                out = kernel.fn(q, k, v, **kwargs)
            else:
                out = kernel.bench_call(q, k, v, shape.causal)
            self.sync()
        except Exception as exc:
            raise self.failure(exc, INCORRECT, kernel, f"attention() raised on {describe(shape)}")
        poisoned = self.device == "cuda" or (explicit and kernel.takes_out)
        return self.verify(out, q, k, v, shape, rows_limit, poisoned=poisoned)

    def verify(self, out, q, k, v, shape: Shape, rows_limit: Optional[int], what: str = "",
               poisoned: bool = False) -> float:
        bad = same_layout(out, q)
        if bad:
            raise StageFailure(INCORRECT, f"{bad} on {describe(shape)}")
        rows = None
        if rows_limit:
            g = torch.Generator().manual_seed(self.fresh_seed())
            rows = sample_rows(shape.seqlen, rows_limit, g, self.device)
        ref = reference(q, k, v, shape.causal, 1.0 / math.sqrt(shape.head_dim), rows)
        cmp = compare(out, ref, rows, self.tol)
        where = f"{what}on {describe(shape)}"
        if cmp.nonfinite:
            why = ("output memory was NaN-poisoned before the call: NaN usually means elements left "
                   "unwritten" if poisoned else "unwritten memory or an overflow")
            raise StageFailure(INCORRECT, (
                f"{cmp.nonfinite} of {cmp.numel} output elements are NaN/Inf {where} ({why}); "
                f"first bad (batch, row, head) = {cmp.worst}"))
        if cmp.error > self.tol:
            b, r, h = cmp.worst
            raise StageFailure(INCORRECT, (
                f"relative error {cmp.error:.2e} > tolerance {self.tol:.1e} {where}; "
                f"{100 * cmp.bad_row_fraction:.0f}% of the (batch, row, head) output vectors are off; "
                f"worst at batch {b}, query row {r}, head {h} (error {cmp.worst_error:.2e})"))
        return cmp.error

    # -- stages ----------------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        stages = self.job["stages"]
        t_start = time.perf_counter()
        try:
            import_s = self.stage_import()
            self.stage_compile(import_s)  # always: every later stage needs a compiled kernel
            if "correctness" in stages:
                self.stage_correctness()
            if "benchmark" in stages:
                self.stage_benchmark()
            if "reverify" in stages and self.s["reverify"]:
                self.stage_reverify()
            try:
                self.sync()  # surface any asynchronous CUDA error before declaring success
            except Exception as exc:
                raise self.failure(exc, CRASH, self.cand, "at the final synchronisation")
        except StageFailure as f:
            self.result.update(status=f.status, stage=self.stage, message=f.message)
        self.result["wall_s"] = time.perf_counter() - t_start
        return self.result

    def stage_import(self) -> float:
        t0 = self.enter("import")
        try:
            self.cand = Kernel(self.job["kernel"], "candidate")
        except ContractError as exc:
            raise StageFailure(IMPORT_ERROR, str(exc))
        except BaseException as exc:  # SystemExit, KeyboardInterrupt from a module are import errors too
            raise StageFailure(IMPORT_ERROR, f"importing the kernel raised:\n{format_exception(exc, self.job['kernel'])}")
        if self.job.get("incumbent"):
            try:
                self.inc = Kernel(self.job["incumbent"], "incumbent")
            except BaseException as exc:
                self.drop_incumbent(f"import_error: {format_exception(exc, self.job['incumbent'])}")
        return self.leave("import", t0)

    def drop_incumbent(self, why: str) -> None:
        self.inc = None
        for row in self.result["shapes"]:  # a comparison over part of the suite would mislead
            for key in ("incumbent_ratio", "incumbent_ratio_spread", "incumbent_tflops"):
                row.pop(key, None)
        self.result["incumbent_status"] = why[:2000]
        self.note("incumbent not compared: " + why.splitlines()[0][:200])

    def stage_compile(self, import_s: float) -> None:
        """Import + the first call on a small shape: JIT-compiling kernels compile here."""
        t0 = self.enter("compile")
        shape = self.cshapes[0]
        q, k, v = make_inputs(shape, self.device, self.dtype, self.fresh_seed())
        try:
            self.cand.bench_call(q, k, v, shape.causal)
            self.sync()
        except Exception as exc:
            # A kernel declining a configuration of the contract is wrong, not broken.
            status = INCORRECT if isinstance(exc, NotImplementedError) else COMPILE_ERROR
            raise self.failure(exc, status, self.cand, f"first call (compile) on {describe(shape)}")
        self.result["compile_s"] = import_s + self.leave("compile", t0)
        if self.inc is not None:
            try:
                self.inc.bench_call(q, k, v, shape.causal)
                self.sync()
            except Exception as exc:
                self.drop_incumbent(f"compile_error: {format_exception(exc, self.inc.path)}")

    def stage_correctness(self) -> None:
        t0 = self.enter("correctness")
        for shape in self.cshapes:
            self.progress(shape.label)
            # Two fresh inputs in the two call forms: a result cached from an earlier call fails.
            e1 = self.check(self.cand, shape, sharp=False, explicit=True)
            e2 = self.check(self.cand, shape, sharp=True, explicit=False)
            self.result["checks"].append({"label": shape.label, "error": max(e1, e2)})
        if self.inc is not None:
            try:
                for shape in self.cshapes:
                    self.check(self.inc, shape, sharp=False, explicit=False)
            except StageFailure as f:
                self.drop_incumbent(f"{f.status}: {f.message}")
        self.leave("correctness", t0)

    def stage_benchmark(self) -> None:
        t0 = self.enter("benchmark")
        clock = Clock(self.device, self.s["l2_flush"])
        baselines = []
        for name in self.job["baselines"]:
            if self.device != "cuda":
                self.note(f"{name}: skipped (baselines are timed on CUDA only)")
                continue
            b = bl.make(name)
            if b.call is None:
                self.note(f"{b.name}: unavailable ({b.reason})")
            else:
                baselines.append(b)
        for shape in self.suite:
            self.progress(shape.label)
            self.result["shapes"].append(self.bench_shape(shape, clock, baselines))
            if self.device == "cuda":
                torch.cuda.empty_cache()  # the next shape's inputs may be several times larger
        if self.inc is not None:
            self.result["incumbent_status"] = OK
        self.leave("benchmark", t0)

    def bench_shape(self, shape: Shape, clock: Clock, baselines: list[bl.Baseline]) -> dict[str, Any]:
        rotate = max(1, int(self.s["rotate_inputs"]))
        repeats = max(1, int(self.s["repeats"]))
        sets = [make_inputs(shape, self.device, self.dtype, self.fresh_seed()) for _ in range(rotate)]
        gen = torch.Generator(device=self.device).manual_seed(self.fresh_seed())
        last: dict[int, Any] = {}

        def refresh(r: int) -> None:
            # A reused input set gets new values in place: a result cached by tensor identity is stale.
            if r >= rotate:
                for t in sets[r % rotate]:
                    t.normal_(generator=gen)

        def cand(i: int):
            last[i] = self.cand.bench_call(*sets[i], shape.causal)

        def incumbent(i: int):
            try:
                self.inc.bench_call(*sets[i], shape.causal)
            except Exception as exc:
                raise IncumbentFailed(format_exception(exc, self.inc.path)) from exc

        fns = [cand] if self.inc is None else [cand, incumbent]
        try:
            if not clock.warm_up(fns, self.s["warmup_ms"], rotate):
                self.note(f"warm-up did not settle within its cap on {shape.label}")
            times = clock.measure(fns, repeats, rotate, before_repeat=refresh)
        except IncumbentFailed as exc:
            self.drop_incumbent(f"incorrect: raised while timing {describe(shape)}:\n{exc}")
            return self.bench_shape(shape, clock, baselines)
        except Exception as exc:
            raise self.failure(exc, INCORRECT, self.cand, f"attention() raised while timing {describe(shape)}")
        # What was timed must be right: check the last timed output of every input set.
        for i, out in last.items():
            self.verify(out, *sets[i], shape, SAMPLE_ROWS[self.device], what="(an output timed in the benchmark) ")
        t = statistics.median(times[0])
        wall = self.check_wall(clock, cand, t, shape, rotate)
        row: dict[str, Any] = {
            "label": shape.label, "shape": _shape_dict(shape), "time_ms": t, "wall_ms": wall,
            "tflops": shape.flops / (t * 1e-3) / 1e12, "spread": spread(times[0]), "baselines": {},
        }
        if self.inc is not None:
            ratios = [ti / tc for tc, ti in zip(times[0], times[1])]
            row["incumbent_ratio"] = statistics.median(ratios)
            row["incumbent_ratio_spread"] = percentile(ratios, 0.8) - percentile(ratios, 0.2)
            row["incumbent_ratio_se"] = median_log_se(ratios)
            row["incumbent_tflops"] = shape.flops / (statistics.median(times[1]) * 1e-3) / 1e12
        last.clear()
        plain = lambda i: self.cand.bench_call(*sets[i], shape.causal)  # noqa: E731
        for b in baselines:
            timed = self.bench_baseline(b, shape, sets, clock, rotate, repeats, plain)
            row["baselines"][b.name] = timed and timed[0]
            if timed:
                row.setdefault("baseline_ratios", {})[b.name] = timed[1]
                row.setdefault("baseline_ratio_se", {})[b.name] = timed[2]
        return row

    def check_wall(self, clock: Clock, fn, event_ms: float, shape: Shape, rotate: int) -> float:
        """Events time torch's current stream only. A kernel working on another stream (or one
        whose host overhead dwarfs its GPU time) looks far faster to them than to a wall clock."""
        try:
            wall = clock.wall_per_call(fn, max(3, min(10, int(self.s["repeats"]))), rotate)
        except Exception as exc:
            raise self.failure(exc, INCORRECT, self.cand, f"attention() raised while timing {describe(shape)}")
        if self.device == "cuda" and event_ms < WALL_FAIL * wall:
            raise StageFailure(INCORRECT, (
                f"timing events saw {event_ms:.3f} ms per call but back-to-back calls take {wall:.3f} ms "
                f"on {describe(shape)}: launch all work on torch.cuda.current_stream() (and keep host "
                f"overhead per call well below the GPU time)"))
        if self.device == "cuda" and event_ms < WALL_NOTE * wall:
            self.note(f"{shape.label}: host time per call ({wall:.3f} ms) well above GPU time ({event_ms:.3f} ms)")
        return wall

    def bench_baseline(self, b: bl.Baseline, shape: Shape, sets, clock: Clock, rotate: int,
                       repeats: int, cand: Callable[[int], Any]) -> Optional[tuple]:
        """The baseline timed interleaved with the candidate (`cand(i)`), like an incumbent: the
        speedup is the median of per-repeat (baseline time / candidate time), so clock drift
        between two separate timings cannot pass for a speedup. Returns (baseline TFLOP/s,
        speedup, standard error of its log), or None with a note when the baseline has no result."""
        scale = 1.0 / math.sqrt(shape.head_dim)
        gqa = shape.heads_q != shape.heads_kv

        def call(q, k, v):
            # The backend choice applies to the baseline's own calls only, never to the candidate's.
            with b.context():
                return b.call(q, k, v, shape.causal, scale)

        try:
            use = sets
            try:
                out = call(*use[0])
                self.sync()
            except RuntimeError as exc:
                if not gqa:
                    raise
                use = [(q, bl.expand(k, shape.heads_q), bl.expand(v, shape.heads_q)) for q, k, v in sets]
                out = call(*use[0])
                self.sync()
                self.note(f"{b.name}: GQA timed with k/v expanded to {shape.heads_q} heads "
                          f"(backend refused enable_gqa: {str(exc).splitlines()[0][:120]})")
            self.verify(out, *sets[0], shape, SAMPLE_ROWS[self.device], what=f"(baseline {b.name}) ")

            def fn(i):
                try:
                    return call(*use[i])
                except Exception as exc:
                    raise BaselineFailed(f"{type(exc).__name__}: {exc}") from exc

            # The GPU is already warm from the candidate: this warms the baseline's own state.
            clock.warm_up([fn], min(self.s["warmup_ms"], 500.0), rotate)
        except Exception as exc:
            msg = exc.message if isinstance(exc, StageFailure) else f"{type(exc).__name__}: {exc}"
            self.note(f"{b.name}: no result on {shape.label} ({msg.splitlines()[0][:200]})")
            return None
        try:
            t_cand, t_base = clock.measure([cand, fn], repeats, rotate)
        except BaselineFailed as exc:
            self.note(f"{b.name}: no result on {shape.label} (raised while timed: {str(exc).splitlines()[0][:200]})")
            return None
        except Exception as exc:
            raise self.failure(exc, INCORRECT, self.cand, f"attention() raised while timing {describe(shape)}")
        ratios = [tb / tc for tc, tb in zip(t_cand, t_base)]
        return (shape.flops / (statistics.median(t_base) * 1e-3) / 1e12,
                statistics.median(ratios), median_log_se(ratios))

    def stage_reverify(self) -> None:
        """After timing, fresh inputs on every suite shape, in the benchmark's call form."""
        t0 = self.enter("reverify")
        rows = {s["label"]: s for s in self.result["shapes"]}
        for shape in self.suite:
            self.progress(shape.label)
            err = self.check(self.cand, shape, sharp=False, explicit=False, rows_limit=SAMPLE_ROWS[self.device])
            if shape.label in rows:
                rows[shape.label]["error"] = err
        self.leave("reverify", t0)


def _shape_dict(shape: Shape) -> dict[str, Any]:
    return {"batch": shape.batch, "seqlen": shape.seqlen, "heads_q": shape.heads_q,
            "heads_kv": shape.heads_kv, "head_dim": shape.head_dim, "causal": shape.causal}


def setup_torch(device: str) -> Optional[str]:
    """Process-wide settings; a message when the device is unusable."""
    torch.set_float32_matmul_precision("highest")  # the reference must not run in TF32
    if device == "cpu":
        # One thread: several evaluations share small CPUs, and a single thread times steadily.
        torch.set_num_threads(1)
        return None
    if device != "cuda":
        return f"unknown device {device!r} (cuda, cpu)"
    if not torch.cuda.is_available():
        return "device=cuda but torch.cuda.is_available() is False on this machine (use --device cpu)"
    return None


def _die_with_parent() -> None:
    """The child runs in its own session (so a timeout can kill its whole group); tie its life to
    the evaluating process anyway, so a search killed with -9 leaves no orphan holding the GPU."""
    parent = os.getppid()
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: the parent's timeouts still bound the child
        return
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(4)


def main() -> None:
    _die_with_parent()
    # A segfault prints the Python stack; SIGUSR1 (sent by the parent before it kills a child that
    # ran out of time) prints where it hangs. Both land in the output tail the parent reports.
    faulthandler.enable()
    faulthandler.register(signal.SIGUSR1, all_threads=False)
    job = json.loads(sys.stdin.read())
    chan = Channel(int(os.environ.pop("AVO_EVAL_FD")), job.pop("token", ""))
    problem = setup_torch(job["device"])
    if problem:
        chan.send(ev="fatal", message=problem)
        os._exit(3)
    env = envinfo.collect(job["device"])
    child = Child(job, chan)
    env["seed"] = child.seed
    chan.send(ev="ready", env=env)
    with torch.no_grad():
        result = child.run()
    chan.send(ev="result", result=result)
    sys.stdout.flush()
    sys.stderr.flush()
    # Skip interpreter and CUDA teardown: the verdict is in, and a library's exit-time trouble
    # must not turn it into a crash.
    os._exit(0)


if __name__ == "__main__":
    main()
