"""Hostile kernel, attack i (isolation): outlive a timeout.

Its first call starts, all with argv marked avo-hostile-@@MARK@@: a plain child (same process
group), a child in its own session that double-forks away from it (setsid, SIGTERM/SIGHUP/SIGINT
ignored), and a non-daemon thread that spins; then it never returns.

Verdict: `timeout`, and afterwards no process carrying the marker remains.
"""
import subprocess
import sys
import threading

MARK = "avo-hostile-@@MARK@@"
_LOOP = r'''
import os, signal, sys, time
for s in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
    signal.signal(s, signal.SIG_IGN)
if sys.argv[2] == "escape":
    if os.fork():
        os._exit(0)
    os.setsid()
end = time.time() + 120
while time.time() < end:
    time.sleep(0.05)
'''


def _spin():
    while True:
        pass


def attention(q, k, v, causal=False, softmax_scale=None):
    quiet = dict(stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    subprocess.Popen([sys.executable, "-c", _LOOP, MARK, "stay"], **quiet)
    subprocess.Popen([sys.executable, "-c", _LOOP, MARK, "escape"], start_new_session=True, **quiet)
    threading.Thread(target=_spin).start()
    while True:
        pass
