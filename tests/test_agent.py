"""agent=avo: the litellm tool loop, the scripted offline model, budgets, retries, credentials,
transcripts and key redaction. No network: the model is the scripted provider or a fake."""

from __future__ import annotations

import copy
import json
import os
import random
from pathlib import Path

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # before litellm: no price-map download

import litellm  # noqa: E402
import pytest
from hydra import compose, initialize_config_dir  # noqa: E402
from litellm.types.utils import ModelResponse  # noqa: E402

from avo import config as avo_config  # noqa: E402
from avo.config import ConfigError  # noqa: E402
from avo.operators import scripted  # noqa: E402
from avo.operators.agent import AvoAgent, check_credentials, render  # noqa: E402
from avo.operators.base import OperatorError, VariationContext  # noqa: E402
from avo.operators.transcript import REDACTED, read  # noqa: E402
from avo.paths import conf_dir  # noqa: E402
from avo.search.fakes import FakeEvaluator  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SEED = (ROOT / "kernels" / "reference" / "chunked.py").read_text()
SMOKE_SCRIPT = ROOT / "tests" / "data" / "scripted_smoke.jsonl"
KEY = "sk-test-0123456789abcdefghijklmnopqrstuv"

avo_config.register()


def _compose(*overrides):
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        return compose(config_name="config", overrides=["+experiment=smoke", "agent=avo", *overrides])


@pytest.fixture(scope="module")
def base_cfg():
    return _compose("model=scripted")


@pytest.fixture
def cfg(base_cfg):
    return copy.deepcopy(base_cfg)


def _ctx(tmp_path, evaluate=None, iteration=1, directive=None):
    return VariationContext(iteration=iteration, parent_id="0", parent_source=SEED, parent_result=None,
                            run_dir=tmp_path, workspace=tmp_path / "candidates" / f"{iteration:04d}" / "workspace",
                            rng=random.Random(0), evaluate=evaluate or FakeEvaluator(), directive=directive)


def _script(tmp_path, turns, name="s.jsonl"):
    path = tmp_path / name
    path.write_text("".join(json.dumps(t) + "\n" for t in turns))
    return str(path)


def _response(content="", calls=(), prompt=10, completion=5, model="gpt-4o"):
    message = {"role": "assistant", "content": content}
    if calls:
        message["tool_calls"] = [{"id": f"c{i}", "type": "function",
                                  "function": {"name": n, "arguments": json.dumps(a)}}
                                 for i, (n, a) in enumerate(calls)]
    return ModelResponse(model=model, choices=[{"index": 0, "message": message, "finish_reason": "stop"}],
                         usage={"prompt_tokens": prompt, "completion_tokens": completion,
                                "total_tokens": prompt + completion})


class FakeModel:
    """A completion function: replays `responses` (exceptions are raised) and records the calls."""

    def __init__(self, *responses):
        self.responses, self.calls = list(responses), []

    def __call__(self, **kwargs):
        self.calls.append({**kwargs, "messages": copy.deepcopy(kwargs.get("messages"))})  # as sent
        item = self.responses.pop(0) if self.responses else _response("idle")
        if isinstance(item, Exception):
            raise item
        return item


EDIT = ("replace_in_file", {"path": "kernel.py", "search": 'KNOBS["block_m"], KNOBS["block_n"]',
                            "replace": 'KNOBS["block_m"] * 2, KNOBS["block_n"]'})
SUBMIT = ("submit", {"rationale": "block_m x2"})
TEST = ("test", {})  # a submit is taken only for a source that passed test in the variation
SUBMIT_CALL = {"name": "submit", "arguments": {"rationale": "r"}}


def _openai_cfg(cfg, monkeypatch, **agent):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    cfg.model.name, cfg.model.api_key_env, cfg.model.script = "openai/gpt-4o", "OPENAI_API_KEY", None
    for k, v in agent.items():
        cfg.agent[k] = v
    return cfg


# -- the whole loop through litellm, offline -------------------------------------------------------

