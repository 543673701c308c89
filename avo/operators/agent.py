"""`agent=avo`: the paper's variation operator, a tool-calling loop over `litellm.completion`.

One `propose` is one conversation: the system and task prompts (conf/prompts, rendered with the
run's facts), then model turns and tool results until the model calls `submit` (after one
self-critique, conf/prompts/critique.md) or a limit is hit. The workspace starts as a copy of the
parent version; tools cannot reach outside it.

Limits per variation (agent.*): max_steps (model calls), max_tokens (prompt + completion, summed),
wall_time_s, max_cost_usd (litellm's cost accounting; 0 where a provider has no price). A limit
reached before a submit raises OperatorError: the search records the iteration as an operator
error and moves on. We never submit a half-finished edit on the agent's behalf; an unverified
kernel presented as the agent's choice would be dishonest. The error carries `tokens`, `cost_usd`
and `transcript` attributes so the spend is still accounted.

Retries: litellm's own `num_retries` (immediate for transient API errors, short exponential waits
for rate limits) and, around it, our own backoff for what is still failing (sustained rate limits,
outages): `model.num_retries` more attempts, waits 5 s, 10 s, 20 s... capped at 120 s and by the
wall-time limit. Authentication and bad requests are not retried.

Every message, tool call, tool result, usage and cost is written to the candidate's transcript
(avo/operators/transcript.py), with credentials redacted.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any, Callable, Optional

from avo import package
from avo.config import ConfigError
from avo.operators.base import FatalOperatorError, OperatorError, Proposal, VariationContext
from avo.prompts import load as load_prompt
from avo.prompts import render
from avo.operators.tools import ToolBox, ToolState
from avo.operators.transcript import (Transcript, install_log_redaction, redact_text, secret_values,
                                      truncate)
from avo.operators.workspace import KERNEL_FILE, Workspace

log = logging.getLogger("avo.operators.agent")

NUDGE = ("Continue with the tools (read, edit, compile, test, bench). When your version is correct and "
         "measured, call submit with a rationale.")
# Context kept small: tool results older than the last KEEP_RECENT_RESULTS are cut to OLD_RESULT_CHARS
# before each call (the transcript keeps them whole). Every call re-sends the conversation, so this
# bounds both the context window and the tokens billed per step.
KEEP_RECENT_RESULTS = 8
OLD_RESULT_CHARS = 1500
# The assistant's own old tool-call arguments (a 60 kB write_file) are cut the same way: string
# values longer than this in calls older than the last KEEP_RECENT_RESULTS turns.
OLD_ARGUMENT_CHARS = 400
BACKOFF_BASE_S = 5.0
BACKOFF_CAP_S = 120.0
TRANSCRIPT_NAME = "transcript.jsonl"


# -- prompts ---------------------------------------------------------------------------------------


def _fmt_speedups(result: Any) -> str:
    speedups = getattr(result, "speedups", None) or {}
    shown = [f"{k} {v:.3f}x" for k, v in speedups.items() if v is not None]
    return ", ".join(shown) if shown else "n/a (no baselines measured)"


def prompt_fields(cfg: Any, ctx: VariationContext, kernel_file: str = KERNEL_FILE) -> dict[str, Any]:
    score = getattr(ctx.parent_result, "score", None)
    directive = ctx.directive.strip() if ctx.directive else ""
    return {
        "hardware": cfg.hardware.name, "arch": cfg.hardware.arch, "device": cfg.hardware.device,
        "iteration": ctx.iteration, "strategy": cfg.search.strategy, "suite": cfg.attention.suite,
        "num_shapes": len(cfg.attention.shapes), "parent_id": ctx.parent_id,
        "parent_score": f"{score:.4g}" if score is not None else "n/a",
        "parent_speedups": _fmt_speedups(ctx.parent_result), "kernel_file": kernel_file,
        "directive": ("Supervisor's instruction for this iteration:\n" + directive) if directive else "",
        **{k: v for k, v in (ctx.extra or {}).items() if isinstance(v, (str, int, float))},
    }


# -- credentials and spend -------------------------------------------------------------------------


def check_credentials(model: Any, environ: Optional[dict] = None, error=OperatorError) -> Optional[str]:
    """The API key named by model.api_key_env, or `error` naming the variable when it is unset."""
    env_name = getattr(model, "api_key_env", None)
    if not env_name:
        return None
    value = (os.environ if environ is None else environ).get(env_name, "")
    if not value.strip():
        raise error(f"model={model.name!r} needs the environment variable {env_name}; set it "
                    f"(or choose another model=..., or agent=knob for no LLM)")
    return value


def response_cost(response: Any, model_name: str) -> float:
    """litellm's price for one response; 0 for providers without a price (local, scripted)."""
    if model_name.startswith("avo-scripted/"):
        return 0.0
    try:
        import litellm

        return float(litellm.completion_cost(completion_response=response) or 0.0)
    except Exception:
        return 0.0


