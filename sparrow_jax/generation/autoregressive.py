"""Autoregressive decoding after prefill: one target step per token, all rows together, in a
`lax.while_loop` (`decode`) or a step at a time (`step`, which streaming drives)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct

from sparrow_jax.generation.state import DecodeConfig
from sparrow_jax.kv_cache import KVCache
from sparrow_jax.sampling import sample


@struct.dataclass
class ARState:
    step: jax.Array  # next output index
    tokens: jax.Array  # [B, max_new]
    last: jax.Array  # [B] last sampled token
    done: jax.Array  # [B]
    lengths: jax.Array  # [B]
    cache: KVCache
    rope_delta: jax.Array  # [B]
    key: jax.Array


def start(logits, cache: KVCache, rope_delta, *, key, config: DecodeConfig) -> ARState:
    """The loop state after prefill (`logits` [B, V] at each row's last prompt token): the first token
    sampled."""
    b, max_new = logits.shape[0], config.max_new_tokens
    key, sub = jax.random.split(key)
    first = sample(sub, logits, config.sampling)
    return ARState(
        step=jnp.int32(1),
        tokens=jnp.full((b, max_new), config.pad_id, jnp.int32).at[:, 0].set(first),
        last=first,
        done=config.is_stop(first) | (max_new <= 1),
        lengths=jnp.ones((b,), jnp.int32),
        cache=cache,
        rope_delta=rope_delta,
        key=key,
    )


def running(s: ARState, config: DecodeConfig):
    return (s.step < config.max_new_tokens) & ~jnp.all(s.done)


def step(target, s: ARState, config: DecodeConfig) -> ARState:
    """One autoregressive token for every row (rows already done get pad_id)."""
    positions = (s.cache.lengths + s.rope_delta)[:, None]
    out = target.decode(target.embed(s.last[:, None]), positions, cache=s.cache)
    key, sub = jax.random.split(s.key)
    tok = sample(sub, target.logits(out.hidden[:, 0]), config.sampling)
    tok = jnp.where(s.done, config.pad_id, tok)
    return s.replace(
        step=s.step + 1,
        tokens=s.tokens.at[:, s.step].set(tok),
        last=tok,
        done=s.done | config.is_stop(tok),
        lengths=s.lengths + (~s.done).astype(jnp.int32),
        cache=out.cache.advance(1),
        key=key,
    )


def decode(target, s: ARState, config: DecodeConfig) -> ARState:
    """Decode from `s` to the end in one `lax.while_loop`. Pure: call under jit."""
    return jax.lax.while_loop(lambda s: running(s, config), lambda s: step(target, s, config), s)
