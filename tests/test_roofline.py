"""The roofline floors (bytes a step must read, FLOPs a prefill must do) and `infer.bench roofline`."""

import jax
import numpy as np

from sparrow_jax import roofline
from sparrow_jax.config import TextConfig
from sparrow_jax.generation.decoding import run_prefill
from sparrow_jax.generation.setup import setup


def test_step_bytes_are_the_weights_and_the_cache_a_step_reads(llava):
    target = llava[3]
    ctx = 37
    r = setup(target, [list(range(3, 3 + ctx))], max_new_tokens=4)
    cache = run_prefill(r)[0].cache
    kv = (cache.k.nbytes + cache.v.nbytes) * ctx // cache.k.shape[3]  # [L, B, Hkv, C, D]: C slots, ctx filled
    lm = target.lm
    weights = sum(x.nbytes for path, x in jax.tree_util.tree_leaves_with_path(jax.tree.map(np.asarray, _pure(lm)))
                  if "embed_tokens" not in jax.tree_util.keystr(path) or lm.lm_head is None)
    assert cache.k.shape[3] > ctx and roofline.step_bytes(target, ctx) == weights + kv


def _pure(module):
    from flax import nnx

    return nnx.to_pure_dict(nnx.state(module))


def test_prefill_flops_count_each_matmul():
    cfg = TextConfig(vocab_size=10, hidden_size=8, intermediate_size=16, num_layers=1, num_heads=2, num_kv_heads=1,
                     head_dim=4)
    # per token: q 8x8, k 8x4, v 8x4, o 8x8, gate/up/down 3 x 8x16 = 576 multiply-adds; attention over the
    # 3 x 3 / 2 lower-triangle pairs, 2 heads, q.k and p.v of 4 each: 72; the last token's lm_head 8 x 10.
    assert roofline.prefill_flops(cfg, 3) == 2 * (576 * 3 + 72 + 80)


def test_roofline_bench_prints_every_phase_and_the_7b_cycle_costs(capsys):
    from infer.bench_roofline import main

    assert main(["--layers", "1", "--hidden", "32", "--contexts", "64", "--verify", "5", "--new-tokens", "3",
                 "--repeats", "1", "--family", "llava_onevision"]) == 0
    out = capsys.readouterr().out
    rows = [r.split("|")[1:-1] for r in out.splitlines() if r.startswith("| 64 |")]
    assert [r[1].split("(")[0].strip() for r in rows] == ["AR step", "verify 5 tokens", "prefill"]
    assert all(r[4].strip().endswith("%") for r in rows)
    costs = {(r.split("|")[1].strip(), "own head" in r): float(r.split("|")[4]) for r in out.splitlines()
             if r.startswith(("| chain 3 |", "| tree 8/3/30 |"))}
    assert len(costs) == 4 and all(1 < c < 2 for c in costs.values())  # the draft's levels add to a step's bytes
    for own in (False, True):
        assert costs["chain 3", own] < costs["tree 8/3/30", own]
    for cycle in ("chain 3", "tree 8/3/30"):  # a 32k-row head of its own reads less than the 152k lm_head
        assert costs[cycle, True] < costs[cycle, False] - 0.1
