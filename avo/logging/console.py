"""Progress on the console with rich: one line per iteration (iteration, verdict, scores, budget)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any, Optional

from rich.console import Console
from rich.markup import escape

_STYLE = {"accepted": "bold green", "slower": "yellow", "not-confirmed": "yellow", "duplicate": "dim"}


def _fmt(x: Optional[float]) -> str:
    return "-" if x is None else f"{x:.4g}"


class _Tee:
    """The same lines on the terminal and, without colour, appended to a file (console.log)."""

    def __init__(self, console: Console, log_file: str | Path | None):
        self.console, self.log_file = console, log_file

    def print(self, *args, **kwargs) -> None:
        self.console.print(*args, **kwargs)
        if self.log_file is not None:
            buf = io.StringIO()
            Console(file=buf, no_color=True, highlight=False, width=160).print(*args, **kwargs)
            with open(self.log_file, "a") as f:
                f.write(buf.getvalue())


class ConsoleLogger:
    def __init__(self, console: Console | None = None, log_file: str | Path | None = None):
        self.console = _Tee(console or Console(highlight=False), log_file)

    def start(self, config, info) -> None:
        verb = "resuming" if info.get("resumed") else "starting"
        self.console.print(
            f"[bold]avo[/bold] {verb} {escape(str(info.get('name', '')))} in {escape(str(info.get('run_dir', '')))}: "
            f"strategy {info.get('strategy')}, operator {info.get('operator')}, "
            f"{info.get('done', 0)}/{info.get('max_iterations')} iterations done", soft_wrap=True)

    def iteration(self, m: dict[str, Any]) -> None:
        verdict = str(m.get("verdict", ""))
        style = _STYLE.get(verdict, "red" if verdict.startswith(("failed", "confirm-failed", "operator")) else "")
        width = len(str(m.get("max_iterations", "")))
        gain = m.get("best/gain_vs_seed")
        tag = f"{escape(verdict):<13}"
        if style:
            tag = f"[{style}]{tag}[/]"
        line = f"\\[{m['iteration']:>{width}}/{m.get('max_iterations')}] {tag} "
        line += f"cand {_fmt(m.get('candidate/score')):>9}  best {_fmt(m.get('best/score')):>9}"
        if gain is not None:
            line += f" ({gain:+.1%} vs seed)"
        line += f"  {escape(str(m.get('rationale', ''))[:40]):<40}  {escape(str(m.get('budget_left', '')))}"
        self.console.print(line, soft_wrap=True)

    def version(self, version, kernel_path) -> None:
        pass

    def lineage(self, rows, step) -> None:
        pass

    def message(self, text) -> None:
        self.console.print(f"[cyan]{escape(text)}[/cyan]", soft_wrap=True)

    def finish(self, summary) -> None:
        self.console.print(
            f"[bold]stopped[/bold]: {escape(str(summary.get('stop_reason', '')))}; best score "
            f"{_fmt(summary.get('best_score'))} (v{summary.get('versions', 1) - 1}, "
            f"{summary.get('accepted', 0)} accepted of {summary.get('iterations', 0)})", soft_wrap=True)
