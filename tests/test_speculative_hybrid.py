"""Hybrid drafting end to end: copies merged into a random Sparrow draft's chain or an oracle's tree (and
copies alone) decode exactly the target's greedy tokens, on text that repeats so that copies are accepted;
the accepted tokens' sources add up, streaming included; the shape helpers size the cache. (T > 0 over
merged trees: test_hybrid_tree.py.)"""

import jax.numpy as jnp
import numpy as np
import pytest
from helpers import make_draft, random_video, video_prompt

import infer
from sparrow_jax.generation import CopyConfig, kv_slots_needed, proposal_shape
from sparrow_jax.generation import decoding
from sparrow_jax.generation.decoding import run_prefill
from sparrow_jax.generation.setup import setup
from sparrow_jax.generation.speculative.hybrid import HybridProposer
from sparrow_jax.generation.speculative.oracle import OracleProposer
from sparrow_jax.generation.speculative.proposer import SparrowProposer
from sparrow_jax.generation.speculative.tree import HybridShape, TreeShape
from sparrow_jax.sampling import Sampler

MAX_NEW = 40


@pytest.fixture(scope="module")
def repeating(llava):
    """Two ragged rows and the target's greedy tokens for them: the random target's answers repeat
    themselves (and words of the prompt), as answers about a video do, so copies are accepted."""
    rng = np.random.default_rng(7)
    _, pix = random_video(rng, 2, 2)
    prompts = [video_prompt(rng, 2, 5, 4), video_prompt(rng, 2, 3, 6)]
    return prompts, pix, infer.generate(llava[3], prompts, pix, max_new_tokens=MAX_NEW).token_ids()


def check_sources(out, rows):
    """Copies were accepted, and every accepted draft token is counted once: a cycle emits its accepted
    tokens and a bonus token, except a row's last cycle when the token limit cuts it before the bonus."""
    src = out.stats["accepted_from"]
    assert src["copy"] > 0
    assert 0 <= sum(src.values()) - (out.stats["new_tokens"] - rows - out.stats["cycles"]) <= rows
    assert sum(out.stats["cycles_from"].values()) == out.stats["cycles"] and out.stats["cycles_from"]["copy"] > 0
    assert out.stats["tau_novel"] <= out.stats["tau"]  # the repeating answers: some tokens excluded
    return src


def test_hybrid_with_a_random_draft_is_lossless_and_copies_are_accepted(llava, repeating):
    """The Sparrow draft's chain (drafted greedily inside a hybrid) and 2 copies, 6 on a 3-token match
    (adaptive depth): the copy branch is deeper than the draft's 3 levels, so the draft's ring takes longer
    commits than it drafts, and cycles verify the short tree or, on a long match, the deep one."""
    target = llava[3]
    prompts, pix, ref = repeating
    kw = dict(max_new_tokens=MAX_NEW, draft=make_draft(target, window=8), tree=TreeShape.chain(3),
              copy=CopyConfig(tokens=2, max_match=3, deep=4))
    out = infer.generate(target, prompts, pix, **kw)
    assert out.token_ids() == ref
    check_sources(out, len(ref))
    assert len(out.stats["acceptance"]) == 6 and out.stats["acceptance"][3] > 0  # paths deeper than the draft's
    assert 0 < out.stats["deep_cycles"] < out.stats["cycles"]  # both forwards ran
    # The cond between the two forwards reads the cache in place: no cache-sized copy in the program
    # (the same program: loaded from the test run's compilation cache).
    r = setup(target, prompts, pix, **kw)
    p, _ = run_prefill(r)
    begun = decoding._spec_begin(r.graphdef, r.params, r.proposer, r.prompt, p.logits, p.hidden, p.cache, r.key,
                                 r.config)
    hlo = decoding._speculate.lower(r.graphdef, r.params, r.proposer, begun.replace(cache=None), begun.cache,
                                    r.config).compile().as_text()
    cache_shape = "f32[%s]" % ",".join(map(str, begun.cache.k.shape))
    assert not [line for line in hlo.splitlines() if " copy(" in line and cache_shape in line]


