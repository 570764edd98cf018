"""Proposers: what proposes a draft tree each cycle of the speculative loop (`Proposer`), and the
Sparrow draft's (`SparrowProposer`). `oracle.OracleProposer` proposes known tokens, for tests and
benchmarks; `copy.CopyProposer` proposes copies of earlier text and `hybrid.HybridProposer` merges them
into a draft's tree; the all-token (EAGLE/MSD-style) baseline is `SparrowProposer` fed every prompt position
(`generate(..., draft_sees_visual=True)`), not only the text ones.
"""

from __future__ import annotations

from typing import Any, Protocol

import jax
import jax.numpy as jnp
from flax import nnx, struct

from sparrow_jax.generation.speculative.tree import HybridShape, Tree, TreeShape, draft_tree
from sparrow_jax.generation.speculative.window_cache import WindowCache
from sparrow_jax.attention import round_capacity
from sparrow_jax.kv_cache import KVCache, causal_mask
from sparrow_jax.sampling import Sampler, SamplingConfig


# Pairs per draft forward of a prompt the window holds whole (`SparrowProposer._start_causal`): as the
# target's prefill chunk.
PROMPT_CHUNK = 512


@struct.dataclass
class Accepted:
    """One cycle's accepted pairs, handed to `Proposer.commit`: pair j is (the target's final hidden state
    of accepted token j, root first; the token that follows it)."""

    tokens: jax.Array  # [B, D + 1] the token after each accepted token (the last: the bonus token)
    hidden: jax.Array  # [B, D + 1, H]
    valid: jax.Array  # [B, D + 1] which pairs are real (rows done, or past the accepted depth: not)
    n: jax.Array  # [B] accepted draft tokens (valid pairs: n + 1)


