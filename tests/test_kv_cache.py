"""Prefill then extend through the static KV cache equals one full forward (ragged rows, tree masks)."""

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from sparrow_jax.kv_cache import KVCache

CAP = 48


@nnx.jit
def _decode(lm, ids, positions, cache, mask):
    return lm.decode(lm.embed(ids), positions, cache=cache, mask=mask)


def full_hidden(lm, ids):
    ids = jnp.asarray(ids)
    positions = jnp.broadcast_to(jnp.arange(ids.shape[1]), ids.shape)
    return np.asarray(_decode(lm, ids, positions, None, None).hidden)


def empty_cache(lm, batch):
    c = lm.config
    return KVCache.create(c.num_layers, batch, CAP, c.num_kv_heads, c.head_dim, lm.dtype)


def extend(lm, cache, ids, mask=None, positions=None):
    ids = jnp.asarray(ids)
    if positions is None:
        positions = cache.lengths[:, None] + jnp.arange(ids.shape[1])
    out = _decode(lm, ids, jnp.asarray(positions), cache, mask)
    return np.asarray(out.hidden), out.cache


@pytest.mark.parametrize("chunks", [(1,) * 6, (3, 3), (2, 1, 3), (6,)])
def test_prefill_then_extend_equals_full_forward(llava, chunks):
    lm = llava[3].lm
    rng = np.random.default_rng(0)
    prefix = np.array([5, 9])  # ragged rows: each row continues from its own length
    total = prefix.max() + sum(chunks)
    ids = rng.integers(0, 100, (2, total))
    ref = full_hidden(lm, ids)

    cache = empty_cache(lm, 2)
    # Prefill the padded prompt, committing only each row's own length.
    _, cache = extend(lm, cache, ids[:, : prefix.max()])
    cache = cache.replace(lengths=jnp.asarray(prefix, jnp.int32))
    done = prefix.copy()
    for n in chunks:
        chunk = np.stack([ids[b, done[b] : done[b] + n] for b in range(2)])
        hidden, cache = extend(lm, cache, chunk)
        cache = cache.advance(n)
        for b in range(2):
            np.testing.assert_allclose(hidden[b], ref[b, done[b] : done[b] + n], atol=1e-5)
        done += n


def test_masked_tree_extend_matches_each_branch(llava):
    """Tree [a, b1, b2, c] with b1, b2 siblings under a, c under b2: every node equals the plain chain to it."""
    lm = llava[3].lm
    rng = np.random.default_rng(1)
    prompt = rng.integers(0, 100, (1, 7))
    a, b1, b2, c = 11, 22, 33, 44
    mask = jnp.asarray(np.array([[1, 0, 0, 0], [1, 1, 0, 0], [1, 0, 1, 0], [1, 0, 1, 1]], bool)[None])
    depth = np.array([0, 1, 1, 2])

    cache = empty_cache(lm, 1)
    _, cache = extend(lm, cache, prompt)
    cache = cache.advance(7)
    hidden, _ = extend(lm, cache, [[a, b1, b2, c]], mask=mask, positions=7 + depth[None])

    for node, chain in [(0, [a]), (1, [a, b1]), (2, [a, b2]), (3, [a, b2, c])]:
        ref = full_hidden(lm, np.concatenate([prompt, [chain]], axis=1))
        np.testing.assert_allclose(hidden[0, node], ref[0, -1], atol=1e-5)
    # Without the mask, b2 would see b1 and differ: the mask is doing the work.
    unmasked, _ = extend(lm, cache, [[a, b1, b2, c]], positions=7 + depth[None])
    assert np.abs(unmasked[0, 2] - hidden[0, 2]).max() > 1e-3


def test_stale_slots_are_invisible(llava):
    """Entries written past a row's length (rejected tokens) do not change later results."""
    lm = llava[3].lm
    ids = np.random.default_rng(2).integers(0, 100, (1, 6))
    cache = empty_cache(lm, 1)
    _, cache = extend(lm, cache, ids[:, :4])
    clean = cache.advance(4)
    _, dirty = extend(lm, clean, [[1, 2, 3]])  # written, never committed
    h_clean, _ = extend(lm, clean, ids[:, 4:])
    h_dirty, _ = extend(lm, dirty, ids[:, 4:])
    np.testing.assert_array_equal(h_clean, h_dirty)
