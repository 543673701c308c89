"""The agent's tools: small functions, each with a JSON schema, over one workspace and one run.

The same `ToolBox` serves both operators: `agent=avo` calls it from its litellm loop, `agent=cli`
from the `avo tool ...` command through a local socket (avo/tool). Tool errors (a bad path, an
edit that does not apply, an unknown version) come back as text to the model, never as an
exception out of the loop; only the evaluator is allowed to take long.

Tools: lineage_log, lineage_show, lineage_diff, archive_query, kb_search, kb_read, list_files,
read_file, replace_in_file, write_file, workspace_diff, compile, test, bench, submit.
"""

from __future__ import annotations

import contextlib
import json
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

from avo import package
from avo.operators.workspace import SandboxError, Workspace

MAX_OUTPUT = 12_000  # characters of one tool result shown to the model
SMOKE_SUITE = "smoke"
COMPILE_STAGES = ("compile",)
TEST_STAGES = ("compile", "correctness")
BENCH_STAGES = ("compile", "correctness", "benchmark", "reverify")


class ToolError(Exception):
    """A tool that could not do what was asked; its message goes back to the model."""


@dataclass
class Tool:
    name: str
    description: str
    parameters: dict[str, Any]
    fn: Callable[..., str]

    def schema(self) -> dict[str, Any]:
        return {"type": "function",
                "function": {"name": self.name, "description": self.description, "parameters": self.parameters}}


@dataclass
class ToolOutcome:
    text: str
    ok: bool = True
    evaluated: bool = False  # the evaluator ran
    submitted: bool = False


@dataclass
class Submission:
    source: str
    rationale: str


@dataclass
class ToolState:
    """What the tools share for one variation."""

    workspace: Workspace
    parent_source: str
    parent_id: str = ""
    suite: str = SMOKE_SUITE
    run_dir: Optional[Path] = None
    evaluate: Optional[Callable[..., Any]] = None
    lineage: Any = None
    archive: Any = None
    knowledge: Optional[Callable[[], Any]] = None  # lazily builds the KnowledgeBase
    parent_path: Optional[Path] = None  # the incumbent's file, for bench(against_incumbent)
    critique: Optional[str] = None  # shown once, on the first submit
    # The model turn the tools are called in (set by the agent's loop; None where there are no
    # turns, e.g. the CLI agent): the critique must be read before a submit is taken, so a submit
    # in the same turn as the critique is refused.
    turn: Optional[int] = None
    critique_turn: Optional[int] = None
    # The kernel sources that passed correctness (test or bench) in this variation: only one of
    # those is submitted, never an edit nobody ran.
    passed: set[str] = field(default_factory=set)
    time_left: Optional[Callable[[], Optional[float]]] = None  # seconds of the variation's wall time
    require_change: bool = True
    submission: Optional[Submission] = None
    critiqued: bool = False
    evaluations: int = 0
    last_result: Any = None
    last_result_source: Optional[str] = None
    history: list[str] = field(default_factory=list)


def _obj(props: dict[str, Any], required: tuple[str, ...] = ()) -> dict[str, Any]:
    return {"type": "object", "properties": props, "required": list(required), "additionalProperties": False}


_INT = {"type": "integer"}
_STR = {"type": "string"}
_BOOL = {"type": "boolean"}


def _fmt(x: Optional[float], spec: str = ".4g") -> str:
    return "n/a" if x is None else format(x, spec)


