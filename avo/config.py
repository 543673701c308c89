"""Structured configs: the schema every composed experiment is checked against.

Registered in Hydra's ConfigStore as ``avo_schema`` and placed first in ``conf/config.yaml``'s
defaults, so a misspelt key or a wrong type in any group file or override is rejected while Hydra
composes, before any work starts. ``validate`` adds the checks a type cannot express.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

# omegaconf's marker for a mandatory value; spelled out so this module (and the evaluator, which
# runs on GPU machines without Hydra) imports neither hydra nor omegaconf.
MISSING: Any = "???"


class ConfigError(ValueError):
    """A user mistake in the composed config; reported as one line, never a traceback."""


@dataclass
class ModelConfig:
    # litellm model id ("anthropic/...", "openai/...", "hosted_vllm/...", "avo-scripted/...");
    # empty means no LLM is configured.
    name: str = ""
    api_base: Optional[str] = None
    # Environment variable holding the key; checked at start so a missing key is one clear line.
    api_key_env: Optional[str] = None
    temperature: float = 1.0
    max_tokens: int = 16000
    timeout_s: float = 600.0
    num_retries: int = 4
    # Prompt caching: auto (cache breakpoints on Anthropic models; OpenAI caches by itself), on, off.
    prompt_cache: str = "auto"
    # For model=scripted: the recorded conversation to replay (path relative to the repo root).
    script: Optional[str] = None


@dataclass
class AgentConfig:
    kind: str = "knob"  # avo | cli | knob
    max_steps: int = 40
    max_tokens: int = 400_000
    wall_time_s: float = 3600.0
    max_cost_usd: float = 20.0
    # agent=cli: the external agent's command line; {prompt_file} and {workspace} are filled in.
    command: Optional[str] = None
    # agent=knob: how many knobs one mutation changes.
    knobs_per_step: int = 1


@dataclass
class PromptsConfig:
    # Paths relative to conf/ (or absolute); rendered with str.format-style fields.
    system: str = "prompts/system.md"
    task: str = "prompts/task.md"
    supervisor: str = "prompts/supervisor.md"
    # search.supervisor=model: what the supervisor model is asked (fields: avo/search/model_supervisor.py).
    supervisor_model: str = "prompts/supervisor_model.md"
    critique: str = "prompts/critique.md"


@dataclass
class KnowledgeSource:
    name: str = MISSING
    kind: str = MISSING  # folder | package | run
    path: Optional[str] = None  # kind=folder: relative to the repo root, or absolute
    package: Optional[str] = None  # kind=package: an importable package name
    optional: bool = True  # a missing optional source is skipped with a warning


@dataclass
class KnowledgeConfig:
    sources: list[KnowledgeSource] = field(default_factory=list)
    top_k: int = 8
    cache_dir: Optional[str] = None  # default: the user's cache dir


@dataclass
class SearchConfig:
    strategy: str = "avo"  # avo | greedy
    max_iterations: int = 10
    max_wall_time_s: Optional[float] = None
    max_cost_usd: Optional[float] = None
    # Stop (exit 3) when this many consecutive iterations of this process fail with the same
    # status and message: a missing tool, a broken seed, a provider that refuses every request.
    # 0 = never.
    stop_after_same_failures: int = 5
    seed: int = 0
    # Accept only when faster than the incumbent by more than this relative margin AND the
    # measured spread of the interleaved ratios.
    min_gain: float = 0.005
    # Supervisor: this many iterations without an acceptance triggers an intervention.
    stagnation_patience: int = 5
    # Who writes an intervention's directive: template (prompts/supervisor.md, no LLM) or model
    # (one call to model.* reading the trajectory; the template is its fallback). The rules decide
    # when to intervene and where to restart from either way.
    supervisor: str = "template"
    # Bounds of that one call: it is not retried (the template is always at hand).
    supervisor_timeout_s: float = 120.0
    supervisor_max_tokens: int = 2000
    # Continue from another run's best version (a run dir); recorded in the lineage.
    transfer_from: Optional[str] = None
    # A resumed run refuses settings that change what its results mean (suite, evaluator,
    # hardware, seed kernel) unless this is true; budgets may always change.
    allow_changed_config: bool = False
    # Candidates proposed and evaluated at once; 0 = one per visible GPU (1 on a CPU).
    parallel: Optional[int] = None


@dataclass
class Shape:
    batch: int = MISSING
    seqlen: int = MISSING
    heads_q: int = MISSING
    heads_kv: int = MISSING
    head_dim: int = MISSING
    causal: bool = False


@dataclass
class AttentionConfig:
    suite: str = MISSING  # the suite's name, as evaluate --suite takes it
    dtype: str = "bfloat16"
    shapes: list[Shape] = field(default_factory=list)


@dataclass
class SeedSourceConfig:
    """Installed modules copied into the seed package at run start (avo/seeds/vendor.py), beside
    the seed_kernel file, which becomes the package's kernel.py and imports them relatively."""
    package: str = MISSING  # the installed package they come from, e.g. flash_attn.cute
    modules: list[str] = field(default_factory=list)  # entry modules; what they import comes too
    into: str = "vendored"  # the subpackage of the seed they are copied into
    distribution: Optional[str] = None  # e.g. flash-attn-4: named in the install hint
    version: Optional[str] = None  # pinned: a run refuses to start on another installed version


