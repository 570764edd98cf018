"""The Engine: compiled programs reused across requests whose sampling values, token limits and stop tokens differ,
HF-style generation settings (generation_config.json defaults, do_sample), HF's repetition penalty
(against HF generate, and lossless with a draft), decoded text in the outputs."""

import json

import numpy as np
import pytest
import torch
from helpers import make_draft, random_video, video_prompt

from sparrow_jax.errors import UserError
from sparrow_jax.generation import Engine, GenerationConfig, TreeShape, decoding, generate
from sparrow_jax.generation.speculative.oracle import OracleProposer


@pytest.fixture(scope="module")
def one():
    rng = np.random.default_rng(21)
    pix_t, pix = random_video(rng, 1, 2)
    return [video_prompt(rng, 2, 5, 6)], pix_t, pix


def test_other_sampling_values_and_limits_reuse_the_compiled_programs(llava, one):
    prompts, _, pix = one
    target = llava[3]
    for draft, jitted in ((None, decoding._decode), (make_draft(target, window=8), decoding._speculate)):
        engine = Engine(target, draft, tree=TreeShape.chain(2))
        engine.generate(prompts, pix, temperature=0.7, top_p=0.9, top_k=3, seed=1, max_new_tokens=10,
                        eos_token_id=[3, 4])
        before = jitted._cache_size()
        out = engine.generate(prompts, pix, temperature=1.3, top_p=0.5, top_k=4, seed=2, max_new_tokens=14,
                              repetition_penalty=1.0)
        assert jitted._cache_size() == before  # same power-of-two top-k width, token bucket 16, stop-id slots
        assert out.stats["compile_s"] == 0  # nothing traced or compiled: the phase timings are all run time
        assert out.tokens.shape == (1, 14) and out.lengths[0] == 14


def test_generation_config_follows_hf_rules(llava, one, tmp_path):
    prompts, _, pix = one
    target = llava[3]
    greedy = generate(target, prompts, pix, max_new_tokens=8).token_ids()
    # do_sample=False decodes greedily whatever the temperature; explicit arguments win over the config.
    cfg = {"do_sample": False, "temperature": 0.9, "max_new_tokens": 3, "transformers_version": "5.23.0"}
    assert generate(target, prompts, pix, generation_config=cfg, max_new_tokens=8).token_ids() == greedy
    assert generate(target, prompts, pix, generation_config=cfg).token_ids() == [greedy[0][:3]]
    # A checkpoint's generation_config.json gives an engine its defaults.
    ckpt = tmp_path / "ckpt"
    (ckpt / "tokenizer").mkdir(parents=True)
    (ckpt / "tokenizer" / "generation_config.json").write_text(json.dumps({"max_new_tokens": 5, "eos_token_id": 7}))
    defaults = GenerationConfig.from_checkpoint(ckpt)
    assert (defaults.max_new_tokens, defaults.eos_token_id) == (5, 7)
    assert Engine(target, generation_config=defaults).generate(prompts, pix).token_ids() == [
        greedy[0][: greedy[0].index(7) + 1] if 7 in greedy[0][:5] else greedy[0][:5]]
    assert GenerationConfig(do_sample=True).sampling() == {"temperature": 1.0, "top_k": 50, "top_p": 1.0}
    with pytest.raises(ValueError, match="num_beams=4 is not supported"):
        GenerationConfig.from_dict({"num_beams": 4})
    with pytest.raises(TypeError, match="unknown generation settings"):
        generate(target, prompts, pix, temprature=0.5)


def test_repetition_penalty_matches_hf_generate(llava, one):
    hf, _, _, ours = llava
    prompts, pix_t, pix = one
    ids = torch.from_numpy(prompts[0][None])
    plain = generate(ours, prompts, pix, max_new_tokens=16).token_ids()
    for penalty in (1.5, 0.7):
        ref = hf.generate(input_ids=ids, attention_mask=torch.ones_like(ids), pixel_values_videos=pix_t,
                          max_new_tokens=16, min_new_tokens=16, do_sample=False, repetition_penalty=penalty,
                          pad_token_id=0)[0, ids.shape[1]:].tolist()
        out = generate(ours, prompts, pix, max_new_tokens=16, repetition_penalty=penalty).token_ids()
        assert out == [ref]
        assert out != plain  # the penalty changed the answer, so the comparison tests it


@pytest.mark.parametrize("tree", [TreeShape.chain(3), TreeShape(3, 2, 8)], ids=["chain3", "tree3x2"])
def test_repetition_penalty_is_lossless_with_a_draft(llava, one, tree):
    """Each tree node is scored with the tokens so far plus its own path's: the draft's output (here an
    oracle proposing the penalised continuation, and a random draft) equals decoding alone."""
    prompts, _, pix = one
    target = llava[3]
    kw = dict(max_new_tokens=12, repetition_penalty=1.8)
    ref = generate(target, prompts, pix, **kw)
    reference = np.append(ref.tokens[0, 1:], [0] * 8)[None].astype(np.int32)
    oracle = OracleProposer(reference, np.zeros(reference.shape, bool), target.lm.config.vocab_size, tree)
    full = generate(target, prompts, pix, draft=oracle, **kw)
    assert full.token_ids() == ref.token_ids() and full.stats["tau"] > 1.5  # the oracle's path is accepted
    drafted = generate(target, prompts, pix, draft=make_draft(target, window=8), tree=tree, **kw)
    assert drafted.token_ids() == ref.token_ids()
    assert drafted.stats["draft_prefill_s"] > 0 and drafted.stats["decode_s"] > 0  # the draft's prefill timed apart


