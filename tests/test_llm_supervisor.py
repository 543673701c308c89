"""search.supervisor=model through litellm's real HTTP client against a local OpenAI-compatible
server (no mocked `completion`): the model's directive reaches the next variation, every failure
falls back to the template with its reason recorded, and a resume never asks the model again."""

from __future__ import annotations

import json
import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace

import pytest

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no network fetch at import
pytest.importorskip("litellm")

from hydra import compose, initialize_config_dir  # noqa: E402

from avo import config as avo_config  # noqa: E402
from avo.archive import Archive  # noqa: E402
from avo.config import ConfigError  # noqa: E402
from avo.logging.base import MultiLogger  # noqa: E402
from avo.operators.base import OperatorError  # noqa: E402
from avo.operators.transcript import REDACTED  # noqa: E402
from avo.paths import conf_dir  # noqa: E402
from avo.search import results  # noqa: E402
from avo.search.fakes import KERNEL, FakeEvaluator, ScriptedOperator  # noqa: E402
from avo.search.run import build_engine  # noqa: E402
from avo.search.seed import Seed  # noqa: E402
from test_llm_http import _reply  # noqa: E402

avo_config.register()

KEY_ENV = "AVO_TEST_SUPERVISOR_KEY"
KEY = "sk-test-supervisor-0123456789abcdefghij"
# Iteration 1 fails to compile, 2 is an operator error: with patience 2 the supervisor reviews at 3.
STEPS = ["broken", None, "broken", "broken"]
DIRECTIONS = "1. Pipeline the K/V loads two stages deep.\n2. Try a 128x64 tile for the long shapes."
SERVER_ERROR = (500, {"error": {"message": "boom", "type": "server_error"}})


@pytest.fixture
def server():
    """A chat-completions server: each POST takes the next of `replies` ((status, body) or "hang"),
    then `default`; every request is kept in `requests` (headers and body)."""
    s = SimpleNamespace(replies=[], default=(200, _reply(DIRECTIONS)), requests=[], release=threading.Event())

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 - the http.server API
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            s.requests.append({"headers": dict(self.headers), "body": body})
            action = s.replies.pop(0) if s.replies else s.default
            if action == "hang":
                s.release.wait(60)  # never answers while the test runs: the client gives up first
                return
            status, reply = action
            data = json.dumps(reply).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    s.base = f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    yield s
    s.release.set()
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(autouse=True)
def key(monkeypatch):
    monkeypatch.setenv(KEY_ENV, KEY)


def _cfg(base, *overrides):
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        return compose(config_name="config", overrides=[
            "+experiment=smoke", "evaluator.repeats=5", "logger=none", "model=local_vllm", f"model.api_base={base}",
            f"model.api_key_env={KEY_ENV}", "search.supervisor=model", "search.stagnation_patience=2",
            "search.max_iterations=3", "search.supervisor_timeout_s=0.5", *overrides])


class Messages:
    def __init__(self):
        self.lines = []

    def message(self, text):
        self.lines.append(text)

    def __getattr__(self, name):
        return lambda *args: None


def _run(cfg, run_dir, operator=None, messages=None):
    operator = operator or ScriptedOperator(STEPS)
    engine = build_engine(cfg, run_dir, evaluate=FakeEvaluator(), operator=operator,
                          logger=MultiLogger([messages or Messages()]))
    try:
        engine.run(Seed(KERNEL, "fake seed"))
    finally:
        engine.archive.close()
    return operator


def _record(run_dir, n):
    return results.read(results.path(run_dir, n, "supervisor"), key=results.secret(run_dir), kind="supervisor",
                        candidate=n).result


def _rows(run_dir):
    with Archive(run_dir) as a:
        return a.candidates()


def test_the_model_reply_is_the_directive_the_next_variation_gets(server, tmp_path):
    server.default = (200, _reply(DIRECTIONS + f"\n(my key is {KEY})"))  # a model echoing a secret
    op = _run(_cfg(server.base), tmp_path)
    assert len(server.requests) == 1  # one intervention, one call
    req = server.requests[0]
    assert req["headers"]["Authorization"] == f"Bearer {KEY}"  # the key from model.api_key_env
    assert req["body"]["max_tokens"] == 2000 and len(req["body"]["messages"]) == 1
    prompt = req["body"]["messages"][0]["content"]
    # The trajectory: the versions with scores and per-shape speedups, the failures and why.
    assert "v0 (candidate 0): score" in prompt and "vs cudnn" in prompt and "per shape (TFLOP/s): fake" in prompt
    assert "#1 (varied candidate 0) failed:compile" in prompt and "SyntaxError: fake failure" in prompt
    assert "#2 (varied candidate 0) operator-error" in prompt and "scripted failure" in prompt
    assert "{" not in prompt  # every field was filled

    seen = {s["iteration"]: s["directive"] for s in op.seen}
    assert seen[1] is None and seen[2] is None
    assert seen[3].startswith("SUPERVISOR (review): the last 2 attempts") and DIRECTIONS in seen[3]
    assert KEY not in seen[3] and REDACTED in seen[3]
    row = _rows(tmp_path)[2]
    assert (row.intervention, row.directive) == ("review", seen[3])
    assert row.tokens == 5  # the supervisor's call is counted in the iteration's row (budgets see it)
    rec = _record(tmp_path, 3)
    assert (rec["source"], rec["error"], rec["directive"]) == ("model", None, seen[3])
    assert (tmp_path / "candidates" / "0003" / "supervisor.jsonl").is_file()
    for f in tmp_path.rglob("*"):  # the key is stored nowhere
        if f.is_file() and ".git" not in f.parts:
            assert KEY.encode() not in f.read_bytes(), f


