"""Operator name (agent.kind) -> factory(cfg, run_dir) -> Operator.

Operators register here; the heavy ones import lazily inside their factory, so choosing agent=knob
never imports an LLM client. To add one: `register("name", factory)` at import of this module's
neighbour, or add an entry to `_FACTORIES` below.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Optional

from avo.config import ConfigError
from avo.operators.base import Operator

Factory = Callable[[Any, Optional[Path]], Operator]


def _knob(cfg: Any, run_dir: Optional[Path]) -> Operator:
    from avo.operators.knob import make

    return make(cfg, run_dir)


_FACTORIES: dict[str, Factory] = {
    "knob": _knob,
    "avo": lambda cfg, run_dir: __import__("avo.operators.agent", fromlist=["make"]).make(cfg, run_dir),
    "cli": lambda cfg, run_dir: __import__("avo.operators.cli_agent", fromlist=["make"]).make(cfg, run_dir),
}


def register(name: str, factory: Factory) -> None:
    """Make `agent.kind=name` build its operator with `factory(cfg, run_dir)` (replaces any)."""
    _FACTORIES[name] = factory


def available() -> list[str]:
    return sorted(_FACTORIES)


def make_operator(cfg: Any, run_dir: str | Path | None = None) -> Operator:
    kind = cfg.agent.kind
    if kind not in _FACTORIES:
        raise ConfigError(f"agent.kind={kind!r} is not one of {', '.join(available())}")
    return _FACTORIES[kind](cfg, Path(run_dir) if run_dir is not None else None)
