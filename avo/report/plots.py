"""The report's charts (matplotlib, no display): each function returns one PNG as bytes."""

from __future__ import annotations

import io
from typing import Sequence

import matplotlib

matplotlib.use("Agg")  # before pyplot: headless, the same on a laptop and a cluster node
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.colors import to_rgb  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from avo.report.data import ACCEPTED, Run  # noqa: E402

_STYLES = ("-", "--", ":", "-.")
BASELINE_COLORS = {"cudnn": "#555555", "fa2": "#999999", "fa4": "#222222"}


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def styles(runs: Sequence[Run]) -> dict[str, tuple[str, str]]:
    """label -> (colour, line style): one colour per group, a line style per run in it."""
    cmap = plt.get_cmap("tab10")
    groups = list(dict.fromkeys(r.group for r in runs))
    out, seen = {}, {g: 0 for g in groups}
    for r in runs:
        out[r.label] = (cmap(groups.index(r.group) % 10), _STYLES[seen[r.group] % len(_STYLES)])
        seen[r.group] += 1
    return out


def fills(runs: Sequence[Run]) -> dict[str, tuple[float, float, float]]:
    """label -> bar colour: the group's colour, lighter for each further run of the group (bars
    have no line style to tell the seeds of one setting apart)."""
    look = styles(runs)
    out, seen = {}, {}
    for r in runs:
        k = seen.get(r.group, 0)
        seen[r.group] = k + 1
        mix = min(0.6, 0.22 * k)
        out[r.label] = tuple(c + (1.0 - c) * mix for c in to_rgb(look[r.label][0]))
    return out


def _legend(ax, n: int) -> None:
    if n:
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)


def best_over(runs: Sequence[Run], axis: str) -> bytes:
    """The incumbent's score after each iteration (axis="iteration") or over wall time ("time")."""
    fig, ax = plt.subplots(figsize=(9, 4.2))
    look = styles(runs)
    drawn = 0
    for r in runs:
        curve = [(it, t, s) for it, t, s in r.best_curve() if s is not None]
        if not curve:
            continue
        xs = [it for it, _, _ in curve] if axis == "iteration" else [t / 60.0 for _, t, _ in curve]
        color, style = look[r.label]
        ax.step(xs, [s for _, _, s in curve], where="post", color=color, linestyle=style, linewidth=1.8,
                label=r.label)
        accepted = [(x, s) for x, (it, _, s) in zip(xs, curve) if it in {v.candidate for v in r.versions[1:]}]
        if accepted:
            ax.plot(*zip(*accepted), "o", color=color, markersize=4)
        drawn += 1
    if axis == "iteration":
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("iteration" if axis == "iteration" else "wall time (minutes, across resumes)")
    ax.set_ylabel("best score (geomean TFLOP/s)")
    ax.set_title("Best score over " + ("iterations" if axis == "iteration" else "wall time") +
                 " (dots: accepted versions)")
    ax.grid(alpha=0.3)
    _legend(ax, drawn)
    return _png(fig)


def speedup_over(runs: Sequence[Run], baselines: Sequence[str]) -> bytes:
    """The incumbent's suite speedup over each baseline after each iteration, a panel each."""
    fig, axes = plt.subplots(len(baselines), 1, figsize=(9, 1.2 + 3.0 * len(baselines)), squeeze=False,
                             sharex=True)
    look = styles(runs)
    for i, (ax, b) in enumerate(zip(axes[:, 0], baselines)):
        drawn = 0
        for r in runs:
            curve = [(it, x) for it, x in r.speedup_curve(b) if x is not None]
            if not curve:
                continue
            color, style = look[r.label]
            ax.step(*zip(*curve), where="post", color=color, linestyle=style, linewidth=1.8, label=r.label)
            drawn += 1
        ax.axhline(1.0, color="#888", linewidth=0.8, linestyle=":")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(f"× {b}")
        ax.grid(alpha=0.3)
        if i == 0:
            ax.set_title("The incumbent's suite speedup over each baseline (1 = as fast)")
            _legend(ax, drawn)
    axes[-1, 0].set_xlabel("iteration")
    return _png(fig)


