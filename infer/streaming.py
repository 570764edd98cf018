"""`infer.stream`: the same generation as `infer.generate`, handed out as tokens are accepted.

The jitted prefill is shared with `generate`; decoding runs the very loop body `generate` runs (one
autoregressive step, or one speculative draft-verify cycle), a few iterations per jitted call, driven from
Python so that each call's accepted tokens can be shown at once. The tokens equal `generate`'s exactly
(same body, same random keys); only the host round trip per call is extra.

    s = infer.stream(target, [ids], [video], max_new_tokens=256, draft=draft)
    for new in s:           # new: per row, the token ids accepted since the last step
        ...
    s.output                # GenerateOutput, as generate returns it
"""

from __future__ import annotations

import time
from functools import partial

import jax
import jax.numpy as jnp
from flax import nnx

from infer.generation import (
    GenerateOutput,
    _ar_running,
    _ar_start,
    _ar_step,
    _run_prefill,
    generation_stats,
    setup_like_generate,
)
from sparrow_jax.spec.loop import spec_cycle, spec_start


@partial(jax.jit, static_argnames=("max_new", "sampling"), donate_argnames=("cache",))
def _ar_begin(logits, cache, stop_ids, key, pad_id, max_new, sampling):
    return _ar_start(logits, cache, stop_ids, key, pad_id, max_new, sampling)


@partial(jax.jit, static_argnames=("graphdef", "max_new", "sampling", "steps"), donate_argnames=("s",))
def _ar_advance(graphdef, state, s, rope_delta, stop_ids, pad_id, max_new, sampling, steps):
    target = nnx.merge(graphdef, state)
    stop_at = s.step + steps
    step = lambda s: _ar_step(target, s, rope_delta, stop_ids, pad_id, sampling)  # noqa: E731
    return jax.lax.while_loop(lambda s: _ar_running(s, max_new) & (s.step < stop_at), step, s)


@partial(jax.jit, static_argnames=("graphdef", "max_new", "sampling"), donate_argnames=("cache",))
def _spec_begin(graphdef, state, proposer, logits, hidden, ids, text_index, text_len, cache, stop_ids, key, pad_id,
                max_new, sampling):
    return spec_start(nnx.merge(graphdef, state), proposer, logits, hidden, ids, text_index, text_len, cache,
                      stop_ids, key, pad_id, max_new, sampling)


@partial(jax.jit, static_argnames=("graphdef", "max_new", "sampling", "steps"), donate_argnames=("s",))
def _spec_advance(graphdef, state, proposer, s, rope_delta, stop_ids, pad_id, max_new, sampling, steps):
    target = nnx.merge(graphdef, state)
    cycle = lambda c: (c[0] + 1, spec_cycle(target, proposer, c[1], rope_delta, stop_ids, pad_id, max_new,  # noqa: E731
                                            sampling))
    return jax.lax.while_loop(lambda c: (c[0] < steps) & ~jnp.all(c[1].done), cycle, (jnp.int32(0), s))[1]


class TokenStream:
    """Iterate to decode: each item is, per row, the list of token ids accepted by one jitted call.
    After the iteration, `output` holds the GenerateOutput that `infer.generate` returns."""

    def __init__(self, run, steps: int):
        self._run, self._max_new, self._steps = run, run.max_new_tokens, steps
        self.output: GenerateOutput | None = None
        self.prefill_s: float | None = None

    def __iter__(self):
        run, max_new = self._run, self._max_new
        logits, cache, hidden, self.prefill_s = _run_prefill(run)
        t1 = time.perf_counter()
        common = (run.stop_ids, run.pad_id, max_new, run.sampling)
        if run.proposer is None:
            s = _ar_begin(logits, cache, run.stop_ids, run.key, run.pad_id, max_new, run.sampling)
            advance = lambda s: _ar_advance(run.graphdef, run.state, s, run.rope_delta, *common,  # noqa: E731
                                            steps=self._steps)
            count = lambda s: s.lengths  # noqa: E731
        else:
            s = _spec_begin(run.graphdef, run.state, run.proposer, logits, hidden, run.ids, run.text_index,
                            run.text_len, cache, run.stop_ids, run.key, run.pad_id, max_new, run.sampling)
            advance = lambda s: _spec_advance(run.graphdef, run.state, run.proposer, s, run.rope_delta,  # noqa: E731
                                              *common, steps=self._steps)
            count = lambda s: s.n_out  # noqa: E731
        shown = [0] * run.batch.batch
        while True:
            tokens, n, done = jax.device_get((s.tokens, count(s), s.done))
            yield [tokens[r, shown[r] : n[r]].tolist() for r in range(len(shown))]
            shown = n.tolist()
            if done.all() or (run.proposer is None and int(s.step) >= max_new):
                break
            s = advance(s)
        if run.proposer is None:
            cycles, accepted = n - 1, jnp.zeros((len(n), 0), jnp.int32)
        else:
            cycles, accepted = jax.device_get((s.cycles, s.accepted))
        tokens = tokens[:, :max_new]
        self.output = GenerateOutput(tokens, n, generation_stats(n, cycles, accepted, self.prefill_s,
                                                                 time.perf_counter() - t1))


def stream(target, prompts, video=None, *, steps_per_call: int = 1, **kwargs) -> TokenStream:
    """`infer.generate` with the same arguments (`kwargs` are generate's keyword arguments), as a TokenStream:
    iterate it to decode, `steps_per_call` tokens (or speculative cycles) per jitted call. Arguments are
    checked here; prefill runs when the iteration starts."""
    if steps_per_call < 1:
        raise ValueError(f"steps_per_call must be >= 1, got {steps_per_call}")
    return TokenStream(setup_like_generate(target, prompts, video, **kwargs), steps_per_call)
