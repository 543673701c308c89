"""GPU tests are marked `gpu` and skipped where no CUDA device exists."""

import pytest


def _has_cuda() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except Exception:
        return False


def pytest_collection_modifyitems(config, items):
    if _has_cuda():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    """How many of the tests that need a GPU or a Slurm ran here (CI shows its Slurm count)."""
    for marker in ("slurm", "gpu"):
        ran = {"passed": 0, "failed": 0, "skipped": 0}
        for outcome in ran:
            for rep in terminalreporter.stats.get(outcome, []):
                if marker in getattr(rep, "keywords", {}) and rep.when in ("call", "setup"):
                    if outcome != "passed" or rep.when == "call":
                        ran[outcome] += 1
        if any(ran.values()):
            terminalreporter.write_line(f"tests marked {marker}: {ran['passed']} passed, {ran['failed']} failed, "
                                        f"{ran['skipped']} skipped")
