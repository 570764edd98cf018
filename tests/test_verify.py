"""Verification is lossless for any tree a proposer builds, siblings that repeat a token included.

The target here is a table: the logits after a node are a fixed random function of the node's token
path (root first), as a real target's are, so two copies of one token under one parent see the same
distribution. Greedy: the accepted path is a real root path of target-argmax tokens, as long as the
longest one in the tree. T > 0: the emitted tokens, continued by sampling the target itself, follow
the target's distribution exactly (chi-square test at significance 0.001, fixed seeds).
"""

import jax
import jax.numpy as jnp
import numpy as np

from helpers import CHI2_DF26_P001, argmax_after, paths_of, ranked, sampled_chi_square, table_logits, table_probs

from sparrow_jax.sampling import Sampler, SamplingConfig, row_keys
from sparrow_jax.generation.speculative import verify
from sparrow_jax.generation.speculative.tree import Tree, ancestor_mask


def build(rows, vocab, valid=None):
    """(Tree, logits [B, N, V], max_depth) for rows of (parents, tokens) lists of one length N."""
    parents, tokens = (np.array([r[k] for r in rows], np.int32) for k in (0, 1))
    depth = np.zeros_like(parents)
    for i in range(1, parents.shape[1]):
        depth[:, i] = depth[np.arange(len(rows)), parents[:, i]] + 1
    max_depth = int(depth.max())
    logits = np.array([[table_logits(p, vocab) for p in paths_of(*r)] for r in rows], np.float32)
    valid = np.ones(parents.shape, bool) if valid is None else valid
    parent = jnp.asarray(parents)
    tree = Tree(tokens=jnp.asarray(tokens), parent=parent, depth=jnp.asarray(depth),
                mask=ancestor_mask(parent, max_depth), valid=jnp.asarray(valid))
    return tree, jnp.asarray(logits), max_depth


def test_greedy_repeated_siblings_hand_built():
    """Root -> two copies of the right token g1 (and a wrong one); under the first copy the right g2
    with only a wrong child; under the second a wrong token and the right g2, which has two copies of
    the right g3. The longest accepted path is root -> copy 2 -> its g2 -> the first g3: 3 tokens."""
    v, root = 5, 3
    g1 = argmax_after([root], v)
    g2 = argmax_after([root, g1], v)
    g3 = argmax_after([root, g1, g2], v)
    wrong = lambda t: (t + 1) % v  # noqa: E731
    parents = [0, 0, 0, 0, 1, 2, 2, 4, 6, 6]
    tokens = [root, g1, g1, wrong(g1), g2, wrong(g2), g2, wrong(g3), g3, g3]
    tree, logits, max_depth = build([(parents, tokens)], v)
    n, path, bonus = jax.device_get(verify.greedy(tree, logits, max_depth))
    assert n.tolist() == [3]
    assert path[0].tolist() == [0, 2, 6, 8]
    assert bonus.tolist() == [argmax_after([root, g1, g2, g3], v)]


def test_greedy_random_trees_over_a_tiny_vocabulary():
    """256 random trees of 12 nodes over 3 tokens (most siblings repeat a token), some nodes invalid:
    verify.greedy against a brute-force search over every node."""
    v, rows, n_nodes, max_depth = 3, 256, 12, 4
    rng = np.random.default_rng(0)
    trees, valid = [], rng.random((rows, n_nodes)) > 0.1
    valid[:, 0] = True
    for _ in range(rows):
        parents, tokens, depth = [0], [int(rng.integers(v))], [0]
        for i in range(1, n_nodes):
            p = int(rng.choice([j for j in range(i) if depth[j] < max_depth]))
            right = argmax_after(paths_of(parents, tokens)[p], v)
            parents.append(p)
            tokens.append(right if rng.random() < 0.6 else int(rng.integers(v)))
            depth.append(depth[p] + 1)
        trees.append((parents, tokens))
    tree, logits, d = build(trees, v, valid)
    n, path, bonus = jax.device_get(verify.greedy(tree, logits, d))
    for r, (parents, tokens) in enumerate(trees):
        paths = paths_of(parents, tokens)
        ok = [True]
        for i in range(1, n_nodes):
            ok.append(ok[parents[i]] and valid[r, i] and tokens[i] == argmax_after(paths[parents[i]], v))
        longest = max(len(paths[i]) - 1 for i in range(n_nodes) if ok[i])
        assert n[r] == longest, r
        nodes = path[r, : n[r] + 1]
        assert nodes[0] == 0 and all(parents[b] == a for a, b in zip(nodes, nodes[1:])) and ok[nodes[-1]], r
        assert bonus[r] == argmax_after(paths[nodes[-1]], v), r
    assert np.mean(n) > 1  # the trees accept something: the test exercises deep paths


