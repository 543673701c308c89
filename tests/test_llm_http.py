"""The LLM path through litellm's real HTTP client against a local OpenAI-compatible server (no
mocked `completion`): what a README install does when a provider fails and recovers."""

from __future__ import annotations

import json
import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib.metadata import version

import pytest

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no network fetch at import
litellm = pytest.importorskip("litellm")

from avo.operators.agent import _retry_after  # noqa: E402

COMPROMISED_LITELLM = {"1.82.7", "1.82.8", "1.107.0"}


def _reply(text: str) -> dict:
    return {"id": "x", "object": "chat.completion", "created": 0, "model": "m",
            "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": text}}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}}


@pytest.fixture
def provider():
    """A server that answers each POST from a script of (status, headers, body), then 200s."""
    script: list[tuple[int, dict, dict]] = []
    seen: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 - the http.server API
            seen.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            status, headers, body = script.pop(0) if script else (200, {}, _reply("done"))
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for k, v in headers.items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield script, seen, f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()


def _call(base: str, **kw):
    return litellm.completion(model="openai/test-model", api_base=base, api_key="sk-test-not-a-key",
                              messages=[{"role": "user", "content": "hi"}], timeout=20, **kw)


def test_two_server_errors_then_a_reply_succeed_with_litellm_retries(provider):
    script, seen, base = provider
    err = {"error": {"message": "boom", "type": "server_error"}}
    script += [(500, {}, err), (500, {}, err)]
    r = _call(base, num_retries=2)
    assert r.choices[0].message.content == "done"
    assert len(seen) == 3


def test_more_failures_than_the_http_client_retries_are_retried_by_litellm(provider):
    """The OpenAI client under litellm retries a 500 itself; past that, litellm's own retry loop
    takes over, which needs tenacity (missing from a README install before it was declared)."""
    script, seen, base = provider
    err = {"error": {"message": "boom", "type": "server_error"}}
    script += [(500, {}, err)] * 4
    r = _call(base, num_retries=3)
    assert r.choices[0].message.content == "done"
    assert len(seen) >= 5


def test_retry_after_is_read_from_a_real_rate_limit_error(provider):
    script, _, base = provider
    script.append((429, {"Retry-After": "7"}, {"error": {"message": "slow down", "type": "rate_limit"}}))
    with pytest.raises(litellm.RateLimitError) as info:
        _call(base, num_retries=0)
    assert _retry_after(info.value) == 7.0


def test_the_installed_litellm_is_none_of_the_compromised_releases():
    assert version("litellm") not in COMPROMISED_LITELLM
