"""evaluate(): one candidate kernel, judged by a judge process that runs it in a sandboxed worker.

The search's process never imports torch. It starts the judge (`python -m avo.evaluate.judge`,
our code only: the trusted side) in its own process group, hands it the job on stdin, and follows
the stage messages the judge writes on a pipe no worker holds. The judge enforces each stage's
limit on the kernels it runs; this side keeps the same limits plus a grace as a backstop and
`timeout` caps the whole run. A judge that dies without a verdict gives `crash`.
"""

from __future__ import annotations

import json
import math
import os
import select
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import IO, Any, Callable, Optional, Sequence

from avo import package, stopping
from avo.config import ConfigError, EvaluatorConfig
from avo.evaluate.plan import (ACCEPT_Z, BASELINES, INTERVAL_Z, NOISE_FLOOR, STAGES, correctness_shapes, exit_text,
                               resolve_suite, settings_dict, shape_dict, stage_limits)
from avo.evaluate.result import CRASH, OK, TIMEOUT, EvalResult, geomean
from avo.suites import Shape

_PKG_PARENT = Path(__file__).resolve().parents[2]  # the directory holding the avo package
_TAIL_CHARS = 1500
JUDGE_GRACE_S = 60.0


class UsageError(ValueError):
    """A caller mistake (missing file, unknown suite/stage/baseline): one line, no traceback."""


class EvaluatorError(RuntimeError):
    """The evaluation could not run here at all (e.g. device=cuda without a GPU)."""


def evaluate(kernel: str | Path, suite: str | Sequence[Shape], *, device: str = "cuda",
             settings: EvaluatorConfig | Any | None = None,
             incumbent: str | Path | None = None, baselines: Sequence[str] = (),
             timeout: float | None = None,
             stages: Sequence[str] = STAGES,
             env: Optional[dict[str, str]] = None,
             hide: Sequence[str | Path] = (),
             allow_library: bool = False,
             progress: Optional[Callable[[str, Optional[str]], None]] = None) -> EvalResult:
    """Compile, check and time `kernel` on `suite` (a suite name or a list of Shapes).

    `settings`: avo.config.EvaluatorConfig or any object / mapping with its fields (defaults fill
    the rest). `incumbent`: another kernel timed interleaved with this one in the same process;
    the result then carries per-shape `incumbent_ratio` (> 1: the candidate is faster).
    `stages`: a subset of compile, correctness, benchmark, reverify (compile always runs).
    `timeout`: overall cap in seconds on top of the per-stage limits.
    `env`: extra environment for the judge and its workers (avo.evaluate.pool pins a GPU with
    CUDA_VISIBLE_DEVICES). `hide`: paths no worker may see (the run dir). `allow_library`: a seed
    that wraps a library attention may run (its result says own_code false); candidates may not.
    `progress(stage, shape)`: called as the evaluation moves on (for a live display)."""
    with tempfile.TemporaryDirectory(prefix="avo-pack-") as tmp:
        return _evaluate(_candidate(kernel, "kernel", Path(tmp)),
                         _candidate(incumbent, "incumbent", Path(tmp)) if incumbent is not None else None,
                         suite, device=device, settings=settings, baselines=baselines, timeout=timeout,
                         stages=stages, env=env, hide=hide, allow_library=allow_library, progress=progress)


def _evaluate(kernel_path: Path, incumbent_path: Optional[Path], suite: str | Sequence[Shape], *, device: str,
              settings: Any, baselines: Sequence[str], timeout: Optional[float], stages: Sequence[str],
              env: Optional[dict[str, str]], hide: Sequence[str | Path], allow_library: bool,
              progress: Optional[Callable[[str, Optional[str]], None]]) -> EvalResult:
    if device not in ("cuda", "cpu"):
        raise UsageError(f"device {device!r} is not one of cuda, cpu")
    try:
        suite_name, shapes = resolve_suite(suite)
    except (ConfigError, TypeError) as exc:
        raise UsageError(str(exc)) from None
    if not shapes:
        raise UsageError("the suite has no shapes")
    bad = [s for s in stages if s not in STAGES]
    if bad:
        raise UsageError(f"unknown stage(s) {', '.join(bad)}; stages are {', '.join(STAGES)}")
    bad = [b for b in baselines if b not in BASELINES]
    if bad:
        raise UsageError(f"unknown baseline(s) {', '.join(bad)}; baselines are {', '.join(BASELINES)}")
    s = settings_dict(settings)
    job = {
        "kernel": str(kernel_path),
        "incumbent": str(incumbent_path) if incumbent_path else None,
        "device": device,
        "suite": suite_name,
        "dtype": "bfloat16",
        "shapes": [shape_dict(x) for x in shapes],
        "correctness_shapes": [shape_dict(x) for x in correctness_shapes(shapes, device)],
        "settings": s,
        "baselines": list(dict.fromkeys(baselines)),
        "stages": [x for x in STAGES if x in stages],
        "limits": stage_limits(s),
        "hide": [str(Path(p).resolve()) for p in hide],
        "allow_library": bool(allow_library),
    }
    # The judge keeps the stage limits itself (and says which kernel ran out); ours are a backstop.
    backstop = {k: v + JUDGE_GRACE_S for k, v in job["limits"].items()}
    return _run(job, backstop, timeout, env, progress)