@dataclass
class HardwareConfig:
    name: str = MISSING
    arch: str = MISSING  # sm_90a | sm_100a | cpu
    device: str = "cuda"  # cuda | cpu
    # A file under the repo ("kernels/...py"), a package directory (its kernel.py and the modules
    # it imports relatively), or an installed module ("module:pkg.mod").
    seed_kernel: str = MISSING
    seed_note: str = ""
    seed_source: Optional[SeedSourceConfig] = None
    baselines: list[str] = field(default_factory=list)  # cudnn | fa2 | fa3 | fa4


@dataclass
class EvaluatorConfig:
    compile_timeout_s: float = 600.0
    correctness_timeout_s: float = 300.0
    benchmark_timeout_s: float = 1800.0
    # Relative error ||out - ref|| / ||ref|| against the fp32 reference; bf16 attention lands
    # near 3e-3, a 1 % scale error at 1e-2.
    tolerance: float = 6e-3
    warmup_ms: float = 1500.0
    repeats: int = 30
    l2_flush: bool = True
    rotate_inputs: int = 3
    reverify: bool = True
    # How the candidate's worker process is isolated: auto (bubblewrap when it works here, else
    # process isolation), bubblewrap (required), process. The result JSON says which one ran.
    sandbox: str = "auto"
    # On a GPU, reject candidates that launch a library's attention kernel (cuDNN, FlashAttention,
    # torch SDPA, xformers, flashinfer). A seed may wrap one; its result then says own_code: false.
    own_code_only: bool = True
    # GPU: how a timed call is started. "flag": the worker queues its call behind a flag in host
    # memory that the judge writes once the inputs are in place, so the judge's clock times the
    # GPU work alone and bounds what the worker reports. "spin" (the fallback where the flag cannot
    # be used): a spin of launch_cover_cycles is queued in front of the call instead, and a kernel
    # that skips it can under-report by up to that spin.
    gpu_release: str = "flag"
    # Processes + threads a kernel's sandbox may hold (checked whenever its worker is paused; more
    # and it is killed, status crash). H200 evaluations of our kernel stayed under it.
    max_processes: int = 64
    launch_cover_cycles: int = 1_500_000
    # GPU: a timed sample is a block of calls queued behind one release, each call on inputs and
    # into an output of its own, with at least timing_block_ms of work (sized from torch's SDPA on
    # the shape) and at most timing_block_max calls: the judge's cross-process clock resolves
    # ~0.1 ms, so one short call's report could hide a lie that a block's cannot. 0 ms: one call.
    timing_block_ms: float = 4.0
    timing_block_max: int = 16
    # Calls per timed sample, forced (on a CPU too); 0: as above (GPU), one call (CPU).
    timing_block_calls: int = 0


@dataclass
class LoggerConfig:
    kind: str = "wandb"  # wandb | none
    mode: str = "offline"  # offline | online | disabled
    project: str = "avo"
    entity: Optional[str] = None
    tags: list[str] = field(default_factory=list)


