"""`generate`: a jitted prefill, then one jitted `lax.while_loop` that decodes autoregressively or
speculatively (with a draft / proposer, see `generation.speculative`).

The two stages are separate jits (the cache is donated from one to the other) so that prefill and
decoding times are measured honestly; within decoding there is no host round trip per token.
"""

from __future__ import annotations

import dataclasses
import inspect
import time
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from sparrow_jax.generation import autoregressive
from sparrow_jax.generation.prefill import prefill
from sparrow_jax.generation.setup import Request, setup
from sparrow_jax.generation.speculative import loop
from sparrow_jax.generation.state import DecodeConfig, GenerateOutput, Prefilled, PromptState, generation_stats


@partial(jax.jit, static_argnames=("graphdef", "config"), donate_argnames=("cache",))
def _decode(graphdef, params, logits, cache, rope_delta, key, config: DecodeConfig):
    target = nnx.merge(graphdef, params)
    s = autoregressive.start(logits, cache, rope_delta, key=key, config=config)
    s = autoregressive.decode(target, s, config)
    # Returning the cache lets XLA alias it with the donated input: one cache in memory, not two.
    return s.tokens, s.lengths, s.step, s.cache


@partial(jax.jit, static_argnames=("graphdef", "config"), donate_argnames=("cache",))
def _speculate(graphdef, params, proposer, prompt: PromptState, logits, hidden, cache, key, config: DecodeConfig):
    target = nnx.merge(graphdef, params)
    s = loop.start(target, proposer, prompt, logits=logits, hidden=hidden, cache=cache, key=key, config=config)
    s = loop.decode(target, proposer, s, config)
    return s.tokens[:, : config.max_new_tokens], s.n_out, s.cycles, s.accepted, s.cache


def generate(target, prompts, video=None, **options) -> GenerateOutput:
    """Generate up to `max_new_tokens` per row with `target` (a loaded model, see `sparrow_jax.load`).

    prompts: a list of token-id lists (video placeholders already expanded; rows may differ in length)
      or a `PromptBatch`. video: [B, T, S, S, 3] preprocessed pixels for video targets.
    A row stops after any token in `eos_token_id`. Greedy at temperature 0, else sampling with
    temperature / top-k / top-p. `capacity` (KV slots per row) defaults to the padded prompt length
    plus max_new_tokens (plus one tree when speculating), rounded up (`attention.round_capacity`) so
    that similar requests share one compiled program. Prompts longer
    than `prefill_chunk` are prefilled chunk by chunk (padded to a multiple of it) to bound memory.

    With `draft` (a loaded Sparrow draft, or any `speculative.proposer.Proposer`) decoding is
    speculative and lossless: the draft proposes a
    `tree` (default: the EAGLE-2 budget top_k 8, depth 3, 30 tokens; `TreeShape.chain(k)` for a chain),
    the target verifies it in one forward (at temperature > 0 a chain samples its tokens from the draft,
    a tree proposes the draft's top-k; both are verified by exact speculative sampling). The draft reads only
    the prompt's text positions (`draft_chunk` pairs per prefill step), never the visual tokens;
    `draft_sees_visual=True` is the EAGLE/MSD-style baseline that reads every prompt position (give it
    a window covering the prompt), for comparisons.
    """
    request = setup(target, prompts, video, **options)
    prefilled, prefill_s = run_prefill(request)
    return run_decode(request, prefilled, prefill_s, request.proposer)


generate.__signature__ = inspect.signature(setup).replace(return_annotation=GenerateOutput)


def run_prefill(request: Request) -> tuple[Prefilled, float]:
    """The target's prefill of `request` (prompt hidden states kept when it has a proposer), and its seconds."""
    t0 = time.perf_counter()
    b = request.batch
    video = jax.tree.map(jnp.asarray, b.video)  # models cast pixels to their own dtype
    out = prefill(request.graphdef, request.params, jnp.asarray(b.input_ids), jnp.asarray(b.lengths),
                  jnp.asarray(b.positions), video, capacity=request.capacity, chunk=request.chunk,
                  with_hidden=request.proposer is not None)
    jax.block_until_ready(out.logits)
    return out, time.perf_counter() - t0


def run_decode(request: Request, prefilled: Prefilled, prefill_s: float, proposer) -> GenerateOutput:
    """Decode after `request`'s prefill: autoregressively when `proposer` is None, else speculatively.
    The prefilled cache is donated (consumed)."""
    t1 = time.perf_counter()
    r, p = request, prefilled
    if proposer is None:
        tokens, lengths, _, _ = _decode(r.graphdef, r.params, p.logits, p.cache, r.prompt.rope_delta, r.key,
                                        dataclasses.replace(r.config, tree=None))  # one AR program per tree
        cycles, accepted = lengths - 1, jnp.zeros((r.batch.batch, 0), jnp.int32)
    else:
        tokens, lengths, cycles, accepted, _ = _speculate(r.graphdef, r.params, proposer, r.prompt, p.logits,
                                                          p.hidden, p.cache, r.key, r.config)
    tokens, lengths, cycles, accepted = jax.device_get((tokens, lengths, cycles, accepted))
    return GenerateOutput(np.asarray(tokens), np.asarray(lengths),
                          generation_stats(lengths, cycles, accepted, prefill_s, time.perf_counter() - t1))
