"""The `avo` agent end to end through litellm's real HTTP client, against a local server that speaks
the OpenAI chat-completions and the Anthropic messages protocols and replays a recorded
conversation (no mocked `completion`, no live provider): happy and repaired variations, the
adversarial replies an agent meets, provider failures, and the budgets."""

from __future__ import annotations

import copy
import json
import os
import random
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no network fetch at import
litellm = pytest.importorskip("litellm")

from hydra import compose, initialize_config_dir  # noqa: E402

from avo import config as avo_config  # noqa: E402
from avo.operators.agent import AvoAgent  # noqa: E402
from avo.operators.base import FatalOperatorError, OperatorError, VariationContext  # noqa: E402
from avo.operators.transcript import read  # noqa: E402
from avo.paths import conf_dir  # noqa: E402
from avo.search.fakes import FakeEvaluator  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SEED = (ROOT / "kernels" / "reference" / "chunked.py").read_text()
KEY = "sk-test-http-0123456789abcdefghijklmnop"
LINE = 'KNOBS["block_m"], KNOBS["block_n"]'
EDIT = ("replace_in_file", {"path": "kernel.py", "search": LINE, "replace": 'KNOBS["block_m"] * 2, KNOBS["block_n"]'})
BREAK = ("replace_in_file", {"path": "kernel.py", "search": LINE, "replace": LINE + "  # raise_compile_error"})
FIX = ("replace_in_file", {"path": "kernel.py", "search": "  # raise_compile_error", "replace": ""})
TEST = ("test", {})
SUBMIT = ("submit", {"rationale": "block_m x2, tested"})

avo_config.register()


@pytest.fixture(scope="module")
def base_cfg():
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        return compose(config_name="config", overrides=["+experiment=smoke", "agent=avo", "model=openai"])


def _openai_body(text, calls, usage):
    message = {"role": "assistant", "content": text}
    if calls:
        message["tool_calls"] = [{"id": f"call_{i}", "type": "function",
                                  "function": {"name": n, "arguments": a if isinstance(a, str) else json.dumps(a)}}
                                 for i, (n, a) in enumerate(calls)]
    return {"id": "x", "object": "chat.completion", "created": 0, "model": "test-model",
            "choices": [{"index": 0, "finish_reason": "tool_calls" if calls else "stop", "message": message}],
            "usage": {"prompt_tokens": usage[0], "completion_tokens": usage[1], "total_tokens": sum(usage[:2])}}


def _anthropic_body(text, calls, usage):
    content = [{"type": "text", "text": text}] if text else []
    content += [{"type": "tool_use", "id": f"toolu_{i}", "name": n, "input": a} for i, (n, a) in enumerate(calls)]
    return {"id": "msg_x", "type": "message", "role": "assistant", "model": "claude-test", "content": content,
            "stop_reason": "tool_use" if calls else "end_turn", "stop_sequence": None,
            "usage": {"input_tokens": usage[0], "output_tokens": usage[1],
                      "cache_creation_input_tokens": usage[2] if len(usage) > 2 else 0,
                      "cache_read_input_tokens": usage[3] if len(usage) > 3 else 0}}


@pytest.fixture
def server():
    """Replays `script`: ("turn", text, calls[, usage]) as a reply in the protocol asked,
    (status, headers, raw body) as is, ("hang", seconds) by waiting; then "idle" text replies."""
    script: list[tuple] = []
    seen: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 - the http.server API
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            seen.append({"path": self.path, "body": body, "headers": dict(self.headers)})
            item = script.pop(0) if script else ("turn", "idle", [])
            anthropic = self.path.endswith("/messages")
            if item[0] == "hang":
                time.sleep(item[1])
                item = ("turn", "late", [])
            if item[0] == "turn":
                usage = item[3] if len(item) > 3 else (100, 20)
                status, headers = 200, {}
                raw = json.dumps((_anthropic_body if anthropic else _openai_body)(item[1], item[2], usage))
            else:
                status, headers, raw = item
                raw = raw if isinstance(raw, str) else json.dumps(raw)
            data = raw.encode()
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in headers.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up (a hang test)

        def log_message(self, *args):
            pass

    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    srv.daemon_threads = True
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield script, seen, f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()


