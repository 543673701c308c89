"""Shape suites, defined once in conf/attention/*.yaml and read here by name (evaluator, tests)."""

from __future__ import annotations

from dataclasses import dataclass

import yaml

from avo.config import ConfigError
from avo.paths import conf_dir


@dataclass(frozen=True)
class Shape:
    batch: int
    seqlen: int
    heads_q: int
    heads_kv: int
    head_dim: int
    causal: bool = False

    @property
    def flops(self) -> float:
        """4·b·hq·s²·d, halved when causal (shared/SUITES.md)."""
        f = 4.0 * self.batch * self.heads_q * self.seqlen**2 * self.head_dim
        return f / 2 if self.causal else f

    @property
    def label(self) -> str:
        kv = f"kv{self.heads_kv}" if self.heads_kv != self.heads_q else ""
        return (f"b{self.batch}_s{self.seqlen}_h{self.heads_q}{kv}_d{self.head_dim}"
                + ("_causal" if self.causal else ""))


def available() -> list[str]:
    return sorted(p.stem for p in (conf_dir() / "attention").glob("*.yaml"))


def from_config(attention) -> list[Shape]:
    """The shapes of a composed `attention` config group."""
    return [Shape(**{k: s[k] for k in ("batch", "seqlen", "heads_q", "heads_kv", "head_dim", "causal")})
            for s in attention.shapes]


def load(name: str) -> list[Shape]:
    path = conf_dir() / "attention" / f"{name}.yaml"
    if not path.is_file():
        raise ConfigError(f"unknown suite {name!r}; available: {', '.join(available())}")
    # Plain YAML on purpose: the evaluator runs where Hydra is not installed.
    data = yaml.safe_load(path.read_text())
    try:
        return [Shape(**row) for row in data["shapes"]]
    except (KeyError, TypeError) as exc:
        raise ConfigError(f"{path}: malformed suite ({exc})") from None
