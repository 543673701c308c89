"""`agent=cli`: an external coding agent (Claude Code, Codex, a script...) as the variation operator.

For each variation the operator
1. fills the workspace with the parent version (`kernel.py`) and writes the rendered prompt
   (system + task + the `avo tool` usage) to the candidate's `prompt.md`;
2. serves the same ToolBox as agent=avo on a Unix socket, and puts a shim named `avo` first on
   PATH that forwards `avo tool X` to `python -m avo.tool X` (the client of that socket);
   AVO_TOOL_STATE names a JSON file describing the run (socket, run dir, suite, device,
   evaluator settings, parent);
3. runs `agent.command` with {prompt_file} and {workspace} filled in (shell-quoted), cwd = the
   workspace, in its own process group, killed as a group after `agent.wall_time_s`;
4. returns what `avo tool submit --rationale ...` submitted. No submit: OperatorError.

The external agent is not sandboxed by us (its own permission settings apply); the tools it calls
through `avo tool` are. Limits: wall_time_s is enforced; steps, tokens and cost belong to the
external agent and are not visible here (the proposal reports 0 tokens and $0).
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import socketserver
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any, Optional

from avo import package
from avo.config import ConfigError
from avo.operators.agent import (TRANSCRIPT_NAME, build_knowledge, candidate_dir, load_prompt, make_toolbox,
                                 prompt_fields, render)
from avo.operators.base import OperatorError, Proposal, VariationContext
from avo.operators.tools import ToolBox
from avo.operators.transcript import Transcript, install_log_redaction, redact_text, secret_values, truncate
from avo.paths import repo_root
from avo.tool import SERVED, STATE_ENV, USAGE

KILL_GRACE_S = 5.0
MAX_AGENT_OUTPUT = 200_000  # characters of the agent's own output kept in the transcript
_REPO_PARENT = Path(__file__).resolve().parents[2]  # where `import avo` resolves for the shim

TOOLS_SECTION = """\
## Tools
Edit `{kernel_file}` in the current directory with your own editor. These commands are on your PATH:

```
{usage}
```
`avo tool submit` answers once with a self-critique checklist (exit status 3): review it, fix what it
finds, then run `avo tool submit` again. Your work counts only once it is submitted.
"""


def _plain(node: Any) -> Any:
    """A config node (OmegaConf or dataclass) as plain JSON-able data."""
    if is_dataclass(node):
        return asdict(node)
    try:
        from omegaconf import OmegaConf

        if OmegaConf.is_config(node):
            return OmegaConf.to_container(node, resolve=True)
    except ImportError:
        pass
    return node


def fill_command(template: str, prompt_file: Path, workspace: Path) -> str:
    """{prompt_file}, {workspace}, {repo} (this clone, for scripts kept in it) and {python} (this
    interpreter: a version manager's `python` shim may put its own bin dir, and a real `avo`,
    ahead of ours on PATH), shell-quoted. Plain replacement, not str.format: shell commands are
    full of braces (${VAR}, awk '{...}')."""
    fields = {"prompt_file": prompt_file, "workspace": workspace, "repo": repo_root() or Path.cwd(),
              "python": sys.executable}
    for key, value in fields.items():
        template = template.replace("{" + key + "}", shlex.quote(str(value)))
    return template


def write_shim(bin_dir: Path) -> Path:
    """`avo` for the agent's PATH: `avo tool X` runs this interpreter's `python -m avo.tool X`."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    shim = bin_dir / "avo"
    shim.write_text(
        "#!/bin/sh\n"
        "# avo inside an agent workspace: only `avo tool ...` is available.\n"
        'if [ "$1" = "tool" ]; then shift; exec ' + shlex.quote(sys.executable) + ' -m avo.tool "$@"; fi\n'
        "echo \"avo: inside an agent workspace only 'avo tool ...' is available (avo tool --help)\" >&2\n"
        "exit 2\n")
    shim.chmod(0o755)
    return shim


