"""`search.supervisor=model`: the stagnation supervisor's directive, written by the model.

The rules of avo.search.supervisor still decide WHEN to intervene and HOW (review the best, or
restart from which earlier version): those stay a pure function of the archive, so the choice of
parent and a resume are the same in both modes. Here the model only writes the directive: it reads
the trajectory (the versions with their scores and per-shape speedups, the recent attempts that
failed or were rejected, and why) and answers with concrete new directions for the next variations.

One call, no tools, no retries, bounded by search.supervisor_timeout_s and
search.supervisor_max_tokens: the template's directive is always at hand, so a failed call costs
only the better text. Any exception, a timeout, an empty reply or a reply cut at the token cap
gives the template's directive, marked as such, with the reason in `Written.error`.

Credentials as in the agent (avo.operators.agent): the key only from the variable model.api_key_env
names, passed per call and never stored; the directive, the error and the transcript
(candidates/NNNN/supervisor.jsonl) are redacted.

The prompt is prompts.supervisor_model (conf/prompts/supervisor_model.md), sent as one user message
and rendered with the fields:
  {suite} {num_shapes} {hardware} {arch} {iteration}   the run's facts
  {kind}        review | restart, as the rules decided
  {streak} {patience}   attempts since the last acceptance (or intervention); search.stagnation_patience
  {best_score} {best_version}   the best version so far
  {restart_version} {restart_from} {restart_score}   the version a restart starts from (n/a for a review)
  {move}        one sentence: which version the next variations start from
  {versions}    the lineage, one line per version (score, speedups, rationale) + its per-shape results
  {attempts}    the last MAX_ATTEMPTS attempts not accepted: verdict, status, message, rationale
  {template}    the rule-based directive (what the operator gets when the call fails)
Unknown fields are left as written.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from avo.config import ConfigError
from avo.operators.agent import _usage, check_credentials, import_litellm, response_cost
from avo.operators.base import OperatorError
from avo.operators.transcript import Transcript, install_log_redaction, redact_text, secret_values, truncate
from avo.prompts import load as load_prompt
from avo.prompts import render
from avo.search.supervisor import RESTART, Intervention, stagnation

TRANSCRIPT_NAME = "supervisor.jsonl"
# The prompt stays small whatever the run's length: the seed and the latest versions, the latest
# failures, first lines only.
MAX_VERSIONS = 12
MAX_ATTEMPTS = 15
MAX_SHAPES = 32
LINE_CHARS = 200


@dataclass(frozen=True)
class Written:
    directive: str
    source: str  # model | template (the fallback)
    error: Optional[str] = None  # why the model's answer was not used
    tokens: int = 0
    cost_usd: float = 0.0


class _Unusable(Exception):
    """A reply that came back but cannot be the directive (empty, cut at the cap)."""


def _fmt(x: Optional[float]) -> str:
    return "n/a" if x is None else f"{x:.4g}"


def _first(text: Optional[str], limit: int = LINE_CHARS) -> str:
    lines = (text or "").strip().splitlines()
    return lines[0][:limit] if lines else ""


def _speedups(speedups: Optional[dict[str, Any]]) -> str:
    shown = [f"vs {k} {v:.3f}x" for k, v in sorted((speedups or {}).items()) if isinstance(v, (int, float))]
    return ", ".join(shown)


def _shape(m: dict[str, Any]) -> Optional[str]:
    """`label tflops (vs base ratio, ...)`: the interleaved ratio where one was timed, else the
    ratio of the medians."""
    label, tflops = m.get("label"), m.get("tflops")
    if not label or tflops is None:
        return None
    ratios = dict(m.get("baseline_ratios") or {})
    for name, base in (m.get("baselines") or {}).items():
        if name not in ratios and base:
            ratios[name] = tflops / base
    vs = _speedups(ratios)
    return f"{label} {tflops:.4g}" + (f" ({vs})" if vs else "")


def versions_text(versions: Sequence[Any], limit: int = MAX_VERSIONS) -> str:
    shown = list(versions)
    skipped = max(0, len(shown) - limit)
    if skipped:
        shown = shown[:1] + shown[-(limit - 1):]
    lines = []
    for v in shown:
        head = f"- v{v.version} (candidate {v.candidate}): score {_fmt(v.score)}"
        extra = [s for s in (_speedups(v.speedups), _first(v.rationale)) if s]
        lines.append(head + "".join("; " + s for s in extra))
        shapes = [s for m in (v.metrics or [])[:MAX_SHAPES] if (s := _shape(m))]
        if shapes:
            lines.append("  per shape (TFLOP/s): " + "; ".join(shapes))
        if skipped and v.version == shown[0].version:
            lines.append(f"- ... {skipped} versions in between not shown")
    return "\n".join(lines) or "(none)"


def attempts_text(history: Sequence[Any], limit: int = MAX_ATTEMPTS) -> str:
    lines = []
    for r in [r for r in history if not r.accepted][-limit:]:
        status = r.status + (f" at {r.stage}" if getattr(r, "stage", None) else "")
        line = f"- #{r.id} (varied candidate {r.parent}) {r.verdict}, status {status}"
        if r.score is not None:
            line += f", score {_fmt(r.score)}"
        if getattr(r, "incumbent_ratio", None) is not None:
            line += f", {r.incumbent_ratio:.3f}x the best in the interleaved run"
        if r.intervention:
            line += f" [after a supervisor {r.intervention}]"
        if _first(r.message):
            line += f"\n  why: {_first(r.message)}"
        if _first(r.rationale):
            line += f"\n  rationale: {_first(r.rationale)}"
        lines.append(line)
    return "\n".join(lines) or "(none)"


class ModelSupervisor:
    """Writes an intervention's directive with one call to model.* (see the module's docstring)."""

    def __init__(self, cfg: Any, *, completion: Optional[Callable[..., Any]] = None):
        self.model = cfg.model
        if not self.model.name:
            raise ConfigError("search.supervisor=model needs an LLM: choose model=... (or search.supervisor=template)")
        check_credentials(self.model, error=ConfigError)  # a missing key is one line at start, not N fallbacks
        self.timeout_s = float(cfg.search.supervisor_timeout_s)
        self.max_tokens = int(cfg.search.supervisor_max_tokens)
        self.patience = int(cfg.search.stagnation_patience)
        self.prompt = load_prompt(cfg.prompts.supervisor_model)
        self.facts = {"suite": cfg.attention.suite, "num_shapes": len(cfg.attention.shapes),
                      "hardware": cfg.hardware.name, "arch": cfg.hardware.arch}
        self._completion = completion or import_litellm().completion
        install_log_redaction([self.model.api_key_env])

    # -- the prompt ----------------------------------------------------------------------------

    def fields(self, step: Intervention, history: Sequence[Any], versions: Sequence[Any],
               iteration: int) -> dict[str, Any]:
        best = versions[-1]
        target = next((v for v in versions if v.candidate == step.restart_from), None) if step.kind == RESTART else None
        if target is not None:
            move = (f"a restart: the next variations start from the earlier version v{target.version} (candidate "
                    f"{target.candidate}, score {_fmt(target.score)}); a result must still beat the best.")
        else:
            move = (f"a review: the next variations vary the best version v{best.version} (candidate "
                    f"{best.candidate}), in a direction not tried yet.")
        return {**self.facts, "iteration": iteration, "kind": step.kind, "streak": stagnation(history),
                "patience": self.patience, "best_score": _fmt(best.score), "best_version": best.version,
                "restart_version": target.version if target else "n/a",
                "restart_from": target.candidate if target else "n/a",
                "restart_score": _fmt(target.score) if target else "n/a", "move": move,
                "versions": versions_text(versions), "attempts": attempts_text(history), "template": step.directive}

    # -- the call ------------------------------------------------------------------------------

    def write(self, step: Intervention, history: Sequence[Any], versions: Sequence[Any], iteration: int,
              transcript: Optional[Path] = None) -> Written:
        """The model's directive for `step`, or the template's with the reason; never raises."""
        try:
            api_key = check_credentials(self.model)
        except OperatorError as exc:  # the variable was unset after the start
            return self._fallback(step, str(exc))
        secrets = secret_values([self.model.api_key_env]) + ([api_key] if api_key else [])
        tr, tokens, cost = None, 0, 0.0
        try:
            tr = Transcript(transcript, secrets) if transcript is not None else None
            fields = self.fields(step, history, versions, iteration)
            messages = [{"role": "user", "content": render(self.prompt, fields).strip()}]
            kwargs: dict[str, Any] = dict(model=self.model.name, messages=messages,
                                          temperature=self.model.temperature, max_tokens=self.max_tokens,
                                          timeout=self.timeout_s, num_retries=0)  # no retries: the fallback is at hand
            if self.model.api_base:
                kwargs["api_base"] = self.model.api_base
            if api_key:
                kwargs["api_key"] = api_key
            if tr:
                tr.write("meta", operator="supervisor", model=self.model.name, api_base=self.model.api_base,
                         iteration=iteration, kind=step.kind, timeout_s=self.timeout_s, max_tokens=self.max_tokens)
                tr.write("message", **messages[0])
            response = self._completion(**kwargs)
            prompt_t, completion_t = _usage(response)
            tokens, cost = prompt_t + completion_t, response_cost(response, self.model.name)
            text, finish = _reply(response)
            if tr:
                tr.write("message", role="assistant", content=text, finish_reason=finish)
                tr.write("usage", prompt_tokens=prompt_t, completion_tokens=completion_t, cost_usd=cost)
            if finish == "length" or completion_t > self.max_tokens:
                # A directive cut mid-sentence is not one to act on.
                raise _Unusable(f"the reply was cut at search.supervisor_max_tokens={self.max_tokens}")
            if not text.strip():
                raise _Unusable("the model returned an empty reply")
            directive = (f"SUPERVISOR ({step.kind}): the last {fields['streak']} attempts did not beat the best "
                         f"version (score {fields['best_score']}); this is {fields['move']}\n\n{text.strip()}")
            if tr:
                tr.write("stop", reason="written", source="model")
            return Written(redact_text(directive, secrets), "model", None, tokens, cost)
        except Exception as exc:  # whatever went wrong, the search goes on with the template
            what = str(exc) if isinstance(exc, _Unusable) else f"{type(exc).__name__}: {exc}"
            reason = truncate(redact_text(what, secrets), 500)
            with contextlib.suppress(OSError):  # a transcript that cannot be written is no reason to stop
                if tr:
                    tr.write("stop", reason=reason, source="template")
            return self._fallback(step, reason, tokens, cost)

    @staticmethod
    def _fallback(step: Intervention, reason: str, tokens: int = 0, cost: float = 0.0) -> Written:
        note = f"[supervisor: this is the rule-based template; the model call failed: {_first(reason)}]"
        return Written(f"{step.directive}\n\n{note}", "template", reason, tokens, cost)


def _reply(response: Any) -> tuple[str, Optional[str]]:
    """The reply's text and finish reason ("" and None when it has none)."""
    try:
        choice = response.choices[0]
    except (AttributeError, IndexError, TypeError):
        return "", None
    text = getattr(getattr(choice, "message", None), "content", None)
    return (text if isinstance(text, str) else ""), getattr(choice, "finish_reason", None)


def make(cfg: Any) -> Optional[ModelSupervisor]:
    """The model supervisor when the config asks for one (search.supervisor=model under the avo
    strategy, the only one that supervises), else None: the template writes the directives."""
    if cfg.search.strategy != "avo" or cfg.search.supervisor != "model":
        return None
    return ModelSupervisor(cfg)
