"""The lineage: a git repository (`lineage/` in the run dir), one commit per accepted version.

Commit 0 is the seed; every later commit is an accepted candidate. The kernel lives in
`kernel.py`, a package's files under `kernel/`; the message is the operator's rationale followed by trailers (`Candidate: 7`,
`Operator: knob`, `Score: 12.3`, `Speedup-vs-cudnn: 1.02`, ...), so `git log` alone tells the
story of the run. Plain `git` through subprocess; identity and signing are set per call so it
works without (and regardless of) the user's global git config.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from avo import package

DIRNAME = "lineage"
KERNEL = "kernel.py"
PACKAGE_DIR = "kernel"  # a package's files (avo.package), when the version is one
_TRAILER = re.compile(r"^([A-Za-z][A-Za-z0-9-]*): (.*)$")
# core.autocrlf=false: a commit holds the kernel's exact bytes whatever the user's git config says.
_IDENTITY = ("-c", "user.name=avo", "-c", "user.email=avo@localhost", "-c", "commit.gpgsign=false",
             "-c", "core.hooksPath=/dev/null", "-c", "core.autocrlf=false")


class LineageError(RuntimeError):
    pass


@dataclass
class LineageVersion:
    index: int  # 0 = the seed
    sha: str
    subject: str
    body: str  # the rationale without the trailers
    trailers: dict[str, str] = field(default_factory=dict)

    @property
    def candidate(self) -> Optional[int]:
        value = self.trailers.get("Candidate")
        return int(value) if value is not None and value.isdigit() else None

    @property
    def score(self) -> Optional[float]:
        try:
            return float(self.trailers["Score"])
        except (KeyError, ValueError):
            return None

    @property
    def rationale(self) -> str:
        return (self.subject + ("\n\n" + self.body if self.body else "")).strip()


def format_message(rationale: str, trailers: dict[str, object]) -> str:
    """Rationale (first line = subject) + a blank line + `Key: value` trailers."""
    text = rationale.strip() or "(no rationale given)"
    lines = [f"{key}: {' '.join(str(value).split())}" for key, value in trailers.items() if value is not None]
    return text + ("\n\n" + "\n".join(lines) if lines else "") + "\n"


def parse_message(message: str) -> tuple[str, str, dict[str, str]]:
    """(subject, body, trailers) of a commit message written by format_message."""
    paragraphs = [p for p in re.split(r"\n\s*\n", message.strip()) if p.strip()]
    trailers: dict[str, str] = {}
    if len(paragraphs) > 1 and all(_TRAILER.match(line) for line in paragraphs[-1].splitlines()):
        for line in paragraphs.pop().splitlines():
            key, value = _TRAILER.match(line).groups()
            trailers[key] = value
    text = "\n\n".join(paragraphs)
    subject, _, body = text.partition("\n")
    return subject.strip(), body.strip(), trailers


class Lineage:
    def __init__(self, path: str | Path):
        self.path = Path(path)  # the repository itself (run_dir / "lineage")

    @classmethod
    def of_run(cls, run_dir: str | Path) -> "Lineage":
        return cls(Path(run_dir) / DIRNAME)

    # -- plumbing ----------------------------------------------------------------------------

    def _git(self, *args: str, stdin: str | None = None, check: bool = True) -> str:
        proc = subprocess.run(["git", *_IDENTITY, "-C", str(self.path), *args], input=stdin,
                              capture_output=True, text=True)
        if check and proc.returncode != 0:
            raise LineageError(f"git {' '.join(args)} failed in {self.path}: {proc.stderr.strip()}")
        return proc.stdout

    def exists(self) -> bool:
        return (self.path / ".git").is_dir()

    def init(self) -> None:
        """Create the repository (idempotent)."""
        self.path.mkdir(parents=True, exist_ok=True)
        if self.exists():
            return
        self._git("init", "-q", "-b", "main")
        for key, value in (("user.name", "avo"), ("user.email", "avo@localhost"), ("commit.gpgsign", "false")):
            self._git("config", key, value)

    def clear_stale_lock(self) -> None:
        """Remove git's index.lock left by a process killed mid-commit. Only the holder of the run
        dir's lock may call this: then no other git process can be working here."""
        (self.path / ".git" / "index.lock").unlink(missing_ok=True)

    def commit(self, source: str, rationale: str, trailers: dict[str, object],
               extra_files: dict[str, str] | None = None) -> str:
        """Write the kernel (and extra files), commit, return the new sha. A package's files go
        under `kernel/` (a single file is `kernel.py`), so a commit holds exactly one of the two."""
        pkg = package.parse(source)
        self._git("rm", "-r", "-q", "--cached", "--ignore-unmatch", "--", KERNEL, PACKAGE_DIR)
        for old in (self.path / KERNEL, self.path / PACKAGE_DIR):
            if old.is_dir() and not old.is_symlink():
                shutil.rmtree(old)
            elif old.exists() or old.is_symlink():
                old.unlink()
        for name, text in (extra_files or {}).items():
            (self.path / name).unlink(missing_ok=True)  # a planted symlink: replaced, not written through
            (self.path / name).write_bytes(text.encode())
        if pkg.single:
            (self.path / KERNEL).write_bytes(source.encode())
        else:
            pkg.write(self.path / PACKAGE_DIR)
        self._git("add", "--", KERNEL if pkg.single else PACKAGE_DIR, *(extra_files or {}))
        self._git("commit", "-q", "--no-verify", "--allow-empty", "-F", "-",
                  stdin=format_message(rationale, trailers))
        return self.head()

    # -- reading (the agent's tools use these) -----------------------------------------------

    def head(self) -> Optional[str]:
        if not self.exists():
            return None
        out = self._git("rev-parse", "--verify", "-q", "HEAD", check=False).strip()
        return out or None

    def versions(self) -> list[LineageVersion]:
        """Every version, the seed first."""
        if self.head() is None:
            return []
        out = self._git("log", "--reverse", "--format=%H%x00%B%x1e")
        result = []
        for i, record in enumerate(r for r in out.split("\x1e") if r.strip()):
            sha, _, message = record.strip("\n").partition("\x00")
            subject, body, trailers = parse_message(message)
            result.append(LineageVersion(i, sha, subject, body, trailers))
        return result

    def find_candidate(self, candidate: int) -> Optional[LineageVersion]:
        for v in self.versions():
            if v.candidate == candidate:
                return v
        return None

    def _ref(self, ref: str | int) -> str:
        if isinstance(ref, int) or (isinstance(ref, str) and ref.lstrip("-").isdigit() and len(ref) < 7):
            versions = self.versions()
            try:
                return versions[int(ref)].sha
            except IndexError:
                raise LineageError(f"no version {ref}; the lineage has {len(versions)}") from None
        return ref

    def show(self, ref: str | int = "HEAD") -> str:
        """The kernel of a version (index, sha or any git revision): its candidate text (the
        source of a single file; a package's canonical text, avo.package)."""
        return self.blob(ref).decode()

    def _cat(self, spec: str) -> bytes:
        proc = subprocess.run(["git", *_IDENTITY, "-C", str(self.path), "cat-file", "blob", spec], capture_output=True)
        if proc.returncode != 0:
            raise LineageError(f"git cat-file blob {spec} failed in {self.path}: "
                               f"{proc.stderr.decode(errors='replace').strip()}")
        return proc.stdout

    def blob(self, ref: str | int = "HEAD") -> bytes:
        """The kernel of a version byte for byte: what a file restored from the lineage is written
        from, and what its hash is checked on. No filter or textconv applies to cat-file."""
        rev = self._ref(ref)
        listing = self._git("ls-tree", "-r", "-z", "--full-tree", rev, "--", KERNEL, PACKAGE_DIR)
        entries = [e.split("\t", 1) for e in listing.split("\0") if e]
        single = [path for meta, path in entries if path == KERNEL]
        if single or not entries:
            return self._cat(f"{rev}:{KERNEL}")  # (an error naming the file when neither is there)
        files = {}
        for meta, path in entries:
            mode, kind, obj = meta.split()
            if kind != "blob" or mode not in ("100644", "100755"):
                raise LineageError(f"{rev}:{path} is not a plain file")
            try:
                files[path[len(PACKAGE_DIR) + 1:]] = self._cat(obj).decode()
            except UnicodeDecodeError:
                raise LineageError(f"{rev}:{path} is not UTF-8 text") from None
        try:
            return package.Package(files).text().encode()
        except package.PackageError as exc:
            raise LineageError(f"{rev}:{PACKAGE_DIR}/ is not a kernel package: {exc}") from None

    def diff(self, a: str | int, b: str | int = "HEAD") -> str:
        """Unified diff of the kernel (every file of a package) between two versions."""
        return package.diff(self.show(a), self.show(b))

    def log_text(self, limit: int | None = None) -> str:
        """One line per version: index, short sha, candidate, score, subject (newest last)."""
        versions = self.versions()
        if limit is not None:
            versions = versions[-limit:]
        return "\n".join(
            f"v{v.index:<3} {v.sha[:10]}  cand {v.candidate if v.candidate is not None else '-':<4} "
            f"score {v.trailers.get('Score', '-'):<10} {v.subject}" for v in versions)