def _agent(base_cfg, tmp_path, monkeypatch, base, *, anthropic=False, sleeps=None, **agent):
    cfg = copy.deepcopy(base_cfg)
    if anthropic:
        monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)
        cfg.model.name, cfg.model.api_key_env, cfg.model.api_base = "anthropic/claude-sonnet-4-5", "ANTHROPIC_API_KEY", base
    else:
        monkeypatch.setenv("OPENAI_API_KEY", KEY)
        cfg.model.name, cfg.model.api_key_env, cfg.model.api_base = "openai/test-model", "OPENAI_API_KEY", base + "/v1"
    cfg.model.timeout_s = 30
    for k, v in agent.items():
        cfg.agent[k] = v
    sleeps = sleeps if sleeps is not None else []
    return AvoAgent(cfg, tmp_path, sleep=sleeps.append)


def _ctx(tmp_path, evaluate=None):
    return VariationContext(iteration=1, parent_id="0", parent_source=SEED, parent_result=None, run_dir=tmp_path,
                            workspace=tmp_path / "candidates" / "0001" / "workspace", rng=random.Random(0),
                            evaluate=evaluate or FakeEvaluator())


def _results(proposal_or_err):
    return [e for e in read(proposal_or_err.transcript) if e["event"] == "tool_result"]


HAPPY = [("turn", "looking", [("lineage_log", {}), ("read_file", {"path": "kernel.py"})]),
         ("turn", "edit", [EDIT, TEST]), ("turn", "done", [SUBMIT]), ("turn", "sure", [SUBMIT])]


def test_a_happy_variation_over_http(server, base_cfg, tmp_path, monkeypatch):
    script, seen, base = server
    script += HAPPY
    proposal = _agent(base_cfg, tmp_path, monkeypatch, base).propose(_ctx(tmp_path))
    assert 'KNOBS["block_m"] * 2' in proposal.source and proposal.tokens == 4 * 120
    assert len(seen) == 4 and all(s["path"].endswith("/chat/completions") for s in seen)
    assert {k.lower(): v for k, v in seen[0]["headers"].items()}["authorization"] == f"Bearer {KEY}"
    # What the model saw: the tool results of its turn, with the budgets after the last one.
    last = seen[2]["body"]["messages"][-1]
    assert last["role"] == "tool" and "[budget left: 38 of 40 steps" in last["content"]
    assert KEY not in Path(proposal.transcript).read_text()


def test_a_compile_error_is_repaired_then_submitted(server, base_cfg, tmp_path, monkeypatch):
    script, seen, base = server
    script += [("turn", "try", [BREAK, TEST]), ("turn", "submit anyway", [SUBMIT]),
               ("turn", "fix", [FIX, EDIT, TEST]), ("turn", "s", [SUBMIT]), ("turn", "s", [SUBMIT])]
    proposal = _agent(base_cfg, tmp_path, monkeypatch, base).propose(_ctx(tmp_path))
    res = _results(proposal)
    tested = [r for r in res if r["name"] == "test"]
    assert "compile_error" in tested[0]["content"] and "ok" in tested[1]["content"]
    assert "has not passed `test`" in [r for r in res if r["name"] == "submit"][0]["content"]
    assert "raise_compile_error" not in proposal.source and 'KNOBS["block_m"] * 2' in proposal.source
    # The compile error reached the model in the next request.
    assert any("compile_error" in (m.get("content") or "") for m in seen[1]["body"]["messages"] if m["role"] == "tool")


