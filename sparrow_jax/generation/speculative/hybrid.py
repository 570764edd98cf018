"""Hybrid drafting: the copy candidates (`copy.py`) merged into a draft's tree, verified in one target
forward.

One static budget: the draft's `total` nodes, then M copy nodes. The copy chain is walked down the
draft's tree while its tokens equal existing draft nodes (same parent, same token): those copy slots are
invalid (the draft node already proposes them) and the rest of the chain hangs under the last matching
node (the root when the first copy differs). So no two valid siblings carry one token, and a copy that
agrees with the draft for a while and then goes on alone costs only its new nodes. The copy branch may
be deeper than the draft's: the accepted path holds at most max(draft depth, M) tokens.

Candidates are deterministic (the draft's top-k or argmax, the copies), so the merged tree is verified
by `verify.sample_tree` at T > 0, which is exact for any candidate set; a draft chain inside a hybrid is
drafted greedily for that reason (a chain's sampled q and its min(1, p/q) rule need a chain).
"""

from __future__ import annotations

import jax.numpy as jnp
from flax import struct

from sparrow_jax.generation.speculative.copy import CopyConfig, CopyHistory, copy_candidates
from sparrow_jax.generation.speculative.tree import BOTH, COPY, DRAFT, HybridShape, Tree, ancestor_mask

def merge(draft: Tree, tokens, valid, max_depth: int) -> Tree:
    """The draft tree [B, N] with the copy chain `tokens` / `valid` [B, M] (a valid prefix) appended as
    nodes N .. N + M - 1: copies that equal the draft's nodes down from the root are invalid, the rest hang
    under the last equal node. `source` marks each node DRAFT, COPY or BOTH (a draft node a copy matched)."""
    b, n = draft.tokens.shape
    m = tokens.shape[1]
    cur = jnp.zeros((b,), jnp.int32)  # the node the chain has reached
    walking = jnp.ones((b,), bool)  # every copy so far matched a draft node
    both = jnp.zeros((b, n), bool)
    parents, keep = [], []
    for i in range(m):
        match = draft.valid & (draft.parent == cur[:, None]) & (draft.tokens == tokens[:, i : i + 1]) & (
            draft.depth == i + 1)
        hit = walking & valid[:, i] & jnp.any(match, axis=1)
        # The first copy that differs hangs under `cur`; the others (and the merged ones) under the previous copy.
        chained = jnp.full((b,), 0 if i == 0 else n + i - 1, jnp.int32)
        parents.append(jnp.where(walking & ~hit, cur, chained))
        keep.append(valid[:, i] & ~hit)
        both = both | (hit[:, None] & match)
        cur = jnp.where(hit, jnp.argmax(match, axis=1).astype(jnp.int32), cur)
        walking = hit
    parent = jnp.concatenate([draft.parent, jnp.stack(parents, axis=1)], axis=1)
    depth = jnp.concatenate([draft.depth, jnp.broadcast_to(jnp.arange(1, m + 1, dtype=jnp.int32), (b, m))], axis=1)
    source = jnp.concatenate([jnp.where(both, BOTH, DRAFT), jnp.full((b, m), COPY)], axis=1).astype(jnp.int32)
    return Tree(tokens=jnp.concatenate([draft.tokens, tokens.astype(jnp.int32)], axis=1), parent=parent, depth=depth,
                mask=ancestor_mask(parent, max_depth), valid=jnp.concatenate([draft.valid, jnp.stack(keep, 1)], 1),
                source=source)


@struct.dataclass
class HybridState:
    draft: object  # the draft proposer's own state
    history: CopyHistory


@struct.dataclass
class HybridProposer:
    """A draft proposer (whose trees hold deterministic candidates: `tree.q` None) and copy candidates in
    one tree (`merge`). Its commit feeds the draft every accepted pair, copied ones included: the draft's
    commit reads only `Accepted`, never the scratch entries of nodes it did not draft."""

    draft: object  # a Proposer
    config: CopyConfig = struct.field(pytree_node=False)
    shape: HybridShape = struct.field(pytree_node=False)

    @classmethod
    def create(cls, draft, config: CopyConfig) -> "HybridProposer":
        shape = HybridShape(draft.shape, config.tokens, config.deep)
        if hasattr(draft, "commit_width"):  # the Sparrow draft's ring must hold a commit of the deeper paths
            draft = draft.replace(commit_width=shape.max_depth + 1)
        return cls(draft, config, shape)

    def start(self, target, prompt, *, hidden, first) -> HybridState:
        return HybridState(self.draft.start(target, prompt, hidden=hidden, first=first),
                           CopyHistory.of_prompt(prompt, first, self.config.history))

    def propose(self, target, state: HybridState, *, root, n_out, key):
        tree, dstate = self.draft.propose(target, state.draft, root=root, n_out=n_out, key=key)
        merged = merge(tree, *copy_candidates(state.history, self.config), self.shape.max_depth)
        return merged, state.replace(draft=dstate)

    def commit(self, target, state: HybridState, accepted) -> HybridState:
        count = jnp.sum(accepted.valid, axis=1, dtype=jnp.int32)
        return HybridState(self.draft.commit(target, state.draft, accepted), state.history.append(accepted.tokens,
                                                                                                  count))
