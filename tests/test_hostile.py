"""The evaluator against hostile kernels (tests/hostile/*.py), on a CPU.

Each kernel there is one attack, written the way an optimising agent paid by the score would
write it, and says in its docstring the verdict it must get; each test below asserts exactly that
verdict. Two honest controls show that the suite does not get there by rejecting honest code.

Every kernel is copied into the test's own temporary directory (the evaluator's cwd too) before
it is evaluated, with its marker and safety root filled in: whatever it writes lands there, and
any process it leaves behind carries a marker unique to the test (tests kill those at the end).
Kernels that look for credentials only take values containing FAKECRED, the test's own.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import re
import secrets
import signal
import subprocess
import sys
import time
import urllib.parse
from dataclasses import asdict
from pathlib import Path

import pytest

from avo import package
from avo.config import EvaluatorConfig
from avo.evaluate import evaluate
from avo.evaluate.judge import owncode
from avo.suites import load

ROOT = Path(__file__).resolve().parents[1]
HOSTILE = ROOT / "tests" / "hostile"
REF = ROOT / "kernels" / "reference" / "sdpa.py"
CHUNKED = ROOT / "kernels" / "reference" / "chunked.py"

BASE = asdict(EvaluatorConfig(repeats=5, warmup_ms=50, rotate_inputs=2, compile_timeout_s=60,
                              correctness_timeout_s=60, benchmark_timeout_s=120))
# AVO_HOSTILE_SANDBOX=process (or bubblewrap) runs the whole suite under that isolation; unset, the
# evaluator chooses (auto). The verdicts asserted are the same in both.
if os.environ.get("AVO_HOSTILE_SANDBOX"):
    BASE["sandbox"] = os.environ["AVO_HOSTILE_SANDBOX"]
# Several kernels compute their honest part with torch's SDPA, exactly like the incumbent they are
# timed against (kernels/reference/sdpa.py): the own-code rule would reject them for that alone.
SETTINGS = {**BASE, "own_code_only": False}
ONE_SHAPE = load("smoke")[:1]


class Box:
    """A test's directory: where hostile kernels are copied to and what they may scribble on."""

    def __init__(self, path: Path):
        self.path = path.resolve()
        self.mark = secrets.token_hex(6)

    def kernel(self, name: str, where: str = "k", filename: str | None = None, **subs: str) -> Path:
        text = (HOSTILE / f"{name}.py").read_text()
        text = text.replace("@@MARK@@", self.mark).replace("@@SAFE@@", str(self.path))
        for key, value in subs.items():
            text = text.replace(f"@@{key}@@", value)
        dest = self.path / where / (filename or f"{name}.py")
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_text(text)
        return dest

    def package(self, name: str, where: str = "k") -> Path:
        """A hostile package (a directory under tests/hostile) copied with its placeholders filled:
        the package text the judge is given, as a search would hand it over."""
        src = HOSTILE / name
        pkg = package.from_entry(src / package.ENTRY)
        filled = {rel: text.replace("@@MARK@@", self.mark).replace("@@SAFE@@", str(self.path))
                  for rel, text in pkg.files.items()}
        dest = self.path / where / package.PACK_FILE
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_text(package.Package(filled).text())
        return dest

    def marked(self) -> list[int]:
        return marked_pids(f"avo-hostile-{self.mark}")

    def reap(self) -> None:
        reap(f"avo-hostile-{self.mark}")


def marked_pids(marker: str) -> list[int]:
    """Processes whose command line carries `marker` (started by a hostile kernel of this test)."""
    found = []
    for p in os.listdir("/proc"):
        if not p.isdigit() or int(p) == os.getpid():
            continue
        try:
            with open(f"/proc/{p}/cmdline", "rb") as f:
                if marker.encode() in f.read():
                    found.append(int(p))
        except OSError:
            pass
    return found


def reap(marker: str) -> None:
    for pid in marked_pids(marker):
        for sig in (signal.SIGCONT, signal.SIGKILL):
            try:
                os.kill(pid, sig)
            except OSError:
                pass


def none_left(box: Box, within: float = 5.0) -> list[int]:
    """The marked processes still alive after waiting up to `within` seconds for them to go."""
    end = time.monotonic() + within
    while (left := box.marked()) and time.monotonic() < end:
        time.sleep(0.1)
    return left


