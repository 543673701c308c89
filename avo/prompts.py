"""Filling the prompt templates (conf/prompts/*.md) with a run's fields."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from avo.config import ConfigError
from avo.paths import conf_dir


class _Keep(dict):
    """Unknown fields stay visible as `{name}` instead of raising KeyError."""

    def __missing__(self, key: str) -> str:
        return "{" + key + "}"


def render(template: str, fields: dict[str, Any]) -> str:
    try:
        return template.format_map(_Keep(fields))
    except (ValueError, IndexError, AttributeError):
        # Braces that are not fields (code in the markdown): substitute only the known names.
        for key, value in fields.items():
            template = template.replace("{" + key + "}", str(value))
        return template


def load(path: Optional[str], required: bool = True) -> str:
    """A prompt file named relative to conf/ (or absolute); empty when the config names none, or
    when it is missing and not `required` (the caller then uses its built-in text)."""
    if not path:
        return ""
    p = Path(path)
    if not p.is_absolute():
        p = conf_dir() / p
    if p.is_file():
        return p.read_text()
    if required:
        raise ConfigError(f"prompt file {path!r} not found (looked at {p})")
    return ""