def test_outputs_carry_text_with_a_tokenizer(llava, one):
    prompts, _, pix = one

    class Letters:  # a tokenizer stand-in: one letter per token id
        eos_token_ids, pad_token_id = [], 0

        def decode(self, ids):
            return "".join(chr(97 + i % 26) for i in ids)

    out = Engine(llava[3], tokenizer=Letters()).generate(prompts, pix, max_new_tokens=4)
    assert out.text == [Letters().decode(out.token_ids()[0])] and len(out.text[0]) == 4


def test_a_sampled_row_draws_the_same_alone_or_batched(llava):
    """Every row samples from its own key: a batch given one seed per row gives each row what it gets as a
    one-row request with that seed (the server batches sampled requests of different seeds), with and
    without a draft; and the seeds matter."""
    rng = np.random.default_rng(8)
    _, pix = random_video(rng, 2, 2)
    prompts = [video_prompt(rng, 2, 5, 6), video_prompt(rng, 2, 3, 9)]
    target = llava[3]
    kw = dict(temperature=1.5, max_new_tokens=10, tree=TreeShape.chain(2))
    for draft in (None, make_draft(target, window=8)):
        both = generate(target, prompts, pix, seed=[11, 12], draft=draft, **kw).token_ids()
        alone = [generate(target, [p], pix[i : i + 1], seed=s, draft=draft, **kw).token_ids()[0]
                 for i, (p, s) in enumerate(zip(prompts, [11, 12]))]
        assert both == alone
        assert generate(target, prompts, pix, seed=[12, 11], draft=draft, **kw).token_ids() != both


def first_end(tokens: list, seqs: list) -> int:
    """The length of the shortest prefix of `tokens` that ends with one of `seqs` (len(tokens) if none)."""
    for n in range(1, len(tokens) + 1):
        if any(len(q) <= n and tokens[n - len(q) : n] == q for q in seqs):
            return n
    return len(tokens)


def test_stop_sequences_end_rows_inside_the_loop_lossless_with_a_draft(llava):
    """A row ends once its generated tokens end with one of its stop sequences (each row its own), in the
    autoregressive loop and in verification alike: an oracle proposing a tree through the stop sequence,
    and a random draft's chain, give the autoregressive output."""
    rng = np.random.default_rng(8)
    _, pix = random_video(rng, 2, 2)
    prompts = [video_prompt(rng, 2, 5, 6), video_prompt(rng, 2, 3, 9)]
    target = llava[3]
    full = generate(target, prompts, pix, max_new_tokens=14).token_ids()
    stops = [[full[0][4:6], [target.lm.config.vocab_size - 1]], [full[1][2:3]]]  # mid-output, per row
    want = [row[: first_end(row, s)] for row, s in zip(full, stops)]
    assert all(len(w) < 14 for w in want)
    kw = dict(max_new_tokens=14, stop_sequences=stops)
    assert generate(target, prompts, pix, **kw).token_ids() == want
    reference = np.stack([np.append(r[1:], [0] * 9)[:14] for r in full]).astype(np.int32)
    vocab = target.lm.config.vocab_size
    oracle = OracleProposer(reference, np.zeros(reference.shape, bool), vocab, TreeShape(3, 2, 8))
    spec = generate(target, prompts, pix, draft=oracle, **kw)
    assert spec.token_ids() == want and spec.stats["tau"] > 1.5  # accepted paths ran through the stop
    drafted = generate(target, prompts, pix, draft=make_draft(target, window=8), tree=TreeShape.chain(3), **kw)
    assert drafted.token_ids() == want


def test_stop_strings_through_the_tokenizer(llava, one):
    prompts, _, pix = one

    class Chars:  # a tokenizer stand-in: one character per token id
        eos_token_ids, pad_token_id = [], 0

        def decode(self, ids):
            return "".join(chr(0x100 + i) for i in ids)

        def stop_sequences(self, text):
            return [[ord(c) - 0x100 for c in text]]

    engine = Engine(llava[3], tokenizer=Chars())
    text = engine.generate(prompts, pix, max_new_tokens=12).text[0]
    stop = text[3:5]
    out = engine.generate(prompts, pix, max_new_tokens=12, generation_config={"stop_strings": [stop, chr(0x17f) * 3]})
    assert out.text[0] == text[: text.index(stop) + 2]
    with pytest.raises(UserError, match="stop_strings need the target's tokenizer"):
        Engine(llava[3]).generate(prompts, pix, stop_strings="ab")
