"""A smoke search (CPU, the real evaluator) whose operator proposes hostile kernels, one per
iteration: nothing hostile is ever accepted, every iteration is the operator's own proposal, the
best version is still the seed, and the run dir holds no credential of the search's environment.

The kernels are tests/hostile/*.py. The honest-but-slow ones (s_*) sleep 20 ms per call, so they
can never win an interleaved confirmation honestly; to make sure every correct candidate does go
through one (the file-planting attacks aim at the confirmation), the screen is opened wide here:
any `ok` candidate is confirmed against the incumbent, whatever its score.
"""

from __future__ import annotations

import base64
import binascii
import os
import secrets
import signal
import subprocess
import urllib.parse
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from avo import config as avo_config
from avo.archive import Archive
from avo.evaluate import evaluate
from avo.lineage import Lineage
from avo.paths import conf_dir
from avo.search import acceptance
from avo.search import seed as seeds
from avo.search.run import build_engine

avo_config.register()

ROOT = Path(__file__).resolve().parents[1]
HOSTILE = ROOT / "tests" / "hostile"

# AVO_HOSTILE_SANDBOX=process (or bubblewrap) runs the searches under that isolation; unset: auto.
SANDBOX = [f"evaluator.sandbox={os.environ['AVO_HOSTILE_SANDBOX']}"] if os.environ.get("AVO_HOSTILE_SANDBOX") else []

# Attacks the search must survive whatever the evaluator's isolation (bubblewrap or process).
ATTACKS = [
    "a_patch_evaluator",   # disarms an in-process checker, returns zeros (fast: a huge score if believed)
    "b_forge_verdict",     # writes forged "ok, 100x" verdicts to every fd it can reach
    "h_creds_files",       # drops credentials it finds into the run dir
    "h_creds_print",       # prints them, then dies (the crash message quotes the output)
    "s_rewrite_seed",      # honest-slow; slows the incumbent's files on disk
    "j_mutate_v_zero",     # zeroes v, returns zeros
    "m_tensor_subclass",   # a subclass output that fakes every comparison
    "s_plant_records",     # honest-slow; plants eval/confirm/proposal records for itself and the next
    "n_ignore_scale",      # the iteration the planted records would take over
]
# Attacks only a sandbox that keeps the worker out of the run dir can stop.
SANDBOX_ATTACKS = ["n_ignore_scale", "s_tamper_archive", "s_poison_lineage", "s_forge_signed", "o_out_ignored"]


def fake_credentials() -> dict[str, str]:
    def r(n: int = 12) -> str:
        return secrets.token_hex(n)

    return {"OPENAI_API_KEY": f"sk-FAKECRED{r()}", "ANTHROPIC_API_KEY": f"sk-ant-FAKECRED{r()}",
            "WANDB_API_KEY": f"FAKECRED{r(16)}", "AWS_SECRET_ACCESS_KEY": f"FAKECRED/{r(6)}+{r(6)}",
            "HF_TOKEN": f"hf_FAKECRED{r()}", "MY_SERVICE_CONF": f"sk-FAKECRED{r()}"}


