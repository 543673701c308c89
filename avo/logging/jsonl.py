"""Local metrics, always on: one JSON object per line in `metrics.jsonl` of the run dir."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

FILENAME = "metrics.jsonl"


class JsonlLogger:
    def __init__(self, run_dir: str | Path):
        self.path = Path(run_dir) / FILENAME
        self._logged: set[int] | None = None  # iterations already in the file, read on first use

    def _write(self, event: str, payload: dict[str, Any]) -> None:
        record = {"event": event, "time": round(time.time(), 3), **payload}
        # One write per line, flushed at once: a killed run leaves whole lines behind.
        with self.path.open("a") as f:
            f.write(json.dumps(record, default=str) + "\n")

    def start(self, config, info) -> None:
        self._write("start", dict(info))

    def logged(self, n: Any) -> bool:
        """Whether iteration n is already in the file: an archive rebuilt from results/ replays
        the recorded iterations, and every logger but the console has them (MultiLogger)."""
        if self._logged is None:
            self._logged = {int(m["iteration"]) for m in read(self.path.parent, "iteration")
                            if isinstance(m.get("iteration"), int)}
        return isinstance(n, int) and n in self._logged

    def iteration(self, metrics) -> None:
        n = metrics.get("iteration")
        if self.logged(n):  # an iteration is logged once, when it ran
            return
        if isinstance(n, int):
            self._logged.add(n)
        self._write("iteration", dict(metrics))

    def version(self, version, kernel_path) -> None:
        self._write("version", {**version, "kernel": str(kernel_path)})

    def lineage(self, rows, step) -> None:
        pass  # the lineage lives in lineage/ and archive.sqlite; no need to repeat it here

    def message(self, text) -> None:
        self._write("message", {"text": text})

    def finish(self, summary) -> None:
        self._write("finish", dict(summary))


def read(run_dir: str | Path, event: str | None = None) -> list[dict[str, Any]]:
    path = Path(run_dir) / FILENAME
    if not path.is_file():
        return []
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r for r in rows if event is None or r.get("event") == event]
