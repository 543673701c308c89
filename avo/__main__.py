"""`python -m avo +experiment=NAME [overrides]`: compose, validate, run the search. Nothing else."""

from __future__ import annotations

import errno
import os
import shutil
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException

from avo import config as avo_config
from avo.errors import SearchStuck, concise_hydra_errors, fail, one_line
from avo.hydra_record import restore_hydra, snapshot
from avo.operators.base import FatalOperatorError
from avo.paths import conf_dir

avo_config.register()


def check_credentials(cfg: DictConfig) -> None:
    env = cfg.model.api_key_env
    uses_model = cfg.agent.kind == "avo" or cfg.search.supervisor == "model"
    if uses_model and env and not os.environ.get(env):
        raise avo_config.ConfigError(
            f"model={cfg.model.name!r} needs the environment variable {env}; set it, or run "
            "without an LLM with agent=knob"
            + (" search.supervisor=template" if cfg.search.supervisor == "model" else "")
        )


def check_agent_command(cfg: DictConfig) -> None:
    """agent=cli runs an external program each iteration: one that is not there would fail every
    iteration alike; say so before the seed is even evaluated."""
    if cfg.agent.kind != "cli" or not cfg.agent.command:
        return
    import shlex

    try:
        first = shlex.split(str(cfg.agent.command))[0]
    except (ValueError, IndexError):
        raise avo_config.ConfigError(f"agent.command={cfg.agent.command!r} is not a command line") from None
    if first.startswith("{"):  # a placeholder: {python} is this interpreter
        return
    if shutil.which(first) is None and not (os.sep in first and os.access(first, os.X_OK)):
        raise avo_config.ConfigError(
            f"agent.command runs {first!r}, which is not on PATH: install it, or set agent.command to your "
            f"agent's command line (or run without an external agent: agent=knob)")


def seed_source_check(source) -> str:
    from avo.search.seed import source_check

    return source_check(source)


def plan(cfg: DictConfig, run_dir: str) -> str:
    shapes = len(cfg.attention.shapes)
    return "\n".join([
        f"experiment   {cfg.name}",
        f"run dir      {run_dir}",
        f"hardware     {cfg.hardware.name} ({cfg.hardware.arch}, {cfg.hardware.device})",
        f"seed kernel  {cfg.hardware.seed_kernel}" + (f"  [{cfg.hardware.seed_note}]" if cfg.hardware.seed_note else ""),
        *([f"seed source  {src.package} [{', '.join(src.modules)}] copied under {src.into}/ at run start from "
           f"{src.distribution or src.package}" + (f" {src.version}" if src.version else "")
           + f"; {seed_source_check(src)}"] if (src := cfg.hardware.get("seed_source")) else []),
        f"suite        {cfg.attention.suite} ({shapes} shapes)",
        f"operator     {cfg.agent.kind}" + (f" with model {cfg.model.name}" if cfg.model.name else ""),
        f"search       {cfg.search.strategy}, {cfg.search.max_iterations} iterations, seed {cfg.search.seed}"
        + (f", supervisor {cfg.search.supervisor}" if cfg.search.strategy == "avo" else ""),
        f"baselines    {', '.join(cfg.hardware.baselines) or 'none'}",
        f"logger       {cfg.logger.kind} ({cfg.logger.mode})",
    ])


_INLINE_KEYS = ("api_key", "key", "token", "secret")


def refuse_inline_keys(cfg: DictConfig, run_dir: str) -> None:
    """A key given on the command line (`+model.api_key=...`) is never used: Hydra has already
    written it into the run's .hydra/ files, so take it out of them and say where keys go."""
    model = cfg.get("model") or {}
    found = [(k, str(model[k])) for k in _INLINE_KEYS if k in model and model[k]]
    if not found:
        return
    hydra_dir = Path(run_dir) / ".hydra"
    for f in hydra_dir.glob("*.yaml") if hydra_dir.is_dir() else ():
        text = f.read_text()
        for _, value in found:
            text = text.replace(value, "<redacted>")
        f.write_text(text)
    env = cfg.model.get("api_key_env") or "the variable model.api_key_env names"
    raise avo_config.ConfigError(
        f"model.{found[0][0]} is not read: put the key in the environment ({env}); "
        f"its value was removed from {hydra_dir}")


