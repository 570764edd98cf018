"""compile_time: the seconds a thread spends compiling, apart from running, and the stats built on it."""

import time

import jax
import jax.numpy as jnp

from sparrow_jax import compile_time


def test_clock_counts_a_compile_once_and_not_the_cached_call():
    f = jax.jit(lambda x: jnp.sin(x) @ jnp.cos(x).T + 1.0)
    x = jnp.ones((64, 64))
    with compile_time.clock() as first:
        t0 = time.perf_counter()
        jax.block_until_ready(f(x))
        wall = time.perf_counter() - t0
    with compile_time.clock() as again:
        jax.block_until_ready(f(x))
    assert 0 < first.seconds <= wall and again.seconds == 0


def test_nested_spans_are_counted_once():
    c = compile_time.Clock()
    c.spans = [(0.0, 2.0), (0.5, 1.0), (1.5, 3.0), (5.0, 6.0)]
    assert c.seconds == 4.0
