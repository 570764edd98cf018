"""The statistics of a speculative decoding (`generation.state.generation_stats`) on a hand-made output
with a known loop: tau counts every token, `tau_novel` not the tokens after a repeated 4-gram, so a
degenerate loop that copies accept whole shows up; cycles are counted by where their tokens came from."""

import numpy as np

from sparrow_jax.generation.speculative.tree import BONUS, BOTH, COPY, DRAFT
from sparrow_jax.generation.state import generation_stats, repeated


def looping_row():
    """(tokens, each token's cycle, its source): 10 distinct tokens in 4 cycles (one accepting only its bonus
    token, one with a token draft and copies both proposed), then a loop of period 4 (20 21 22 23) emitted 8
    tokens a cycle by copies: its first 8 tokens are novel, the 24 after them follow a repeated 4-gram."""
    tokens, cycle, source = [100], [0], [BONUS]  # the prefill's first token
    for c, srcs in enumerate([[], [DRAFT, DRAFT], [DRAFT, BOTH], [DRAFT, DRAFT]], start=1):
        for s in srcs + [BONUS]:
            tokens.append(100 + len(tokens))
            cycle.append(c)
            source.append(s)
    for c in range(5, 9):
        for s in [COPY] * 7 + [BONUS]:
            tokens.append(20 + (len(tokens) - 11) % 4)
            cycle.append(c)
            source.append(s)
    return tokens, cycle, source


def test_repeated_marks_tokens_after_an_earlier_4_gram():
    assert repeated([5, 5, 5, 5, 5, 5]).tolist() == [False] * 5 + [True]
    assert not repeated([1, 2, 3, 4, 1, 2, 3, 5]).any()  # the 4-gram before the 5 is new (1 2 3 4 != 2 3 4 1)
    assert repeated([1, 2, 3, 4, 9, 1, 2, 3, 4, 7]).tolist() == [False] * 9 + [True]


def test_a_loop_inflates_tau_but_not_tau_novel():
    tokens, cycle, source = looping_row()
    assert len(tokens) == 43 and cycle[-1] == 8
    short = [7, 8, 9], [0, 1, 1], [BONUS, DRAFT, BONUS]  # a second row: one cycle of 2 tokens
    width = 48
    pad = lambda rows, fill: np.asarray([r + [fill] * (width - len(r)) for r in rows])  # noqa: E731
    record = {"cycles": np.asarray([8, 1]), "accepted": np.zeros((2, 8), np.int32),
              "token_cycle": pad([cycle, short[1]], 0), "token_source": pad([source, short[2]], BONUS),
              "deep": np.asarray([3, 0])}
    stats = generation_stats(np.asarray([43, 3]), record, 0.1, 1.0, tokens=pad([tokens, short[0]], 0), hybrid=True)
    assert stats["tau"] == (42 + 2) / 9
    # Novel: the 10 tokens of cycles 1-4, the loop's first 8 (cycle 5) and the short row's 2, over 6 cycles.
    assert stats["tau_novel"] == (10 + 8 + 2) / 6 and stats["repeated_tokens"] == 24
    assert stats["accepted_from"] == {"draft": 6, "copy": 28, "both": 1}
    assert stats["cycles_from"] == {"none": 1, "draft": 3, "copy": 4, "both": 1}
    assert stats["deep_cycles"] == 3
    # Without copies in the tree: tau and tau_novel only.
    plain = generation_stats(np.asarray([43, 3]), record, 0.1, 1.0, tokens=pad([tokens, short[0]], 0))
    assert plain["tau_novel"] == stats["tau_novel"] and "cycles_from" not in plain
