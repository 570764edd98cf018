"""`infer.stream` hands out exactly the tokens `infer.generate` returns (autoregressive and speculative,
greedy and sampling, ragged rows, EOS), a jitted call at a time."""

import numpy as np
import pytest
from helpers import make_draft, random_video, video_prompt

import infer
from sparrow_jax.generation.speculative.tree import TreeShape

MAX_NEW = 12


@pytest.fixture(scope="module")
def batch():
    rng = np.random.default_rng(3)
    _, pix = random_video(rng, 2, 2)
    return [video_prompt(rng, 2, 4, 7), video_prompt(rng, 2, 6, 2)], pix


def streamed(s):
    rows = None
    for new in s:
        rows = [[] for _ in new] if rows is None else rows
        for r, toks in zip(rows, new):
            r.extend(toks)
    return rows


@pytest.mark.parametrize("kind", ["autoregressive", "sampled", "tree"])
def test_stream_equals_generate(llava, batch, kind):
    target = llava[3]
    kw = dict(max_new_tokens=MAX_NEW)
    if kind != "autoregressive" and kind != "sampled":
        kw["draft"] = make_draft(target, window=8)
        kw["tree"] = TreeShape(3, 2, 8)
    if kind.startswith("sampled"):
        kw.update(temperature=0.8, top_k=20, seed=5)
    ref = infer.generate(target, *batch, **kw)
    eos = ref.token_ids()[0][4]  # row 0 stops early, row 1 runs on
    ref = infer.generate(target, *batch, eos_token_id=eos, **kw)
    s = infer.stream(target, *batch, eos_token_id=eos, steps_per_call=2 if kind == "tree" else 1, **kw)
    got = streamed(s)
    assert got == ref.token_ids()
    assert s.output.token_ids() == ref.token_ids()
    for key in ("new_tokens", "cycles", "tau", "acceptance"):
        assert s.output.stats[key] == ref.stats[key], key
