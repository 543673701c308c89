"""Starting an untrusted worker, and making sure every process it starts dies with it.

The judge starts one worker per kernel with `spawn`; the candidate's code in it is hostile.
- "bubblewrap": mount, pid, uts, ipc and network namespaces: read-only `/` and /proc/sys, private
  /tmp and /dev, /run and `hide_paths` emptied, only `scratch` and `writable_paths` writable, no
  network, no capabilities when root. The kernel kills the pid namespace when its init dies, so
  nothing outlives `kill()`.
- "process" (bwrap missing or unusable): the judge's uid, so it confines little (the worker can read
  the user's files, write the project, signal the judge, use the network). It runs without
  capabilities even as root, so it can neither ptrace nor read the /proc/PID/environ, mem or fds of
  the judge and the search, which make themselves undumpable (`make_undumpable`); beyond that it
  only tracks processes. A launcher (`_launch`) is a child subreaper, so every orphan of the
  candidate reparents to it, and `processes()`/`kill()` walk /proc ppid links from it, whatever
  sessions or process groups the candidate makes. A candidate that kills its launcher orphans its
  processes to the next subreaper up: the judge calls `become_subreaper()` once at start, and
  `kill_strays()` (run by every `kill()`) finds them there.
Both modes run the launcher: it sets the rlimits before exec (no `preexec_fn`: unsafe in a threaded
judge), reports the worker's pid and exact exit status on a private pipe, and kills what is left
when the worker exits. Parent-death signals (bwrap's --die-with-parent, the launcher's) fire when
the *thread* that called `spawn` ends: call it from a thread that outlives the worker.
"""

from __future__ import annotations

import ctypes
import functools
import glob
import json
import os
import re
import resource
import secrets
import select
import shutil
import signal
import subprocess
import sys
import threading
import time
import weakref
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Mapping, Optional, Sequence

SANDBOXES = ("auto", "bubblewrap", "process")
_TAG = "AVO_SANDBOX_ID"  # in each worker's environment: which worker a stray came from
_KILL_WAIT_S = 5.0
_START_WAIT_S = 60.0  # generous: a loaded machine can take seconds to start Python in bwrap
_SELF = os.path.realpath(__file__)  # the launcher runs this file as a script: no package import
# Root without capabilities is still uid 0 to file permissions: bwrap leaves the sysctls under a new
# /proc writable (core_pattern would run a scratch file as host root), and the sockets under /run
# (systemd, D-Bus, Docker) would start processes outside the sandbox.
_BASE_VIEW = ["--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--ro-bind", "/proc/sys", "/proc/sys",
              "--ro-bind-try", "/proc/sysrq-trigger", "/proc/sysrq-trigger", "--tmpfs", "/tmp"]
_ALWAYS_HIDDEN = ("/run", "/var/run")


# pause() lists a worker's processes cheaply (children links); every this many pauses it scans
# all of /proc, which also finds a killed launcher's orphans that reparented to the judge.
_FULL_SCAN_EVERY = 16


class SandboxError(Exception):
    """The sandbox could not be set up; one line saying what failed and how to fix it."""


@dataclass
class Limits:
    """Bounded by the kernel: the rlimits (soft = hard, so only a privileged worker can raise them).
    Bounded by `Worker.pause()`, which kills a sandbox it finds with more than `max_processes`
    (RLIMIT_NPROC counts every process of the uid, and does not bind root): see `Worker.violation`.
    Not bounded: memory beyond the address space, CPU time, GPU memory, disk filled by many files
    each below `file_size_bytes`."""

    file_size_bytes: int = 4 << 30  # RLIMIT_FSIZE
    open_files: int = 4096  # RLIMIT_NOFILE
    address_space_bytes: Optional[int] = None  # RLIMIT_AS; None = unlimited (CUDA needs a huge VA space)
    core_bytes: int = 0
    output_bytes: int = 256 << 10  # how much of the worker's stdout+stderr the judge keeps (the tail)
    max_processes: int = 64  # processes + threads of the sandbox, bwrap and the launcher excluded


