"""`avo tool ...`: the agent's tools as a command line, for external coding agents (agent=cli).

Inside an agent=cli workspace, `AVO_TOOL_STATE` names a JSON file written by the operator; its
`socket` is a Unix socket on which the operator serves the very same ToolBox the built-in agent
uses (same sandbox, same evaluator settings, every call in the candidate's transcript). This
module is only the thin client: parse the command line, send one request, print the answer.

Exit status: 0 done, 1 the tool failed (message printed), 2 usage error or not inside a
workspace, 3 `submit` answered with the self-critique: review it, then run `submit` again.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
from pathlib import Path
from typing import Any, Optional

STATE_ENV = "AVO_TOOL_STATE"
EXIT_OK, EXIT_TOOL, EXIT_USAGE, EXIT_CRITIQUE = 0, 1, 2, 3

USAGE = """\
avo tool lineage [log [--limit N] | show VERSION | diff A B]   accepted versions, their sources and diffs
avo tool archive [--limit N] [--id ID] [--status S] [--failed] what was tried, what failed and why
avo tool kb search WORDS... [-k N] [--source NAME]             search the knowledge base
avo tool kb read SOURCE PATH [START [END]]                     read lines of a knowledge-base file
avo tool diff                                                  your changes to the kernel so far
avo tool compile                                               import + compile the kernel only
avo tool test                                                  compile + correctness on the smoke suite
avo tool bench [--incumbent]                                   full evaluation on the run's suite
avo tool submit --rationale TEXT | --rationale-file FILE       submit the kernel (what, why, measured)"""

# The tools a client may call; the file tools are left to the external agent's own editor.
SERVED = ("lineage_log", "lineage_show", "lineage_diff", "archive_query", "kb_search", "kb_read",
          "workspace_diff", "compile", "test", "bench", "submit")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="avo tool", description="The avo agent's tools.", usage=USAGE)
    sub = p.add_subparsers(dest="cmd", required=True)
    lin = sub.add_parser("lineage")
    lin_sub = lin.add_subparsers(dest="action")
    log = lin_sub.add_parser("log")
    log.add_argument("--limit", type=int, default=30)
    show = lin_sub.add_parser("show")
    show.add_argument("version", type=int)
    diff = lin_sub.add_parser("diff")
    diff.add_argument("a", type=int)
    diff.add_argument("b", type=int)
    arch = sub.add_parser("archive")
    arch.add_argument("--limit", type=int, default=20)
    arch.add_argument("--id", type=int)
    arch.add_argument("--status")
    arch.add_argument("--failed", action="store_true")
    kb = sub.add_parser("kb")
    kb_sub = kb.add_subparsers(dest="action", required=True)
    search = kb_sub.add_parser("search")
    search.add_argument("words", nargs="+")
    search.add_argument("-k", type=int, default=8)
    search.add_argument("--source")
    read = kb_sub.add_parser("read")
    read.add_argument("source")
    read.add_argument("path")
    read.add_argument("start", type=int, nargs="?", default=1)
    read.add_argument("end", type=int, nargs="?")
    for name in ("diff", "compile", "test"):
        sub.add_parser(name)
    bench = sub.add_parser("bench")
    bench.add_argument("--incumbent", action="store_true", help="time interleaved with the incumbent")
    submit = sub.add_parser("submit")
    group = submit.add_mutually_exclusive_group(required=True)
    group.add_argument("--rationale")
    group.add_argument("--rationale-file")
    return p


def request_for(argv: list[str]) -> tuple[str, dict[str, Any]]:
    """(tool name, arguments) for a command line; argparse exits 2 on a usage error."""
    a = _parser().parse_args(argv)
    if a.cmd == "lineage":
        if a.action == "show":
            return "lineage_show", {"version": a.version}
        if a.action == "diff":
            return "lineage_diff", {"a": a.a, "b": a.b}
        return "lineage_log", {"limit": getattr(a, "limit", 30)}
    if a.cmd == "archive":
        args: dict[str, Any] = {"limit": a.limit, "failed_only": a.failed}
        if a.id is not None:
            args["id"] = a.id
        if a.status:
            args["status"] = a.status
        return "archive_query", args
    if a.cmd == "kb":
        if a.action == "search":
            args = {"query": " ".join(a.words), "k": a.k}
            if a.source:
                args["source"] = a.source
            return "kb_search", args
        args = {"source": a.source, "path": a.path, "start_line": a.start}
        if a.end is not None:
            args["end_line"] = a.end
        return "kb_read", args
    if a.cmd == "diff":
        return "workspace_diff", {}
    if a.cmd in ("compile", "test"):
        return a.cmd, {}
    if a.cmd == "bench":
        return "bench", {"against_incumbent": a.incumbent}
    rationale = a.rationale if a.rationale is not None else Path(a.rationale_file).read_text()
    return "submit", {"rationale": rationale}


def call(socket_path: str, tool: str, args: dict[str, Any], timeout: Optional[float] = None) -> dict[str, Any]:
    """One request to the operator's tool server: {"ok", "text", "submitted"}."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(socket_path)
        s.sendall(json.dumps({"tool": tool, "args": args}).encode() + b"\n")
        s.shutdown(socket.SHUT_WR)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    return json.loads(data.decode())


def main(argv: Optional[list[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE)
        return EXIT_OK if argv else EXIT_USAGE
    state_file = os.environ.get(STATE_ENV)
    if not state_file or not Path(state_file).is_file():
        print(f"avo tool: not inside an avo agent workspace ({STATE_ENV} is unset or stale); "
              "these tools run while `agent=cli` drives an external agent", file=sys.stderr)
        return EXIT_USAGE
    try:
        tool, args = request_for(argv)
    except OSError as exc:  # --rationale-file that cannot be read
        print(f"avo tool: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except UnicodeDecodeError:  # ... or is no text: say so, without quoting its bytes
        print("avo tool: the --rationale-file is not UTF-8 text", file=sys.stderr)
        return EXIT_USAGE
    state = json.loads(Path(state_file).read_text())
    try:
        reply = call(state["socket"], tool, args)
    except (OSError, ValueError) as exc:
        print(f"avo tool: the avo operator is not answering ({exc}); the variation may have ended",
              file=sys.stderr)
        return EXIT_USAGE
    print(reply.get("text", ""))
    if not reply.get("ok", False):
        return EXIT_TOOL
    if tool == "submit" and not reply.get("submitted", False):
        return EXIT_CRITIQUE
    return EXIT_OK
