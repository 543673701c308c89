"""The README starts with the setup and test commands, and CI runs exactly those."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _commands(text: str) -> list[str]:
    # CI may also start what the tests need (`bash .ci/...`: a Slurm); the rest is the README's.
    return [line.split("#")[0].strip() for line in text.splitlines()
            if line.strip() and not line.lstrip().startswith(("#", "set ", "cd ", "```", "bash .ci/"))]


def test_ci_runs_the_readme_commands():
    readme = (ROOT / "README.md").read_text()
    first_block = readme.split("```bash", 1)[1].split("```", 1)[0]
    ci = _commands((ROOT / ".ci" / "run").read_text())
    assert ci == _commands(first_block), (ci, _commands(first_block))
    assert "pytest" in ci[-1]
