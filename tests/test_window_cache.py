"""The draft's VATA window cache on its own: slot layout (pinned, ring, scratch, trash), which committed
entries a query sees, committing with padding, and writes that touch only their slots."""

import jax.numpy as jnp
import numpy as np

from sparrow_jax.config import DraftConfig, TextConfig
from sparrow_jax.generation.speculative.window_cache import WindowCache

PINNED, WINDOW, MAX_WRITE, SCRATCH = 2, 3, 2, 4  # ring R = W + M = 5; slots 2 + 5 + 4 + 1 = 12


def make(batch=2):
    layers = TextConfig(vocab_size=16, hidden_size=8, intermediate_size=16, num_layers=2, num_heads=2,
                        num_kv_heads=1, head_dim=4)
    return WindowCache.create(DraftConfig(layers, window=WINDOW, pinned=PINNED), batch, MAX_WRITE, SCRATCH,
                              jnp.float32)


def commit(cache, valid):
    """Commit entries per row (valid [B, n]); returns the cache with positions recorded and count advanced."""
    valid = jnp.asarray(valid)
    slots, positions, cache = cache.commit_slots(valid.shape[1], valid)
    return slots, positions, cache.replace(count=cache.count + valid.sum(1, dtype=jnp.int32))


def test_slot_layout_and_ring_positions():
    c = make()
    assert c.k.shape == (2, 2, 1, 12, 4) and (c.ring, c.trash) == (5, 11)
    p = jnp.arange(14)
    expected = [0, 1] + [2 + (i - 2) % 5 for i in range(2, 14)]  # pinned, then the ring wraps every 5
    np.testing.assert_array_equal(c.ring_slot(p), expected)


def test_commit_places_valid_entries_and_sends_padding_to_trash():
    c = make()
    slots, positions, c = commit(c, [[True, True, True], [True, False, False]])
    np.testing.assert_array_equal(positions, [[0, 1, 2], [0, 1, 2]])
    np.testing.assert_array_equal(slots, [[0, 1, 2], [0, c.trash, c.trash]])
    np.testing.assert_array_equal(c.count, [3, 1])
    np.testing.assert_array_equal(c.pos[:, :3], [[0, 1, 2], [0, -1, -1]])
    # Row 1's next commit starts at its own count: positions 1, 2.
    slots, positions, c = commit(c, [[True, True], [True, True]])
    np.testing.assert_array_equal(positions, [[3, 4], [1, 2]])
    np.testing.assert_array_equal(slots, [[3, 4], [1, 2]])


def test_query_sees_pinned_and_the_last_window_positions_only():
    c = make(batch=1)
    for _ in range(6):  # positions 0 .. 11: the ring (slots 2..6) has wrapped
        _, _, c = commit(c, [[True, True]])
    q = jnp.asarray([[11, 9]])
    vis = np.asarray(c.ring_visible(q))  # [1, 2, S + R]
    held = np.asarray(c.pos[0])
    for j, qj in enumerate([11, 9]):
        seen = set(held[vis[0, j]].tolist())
        # Pinned 0, 1 and the window (q - W, q] among what the ring still holds (positions 7..11).
        want = {0, 1} | {p for p in range(qj - WINDOW + 1, qj + 1) if p in set(held.tolist())}
        assert seen == want
    assert set(held[PINNED:].tolist()) == {7, 8, 9, 10, 11}  # the ring keeps the last R = 5 positions


def test_mask_adds_the_ancestors_scratch_slots_never_the_trash():
    c = make(batch=1)
    _, _, c = commit(c, [[True, True]])
    scratch = jnp.asarray([[[True, False, True, False]]])
    m = np.asarray(c.mask(jnp.asarray([[2]]), scratch))
    assert m.shape == (1, 1, 12)
    np.testing.assert_array_equal(m[0, 0, :2], [True, True])
    np.testing.assert_array_equal(m[0, 0, 7:11], [True, False, True, False])
    assert not m[0, 0, 2:7].any() and not m[0, 0, 11]
    view = c.view(jnp.asarray([[2]]), scratch)
    np.testing.assert_array_equal(view.mask, m)
    assert view.at(1).layer == 1 and view.k is c.k


def test_write_touches_only_the_given_slots():
    c = make()
    rows_slots = [[3, 9], [0, 11]]
    slots = jnp.asarray(rows_slots)
    new = jnp.arange(2 * 2 * 2 * 1 * 4, dtype=jnp.float32).reshape(2, 2, 2, 1, 4) + 1  # [L, B, N, Hkv, D]
    w = c.write(new, -new, slots)
    k = np.asarray(w.k)
    for b in range(2):
        for i, s in enumerate(rows_slots[b]):
            np.testing.assert_array_equal(k[:, b, 0, s], np.asarray(new[:, b, i, 0]))
            np.testing.assert_array_equal(np.asarray(w.v)[:, b, 0, s], -np.asarray(new[:, b, i, 0]))
    untouched = np.ones(k.shape[:4], bool)
    for b in range(2):
        untouched[:, b, :, rows_slots[b]] = False
    assert not k[untouched].any()