def _candidate(path: str | Path, what: str, tmp: Path) -> Path:
    """The file the judge reads: a kernel file (`.py`, or a package's `.avopkg` text) as it is, or
    a package directory (entry `kernel.py`) packed into one text under `tmp`. A file is never
    packed with its neighbours: what the caller hashed is what is evaluated."""
    p = Path(path).expanduser()
    if p.is_dir():
        try:
            pkg = package.load(p, strict=False)
        except package.PackageError as exc:
            raise UsageError(f"{what}: {exc}") from None
        out = tmp / what / package.file_name(pkg.text())
        out.parent.mkdir()
        out.write_text(pkg.text())
        return out
    if not p.is_file():
        raise UsageError(f"{what} file not found: {path}")
    return p.resolve()


# -- the judge process ---------------------------------------------------------------------------

def _child_env(device: str, fd: int, extra: Optional[dict[str, str]] = None) -> dict[str, str]:
    from avo.evaluate import sandbox

    # Even our own judge gets no credential: nothing it could echo into a result can leak one.
    env = sandbox.worker_env(os.environ, {k: str(v) for k, v in (extra or {}).items()},
                             home=os.environ.get("HOME", "/root"))
    for name in ("TMPDIR", "XDG_CACHE_HOME"):  # worker_env points these into a worker's scratch
        env.pop(name, None)
        if name in os.environ:
            env[name] = os.environ[name]
    env["AVO_JUDGE_FD"] = str(fd)
    env["PYTHONUNBUFFERED"] = "1"
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(_PKG_PARENT), env.get("PYTHONPATH")) if p)
    if device == "cpu":
        env["OMP_NUM_THREADS"] = "1"  # set before torch loads; the child also sets 1 torch thread
    return env


class _Watch:
    """The parent's view of the child: current stage, deadlines, messages received."""

    def __init__(self, limits: dict[str, float], timeout: Optional[float], progress=None):
        self.progress = progress
        self.limits = limits
        self.t0 = time.monotonic()
        self.overall = self.t0 + timeout if timeout else math.inf
        self.timeout = timeout
        self.stage = "startup"
        self.stage_deadline = self.t0 + limits["startup"]
        self.shape: Optional[str] = None
        self.seconds: dict[str, float] = {}
        self.env: dict[str, Any] = {}
        self.result: Optional[dict[str, Any]] = None
        self.fatal: Optional[str] = None

    def handle(self, msg: dict[str, Any]) -> None:
        ev = msg.get("ev")
        if ev == "stage":
            self.stage, self.shape = msg["stage"], None
            self.stage_deadline = time.monotonic() + self.limits.get(self.stage, self.limits["compile"])
            self._tell()
        elif ev == "end":
            self.seconds[msg["stage"]] = float(msg["seconds"])
        elif ev == "progress":
            self.shape = msg.get("shape")
            self._tell()
        elif ev == "ready":
            self.env = msg.get("env", {})
        elif ev == "result":
            self.result = msg["result"]
        elif ev == "fatal":
            self.fatal = msg.get("message", "the evaluation process could not start")

    def _tell(self) -> None:
        if self.progress is not None:
            try:
                self.progress(self.stage, str(self.shape) if self.shape else None)
            except Exception:  # a display must never break an evaluation
                pass

    def where(self) -> str:
        return f"stage {self.stage}" + (f" (shape {self.shape})" if self.shape else "")


