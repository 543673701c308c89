"""One JSONL transcript per candidate, and the redaction pass every record goes through first.

Each line is one event: {"t": seconds since start, "event": kind, ...}. Events: `meta` (who,
limits), `message` (a prompt or an assistant turn), `tool_call`, `tool_result`, `usage`,
`retry`, `error`, `submit`, `stop`. Tool results are truncated to MAX_FIELD characters.

Redaction replaces secret values with "[REDACTED]" before anything is written: the values of
environment variables that look like credentials (*_API_KEY, *_TOKEN, *_SECRET, *PASSWORD*, the
model's api_key_env) and strings shaped like common provider keys (sk-..., ghp_..., hf_...,
AKIA..., "Bearer ..."). The same pass is available to loggers as `RedactingFilter`.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from pathlib import Path
from typing import Any, Iterable, Optional

REDACTED = "[REDACTED]"
MAX_FIELD = 20_000
_SECRET_ENV = re.compile(r"(_API_KEY|_APIKEY|_TOKEN|_SECRET|_SECRET_KEY|PASSWORD|_ACCESS_KEY)$|^(API_KEY|TOKEN)$",
                         re.IGNORECASE)
_KEY_SHAPES = re.compile(
    # Only at the start of a token: "mask-rcnn_..." or "disk-..." in code is not a key.
    r"(?<![A-Za-z0-9])(sk-[A-Za-z0-9_\-]{16,}"  # OpenAI / Anthropic (sk-ant-...) style
    r"|gh[pousr]_[A-Za-z0-9]{20,}"  # GitHub
    r"|hf_[A-Za-z0-9]{20,}"  # Hugging Face
    r"|AKIA[0-9A-Z]{16}"  # AWS access key id
    r"|AIza[0-9A-Za-z_\-]{30,}"  # Google
    r"|(?<=Bearer )[A-Za-z0-9._\-]{12,})"
)
# Shorter values would redact ordinary words ("1", "true") wherever they appear.
_MIN_SECRET_LEN = 8


def secret_values(extra_env: Iterable[Optional[str]] = (), environ: Optional[dict] = None) -> list[str]:
    """Values of credential-like environment variables (and of `extra_env` names), longest first."""
    env = os.environ if environ is None else environ
    names = {k for k in env if _SECRET_ENV.search(k)} | {n for n in extra_env if n}
    values = {env.get(n, "") for n in names}
    return sorted((v for v in values if len(v) >= _MIN_SECRET_LEN), key=len, reverse=True)


def redact_text(text: str, secrets: Iterable[str]) -> str:
    for value in secrets:
        if value in text:
            text = text.replace(value, REDACTED)
    return _KEY_SHAPES.sub(REDACTED, text)


def redact(obj: Any, secrets: Iterable[str]) -> Any:
    """A copy of a JSON-like structure with every string redacted."""
    secrets = list(secrets)
    if isinstance(obj, str):
        return redact_text(obj, secrets)
    if isinstance(obj, dict):
        return {k: redact(v, secrets) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [redact(v, secrets) for v in obj]
    return obj


def truncate(text: str, limit: int = MAX_FIELD) -> str:
    if len(text) <= limit:
        return text
    head = limit * 3 // 4
    return text[:head] + f"\n[... {len(text) - limit} characters cut ...]\n" + text[-(limit - head):]


class Transcript:
    """Append-only JSONL; each write is flushed so a killed run keeps what happened so far."""

    def __init__(self, path: str | Path, secrets: Iterable[str] = ()):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.secrets = list(secrets)
        self._t0 = time.monotonic()
        self.path.write_text("")

    def write(self, event: str, **data: Any) -> None:
        record = {"t": round(time.monotonic() - self._t0, 3), "event": event, **data}
        record = redact(json.loads(json.dumps(record, default=str)), self.secrets)
        with self.path.open("a") as fh:
            fh.write(json.dumps(record, ensure_ascii=False) + "\n")


def read(path: str | Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


class RedactingFilter(logging.Filter):
    """Redacts log records in place (message and args) before any handler sees them."""

    def __init__(self, secrets: Iterable[str] = ()):
        super().__init__()
        self.secrets = list(secrets)

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = redact_text(record.getMessage(), self.secrets)
        record.args = ()
        return True


def install_log_redaction(extra_env: Iterable[Optional[str]] = (), loggers=("avo", "LiteLLM", "litellm")) -> None:
    """Attach a RedactingFilter to the named loggers and to every handler of the root logger
    (a logger's filters do not see records propagated from its children; its handlers do).
    Idempotent: a second call replaces the filters."""
    secrets = secret_values(extra_env)
    targets = [logging.getLogger(n) for n in loggers] + list(logging.getLogger().handlers)
    for target in targets:
        for f in list(target.filters):
            if isinstance(f, RedactingFilter):
                target.removeFilter(f)
        target.addFilter(RedactingFilter(secrets))
