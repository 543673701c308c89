"""What a report shows, read from run dirs: archive, lineage, metrics, Hydra's record of the config.

A path is a run dir (it holds `archive.sqlite`) or a sweep dir (its run dirs are found below it,
Hydra's numbered job dirs in numeric order). Runs are labelled by the config keys that differ
between them; seeds aside, those keys also decide which runs form a group (same colour).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

import yaml

from avo.archive import FILENAME as ARCHIVE, Candidate, Version, open_run
from avo.lineage import Lineage, LineageError, LineageVersion
from avo.logging import jsonl

ACCEPTED = "accepted"
_NOT_RUNS = {"wandb", "candidates", "lineage", "__pycache__"}


class ReportError(ValueError):
    """A user mistake (no run at a path, ...): one line."""


@dataclass
class Run:
    path: Path
    config: dict[str, Any]  # the resolved config, as Hydra saved it
    overrides: list[str]
    candidates: list[Candidate]
    versions: list[Version]
    lineage: list[LineageVersion]
    elapsed: dict[int, float]  # iteration -> wall seconds since the run began (across resumes)
    meta: dict[str, Any] = field(default_factory=dict)
    wandb_id: Optional[str] = None
    label: str = ""  # filled by `load`: the differing config keys, or the dir name
    group: str = ""  # the differing keys except seeds

    @property
    def best(self) -> Optional[Version]:
        return self.versions[-1] if self.versions else None

    @property
    def seed(self) -> Optional[Version]:
        return self.versions[0] if self.versions else None

    @property
    def best_score(self) -> Optional[float]:
        return self.best.score if self.best else None

    @property
    def gain_vs_seed(self) -> Optional[float]:
        if self.best and self.seed and self.best.score and self.seed.score:
            return self.best.score / self.seed.score - 1.0
        return None

    def best_curve(self) -> list[tuple[int, float, Optional[float]]]:
        """(iteration, wall seconds, incumbent score after it), iteration 0 being the seed."""
        if not self.versions:
            return []
        by_candidate = {v.candidate: v for v in self.versions}
        score = self.versions[0].score
        out = [(0, 0.0, score)]
        t = 0.0
        for c in self.candidates:
            if c.id in by_candidate:
                score = by_candidate[c.id].score
            t = self.elapsed.get(c.id, t + (c.wall_s or 0.0))
            out.append((c.id, t, score))
        return out

    def speedup_curve(self, baseline: str) -> list[tuple[int, Optional[float]]]:
        """(iteration, the incumbent's suite speedup over `baseline` after it), from the seed on."""
        if not self.versions:
            return []
        by_candidate = {v.candidate: v for v in self.versions}
        value = (self.versions[0].speedups or {}).get(baseline)
        out = [(0, value)]
        for c in self.candidates:
            if c.id in by_candidate:
                value = (by_candidate[c.id].speedups or {}).get(baseline)
            out.append((c.id, value))
        return out

    @property
    def best_kernel(self) -> Optional[Path]:
        return self.path / self.best.path if self.best and self.best.path else None

    def outcome_counts(self) -> dict[str, int]:
        """Accepted, and each way a candidate was not: evaluator status, or the verdict of a
        correct one that lost (slower, not-confirmed, duplicate ...)."""
        counts: dict[str, int] = {}
        for c in self.candidates:
            key = ACCEPTED if c.accepted else (c.verdict if c.status == "ok" else c.status)
            counts[key] = counts.get(key, 0) + 1
        return counts

    @property
    def cost_usd(self) -> float:
        return sum(c.cost_usd or 0.0 for c in self.candidates)

    @property
    def tokens(self) -> int:
        return sum(c.tokens or 0 for c in self.candidates)

    @property
    def wall_s(self) -> Optional[float]:
        curve = self.best_curve()
        return curve[-1][1] if len(curve) > 1 else None

    def baselines(self) -> list[str]:
        names: dict[str, None] = {}
        for row in (self.best.metrics or []) if self.best else []:
            names.update(dict.fromkeys(row.get("baselines") or {}))
        return list(names)

    def get(self, dotted: str, default: Any = None) -> Any:
        node: Any = self.config
        for part in dotted.split("."):
            if not isinstance(node, dict) or part not in node:
                return default
            node = node[part]
        return node


def find_runs(path: str | Path) -> list[Path]:
    """The run dirs at or below `path` (a run dir or a sweep dir)."""
    p = Path(path)
    if not p.exists():
        raise ReportError(f"{path} does not exist")
    found: list[Path] = []
    for here, dirs, files in os.walk(p):
        if ARCHIVE in files:
            found.append(Path(here))
            dirs[:] = []  # a run dir holds no further runs; its candidates/ can be large
        else:  # Hydra's and submitit's records, W&B's files: never runs
            dirs[:] = [d for d in dirs if not d.startswith(".") and d not in _NOT_RUNS]
    found.sort(key=_natural)
    if not found:
        raise ReportError(f"no run in {path}: no {ARCHIVE} in it or below it")
    return found


def _natural(p: Path) -> list[Any]:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", str(p))]


def _yaml(path: Path, default: Any) -> Any:
    try:
        return yaml.safe_load(path.read_text()) if path.is_file() else default
    except yaml.YAMLError:
        return default


def read_run(run_dir: str | Path) -> Run:
    run_dir = Path(run_dir)
    with open_run(run_dir) as archive:
        candidates, versions = archive.candidates(), archive.versions()
        meta = {k: archive.get_meta(k) for k in ("seed_origin", "elapsed_s")}
    try:
        lineage = Lineage.of_run(run_dir).versions() if Lineage.of_run(run_dir).exists() else []
    except LineageError:
        lineage = []
    # The first line of an iteration is when it ran: an archive rebuilt from results/ logs its
    # replayed iterations again, later.
    elapsed: dict[int, float] = {}
    for m in jsonl.read(run_dir, "iteration"):
        if m.get("iteration") is not None and m.get("elapsed_s") is not None:
            elapsed.setdefault(int(m["iteration"]), float(m["elapsed_s"]))
    wandb_file = run_dir / "wandb_id"
    return Run(path=run_dir, config=_yaml(run_dir / ".hydra" / "config.yaml", {}) or {},
               overrides=list(_yaml(run_dir / ".hydra" / "overrides.yaml", []) or []),
               candidates=candidates, versions=versions, lineage=lineage, elapsed=elapsed, meta=meta,
               wandb_id=wandb_file.read_text().strip() or None if wandb_file.is_file() else None)


def flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": 1}} -> {"a.b": 1}; lists become their JSON text (comparable, hashable)."""
    if isinstance(node, dict):
        out: dict[str, Any] = {}
        for key, value in node.items():
            out.update(flatten(value, f"{prefix}{key}."))
        return out
    value = json.dumps(node, sort_keys=True) if isinstance(node, list) else node
    return {prefix[:-1]: value}


def differing_keys(configs: Sequence[dict[str, Any]]) -> list[str]:
    """Config keys (dotted) whose value is not the same in every config, in config order."""
    flats = [flatten(c) for c in configs]
    keys = list(dict.fromkeys(k for f in flats for k in f))
    return [k for k in keys if len({json.dumps(f.get(k), sort_keys=True, default=str) for f in flats}) > 1]


# Settings that change where a run writes or what it reports, never its results: not in labels.
_NOT_RESULTS = ("logger", "dry_run")
# ... and single settings of that kind: whether a resume may change settings, how long the LLM
# client waits, which variable holds the key, the words describing the seed. (search.parallel
# stays: iterations in parallel see another incumbent, a different search.)
_NOT_RESULTS_KEYS = ("search.allow_changed_config", "model.timeout_s", "model.api_key_env", "hardware.seed_note")
_PATH_SUFFIXES = ("dir", "path", "_dir", "_path", "file")


def changes_results(key: str) -> bool:
    parts = key.split(".")
    return (parts[0] not in _NOT_RESULTS and key not in _NOT_RESULTS_KEYS
            and not parts[-1].endswith(_PATH_SUFFIXES))


def is_seed_key(key: str) -> bool:
    return key.split(".")[-1] == "seed"


def group_keys(keys: Sequence[str]) -> list[str]:
    """What runs are grouped by: the differing keys except seeds (repeats of one setting), or
    the seeds themselves when nothing else differs."""
    return [k for k in keys if not is_seed_key(k)] or list(keys)


def _short(value: Any) -> str:
    text = str(value)
    return text if len(text) <= 40 else text[:37] + "..."


def load(paths: Sequence[str | Path]) -> tuple[list[Run], list[str]]:
    """Every run under `paths` (each once), labelled; and the config keys that differ."""
    dirs: list[Path] = []
    for p in paths:
        for d in find_runs(p):
            if d.resolve() not in {x.resolve() for x in dirs}:
                dirs.append(d)
    runs = [read_run(d) for d in dirs]
    keys = [k for k in differing_keys([r.config for r in runs]) if changes_results(k)]
    grouping = [k for k in keys if not is_seed_key(k)]
    for r in runs:
        r.label = ", ".join(f"{k}={_short(r.get(k))}" for k in keys) or r.path.name
        r.group = ", ".join(f"{k}={_short(r.get(k))}" for k in grouping) or "all runs"
    names = [r.label for r in runs]
    for r in runs:  # the same settings twice (two sweeps of one config): tell them apart
        if names.count(r.label) > 1:
            r.label = f"{r.label} [{r.path.parent.name}/{r.path.name}]"
    return runs, keys


def best_run(runs: Sequence[Run]) -> Optional[Run]:
    scored = [r for r in runs if r.best_score is not None]
    return max(scored, key=lambda r: r.best_score) if scored else None