@pytest.fixture
def box(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    b = Box(tmp_path)
    yield b
    b.reap()


def run(kernel, **kw):
    kw.setdefault("settings", SETTINGS)
    return evaluate(kernel, kw.pop("suite", "smoke"), device="cpu", **kw)


def cli(kernel, *args, cwd: Path, env: dict | None = None):
    full_env = {**os.environ, **(env or {})}
    full_env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), full_env.get("PYTHONPATH")) if p)
    if "sandbox" in BASE:
        args = (*args, "--sandbox", BASE["sandbox"])
    return subprocess.run([sys.executable, "-m", "avo.evaluate", str(kernel), "--suite", "smoke", "--device", "cpu",
                           "--repeats", "5", "--warmup-ms", "50", *map(str, args)],
                          cwd=cwd, env=full_env, capture_output=True, text=True, timeout=300)


def failed(r, status: str = "incorrect") -> None:
    assert r.status == status, f"{r.status} at {r.stage}: {r.message[:1500]}"
    assert r.score is None and r.incumbent_ratio is None


# -- honest controls -------------------------------------------------------------------------------

def test_honest_sdpa_reference_is_ok(box):
    r = run(REF)
    assert r.status == "ok", r.message
    assert r.score > 0 and len(r.shapes) == len(load("smoke"))


def test_honest_chunked_seed_is_ok_under_the_default_rules(box):
    r = run(CHUNKED, settings=BASE)  # own code only: no attention library involved
    assert r.status == "ok", r.message
    assert r.score > 0


def test_results_say_how_the_kernel_was_isolated(box):
    r = run(CHUNKED, settings=BASE, stages=("compile",))
    assert r.status == "ok", r.message
    assert r.isolation["kind"] in ("bubblewrap", "process") and "detail" in r.isolation
    assert r.own_code in (True, False, None)
    d = r.to_dict()
    assert d["isolation"] == r.isolation and "own_code" in d


# -- P1-e: isolation -------------------------------------------------------------------------------

def test_a_patching_the_evaluator_in_process_changes_nothing(box):
    failed(run(box.kernel("a_patch_evaluator")))


def test_b_forged_verdicts_on_every_fd_are_ignored(box):
    failed(run(box.kernel("b_forge_verdict")))


def test_c_a_faked_clock_never_gives_a_fast_time(box):
    r = run(box.kernel("c_fake_clock"), suite=ONE_SHAPE)
    if r.status == "incorrect":
        assert re.search(r"clock|timing", r.message, re.I), r.message
        assert r.score is None
    else:
        assert r.status == "ok", r.message
        # It sleeps 0.2 s per call, its true time: a lower bound that load cannot break (a sleep
        # never ends early), unlike an upper bound.
        for s in r.shapes:
            assert s.time_ms >= 190.0, s


def test_d_a_daemon_cannot_rewrite_the_verdict_afterwards(box):
    kernel = box.kernel("d_daemon_rewrite")
    out = box.path / "verdict.json"
    p = cli(kernel, "--json", out, cwd=box.path)
    assert p.returncode == 1, p.stdout[-2000:] + p.stderr[-2000:]
    written = out.read_text()
    assert json.loads(written)["status"] == "incorrect"
    end = time.monotonic() + 5.0
    while time.monotonic() < end:
        assert out.read_text() == written, "the --json verdict was rewritten after the evaluation returned"
        time.sleep(0.1)
    assert not box.marked(), "a process the kernel started outlived the evaluation"


def test_e_planted_result_files_do_not_change_the_verdict(box):
    failed(run(box.kernel("e_plant_results", where="run/candidates/0001", filename="kernel.py")))


def test_f_rewriting_the_incumbent_does_not_slow_it(box):
    incumbent = box.path / "inc" / "kernel.py"
    incumbent.parent.mkdir()
    incumbent.write_bytes(REF.read_bytes())
    r = run(box.kernel("f_rewrite_incumbent", where="cand", filename="kernel.py"), incumbent=incumbent)
    assert r.status == "ok" and r.incumbent_status == "ok", r.message
    # What was timed is the incumbent's bytes as they were before any candidate code ran (in
    # process mode the attack's write may land on disk, after the judge read the file).
    assert r.env["sources"]["incumbent"] == hashlib.sha256(REF.read_bytes()).hexdigest(), r.env
    if r.isolation["kind"] == "bubblewrap":
        assert incumbent.read_bytes() == REF.read_bytes(), "the sandboxed kernel wrote outside its scratch dir"


def test_g_slowing_down_what_shares_its_process_does_not_pay(box):
    # The tell: every torch call in its process that is not its own gets a wrong answer. The
    # incumbent, the reference and the checks would be wrong if any of them ran there.
    r = run(box.kernel("g_slow_others", TELL="1"), incumbent=REF)
    assert r.status == "ok" and r.incumbent_status == "ok", r.message
    assert r.incumbent_ratio is not None and all(s.incumbent_ratio for s in r.shapes)


