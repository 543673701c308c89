"""The search engine: one crash-safe, resumable loop shared by every strategy.

Each iteration n leaves its work step by step (the proposal, then its evaluation, then its
confirmation, then the lineage commit) and ends with ONE archive transaction. A run killed at any
moment resumes at iteration count+1 and re-uses whatever that iteration had already finished, so
no finished evaluation is repeated and no iteration number is reused. The evaluate function is
injected (the real evaluator in avo.search.run, fakes in the tests).

The candidate's kernel is hostile code that runs as the same user, so nothing the engine decides
is read back from a file a candidate could have rewritten: the work of iteration n is recorded in
`results/<n>/` as signed records (avo.search.results: proposal.json with the submitted source,
eval.json, confirm.json, each bound to the exact kernel bytes), and `candidates/<n>/` holds the
kernel file the evaluator is given (checked, and rewritten if changed, before each use), the
operator's workspace and transcript, and a copy of the proposal for people (never read back).
The kernel file of every archived version is checked against its recorded hash before it is used
and restored from its lineage commit if something rewrote it.

With a model supervisor (search.supervisor=model), an intervention's directive is written by one
model call when the iteration is planned and signed at once into results/<n>/supervisor.json: a
resume reuses it (even after a crash mid-proposal) and never asks the model again for iteration n.

With `parallel` = k > 1 the engine works in rounds of k iterations: it proposes them at once
(operator calls in threads, each with its own workspace, iteration number and RNG stream, all
varying the same parent), evaluates them at once (on CUDA the bound evaluator is a DevicePool, so
they spread over the GPUs), then decides them one by one in iteration order: screen, then the
interleaved confirmation against the best of that moment (an earlier acceptance in the round
raises the bar for the later ones), commit, record. Every step is still saved per candidate, so
a killed round loses at most its k in-flight steps; rows stay contiguous.
"""

from __future__ import annotations

import inspect
import json
import os
import random
import threading
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Callable, Optional

from avo import package, stopping
from avo.archive import Archive, Candidate, Version, source_hash
from avo.config import ConfigError
from avo.evaluate.result import EvalResult
from avo.lineage import Lineage, LineageError
from avo.logging.base import MultiLogger, NullLogger
from avo.operators.base import FatalOperatorError, Operator, OperatorError, Proposal, VariationContext
from avo.operators.transcript import REDACTED, secret_values
from avo.search import results
from avo.search.acceptance import Verdict
from avo.errors import SearchStuck
from avo.search.budgets import Budgets, Usage, exhausted, remaining, same_failures
from avo.search.seed import Seed
from avo.search.strategies import Plan, Strategy
from avo.search.supervisor import Intervention
from avo.search.threads import concurrently

# evaluate(kernel_path, *, incumbent=None, stages=None) -> EvalResult, suite/device/settings bound.
EvaluateFn = Callable[..., EvalResult]

CANDIDATES = "candidates"
EVENTS = "events.jsonl"
# The confirmation decides: it re-verifies every shape on fresh inputs after its own timing too
# (acceptance.confirm refuses one that did not).
CONFIRM_STAGES = ("compile", "correctness", "benchmark", "reverify")
OPERATOR_ERROR = "operator_error"
DUPLICATE = "duplicate"
# The archive meta a rebuild must not lose (results/run.json, signed).
RUN_STATE = ("results_config", "results_config_changed", "elapsed_s", "seed_origin")
# What a saved proposal must hold for a resume to use it.
PROPOSAL_FIELDS = {"parent", "operator", "intervention", "directive", "rationale", "tokens", "cost_usd",
                   "transcript", "error", "propose_s", "kernel_sha256", "source"}


def cand_dir(run_dir: Path, cid: int) -> Path:
    return Path(run_dir) / CANDIDATES / f"{cid:04d}"


write_atomic = results.write_atomic  # all or nothing; never writes through a planted symlink


def _accepts(fn: Any, name: str) -> bool:
    """Whether `fn` takes the keyword `name` (an injected evaluator need not know the live display)."""
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
    return name in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())


def _first_line(text: Optional[str]) -> str:
    lines = (text or "").strip().splitlines()
    return lines[0] if lines else ""


@dataclass
class Outcome:
    stop_reason: str
    iterations: int
    accepted: int
    versions: int
    best_score: Optional[float]
    best_sha: str
    resumed: bool


