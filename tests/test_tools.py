"""The agent's tools: the workspace sandbox, edits, dispatch, submit/critique, history and
knowledge tools, and the redaction every transcript and log line goes through."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import pytest

from avo.archive import Archive, Candidate, Version
from avo.lineage import Lineage
from avo.operators.tools import ToolBox, ToolState
from avo.operators.transcript import (REDACTED, RedactingFilter, Transcript, read, redact, secret_values)
from avo.operators.workspace import SandboxError, Workspace
from avo.search.fakes import FakeEvaluator

ROOT = Path(__file__).resolve().parents[1]
SEED = (ROOT / "kernels" / "reference" / "chunked.py").read_text()
TILE_LINE = '    block_m, block_n = KNOBS["block_m"], KNOBS["block_n"]\n'


@pytest.fixture
def ws(tmp_path):
    return Workspace.create(tmp_path / "ws", SEED)


def box(ws, **kw) -> ToolBox:
    return ToolBox(ToolState(workspace=ws, parent_source=SEED, **kw))


# -- sandbox -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("bad", ["../outside.py", "/etc/passwd", "sub/../../x", "~/x", "", "a\x00b"])
def test_paths_outside_the_workspace_are_refused(ws, bad):
    with pytest.raises(SandboxError):
        ws.resolve(bad)


def test_symlinks_pointing_out_are_refused_for_read_and_write(ws, tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("do not read")
    (ws.root / "link.txt").symlink_to(secret)
    (ws.root / "dirlink").symlink_to(tmp_path)
    for path in ("link.txt", "dirlink/secret.txt", "dirlink/new.py"):
        with pytest.raises(SandboxError):
            ws.resolve(path)
    tools = box(ws)
    out = tools.call("read_file", {"path": "link.txt"})
    assert not out.ok and "outside" in out.text and "do not read" not in out.text
    out = tools.call("write_file", {"path": "dirlink/new.py", "content": "x = 1\n"})
    assert not out.ok and not (tmp_path / "new.py").exists()
    out = tools.call("replace_in_file", {"path": "link.txt", "search": "do", "replace": "did"})
    assert not out.ok and secret.read_text() == "do not read"
    assert "link.txt" not in tools.call("list_files", {}).text  # not even listed


def test_links_inside_the_workspace_and_subdirectories_are_fine(ws):
    (ws.root / "alias.py").symlink_to(ws.kernel_path)
    assert ws.resolve("alias.py") == ws.kernel_path
    assert "wrote sub/helper.py" in ws.write("sub/helper.py", "X = 1\n")
    assert (ws.root / "sub" / "helper.py").read_text() == "X = 1\n"


def test_exact_replace_must_match_once(ws):
    with pytest.raises(SandboxError, match="not found"):
        ws.replace("kernel.py", "this text is not in the kernel", "x")
    with pytest.raises(SandboxError, match="occurs"):
        ws.replace("kernel.py", "block_m", "bm")  # many occurrences
    before = ws.kernel_source()
    msg = ws.replace("kernel.py", TILE_LINE, TILE_LINE + "    block_m *= 2\n")
    assert f"first at line {before[:before.index(TILE_LINE)].count(chr(10)) + 1})" in msg
    assert ws.kernel_source() == before.replace(TILE_LINE, TILE_LINE + "    block_m *= 2\n")
    ws.replace("kernel.py", "block_m", "bm", replace_all=True)
    assert "block_m" not in ws.kernel_source()


def test_whole_file_writes_are_for_small_files(ws):
    with pytest.raises(SandboxError, match="replace_in_file"):
        ws.write("kernel.py", "x" * 100_000)
    assert ws.kernel_source() == SEED


def test_read_file_numbers_lines_and_pages(ws):
    text = ws.read("kernel.py", 20, 22)
    assert "   20  " in text and "   22  " in text and "   23  " not in text and "more lines" in text


# -- nothing of a file outside the workspace reaches the model ---------------------------------------
# The agent's own kernel runs (in the evaluator) while it works, so it can plant links in the
# workspace: to /etc/passwd, to the run's .avo/secret, or a hard link, a second name no path
# check can see. No tool result, error text included, may carry such a file's contents.

OUTSIDE = "root:x:0:0:TOP-SECRET-LINE-1\nline-two-SECRET\n"


@pytest.fixture
def run_ws(tmp_path):
    """A workspace where the search puts one: in the run dir, beside the run's secret."""
    from avo.search import results

    run = tmp_path / "run"
    results.secret(run)
    outside = tmp_path / "outside.txt"
    outside.write_text(OUTSIDE)
    return Workspace.create(run / "candidates" / "0001" / "workspace", SEED), outside, run / ".avo" / "secret"


