"""Static-shape KV cache of the target (fixed capacity, per-row committed lengths) and the typed view of
one layer of a cache that attention reads. This file is the only one that knows the cache's layout.

Row b's committed tokens occupy slots [0, lengths[b]). A forward over N new tokens writes their
keys/values at slots [lengths[b], lengths[b] + N) (`KVCache.write`); the caller decides how many of them
to commit (`advance`). Slots past a row's length hold stale entries that are masked out and later
overwritten, so rejected speculative tokens need no clean-up.

The layout is head-major, [layers, batch, kv_heads, capacity, head_dim] (HF's): a decode step reads
each head's keys as one contiguous run, so the attention dot needs no transpose of the cache blocks
(measured: 1.04 vs 1.56 ms per layer for one query over 16k slots with [capacity, kv_heads, head_dim]).
The draft's window cache (`generation.speculative.window_cache`) uses the same layout and `scatter`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct

from sparrow_jax.sharding import constrain

SLOT_AXIS = 3  # of k/v [layers, batch, kv_heads, slots, head_dim]
# Logical names of k/v's axes (`sharding.RULES`): on a mesh, rows over the batch axes and heads over
# `tensor` where it divides the KV heads (else the heads are replicated), as the k/v projections' outputs.
LAYOUT = ("layers", "batch", "kv_heads", None, None)


@struct.dataclass
class CacheView:
    """What one layer's attention sees of a cache: every layer's k/v [L, B, Hkv, C, D] plus this layer's
    index, and either per-row `lengths` [B] (slots below a row's length are visible, read block by block)
    or a `mask` [B, N, C] of visible slots (small caches, read in one pass).

    The stacked arrays are passed whole on purpose: slicing the layer out first (as scan `xs`) makes XLA
    materialise a copy of the layer's whole cache every step (it does not fuse the slice into the block
    loop), which at 16k context cost more than the attention itself; `block` reads (layer, block) in place."""

    k: jax.Array
    v: jax.Array
    layer: jax.Array | int = 0
    lengths: jax.Array | None = None
    mask: jax.Array | None = None

    @property
    def capacity(self) -> int:
        return self.k.shape[SLOT_AXIS]

    def at(self, layer) -> "CacheView":
        """The same cache seen from layer `layer` (an int or a traced index, e.g. the layer scan's)."""
        return self.replace(layer=layer)

    def layer_kv(self):
        """(k, v) [B, Hkv, C, D] of this layer, all slots."""
        return tuple(jax.lax.dynamic_index_in_dim(c, self.layer, 0, keepdims=False) for c in (self.k, self.v))

    def block(self, start, size: int):
        """(k, v) [B, Hkv, size, D] of this layer's slots [start, start + size)."""
        _, b, hkv, _, d = self.k.shape
        at, shape = (self.layer, 0, 0, start, 0), (1, b, hkv, size, d)
        return tuple(jax.lax.dynamic_slice(c, at, shape)[0] for c in (self.k, self.v))


@struct.dataclass
class KVCache:
    k: jax.Array  # [layers, batch, kv_heads, capacity, head_dim]
    v: jax.Array
    lengths: jax.Array  # [batch] int32

    @classmethod
    def create(cls, num_layers: int, batch: int, capacity: int, kv_heads: int, head_dim: int, dtype) -> "KVCache":
        shape = (num_layers, batch, kv_heads, capacity, head_dim)
        return cls(zeros(shape, dtype), zeros(shape, dtype), constrain(jnp.zeros((batch,), jnp.int32), ("batch",)))

    @property
    def capacity(self) -> int:
        return self.k.shape[SLOT_AXIS]

    def advance(self, n) -> "KVCache":
        """Commit `n` (scalar or [batch]) more tokens per row."""
        return self.replace(lengths=self.lengths + jnp.asarray(n, jnp.int32))

    def view(self) -> CacheView:
        """The committed cache as attention reads it (layer 0; `CacheView.at` picks another)."""
        return CacheView(self.k, self.v, lengths=self.lengths)

    def write(self, k_new, v_new) -> "KVCache":
        """Store the new entries of every layer, k_new/v_new [L, B, N, Hkv, D], at each row's length
        (lengths unchanged: the caller commits with `advance`)."""
        k, v = scatter(self.k, self.v, k_new, v_new, self.lengths)
        return self.replace(k=k, v=v)

    def compact(self, path) -> "KVCache":
        """Move the entries at slots length + path[:, i] to slots length + i (an accepted tree path
        [B, P] of node offsets): a gather and a scatter of the path's entries only, never a pass over
        the whole cache."""
        rows = jnp.arange(path.shape[0])[:, None]
        src = self.lengths[:, None] + path
        dst = self.lengths[:, None] + jnp.arange(path.shape[1])
        k = self.k.at[:, rows, :, dst].set(self.k[:, rows, :, src], mode="drop")
        v = self.v.at[:, rows, :, dst].set(self.v[:, rows, :, src], mode="drop")
        return self.replace(k=constrain(k, LAYOUT), v=constrain(v, LAYOUT))


def zeros(shape, dtype):
    """Empty k/v of `shape` (`LAYOUT`), born sharded on the mesh `sharding.on_mesh` sets: a cache made
    inside a jit is never whole on one device."""
    return constrain(jnp.zeros(shape, dtype), LAYOUT)


@struct.dataclass
class DeferredWrites(KVCache):
    """A KVCache that attention reads as usual but whose `write` hands back the new entries (k_new, v_new
    [L, B, N, Hkv, D]) for the caller to store with `KVCache.write` later: a forward inside a `lax.cond`
    branch reads the cache in place this way, where writing it inside the branch made XLA copy the whole
    cache (6 cache-sized copies per cycle in the speculative loop's HLO, none with the write outside)."""

    def write(self, k_new, v_new):
        return k_new, v_new


def scatter(k_all, v_all, k_new, v_new, where):
    """Store new entries of every layer: k_new/v_new [L, B, N, Hkv, D] into k_all/v_all [L, B, Hkv, C, D].

    `where` [B]: each row's N entries go to consecutive slots from there (the target's cache);
    `where` [B, N]: entry i of row b goes to slot where[b, i] (the draft's ring buffer).
    A scatter touches only the N new entries; a per-row dynamic_update_slice under vmap would lower
    to a select over the whole cache, i.e. a full copy every step.
    """
    b, n = k_new.shape[1:3]
    slots = where[:, None] + jnp.arange(n) if where.ndim == 1 else where
    rows = jnp.arange(b)[:, None]
    # Index arrays on axes 1 and 3 (split by a slice): numpy puts their broadcast [B, N] axes first,
    # so the selected entries are [B, N, L, Hkv, D].
    new = lambda x, like: jnp.transpose(x, (1, 2, 0, 3, 4)).astype(like.dtype)  # noqa: E731
    k_all = k_all.at[:, rows, :, slots].set(new(k_new, k_all), mode="drop")
    v_all = v_all.at[:, rows, :, slots].set(new(v_new, v_all), mode="drop")
    # On a mesh the cache keeps its layout's sharding: else XLA may follow the new entries' (e.g. split over
    # head_dim when a projection's shard holds part of a head) and gather the whole cache back every step.
    return constrain(k_all, LAYOUT), constrain(v_all, LAYOUT)


def causal_mask(batch: int, n: int):
    return jnp.broadcast_to(jnp.tril(jnp.ones((n, n), bool)), (batch, n, n))