def remove_if_untouched(run_dir: str) -> None:
    """Delete a run dir holding nothing but what Hydra wrote for this process (a dry run's)."""
    d = Path(run_dir)
    if d.is_dir() and all(p.name == ".hydra" or p.suffix == ".log" for p in d.iterdir()):
        shutil.rmtree(d, ignore_errors=True)
        # And the folders Hydra made above it (outputs/<name>/), where empty now: never the cwd
        # or anything outside it.
        cwd, up = Path.cwd().resolve(), d.resolve().parent
        while up != cwd and cwd in up.parents:
            try:
                up.rmdir()  # only an empty one
            except OSError:
                break
            up = up.parent


@hydra.main(config_path=str(conf_dir()), config_name="config", version_base="1.3")
def _main(cfg: DictConfig) -> None:
    run_dir = HydraConfig.get().runtime.output_dir
    own_hydra = snapshot(cfg)  # before anything: another start may rewrite .hydra/ meanwhile
    try:
        refuse_inline_keys(cfg, run_dir)
        avo_config.validate(cfg)
        if cfg.dry_run:
            # A plan needs no account: a missing key is said, not fatal, and nothing is left behind.
            print(plan(cfg, run_dir))
            for check in (check_credentials, check_agent_command):
                try:
                    check(cfg)
                except avo_config.ConfigError as exc:
                    print(f"note: {exc}")
            remove_if_untouched(run_dir)
            restore_hydra(run_dir)  # a plan made in a run's dir is not that run's config
            return
        check_credentials(cfg)
        check_agent_command(cfg)
        from avo.search.run import run_search  # heavy imports only when a search runs

        run_search(cfg, run_dir, hydra_files=own_hydra)
    except avo_config.ConfigError as exc:
        restore_hydra(run_dir)  # a refused start leaves the run's record as it was
        remove_if_untouched(run_dir)  # and a new run dir it refused to start is not left behind
        fail(str(exc))
    except FatalOperatorError as exc:
        fail(f"{exc}; the search stopped (nothing of this iteration was recorded): fix it and run the "
             f"same command to resume")
    except SearchStuck as exc:
        fail(f"{exc}; its iterations are recorded in {run_dir}", code=3)
    except OmegaConfBaseException as exc:  # e.g. a mandatory value left unset by an override
        restore_hydra(run_dir)
        remove_if_untouched(run_dir)
        fail(one_line(exc))
    except OSError as exc:
        if exc.errno not in (errno.EROFS, errno.EACCES, errno.EPERM):
            raise
        restore_hydra(run_dir)
        fail(_unwritable(exc, run_dir))


def _unwritable(exc: OSError, run_dir: str) -> str:
    where = exc.filename or run_dir
    return (f"cannot write {where} ({exc.strerror or exc}): the run dir {run_dir} and its lineage/ must be "
            f"writable by this user; `python -m avo.runs show {run_dir}` reads a run without writing")


def main() -> int | None:
    # `avo tool ...` is the agents' tool CLI (agent=cli), not a Hydra run.
    if sys.argv[1:2] == ["tool"]:
        from avo.tool import main as tool_main

        return tool_main(sys.argv[2:])
    # `avo runs ...` is `python -m avo.runs ...`: what a run found.
    if sys.argv[1:2] == ["runs"]:
        from avo.runs import main as runs_main

        return runs_main(sys.argv[2:])
    with concise_hydra_errors():
        _main()
    return None


if __name__ == "__main__":
    sys.exit(main())
