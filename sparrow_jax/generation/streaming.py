"""`stream`: the same generation as `generate`, handed out as tokens are accepted (`infer.stream`).

The jitted prefill is shared with `generate`; decoding runs the very loop body `generate` runs (one
autoregressive step, or one speculative draft-verify cycle), a few iterations per jitted call, driven from
Python so that each call's accepted tokens can be shown at once. The tokens equal `generate`'s exactly
(same body, same random keys); only the host round trip per call is extra.

On one device the decode loop's program is compiled in a background thread while the prefills run (from
their shapes: `decoding.compile_prefill`), so the first tokens are not followed by a stall while it
compiles; `compiling` says whether that is still going on (the CLI shows it), and the stats' `compile_s`
counts it. On a mesh (whose arrays' shardings the shapes do not carry) the first call compiles it.

    s = stream(target, [ids], [video], max_new_tokens=256, draft=draft)
    for new in s:           # new: per row, the token ids accepted since the last step
        ...
    s.output                # GenerateOutput, as generate returns it
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from sparrow_jax import compile_time
from sparrow_jax.generation import autoregressive
from sparrow_jax.generation.decoding import (_spec_begin, compile_prefill, decode_stats, prefill_inputs,
                                             run_prefill, timed)
from sparrow_jax.generation.setup import Request
from sparrow_jax.generation.speculative import loop
from sparrow_jax.generation.state import DecodeConfig, GenerateOutput
from sparrow_jax.sharding import on_mesh


@partial(jax.jit, static_argnames=("config",), donate_argnames=("cache",))
def _ar_begin(prompt, logits, cache, key, config: DecodeConfig):
    return autoregressive.start(logits, cache, prompt, key=key, config=config)


@partial(jax.jit, static_argnames=("graphdef", "config", "steps"), donate_argnames=("s",))
def _ar_advance(graphdef, params, s, config: DecodeConfig, steps: int):
    target = nnx.merge(graphdef, params)
    stop_at = s.step + steps
    return jax.lax.while_loop(lambda s: autoregressive.running(s, config) & (s.step < stop_at),
                              lambda s: autoregressive.step(target, s, config), s)


@partial(jax.jit, static_argnames=("graphdef", "config", "steps"), donate_argnames=("s",))
def _spec_advance(graphdef, params, proposer, s, config: DecodeConfig, steps: int):
    target = nnx.merge(graphdef, params)
    cycle = lambda c: (c[0] + 1, loop.cycle(target, proposer, c[1], config))  # noqa: E731
    return jax.lax.while_loop(lambda c: (c[0] < steps) & loop.running(c[1]), cycle, (jnp.int32(0), s))[1]


class TokenStream:
    """Iterate to decode: each item is, per row, the list of token ids accepted by one jitted call.
    After the iteration, `output` holds the GenerateOutput that `generate` returns."""

    def __init__(self, request: Request, steps: int, finish=None, ahead: bool = True):
        self._request, self._steps, self._finish = request, steps, finish or (lambda out: out)
        self._compile_ahead = ahead and request.mesh is None
        self.output: GenerateOutput | None = None
        self.prefill_s: float | None = None
        self._ahead = None  # the decode loop's compile in the background: its future (seconds compiling)

    @property
    def compiling(self) -> bool:
        """Whether the decode loop is still compiling in the background (the next item waits for it)."""
        return self._ahead is not None and not self._ahead.done()

    def __iter__(self):
        r = self._request
        config, max_new = r.config, r.max_new_tokens
        # The stages' calls, each written once: the background compile lowers exactly the call made later.
        if r.proposer is None:
            begin = lambda p: _ar_begin(r.prompt, p.logits, p.cache, r.key, config=config)  # noqa: E731
            advance, args, count = _ar_advance, (r.graphdef, r.params), (lambda s: s.lengths)
        else:
            begin = lambda p: _spec_begin(r.graphdef, r.params, r.proposer, r.prompt, p.logits,  # noqa: E731
                                          p.hidden, p.cache, r.key, config=config)
            advance, args, count = _spec_advance, (r.graphdef, r.params, r.proposer), (lambda s: s.n_out)
        step = lambda s: advance(*args, s, config=config, steps=self._steps)  # noqa: E731
        prefill_compile_s = 0.0
        if self._compile_ahead and _first_of_its_kind(r, self._steps):
            # The prefill is compiled first, then the loop's compile starts beside the prefill's run: started
            # before, on this 2-core box, the two compiles contended (Python's lock, both cores) and the
            # first tokens of the demo came at 4.4-5.5 s instead of 2.0 s.
            with compile_time.clock() as compiling:
                shapes = compile_prefill(r)
            prefill_compile_s = compiling.seconds
            self._ahead = compile_time.in_background(lambda: advance.lower(  # from the loop state's shapes
                *args, jax.eval_shape(begin, shapes), config=config, steps=self._steps).compile())
        p, self.prefill_s = run_prefill(r)
        # Each jitted call runs on the request's mesh; the context never stays set across a `yield`. Each is
        # timed (`timed`: its run, and its compiling apart); the time the consumer takes between items is not.
        with on_mesh(r.mesh):
            s, begin_s, compile_s = timed(lambda: begin(p))
        decode_s, draft_s = (begin_s, 0.0) if r.proposer is None else (0.0, begin_s)

        def advance_once(s):
            with on_mesh(r.mesh):
                return step(s)

        shown = [0] * r.batch.batch
        while True:
            tokens, n, done = jax.device_get((s.tokens, count(s), s.done))
            yield [tokens[i, shown[i] : n[i]].tolist() for i in range(len(shown))]
            shown = n.tolist()
            if done.all() or (r.proposer is None and int(s.step) >= max_new):
                break
            if self._ahead is not None:  # the loop compiling in the background: wait for it (once), not timed
                compile_s += self._ahead.result()
                self._ahead = None
            s, run_s, comp_s = timed(lambda s=s: advance_once(s))
            decode_s, compile_s = decode_s + run_s, compile_s + comp_s
        record = None if r.proposer is None else jax.device_get(loop.record(s))
        stats = decode_stats(r, r.proposer, tokens, n, record, self.prefill_s, decode_s, draft_s,
                             prefill_compile_s + p.compile_s + compile_s)
        tokens = tokens[:, :max_new]
        self.output = self._finish(GenerateOutput(tokens, n, stats))


_seen: set = set()  # the requests' kinds whose programs were compiled ahead


def _first_of_its_kind(r: Request, steps: int) -> bool:
    """Whether no earlier stream compiled ahead for a request of `r`'s shapes and settings (then its programs
    are in JAX's caches already). Skipping the work for a repeat saves ~9 ms of a warm demo stream's 45 ms
    to its first tokens (mostly the background thread's tracing holding Python's lock); the key costs 0.2."""
    leaves, tree = jax.tree.flatten((r.params, r.proposer, r.prompt, r.key, prefill_inputs(r.batch)))
    kind = (r.graphdef, r.config, steps, r.capacity, r.chunk, tree,
            tuple((np.shape(x), x.dtype if hasattr(x, "dtype") else np.result_type(x),
                   getattr(x, "weak_type", False)) for x in leaves))
    if kind in _seen:
        return False
    if len(_seen) > 4096:  # a long-running server's bound; forgetting only costs a repeat of the work
        _seen.clear()
    _seen.add(kind)
    return True