def _run(job: dict[str, Any], limits: dict[str, float], timeout: Optional[float],
         extra_env: Optional[dict[str, str]] = None, progress=None) -> EvalResult:
    _guard_search_process()
    watch = _Watch(limits, timeout, progress)
    read_fd, write_fd = _channel()
    log = tempfile.TemporaryFile()
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "avo.evaluate.judge"], stdin=subprocess.PIPE, stdout=log,
            stderr=subprocess.STDOUT, pass_fds=(write_fd,), start_new_session=True,
            env=_child_env(job["device"], write_fd, extra_env), cwd=os.getcwd())
    except BaseException:
        os.close(read_fd)
        os.close(write_fd)
        log.close()
        raise
    os.close(write_fd)  # our copy: EOF on read_fd now means the child (group) is gone
    try:
        try:
            proc.stdin.write(json.dumps(job).encode())
            proc.stdin.close()
        except BrokenPipeError:
            pass
        timed_out = _follow(read_fd, proc.pid, watch)
        if timed_out:
            _dump_stack(proc.pid)
        else:
            _wait_unreaped(proc.pid, 30.0)
    finally:
        _kill_group(proc.pid)  # also ends stray grandchildren; the leader is not yet reaped
        proc.wait()
        os.close(read_fd)
    try:
        return _verdict(job, watch, timed_out, proc.returncode, _tail(log))
    finally:
        log.close()


def _guard_search_process() -> None:
    """Before any kernel runs: without bubblewrap a worker has our uid, and this process holds the
    credentials (in /proc/PID/environ, in memory). Undumpable, it is out of the worker's reach (the
    launcher drops root's capabilities). Idempotent; this process still reads its own /proc/self."""
    from avo.evaluate import sandbox

    sandbox.make_undumpable()


def _channel() -> tuple[int, int]:
    """A connected pair of Unix sockets: unlike a pipe, a socket cannot be opened again through
    /proc/PID/fd by a process of the same user, so only the judge holds a way to write to us."""
    a, b = socket.socketpair()
    return a.detach(), b.detach()


def _follow(fd: int, pid: int, watch: _Watch) -> bool:
    """Read messages until the verdict, EOF or the child's exit (False), or a deadline (True).
    The child's exit is polled too: a grandchild the kernel left behind may hold the pipe open."""
    buf = b""
    exited = False
    while watch.result is None:
        stopping.check()  # the search is stopping: the caller's finally kills the child, nothing is judged
        now = time.monotonic()
        deadline = min(watch.stage_deadline, watch.overall)
        if now >= deadline:
            return True
        ready, _, _ = select.select([fd], [], [], min(deadline - now, 0.5))
        if not ready:
            if exited:
                return False
            exited = _has_exited(pid)  # one more pass drains what it wrote before exiting
            continue
        chunk = os.read(fd, 1 << 16)
        if not chunk:
            return False
        buf += chunk
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            try:
                watch.handle(json.loads(line))
            except (ValueError, KeyError, TypeError, AttributeError):
                continue  # not one of ours
    return False


def _has_exited(pid: int) -> bool:
    """Without reaping it, so its process group id stays reserved until we kill the group."""
    try:
        return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:
        return True


def _wait_unreaped(pid: int, limit: float) -> None:
    end = time.monotonic() + limit
    while time.monotonic() < end and not _has_exited(pid):
        time.sleep(0.01)


def _dump_stack(pid: int) -> None:
    """Ask a hung child to print its Python stack (faulthandler on SIGUSR1) before it is killed."""
    try:
        os.kill(pid, signal.SIGUSR1)
    except ProcessLookupError:
        return
    time.sleep(0.5)


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _tail(log: IO[bytes]) -> str:
    log.seek(0, os.SEEK_END)
    size = log.tell()
    log.seek(max(0, size - 4 * _TAIL_CHARS))
    lines = log.read().decode(errors="replace").strip().splitlines()
    # faulthandler's list of loaded extension modules says nothing about the kernel.
    text = "\n".join(ln for ln in lines if not ln.startswith("Extension modules:")).strip()
    return text[-_TAIL_CHARS:]


def _verdict(job: dict[str, Any], watch: _Watch, timed_out: bool, rc: Optional[int], tail: str) -> EvalResult:
    wall = time.monotonic() - watch.t0
    if watch.fatal:
        raise EvaluatorError(watch.fatal)
    base = {"suite": job["suite"], "device": job["device"], "wall_s": wall, "env": watch.env}
    tail = _scrubbed({"t": tail}, _secret_values(os.environ))["t"]
    if watch.result is None or timed_out:
        compile_s = (watch.seconds["import"] + watch.seconds["compile"]
                     if {"import", "compile"} <= watch.seconds.keys() else None)
        stage = watch.stage if watch.stage != "startup" else "import"
        after = f"\nlast output of the evaluation process:\n{tail}" if tail else ""
        if timed_out:
            if watch.overall <= watch.stage_deadline:
                why = f"the overall timeout of {watch.timeout:g} s ran out in {watch.where()}"
            else:
                why = f"{watch.where()} exceeded its limit of {watch.limits.get(watch.stage, 0):g} s"
            return EvalResult(status=TIMEOUT, stage=stage, compile_s=compile_s,
                              message=f"{why}; the process was killed{after}", **base)
        return EvalResult(status=CRASH, stage=stage, compile_s=compile_s,
                          message=f"the evaluation process died in {watch.where()} with {exit_text(rc)}{after}",
                          **base)
    res = _scrubbed(dict(watch.result), _secret_values(os.environ))
    res["env"] = {**watch.env, **res.get("env", {})}
    res["wall_s"] = wall
    result = EvalResult.from_dict(res)
    if res.get("detail") and "detail" not in EvalResult.__dataclass_fields__:
        # The judge's own traceback of a crash: kept where a record has room for it.
        result.notes.append(f"detail: {res['detail']}")
    if result.status == OK:
        summarize(result)
    return result