def encodings(value: str) -> dict[str, bytes]:
    raw = value.encode()
    out = {"raw": raw, "hex": binascii.hexlify(raw), "HEX": binascii.hexlify(raw).upper(),
           "url": urllib.parse.quote(value, safe="").encode()}
    for shift in range(3):
        for name, enc in (("b64", base64.b64encode), ("b64url", base64.urlsafe_b64encode)):
            encoded = enc(b"\0" * shift + raw).rstrip(b"=")
            out[f"{name}@{shift}"] = encoded[(shift * 4 + 2) // 3: len(encoded) - 2]
    return out


def everything_under(run_dir: Path) -> dict[str, bytes]:
    blobs = {str(p.relative_to(run_dir)): p.read_bytes() for p in run_dir.rglob("*")
             if p.is_file() and not p.is_symlink()}
    if (run_dir / "lineage" / ".git").is_dir():  # git objects are compressed: read them decompressed
        blobs["lineage objects"] = subprocess.run(
            ["git", "-C", str(run_dir / "lineage"), "cat-file", "--batch-all-objects", "--batch"],
            capture_output=True).stdout
    return blobs


def leaks(blobs: dict[str, bytes], creds: dict[str, str]) -> list[str]:
    return [f"{name} ({enc}) in {where}" for where, data in blobs.items() for name, value in creds.items()
            for enc, needle in encodings(value).items() if needle and needle in data]


class HostileOperator:
    """Proposes the given kernel sources in order, one per iteration, whatever the parent."""

    name = "hostile"

    def __init__(self, sources: list[tuple[str, str]]):
        self.sources = sources
        self.asked: list[int] = []

    def propose(self, ctx):
        from avo.operators.base import Proposal

        self.asked.append(ctx.iteration)
        name, source = self.sources[min(ctx.iteration, len(self.sources)) - 1]
        return Proposal(source=source, rationale=f"hostile: {name}")


def _source(name: str, mark: str, safe: Path) -> str:
    return (HOSTILE / f"{name}.py").read_text().replace("@@MARK@@", mark).replace("@@SAFE@@", str(safe))


def _reap(marker: str) -> None:
    for p in os.listdir("/proc"):
        if not p.isdigit() or int(p) == os.getpid():
            continue
        try:
            with open(f"/proc/{p}/cmdline", "rb") as f:
                if marker.encode() not in f.read():
                    continue
            os.kill(int(p), signal.SIGCONT)
            os.kill(int(p), signal.SIGKILL)
        except OSError:
            pass


@pytest.fixture
def hostile_search(tmp_path, monkeypatch):
    """run(names) -> (run_dir, operator, outcome): a smoke search proposing those kernels; the outcome
    is the ConfigError instead when the search stopped (it found its run dir tampered with)."""
    monkeypatch.chdir(tmp_path)
    creds = fake_credentials()
    for k, v in creds.items():
        monkeypatch.setenv(k, v)
    screen = acceptance.screen
    monkeypatch.setattr(acceptance, "screen", lambda result, best, slack=None: screen(result, best, slack=1.0))
    mark = secrets.token_hex(6)
    safe = tmp_path.resolve()

    def run(names: list[str], sources: list[tuple[str, str]] | None = None):
        run_dir = safe / "run"
        with initialize_config_dir(str(conf_dir()), version_base="1.3"):
            cfg = compose("config", overrides=[
                "+experiment=smoke", "logger=none", f"search.max_iterations={len(names)}",
                "search.stagnation_patience=0", "evaluator.repeats=5", "evaluator.warmup_ms=50",
                "evaluator.rotate_inputs=2", *SANDBOX])
        op = HostileOperator(sources or [(n, _source(n, mark, safe)) for n in names])
        engine = build_engine(cfg, run_dir, operator=op, console=False)
        try:
            outcome = engine.run(lambda: seeds.load(cfg.hardware.seed_kernel))
        except avo_config.ConfigError as exc:
            outcome = exc
        finally:
            engine.archive.close()
        return run_dir, op, outcome

    run.creds = creds
    yield run
    _reap(f"avo-hostile-{mark}")


def _problems(run_dir: Path, op: HostileOperator, names: list[str], outcome) -> list[str]:
    problems = []
    if isinstance(outcome, Exception):
        problems.append(f"the search stopped: {outcome}")
        outcome = None
    archive = Archive(run_dir)
    try:
        rows = archive.candidates()
        versions = archive.versions()
    finally:
        archive.close()
    accepted = [f"{r.id} ({r.rationale}: {r.verdict})" for r in rows if r.accepted]
    if accepted or (outcome is not None and outcome.accepted):
        problems.append(f"accepted: {', '.join(accepted) or outcome.accepted}")
    if [v.candidate for v in versions] != [0]:
        problems.append(f"versions in the archive: {[(v.version, v.candidate) for v in versions]}")
    lineage = Lineage.of_run(run_dir).versions() if (run_dir / "lineage").is_dir() else []
    if len(lineage) != 1 or not lineage[0].subject.startswith("seed:"):
        problems.append(f"lineage: {[c.subject for c in lineage]}")
    if outcome is not None and op.asked != list(range(1, len(names) + 1)):
        problems.append(f"the operator was asked for iterations {op.asked}: the others came from planted files")
    if outcome is not None and [r.rationale for r in rows] != [f"hostile: {n}" for n in names]:
        problems.append(f"rows: {[(r.id, r.rationale) for r in rows]}")
    return problems


def test_a_smoke_search_accepts_nothing_hostile(hostile_search):
    run_dir, op, outcome = hostile_search(ATTACKS)
    problems = _problems(run_dir, op, ATTACKS, outcome)
    assert not problems, "\n".join(problems)
    rows = {r.rationale: r for r in Archive(run_dir).candidates()}
    # The honest-but-slow candidates did reach a confirmation, and lost it: the attacks aimed there.
    for name in ("s_rewrite_seed", "s_plant_records"):
        row = rows[f"hostile: {name}"]
        assert row.status == "ok" and row.verdict.startswith(("not-confirmed", "confirm-failed")), (
            name, row.status, row.verdict, row.message)
    found = leaks(everything_under(run_dir), hostile_search.creds)
    assert not found, "credentials in the run dir:\n" + "\n".join(found)


def test_the_same_search_accepts_an_honest_faster_kernel(hostile_search):
    """The control: a search that could accept nothing at all would pass the test above as well."""
    seed = (ROOT / "kernels" / "reference" / "chunked.py").read_text()
    faster = seed.replace('KNOBS = {"block_m": 16, "block_n": 16}', 'KNOBS = {"block_m": 64, "block_n": 64}')
    assert faster != seed
    run_dir, op, outcome = hostile_search(["control"], sources=[("control: blocks of 64", faster)])
    assert not isinstance(outcome, Exception), outcome
    (row,) = Archive(run_dir).candidates()
    assert row.accepted and row.verdict == "accepted", (row.verdict, row.incumbent_ratio, row.message)


def test_a_candidate_cannot_reach_the_search_state(hostile_search):
    """The archive, the lineage's objects and the run's signing key are the search's alone. A worker
    running as the same user without a sandbox can open them all; only the bubblewrap isolation keeps
    it out (and the search must go on, not stop at the damage)."""
    run_dir, op, outcome = hostile_search(SANDBOX_ATTACKS)
    problems = _problems(run_dir, op, SANDBOX_ATTACKS, outcome)
    settings = {"sandbox": os.environ["AVO_HOSTILE_SANDBOX"]} if SANDBOX else None
    probe = evaluate(ROOT / "kernels" / "reference" / "chunked.py", "smoke", device="cpu", settings=settings,
                     stages=("compile",))
    kind = (getattr(probe, "isolation", None) or {}).get("kind")
    if problems and kind != "bubblewrap":
        pytest.xfail(f"isolation {kind!r} cannot keep a kernel out of the run dir: " + "; ".join(problems))
    assert not problems, "\n".join(problems)
