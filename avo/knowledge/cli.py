"""`python -m avo.knowledge search "query" [-k N] [--source NAME]` and
`python -m avo.knowledge read SOURCE PATH START END`, over conf/knowledge/default.yaml by default.

The config is read with plain yaml into the schema's dataclasses (no Hydra: a search from the shell
should answer in well under a second once the sources are cached).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from pathlib import Path
from typing import Optional

import yaml

from avo.config import ConfigError, KnowledgeConfig, KnowledgeSource
from avo.errors import fail
from avo.knowledge.base import KnowledgeBase, KnowledgeError
from avo.paths import conf_dir, resolve


def load_config(path: Optional[str] = None) -> KnowledgeConfig:
    """A knowledge group file (default: conf/knowledge/default.yaml) as a KnowledgeConfig."""
    file = resolve(path) if path else conf_dir() / "knowledge" / "default.yaml"
    try:
        raw = yaml.safe_load(file.read_text(encoding="utf-8")) or {}
    except OSError as exc:
        raise ConfigError(f"cannot read the knowledge config {file}: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{file} is not valid YAML: {str(exc).splitlines()[0]}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{file}: expected a mapping with sources/top_k/cache_dir")
    allowed = {f.name for f in dataclasses.fields(KnowledgeConfig)}
    unknown = sorted(set(raw) - allowed)
    if unknown:
        raise ConfigError(f"{file}: unknown key(s) {', '.join(unknown)} (allowed: {', '.join(sorted(allowed))})")
    source_keys = {f.name for f in dataclasses.fields(KnowledgeSource)}
    sources = []
    for i, item in enumerate(raw.get("sources") or []):
        if not isinstance(item, dict):
            raise ConfigError(f"{file}: sources[{i}] must be a mapping")
        bad = sorted(set(item) - source_keys)
        if bad:
            raise ConfigError(f"{file}: sources[{i}] has unknown key(s) {', '.join(bad)}")
        sources.append(KnowledgeSource(**item))
    return KnowledgeConfig(sources=sources, top_k=raw.get("top_k", 8), cache_dir=raw.get("cache_dir"))


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, not argparse's usage block
        fail(f"{message} (see python -m avo.knowledge --help)")


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m avo.knowledge", description=__doc__.splitlines()[0])
    p.add_argument("--config", help="a knowledge config file (default: conf/knowledge/default.yaml)")
    p.add_argument("--run-dir", help="a run directory, for the 'run' source (lineage, archive, notes)")
    p.add_argument("--cache-dir", help="where indexes are cached (default: ~/.cache/avo/knowledge)")
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("search", help="rank chunks for a query")
    s.add_argument("query")
    s.add_argument("-k", type=int, default=None, help="number of hits (default: the config's top_k)")
    s.add_argument("--source", help="only this source")
    r = sub.add_parser("read", help="print lines START..END of a file of a source")
    r.add_argument("source")
    r.add_argument("path")
    r.add_argument("start", type=int)
    r.add_argument("end", type=int)
    r.add_argument("--plain", action="store_true", help="without line numbers")
    sub.add_parser("sources", help="list the sources, their state and timings")
    return p


def _print_hits(kb: KnowledgeBase, args: argparse.Namespace) -> None:
    hits = kb.search(args.query, k=args.k, source=args.source)
    if not hits:
        print("no match")
    for hit in hits:
        print(f"{hit.ref}  {hit.title}  [{hit.score:.1f}]")
        for line in hit.snippet.splitlines():
            print(f"    {line}")


def main(argv: Optional[list[str]] = None) -> int:
    args = _parser().parse_args(argv)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("avo: warning: %(message)s"))
    log = logging.getLogger("avo.knowledge")
    log.addHandler(handler)
    propagate, log.propagate = log.propagate, False
    try:
        cfg = load_config(args.config)
        if args.cache_dir:
            cfg.cache_dir = args.cache_dir
        if args.run_dir and not Path(args.run_dir).is_dir():
            raise ConfigError(f"--run-dir {args.run_dir} is not a directory")
        kb = KnowledgeBase.from_config(cfg, run_dir=args.run_dir)
        if args.command == "search":
            _print_hits(kb, args)
        elif args.command == "read":
            text = kb.read(args.source, args.path, args.start, args.end)
            for n, line in enumerate(text.split("\n"), args.start):
                print(line if args.plain else f"{n:6d}  {line}")
        else:
            for s in kb.sources:
                where = f"{s.files} files, {s.chunks} chunks, {s.seconds:.2f} s" if s.status == "indexed" else ""
                print(f"{s.name:18s} {s.kind:8s} {s.status:8s} {s.version or '-':32s} {where}  {s.detail}")
    except (ConfigError, KnowledgeError) as exc:
        fail(str(exc))
    except BrokenPipeError:  # `| head` closing the pipe is not an error
        sys.stderr.close()
    finally:
        log.removeHandler(handler)
        log.propagate = propagate
    return 0
