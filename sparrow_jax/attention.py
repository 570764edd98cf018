"""Grouped-query attention with rotary embeddings over an optional static KV cache."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from sparrow_jax import kv_cache, rope
from sparrow_jax.config import TextConfig
from sparrow_jax.layers import Dense


def attend(q, k, v, mask, scale: float):
    """q [B,N,Hq,D], k/v [B,S,Hkv,D], mask [B,N,S] bool or None (all visible) -> [B,N,Hq,D].

    Softmax in float32, probabilities cast back to the value dtype (as HF eager attention)."""
    b, n, hq, d = q.shape
    hkv = k.shape[2]
    q = q.reshape(b, n, hkv, hq // hkv, d)
    scores = jnp.einsum("bnhgd,bshd->bhgns", q, k, preferred_element_type=jnp.float32) * scale
    # A large finite negative (not -inf) keeps fully masked padding rows finite.
    if mask is not None:
        scores = jnp.where(mask[:, None, None], scores, jnp.finfo(jnp.float32).min)
    probs = jax.nn.softmax(scores, axis=-1).astype(v.dtype)
    out = jnp.einsum("bhgns,bshd->bnhgd", probs, v)
    return out.reshape(b, n, hq, d)


class Attention(nnx.Module):
    def __init__(self, cfg: TextConfig, *, dtype, rngs: nnx.Rngs):
        h, nq, nkv, d = cfg.hidden_size, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
        self.heads, self.kv_heads, self.scale = nq, nkv, d**-0.5
        self.q_proj = Dense(h, nq * d, ("embed", "q_heads"), bias=cfg.qkv_bias, dtype=dtype, rngs=rngs)
        self.k_proj = Dense(h, nkv * d, ("embed", "kv_heads"), bias=cfg.qkv_bias, dtype=dtype, rngs=rngs)
        self.v_proj = Dense(h, nkv * d, ("embed", "kv_heads"), bias=cfg.qkv_bias, dtype=dtype, rngs=rngs)
        self.o_proj = Dense(nq * d, h, ("q_heads", "embed"), bias=cfg.o_bias, dtype=dtype, rngs=rngs)

    def __call__(self, x, cos, sin, mask, kv=None, where=None):
        """x [B,N,H]. Without `kv`: attend among the N tokens under `mask` [B,N,N].

        With `kv` = (k_cache, v_cache) of one layer: write the new keys/values at `where` (see
        `kv_cache.write`) and attend over the whole cache under `mask` [B,N,capacity].
        Returns (out, new kv or None).
        """
        heads = lambda y, n: y.reshape(*y.shape[:-1], n, -1)
        q = rope.apply(heads(self.q_proj(x), self.heads), cos, sin)
        k = rope.apply(heads(self.k_proj(x), self.kv_heads), cos, sin)
        v = heads(self.v_proj(x), self.kv_heads)
        if kv is not None:
            kv = kv_cache.write(*kv, k, v, where)
            k, v = kv
        out = attend(q, k, v, mask, self.scale)
        return self.o_proj(out.reshape(*out.shape[:-2], -1)), kv
