"""The logger interface the search engine talks to, and a fan-out to several loggers."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Protocol, Sequence


_log = logging.getLogger("avo.logging")


class Logger(Protocol):
    def start(self, config: dict[str, Any], info: dict[str, Any]) -> None:
        """Once per process: the resolved config and run facts (run dir, resumed, ...)."""

    def iteration(self, metrics: dict[str, Any]) -> None:
        """One finished iteration: flat metrics (numbers, plus a few strings for humans)."""

    def version(self, version: dict[str, Any], kernel_path: Path) -> None:
        """A new lineage version (the seed, or an accepted candidate) and its kernel file."""

    def lineage(self, rows: Sequence[dict[str, Any]], step: int) -> None:
        """The whole lineage as a table, after it changed."""

    def message(self, text: str) -> None:
        """A line for humans (supervisor interventions, resume notes)."""

    def finish(self, summary: dict[str, Any]) -> None:
        """End of this process's part of the run (budget reached); not called after a crash."""


class MultiLogger:
    def __init__(self, loggers: Sequence[Any]):
        self.loggers = list(loggers)

    def _each(self, name: str, *args: Any) -> None:
        for logger in list(self.loggers):
            self._call(logger, name, *args)

    def _call(self, logger: Any, name: str, *args: Any) -> None:
        try:
            getattr(logger, name)(*args)
        except Exception as exc:  # e.g. W&B's service killed with the job: the run goes on
            self.loggers.remove(logger)
            _log.warning("logger %s failed in %s (%s: %s); it logs nothing more, the run dir keeps "
                         "everything", type(logger).__name__, name, type(exc).__name__, exc)

    def start(self, config, info) -> None:
        self._each("start", config, info)

    def iteration(self, metrics) -> None:
        # A replayed iteration (an archive rebuilt from results/) was logged when it ran: W&B
        # would get its step twice. Only loggers that show progress (the console) see it again.
        n = metrics.get("iteration")
        if any(getattr(lg, "logged", None) is not None and lg.logged(n) for lg in self.loggers):
            for logger in [lg for lg in self.loggers if getattr(lg, "shows_replays", False)]:
                self._call(logger, "iteration", metrics)
            return
        self._each("iteration", metrics)

    def version(self, version, kernel_path) -> None:
        self._each("version", version, kernel_path)

    def lineage(self, rows, step) -> None:
        self._each("lineage", rows, step)

    def message(self, text) -> None:
        self._each("message", text)

    def status(self, state: dict) -> None:
        """Where the evaluation in flight is (only loggers that show it have `status`)."""
        for logger in list(self.loggers):
            show = getattr(logger, "status", None)
            if show is not None:
                try:
                    show(state)
                except Exception:
                    pass

    def finish(self, summary) -> None:
        self._each("finish", summary)


class NullLogger(MultiLogger):
    def __init__(self) -> None:
        super().__init__([])