def test_the_scripted_smoke_conversation_edits_tests_benches_and_submits(cfg, tmp_path):
    fake = FakeEvaluator()
    proposal = AvoAgent(cfg, tmp_path).propose(_ctx(tmp_path, fake))
    assert proposal.source != SEED and "2 * block_m, 2 * block_n" in proposal.source
    assert proposal.rationale.startswith("Double block_m and block_n")
    assert proposal.tokens > 0 and proposal.cost_usd == 0.0
    events = read(proposal.transcript)
    assert Path(proposal.transcript) == tmp_path / "candidates" / "0001" / "transcript.jsonl"
    kinds = [e["event"] for e in events]
    assert kinds[0] == "meta" and kinds[-1] == "stop" and events[-1]["submitted"] is True
    called = [e["name"] for e in events if e["event"] == "tool_call"]
    assert called[:2] == ["lineage_log", "archive_query"] and called.count("submit") == 2
    evaluated = [e["name"] for e in events if e["event"] == "tool_result" and e["evaluated"]]
    assert evaluated == ["compile", "test", "bench"] and len(fake.calls) == 3
    critique = [e for e in events if e["event"] == "tool_result" and e["name"] == "submit"][0]
    assert "critique your own change" in critique["content"]
    roles = [e["role"] for e in events if e["event"] == "message"]
    assert roles[:2] == ["system", "user"] and roles.count("assistant") == 8
    usage = [e for e in events if e["event"] == "usage"]
    assert usage[-1]["total_tokens"] == proposal.tokens


def test_the_scripted_provider_answers_through_litellm_and_runs_out_politely(tmp_path):
    scripted.install(_script(tmp_path, [{"comment": "x"}, {"content": "hi", "tool_calls": [{"name": "list_files"}]}]),
                     "avo-scripted/unit")
    r = litellm.completion(model="avo-scripted/unit", messages=[{"role": "user", "content": "go"}])
    call = r.choices[0].message.tool_calls[0]
    assert call.function.name == "list_files" and json.loads(call.function.arguments) == {}
    assert r.usage.total_tokens > 0
    again = litellm.completion(model="avo-scripted/unit", messages=[
        {"role": "user", "content": "go"}, {"role": "assistant", "content": "hi"}])
    assert again.choices[0].message.content == scripted.EXHAUSTED and not again.choices[0].message.tool_calls


def test_a_bad_script_is_a_config_error(cfg, tmp_path):
    cfg.model.script = str(tmp_path / "missing.jsonl")
    with pytest.raises(ConfigError, match="no script"):
        AvoAgent(cfg, tmp_path)
    (tmp_path / "bad.jsonl").write_text("{not json\n")
    cfg.model.script = str(tmp_path / "bad.jsonl")
    with pytest.raises(ConfigError, match="bad.jsonl:1"):
        AvoAgent(cfg, tmp_path)


def test_prompts_are_rendered_with_the_run_facts_and_the_directive(cfg, tmp_path):
    cfg.model.script = _script(tmp_path, [{"content": "x", "tool_calls": [SUBMIT_CALL]}])
    cfg.agent.max_steps = 1
    with pytest.raises(OperatorError):
        AvoAgent(cfg, tmp_path).propose(_ctx(tmp_path, directive="Try a new tile shape."))
    events = read(tmp_path / "candidates" / "0001" / "transcript.jsonl")
    system, task = (e["content"] for e in events if e["event"] == "message" and e["role"] in ("system", "user"))
    assert "on cpu (cpu)" in system and "{hardware}" not in system
    assert "Iteration 1 of the avo search on the `smoke` suite (4 shapes)" in task
    assert "Try a new tile shape." in task and "kernel.py" in task


def test_old_tool_results_are_elided_from_the_context_but_not_the_transcript():
    from avo.operators.agent import compact

    messages = [{"role": "tool", "tool_call_id": str(i), "content": f"{i}:" + "x" * 5000} for i in range(10)]
    compact(messages, keep=8, limit=100)
    assert [len(m["content"]) < 300 for m in messages] == [True, True] + [False] * 8
    assert messages[0]["content"].startswith("0:xxx") and "call the tool again" in messages[0]["content"]


def test_render_keeps_unknown_fields_and_survives_code_braces():
    assert render("{a} and {b}", {"a": 1}) == "1 and {b}"
    assert render("x = {'k': {a}}", {"a": 2}) == "x = {'k': 2}"  # not a valid format string


# -- budgets ---------------------------------------------------------------------------------------

