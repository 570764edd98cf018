"""Acceptance of a verified tree: greedy (longest path matching the target's argmax) and lossless
speculative sampling for chains (accept with min(1, p/q), resample from the residual on rejection)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from sparrow_jax.sampling import SamplingConfig, log_probs
from sparrow_jax.spec.tree import Tree


def greedy(tree: Tree, logits, max_depth: int):
    """(accepted draft tokens n [B], path [B, max_depth + 1] of node indices, bonus token [B])."""
    target = jnp.argmax(logits, axis=-1).astype(jnp.int32)  # [B, N]
    parent_target = jnp.take_along_axis(target, tree.parent, axis=1)
    ok = tree.valid & (tree.tokens == parent_target)
    acc = tree.depth == 0
    for d in range(1, max_depth + 1):
        acc = acc | ((tree.depth == d) & ok & jnp.take_along_axis(acc, tree.parent, axis=1))
    return _path(tree, acc, max_depth, target)


def _path(tree: Tree, acc, max_depth: int, target):
    n = jnp.sum(acc, axis=1) - 1
    levels = [jnp.argmax(acc & (tree.depth == d), axis=1) for d in range(max_depth + 1)]
    path = jnp.stack(levels, axis=1).astype(jnp.int32)  # entries past n are unused
    deepest = jnp.take_along_axis(path, n[:, None], axis=1)[:, 0]
    return n.astype(jnp.int32), path, jnp.take_along_axis(target, deepest[:, None], axis=1)[:, 0]


def sample_chain(tree: Tree, logits, sampling: SamplingConfig, key):
    """Lossless speculative sampling over a chain tree (node i's parent is i - 1)."""
    b, n_nodes = tree.tokens.shape
    p = jnp.exp(log_probs(logits, sampling))  # [B, N, V] target distribution after each node
    draft_tok = tree.tokens[:, 1:]
    p_tok = jnp.take_along_axis(p[:, :-1], draft_tok[..., None], axis=-1)[..., 0]
    q_tok = jnp.take_along_axis(tree.q[:, 1:], draft_tok[..., None], axis=-1)[..., 0]
    k_u, k_res = jax.random.split(key)
    u = jax.random.uniform(k_u, p_tok.shape)
    accepted = jnp.cumprod((u * q_tok < p_tok).astype(jnp.int32), axis=1)  # u < p/q without dividing
    n = jnp.sum(accepted, axis=1).astype(jnp.int32)
    p_n = jnp.take_along_axis(p, n[:, None, None], axis=1)[:, 0]
    q_next = jnp.take_along_axis(tree.q, jnp.minimum(n + 1, n_nodes - 1)[:, None, None], axis=1)[:, 0]
    residual = jnp.maximum(p_n - q_next, 0.0)
    rejected = n < n_nodes - 1
    use = jnp.where((rejected & (residual.sum(-1) > 0))[:, None], residual, p_n)
    bonus = jax.random.categorical(k_res, jnp.log(use), axis=-1).astype(jnp.int32)
    path = jnp.broadcast_to(jnp.arange(n_nodes, dtype=jnp.int32), (b, n_nodes))
    return n, path, bonus