DRAWS, TEMP = 30000, 2.0


def test_sampling_over_repeated_siblings_matches_the_target():
    """A tree over 3 tokens with repeated siblings at depths 1, 2 and 3 and subtrees under both copies,
    likely tokens first; 30000 independent rows verified at temperature 2 in one call. The first three
    tokens (the cycle's output, continued by sampling the target where it stopped earlier) against
    their exact distribution."""
    v, root = 3, 0
    m = ranked([root], v)
    a = ranked([root, m[0]], v)
    b = ranked([root, m[0], a[0]], v)
    c = ranked([root, m[1]], v)
    parents = [0, 0, 0, 0, 1, 1, 1, 3, 3, 4, 4, 2, 2, 5]
    tokens = [root, m[0], m[1], m[0], a[0], a[0], a[1], a[0], a[1], b[0], b[0], c[0], c[0], b[0]]
    tree, logits, max_depth = build([(parents, tokens)], v)
    stat, n = sampled_chi_square(tree, logits, max_depth, v, DRAWS, TEMP)
    print(f"repeated siblings, T={TEMP}: chi2 = {stat:.1f} over 27 cells (critical {CHI2_DF26_P001})")
    assert stat < CHI2_DF26_P001
    assert np.bincount(n, minlength=4).min() > 300  # every depth is reached


def test_chain_sampling_with_a_draft_distribution_matches_the_target():
    """`verify.sample_chain`: draft tokens drawn from a draft distribution q unlike the target's, accepted
    with min(1, p/q) and resampled from the residual; the first two emitted tokens (continued by the
    target where a row stopped after one) follow the target's distribution (chi-square, 0.001)."""
    v, root, draws = 3, 0, DRAWS
    rng = np.random.default_rng(2)
    q = np.array([[0.0, 0.0, 0.0], [0.6, 0.3, 0.1], [0.2, 0.2, 0.6]])  # q at node 1 and node 2 (node 0 unused)
    x = np.stack([np.full(draws, root), rng.choice(v, draws, p=q[1]), rng.choice(v, draws, p=q[2])], 1)
    logits = np.array([[table_logits(row[: i + 1], v) for i in range(3)] for row in x], np.float32)
    parent = jnp.broadcast_to(jnp.asarray([0, 0, 1]), (draws, 3))
    tree = Tree(tokens=jnp.asarray(x, jnp.int32), parent=parent, depth=parent + jnp.asarray([0, 1, 1]),
                mask=ancestor_mask(parent, 2), valid=jnp.ones((draws, 3), bool),
                q=jnp.broadcast_to(jnp.asarray(q, jnp.float32), (draws, 3, v)))
    sampler = Sampler.of(SamplingConfig(TEMP))
    n, _, bonus = jax.device_get(jax.jit(verify.sample_chain)(tree, jnp.asarray(logits), sampler, row_keys(3, draws)))
    counts = {}
    for r in range(draws):
        s = [root, *x[r, 1 : n[r] + 1].tolist(), int(bonus[r])]
        while len(s) < 3:
            s.append(int(rng.choice(v, p=table_probs(s, v, TEMP))))
        counts[tuple(s[1:3])] = counts.get(tuple(s[1:3]), 0) + 1
    stat = sum((counts.get(s, 0) - e) ** 2 / e for s in np.ndindex(v, v)
               for e in [draws * table_probs((root,), v, TEMP)[s[0]] * table_probs((root, s[0]), v, TEMP)[s[1]]])
    assert stat < 26.12  # scipy.stats.chi2.ppf(0.999, 8)
    assert 0 < (n == 0).mean() < 1 and (n == 2).mean() > 0.05  # rejections and full acceptances both occur
