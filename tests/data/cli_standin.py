"""A stand-in for an external coding agent (agent=cli): edits the kernel, uses `avo tool`, submits.

Run by the cli operator in the workspace: agent.command="{python} {repo}/tests/data/cli_standin.py {prompt_file}".
It checks its prompt, makes the same edit as the scripted model (tile sizes x2, applicable to
every later version too), tests and benchmarks through `avo tool`, answers the self-critique
and submits. STANDIN_MODE=sleep hangs instead (wall-time test); STANDIN_MODE=nosubmit edits and exits.
"""

import os
import subprocess
import sys
import time
from pathlib import Path

SEARCH = '    block_m, block_n = KNOBS["block_m"], KNOBS["block_n"]\n'
EXTRA = "    block_m, block_n = 2 * block_m, 2 * block_n  # stand-in agent: larger tiles\n"


def tool(*args):
    proc = subprocess.run(["avo", "tool", *args], capture_output=True, text=True)
    print(f"$ avo tool {' '.join(args)}  -> {proc.returncode}\n{proc.stdout}{proc.stderr}", flush=True)
    return proc.returncode, proc.stdout


def main():
    prompt = Path(sys.argv[1]).read_text()
    assert "avo tool submit" in prompt, "the prompt documents the tools"
    mode = os.environ.get("STANDIN_MODE", "")
    if mode == "sleep":
        time.sleep(600)
    kernel = Path("kernel.py")
    text = kernel.read_text()
    assert SEARCH in text, "the kernel reads its tile sizes from KNOBS"
    kernel.write_text(text.replace(SEARCH, SEARCH + EXTRA, 1))
    if mode == "nosubmit":
        return 0
    tool("lineage", "log")
    tool("archive", "--limit", "5")
    code, out = tool("test")
    if code != 0 or "status=ok" not in out:
        return 1
    tool("bench")
    rationale = "Double both tile sizes at run time: fewer online-softmax steps on the CPU; tested and benchmarked."
    code, _ = tool("submit", "--rationale", rationale)
    if code == 3:  # the self-critique: reviewed, submit again
        code, _ = tool("submit", "--rationale", rationale + " Reviewed: causal, GQA and ragged seqlen pass.")
    return code


if __name__ == "__main__":
    sys.exit(main())
