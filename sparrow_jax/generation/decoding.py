"""Running a `Request`: the jitted prefill, then one jitted `lax.while_loop` that decodes autoregressively
or speculatively (with a proposer, see `generation.speculative`).

The two stages are separate jits (the cache is donated from one to the other) so that prefill and
decoding times are measured honestly; within decoding there is no host round trip per token.
"""

from __future__ import annotations

import dataclasses
import time
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from sparrow_jax.generation import autoregressive
from sparrow_jax.generation.prefill import prefill
from sparrow_jax.generation.setup import Request
from sparrow_jax.generation.speculative import loop
from sparrow_jax.generation.speculative.tree import HybridShape
from sparrow_jax.generation.state import DecodeConfig, GenerateOutput, Prefilled, PromptState, generation_stats
from sparrow_jax.sharding import on_mesh, put_rows


@partial(jax.jit, static_argnames=("graphdef", "config"), donate_argnames=("cache",))
def _decode(graphdef, params, prompt: PromptState, logits, cache, key, config: DecodeConfig):
    target = nnx.merge(graphdef, params)
    s = autoregressive.start(logits, cache, prompt, key=key, config=config)
    s = autoregressive.decode(target, s, config)
    # Returning the cache lets XLA alias it with the donated input: one cache in memory, not two.
    return s.tokens, s.lengths, s.step, s.cache


@partial(jax.jit, static_argnames=("graphdef", "config"), donate_argnames=("cache",))
def _speculate(graphdef, params, proposer, prompt: PromptState, logits, hidden, cache, key, config: DecodeConfig):
    target = nnx.merge(graphdef, params)
    s = loop.start(target, proposer, prompt, logits=logits, hidden=hidden, cache=cache, key=key, config=config)
    s = loop.decode(target, proposer, s, config)
    return s.tokens, s.n_out, loop.record(s), s.cache


def run_prefill(request: Request) -> tuple[Prefilled, float]:
    """The target's prefill of `request` (prompt hidden states kept when its proposer reads them), and its seconds."""
    t0 = time.perf_counter()
    b = request.batch
    # Models cast pixels to their own dtype. On a mesh rows go over `data` (every [B, ...] array).
    ids, lengths, positions, video = put_rows(jax.tree.map(jnp.asarray, (b.input_ids, b.lengths, b.positions, b.video)),
                                              request.mesh, b.batch)
    with on_mesh(request.mesh):  # the cache is created sharded inside (`kv_cache.LAYOUT`)
        out = prefill(request.graphdef, request.params, ids, lengths, positions, video, capacity=request.capacity,
                      chunk=request.chunk,
                      with_hidden=request.proposer is not None and getattr(request.proposer, "needs_hidden", True))
    jax.block_until_ready(out.logits)
    return out, time.perf_counter() - t0


def run_decode(request: Request, prefilled: Prefilled, prefill_s: float, proposer) -> GenerateOutput:
    """Decode after `request`'s prefill: autoregressively when `proposer` is None, else speculatively.
    The prefilled cache is donated (consumed)."""
    t1 = time.perf_counter()
    r, p = request, prefilled
    with on_mesh(r.mesh):
        tokens, lengths, record = _run_decode(r, p, proposer)
    tokens, lengths, record = jax.device_get((tokens, lengths, record))
    stats = decode_stats(r, proposer, tokens, lengths, record, prefill_s, time.perf_counter() - t1)
    return GenerateOutput(np.asarray(tokens)[:, : r.max_new_tokens], np.asarray(lengths), stats)


def decode_stats(r: Request, proposer, tokens, lengths, record: dict | None, prefill_s: float,
                 decode_s: float) -> dict:
    """The statistics of `r`'s decoding (host arrays): `record` is `loop.record`'s when `proposer` drafted,
    None for autoregressive decoding (every token its own step)."""
    if proposer is None:
        record = {"cycles": np.asarray(lengths) - 1, "accepted": np.zeros((len(lengths), 0), np.int32)}
    return generation_stats(lengths, record, prefill_s, decode_s, tokens=tokens,
                            hybrid=isinstance(r.config.tree, HybridShape) and proposer is not None,
                            choice=None if proposer is None else r.choice)


def _run_decode(r: Request, p: Prefilled, proposer):
    if proposer is None:
        tokens, lengths, _, _ = _decode(r.graphdef, r.params, r.prompt, p.logits, p.cache, r.key,
                                        dataclasses.replace(r.config, tree=None))  # one AR program per tree
        record = None
    else:
        tokens, lengths, record, _ = _speculate(r.graphdef, r.params, proposer, r.prompt, p.logits, p.hidden,
                                                p.cache, r.key, r.config)
    return tokens, lengths, record
