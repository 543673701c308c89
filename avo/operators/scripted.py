"""`model=scripted`: an offline model that replays a recorded conversation through litellm.

A litellm custom provider named `avo-scripted` (model ids `avo-scripted/<anything>`) answers each
completion with the next recorded assistant turn, so the agent's real `litellm.completion` path,
its tool dispatch and the real evaluator all run without a network or a key.

The script is JSONL, one assistant turn per line:

    {"content": "Read the kernel first.", "tool_calls": [{"name": "read_file", "arguments": {"path": "kernel.py"}}]}
    {"content": "Done."}

Lines with only a "comment" key are skipped. The turn to play is the number of assistant messages
already in the conversation, so a replay is stateless: every variation plays the script from the
top. Past the end, the model answers with plain text (no tool call), which lets the agent's own
limits end the loop. Token usage is estimated as characters / 4 so budgets can be exercised.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

PROVIDER = "avo-scripted"
EXHAUSTED = "(the scripted conversation has no more turns)"

_lock = threading.Lock()
_scripts: dict[str, list[dict[str, Any]]] = {}  # model id -> turns
_default: list[dict[str, Any]] = []


def load_script(path: str | Path) -> list[dict[str, Any]]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"scripted model: no script at {path}")
    turns = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}:{n}: not JSON ({exc.msg})") from None
        if not isinstance(row, dict):
            raise ValueError(f"{path}:{n}: each line must be a JSON object")
        if set(row) == {"comment"}:
            continue
        for call in row.get("tool_calls") or []:
            if not isinstance(call, dict) or "name" not in call:
                raise ValueError(f"{path}:{n}: a tool call needs a name")
        turns.append(row)
    return turns


def _chars(messages: list[Any]) -> int:
    return sum(len(json.dumps(m, default=str)) for m in messages)


def _key(model: str) -> str:
    return model[len(PROVIDER) + 1:] if model.startswith(PROVIDER + "/") else model


def _played(messages: list[Any]) -> int:
    role = lambda m: m.get("role") if isinstance(m, dict) else getattr(m, "role", None)
    return sum(1 for m in messages if role(m) == "assistant")


def respond(model: str, messages: list[Any]) -> dict[str, Any]:
    """The OpenAI-shaped response dict for the next turn (used by the provider and by tests)."""
    with _lock:
        turns = _scripts.get(_key(model)) or _default
    played = _played(messages)
    turn = turns[played] if played < len(turns) else {"content": EXHAUSTED}
    calls = [{"id": f"call_{played}_{i}", "type": "function",
              "function": {"name": c["name"], "arguments": json.dumps(c.get("arguments") or {})}}
             for i, c in enumerate(turn.get("tool_calls") or [])]
    message: dict[str, Any] = {"role": "assistant", "content": turn.get("content") or ""}
    if calls:
        message["tool_calls"] = calls
    prompt = max(1, _chars(messages) // 4)
    completion = max(1, (len(message["content"]) + _chars(calls)) // 4)
    return {"choices": [{"index": 0, "message": message, "finish_reason": "tool_calls" if calls else "stop"}],
            "usage": {"prompt_tokens": prompt, "completion_tokens": completion,
                      "total_tokens": prompt + completion}}


def _provider():
    from litellm import CustomLLM
    from litellm.types.utils import ModelResponse

    class ScriptedLLM(CustomLLM):
        def completion(self, model, messages, *args, **kwargs):
            data = respond(model, messages)
            return ModelResponse(model=f"{PROVIDER}/{model}", **data)

        async def acompletion(self, model, messages, *args, **kwargs):
            return self.completion(model, messages)

    return ScriptedLLM()


def install(script: str | Path | list[dict[str, Any]], model: str | None = None) -> None:
    """Register the provider with litellm (once) and the turns to replay for `model`
    (`avo-scripted/<name>`; None sets the default for every scripted model id)."""
    from avo.operators.agent import import_litellm

    litellm = import_litellm()
    turns = load_script(script) if isinstance(script, (str, Path)) else list(script)
    with _lock:
        if model is None:
            _default[:] = turns
        else:
            _scripts[_key(model)] = turns
        if not any(p.get("provider") == PROVIDER for p in litellm.custom_provider_map):
            litellm.custom_provider_map = [*litellm.custom_provider_map,
                                           {"provider": PROVIDER, "custom_handler": _provider()}]
