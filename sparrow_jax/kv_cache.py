"""Static-shape KV cache of the target: fixed capacity, per-row committed lengths.

Row b's committed tokens occupy slots [0, lengths[b]). A forward over N new tokens writes their
keys/values at slots [lengths[b], lengths[b] + N); the caller decides how many of them to commit
(`advance`). Slots past a row's length hold stale entries that are masked out and later overwritten,
so rejected speculative tokens need no clean-up.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct


@struct.dataclass
class KVCache:
    k: jax.Array  # [layers, batch, capacity, kv_heads, head_dim]
    v: jax.Array
    lengths: jax.Array  # [batch] int32

    @classmethod
    def create(cls, num_layers: int, batch: int, capacity: int, kv_heads: int, head_dim: int, dtype) -> "KVCache":
        shape = (num_layers, batch, capacity, kv_heads, head_dim)
        return cls(jnp.zeros(shape, dtype), jnp.zeros(shape, dtype), jnp.zeros((batch,), jnp.int32))

    @property
    def capacity(self) -> int:
        return self.k.shape[2]

    def advance(self, n) -> "KVCache":
        """Commit `n` (scalar or [batch]) more tokens per row."""
        return self.replace(lengths=self.lengths + jnp.asarray(n, jnp.int32))


def write(cache_k, cache_v, k, v, where):
    """Write new k/v [B, N, Hkv, D] into one layer's cache [B, C, Hkv, D].

    `where` [B]: each row's N entries go to consecutive slots from there (the target's cache);
    `where` [B, N]: entry i of row b goes to slot where[b, i] (the draft's ring buffer).
    """

    def row(ck, cv, nk, nv, at):
        if at.ndim == 0:
            return (
                jax.lax.dynamic_update_slice(ck, nk.astype(ck.dtype), (at, 0, 0)),
                jax.lax.dynamic_update_slice(cv, nv.astype(cv.dtype), (at, 0, 0)),
            )
        return ck.at[at].set(nk.astype(ck.dtype)), cv.at[at].set(nv.astype(cv.dtype))

    return jax.vmap(row)(cache_k, cache_v, k, v, where)


def causal_mask(batch: int, n: int):
    return jnp.broadcast_to(jnp.tril(jnp.ones((n, n), bool)), (batch, n, n))


def visibility(lengths, capacity: int, new_mask):
    """[B, N, capacity] bool: which cache slots each of N new queries may attend to.

    Committed slots (< length) are visible to all new tokens; the N new slots follow `new_mask`
    [B, N, N] (causal for ordinary extends, ancestor-only for tree verification).
    """
    n = new_mask.shape[-1]
    rel = jnp.arange(capacity)[None, :] - lengths[:, None]  # [B, C]
    is_new = (rel >= 0) & (rel < n)
    idx = jnp.broadcast_to(jnp.clip(rel, 0, n - 1)[:, None, :], (lengths.shape[0], new_mask.shape[1], capacity))
    new_visible = jnp.take_along_axis(new_mask, idx, axis=2)
    return (rel < 0)[:, None, :] | (is_new[:, None, :] & new_visible)