def format_result(result: Any, what: str) -> str:
    """A compact, actionable text view of an EvalResult."""
    lines = [f"{what}: status={result.status}" + (f" (failed at {result.stage})" if result.stage else "")]
    if result.message:
        lines.append("message: " + result.message.strip())
    if result.compile_s is not None:
        lines.append(f"compile: {result.compile_s:.2f} s")
    for s in result.shapes:
        parts = [f"  {s.label:<28}"]
        if s.tflops is not None:
            parts.append(f"{s.tflops:9.4g} TFLOP/s  {_fmt(s.time_ms, '.4g')} ms  spread {_fmt(s.spread, '.3f')}")
        if s.error is not None:
            parts.append(f"rel.err {s.error:.2e}")
        if s.baselines:
            parts.append(" ".join(f"{k} {_fmt(v)}" + (f" (ours {s.baseline_ratios[k]:.3f}x)" if k in s.baseline_ratios else "")
                                  for k, v in s.baselines.items()))
        if s.incumbent_ratio is not None:
            parts.append(f"vs incumbent {s.incumbent_ratio:.4f}x (spread {_fmt(s.incumbent_ratio_spread, '.4f')})")
        lines.append("  ".join(parts))
    if result.score is not None:
        lines.append(f"suite score (geomean TFLOP/s): {result.score:.4g}")
    if result.speedups:
        lines.append("speedups: " + ", ".join(f"{k} {_fmt(v, '.3f')}x" for k, v in result.speedups.items()))
    if result.incumbent_ratio is not None:
        lines.append(f"vs incumbent (geomean of interleaved ratios): {result.incumbent_ratio:.4f}x, "
                     f"largest spread {_fmt(result.incumbent_ratio_spread, '.4f')}")
    return "\n".join(lines)


def clip(text: str, limit: int = MAX_OUTPUT) -> str:
    if len(text) <= limit:
        return text
    return text[: limit - 200] + f"\n[... output cut: {len(text) - limit + 200} more characters; narrow the request]"


