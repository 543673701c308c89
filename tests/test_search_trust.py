"""The engine's side of the trust boundary: what a hostile candidate writes on disk never becomes
a verdict, a parent or an incumbent.

A candidate kernel runs as the same user as the search, so it can forge result files (in its own
directory or in results/), rewrite an archived version's kernel.py, or rewrite another
candidate's kernel. Each test plants such a file between a crash and the resume, then checks that
the resumed run did the work again (or restored the file) and that its archive is consistent.
"""

import json
import os
import stat
from pathlib import Path

import pytest

from avo.archive import Archive
from avo.config import ConfigError
from avo.lineage import Lineage
from avo.search import results
from avo.search.budgets import Budgets
from avo.search.engine import Engine, cand_dir
from avo.search.fakes import KERNEL, FakeEvaluator, ScriptedOperator
from avo.search.seed import Seed
from avo.search.strategies import AvoStrategy
from run_checks import check_consistent, events

STEPS = [{"a": 2}, {"b": 2}, {"a": 4}, {"b": 4}, {"a": 8}, {"b": 8}]  # each one is an improvement
KEY = bytes(range(32))


class Boom(BaseException):
    """Stands for kill -9: nothing in the engine catches it."""


class Recording(FakeEvaluator):
    """The fake evaluator, remembering the exact bytes of each kernel (and incumbent) it was given."""

    def __init__(self, fail_at=None):
        super().__init__()
        self.fail_at, self.seen = fail_at, []

    def __call__(self, kernel, suite=None, *, incumbent=None, **kw):
        self.seen.append((Path(kernel).parent.name, Path(kernel).read_text(),
                          Path(incumbent).read_text() if incumbent else None))
        if self.fail_at and self.fail_at == (Path(kernel).parent.name, incumbent is not None):
            raise Boom
        return super().__call__(kernel, suite, incumbent=incumbent, **kw)


def _engine(run_dir, evaluate=None, operator=None, max_iterations=5):
    return Engine(run_dir, strategy=AvoStrategy(0.01, 3), operator=operator or ScriptedOperator(STEPS),
                  evaluate=evaluate or Recording(), budgets=Budgets(max_iterations), info={"name": "t"})


def _crash_at(run_dir, cid=3, confirm=False):
    """A run killed inside candidate `cid`'s evaluation (or confirmation): its proposal is saved."""
    with pytest.raises(Boom):
        _engine(run_dir, evaluate=Recording(fail_at=(f"{cid:04d}", confirm))).run(Seed(KERNEL, "s"))
    assert Archive(run_dir).count() == cid - 1


def _resume(run_dir, **kw):
    fake = Recording()
    out = _engine(run_dir, evaluate=fake, **kw).run(Seed(KERNEL, "never read on resume"))
    return out, fake


def _forged_result(score=1e9):
    """An evaluation any candidate would love to have: correct and very fast."""
    return {"status": "ok", "score": score, "suite": "fake", "device": "fake", "shapes": [],
            "speedups": {"cudnn": score / 10}, "incumbent_ratio": 100.0, "incumbent_ratio_spread": 0.0}


def _kernel_hash(run_dir, cid):
    return results.digest((cand_dir(run_dir, cid) / "kernel.py").read_bytes())


# -- avo.search.results: signing and checking ------------------------------------------------------

def test_a_signed_record_reads_back_only_for_its_candidate_kind_and_kernel(tmp_path):
    p = results.path(tmp_path, 7, "eval")
    results.sign(p, {"status": "ok", "score": 1.5, "t": (1, 2)}, key=KEY, kind="candidate", candidate=7,
                 kernel_sha256="abc")
    assert results.load(p, key=KEY, kind="candidate", candidate=7, kernel_sha256="abc") == {
        "status": "ok", "score": 1.5, "t": [1, 2]}
    right = {"key": KEY, "kind": "candidate", "candidate": 7, "kernel_sha256": "abc"}
    for kw in ({"kind": "confirm"}, {"candidate": 8}, {"kernel_sha256": "abd"}):
        assert results.load(p, **{**right, **kw}) is None
    assert results.load(p, key=bytes(32), kind="candidate", candidate=7, kernel_sha256="abc") is None
    with pytest.raises(results.Rejected, match="bad MAC"):
        results.read(p, key=bytes(32), kind="candidate", candidate=7)


