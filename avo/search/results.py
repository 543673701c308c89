"""The search's own records, which only the search writes and only the search can vouch for.

A candidate kernel is hostile code, run by the evaluator as the same user as the search: what it
can reach on disk it can rewrite. So every record the engine reads back on resume (a proposal, an
evaluation, a confirmation) lives under `results/NNNN/`, apart from the candidate's directory, and
is authenticated: an HMAC-SHA256 over its canonical JSON, keyed by the run's secret (32 random
bytes in `.avo/secret`, mode 0600, made at the start of a new run and then held in memory), bound
to the candidate, the kind of record and the SHA-256 of the exact kernel bytes it speaks about:

    {"kind": "candidate", "candidate": 7, "kernel_sha256": "...", "result": {...}, "mac": "..."}

A file that is missing, unreadable, not a regular file, malformed, forged, or about another
candidate, kind or kernel is worth nothing: `load` returns None and the engine does the work again.
This protects the search from a candidate that can write the run dir but not read `.avo/secret`;
the evaluator's sandbox is what keeps the candidate away from both.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import shutil
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

RESULTS = "results"
SECRET = Path(".avo") / "secret"
KEY_BYTES = 32
KINDS = ("seed", "candidate", "confirm", "proposal", "supervisor", "run")
MAX_BYTES = 64 << 20  # result files are kilobytes; a planted huge file is not read into memory
_FIELDS = {"kind", "candidate", "kernel_sha256", "result", "mac"}


class Rejected(Exception):
    """A result file that must not be believed (the message says why)."""


@dataclass(frozen=True)
class Record:
    kind: str
    candidate: int
    kernel_sha256: Optional[str]
    result: dict[str, Any]


def path(run_dir: str | Path, candidate: int, name: str) -> Path:
    """`results/NNNN/<name>.json`: name is eval, confirm, proposal or supervisor."""
    return Path(run_dir) / RESULTS / f"{candidate:04d}" / f"{name}.json"


def run_state_path(run_dir: str | Path) -> Path:
    """`results/run.json`: the archive's run state (recorded settings, elapsed time), so that an
    archive rebuilt from results/ keeps what the lost one knew."""
    return Path(run_dir) / RESULTS / "run.json"


def digest(data: bytes | str) -> str:
    """SHA-256 of the bytes (text as UTF-8, which is how the engine writes kernels)."""
    return hashlib.sha256(data.encode() if isinstance(data, str) else data).hexdigest()


def read_regular(p: str | Path, limit: Optional[int] = None) -> Optional[bytes]:
    """The bytes of a regular file, None for anything else: no symlink is followed (a link could
    point anywhere), no FIFO blocks us, no planted giant file is read whole."""
    limit = MAX_BYTES if limit is None else limit
    try:
        fd = os.open(p, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        with os.fdopen(fd, "rb", closefd=False) as f:
            data = f.read(limit + 1)
    except OSError:
        return None
    finally:
        os.close(fd)
    return data if len(data) <= limit else None


def file_digest(p: str | Path) -> Optional[str]:
    data = read_regular(p)
    return None if data is None else digest(data)


def write_atomic(p: str | Path, data: str | bytes, mode: int = 0o644) -> None:
    """All or nothing: a kill leaves the old file (or none) or the new one. The temporary file is
    created afresh (O_EXCL), so a planted symlink in its place is never written through."""
    p = Path(p)
    # What was planted where our directory or file belongs goes, instead of failing every resume.
    if p.parent.is_symlink() or (p.parent.exists() and not p.parent.is_dir()):
        p.parent.unlink()
    p.parent.mkdir(parents=True, exist_ok=True)
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p)
    tmp = p.with_name(p.name + ".tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data.encode() if isinstance(data, str) else data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, p)  # replaces a symlink or file at `p` itself, never its target


def secret(run_dir: str | Path) -> bytes:
    """The run's key: made on first use, then read back by every resume."""
    p = Path(run_dir) / SECRET
    key = read_regular(p, KEY_BYTES)
    if key is not None and len(key) == KEY_BYTES:
        return key
    # None yet (a new run), or damaged: a new key only costs re-doing what is not yet recorded.
    key = os.urandom(KEY_BYTES)
    write_atomic(p, key, mode=0o600)
    os.chmod(p.parent, 0o700)
    return key


def _canonical(body: dict[str, Any]) -> bytes:
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def _mac(key: bytes, body: dict[str, Any]) -> str:
    return hmac.new(key, _canonical(body), hashlib.sha256).hexdigest()


def sign(p: str | Path, result: dict[str, Any], *, key: bytes, kind: str, candidate: int,
         kernel_sha256: Optional[str]) -> None:
    """Write `result` (a JSON-able dict) as an authenticated record about those kernel bytes."""
    if kind not in KINDS:
        raise ValueError(f"unknown result kind {kind!r}")
    # Through JSON once, so that what is MACed is exactly what a reader will parse (tuples become
    # lists, odd values strings).
    result = json.loads(json.dumps(result, default=str))
    body = {"kind": kind, "candidate": int(candidate), "kernel_sha256": kernel_sha256, "result": result}
    write_atomic(p, json.dumps({**body, "mac": _mac(key, body)}, indent=2) + "\n")


def read(p: str | Path, *, key: bytes, kind: str, candidate: int) -> Record:
    """The record in `p` if this run's search wrote it for that candidate and kind; else Rejected."""
    data = read_regular(p)
    if data is None:
        raise Rejected("missing, not a regular file, or too large")
    try:
        doc = json.loads(data)
        if not isinstance(doc, dict) or set(doc) != _FIELDS or not isinstance(doc["mac"], str):
            raise Rejected("not a signed result record")
        body = {k: doc[k] for k in _FIELDS - {"mac"}}
        expected = _mac(key, body)
    except (ValueError, RecursionError):  # not UTF-8, not JSON, nested too deep to parse
        raise Rejected("not JSON") from None
    if not hmac.compare_digest(doc["mac"].encode(errors="surrogatepass"), expected.encode()):
        raise Rejected("bad MAC: not written by this run's search")
    # Authentic, so the types are ours; still, a record of another slot is not this one's.
    if doc["kind"] != kind or doc["candidate"] != candidate:
        raise Rejected(f"it is the {doc['kind']} record of candidate {doc['candidate']}")
    if not isinstance(doc["result"], dict):
        raise Rejected("no result object")
    return Record(doc["kind"], doc["candidate"], doc["kernel_sha256"], doc["result"])


def load(p: str | Path, *, key: bytes, kind: str, candidate: int, kernel_sha256: str) -> Optional[dict[str, Any]]:
    """The result in `p` about exactly the kernel bytes hashed `kernel_sha256`, else None."""
    try:
        record = read(p, key=key, kind=kind, candidate=candidate)
    except Rejected:
        return None
    return record.result if record.kernel_sha256 == kernel_sha256 else None