def _usage(response: Any) -> tuple[int, int]:
    usage = getattr(response, "usage", None)
    if usage is None:
        return 0, 0
    get = usage.get if isinstance(usage, dict) else lambda k, d=None: getattr(usage, k, d)
    return int(get("prompt_tokens", 0) or 0), int(get("completion_tokens", 0) or 0)


def _field(obj: Any, key: str) -> Any:
    return obj.get(key) if isinstance(obj, dict) else getattr(obj, key, None)


def cache_usage(response: Any) -> tuple[int, int]:
    """(prompt tokens read from the provider's cache, prompt tokens written to it) of one response:
    Anthropic's cache_read/cache_creation_input_tokens, OpenAI's prompt_tokens_details.cached_tokens
    (litellm maps Anthropic's read count there too)."""
    usage = getattr(response, "usage", None)
    if usage is None:
        return 0, 0
    details = _field(usage, "prompt_tokens_details")
    read = _field(usage, "cache_read_input_tokens") or (_field(details, "cached_tokens") if details else 0)
    written = _field(usage, "cache_creation_input_tokens")
    try:
        return int(read or 0), int(written or 0)
    except (TypeError, ValueError):
        return 0, 0


def cache_saving_usd(model_name: str, read_tokens: int) -> Optional[float]:
    """What the cached prompt tokens saved against the full input price (litellm's price map);
    None where the map has no cached price for the model."""
    if not read_tokens:
        return 0.0
    try:
        import litellm

        info = litellm.get_model_info(model_name)
        full, cached = info.get("input_cost_per_token"), info.get("cache_read_input_token_cost")
        return None if full is None or cached is None else read_tokens * (float(full) - float(cached))
    except Exception:
        return None


PROMPT_CACHE_MODES = ("auto", "on", "off")
_CACHING_PROVIDERS = ("anthropic/", "claude", "bedrock/anthropic", "bedrock/us.anthropic", "vertex_ai/claude")


def caching_applies(model_name: str, mode: str) -> bool:
    """Whether requests carry cache breakpoints: `auto` for Anthropic's models (OpenAI caches
    long prefixes by itself, and other servers reject or ignore the markers)."""
    if mode == "off":
        return False
    return mode == "on" or model_name.startswith(_CACHING_PROVIDERS)