def _calls(tools):
    return [tools.call("read_file", {"path": "kernel.py"}),
            tools.call("replace_in_file", {"path": "kernel.py", "search": "root", "replace": "toor"}),
            tools.call("workspace_diff", {}), tools.call("compile", {}), tools.call("test", {}),
            tools.call("bench", {"against_incumbent": True}), tools.call("submit", {"rationale": "r"})]


@pytest.mark.parametrize("how", ["symlink", "symlink-to-secret", "hardlink", "hardlink-to-secret"])
def test_a_kernel_file_that_is_a_link_out_is_never_read_nor_evaluated(run_ws, tmp_path, how):
    import os

    ws, outside, secret = run_ws
    target = secret if how.endswith("secret") else outside
    ws.kernel_path.unlink()
    (ws.kernel_path.symlink_to if how.startswith("symlink") else lambda t: os.link(t, ws.kernel_path))(target)
    before = target.read_bytes()
    fake = FakeEvaluator()
    incumbent = tmp_path / "incumbent.py"
    incumbent.write_text(SEED)
    tools = box(ws, evaluate=fake, parent_path=incumbent, require_change=False)
    outs = _calls(tools)
    assert not any(o.ok for o in outs), [o.text for o in outs]
    text = "\n".join(o.text for o in outs)
    for piece in ("TOP-SECRET", "SECRET", before.hex()[:16]):
        assert piece not in text
    assert "root:x" not in text and before.decode(errors="replace")[:8] not in text
    assert fake.calls == [] and tools.state.submission is None  # never given to the evaluator
    assert target.read_bytes() == before  # nor edited


def test_hard_links_are_neither_read_nor_edited_but_can_be_replaced(run_ws):
    import os

    ws, outside, _ = run_ws
    os.link(outside, ws.root / "notes.txt")
    tools = box(ws)
    for out in (tools.call("read_file", {"path": "notes.txt"}),
                tools.call("replace_in_file", {"path": "notes.txt", "search": "root", "replace": "x"})):
        assert not out.ok and "hard link" in out.text and "SECRET" not in out.text
    assert tools.call("write_file", {"path": "notes.txt", "content": "mine\n"}).ok
    assert (ws.root / "notes.txt").read_text() == "mine\n" and outside.read_text() == OUTSIDE


def test_a_new_workspace_replaces_a_planted_kernel_link_instead_of_writing_through(run_ws):
    ws, outside, secret = run_ws
    key = secret.read_bytes()
    for target in (outside, secret):
        ws.kernel_path.unlink()
        ws.kernel_path.symlink_to(target)
        again = Workspace.create(ws.root, SEED)
        assert not again.kernel_path.is_symlink() and again.kernel_source() == SEED
    assert outside.read_text() == OUTSIDE and secret.read_bytes() == key


def test_a_symlinked_incumbent_is_not_timed(ws, tmp_path):
    (tmp_path / "passwd").write_text(OUTSIDE)
    (tmp_path / "incumbent.py").symlink_to(tmp_path / "passwd")
    fake = FakeEvaluator()
    out = box(ws, evaluate=fake, parent_path=tmp_path / "incumbent.py").call("bench", {"against_incumbent": True})
    assert not out.ok and "incumbent" in out.text and fake.calls == []


def test_kb_read_of_the_run_source_opens_only_what_it_indexed(tmp_path):
    from avo.knowledge import KnowledgeBase
    from avo.search import results

    run = tmp_path / "run"
    (run / "notes").mkdir(parents=True)
    (run / "notes" / "idea.md").write_text("# Idea\n\nwarp specialisation helps\n")
    results.secret(run)
    (run / "candidates" / "0001").mkdir(parents=True)
    (run / "candidates" / "0001" / "stolen.md").write_text(OUTSIDE)  # not a notes file
    (run / "notes" / "link.md").symlink_to(tmp_path / "passwd")  # planted: never indexed
    (tmp_path / "passwd").write_text(OUTSIDE)
    kb = KnowledgeBase.from_config({"sources": [{"name": "run", "kind": "run"}]}, run_dir=run)
    ws = Workspace.create(tmp_path / "ws", SEED)
    tools = box(ws, knowledge=lambda: kb)
    assert "warp specialisation" in tools.call("kb_read", {"source": "run", "path": "notes/idea.md"}).text
    for path in ("candidates/0001/stolen.md", "notes/link.md", ".avo/secret"):
        out = tools.call("kb_read", {"source": "run", "path": path})
        assert not out.ok and "SECRET" not in out.text, path
    assert "SECRET" not in tools.call("kb_search", {"query": "root secret line"}).text


