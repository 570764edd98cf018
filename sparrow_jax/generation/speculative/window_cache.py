"""VATA window cache of the draft: a static ring buffer of text slots with stored positions.

Layout of the slot axis (size S + R + T + 1):
    [0, S)          pinned: draft positions < S (the start of the prompt), never evicted
    [S, S + R)      ring: position p >= S lives in slot S + (p - S) % R; R = W + M
    [S + R, +T)     scratch: this cycle's speculative nodes, visible to their descendants only
    last            trash: writes of padding entries land here and are never read
A query at draft position q sees ring entries with q - W < p <= q (the window) plus the pinned ones.
The ring holds M slots more than the window so that a forward writing up to M entries never evicts
an entry one of its own queries still needs. The cost of a draft step depends on S + W + M + T only:
neither on the number of visual tokens (the draft never holds them) nor on the sequence length.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct

from sparrow_jax.kv_cache import SLOT_AXIS, CacheView, scatter, zeros
from sparrow_jax.sharding import constrain


@struct.dataclass
class WindowCache:
    k: jax.Array  # [layers, B, Hkv, S + R + T + 1, D]: head-major like the target's KVCache (shared `scatter`)
    v: jax.Array
    pos: jax.Array  # [B, S + R] draft position held by each pinned/ring slot, -1 if empty
    count: jax.Array  # [B] committed draft positions
    pinned: int = struct.field(pytree_node=False)
    window: int = struct.field(pytree_node=False)
    ring: int = struct.field(pytree_node=False)
    scratch: int = struct.field(pytree_node=False)

    @classmethod
    def create(cls, cfg, batch: int, max_write: int, scratch: int, dtype) -> "WindowCache":
        t = cfg.layers
        ring = cfg.window + max_write
        slots = cfg.pinned + ring + scratch + 1
        shape = (t.num_layers, batch, t.num_kv_heads, slots, t.head_dim)
        pos = constrain(jnp.full((batch, cfg.pinned + ring), -1, jnp.int32), ("batch",))  # rows over `data`
        return cls(zeros(shape, dtype), zeros(shape, dtype), pos, constrain(jnp.zeros((batch,), jnp.int32), ("batch",)),
                   cfg.pinned, cfg.window, ring, scratch)

    @property
    def trash(self) -> int:
        return self.pinned + self.ring + self.scratch

    def ring_slot(self, p):
        return jnp.where(p < self.pinned, p, self.pinned + (p - self.pinned) % self.ring)

    def ring_visible(self, q):
        """[B, N, S + R]: committed entries visible to queries at draft positions q [B, N]."""
        p = self.pos[:, None, :]
        q = q[..., None]
        return (p >= 0) & (p <= q) & ((p < self.pinned) | (p > q - self.window))

    def commit_slots(self, n_new: int, valid):
        """Slots and positions for n_new entries after the committed ones; invalid ones go to trash.
        Returns (slots [B, n], positions [B, n], cache with `pos` updated; count not yet advanced)."""
        positions = self.count[:, None] + jnp.arange(n_new)
        slots = jnp.where(valid, self.ring_slot(positions), self.trash)
        b = jnp.arange(self.pos.shape[0])[:, None]
        pos_slots = jnp.where(valid, slots, self.pos.shape[1])  # out of range: dropped by the scatter
        pos = self.pos.at[b, pos_slots].set(positions, mode="drop")
        return slots, positions, self.replace(pos=pos)

    def mask(self, q, scratch_visible):
        """[B, N, all slots]: cache slots visible to queries at positions q [B, N] that see the scratch
        slots `scratch_visible` [B, N, T] (their ancestors in this cycle's tree)."""
        trash = jnp.zeros(q.shape + (1,), bool)
        return jnp.concatenate([self.ring_visible(q), scratch_visible, trash], axis=-1)

    def view(self, q, scratch_visible) -> CacheView:
        """The cache as draft queries at positions q [B, N] see it, their ancestors' scratch slots
        `scratch_visible` [B, N, T] included (layer 0; `CacheView.at` picks another)."""
        return CacheView(self.k, self.v, mask=self.mask(q, scratch_visible))

    def filled(self, k, v, count) -> "WindowCache":
        """An empty cache holding positions 0..count-1 (count [B]) from k/v [L, B, Hkv, T, D] of positions
        0..T-1, T <= window: before any wrap position p lives in slot p (pinned or ring), so one copy does."""
        t = k.shape[SLOT_AXIS]
        assert t <= self.window, f"{t} entries do not fit a window of {self.window} without wrapping"
        k_all = jax.lax.dynamic_update_slice_in_dim(self.k, k.astype(self.k.dtype), 0, SLOT_AXIS)
        v_all = jax.lax.dynamic_update_slice_in_dim(self.v, v.astype(self.v.dtype), 0, SLOT_AXIS)
        slot = jnp.arange(self.pos.shape[1])[None]
        return self.replace(k=k_all, v=v_all, pos=jnp.where(slot < count[:, None], slot, -1), count=count)

    def write(self, k_new, v_new, slots) -> "WindowCache":
        """Store entries of every layer, k_new/v_new [L, B, N, Hkv, D], at `slots` [B, N]."""
        k, v = scatter(self.k, self.v, k_new, v_new, slots)
        return self.replace(k=k, v=v)