def test_max_steps_stops_an_agent_that_never_submits(cfg, tmp_path):
    cfg.model.script = _script(tmp_path, [{"content": "thinking"}] * 10)
    cfg.agent.max_steps = 3
    with pytest.raises(OperatorError, match="agent.max_steps=3") as err:
        AvoAgent(cfg, tmp_path).propose(_ctx(tmp_path))
    assert err.value.tokens > 0 and err.value.cost_usd == 0.0
    events = read(err.value.transcript)
    assert sum(e["event"] == "usage" for e in events) == 3
    assert events[-1]["event"] == "stop" and events[-1]["submitted"] is False
    nudges = [e for e in events if e["event"] == "message" and e["role"] == "user"][1:]
    assert len(nudges) == 3 and "submit" in nudges[0]["content"]


def test_max_tokens_and_cost_stop_the_loop(cfg, tmp_path, monkeypatch):
    _openai_cfg(cfg, monkeypatch, max_tokens=25, max_cost_usd=1000.0)
    model = FakeModel(*[_response("x", [("list_files", {})], prompt=10, completion=5) for _ in range(5)])
    with pytest.raises(OperatorError, match="agent.max_tokens=25 reached \\(30 tokens\\)"):
        AvoAgent(cfg, tmp_path, completion=model).propose(_ctx(tmp_path))
    assert len(model.calls) == 2

    _openai_cfg(cfg, monkeypatch, max_tokens=10**9, max_cost_usd=0.01)
    big = [_response("x", [("list_files", {})], prompt=2000, completion=1000) for _ in range(5)]
    model = FakeModel(*big)
    with pytest.raises(OperatorError, match="agent.max_cost_usd=0.01") as err:
        AvoAgent(cfg, tmp_path, completion=model).propose(_ctx(tmp_path, iteration=2))
    # litellm's own price list (bundled, offline): gpt-4o costs a little over $0.01 per 2000+1000 tokens.
    assert 0.01 <= err.value.cost_usd < 0.05 and len(model.calls) == 1


def test_wall_time_stops_the_loop(cfg, tmp_path, monkeypatch):
    _openai_cfg(cfg, monkeypatch, wall_time_s=60)
    now = [0.0]

    def clock():
        now[0] += 25.0  # every look at the clock: 25 s later
        return now[0]

    model = FakeModel(*[_response("x", [("list_files", {})]) for _ in range(5)])
    with pytest.raises(OperatorError, match="agent.wall_time_s=60"):
        AvoAgent(cfg, tmp_path, completion=model, clock=clock).propose(_ctx(tmp_path))
    assert 1 <= len(model.calls) <= 2


# -- retries and provider errors -------------------------------------------------------------------

def _rate_limit():
    return litellm.RateLimitError("slow down", llm_provider="openai", model="gpt-4o")


def _connection():
    return litellm.APIConnectionError("connection reset", llm_provider="openai", model="gpt-4o")


def test_transient_errors_are_retried_with_growing_backoff(cfg, tmp_path, monkeypatch):
    _openai_cfg(cfg, monkeypatch)
    cfg.model.num_retries = 3
    sleeps = []
    model = FakeModel(_rate_limit(), _connection(), _response("edit", [EDIT, TEST]), _response("done", [SUBMIT]),
                      _response("sure", [SUBMIT]))
    proposal = AvoAgent(cfg, tmp_path, completion=model, sleep=sleeps.append).propose(_ctx(tmp_path))
    assert proposal.rationale == "block_m x2" and sleeps == [5.0, 10.0]
    # litellm's own retries are off: they would retry a 400 or 401 too and ignore Retry-After.
    assert all(c["num_retries"] == 0 for c in model.calls)
    retries = [e for e in read(proposal.transcript) if e["event"] == "retry"]
    assert [r["attempt"] for r in retries] == [1, 2] and "RateLimitError" in retries[0]["error"]


def test_retries_give_up_after_num_retries(cfg, tmp_path, monkeypatch):
    _openai_cfg(cfg, monkeypatch)
    cfg.model.num_retries = 2
    sleeps = []
    model = FakeModel(_rate_limit(), _rate_limit(), _rate_limit(), _response("never"))
    with pytest.raises(OperatorError, match="failed after 3 attempt"):
        AvoAgent(cfg, tmp_path, completion=model, sleep=sleeps.append).propose(_ctx(tmp_path))
    assert sleeps == [5.0, 10.0] and len(model.calls) == 3