@dataclass
class Isolation:
    kind: str  # "bubblewrap" or "process"
    detail: str  # one line for the result JSON: what ran


def _bwrap_options() -> list[str]:
    opts = ["--unshare-pid", "--unshare-net", "--unshare-uts", "--unshare-ipc", "--die-with-parent", "--new-session"]
    return opts + (["--cap-drop", "ALL"] if os.geteuid() == 0 else [])


@functools.lru_cache(maxsize=None)
def _probe(path: str) -> tuple[bool, str]:
    try:
        version = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=30).stdout.strip()
        trial = subprocess.run([path, *_BASE_VIEW, *_bwrap_options(), "--", "true"], stdin=subprocess.DEVNULL,
                               capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError) as e:
        return False, f"{path} failed to run: {e}"
    if trial.returncode != 0:
        why = (trial.stderr.strip().splitlines() or [f"exit code {trial.returncode}"])[-1]
        return False, f"{version or path} cannot create its sandbox here: {why}"
    return True, version or "bubblewrap"


def probe_bwrap() -> tuple[bool, str]:
    """(True, version) or (False, why not); the trial sandbox runs once per bwrap binary and process."""
    path = shutil.which("bwrap")
    return _probe(path) if path else (False, "bwrap not found on PATH")


def choose(mode: str) -> Isolation:
    if mode not in SANDBOXES:
        raise SandboxError(f"unknown sandbox {mode!r}: use one of {', '.join(SANDBOXES)}")
    note = ""
    if mode != "process":
        ok, why = probe_bwrap()
        if ok:
            caps = ", no capabilities" if os.geteuid() == 0 else ""
            return Isolation("bubblewrap", f"{why}: read-only / and /proc/sys, private /tmp and /dev, hidden /run "
                                           f"and paths, no network, pid+uts+ipc namespace, new session{caps}")
        if mode == "bubblewrap":
            raise SandboxError(f"sandbox=bubblewrap is unusable ({why}): install it (apt-get install bubblewrap), "
                               "allow it namespaces, or use sandbox=auto or process")
        note = f" (bubblewrap unavailable: {why})"
    caps = ", no capabilities" if os.geteuid() == 0 else ""
    return Isolation("process", f"process: same uid{caps}, own session, subreaper launcher, rlimits, env allow-list"
                                f"{note}")


# --- environment ----------------------------------------------------------------------------------

_ALLOW_NAMES = {"PATH", "LANG", "TZ", "TERM", "PYTHONPATH", "PYTHONHASHSEED", "PYTHONUNBUFFERED",
                "LD_LIBRARY_PATH", "OMP_NUM_THREADS", "MKL_NUM_THREADS"}
_ALLOW_PREFIXES = ("LC_", "CUDA_", "NVIDIA_", "CUTE_DSL_", "TRITON_", "PYTORCH_", "TORCH_", "OPENBLAS_",
                   "NCCL_", "TORCHINDUCTOR_")
_DENY_NAME = re.compile(r"KEY|TOKEN|SECRET|PASSW|CREDENTIAL|AUTH|^(WANDB_|AWS_|GOOGLE_|GCP_|AZURE_|HF_|HUGGING|"
                        r"ANTHROPIC_|OPENAI_|GITHUB_|LITELLM_)", re.IGNORECASE)
_DENY_VALUE = re.compile(r"^\s*(sk-|gh[pousr]_|github_pat_|hf_|xox|glpat-|AKIA[0-9A-Z]{12}|eyJ\w{10,}|-----BEGIN)"
                         r"|://[^/\s@]+@")
_CACHE_NAME = re.compile(r"_CACHE_(DIR|PATH|HOME)$")


