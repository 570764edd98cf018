"""`tree="auto"`'s choice (`generation/autotune.py`) on synthetic cost curves and acceptance tables: a flat
verify cost picks a wide tree, a cost linear in the tokens a short chain; expected tokens follow the
acceptance model; the measured cost curve is cached per device and target and read back. (End to end on
the tiny pair: tests/test_speculative_hybrid.py.)"""

import dataclasses
import json
from types import SimpleNamespace

import pytest

from sparrow_jax.config import TextConfig
from sparrow_jax.generation import autotune
from sparrow_jax.generation.autotune import Acceptance, Auto, CostCurve
from sparrow_jax.generation.speculative.copy import CopyConfig
from sparrow_jax.generation.speculative.tree import TreeShape

TABLE = Acceptance(((0.8, 0.1, 0.05),), copy_reach=(0.3, 0.2, 0.2, 0.2), deep_share=0.1, source="test")
FLAT = CostCurve((1, 64), (10.0, 10.0))
LINEAR = CostCurve((1, 64), (10.0, 640.0))


def test_flat_cost_picks_a_wide_tree_and_linear_cost_a_short_chain():
    wide = autotune.choose(FLAT, TABLE, 0.0, autotune.candidates(TABLE))
    assert not wide["tree"].is_chain and wide["tree"].total >= 30
    assert wide["copy"] is not None and wide["copy"].most >= 4  # free copies: every depth the table says they reach
    short = autotune.choose(LINEAR, TABLE, 0.0, autotune.candidates(TABLE))
    assert short["tree"].is_chain and short["tree"].max_depth <= 2 and short["copy"] is None
    assert short["speedup"] < wide["speedup"] and wide["acceptance"] == "test"
    # A draft step that costs as much as the target's pushes a flat-cost device to fewer draft levels.
    costly = autotune.choose(FLAT, TABLE, 1.0, autotune.candidates(TABLE))
    assert costly["tree"].depth < wide["tree"].depth


def test_expected_tokens_follow_the_acceptance_model():
    chain = Acceptance(((0.5,), (0.4,)))
    assert autotune.expected_tokens(TreeShape.chain(3), None, chain) == pytest.approx(1 + 0.5 + 0.2 + 0.08)
    # A one-level tree of 3: the ranks' probabilities add up; copies reach depths the draft misses.
    assert autotune.expected_tokens(TreeShape(3, 0, 4), None, TABLE) == pytest.approx(1.95)
    both = autotune.expected_tokens(TreeShape(3, 0, 4), CopyConfig(tokens=2), TABLE)
    assert both == pytest.approx(1 + (1 - 0.05 * 0.7) + 0.2)
    # Deep copies: verified in the whole tree only in the deep share of cycles.
    shape, deep = TreeShape.chain(1), CopyConfig(tokens=1, deep=3)
    ms = autotune.cycle_ms(shape, deep, LINEAR, TABLE, 0.0)
    assert ms == pytest.approx(0.1 * LINEAR.at(6) + 0.9 * LINEAR.at(3))
    with pytest.raises(ValueError, match="sum to <= 1"):
        Acceptance(((0.8, 0.3),))


def fake_target(layers=2):
    cfg = TextConfig(vocab_size=16, hidden_size=8, intermediate_size=8, num_layers=layers, num_heads=2,
                     num_kv_heads=1, head_dim=4)
    return SimpleNamespace(lm=SimpleNamespace(config=cfg, dtype="float32"))


def test_the_cost_curve_is_cached_per_target_and_reused(tmp_path):
    calls = []

    def measure(target, context, tokens, steps, repeats):
        calls.append(context)
        return [1.0 + n for n in tokens]

    auto = Auto(contexts=(64, 4096), tokens=(1, 4), cache_dir=str(tmp_path))
    first = autotune.cached_costs(fake_target(), auto, measure)
    assert calls == [64, 4096] and [c.ms for c in first] == [(2.0, 5.0)] * 2
    again = autotune.cached_costs(fake_target(), auto, measure)
    assert calls == [64, 4096] and again == first  # read back, not measured
    (written,) = tmp_path.glob("*.json")
    assert json.loads(written.read_text())["key"]["target"]["num_layers"] == "2"
    autotune.cached_costs(fake_target(layers=3), auto, measure)  # another target: measured anew
    assert calls == [64, 4096, 64, 4096]
    assert autotune.curve_for(first, 3000).context == 4096 and autotune.curve_for(first, 100).context == 64


def test_the_shipped_demo_table_loads(tmp_path):
    from sparrow_jax import demo

    table = Acceptance.load(demo.DRAFT)
    assert table is not None and table.source.startswith("measured") and table.rates[0][0] > 0.5
    assert Acceptance.load(tmp_path) is None
    assert Acceptance.load(Acceptance(((0.5,),), source="x").save(tmp_path).parent) == Acceptance(((0.5,),),
                                                                                                 source="x")
    assert dataclasses.asdict(table)["deep_share"] == table.deep_share


def test_command_line_options_for_auto_and_deep_copies():
    from argparse import Namespace

    from infer.options import copy_config, tree_shape
    from sparrow_jax import demo

    auto = tree_shape(Namespace(chain=None, tree="auto", draft=str(demo.DRAFT)), True)
    assert isinstance(auto, Auto) and auto.acceptance == Acceptance.load(demo.DRAFT)
    assert copy_config(Namespace(copy=4, copy_deep=12)) == CopyConfig(tokens=4, deep=12)
    with pytest.raises(ValueError, match="--copy-deep D adds copied tokens on a long match to --copy M"):
        copy_config(Namespace(copy=None, copy_deep=8))
    with pytest.raises(ValueError, match="TOPK,DEPTH,TOTAL \\(e.g. 8,3,30\\) or auto"):
        tree_shape(Namespace(chain=None, tree="wide", draft=None), True)
