"""The classical fixed-mutation operator: change declared KNOBS, no LLM.

It reads the kernel's (a package's entry module's) `KNOBS = {...}` and `KNOB_SPACE = {...}` literals with `ast`, moves
`agent.knobs_per_step` knobs (twice as many when the supervisor intervenes) to a neighbouring
allowed value, and rewrites only the value tokens inside the KNOBS literal, so every other byte of
the file, comments included, is unchanged. Configurations whose source hash is already in the
archive are skipped while an untried one exists; this is the baseline the paper argues against.

A knob named `..._d<N>` (e.g. `block_n_d64`) applies to head dim N only: when the suite has no
such head dim the operator leaves it alone, since changing it cannot change what is measured
(seen on the H100: two of three iterations spent on d64 knobs during a d128 search).
"""

from __future__ import annotations

import ast
import itertools
import math
import random
import re
from dataclasses import dataclass
from typing import Any

from avo import package
from avo.archive import source_hash
from avo.operators.base import OperatorError, Proposal, VariationContext


_ENUMERABLE = 20_000
_HEAD_DIM_KNOB = re.compile(r"_d(\d+)$")


@dataclass
class KnobSpec:
    values: dict[str, Any]
    space: dict[str, list[Any]]
    # Byte spans (line, col, end_line, end_col; 1-based lines, utf-8 byte columns) of each value.
    spans: dict[str, tuple[int, int, int, int]]


def _module_dict(tree: ast.Module, name: str) -> ast.Dict | None:
    for node in tree.body:
        target = None
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target = node.targets[0]
        elif isinstance(node, ast.AnnAssign):
            target = node.target
        if isinstance(target, ast.Name) and target.id == name and isinstance(node.value, ast.Dict):
            return node.value
    return None


def parse_knobs(source: str) -> KnobSpec:
    """The kernel's knobs, their allowed values and where their values sit in the source."""
    try:
        tree = ast.parse(source)
    except SyntaxError as exc:
        raise OperatorError(f"the kernel does not parse: {exc}") from None
    knobs, space = _module_dict(tree, "KNOBS"), _module_dict(tree, "KNOB_SPACE")
    if knobs is None or space is None:
        raise OperatorError("the kernel has no module-level KNOBS / KNOB_SPACE dict literals; "
                            "the knob operator has nothing to mutate")
    try:
        values = ast.literal_eval(knobs)
        allowed = ast.literal_eval(space)
    except ValueError as exc:
        raise OperatorError(f"KNOBS / KNOB_SPACE must be plain literals: {exc}") from None
    spans = {}
    for key, value in zip(knobs.keys, knobs.values):
        if isinstance(key, ast.Constant):
            spans[key.value] = (value.lineno, value.col_offset, value.end_lineno, value.end_col_offset)
    space_ok = {k: list(v) for k, v in allowed.items() if k in spans and isinstance(v, (list, tuple)) and v}
    if not space_ok:
        raise OperatorError("KNOB_SPACE lists no allowed values for any knob in KNOBS")
    return KnobSpec(values=values, space=space_ok, spans=spans)


def rewrite_knobs(source: str, spec: KnobSpec, new_values: dict[str, Any]) -> str:
    """The source with only the changed knob values replaced."""
    # bytes.splitlines breaks only at \n, \r and \r\n, exactly the line ends ast counts.
    lines = source.encode().splitlines(keepends=True)
    # Last span first, so earlier offsets stay valid.
    changes = sorted(((spec.spans[k], v) for k, v in new_values.items() if spec.values.get(k) != v),
                     reverse=True)
    for (line, col, end_line, end_col), value in changes:
        head = lines[line - 1][:col]
        tail = lines[end_line - 1][end_col:]
        lines[line - 1:end_line] = [head + repr(value).encode() + tail]
    return b"".join(lines).decode()


def _neighbours(values: list[Any], current: Any) -> list[Any]:
    if current not in values:
        return list(values)
    i = values.index(current)
    return [values[j] for j in (i - 1, i + 1) if 0 <= j < len(values)]