class Proposer(Protocol):
    """A proposer is a pytree (its arrays pass through `jax.jit`; the rest is static) that the
    speculative loop (`loop.cycle`) calls each cycle. Its state is any pytree of its own.

    - `shape`: the static draft budget (a `TreeShape`, or a `HybridShape` for a tree with copies): every
      `propose` returns a Tree of `shape.total` nodes whose accepted path holds at most `shape.max_depth`
      draft tokens; `shape.is_chain` says the tree is a chain (verified with its q at T > 0).
    - `start(target, prompt, hidden=, first=)`: after the target's prefill; `prompt` the
      `PromptState` (ids, text positions), `hidden` [B, L, H] the prompt's final hidden states,
      `first` [B] the first generated token. Returns the initial state.
    - `propose(target, state, root=, n_out=, key=)`: a `Tree` rooted at `root` [B] (the last token the
      target produced), `n_out` [B] the tokens generated so far, `key` [B] one PRNG key per row (draw
      each row's randomness from its own key: `sampling.split_rows`), and the new state.
    - `commit(target, state, accepted)`: this cycle's `Accepted` pairs; returns the state.
    - `needs_hidden` (optional, default True): False when `start` never reads `hidden` (prefill then keeps
      no [B, L, H] states for it).
    Verification is lossless whatever tree `propose` returns (see `verify`).
    """

    shape: TreeShape | HybridShape

    def start(self, target, prompt, *, hidden, first) -> Any: ...

    def propose(self, target, state, *, root, n_out, key) -> tuple[Tree, Any]: ...

    def commit(self, target, state, accepted: Accepted) -> Any: ...


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
    sampling: Sampler  # traced values (T > 0 chains draw from the draft's processed distribution)
    chunk: int = struct.field(pytree_node=False)
    # Pairs one commit may write (0: the draft's own max_depth + 1); a hybrid's copy branch may accept
    # longer paths than the draft drafts, and the ring must hold a whole commit (window_cache).
    commit_width: int = struct.field(pytree_node=False, default=0)

    @classmethod
    def create(cls, draft, shape: TreeShape, sampling: Sampler | SamplingConfig = SamplingConfig(),
               chunk: int = 64) -> "SparrowProposer":
        graphdef, params = nnx.split(draft)
        sampling = Sampler.of(sampling) if isinstance(sampling, SamplingConfig) else sampling
        return cls(graphdef, params, shape, sampling, chunk)

    @property
    def draft(self):
        return nnx.merge(self.graphdef, self.params)

    def _forward(self, draft, target, dcache, tokens, hidden, positions, slots, new_mask, scratch_visible):
        """Run the draft on N entries; they see each other per `new_mask` and the cache per their
        positions (ring window) and `scratch_visible` [B,N,T]; their k/v are stored at `slots`."""
        view = dcache.view(positions, scratch_visible)
        out, (k, v) = draft(target.lm.embed_tokens(tokens), hidden, positions, new_mask, view)
        return out, dcache.write(k, v, slots)

    def _commit(self, draft, target, dcache, tokens, hidden, valid):
        slots, positions, updated = dcache.commit_slots(tokens.shape[1], valid)
        none = jnp.zeros(tokens.shape + (dcache.scratch,), bool)
        causal = causal_mask(*tokens.shape)
        # The cache part is seen as it was: the slots being written hold nothing these queries may see.
        out, dcache = self._forward(draft, target, dcache, tokens, hidden, positions, slots, causal, none)
        dcache = dcache.replace(pos=updated.pos)
        return out, dcache.replace(count=dcache.count + jnp.sum(valid, axis=1, dtype=jnp.int32))

    def start(self, target, prompt, *, hidden, first) -> DraftState:
        """Commit the prompt's text pairs (h_t, next text token), the last one pairing with the first
        generated token. Where the window holds every pair (always for the all-token baseline, whose window
        covers the prompt) they go through one causal pass (`_start_causal`); else `chunk` pairs per
        draft forward through the ring (`_start_ring`). Both give the same state."""
        pairs = self._prompt_pairs(target, prompt, hidden, first)
        fits = pairs[0].shape[1] <= self.draft.config.window
        return self._start_causal(target, *pairs) if fits else self._start_ring(target, *pairs)

    def _prompt_pairs(self, target, prompt, hidden, first):
        """(next tokens [B, T], hidden states [B, T, H], valid [B, T]) of the prompt's text pairs."""
        ids, text_index, text_len = prompt.ids, prompt.text_index, prompt.text_len
        h = jnp.take_along_axis(hidden, text_index[..., None], axis=1)
        nxt = jnp.take_along_axis(ids, text_index, axis=1)
        nxt = jnp.concatenate([nxt[:, 1:], nxt[:, -1:]], axis=1)  # the token at the next text position
        j = jnp.arange(text_index.shape[1])
        nxt = jnp.where(j[None] == (text_len - 1)[:, None], first[:, None], nxt)
        return nxt, h, j[None] < text_len[:, None]

    def _empty_cache(self, batch: int) -> WindowCache:
        widest = max(self.chunk, self.shape.max_depth + 1, self.commit_width)
        return WindowCache.create(self.draft.config, batch, widest, self.shape.scratch, self.draft.dtype)

    @staticmethod
    def _last(outs, valid):
        """The draft output at each row's last valid pair [B, H]."""
        last = jnp.sum(valid, axis=1, dtype=jnp.int32) - 1
        return jnp.take_along_axis(outs, last[:, None, None], axis=1)[:, 0]

    def _start_ring(self, target, nxt, h, valid) -> DraftState:
        """`chunk` pairs per draft forward, each attending to the ring as a commit does: right for any window,
        but each chunk reads the whole window (25.6k pairs under a window over all of them: 23-30 s on the 2-core
        box against `_start_causal`'s 17 s)."""
        draft, (b, t) = self.draft, nxt.shape
        split = lambda x: jnp.moveaxis(x.reshape(b, t // self.chunk, self.chunk, *x.shape[2:]), 1, 0)  # noqa: E731

        def step(dc, xs):
            out, dc = self._commit(draft, target, dc, *xs)
            return dc, out

        dcache, outs = jax.lax.scan(step, self._empty_cache(b), (split(nxt), split(h), split(valid)))
        return DraftState(dcache, self._last(jnp.moveaxis(outs, 0, 1).reshape(b, t, -1), valid))

    def _start_causal(self, target, nxt, h, valid) -> DraftState:
        """All T <= window pairs as the target's prefill runs: PROMPT_CHUNK queries per forward over a plain
        KV cache read in blocks up to the chunk's end (causal block skipping), then the entries copied once
        into the ring's slots 0..T-1, which hold positions 0..T-1 while nothing has wrapped. Valid pairs come
        first in each row, so no valid query sees a padding entry."""
        draft, (b, t) = self.draft, nxt.shape
        size = min(PROMPT_CHUNK, t)
        pad = -t % size
        nxt, h, valid = (jnp.pad(x, ((0, 0), (0, pad)) + ((0, 0),) * (x.ndim - 2)) for x in (nxt, h, valid))
        n = (t + pad) // size
        cfg = draft.config.layers
        kv = KVCache.create(cfg.num_layers, b, round_capacity(t + pad), cfg.num_kv_heads, cfg.head_dim, draft.dtype)
        split = lambda x: jnp.moveaxis(x.reshape(b, n, size, *x.shape[2:]), 1, 0)  # noqa: E731
        causal = causal_mask(b, size)

        def step(kv, xs):
            tokens, hid, start = xs
            positions = jnp.broadcast_to(start + jnp.arange(size), (b, size))
            out, (k, v) = draft(target.lm.embed_tokens(tokens), hid, positions, causal, kv.view())
            return kv.write(k, v).advance(size), out

        kv, outs = jax.lax.scan(step, kv, (split(nxt), split(h), jnp.arange(n) * size))
        count = jnp.sum(valid, axis=1, dtype=jnp.int32)
        dcache = self._empty_cache(b).filled(kv.k[:, :, :, :t], kv.v[:, :, :, :t], count)
        return DraftState(dcache, self._last(jnp.moveaxis(outs, 0, 1).reshape(b, t + pad, -1), valid))

    def propose(self, target, state: DraftState, *, root, n_out, key):
        draft, dc = self.draft, state.dcache
        scratch0 = dc.pinned + dc.ring

        def step(tokens, hid, positions, index, ancestors):
            nonlocal dc
            slots = jnp.broadcast_to(scratch0 + index, tokens.shape)
            alone = jnp.broadcast_to(jnp.eye(tokens.shape[1], dtype=bool), tokens.shape + tokens.shape[1:])
            out, dc = self._forward(draft, target, dc, tokens, hid, positions, slots, alone, ancestors)
            return out

        logits = lambda out: draft.logits(out, target)  # noqa: E731  (the target's lm_head, or the draft's own)
        tree = draft_tree(step, logits, root, state.last_out, dc.count, self.shape, self.sampling, key)
        return tree, state.replace(dcache=dc)

    def commit(self, target, state: DraftState, accepted: Accepted) -> DraftState:
        outs, dcache = self._commit(self.draft, target, state.dcache, accepted.tokens, accepted.hidden,
                                    accepted.valid)
        last = jnp.take_along_axis(outs, accepted.n[:, None, None], axis=1)[:, 0]
        active = jnp.any(accepted.valid, axis=1)
        return DraftState(dcache, jnp.where(active[:, None], last, state.last_out))
