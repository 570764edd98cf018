"""Speculative decoding is lossless: greedy equals the target's own greedy decoding token for token
(chain and trees, ragged batches, EOS inside accepted blocks), sampling reproduces the target's
distribution; the draft's cache never holds visual tokens and its size does not depend on them."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import make_draft, random_video, video_prompt

import infer
from sparrow_jax.generation import PromptState
from sparrow_jax.generation import decoding as generation_module
from sparrow_jax.config import DraftConfig
from sparrow_jax.kv_cache import causal_mask
from sparrow_jax.models import build_model
from sparrow_jax.sampling import Sampler, SamplingConfig, row_keys
from sparrow_jax.generation.speculative.proposer import SparrowProposer
from sparrow_jax.generation.speculative.oracle import OracleProposer
from sparrow_jax.generation.speculative.tree import TreeShape

MAX_NEW = 20


def text_prompt(ids, index, count):
    """The PromptState a proposer starts from: one row's ids, the draft's text positions (padded), how many."""
    return PromptState(jnp.asarray(ids[None]), jnp.zeros((1,), jnp.int32), jnp.asarray([1]), Sampler.of(),
                       jnp.asarray(index), jnp.asarray([count]))


@pytest.fixture(scope="module")
def batch():
    rng = np.random.default_rng(11)
    prompts = [video_prompt(rng, 2, 4, 9), video_prompt(rng, 2, 7, 3)]
    _, pix = random_video(rng, 2, 2)
    return prompts, pix


@pytest.fixture(scope="module")
def greedy_ref(llava, batch):
    return infer.generate(llava[3], *batch, max_new_tokens=MAX_NEW).token_ids()


@pytest.mark.parametrize("tree", [TreeShape.chain(1), TreeShape.chain(4), TreeShape(4, 2, 12), TreeShape()],
                         ids=["chain1", "chain4", "tree4x2", "eagle2"])
def test_sparrow_draft_greedy_is_lossless(llava, batch, greedy_ref, tree):
    target = llava[3]
    out = infer.generate(target, *batch, max_new_tokens=MAX_NEW, draft=make_draft(target, window=8), tree=tree)
    assert out.token_ids() == greedy_ref
    assert out.stats["cycles"] >= 1 and len(out.stats["acceptance"]) == tree.max_depth


@pytest.mark.parametrize("tree", [TreeShape.chain(4), TreeShape(4, 2, 12)], ids=["chain4", "tree4x2"])
def test_reduced_vocabulary_draft_is_lossless_and_drafts_inside_it(llava, batch, greedy_ref, tree):
    """A draft over 40 of the 128 tokens (its own head): the output is the target's; every drafted token is
    one of the 40, so where the target's next token is outside them the draft is wrong, never the output."""
    target = llava[3]
    vocab = tuple(np.random.default_rng(5).choice(target.lm.config.vocab_size, 40, replace=False).tolist())
    draft = make_draft(target, window=8, vocab=vocab)
    out = infer.generate(target, *batch, max_new_tokens=MAX_NEW, draft=draft, tree=tree)
    assert out.token_ids() == greedy_ref and out.stats["cycles"] >= 1
    proposer = SparrowProposer.create(draft, tree, SamplingConfig(), chunk=8)
    ids = np.asarray(batch[0][0], np.int32)
    index = np.pad(np.arange(len(ids)), (0, -len(ids) % 8), mode="edge")[None]
    state = proposer.start(target, text_prompt(ids, index, len(ids)), first=jnp.asarray([7]),
                           hidden=jnp.ones((1, len(ids), target.lm.config.hidden_size)))
    drafted = proposer.propose(target, state, root=jnp.asarray([7]), n_out=jnp.asarray([1]), key=row_keys(0, 1))[0]
    assert set(np.asarray(drafted.tokens)[0, 1:].tolist()) <= set(vocab)


