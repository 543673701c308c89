"""agent=cli: an external agent (here a scripted stand-in) drives the same tools through `avo tool`."""

from __future__ import annotations

import copy
import json
import os
import random
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from avo import config as avo_config
from avo.config import ConfigError
from avo.operators.base import OperatorError, VariationContext
from avo.operators.cli_agent import CliAgent, fill_command
from avo.operators.transcript import REDACTED, read
from avo.paths import conf_dir
from avo.search.fakes import FakeEvaluator
from avo.tool import request_for

ROOT = Path(__file__).resolve().parents[1]
SEED = (ROOT / "kernels" / "reference" / "chunked.py").read_text()
STANDIN = "{python} {repo}/tests/data/cli_standin.py {prompt_file}"

avo_config.register()


@pytest.fixture(scope="module")
def base_cfg():
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        return compose(config_name="config", overrides=["+experiment=smoke", "agent=cli",
                                                        f"agent.command='{STANDIN}'"])


@pytest.fixture
def cfg(base_cfg):
    return copy.deepcopy(base_cfg)


def _ctx(tmp_path, evaluate=None):
    return VariationContext(iteration=1, parent_id="0", parent_source=SEED, parent_result=None, run_dir=tmp_path,
                            workspace=tmp_path / "candidates" / "0001" / "workspace", rng=random.Random(0),
                            evaluate=evaluate or FakeEvaluator())


def test_the_stand_in_edits_tests_and_submits_through_avo_tool(cfg, tmp_path):
    fake = FakeEvaluator()
    proposal = CliAgent(cfg, tmp_path).propose(_ctx(tmp_path, fake))
    assert "2 * block_m, 2 * block_n" in proposal.source
    assert proposal.rationale.startswith("Double both tile sizes") and "Reviewed" in proposal.rationale
    assert (proposal.tokens, proposal.cost_usd) == (0, 0.0)
    events = read(proposal.transcript)
    calls = [e["name"] for e in events if e["event"] == "tool_call"]
    assert calls == ["lineage_log", "archive_query", "test", "bench", "submit", "submit"]
    assert [c["stages"] for c in fake.calls] == [("compile", "correctness"),
                                                  ("compile", "correctness", "benchmark", "reverify")]
    output = next(e for e in events if e["event"] == "agent_output")
    assert output["returncode"] == 0 and "avo tool test  -> 0" in output["content"]
    assert "avo tool submit --rationale" in output["content"] and "-> 3" in output["content"]  # the critique
    prompt = (tmp_path / "candidates" / "0001" / "prompt.md").read_text()
    assert "avo tool bench" in prompt and "kernel.py" in prompt and "{" + "suite}" not in prompt
    assert json.loads((tmp_path / "candidates" / "0001" / "submission.json").read_text())["rationale"]


def test_an_agent_that_does_not_submit_is_an_operator_error(cfg, tmp_path, monkeypatch):
    monkeypatch.setenv("STANDIN_MODE", "nosubmit")
    with pytest.raises(OperatorError, match="exited with status 0 without `avo tool submit`") as err:
        CliAgent(cfg, tmp_path).propose(_ctx(tmp_path))
    assert read(err.value.transcript)[-1]["submitted"] is False


def test_wall_time_kills_the_whole_process_group(cfg, tmp_path):
    marker = tmp_path / "child.pid"
    # The agent starts a grandchild that would outlive a plain kill of the shell.
    cfg.agent.command = f"sleep 300 & echo $! > {shlex.quote(str(marker))}; wait"
    cfg.agent.wall_time_s = 1.0
    t0 = time.monotonic()
    with pytest.raises(OperatorError, match="agent.wall_time_s=1 reached"):
        CliAgent(cfg, tmp_path).propose(_ctx(tmp_path))
    # Not a timing claim (a loaded machine may take long): without the kill the agent would have
    # waited for its 300 s sleep.
    assert time.monotonic() - t0 < 150
    pid = int(marker.read_text())
    for _ in range(50):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    else:
        pytest.fail("the agent's grandchild survived the wall-time kill")


def test_agent_output_in_the_transcript_is_redacted(cfg, tmp_path, monkeypatch):
    key = "sk-cli-0123456789abcdefghijklmnop"
    monkeypatch.setenv("SOME_AGENT_API_KEY", key)
    cfg.agent.command = 'echo "my key is $SOME_AGENT_API_KEY"'
    with pytest.raises(OperatorError) as err:
        CliAgent(cfg, tmp_path).propose(_ctx(tmp_path))
    raw = Path(err.value.transcript).read_text()
    assert key not in raw and REDACTED in raw and key not in str(err.value)


def test_cli_needs_a_command(cfg, tmp_path):
    cfg.agent.command = None
    with pytest.raises(ConfigError, match="agent.command"):
        CliAgent(cfg, tmp_path)


def test_command_placeholders_are_shell_quoted(tmp_path):
    odd = tmp_path / "a b'c"
    cmd = fill_command("agent --prompt {prompt_file} --cwd {workspace} ${HOME} awk '{print}'", odd / "p.md", odd)
    assert shlex.split(cmd)[2] == str(odd / "p.md") and shlex.split(cmd)[4] == str(odd)
    assert "${HOME}" in cmd and "'{print}'" in cmd


def test_avo_tool_command_lines_map_to_tools():
    assert request_for(["lineage"]) == ("lineage_log", {"limit": 30})
    assert request_for(["lineage", "show", "2"]) == ("lineage_show", {"version": 2})
    assert request_for(["lineage", "diff", "0", "3"]) == ("lineage_diff", {"a": 0, "b": 3})
    assert request_for(["archive", "--id", "4"]) == ("archive_query", {"limit": 20, "failed_only": False, "id": 4})
    assert request_for(["kb", "search", "tma", "multicast", "-k", "3"]) == (
        "kb_search", {"query": "tma multicast", "k": 3})
    assert request_for(["kb", "read", "notes", "a.md", "3", "9"]) == (
        "kb_read", {"source": "notes", "path": "a.md", "start_line": 3, "end_line": 9})
    assert request_for(["bench", "--incumbent"]) == ("bench", {"against_incumbent": True})
    assert request_for(["submit", "--rationale", "why"]) == ("submit", {"rationale": "why"})


def test_avo_tool_outside_a_workspace_is_one_clear_line(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "AVO_TOOL_STATE"}
    proc = subprocess.run([sys.executable, "-m", "avo.tool", "test"], capture_output=True, text=True,
                          env=env, cwd=tmp_path, timeout=60)
    assert proc.returncode == 2 and "not inside an avo agent workspace" in proc.stderr
    assert "Traceback" not in proc.stderr
    usage = subprocess.run([sys.executable, "-m", "avo.tool", "--help"], capture_output=True, text=True, timeout=60)
    assert usage.returncode == 0 and "avo tool submit" in usage.stdout