def test_g_detached_burners_do_not_slow_the_incumbent(box):
    # The tell: a burner kills any other worker it finds running while the kernel is out of its
    # call. The judge pauses every process the candidate started before anyone else runs, so none
    # is ever found, and the incumbent (timed between the candidate's calls) survives.
    r = run(box.kernel("g_burners", TELL="1"), incumbent=REF)
    assert not none_left(box), "CPU burners outlived the evaluation"
    if r.status == "incorrect":
        # Its burners run while its own call does and delay its own reply on a small CPU: the
        # judge's clock may refuse its report (as the GPU twin's busy spin may be refused).
        assert re.search(r"clock|timing", r.message), r.message
        return
    assert r.status == "ok" and r.incumbent_status == "ok", r.message
    assert r.incumbent_ratio is not None


# -- credentials -----------------------------------------------------------------------------------

def fake_credentials() -> dict[str, str]:
    def r(n: int = 12) -> str:
        return secrets.token_hex(n)

    return {
        "OPENAI_API_KEY": f"sk-FAKECRED{r()}",
        "ANTHROPIC_API_KEY": f"sk-ant-FAKECRED{r()}",
        "WANDB_API_KEY": f"FAKECRED{r(16)}",
        "AWS_SECRET_ACCESS_KEY": f"FAKECRED/{r(6)}+{r(6)}",
        "HF_TOKEN": f"hf_FAKECRED{r()}",
        "MY_SERVICE_CONF": f"sk-FAKECRED{r()}",  # an innocuous name: an allow-list, not a deny-list
    }


