"""Filling the prompt templates (conf/prompts/*.md) with a run's fields."""

from __future__ import annotations

from typing import Any


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