def per_shape(runs: Sequence[Run]) -> bytes:
    """Each run's best version per shape, beside the baselines measured with it."""
    labels = list(dict.fromkeys(row["label"] for r in runs if r.best for row in (r.best.metrics or [])))
    baselines = list(dict.fromkeys(b for r in runs for b in r.baselines()))
    series: list[tuple[str, list[float], dict]] = []
    look = fills(runs)
    for r in runs:
        rows = {row["label"]: row for row in ((r.best.metrics or []) if r.best else [])}
        series.append((f"{r.label} (v{r.best.version})" if r.best else r.label,
                       [rows.get(lbl, {}).get("tflops") or 0.0 for lbl in labels],
                       {"color": look[r.label]}))
    for b in baselines:
        # The baseline as measured beside each run's best; the median when several runs measured it.
        values = []
        for lbl in labels:
            seen = sorted(row["baselines"][b] for r in runs if r.best for row in (r.best.metrics or [])
                          if row["label"] == lbl and (row.get("baselines") or {}).get(b))
            values.append(seen[len(seen) // 2] if seen else 0.0)
        series.append((b, values, {"color": BASELINE_COLORS.get(b, "#777777"), "hatch": "//"}))
    fig, ax = plt.subplots(figsize=(max(9, 1.2 * len(labels) * max(1, len(series)) / 3), 4.6))
    width = 0.8 / max(1, len(series))
    for i, (name, values, kw) in enumerate(series):
        xs = [j + (i - (len(series) - 1) / 2) * width for j in range(len(labels))]
        ax.bar(xs, values, width=width, label=name, edgecolor="white", **kw)
    ax.set_xticks(range(len(labels)))
    ax.set_xticklabels(labels, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("TFLOP/s")
    ax.set_title("Per shape: each run's best version" + (" vs " + ", ".join(baselines) if baselines else
                                                         " (no baselines were timed)"))
    ax.grid(axis="y", alpha=0.3)
    _legend(ax, len(series))
    return _png(fig)


def outcomes(runs: Sequence[Run]) -> bytes:
    """How each run's candidates ended: accepted, correct but not accepted (why), or failed (status)."""
    kinds = list(dict.fromkeys(k for r in runs for k in r.outcome_counts()))
    kinds.sort(key=lambda k: (k != ACCEPTED, k))
    cmap = plt.get_cmap("tab20")
    fig, ax = plt.subplots(figsize=(9, 0.5 * len(runs) + 1.8))
    left = [0] * len(runs)
    for i, kind in enumerate(kinds):
        values = [r.outcome_counts().get(kind, 0) for r in runs]
        color = "#2ca02c" if kind == ACCEPTED else cmap((i * 2 + 1) % 20)
        ax.barh(range(len(runs)), values, left=left, color=color, label=kind)
        left = [a + b for a, b in zip(left, values)]
    ax.set_yticks(range(len(runs)))
    ax.set_yticklabels([r.label for r in runs], fontsize=8)
    ax.invert_yaxis()
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("candidates")
    ax.set_title("Outcome of every candidate")
    ax.grid(axis="x", alpha=0.3)
    _legend(ax, len(kinds))
    return _png(fig)


def cost(runs: Sequence[Run]) -> bytes:
    """LLM spend and tokens per run (zero for the knob operator), and the run's wall time."""
    fig, axes = plt.subplots(1, 3, figsize=(12, 0.5 * len(runs) + 2.0), sharey=True)
    look = fills(runs)
    colors = [look[r.label] for r in runs]
    panels = (("LLM cost (USD)", [r.cost_usd for r in runs]), ("tokens", [r.tokens for r in runs]),
              ("wall time (minutes)", [(r.wall_s or 0.0) / 60.0 for r in runs]))
    for ax, (title, values) in zip(axes, panels):
        ax.barh(range(len(runs)), values, color=colors)
        ax.set_xlim(left=0, right=None if any(values) else 1)
        if not any(values):
            ax.text(0.5, 0.5, "none", transform=ax.transAxes, ha="center", va="center", color="#888")
        ax.set_title(title, fontsize=10)
        if title == "tokens":
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(axis="x", alpha=0.3)
    axes[0].set_yticks(range(len(runs)))
    axes[0].set_yticklabels([r.label for r in runs], fontsize=8)
    axes[0].invert_yaxis()
    return _png(fig)