class _Handler(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        server: "_ToolServer" = self.server  # type: ignore[assignment]
        try:
            req = json.loads(self.rfile.readline().decode() or "{}")
            tool, args = req.get("tool"), req.get("args") or {}
        except (ValueError, AttributeError):
            tool, args = None, {}
        if tool not in SERVED:
            reply = {"ok": False, "text": f"error: unknown tool {tool!r}", "submitted": False}
        else:
            reply = server.run_tool(tool, args)
        self.wfile.write(json.dumps(reply).encode())


class _ToolServer(socketserver.UnixStreamServer):
    """Serves one request at a time: evaluations never overlap, the transcript stays ordered."""

    def __init__(self, path: str, tools: ToolBox, transcript: Transcript):
        self.tools, self.transcript, self.calls = tools, transcript, 0
        super().__init__(path, _Handler)

    def run_tool(self, tool: str, args: dict[str, Any]) -> dict[str, Any]:
        self.calls += 1
        call_id = f"cli_{self.calls}"
        self.transcript.write("tool_call", id=call_id, name=tool, arguments=args)
        outcome = self.tools.call(tool, args)
        self.transcript.write("tool_result", id=call_id, name=tool, ok=outcome.ok,
                              evaluated=outcome.evaluated, content=truncate(outcome.text))
        if outcome.submitted:
            self.transcript.write("submit", rationale=self.tools.state.submission.rationale)
        return {"ok": outcome.ok, "text": outcome.text, "submitted": self.tools.state.submission is not None}


class CliAgent:
    name = "cli"

    def __init__(self, cfg: Any, run_dir: Optional[Path] = None, *, clock=time.monotonic):
        self.cfg, self.run_dir, self._clock = cfg, Path(run_dir) if run_dir is not None else None, clock
        self.command = cfg.agent.command
        if not self.command:
            raise ConfigError("agent=cli needs agent.command (the external agent's command line)")
        self.system = load_prompt(cfg.prompts.system)
        self.task = load_prompt(cfg.prompts.task)
        self.critique = load_prompt(getattr(cfg.prompts, "critique", None))
        install_log_redaction([getattr(cfg.model, "api_key_env", None)])

    def _knowledge(self):
        return build_knowledge(self.cfg, self.run_dir)

    def prompt(self, ctx: VariationContext, kernel_file: str) -> str:
        fields = prompt_fields(self.cfg, ctx, kernel_file)
        tools = TOOLS_SECTION.format(kernel_file=kernel_file, usage=USAGE)
        return "\n\n".join([render(self.system, fields).strip(), render(self.task, fields).strip(), tools])

    def propose(self, ctx: VariationContext) -> Proposal:
        secrets = secret_values([getattr(self.cfg.model, "api_key_env", None)])
        cand_dir = candidate_dir(ctx.run_dir, ctx.iteration)
        transcript = Transcript(cand_dir / TRANSCRIPT_NAME, secrets)
        tools = make_toolbox(self.cfg, ctx, cand_dir, self.critique, self._knowledge, share_archive=False)
        ws = tools.state.workspace
        prompt_file = cand_dir / "prompt.md"
        prompt_file.write_text(self.prompt(ctx, ws.kernel_file))
        command = fill_command(self.command, prompt_file, ws.root)
        tmp = Path(tempfile.mkdtemp(prefix="avo-tool-"))  # short: Unix socket paths are limited
        try:
            return self._run(ctx, command, tools, transcript, tmp, cand_dir, prompt_file, secrets)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def _run(self, ctx, command, tools, transcript, tmp, cand_dir, prompt_file, secrets) -> Proposal:
        sock = tmp / "tool.sock"
        server = _ToolServer(str(sock), tools, transcript)
        serving = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
        serving.start()
        state_file = tmp / "state.json"
        state_file.write_text(json.dumps({
            "socket": str(sock), "run_dir": str(ctx.run_dir), "workspace": str(tools.state.workspace.root),
            "kernel_file": tools.state.workspace.kernel_file, "iteration": ctx.iteration,
            "parent_id": str(ctx.parent_id), "suite": self.cfg.attention.suite,
            "device": self.cfg.hardware.device, "arch": self.cfg.hardware.arch,
            "evaluator": _plain(self.cfg.evaluator), "submission": str(cand_dir / "submission.json"),
        }, indent=2, default=str))
        bin_dir = write_shim(tmp / "bin").parent
        env = dict(os.environ)
        env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
        env[STATE_ENV] = str(state_file)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(_REPO_PARENT), env.get("PYTHONPATH")) if p)
        limit = self.cfg.agent.wall_time_s
        transcript.write("meta", operator="cli", command=command, iteration=ctx.iteration,
                         parent_id=str(ctx.parent_id), workspace=str(tools.state.workspace.root),
                         limits={"wall_time_s": limit})
        transcript.write("message", role="user", content=prompt_file.read_text())
        t0 = self._clock()
        tools.state.time_left = (lambda: limit - (self._clock() - t0)) if limit else None
        output: list[str] = []
        try:
            proc = subprocess.Popen(command, shell=True, cwd=tools.state.workspace.root, env=env,
                                    stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                    text=True, errors="replace", start_new_session=True)
        except OSError as exc:
            server.shutdown()
            server.server_close()
            raise self._fail(transcript, f"could not start the agent command: {exc}", t0, secrets)
        reader = threading.Thread(target=_drain, args=(proc, output), daemon=True)
        reader.start()
        timed_out = False
        try:
            proc.wait(timeout=limit)
            _signal_group(proc, signal.SIGTERM)  # what the agent left running in the background
        except subprocess.TimeoutExpired:
            timed_out = True
            _kill_group(proc)
        except BaseException:  # Ctrl-C: the agent runs in its own session and would not see it
            _kill_group(proc)
            raise
        finally:
            reader.join(timeout=KILL_GRACE_S)
            server.shutdown()
            server.server_close()
        text = truncate("".join(output), MAX_AGENT_OUTPUT)
        transcript.write("agent_output", returncode=proc.returncode, timed_out=timed_out, content=text)
        sub = tools.state.submission
        if sub is None:
            why = (f"agent.wall_time_s={limit:g} reached" if timed_out
                   else f"the agent command exited with status {proc.returncode}")
            tail = text.strip().splitlines()[-3:]
            raise self._fail(transcript, f"{why} without `avo tool submit`"
                             + (f"; its last output: {' | '.join(tail)[-400:]}" if tail else ""), t0, secrets)
        rationale = redact_text(sub.rationale, secrets)
        name = "submission" + Path(package.file_name(sub.source)).suffix
        (cand_dir / "submission.json").write_text(json.dumps({"rationale": rationale, "kernel": name}))
        (cand_dir / name).write_text(sub.source)
        transcript.write("stop", reason="submitted", submitted=True, returncode=proc.returncode,
                         elapsed_s=round(self._clock() - t0, 2), evaluations=tools.state.evaluations,
                         timed_out=timed_out)
        return Proposal(source=sub.source, rationale=rationale, tokens=0, cost_usd=0.0,
                        transcript=str(transcript.path))

    def _fail(self, transcript: Transcript, reason: str, t0: float, secrets) -> OperatorError:
        reason = redact_text(reason, secrets)
        transcript.write("stop", reason=reason, submitted=False, elapsed_s=round(self._clock() - t0, 2))
        err = OperatorError(reason)
        err.tokens, err.cost_usd, err.transcript = 0, 0.0, str(transcript.path)
        return err


def _drain(proc: subprocess.Popen, sink: list[str]) -> None:
    size = 0
    for line in proc.stdout:  # type: ignore[union-attr]
        if size < 4 * MAX_AGENT_OUTPUT:  # keep reading (the pipe must not fill) but stop storing
            sink.append(line)
            size += len(line)


def _signal_group(proc: subprocess.Popen, sig: int) -> bool:
    """Signal the agent's process group (its own session, started by us); False if it is gone."""
    try:
        os.killpg(proc.pid, sig)
        return True
    except (ProcessLookupError, PermissionError):
        return False


def _kill_group(proc: subprocess.Popen) -> None:
    """SIGTERM the agent's whole process group, SIGKILL what is left after a grace period."""
    for sig, wait in ((signal.SIGTERM, KILL_GRACE_S), (signal.SIGKILL, KILL_GRACE_S)):
        if not _signal_group(proc, sig):
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def make(cfg: Any, run_dir: Optional[Path] = None) -> CliAgent:
    return CliAgent(cfg, run_dir)
