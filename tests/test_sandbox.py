"""avo.evaluate.sandbox: what a hostile worker can reach, and that nothing it starts outlives it.

CPU only. Every wait is a bounded poll with a generous timeout (the CI machine is small and loaded);
no test asserts wall-clock timing.
"""

import json
import os
import select
import signal
import socket
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import pytest

from avo.evaluate import sandbox as sb

BWRAP_OK, BWRAP_WHY = sb.probe_bwrap()
needs_bwrap = pytest.mark.skipif(not BWRAP_OK, reason=f"bubblewrap unusable: {BWRAP_WHY}")
MODES = ["process", pytest.param("bubblewrap", marks=needs_bwrap)]

# A candidate's daemon: fork, setsid, fork again, the middle exits; the daemon runs `body` with `mark`
# in its command line, so the test can find it by scanning /proc.
DAEMON = """
import os, sys, time
def daemon(body, mark):
    if os.fork() == 0:
        os.setsid()
        if os.fork() == 0:
            os.execv(sys.executable, [sys.executable, "-c", body, mark])
        os._exit(0)
    os.wait()
"""
SLEEP = "import time\nwhile True: time.sleep(1)"


def start(mode, tmp_path, code, args=(), env=None, **kw):
    scratch = tmp_path / "scratch"
    env = sb.worker_env(os.environ, home=str(scratch)) if env is None else env
    return sb.spawn([sys.executable, "-c", textwrap.dedent(code), *args], isolation=sb.choose(mode),
                    scratch=scratch, env=env, **kw)


def until(pred, timeout=60.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"{what} not reached within {timeout}s")


def marked(mark):
    """Live processes whose command line holds `mark`."""
    return [int(p) for p in filter(str.isdigit, os.listdir("/proc"))
            if mark.encode() in sb._read(f"/proc/{p}/cmdline") and sb._state(int(p)) not in "ZX"]


def stat_field(pid, index):  # fields after the command name: 0 = state, 11 = utime
    return Path(f"/proc/{pid}/stat").read_bytes().rsplit(b")", 1)[1].split()[index].decode()


def final_json(worker, timeout=60.0):
    assert worker.wait(timeout) is not None, worker.output_tail()
    return json.loads(worker.output_tail().strip().splitlines()[-1])


FAKE = {"OPENAI_API_KEY": "sk-test123", "WANDB_API_KEY": "wandbfake0123", "MY_TOKEN": "tokfake456",
        "AWS_SECRET_ACCESS_KEY": "awsfake789", "TORCH_INNOCUOUS": "sk-fakefakefake", "HF_TOKEN": "hf_fake",
        "TRITON_API_TOKEN": "tritonfake", "CUDA_PROXY": "https://user:pw@proxy.example", "GITHUB_ACTOR": "ghfake",
        "LITELLM_MASTER": "litellmfake", "SSH_AUTH_SOCK": "/tmp/sshfake", "LD_PRELOAD": "/evil.so"}


def test_worker_env_allow_then_deny():
    base = {"PATH": "/usr/bin", "LANG": "C.UTF-8", "LC_ALL": "C", "TORCH_CUDA_ARCH_LIST": "9.0", "NCCL_DEBUG": "INFO",
            "HOME": "/root", "TMPDIR": "/var/tmp", "TRITON_CACHE_DIR": "/root/.triton/cache", "SHELL": "/bin/bash",
            **FAKE}
    env = sb.worker_env(base, {"AVO_EVAL_FD": "5", "CUDA_VISIBLE_DEVICES": "0", "OPENAI_API_KEY": "sk-extra",
                               "ANTHROPIC_BASE": "x"}, home="/s")
    assert env == {"PATH": "/usr/bin", "LANG": "C.UTF-8", "LC_ALL": "C", "TORCH_CUDA_ARCH_LIST": "9.0",
                   "NCCL_DEBUG": "INFO", "HOME": "/s", "TMPDIR": "/s/tmp", "XDG_CACHE_HOME": "/s/.cache",
                   "TRITON_CACHE_DIR": "/s/.cache/triton_cache_dir", "AVO_EVAL_FD": "5", "CUDA_VISIBLE_DEVICES": "0"}


