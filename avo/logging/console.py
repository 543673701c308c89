"""Progress on the console with rich: one line per iteration (iteration, verdict, scores, budget),
and on a terminal a live line below them: what is in flight (the operator's proposal, or an
evaluation's stage and shape) for how long, the best so far with its unit and speedups, tokens
and cost so far, the run's elapsed time. Not a terminal: plain lines only."""

from __future__ import annotations

import io
import time
from pathlib import Path
from typing import Any, Optional

from rich.console import Console
from rich.markup import escape

UNIT = "TFLOP/s"
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


def _clock(seconds: float) -> str:
    m, s = divmod(int(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m" if h else (f"{m}m{s:02d}s" if m else f"{s}s")


class _LiveLine:
    """What the live line shows, rendered afresh on every refresh (so its clocks move)."""

    def __init__(self, owner: "ConsoleLogger"):
        self.owner = owner

    def __rich__(self) -> str:
        return escape(self.owner.live_text())


class ConsoleLogger:
    shows_replays = True  # a rebuild's replayed iterations are shown again (MultiLogger.iteration)

    def __init__(self, console: Console | None = None, log_file: str | Path | None = None,
                 clock=time.monotonic):
        self.console = _Tee(console or Console(highlight=False), log_file)
        self._live = None  # the live line (a terminal only)
        self._last: Optional[tuple] = None
        self._clock = clock
        self._run_t0 = clock()
        self._state: dict[str, Any] = {}  # what is in flight, since when
        self._best: dict[str, Any] = {}  # best so far, its speedups, totals (from the last iteration)

    def live_text(self) -> str:
        st, now = self._state, self._clock()
        head = f"iteration {st.get('iteration')}/{st.get('max_iterations')}: "
        if st.get("kind") == "proposal":
            head += f"{st.get('stage') or 'operator'} is proposing"
        else:
            head += f"evaluating the {st.get('kind')}: {st.get('stage')}" + (f" {st['shape']}" if st.get("shape") else "")
        parts = [head + f" ({_clock(now - st.get('since', now))})"]
        b = self._best
        if b.get("score") is not None:
            best = f"best {_fmt(b['score'])} {UNIT}"
            if b.get("speedups"):
                best += " (" + " ".join(f"{k} x{v:.3f}" for k, v in sorted(b["speedups"].items())) + ")"
            parts.append(best)
        if b.get("tokens") or b.get("cost_usd"):
            parts.append(f"{int(b.get('tokens') or 0):,} tok ${float(b.get('cost_usd') or 0):.2f}")
        parts.append(f"elapsed {_clock(now - self._run_t0)}")
        return " · ".join(parts)

    def status(self, st: dict[str, Any]) -> None:
        """What is in flight (the operator's proposal, or an evaluation's stage and shape): the
        live line on a terminal; elsewhere one plain line per evaluation."""
        key = (st.get("iteration"), st.get("kind"))
        if key != (self._state.get("iteration"), self._state.get("kind")):
            self._state = {**st, "since": self._clock()}
        else:
            self._state.update({k: v for k, v in st.items() if k != "since"})
        con = self.console.console
        if con.is_terminal:
            if self._live is None:
                from rich.live import Live

                self._live = Live(_LiveLine(self), console=con, refresh_per_second=2, transient=True)
                self._live.start()
            return
        if st.get("kind") == "proposal":
            return  # the iteration's own line follows
        if key != self._last:  # one line per evaluation, not per stage: logs stay readable
            self._last = key
            con.print(f"  iteration {st.get('iteration')}/{st.get('max_iterations')}: evaluating the {st.get('kind')}",
                      soft_wrap=True, highlight=False)  # not in console.log

    def _end_status(self) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None

    def start(self, config, info) -> None:
        # A resumed run's elapsed time and best so far are the run's, not this process's.
        self._run_t0 = self._clock() - float(info.get("elapsed_s") or 0.0)
        if info.get("best_score") is not None:
            self._best = {"score": info["best_score"], "speedups": dict(info.get("best_speedups") or {}),
                          "tokens": info.get("total_tokens"), "cost_usd": info.get("total_cost_usd")}
        verb = "resuming" if info.get("resumed") else "starting"
        self.console.print(
            f"[bold]avo[/bold] {verb} {escape(str(info.get('name', '')))} in {escape(str(info.get('run_dir', '')))}: "
            f"strategy {info.get('strategy')}, operator {info.get('operator')}, "
            f"{info.get('done', 0)}/{info.get('max_iterations')} iterations done", soft_wrap=True)

    def iteration(self, m: dict[str, Any]) -> None:
        self._end_status()
        self._best = {"score": m.get("best/score"), "tokens": m.get("total/tokens"), "cost_usd": m.get("total/cost_usd"),
                      "speedups": {k.split("speedup_vs_", 1)[1]: v for k, v in m.items()
                                   if k.startswith("best/speedup_vs_") and isinstance(v, (int, float))}}
        verdict = str(m.get("verdict", ""))
        style = _STYLE.get(verdict, "red" if verdict.startswith(("failed", "confirm-failed", "operator")) else "")
        width = len(str(m.get("max_iterations", "")))
        gain = m.get("best/gain_vs_seed")
        tag = f"{escape(verdict):<13}"
        if style:
            tag = f"[{style}]{tag}[/]"
        line = f"\\[{m['iteration']:>{width}}/{m.get('max_iterations')}] {tag} "
        line += f"cand {_fmt(m.get('candidate/score')):>9}  best {_fmt(m.get('best/score')):>9} {UNIT}"
        if gain is not None:
            line += f" ({gain:+.1%} vs seed)"
        ratio, noise = m.get("incumbent_ratio"), m.get("incumbent_ratio_spread")
        if isinstance(ratio, (int, float)):
            # What decided it: the paired ratio against the incumbent (separate scores can disagree).
            line += f"  x{ratio:.3f}" + (f"±{noise:.3f}" if isinstance(noise, (int, float)) else "") + " vs inc"
        speedups = [(k.split("speedup_vs_", 1)[1], v) for k, v in m.items()
                    if k.startswith("candidate/speedup_vs_") and isinstance(v, (int, float))]
        if speedups:
            line += "  " + " ".join(f"{escape(k)} x{v:.3f}" for k, v in sorted(speedups))
        if m.get("total/cost_usd") or m.get("total/tokens"):
            line += f"  {int(m.get('total/tokens') or 0):,} tok ${float(m.get('total/cost_usd') or 0):.2f}"
        line += f"  {escape(str(m.get('rationale', ''))[:40]):<40}  {escape(str(m.get('budget_left', '')))}"
        self.console.print(line, soft_wrap=True)

    def version(self, version, kernel_path) -> None:
        pass

    def lineage(self, rows, step) -> None:
        pass

    def message(self, text) -> None:
        self.console.print(f"[cyan]{escape(text)}[/cyan]", soft_wrap=True)

    def finish(self, summary) -> None:
        self._end_status()
        if "stop_reason" not in summary:  # stopped by a signal or a fatal error: run.py says what
            return
        text = (f"[bold]stopped[/bold]: {escape(str(summary.get('stop_reason', '')))}; best score "
                f"{_fmt(summary.get('best_score'))} {UNIT} (v{summary.get('versions', 1) - 1}, "
                f"{summary.get('accepted', 0)} accepted of {summary.get('iterations', 0)})")
        if summary.get("tokens") or summary.get("cost_usd"):
            text += f"; {int(summary.get('tokens') or 0):,} tokens, ${float(summary.get('cost_usd') or 0):.2f}"
        if summary.get("best_path"):
            text += f"\nbest kernel: {escape(str(summary['best_path']))}"
        self.console.print(text, soft_wrap=True)