def test_tree_auto_measures_once_chooses_and_records_the_choice(llava, repeating, tmp_path):
    """tree=Auto(...) end to end: the verify cost measured on this device (two tiny token counts), cached,
    the budget chosen (one candidate: the program of the test above, so nothing compiles anew) and
    recorded in the stats; a second request reads the cache back."""
    from sparrow_jax.generation import autotune

    target = llava[3]
    prompts, pix, ref = repeating
    option = (TreeShape.chain(3), CopyConfig(tokens=2, max_match=3, deep=4))
    auto = autotune.Auto(candidates=(option,), contexts=(64,), tokens=(1, 2), steps=2, repeats=1,
                         cache_dir=str(tmp_path))
    out = infer.generate(target, prompts, pix, max_new_tokens=MAX_NEW, draft=make_draft(target, window=8), tree=auto)
    assert out.token_ids() == ref
    choice = out.stats["tree_auto"]
    assert choice["tree"] == [1, 2, 4] and choice["chain"] and choice["copy"] == {"tokens": 2, "deep": 4}
    assert choice["tau"] > 1 and choice["cycle_ms"] > 0 and choice["acceptance"].startswith("prior")
    (cached,) = tmp_path.glob("*.json")
    failing = lambda *a: pytest.fail("measured again instead of reading the cache")  # noqa: E731
    again = autotune.resolve(target, make_draft(target), auto, None, 64, measure=failing)
    assert again["tree"] == option[0] and again["context"] == 64
    with pytest.raises(ValueError, match="tree must be a TreeShape or 'auto', got 'wide'"):
        infer.generate(target, prompts, pix, max_new_tokens=4, draft=make_draft(target), tree="wide")


def test_copies_merged_into_an_oracle_tree_stream_the_target_tokens(llava, repeating):
    """An oracle tree (the right chain, wrong at poisoned positions, plus siblings) with copies, through
    `stream`: tokens come from the draft alone, the copies alone, and both (copies merged into its nodes)."""
    target = llava[3]
    prompts, pix, ref = repeating
    reference = jnp.asarray(np.array([r[1:] + [0] * 8 for r in ref], np.int32))
    poison = jnp.asarray(np.random.default_rng(0).random(reference.shape) < 0.3)
    oracle = OracleProposer(reference, poison, 128, TreeShape(2, 3, 8))
    s = infer.stream(target, prompts, pix, max_new_tokens=MAX_NEW, draft=oracle, copy=6, steps_per_call=3)
    for _ in s:
        pass
    assert s.output.token_ids() == ref
    src = check_sources(s.output, len(ref))
    assert src["draft"] > 0 and src["both"] > 0


def test_copies_alone_are_lossless(llava, repeating):
    """Copies without a draft (prompt-lookup decoding; prefill keeps no hidden states for it)."""
    target = llava[3]
    prompts, pix, ref = repeating
    out = infer.generate(target, prompts, pix, max_new_tokens=MAX_NEW, copy=4)
    assert out.token_ids() == ref
    src = check_sources(out, len(ref))
    assert src["draft"] == src["both"] == 0 and out.stats["tau"] > 1.2


def test_hybrid_shape_sizes_the_cache_and_bad_values_are_clear():
    shape = proposal_shape(TreeShape(8, 3, 30), 10)
    assert shape == HybridShape(TreeShape(8, 3, 30), 10) and (shape.total, shape.max_depth) == (40, 10)
    assert not shape.is_chain and shape.scratch == TreeShape(8, 3, 30).scratch
    assert proposal_shape(None, None, draft=False) is None and proposal_shape(None, 4, draft=False).total == 5
    assert kv_slots_needed(10, 16, shape) == 64 + 16 + 40 + 10
    with pytest.raises(ValueError, match="copy must be a CopyConfig or an int"):
        proposal_shape(None, 2.5)
    # The Sparrow draft's ring is sized for the hybrid's deepest commit (max_depth + 1 pairs), not its own.
    sparrow = SparrowProposer(None, None, TreeShape.chain(3), Sampler.of(), 4)
    assert HybridProposer.create(sparrow, CopyConfig(tokens=10)).draft.commit_width == 11


def test_copies_with_the_all_token_baseline_are_a_clear_error(llava, repeating):
    prompts, pix, _ = repeating
    with pytest.raises(ValueError, match="draft_sees_visual=True .* cannot be combined with copy"):
        infer.generate(llava[3], prompts, pix, max_new_tokens=4, draft=make_draft(llava[3]), copy=4,
                       draft_sees_visual=True)
