"""`python -m avo.evaluate.judge`: the judge process (started by avo.evaluate.api.evaluate).

Reads the job (JSON) on stdin and reports stage starts/ends and the verdict as JSON lines on the
fd in $AVO_JUDGE_FD, which no worker inherits. Every process a kernel starts is killed before
this process exits: the workers' sandboxes, and any orphan that reparented to this process (it is
a child subreaper), setsid daemons included.
"""

from __future__ import annotations

import faulthandler
import json
import os
import shutil
import signal
import sys
import tempfile
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


def main() -> None:
    faulthandler.enable()
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    chan = Channel(int(os.environ.pop("AVO_JUDGE_FD")))
    job = json.loads(sys.stdin.read())
    from avo.evaluate import sandbox

    sandbox.become_subreaper()
    try:
        isolation = sandbox.choose(job["settings"].get("sandbox", "auto"))
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
    root = Path(tempfile.mkdtemp(prefix="avo-eval-"))
    cache_root = Path(job.get("cache_dir") or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "avo" / "kernels")
    hide = hidden_paths(job)
    limits = sandbox.Limits()
    base_env = dict(os.environ)
    started: list[WorkerProc] = []

    def start(spec: WorkerSpec) -> WorkerProc:
        extra, cache = cache_env(spec.role, spec.kernel_source, cache_root)
        spec.env.update(extra)
        # Only this worker's own cache is writable (bubblewrap); the rest of the cache root is hidden.
        w = WorkerProc(spec, scratch=root / spec.role.replace(":", "-"), isolation=isolation, base_env=base_env,
                       hide=hide, limits=limits, writable=[cache])
        started.append(w)
        return w

    try:
        env = envinfo.collect(device)
        chan.send(ev="ready", env=env)
        with torch.no_grad():
            result = Judge(job, chan.send, start).run()
        result["isolation"] = result.get("isolation") or asdict(isolation)
        chan.send(ev="result", result=result)
    finally:
        for w in started:
            w.close()
        sandbox.kill_strays()
        shutil.rmtree(root, ignore_errors=True)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