@dataclass
class ExperimentConfig:
    name: str = "default"
    model: ModelConfig = field(default_factory=ModelConfig)
    agent: AgentConfig = field(default_factory=AgentConfig)
    prompts: PromptsConfig = field(default_factory=PromptsConfig)
    knowledge: KnowledgeConfig = field(default_factory=KnowledgeConfig)
    search: SearchConfig = field(default_factory=SearchConfig)
    attention: AttentionConfig = field(default_factory=AttentionConfig)
    hardware: HardwareConfig = field(default_factory=HardwareConfig)
    evaluator: EvaluatorConfig = field(default_factory=EvaluatorConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    # Set by `python -m avo`: False prints the plan of the run and exits.
    dry_run: bool = False


def register() -> None:
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(name="avo_schema", node=ExperimentConfig)


_CHOICES = {
    "agent.kind": ("avo", "cli", "knob"),
    "search.strategy": ("avo", "greedy"),
    "search.supervisor": ("template", "model"),
    "hardware.device": ("cuda", "cpu"),
    "logger.kind": ("wandb", "none"),
    "logger.mode": ("offline", "online", "disabled"),
    "evaluator.sandbox": ("auto", "bubblewrap", "process"),
    "evaluator.gpu_release": ("flag", "spin"),
    "model.prompt_cache": ("auto", "on", "off"),
}
_KNOWLEDGE_KINDS = ("folder", "package", "run")
_BASELINES = ("cudnn", "fa2", "fa3", "fa4")


def _get(cfg: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        cfg = getattr(cfg, part)
    return cfg


def validate(cfg: Any) -> None:
    """Checks beyond types. Raises ConfigError with a message naming the key."""
    for key, allowed in _CHOICES.items():
        value = _get(cfg, key)
        if value not in allowed:
            raise ConfigError(f"{key}={value!r} is not one of {', '.join(allowed)}")
    for key in ("search.max_iterations", "search.stop_after_same_failures", "agent.max_steps", "evaluator.warmup_ms",
                "evaluator.timing_block_ms", "evaluator.timing_block_calls"):
        if _get(cfg, key) < 0:
            raise ConfigError(f"{key} must be >= 0, got {_get(cfg, key)}")
    # The evaluator would quietly take 1 for 0 (a measurement needs a call): say so instead.
    for key in ("evaluator.repeats", "evaluator.rotate_inputs", "evaluator.max_processes", "evaluator.timing_block_max"):
        if _get(cfg, key) < 1:
            raise ConfigError(f"{key} must be >= 1, got {_get(cfg, key)}")
    for key in ("evaluator.tolerance", "evaluator.compile_timeout_s", "evaluator.correctness_timeout_s",
                "evaluator.benchmark_timeout_s"):
        if not _get(cfg, key) > 0:
            raise ConfigError(f"{key} must be > 0, got {_get(cfg, key)}")
    if not cfg.attention.shapes:
        raise ConfigError(f"attention={cfg.attention.suite!r} has no shapes")
    for i, s in enumerate(cfg.attention.shapes):
        if min(s.batch, s.seqlen, s.heads_q, s.heads_kv, s.head_dim) <= 0:
            raise ConfigError(f"attention.shapes[{i}] has a non-positive size: {dict(s)}")
        if s.heads_q % s.heads_kv:
            raise ConfigError(
                f"attention.shapes[{i}]: heads_q={s.heads_q} is not a multiple of heads_kv={s.heads_kv}"
            )
    for b in cfg.hardware.baselines:
        if b not in _BASELINES:
            raise ConfigError(f"hardware.baselines: {b!r} is not one of {', '.join(_BASELINES)}")
    for i, src in enumerate(cfg.knowledge.sources):
        if src.kind not in _KNOWLEDGE_KINDS:
            raise ConfigError(
                f"knowledge.sources[{i}].kind={src.kind!r} is not one of {', '.join(_KNOWLEDGE_KINDS)}"
            )
    if cfg.agent.kind == "avo" and not cfg.model.name:
        raise ConfigError("agent=avo needs an LLM: choose model=... (or agent=knob for no LLM)")
    if cfg.search.supervisor == "model":
        if not cfg.model.name:
            raise ConfigError("search.supervisor=model needs an LLM: choose model=... (or search.supervisor=template)")
        if cfg.model.name.startswith("avo-scripted/"):
            # The replay's turns are the agent's conversation; a supervisor call would consume one.
            raise ConfigError("search.supervisor=model cannot use model=scripted (its recorded turns are the "
                              "agent's): use search.supervisor=template")
        for key in ("search.supervisor_timeout_s", "search.supervisor_max_tokens"):
            if _get(cfg, key) <= 0:
                raise ConfigError(f"{key} must be > 0, got {_get(cfg, key)}")
    if cfg.agent.kind == "cli" and not cfg.agent.command:
        raise ConfigError("agent=cli needs agent.command (the external agent's command line)")
