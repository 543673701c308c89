"""The knob operator (LLM-free baseline) and the CPU seed kernel it tunes."""

import importlib.util
import math
import random
from pathlib import Path

import pytest
import torch

from avo.archive import source_hash
from avo.operators.base import OperatorError, VariationContext
from avo.operators.knob import KnobOperator, parse_knobs, rewrite_knobs
from avo.operators import registry
from avo.operators.registry import make_operator
from avo.config import ConfigError

SOURCE = '''"""A kernel."""
import math

KNOBS = {
    "block_m": 16,  # rows per tile
    "block_n": 16,
    'stages': 2,
}
KNOB_SPACE = {"block_m": [16, 32, 64], "block_n": [16, 32, 64], "stages": [1, 2, 3]}

def attention(q, k, v, causal=False, softmax_scale=None):  # é unicode keeps offsets honest
    return KNOBS["block_m"]
'''


class _Seen:
    def __init__(self, hashes=()):
        self.hashes = set(hashes)

    def seen_hashes(self):
        return set(self.hashes)


def _ctx(source, seed=0, archive=None, directive=None):
    return VariationContext(iteration=1, parent_id="0", parent_source=source, parent_result=None,
                            run_dir=Path("."), workspace=Path("."), rng=random.Random(seed),
                            evaluate=lambda *a, **k: None, archive=archive, directive=directive)


def test_parse_and_rewrite_touch_only_values():
    spec = parse_knobs(SOURCE)
    assert spec.values == {"block_m": 16, "block_n": 16, "stages": 2}
    assert spec.space["stages"] == [1, 2, 3]
    new = rewrite_knobs(SOURCE, spec, {"block_m": 32, "block_n": 16, "stages": 3})
    assert parse_knobs(new).values == {"block_m": 32, "block_n": 16, "stages": 3}
    old_lines, new_lines = SOURCE.splitlines(), new.splitlines()
    changed = [i for i, (a, b) in enumerate(zip(old_lines, new_lines)) if a != b]
    assert len(old_lines) == len(new_lines) and len(changed) == 2
    assert new_lines[changed[0]] == '    "block_m": 32,  # rows per tile'
    assert new_lines[changed[1]] == "    'stages': 3,"


def test_propose_moves_one_knob_to_a_neighbour_deterministically():
    op = KnobOperator(knobs_per_step=1)
    p1, p2 = op.propose(_ctx(SOURCE, seed=5)), op.propose(_ctx(SOURCE, seed=5))
    assert p1.source == p2.source  # same seed, same proposal
    before, after = parse_knobs(SOURCE).values, parse_knobs(p1.source).values
    diff = {k for k in before if before[k] != after[k]}
    assert len(diff) == 1
    (k,) = diff
    space = parse_knobs(SOURCE).space[k]
    assert abs(space.index(after[k]) - space.index(before[k])) == 1
    assert p1.rationale == f"knob {k} {before[k]!r} -> {after[k]!r}"
    two = KnobOperator(knobs_per_step=1).propose(_ctx(SOURCE, seed=5, directive="try something else"))
    assert sum(parse_knobs(two.source).values[x] != before[x] for x in before) == 2  # bolder when told


def test_never_repeats_a_tried_configuration_until_exhausted():
    op = KnobOperator()
    seen = {source_hash(SOURCE)}
    for i in range(26):  # 27 points in the space, the parent is one
        p = op.propose(_ctx(SOURCE, seed=i, archive=_Seen(seen)))
        h = source_hash(p.source)
        assert h not in seen
        seen.add(h)
    with pytest.raises(OperatorError, match="already been tried"):
        op.propose(_ctx(SOURCE, archive=_Seen(seen)))


def test_kernels_without_knobs_are_refused():
    with pytest.raises(OperatorError, match="KNOBS"):
        KnobOperator().propose(_ctx("def attention(q, k, v):\n    pass\n"))
    with pytest.raises(OperatorError, match="literal"):
        parse_knobs("KNOBS = {'a': f(1)}\nKNOB_SPACE = {'a': [1]}\n")


def test_registry(monkeypatch):
    class Cfg:
        class agent:
            kind = "knob"
            knobs_per_step = 2

    assert make_operator(Cfg).name == "knob"
    assert {"knob", "avo", "cli"} <= set(registry.available())
    Cfg.agent.kind = "mine"
    with pytest.raises(ConfigError, match="not one of"):
        make_operator(Cfg)
    monkeypatch.setattr(registry, "_FACTORIES", dict(registry._FACTORIES))  # undone after the test
    seen = []
    registry.register("mine", lambda cfg, run_dir: seen.append(run_dir) or KnobOperator())
    assert make_operator(Cfg, "/tmp/run").name == "knob" and seen == [Path("/tmp/run")]


