"""Hardening of the evaluator's own processes, on a CPU.

- H6: the judge and the search are undumpable and a worker has no capability, so even without
  bubblewrap (same uid, root included) a kernel can neither read their /proc/PID/environ or mem
  nor ptrace them.
- C7: a sandbox that holds more than Limits.max_processes processes + threads is killed, and the
  verdict says why.
- C3: whatever escapes the judge ends as a `crash` verdict with a one-line message naming the
  stage, the traceback kept in the detail, never a traceback as the message.

The end-to-end cases use the hostile kernels and helpers of tests/test_hostile.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from test_hostile import ROOT, box, fake_credentials, files_under, leaks, none_left, run  # noqa: F401 (box: a fixture)

from avo.evaluate import api
from avo.evaluate import sandbox as sb
from avo.suites import Shape

BWRAP_OK, BWRAP_WHY = sb.probe_bwrap()
MODES = ["process", pytest.param("bubblewrap", marks=pytest.mark.skipif(not BWRAP_OK, reason=BWRAP_WHY))]
REF = ROOT / "kernels" / "reference" / "sdpa.py"


def until(pred, timeout=60.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := pred():
            return value
        time.sleep(0.05)
    raise AssertionError(f"{what} not reached within {timeout}s")


def marked(mark: str) -> list[int]:
    return [int(p) for p in filter(str.isdigit, os.listdir("/proc"))
            if mark.encode() in sb._read(f"/proc/{p}/cmdline") and sb._state(int(p)) not in "ZX"]


def detail(r) -> str:
    """The judge's traceback of a crash: the record's `detail`, or (while EvalResult has no such
    field) the note api.py keeps it in."""
    return getattr(r, "detail", None) or next((n for n in r.notes if n.startswith("detail: ")), "")


# -- H6: the judge and the search out of a worker's reach ------------------------------------------

# A "judge" without capabilities (as any user's but root's: as root, the capabilities the worker
# lacks already keep it out), undumpable or not, runs a process-mode worker that tries the judge's
# /proc/PID/environ and mem and process_vm_readv into it, and prints what it could.
PROBE_JUDGE = """
import json, os, sys
from pathlib import Path
from avo.evaluate import sandbox as sb
sb._drop_capabilities()
if sys.argv[1] == "guarded":
    assert sb.make_undumpable()
w = sb.spawn([sys.executable, "-c", sys.argv[3], str(os.getpid())], isolation=sb.choose("process"),
             scratch=Path(sys.argv[2]), env=sb.worker_env(os.environ, home=sys.argv[2]))
w.wait(60)
print(w.output_tail().strip().splitlines()[-1])
w.kill()
"""
PROBE = """
import ctypes, errno, json, os, sys
pid, got = int(sys.argv[1]), {}
for what in ("environ", "mem"):
    try:
        os.close(os.open(f"/proc/{pid}/{what}", os.O_RDONLY))
        got[what] = True
    except OSError:
        got[what] = False
class IOVec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]
buf = ctypes.create_string_buffer(1)
libc = ctypes.CDLL(None, use_errno=True)
libc.process_vm_readv.restype = ctypes.c_ssize_t
n = libc.process_vm_readv(pid, ctypes.byref(IOVec(ctypes.addressof(buf), 1)), 1, ctypes.byref(IOVec(0, 1)), 1, 0)
got["ptrace"] = n >= 0 or ctypes.get_errno() != errno.EPERM
got["self"] = b"PATH=" in open("/proc/self/environ", "rb").read()
got["caps"] = [ln.split()[1] for ln in open("/proc/self/status") if ln.startswith(("CapEff", "CapBnd"))]
print(json.dumps(got), flush=True)
"""


@pytest.mark.parametrize("guarded", [True, False], ids=["undumpable", "control"])
def test_a_process_mode_worker_cannot_read_or_ptrace_an_undumpable_judge(tmp_path, guarded):
    p = subprocess.run([sys.executable, "-c", PROBE_JUDGE, "guarded" if guarded else "plain", str(tmp_path / "s"),
                        PROBE], capture_output=True, text=True, timeout=120,
                       env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert p.returncode == 0, p.stderr[-2000:]
    got = json.loads(p.stdout.strip().splitlines()[-1])
    assert got["self"] and got["caps"] == ["0000000000000000"] * 2, got  # its own /proc still; no capability
    if guarded:
        assert got == {**got, "environ": False, "mem": False, "ptrace": False}, got
    else:  # the same uid reaches a dumpable process: the guard, not the setup, is what stops it
        assert got["environ"] and got["mem"] and got["ptrace"], got


def test_the_search_process_still_reads_its_own_proc_once_guarded():
    api._guard_search_process()  # what every evaluate() in this test session already did
    assert b"PATH=" in Path("/proc/self/environ").read_bytes()
    assert Path(f"/proc/{os.getpid()}/maps").read_text() and os.listdir("/proc/self/fd")


@pytest.mark.parametrize("mode", MODES)
def test_h_a_kernel_reaches_nothing_of_the_evaluators_processes(box, mode):
    """The CLI (the search's stand-in) holds the planted credentials in its own environment; the
    kernel walks every ancestor's /proc (h_creds_ancestors.py)."""
    values = fake_credentials()
    out = box.path / "verdict.json"
    env = {**os.environ, **values, "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH"))
                                                                 if p)}
    p = subprocess.run([sys.executable, "-m", "avo.evaluate", str(box.kernel("h_creds_ancestors")), "--suite", "smoke",
                        "--device", "cpu", "--repeats", "5", "--warmup-ms", "50", "--stages", "compile",
                        "--sandbox", mode, "--json", str(out)],
                       cwd=box.path, env=env, capture_output=True, text=True, timeout=300)
    verdict = json.loads(out.read_text())
    assert verdict["status"] == "ok", verdict["message"][:2000]
    assert verdict["isolation"]["kind"] == mode
    found = leaks({"json": out.read_bytes(), "stdout": p.stdout.encode(), "stderr": p.stderr.encode(),
                   **files_under(box.path)}, values)
    assert not found, "\n".join(found)