def cache_marked(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A copy of `messages` with Anthropic cache breakpoints (litellm passes `cache_control` on a
    text block through): on the system prompt and on the last two user/tool messages, so each
    request reads the prefix the previous one wrote and writes its own new end."""
    out = list(messages)
    marks = [0] if out and out[0].get("role") == "system" else []
    marks += [i for i, m in enumerate(out) if m.get("role") in ("user", "tool")][-2:]
    for i in dict.fromkeys(marks):
        text = out[i].get("content")
        if isinstance(text, str) and text:
            out[i] = {**out[i], "content": [{"type": "text", "text": text, "cache_control": {"type": "ephemeral"}}]}
    return out


def _retry_after(exc: BaseException) -> Optional[float]:
    """Seconds the provider asked us to wait (its Retry-After header, in seconds), if it said."""
    response = getattr(exc, "response", None)
    headers = getattr(response, "headers", None) or {}
    try:
        value = headers.get("retry-after") or headers.get("Retry-After")
        return max(0.0, float(value)) if value is not None else None
    except (TypeError, ValueError, AttributeError):
        return None  # an HTTP date, or no header: our own backoff decides


def _retryable() -> tuple[type, ...]:
    import litellm

    names = ("RateLimitError", "APIConnectionError", "Timeout", "InternalServerError",
             "ServiceUnavailableError", "BadGatewayError")
    return tuple(getattr(litellm, n) for n in names if hasattr(litellm, n))


def _is_bad_request(exc: Exception) -> bool:
    import litellm

    return isinstance(exc, litellm.BadRequestError) and not _is_context_window(exc)


def _is_context_window(exc: Exception) -> bool:
    import litellm

    return isinstance(exc, litellm.ContextWindowExceededError)  # this conversation's, not the config's


def _fatal_message(exc: Exception, model: Any) -> Optional[str]:
    import litellm

    if isinstance(exc, (litellm.AuthenticationError, litellm.PermissionDeniedError)):
        env = getattr(model, "api_key_env", None)
        hint = f"; check the key in {env}" if env else ""
        return f"the provider rejected the credentials for {model.name}{hint}"
    if isinstance(exc, litellm.ContextWindowExceededError):
        return f"the conversation no longer fits {model.name}'s context window"
    if isinstance(exc, litellm.NotFoundError):
        return f"model {model.name!r} was not found at the provider"
    return None


def import_litellm():
    # The price map is bundled with litellm; without this flag its import fetches it from GitHub.
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    import litellm

    litellm.suppress_debug_info = True
    # One INFO line per call ("completion() model=...") drowns the search's own log.
    for name in ("LiteLLM", "LiteLLM Router", "LiteLLM Proxy"):
        logging.getLogger(name).setLevel(logging.WARNING)
    return litellm


# -- the operator ----------------------------------------------------------------------------------


class AvoAgent:
    name = "avo"

    def __init__(self, cfg: Any, run_dir: Optional[Path] = None, *,
                 completion: Optional[Callable[..., Any]] = None,
                 sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.monotonic,
                 knowledge: Optional[Callable[[], Any]] = None):
        self.cfg, self.run_dir = cfg, Path(run_dir) if run_dir is not None else None
        self.model, self.limits = cfg.model, cfg.agent
        if not self.model.name:
            raise ConfigError("agent=avo needs an LLM: choose model=... (or agent=knob for no LLM)")
        check_credentials(self.model, error=ConfigError)
        self.system = load_prompt(cfg.prompts.system)
        self.task = load_prompt(cfg.prompts.task)
        self.critique = load_prompt(getattr(cfg.prompts, "critique", None))
        litellm = import_litellm()
        if self.model.name.startswith("avo-scripted/"):
            from avo.operators import scripted

            if not self.model.script:
                raise ConfigError("model=scripted needs model.script (a JSONL conversation)")
            script = Path(self.model.script)
            if not script.is_absolute():
                from avo.paths import repo_root, resolve

                script = resolve(script, base=repo_root())
            try:
                scripted.install(script, self.model.name)
            except (FileNotFoundError, ValueError) as exc:
                raise ConfigError(str(exc)) from None
        self._completion = completion or litellm.completion
        self.bad_requests: set[str] = set()  # 400s seen in this search (the same one twice is fatal)
        self._sleep, self._clock = sleep, clock
        self._knowledge_factory = knowledge
        install_log_redaction([self.model.api_key_env])

    def _knowledge(self):
        if self._knowledge_factory is not None:
            return self._knowledge_factory()
        return build_knowledge(self.cfg, self.run_dir)

    def propose(self, ctx: VariationContext) -> Proposal:
        api_key = check_credentials(self.model)
        secrets = secret_values([self.model.api_key_env]) + ([api_key] if api_key else [])
        cand_dir = candidate_dir(ctx.run_dir, ctx.iteration)
        transcript = Transcript(cand_dir / TRANSCRIPT_NAME, secrets)
        tools = make_toolbox(self.cfg, ctx, cand_dir, self.critique, self._knowledge)
        run = _Run(self, ctx, tools, transcript, secrets, api_key)
        tools.state.time_left = run.time_left
        return run.loop()


def build_knowledge(cfg: Any, run_dir: Optional[Path]):
    from avo.knowledge import KnowledgeBase

    return KnowledgeBase.from_config(cfg.knowledge, run_dir=run_dir)


def _once(factory: Callable[[], Any]) -> Callable[[], Any]:
    """Build on first call, then reuse: the knowledge base is indexed only in variations that
    search it, and afresh in each (its `run` source is this run's history, which grows)."""
    made: list[Any] = []

    def get():
        if not made:
            made.append(factory())
        return made[0]

    return get


def incumbent_path(ctx: VariationContext, cand_dir: Path) -> Path:
    """The version a candidate must beat: the archive's best, else (no archive) the parent."""
    best = ctx.archive.best() if ctx.archive is not None and hasattr(ctx.archive, "best") else None
    if best is not None and best.path and (Path(ctx.run_dir) / best.path).is_file():
        return Path(ctx.run_dir) / best.path
    path = cand_dir / ("incumbent" + Path(package.file_name(ctx.parent_source)).suffix)
    path.write_text(ctx.parent_source)
    return path


def make_toolbox(cfg: Any, ctx: VariationContext, cand_dir: Path, critique: str,
                 knowledge: Callable[[], Any], share_archive: bool = True) -> ToolBox:
    """The workspace (a copy of the parent version) and the tools over it, for one variation.
    share_archive=False when the tools run in another thread (the archive's SQLite connection
    belongs to the search's thread; the tools then open their own)."""
    ws = Workspace.create(ctx.workspace, ctx.parent_source)
    state = ToolState(workspace=ws, parent_source=ctx.parent_source, parent_id=str(ctx.parent_id),
                      suite=cfg.attention.suite, run_dir=ctx.run_dir, evaluate=ctx.evaluate,
                      lineage=ctx.lineage, archive=ctx.archive if share_archive else None,
                      knowledge=_once(knowledge),
                      parent_path=incumbent_path(ctx, cand_dir), critique=critique or None)
    return ToolBox(state)


def candidate_dir(run_dir: Path, iteration: int) -> Path:
    path = Path(run_dir) / "candidates" / f"{int(iteration):04d}"
    path.mkdir(parents=True, exist_ok=True)
    return path


class _Run:
    """The state of one conversation."""

    def __init__(self, agent: AvoAgent, ctx: VariationContext, tools: ToolBox, transcript: Transcript,
                 secrets: list[str], api_key: Optional[str]):
        self.agent, self.ctx, self.tools, self.transcript = agent, ctx, tools, transcript
        self.secrets, self.api_key = secrets, api_key
        self.steps = self.tokens = 0
        self.cached_tokens = self.cache_written = 0
        self.cost = 0.0
        self.t0 = agent._clock()

    # budgets ------------------------------------------------------------------------------------

    def elapsed(self) -> float:
        return self.agent._clock() - self.t0

    def time_left(self) -> Optional[float]:
        limit = self.agent.limits.wall_time_s
        return None if limit is None else limit - self.elapsed()

    def over_budget(self) -> Optional[str]:
        lim = self.agent.limits
        if self.steps >= lim.max_steps:
            return f"agent.max_steps={lim.max_steps} reached"
        if lim.max_tokens is not None and self.tokens >= lim.max_tokens:
            return f"agent.max_tokens={lim.max_tokens} reached ({self.tokens} tokens)"
        if lim.wall_time_s is not None and self.elapsed() >= lim.wall_time_s:
            return f"agent.wall_time_s={lim.wall_time_s:g} reached ({self.elapsed():.0f} s)"
        if lim.max_cost_usd is not None and self.cost >= lim.max_cost_usd:
            return f"agent.max_cost_usd={lim.max_cost_usd:g} reached (${self.cost:.4f})"
        return None

    def fail(self, reason: str, fatal: bool = False) -> OperatorError:
        reason = redact_text(reason, self.secrets)
        self.transcript.write("stop", reason=reason, submitted=False, fatal=fatal, **self.totals())
        err = (FatalOperatorError if fatal else OperatorError)(reason)
        err.tokens, err.cost_usd, err.transcript = self.tokens, self.cost, str(self.transcript.path)
        return err

    def totals(self) -> dict[str, Any]:
        saving = cache_saving_usd(self.agent.model.name, self.cached_tokens)
        return {"steps": self.steps, "tokens": self.tokens, "cost_usd": round(self.cost, 6),
                "cached_tokens": self.cached_tokens, "cache_written_tokens": self.cache_written,
                "cache_saving_usd": None if saving is None else round(saving, 6),
                "elapsed_s": round(self.elapsed(), 2), "evaluations": self.tools.state.evaluations}

    def budget_note(self) -> str:
        """What is left of the variation's budgets, shown to the model after every turn."""
        lim = self.agent.limits
        parts = [f"{max(0, lim.max_steps - self.steps)} of {lim.max_steps} steps"]
        if lim.max_tokens is not None:
            parts.append(f"{max(0, lim.max_tokens - self.tokens)} tokens")
        if lim.max_cost_usd is not None:
            parts.append(f"${max(0.0, lim.max_cost_usd - self.cost):.2f}")
        left = self.time_left()
        if left is not None:
            parts.append(f"{max(0.0, left) / 60:.0f} min")
        return "[budget left: " + ", ".join(parts) + "]"

    # the model call -----------------------------------------------------------------------------

    def complete(self, messages: list[dict[str, Any]]):
        model = self.agent.model
        if caching_applies(model.name, getattr(model, "prompt_cache", "auto")):
            messages = cache_marked(messages)
        # num_retries=0: the retries are ours (below), with backoff, Retry-After and the wall time;
        # litellm's own would also retry a 400 or a 401 and ignore both.
        kwargs: dict[str, Any] = dict(model=model.name, messages=messages, tools=self.tools.schemas(),
                                      temperature=model.temperature, max_tokens=model.max_tokens,
                                      timeout=model.timeout_s, num_retries=0)
        if model.api_base:
            kwargs["api_base"] = model.api_base
        if self.api_key:
            kwargs["api_key"] = self.api_key
        retryable = _retryable()
        attempts = 1 + max(0, int(model.num_retries))
        for attempt in range(1, attempts + 1):
            left = self.agent.limits.wall_time_s - self.elapsed() if self.agent.limits.wall_time_s else None
            if left is not None:
                if left <= 0:
                    raise self.fail(f"agent.wall_time_s={self.agent.limits.wall_time_s:g} reached before a model call")
                # No call may outlast the variation's wall time (a hanging provider included).
                kwargs["timeout"] = min(float(model.timeout_s), left) if model.timeout_s else left
            try:
                return self.agent._completion(**kwargs)
            except retryable as exc:
                wait = min(BACKOFF_CAP_S, BACKOFF_BASE_S * 2 ** (attempt - 1))
                asked = _retry_after(exc)
                if asked is not None:
                    wait = min(BACKOFF_CAP_S, max(wait, asked))
                left = self.agent.limits.wall_time_s - self.elapsed() if self.agent.limits.wall_time_s else None
                what = redact_text(f"{type(exc).__name__}: {exc}", self.secrets)
                if attempt == attempts or (left is not None and left <= wait):
                    raise self.fail(f"the model call failed after {attempt} attempt(s): {truncate(what, 500)}")
                self.transcript.write("retry", attempt=attempt, wait_s=wait, error=truncate(what, 2000))
                log.warning("model call failed (%s); retrying in %.0f s", type(exc).__name__, wait)
                self.agent._sleep(wait)
            except Exception as exc:
                fatal = _fatal_message(exc, model)
                what = redact_text(f"{type(exc).__name__}: {exc}", self.secrets)
                self.transcript.write("error", error=truncate(what, 4000))
                if fatal is None and _is_bad_request(exc):
                    # A 400 is the request's fault; the same one twice is the configuration's.
                    seen = self.agent.bad_requests
                    if what in seen:
                        fatal = f"the provider refused the same request twice ({truncate(what, 300)}): check model.* settings"
                    seen.add(what)
                raise self.fail(fatal or f"the model call failed: {truncate(what, 500)}",
                                fatal=fatal is not None and not _is_context_window(exc)) from None
        raise AssertionError("unreachable")

    # the loop -----------------------------------------------------------------------------------

    def loop(self) -> Proposal:
        agent, ctx, tr = self.agent, self.ctx, self.transcript
        fields = prompt_fields(agent.cfg, ctx, self.tools.state.workspace.kernel_file)
        messages: list[dict[str, Any]] = [
            {"role": "system", "content": render(agent.system, fields).strip()},
            {"role": "user", "content": render(agent.task, fields).strip()},
        ]
        lim = agent.limits
        tr.write("meta", operator="avo", model=agent.model.name, api_base=agent.model.api_base,
                 iteration=ctx.iteration, parent_id=str(ctx.parent_id), workspace=str(ctx.workspace),
                 limits={"max_steps": lim.max_steps, "max_tokens": lim.max_tokens,
                         "wall_time_s": lim.wall_time_s, "max_cost_usd": lim.max_cost_usd},
                 tools=[t["function"]["name"] for t in self.tools.schemas()])
        for m in messages:
            tr.write("message", **m)
        while True:
            reason = self.over_budget()
            if reason:
                raise self.fail(f"stopped before a submit: {reason}")
            # With cache breakpoints, old results are cut eight at a time: every cut changes the
            # prefix the provider cached, so cutting one per turn would re-bill most of it.
            compact(messages, batch=KEEP_RECENT_RESULTS if caching_applies(
                agent.model.name, getattr(agent.model, "prompt_cache", "auto")) else 1)
            response = self.complete(messages)
            self.steps += 1
            self.tools.state.turn = self.steps
            prompt_t, completion_t = _usage(response)
            read_t, written_t = cache_usage(response)
            cost = response_cost(response, agent.model.name)
            self.tokens += prompt_t + completion_t
            self.cached_tokens += read_t
            self.cache_written += written_t
            self.cost += cost
            try:
                message = _assistant_message(response)
            except OperatorError as exc:  # its tokens were spent all the same: fail() records them
                raise self.fail(str(exc)) from None
            messages.append(message)
            tr.write("message", **message)
            tr.write("usage", step=self.steps, prompt_tokens=prompt_t, completion_tokens=completion_t,
                     cached_tokens=read_t, cache_written_tokens=written_t,
                     cost_usd=cost, total_tokens=self.tokens, total_cost_usd=round(self.cost, 6))
            calls = message.get("tool_calls") or []
            if not calls:
                nudge = NUDGE + "\n" + self.budget_note()
                messages.append({"role": "user", "content": nudge})
                tr.write("message", role="user", content=nudge)
                continue
            for call in calls:
                name, args = call["function"]["name"], call["function"]["arguments"]
                tr.write("tool_call", id=call["id"], name=name, arguments=_loads(args))
                outcome = self.tools.call(name, args)
                first = (outcome.text.splitlines() or [""])[0][:120]
                log.info("iteration %s step %d: %s -> %s", ctx.iteration, self.steps, name,
                         first if outcome.evaluated or not outcome.ok else "ok")
                messages.append({"role": "tool", "tool_call_id": call["id"], "content": outcome.text})
                tr.write("tool_result", id=call["id"], name=name, ok=outcome.ok, evaluated=outcome.evaluated,
                         content=truncate(outcome.text))
                sub = self.tools.state.submission
                if sub is not None:
                    tr.write("submit", rationale=sub.rationale)
                    tr.write("stop", reason="submitted", submitted=True, **self.totals())
                    return Proposal(source=sub.source, rationale=redact_text(sub.rationale, self.secrets),
                                    tokens=self.tokens, cost_usd=self.cost, transcript=str(tr.path))
            # The budgets, after this turn's last result (a message of its own would break the
            # tool-call/result pairing some providers require).
            messages[-1]["content"] = (messages[-1]["content"] or "") + "\n" + self.budget_note()


def compact(messages: list[dict[str, Any]], keep: int = KEEP_RECENT_RESULTS,
            limit: int = OLD_RESULT_CHARS, batch: int = 1, arg_limit: int = OLD_ARGUMENT_CHARS) -> None:
    """Shorten old tool results and the long arguments of old tool calls in place (the transcript
    keeps both whole); the model can re-run a tool to see a result again. `batch`: cut only once
    that many old messages wait to be cut (a provider's prompt cache survives the turns between).
    Idempotent: what was cut is never cut again, so the prefix stays byte-identical."""
    results = [m for m in messages if m.get("role") == "tool"]
    calls = [m for m in messages if m.get("role") == "assistant" and m.get("tool_calls")]
    old_results = [m for m in (results[:-keep] if keep else results) if _long_result(m, limit)]
    old_calls = [m for m in (calls[:-keep] if keep else calls)
                 if any(_cut_arguments(c["function"].get("arguments") or "{}", arg_limit)
                        != (c["function"].get("arguments") or "{}") for c in m["tool_calls"])]
    if not old_results and not old_calls or len(old_results) + len(old_calls) < max(1, batch):
        return
    for m in old_results:
        text = m["content"]
        m["content"] = text[:limit] + f"\n[... {len(text) - limit}{_RESULT_CUT}"
    for m in old_calls:
        for call in m["tool_calls"]:
            call["function"]["arguments"] = _cut_arguments(call["function"].get("arguments") or "{}", arg_limit)


_RESULT_CUT = " characters of this old result elided; call the tool again if you need them]"
_ARG_CUT = " characters elided]"


def _long_result(m: dict[str, Any], limit: int) -> bool:
    text = m.get("content")
    return isinstance(text, str) and len(text) > limit and not text.endswith(_RESULT_CUT)


def _cut_arguments(text: str, limit: int) -> str:
    """Old tool-call arguments with long string values elided; still the JSON object a provider
    expects to see back."""
    try:
        args = json.loads(text)
    except (TypeError, json.JSONDecodeError):
        return text if len(text) <= limit else json.dumps({"elided": f"{len(text)} characters of arguments"})
    if not isinstance(args, dict):
        return text
    changed = False
    out = {}
    for k, v in args.items():
        if isinstance(v, str) and len(v) > limit and not v.endswith(_ARG_CUT):
            v, changed = v[:limit] + f"[... {len(v) - limit}{_ARG_CUT}", True
        out[k] = v
    return json.dumps(out) if changed else text


def _loads(text: str) -> Any:
    try:
        return json.loads(text) if text else {}
    except (TypeError, json.JSONDecodeError):
        return text


def _assistant_message(response: Any) -> dict[str, Any]:
    """The assistant turn as a plain dict, in the OpenAI shape litellm accepts back."""
    try:
        msg = response.choices[0].message
    except (AttributeError, IndexError, TypeError):
        raise OperatorError("the model returned no message") from None
    content = getattr(msg, "content", None)
    calls = []
    for i, c in enumerate(getattr(msg, "tool_calls", None) or []):
        fn = c.function if not isinstance(c, dict) else c["function"]
        get = (lambda o, k: o[k]) if isinstance(fn, dict) else getattr
        call_id = (c.get("id") if isinstance(c, dict) else getattr(c, "id", None)) or f"call_{i}"
        calls.append({"id": call_id, "type": "function",
                      "function": {"name": get(fn, "name"), "arguments": get(fn, "arguments") or "{}"}})
    out: dict[str, Any] = {"role": "assistant", "content": content if content else (None if calls else "")}
    if calls:
        out["tool_calls"] = calls
    return out


def make(cfg: Any, run_dir: Optional[Path] = None) -> AvoAgent:
    return AvoAgent(cfg, run_dir)
