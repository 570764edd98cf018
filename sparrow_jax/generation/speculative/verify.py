"""Acceptance of a verified tree: greedy (longest path matching the target's argmax), lossless
speculative sampling for chains (accept with min(1, p/q), resample from the residual on rejection) and
the multi-candidate recursive rule for trees of deterministic candidates.

Any tree a proposer builds is verified exactly, siblings that carry the same token included (hybrid
proposers merge candidates from several sources): greedy acceptance takes one path, at most one node
per depth; at T > 0 a repeated sibling counts as already tried."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from sparrow_jax.sampling import SamplingConfig, categorical_rows, log_probs, split_rows, uniform_rows
from sparrow_jax.generation.speculative.tree import Tree


def greedy(tree: Tree, logits, max_depth: int):
    """(accepted draft tokens n [B], path [B, max_depth + 1] of node indices, bonus token [B]).

    A node is accepted when it is valid, its token is the target's argmax at its parent and its parent
    is accepted. Copies of one token under one parent may all be accepted; the path is the ancestry of
    the first deepest accepted node (the longest accepted path), so it holds one node per depth."""
    target = jnp.argmax(logits, axis=-1).astype(jnp.int32)  # [B, N]
    parent_target = jnp.take_along_axis(target, tree.parent, axis=1)
    ok = tree.valid & (tree.tokens == parent_target)
    acc = tree.depth == 0
    for d in range(1, max_depth + 1):
        acc = acc | ((tree.depth == d) & ok & jnp.take_along_axis(acc, tree.parent, axis=1))
    deepest = jnp.argmax(jnp.where(acc, tree.depth, -1), axis=1)  # [B]
    n = jnp.take_along_axis(tree.depth, deepest[:, None], axis=1)[:, 0]
    line = jnp.take_along_axis(tree.mask, deepest[:, None, None], axis=1)[:, 0]  # [B, N] its ancestors and itself
    levels = [jnp.argmax(line & (tree.depth == d), axis=1) for d in range(max_depth + 1)]
    path = jnp.stack(levels, axis=1).astype(jnp.int32)  # entries past n are unused
    return n.astype(jnp.int32), path, jnp.take_along_axis(target, deepest[:, None], axis=1)[:, 0]


def sample_chain(tree: Tree, logits, sampling: SamplingConfig, keys):
    """Lossless speculative sampling over a chain tree (node i's parent is i - 1); `keys` [B] one per row."""
    b, n_nodes = tree.tokens.shape
    p = jnp.exp(log_probs(logits, sampling))  # [B, N, V] target distribution after each node
    draft_tok = tree.tokens[:, 1:]
    p_tok = jnp.take_along_axis(p[:, :-1], draft_tok[..., None], axis=-1)[..., 0]
    q_tok = jnp.take_along_axis(tree.q[:, 1:], draft_tok[..., None], axis=-1)[..., 0]
    k_u, k_res = split_rows(keys)
    u = uniform_rows(k_u, p_tok.shape[1:])
    accepted = jnp.cumprod((u * q_tok < p_tok).astype(jnp.int32), axis=1)  # u < p/q without dividing
    n = jnp.sum(accepted, axis=1).astype(jnp.int32)
    p_n = jnp.take_along_axis(p, n[:, None, None], axis=1)[:, 0]
    q_next = jnp.take_along_axis(tree.q, jnp.minimum(n + 1, n_nodes - 1)[:, None, None], axis=1)[:, 0]
    residual = jnp.maximum(p_n - q_next, 0.0)
    rejected = n < n_nodes - 1
    use = jnp.where((rejected & (residual.sum(-1) > 0))[:, None], residual, p_n)
    bonus = categorical_rows(k_res, jnp.log(use))
    path = jnp.broadcast_to(jnp.arange(n_nodes, dtype=jnp.int32), (b, n_nodes))
    return n, path, bonus


def sample_tree(tree: Tree, logits, sampling: SamplingConfig, keys, max_depth: int):
    """Lossless multi-candidate speculative sampling over a tree of deterministic candidates.

    From the accepted node, its children x_1, x_2, ... are tried in order, each as a draw from a point
    mass: x_i is accepted with probability p_i(x_i), where p_i is the target distribution p with the
    tried siblings removed and renormalised (the residual max(p - q, 0) for q = one-hot), i.e.
    p(x_i) / (1 - sum_{j<i} p(x_j)). A sibling repeating an earlier sibling's token was tried already:
    its residual probability is 0, so it is never accepted and adds no mass to the sum. If none is
    accepted the bonus token is drawn from the final residual (each tried token removed once). This
    samples p exactly whatever the candidates are, so the tree may be pruned freely.
    """
    b, n_nodes = tree.tokens.shape
    p = jnp.exp(log_probs(logits, sampling))  # [B, N, V] target distribution after each node
    parent_p = jnp.take_along_axis(p, tree.parent[..., None], axis=1)  # [B, N, V] at each node's parent
    p_tok = jnp.take_along_axis(parent_p, tree.tokens[..., None], axis=-1)[..., 0]  # [B, N]
    node = jnp.arange(n_nodes)
    candidate = tree.valid & (tree.depth > 0)
    # Earlier candidate siblings of each node (same parent, lower index) and the copies among them.
    earlier = (tree.parent[:, None, :] == tree.parent[:, :, None]) & (node[None, :] < node[:, None])
    earlier = earlier & candidate[:, None, :]
    repeat = jnp.any(earlier & (tree.tokens[:, None, :] == tree.tokens[:, :, None]), axis=2)  # [B, N]
    first = candidate & ~repeat
    # Probability mass of the distinct tokens tried before each node.
    before = jnp.einsum("bij,bj->bi", earlier.astype(p_tok.dtype), jnp.where(first, p_tok, 0.0))
    k_u, k_res = split_rows(keys)
    u = uniform_rows(k_u, p_tok.shape[1:])
    ok = first & (u * jnp.maximum(1.0 - before, 0.0) < p_tok)

    current = jnp.zeros((b,), jnp.int32)
    levels = [current]
    for d in range(1, max_depth + 1):
        take = ok & (tree.depth == d) & (tree.parent == current[:, None])
        found = jnp.any(take, axis=1)
        current = jnp.where(found, jnp.argmax(take, axis=1), current).astype(jnp.int32)
        levels.append(current)
    n = jnp.take_along_axis(tree.depth, current[:, None], axis=1)[:, 0]
    # Bonus: p at the last accepted node without its tried (= all valid) children.
    tried = candidate & (tree.parent == current[:, None])  # [B, N]
    removed = jnp.any(jax.nn.one_hot(tree.tokens, p.shape[-1], dtype=bool) & tried[..., None], axis=1)
    p_n = jnp.take_along_axis(p, current[:, None, None], axis=1)[:, 0]
    residual = jnp.where(removed, 0.0, p_n)
    use = jnp.where((residual.sum(-1) > 0)[:, None], residual, p_n)  # all mass tried: rounding only
    bonus = categorical_rows(k_res, jnp.log(use))
    return n.astype(jnp.int32), jnp.stack(levels, axis=1), bonus