@pytest.mark.parametrize("mode", MODES)
def test_no_credential_reaches_the_worker(mode, tmp_path):
    scratch = tmp_path / "scratch"
    env = sb.worker_env({**os.environ, **FAKE}, home=str(scratch))
    w = start(mode, tmp_path, """
        import json, os, tempfile
        with tempfile.NamedTemporaryFile(delete=False) as f:
            f.write(b"x")
        print(json.dumps({"env": dict(os.environ), "tmpfile": f.name}))
    """, env=env)
    got = final_json(w)
    for value in FAKE.values():
        assert value not in w.output_tail()
    assert got["env"]["HOME"] == str(scratch) and got["env"]["TMPDIR"] == str(scratch / "tmp")
    assert got["tmpfile"].startswith(str(scratch / "tmp") + "/")


@pytest.mark.parametrize("mode", MODES)
def test_session_cwd_stdin_fds_and_exit_codes(mode, tmp_path):
    r, wfd = os.pipe()
    try:
        w = start(mode, tmp_path, """
            import json, os, sys, time
            fd = int(sys.argv[1])
            os.write(fd, b"hello judge\\n")
            fds = sorted(int(f) for f in os.listdir("/proc/self/fd") if os.path.exists(f"/proc/self/fd/{f}"))
            print(json.dumps({"cwd": os.getcwd(), "stdin": sys.stdin.buffer.read().decode(), "fds": fds}), flush=True)
            time.sleep(600)
        """, args=[str(wfd)], pass_fds=[wfd])
        os.close(wfd)
        until(lambda: select.select([r], [], [], 0)[0], what="the worker writing to its pipe")
        assert os.read(r, 100) == b"hello judge\n"
        until(lambda: w.output_tail().strip(), what="the worker's report")
        assert os.getsid(w.pid) != os.getsid(0) and os.getpgid(w.pid) != os.getpgid(0)
        assert w.poll() is None
        w.kill()
        got = json.loads(w.output_tail())
        assert got == {"cwd": str(tmp_path / "scratch"), "stdin": "", "fds": [0, 1, 2, wfd]}
        assert (tmp_path / "scratch").stat().st_mode & 0o777 == 0o700
        assert w.poll() == -signal.SIGKILL
        w.kill()  # idempotent
    finally:
        os.close(r)
    assert start(mode, tmp_path, "raise SystemExit(3)").wait(60) == 3
    assert start(mode, tmp_path, "import os, signal; os.kill(os.getpid(), signal.SIGSEGV)").wait(60) == -signal.SIGSEGV


def test_output_keeps_only_the_tail(tmp_path):
    w = start("process", tmp_path, """
        import sys
        for _ in range(50):
            sys.stdout.buffer.write(b"x" * (1 << 20))
        sys.stdout.buffer.write(b"END")
    """, limits=sb.Limits(output_bytes=64 << 10))
    assert w.wait(120) == 0
    until(lambda: w.output_tail().endswith("END"), what="the end of the output")
    assert len(w.output_tail()) == 64 << 10


@pytest.mark.parametrize("mode", MODES)
def test_file_size_limit(mode, tmp_path):
    got = final_json(start(mode, tmp_path, """
        import errno, json
        try:
            with open("big", "wb") as f:
                f.write(b"x" * (2 << 20))
            print(json.dumps("written"))
        except OSError as e:
            print(json.dumps(errno.errorcode[e.errno]))
    """, limits=sb.Limits(file_size_bytes=1 << 20)))
    assert got == "EFBIG"
    assert (tmp_path / "scratch" / "big").stat().st_size <= 1 << 20


@pytest.mark.parametrize("mode", MODES)
def test_setsid_daemon_dies_with_kill(mode, tmp_path):
    mark = f"avo-test-{uuid.uuid4().hex}"
    w = start(mode, tmp_path, DAEMON + f"daemon({SLEEP!r}, sys.argv[1] + ':d')\ntime.sleep(600)", args=[mark])
    try:
        daemon = until(lambda: marked(mark + ":d"), what="the daemon")[0]
        assert daemon in w.processes() and os.getsid(daemon) != os.getsid(w.pid)
    finally:
        w.kill()
    assert not marked(mark) and w.processes() == []


