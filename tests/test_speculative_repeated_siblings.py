"""Greedy speculative decoding equals the target's own greedy decoding when the proposed tree has
siblings that repeat a token: a custom proposer of fixed trees over the known continuation, and the
oracle with a tree as wide as the vocabulary (issue 27's cases, a 12-token Qwen2 target). The oracle
itself never repeats a sibling."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx, struct

import infer
from sparrow_jax.config import TextConfig
from sparrow_jax.generation.speculative.oracle import OracleProposer
from sparrow_jax.generation.speculative.tree import Tree, TreeShape, ancestor_mask
from sparrow_jax.models import abstract_model

VOCAB, MAX_NEW = 12, 10
PROMPTS = [[3, 7, 1, 9, 4], [5, 2, 8]]


@struct.dataclass
class PatternProposer:
    """A fixed tree over the known continuation: node i >= 1 has parent parents[i] and carries the
    continuation's token at its depth when right[i], that token + 1 otherwise."""

    reference: jax.Array  # [B, L] tokens the target produces after the first one
    parents: tuple = struct.field(pytree_node=False)
    right: tuple = struct.field(pytree_node=False)
    shape: TreeShape = struct.field(pytree_node=False)

    def start(self, target, prompt, *, hidden, first):
        return ()

    def propose(self, target, state, *, root, n_out, key):
        parent = np.array(self.parents, np.int32)
        depth = np.zeros_like(parent)
        for i in range(1, len(parent)):
            depth[i] = depth[parent[i]] + 1
        at = jnp.clip(n_out[:, None] - 2 + jnp.asarray(depth), 0, self.reference.shape[1] - 1)
        good = jnp.take_along_axis(self.reference, at, axis=1)
        tokens = jnp.where(jnp.asarray(self.right), good, (good + 1) % VOCAB).at[:, 0].set(root)
        b, n = tokens.shape
        rows = lambda x: jnp.broadcast_to(jnp.asarray(x), (b, n))  # noqa: E731
        return Tree(tokens=tokens.astype(jnp.int32), parent=rows(parent), depth=rows(depth),
                    mask=ancestor_mask(rows(parent), int(depth.max())), valid=rows(np.ones(n, bool))), state

    def commit(self, target, state, accepted):
        return state


def random_target(seed):
    """A 2-layer Qwen2 target over VOCAB tokens, its parameters drawn on the host (eager initialisation
    compiles a kernel per parameter shape: ~10 s of CPU for this model)."""
    cfg = TextConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_layers=2, num_heads=4,
                     num_kv_heads=2, head_dim=8)
    graphdef, shapes = nnx.split(abstract_model(cfg))
    rng = np.random.default_rng(seed)

    def draw(path, x):
        w = rng.standard_normal(x.shape).astype(np.float32)
        return jnp.asarray(1 + 0.1 * w if "norm" in jax.tree_util.keystr(path) else 0.3 * w)

    return nnx.merge(graphdef, jax.tree_util.tree_map_with_path(draw, shapes))


@pytest.fixture(scope="module")
def target_and_reference():
    target = random_target(1)
    # 3 tokens more than compared, so that the last cycle's proposals are right too.
    longer = full_forward_greedy(target, PROMPTS, MAX_NEW + 3)
    assert len(set(longer[0])) > 3  # a varied continuation, not a loop of one token
    return target, [r[:MAX_NEW] for r in longer], jnp.asarray(np.array([r[1:] for r in longer], np.int32))


def full_forward_greedy(target, prompts, new):
    """The target's greedy continuations, each token from a full causal forward without a cache."""
    lengths = np.array([len(p) for p in prompts])
    ids = np.zeros((len(prompts), lengths.max() + new), np.int32)
    for i, p in enumerate(prompts):
        ids[i, : len(p)] = p
    rows = np.arange(len(prompts))

    @jax.jit
    def run(state, ids):
        def step(t, ids):
            at = lengths + t - 1  # each row's last token; the padding after it is never seen (causal)
            nxt = jnp.argmax(nnx.merge(graphdef, state)(ids)[rows, at], axis=-1)
            return ids.at[rows, at + 1].set(nxt.astype(jnp.int32))
        return jax.lax.fori_loop(0, new, step, ids)

    graphdef, state = nnx.split(target)
    out = np.asarray(run(state, jnp.asarray(ids)))
    return [out[i, n : n + new].tolist() for i, n in enumerate(lengths)]


def test_repeated_right_siblings_stay_lossless(target_and_reference):
    """The root's children: the right token twice (issue 27's repro) and a wrong one. Under the first
    copy the right token, whose only child is wrong; under the second a wrong token and the right one,
    which has the right token twice: the right path of depth 3 runs through the second copies."""
    target, ref, reference = target_and_reference
    parents = (0, 0, 0, 0, 1, 2, 2, 4, 6, 6)
    right = (True, True, True, False, True, False, True, False, True, True)
    draft = PatternProposer(reference, parents, right, TreeShape(2, 2, 10))
    out = infer.generate(target, PROMPTS, max_new_tokens=MAX_NEW, draft=draft)
    assert out.token_ids() == ref
    assert out.stats["acceptance"] == [1.0, 1.0, 1.0]  # every cycle accepts the whole depth-3 path


def test_oracle_tree_as_wide_as_the_vocabulary(target_and_reference):
    """TreeShape(4, 2, 15): the chain of 3 and 11 siblings of its first token, every token of the 12 once."""
    target, ref, reference = target_and_reference
    oracle = OracleProposer(reference, jnp.zeros(reference.shape, bool), VOCAB, TreeShape(4, 2, 15))
    out = infer.generate(target, PROMPTS, max_new_tokens=MAX_NEW, draft=oracle)
    assert out.token_ids() == ref
    assert out.stats["acceptance"] == [1.0, 1.0, 1.0]


def oracle_root_children(total):
    ref = jnp.asarray([[5, 9, 1, 0], [11, 2, 7, 0]], jnp.int32)
    orc = OracleProposer(ref, jnp.zeros(ref.shape, bool), VOCAB, TreeShape(4, 2, total))
    tree, _ = jax.jit(lambda root, n_out: orc.propose(None, (), root=root, n_out=n_out, key=None))(jnp.asarray([0, 4]),
                                                                                  jnp.asarray([1, 1]))
    tokens, parent = np.asarray(tree.tokens), np.asarray(tree.parent)
    return ref, [tokens[r, 1:][parent[r, 1:] == 0] for r in range(2)]


def test_oracle_never_repeats_a_sibling():
    """The root's children are the chain token first, then siblings skipping it: TreeShape(4, 2, 15)
    over 12 tokens uses every token once; one node more cannot be distinct and is an error."""
    ref, kids = oracle_root_children(15)
    for r in range(2):
        assert sorted(kids[r].tolist()) == list(range(VOCAB)) and kids[r][0] == ref[r, 0]
    with pytest.raises(ValueError, match="13 children of the root cannot be distinct tokens of a vocabulary of 12"):
        oracle_root_children(16)