def worker_env(base: Mapping[str, str], extra: Mapping[str, str] = (), *, home: str) -> dict[str, str]:
    """The worker's whole environment: an allow-list, then a deny pass, so no credential reaches it.

    1. From `base`, only what a CUDA/PyTorch/CuTe DSL/Triton program needs: PATH, LANG, TZ, TERM,
       PYTHONPATH, PYTHONHASHSEED, PYTHONUNBUFFERED, LD_LIBRARY_PATH, OMP_NUM_THREADS, MKL_NUM_THREADS
       and names starting LC_, CUDA_, NVIDIA_, CUTE_DSL_, TRITON_, PYTORCH_, TORCH_, OPENBLAS_, NCCL_,
       TORCHINDUCTOR_. Cache locations among them (*_CACHE_DIR, _PATH, _HOME) move under `home`, so
       a candidate cannot poison a compile cache the incumbent or a baseline loads. HOME = `home`,
       TMPDIR = home/tmp, XDG_CACHE_HOME = home/.cache. Then `extra` (the judge's own settings).
    2. Dropped from all of it, `extra` included: a name containing (any case) KEY, TOKEN, SECRET,
       PASSW, CREDENTIAL or AUTH, or starting WANDB_, AWS_, GOOGLE_, GCP_, AZURE_, HF_, HUGGING,
       ANTHROPIC_, OPENAI_, GITHUB_, LITELLM_; a value that looks like a credential: starting sk-,
       ghp_ (gho_, ghu_, ghs_, ghr_), github_pat_, hf_, xox, glpat-, an AWS key id, a JWT or a PEM
       block, or holding a URL with user info (scheme://user[:pass]@). Silently: the judge must not
       pass its own protocol secrets this way.
    """
    home = str(home)
    env = {"PATH": os.defpath}
    for name, value in base.items():
        if name in _ALLOW_NAMES or name.startswith(_ALLOW_PREFIXES):
            env[name] = os.path.join(home, ".cache", name.lower()) if _CACHE_NAME.search(name) else value
    env.update(HOME=home, TMPDIR=os.path.join(home, "tmp"), XDG_CACHE_HOME=os.path.join(home, ".cache"))
    env.update(dict(extra))
    return {k: str(v) for k, v in env.items() if not _DENY_NAME.search(k) and not _DENY_VALUE.search(str(v))}


# --- /proc, reaping, strays -----------------------------------------------------------------------