def test_adversarial_replies_get_error_results_and_the_variation_goes_on(server, base_cfg, tmp_path, monkeypatch):
    script, seen, base = server
    script += [("turn", "", [("write_file", "{not json")]),
               ("turn", "", [("rm_rf", {"path": "/"})]),
               ("turn", "I will now think about it at length. " * 2000, []),  # text only, long
               ("turn", "", [("read_file", {"path": "../../../etc/passwd"})]),
               ("turn", "", [("write_file", {"path": "kernel.py", "content": "x" * 200_000})])] + HAPPY[1:]
    proposal = _agent(base_cfg, tmp_path, monkeypatch, base).propose(_ctx(tmp_path))
    res = _results(proposal)
    assert "not valid JSON" in res[0]["content"] and "unknown tool 'rm_rf'" in res[1]["content"]
    assert "outside the workspace" in res[2]["content"] or "not allowed" in res[2]["content"]
    assert "up to" in res[3]["content"] and not res[3]["ok"]
    nudge = seen[3]["body"]["messages"][-1]
    assert nudge["role"] == "user" and "Continue with the tools" in nudge["content"]
    assert 'KNOBS["block_m"] * 2' in proposal.source


def test_an_agent_that_never_submits_stops_at_max_steps(server, base_cfg, tmp_path, monkeypatch):
    script, seen, base = server
    script += [("turn", "again", [("workspace_diff", {})])] * 6
    with pytest.raises(OperatorError, match="agent.max_steps=5 reached") as err:
        _agent(base_cfg, tmp_path, monkeypatch, base, max_steps=5).propose(_ctx(tmp_path))
    assert len(seen) == 5 and read(err.value.transcript)[-1]["submitted"] is False


def test_server_errors_are_retried_with_backoff_then_succeed(server, base_cfg, tmp_path, monkeypatch):
    script, seen, base = server
    err = {"error": {"message": "overloaded", "type": "server_error"}}
    script += [(429, {"Retry-After": "9"}, {"error": {"message": "slow", "type": "rate_limit"}}),
               (500, {}, err), (500, {}, err)] + HAPPY
    sleeps: list[float] = []
    proposal = _agent(base_cfg, tmp_path, monkeypatch, base, sleeps=sleeps).propose(_ctx(tmp_path))
    # Retry-After above the backoff is honoured; no retries below ours (litellm's and the OpenAI
    # client's are off), so each failure is one request.
    assert proposal.source and sleeps == [9.0, 10.0, 20.0] and len(seen) == 3 + len(HAPPY)
    assert [e["attempt"] for e in read(proposal.transcript) if e["event"] == "retry"] == [1, 2, 3]


def test_a_malformed_body_fails_the_variation_with_a_clear_error(server, base_cfg, tmp_path, monkeypatch):
    script, seen, base = server
    script += [(200, {}, "<html>gateway error</html>")] * 12
    with pytest.raises(OperatorError) as err:
        _agent(base_cfg, tmp_path, monkeypatch, base).propose(_ctx(tmp_path))
    assert "model call failed" in str(err.value)


def test_a_hanging_provider_is_bounded_by_the_wall_time(server, base_cfg, tmp_path, monkeypatch):
    script, seen, base = server
    script += [("hang", 30)] * 3
    with pytest.raises(OperatorError, match="wall_time_s|failed|timed out|Timeout") as err:
        _agent(base_cfg, tmp_path, monkeypatch, base, wall_time_s=2.0).propose(_ctx(tmp_path))
    assert not isinstance(err.value, FatalOperatorError)


def test_a_rejected_key_is_fatal_at_once(server, base_cfg, tmp_path, monkeypatch):
    script, seen, base = server
    script += [(401, {}, {"error": {"message": "invalid api key", "type": "invalid_request_error"}})] * 5
    with pytest.raises(FatalOperatorError):
        _agent(base_cfg, tmp_path, monkeypatch, base).propose(_ctx(tmp_path))
    assert len(seen) == 1  # never retried, by us or by litellm


def test_the_token_cap_stops_a_variation_whose_replies_are_huge(server, base_cfg, tmp_path, monkeypatch):
    script, seen, base = server
    script += [("turn", "", [("workspace_diff", {})], (30_000, 2_000))] * 5
    with pytest.raises(OperatorError, match="agent.max_tokens=50000 reached"):
        _agent(base_cfg, tmp_path, monkeypatch, base, max_tokens=50_000).propose(_ctx(tmp_path))
    assert len(seen) == 2