@pytest.mark.parametrize("k", [1, 4])
def test_chain_drafting_builds_the_top_k_tree(k):
    """A chain is drafted without the tree's ranking; it must be the tree the top-k expansion builds with
    top_k = 1 (tokens, parents, depths, mask, validity), its steps seeing the same ancestors."""
    from sparrow_jax.generation.speculative import tree as tree_mod

    rng = np.random.default_rng(k)
    b, h, v, shape = 2, 8, 11, TreeShape.chain(k)
    w, emb, head = (jnp.asarray(rng.standard_normal(s), jnp.float32) for s in [(h, h), (v, h), (h, v)])

    def step(tokens, hidden, positions, index, ancestors):
        seen = ancestors.astype(jnp.float32) @ jnp.arange(1, shape.scratch + 1, dtype=jnp.float32)
        return jnp.tanh(hidden @ w + emb[tokens] + 0.1 * positions[..., None] + 2.0 * seen[..., None])

    args = (step, lambda out: out @ head, jnp.asarray([3, 7]), jnp.asarray(rng.standard_normal((b, h)), jnp.float32),
            jnp.asarray([5, 9]))
    chain = tree_mod.draft_tree(*args, shape, Sampler.of(), row_keys(0, b))
    ranked = tree_mod._draft_top_k(*args, shape)
    for field in ("tokens", "parent", "depth", "mask", "valid"):
        np.testing.assert_array_equal(getattr(chain, field), getattr(ranked, field), err_msg=field)
    assert len(set(np.asarray(chain.tokens[:, 1:]).ravel())) > 1  # the draws are not all one token


def oracle(reference, tree, poison=None):
    ref = jnp.asarray(np.array([r[1:] + [0] * 8 for r in reference], np.int32))
    poison = jnp.zeros(ref.shape, bool) if poison is None else jnp.asarray(poison[:, : ref.shape[1]])
    return OracleProposer(ref, poison, 128, tree)


def test_oracle_full_acceptance_reaches_max_tau(llava, batch, greedy_ref):
    tree = TreeShape(top_k=2, depth=3, total=8)  # chain of 4 + 3 wrong siblings
    out = infer.generate(llava[3], *batch, max_new_tokens=MAX_NEW, draft=oracle(greedy_ref, tree))
    assert out.token_ids() == greedy_ref
    # 19 tokens after the first, 5 per cycle: 4 cycles per row, the last one truncated at max_new.
    assert out.stats["cycles"] == 8
    assert out.stats["acceptance"][:3] == [1.0, 1.0, 1.0]


def test_partial_acceptance_and_ragged_rows_stay_lossless(llava, batch, greedy_ref):
    tree = TreeShape(top_k=2, depth=3, total=8)
    poison = np.random.default_rng(0).random((2, 64)) < 0.3
    out = infer.generate(llava[3], *batch, max_new_tokens=MAX_NEW, draft=oracle(greedy_ref, tree, poison))
    assert out.token_ids() == greedy_ref
    assert 1.0 < out.stats["tau"] < 5.0


def test_eos_inside_an_accepted_block(llava, batch, greedy_ref):
    tree = TreeShape(top_k=1, depth=4, total=6)
    eos = greedy_ref[1][7]  # falls inside row 1's second block of 5
    ref = infer.generate(llava[3], *batch, max_new_tokens=MAX_NEW, eos_token_id=eos)
    out = infer.generate(llava[3], *batch, max_new_tokens=MAX_NEW, eos_token_id=eos, draft=oracle(greedy_ref, tree))
    assert out.token_ids() == ref.token_ids()
    assert list(out.lengths) == list(ref.lengths) and out.token_ids()[1][-1] == eos
    assert np.all(out.tokens[1, out.lengths[1]:] == 0)


def test_draft_cache_holds_text_only_and_does_not_grow_with_video(llava):
    """Structural VATA check: the draft's cache and per-step shapes are the same for 1 and 6 frames."""
    target = llava[3]
    draft = make_draft(target, window=16, pinned=2)
    prop = SparrowProposer.create(draft, TreeShape.chain(3), SamplingConfig(), chunk=8)
    rng = np.random.default_rng(2)
    shapes = []
    for frames in (1, 6):
        ids = video_prompt(rng, frames, 5, 4)
        text = np.flatnonzero(ids != 120)
        hidden = jnp.asarray(rng.standard_normal((1, len(ids), 64)), jnp.float32)
        index = np.pad(text, (0, -len(text) % 8), mode="edge")[None]
        prompt = text_prompt(ids, index, len(text))
        state = jax.jit(lambda h, p, f: prop.start(target, p, hidden=h, first=f))(hidden, prompt, jnp.asarray([5]))
        shapes.append(state.dcache.k.shape)
        assert int(state.dcache.count[0]) == len(text) == 9  # only text positions entered the draft
        # S + (W + M) + T + 1 slots: 2 + (16 + 8) + 2 + 1
        assert state.dcache.k.shape[3] == 29
    assert shapes[0] == shapes[1]


