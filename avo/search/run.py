"""`run_search(cfg, run_dir)`: wire the composed config to the engine and run (or resume) a search.

Everything of a run lives in its run dir (Hydra's `hydra.run.dir`):
    lineage/            git repo, one commit per accepted version (kernel.py; README.md)
    archive.sqlite      tables candidates (one row per iteration), versions, meta
    candidates/NNNN/    kernel.py, workspace/, transcript, proposal.json (a copy for people), supervisor.jsonl
                        (the supervisor model's call) (0000 = the seed)
    results/NNNN/       proposal.json, eval.json, confirm.json, supervisor.json (search.supervisor=model):
                        the search's own records, signed (HMAC) and bound to the kernel's bytes;
                        nothing else is believed on resume
    .avo/secret         the run's HMAC key (0600); an evaluator must keep candidates away from it
    metrics.jsonl       per-iteration metrics (always); console.log: the progress lines
    events.jsonl        evaluation starts/ends, starts/stops of the process (for audits and tests)
    wandb/, wandb_id    the W&B run (offline by default) and its id, kept across resumes
    .hydra/, *.log      Hydra's record of the composed config and the log
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

from avo import prompts, stopping, suites
from avo.config import ConfigError, EvaluatorConfig
from avo.hydra_record import keep_hydra
from avo.lineage import Lineage
from avo.search import seed as seeds
from avo.search.budgets import Budgets
from avo.search.engine import Engine, EvaluateFn, Outcome
from avo.search.recovery import prepare_archive
from avo.search.strategies import make_strategy

DEFAULT_STAGES = ("compile", "correctness", "benchmark", "reverify")
LOCKFILE = ".avo.lock"


def _plain(node: Any) -> Any:
    """A DictConfig (Hydra) or a dataclass as plain dicts/lists."""
    try:
        from omegaconf import OmegaConf

        if OmegaConf.is_config(node):
            return OmegaConf.to_container(node, resolve=True)
    except ImportError:
        pass
    from dataclasses import asdict, is_dataclass

    return asdict(node) if is_dataclass(node) else node


def evaluator_settings(cfg: Any) -> EvaluatorConfig:
    return EvaluatorConfig(**_plain(cfg.evaluator))


def bind_evaluator(cfg: Any, evaluate: Optional[EvaluateFn] = None, *,
                   hide: Sequence[str | Path] = ()) -> EvaluateFn:
    """The evaluator with this run's suite, device, settings and baselines filled in.

    A confirmation run (one with an incumbent) times no baselines: only the ratio matters there.
    Its `slots` attribute is how many evaluations it runs at once (the pool's GPUs, else 1).
    `hide`: paths no kernel's process of the real evaluator may see (build_engine: the run dir,
    with its secret, archive, lineage and every other candidate's files).
    """
    errors: tuple[type[BaseException], ...] = ()
    extra: dict[str, Any] = {}
    # A pool's `evaluate` handed in (DevicePool(...).evaluate) runs as many at once as it has GPUs.
    slots = int(getattr(getattr(evaluate, "__self__", None), "size", 1) or 1)
    if evaluate is None:  # the real one, imported only when needed
        from avo.evaluate.api import EvaluatorError, UsageError, evaluate

        errors = (EvaluatorError, UsageError)
        if hide:
            extra["hide"] = tuple(str(p) for p in hide)
        _check_sandbox(str(cfg.evaluator.sandbox))
        if cfg.hardware.device == "cuda":
            # Each evaluation pinned to one free GPU, and a per-GPU lock file so that two jobs on a
            # node never time on the same GPU at once.
            from avo.evaluate.pool import DevicePool

            try:
                pool = DevicePool(evaluate=evaluate)
            except ValueError as exc:  # no GPU visible
                raise ConfigError(f"the evaluator cannot run: {exc}") from None
            evaluate, slots = pool.evaluate, pool.size
    shapes = suites.from_config(cfg.attention)
    settings = evaluator_settings(cfg)
    device, baselines = cfg.hardware.device, tuple(cfg.hardware.baselines)

    def bound(kernel, *, suite: Optional[Sequence] = None, incumbent=None, stages: Optional[Sequence[str]] = None,
              timeout: Optional[float] = None, allow_library: bool = False, progress=None):
        more = dict(extra)
        if allow_library and errors:  # the real evaluator (an injected one need not know the rule)
            more["allow_library"] = True
        if progress is not None and errors:
            more["progress"] = progress
        try:
            return evaluate(kernel, shapes if suite is None else suite, device=device, settings=settings,
                            incumbent=incumbent, baselines=() if incumbent is not None else baselines,
                            timeout=timeout, stages=tuple(stages or DEFAULT_STAGES), **more)
        except errors as exc:  # this machine cannot evaluate at all (no GPU for device=cuda, ...)
            raise ConfigError(f"the evaluator cannot run: {exc}") from None

    bound.slots = slots  # type: ignore[attr-defined]
    return bound


def _check_sandbox(mode: str) -> None:
    """Say once, before a search starts, when its kernels will not run in bubblewrap: without it a
    kernel runs as the search's own user and can read and write the run dir."""
    import sys

    from avo.evaluate import sandbox

    try:
        isolation = sandbox.choose(mode)
    except sandbox.SandboxError as exc:
        raise ConfigError(str(exc)) from None
    if isolation.kind != "bubblewrap":
        print(f"avo: warning: kernels run with process isolation only ({isolation.detail}); a hostile kernel "
              f"could tamper with the run dir: apt-get install bubblewrap", file=sys.stderr)


def parallelism(search: Any, evaluate: EvaluateFn) -> int:
    """`search.parallel`: 0 means one candidate per evaluation slot (GPU); None (the default) means
    that too inside a Slurm job holding several GPUs (a whole node, slurm_b200_node), else 1."""
    slots = max(1, int(getattr(evaluate, "slots", 1)))
    k = getattr(search, "parallel", None)
    if k is None:
        k = slots if os.environ.get("SLURM_JOB_ID") and slots > 1 else 1
    k = int(k)
    if k < 0:
        raise ConfigError(f"search.parallel must be >= 0 (0 = one per visible GPU), got {k}")
    if k == 1 and slots > 1:
        # A whole node (slurm_b200_node) evaluating one candidate at a time: say so once.
        print(f"avo: note: {slots} GPUs are visible but search.parallel=1 evaluates one candidate at a time; "
              f"search.parallel=0 uses all of them")
    return k or slots


def supervisor_template(cfg: Any) -> Optional[str]:
    """conf/prompts/supervisor.md (or the configured file); None: the supervisor's built-in text."""
    return prompts.load(cfg.prompts.supervisor, required=False) or None


def build_engine(cfg: Any, run_dir: str | Path, *, evaluate: Optional[EvaluateFn] = None, operator=None,
                 logger=None, console: bool = True) -> Engine:
    from avo.logging import build_logger
    from avo.operators.registry import make_operator
    from avo.search import model_supervisor

    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    strategy = make_strategy(cfg.search, supervisor_template(cfg) if cfg.search.strategy == "avo" else None)
    operator = operator or make_operator(cfg, run_dir)
    supervisor = model_supervisor.make(cfg)  # None unless search.supervisor=model
    info = {"name": cfg.name, "strategy": strategy.name, "operator": operator.name,
            "suite": cfg.attention.suite, "device": cfg.hardware.device, "seed_kernel": cfg.hardware.seed_kernel}
    bound = bind_evaluator(cfg, evaluate, hide=(run_dir,))
    return Engine(run_dir, strategy=strategy, operator=operator, evaluate=bound,
                  budgets=Budgets.from_config(cfg.search), seed=int(cfg.search.seed),
                  logger=logger if logger is not None else build_logger(cfg, run_dir, console=console),
                  config=_plain(cfg), info=info, parallel=parallelism(cfg.search, bound), supervisor=supervisor)


@contextlib.contextmanager
def exclusive(run_dir: str | Path) -> Iterator[None]:
    """One search per run dir. The lock is the kernel's (flock), so a process killed with -9 leaves
    none behind; holding it also makes any git lock left in the lineage provably stale."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir / LOCKFILE, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise ConfigError(f"{holder} is already running a search in {run_dir}; wait for it, "
                              "or choose another hydra.run.dir") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} on {socket.gethostname()}")
        handle.flush()
        Lineage.of_run(run_dir).clear_stale_lock()
        yield


def run_search(cfg: Any, run_dir: str | Path, *, evaluate: Optional[EvaluateFn] = None,
               hydra_files: Optional[dict[str, str]] = None) -> Outcome:
    """`hydra_files`: this start's own .hydra/ files (avo.hydra_record.snapshot), kept as the
    run's record once the start is let run."""
    with exclusive(run_dir):
        return _run_search(cfg, run_dir, evaluate=evaluate, hydra_files=hydra_files)


# What a run's results depend on, recorded by its first start and compared on every resume.
RESULT_SETTINGS = ("attention", "evaluator", "hardware")


# Inside those, words that only describe (a resume may reword them).
DESCRIPTIVE = {"hardware": ("seed_note",)}


def results_config(cfg: Any) -> dict[str, Any]:
    out = {key: _plain(cfg[key] if isinstance(cfg, dict) else getattr(cfg, key)) for key in RESULT_SETTINGS}
    for key, words in DESCRIPTIVE.items():
        if isinstance(out.get(key), dict):
            for w in words:
                out[key].pop(w, None)
    return out


def _changes(old: Any, new: Any, path: str = "") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        return [c for k in sorted(set(old) | set(new), key=str)
                for c in _changes(old.get(k), new.get(k), f"{path}.{k}" if path else str(k))]
    return [] if old == new else [f"{path}: {old!r} -> {new!r}"]


def check_resume(cfg: Any, engine: Any, rebuilt: bool = False) -> None:
    """A new run records what its results depend on; a resume must not change it unnoticed (nor
    one whose archive is being rebuilt: its recorded settings come back from results/run.json)."""
    now = results_config(cfg)
    recorded = engine.archive.get_meta("results_config")
    if recorded is None or (engine.archive.best() is None and not rebuilt):
        engine.set_meta(results_config=now)
        return
    changes = _changes(recorded, now)
    if not changes:
        return
    if not bool(getattr(cfg.search, "allow_changed_config", False)):
        more = f" (+{len(changes) - 3} more)" if len(changes) > 3 else ""
        raise ConfigError(f"this run was started with other settings that change its results: "
                          f"{'; '.join(c[:120] for c in changes[:3])}{more}; resume with the run's own "
                          f"settings, use a new hydra.run.dir, or pass search.allow_changed_config=true")
    engine.set_meta(results_config=now, results_config_changed=changes)


def _run_search(cfg: Any, run_dir: str | Path, *, evaluate: Optional[EvaluateFn] = None,
                hydra_files: Optional[dict[str, str]] = None) -> Outcome:
    rebuilt = prepare_archive(run_dir)
    if rebuilt:
        print(f"avo: {rebuilt}")
    engine = build_engine(cfg, run_dir, evaluate=evaluate)
    if rebuilt:
        engine.record_event(event="archive-rebuilt", reason=rebuilt)
    stopping.reset()
    try:
        check_resume(cfg, engine, rebuilt=bool(rebuilt))
        keep_hydra(run_dir, hydra_files)
        with stopping.handlers():
            # The seed is read only by a new run; a resumed one continues from its own lineage.
            return engine.run(lambda: seeds.load(cfg.hardware.seed_kernel, cfg.search.transfer_from,
                                                 cfg.hardware.get("seed_source")))
    except KeyboardInterrupt:
        print(f"avo: interrupted; re-run the same command with hydra.run.dir={run_dir} to resume")
        raise SystemExit(130) from None
    except stopping.SearchStopped as exc:
        # Preemption, a requeue, a time limit: not a failure. What was in flight is redone on resume.
        done = engine.archive.count()
        engine.stopped(str(exc))
        print(f"avo: stopped by {exc}: {done} iterations recorded, the one in flight was not; "
              f"the same command with hydra.run.dir={run_dir} resumes")
        if os.environ.get("SUBMITIT_FOLDER"):
            # A submitit job must not report a result now: the multirun would take the search as
            # finished while Slurm reruns the job (requeue, preemption). Without a result the
            # rerun's is the job's; after scancel, the job is cancelled, as it should be.
            raise SystemExit(0)
        best = engine.archive.best()
        return Outcome(f"stopped by {exc}", done, engine.archive.totals()["accepted"], len(engine.archive.versions()),
                       best.score if best else None, best.sha if best else None, True)
    finally:
        engine.archive.close()


__all__ = ["run_search", "build_engine", "bind_evaluator", "ConfigError"]