# -- the CPU seed ---------------------------------------------------------------------------------

SEED = Path(__file__).resolve().parents[1] / "kernels" / "reference" / "chunked.py"


def _load(knobs):
    spec = importlib.util.spec_from_file_location("chunked_under_test", SEED)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    mod.KNOBS.update(knobs)
    return mod


def _reference(q, k, v, causal):
    g = q.shape[2] // k.shape[2]
    kf, vf = k.float().repeat_interleave(g, 2), v.float().repeat_interleave(g, 2)
    s = torch.einsum("bqhd,bkhd->bhqk", q.float(), kf) / math.sqrt(q.shape[-1])
    if causal:
        s = s.masked_fill(torch.ones(s.shape[-2:], dtype=torch.bool).triu(1), -math.inf)
    return torch.einsum("bhqk,bkhd->bqhd", s.softmax(-1), vf)


@pytest.mark.parametrize("knobs", [{"block_m": 16, "block_n": 16}, {"block_m": 32, "block_n": 256},
                                   {"block_m": 256, "block_n": 16}])
@pytest.mark.parametrize("causal", [False, True])
def test_chunked_seed_is_correct_for_every_tiling(knobs, causal):
    mod = _load(knobs)
    torch.manual_seed(0)
    q = torch.randn(1, 100, 8, 64, dtype=torch.bfloat16)
    k, v = (torch.randn(1, 100, 2, 64, dtype=torch.bfloat16) for _ in range(2))
    ref = _reference(q, k, v, causal)
    out = mod.attention(q, k, v, causal=causal)
    assert out.dtype == torch.bfloat16 and out.shape == q.shape
    assert ((out.float() - ref).norm() / ref.norm()).item() < 6e-3
    buf = torch.full_like(q, float("nan"))
    assert mod.attention(q, k, v, causal=causal, out=buf) is buf and not buf.isnan().any()
    f32 = mod.attention(q.float(), k.float(), v.float(), causal=causal)
    assert f32.dtype == torch.float32 and ((f32 - ref).norm() / ref.norm()).item() < 1e-5


def test_chunked_seed_knob_space_is_what_the_operator_reads():
    spec = parse_knobs(SEED.read_text())
    assert spec.values == {"block_m": 16, "block_n": 16}
    assert set(spec.space) == {"block_m", "block_n"}


# -- knobs a suite cannot reach ---------------------------------------------------------------------

PER_HEAD_DIM = '''
KNOBS = {"block_n_d64": 128, "block_n_d128": 128, "num_stages": 2}
KNOB_SPACE = {"block_n_d64": [64, 128, 192], "block_n_d128": [64, 128, 176], "num_stages": [1, 2, 3]}
'''


def test_knobs_for_head_dims_outside_the_suite_are_left_alone():
    op = KnobOperator(head_dims={128})
    changed = set()
    for seed in range(40):
        after = parse_knobs(op.propose(_ctx(PER_HEAD_DIM, seed=seed)).source).values
        changed |= {k for k, v in after.items() if v != {"block_n_d64": 128, "block_n_d128": 128, "num_stages": 2}[k]}
    assert changed == {"block_n_d128", "num_stages"}
    everything = set()
    for seed in range(40):
        after = parse_knobs(KnobOperator().propose(_ctx(PER_HEAD_DIM, seed=seed)).source).values
        everything |= {k for k, v in after.items() if v != 128 and k != "num_stages"}
    assert "block_n_d64" in everything  # without a suite, every knob is fair game


def test_a_suite_that_reaches_no_knob_is_refused():
    only_d64 = PER_HEAD_DIM.replace('"num_stages": [1, 2, 3]', '"num_stages": []')
    with pytest.raises(OperatorError, match="head dim outside"):
        KnobOperator(head_dims={256}).propose(_ctx(only_d64))


def test_the_operator_takes_the_head_dims_of_the_composed_suite():
    from hydra import compose, initialize_config_dir

    from avo import config as avo_config
    from avo.operators.knob import make
    from avo.paths import conf_dir

    avo_config.register()
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        cfg = compose(config_name="config", overrides=["+experiment=mha_h100", "agent=knob", "model=none"])
    assert make(cfg).head_dims == {128}
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        cfg = compose(config_name="config", overrides=["+experiment=smoke"])
    assert make(cfg).head_dims == {64, 128}
