"""Grouped-query attention with rotary embeddings, optionally over a static KV cache.

With a cache, attention runs over [cache ; new entries] with an online softmax, so the new keys and
values need not be written first (the caller writes them once, for all layers) and the target's
cache is read block by block only up to the longest row: a decode step costs what the rows hold,
not what the cache could hold.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx, struct

from sparrow_jax import rope
from sparrow_jax.config import TextConfig
from sparrow_jax.kv_cache import CacheView
from sparrow_jax.layers import Dense

NEG = -1e30  # masked score: finite, so fully masked padding rows stay finite
BLOCK = 1024  # cache slots read per step of the blocked attention (see `round_capacity`)
QUERY_CHUNK = 1024  # longer uncached attention runs in query chunks (see `_attend_chunked`)
# Float32 scores per row one query chunk may hold (512 MiB): over long keys chunks shrink below QUERY_CHUNK
# (a 7B layer's 28 heads over 25.6k keys: 128 queries; 1024 held 2.9 GB per score array, ~5 live at once).
CHUNK_SCORES = 1 << 27
SCORE_BUDGET = 1 << 26  # float32 scores (256 MiB) a vision tower's chunk of frames may hold at once
TOKEN_BUDGET = 8192  # tokens a vision tower's chunk of frames may hold at once


def round_capacity(need: int) -> int:
    """The smallest valid cache capacity >= need: a multiple of 128 up to one block, else of BLOCK.
    (4096-slot blocks for decoding were tried: fewer loop steps, but up to a block of masked reads
    past the longest row; at 4k context they measured slower.)"""
    step = 128 if need <= BLOCK else BLOCK
    return -(-need // step) * step


def check_capacity(capacity: int) -> None:
    if capacity > BLOCK and capacity % BLOCK:
        raise ValueError(f"capacity {capacity} must be <= {BLOCK} or a multiple of {BLOCK} (the attention block); "
                         f"e.g. {round_capacity(capacity)}")


def query_chunk(heads: int, keys: int) -> int:
    """Queries per chunk of uncached attention over `keys` keys: QUERY_CHUNK, or fewer (a multiple of 128, at
    least 128) when that many would hold more than CHUNK_SCORES float32 scores per row."""
    fit = CHUNK_SCORES // max(heads * keys, 1) // 128 * 128
    return max(128, min(QUERY_CHUNK, fit))


def scores_held(heads: int, count: int, length: int) -> int:
    """Float32 scores `attend` holds at once for `count` sequences of `length` tokens."""
    return heads * count * length * min(length, query_chunk(heads, length))


def items_per_chunk(tokens: int, scores: int) -> int:
    """How many items (frames) of `tokens` tokens whose attention holds `scores` scores at a time (see
    `scores_held`) to run at once: within SCORE_BUDGET and TOKEN_BUDGET, at least one."""
    return max(1, min(SCORE_BUDGET // max(scores, 1), TOKEN_BUDGET // max(tokens, 1)))


@struct.dataclass
class CausalMask:
    """Causal attention over one sequence, described instead of stored: query i sees key j when j <= i and
    `keys[b, j]` (and always itself, so no softmax row is empty). `attend` builds it one query chunk at a
    time, so a 25k-token training forward never holds an [S, S] mask (655 MB per row as bool)."""

    keys: jax.Array | None = None  # [B, S] bool: the keys a row may see at all; None: every key

    def block(self, start, n: int, s: int):
        """The dense mask of queries start .. start + n - 1 over keys 0 .. s - 1: [B (1 if keys is None), n, s]."""
        q, k = start + jnp.arange(n)[:, None], jnp.arange(s)[None, :]
        mask = (k <= q)[None]
        if self.keys is not None:
            mask = mask & self.keys[:, None, :]
        return mask | (q == k)[None]


def _scores(q5, k, scale):
    """q5 [B,N,Hkv,G,D], k [B,Hkv,S,D] (head-major, as the caches) -> float32 [B,Hkv,G,N,S]."""
    return jnp.einsum("bnhgd,bhsd->bhgns", q5, k, preferred_element_type=jnp.float32) * scale


def attend(q, k, v, mask, scale: float):
    """q [B,N,Hq,D], k/v [B,S,Hkv,D], mask [B,N,S] bool, a `CausalMask`, or None (all visible) -> [B,N,Hq,D].

    Softmax in float32, probabilities cast back to the value dtype (as HF eager attention). More than
    `query_chunk` queries go through `_attend_chunked`, which keeps memory linear in N for training."""
    if q.shape[1] > query_chunk(q.shape[2], k.shape[1]):
        return _attend_chunked(q, k, v, mask, scale)
    if isinstance(mask, CausalMask):
        mask = mask.block(0, q.shape[1], k.shape[1])
    b, n, hq, d = q.shape
    hkv = k.shape[2]
    q5 = q.reshape(b, n, hkv, hq // hkv, d)
    scores = jnp.einsum("bnhgd,bshd->bhgns", q5, k, preferred_element_type=jnp.float32) * scale
    if mask is not None:
        scores = jnp.where(mask[:, None, None], scores, NEG)
    probs = jax.nn.softmax(scores, axis=-1).astype(v.dtype)
    out = jnp.einsum("bhgns,bshd->bhgnd", probs, v)
    return jnp.moveaxis(out, 3, 1).reshape(b, n, hq, d)


def _attend_chunked(q, k, v, mask, scale: float):
    """`attend` over query chunks of at most `query_chunk`, each rematerialised in the backward pass: the
    [N, S] scores and probabilities exist one chunk at a time, in the forward and the backward pass,
    instead of whole (at 4k tokens and batch 4 those are 1 GB per layer, kept for the backward pass).
    Each query's softmax is over all S keys as before, so the result is the dense one. A `CausalMask` is
    built per chunk inside it (recomputed, never stored)."""
    b, n = q.shape[:2]
    count = -(-n // query_chunk(q.shape[2], k.shape[1]))
    size = -(-n // count)  # even chunks: little padding
    pad = count * size - n
    q = jnp.pad(q, ((0, 0), (0, pad), (0, 0), (0, 0)))
    split = lambda x: jnp.moveaxis(x.reshape(b, count, size, *x.shape[2:]), 1, 0)  # noqa: E731
    if isinstance(mask, CausalMask):
        chunks = jnp.arange(count) * size  # each chunk's first query
        one = jax.checkpoint(lambda qc, start: attend(qc, k, v, mask.block(start, size, k.shape[1]), scale))
    else:
        mask = None if mask is None else split(jnp.pad(mask, ((0, 0), (0, pad), (0, 0))))
        chunks = mask
        one = jax.checkpoint(lambda qc, mc: attend(qc, k, v, mc, scale))
    out = jax.lax.map(lambda xs: one(*xs), (split(q), chunks))
    return jnp.moveaxis(out, 0, 1).reshape(b, count * size, *out.shape[3:])[:, :n]


def _merge(state, s, v):
    """Online-softmax update of (max, sum, acc) with masked scores s [B,h,g,N,S] over values v [B,h,S,D]."""
    m, l, acc = state
    m_new = jnp.maximum(m, jnp.max(s, axis=-1))
    corr = jnp.exp(m - m_new)
    p = jnp.exp(s - m_new[..., None])
    acc = acc * corr[..., None] + jnp.einsum("bhgns,bhsd->bhgnd", p.astype(v.dtype), v, preferred_element_type=jnp.float32)
    return m_new, l * corr + jnp.sum(p, axis=-1), acc


def attend_cached(q, k_new, v_new, new_mask, view: CacheView, scale: float):
    """Attention of N new queries over [cache ; N new entries].

    `view` is the cache as this layer sees it (`kv_cache.CacheView`). new_mask [B,N,N]: which new entries
    each query sees (it must see itself). The cache part is either the view's `mask` [B,N,C] (read in
    one pass: small caches such as the draft's) or its `lengths` [B]: slots below each row's length are
    visible, read in blocks up to the longest row.
    """
    b, n, hq, d = q.shape
    hkv = k_new.shape[2]
    q5 = q.reshape(b, n, hkv, hq // hkv, d)
    k_new, v_new = jnp.swapaxes(k_new, 1, 2), jnp.swapaxes(v_new, 1, 2)  # head-major, as the cache
    s = jnp.where(new_mask[:, None, None], _scores(q5, k_new, scale), NEG)
    m = jnp.max(s, axis=-1)
    p = jnp.exp(s - m[..., None])
    state = (m, jnp.sum(p, axis=-1), jnp.einsum("bhgns,bhsd->bhgnd", p.astype(v_new.dtype), v_new,
                                                preferred_element_type=jnp.float32))
    if view.mask is not None:
        kl, vl = view.layer_kv()
        sc = jnp.where(view.mask[:, None, None], _scores(q5, kl, scale), NEG)
        state = _merge(state, sc, vl)
    else:
        cap, lengths = view.capacity, view.lengths
        block = min(BLOCK, cap)
        if cap % block:
            raise ValueError(f"cache capacity {cap} must be a multiple of the attention block {block}")

        def body(j, st):
            start = j * block
            kb, vb = view.block(start, block)
            valid = (start + jnp.arange(block))[None, :] < lengths[:, None]  # [B, block]
            sc = jnp.where(valid[:, None, None, None, :], _scores(q5, kb, scale), NEG)
            return _merge(st, sc, vb)

        state = jax.lax.fori_loop(0, (jnp.max(lengths) + block - 1) // block, body, state)
    _, l, acc = state
    out = (acc / l[..., None]).astype(v_new.dtype)
    return jnp.moveaxis(out, 3, 1).reshape(b, n, hq, d)


class Attention(nnx.Module):
    def __init__(self, cfg: TextConfig, *, dtype, rngs: nnx.Rngs):
        h, nq, nkv, d = cfg.hidden_size, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
        self.heads, self.kv_heads, self.scale = nq, nkv, d**-0.5
        self.q_proj = Dense(h, nq * d, ("embed", "q_heads"), bias=cfg.qkv_bias, dtype=dtype, rngs=rngs)
        self.k_proj = Dense(h, nkv * d, ("embed", "kv_heads"), bias=cfg.qkv_bias, dtype=dtype, rngs=rngs)
        self.v_proj = Dense(h, nkv * d, ("embed", "kv_heads"), bias=cfg.qkv_bias, dtype=dtype, rngs=rngs)
        self.o_proj = Dense(nq * d, h, ("q_heads", "embed"), bias=cfg.o_bias, dtype=dtype, rngs=rngs)

    def __call__(self, x, cos, sin, mask, cache=None):
        """x [B,N,H]; `mask` [B,N,N] among the N tokens. `cache`: None, or the `CacheView` this layer
        attends over (see `attend_cached`).
        Returns (out [B,N,H], (k, v) of the N tokens [B,N,Hkv,D]) for the caller to store."""
        heads = lambda y, n: y.reshape(*y.shape[:-1], n, -1)  # noqa: E731
        q = rope.apply(heads(self.q_proj(x), self.heads), cos, sin)
        k = rope.apply(heads(self.k_proj(x), self.kv_heads), cos, sin)
        v = heads(self.v_proj(x), self.kv_heads)
        if cache is None:
            out = attend(q, k, v, mask, self.scale)
        else:
            out = attend_cached(q, k, v, mask, cache, self.scale)
        return self.o_proj(out.reshape(*out.shape[:-2], -1)), (k, v)
