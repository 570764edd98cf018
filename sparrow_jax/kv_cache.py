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


def write(k_all, v_all, k_new, v_new, where):
    """Store new entries of every layer: k_new/v_new [L, B, N, Hkv, D] into k_all/v_all [L, B, C, Hkv, D].

    `where` [B]: each row's N entries go to consecutive slots from there (the target's cache);
    `where` [B, N]: entry i of row b goes to slot where[b, i] (the draft's ring buffer).
    """

    def row(k, v, kn, vn, at):  # one batch row: k [L, C, Hkv, D]
        if at.ndim == 0:
            return (jax.lax.dynamic_update_slice_in_dim(k, kn.astype(k.dtype), at, axis=1),
                    jax.lax.dynamic_update_slice_in_dim(v, vn.astype(v.dtype), at, axis=1))
        return k.at[:, at].set(kn.astype(k.dtype)), v.at[:, at].set(vn.astype(v.dtype))

    return jax.vmap(row, in_axes=(1, 1, 1, 1, 0), out_axes=(1, 1))(k_all, v_all, k_new, v_new, where)


def causal_mask(batch: int, n: int):
    return jnp.broadcast_to(jnp.tril(jnp.ones((n, n), bool)), (batch, n, n))