def test_authentication_errors_are_not_retried_and_name_the_variable(cfg, tmp_path, monkeypatch):
    _openai_cfg(cfg, monkeypatch)
    sleeps = []
    model = FakeModel(litellm.AuthenticationError(f"invalid x-api-key {KEY}", llm_provider="openai", model="gpt-4o"))
    with pytest.raises(OperatorError, match="OPENAI_API_KEY") as err:
        AvoAgent(cfg, tmp_path, completion=model, sleep=sleeps.append).propose(_ctx(tmp_path))
    assert sleeps == [] and len(model.calls) == 1
    raw = Path(err.value.transcript).read_text()
    assert KEY not in raw and REDACTED in raw


# -- credentials and redaction ---------------------------------------------------------------------

def test_a_missing_key_is_one_clear_error_naming_the_variable(cfg, tmp_path, monkeypatch):
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    cfg.model.name, cfg.model.api_key_env = "anthropic/claude-sonnet-4-5", "ANTHROPIC_API_KEY"
    with pytest.raises(ConfigError, match="needs the environment variable ANTHROPIC_API_KEY"):
        AvoAgent(cfg, tmp_path)
    monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)
    agent = AvoAgent(cfg, tmp_path, completion=FakeModel())
    monkeypatch.setenv("ANTHROPIC_API_KEY", "  ")  # unset between construction and the variation
    with pytest.raises(OperatorError, match="ANTHROPIC_API_KEY"):
        agent.propose(_ctx(tmp_path))
    assert check_credentials(cfg.model, environ={"ANTHROPIC_API_KEY": "k" * 20}) == "k" * 20


def test_the_key_reaches_the_provider_but_never_the_transcript(cfg, tmp_path, monkeypatch):
    _openai_cfg(cfg, monkeypatch)
    cfg.model.api_base = "http://localhost:9/v1"
    leak = ("write_file", {"path": "notes.txt", "content": f"key={KEY}"})
    read_back = ("read_file", {"path": "notes.txt"})
    model = FakeModel(_response(f"the key is {KEY}", [leak, read_back]), _response("e", [EDIT, TEST]),
                      _response("s", [SUBMIT]), _response("s", [("submit", {"rationale": f"uses {KEY}"})]))
    proposal = AvoAgent(cfg, tmp_path, completion=model).propose(_ctx(tmp_path))
    assert model.calls[0]["api_key"] == KEY and model.calls[0]["api_base"] == "http://localhost:9/v1"
    raw = Path(proposal.transcript).read_text()
    assert KEY not in raw and raw.count(REDACTED) >= 3
    assert KEY not in proposal.rationale


def test_local_vllm_talks_to_any_openai_compatible_server_without_a_key(tmp_path):
    cfg = _compose("model=local_vllm", "model.api_base=http://gpu7:8000/v1")
    served = "hosted_vllm/local-model"
    model = FakeModel(_response("e", [EDIT, TEST], model=served), _response("s", [SUBMIT], model=served),
                      _response("s", [SUBMIT], model=served))
    proposal = AvoAgent(cfg, tmp_path, completion=model).propose(_ctx(tmp_path))
    first = model.calls[0]
    assert first["model"] == "hosted_vllm/local-model" and first["api_base"] == "http://gpu7:8000/v1"
    assert "api_key" not in first and first["tools"] and proposal.cost_usd == 0.0


def test_no_model_call_may_outlast_the_wall_time(cfg, tmp_path, monkeypatch):
    """A hanging provider must not hold a variation past agent.wall_time_s: each call's timeout is
    at most the time left (the provider's default of minutes would otherwise apply)."""
    _openai_cfg(cfg, monkeypatch, wall_time_s=10)
    cfg.model.timeout_s = 600
    now = [0.0]

    def clock():
        now[0] += 1.0
        return now[0]

    model = FakeModel(*[_response("x", [("list_files", {})]) for _ in range(3)])
    with pytest.raises(OperatorError):
        AvoAgent(cfg, tmp_path, completion=model, clock=clock).propose(_ctx(tmp_path))
    assert model.calls and all(c["timeout"] <= 10 for c in model.calls), [c["timeout"] for c in model.calls]