def _tamper(p, edit):
    doc = json.loads(p.read_text())
    edit(doc)
    p.write_text(json.dumps(doc))


@pytest.mark.parametrize("edit", [
    lambda d: d["result"].update(score=1e9),  # a better score
    lambda d: d.update(kernel_sha256="0" * 64),  # about other bytes
    lambda d: d.update(kind="confirm"),
    lambda d: d.update(mac=d["mac"].upper()),
    lambda d: d.update(mac="é" * 64),  # not even ASCII
    lambda d: d.update(mac="\udcff" * 64),  # nor encodable
    lambda d: d.pop("mac"),
    lambda d: d.update(extra=1),
])
def test_any_edit_of_a_signed_record_is_rejected(tmp_path, edit):
    p = results.path(tmp_path, 1, "eval")
    results.sign(p, {"score": 1.0}, key=KEY, kind="candidate", candidate=1, kernel_sha256="h")
    _tamper(p, edit)
    assert results.load(p, key=KEY, kind="candidate", candidate=1, kernel_sha256="h") is None


@pytest.mark.parametrize("content", [
    b"", b"\x00\xff\xfe garbage", b'{"kind": "candidate", "candidate": 1, "res', b"[1, 2, 3]", b"null",
    b'{"kind": 1, "candidate": "x", "kernel_sha256": [], "result": 3, "mac": 5}', b"[" * 200_000,
    b'{"kind": "candidate", "candidate": 1, "kernel_sha256": "h", "result": [], "mac": "00"}',
    "{\"a\": \"\udcff\"}".encode("utf-8", "surrogatepass"), b"1" * 10_000,
])
def test_malformed_files_are_rejected_not_raised(tmp_path, content):
    p = results.path(tmp_path, 1, "eval")
    p.parent.mkdir(parents=True)
    p.write_bytes(content)
    assert results.load(p, key=KEY, kind="candidate", candidate=1, kernel_sha256="h") is None


def test_links_fifos_and_giant_files_are_not_read(tmp_path, monkeypatch):
    good = results.path(tmp_path, 1, "eval")
    results.sign(good, {"score": 1.0}, key=KEY, kind="candidate", candidate=1, kernel_sha256="h")
    link = results.path(tmp_path, 2, "eval")
    link.parent.mkdir(parents=True)
    link.symlink_to(good)  # even a link to a genuine record: its target may change under us
    assert results.read_regular(link) is None
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    assert results.read_regular(fifo) is None  # and no hang
    assert results.read_regular(tmp_path) is None
    monkeypatch.setattr(results, "MAX_BYTES", 10)
    assert results.load(good, key=KEY, kind="candidate", candidate=1, kernel_sha256="h") is None


def test_the_run_secret_is_private_stable_and_remade_when_damaged(tmp_path):
    key = results.secret(tmp_path)
    p = tmp_path / ".avo" / "secret"
    assert len(key) == 32 and p.read_bytes() == key and stat.S_IMODE(p.stat().st_mode) == 0o600
    assert stat.S_IMODE(p.parent.stat().st_mode) == 0o700
    assert results.secret(tmp_path) == key and results.secret(tmp_path / "other") != key
    p.write_bytes(b"short")
    assert results.secret(tmp_path) not in (key, b"short") and len(p.read_bytes()) == 32
    p.unlink()
    p.parent.rmdir()
    p.parent.write_text("a file where the directory belongs")
    assert len(results.secret(tmp_path)) == 32 and stat.S_IMODE(p.parent.stat().st_mode) == 0o700


def test_write_atomic_never_writes_through_a_planted_link(tmp_path):
    victim = tmp_path / "victim"
    victim.write_text("precious")
    target = tmp_path / "out.json"
    target.with_name("out.json.tmp").symlink_to(victim)  # where the temporary file will be made
    results.write_atomic(target, "new")
    assert victim.read_text() == "precious" and target.read_text() == "new"
    target.unlink()
    target.symlink_to(victim)
    results.write_atomic(target, "newer")
    assert victim.read_text() == "precious" and not target.is_symlink() and target.read_text() == "newer"


# -- the engine: forged result files are worth nothing ---------------------------------------------

