"""The untrusted side of an evaluation: `python -m avo.evaluate.worker` (started by the judge).

One process per kernel: the candidate, the incumbent, or one baseline. It imports that kernel and
then only does what the judge's commands say: call the kernel on tensors at given places of the
memory the judge shares with it, and report how long the call took. It holds nothing the verdict
depends on — no reference, tolerance, comparison, seed, result channel, incumbent or baseline — so
a kernel that patches this process, reads its frames or lies in its replies changes only what this
process claims, and the judge checks every claim against what it can see for itself: the outputs
in its own memory, the inputs it keeps a private copy of, its own clock.

Commands arrive as JSON lines on the fd given by --cmd-fd; replies go to --reply-fd.
"""

from __future__ import annotations

import argparse
import faulthandler
import json
import os
import signal
import statistics
import sys
import time
from typing import Any, Callable, Optional

import torch

from avo.evaluate.worker.arena import open_arena, open_flag, view
from avo.evaluate.worker.loader import ContractError, accepts_out, format_exception, load_kernel

SETTLE_WINDOW = 8
SETTLE_TOLERANCE = {"cuda": 0.03, "cpu": 0.25}


class Replies:
    def __init__(self, fd: int):
        self.fd = fd

    def send(self, **msg: Any) -> None:
        data = (json.dumps(msg, default=str) + "\n").encode()
        while data:
            data = data[os.write(self.fd, data):]


def _commands(fd: int):
    buf = b""
    while True:
        chunk = os.read(fd, 1 << 16)
        if not chunk:
            return
        buf += chunk
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            yield json.loads(line)


class Target:
    """What this worker calls: a kernel file's attention(), or a library baseline."""

    def __init__(self, args: argparse.Namespace):
        self.path = args.kernel
        self.package = bool(getattr(args, "package", False))
        self.context = None
        self.null = args.baseline == "null"
        self._null_out: dict[tuple, torch.Tensor] = {}
        if self.null:
            # The judge's yardstick: the call protocol around a trusted call (no work on a CPU),
            # timed like every other call, so its overhead is measured, not assumed.
            self.baseline = None
            # It writes its timed calls' slots itself, inside its events: the overhead the judge
            # measures on it (and subtracts from every kernel's wall time) holds no output copy.
            self.takes_out = True
        elif args.kernel:
            module = load_kernel(args.kernel, tag=args.role, package=self.package)
            self.fn: Callable = module.attention
            self.takes_out = accepts_out(self.fn)
            self.baseline = None
        else:
            from avo.evaluate import baselines

            b = baselines.make(args.baseline)
            if b.call is None:
                raise LookupError(b.reason or f"baseline {args.baseline} unavailable")
            self.baseline = b
            self.takes_out = False

    def call(self, q, k, v, causal: bool, scale: Optional[float], out: Optional[torch.Tensor]):
        if self.null:
            if q.is_cuda:
                # On a GPU the yardstick runs a real attention (torch's SDPA, trusted here): what a
                # call costs beyond its events depends on the GPU having just run a big kernel, so a
                # call with no work would under-state an honest kernel's overhead (H200: by ~0.05 ms).
                import torch.nn.functional as F

                res = F.scaled_dot_product_attention(
                    q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=causal,
                    scale=scale, enable_gqa=k.shape[2] != q.shape[2]).transpose(1, 2)
                if out is None:
                    return res
                _deliver(res, out)  # inside the call's events: the null worker's gap holds no copy
                return out
            if out is not None:
                return out  # no work on a CPU: its slots are never read
            key = (tuple(q.shape), q.dtype)
            if key not in self._null_out:
                self._null_out.clear()
                self._null_out[key] = torch.zeros_like(q)
            return self._null_out[key]
        if self.baseline is None:
            kwargs: dict[str, Any] = {"causal": causal}
            if scale is not None:
                kwargs["softmax_scale"] = scale
            if out is not None:
                kwargs["out"] = out
            return self.fn(q, k, v, **kwargs)
        with self.baseline.context():
            return self.baseline.call(q, k, v, causal, scale if scale is not None else q.shape[-1] ** -0.5)


