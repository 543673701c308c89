"""`python -m avo.evaluate.judge`: the judge process (started by avo.evaluate.api.evaluate).

Reads the job (JSON) on stdin and reports stage starts/ends and the verdict as JSON lines on the
fd in $AVO_JUDGE_FD, which no worker inherits. Every process a kernel starts is killed before
the verdict is sent: the workers' sandboxes, and any orphan that reparented to this process (it is
a child subreaper), setsid daemons included. Whatever goes wrong in here after the job is read
still ends in a verdict, `crash`, naming the stage (`crashed`); it is undumpable from the start,
so no worker of its uid can ptrace it or read its /proc.
"""

from __future__ import annotations

import faulthandler
import json
import os
import shutil
import signal
import sys
import tempfile
import traceback
from dataclasses import asdict
from pathlib import Path
from typing import Any

# Places under $HOME where credentials live: hidden from workers (bubblewrap) even when the
# project or the Python install sit under $HOME too.
_HOME_SECRETS = (".ssh", ".aws", ".azure", ".config", ".netrc", ".git-credentials", ".docker", ".kube",
                 ".huggingface", ".cache/huggingface", ".netrc", ".gnupg", ".wandb", ".anthropic",
                 ".codex", ".claude", ".pypirc", ".npmrc")


class Channel:
    def __init__(self, fd: int):
        self.fd = fd

    def send(self, **msg: Any) -> None:
        data = (json.dumps(msg, default=str) + "\n").encode()
        while data:
            data = data[os.write(self.fd, data):]


def hidden_paths(job: dict[str, Any]) -> list[Path]:
    home = Path(os.environ.get("HOME", "/root"))
    paths = [home / p for p in _HOME_SECRETS] + [Path(p) for p in job.get("hide", [])]
    return [p for p in dict.fromkeys(paths) if p.exists()]


def cache_env(role: str, source: bytes | None, base: Path) -> tuple[dict[str, str], Path]:
    """A compile cache per kernel source (or baseline): a candidate can fill only its own."""
    import hashlib

    key = hashlib.sha256(source).hexdigest()[:20] if source is not None else role.replace(":", "-")
    d = base / key
    d.mkdir(parents=True, exist_ok=True)
    return {"CUTE_DSL_CACHE_DIR": str(d / "cute"), "TRITON_CACHE_DIR": str(d / "triton")}, d


def crashed(job: dict[str, Any], stage: str, exc: BaseException, result: dict[str, Any] | None) -> dict[str, Any]:
    """The verdict when the judge itself failed (a bug, an allocation it could not make, a worker
    that reported something it cannot go on from): never `ok`, one line naming the stage, and the
    traceback in `detail` (the search's side cuts credentials out of both)."""
    first = (str(exc).strip().splitlines() or [""])[0][:300]
    kept = {k: result[k] for k in ("notes", "isolation", "own_code") if result and k in result}
    return {**kept, "status": "crash", "stage": stage, "suite": job.get("suite", ""), "device": job.get("device", ""),
            "message": f"the judge failed in stage {stage}: {type(exc).__name__}" + (f": {first}" if first else ""),
            "detail": traceback.format_exc()[-8000:]}


def violated(result: dict[str, Any], started: list[Any], stage: str) -> dict[str, Any]:
    """A candidate whose sandbox broke a limit (it was killed for it) fails with that reason, whatever
    the judge made of its death; the judge's own account goes to `detail`."""
    why = next((w.proc.violation for w in started if w.role == "candidate" and getattr(w.proc, "violation", None)),
               None)
    if why is None:
        return result
    before = f"{result.get('status')} at {result.get('stage')}: {result.get('message', '')}"
    return {**result, "status": "crash", "stage": result.get("stage") or stage, "message": why,
            "detail": (result.get("detail") or before)[-8000:]}


class Run:
    """What the crash path needs to know of an evaluation that failed part way."""

    def __init__(self):
        self.judge: Any = None
        self.started: list[Any] = []  # WorkerProc, in start order
        self.isolation: Any = None

    def stage(self) -> str:
        return self.judge.stage if self.judge is not None and self.judge.stage != "startup" else "import"


def judge_job(job: dict[str, Any], chan: Channel, run: Run) -> dict[str, Any]:
    from avo.evaluate import sandbox

    try:
        run.isolation = isolation = sandbox.choose(job["settings"].get("sandbox", "auto"))
    except sandbox.SandboxError as exc:
        chan.send(ev="fatal", message=str(exc))
        os._exit(3)
    import torch

    from avo.evaluate.judge import envinfo
    from avo.evaluate.judge.judge import Judge
    from avo.evaluate.judge.workers import WorkerProc, WorkerSpec

    device = job["device"]
    torch.set_float32_matmul_precision("highest")  # the reference must not run in TF32
    if device == "cpu":
        torch.set_num_threads(1)
    elif not torch.cuda.is_available():
        chan.send(ev="fatal", message="device=cuda but torch.cuda.is_available() is False on this machine "
                                      "(use --device cpu)")
        os._exit(3)
    cache_root = Path(job.get("cache_dir") or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "avo" / "kernels")
    hide = hidden_paths(job)
    # max_processes comes with the settings once EvaluatorConfig has it; until then the default.
    limits = sandbox.Limits(max_processes=int(job["settings"].get("max_processes") or sandbox.Limits.max_processes))
    base_env = dict(os.environ)
    root = Path(tempfile.mkdtemp(prefix="avo-eval-"))

    def start(spec: WorkerSpec) -> WorkerProc:
        extra, cache = cache_env(spec.role, spec.kernel_source, cache_root)
        spec.env.update(extra)
        # Only this worker's own cache is writable (bubblewrap); the rest of the cache root is hidden.
        w = WorkerProc(spec, scratch=root / spec.role.replace(":", "-"), isolation=isolation, base_env=base_env,
                       hide=hide, limits=limits, writable=[cache])
        run.started.append(w)
        return w

    try:
        env = envinfo.collect(device)
        chan.send(ev="ready", env=env)
        run.judge = Judge(job, chan.send, start)
        with torch.no_grad():
            result = run.judge.run()
    finally:
        failures = []
        for w in run.started:  # every one, even after one failed to close
            try:
                w.close()
            except Exception as exc:  # noqa: BLE001 - raised below, once the rest are closed too
                failures.append(exc)
        sandbox.kill_strays()
        shutil.rmtree(root, ignore_errors=True)
        if failures:
            raise failures[0]
    return result


def main() -> None:
    from avo.evaluate import sandbox

    sandbox.make_undumpable()  # first: no worker of our uid may read or ptrace our seed, inputs, channels
    faulthandler.enable()
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    chan = Channel(int(os.environ.pop("AVO_JUDGE_FD")))
    job = json.loads(sys.stdin.read())
    sandbox.become_subreaper()
    run = Run()
    try:
        result = judge_job(job, chan, run)
    except BaseException as exc:  # noqa: BLE001 - the search gets a verdict, never our traceback
        result = crashed(job, run.stage(), exc, run.judge.result if run.judge is not None else None)
    result = violated(result, run.started, run.stage())
    if run.isolation is not None:
        result["isolation"] = result.get("isolation") or asdict(run.isolation)
    chan.send(ev="result", result=result)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
