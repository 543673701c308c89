"""The console's progress: the live line on a terminal (what is in flight, for how long, the best
so far with its unit and speedups, tokens and cost, the run's time), plain lines elsewhere, and
the per-iteration line with the paired ratio that decided it. Clocks are injected."""

from __future__ import annotations

import io

from rich.console import Console

from avo.logging.console import ConsoleLogger


class Clock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


ITERATION = {"iteration": 1, "max_iterations": 4, "verdict": "accepted", "candidate/score": 0.0054,
             "best/score": 0.0054, "best/gain_vs_seed": 0.5, "incumbent_ratio": 1.536,
             "incumbent_ratio_spread": 0.073, "candidate/speedup_vs_cudnn": 1.1, "best/speedup_vs_cudnn": 1.1,
             "best/speedup_vs_fa4": 0.97, "total/tokens": 12345, "total/cost_usd": 0.42,
             "rationale": "block_m 16 -> 32", "budget_left": "3 it left"}


def test_the_live_line_says_what_is_in_flight_and_the_best_so_far():
    clock, out = Clock(), io.StringIO()
    log = ConsoleLogger(Console(file=out, force_terminal=True, width=200, highlight=False, color_system=None), clock=clock)
    log.start({}, {"name": "smoke", "max_iterations": 4})
    clock.t += 5
    log.status({"iteration": 1, "max_iterations": 4, "kind": "proposal", "stage": "knob", "shape": None})
    clock.t += 65
    text = log.live_text()
    assert "iteration 1/4: knob is proposing (1m05s)" in text and "elapsed 1m10s" in text
    assert "best" not in text  # nothing measured yet
    log.iteration(ITERATION)
    log.status({"iteration": 2, "max_iterations": 4, "kind": "candidate", "stage": "benchmark", "shape": "b2_s100"})
    clock.t += 12
    log.status({"iteration": 2, "max_iterations": 4, "kind": "candidate", "stage": "benchmark", "shape": "b4_s200"})
    clock.t += 3
    text = log.live_text()
    assert "evaluating the candidate: benchmark b4_s200 (15s)" in text, text  # since the evaluation began
    assert "best 0.0054 TFLOP/s (cudnn x1.100 fa4 x0.970)" in text and "12,345 tok $0.42" in text
    assert "elapsed 1m25s" in text
    log.finish({"stop_reason": "done", "best_score": 0.0054, "versions": 2, "accepted": 1, "iterations": 1,
                "best_path": "/run/candidates/0001/kernel.py"})
    assert "best kernel: /run/candidates/0001/kernel.py" in out.getvalue()


def test_not_a_terminal_gets_plain_lines_and_the_deciding_ratio():
    out = io.StringIO()
    log = ConsoleLogger(Console(file=out, width=250), clock=Clock())
    log.status({"iteration": 1, "max_iterations": 4, "kind": "proposal", "stage": "knob", "shape": None})
    for stage in ("compile", "correctness", "benchmark"):
        log.status({"iteration": 1, "max_iterations": 4, "kind": "candidate", "stage": stage, "shape": None})
    log.iteration(ITERATION)
    lines = out.getvalue().splitlines()
    assert lines[0] == "  iteration 1/4: evaluating the candidate" and len(lines) == 2, lines
    assert "x1.536±0.073 vs inc" in lines[1] and "TFLOP/s" in lines[1] and "12,345 tok $0.42" in lines[1]
    assert "\x1b[" not in out.getvalue()  # no live line, no colour codes


def test_a_resumed_run_shows_its_best_and_its_own_elapsed_time_from_the_start():
    clock, out = Clock(), io.StringIO()
    log = ConsoleLogger(Console(file=out, force_terminal=True, width=200, highlight=False, color_system=None), clock=clock)
    log.start({}, {"name": "smoke", "max_iterations": 8, "resumed": True, "done": 4, "elapsed_s": 3600.0,
                   "best_score": 0.0136, "best_speedups": {"cudnn": 1.2}, "total_tokens": 900, "total_cost_usd": 0.05})
    log.status({"iteration": 5, "max_iterations": 8, "kind": "proposal", "stage": "knob", "shape": None})
    clock.t += 10
    text = log.live_text()
    assert "best 0.0136 TFLOP/s (cudnn x1.200)" in text and "900 tok $0.05" in text, text
    assert "elapsed 1h00m" in text, text