@pytest.mark.slow
def test_a_kernel_dumping_its_environment_finds_no_credential_without_bubblewrap(tmp_path):
    """test_credentials.py's dumping seed in a real smoke search forced to process isolation: the
    seed can write into the run dir there, but what it reads of its ancestors holds no credential."""
    from test_credentials import DUMPER, everything_under
    from test_credentials import fake_credentials as search_credentials
    from test_credentials import leaks as search_leaks

    creds = search_credentials()
    seed = tmp_path / "dumper.py"
    seed.write_text((ROOT / "kernels" / "reference" / "chunked.py").read_text() + DUMPER)
    run_dir = tmp_path / "run"
    env = {**os.environ, "WANDB_MODE": "offline", "CUDA_VISIBLE_DEVICES": "", **creds}
    proc = subprocess.run([sys.executable, "-m", "avo", "+experiment=smoke", "evaluator.repeats=5", "search.max_iterations=2",
                           "evaluator.sandbox=process", f"hardware.seed_kernel={seed}", f"hydra.run.dir={run_dir}"],
                          cwd=ROOT, env=env, capture_output=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert b"process isolation only" in proc.stdout + proc.stderr  # the search's warning: no bubblewrap
    found = search_leaks(everything_under(run_dir), creds) + search_leaks({"stdout": proc.stdout, "stderr": proc.stderr}, creds)
    assert not found, "\n".join(found)


# -- C7: max_processes -----------------------------------------------------------------------------

FLOOD = """
import subprocess, sys, time
for _ in range(int(sys.argv[1])):
    subprocess.Popen([sys.executable, "-S", "-c", "import time; time.sleep(600)", sys.argv[2]])
print("ready", flush=True)
time.sleep(600)
"""


@pytest.mark.parametrize("mode", MODES)
def test_pause_kills_a_sandbox_over_max_processes(tmp_path, mode):
    mark = f"avo-test-{uuid.uuid4().hex}"
    env = sb.worker_env(os.environ, home=str(tmp_path / "s"))
    busy, calm = (sb.spawn([sys.executable, "-c", FLOOD, str(n), f"{mark}:{n}"], isolation=sb.choose(mode),
                           scratch=tmp_path / "s", env=env, limits=sb.Limits(max_processes=8)) for n in (24, 2))
    try:
        until(lambda: "ready" in busy.output_tail() and "ready" in calm.output_tail(), what="the children")
        busy.pause()
        calm.pause()
        assert busy.violation == "the kernel started more than 8 processes (threads count too)"
        assert busy.poll() is not None and not busy.processes() and not marked(f"{mark}:24")
        assert calm.violation is None and calm.poll() is None  # 3 processes: within the limit
        assert len([p for p in calm.processes() if p not in calm._infra]) == 3
    finally:
        busy.kill()
        calm.kill()
    assert not marked(mark)


@pytest.mark.parametrize("when", ["import", "call"])
def test_i_a_kernel_over_max_processes_crashes_and_leaves_nothing(box, when):
    n = sb.Limits().max_processes
    r = run(box.kernel("i_fork_flood", WHEN=when, COUNT=str(3 * n)), stages=("compile", "correctness"))
    assert r.status == "crash", f"{r.status} at {r.stage}: {r.message[:1500]}"
    assert r.message == f"the kernel started more than {n} processes (threads count too)", r.message
    assert r.stage in ("import", "compile") and r.score is None
    assert not none_left(box), "a process of the flood outlived the evaluation"


# -- C3: the judge's own failures ------------------------------------------------------------------

def one_line_crash(r, stage: str) -> None:
    assert r.status == "crash" and r.stage == stage, f"{r.status} at {r.stage}: {r.message[:1500]}"
    assert r.message.startswith(f"the judge failed in stage {stage}: ") and "\n" not in r.message, r.message
    assert "Traceback" in detail(r), r.notes
    assert r.score is None


def test_b_a_forged_fatal_ready_is_a_one_line_crash(box):
    """The judge may take it as its own failure (then this is C3's path) or as the worker's."""
    r = run(box.kernel("b_forge_fatal_ready"))
    assert r.status == "crash" and r.stage == "import", f"{r.status} at {r.stage}: {r.message[:1500]}"
    assert "forged: the worker cannot run" in r.message and "\n" not in r.message, r.message
    assert r.score is None


def test_an_arena_the_judge_cannot_allocate_is_a_one_line_crash(box):
    huge = Shape(batch=1 << 16, seqlen=1 << 16, heads_q=64, heads_kv=64, head_dim=128)  # a PiB per input set
    r = run(REF, suite=[huge], stages=("compile",))
    one_line_crash(r, "import")
    assert "Error" in r.message, r.message  # OSError (memfd) / torch.OutOfMemoryError (CUDA): the judge's own