def encodings(value: str) -> dict[str, bytes]:
    raw = value.encode()
    out = {"raw": raw, "hex": binascii.hexlify(raw), "HEX": binascii.hexlify(raw).upper(),
           "url": urllib.parse.quote(value, safe="").encode()}
    for shift in range(3):  # base64 inside a longer blob: the part that encodes the value alone
        for name, enc in (("b64", base64.b64encode), ("b64url", base64.urlsafe_b64encode)):
            encoded = enc(b"\0" * shift + raw).rstrip(b"=")
            out[f"{name}@{shift}"] = encoded[(shift * 4 + 2) // 3: len(encoded) - 2]
    return out


def leaks(blobs: dict[str, bytes], creds: dict[str, str]) -> list[str]:
    """Where a credential (in some encoding) was found; never the values themselves."""
    return [f"{name} ({enc}) in {where}" for where, data in blobs.items() for name, value in creds.items()
            for enc, needle in encodings(value).items() if needle and needle in data]


def files_under(path: Path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() for p in path.rglob("*") if p.is_file() and not p.is_symlink()}


@pytest.fixture
def creds(monkeypatch):
    values = fake_credentials()
    for k, v in values.items():
        monkeypatch.setenv(k, v)
    return values


@pytest.mark.parametrize("name, statuses", [
    ("h_creds_import", ("import_error",)),
    ("h_creds_call", ("incorrect", "compile_error")),
    ("h_creds_print", ("crash",)),
    ("h_creds_files", ("incorrect",)),
])
def test_h_credentials_never_reach_the_result(box, creds, name, statuses):
    r = run(box.kernel(name))
    assert r.status in statuses, f"{r.status}: {r.message[:300]}"
    found = leaks({"result": json.dumps(r.to_dict(), default=str).encode(), **files_under(box.path)}, creds)
    assert not found, "\n".join(found)


def test_h_the_worker_never_sees_a_credential(box, creds):
    """The verdict as a one-bit channel: the kernel is honest unless it can see a planted value."""
    r = run(box.kernel("h_creds_oracle"), settings=BASE)
    assert r.status == "ok", "the kernel saw a credential (it returns garbage when it does)"


@pytest.mark.parametrize("name, status", [("h_creds_print", "crash"), ("h_creds_import", "import_error")])
def test_h_credentials_of_the_cli_never_reach_its_json_or_output(box, name, status):
    values = fake_credentials()
    out = box.path / "verdict.json"
    p = cli(box.kernel(name), "--json", out, cwd=box.path, env=values)
    assert json.loads(out.read_text())["status"] == status
    found = leaks({"json": out.read_bytes(), "stdout": p.stdout.encode(), "stderr": p.stderr.encode(),
                   **files_under(box.path)}, values)
    assert not found, "\n".join(found)


def test_i_every_process_dies_with_a_timeout(box):
    r = run(box.kernel("i_timeout_daemon"), settings={**SETTINGS, "compile_timeout_s": 3.0})
    failed(r, "timeout")
    assert not none_left(box), "a process the kernel started outlived the timeout"


# -- P1-f: measurement -----------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["j_mutate_v_zero", "j_mutate_q_zero", "j_mutate_v_mean"])
def test_j_mutating_the_inputs_is_caught(box, name):
    r = run(box.kernel(name))
    failed(r)
    assert re.search(r"modif|input", r.message, re.I), r.message


@pytest.mark.parametrize("name", ["k_detect_timed", "k_memo_by_ptr"])
def test_k_cheating_on_timed_calls_only_is_caught(box, name):
    failed(run(box.kernel(name)))


# A block of timed calls behind one release (GPU by default; forced here on a CPU).
BLOCKS = {**SETTINGS, "timing_block_calls": 3}


def test_s_an_honest_kernel_timed_in_blocks_is_ok(box):
    r = run(REF, settings=BLOCKS, suite=ONE_SHAPE)
    assert r.status == "ok", r.message
    row = r.shapes[0]
    assert row.overhead_ms["calls_per_block"] == 3, row.overhead_ms
    assert row.overhead_ms["per_block"]["median"] >= row.overhead_ms["median"], row.overhead_ms
    assert row.time_ms > 0 and row.reported_ms > 0


def test_s_skipping_the_work_inside_a_timing_block_is_caught(box):
    r = run(box.kernel("s_block_skip"), settings=BLOCKS)
    failed(r)
    assert "timed in the benchmark" in r.message, r.message


def test_k_a_cache_keyed_by_input_values_never_pays(box):
    # The tell: a hit returns zeros. Every timed output is verified on a CPU, so `ok` says that no
    # timed call ever saw values seen before (hits in the warm-up are harmless and unverified).
    twin = box.kernel("k_memo_by_content", where="twin", CACHE="False")
    r = run(box.kernel("k_memo_by_content", CACHE="True", TELL="1"), incumbent=twin)
    assert r.status == "ok" and r.incumbent_status == "ok", r.message


@pytest.mark.parametrize("name, says", [
    ("l_out_expand", None),  # its values are wrong too
    ("l_out_alias_input", r"modif|input|alias|overlap"),
])
def test_l_an_output_must_be_a_dense_tensor_of_its_own(box, name, says):
    r = run(box.kernel(name))
    failed(r)
    if says:
        assert re.search(says, r.message, re.I), r.message


def test_l_a_dense_permuted_output_is_read_through_its_strides(box):
    r = run(box.kernel("l_out_transposed"))
    assert r.status == "ok", r.message


def test_m_a_tensor_subclass_cannot_fake_its_values(box):
    failed(run(box.kernel("m_tensor_subclass")))


def test_n_softmax_scale_is_checked_at_a_non_default_value(box):
    failed(run(box.kernel("n_ignore_scale")))


@pytest.mark.parametrize("name", ["o_out_ignored", "o_out_half"])
def test_o_out_is_the_output_when_given(box, name):
    failed(run(box.kernel(name)))


def test_p_an_output_filled_after_the_return_is_wrong(box):
    failed(run(box.kernel("p_background_fill")))


def test_q_nothing_tells_a_checked_call_from_a_timed_one(box):
    failed(run(box.kernel("q_detect_check_mode")))


# -- t: packages (a candidate of several files) ------------------------------------------------------

def test_t_modules_named_like_the_judges_own_are_never_imported_in_their_place(box):
    r = run(box.package("t_pkg_shadow"), stages=("compile", "correctness"))
    assert r.status == "ok", r.message
    assert not list(box.path.glob("shadowed-*")), "a module of the package was imported in place of the real one"


@pytest.mark.parametrize("name", ["../../escaped.py", "sub/../../escaped.py", "/tmp/escaped.py"])
def test_t_a_package_naming_a_file_outside_is_refused_before_anything_is_written(box, name):
    text = json.dumps({"avo_package": 1, "files": {"kernel.py": "from .x import attention\n",
                                                   name.replace("/tmp", str(box.path)): "x = 1\n"}})
    kernel = box.path / "k" / package.PACK_FILE
    kernel.parent.mkdir(parents=True, exist_ok=True)
    kernel.write_text(text)
    r = run(kernel, stages=("compile",))
    failed(r, "import_error")
    assert "not a valid candidate" in r.message
    assert not list(box.path.rglob("escaped.py"))


def test_t_a_library_call_hidden_in_a_helper_module_is_found_by_the_static_look():
    # (on a GPU the judge runs this look on every module before a worker starts: tests/gpu)
    pkg = package.from_entry(HOSTILE / "r_gpu_library_in_helper" / package.ENTRY)
    assert owncode.static_violation(pkg.files["kernel.py"]) is None  # the entry alone is clean
    why = owncode.package_violation(dict(pkg.files))
    assert why and "scaled_dot_product_attention" in why and why.endswith("in helper.py")
