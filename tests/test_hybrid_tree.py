"""The hybrid tree (`speculative/hybrid.merge`): copies that agree with the draft's nodes are merged into
them, the rest of the copy chain hangs under the last agreeing node; the result is a well-formed tree
(depths from parents, the ancestor mask of the parents, no two valid siblings with one token), and at
T > 0 verifying it samples the target exactly, whether the copies agree with the draft, disagree, or go
deeper than the draft's depth (the table target of helpers.py, chi-square at significance 0.001)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import CHI2_DF80_P001, ranked, sampled_chi_square, table_logits

from sparrow_jax.generation.speculative import hybrid
from sparrow_jax.generation.speculative.tree import BOTH, COPY, DRAFT, Tree

merge = jax.jit(hybrid.merge, static_argnums=3)  # one compile per shape, not one per operation
# Draft tree: root 0; its children 1 (token A) and 2 (B); under 1: 3 (C), 4 (D); under 2: 5 (E).
PARENTS = [0, 0, 0, 1, 1, 2]
A, B, C, D, E, X, Y, Z = 10, 11, 12, 13, 14, 15, 16, 17


def draft_tree(tokens, parents=PARENTS, valid=None):
    parent = np.asarray([parents], np.int32)
    depth = np.zeros(len(parents), np.int32)
    mask = np.eye(len(parents), dtype=bool)
    for i in range(1, len(parents)):
        depth[i] = depth[parents[i]] + 1
        mask[i] |= mask[parents[i]]
    return Tree(tokens=jnp.asarray([tokens], jnp.int32), parent=jnp.asarray(parent), depth=jnp.asarray(depth[None]),
                mask=jnp.asarray(mask[None]),
                valid=jnp.ones((1, len(parents)), bool) if valid is None else jnp.asarray([valid]))


def merged(copy, n_valid=None, draft=None, max_depth=None):
    draft = draft or draft_tree([0, A, B, C, D, E])
    m = len(copy)
    valid = jnp.asarray([np.arange(m) < (m if n_valid is None else n_valid)])
    tree = merge(draft, jnp.asarray([copy], jnp.int32), valid, max_depth or max(m, 2))
    check_well_formed(tree)
    return tree


def check_well_formed(tree):
    """Depths follow the parents, the mask is the parents' ancestor closure, parents come first, and no
    two valid siblings carry one token."""
    parent, depth, tokens, valid = (np.asarray(x[0]) for x in (tree.parent, tree.depth, tree.tokens, tree.valid))
    mask = np.asarray(tree.mask[0])
    for i in range(1, len(parent)):
        assert parent[i] < i and depth[i] == depth[parent[i]] + 1, i
        ancestors, j = {i}, i
        while j:
            j = parent[j]
            ancestors.add(j)
        assert set(np.flatnonzero(mask[i])) == ancestors, i
    kids = [(p, t) for p, t, v, i in zip(parent, tokens, valid, range(len(parent))) if v and i]
    assert len(kids) == len(set(kids)), "two valid siblings carry one token"


def rows(tree, *fields):
    return [np.asarray(getattr(tree, f)[0, 6:]).tolist() for f in fields]


def test_agreeing_copies_merge_and_the_rest_hangs_under_the_last_agreeing_node():
    tree = merged([A, D, X, Y])  # A = node 1, D = node 4, then new tokens
    assert rows(tree, "valid", "parent", "depth") == [[False, False, True, True], [0, 6, 4, 8], [1, 2, 3, 4]]
    assert np.asarray(tree.source[0]).tolist() == [DRAFT, BOTH, DRAFT, DRAFT, BOTH, DRAFT] + [COPY] * 4


def test_disagreeing_copies_hang_under_the_root():
    tree = merged([Z, A, D])  # A, D agree with a draft path, but only below a token the draft lacks
    assert rows(tree, "valid", "parent", "depth") == [[True] * 3, [0, 6, 7], [1, 2, 3]]
    assert (np.asarray(tree.source[0, :6]) == DRAFT).all()


def test_copies_deeper_than_the_draft_and_copies_fully_inside_it():
    tree = merged([B, E, X, Y, Z])  # merges through the draft's deepest level (2), goes on to depth 5
    assert rows(tree, "valid", "parent", "depth") == [[False, False, True, True, True], [0, 6, 5, 8, 9],
                                                      [1, 2, 3, 4, 5]]
    inside = merged([A, C])  # every copy is already a draft node: nothing new to verify
    assert rows(inside, "valid") == [[False, False]]


def test_invalid_copies_and_invalid_draft_nodes_are_never_matched():
    tree = merged([A, D, X, Y], n_valid=1)  # one copy: it merges; the rest are not copies at all
    assert rows(tree, "valid") == [[False, False, False, False]]
    # The draft's node 1 (A) is invalid: a copy A must not merge into it, but stand as a valid node.
    draft = draft_tree([0, A, B, C, D, E], valid=[True, False, True, True, True, True])
    tree = merged([A, D], draft=draft)
    assert rows(tree, "valid", "parent") == [[True, True], [0, 6]]


def hybrid_case(kind, v=3, root=0):
    """(merged tree, its table logits [1, N, V], max_depth) over a vocabulary of 3: a draft tree of the
    likely tokens (depth 2) and a copy chain of 5 that agrees with it, disagrees, or runs deeper (one shape:
    the three cases share one compiled verification)."""
    m = ranked([root], v)
    a = ranked([root, m[0]], v)
    c = ranked([root, m[1]], v)
    draft = draft_tree([root, m[0], m[1], a[0], a[1], c[0]])
    if kind == "agree":  # two copies merged, then three new tokens under draft node 3, the last one invalid
        b = ranked([root, m[0], a[0]], v)
        copy, n_valid = [m[0], a[0], b[1], b[0], 0], 4
    elif kind == "disagree":  # the one token the draft does not propose first, then its likely path
        t = m[2]
        copy, n_valid = [t, ranked([root, t], v)[0], 0, 1, 2], 5
    else:  # "longer": merged with node 4, then three levels deeper than the draft
        copy, n_valid = [m[0], a[1], 2, 0, 1], 5
    max_depth = len(copy)
    tree = merge(draft, jnp.asarray([copy], jnp.int32), jnp.asarray([np.arange(5) < n_valid]), max_depth)
    check_well_formed(tree)
    # The logits after each node are the table's after the node's tokens, root first, read off the mask and
    # depths the target sees (so a wrong mask would give the wrong distribution).
    tokens, depth, mask = np.asarray(tree.tokens[0]), np.asarray(tree.depth[0]), np.asarray(tree.mask[0])
    paths = [tokens[sorted(np.flatnonzero(mask[i]), key=lambda j: depth[j])] for i in range(len(tokens))]
    logits = jnp.asarray(np.array([[table_logits(p, v) for p in paths]], np.float32))
    return tree, logits, max_depth


@pytest.mark.parametrize("kind", ["agree", "disagree", "longer"])
def test_sampling_a_hybrid_tree_matches_the_target(kind):
    tree, logits, max_depth = hybrid_case(kind)
    # Four tokens: the copies' own logits (a node's, deciding its children) matter up to depth 3 already.
    stat, n = sampled_chi_square(tree, logits, max_depth, 3, 12000, 3.0, length=4)
    print(f"hybrid tree ({kind}), T=3: chi2 = {stat:.1f} over 81 cells (critical {CHI2_DF80_P001})")
    assert stat < CHI2_DF80_P001
    through_copies = np.asarray(tree.valid[0, 6:]).any() and (n > 2).mean() > 0.01
    assert through_copies or kind == "disagree"  # paths deeper than the draft's are accepted
    assert (n >= 1).mean() > 0.3  # the copies and the draft are accepted often: the test sees their paths
