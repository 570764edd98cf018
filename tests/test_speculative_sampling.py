"""At temperature > 0 speculative decoding samples exactly the target's distribution.

Exactly computable case: top-k 3 leaves 3 candidates per step, so the first three generated tokens
have 27 possible outcomes whose probabilities we compute from the target itself. 1500 identical rows
are decoded in one call (rows draw independently) and compared with a chi-square test at significance
0.001 (fixed seeds: deterministic). Wrong acceptance rules (e.g. accepting every draft token,
resampling from p instead of the residual, or not renormalising over the untried siblings of a tree)
fail it by a wide margin.
"""


import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import struct
from helpers import make_draft

import infer
from sparrow_jax.sampling import Sampler, SamplingConfig, log_probs
from sparrow_jax.generation.speculative.oracle import OracleProposer
from sparrow_jax.generation.speculative.tree import Tree, TreeShape, ancestor_mask

ROWS, TOP_K, TEMP = 1500, 3, 1.0
CHI2_DF26_P001 = 54.05  # scipy.stats.chi2.ppf(0.999, 26)
PROMPT = [5, 17, 42, 9, 33, 71]


def exact_distribution(target):
    cfg = Sampler.of(SamplingConfig(TEMP, TOP_K))
    probs = {}
    def dist(prefix):
        logits = target(jnp.asarray([PROMPT + list(prefix)]))[0, -1]
        return np.exp(np.asarray(log_probs(logits, cfg)))
    p1 = dist(())
    for a in np.flatnonzero(p1 > 0):
        p2 = dist((a,))
        for b in np.flatnonzero(p2 > 0):
            p3 = dist((a, b))
            for c in np.flatnonzero(p3 > 0):
                probs[(a, b, c)] = p1[a] * p2[b] * p3[c]
    return probs


def chi_square(samples, probs):
    counts = {}
    for s in map(tuple, samples):
        counts[s] = counts.get(s, 0) + 1
    assert set(counts) <= set(probs), "a sample outside the target's support"
    stat = sum((counts.get(k, 0) - ROWS * p) ** 2 / (ROWS * p) for k, p in probs.items())
    return stat, len(probs)


@pytest.fixture(scope="module")
def exact(llava):
    probs = exact_distribution(llava[3])
    assert len(probs) == 27 and abs(sum(probs.values()) - 1) < 1e-5
    return probs


@struct.dataclass
class SupportTreeProposer:
    """A fixed-shape tree from the exact distribution: below the root (the first generated token a) all
    three tokens b of the target's support, least likely first, each with two children c (the second
    most likely, then the most likely). Every level-1 sibling matters for the multi-candidate rule."""

    kids: jax.Array  # [V, 3]
    grandkids: jax.Array  # [V, 3, 2]
    shape: TreeShape = struct.field(pytree_node=False, default=TreeShape(top_k=3, depth=1, total=10))

    @classmethod
    def build(cls, exact, vocab):
        kids, grandkids = np.zeros((vocab, 3), np.int32), np.zeros((vocab, 3, 2), np.int32)
        for a in {k[0] for k in exact}:
            pb = {b: sum(p for (x, y, _), p in exact.items() if (x, y) == (a, b)) for (x, b, _) in exact if x == a}
            kids[a] = sorted(pb, key=pb.get)
            for j, b in enumerate(kids[a]):
                pc = {c: p for (x, y, c), p in exact.items() if (x, y) == (a, b)}
                grandkids[a, j] = sorted(pc, key=pc.get)[-2:]
        return cls(jnp.asarray(kids), jnp.asarray(grandkids))

    def start(self, target, prompt, *, hidden, first):
        return ()

    def propose(self, target, state, *, root, n_out, key):
        b = root.shape[0]
        tokens = jnp.concatenate([root[:, None], self.kids[root], self.grandkids[root].reshape(b, 6)], axis=1)
        parent = jnp.broadcast_to(jnp.asarray([0, 0, 0, 0, 1, 1, 2, 2, 3, 3], jnp.int32), (b, 10))
        depth = jnp.broadcast_to(jnp.asarray([0, 1, 1, 1, 2, 2, 2, 2, 2, 2], jnp.int32), (b, 10))
        return Tree(tokens=tokens, parent=parent, depth=depth, mask=ancestor_mask(parent, 2),
                    valid=jnp.ones((b, 10), bool)), state

    def commit(self, target, state, accepted):
        return state


def run(target, draft, seed, tree=None):
    out = infer.generate(target, [PROMPT] * ROWS, max_new_tokens=3, temperature=TEMP, top_k=TOP_K, seed=seed,
                         draft=draft, tree=tree)
    assert np.all(out.lengths == 3)
    return out.tokens[:, :3]


@pytest.mark.parametrize("kind", ["autoregressive", "sparrow_chain", "sparrow_tree", "oracle_chain", "support_tree",
                                  "reduced_vocab_chain"])
def test_sampling_matches_target_distribution(llava, exact, kind):
    target, tree = llava[3], None
    if kind == "autoregressive":
        draft = None
    elif kind == "reduced_vocab_chain":
        # A draft over some of the target's support and other tokens: its q is 0 on the rest of the support,
        # which the residual distribution must then supply exactly.
        support = sorted({t for k in exact for t in k})
        vocab = tuple(support[::2]) + tuple(t for t in range(128) if t not in support)[:20]
        draft, tree = make_draft(target, window=4, vocab=vocab), TreeShape.chain(2)
    elif kind.startswith("sparrow"):
        draft = make_draft(target, window=4)
        tree = TreeShape.chain(2) if kind == "sparrow_chain" else TreeShape(top_k=3, depth=1, total=8)
    elif kind == "support_tree":
        draft = SupportTreeProposer.build(exact, 128)
    else:  # proposes the target's most likely tokens with a one-hot draft distribution
        ref = np.array(max(exact, key=exact.get), np.int32)
        draft = OracleProposer(jnp.asarray(np.tile(np.append(ref[1:], [0] * 4), (ROWS, 1))), jnp.zeros((ROWS, 6), bool),
                               128, TreeShape.chain(2))
    stat, cells = chi_square(run(target, draft, seed=1, tree=tree), exact)
    print(f"{kind}: chi2 = {stat:.1f} over {cells} cells (critical {CHI2_DF26_P001})")
    assert stat < CHI2_DF26_P001


def test_the_test_detects_a_biased_sampler(llava, exact):
    """Sanity: samples from a distribution differing in one branch (greedy third token) fail."""
    target = llava[3]
    samples = run(target, None, seed=2)
    # Replace the third token by the most likely one under its prefix: a plausible-looking bias.
    best = {}
    for a, b, c in exact:
        if (a, b) not in best or exact[(a, b, c)] > exact[(a, b, best[(a, b)])]:
            best[(a, b)] = c
    biased = np.array([[a, b, best[(a, b)]] for a, b, _ in samples])
    stat, _ = chi_square(biased, exact)
    assert stat > CHI2_DF26_P001