def test_anthropic_over_http_sends_cache_breakpoints_and_records_cached_tokens(server, base_cfg, tmp_path, monkeypatch):
    script, seen, base = server
    script += [("turn", "looking", [("read_file", {"path": "kernel.py"})], (2000, 50, 2000, 0)),
               ("turn", "edit", [EDIT, TEST], (2600, 60, 600, 2000)),
               ("turn", "done", [SUBMIT], (3000, 40, 400, 2600)),
               ("turn", "sure", [SUBMIT], (3200, 40, 200, 3000))]
    proposal = _agent(base_cfg, tmp_path, monkeypatch, base, anthropic=True).propose(_ctx(tmp_path))
    assert proposal.source and all(s["path"].endswith("/v1/messages") for s in seen)
    assert {k.lower(): v for k, v in seen[0]["headers"].items()}["x-api-key"] == KEY
    body = seen[2]["body"]
    system = body["system"] if isinstance(body["system"], list) else [{"text": body["system"]}]
    assert any(b.get("cache_control") == {"type": "ephemeral"} for b in system)
    assert json.dumps(body["messages"]).count('"cache_control"') == 2  # the last two user/tool messages
    stop = read(proposal.transcript)[-1]
    assert stop["cached_tokens"] == 2000 + 2600 + 3000
    assert stop["cache_written_tokens"] == 2000 + 600 + 400 + 200


def test_an_unknown_model_is_fatal(server, base_cfg, tmp_path, monkeypatch):
    script, seen, base = server
    script += [(404, {}, {"error": {"message": "The model `test-model` does not exist", "type": "invalid_request_error",
                                    "code": "model_not_found"}})] * 3
    with pytest.raises(FatalOperatorError, match="was not found"):
        _agent(base_cfg, tmp_path, monkeypatch, base).propose(_ctx(tmp_path))
    assert len(seen) == 1


def test_the_same_bad_request_twice_is_fatal(server, base_cfg, tmp_path, monkeypatch):
    script, seen, base = server
    bad = (400, {}, {"error": {"message": "temperature must be <= 1 for this model", "type": "invalid_request_error"}})
    script += [bad] * 4
    agent = _agent(base_cfg, tmp_path, monkeypatch, base)
    with pytest.raises(OperatorError) as first:
        agent.propose(_ctx(tmp_path))
    assert not isinstance(first.value, FatalOperatorError)  # once may be this conversation's fault
    with pytest.raises(FatalOperatorError, match="same request twice"):
        agent.propose(_ctx(tmp_path / "again"))
    assert len(seen) == 2


def test_the_cost_cap_stops_a_variation_priced_by_litellm(server, base_cfg, tmp_path, monkeypatch):
    script, seen, base = server
    script += [("turn", "", [("workspace_diff", {})], (400_000, 1_000))] * 5
    agent = _agent(base_cfg, tmp_path, monkeypatch, base, max_cost_usd=1.5, max_tokens=10 ** 9)
    agent.model.name = "openai/gpt-4o"  # a model litellm has a price for, served by the local server
    with pytest.raises(OperatorError, match="agent.max_cost_usd=1.5 reached") as err:
        agent.propose(_ctx(tmp_path))
    assert len(seen) == 2 and err.value.cost_usd > 1.5  # ~$1 per 400k prompt tokens


def test_a_reply_without_choices_fails_the_variation_with_its_spend_recorded(server, base_cfg, tmp_path, monkeypatch):
    script, seen, base = server
    script += [(200, {}, {"id": "x", "object": "chat.completion", "created": 0, "model": "gpt-4o", "choices": [],
                          "usage": {"prompt_tokens": 5000, "completion_tokens": 0, "total_tokens": 5000}})]
    agent = _agent(base_cfg, tmp_path, monkeypatch, base)
    agent.model.name = "openai/gpt-4o"
    with pytest.raises(OperatorError) as err:
        agent.propose(_ctx(tmp_path))
    assert err.value.tokens == 5000 and err.value.cost_usd > 0
    assert read(err.value.transcript)[-1]["tokens"] == 5000
