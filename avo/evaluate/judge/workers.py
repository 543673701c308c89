"""Starting worker processes and talking to them, from the judge's side.

A worker is untrusted even when it runs our own baseline code: every reply is parsed defensively,
must echo the request's random nonce, must come before the judge's deadline, and must be the only
thing the worker wrote. The judge's clock brackets every request (`Reply.wall_ms`).
"""

from __future__ import annotations

import json
import os
import secrets
import select
import signal
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from avo import package
from avo.evaluate import sandbox
from avo.evaluate.judge.arena import Arena
from avo.evaluate.plan import exit_text

_PKG_PARENT = Path(__file__).resolve().parents[3]  # the directory holding the avo package
MAX_REPLY_BYTES = 1 << 20


class WorkerGone(Exception):
    """The worker died, hung past its deadline, or broke the protocol."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind  # "timeout" | "crash" | "protocol"
        self.message = message


@dataclass
class Reply:
    data: dict[str, Any]
    wall_ms: float  # the judge's clock: request written -> reply read


@dataclass
class WorkerSpec:
    role: str  # "candidate" | "incumbent" | "baseline:<name>"
    device: str
    kernel_source: Optional[bytes] = None
    kernel_name: Optional[str] = None  # its file name, so messages name the agent's own file
    baseline: Optional[str] = None
    arena_bytes: int = 0
    env: dict[str, str] = field(default_factory=dict)  # extra variables (CUDA_VISIBLE_DEVICES is inherited)


class WorkerProc:
    def __init__(self, spec: WorkerSpec, *, scratch: Path, isolation: sandbox.Isolation,
                 base_env: dict[str, str], hide: list[Path], limits: sandbox.Limits,
                 writable: list[Path] = ()):
        self.spec = spec
        self.role = spec.role
        self.scratch = scratch
        scratch.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.arena = Arena(spec.device, spec.arena_bytes) if spec.arena_bytes else None
        argv = [sys.executable, "-m", "avo.evaluate.worker", "--device", spec.device, "--role", spec.role.split(":")[0]]
        if spec.kernel_source is not None:
            # The worker imports its own copy: what the candidate does to files on disk later
            # cannot change what this evaluation measures.
            text = spec.kernel_source.decode(errors="replace")
            if package.is_package_text(text):  # parsed by the judge before: its paths stay inside
                argv += ["--kernel", str(package.parse(text).write(scratch / "kernel")), "--package"]
            else:
                kernel = scratch / (spec.kernel_name or "kernel.py")
                kernel.write_bytes(spec.kernel_source)
                argv += ["--kernel", str(kernel)]
        else:
            argv += ["--baseline", str(spec.baseline)]
        # One Unix socket pair for commands and replies: a pipe could be reopened through
        # /proc/PID/fd by a same-user process (another worker, a daemon) to read or forge
        # messages; a socket cannot.
        mine, theirs = socket.socketpair()
        self._cmd_w = self._rep_r = mine.detach()
        worker_fd = theirs.detach()
        argv += ["--cmd-fd", str(worker_fd), "--reply-fd", str(worker_fd)]
        pass_fds = [worker_fd] + (self.arena.fds() if self.arena is not None else [])
        env = sandbox.worker_env(base_env, {**spec.env, "PYTHONUNBUFFERED": "1",
                                            "PYTHONPATH": str(_PKG_PARENT) + _pythonpath_tail(base_env)},
                                 home=str(scratch))
        if spec.device == "cpu":
            env["OMP_NUM_THREADS"] = "1"
        try:
            self.proc = sandbox.spawn(argv, isolation=isolation, scratch=scratch, env=env, pass_fds=pass_fds,
                                      readonly_paths=_readonly(base_env), hide_paths=hide, writable_paths=list(writable),
                                      limits=limits,
                                      gpu=spec.device == "cuda")
        finally:
            os.close(worker_fd)
        self._buf = b""
        self.paused = False

    # -- protocol --------------------------------------------------------------------------------
    def _read_line(self, deadline: float) -> bytes:
        while b"\n" not in self._buf:
            now = time.monotonic()
            if now >= deadline:
                raise WorkerGone("timeout", f"{self.role} did not answer in time")
            ready, _, _ = select.select([self._rep_r], [], [], min(deadline - now, 0.5))
            if not ready:
                if self.proc.poll() is not None and not select.select([self._rep_r], [], [], 0)[0]:
                    raise WorkerGone("crash", f"{self.role} died ({exit_text(self.proc.poll())})")
                continue
            chunk = os.read(self._rep_r, 1 << 16)
            if not chunk:
                self.proc.wait(2.0)
                raise WorkerGone("crash", f"{self.role} died ({exit_text(self.proc.poll())})")
            self._buf += chunk
            if len(self._buf) > MAX_REPLY_BYTES:
                raise WorkerGone("protocol", f"{self.role} wrote more than {MAX_REPLY_BYTES} bytes without a reply")
        line, self._buf = self._buf.split(b"\n", 1)
        return line

    def _parse(self, line: bytes, op: str, nonce: Optional[str], more: bool = False) -> dict[str, Any]:
        try:
            data = json.loads(line)
        except ValueError:
            raise WorkerGone("protocol", f"{self.role} wrote something that is not a reply on the judge's channel")
        if not isinstance(data, dict) or data.get("op") != op or (nonce is not None and data.get("nonce") != nonce):
            raise WorkerGone("protocol", f"{self.role} sent a reply the judge did not ask for (forged or out of order)")
        if (op == "ready" and data.get("error")) or more:
            return data  # it could not start and has exited, or its next message is allowed
        if self._buf or select.select([self._rep_r], [], [], 0)[0]:
            extra = self._buf or os.read(self._rep_r, 200)
            if not extra:  # end of file: it replied, then closed the channel or died
                self.proc.wait(2.0)
                raise WorkerGone("crash", f"{self.role} closed its channel ({exit_text(self.proc.poll())})")
            raise WorkerGone("protocol", f"{self.role} wrote extra data on the judge's channel "
                                         f"({extra[:120]!r})")
        return data

    def pending_lines(self) -> int:
        """Complete messages the worker has written that the judge has not read yet (reads what is
        there without waiting, keeping it for the next receive)."""
        while select.select([self._rep_r], [], [], 0)[0]:
            chunk = os.read(self._rep_r, 1 << 16)
            if not chunk:
                break
            self._buf += chunk
            if len(self._buf) > MAX_REPLY_BYTES:
                raise WorkerGone("protocol", f"{self.role} wrote more than {MAX_REPLY_BYTES} bytes without a reply")
        return self._buf.count(b"\n")

    def readable(self) -> bool:
        """Something (a message, or the end of the channel) is there to read, without reading it."""
        return bool(self._buf) or bool(select.select([self._rep_r], [], [], 0)[0])

    def ready(self, deadline: float) -> dict[str, Any]:
        return self._parse(self._read_line(deadline), "ready", None)

    def send(self, msg: dict[str, Any]) -> tuple[str, float]:
        """Write one command (resuming the worker); (its nonce, the judge's clock at sending)."""
        if self._cmd_w is None:
            raise WorkerGone("crash", f"{self.role} was closed")
        nonce = secrets.token_hex(8)
        data = (json.dumps({**msg, "nonce": nonce}) + "\n").encode()
        if self.paused:
            self.resume()
        t0 = time.perf_counter()
        try:
            while data:
                data = data[os.write(self._cmd_w, data):]
        except (BrokenPipeError, OSError):
            raise WorkerGone("crash", f"{self.role} died ({exit_text(self.proc.poll())})")
        return nonce, t0

    def receive(self, op: str, nonce: str, deadline: float, t0: float, *, pause: bool = True,
                more: bool = False) -> Reply:
        """The reply to `nonce`; wall time from t0. `more`: the worker may already have written a
        second message (the armed half of a GPU call is followed by its result)."""
        line = self._read_line(deadline)
        wall = (time.perf_counter() - t0) * 1e3
        if pause:
            # Nothing of it runs while the judge checks or others are timed. Every worker, trusted
            # or not, is paused alike: a process woken from SIGSTOP starts its next call from cold
            # caches, and only a symmetric cost keeps the interleaved ratios fair.
            self.pause()
        return Reply(self._parse(line, op, nonce, more=more), wall)

    def request(self, msg: dict[str, Any], deadline: float) -> Reply:
        """Send one command and wait for its reply; the candidate runs only inside this window."""
        nonce, t0 = self.send(msg)
        return self.receive(msg["op"], nonce, deadline, t0)

    # -- life ------------------------------------------------------------------------------------
    def pause(self) -> None:
        self.proc.pause()
        self.paused = True
        if self.proc.violation is not None:  # the sandbox broke a limit and was killed for it
            raise WorkerGone("crash", f"{self.role}: {self.proc.violation}")

    def resume(self) -> None:
        self.proc.resume()
        self.paused = False

    def dump_stack(self) -> None:
        """faulthandler in the worker prints where it hangs (into its output tail)."""
        try:
            if self.paused:
                self.resume()
            os.kill(self.proc.pid, signal.SIGUSR1)
            time.sleep(0.5)
        except (ProcessLookupError, PermissionError):
            pass

    def output_tail(self) -> str:
        return self.proc.output_tail()

    def close(self) -> None:
        if self._cmd_w is None:
            return  # closed already: the fd number may belong to someone else by now
        try:
            os.write(self._cmd_w, b'{"op": "exit"}\n')
        except OSError:
            pass
        self.proc.kill()
        try:
            os.close(self._cmd_w)
        except OSError:
            pass
        self._cmd_w = self._rep_r = None
        if self.arena is not None:
            self.arena.close()
            self.arena = None


def _readonly(env: dict[str, str]) -> list[Path]:
    """What the worker must see even where the sandbox gives it a private /tmp: our package and
    every PYTHONPATH entry (a GPU machine may unpack CuTe DSL under /tmp)."""
    paths = [_PKG_PARENT] + [Path(p) for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    return [p for p in dict.fromkeys(paths) if p.exists()]


def _pythonpath_tail(env: dict[str, str]) -> str:
    extra = env.get("PYTHONPATH")
    return os.pathsep + extra if extra else ""
