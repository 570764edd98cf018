"""Uncached attention over many queries (training rows, long prefills without a cache) runs in query
chunks rematerialised in the backward pass: same values and gradients as the dense form, a fraction
of its memory."""

import jax
import jax.numpy as jnp
import numpy as np

from sparrow_jax import attention


def _inputs(n, s=None, b=2, hq=4, hkv=2, d=16):
    s = s or n
    kq, kk, kv = jax.random.split(jax.random.key(0), 3)
    q = jax.random.normal(kq, (b, n, hq, d))
    k, v = jax.random.normal(kk, (b, s, hkv, d)), jax.random.normal(kv, (b, s, hkv, d))
    lengths = jnp.array([s, s - 37])[:b]
    mask = jnp.tril(jnp.ones((n, s), bool), s - n)[None] & (jnp.arange(s) < lengths[:, None])[:, None]
    return q, k, v, mask


def _loss(fn, q, k, v, mask):
    w = jnp.cos(jnp.arange(q.size, dtype=jnp.float32)).reshape(q.shape)  # a fixed, non-uniform readout
    return jnp.sum(fn(q, k, v, mask, 0.25) * w)


def _dense(q, k, v, mask, scale):
    """The dense form: one chunk as long as the rows."""
    chunk, attention.QUERY_CHUNK = attention.QUERY_CHUNK, q.shape[1]
    try:
        return attention.attend(q, k, v, mask, scale)
    finally:
        attention.QUERY_CHUNK = chunk


def test_chunked_attention_matches_dense_values_and_gradients():
    q, k, v, mask = _inputs(2 * attention.QUERY_CHUNK + 300)  # 3 chunks of 783 (one padded query)
    chunked = jax.jit(jax.value_and_grad(lambda *a: _loss(attention.attend, *a), argnums=(0, 1, 2)))
    dense = jax.jit(jax.value_and_grad(lambda *a: _loss(_dense, *a), argnums=(0, 1, 2)))
    (lc, gc), (ld, gd) = chunked(q, k, v, mask), dense(q, k, v, mask)
    np.testing.assert_allclose(lc, ld, rtol=1e-5)
    for a, b in zip(gc, gd):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    out = attention.attend(q, k, v, None, 0.25)  # no mask: every key visible
    np.testing.assert_allclose(out, _dense(q, k, v, None, 0.25), rtol=1e-5, atol=1e-6)
    # A described causal mask (built per chunk, no [N, N] array) gives what its dense form gives.
    causal = attention.CausalMask(jnp.arange(q.shape[1])[None] < jnp.array([[q.shape[1]], [q.shape[1] - 37]]))
    dense = causal.block(0, q.shape[1], k.shape[1])
    np.testing.assert_array_equal(dense[:, :, :-37], mask[:, :, :-37])  # the same causal rule and row lengths
    np.testing.assert_allclose(attention.attend(q, k, v, causal, 0.25), attention.attend(q, k, v, dense, 0.25),
                               rtol=1e-6, atol=1e-6)


def test_chunked_attention_gradient_needs_a_fraction_of_the_memory():
    q, k, v, mask = _inputs(4096, b=1)

    def temp_bytes(fn):
        grad = jax.jit(jax.grad(lambda *a: _loss(fn, *a), argnums=(0, 1, 2)))
        return grad.lower(q, k, v, mask).compile().memory_analysis().temp_size_in_bytes

    dense, chunked = temp_bytes(_dense), temp_bytes(attention.attend)
    scores = 4 * 4096 * 4096 * 4  # one float32 [heads, N, S] score tensor: 256 MiB
    assert dense >= 2 * scores  # the dense backward holds whole scores / probabilities (measured 808 MB)
    assert chunked <= dense / 3, (chunked, dense)  # 4 chunks of 1024 queries (measured 222 MB)