class Engine:
    def __init__(self, run_dir: str | Path, *, strategy: Strategy, operator: Operator, evaluate: EvaluateFn,
                 budgets: Budgets, seed: int = 0, logger: MultiLogger | None = None,
                 config: dict[str, Any] | None = None, info: dict[str, Any] | None = None,
                 clock: Callable[[], float] = time.monotonic, parallel: int = 1, supervisor: Any = None):
        if parallel < 1:
            raise ConfigError(f"search.parallel must be >= 1 here, got {parallel}")
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.strategy, self.operator, self.evaluate = strategy, operator, evaluate
        self.budgets, self.seed = budgets, seed
        self.logger = logger or NullLogger()
        self.config, self.info = config or {}, dict(info or {})
        self.clock = clock
        self.parallel = int(parallel)
        # Writes intervention directives (avo.search.model_supervisor); None: the strategy's template.
        self.supervisor = supervisor
        self._takes_progress = _accepts(evaluate, "progress")
        self._events_lock = threading.Lock()
        self.archive = Archive(self.run_dir)
        self.lineage = Lineage.of_run(self.run_dir)
        self._key = results.secret(self.run_dir)  # read once: what a candidate writes later cannot change it
        # Credentials of this environment, kept out of every record whatever a candidate printed.
        self._secrets = secret_values()
        self._t0 = clock()
        self._restore_run_state()
        self._elapsed0 = float(self.archive.get_meta("elapsed_s", 0.0))

    # -- bookkeeping ---------------------------------------------------------------------------

    def elapsed(self) -> float:
        return self._elapsed0 + (self.clock() - self._t0)

    def usage(self) -> Usage:
        return Usage(self.archive.count(), self.elapsed(), self.archive.totals()["cost_usd"])

    def set_meta(self, **items: Any) -> None:
        """Run state in the archive, and signed beside the results so a rebuild keeps it."""
        self.archive.set_meta(**items)
        self._save_run_state()

    def _save_run_state(self) -> None:
        state = {k: v for k in RUN_STATE if (v := self.archive.get_meta(k)) is not None}
        results.sign(results.run_state_path(self.run_dir), state, key=self._key, kind="run", candidate=-1,
                     kernel_sha256=None)

    def _restore_run_state(self) -> None:
        """An archive that lost its run state (rebuilt, or new beside old results) takes it back
        from the signed copy; a missing or forged one is ignored."""
        if self.archive.get_meta("results_config") is not None:
            return
        try:
            saved = results.read(results.run_state_path(self.run_dir), key=self._key, kind="run", candidate=-1)
        except results.Rejected:
            return
        items = {k: v for k, v in saved.result.items() if k in RUN_STATE}
        if items:
            self.archive.set_meta(**items)

    def record_event(self, **payload: Any) -> None:
        """An event of the run from outside the engine (events.jsonl)."""
        self._event(**payload)

    def _event(self, **payload: Any) -> None:
        with self._events_lock, (self.run_dir / EVENTS).open("a") as f:
            f.write(json.dumps({"time": round(time.time(), 3), "pid": os.getpid(), **payload}) + "\n")

    def _rel(self, path: Path) -> str:
        return str(path.relative_to(self.run_dir))

    def _load(self, path: Path, kind: str, cid: int, sha: Optional[str] = None) -> Optional[results.Record]:
        """A record this search signed (about kernel bytes `sha`, when given); else None, noted
        in the events when a file was there but is not to be believed."""
        if not (path.exists() or path.is_symlink()):
            return None
        try:
            record = results.read(path, key=self._key, kind=kind, candidate=cid)
            if sha is not None and record.kernel_sha256 != sha:
                raise results.Rejected("it is about other kernel bytes")
            return record
        except results.Rejected as exc:
            self._event(event="rejected", file=self._rel(path), reason=str(exc))
            return None

    def _restore(self, path: Path, data: str | bytes, what: str, **event: Any) -> None:
        """Rewrite a file something else changed, and say so."""
        write_atomic(path, data)
        self._event(event="restored", file=self._rel(path), what=what, reason="the file had been modified", **event)
        self.logger.message(f"warning: {self._rel(path)} ({what}) had been modified on disk; restored")

    def _pin(self, kernel: Path, source: str, sha: str, what: str) -> None:
        """Make `kernel` hold exactly the submitted `source` (hash `sha`) before it is used."""
        if results.file_digest(kernel) != sha:
            self._restore(kernel, source, what)

    def _version_source(self, v: Version) -> str:
        """The kernel of an archived version, checked against its recorded hash before any use;
        a file something rewrote is restored from the version's lineage commit."""
        path = self.run_dir / v.path
        data = results.read_regular(path)
        if data is not None and results.digest(data) == v.source_hash:
            return data.decode()
        try:
            data = self.lineage.blob(v.sha)
        except LineageError:
            data = None
        if data is None or results.digest(data) != v.source_hash:
            raise ConfigError(f"the kernel of version {v.version} ({v.path}) was modified on disk and lineage "
                              f"commit {v.sha[:10]} does not hold it either: this run dir cannot be trusted")
        self._restore(path, data, f"version {v.version}", version=v.version, sha=v.sha)
        return data.decode()

    def _blob_digest(self, sha: str) -> Optional[str]:
        try:
            return results.digest(self.lineage.blob(sha))
        except LineageError:
            return None

    def _lineage_commit(self, cid: int, source: str, rationale: str, trailers: dict[str, object],
                        **kw: Any) -> str:
        """The lineage commit of candidate `cid` holding exactly `source`: the one a run killed after
        committing (before its archive row) left, else a new one; verified either way."""
        h = source_hash(source)
        found = self.lineage.find_candidate(cid)
        if found is not None:
            if self._blob_digest(found.sha) == h:
                return found.sha
            self._event(event="rejected", file=f"lineage@{found.sha}", reason=f"claims candidate {cid} "
                        "but holds another kernel")
        sha = self.lineage.commit(source, rationale, trailers, **kw)
        if self._blob_digest(sha) != h:
            raise ConfigError(f"lineage commit {sha[:10]} of candidate {cid} does not hold the kernel that was "
                              f"evaluated: something else is writing into {self.lineage.path}")
        return sha

    def _redact(self, text: Optional[str]) -> Optional[str]:
        """`text` without the values of this environment's credentials (exact values only: a
        pattern would also eat ordinary words of a rationale)."""
        if text:
            for value in self._secrets:
                text = text.replace(value, REDACTED)
        return text

    def _scrub(self, result: EvalResult) -> EvalResult:
        """The evaluator's free text can carry what a candidate printed: no credential of ours."""
        result.message = self._redact(result.message)
        result.notes = [self._redact(str(n)) for n in result.notes or []]
        result.incumbent_status = self._redact(result.incumbent_status)
        return result

    def _evaluate(self, cid: int, kind: str, kernel: Path, source: str, sha: str,
                  **kwargs: Any) -> tuple[EvalResult, float]:
        """Run (or, after a crash, re-read) one evaluation of exactly `source` (hash `sha`), kept
        as a signed record in results/<cid>/ (eval.json; confirm.json for a confirmation)."""
        out = results.path(self.run_dir, cid, "confirm" if kind == "confirm" else "eval")
        saved = self._load(out, kind, cid, sha)
        if saved is not None:
            try:
                return EvalResult.from_dict(saved.result), 0.0
            except (TypeError, ValueError, KeyError, AttributeError):  # ours, but of another schema
                self._event(event="rejected", file=self._rel(out), reason="an EvalResult of another schema")
        self._pin(kernel, source, sha, f"candidate {cid}")
        self._event(event="evaluate", candidate=cid, kind=kind, phase="start")
        t = self.clock()
        if self._takes_progress:
            t0 = time.monotonic()
            kwargs["progress"] = lambda stage, shape: self.logger.status(
                {"iteration": cid, "max_iterations": self.budgets.max_iterations, "kind": kind, "stage": stage,
                 "shape": shape, "elapsed_s": time.monotonic() - t0})
        result = self._scrub(self.evaluate(kernel, **kwargs))
        seconds = self.clock() - t
        if result.status == "crash" and any(s in (result.message or "") for s in ("SIGTERM", "SIGUSR2", "SIGINT")):
            # Slurm signals every process of the job: the child may have died of the signal that
            # is stopping this search, a moment before our own handler ran. Not the kernel's fault.
            stopping.requested.wait(1.0)
        stopping.check()  # a search that is stopping records and signs nothing more
        results.sign(out, result.to_dict(), key=self._key, kind=kind, candidate=cid, kernel_sha256=sha)
        self._event(event="evaluate", candidate=cid, kind=kind, phase="done", status=result.status)
        return result, seconds

    # -- the run -------------------------------------------------------------------------------

    def stopped(self, why: str) -> None:
        """Told to stop (a signal): say so in the run's files and close the loggers."""
        self._event(event="stop", reason=f"signal: {why}")
        self.logger.finish({"stopped": why, "done": self.archive.count(), "elapsed_s": self.elapsed()})

    def run(self, seed: Seed | Callable[[], Seed]) -> Outcome:
        """Run until a budget ends it; `seed` (or a function giving it) is used only by a new run."""
        best = self.archive.best()
        resumed = best is not None
        self.info.update(resumed=resumed, done=self.archive.count(), max_iterations=self.budgets.max_iterations,
                         run_dir=str(self.run_dir), parallel=self.parallel)
        if resumed:  # what the progress display shows before this start's first iteration ends
            self.info.update(elapsed_s=self.elapsed(), best_score=best.score, best_speedups=best.speedups or {},
                             **{f"total_{k}": v for k, v in self.archive.totals().items() if k != "accepted"})
        self.logger.start(self.config, self.info)
        self._event(event="start", resumed=resumed, done=self.archive.count())
        self._ensure_seed(seed)
        first = self.archive.count() + 1  # a resumed run is judged by what it does from now on
        while (reason := exhausted(self.budgets, self.usage())) is None:
            # Wall time and cost are checked between rounds; the iteration cap bounds the last one.
            done = self.archive.count()
            try:
                self.round(list(range(done + 1, done + 1 + min(self.parallel, self.budgets.max_iterations - done))))
            except FatalOperatorError as exc:
                self._event(event="stop", reason=f"fatal: {self._redact(str(exc))}")
                self.logger.finish({"stopped": "fatal", "done": self.archive.count(), "elapsed_s": self.elapsed()})
                raise
            k = self.budgets.stop_after_same_failures
            recent = [(c.status, c.message) for c in self.archive.candidates(limit=k) if c.id >= first] if k else []
            if (stuck := same_failures(recent, k)) is not None:
                stuck = self._redact(stuck)
                self.set_meta(elapsed_s=self.elapsed())
                self._event(event="stop", reason=f"stuck: {stuck}")
                self.logger.finish({"stopped": "stuck", "reason": stuck, "done": self.archive.count(),
                                    "elapsed_s": self.elapsed()})
                raise SearchStuck(stuck)
        self.set_meta(elapsed_s=self.elapsed())
        best = self.archive.best()
        totals = self.archive.totals()
        outcome = Outcome(reason, self.archive.count(), totals["accepted"], len(self.archive.versions()),
                          best.score, best.sha, resumed)
        self._event(event="stop", reason=reason)
        self.logger.finish({**asdict(outcome), "cost_usd": totals["cost_usd"], "tokens": totals["tokens"],
                            "elapsed_s": self.elapsed(),
                            "best_path": str(self.run_dir / best.path) if best.path else None})
        return outcome

    def _ensure_seed(self, seed: Seed | Callable[[], Seed]) -> None:
        if self.archive.best() is not None:
            return
        seed = seed() if callable(seed) else seed
        source, h = seed.source, source_hash(seed.source)
        kernel = cand_dir(self.run_dir, 0) / package.file_name(source)
        if results.file_digest(kernel) != h:  # new, or the seed was changed
            write_atomic(kernel, source)
        # A seed may wrap a library's attention (the B200 FA4 seed): it runs, its result says
        # own_code false, and no candidate that still calls the library can be accepted after it.
        result, _ = self._evaluate(0, "seed", kernel, source, h, allow_library=True)
        if not result.ok or result.score is None:
            out = results.path(self.run_dir, 0, "eval")
            failed = out.with_name("eval.failed.json")
            os.replace(out, failed)  # a re-run evaluates it afresh
            raise ConfigError(f"the seed kernel ({seed.origin}) does not pass the evaluator: {result.status} "
                              f"at {result.stage}: {_first_line(result.message)} (see {failed})")
        self.lineage.init()
        rationale = f"seed: {seed.origin}"
        sha = self._lineage_commit(
            0, source, rationale, {**self._trailers(0, None, "seed", result), **getattr(seed, "trailers", {})},
            extra_files={"README.md": f"# lineage of {self.info.get('name', 'avo run')}\n\n"
                                      f"One commit per accepted kernel version; the first is the seed "
                                      f"({seed.origin}). Trailers carry the measured scores.\n"})
        version = Version(0, 0, sha, h, result.score, result.speedups,
                          [asdict(s) for s in result.shapes], rationale, str(kernel.relative_to(self.run_dir)))
        self.archive.add_seed(version, meta={"seed_origin": seed.origin, "elapsed_s": self.elapsed()})
        self._save_run_state()
        self._log_version(version, step=0)

    @staticmethod
    def _trailers(cid: int, parent: Optional[int], operator: str, result: EvalResult,
                  confirm: EvalResult | None = None) -> dict[str, object]:
        t: dict[str, object] = {"Candidate": cid, "Parent": parent, "Operator": operator,
                                "Score": f"{result.score:.6g}" if result.score is not None else None}
        for name, value in sorted((result.speedups or {}).items()):
            if value is not None:
                t[f"Speedup-vs-{name}"] = f"{value:.4f}"
        if confirm is not None and confirm.incumbent_ratio is not None:
            t["Incumbent-Ratio"] = f"{confirm.incumbent_ratio:.4f}"
            if confirm.incumbent_ratio_spread is not None:
                t["Incumbent-Ratio-Spread"] = f"{confirm.incumbent_ratio_spread:.4f}"
        return t

    # -- one round: `parallel` iterations at once ----------------------------------------------

    def _plans(self, ns: list[int], saved: dict[int, dict[str, Any]], history: list[Candidate],
               versions: list[Version]) -> dict[int, Plan]:
        """Parent and intervention of each iteration of the round that has no proposal yet.

        The strategy plans once per round from the decided history; a supervisor intervention goes
        to the first new iteration only (the supervisor counts interventions), the others vary the
        same parent. When a proposal saved before a crash already carries one, none is added."""
        new = [n for n in ns if n not in saved]
        if not new:
            return {}
        carried = [saved[n] for n in sorted(saved) if saved[n].get("intervention")]
        if carried:
            return {n: Plan(carried[0]["parent"]) for n in new}
        plan = self.strategy.plan(history, versions)
        if plan.intervention is not None:
            plan = Plan(plan.parent, self._direct(new[0], plan.intervention, history, versions))
        return {n: plan if i == 0 else Plan(plan.parent) for i, n in enumerate(new)}

    def _direct(self, n: int, step: Intervention, history: list[Candidate], versions: list[Version]) -> Intervention:
        """`step` with the directive the model supervisor wrote for iteration n (or the template it
        fell back to), asked once: the answer is signed before the iteration goes on, and a resume
        reuses it when the rules reached the same decision (whatever search.supervisor says now).
        Without a model supervisor and a saved answer, the template's `step` as it is."""
        out = results.path(self.run_dir, n, "supervisor")
        saved = self._load(out, "supervisor", n)
        decided = saved.result if saved is not None else {}
        if (decided.get("kind"), decided.get("restart_from")) == (step.kind, step.restart_from):
            r = decided
        elif self.supervisor is None:
            return step
        else:
            w = self.supervisor.write(step, history, versions, n, cand_dir(self.run_dir, n) / "supervisor.jsonl")
            r = {"kind": step.kind, "restart_from": step.restart_from, "directive": self._redact(w.directive),
                 "source": w.source, "error": self._redact(w.error), "tokens": int(w.tokens),
                 "cost_usd": float(w.cost_usd)}
            results.sign(out, r, key=self._key, kind="supervisor", candidate=n, kernel_sha256=None)
            self._event(event="supervisor", candidate=n, kind=step.kind, source=w.source, error=r["error"])
            if w.source != "model":
                self.logger.message(f"warning: the supervisor model call for iteration {n} failed "
                                    f"({_first_line(r['error'])}); the template's directive is used")
        return replace(step, directive=r["directive"], source=r["source"], error=r["error"],
                       tokens=int(r["tokens"]), cost_usd=float(r["cost_usd"]))

    def _proposals(self, ns: list[int], history: list[Candidate], versions: list[Version]) -> dict[int, dict[str, Any]]:
        """Each iteration's proposal, made once and kept signed in results/<n>/proposal.json; the
        missing ones are made concurrently, each with its own workspace, iteration and RNG."""
        saved = {n: p for n in ns if (p := self._saved_proposal(n)) is not None}
        plans = self._plans(ns, saved, history, versions)
        contexts = {n: self._context(n, plan, versions) for n, plan in plans.items()}
        for n in contexts:  # who else is proposed in this round (the knob operator keeps them apart)
            contexts[n][0].extra["round"] = {"index": ns.index(n), "size": len(ns), "seed": f"{self.seed}:round:{ns[0]}"}
        threaded = len(contexts) > 1
        made = concurrently([lambda n=n: self._propose(n, *contexts[n], threaded) for n in contexts])
        return {**saved, **dict(zip(contexts, made))}

    def _saved_proposal(self, n: int) -> Optional[dict[str, Any]]:
        """Iteration n's proposal as this search recorded it before a crash, or None (then it is
        proposed again); the copy in candidates/<n>/ is for people and never read."""
        record = self._load(results.path(self.run_dir, n, "proposal"), "proposal", n)
        if record is None:
            return None
        if not PROPOSAL_FIELDS <= set(record.result):  # ours, but of another schema
            self._event(event="rejected", file=self._rel(results.path(self.run_dir, n, "proposal")),
                        reason="fields missing")
            return None
        return record.result

    def _result_of(self, v: Version) -> Optional[EvalResult]:
        """A version's own evaluation, when its signed record is at hand."""
        saved = results.load(results.path(self.run_dir, v.candidate, "eval"), key=self._key,
                             kind="seed" if v.candidate == 0 else "candidate", candidate=v.candidate,
                             kernel_sha256=v.source_hash or "")
        try:
            return EvalResult.from_dict(saved) if saved is not None else None
        except (TypeError, ValueError, KeyError, AttributeError):
            return None

    def _context(self, n: int, plan: Plan, versions: list[Version]) -> tuple[VariationContext, dict[str, Any]]:
        d = cand_dir(self.run_dir, n)
        parent = self.archive.version_of(plan.parent)
        parent_source = self._version_source(parent)
        self._version_source(versions[-1])  # the incumbent, which the agent may time against
        step = plan.intervention
        if step is not None:
            self.logger.message(f"supervisor ({step.kind}) at iteration {n}: {_first_line(step.directive)}")
        ctx = VariationContext(
            iteration=n, parent_id=str(plan.parent), parent_source=parent_source,
            parent_result=self._result_of(parent),
            run_dir=self.run_dir, workspace=d / "workspace", rng=random.Random(f"{self.seed}:{n}"),
            evaluate=self.evaluate, lineage=self.lineage, archive=self.archive,
            directive=step.directive if step else None,
            extra={"best_score": versions[-1].score, "best_candidate": versions[-1].candidate,
                   "intervention": step.kind if step else None,
                   "budget_left": remaining(self.budgets, self.usage())})
        ctx.workspace.mkdir(parents=True, exist_ok=True)
        record: dict[str, Any] = {"parent": plan.parent, "operator": self.operator.name,
                                  "intervention": step.kind if step else None,
                                  "directive": step.directive if step else None,
                                  # who wrote the directive, and what that cost (added to the row)
                                  "supervisor": {"source": step.source, "error": step.error, "tokens": step.tokens,
                                                 "cost_usd": step.cost_usd} if step else None}
        return ctx, record

    def _propose(self, n: int, ctx: VariationContext, record: dict[str, Any], threaded: bool) -> dict[str, Any]:
        d = cand_dir(self.run_dir, n)
        archive = None
        if threaded:  # SQLite connections belong to the thread that opened them
            ctx.archive = archive = Archive(self.run_dir)
        t = self.clock()
        source: Optional[str] = None
        if not threaded:  # the live line: the proposal is the long part with an LLM agent
            self.logger.status({"iteration": n, "max_iterations": self.budgets.max_iterations, "kind": "proposal",
                                "stage": self.operator.name, "shape": None})
        try:
            proposal: Proposal = self.operator.propose(ctx)
            source = proposal.source
            # The submitted bytes are hashed here, once: they, and only they, are evaluated and committed.
            record.update(rationale=self._redact(proposal.rationale), tokens=proposal.tokens,
                          cost_usd=proposal.cost_usd, transcript=proposal.transcript, error=None,
                          kernel_sha256=source_hash(source))
            write_atomic(d / package.file_name(source), source)
        except FatalOperatorError:
            raise  # not recorded: the search stops, and a resume proposes this iteration again
        except OperatorError as exc:
            # The transcript of a failed variation is what says why it failed: keep its path.
            transcript = getattr(exc, "transcript", None)
            record.update(rationale=None, tokens=int(getattr(exc, "tokens", 0) or 0),
                          cost_usd=float(getattr(exc, "cost_usd", 0.0) or 0.0),
                          transcript=str(transcript) if transcript else None,
                          error=self._redact(str(exc)), kernel_sha256=None)
        finally:
            if archive is not None:
                archive.close()
        record["propose_s"] = self.clock() - t
        results.sign(results.path(self.run_dir, n, "proposal"), {**record, "source": source}, key=self._key,
                     kind="proposal", candidate=n, kernel_sha256=record["kernel_sha256"])
        write_atomic(d / "proposal.json", json.dumps(record, indent=2) + "\n")  # for people; never read back
        return {**record, "source": source}

    def iterate(self, n: int) -> Candidate:
        return self.round([n])[0]

    def round(self, ns: list[int]) -> list[Candidate]:
        """Iterations `ns` (consecutive, the next ones): propose and evaluate them all at once, then
        decide them one by one in iteration order, each against the best of that moment."""
        t_start = self.clock()
        for n in ns:
            cand_dir(self.run_dir, n).mkdir(parents=True, exist_ok=True)
        history, versions = self.archive.candidates(), self.archive.versions()
        proposals = self._proposals(ns, history, versions)
        # Evaluate every new source once: a repeat of a version, of an earlier candidate or of an
        # earlier iteration of this round is recorded as a duplicate when its turn comes.
        todo, hashes = [], set()
        for n in ns:
            if proposals[n]["error"] is None:
                h = proposals[n]["kernel_sha256"]
                if h not in hashes and self._same_source(h, versions) is None:
                    todo.append(n)
                hashes.add(h)
        evaluated = concurrently([
            lambda n=n, src=proposals[n]["source"]: self._evaluate(
                n, "candidate", cand_dir(self.run_dir, n) / package.file_name(src), src, proposals[n]["kernel_sha256"])
            for n in todo])
        done = dict(zip(todo, evaluated))
        return [self._decide(n, proposals[n], done.get(n), t_start) for n in ns]

    def _decide(self, n: int, p: dict[str, Any], evaluated: Optional[tuple[EvalResult, float]],
                t_start: float) -> Candidate:
        """Screen, confirm (against the current best), commit and record one iteration."""
        d = cand_dir(self.run_dir, n)
        versions = self.archive.versions()
        best = versions[-1]
        sup = p.get("supervisor") or {}  # the supervisor model's spend counts in budgets as the operator's does
        cand = Candidate(id=n, parent=p["parent"], operator=p["operator"], status=OPERATOR_ERROR,
                         verdict="operator-error", rationale=p["rationale"], message=p["error"],
                         best_score=best.score, intervention=p["intervention"], directive=p["directive"],
                         tokens=p["tokens"] + int(sup.get("tokens") or 0),
                         cost_usd=p["cost_usd"] + float(sup.get("cost_usd") or 0.0), propose_s=p["propose_s"])
        version = None
        result = confirm = None
        if p["error"] is None:
            source = p["source"]
            kernel = d / package.file_name(source)
            parent_source = self._version_source(self.archive.version_of(p["parent"]))
            cand.source_hash = p["kernel_sha256"]
            cand.diff = package.diff(parent_source, source, f"candidates/{p['parent']:04d}", f"candidates/{n:04d}")
            same = self._same_source(cand.source_hash, versions)
            if same is not None:
                cand.status, cand.verdict, cand.score = DUPLICATE, DUPLICATE, same[1]
                cand.message = f"same source as candidate {same[0]}; not evaluated again"
            else:
                result, cand.eval_s = evaluated or self._evaluate(n, "candidate", kernel, source, cand.source_hash)
                verdict: Verdict = self.strategy.judge(result, best.score)
                if verdict.passed_screen and self.strategy.confirms:
                    self._version_source(best)  # the incumbent's file is what was accepted, or restored
                    confirm, cand.confirm_s = self._evaluate(n, "confirm", kernel, source, cand.source_hash,
                                                             incumbent=self.run_dir / best.path,
                                                             stages=CONFIRM_STAGES)
                    verdict = self.strategy.judge_confirmation(confirm)
                self._fill(cand, result, confirm, verdict)
        with stopping.critical():  # the version's commit and the iteration's row, or neither
            if result is not None and verdict.accepted:
                self._pin(kernel, source, cand.source_hash, f"candidate {n}")  # the version's file
                version = self._commit(cand, source, result, confirm, len(versions), kernel)
            cand.wall_s = self.clock() - t_start
            self.archive.record(cand, version, meta={"elapsed_s": self.elapsed()})
            self._save_run_state()
            self._event(event="recorded", candidate=n, verdict=cand.verdict)
        self.logger.iteration(self._metrics(cand, result))
        if version is not None:
            self._log_version(version, step=n)
        return cand

    def _same_source(self, h: str, versions: list[Version]) -> Optional[tuple[int, Optional[float]]]:
        for v in versions:
            if v.source_hash == h:
                return v.candidate, v.score
        earlier = self.archive.find_hash(h)
        return (earlier.id, earlier.score) if earlier else None

    def _fill(self, cand: Candidate, result: EvalResult, confirm: EvalResult | None, verdict: Verdict) -> None:
        cand.status, cand.stage = result.status, result.stage
        cand.message = verdict.reason if result.ok else _first_line(result.message) or verdict.reason
        cand.verdict, cand.accepted = verdict.label, verdict.accepted
        cand.score, cand.speedups = result.score, result.speedups
        cand.metrics = [asdict(s) for s in result.shapes]
        cand.result_path = self._rel(results.path(self.run_dir, cand.id, "eval"))
        if confirm is not None:
            cand.incumbent_ratio = confirm.incumbent_ratio
            cand.incumbent_ratio_spread = confirm.incumbent_ratio_spread

    def _commit(self, cand: Candidate, source: str, result: EvalResult, confirm: EvalResult | None,
                number: int, kernel: Path) -> Version:
        sha = self._lineage_commit(cand.id, source, cand.rationale or "",
                                   self._trailers(cand.id, cand.parent, cand.operator, result, confirm))
        cand.version, cand.lineage_sha = number, sha
        return Version(number, cand.id, sha, cand.source_hash, result.score, result.speedups, cand.metrics,
                       cand.rationale, str(kernel.relative_to(self.run_dir)))

    # -- logging -------------------------------------------------------------------------------

    def _metrics(self, cand: Candidate, result: EvalResult | None) -> dict[str, Any]:
        versions = self.archive.versions()
        best, seed = versions[-1], versions[0]
        totals = self.archive.totals()
        m: dict[str, Any] = {
            "iteration": cand.id, "max_iterations": self.budgets.max_iterations, "verdict": cand.verdict,
            "status": cand.status, "accepted": cand.accepted, "operator": cand.operator, "parent": cand.parent,
            "rationale": _first_line(cand.rationale or cand.message), "intervention": cand.intervention,
            "candidate/score": cand.score, "best/score": best.score, "best/version": best.version,
            "best/gain_vs_seed": (best.score / seed.score - 1) if best.score and seed.score else None,
            "incumbent_ratio": cand.incumbent_ratio, "incumbent_ratio_spread": cand.incumbent_ratio_spread,
            "tokens": cand.tokens, "cost_usd": cand.cost_usd,
            "total/tokens": totals["tokens"], "total/cost_usd": totals["cost_usd"],
            "count/accepted": totals["accepted"],
            "time/propose_s": cand.propose_s, "time/eval_s": cand.eval_s, "time/confirm_s": cand.confirm_s,
            "time/iteration_s": cand.wall_s, "elapsed_s": self.elapsed(),
            "budget_left": remaining(self.budgets, self.usage()),
        }
        for name, value in (cand.speedups or {}).items():
            m[f"candidate/speedup_vs_{name}"] = value
        for name, value in (best.speedups or {}).items():
            m[f"best/speedup_vs_{name}"] = value
        for status, count in self.archive.status_counts().items():
            m[f"count/{status}"] = count
        return m

    def _log_version(self, version: Version, step: int) -> None:
        row = {"version": version.version, "candidate": version.candidate, "sha": version.sha,
               "score": version.score, "rationale": _first_line(version.rationale)}
        row.update({f"speedup_vs_{k}": v for k, v in (version.speedups or {}).items()})
        self._version_source(version)  # what is logged as the version's kernel is that version
        self.logger.version(row, self.run_dir / version.path)
        rows = []
        for v in self.archive.versions():
            r = {"version": v.version, "candidate": v.candidate, "sha": v.sha[:10], "score": v.score,
                 "rationale": _first_line(v.rationale)}
            r.update({f"speedup_vs_{k}": v.speedups.get(k) for k in sorted(version.speedups or {})}
                     if v.speedups is not None else {})
            rows.append(r)
        self.logger.lineage(rows, step)