def test_full_window_equals_attention_over_all_text(llava):
    """With W >= text length the window cache is exactly causal attention over the text pairs."""
    target = llava[3]
    draft = make_draft(target, window=64)
    prop = SparrowProposer.create(draft, TreeShape.chain(2), SamplingConfig(), chunk=4)
    rng = np.random.default_rng(3)
    ids = video_prompt(rng, 1, 6, 5)
    text = np.flatnonzero(ids != 120)
    hidden = jnp.asarray(rng.standard_normal((1, len(ids), 64)), jnp.float32)
    index = np.pad(text, (0, -len(text) % 4), mode="edge")[None]
    state = prop.start(target, text_prompt(ids, index, len(text)), hidden=hidden, first=jnp.asarray([7]))
    nxt = np.append(ids[text][1:], 7)
    embeds = target.lm.embed_tokens(jnp.asarray(nxt[None]))
    full, _ = draft(embeds, hidden[:, text], jnp.arange(len(text))[None], causal_mask(1, len(text)))
    np.testing.assert_allclose(np.asarray(state.last_out[0]), np.asarray(full[0, -1]), atol=1e-5)


def test_prompt_in_one_causal_pass_equals_the_ring_chunk_by_chunk(llava):
    """A window that holds every text pair takes them in causal chunks over a plain cache (`_start_causal`,
    what the all-token baseline's 25k-position prompt needs); the state equals the ring's chunk-by-chunk one
    (`_start_ring`), ragged rows included, and so does the next proposal."""
    target = llava[3]
    draft = make_draft(target, window=64)
    prop = SparrowProposer.create(draft, TreeShape(2, 2, 5), SamplingConfig(), chunk=4)
    rng = np.random.default_rng(6)
    ids = np.stack([video_prompt(rng, 1, 14, 10), video_prompt(rng, 1, 14, 10)])
    text = [np.flatnonzero(row != 120) for row in ids]
    index = np.stack([t[:20] for t in text])
    prompt = PromptState(jnp.asarray(ids), jnp.zeros((2,), jnp.int32), jnp.asarray([1, 1]), Sampler.of(),
                         jnp.asarray(index), jnp.asarray([20, 13]))
    hidden = jnp.asarray(rng.standard_normal((2, ids.shape[1], 64)), jnp.float32)
    pairs = prop._prompt_pairs(target, prompt, hidden, jnp.asarray([7, 9]))
    ring, causal = prop._start_ring(target, *pairs), prop._start_causal(target, *pairs)
    chosen = prop.start(target, prompt, hidden=hidden, first=jnp.asarray([7, 9]))  # 20 pairs <= window 64
    np.testing.assert_array_equal(np.asarray(chosen.last_out), np.asarray(causal.last_out))
    np.testing.assert_array_equal(np.asarray(causal.dcache.pos), np.asarray(ring.dcache.pos))
    np.testing.assert_array_equal(np.asarray(causal.dcache.count), [20, 13])
    valid = np.asarray(ring.dcache.pos) >= 0  # slots that hold an entry (the rest are never read)
    for a, b in ((causal.dcache.k, ring.dcache.k), (causal.dcache.v, ring.dcache.v)):
        np.testing.assert_allclose(np.asarray(a)[:, :, :, : valid.shape[1]].transpose(1, 3, 0, 2, 4)[valid],
                                   np.asarray(b)[:, :, :, : valid.shape[1]].transpose(1, 3, 0, 2, 4)[valid], atol=1e-5)
    np.testing.assert_allclose(np.asarray(causal.last_out), np.asarray(ring.last_out), atol=1e-5)
    key = jax.random.split(jax.random.key(0), 2)
    trees = [prop.propose(target, s, root=jnp.asarray([7, 9]), n_out=jnp.asarray([1, 1]), key=key)[0]
             for s in (ring, causal)]
    np.testing.assert_array_equal(np.asarray(trees[0].tokens), np.asarray(trees[1].tokens))


def test_incompatible_draft_is_a_clear_error(llava, batch):
    from flax import nnx

    from sparrow_jax.config import TextConfig

    layers = TextConfig(vocab_size=128, hidden_size=32, intermediate_size=64, num_layers=1, num_heads=2,
                        num_kv_heads=2, head_dim=16)
    bad = build_model(DraftConfig(layers), rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="draft built for another target: draft hidden_size 32 != target hidden_size 64"):
        infer.generate(llava[3], *batch, max_new_tokens=4, draft=bad)