def test_a_providers_retry_after_is_honoured(cfg, tmp_path, monkeypatch):
    import httpx

    _openai_cfg(cfg, monkeypatch)
    cfg.model.num_retries = 2
    asked = litellm.RateLimitError("slow down", llm_provider="openai", model="gpt-4o",
                                   response=httpx.Response(429, headers={"Retry-After": "33"},
                                                           request=httpx.Request("POST", "http://x/v1")))
    sleeps = []
    model = FakeModel(asked, _response("edit", [EDIT, TEST]), _response("done", [SUBMIT]), _response("sure", [SUBMIT]))
    AvoAgent(cfg, tmp_path, completion=model, sleep=sleeps.append).propose(_ctx(tmp_path))
    assert sleeps == [33.0]


def test_credential_and_repeated_request_errors_are_fatal_for_the_search(cfg, tmp_path, monkeypatch):
    from avo.operators.base import FatalOperatorError

    _openai_cfg(cfg, monkeypatch)
    auth = FakeModel(litellm.AuthenticationError("invalid key", llm_provider="openai", model="gpt-4o"))
    with pytest.raises(FatalOperatorError, match="OPENAI_API_KEY"):
        AvoAgent(cfg, tmp_path, completion=auth).propose(_ctx(tmp_path))

    def bad():
        return litellm.BadRequestError("tools[0] is not a valid schema", llm_provider="openai", model="gpt-4o")

    agent = AvoAgent(cfg, tmp_path, completion=FakeModel(bad(), bad()))
    with pytest.raises(OperatorError) as first:
        agent.propose(_ctx(tmp_path, iteration=1))
    assert not isinstance(first.value, FatalOperatorError)  # once: this request's fault
    with pytest.raises(FatalOperatorError, match="same request twice"):
        agent.propose(_ctx(tmp_path, iteration=2))


def test_a_reply_without_choices_still_records_its_spend(cfg, tmp_path, monkeypatch):
    _openai_cfg(cfg, monkeypatch)
    empty = _response("x", prompt=1200, completion=300)
    empty.choices = []
    with pytest.raises(OperatorError, match="no message") as err:
        AvoAgent(cfg, tmp_path, completion=FakeModel(empty)).propose(_ctx(tmp_path))
    assert err.value.tokens == 1500 and err.value.cost_usd > 0


# -- what the operator enforces, context and cost (P2-e) -------------------------------------------

def test_a_submit_is_taken_only_for_a_source_that_passed_test_and_after_the_critique_was_read(
        cfg, tmp_path, monkeypatch):
    _openai_cfg(cfg, monkeypatch)
    model = FakeModel(
        _response("e", [EDIT]),
        _response("s", [SUBMIT]),  # never tested: refused
        _response("t", [TEST, SUBMIT, SUBMIT]),  # the critique, then a submit in the same turn: refused
        _response("s", [SUBMIT]))  # a later turn: taken
    proposal = AvoAgent(cfg, tmp_path, completion=model).propose(_ctx(tmp_path))
    results = [e for e in read(proposal.transcript) if e["event"] == "tool_result" and e["name"] == "submit"]
    assert "has not passed `test`" in results[0]["content"] and not results[0]["ok"]
    assert results[1]["ok"] and "not submitted yet" in results[1]["content"]  # the critique
    assert not results[2]["ok"] and "same turn" in results[2]["content"]
    assert results[3]["ok"] and len(model.calls) == 4 and "block_m\"] * 2" in proposal.source


def test_an_edit_after_the_test_must_be_tested_again(cfg, tmp_path, monkeypatch):
    _openai_cfg(cfg, monkeypatch)
    again = ("replace_in_file", {"path": "kernel.py", "search": 'KNOBS["block_m"] * 2', "replace": 'KNOBS["block_m"] * 4'})
    model = FakeModel(_response("e", [EDIT, TEST]), _response("e2", [again]), _response("s", [SUBMIT]),
                      _response("t", [TEST]), _response("s", [SUBMIT]), _response("s", [SUBMIT]))
    proposal = AvoAgent(cfg, tmp_path, completion=model).propose(_ctx(tmp_path))
    results = [e for e in read(proposal.transcript) if e["event"] == "tool_result" and e["name"] == "submit"]
    assert "has not passed `test`" in results[0]["content"]
    assert 'KNOBS["block_m"] * 4' in proposal.source


