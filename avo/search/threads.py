"""Running a round's proposals or evaluations at once, in threads of the search's process.

`concurrently(calls)` waits for ALL the calls, so that every one that can finish saves its work,
then raises the first failure in call order. A single call runs in the caller's thread (a
one-at-a-time search is exactly what it always was). The threads are daemons: an interrupted run
exits at once, and what they had not saved is redone on resume.

CPython before 3.13 keeps the state of `ast.parse` (the AST constructor's recursion depth) per
interpreter, not per thread: two threads parsing at once can fail with "SystemError: AST
constructor recursion depth mismatch" (python/cpython#106905). Operators parse kernels (the knob
operator's KNOBS, the knowledge base's chunks), so while threads run, `ast.parse` is serialized.
"""

from __future__ import annotations

import ast
import functools
import sys
import threading
from typing import Any, Callable, Optional

_parse_lock = threading.RLock()


def guard_ast_parse() -> None:
    """Make `ast.parse` one-at-a-time in this process (idempotent; nothing on CPython >= 3.13)."""
    if sys.version_info >= (3, 13) or getattr(ast.parse, "_avo_guarded", False):
        return
    unguarded = ast.parse

    @functools.wraps(unguarded)
    def parse(*args: Any, **kwargs: Any) -> Any:
        with _parse_lock:
            return unguarded(*args, **kwargs)

    parse._avo_guarded = True  # type: ignore[attr-defined]
    ast.parse = parse


def concurrently(calls: list[Callable[[], Any]], name: str = "avo-search") -> list[Any]:
    """The calls' results, in order; they ran at once (in threads) when there are several."""
    if len(calls) <= 1:
        return [call() for call in calls]
    guard_ast_parse()
    out: list[Any] = [None] * len(calls)
    errors: list[Optional[BaseException]] = [None] * len(calls)

    def work(i: int) -> None:
        try:
            out[i] = calls[i]()
        except BaseException as exc:  # handed to the caller's thread below
            errors[i] = exc

    threads = [threading.Thread(target=work, args=(i,), name=f"{name}-{i}", daemon=True) for i in range(len(calls))]
    for t in threads:
        t.start()
    for t in threads:
        while t.is_alive():
            t.join(0.2)  # in slices: Ctrl-C still reaches the caller's thread
    for exc in errors:
        if exc is not None:
            raise exc
    return out