class Worker:
    def __init__(self, args: argparse.Namespace, replies: Replies):
        self.device = args.device
        self.replies = replies
        self.target: Optional[Target] = None
        self.arena: Optional[torch.Tensor] = None
        self.flag = None
        self.args = args
        self.gqa_expand = False

    def sync(self) -> None:
        if self.device == "cuda":
            torch.cuda.synchronize()

    def tensors(self, msg: dict[str, Any]):
        t = msg["t"]
        q, k, v, out = (view(self.arena, t[n]) for n in ("q", "k", "v", "out"))
        if self.gqa_expand and k.shape[2] != q.shape[2]:
            # A baseline backend that refused GQA: kv heads repeated in front of the start
            # event (a baseline is timed by its events only), fresh every call.
            rep = q.shape[2] // k.shape[2]
            k, v = k.repeat_interleave(rep, 2), v.repeat_interleave(rep, 2)
        return q, k, v, out

    def one_call(self, msg: dict[str, Any], armed: Optional[Callable[[], None]] = None) -> dict[str, Any]:
        """One call of the target, or a block of them (msg["ts"]: one slot set per call, each with
        its own inputs and output). `armed` (GPU): the work is queued behind the judge's release
        flag; `armed()` tells the judge it is queued, then this waits for the GPU to finish. A
        block's calls all queue behind the one release, so the judge's clock spans all of them and
        the fixed cost of a reply is shared by the block (judge.py)."""
        h0 = time.perf_counter()
        if self.device == "cuda" and armed is not None:
            self.flag.wait(torch.cuda.current_stream().cuda_stream, int(msg["arm"]))
        block = "ts" in msg
        specs = msg["ts"] if block else [msg["t"]]
        pass_out_asked = bool(msg.get("pass_out")) and self.target.takes_out
        scale = msg.get("scale")
        causal = bool(msg["causal"])
        lead = int(msg.get("lead_cycles") or 0)
        events, cpu_ms, problem = [], [], None
        for spec in specs:
            q, k, v, out = self.tensors({"t": spec})
            pass_out = pass_out_asked
            if self.device == "cuda":
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                if lead > 0 and armed is None and not events:
                    # Without a release flag: keep the GPU busy while the host prepares the launch
                    # (a block's later calls queue behind the earlier ones).
                    torch.cuda._sleep(lead)
                start.record()
                res = self.target.call(q, k, v, causal, scale, out if pass_out else None)
                end.record()
                events.append((start, end))
            else:
                t0 = time.perf_counter()
                res = self.target.call(q, k, v, causal, scale, out if pass_out else None)
                cpu_ms.append((time.perf_counter() - t0) * 1e3)
            if not pass_out:
                why = _output_problem(res, q, k, v)
                if why is None:
                    _deliver(res, out)
                problem = problem or why
        h1 = time.perf_counter()
        if armed is not None:
            if self.device == "cuda":
                self.flag.signal(torch.cuda.current_stream().cuda_stream, int(msg["arm"]))
            finished = torch.cuda.Event() if self.device == "cuda" else None
            if finished is not None:
                finished.record()
            armed()
            # Spin rather than block: where the "done" word cannot end the judge's clock, the reply
            # does, and every worker's reply path (the null worker's too) is this one.
            while finished is not None and not finished.query():
                pass
        self.sync()
        ms = [a.elapsed_time(b) for a, b in events] if self.device == "cuda" else cpu_ms
        # Where the host time went (informative only: the judge trusts its own clock).
        host = [round((h1 - h0) * 1e3, 4), round((time.perf_counter() - h1) * 1e3, 4)]
        return {"ms": ms if block else ms[0], "problem": problem, "host_ms": host}

    def warm(self, msg: dict[str, Any]) -> dict[str, Any]:
        """Call until `min_ms` has passed and the recent times are steady (GPU clocks ramp)."""
        tol = SETTLE_TOLERANCE[self.device]
        history: list[float] = []
        calls = msg["calls"]
        t0 = time.perf_counter()
        n = 0
        while True:
            history.append(self.one_call(calls[n % len(calls)])["ms"])
            n += 1
            elapsed = (time.perf_counter() - t0) * 1e3
            last = history[-SETTLE_WINDOW:]
            steady = len(last) == SETTLE_WINDOW and (max(last) - min(last)) / statistics.median(last) <= tol
            if elapsed >= msg["min_ms"] and steady:
                return {"n": n, "settled": True, "ms": statistics.median(last)}
            if elapsed >= msg["cap_ms"] and n >= 2:
                return {"n": n, "settled": False, "ms": statistics.median(last)}

    def ping(self) -> dict[str, Any]:
        """The call protocol around no work: the judge's measure of its own overhead."""
        if self.device == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            end.record()
            self.sync()
            return {"ms": start.elapsed_time(end)}
        t0 = time.perf_counter()
        return {"ms": (time.perf_counter() - t0) * 1e3}

    def profiled_call(self, msg: dict[str, Any]) -> dict[str, Any]:
        """One call with the kernels it launches listed (for the own-code rule)."""
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            reply = self.one_call(msg)
        names = sorted({e.name for e in prof.events() if getattr(e, "device_type", None) is not None
                        and str(e.device_type).endswith("CUDA")})
        reply["kernels"] = names[:200]
        return reply

    def serve(self, cmd_fd: int) -> None:
        for msg in _commands(cmd_fd):
            op = msg.get("op")
            try:
                if op == "map":
                    self.arena = open_arena(msg["arena"])
                    reply = {}
                    if self.device == "cuda":
                        self.flag, why = open_flag(msg["arena"])
                        reply = {"flag": self.flag is not None, "flag_error": why}
                elif op == "call" and msg.get("arm") is not None and self.flag is not None:
                    nonce = msg.get("nonce")
                    reply = self.one_call(msg, armed=lambda: self.replies.send(op=op, nonce=nonce, phase="armed"))
                elif op == "call":
                    reply = self.profiled_call(msg) if msg.get("profile") else self.one_call(msg)
                elif op == "warm":
                    reply = self.warm(msg)
                elif op == "ping":
                    reply = self.ping()
                elif op == "gqa_expand":
                    self.gqa_expand = True
                    reply = {}
                elif op == "exit":
                    return
                else:
                    reply = {"error": f"unknown op {op!r}"}
            except Exception as exc:  # the kernel raised: say what, let the judge decide
                reply = {"error": format_exception(exc, self.target.path if self.target else None,
                                                   bool(self.target and self.target.package)),
                         "oom": isinstance(exc, torch.cuda.OutOfMemoryError) or "out of memory" in str(exc),
                         "not_implemented": isinstance(exc, NotImplementedError)}
            self.replies.send(op=op, nonce=msg.get("nonce"), **reply)