def test_result_files_live_outside_the_candidates_directories_and_are_signed(tmp_path):
    _engine(tmp_path, max_iterations=2).run(Seed(KERNEL, "s"))
    key = results.secret(tmp_path)
    for cid, kind in ((0, "seed"), (1, "candidate"), (2, "candidate")):
        assert not (cand_dir(tmp_path, cid) / "eval.json").exists()
        rec = results.read(results.path(tmp_path, cid, "eval"), key=key, kind=kind, candidate=cid)
        assert rec.kernel_sha256 == _kernel_hash(tmp_path, cid)
    rec = results.read(results.path(tmp_path, 1, "proposal"), key=key, kind="proposal", candidate=1)
    assert rec.result["source"] == (cand_dir(tmp_path, 1) / "kernel.py").read_text() and rec.result["parent"] == 0
    assert results.read(results.path(tmp_path, 1, "confirm"), key=key, kind="confirm", candidate=1)


@pytest.mark.parametrize("name", ["eval.json", "confirm.json"])
def test_a_forged_result_in_the_candidates_own_directory_is_ignored(tmp_path, name):
    _crash_at(tmp_path, 3, confirm=name == "confirm.json")
    forged = _forged_result()
    forged["status"] = "ok"
    (cand_dir(tmp_path, 3) / name).write_text(json.dumps(forged))  # the legacy place: never believed
    out, fake = _resume(tmp_path)
    assert out.iterations == 5
    assert ("0003", name == "confirm.json") in {(c, inc is not None) for c, _, inc in fake.seen}
    row = Archive(tmp_path).candidate(3)
    assert row.score < 1e6 and (row.incumbent_ratio or 0) < 100
    check_consistent(tmp_path, 5)


FORGERIES = {
    "bad MAC": lambda p, run: p.write_text(json.dumps({
        "kind": "candidate", "candidate": 3, "kernel_sha256": _kernel_hash(run, 3), "result": _forged_result(),
        "mac": "0" * 64})),
    "another key": lambda p, run: results.sign(p, _forged_result(), key=KEY, kind="candidate", candidate=3,
                                               kernel_sha256=_kernel_hash(run, 3)),
    "another candidate's record": lambda p, run: p.write_bytes(results.path(run, 2, "eval").read_bytes()),
    "garbage": lambda p, run: p.write_bytes(os.urandom(300)),
    "truncated": lambda p, run: p.write_text('{"kind": "candidate", "candidate": 3, "kernel_sha256": "'),
    "wrong types": lambda p, run: p.write_text(json.dumps({"kind": 3, "candidate": [], "kernel_sha256": None,
                                                           "result": "ok", "mac": {}})),
    "a directory": lambda p, run: (p.mkdir(), (p / "x").write_text("x")),
    "a symlink": lambda p, run: p.symlink_to(results.path(run, 2, "eval")),
}


@pytest.mark.parametrize("forgery", sorted(FORGERIES))
def test_a_forged_or_malformed_result_record_is_evaluated_again(tmp_path, forgery):
    _crash_at(tmp_path, 3)
    p = results.path(tmp_path, 3, "eval")
    p.parent.mkdir(parents=True, exist_ok=True)
    p.unlink(missing_ok=True)
    FORGERIES[forgery](p, tmp_path)
    out, fake = _resume(tmp_path)
    assert out.iterations == 5 and "0003" in {c for c, _, _ in fake.seen}
    assert Archive(tmp_path).candidate(3).score < 1e6
    assert any(e["event"] == "rejected" and e["file"] == "results/0003/eval.json" for e in events(tmp_path))
    check_consistent(tmp_path, 5)


def test_a_forged_proposal_changes_neither_parent_nor_kernel(tmp_path):
    _crash_at(tmp_path, 3)
    real = json.loads((cand_dir(tmp_path, 3) / "proposal.json").read_text())
    # A "proposal" claiming the seed as its parent, a supervisor intervention and a huge cost.
    forged = {**real, "parent": 0, "intervention": "restart", "cost_usd": 1e6, "error": None}
    (cand_dir(tmp_path, 3) / "proposal.json").write_text(json.dumps(forged))
    sp = results.path(tmp_path, 3, "proposal")
    doc = json.loads(sp.read_text())
    doc["result"].update(parent=0, intervention="restart", cost_usd=1e6)
    sp.write_text(json.dumps(doc))  # its MAC no longer fits
    out, fake = _resume(tmp_path)
    assert out.iterations == 5
    row = Archive(tmp_path).candidate(3)
    assert row.parent == 2 and row.intervention is None and row.cost_usd == 0.0
    assert Archive(tmp_path).totals()["cost_usd"] == 0.0
    check_consistent(tmp_path, 5)