@pytest.mark.parametrize("failure, reason", [
    ("server error", "InternalServerError"),
    ("hang", "Timeout"),
    ("empty", "empty reply"),
    ("cut", "supervisor_max_tokens=2000"),
])
def test_a_failed_call_falls_back_to_the_template_with_its_reason(server, tmp_path, failure, reason):
    cut = _reply("1. Pipeline the K/V loads two")
    cut["choices"][0]["finish_reason"] = "length"
    server.default = {"server error": SERVER_ERROR, "hang": "hang", "empty": (200, _reply("")),
                      "cut": (200, cut)}[failure]
    messages = Messages()
    op = _run(_cfg(server.base), tmp_path, messages=messages)
    assert server.requests  # the model was asked
    directive = {s["iteration"]: s["directive"] for s in op.seen}[3]
    assert "Step back" in directive  # the rule-based template's text...
    assert "[supervisor: this is the rule-based template; the model call failed:" in directive  # ...saying so
    assert reason in directive
    row = _rows(tmp_path)[2]
    assert len(_rows(tmp_path)) == 3 and (row.intervention, row.directive) == ("review", directive)
    rec = _record(tmp_path, 3)
    assert rec["source"] == "template" and reason in rec["error"] and rec["directive"] == directive
    events = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    assert [(e["source"], reason in e["error"]) for e in events if e["event"] == "supervisor"] == [("template", True)]
    assert any("supervisor model call for iteration 3 failed" in m for m in messages.lines)
    proposal = json.loads((tmp_path / "candidates" / "0003" / "proposal.json").read_text())
    assert proposal["supervisor"]["source"] == "template" and reason in proposal["supervisor"]["error"]


class Boom(BaseException):
    """Stands for kill -9 in the middle of iteration 3's proposal."""


def test_a_resume_reuses_the_decided_directive_and_never_calls_the_model_again(server, tmp_path):
    cfg = _cfg(server.base)
    crashing = ScriptedOperator(STEPS)
    real = crashing.propose

    def propose(ctx):
        proposal = real(ctx)
        if ctx.iteration == 3:
            raise Boom
        return proposal

    crashing.propose = propose
    with pytest.raises(Boom):
        _run(cfg, tmp_path, crashing)
    assert len(server.requests) == 1 and len(_rows(tmp_path)) == 2
    first = crashing.seen[-1]["directive"]
    assert DIRECTIONS in first

    server.default = (200, _reply("a different answer"))  # what a second call would say
    op = _run(cfg, tmp_path)  # the resume: the directive signed before the crash is reused
    assert [s["iteration"] for s in op.seen] == [3] and op.seen[0]["directive"] == first
    assert _rows(tmp_path)[2].directive == first and len(server.requests) == 1

    _run(cfg, tmp_path)  # every iteration decided: nothing is asked again
    assert len(server.requests) == 1


def test_the_template_mode_never_calls_the_model(server, tmp_path):
    op = _run(_cfg(server.base, "search.supervisor=template"), tmp_path)
    assert server.requests == []
    directive = {s["iteration"]: s["directive"] for s in op.seen}[3]
    assert "Step back" in directive and "rule-based template" not in directive
    assert not results.path(tmp_path, 3, "supervisor").exists()


def test_bad_supervisor_settings_are_one_line_errors(server):
    with pytest.raises(ConfigError, match=r"search.supervisor='llm' is not one of template, model"):
        avo_config.validate(_cfg(server.base, "search.supervisor=llm"))
    with pytest.raises(ConfigError, match="search.supervisor=model needs an LLM"):
        avo_config.validate(_cfg(server.base, "model=none"))
    with pytest.raises(ConfigError, match="cannot use model=scripted"):
        avo_config.validate(_cfg(server.base, "model=scripted"))
    with pytest.raises(ConfigError, match="search.supervisor_timeout_s must be > 0"):
        avo_config.validate(_cfg(server.base, "search.supervisor_timeout_s=0"))
    avo_config.validate(_cfg(server.base))


class FailingOperator:
    """An operator whose variation fails after a conversation that has a transcript (as agent=avo's)."""

    name = "failing"

    def propose(self, ctx):
        path = Path(ctx.run_dir) / "candidates" / f"{ctx.iteration:04d}" / "transcript.jsonl"
        path.write_text('{"event": "stop"}\n')
        err = OperatorError("stopped before a submit: agent.max_steps=1 reached")
        err.tokens, err.cost_usd, err.transcript = 123, 0.25, str(path)
        raise err


def test_a_failed_variation_keeps_its_transcript_path(server, tmp_path):
    _run(_cfg(server.base, "search.max_iterations=1", "search.supervisor=template"), tmp_path, FailingOperator())
    path = str(tmp_path / "candidates" / "0001" / "transcript.jsonl")
    signed = results.read(results.path(tmp_path, 1, "proposal"), key=results.secret(tmp_path), kind="proposal",
                          candidate=1).result
    for record in (signed, json.loads((tmp_path / "candidates" / "0001" / "proposal.json").read_text())):
        assert record["transcript"] == path and record["error"].startswith("stopped before a submit")
        assert (record["tokens"], record["cost_usd"]) == (123, 0.25)
    row = _rows(tmp_path)[0]
    assert (row.status, row.tokens, row.cost_usd) == ("operator_error", 123, 0.25)