def test_the_tool_cli_does_not_quote_an_unreadable_rationale_file(tmp_path, monkeypatch, capsys):
    from avo.tool import EXIT_USAGE, STATE_ENV, main

    state = tmp_path / "state.json"
    state.write_text("{}")
    monkeypatch.setenv(STATE_ENV, str(state))
    binary = tmp_path / "secret.bin"
    binary.write_bytes(b"\xff\xfeTOP-SECRET\x00" * 4)
    assert main(["submit", "--rationale-file", str(binary)]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert "not UTF-8" in err and "SECRET" not in err and "0xff" not in err


# -- dispatch ----------------------------------------------------------------------------------------

def test_dispatch_reports_mistakes_to_the_model_instead_of_raising(ws):
    tools = box(ws)
    assert "unknown tool" in tools.call("rm_rf", {}).text
    assert "not valid JSON" in tools.call("read_file", "{path: kernel.py").text
    out = tools.call("read_file", {"path": "kernel.py", "mode": "rb"})
    assert not out.ok and "unknown ['mode']" in out.text
    assert "missing ['path']" in tools.call("read_file", {}).text
    assert tools.call("read_file", json.dumps({"path": "kernel.py"})).ok
    schemas = tools.schemas()
    names = {s["function"]["name"] for s in schemas}
    assert {"lineage_log", "archive_query", "kb_search", "kb_read", "read_file", "replace_in_file",
            "write_file", "compile", "test", "bench", "submit"} <= names
    for s in schemas:
        assert s["type"] == "function" and s["function"]["parameters"]["type"] == "object"


def test_evaluation_tools_call_the_bound_evaluator_with_suite_and_stages(ws, tmp_path):
    fake = FakeEvaluator()
    incumbent = tmp_path / "incumbent.py"
    incumbent.write_text(SEED)
    tools = box(ws, evaluate=fake, parent_path=incumbent)
    assert "status=ok" in tools.call("compile", {}).text
    assert tools.call("test", {}).evaluated
    out = tools.call("bench", {"against_incumbent": True})
    assert "vs incumbent" in out.text and "suite score" in out.text
    # Each evaluation is of a private copy of the kernel as it was when the tool ran (a file the
    # kernel's own code cannot change between the read and the evaluation), named as the kernel.
    assert {Path(c["kernel"]).name for c in fake.calls} == {"kernel.py"}
    assert all(ws.root not in Path(c["kernel"]).parents for c in fake.calls)
    assert {c["source"] for c in fake.calls} == {ws.kernel_path.read_text()}
    assert [c["stages"] for c in fake.calls] == [("compile",), ("compile", "correctness"),
                                                  ("compile", "correctness", "benchmark", "reverify")]
    assert fake.calls[2]["incumbent"] == str(incumbent)
    assert tools.state.evaluations == 3


def test_evaluations_are_capped_by_the_variation_wall_time(ws):
    seen = []
    fake = FakeEvaluator()

    def evaluate(kernel, **kw):
        seen.append(kw.get("timeout"))
        return fake(kernel, **kw)

    left = [42.0]
    tools = box(ws, evaluate=evaluate, time_left=lambda: left[0])
    assert tools.call("test", {}).ok and seen == [42.0]
    left[0] = 0.5
    out = tools.call("bench", {})
    assert not out.ok and "wall time is used up" in out.text and seen == [42.0]


def test_a_kernel_file_linked_to_another_file_of_the_workspace_is_refused(ws):
    """Inside or not, kernel.py must be a regular file: a link could be re-pointed between the
    test and the submit (code the agent ran can swap it)."""
    fake = FakeEvaluator()
    tools = box(ws, evaluate=fake)
    ws.replace("kernel.py", TILE_LINE, TILE_LINE + "    block_m *= 2\n")
    assert tools.call("test", {}).ok
    (ws.root / "other.py").write_text(ws.kernel_source())
    ws.kernel_path.unlink()
    ws.kernel_path.symlink_to(ws.root / "other.py")
    for name, args in (("test", {}), ("submit", {"rationale": "r"}), ("read_file", {"path": "kernel.py"})):
        out = tools.call(name, args)
        assert not out.ok and "symbolic link" in out.text, (name, out.text)
    assert len(fake.calls) == 1 and tools.state.submission is None
    assert tools.call("write_file", {"path": "kernel.py", "content": (ws.root / "other.py").read_text()}).ok
    assert not ws.kernel_path.is_symlink() and tools.call("test", {}).ok


def test_an_evaluator_crash_is_a_tool_error_not_a_crash_of_the_loop(ws):
    def broken(*a, **k):
        raise RuntimeError("child died")

    out = box(ws, evaluate=broken).call("test", {})
    assert not out.ok and "child died" in out.text


def test_submit_needs_a_change_a_rationale_and_one_critique(ws):
    tools = box(ws, critique="Check causal and GQA.")
    assert "unchanged" in tools.call("submit", {"rationale": "nothing"}).text
    ws.replace("kernel.py", TILE_LINE, TILE_LINE + "    block_m *= 2\n")
    assert "rationale is required" in tools.call("submit", {"rationale": "  "}).text
    first = tools.call("submit", {"rationale": "bigger tiles"})
    assert first.ok and not first.submitted and "Check causal and GQA." in first.text
    second = tools.call("submit", {"rationale": "bigger tiles, checked"})
    assert second.submitted and tools.state.submission.rationale == "bigger tiles, checked"
    assert tools.state.submission.source == ws.kernel_source()


# -- history and knowledge ---------------------------------------------------------------------------

def _run_with_history(run_dir: Path) -> None:
    lin = Lineage.of_run(run_dir)
    lin.init()
    sha0 = lin.commit(SEED, "seed: chunked", {"Candidate": 0, "Score": "1.0"})
    better = SEED.replace(TILE_LINE, TILE_LINE + "    block_m *= 2\n")
    sha1 = lin.commit(better, "double block_m", {"Candidate": 1, "Score": "1.5"})
    with Archive(run_dir) as arch:
        arch.add_seed(Version(0, 0, sha0, "h0", 1.0))
        arch.record(Candidate(1, 0, "avo", "ok", "accepted", True, "h1", "diff1", "double block_m", score=1.5),
                    Version(1, 1, sha1, "h1", 1.5))
        arch.record(Candidate(2, 1, "avo", "incorrect", "failed:correctness", stage="correctness",
                              message="relative error 0.3 > 6e-3", rationale="skip the mask", diff="-mask"))


def test_lineage_and_archive_tools_show_what_was_tried(ws, tmp_path):
    _run_with_history(tmp_path)
    tools = box(ws, run_dir=tmp_path)
    log = tools.call("lineage_log", {}).text
    assert "seed: chunked" in log and "double block_m" in log
    shown = tools.call("lineage_show", {"version": 1}).text
    assert "double block_m" in shown and "block_m *= 2" in shown
    assert "+    block_m *= 2" in tools.call("lineage_diff", {"a": 0, "b": 1}).text
    assert "no version 7" in tools.call("lineage_show", {"version": 7}).text
    table = tools.call("archive_query", {}).text
    assert "failed:correctness" in table and "relative error 0.3" in table and "accepted" in table
    assert "accepted" not in tools.call("archive_query", {"failed_only": True}).text.split("\n", 1)[1]
    one = tools.call("archive_query", {"id": 2}).text
    assert "skip the mask" in one and "-mask" in one and "correctness" in one
    assert "no candidate 9" in tools.call("archive_query", {"id": 9}).text


def test_history_tools_without_a_run_say_so(ws, tmp_path):
    tools = box(ws, run_dir=tmp_path / "empty")
    assert "no lineage" in tools.call("lineage_log", {}).text
    assert "no archive" in tools.call("archive_query", {}).text


@dataclass
class _Hit:
    source: str
    path: str
    start_line: int
    end_line: int
    title: str
    score: float
    snippet: str


class _FakeKB:
    def __init__(self):
        self.reads = []

    def search(self, query, k=8, source=None):
        return [_Hit("notes", "pipelining.md", 3, 9, "Pipelining", 4.2, f"about {query}")][:k]

    def read(self, source, path, start, end):
        self.reads.append((source, path, start, end))
        return f"{source}:{path}:{start}-{end}"


def test_knowledge_tools_search_and_read(ws):
    kb = _FakeKB()
    tools = box(ws, knowledge=lambda: kb)
    out = tools.call("kb_search", {"query": "tma multicast", "k": 3})
    assert "[notes] pipelining.md:3-9" in out.text and "about tma multicast" in out.text
    assert tools.call("kb_read", {"source": "notes", "path": "pipelining.md", "start_line": 3}).ok
    assert kb.reads == [("notes", "pipelining.md", 3, 202)]
    assert "no knowledge base" in box(ws).call("kb_search", {"query": "x"}).text


def test_knowledge_tools_on_the_real_notes_folder(ws):
    from avo.knowledge import KnowledgeBase

    kb = KnowledgeBase([{"name": "notes", "kind": "folder", "path": "knowledge", "optional": False}])
    tools = box(ws, knowledge=lambda: kb)
    hits = tools.call("kb_search", {"query": "online softmax", "k": 2})
    assert hits.ok and "[notes]" in hits.text
    ref = hits.text.splitlines()[0].split("] ", 1)[1].split()[0]  # path:start-end
    path, lines = ref.rsplit(":", 1)
    start = int(lines.split("-")[0])
    assert tools.call("kb_read", {"source": "notes", "path": path, "start_line": start}).ok
    escape = tools.call("kb_read", {"source": "notes", "path": "../avo/config.py"})
    assert not escape.ok


# -- redaction ---------------------------------------------------------------------------------------

KEY = "sk-ant-api03-THISisNOTaREALkeyBUTlooksLIKEone0123456789"
ENV = {"ANTHROPIC_API_KEY": KEY, "MY_SERVICE_TOKEN": "tok-1234567890abcdef", "HOME": "/root",
       "CUSTOM_VAR": "custom-secret-value-42", "SHORT_TOKEN": "1"}


def test_secret_values_come_from_credential_like_variables():
    values = secret_values(["CUSTOM_VAR"], environ=ENV)
    assert KEY in values and "tok-1234567890abcdef" in values and "custom-secret-value-42" in values
    assert "/root" not in values and "1" not in values  # not credentials / too short to redact


def test_redaction_of_values_and_key_shapes_in_nested_records():
    secrets = secret_values(["CUSTOM_VAR"], environ=ENV)
    record = {"content": f"my key is {KEY}", "args": ["custom-secret-value-42", {"h": "Bearer abcdefghijklmnop"}],
              "other": "sk-proj-0123456789abcdefghijklmnop and ghp_0123456789abcdefghijklmnopqrstu", "n": 3}
    out = redact(record, secrets)
    text = json.dumps(out)
    for leaked in (KEY, "custom-secret-value-42", "abcdefghijklmnop", "sk-proj-0123", "ghp_0123"):
        assert leaked not in text
    assert out["n"] == 3 and out["content"] == f"my key is {REDACTED}"


def test_transcripts_are_redacted_before_they_are_written(tmp_path):
    tr = Transcript(tmp_path / "t.jsonl", [KEY])
    tr.write("message", role="assistant", content=f"use {KEY}")
    tr.write("tool_result", content={"env": KEY})
    raw = (tmp_path / "t.jsonl").read_text()
    assert KEY not in raw and raw.count(REDACTED) == 2
    assert [r["event"] for r in read(tmp_path / "t.jsonl")] == ["message", "tool_result"]


def test_log_records_are_redacted(caplog):
    log = logging.getLogger("avo.test_redaction")
    log.addFilter(RedactingFilter([KEY]))
    with caplog.at_level(logging.INFO, logger="avo.test_redaction"):
        log.info("calling with key %s", KEY)
    assert KEY not in caplog.text and REDACTED in caplog.text


def test_install_log_redaction_covers_child_loggers(monkeypatch, caplog):
    from avo.operators.transcript import install_log_redaction

    value = "avo-test-secret-0123456789"
    monkeypatch.setenv("AVO_TEST_API_KEY", value)
    caplog.set_level(logging.INFO)
    install_log_redaction(["AVO_TEST_API_KEY"])  # onto the root's handlers, caplog's among them
    try:
        logging.getLogger("avo.search.deep.child").warning("key=%s", value)
        assert caplog.records and value not in caplog.text and REDACTED in caplog.text
    finally:
        for target in [logging.getLogger(n) for n in ("avo", "LiteLLM", "litellm")] + logging.getLogger().handlers:
            for f in [f for f in target.filters if isinstance(f, RedactingFilter)]:
                target.removeFilter(f)


def test_key_shapes_are_redacted_only_at_the_start_of_a_token():
    from avo.operators.transcript import redact_text

    key = "sk-ant-api03-abcdefghijklmnopqrstuvwxyz0123"
    assert redact_text(f"key={key} and '{key}'", []) == f"key={REDACTED} and '{REDACTED}'"
    code = "mask-rcnn_abcdefghijklmnop disk-0123456789abcdefgh ghp_ is short"
    assert redact_text(code, []) == code  # ordinary identifiers that contain "sk-" stay