class ToolBox:
    def __init__(self, state: ToolState):
        self.state = state
        self.tools: dict[str, Tool] = {t.name: t for t in self._build()}

    # -- dispatch --------------------------------------------------------------------------------

    def schemas(self) -> list[dict[str, Any]]:
        return [t.schema() for t in self.tools.values()]

    def call(self, name: str, arguments: Any) -> ToolOutcome:
        tool = self.tools.get(name)
        if tool is None:
            return ToolOutcome(f"error: unknown tool {name!r}; tools: {', '.join(self.tools)}", ok=False)
        if isinstance(arguments, str):
            try:
                arguments = json.loads(arguments) if arguments.strip() else {}
            except json.JSONDecodeError as exc:
                return ToolOutcome(f"error: arguments are not valid JSON ({exc.msg})", ok=False)
        if not isinstance(arguments, dict):
            return ToolOutcome("error: arguments must be a JSON object", ok=False)
        allowed = set(tool.parameters.get("properties", {}))
        unknown = sorted(set(arguments) - allowed)
        missing = [r for r in tool.parameters.get("required", []) if r not in arguments]
        if unknown or missing:
            return ToolOutcome(f"error: {name} takes {sorted(allowed) or 'no arguments'}"
                               + (f"; unknown {unknown}" if unknown else "")
                               + (f"; missing {missing}" if missing else ""), ok=False)
        before = self.state.evaluations
        submitted_before = self.state.submission is not None
        try:
            text = tool.fn(**arguments)
            ok = True
        except (ToolError, SandboxError) as exc:
            text, ok = f"error: {exc}", False
        except Exception as exc:  # a tool bug or an unexpected failure must not end the variation
            text, ok = f"error: {name} failed: {type(exc).__name__}: {exc}", False
        self.state.history.append(name)
        return ToolOutcome(clip(text), ok=ok, evaluated=self.state.evaluations > before,
                           submitted=self.state.submission is not None and not submitted_before)

    # -- the tools -------------------------------------------------------------------------------

    def _build(self) -> list[Tool]:
        ws = self.state.workspace.kernel_file
        return [
            Tool("lineage_log", "The accepted versions so far (the lineage), oldest first: version index, "
                 "candidate id, score, rationale subject.", _obj({"limit": _INT}), self.lineage_log),
            Tool("lineage_show", "The kernel source of one lineage version (index like 0, 3, or -1 for "
                 "the latest) with its full rationale.", _obj({"version": _INT}, ("version",)), self.lineage_show),
            Tool("lineage_diff", "Unified diff of the kernel between two lineage versions (indices).",
                 _obj({"a": _INT, "b": _INT}, ("a", "b")), self.lineage_diff),
            Tool("archive_query", "What was tried in this run: every candidate with its verdict "
                 "(accepted, failed:<stage>, slower, ...), score and rationale. Give `id` for one candidate's "
                 "full record (error message and diff); filter with `status` or `failed_only`.",
                 _obj({"limit": _INT, "id": _INT, "status": _STR, "failed_only": _BOOL}), self.archive_query),
            Tool("kb_search", "Search the knowledge base (our notes, CuTe DSL / CUTLASS and FlashAttention-4 "
                 "sources, this run's history) with keywords. Returns references source:path:lines.",
                 _obj({"query": _STR, "k": _INT, "source": _STR}, ("query",)), self.kb_search),
            Tool("kb_read", "Read lines of a knowledge-base file found by kb_search.",
                 _obj({"source": _STR, "path": _STR, "start_line": _INT, "end_line": _INT},
                      ("source", "path")), self.kb_read),
            Tool("list_files", "Files in your workspace.", _obj({}), self.list_files),
            Tool("read_file", f"Read a workspace file with line numbers (the kernel is {ws}).",
                 _obj({"path": _STR, "start_line": _INT, "end_line": _INT}, ("path",)), self.read_file),
            Tool("replace_in_file", "Exact search/replace in a workspace file. `search` must match the file "
                 "exactly (whitespace included) and occur once, unless replace_all is true.",
                 _obj({"path": _STR, "search": _STR, "replace": _STR, "replace_all": _BOOL},
                      ("path", "search", "replace")), self.replace_in_file),
            Tool("write_file", "Write a whole (small) workspace file; prefer replace_in_file for the kernel.",
                 _obj({"path": _STR, "content": _STR}, ("path", "content")), self.write_file),
            Tool("workspace_diff", f"Your changes so far: unified diff of {ws} against the version you "
                 "started from.", _obj({}), self.workspace_diff),
            Tool("compile", f"Import and compile {ws} only (fast feedback on syntax and DSL errors).",
                 _obj({}), self.compile),
            Tool("test", f"Compile {ws} and check correctness on the `{SMOKE_SUITE}` suite (awkward shapes, "
                 "causal, GQA) against an fp32 reference.", _obj({}), self.test),
            Tool("bench", f"Full evaluation of {ws} on the run's suite: compile, correctness, benchmark, "
                 "re-verification. With against_incumbent=true the version you started from is timed "
                 "interleaved with yours (a ratio > 1 means yours is faster).",
                 _obj({"against_incumbent": _BOOL}), self.bench),
            Tool("submit", f"Submit {ws} as this iteration's candidate, with a rationale: what changed, why "
                 "it should help, what you measured. Ends your turn.",
                 _obj({"rationale": _STR}, ("rationale",)), self.submit),
        ]

    # lineage ------------------------------------------------------------------------------------

    def _lineage(self):
        lin = self.state.lineage
        if lin is None and self.state.run_dir is not None:
            from avo.lineage import Lineage

            lin = Lineage.of_run(self.state.run_dir)
        if lin is None or (hasattr(lin, "exists") and not lin.exists()):
            raise ToolError("this run has no lineage yet")
        return lin

    def lineage_log(self, limit: int = 30) -> str:
        text = self._lineage().log_text(limit=int(limit))
        return text or "the lineage is empty"

    def lineage_show(self, version: int) -> str:
        from avo.lineage import LineageError

        lin = self._lineage()
        versions = lin.versions()
        try:
            v = versions[int(version)]
        except IndexError:
            raise ToolError(f"no version {version}; the lineage has {len(versions)} (0..{len(versions) - 1})")
        try:
            source = lin.show(v.sha)
        except LineageError as exc:
            raise ToolError(str(exc)) from None
        trailers = "\n".join(f"{k}: {val}" for k, val in v.trailers.items())
        return f"version {v.index} ({v.sha[:10]})\n{v.rationale}\n{trailers}\n\n{package.render(source)}"

    def lineage_diff(self, a: int, b: int) -> str:
        from avo.lineage import LineageError

        try:
            return self._lineage().diff(int(a), int(b)) or "(no difference)"
        except LineageError as exc:
            raise ToolError(str(exc)) from None

    # archive ------------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _archive(self):
        """The run's archive: the search's own connection when we share its thread (agent=avo),
        else a short-lived one of our own (agent=cli serves tools from another thread, and
        SQLite connections are bound to the thread that opened them)."""
        if self.state.archive is not None:
            yield self.state.archive
            return
        if self.state.run_dir is None:
            raise ToolError("this run has no archive yet")
        from avo.archive import open_run

        try:
            arch = open_run(self.state.run_dir)
        except FileNotFoundError:
            raise ToolError("this run has no archive yet") from None
        try:
            yield arch
        finally:
            arch.close()

    def archive_query(self, limit: int = 20, id: Optional[int] = None, status: Optional[str] = None,
                      failed_only: bool = False) -> str:
        with self._archive() as arch:
            return self._archive_text(arch, limit, id, status, failed_only)

    @staticmethod
    def _archive_text(arch, limit: int, id: Optional[int], status: Optional[str], failed_only: bool) -> str:
        if id is not None:
            c = arch.candidate(int(id))
            if c is None:
                raise ToolError(f"no candidate {id}; {arch.count()} have been recorded")
            head = [f"candidate {c.id} (parent {c.parent}, operator {c.operator}): {c.verdict}",
                    f"status {c.status}" + (f" at {c.stage}" if c.stage else ""),
                    f"score {_fmt(c.score)}  best then {_fmt(c.best_score)}  "
                    f"vs incumbent {_fmt(c.incumbent_ratio)}",
                    f"speedups {json.dumps(c.speedups) if c.speedups else '-'}"]
            if c.message:
                head.append("message: " + c.message)
            if c.directive:
                head.append("supervisor directive: " + c.directive)
            head.append("rationale: " + (c.rationale or "-"))
            head.append("diff against its parent:\n" + (c.diff or "(none recorded)"))
            return "\n".join(head)
        rows = arch.candidates(limit=int(limit), status=status)
        if failed_only:
            rows = [c for c in rows if not c.accepted and c.status != "ok"]
        if not rows:
            return f"no candidates match ({arch.count()} recorded in total)"
        lines = ["id   parent operator verdict              score      rationale / message"]
        for c in rows:
            why = (c.rationale or "").strip().splitlines()[0][:80] if c.rationale else ""
            if c.message and not c.accepted:
                why += f"  [{c.message.strip().splitlines()[0][:100]}]"
            lines.append(f"{c.id:<4} {c.parent:<6} {c.operator:<8} {c.verdict:<20} {_fmt(c.score):<10} {why}")
        counts = arch.status_counts()
        lines.append("totals by status: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
        return "\n".join(lines)

    # knowledge ----------------------------------------------------------------------------------

    def _kb(self):
        if self.state.knowledge is None:
            raise ToolError("no knowledge base is configured for this run")
        try:
            return self.state.knowledge()
        except Exception as exc:
            raise ToolError(f"the knowledge base could not be loaded: {exc}") from None

    def kb_search(self, query: str, k: int = 8, source: Optional[str] = None) -> str:
        from avo.knowledge import KnowledgeError

        try:
            hits = self._kb().search(query, k=int(k), source=source)
        except KnowledgeError as exc:
            raise ToolError(str(exc)) from None
        if not hits:
            return "no hits; try other keywords (API names, file names)"
        out = []
        for h in hits:
            out.append(f"[{h.source}] {h.path}:{h.start_line}-{h.end_line}  {h.title}  (score {h.score:.2f})")
            out.extend("    " + line for line in h.snippet.splitlines())
        return "\n".join(out)

    def kb_read(self, source: str, path: str, start_line: int = 1, end_line: Optional[int] = None) -> str:
        from avo.knowledge import KnowledgeError

        start = int(start_line)
        end = int(end_line) if end_line is not None else start + 199
        try:
            return self._kb().read(source, path, start, end)
        except KnowledgeError as exc:
            raise ToolError(str(exc)) from None

    # workspace ----------------------------------------------------------------------------------

    def list_files(self) -> str:
        return "\n".join(self.state.workspace.list()) or "(empty)"

    def read_file(self, path: str, start_line: int = 1, end_line: Optional[int] = None) -> str:
        return self.state.workspace.read(path, start_line, end_line)

    def replace_in_file(self, path: str, search: str, replace: str, replace_all: bool = False) -> str:
        return self.state.workspace.replace(path, search, replace, bool(replace_all))

    def write_file(self, path: str, content: str) -> str:
        return self.state.workspace.write(path, content)

    def workspace_diff(self) -> str:
        return package.diff(self.state.parent_source, self.state.workspace.kernel_source()) or "(no changes yet)"

    # evaluation ---------------------------------------------------------------------------------

    def _evaluate(self, suite: Optional[str], stages: tuple[str, ...], incumbent: Optional[Path] = None):
        """The run's bound evaluator (device, settings, baselines filled in); `suite=None` is the
        run's own suite."""
        if self.state.evaluate is None:
            raise ToolError("no evaluator is available in this context")
        kwargs: dict[str, Any] = {"stages": stages}
        if suite is not None:
            kwargs["suite"] = suite
        if incumbent is not None:
            kwargs["incumbent"] = incumbent
        left = self.state.time_left() if self.state.time_left is not None else None
        if left is not None:
            if left <= 1.0:
                raise ToolError("the variation's wall time is used up; submit now or stop")
            kwargs["timeout"] = left  # an evaluation never outlives the variation's wall time
        # Only files of the workspace's own are evaluated: were one a link to a file outside, the
        # evaluator's error (a SyntaxError quoting the line) would show the model that file. The
        # text read here is what is evaluated (a private copy), so the `passed` record below is
        # about exactly the bytes the evaluator saw.
        ws = self.state.workspace
        source = ws.kernel_source()
        if incumbent is not None and (Path(incumbent).is_symlink() or not Path(incumbent).is_file()):
            raise ToolError("the incumbent's file is not available")
        self.state.evaluations += 1
        t0 = time.monotonic()
        with tempfile.TemporaryDirectory(prefix="avo-tool-") as tmp:
            kernel = Path(tmp) / package.file_name(source)
            kernel.write_text(source)
            result = self.state.evaluate(kernel, **kwargs)
        self.state.last_result, self.state.last_result_source = result, source
        if "correctness" in stages and getattr(result, "status", None) == "ok":
            self.state.passed.add(source)
        return result, time.monotonic() - t0

    def compile(self) -> str:
        result, took = self._evaluate(SMOKE_SUITE, COMPILE_STAGES)
        return format_result(result, f"compile ({took:.1f} s)")

    def test(self) -> str:
        result, took = self._evaluate(SMOKE_SUITE, TEST_STAGES)
        return format_result(result, f"test on {SMOKE_SUITE} ({took:.1f} s)")

    def bench(self, against_incumbent: bool = False) -> str:
        incumbent = None
        if against_incumbent:
            incumbent = self.state.parent_path
            if incumbent is None:
                raise ToolError("the incumbent's file is not available")
        result, took = self._evaluate(None, BENCH_STAGES, incumbent)
        return format_result(result, f"bench on {self.state.suite} ({took:.1f} s)")

    # submit -------------------------------------------------------------------------------------

    def submit(self, rationale: str) -> str:
        if self.state.submission is not None:
            return "already submitted; nothing more to do"
        rationale = (rationale or "").strip()
        if not rationale:
            raise ToolError("a rationale is required: what changed, why it should help, what you measured")
        source = self.state.workspace.kernel_source()
        if self.state.require_change and source == self.state.parent_source:
            raise ToolError("the kernel is unchanged from the version you started from; edit it first")
        if self.state.evaluate is not None and source not in self.state.passed:
            raise ToolError("the kernel as it is now has not passed `test` (or `bench`) in this variation; "
                            "run test on this exact source first, then submit")
        if self.state.critique and not self.state.critiqued:
            self.state.critiqued = True
            self.state.critique_turn = self.state.turn
            return ("not submitted yet. " + self.state.critique.strip()
                    + "\n(Call submit again when you are satisfied.)")
        if self.state.turn is not None and self.state.turn == self.state.critique_turn:
            raise ToolError("not submitted: the review above was shown in this same turn; read it, act on it, "
                            "and call submit in a later turn")
        self.state.submission = Submission(source=source, rationale=rationale)
        return "submitted"


