"""Copy candidates (`speculative/copy.py`) on small arrays: the longest suffix match wins, its most recent
earlier occurrence is copied, no match proposes nothing, a full history drops its oldest tokens, and the
history starts from the prompt's text only."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sparrow_jax.generation import PromptState
from sparrow_jax.generation.speculative.copy import CopyConfig, CopyHistory, copy_candidates
from sparrow_jax.sampling import Sampler


# Jitted: one compile per shape instead of one per operation (eager dispatch compiles every op).
append = jax.jit(lambda h, new, count: h.append(new, count))
match = jax.jit(copy_candidates, static_argnums=1)


def history(rows, size=16):
    """A CopyHistory holding `rows` (token lists, ragged)."""
    k = max(map(len, rows))
    tokens = jnp.asarray([r + [0] * (k - len(r)) for r in rows], jnp.int32)
    return append(CopyHistory.create(len(rows), size), tokens, jnp.asarray([len(r) for r in rows], jnp.int32))


def candidates(rows, size=16, **config):
    tokens, valid = match(history(rows, size), CopyConfig(**config))
    return [t[v].tolist() for t, v in zip(np.asarray(tokens), np.asarray(valid))]


def test_longest_match_wins_over_a_more_recent_shorter_one():
    # "1 2 3" occurred at the start (followed by 9 5); "2 3" more recently (followed by 7 8).
    row = [1, 2, 3, 9, 5, 2, 3, 7, 8, 1, 2, 3]
    assert candidates([row], tokens=4, max_match=3) == [[9, 5, 2, 3]]
    assert candidates([row], tokens=4, max_match=2) == [[7, 8, 1, 2]]  # "2 3" alone: its latest occurrence


def test_most_recent_occurrence_and_its_periodic_continuation():
    # "4 6" occurs ending at 1 and at 4: the later one is copied; past the history's end the 3 tokens
    # since it repeat ("2 4 6 2"), as the match says the text does.
    assert candidates([[4, 6, 1, 4, 6, 2, 4, 6]], tokens=4, max_match=2) == [[2, 4, 6, 2]]
    # An occurrence overlapping the suffix itself: "5 5" in "3 5 5 5" ends one token back: period 1.
    assert candidates([[3, 5, 5, 5]], tokens=3, max_match=2) == [[5, 5, 5]]


def test_a_long_match_proposes_the_deep_copies_too():
    # Row 0's last 3 tokens (7 8 9) occurred before: a long match, M + deep = 5 copies; row 1's longest
    # match is 1 token (4): M = 2 copies only; deep_match 2 makes row 2's 2-token match long.
    rows = [[7, 8, 9, 1, 2, 3, 4, 7, 8, 9], [5, 4, 6, 4], [1, 2, 6, 1, 2]]
    assert candidates(rows, tokens=2, max_match=3, deep=3) == [[1, 2, 3, 4, 7], [6, 4], [6, 1]]
    assert candidates(rows, tokens=2, max_match=3, deep=3, deep_match=2) == [[1, 2, 3, 4, 7], [6, 4],
                                                                             [6, 1, 2, 6, 1]]


def test_no_match_proposes_nothing_and_rows_are_independent():
    rows = [[1, 2, 3, 4, 5], [7, 1, 7], [8], [2, 9, 4, 2, 9]]
    tokens, valid = match(history(rows), CopyConfig(tokens=3, max_match=2))
    assert np.asarray(valid).tolist() == [[False] * 3, [True] * 3, [False] * 3, [True] * 3]
    assert np.asarray(tokens)[0].tolist() == [0, 0, 0]  # invalid copies carry token 0, a real id
    assert np.asarray(tokens)[1].tolist() == [1, 7, 1] and np.asarray(tokens)[3].tolist() == [4, 2, 9]
    # min_match 2: the one-token match of row 1 no longer counts.
    assert candidates(rows, tokens=3, max_match=2, min_match=2) == [[], [], [], [4, 2, 9]]


def test_a_full_history_drops_its_oldest_tokens():
    h = history([[1, 2, 3, 4]], size=6)
    h = append(h, jnp.asarray([[5, 6, 7, 0]], jnp.int32), jnp.asarray([3]))  # one more than fits
    assert np.asarray(h.tokens).tolist() == [[2, 3, 4, 5, 6, 7]] and int(h.length[0]) == 6
    h = append(h, jnp.asarray([[1, 2, 0]], jnp.int32), jnp.asarray([2]))
    assert np.asarray(h.tokens).tolist() == [[4, 5, 6, 7, 1, 2]]
    # "1 2" now occurs only where it was dropped: no match; "2" neither.
    tokens, valid = match(h, CopyConfig(tokens=2, max_match=2))
    assert not np.asarray(valid).any()
    h = append(h, jnp.asarray([[5, 9]], jnp.int32), jnp.asarray([1]))  # ... 1 2 5: "5" occurred, before 6 7
    tokens, valid = match(h, CopyConfig(tokens=2, max_match=2))
    assert np.asarray(tokens)[np.asarray(valid)].tolist() == [6, 7]


def test_the_history_starts_from_the_prompt_text_and_the_first_token():
    video = 120
    ids = jnp.asarray([[11, 12, video, video, video, 13, 0, 0], [21, video, video, 22, 23, 24, 25, 0]])
    index = jnp.asarray([[0, 1, 5, 5], [0, 3, 4, 5]])  # text positions, padded by repeating the last
    prompt = PromptState(ids, jnp.zeros(2, jnp.int32), jnp.ones(2, jnp.int32), Sampler.of(), index,
                         jnp.asarray([3, 4]))
    h = jax.jit(CopyHistory.of_prompt, static_argnums=2)(prompt, jnp.asarray([14, 26]), 8)
    assert np.asarray(h.length).tolist() == [4, 5]
    assert np.asarray(h.tokens).tolist() == [[11, 12, 13, 14, -1, -1, -1, -1], [21, 22, 23, 24, 26, -1, -1, -1]]


@pytest.mark.parametrize("config,message", [
    (dict(tokens=0), "copy tokens must be >= 1"),
    (dict(min_match=3, max_match=2), "1 <= min_match <= max_match, got min_match=3 max_match=2"),
    (dict(max_match=4, history=4), "copy history 4 must exceed max_match 4"),
    (dict(deep=-1), "copy deep must be >= 0"),
    (dict(deep=4, deep_match=5, max_match=4), r"deep_match 5 must lie in \[min_match, max_match\] = \[1, 4\]"),
])
def test_bad_copy_settings_are_clear_errors(config, message):
    with pytest.raises(ValueError, match=message):
        CopyConfig(**config)
    with pytest.raises(ValueError, match="copy must be a CopyConfig or an int"):
        CopyConfig.of("8")
