"""The target's prefill over a padded prompt batch, in chunks, filling a fresh KV cache."""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
from flax import nnx

from sparrow_jax.generation.state import Prefilled
from sparrow_jax.kv_cache import KVCache


@partial(jax.jit, static_argnames=("graphdef", "capacity", "chunk", "with_hidden"))
def prefill(graphdef, params, ids, lengths, positions, video, *, capacity: int, chunk: int,
            with_hidden: bool = False) -> Prefilled:
    """Prefill in chunks of `chunk` tokens: attention scores are [chunk, capacity], never [L, capacity],
    which is what keeps a 25k-token video prompt within memory. ids [B, W] (W a multiple of `chunk`),
    lengths [B], positions [B, W] ([3, B, W] for M-RoPE), video as the target's `embed` takes it."""
    target = nnx.merge(graphdef, params)
    cfg = target.lm.config
    b, width = ids.shape
    cache = KVCache.create(cfg.num_layers, b, capacity, cfg.num_kv_heads, cfg.head_dim, target.lm.dtype)
    split = lambda x, axis: jnp.moveaxis(x.reshape(*x.shape[:axis], width // chunk, chunk, *x.shape[axis + 1 :]), axis, 0)  # noqa: E731
    embeds = split(target.embed(ids, video), 1)  # [n, B, chunk, H]
    pos = split(positions, positions.ndim - 1)  # [n, ..., B, chunk]

    def step(cache, xs):
        out = target.decode(xs[0], xs[1], cache=cache)
        return out.cache.advance(chunk), out.hidden

    cache, hidden = jax.lax.scan(step, cache, (embeds, pos))
    hidden = jnp.moveaxis(hidden, 0, 1).reshape(b, width, -1)
    last = hidden[jnp.arange(b), lengths - 1]
    return Prefilled(target.logits(last), cache.replace(lengths=lengths), hidden if with_hidden else None)
