"""Static-budget draft trees (EAGLE-2 style) built by a proposer's draft step.

A tree has N = `total` nodes: node 0 is the root (the last token the target produced), the others are
draft candidates in topological order (parents before children). Drafting: the root's draft state
gives `top_k` level-1 candidates; each of `depth` expansion steps runs the draft once over the
`top_k` best frontier nodes (by cumulative log-probability) and scores their `top_k` children; the
final tree keeps the `total - 1` best candidates of all. A chain of K tokens is the case top_k = 1,
depth = K - 1, total = K + 1; it is drafted without the ranking (its shape is static), to the same tree.

At temperature > 0 a chain samples each token from the draft's (temperature/top-k/top-p) distribution
q and keeps q for the min(1, p/q) rule; a tree keeps its deterministic top-k candidates, each verified
as a draw from a point mass (`verify.sample_tree`), which is exact for any candidate set and so lets the
value-dependent EAGLE-2 pruning stay.

`HybridShape` is the budget of a draft tree plus a copy chain merged into it (`hybrid.py`).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from sparrow_jax.sampling import Sampler, categorical_rows, log_probs, split_rows


@dataclasses.dataclass(frozen=True)
class TreeShape:
    top_k: int = 8
    depth: int = 3
    total: int = 30

    def __post_init__(self):
        if self.top_k < 1 or self.depth < 0:
            raise ValueError(f"tree needs top_k >= 1 and depth >= 0, got top_k={self.top_k} depth={self.depth}")
        if not 2 <= self.total <= self.candidates + 1:
            raise ValueError(
                f"tree total_tokens {self.total} must be in [2, {self.candidates + 1}] for top_k={self.top_k}, "
                f"depth={self.depth}"
            )

    @classmethod
    def chain(cls, k: int) -> "TreeShape":
        """A chain of k draft tokens."""
        return cls(top_k=1, depth=k - 1, total=k + 1)

    @property
    def is_chain(self) -> bool:
        return self.top_k == 1

    @property
    def candidates(self) -> int:
        return self.top_k + self.depth * self.top_k**2

    @property
    def max_depth(self) -> int:
        """Deepest draft level; an accepted path holds at most this many draft tokens."""
        return self.depth + 1

    @property
    def scratch(self) -> int:
        """Draft-cache slots the speculative nodes of one cycle occupy."""
        return max(self.depth * self.top_k, 1)

    def candidate_depth(self) -> np.ndarray:
        return np.concatenate([np.ones(self.top_k, np.int32)] + [np.full(self.top_k**2, s + 1, np.int32) for s in range(1, self.depth + 1)])


# Tree.source values: where a node's token came from (for the statistics of accepted tokens); BONUS marks
# an output token the target produced itself (a cycle's bonus token, the prefill's first token).
DRAFT, COPY, BOTH, BONUS = 0, 1, 2, 3


@dataclasses.dataclass(frozen=True)
class HybridShape:
    """The static budget of a draft tree (`draft`, None for copies alone) plus `copy` copy nodes, and `deep`
    more copy nodes (the chain's continuation) that are verified only in cycles where a long match
    proposes them (adaptive depth: the verify forward then covers all `total` nodes, else `total - deep`)."""

    draft: TreeShape | None
    copy: int
    deep: int = 0

    def __post_init__(self):
        if self.copy < 1 or self.deep < 0:
            raise ValueError(f"a hybrid needs copy >= 1 copy nodes and deep >= 0, got copy={self.copy} "
                             f"deep={self.deep}")

    @property
    def total(self) -> int:
        return (1 if self.draft is None else self.draft.total) + self.copy + self.deep

    @property
    def max_depth(self) -> int:
        return max(0 if self.draft is None else self.draft.max_depth, self.copy + self.deep)

    @property
    def is_chain(self) -> bool:
        return False  # verified as a tree of deterministic candidates, compacted like one

    @property
    def scratch(self) -> int:
        return 1 if self.draft is None else self.draft.scratch


@struct.dataclass
class Tree:
    tokens: jax.Array  # [B, N] node tokens; node 0 = root
    parent: jax.Array  # [B, N] parent node (root: 0)
    depth: jax.Array  # [B, N] (root: 0)
    mask: jax.Array  # [B, N, N] ancestor-or-self
    valid: jax.Array  # [B, N] False for a node whose parent was not kept (cannot be accepted)
    q: jax.Array | None = None  # [B, N, V] draft distribution each node was sampled from (T > 0 chains)
    source: jax.Array | None = None  # [B, N] DRAFT, COPY or BOTH per node (hybrid trees: accepted-token statistics)


def ancestor_mask(parent, max_depth: int):
    """[B, N, N] ancestor-or-self mask of a tree given parent [B, N] (root's parent is itself, node 0)."""
    b, n = parent.shape
    eye = jnp.broadcast_to(jnp.eye(n, dtype=bool), (b, n, n))
    mask = eye
    for _ in range(max_depth):  # each step adds one more generation of ancestors
        mask = eye | jnp.take_along_axis(mask, parent[..., None], axis=1)
    return mask


def _top(logits, k: int):
    """(tokens [..., k], log-prob scores [..., k]): a node's k most likely children."""
    scores, tokens = jax.lax.top_k(jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1), k)
    return tokens.astype(jnp.int32), scores


def draft_tree(step, logits_fn, root, root_out, count, shape: TreeShape, sampling: Sampler, key):
    """Grow a tree from the root's draft output `root_out` [B, H].

    step(tokens [B,k], hidden [B,k,H], positions [B,k], scratch_index [k], ancestors [B,k,T]) -> out [B,k,H]
    runs the draft on frontier nodes (each sees its ancestors' scratch slots and itself; their k/v go to
    scratch slots `scratch_index`); `count` [B] is the draft
    position of the first speculative level. Returns a Tree with the root token `root` [B].
    """
    if shape.is_chain:
        return _draft_chain(step, logits_fn, root, root_out, count, shape, sampling, key)
    return _draft_top_k(step, logits_fn, root, root_out, count, shape)


def _draft_top_k(step, logits_fn, root, root_out, count, shape: TreeShape):
    """EAGLE-2 expansion and pruning (`draft_tree`'s arguments), deterministic top-k candidates."""
    k, b = shape.top_k, root.shape[0]
    tok, score = _top(logits_fn(root_out), k)
    cand_tok, cand_score, cand_parent = [tok], [score], [jnp.full((b, k), -1, jnp.int32)]
    front_tok, front_score, front_cand = tok, score, jnp.broadcast_to(jnp.arange(k), (b, k))
    front_hidden = jnp.broadcast_to(root_out[:, None], (b, k, root_out.shape[-1]))
    front_anc = jnp.zeros((b, k, shape.scratch), bool)
    for s in range(1, shape.depth + 1):
        index = (s - 1) * k + jnp.arange(k)
        out = step(front_tok, front_hidden, jnp.broadcast_to((count + s - 1)[:, None], (b, k)), index, front_anc)
        visible = front_anc | jax.nn.one_hot(index, shape.scratch, dtype=bool)[None]  # what children see
        ctok, cscore = _top(logits_fn(out), k)  # [B, k, k]
        base = k + (s - 1) * k * k
        scores = (front_score[..., None] + cscore).reshape(b, k * k)
        toks = ctok.reshape(b, k * k)
        cand_tok.append(toks)
        cand_score.append(scores)
        cand_parent.append(jnp.repeat(front_cand, k, axis=1))
        if s < shape.depth:
            front_score, idx = jax.lax.top_k(scores, k)
            front_tok = jnp.take_along_axis(toks, idx, axis=1)
            front_cand = base + idx
            front_hidden = jnp.take_along_axis(out, (idx // k)[..., None], axis=1)
            front_anc = jnp.take_along_axis(visible, (idx // k)[..., None], axis=1)

    tok_all, score_all, parent_all = (jnp.concatenate(x, axis=1) for x in (cand_tok, cand_score, cand_parent))
    n = shape.total
    # top_k prefers lower indices on ties, and parents precede children with no lower score: the kept
    # set is closed under ancestors. Sorting restores topological order.
    sel = jnp.sort(jax.lax.top_k(score_all, n - 1)[1], axis=1)
    pcand = jnp.take_along_axis(parent_all, sel, axis=1)
    match = sel[:, None, :] == pcand[:, :, None]  # [B, n-1, n-1]
    found = jnp.any(match, axis=-1)
    parent = jnp.concatenate([jnp.zeros((b, 1), jnp.int32), jnp.where(found, jnp.argmax(match, -1) + 1, 0)], axis=1)
    valid = jnp.concatenate([jnp.ones((b, 1), bool), found | (pcand < 0)], axis=1)
    depth = jnp.concatenate([jnp.zeros((b, 1), jnp.int32), jnp.asarray(shape.candidate_depth())[sel]], axis=1)
    tokens = jnp.concatenate([root[:, None], jnp.take_along_axis(tok_all, sel, axis=1)], axis=1)
    return Tree(tokens=tokens, parent=parent, depth=depth, mask=ancestor_mask(parent, shape.max_depth), valid=valid)


def _draft_chain(step, logits_fn, root, root_out, count, shape: TreeShape, sampling: Sampler, key):
    """`draft_tree` for a chain (top_k = 1): each level's one child is the draft's argmax, or at T > 0 a
    draw kept with its distribution q. Parents, depths and the mask are static, so none of the tree's
    ranking, pruning or ancestor search runs (a chain is drafted every cycle of the demo's decoding)."""
    b, n = root.shape[0], shape.total
    keys = split_rows(key, shape.depth + 1)

    def pick(k, logits):  # [B, V] -> ([B, 1] token, [B, 1, V] distribution q, or None when greedy)
        if sampling.greedy:
            return jnp.argmax(logits, axis=-1)[:, None].astype(jnp.int32), None
        lp = log_probs(logits, sampling)
        return categorical_rows(k, lp)[:, None], jnp.exp(lp)[:, None]

    tok, q = pick(keys[0], logits_fn(root_out))
    toks, qs, out = [root[:, None], tok], [q], root_out[:, None]
    seen = jnp.zeros((b, 1, shape.scratch), bool)  # the scratch slots of the node's drafted ancestors
    for s in range(1, shape.depth + 1):
        index = jnp.asarray([s - 1])
        out = step(tok, out, (count + s - 1)[:, None], index, seen)
        seen = seen | jax.nn.one_hot(index, shape.scratch, dtype=bool)[None]
        tok, q = pick(keys[s], logits_fn(out[:, 0]))
        toks.append(tok)
        qs.append(q)
    node = jnp.arange(n, dtype=jnp.int32)
    row = lambda x: jnp.broadcast_to(x, (b,) + x.shape)  # noqa: E731
    q = None if sampling.greedy else jnp.concatenate([jnp.zeros_like(qs[0])] + qs, axis=1)
    return Tree(tokens=jnp.concatenate(toks, axis=1), parent=row(jnp.maximum(node - 1, 0)), depth=row(node),
                mask=row(node[:, None] >= node[None, :]), valid=jnp.ones((b, n), bool), q=q)
