"""Proposers: anything that proposes a draft tree each cycle of the speculative loop.

A proposer is a pytree (so it passes through `jax.jit` with its arrays) with three methods:
    start(target, hidden, ids, text_index, text_len, first) -> state
    propose(target, state, root, n_out, key) -> (Tree, state)
    commit(target, state, tokens, hidden, valid, n) -> state
`commit` receives this cycle's accepted pairs: hidden [B, n, H] are the target's final hidden states of
the accepted tokens (root first) and tokens [B, n] the token that follows each; `valid` marks them.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx, struct

from sparrow_jax.kv_cache import causal_mask, write
from sparrow_jax.sampling import SamplingConfig
from sparrow_jax.spec.tree import Tree, TreeShape, ancestor_mask, draft_tree
from sparrow_jax.spec.window_cache import WindowCache


@struct.dataclass
class DraftState:
    dcache: WindowCache
    last_out: jax.Array  # [B, H] draft output at the last committed pair


@struct.dataclass
class SparrowProposer:
    """The Sparrow draft over the VATA window cache: text positions only, target hidden-state reuse."""

    graphdef: object = struct.field(pytree_node=False)
    params: object
    shape: TreeShape = struct.field(pytree_node=False)
    sampling: SamplingConfig = struct.field(pytree_node=False)
    chunk: int = struct.field(pytree_node=False)

    @classmethod
    def create(cls, draft, shape: TreeShape, sampling: SamplingConfig, chunk: int = 64) -> "SparrowProposer":
        graphdef, params = nnx.split(draft)
        return cls(graphdef, params, shape, sampling, chunk)

    @property
    def draft(self):
        return nnx.merge(self.graphdef, self.params)

    def _forward(self, draft, target, dcache, tokens, hidden, positions, slots, new_mask, scratch_visible):
        """Run the draft on N entries; they see each other per `new_mask` and the cache per their
        positions (ring window) and `scratch_visible` [B,N,T]; their k/v are stored at `slots`."""
        view = {"k": dcache.k, "v": dcache.v, "mask": dcache.mask(positions, scratch_visible)}
        out, (k, v) = draft(target.lm.embed_tokens(tokens), hidden, positions, new_mask, view)
        k, v = write(dcache.k, dcache.v, k, v, slots)
        return out, dcache.replace(k=k, v=v)

    def _commit(self, draft, target, dcache, tokens, hidden, valid):
        slots, positions, updated = dcache.commit_slots(tokens.shape[1], valid)
        none = jnp.zeros(tokens.shape + (dcache.scratch,), bool)
        causal = causal_mask(*tokens.shape)
        # The cache part is seen as it was: the slots being written hold nothing these queries may see.
        out, dcache = self._forward(draft, target, dcache, tokens, hidden, positions, slots, causal, none)
        dcache = dcache.replace(pos=updated.pos)
        return out, dcache.replace(count=dcache.count + jnp.sum(valid, axis=1, dtype=jnp.int32))

    def start(self, target, hidden, ids, text_index, text_len, first) -> DraftState:
        """Commit the prompt's text pairs (h_t, next text token), the last one pairing with the first
        generated token, `chunk` pairs per draft forward."""
        draft = self.draft
        b, t = text_index.shape
        dcache = WindowCache.create(draft.config, b, max(self.chunk, self.shape.max_depth + 1), self.shape.scratch,
                                    draft.dtype)
        h = jnp.take_along_axis(hidden, text_index[..., None], axis=1)
        nxt = jnp.take_along_axis(ids, text_index, axis=1)
        nxt = jnp.concatenate([nxt[:, 1:], nxt[:, -1:]], axis=1)  # the token at the next text position
        j = jnp.arange(t)
        nxt = jnp.where(j[None] == (text_len - 1)[:, None], first[:, None], nxt)
        valid = j[None] < text_len[:, None]
        split = lambda x: jnp.moveaxis(x.reshape(b, t // self.chunk, self.chunk, *x.shape[2:]), 1, 0)  # noqa: E731

        def step(dc, xs):
            out, dc = self._commit(draft, target, dc, *xs)
            return dc, out

        dcache, outs = jax.lax.scan(step, dcache, (split(nxt), split(h), split(valid)))
        outs = jnp.moveaxis(outs, 0, 1).reshape(b, t, -1)
        return DraftState(dcache, jnp.take_along_axis(outs, (text_len - 1)[:, None, None], axis=1)[:, 0])

    def propose(self, target, state: DraftState, root, n_out, key):
        draft, dc = self.draft, state.dcache
        scratch0 = dc.pinned + dc.ring

        def step(tokens, hid, positions, index, ancestors):
            nonlocal dc
            slots = jnp.broadcast_to(scratch0 + index, tokens.shape)
            alone = jnp.broadcast_to(jnp.eye(tokens.shape[1], dtype=bool), tokens.shape + tokens.shape[1:])
            out, dc = self._forward(draft, target, dc, tokens, hid, positions, slots, alone, ancestors)
            return out

        tree = draft_tree(step, target.logits, root, state.last_out, dc.count, self.shape, self.sampling, key)
        return tree, state.replace(dcache=dc)

    def commit(self, target, state: DraftState, tokens, hidden, valid, n) -> DraftState:
        outs, dcache = self._commit(self.draft, target, state.dcache, tokens, hidden, valid)
        last = jnp.take_along_axis(outs, n[:, None, None], axis=1)[:, 0]
        active = jnp.any(valid, axis=1)
        return DraftState(dcache, jnp.where(active[:, None], last, state.last_out))


@struct.dataclass
class OracleProposer:
    """Proposes a known continuation (e.g. the target's own greedy output): a chain of the reference
    tokens down the tree's first branch, the rest siblings of its first token, each a different token
    (so a tree has at most `vocab` children of the root). `poison` [B, L] marks reference
    positions where it proposes a wrong token instead, to exercise partial acceptance.
    For sampling it reports a one-hot draft distribution."""

    reference: jax.Array  # [B, L] tokens the target produces after the first one
    poison: jax.Array  # [B, L] bool
    vocab: int = struct.field(pytree_node=False)
    shape: TreeShape = struct.field(pytree_node=False)

    def start(self, target, hidden, ids, text_index, text_len, first):
        return ()

    def propose(self, target, state, root, n_out, key):
        s, b = self.shape, root.shape[0]
        chain = s.max_depth
        extra = s.total - 1 - chain  # siblings of the first chain node, children of the root
        if extra < 0:
            raise ValueError("the oracle needs total_tokens >= depth + 2 for its full chain")
        if extra > self.vocab - 1:
            raise ValueError(f"the oracle's {extra + 1} children of the root cannot be distinct tokens of a "
                             f"vocabulary of {self.vocab}: total_tokens must be at most {chain + self.vocab}")
        at = n_out[:, None] - 1 + jnp.arange(chain)  # reference index of each chain node's token
        ref = jnp.take_along_axis(self.reference, jnp.clip(at, 0, self.reference.shape[1] - 1), axis=1)
        bad = jnp.take_along_axis(self.poison, jnp.clip(at, 0, self.poison.shape[1] - 1), axis=1)
        chain_tok = jnp.where(bad, (ref + 1) % self.vocab, ref)
        # Offsets 2, 3, ..., vocab - 1, then 1 from the chain token: never the chain token itself.
        sib = (chain_tok[:, :1] + 1 + (1 + jnp.arange(extra)) % (self.vocab - 1)) % self.vocab
        tokens = jnp.concatenate([root[:, None], chain_tok, sib], axis=1).astype(jnp.int32)
        parent = jnp.concatenate([jnp.zeros(1), jnp.arange(chain), jnp.zeros(extra)]).astype(jnp.int32)
        parent = jnp.broadcast_to(parent, (b, s.total))
        depth = jnp.concatenate([jnp.arange(chain + 1), jnp.ones(extra)]).astype(jnp.int32)
        tree = Tree(
            tokens=tokens, parent=parent, depth=jnp.broadcast_to(depth, (b, s.total)),
            mask=ancestor_mask(parent, chain), valid=jnp.ones((b, s.total), bool),
            q=jax.nn.one_hot(tokens, self.vocab, dtype=jnp.float32),
        )
        return tree, state

    def commit(self, target, state, tokens, hidden, valid, n):
        return state
