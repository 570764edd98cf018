"""Autoregressive decoding after prefill: one target step per token, all rows together, in a
`lax.while_loop` (`decode`) or a step at a time (`step`, which streaming drives)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct

from sparrow_jax.generation.state import DecodeConfig, PromptState
from sparrow_jax.kv_cache import KVCache
from sparrow_jax.sampling import mark_seen, penalize, sample, seen_tokens, split_rows


@struct.dataclass
class ARState:
    step: jax.Array  # next output index
    tokens: jax.Array  # [B, max_new]
    last: jax.Array  # [B] last sampled token
    done: jax.Array  # [B]
    lengths: jax.Array  # [B]
    cache: KVCache
    prompt: PromptState
    key: jax.Array  # [B] one PRNG key per row (sampling.row_keys)
    seen: jax.Array | None = None  # [B, V] tokens so far (prompt included), when a repetition penalty applies


def start(logits, cache: KVCache, prompt: PromptState, *, key, config: DecodeConfig) -> ARState:
    """The loop state after prefill (`logits` [B, V] at each row's last prompt token): the first token
    sampled."""
    b, max_new = logits.shape[0], config.max_new_tokens
    key, sub = split_rows(key)
    seen = seen_tokens(prompt.ids, cache.lengths, logits.shape[-1]) if prompt.sampler.penalize else None
    first = sample(sub, penalize(logits, seen, prompt.sampler), prompt.sampler)
    tokens = jnp.full((b, max_new), config.pad_id, jnp.int32).at[:, 0].set(first)
    return ARState(
        step=jnp.int32(1),
        tokens=tokens,
        last=first,
        done=prompt.is_stop(first) | (prompt.max_new <= 1) | prompt.stopped(tokens, 1),
        lengths=jnp.ones((b,), jnp.int32),
        cache=cache,
        prompt=prompt,
        key=key,
        seen=None if seen is None else mark_seen(seen, first),
    )


def running(s: ARState, config: DecodeConfig):
    return (s.step < config.max_new_tokens) & ~jnp.all(s.done)


def step(target, s: ARState, config: DecodeConfig) -> ARState:
    """One autoregressive token for every row (rows already done get pad_id)."""
    positions = (s.cache.lengths + s.prompt.rope_delta)[:, None]
    out = target.decode(target.embed(s.last[:, None]), positions, cache=s.cache)
    key, sub = split_rows(s.key)
    tok = sample(sub, penalize(target.logits(out.hidden[:, 0]), s.seen, s.prompt.sampler), s.prompt.sampler)
    tok = jnp.where(s.done, config.pad_id, tok)
    tokens = s.tokens.at[:, s.step].set(tok)
    return s.replace(
        step=s.step + 1,
        tokens=tokens,
        last=tok,
        done=s.done | s.prompt.is_stop(tok) | (s.step + 1 >= s.prompt.max_new)
        | s.prompt.stopped(tokens, s.step + 1),
        lengths=s.lengths + (~s.done).astype(jnp.int32),
        cache=out.cache.advance(1),
        key=key,
        seen=None if s.seen is None else mark_seen(s.seen, tok),
    )


def decode(target, s: ARState, config: DecodeConfig) -> ARState:
    """Decode from `s` to the end in one `lax.while_loop`. Pure: call under jit."""
    return jax.lax.while_loop(lambda s: running(s, config), lambda s: step(target, s, config), s)