@pytest.mark.parametrize("mode", MODES)
def test_pause_stops_a_busy_daemon(mode, tmp_path):
    mark = f"avo-test-{uuid.uuid4().hex}"
    w = start(mode, tmp_path, DAEMON + "daemon('while True: pass', sys.argv[1] + ':d')\ntime.sleep(600)", args=[mark])
    try:
        daemon = until(lambda: marked(mark + ":d"), what="the daemon")[0]
        until(lambda: int(stat_field(daemon, 11)) > 0, what="the daemon using CPU")
        w.pause()
        assert stat_field(daemon, 0) == "T" and stat_field(w.pid, 0) == "T"
        before = stat_field(daemon, 11)
        time.sleep(0.5)
        assert stat_field(daemon, 11) == before
        w.resume()
        until(lambda: stat_field(daemon, 11) != before, what="the daemon running again")
    finally:
        w.kill()
    assert not marked(mark)


# The judge is a subprocess so that only it becomes a subreaper (never pytest itself).
JUDGE = """
import json, os, sys
from pathlib import Path
from avo.evaluate import sandbox as sb
mode, scratch, code = sys.argv[1:]
mark = os.environ["MARK"]  # not in our own command line, which the test scans
assert sb.become_subreaper()
w = sb.spawn([sys.executable, "-c", code, mark], isolation=sb.choose(mode), scratch=Path(scratch),
             env=sb.worker_env(os.environ, home=scratch))
for _ in range(3000):
    if "launcher killed" in w.output_tail() or w.poll() is not None:
        break
    w.wait(0.02)
print(json.dumps({"processes": w.processes()}), flush=True)
sys.stdin.readline()
w.kill()
zombies = [p for p, (ppid, _, state) in sb._table().items() if ppid == os.getpid() and state == "Z"]
print(json.dumps({"left": w.processes(), "strays": sb.kill_strays(), "zombies": zombies}), flush=True)
"""
KILLS_LAUNCHER = DAEMON + f"""
import ctypes, signal
daemon({SLEEP!r}, sys.argv[1] + ":d")
ctypes.CDLL(None).prctl(1, 0, 0, 0, 0)  # clear the parent-death signal: survive the launcher
os.kill(os.getppid(), signal.SIGKILL)
print("launcher killed", flush=True)
time.sleep(600)
"""


@pytest.mark.parametrize("mode", MODES)
def test_candidate_that_kills_its_launcher_still_dies(mode, tmp_path):
    mark = f"avo-test-{uuid.uuid4().hex}"
    judge = subprocess.Popen([sys.executable, "-c", JUDGE, mode, str(tmp_path / "scratch"), KILLS_LAUNCHER],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env={**os.environ, "MARK": mark})
    try:
        first = json.loads(judge.stdout.readline())
        if mode == "process":  # the worker and its daemon now hang off the judge, as strays
            daemon = until(lambda: marked(mark + ":d"), what="the daemon")[0]
            assert daemon in first["processes"]
            until(lambda: int(stat_field(daemon, 1)) == judge.pid, what="the daemon reparented to the judge")
        judge.stdin.write("kill\n")
        judge.stdin.flush()
        assert json.loads(judge.stdout.readline()) == {"left": [], "strays": [], "zombies": []}
        assert not marked(mark)
    finally:
        for pid in marked(mark):  # never leave a leak behind, even when the test fails
            os.kill(pid, signal.SIGKILL)
        judge.kill()
        judge.wait()


def test_over_process_limit(tmp_path):
    code = """
        import sys, threading, time
        for _ in range(int(sys.argv[1])):
            threading.Thread(target=time.sleep, args=(600,), daemon=True).start()
        print("ready", flush=True)
        time.sleep(600)
    """
    busy = start("process", tmp_path, code, args=["8"], limits=sb.Limits(max_processes=4))
    calm = start("process", tmp_path, code, args=["0"], limits=sb.Limits(max_processes=4))
    try:
        until(lambda: "ready" in busy.output_tail() and "ready" in calm.output_tail(), what="threads")
        assert busy.over_process_limit() and not calm.over_process_limit()
    finally:
        busy.kill()
        calm.kill()


