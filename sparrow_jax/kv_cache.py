"""Static-shape KV cache of the target: fixed capacity, per-row committed lengths.

Row b's committed tokens occupy slots [0, lengths[b]). A forward over N new tokens writes their
keys/values at slots [lengths[b], lengths[b] + N); the caller decides how many of them to commit
(`advance`). Slots past a row's length hold stale entries that are masked out and later overwritten,
so rejected speculative tokens need no clean-up.

The layout is head-major, [layers, batch, kv_heads, capacity, head_dim] (HF's): a decode step reads
each head's keys as one contiguous run, so the attention dot needs no transpose of the cache blocks
(measured: 1.04 vs 1.56 ms per layer for one query over 16k slots with [capacity, kv_heads, head_dim]).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct


@struct.dataclass
class KVCache:
    k: jax.Array  # [layers, batch, kv_heads, capacity, head_dim]
    v: jax.Array
    lengths: jax.Array  # [batch] int32

    @classmethod
    def create(cls, num_layers: int, batch: int, capacity: int, kv_heads: int, head_dim: int, dtype) -> "KVCache":
        shape = (num_layers, batch, kv_heads, capacity, head_dim)
        return cls(jnp.zeros(shape, dtype), jnp.zeros(shape, dtype), jnp.zeros((batch,), jnp.int32))

    @property
    def capacity(self) -> int:
        return self.k.shape[3]

    def advance(self, n) -> "KVCache":
        """Commit `n` (scalar or [batch]) more tokens per row."""
        return self.replace(lengths=self.lengths + jnp.asarray(n, jnp.int32))


def write(k_all, v_all, k_new, v_new, where):
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
    return k_all, v_all.at[:, rows, :, slots].set(new(v_new, v_all), mode="drop")


def causal_mask(batch: int, n: int):
    return jnp.broadcast_to(jnp.tril(jnp.ones((n, n), bool)), (batch, n, n))
