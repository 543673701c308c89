"""pytest plugin for device runs: print each failure's report the moment it happens.

A device call ends at its time limit, and pytest prints failures only at the end of a session, so
a cut run keeps its dots and loses its messages (H200, 2026-12-03c). Use with
`python3 -m pytest -p bench.instafail ...` (the repo root on PYTHONPATH, as activate.sh sets it);
with AVO_INSTAFAIL=FILE the reports are also appended to FILE as they come.
"""

from __future__ import annotations

import os
import sys


def pytest_runtest_logreport(report) -> None:
    if not report.failed:
        return
    text = f"\n=== {report.nodeid} ({report.when}) FAILED\n{report.longreprtext}\n"
    sys.stderr.write(text)
    sys.stderr.flush()
    path = os.environ.get("AVO_INSTAFAIL")
    if path:
        with open(path, "a") as f:
            f.write(text)