def _output_problem(res: Any, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> Optional[str]:
    """Why `res` breaks the output contract: a plain, dense, fresh tensor shaped like q."""
    if type(res) is not torch.Tensor:  # noqa: E721 - a subclass can fake any comparison
        kind = type(res).__name__
        hint = " (return only the output tensor, not a tuple)" if isinstance(res, (tuple, list)) else ""
        return f"attention() returned {kind}, expected a plain torch.Tensor{hint}"
    if tuple(res.shape) != tuple(q.shape):
        return f"output shape {tuple(res.shape)} != q shape {tuple(q.shape)} (batch, seqlen, heads, head_dim)"
    if res.dtype != q.dtype:
        return f"output dtype {res.dtype} != input dtype {q.dtype}"
    if res.device != q.device:
        return f"output on {res.device}, inputs on {q.device}"
    if not _dense(res):
        return f"output is not a dense tensor (strides {tuple(res.stride())}): no expanded or stride-0 views"
    lo, hi = res.data_ptr(), res.data_ptr() + res.numel() * res.element_size()
    for name, t in (("q", q), ("k", k), ("v", v)):
        a, b = t.data_ptr(), t.data_ptr() + t.numel() * t.element_size()
        if lo < b and a < hi:
            return f"output memory overlaps the input {name}: return a new tensor (or write out=)"
    return None


def _deliver(res: torch.Tensor, out: torch.Tensor) -> None:
    """Copy a call's output into the judge's slot, by the same means for every kernel. On a GPU
    that is an elementwise kernel (x * 1 is exact, NaN and -0 included): Tensor.copy_ would copy
    the null worker's output (torch's SDPA returns a transposed view) with a kernel but a dense
    one with a memcpy. Timed calls pass out= to every kernel that takes it; for one that does not,
    this copy lies outside its events and inside its wall time, which is its time on a GPU."""
    if res.is_cuda:
        torch.mul(res, 1, out=out)
    else:
        out.copy_(res)


def _dense(t: torch.Tensor) -> bool:
    """Every element its own memory and no gaps: contiguous up to a permutation of the dims
    (a transposed view of a fresh tensor is fine; an expanded or overlapping one is not)."""
    expected = 1
    for size, stride in sorted(zip(t.shape, t.stride()), key=lambda x: x[1]):
        if size == 1:
            continue
        if stride != expected:
            return False
        expected *= size
    return True


def _die_with_parent() -> None:
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def main() -> None:
    _die_with_parent()
    faulthandler.enable()
    faulthandler.register(signal.SIGUSR1, all_threads=False)  # the judge asks for the stack before a kill
    p = argparse.ArgumentParser()
    p.add_argument("--cmd-fd", type=int, required=True)
    p.add_argument("--reply-fd", type=int, required=True)
    p.add_argument("--device", required=True)
    p.add_argument("--role", default="candidate")
    p.add_argument("--kernel")
    p.add_argument("--package", action="store_true", help="--kernel is the entry module of a package")
    p.add_argument("--baseline")
    args = p.parse_args()
    replies = Replies(args.reply_fd)
    if args.device == "cpu":
        torch.set_num_threads(1)  # several processes share small CPUs; one thread times steadily
    elif not torch.cuda.is_available():
        replies.send(op="ready", error="torch.cuda.is_available() is False in the worker", kind="fatal")
        os._exit(3)
    worker = Worker(args, replies)
    try:
        worker.target = Target(args)
    except ContractError as exc:
        replies.send(op="ready", error=str(exc), kind="contract")
        os._exit(0)
    except LookupError as exc:
        replies.send(op="ready", error=str(exc), kind="unavailable")
        os._exit(0)
    except BaseException as exc:  # SystemExit, KeyboardInterrupt from a module are import errors too
        replies.send(op="ready", error=f"importing the kernel raised:\n{format_exception(exc, args.kernel, args.package)}",
                     kind="import")
        os._exit(0)
    replies.send(op="ready", takes_out=worker.target.takes_out)
    with torch.no_grad():
        worker.serve(args.cmd_fd)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)  # skip interpreter and CUDA teardown


if __name__ == "__main__":
    main()