def _read(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        return b""


def _table() -> dict[int, tuple[int, int, str]]:
    """pid -> (ppid, session, state) of every process, in one pass over /proc."""
    out = {}
    for name in filter(str.isdigit, os.listdir("/proc")):
        fields = _read(f"/proc/{name}/stat").rsplit(b")", 1)[-1].split()
        if len(fields) > 3:
            out[int(name)] = (int(fields[1]), int(fields[3]), fields[0].decode())
    return out


def _subtree(roots: Sequence[int], table: dict[int, tuple[int, int, str]]) -> list[int]:
    children: dict[int, list[int]] = {}
    for pid, (ppid, _, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    out, todo = [], [r for r in roots if r in table]
    while todo:
        out.append(todo.pop())
        todo.extend(children.get(out[-1], ()))
    return out


def _state(pid: int) -> str:  # "X" once gone
    return (_read(f"/proc/{pid}/stat").rsplit(b")", 1)[-1].split() or [b"X"])[0].decode()


def _status(pid: int, key: str, default: str) -> str:  # the last word of a /proc/PID/status line
    found = re.search(rb"^" + key.encode() + rb":\s*(.*)$", _read(f"/proc/{pid}/status"), re.M)
    return found.group(1).decode().split()[-1] if found else default


def _tag_of(pid: int) -> Optional[str]:
    found = re.search(rb"(?:^|\0)" + _TAG.encode() + rb"=([^\0]*)", _read(f"/proc/{pid}/environ"))
    return found.group(1).decode(errors="replace") if found else None


def _signal(pids, sig: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


def _reap(pids) -> None:
    for pid in pids:
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass


def _prctl(*args) -> int:
    return ctypes.CDLL(None, use_errno=True).prctl(*args)


def become_subreaper() -> bool:
    """The judge calls this once at start: orphans of a launcher the candidate killed then reparent to
    the judge instead of init, and `kill_strays` finds them. Every orphaned grandchild of the judge
    comes back to it, so call it in the judge's own process, not in a search that runs other tools."""
    return _prctl(36, 1, 0, 0, 0) == 0  # PR_SET_CHILD_SUBREAPER


def make_undumpable() -> bool:
    """PR_SET_DUMPABLE 0 for this process: a process of the same uid without CAP_SYS_PTRACE (a worker:
    the launcher drops root's capabilities) can then neither ptrace it nor read its /proc/PID/environ,
    mem, maps or fds. The judge and the search call it; it still reads its own /proc/self and its
    workers' /proc (they are dumpable again after their exec). It also turns off its core dumps."""
    return _prctl(4, 0, 0, 0, 0) == 0  # PR_SET_DUMPABLE


def _drop_capabilities() -> None:
    """All of them, the bounding set first so that an exec as root cannot give them back (bwrap does
    the same with --cap-drop ALL); without privilege there is nothing to drop and this changes nothing."""
    last = int(_read("/proc/sys/kernel/cap_last_cap").strip() or 63)
    for cap in range(last + 1):
        _prctl(24, cap, 0, 0, 0)  # PR_CAPBSET_DROP
    header = (ctypes.c_uint32 * 2)(0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3, this thread
    ctypes.CDLL(None, use_errno=True).capset(header, (ctypes.c_uint32 * 6)())


def _is_subreaper() -> bool:
    flag = ctypes.c_int(0)
    _prctl(37, ctypes.byref(flag), 0, 0, 0)  # PR_GET_CHILD_SUBREAPER
    return bool(flag.value)


_LIVE: "weakref.WeakSet[Worker]" = weakref.WeakSet()
_LIVE_LOCK = threading.Lock()


def _roots() -> set[int]:
    with _LIVE_LOCK:
        return {w._proc.pid for w in _LIVE if w._proc.returncode is None}


def _strays(table: dict[int, tuple[int, int, str]], tag: Optional[str] = None, dead: bool = False) -> list[int]:
    """Children of a subreaper judge that are no live worker's root and not in the judge's session:
    orphans of a killed launcher, or the namespace init of a bwrap that exited before it. A worker's
    processes can never join the judge's session, so the judge's own helpers (unless started in a
    new session) are never taken. `tag`: only that worker's or untagged ones; `dead`: zombies only."""
    if not _is_subreaper():
        return []  # then every child of the judge is one it forked itself
    me, my_sid, roots = os.getpid(), os.getsid(0), _roots()
    out = [p for p, (ppid, sid, state) in table.items()
           if ppid == me and sid != my_sid and p not in roots and (state in "ZX") == dead]
    return [p for p in out if tag is None or _tag_of(p) in (None, tag)]


def _stray_tree() -> list[int]:
    table = _table()
    return [p for p in _subtree(_strays(table), table) if table[p][2] not in "ZX"]


def kill_strays() -> list[int]:
    """Kill and reap every stray of the judge (see `_strays`) and its descendants; returns their pids."""
    doomed = _stray_tree()
    _freeze_and_kill(_stray_tree, doomed)
    _reap(_strays(_table(), dead=True))  # no one else would
    return doomed


def _freeze_and_kill(current: Callable[[], list[int]], doomed: list[int]) -> None:
    """SIGSTOP until no new process appears (a stopped process cannot fork), then SIGKILL them all, so
    the set is complete before a death reparents anything; reap those the judge adopted."""
    deadline, seen = time.monotonic() + _KILL_WAIT_S, set(doomed)
    _signal(doomed, signal.SIGSTOP)
    while time.monotonic() < deadline and (new := set(current()) - seen):
        _signal(new, signal.SIGSTOP)
        seen |= new
    _signal(seen, signal.SIGKILL)
    while time.monotonic() < deadline:
        _reap(seen - _roots())
        left = current()
        if not left and all(_state(p) in "ZX" for p in seen):
            return
        _signal(left, signal.SIGKILL)  # only pids still in the tree: a reaped one may be reused
        seen |= set(left)
        time.sleep(0.01)


# --- the launcher ---------------------------------------------------------------------------------

def _launch(cfg: dict, argv: list[str]) -> None:
    """`python -I -S sandbox.py --init CONFIG ARGV...`: judge code running as the worker's uid (inside
    bwrap): rlimits, the worker as its child, every orphan reaped until the worker exits, then the
    rest killed, the status reported, and the same exit."""
    ctl = cfg["ctl"]
    _prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER: every orphan comes to us
    _prctl(1, int(signal.SIGTERM), 0, 0, 0)  # PR_SET_PDEATHSIG: the judge died -> kill the rest, exit
    _prctl(4, 0, 0, 0, 0)  # not dumpable: a non-root worker can neither ptrace us nor open our fds
    if cfg["ppid"] and os.getppid() != cfg["ppid"]:
        os._exit(125)  # the judge died before we asked
    for name, value in cfg["rlimits"]:
        hard = resource.getrlimit(getattr(resource, name))[1]
        value = value if hard == resource.RLIM_INFINITY else min(value, hard)
        resource.setrlimit(getattr(resource, name), (value, value))

    def kill_all(*_) -> None:
        for _ in range(500):
            if not (pids := _subtree([os.getpid()], _table())[1:]):
                return
            _signal(pids, signal.SIGKILL)
            _reap(pids)
            time.sleep(0.01)

    def report(line: str) -> None:
        try:
            os.write(ctl, line.encode())
        except OSError:
            pass

    signal.signal(signal.SIGTERM, lambda *_: (kill_all(), os._exit(143)))
    if (pid := os.fork()) == 0:
        try:
            _prctl(1, int(signal.SIGKILL), 0, 0, 0)  # the worker dies with its launcher
            _drop_capabilities()  # root's CAP_SYS_PTRACE would read the undumpable judge's /proc anyway
            os.close(ctl)
            for sig in (signal.SIGPIPE, signal.SIGXFSZ, signal.SIGTERM):  # Python ignores the first two
                signal.signal(sig, signal.SIG_DFL)
            os.execvp(argv[0], argv)
        except BaseException as e:
            os.write(2, f"sandbox: cannot run {argv[0]!r}: {e}\n".encode())
        os._exit(127)
    report(f"pid {pid}\n")
    while (reaped := os.wait())[0] != pid:
        pass
    kill_all()
    code = os.waitstatus_to_exitcode(reaped[1])
    report(f"exit {code}\n")
    if code < 0:  # die the same way, so a plain waitpid reads the same
        try:
            signal.signal(-code, signal.SIG_DFL)
        except (OSError, ValueError):
            pass
        os.kill(os.getpid(), -code)
        os._exit(128 - code)
    os._exit(code & 0xFF)


# --- spawning -------------------------------------------------------------------------------------

def _abs(p) -> Path:
    return Path(os.path.realpath(p))


def _view(scratch: Path, readonly: Sequence[Path], hide: Sequence[Path], writable: Sequence[Path], gpu: bool,
          fds: list[int]) -> list[str]:
    """bwrap's mount options. Shallowest path first, so the most specific wins (a readonly file in a
    hidden directory shows, a hidden directory in a writable one hides). Hidden directories become
    empty read-only tmpfs, hidden files empty read-only files; the interpreter and this file are
    re-exposed where a hidden path covers them. Appends to `fds` what bwrap inherits (and closes)."""
    args = _BASE_VIEW[:5]
    if gpu:
        for node in sorted(glob.glob("/dev/nvidia*")) + (["/dev/dri"] if os.path.exists("/dev/dri") else []):
            args += ["--dev-bind", node, node]
    args += _BASE_VIEW[5:]
    hides = sorted({p for p in map(_abs, [*hide, *_ALWAYS_HIDDEN]) if p.exists()})
    ours = {_abs(p) for p in (sys.prefix, sys.base_prefix, Path(sys.executable).resolve().parent, _SELF)}
    ops = [(p, 0) for p in hides] + [(p, 1) for p in [scratch, *map(_abs, writable)]]
    ops += [(p, 2) for p in [*map(_abs, readonly), *(p for p in ours if any(h == p or h in p.parents for h in hides))]]
    for path, kind in sorted(ops, key=lambda op: (len(op[0].parts), op[1])):
        if kind == 0 and path.is_dir():
            args += ["--tmpfs", str(path)]
        elif kind == 0:
            fds.append(os.open(os.devnull, os.O_RDONLY))
            args += ["--ro-bind-data", str(fds[-1]), str(path)]
        elif not path.exists():
            raise SandboxError(f"cannot show {path} to the worker: it does not exist")
        else:
            args += ["--bind" if kind == 1 else "--ro-bind", str(path), str(path)]
    args += [a for p in hides if p.is_dir() for a in ("--remount-ro", str(p))]
    return args + _bwrap_options() + ["--chdir", str(scratch), "--"]


def spawn(argv: Sequence[str], *, isolation: Isolation, scratch: Path, env: Mapping[str, str],
          pass_fds: Sequence[int] = (), readonly_paths: Sequence[Path] = (), hide_paths: Sequence[Path] = (),
          writable_paths: Sequence[Path] = (), limits: Limits = Limits(), gpu: bool = False) -> "Worker":
    """Start `argv` in a fresh session, cwd `scratch` (created 0700, as are HOME/TMPDIR inside it),
    stdin /dev/null, stdout+stderr into the tail buffer, only `pass_fds` inherited. The paths and
    `gpu` shape bubblewrap's view; process mode cannot enforce them. Returns once the launcher has
    reported the worker's pid; SandboxError if the sandbox could not start it."""
    if isolation.kind not in ("bubblewrap", "process") or not argv:
        raise SandboxError(f"cannot spawn {list(argv)!r} with isolation {isolation.kind!r}")
    scratch = _abs(scratch)
    scratch.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(scratch, 0o700)
    env, tag = dict(env), secrets.token_hex(8)
    env[_TAG] = tag
    for name in ("HOME", "TMPDIR", "XDG_CACHE_HOME"):
        if name in env and (scratch == _abs(env[name]) or scratch in _abs(env[name]).parents):
            os.makedirs(env[name], mode=0o700, exist_ok=True)
    rlimits = [("RLIMIT_FSIZE", limits.file_size_bytes), ("RLIMIT_NOFILE", limits.open_files),
               ("RLIMIT_CORE", limits.core_bytes)]
    rlimits += [("RLIMIT_AS", limits.address_space_bytes)] if limits.address_space_bytes is not None else []
    process, fds = isolation.kind == "process", []
    ctl_r, ctl_w = os.pipe()
    try:
        cmd = [sys.executable, "-I", "-S", _SELF, "--init",
               json.dumps({"ctl": ctl_w, "ppid": os.getpid() if process else 0, "rlimits": rlimits}), *argv]
        if not process:
            if (bwrap := shutil.which("bwrap")) is None:
                raise SandboxError("bwrap is no longer on PATH (apt-get install bubblewrap, or use sandbox=process)")
            cmd = [bwrap, *_view(scratch, readonly_paths, hide_paths, writable_paths, gpu, fds), *cmd]
        proc = subprocess.Popen(cmd, cwd=scratch, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, pass_fds=(*pass_fds, ctl_w, *fds), start_new_session=True)
    except BaseException as e:
        os.close(ctl_r)
        if isinstance(e, OSError):
            raise SandboxError(f"cannot start the worker: {e}") from None
        raise
    finally:
        for fd in (ctl_w, *fds):
            os.close(fd)
    if process and not _is_subreaper():
        note = "; judge no subreaper: a killed launcher's orphans escape"
        isolation = replace(isolation, detail=isolation.detail + note)
    return Worker(proc, isolation, limits, ctl_r, tag)


class Worker:
    """One running worker. `pid` is the host pid of the worker command itself (the launcher's child),
    so signals and /proc/PID/maps reach the candidate's interpreter. `processes()` also lists bwrap,
    the namespace's init and the launcher (`_infra`), which `pause()` and `over_process_limit()` skip.
    `violation`: None, or one line saying which limit `pause()` found broken (it then killed the
    sandbox, so the worker's next request fails): the reason to report instead of its death."""

    def __init__(self, proc: subprocess.Popen, isolation: Isolation, limits: Limits, ctl: int, tag: str):
        self._proc, self.isolation, self._limits, self._ctl, self._tag = proc, isolation, limits, ctl, tag
        self._buf, self._lock, self._ctl_buf, self._exit = bytearray(), threading.Lock(), b"", None
        self.pid, self._infra = proc.pid, {proc.pid}
        self._pauses, self._strays_seen, self._stopped = 0, [], []
        self.violation: Optional[str] = None
        self._drain = threading.Thread(target=self._drain_loop, daemon=True, name=f"sandbox-drain-{proc.pid}")
        self._drain.start()
        with _LIVE_LOCK:
            _LIVE.add(self)
        inner, table = self._await_pid(), _table()
        tree = _subtree([proc.pid], table)
        for pid in tree[1:]:  # the launcher reported its child's pid in its own pid namespace
            if _status(pid, "NSpid", "") == str(inner):
                self.pid, p = pid, table[pid][0]
                while p in tree and p not in self._infra:
                    self._infra.add(p)
                    p = table[p][0]
                break

    def _drain_loop(self) -> None:
        fd, keep = self._proc.stdout.fileno(), self._limits.output_bytes
        while chunk := os.read(fd, 1 << 16):
            with self._lock:
                self._buf += chunk
                del self._buf[:max(0, len(self._buf) - keep)]
        self._proc.stdout.close()

    def _read_ctl(self, timeout: float) -> None:
        if self._ctl < 0 or not select.select([self._ctl], [], [], timeout)[0]:
            return
        try:
            data = os.read(self._ctl, 4096)
        except BlockingIOError:
            return
        self._ctl_buf = self._ctl_buf[-4096:] + data  # a same-uid candidate can write here too
        if not data:
            os.close(self._ctl)
            self._ctl = -1

    def _await_pid(self) -> int:
        deadline = time.monotonic() + _START_WAIT_S
        while not re.match(rb"pid \d+\n", self._ctl_buf):
            if self._ctl < 0 or time.monotonic() > deadline:
                self.kill()
                last = (self.output_tail().strip().splitlines() or ["no output"])[-1]
                raise SandboxError(f"the {self.isolation.kind} sandbox did not start the worker: {last}")
            self._read_ctl(0.2)
        return int(self._ctl_buf.split()[1])

    def output_tail(self) -> str:
        with self._lock:
            return bytes(self._buf).decode(errors="replace")

    def _returncode(self) -> Optional[int]:
        if self._proc.returncode is None:
            return None
        if self._exit is None:
            if self._ctl >= 0:
                os.set_blocking(self._ctl, False)  # a candidate may hold the pipe open
                self._read_ctl(0)
            # The launcher's last report is exact (written after it killed the rest); without one (the
            # launcher was killed) bwrap says 128+N for a signal.
            rc, found = self._proc.returncode, re.findall(rb"^exit (-?\d+)$", self._ctl_buf, re.M)
            bwrap_signal = self.isolation.kind == "bubblewrap" and 128 < rc <= 128 + 64
            self._exit = int(found[-1]) if found else 128 - rc if bwrap_signal else rc
        return self._exit

    def poll(self) -> Optional[int]:
        self._proc.poll()
        return self._returncode()

    def wait(self, timeout: Optional[float] = None) -> Optional[int]:
        """The worker's exit code (negative: the signal that killed it), None if it still runs at
        `timeout`. After a normal exit the launcher has killed the rest; if the candidate killed the
        launcher, only `kill()` makes sure nothing is left."""
        try:
            self._proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None
        return self._returncode()

    def processes(self) -> list[int]:
        table = _table()
        return sorted(p for p in _subtree([self._proc.pid, *_strays(table, self._tag)], table)
                      if table[p][2] not in "ZX")

    def over_process_limit(self, pids: Optional[Sequence[int]] = None) -> bool:
        """More processes + threads (/proc/PID/status Threads) than Limits.max_processes, `_infra` aside;
        `pids`: the sandbox's processes, when the caller has just listed them."""
        pids = self.processes() if pids is None else pids
        threads = sum(int(_status(p, "Threads", "0")) for p in pids if p not in self._infra)
        return threads > self._limits.max_processes

    def _quick(self) -> list[int]:
        """The sandbox's tree by /proc/PID/task/*/children links, plus the strays found by the last
        full scan: the judge pauses and resumes a worker around every call, and a scan of all of
        /proc each time costs milliseconds on a busy host."""
        out, todo, seen = [], [self._proc.pid, *self._strays_seen], set()
        while todo:
            p = todo.pop()
            if p in seen:
                continue
            seen.add(p)
            try:
                tasks = os.listdir(f"/proc/{p}/task")
            except OSError:
                continue
            out.append(p)
            for t in tasks:
                todo.extend(int(c) for c in _read(f"/proc/{p}/task/{t}/children").split())
        return out

    def _to_stop(self) -> list[int]:
        self._pauses += 1
        if self._pauses % _FULL_SCAN_EVERY == 1 or not os.path.exists(f"/proc/{self._proc.pid}/task"):
            table = _table()  # now and then the whole of /proc: strays of a killed launcher too
            self._strays_seen = _strays(table, self._tag)
            return [p for p in self.processes() if p not in self._infra]
        return [p for p in self._quick() if p not in self._infra]

    def pause(self) -> None:
        """SIGSTOP every process but `_infra` (they only wait); returns once all are stopped (or ~5 s).
        Then the count is exact (a stopped process cannot fork): over Limits.max_processes, the whole
        sandbox is killed and `violation` says why."""
        deadline = time.monotonic() + _KILL_WAIT_S
        pids = self._to_stop()
        while time.monotonic() < deadline:
            _signal(pids, signal.SIGSTOP)
            if all(_state(p) in "TtZX" for p in pids):
                new = [p for p in self._quick() if p not in self._infra and p not in pids]
                if not new:  # nothing forked between the listing and the stop
                    self._stopped = pids
                    break
                pids += new
                continue
            time.sleep(0.0002)
        if self.violation is None and self.over_process_limit(pids):
            self.violation = f"the kernel started more than {self._limits.max_processes} processes (threads count too)"
            self.kill()
            self._stopped = []  # dead: their pids may be reused

    def resume(self) -> None:
        _signal(set(self._stopped) | set(self._quick()), signal.SIGCONT)

    def kill(self) -> None:
        """Kill every process of the sandbox and every stray of the judge, and reap; idempotent."""
        if self.isolation.kind == "bubblewrap":  # its namespace's init: the kernel kills the rest at once
            _signal((self._infra - {self._proc.pid}) & set(self.processes()), signal.SIGKILL)
        _freeze_and_kill(self.processes, self.processes())
        kill_strays()
        try:
            self._proc.wait(_KILL_WAIT_S)
        except subprocess.TimeoutExpired:
            pass
        self._returncode()
        self._drain.join(1.0)


if __name__ == "__main__" and sys.argv[1:2] == ["--init"]:
    _launch(json.loads(sys.argv[2]), sys.argv[3:])