def test_a_rewritten_candidate_kernel_is_restored_before_it_is_evaluated(tmp_path):
    # Killed in candidate 3's evaluation; then something rewrites its kernel.py into a faster one.
    _crash_at(tmp_path, 3)
    kernel = cand_dir(tmp_path, 3) / "kernel.py"
    submitted = kernel.read_text()
    kernel.write_text(_fast_fake(submitted))
    out, fake = _resume(tmp_path)
    assert [src for c, src, _ in fake.seen if c == "0003"] == [submitted, submitted]  # evaluated + confirmed
    assert kernel.read_text() == submitted
    v = Archive(tmp_path).version_of(3)
    assert Lineage.of_run(tmp_path).show(v.sha) == submitted and v.source_hash == results.digest(submitted)
    assert any(e["event"] == "restored" and e["file"] == "candidates/0003/kernel.py" for e in events(tmp_path))
    check_consistent(tmp_path, 5)


def test_a_round_mate_rewriting_a_candidates_kernel_changes_nothing(tmp_path):
    # A round of two: candidate 1's confirmation (run code) rewrites candidate 2's kernel.py
    # before candidate 2 is confirmed.
    fake = Recording()

    def evaluate(kernel, **kw):
        if Path(kernel).parent.name == "0001" and kw.get("incumbent"):
            other = cand_dir(tmp_path, 2) / "kernel.py"
            other.write_text(_fast_fake(other.read_text()))
        return fake(kernel, **kw)

    e = Engine(tmp_path, strategy=AvoStrategy(0.01, 3), operator=ScriptedOperator(STEPS), evaluate=evaluate,
               budgets=Budgets(2), info={"name": "t"}, parallel=2)
    e.run(Seed(KERNEL, "s"))
    two = results.read(results.path(tmp_path, 2, "proposal"), key=results.secret(tmp_path), kind="proposal",
                       candidate=2).result["source"]
    seen = [(src, inc) for c, src, inc in fake.seen if c == "0002"]
    assert len(seen) == 2 and all(src == two for src, _ in seen)  # evaluated, then confirmed: as submitted
    assert Archive(tmp_path).candidate(2).source_hash == results.digest(two)
    assert any(e["event"] == "restored" and e["file"] == "candidates/0002/kernel.py" for e in events(tmp_path))


# -- the engine: archived versions' kernel files ---------------------------------------------------

def _fast_fake(source):
    faster = source.replace('"b": 1', '"b": 8').replace('"b": 2', '"b": 8')
    assert faster != source
    return faster


def _plant(path, how):
    path.unlink()
    if how == "rewritten":  # the incumbent now looks much faster: nothing would beat it
        path.write_text(_fast_fake(Lineage.of_run(path.parents[2]).show()))
    elif how == "symlink":
        (path.parent / "fast.py").write_text(_fast_fake(Lineage.of_run(path.parents[2]).show()))
        path.symlink_to(path.parent / "fast.py")
    elif how == "directory":
        path.mkdir()


@pytest.mark.parametrize("how", ["rewritten", "deleted", "symlink", "directory"])
def test_an_archived_versions_kernel_is_restored_before_it_is_the_incumbent(tmp_path, how):
    _engine(tmp_path, max_iterations=2).run(Seed(KERNEL, "s"))
    best = Archive(tmp_path).best()
    path = tmp_path / best.path
    genuine = path.read_text()
    _plant(path, how)
    seen = []
    op = ScriptedOperator(STEPS)
    real = op.propose
    op.propose = lambda ctx: seen.append(ctx.parent_source) or real(ctx)
    out, fake = _resume(tmp_path, operator=op)
    assert out.iterations == 5
    assert seen[0] == genuine  # the operator varied the real incumbent
    confirms = [inc for c, _, inc in fake.seen if inc is not None]
    assert confirms and confirms[0] == genuine  # and the first confirmation timed it
    assert path.is_file() and not path.is_symlink()
    assert path.read_text() == genuine == Lineage.of_run(tmp_path).show(best.sha)
    restored = [e for e in events(tmp_path) if e["event"] == "restored"]
    assert restored[0]["file"] == best.path and restored[0]["version"] == best.version
    assert all(r.accepted for r in check_consistent(tmp_path, 5))


