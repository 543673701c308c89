"""Spread evaluations over every local GPU: one worker per device, one evaluation per device at once.

A `DevicePool` has one worker thread per device. Each worker takes the next queued evaluation,
pins it to its device (the evaluator's child process gets `CUDA_VISIBLE_DEVICES=<device>`), and
holds two locks while it runs: its own (so the pool never puts two evaluations on one device) and
an exclusive `flock` on `<lock_dir>/<device key>.lock`, so two jobs sharing a node (two Slurm jobs,
two searches started by hand) never time on the same GPU at the same moment. The file lock is
released by the kernel when its holder dies, so a killed job never leaves a device locked.

`pool.evaluate` has the signature of `avo.evaluate.api.evaluate` and blocks until the result is
back, so it can replace it for a search (`run_search(cfg, run_dir, evaluate=pool.evaluate)`);
`pool.submit` returns a Future, for callers that evaluate several candidates at once.
"""

from __future__ import annotations

import fcntl
import inspect
import os
import queue
import re
import socket
import subprocess
import threading
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, Sequence

DEFAULT_LOCK_DIR = Path("/tmp/avo-gpu-locks")
_STOP = object()


def visible_devices(environ: Optional[dict[str, str]] = None) -> list[str]:
    """The GPUs this process may use, as CUDA_VISIBLE_DEVICES entries ("0", "3", "GPU-<uuid>").

    CUDA_VISIBLE_DEVICES wins when set (Slurm and submitit set it per job); otherwise every GPU
    torch can see. An empty list means no GPU.
    """
    env = os.environ if environ is None else environ
    listed = env.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        # CUDA stops at the first invalid entry; "-1" or "" hides every device.
        out = []
        for item in (x.strip() for x in listed.split(",")):
            if not item or item.startswith("-"):
                break
            out.append(item)
        return out
    try:
        import torch  # only here: the pool itself never needs torch

        return [str(i) for i in range(torch.cuda.device_count())]
    except Exception:  # no torch, or a broken driver: no GPU we could pin
        return []


def _nvidia_smi_uuids() -> dict[str, str]:
    """nvidia-smi's index -> GPU uuid, {} where nvidia-smi is missing or fails."""
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=index,uuid", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return {}
    pairs = (line.split(",", 1) for line in out.splitlines() if "," in line)
    return {i.strip(): u.strip() for i, u in pairs}


def device_keys(devices: Sequence[str]) -> list[str]:
    """A name per device that is the same for every process on this host: the GPU's uuid where
    nvidia-smi gives it (a Slurm job may see its one GPU as "0" whatever its physical index),
    else `<host>-gpu<entry>`."""
    uuids = _nvidia_smi_uuids() if any(not d.startswith(("GPU-", "MIG-")) for d in devices) else {}
    host = socket.gethostname()
    keys = []
    for d in devices:
        key = d if d.startswith(("GPU-", "MIG-")) else uuids.get(d, f"{host}-gpu{d}")
        keys.append(re.sub(r"[^A-Za-z0-9_.-]", "_", key))
    return keys


@contextmanager
def device_file_lock(lock_dir: Optional[Path], key: str) -> Iterator[None]:
    """Exclusive across processes of this host while the block runs; nothing when lock_dir is None."""
    if lock_dir is None:
        yield
        return
    lock_dir.mkdir(parents=True, exist_ok=True)
    try:
        os.chmod(lock_dir, 0o1777)  # shared by every user's jobs on the node, like /tmp itself
    except PermissionError:
        pass
    path = lock_dir / f"{key}.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        os.fchmod(fd, 0o666)  # past the umask: another user's job must be able to take it too
    except PermissionError:  # someone else's file, already shared
        pass
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.ftruncate(fd, 0)
        os.write(fd, f"{socket.gethostname()} pid {os.getpid()}\n".encode())
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


@dataclass
class _Job:
    args: tuple
    kwargs: dict[str, Any]
    future: Future


class DevicePool:
    """`devices`: CUDA_VISIBLE_DEVICES entries (default: `visible_devices()`); tests pass made-up
    names. `evaluate`: the function run per job (default: the real evaluator); it must accept
    `env=` (extra environment for the evaluation's child process). `lock_dir=None` turns the
    cross-process lock off; `keys` overrides the per-device lock names."""

    def __init__(self, devices: Optional[Sequence[str]] = None, *, evaluate: Optional[Callable[..., Any]] = None,
                 lock_dir: Optional[str | Path] = DEFAULT_LOCK_DIR, keys: Optional[Sequence[str]] = None):
        self.devices = list(visible_devices() if devices is None else devices)
        if not self.devices:
            raise ValueError("no GPU to evaluate on (CUDA_VISIBLE_DEVICES is empty and torch sees none)")
        if len(set(self.devices)) != len(self.devices):
            raise ValueError(f"a device is listed twice: {', '.join(self.devices)}")
        if evaluate is None:
            from avo.evaluate.api import evaluate as real

            evaluate = real
        if "env" not in inspect.signature(evaluate).parameters:
            raise TypeError(f"{getattr(evaluate, '__name__', evaluate)!r} takes no env= argument: the pool "
                            "could not pin its evaluations to a device")
        self._evaluate = evaluate
        self.lock_dir = Path(lock_dir) if lock_dir is not None else None
        self.keys = list(keys) if keys is not None else device_keys(self.devices)
        self._queue: "queue.Queue[Any]" = queue.Queue()
        self._device_locks = {d: threading.Lock() for d in self.devices}
        self._closed = False
        self._workers = [threading.Thread(target=self._work, args=(d, k), name=f"avo-eval-{d}", daemon=True)
                         for d, k in zip(self.devices, self.keys)]
        for w in self._workers:
            w.start()

    @property
    def size(self) -> int:
        return len(self.devices)

    def submit(self, *args: Any, **kwargs: Any) -> Future:
        """Queue one evaluation (the evaluator's arguments); the Future gives its result."""
        if self._closed:
            raise RuntimeError("the pool is closed")
        if "env" in kwargs:
            raise TypeError("the pool sets env= itself (it pins the device)")
        fut: Future = Future()
        self._queue.put(_Job(args, kwargs, fut))
        return fut

    def evaluate(self, *args: Any, **kwargs: Any) -> Any:
        """Like the evaluator, run on the next free device."""
        return self.submit(*args, **kwargs).result()

    def _work(self, device: str, key: str) -> None:
        while True:
            job = self._queue.get()
            if job is _STOP:
                return
            if not job.future.set_running_or_notify_cancel():
                continue
            try:
                with self._device_locks[device], device_file_lock(self.lock_dir, key):
                    result = self._evaluate(*job.args, env={"CUDA_VISIBLE_DEVICES": device}, **job.kwargs)
            except BaseException as exc:  # handed to the caller, who decides
                job.future.set_exception(exc)
            else:
                job.future.set_result(result)

    def close(self, wait: bool = True) -> None:
        """Finish what is queued, then stop the workers."""
        if self._closed:
            return
        self._closed = True
        for _ in self._workers:
            self._queue.put(_STOP)
        if wait:
            for w in self._workers:
                w.join()

    def __enter__(self) -> "DevicePool":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