def test_the_model_sees_its_remaining_budget_every_turn(cfg, tmp_path, monkeypatch):
    _openai_cfg(cfg, monkeypatch, max_steps=12, max_cost_usd=3.0)
    model = FakeModel(_response("e", [EDIT, TEST]), _response("thinking"), _response("s", [SUBMIT]),
                      _response("s", [SUBMIT]))
    AvoAgent(cfg, tmp_path, completion=model).propose(_ctx(tmp_path))
    second, third = model.calls[1]["messages"], model.calls[2]["messages"]
    assert second[-1]["role"] == "tool" and "[budget left: 11 of 12 steps" in second[-1]["content"]
    assert "$3.00" in second[-1]["content"] and " min]" in second[-1]["content"]
    assert third[-1]["role"] == "user" and "[budget left: 10 of 12 steps" in third[-1]["content"]  # after a text-only turn


def test_old_tool_call_arguments_are_cut_once_and_stay_valid_json():
    from avo.operators.agent import compact

    big = "x" * 60_000
    messages = []
    for i in range(12):
        messages.append({"role": "assistant", "content": None, "tool_calls": [
            {"id": f"c{i}", "type": "function",
             "function": {"name": "write_file", "arguments": json.dumps({"path": "kernel.py", "content": big})}}]})
        messages.append({"role": "tool", "tool_call_id": f"c{i}", "content": "wrote kernel.py"})
    compact(messages, keep=8, limit=100, arg_limit=400)
    args = [json.loads(m["tool_calls"][0]["function"]["arguments"]) for m in messages if m["role"] == "assistant"]
    assert [len(a["content"]) < 500 for a in args] == [True] * 4 + [False] * 8
    assert args[0]["path"] == "kernel.py" and "60" not in args[0]["content"][:400]
    before = json.dumps(messages)
    compact(messages, keep=8, limit=100, arg_limit=400)
    assert json.dumps(messages) == before  # idempotent: a cached prefix stays byte-identical


def test_with_batch_old_messages_are_cut_only_when_enough_wait():
    from avo.operators.agent import compact

    messages = [{"role": "tool", "tool_call_id": str(i), "content": f"{i}:" + "x" * 5000} for i in range(12)]
    compact(messages, keep=8, limit=100, batch=8)
    assert all(len(m["content"]) > 5000 for m in messages)  # 4 wait: not yet
    messages += [{"role": "tool", "tool_call_id": str(i), "content": "y" * 5000} for i in range(12, 16)]
    compact(messages, keep=8, limit=100, batch=8)
    assert [len(m["content"]) < 300 for m in messages] == [True] * 8 + [False] * 8


def test_anthropic_requests_carry_cache_breakpoints_and_cached_tokens_are_recorded(cfg, tmp_path, monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)
    cfg.model.name, cfg.model.api_key_env, cfg.model.script = "anthropic/claude-sonnet-4-5", "ANTHROPIC_API_KEY", None
    cached = _response("e", [EDIT, TEST], prompt=1000)
    cached.usage.prompt_tokens_details = {"cached_tokens": 900}
    model = FakeModel(cached, _response("s", [SUBMIT]), _response("s", [SUBMIT]))
    proposal = AvoAgent(cfg, tmp_path, completion=model).propose(_ctx(tmp_path))
    sent = model.calls[1]["messages"]
    marked = [i for i, m in enumerate(sent) if isinstance(m["content"], list)]
    assert marked[0] == 0 and sent[0]["content"][0]["cache_control"] == {"type": "ephemeral"}
    assert len(marked) == 3 and sent[marked[-1]]["role"] == "tool"  # system + the last two user/tool messages
    stop = read(proposal.transcript)[-1]
    assert stop["cached_tokens"] == 900 and stop["cache_saving_usd"] is not None and stop["cache_saving_usd"] > 0
    cfg.model.prompt_cache = "off"
    model = FakeModel(_response("e", [EDIT, TEST]), _response("s", [SUBMIT]), _response("s", [SUBMIT]))
    AvoAgent(cfg, tmp_path / "off", completion=model).propose(_ctx(tmp_path / "off"))
    assert all(isinstance(m["content"], (str, type(None))) for m in model.calls[1]["messages"])


def test_openai_requests_carry_no_cache_markers(cfg, tmp_path, monkeypatch):
    _openai_cfg(cfg, monkeypatch)
    model = FakeModel(_response("e", [EDIT, TEST]), _response("s", [SUBMIT]), _response("s", [SUBMIT]))
    AvoAgent(cfg, tmp_path, completion=model).propose(_ctx(tmp_path))
    assert all(isinstance(m["content"], (str, type(None))) for c in model.calls for m in c["messages"])