@needs_bwrap
def test_bubblewrap_view(tmp_path):
    project = Path(sb.__file__).resolve().parents[2]
    out = tmp_path / "out"  # writable; host-visible, so hiding inside it is a real test
    (out / "hidden" / "shown").mkdir(parents=True)
    (out / "hidden" / "secret.txt").write_text("s3cret")
    (out / "hidden" / "shown" / "ok.txt").write_text("visible")
    (out / "result.json").write_text('{"verdict": "s3cret"}')
    (tmp_path / "host-only.txt").write_text("x")
    inside_tmp = f"/tmp/avo-inside-{uuid.uuid4().hex}"
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    cfg = {"project": str(project), "out": str(out), "tmp": inside_tmp, "port": listener.getsockname()[1],
           "host_tmp": str(tmp_path / "host-only.txt")}
    w = start("bubblewrap", tmp_path, """
        import json, os, socket, sys
        cfg, res = json.loads(sys.argv[1]), {}
        def attempt(name, fn):
            try:
                res[name] = fn() or "ok"
            except OSError as e:
                res[name] = "refused"
        attempt("project_write", lambda: open(os.path.join(cfg["project"], "avo-sandbox-probe"), "w").close())
        attempt("hidden_list", lambda: sorted(os.listdir(cfg["out"] + "/hidden")))
        attempt("hidden_read", lambda: open(cfg["out"] + "/hidden/secret.txt").read())
        attempt("hidden_write", lambda: open(cfg["out"] + "/hidden/new.txt", "w").close())
        attempt("result_read", lambda: repr(open(cfg["out"] + "/result.json").read()))
        attempt("result_write", lambda: open(cfg["out"] + "/result.json", "w").close())
        attempt("shown_read", lambda: open(cfg["out"] + "/hidden/shown/ok.txt").read())
        attempt("shown_write", lambda: open(cfg["out"] + "/hidden/shown/ok.txt", "a").close())
        attempt("out_write", lambda: open(cfg["out"] + "/written.txt", "w").write("w") and None)
        attempt("host_tmp_seen", lambda: str(os.path.exists(cfg["host_tmp"])))
        attempt("tmp_write", lambda: open(cfg["tmp"], "w").close())
        attempt("shm_write", lambda: open("/dev/shm/avo-probe", "w").close())
        s = socket.socket()
        s.settimeout(10)
        attempt("connect", lambda: s.connect(("127.0.0.1", cfg["port"])))
        attempt("sysctl_write", lambda: os.close(os.open("/proc/sys/vm/overcommit_ratio", os.O_WRONLY)))
        attempt("run_list", lambda: os.listdir("/run"))
        res["cap_eff"] = [l.split()[1] for l in open("/proc/self/status") if l.startswith("CapEff")][0]
        print(json.dumps(res))
    """, args=[json.dumps(cfg)], writable_paths=[out], readonly_paths=[out / "hidden" / "shown"],
                 hide_paths=[out / "hidden", out / "result.json", Path(sys.base_prefix)])  # python re-exposed
    try:
        got = final_json(w)
    finally:
        listener.close()
    assert got.pop("cap_eff") == ("0" * 16 if os.geteuid() == 0 else got["cap_eff"])
    assert got == {"project_write": "refused", "hidden_list": ["shown"], "hidden_read": "refused",
                   "hidden_write": "refused", "result_read": "''", "result_write": "refused",
                   "shown_read": "visible", "shown_write": "refused", "out_write": "ok",
                   "host_tmp_seen": "False", "tmp_write": "ok", "shm_write": "ok", "connect": "refused",
                   "sysctl_write": "refused", "run_list": "ok"}
    assert (out / "hidden" / "secret.txt").read_text() == "s3cret" and not (out / "hidden" / "new.txt").exists()
    assert (out / "result.json").read_text() == '{"verdict": "s3cret"}' and (out / "written.txt").exists()
    assert not os.path.exists(inside_tmp) and not (project / "avo-sandbox-probe").exists()


def test_choose(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no bwrap here
    with pytest.raises(sb.SandboxError) as err:
        sb.choose("bubblewrap")
    assert "\n" not in str(err.value) and "apt-get install bubblewrap" in str(err.value)
    auto = sb.choose("auto")
    assert auto.kind == "process" and "bubblewrap unavailable: bwrap not found" in auto.detail
    assert sb.choose("process").kind == "process"
    with pytest.raises(sb.SandboxError):
        sb.choose("docker")
    assert sb.probe_bwrap() == (False, "bwrap not found on PATH")