def _secret_values(env: dict[str, str]) -> list[str]:
    """This process's credentials, as the sandbox's deny rules see them, in the forms a kernel
    that read them (without bubblewrap, same uid: from /proc/<ancestor>/environ) might print."""
    import base64
    import binascii
    from urllib.parse import quote

    from avo.evaluate import sandbox

    forms: list[str] = []
    for name, value in env.items():
        if len(value) >= 8 and (sandbox._DENY_NAME.search(name) or sandbox._DENY_VALUE.search(value)):
            raw = value.encode()
            forms += [value, quote(value, safe=""), binascii.hexlify(raw).decode(),
                      base64.b64encode(raw).decode().rstrip("=")]
    return sorted(set(forms), key=len, reverse=True)


def _scrubbed(res: dict[str, Any], secrets: list[str]) -> dict[str, Any]:
    """The judge's record with every credential value cut out of its free text (what a kernel
    printed can reach the message through its output tail)."""
    def cut(x: Any) -> Any:
        if isinstance(x, str):
            for v in secrets:
                x = x.replace(v, "[redacted]")
            return x
        if isinstance(x, list):
            return [cut(i) for i in x]
        if isinstance(x, dict):
            return {k: cut(v) for k, v in x.items()}
        return x

    return cut(res) if secrets else res


def summarize(result: EvalResult) -> None:
    """Suite-level figures from the per-shape rows: geometric means over the shapes. Speedup
    noise is +-INTERVAL_Z sigma; the incumbent ratio's spread is the acceptance margin, ACCEPT_Z
    sigma (sigma from the per-shape standard errors and the run-to-run floor of this device)."""
    rows = result.shapes
    if not rows:
        return
    floor = NOISE_FLOOR.get(result.device, NOISE_FLOOR["cuda"])
    result.score = geomean(r.tflops for r in rows)
    names = list(dict.fromkeys(n for r in rows for n in r.baselines))
    for name in names:
        have = [r for r in rows if r.baselines.get(name) and r.tflops]
        result.baseline_scores[name] = geomean(r.baselines[name] for r in have) if have else None
        if have and all(name in r.baseline_ratios for r in have):
            result.speedups[name], result.speedup_noise[name] = _suite_ratio(
                [r.baseline_ratios[name] for r in have], [r.baseline_ratio_se.get(name) for r in have],
                floor, INTERVAL_Z)
        else:  # a result from before baselines were interleaved: separate timings, no noise figure
            result.speedups[name] = geomean(r.tflops / r.baselines[name] for r in have) if have else None
        if have and len(have) < len(rows):
            result.notes.append(f"{name}: score and speedup over {len(have)} of {len(rows)} shapes")
    inc = [r for r in rows if r.incumbent_ratio is not None]
    if inc:
        result.incumbent_ratio, noise = _suite_ratio([r.incumbent_ratio for r in inc],
                                                     [r.incumbent_ratio_se for r in inc], floor, ACCEPT_Z)
        # too few repeats for an error estimate: fall back to the widest per-shape spread
        result.incumbent_ratio_spread = noise if noise is not None else max(
            r.incumbent_ratio_spread or 0.0 for r in inc)


def _suite_ratio(ratios: list[float], ses: list[Optional[float]], floor: float = 0.0,
                 z: float = 2.0) -> tuple[Optional[float], Optional[float]]:
    """Geomean of per-shape interleaved ratios and z standard errors of it (ratio units), from
    the per-shape standard errors of log(median ratio) and a floor for run-to-run variation;
    None for the noise when one is missing."""
    g = geomean(ratios)
    if g is None or any(se is None for se in ses):
        return g, None
    se_log = math.sqrt(sum(se * se for se in ses)) / len(ses)
    return g, z * math.sqrt(se_log * se_log + floor * floor) * g