def test_a_kernel_that_cannot_be_restored_stops_the_run_with_one_line(tmp_path):
    _engine(tmp_path, max_iterations=2).run(Seed(KERNEL, "s"))
    best = Archive(tmp_path).best()
    (tmp_path / best.path).write_text(_fast_fake((tmp_path / best.path).read_text()))
    # The lineage commit's kernel blob is gone as well (git objects are files in the run dir too).
    lineage = Lineage.of_run(tmp_path)
    blob = lineage._git("rev-parse", f"{best.sha}:kernel.py").strip()
    (lineage.path / ".git" / "objects" / blob[:2] / blob[2:]).unlink()
    with pytest.raises(ConfigError) as err:
        _resume(tmp_path)
    msg = str(err.value)
    assert "\n" not in msg and f"version {best.version}" in msg and "cannot be trusted" in msg


def test_a_forged_lineage_commit_for_a_candidate_is_not_adopted(tmp_path):
    _crash_at(tmp_path, 3, confirm=True)
    # Something commits a kernel of its own under candidate 3's name before 3 is accepted.
    Lineage.of_run(tmp_path).commit(_fast_fake(KERNEL), "forged", {"Candidate": 3})
    _resume(tmp_path)
    v = Archive(tmp_path).version_of(3)
    assert results.digest(Lineage.of_run(tmp_path).blob(v.sha)) == v.source_hash
    assert Lineage.of_run(tmp_path).show(v.sha) == (cand_dir(tmp_path, 3) / "kernel.py").read_text()
    assert any(e["event"] == "rejected" and "lineage@" in e["file"] for e in events(tmp_path))


def test_transfer_checks_the_source_runs_best_against_its_archive(tmp_path):
    from avo.search.seed import from_run

    src = tmp_path / "src"
    _engine(src, max_iterations=2).run(Seed(KERNEL, "s"))
    best = Archive(src).best()
    assert from_run(str(src)).source == Lineage.of_run(src).show(best.sha)
    with Archive(src) as a:  # the archive's hash no longer matches the commit
        a._db.execute("UPDATE versions SET source_hash = 'x' WHERE version = ?", (best.version,))
    with pytest.raises(ConfigError, match="does not hold the kernel"):
        from_run(str(src))


# -- credentials ----------------------------------------------------------------------------------

def test_credentials_a_candidate_prints_are_kept_out_of_every_record(tmp_path, monkeypatch):
    secret = "sk-test-THIS-IS-A-FAKE-CREDENTIAL-0123456789"
    monkeypatch.setenv("SOME_SERVICE_API_KEY", secret)
    fake = FakeEvaluator()

    def evaluate(kernel, **kw):  # what a candidate that dumps its environment gets into the message
        r = fake(kernel, **kw)
        if "0002" in str(kernel):
            r.status, r.stage, r.score = "crash", "benchmark", None
            r.message = f"env: SOME_SERVICE_API_KEY={secret}\nTraceback ..."
            r.notes = [f"saw {secret}"]
        return r

    class Leaky(ScriptedOperator):
        def propose(self, ctx):
            p = super().propose(ctx)
            p.rationale += f" (used key {secret})"
            return p

    _engine(tmp_path, evaluate=evaluate, operator=Leaky(STEPS), max_iterations=3).run(Seed(KERNEL, "s"))
    assert Archive(tmp_path).candidate(2).status == "crash"
    for p in tmp_path.rglob("*"):
        if p.is_file() and ".git" not in p.parts:
            assert secret.encode() not in p.read_bytes(), p
    assert secret not in "".join(v.rationale for v in Lineage.of_run(tmp_path).versions())


def test_the_real_evaluator_is_told_to_hide_the_run_dir(tmp_path, monkeypatch):
    # The kernel's process must not see the run dir: its secret, archive, lineage, round-mates.
    from hydra import compose, initialize_config_dir

    from avo import config as avo_config
    from avo.paths import conf_dir
    from avo.search.run import build_engine

    avo_config.register()
    with initialize_config_dir(str(conf_dir()), version_base="1.3"):
        cfg = compose("config", overrides=["+experiment=smoke", "logger=none"])
    seen = []
    monkeypatch.setattr("avo.evaluate.api.evaluate", lambda *a, **kw: seen.append(kw))
    engine = build_engine(cfg, tmp_path / "run", console=False)
    engine.evaluate("kernel.py")
    engine.archive.close()
    assert seen and seen[0]["hide"] == (str(tmp_path / "run"),)