def reachable(spec: KnobSpec, head_dims: set[int] | None) -> KnobSpec:
    """Only the knobs that can matter for a suite with these head dims (None: all of them)."""
    if head_dims is None:
        return spec
    keep = {k: v for k, v in spec.space.items()
            if not (m := _HEAD_DIM_KNOB.search(k)) or int(m.group(1)) in head_dims}
    if not keep:
        raise OperatorError(f"every knob in KNOB_SPACE is for a head dim outside the suite's "
                            f"{sorted(head_dims)}; the knob operator has nothing useful to mutate")
    return KnobSpec(values=spec.values, space=keep, spans=spec.spans)


class KnobOperator:
    name = "knob"

    def __init__(self, knobs_per_step: int = 1, head_dims: set[int] | None = None):
        self.knobs_per_step = max(1, int(knobs_per_step))
        self.head_dims = set(head_dims) if head_dims is not None else None

    def propose(self, ctx: VariationContext) -> Proposal:
        entry = package.entry_source(ctx.parent_source)  # a package's KNOBS live in its kernel.py
        spec = reachable(parse_knobs(entry), self.head_dims)
        seen = ctx.archive.seen_hashes() if ctx.archive is not None else set()
        seen.add(source_hash(ctx.parent_source))
        step = self.knobs_per_step * (2 if ctx.directive else 1)
        # Iterations proposed at once (search.parallel) see the same archive and parent. They walk
        # one shared, seeded sequence and the i-th of the round takes its i-th new configuration,
        # so round-mates never pick the same one, whatever order their threads run in.
        mates = ctx.extra.get("round") or {}
        shared = int(mates.get("size", 1)) > 1
        rng = random.Random(mates["seed"]) if shared else ctx.rng
        skip = int(mates.get("index", 0)) if shared else 0
        for config, note in self._candidates(spec, rng, step):
            source = package.with_entry(ctx.parent_source, rewrite_knobs(entry, spec, config))
            h = source_hash(source)
            if h in seen:
                continue
            seen.add(h)
            if skip:
                skip -= 1
                continue
            changed = [f"{k} {spec.values[k]!r} -> {config[k]!r}" for k in config if config[k] != spec.values[k]]
            return Proposal(source=source, rationale=f"knob {', '.join(changed)}" + note)
        raise OperatorError("every configuration in KNOB_SPACE has already been tried"
                            + (" (counting this round's other proposals)" if shared else ""))

    def _candidates(self, spec: KnobSpec, rng: random.Random, step: int):
        """Mutations in order of preference: `step` random knobs moved to neighbouring values,
        then any single-knob neighbour, then any untried point of the whole space."""
        names = sorted(spec.space)
        for _ in range(8):
            chosen = rng.sample(names, min(step, len(names)))
            config = dict(spec.values)
            for k in chosen:
                options = [v for v in _neighbours(spec.space[k], spec.values[k]) if v != spec.values[k]]
                if options:
                    config[k] = rng.choice(options)
            yield config, ""
        singles = [(k, v) for k in names for v in _neighbours(spec.space[k], spec.values[k])
                   if v != spec.values[k]]
        rng.shuffle(singles)
        for k, v in singles:
            yield {**spec.values, k: v}, ""
        size = math.prod(len(spec.space[k]) for k in names)
        if size <= _ENUMERABLE:
            points = [dict(zip(names, combo)) for combo in itertools.product(*(spec.space[k] for k in names))]
            rng.shuffle(points)
        else:  # too many to list: sample
            points = ({k: rng.choice(spec.space[k]) for k in names} for _ in range(_ENUMERABLE))
        for point in points:
            yield {**spec.values, **point}, " (neighbours exhausted: jump)"


def make(cfg, run_dir=None) -> KnobOperator:
    attention = getattr(cfg, "attention", None)  # absent only in hand-made test configs
    head_dims = {int(s.head_dim) for s in getattr(attention, "shapes", None) or ()} or None
    return KnobOperator(knobs_per_step=cfg.agent.knobs_per_step, head_dims=head_dims)
