"""Input tokens billed for one 40-step variation of the `avo` agent, before and after prompt caching
and the compaction of old tool-call arguments (issue P2-e: goal >= 3x fewer).

    python bench/prompt_cache.py [--json OUT.json]

The variation is a recorded conversation (below: what an agent working on our 57 kB sm90 kernel
does: read it, search the knowledge base, edit, compile, test, rewrite the file whole twice,
bench, submit) replayed through the real agent loop and tools (FakeEvaluator for the verdicts),
so the requests are exactly what `avo` sends. No provider is called: each request is billed by
Anthropic's published rules for prompt caching, emulated here:
- a prefix that ends at a cache breakpoint is written (1.25x the input price) unless cached;
- a request reads (0.1x) the longest prefix, ending at a message boundary within 20 messages
  before one of its breakpoints, that an earlier request wrote; everything else is 1x.
Tokens are estimated as characters / 4 of each message's JSON (tools included, once per request).
"before": no breakpoints, old results cut one per turn, tool-call arguments never cut (the
agent as it was); "after": the agent as it is (model.prompt_cache=auto on an Anthropic model).
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import random
import sys
import tempfile
from pathlib import Path

from hydra import compose, initialize_config_dir
from litellm.types.utils import ModelResponse

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from avo import config as avo_config  # noqa: E402
from avo.operators import agent as agent_mod  # noqa: E402
from avo.operators.base import VariationContext  # noqa: E402
from avo.paths import conf_dir  # noqa: E402
from avo.search.fakes import FakeEvaluator  # noqa: E402

KERNEL = ROOT / "kernels" / "cute_dsl" / "sm90" / "fmha_fwd.py"
WRITE, READ, CACHED = 1.25, 1.0, 0.1
LOOKBACK = 20


def script(source: str) -> list[list[tuple[str, dict]]]:
    """40 turns of tool calls (the last two submit: the critique, then the submit)."""
    edited = source.replace("# ", "#  ", 1)
    edited2 = edited.replace("# ", "#   ", 1)
    lines = source.count("\n")
    turns: list[list[tuple[str, dict]]] = [
        [("lineage_log", {})], [("archive_query", {})],
        [("read_file", {"path": "kernel.py", "start_line": 1, "end_line": 800})],
        [("read_file", {"path": "kernel.py", "start_line": 801, "end_line": lines})],
        [("kb_search", {"query": "hopper warp specialization softmax overlap"})],
        [("kb_search", {"query": "intra-warpgroup pipelining"})],
    ]
    for i in range(6):  # small edits, each compiled and tested
        turns.append([("replace_in_file", {"path": "kernel.py", "search": "KNOBS = {", "replace": "KNOBS = {" + " " * (i + 1)})])
        turns.append([("compile", {})])
        turns.append([("test", {})])
    turns.append([("bench", {"against_incumbent": True})])
    turns.append([("write_file", {"path": "kernel.py", "content": edited})])
    turns += [[("compile", {})], [("test", {})], [("bench", {})], [("workspace_diff", {})]]
    turns.append([("read_file", {"path": "kernel.py", "start_line": 1, "end_line": 400})])
    turns.append([("write_file", {"path": "kernel.py", "content": edited2})])
    turns += [[("compile", {})], [("test", {})], [("bench", {"against_incumbent": True})]]
    while len(turns) < 38:
        turns.append([("read_file", {"path": "kernel.py", "start_line": 100 * len(turns) % lines + 1,
                                     "end_line": 100 * len(turns) % lines + 120})])
    turns.append([("submit", {"rationale": "wider pipeline; tested and benched"})])
    turns.append([("submit", {"rationale": "wider pipeline; tested and benched, critique answered"})])
    return turns


def response(calls: list[tuple[str, dict]], n: int) -> ModelResponse:
    message = {"role": "assistant", "content": f"step {n}: next",
               "tool_calls": [{"id": f"c{n}_{i}", "type": "function",
                               "function": {"name": name, "arguments": json.dumps(args)}}
                              for i, (name, args) in enumerate(calls)]}
    return ModelResponse(model="claude", choices=[{"index": 0, "message": message, "finish_reason": "tool_use"}],
                         usage={"prompt_tokens": 0, "completion_tokens": 200, "total_tokens": 200})


def tokens(obj) -> int:
    return len(json.dumps(obj, sort_keys=True)) // 4


def bill(requests: list[dict]) -> dict:
    """Anthropic's caching, emulated over the recorded requests (see the module's docstring)."""
    written: set[str] = set()
    total = dict(requests=len(requests), input=0, cache_write=0, cache_read=0, uncached=0)
    for req in requests:
        msgs, tools = req["messages"], req["tools"]
        base = tokens(tools)
        sizes = [tokens(m) for m in msgs]
        keys, h = [], hashlib.sha256(json.dumps(tools, sort_keys=True).encode())
        for m in msgs:  # a prefix's identity: the bytes up to it, cache markers ignored
            h.update(json.dumps(_plain(m), sort_keys=True).encode())
            keys.append(h.copy().hexdigest())
        marks = [i for i, m in enumerate(msgs) if isinstance(m.get("content"), list)
                 and any("cache_control" in b for b in m["content"])]
        read_upto = -1
        for b in marks:
            for j in range(b, max(-1, b - LOOKBACK), -1):
                if keys[j] in written:
                    read_upto = max(read_upto, j)
                    break
        prefix = lambda j: base + sum(sizes[:j + 1])  # noqa: E731
        read = prefix(read_upto) if read_upto >= 0 else 0
        write = (prefix(marks[-1]) - read) if marks and marks[-1] > read_upto else 0
        whole = base + sum(sizes)
        total["input"] += whole
        total["cache_read"] += read
        total["cache_write"] += write
        total["uncached"] += whole - read - write
        written.update(keys[b] for b in marks)
    total["billed_equivalent"] = round(total["uncached"] * READ + total["cache_write"] * WRITE
                                       + total["cache_read"] * CACHED)
    return total


def _plain(m: dict) -> dict:
    c = m.get("content")
    if isinstance(c, list):
        return {**m, "content": "".join(b.get("text", "") for b in c)}
    return m


def replay(mode: str) -> dict:
    avo_config.register()
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        cfg = compose(config_name="config", overrides=["+experiment=smoke", "agent=avo", "model=anthropic",
                                                       "agent.max_steps=40", "agent.max_cost_usd=1000"])
    cfg.model.prompt_cache = "auto" if mode == "after" else "off"
    source = KERNEL.read_text()
    turns = script(source)
    requests: list[dict] = []

    def completion(**kwargs):
        requests.append({"messages": copy.deepcopy(kwargs["messages"]), "tools": kwargs["tools"]})
        return response(turns[len(requests) - 1], len(requests))

    real_compact = agent_mod.compact
    if mode == "before":
        agent_mod.compact = lambda messages, **kw: real_compact(messages, batch=1, arg_limit=10 ** 9)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            import os

            os.environ.setdefault("ANTHROPIC_API_KEY", "sk-ant-bench-not-a-key")
            ctx = VariationContext(iteration=1, parent_id="0", parent_source=source, parent_result=None,
                                   run_dir=Path(tmp), workspace=Path(tmp) / "candidates" / "0001" / "workspace",
                                   rng=random.Random(0), evaluate=FakeEvaluator(score=lambda v: 1.0))
            proposal = agent_mod.AvoAgent(cfg, Path(tmp), completion=completion).propose(ctx)
    finally:
        agent_mod.compact = real_compact
    out = bill(requests)
    out["submitted"] = bool(proposal.source)
    return out


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--json")
    args = p.parse_args()
    before, after = replay("before"), replay("after")
    ratio = before["billed_equivalent"] / max(1, after["billed_equivalent"])
    res = {"before": before, "after": after, "billed_ratio": round(ratio, 2),
           "prices": {"write": WRITE, "read": CACHED, "uncached": READ}, "tokens": "characters / 4"}
    for name, r in (("before", before), ("after", after)):
        print(f"{name:6s} requests {r['requests']:3d}  input tokens {r['input']:9d}  uncached {r['uncached']:9d}  "
              f"written {r['cache_write']:8d}  read {r['cache_read']:9d}  billed-equivalent {r['billed_equivalent']:9d}")
    print(f"billed input tokens: {ratio:.2f}x fewer after")
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
