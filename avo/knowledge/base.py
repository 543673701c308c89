"""The knowledge base: configured sources, indexed into structural chunks, ranked with BM25.

Stable API (the agent's tools and `python -m avo.knowledge` call exactly these):

    kb = KnowledgeBase.from_config(cfg.knowledge, run_dir=None)
    kb.search("wgmma warpgroup fence", k=5, source=None) -> list[Hit]
    kb.read("cutlass_dsl", "cute/nvgpu/warpgroup/helpers.py", 90, 120) -> str
    kb.sources -> list[SourceStatus]      # indexed, or skipped and why
    kb.refresh_run()                      # re-read the run's lineage/archive/notes after a step

One BM25 index spans all sources, so our notes, the DSL's code and the run's own history compete on
the same term statistics; `source=` restricts a search to one of them.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional

import numpy as np
from rank_bm25 import BM25Okapi

from avo.config import ConfigError, KnowledgeSource
from avo.knowledge import cache, run_source
from avo.knowledge.chunks import Chunk, chunk_file
from avo.knowledge.sources import TEXT_SUFFIXES, Located, list_files, locate_folder, locate_package
from avo.knowledge.tokens import identifiers, query_terms, split_identifier, tokenize

log = logging.getLogger("avo.knowledge")

KINDS = ("folder", "package", "run")
READABLE_SUFFIXES = TEXT_SUFFIXES + (".pyi",)
# A chunk whose own name is spelt out in the query (`make_trivial_tiled_mma`, `PipelineTmaAsync`)
# is what the query asks for: its score is multiplied by this.
EXACT_NAME_BOOST = 1.5
SNIPPET_LINES = 3
SNIPPET_WIDTH = 160


class KnowledgeError(ValueError):
    """A bad search or read request (unknown source, a path outside its root, a bad line range)."""


@dataclass(frozen=True)
class Hit:
    source: str  # the configured source's name
    path: str  # relative to that source's root
    start_line: int  # 1-based, inclusive
    end_line: int
    title: str
    score: float
    snippet: str  # the chunk's lines that best match the query

    @property
    def ref(self) -> str:
        return f"{self.source}:{self.path}:{self.start_line}-{self.end_line}"


@dataclass
class SourceStatus:
    name: str
    kind: str
    status: str  # "indexed" | "skipped"
    detail: str = ""  # why it was skipped; how it was loaded
    root: Optional[str] = None
    version: str = ""
    files: int = 0
    chunks: int = 0
    seconds: float = 0.0
    cached: bool = False


def _field(obj: Any, key: str, default: Any = None) -> Any:
    if isinstance(obj, Mapping):
        return obj.get(key, default)
    return getattr(obj, key, default)


def _as_sources(raw: Iterable[Any]) -> list[KnowledgeSource]:
    """Config entries (dataclasses, dicts or OmegaConf nodes) checked and made plain."""
    out: list[KnowledgeSource] = []
    seen: set[str] = set()
    for i, item in enumerate(raw or []):
        name = _field(item, "name")
        if not isinstance(name, str) or not name or name == "???":
            raise ConfigError(f"knowledge.sources[{i}] has no name")
        if name in seen:
            raise ConfigError(f"knowledge source {name!r} is configured twice")
        seen.add(name)
        kind = _field(item, "kind")
        if kind not in KINDS:
            raise ConfigError(f"knowledge source {name!r}: kind={kind!r} is not one of {', '.join(KINDS)}")
        src = KnowledgeSource(
            name=name, kind=kind, path=_field(item, "path"), package=_field(item, "package"),
            optional=bool(_field(item, "optional", True)),
        )
        if kind == "folder" and not src.path:
            raise ConfigError(f"knowledge source {name!r} (kind=folder) needs a path")
        if kind == "package" and not src.package:
            raise ConfigError(f"knowledge source {name!r} (kind=package) needs a package")
        out.append(src)
    return out


def _chunk_terms(chunk: Chunk) -> list[str]:
    # Names and headings count three times (twice here, once in the text), the file's path once:
    # a query naming `fence` should prefer the function called fence over a mention of it.
    path_words = tokenize(chunk.path.rsplit(".", 1)[0])
    return tokenize(chunk.name) * 2 + path_words + tokenize(chunk.text)


# Prior weights by path: experimental and private modules hold real knowledge but are not what a
# kernel should be written against, so at equal text relevance the public, stable API wins.
_PATH_PRIORS = (("experimental", 0.6),)
_PRIVATE_PRIOR = 0.8


def path_prior(path: str) -> float:
    parts = path.split("/")
    weight = 1.0
    for word, factor in _PATH_PRIORS:
        if word in parts:
            weight *= factor
    if any(p.startswith("_") and not p.startswith("__init__") for p in parts):
        weight *= _PRIVATE_PRIOR
    return weight


def _snippet(text: str, terms: set[str]) -> str:
    lines = text.splitlines()
    best, best_count = 0, -1
    for i, line in enumerate(lines):
        count = len(terms.intersection(tokenize(line))) if line.strip() else -1
        if count > best_count:
            best, best_count = i, count
    picked = [ln.strip() for ln in lines[best:] if ln.strip()][:SNIPPET_LINES]
    return "\n".join(ln if len(ln) <= SNIPPET_WIDTH else ln[: SNIPPET_WIDTH - 3] + "..." for ln in picked)


class KnowledgeBase:
    def __init__(
        self,
        sources: Iterable[Any],
        top_k: int = 8,
        cache_dir: Optional[str | Path] = None,
        run_dir: Optional[str | Path] = None,
    ) -> None:
        if not isinstance(top_k, int) or top_k < 1:
            raise ConfigError(f"knowledge.top_k must be a positive integer, got {top_k!r}")
        self.top_k = top_k
        self.cache_dir = cache.default_dir(str(cache_dir) if cache_dir else None)
        self.run_dir = Path(run_dir) if run_dir else None
        self._statuses: list[SourceStatus] = []
        self._roots: dict[str, Located] = {}
        self._virtual: dict[str, dict[str, list[str]]] = {}  # run source: in-memory documents
        self._sources = _as_sources(sources)
        self._parts: list[tuple[list[Chunk], list[list[str]]]] = []
        for src in self._sources:
            status, found, found_terms = self._load(src)
            self._statuses.append(status)
            self._parts.append((found, found_terms))
        self._build_index()

    def _build_index(self) -> None:
        chunks: list[Chunk] = []
        owners: list[int] = []
        terms: list[list[str]] = []
        for i, (found, found_terms) in enumerate(self._parts):
            if self._statuses[i].status == "indexed":
                owners += [i] * len(found)
                chunks += found
                terms += found_terms
        self._chunks = chunks
        self._owner = np.asarray(owners, dtype=np.int32)
        self._prior = np.asarray([path_prior(c.path) for c in chunks], dtype=np.float64)
        self._by_name: dict[str, list[int]] = {}
        for i, c in enumerate(chunks):
            key = "_".join(split_identifier(c.name.rsplit(".", 1)[-1]))
            self._by_name.setdefault(key, []).append(i)
        # BM25Okapi refuses an empty corpus; an empty knowledge base simply finds nothing.
        self._bm25 = BM25Okapi(terms) if any(terms) else None

    def refresh_run(self) -> None:
        """Re-read the run's own history (kind=run sources) after an iteration; the cached sources
        are kept as they are. Cheap: the run source is small, the ranking is rebuilt in memory."""
        changed = False
        for i, src in enumerate(self._sources):
            if src.kind == "run" and self.run_dir is not None:
                status, found, found_terms = self._load(src)
                self._statuses[i] = status
                self._parts[i] = (found, found_terms)
                changed = True
        if changed:
            self._build_index()

    @classmethod
    def from_config(cls, cfg: Any, run_dir: Optional[str | Path] = None) -> "KnowledgeBase":
        """From `cfg.knowledge` (a KnowledgeConfig, a dict or an OmegaConf node)."""
        return cls(
            _field(cfg, "sources", []) or [],
            top_k=_field(cfg, "top_k", 8),
            cache_dir=_field(cfg, "cache_dir"),
            run_dir=run_dir,
        )

    # --- loading ------------------------------------------------------------------------

    def _missing(self, src: KnowledgeSource, why: str) -> SourceStatus:
        if not src.optional:
            raise ConfigError(f"knowledge source {src.name!r}: {why}")
        log.warning("knowledge source %r skipped: %s", src.name, why)
        return SourceStatus(src.name, src.kind, "skipped", why)

    def _load(self, src: KnowledgeSource) -> tuple[SourceStatus, list[Chunk], list[list[str]]]:
        started = time.perf_counter()
        if src.kind == "run":
            if self.run_dir is None:
                return SourceStatus(src.name, "run", "skipped", "no run directory given"), [], []
            if not self.run_dir.is_dir():
                return self._missing(src, f"run directory {self.run_dir} does not exist"), [], []
            docs, chunks = run_source.build(self.run_dir)
            self._virtual[src.name] = docs
            # kb_read may open only the notes files indexed here, not whatever else lies in the run
            # dir (the run's secret, files a candidate planted).
            notes = frozenset(c.path for c in chunks) - set(docs)
            self._roots[src.name] = Located(self.run_dir.resolve(), only=notes)
            status = SourceStatus(src.name, "run", "indexed", "rebuilt (never cached)",
                                  str(self.run_dir), files=len({c.path for c in chunks}), chunks=len(chunks))
            status.seconds = time.perf_counter() - started
            return status, chunks, [_chunk_terms(c) for c in chunks]

        if src.kind == "folder":
            located = locate_folder(src.path)
            where = f"folder {src.path!r} does not exist"
        else:
            located = locate_package(src.package)
            where = f"package {src.package!r} is not installed"
        if located is None:
            return self._missing(src, where), [], []
        located.files = list_files(located.root, located.only)
        self._roots[src.name] = located
        entry = cache.entry_path(
            self.cache_dir, src.name, located.fingerprint(f"{cache.INDEX_FORMAT}:{src.kind}")
        )
        data = cache.load(entry)
        cached = data is not None
        if data is None:
            chunks = self._index_files(located)
            terms = [_chunk_terms(c) for c in chunks]
            cache.save(entry, {
                "source": src.name, "root": str(located.root), "version": located.version,
                "chunks": [c.to_row() for c in chunks], "terms": [" ".join(t) for t in terms],
            })
        else:
            chunks = [Chunk.from_row(r) for r in data["chunks"]]
            terms = [t.split() for t in data["terms"]]
        status = SourceStatus(
            src.name, src.kind, "indexed", f"{'cache' if cached else 'built'}: {entry}",
            str(located.root), located.version, len(located.files), len(chunks),
            time.perf_counter() - started, cached,
        )
        return status, chunks, terms

    @staticmethod
    def _index_files(located: Located) -> list[Chunk]:
        chunks: list[Chunk] = []
        for rel, _, _ in located.files:
            try:
                text = (located.root / rel).read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError):
                continue  # a binary or unreadable file is not knowledge
            chunks += chunk_file(rel, text)
        return chunks

    # --- queries ------------------------------------------------------------------------

    @property
    def sources(self) -> list[SourceStatus]:
        return list(self._statuses)

    def _status(self, name: str) -> SourceStatus:
        for status in self._statuses:
            if status.name == name:
                return status
        known = ", ".join(s.name for s in self._statuses) or "none"
        raise KnowledgeError(f"unknown knowledge source {name!r} (known: {known})")

    def search(self, query: str, k: Optional[int] = None, source: Optional[str] = None) -> list[Hit]:
        """The k best chunks for `query`, best first; only those sharing a term with it."""
        k = self.top_k if k is None else k
        if k < 1:
            raise KnowledgeError(f"k must be >= 1, got {k}")
        if source is not None:
            status = self._status(source)
            if status.status != "indexed":
                raise KnowledgeError(f"knowledge source {source!r} is not available: {status.detail}")
        terms = query_terms(query)
        if not terms or self._bm25 is None:
            return []
        scores = self._bm25.get_scores(terms) * self._prior
        for key in identifiers(query):
            named = self._by_name.get(key)
            if named:
                scores[named] *= EXACT_NAME_BOOST
        if source is not None:
            owner = next(i for i, s in enumerate(self._statuses) if s.name == source)
            scores = np.where(self._owner == owner, scores, 0.0)
        top = np.argsort(-scores, kind="stable")[:k]
        wanted = set(terms)
        hits = []
        for i in top:
            if scores[i] <= 0:
                break
            c = self._chunks[i]
            hits.append(Hit(self._statuses[self._owner[i]].name, c.path, c.start_line, c.end_line,
                            c.title, float(scores[i]), _snippet(c.text, wanted)))
        return hits

    def read(self, source: str, path: str, start_line: int, end_line: int) -> str:
        """Lines start_line..end_line (1-based, inclusive; clamped to the file's end) of a file of
        an indexed source. Paths are relative to the source's root and may not leave it."""
        status = self._status(source)
        if status.status != "indexed":
            raise KnowledgeError(f"knowledge source {source!r} is not available: {status.detail}")
        try:
            start, end = int(start_line), int(end_line)
        except (TypeError, ValueError):
            raise KnowledgeError(f"line numbers must be integers, got {start_line!r}, {end_line!r}") from None
        if start < 1 or end < start:
            raise KnowledgeError(f"bad line range {start}-{end} (1-based, start <= end)")
        lines = self._virtual.get(source, {}).get(str(path))
        if lines is None:
            lines = self._file_lines(source, str(path))
        if start > len(lines):
            raise KnowledgeError(f"{source}:{path} has {len(lines)} lines; {start} is past its end")
        return "\n".join(lines[start - 1 : end])

    def _file_lines(self, source: str, path: str) -> list[str]:
        located = self._roots[source]
        root = located.root.resolve()
        target = (root / path).resolve()
        if not target.is_relative_to(root) or target == root:
            raise KnowledgeError(f"{path!r} is outside the root of knowledge source {source!r}")
        rel = target.relative_to(root).as_posix()
        if located.only is not None and rel not in located.only:
            raise KnowledgeError(f"{path!r} is not part of knowledge source {source!r}")
        if target.suffix not in READABLE_SUFFIXES:
            raise KnowledgeError(f"{path!r} is not a text file knowledge can read")
        try:
            return target.read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            raise KnowledgeError(f"{source}:{path} does not exist") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise KnowledgeError(f"cannot read {source}:{path}: {exc}") from None
