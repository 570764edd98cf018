"""`infer.stream` hands out exactly the tokens `infer.generate` returns (autoregressive and speculative,
greedy and sampling, ragged rows, EOS), a jitted call at a time, its decode loop compiled in the background
while the prefill runs; the terminal holds the first tokens while that compile is still going on."""

import numpy as np
import pytest
from helpers import make_draft, random_video, video_prompt

import infer
from infer.terminal import show_stream
from sparrow_jax import compile_time
from sparrow_jax.generation.speculative.tree import TreeShape

MAX_NEW = 12


@pytest.fixture(scope="module")
def batch():
    rng = np.random.default_rng(3)
    _, pix = random_video(rng, 2, 2)
    return [video_prompt(rng, 2, 4, 7), video_prompt(rng, 2, 6, 2)], pix


def streamed(s):
    """The rows' tokens, and the seconds this thread spent compiling after the first item: none, as the
    stream's decode loop (a program no earlier test in this module compiled) was compiled in the background."""
    items = iter(s)
    rows = [list(toks) for toks in next(items)]  # the prefills ran and compiled in this thread
    with compile_time.clock() as rest:
        for new in items:
            for r, toks in zip(rows, new):
                r.extend(toks)
    return rows, rest.seconds


@pytest.mark.parametrize("kind", ["autoregressive", "sampled", "tree"])
def test_stream_equals_generate(llava, batch, kind, monkeypatch):
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
    got, compiled_after_first = streamed(s)
    assert got == ref.token_ids()
    assert compiled_after_first == 0 and s.output.stats["compile_s"] > 0  # the background's compile counted
    ahead = []  # a repeat finds its programs compiled: no work in the background
    monkeypatch.setattr(compile_time, "in_background", lambda work: ahead.append(work))
    again = infer.stream(target, *batch, eos_token_id=eos, steps_per_call=2 if kind == "tree" else 1, **kw)
    assert streamed(again) == (ref.token_ids(), 0) and ahead == []
    assert s.output.token_ids() == ref.token_ids()
    for key in ("new_tokens", "cycles", "tau", "acceptance"):
        assert s.output.stats[key] == ref.stats[key], key


class _Stream:
    """A stream whose decode loop is still compiling when its first tokens come."""

    def __init__(self, out):
        self.compiling, self.out = True, out

    def __iter__(self):
        yield [[0, 1]]
        assert self.out.readouterr().out == ""  # held while the loop compiled
        self.compiling = False
        yield [[2]]


def test_terminal_holds_the_first_tokens_while_the_loop_compiles(capsys):
    show_stream(_Stream(capsys), lambda ids: "".join("abc"[i] for i in ids), "prefill", quiet=True)
    assert capsys.readouterr().out == "abc\n"


def test_first_call_bench_runs_both_settings(capsys):
    """`infer.bench first-call` on the smallest setting: one fresh process per setting, a row each."""
    from infer.bench_first_call import main

    assert main(["--frames", "8", "--runs", "1", "--new-tokens", "6"]) == 0
    rows = [r.split("|")[1:-1] for r in capsys.readouterr().out.splitlines() if r.startswith("| 8 |")]
    assert [r[2].strip() for r in rows] == ["on its first call", "in the background"]
    for r in rows:
        first, total = (float(cell.split()[0]) for cell in (r[3], r[5]))
        assert 0 < first <= total
