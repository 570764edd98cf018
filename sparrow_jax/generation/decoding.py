"""Running a `Request`: the jitted prefill, then one jitted `lax.while_loop` that decodes autoregressively
or speculatively (with a proposer, see `generation.speculative`).

The stages are separate jits (the cache is donated from one to the next) so that each is timed apart: the
target's prefill, the draft's prefill (`_spec_begin`: the proposer's `start`, e.g. the draft's window cache
over the prompt's text), and decoding; within decoding there is no host round trip per token. Compiling is
timed apart too (`compile_time`; stat `compile_s`): the phase timings are the programs' runs.
"""

from __future__ import annotations

import dataclasses
import time
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from sparrow_jax import aot, compile_time
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
def _spec_begin(graphdef, params, proposer, prompt: PromptState, logits, hidden, cache, key,
                config: DecodeConfig) -> loop.SpecState:
    """The speculative loop's state after the target's prefill: the first token, the draft prefilled."""
    return loop.start(nnx.merge(graphdef, params), proposer, prompt, logits=logits, hidden=hidden, cache=cache,
                      key=key, config=config)


@partial(jax.jit, static_argnames=("graphdef", "config"), donate_argnames=("cache",))
def _speculate(graphdef, params, proposer, s: loop.SpecState, cache, config: DecodeConfig):
    """Speculative decoding from `_spec_begin`'s state `s`, its target cache passed apart (`cache`, donated:
    the rest of the state has no output to alias)."""
    s = loop.decode(nnx.merge(graphdef, params), proposer, s.replace(cache=cache), config)
    return s.tokens, s.n_out, loop.record(s), s.cache


def run_prefill(request: Request) -> tuple[Prefilled, float]:
    """The target's prefill of `request` (prompt hidden states kept when its proposer reads them), and its
    seconds, compiling excluded (that is `Prefilled.compile_s`)."""
    # Models cast pixels to their own dtype. On a mesh rows go over `data` (every [B, ...] array).
    inputs = put_rows(jax.tree.map(jnp.asarray, prefill_inputs(request.batch)), request.mesh, request.batch.batch)
    with on_mesh(request.mesh):  # the cache is created sharded inside (`kv_cache.LAYOUT`)
        out, seconds, compile_s = timed(lambda: prefill(request.graphdef, request.params, *inputs,
                                                        **_prefill_options(request)))
    return out.replace(compile_s=compile_s), seconds


def compile_prefill(request: Request) -> Prefilled:
    """Compile `request`'s prefill (one device) without running it, and return its result as shapes
    (ShapeDtypeStruct leaves). JAX keeps the program by argument shapes, so `run_prefill` then compiles
    nothing: a caller can start compiling what follows in the background before the prefill runs."""
    args = (request.graphdef, request.params, *aot.shape_of(prefill_inputs(request.batch)))
    prefill.lower(*args, **_prefill_options(request)).compile()
    return prefill.eval_shape(*args, **_prefill_options(request))  # the trace lower made, reused


def prefill_inputs(b) -> tuple:
    """The prefill's array arguments from a PromptBatch `b` (host arrays)."""
    return b.input_ids, b.lengths, b.positions, b.video


def _prefill_options(r: Request) -> dict:
    with_hidden = r.proposer is not None and getattr(r.proposer, "needs_hidden", True)
    return dict(capacity=r.capacity, chunk=r.chunk, with_hidden=with_hidden)


def timed(call):
    """(`call()`'s result, ready; the seconds it ran; the seconds it spent compiling, apart: `compile_time`)."""
    with compile_time.clock() as compiling:
        t0 = time.perf_counter()
        out = jax.block_until_ready(call())
        wall = time.perf_counter() - t0
    return out, wall - compiling.seconds, compiling.seconds


def run_decode(request: Request, prefilled: Prefilled, prefill_s: float, proposer) -> GenerateOutput:
    """Decode after `request`'s prefill: autoregressively when `proposer` is None, else speculatively.
    The prefilled cache is donated (consumed)."""
    r, p = request, prefilled
    with on_mesh(r.mesh):
        if proposer is None:
            (tokens, lengths, _, _), decode_s, compile_s = timed(lambda: _decode(
                r.graphdef, r.params, r.prompt, p.logits, p.cache, r.key,
                dataclasses.replace(r.config, tree=None)))  # one AR program per tree
            record, draft_s = None, 0.0
        else:
            s, draft_s, begin_compile = timed(lambda: _spec_begin(r.graphdef, r.params, proposer, r.prompt, p.logits,
                                                                  p.hidden, p.cache, r.key, r.config))
            (tokens, lengths, record, _), decode_s, compile_s = timed(lambda: _speculate(
                r.graphdef, r.params, proposer, s.replace(cache=None), s.cache, r.config))
            compile_s += begin_compile
    tokens, lengths, record = jax.device_get((tokens, lengths, record))
    stats = decode_stats(r, proposer, tokens, lengths, record, prefill_s, decode_s, draft_s, p.compile_s + compile_s)
    return GenerateOutput(np.asarray(tokens)[:, : r.max_new_tokens], np.asarray(lengths), stats)


def decode_stats(r: Request, proposer, tokens, lengths, record: dict | None, prefill_s: float,
                 decode_s: float, draft_prefill_s: float = 0.0, compile_s: float = 0.0) -> dict:
    """The statistics of `r`'s decoding (host arrays): `record` is `loop.record`'s when `proposer` drafted,
    None for autoregressive decoding (every token its own step)."""
    if proposer is None:
        record = {"cycles": np.asarray(lengths) - 1, "accepted": np.zeros((len(lengths), 0), np.int32)}
    return generation_stats(lengths, record, prefill_s, decode_s, draft_prefill_s=draft_prefill_s,
                            compile_s=compile_s, tokens=tokens,
                            hybrid=isinstance(r.config.tree, HybridShape) and proposer is not None,
                            choice=None if proposer is None else r.choice)

