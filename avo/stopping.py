"""A search told to stop (SIGTERM from `scontrol requeue` or preemption, SIGUSR2 before a time
limit, SIGINT) stops cleanly: nothing of the iteration in flight is recorded, its evaluation is
redone on resume, and the process ends with exit 0 so a requeued job and a multirun are not
failures.

`requested` is set by the handlers the moment a signal arrives; the evaluator's wait loop polls
it and kills its children, and the engine checks it before any result is signed, so a child that
died of the same signal (Slurm signals every process of a job) is never taken for a crashed kernel.
A handler that was there before (submitit's USR2 checkpoint) is chained, not replaced.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from typing import Iterator

STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR2, signal.SIGINT)  # SIGINT stays a KeyboardInterrupt (chained)
requested = threading.Event()
_why: list[str] = []


class SearchStopped(BaseException):
    """Raised in the search's main thread by a stop signal (a BaseException, like
    KeyboardInterrupt: no `except Exception` on the way records it as a failure)."""


def reason() -> str:
    return _why[0] if _why else "a stop request"


def request(why: str) -> None:
    if not _why:
        _why.append(why)
    requested.set()


_deferred = [0]
# A chained handler (submitit's checkpoint-and-requeue) of a signal that arrived inside a critical
# block: called when the block ends. Dropping it lost the requeue of a job signalled while it
# recorded an iteration (tests/test_sweep.py, seen on a loaded machine, 2026-12-04).
_pending: list[tuple] = []


@contextlib.contextmanager
def critical() -> Iterator[None]:
    """Writes that belong together (a lineage commit and its archive row): a stop signal that
    arrives inside waits for the end of the block."""
    _deferred[0] += 1
    try:
        yield
    finally:
        _deferred[0] -= 1
    if not _deferred[0]:
        while _pending:
            before, signum = _pending.pop(0)
            before(signum, None)
        check()


def check() -> None:
    """Raise SearchStopped if a stop was requested (called before anything is recorded)."""
    if requested.is_set():
        raise SearchStopped(reason())


@contextlib.contextmanager
def handlers() -> Iterator[None]:
    """Install the stop handlers for the duration of a search (main thread only; elsewhere, e.g.
    a search run from a test thread, nothing is installed)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.getsignal(s) for s in STOP_SIGNALS}

    def on_signal(signum, frame):
        name = signal.Signals(signum).name
        request(name)
        before = previous.get(signum)
        if _deferred[0]:
            if callable(before):
                _pending.append((before, signum))
            return  # raised (and the chained handler called) when the critical block ends
        if callable(before):
            before(signum, frame)  # e.g. submitit's checkpoint-and-requeue
        raise SearchStopped(name)

    for s in STOP_SIGNALS:
        signal.signal(s, on_signal)
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h if h is not None else signal.SIG_DFL)


def reset() -> None:
    """For a new search in the same process (tests)."""
    requested.clear()
    _why.clear()
    _pending.clear()