def test_ragged_batch_of_three(llava):
    """Rows of different prompt lengths (one-row batches are tested throughout, e.g. test_engine.py)."""
    target = llava[3]
    rng = np.random.default_rng(5)
    prompts = [video_prompt(rng, 1, 3, 2), video_prompt(rng, 1, 9, 6), video_prompt(rng, 1, 5, 12)]
    _, pix = random_video(rng, 3, 1)
    ref = infer.generate(target, prompts, pix, max_new_tokens=12).token_ids()
    # A tree only: chains over ragged rows and full acceptance are tested on the two-row batch above.
    out = infer.generate(target, prompts, pix, max_new_tokens=12, draft=make_draft(target, window=8),
                         tree=TreeShape(3, 2, 9))
    assert out.token_ids() == ref


def test_always_wrong_proposer_accepts_nothing(llava, batch, greedy_ref):
    tree = TreeShape(top_k=2, depth=2, total=6)
    wrong = oracle(greedy_ref, tree, poison=np.ones((2, 64), bool))
    out = infer.generate(llava[3], *batch, max_new_tokens=MAX_NEW, draft=wrong)
    assert out.token_ids() == greedy_ref
    assert out.stats["tau"] == 1.0 and out.stats["acceptance"] == [0.0, 0.0, 0.0]


def test_speculative_calls_in_one_bucket_compile_once(llava, batch):
    target = llava[3]
    draft = make_draft(target, window=8)
    prompts, pix = batch
    infer.generate(target, prompts, pix, max_new_tokens=6, draft=draft, tree=TreeShape.chain(2))
    before = generation_module._speculate._cache_size()
    infer.generate(target, [p[1:] for p in prompts], pix, max_new_tokens=6, draft=draft, tree=TreeShape.chain(2))
    assert generation_module._speculate._cache_size() == before


@pytest.mark.parametrize("window,pinned", [(4, 0), (5, 2)])
def test_small_window_equals_sliding_window_attention(llava, window, pinned):
    """The ring wraps several times over 23 text pairs: the draft output at every pair equals causal
    attention restricted to the last `window` positions plus the first `pinned` ones."""
    target = llava[3]
    draft = make_draft(target, window=window, pinned=pinned)
    prop = SparrowProposer.create(draft, TreeShape.chain(2), SamplingConfig(), chunk=4)
    rng = np.random.default_rng(4)
    ids = video_prompt(rng, 1, 12, 11)
    text = np.flatnonzero(ids != 120)
    n = len(text)
    hidden = jnp.asarray(rng.standard_normal((1, len(ids), 64)), jnp.float32)
    nxt = np.append(ids[text][1:], 7)
    embeds = target.lm.embed_tokens(jnp.asarray(nxt[None]))
    q, p = np.arange(n)[:, None], np.arange(n)[None, :]
    mask = (p <= q) & ((p > q - window) | (p < pinned))
    ref, _ = draft(embeds, hidden[:, text], jnp.arange(n)[None], jnp.asarray(mask[None]))
    for upto in (n - 5, n):  # two prompt lengths: the ring state at different wrap points
        idx = np.pad(text[:upto], (0, -upto % 4), mode="edge")[None]
        state = prop.start(target, text_prompt(ids, idx, upto), hidden=hidden, first=jnp.asarray([int(nxt[upto - 1])]))
        np.testing.assert_allclose(np.asarray(state.last_out[0]), np.asarray(ref[0, upto - 1]), atol=1e-5)


def test_baseline_draft_that_sees_visual_tokens(llava, batch, greedy_ref):
    """The EAGLE/MSD-style baseline reads every prompt position, visual ones included; still lossless."""
    from sparrow_jax.inputs import prepare, text_positions

    target = llava[3]
    prompts, pix = batch
    b = prepare(target.config, prompts, pix)
    _, text_only = text_positions(b, target.config, 8)
    _, everything = text_positions(b, target.config, 8, include_visual=True)
    assert list(everything) == [len(p) for p in prompts] and all(text_only < everything)
    out = infer.generate(target, prompts, pix, max_new_tokens=MAX_NEW, draft=make_draft(target, window=128),
                         tree=TreeShape.chain(3), draft_sees_visual=True)
    assert out.token_ids() == greedy_ref
