"""No credential of the search's environment ends up in its run dir.

The real smoke search (`python -m avo +experiment=smoke`, W&B offline) runs with fake but
distinctive credentials in its environment; then every byte the run left behind (every file,
.hydra/, wandb/, the SQLite archive and its WAL, and the lineage's git objects decompressed) is
searched for each value, raw and base64 / hex / url-encoded.
"""

import base64
import binascii
import os
import secrets
import subprocess
import sys
import urllib.parse
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def fake_credentials() -> dict[str, str]:
    def r(n=20):
        return secrets.token_hex(n)

    return {  # each distinctive; the AWS one carries '/' and '+' so that url-encoding differs
        "ANTHROPIC_API_KEY": f"sk-ant-FAKE-{r()}",
        "OPENAI_API_KEY": f"sk-FAKEopenai{r()}",
        "WANDB_API_KEY": r(20),
        "AWS_SECRET_ACCESS_KEY": f"FAKEaws/{r(8)}+{r(8)}",
        "HF_TOKEN": f"hf_FAKE{r()}",
        "GITHUB_TOKEN": f"ghp_FAKE{r()}",
    }


def encodings(value: str) -> dict[str, bytes]:
    raw = value.encode()
    out = {"raw": raw, "hex": binascii.hexlify(raw), "HEX": binascii.hexlify(raw).upper(),
           "url": urllib.parse.quote(value, safe="").encode(), "url+": urllib.parse.quote_plus(value).encode()}
    # base64 inside a longer encoded blob depends on where the value starts modulo 3: keep the
    # characters that encode the value alone at each of the three alignments.
    for shift in range(3):
        for name, enc in (("b64", base64.b64encode), ("b64url", base64.urlsafe_b64encode)):
            encoded = enc(b"\0" * shift + raw).rstrip(b"=")
            core = encoded[(shift * 4 + 2) // 3: len(encoded) - 2]
            out[f"{name}@{shift}"] = core
    return out


def leaks(blobs: dict[str, bytes], creds: dict[str, str]) -> list[str]:
    found = []
    for where, data in blobs.items():
        for name, value in creds.items():
            for enc, needle in encodings(value).items():
                if needle and needle in data:
                    found.append(f"{name} ({enc}) in {where}")
    return found


def everything_under(run_dir: Path) -> dict[str, bytes]:
    blobs = {}
    for dirpath, _, filenames in os.walk(run_dir):
        for name in filenames:
            p = Path(dirpath) / name
            if p.is_file() and not p.is_symlink():
                blobs[str(p.relative_to(run_dir))] = p.read_bytes()
    lineage = run_dir / "lineage"
    if (lineage / ".git").is_dir():  # git objects are zlib-compressed: read them decompressed too
        blobs["lineage objects"] = subprocess.run(
            ["git", "-C", str(lineage), "cat-file", "--batch-all-objects", "--batch"],
            capture_output=True, check=True).stdout
    return blobs


def test_the_scanner_finds_what_it_looks_for():
    creds = fake_credentials()
    value = creds["AWS_SECRET_ACCESS_KEY"]
    for enc, needle in encodings(value).items():
        if enc.startswith("b64"):
            shift = int(enc.split("@")[1])
            fn = base64.urlsafe_b64encode if enc.startswith("b64url") else base64.b64encode
            data = fn(b"prefix"[:shift] + value.encode() + b" and more")
        else:
            data = b"<" + needle + b">"
        assert leaks({"x": data}, {"AWS_SECRET_ACCESS_KEY": value}), enc
    assert not leaks({"x": b"nothing to see"}, creds)


@pytest.mark.slow
def test_smoke_search_leaves_no_credential_in_its_run_dir(tmp_path):
    creds = fake_credentials()
    run_dir = tmp_path / "run"
    env = {**os.environ, "WANDB_MODE": "offline", "CUDA_VISIBLE_DEVICES": "", **creds}
    proc = subprocess.run([sys.executable, "-m", "avo", "+experiment=smoke", "evaluator.repeats=5", "search.max_iterations=3",
                           f"hydra.run.dir={run_dir}"], cwd=ROOT, env=env, capture_output=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (run_dir / "wandb").is_dir() and (run_dir / ".hydra").is_dir()  # the scan covers them
    blobs = everything_under(run_dir)
    assert "lineage objects" in blobs and "archive.sqlite" in blobs
    found = leaks(blobs, creds)
    # What the process printed is not in the run dir, but a user's terminal log: check it too.
    found += leaks({"stdout": proc.stdout, "stderr": proc.stderr}, creds)
    assert not found, "\n".join(found)


# A seed that does what a hostile candidate would: collect its environment and those of the
# processes above it (/proc/<pid>/environ: the search's, above all), then leave them, base64'd,
# beside itself, in the run dir it finds on an ancestor's command line, and in its output. The
# search must give the kernel's process no credential and no way into the run dir. (Against the
# evaluator of commit 1f4206a, which copied os.environ into the kernel's process and imported it
# from candidates/NNNN/, this test fails.)
DUMPER = '''

import base64 as _b64
import os as _os
import sys as _sys
from pathlib import Path as _Path

_dump, _places, _pid = repr(sorted(_os.environ.items())), [_Path(__file__).parent], _os.getpid()
while _pid > 1:
    try:
        _dump += repr(open(f"/proc/{_pid}/environ", "rb").read())
        for _arg in open(f"/proc/{_pid}/cmdline", "rb").read().decode().split("\\0"):
            if _arg.startswith("hydra.run.dir="):
                _places.append(_Path(_arg.split("=", 1)[1]))
        _pid = int(open(f"/proc/{_pid}/stat").read().rsplit(")", 1)[1].split()[1])
    except Exception:
        break
for _place in _places:
    try:
        (_place / "env-dump.txt").write_text(_b64.b64encode(_dump.encode()).decode() + "\\n" + _dump)
    except Exception:
        pass
print(_dump, file=_sys.stderr)
'''


def _bubblewrap_works() -> bool:
    from avo.evaluate import sandbox

    return sandbox.probe_bwrap()[0]


@pytest.mark.slow
@pytest.mark.skipif(not _bubblewrap_works(), reason="without bubblewrap a same-uid kernel can read its ancestors' "
                    "/proc/PID/environ and write into the run dir (README: what is not isolated)")
def test_a_kernel_dumping_its_environment_finds_no_credential(tmp_path):
    creds = fake_credentials()
    seed = tmp_path / "dumper.py"
    seed.write_text((ROOT / "kernels" / "reference" / "chunked.py").read_text() + DUMPER)
    run_dir = tmp_path / "run"
    env = {**os.environ, "WANDB_MODE": "offline", "CUDA_VISIBLE_DEVICES": "", **creds}
    proc = subprocess.run([sys.executable, "-m", "avo", "+experiment=smoke", "evaluator.repeats=5", "search.max_iterations=2",
                           f"hardware.seed_kernel={seed}", f"hydra.run.dir={run_dir}"], cwd=ROOT, env=env,
                          capture_output=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    found = leaks(everything_under(run_dir), creds) + leaks({"stdout": proc.stdout, "stderr": proc.stderr}, creds)
    assert not found, "\n".join(found)
