"""Training pieces against hand-computed small cases: IVSB sequence, MTP shifting, masks, losses,
chat-template assistant masks, config parsing, and the data loader's exact resumption."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from train import config as train_config
from train import ivsb
from train.loss import masked_mean, pass_losses, smooth_l1, soft_cross_entropy
from train.tokenizer import ByteChatTokenizer, tokenize_conversation

V = 99  # a visual placeholder
IDS = np.array([[10, 11, V, V, 12, 13, 14, 15]])
VISUAL = IDS == V
ASSISTANT = np.array([[0, 0, 0, 0, 0, 1, 1, 1]], bool)  # x5..x7 are the answer


def test_shifts():
    x = jnp.arange(6)[None]
    assert ivsb.shift_left(x).tolist() == [[1, 2, 3, 4, 5, 0]]
    assert ivsb.shift_left(x, 2, -1).tolist() == [[2, 3, 4, 5, -1, -1]]
    assert ivsb.shift_right(x).tolist() == [[0, 0, 1, 2, 3, 4]]


def test_text_rows_pack_the_text_without_the_video():
    # Row 0: the IVSB row (8 real tokens); row 1: the same with 2 tokens of padding (6 real).
    ids = jnp.asarray(np.concatenate([IDS, [[20, V, V, 21, 22, 0, 0, 0]]]))
    visual, lengths = ids == V, jnp.asarray([8, 6])
    (packed, feats), kept = ivsb.text_rows(visual, lengths, 5, ids, jnp.stack([ids, -ids], -1))
    assert packed.tolist() == [[10, 11, 12, 13, 14], [20, 21, 22, 0, 0]]
    assert feats[..., 1].tolist() == (-packed).tolist()  # trailing axes travel along
    assert kept.tolist() == [5, 4]  # row 0 cut at width 5 (6 text tokens); row 1 keeps its 4 real ones


def test_next_tokens_skip_the_video_in_text_only_mode():
    ids, visual = jnp.asarray(IDS), jnp.asarray(VISUAL)
    assert ivsb.next_tokens(ids, visual, False).tolist() == [[11, V, V, 12, 13, 14, 15, 0]]
    assert ivsb.next_tokens(ids, visual, True).tolist() == [[11, 12, 12, 12, 13, 14, 15, 0]]
    rows = jnp.concatenate([ids, ids]), jnp.concatenate([visual, visual])
    assert ivsb.next_tokens(*rows, jnp.array([True, False])).tolist() == [[11, 12, 12, 12, 13, 14, 15, 0],
                                                                          [11, V, V, 12, 13, 14, 15, 0]]


def test_loss_mask_scores_generated_token_to_next():
    # position t reads token t+1 and predicts t+2: both must be answer tokens -> t = 4, 5
    assert ivsb.loss_mask(jnp.asarray(ASSISTANT)).tolist() == [[0, 0, 0, 0, 1, 1, 0, 0]]


def test_mtp_shiftable_and_hidden():
    shiftable = ivsb.mtp_shiftable(jnp.asarray(ASSISTANT), jnp.asarray(VISUAL))
    assert shiftable.astype(int).tolist() == [[0, 0, 0, 0, 0, 1, 1, 1]]
    # an answer token right after the video keeps the target's state (its predecessor is visual)
    after_video = np.array([[0, 0, 0, 0, 1, 1, 0, 0]], bool)
    assert ivsb.mtp_shiftable(jnp.asarray(after_video), jnp.asarray(VISUAL)).astype(int).tolist() == [[0, 0, 0, 0, 0, 1, 0, 0]]
    h = jnp.arange(8.0)[None, :, None] * 10  # target states 0, 10, ..., 70
    out = jnp.arange(8.0)[None, :, None] + 0.5  # previous pass outputs 0.5, ..., 7.5
    got = ivsb.mtp_hidden(h, out, shiftable)[0, :, 0].tolist()
    assert got == [0, 10, 20, 30, 40, 4.5, 5.5, 6.5]  # o_{t-1} at answer positions, h_t elsewhere


def test_ivsb_inputs_take_mid_layer_states_at_visual_positions():
    fused = jnp.ones((1, 8, 2))
    mid = jnp.full((1, 8, 2), 7.0)
    got = ivsb.ivsb_inputs(fused, mid, jnp.asarray(VISUAL))[0, :, 0].tolist()
    assert got == [1, 1, 7, 7, 1, 1, 1, 1]


def test_attention_masks_and_positions():
    visual, lengths = jnp.asarray(VISUAL), jnp.asarray([6])
    full = np.asarray(ivsb.attention_mask(visual, lengths, False).block(0, 8, 8)[0])
    want = np.tril(np.ones((8, 8), bool))
    want[:, 6:] = False
    want[np.arange(8), np.arange(8)] = True  # padding queries still see themselves
    np.testing.assert_array_equal(full, want)
    text = np.asarray(ivsb.attention_mask(visual, lengths, True).block(0, 8, 8)[0])
    want_text = want.copy()
    want_text[:, 2:4] = False
    want_text[[2, 3], [2, 3]] = True
    np.testing.assert_array_equal(text, want_text)
    assert ivsb.draft_positions(visual, False).tolist() == [list(range(8))]
    assert ivsb.draft_positions(visual, True).tolist() == [[0, 1, 1, 1, 2, 3, 4, 5]]
    # per row: a text-only row and an IVSB row in one batch
    two, rows = jnp.concatenate([visual, visual]), jnp.array([False, True])
    np.testing.assert_array_equal(ivsb.attention_mask(two, jnp.asarray([6, 6]), rows).block(0, 8, 8),
                                  np.stack([want, want_text]))
    assert ivsb.draft_positions(two, rows).tolist() == [list(range(8)), [0, 1, 1, 1, 2, 3, 4, 5]]


def test_losses_by_hand():
    pred, target = jnp.array([[[0.0, 3.0]]]), jnp.array([[[0.5, 0.0]]])
    # SmoothL1 (beta 1): 0.5 * 0.5^2 = 0.125 and 3 - 0.5 = 2.5 -> mean 1.3125
    np.testing.assert_allclose(smooth_l1(pred, target), [[1.3125]])
    logits, tlogits = jnp.log(jnp.array([[[0.25, 0.75]]])), jnp.log(jnp.array([[[0.5, 0.5]]]))
    np.testing.assert_allclose(soft_cross_entropy(logits, tlogits), [[-(0.5 * np.log(0.25) + 0.5 * np.log(0.75))]],
                               rtol=1e-6)


def test_chunked_losses_equal_the_dense_form():
    """`pass_losses` (scored positions first, chunks of 4, the lm_head per chunk, empty chunks skipped) gives
    the dense per-pass losses over full [B, L, V] logits and a shifted copy, values and gradients."""
    rng = np.random.default_rng(0)
    p, b, n, h, v = 2, 3, 24, 8, 40
    outs, hidden = (jnp.asarray(rng.normal(size=s), jnp.float32) for s in ((p, b, n, h), (b, n, h)))
    w = jnp.asarray(rng.normal(size=(h, v)), jnp.float32)
    assistant = np.zeros((b, n), bool)
    assistant[0, 3:20], assistant[1, 10:13] = True, True  # row 2 scores nothing; row 1 only two positions
    mask = ivsb.loss_mask(jnp.asarray(assistant))

    def dense(outs, w):
        nh = ivsb.shift_left(hidden)
        per = [(masked_mean(smooth_l1(o, nh), mask), masked_mean(soft_cross_entropy(o @ w, nh @ w), mask),
                masked_mean((jnp.argmax(o @ w, -1) == jnp.argmax(nh @ w, -1)).astype(jnp.float32), mask))
               for o in outs]
        return {k: jnp.stack(x) for k, x in zip(("feature", "ce", "top1"), zip(*per))}

    def chunked(outs, w):
        return pass_losses(outs, hidden, mask, lambda x: x @ w, chunk=4)

    def both(f):  # jitted: values, and gradients of a weighted sum over passes (each pass's weight differs)
        def scalar(o, w):
            m = f(o, w)
            return jnp.sum((m["feature"] + 0.1 * m["ce"]) * jnp.arange(1, p + 1)), m
        return jax.jit(jax.grad(scalar, (0, 1), has_aux=True))(outs, w)

    (got_g, got), (want_g, want) = both(chunked), both(dense)
    for k in want:
        np.testing.assert_allclose(got[k], want[k], rtol=1e-6, atol=1e-7)
    assert float(want["top1"][0]) not in (0.0, 1.0)  # some agree, some do not
    for g, wg in zip(got_g, want_g):
        assert float(jnp.max(jnp.abs(wg))) > 0
        np.testing.assert_allclose(g, wg, rtol=1e-5, atol=1e-7)


def test_chat_template_assistant_mask():
    from train.data import messages

    tok = ByteChatTokenizer()
    rec = {"conversations": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "ok"},
                             {"role": "user", "content": "?"}, {"role": "assistant", "content": "yes"}]}
    ids, mask = tokenize_conversation(tok, messages(rec, video=True))
    assert tok.decode(ids) == ("<|im_start|>user\n<video>\nhi<|im_end|>\n<|im_start|>assistant\nok<|im_end|>\n"
                               "<|im_start|>user\n?<|im_end|>\n<|im_start|>assistant\nyes<|im_end|>\n")
    assert tok.decode(ids[mask]) == "ok<|im_end|>\nyes<|im_end|>\n"  # content + end of turn, no headers
    assert tok.decode(tok.encode("a\udcff<video>b")) == "a\udcff<video>b"  # any byte sequence round-trips


def test_config_overrides_and_errors(tmp_path):
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"target": {"path": "t"}, "data": {"manifest": "m"}, "workdir": "w"}))
    cfg = train_config.load(path, ["optim.lr=1e-3", "objective.attention=text_only", "mesh.fsdp=2", "steps=7"])
    assert (cfg.optim.lr, cfg.objective.attention, cfg.mesh.fsdp, cfg.steps) == (1e-3, "text_only", 2, 7)
    assert cfg.export == "w/draft" and cfg.regenerate.output == "w/regenerated.jsonl"
    with pytest.raises(train_config.ConfigError, match="unknown config key 'optim.lrr'"):
        train_config.load(path, ["optim.lrr=1"])
    with pytest.raises(train_config.ConfigError, match="steps: expected int"):
        train_config.load(path, ["steps=abc"])
    with pytest.raises(train_config.ConfigError, match="objective.attention must be one of"):
        train_config.load(path, ["objective.attention=all"])
    with pytest.raises(train_config.ConfigError, match=r"objective.text_only_fraction must be in \[0, 1\], got 1.5"):
        train_config.load(path, ["objective.text_only_fraction=1.5"])
    with pytest.raises(train_config.ConfigError, match="objective.text_len=64 needs objective.attention=text_only"):
        train_config.load(path, ["objective.text_len=64"])
    with pytest.raises(train_config.ConfigError, match="key=value"):
        train_config.load(path, ["steps"])


def test_train_print_config_shows_every_setting(tmp_path, capsys):
    """python -m train.main --print-config: every key with its default, or as --config and the overrides set
    it ({workdir} resolved), as JSON that loads back as a config; exit 0, nothing trained."""
    import dataclasses

    from train.main import main

    def leaves(tree, prefix=""):
        return {k for key, v in tree.items()
                for k in (leaves(v, f"{prefix}{key}.") if isinstance(v, dict) else [prefix + key])}

    def fields(cls, prefix=""):  # every key of the config classes; a section's class is its default's
        keys = set()
        for f in dataclasses.fields(cls):
            if dataclasses.is_dataclass(f.default):
                keys |= fields(type(f.default), f"{prefix}{f.name}.")
            else:
                keys.add(prefix + f.name)
        return keys

    assert main(["--print-config"]) == 0
    out, err = capsys.readouterr()
    printed = json.loads(out)
    assert leaves(printed) == fields(train_config.TrainConfig) and len(leaves(printed)) > 50
    assert printed["optim"]["lr"] == 3e-5 and printed["export"] == "runs/default/draft"
    assert err == ("note: training with these settings would stop: target.path is required (a converted target "
                   "checkpoint)\n")

    file = tmp_path / "my.json"
    file.write_text(json.dumps({"workdir": str(tmp_path / "run"), "steps": 7, "target": {"path": "ckpt/t"},
                                "data": {"manifest": "m.jsonl"}}))
    assert main(["--config", str(file), "optim.lr=1e-3", "--print-config", "data.num_frames=[8, 32]",
                 "data.seq_len=[256, 512]"]) == 0
    out, err = capsys.readouterr()
    printed = json.loads(out)
    assert err == "" and not (tmp_path / "run").exists()  # valid, and nothing ran
    assert (printed["steps"], printed["optim"]["lr"], printed["data"]["num_frames"]) == (7, 1e-3, [8, 32])
    assert printed["export"] == f"{tmp_path / 'run'}/draft" and printed["optim"]["b2"] == 0.95  # defaults beside
    (tmp_path / "printed.json").write_text(out)
    assert train_config.to_dict(train_config.load(tmp_path / "printed.json")) == printed  # it loads as a config
    assert main(["--print-config", "optim.lrr=1"]) == 2  # a mistake is still one line
    assert "unknown config key 'optim.lrr'" in capsys.readouterr().err


def _tiny_video_data(tmp_path):
    """(tokenizer, a tiny LLaVA-OV config with 1 token per frame, 10 records of 3-frame videos)."""
    from sparrow_jax.config import LlavaOnevisionConfig, SiglipConfig, TextConfig
    from train import data

    tok = ByteChatTokenizer()
    target_cfg = LlavaOnevisionConfig(
        text=TextConfig(vocab_size=264, hidden_size=16, intermediate_size=32, num_layers=2, num_heads=2,
                        num_kv_heads=1, head_dim=8),
        vision=SiglipConfig(hidden_size=8, intermediate_size=16, num_layers=1, num_heads=1, image_size=14,
                            patch_size=7),
        video_token_id=tok.video_token_id, image_token_id=259)
    rng = np.random.default_rng(0)
    lines = []
    for i in range(10):
        np.save(tmp_path / f"{i}.npy", rng.integers(0, 255, (3, 20, 20, 3), dtype=np.uint8))
        lines.append(json.dumps({"id": str(i), "frames": f"{i}.npy", "conversations": [
            {"from": "human", "value": "q" * i}, {"from": "gpt", "value": "answer"}]}))
    (tmp_path / "m.jsonl").write_text("\n".join(lines))
    return tok, target_cfg, data.read_manifest(tmp_path / "m.jsonl")


def test_encode_expands_video_and_loader_resumes_exactly(tmp_path):
    from train import data

    tok, target_cfg, records = _tiny_video_data(tmp_path)
    dcfg = train_config.DataConfig(manifest="m", seq_len=64, num_frames=2)
    ex = data.encode(records[3], tok, target_cfg, 64, 2)
    n_video = target_cfg.num_video_tokens(2)  # 2 frames x 1 pooled patch + newline = 3
    assert int(np.sum(ex["ids"] == tok.video_token_id)) == n_video == 3
    assert tok.decode(ex["ids"][ex["assistant"]]) == "answer<|im_end|>\n"
    assert ex["video"].shape == (2, 14, 14, 3)
    # Offline mode needs the tokens only: the same layout, the video never read (a missing file is fine).
    layout = data.encode(dict(records[3], frames="gone.npy"), tok, target_cfg, 64, 2, layout_only=True)
    assert layout["video"] is None
    np.testing.assert_array_equal(layout["ids"], ex["ids"])
    np.testing.assert_array_equal(layout["assistant"], ex["assistant"])
    feats = lambda e: dict(e, features=np.zeros((len(e["ids"]), 4), np.float32))  # noqa: E731
    offline, online = (data.collate([feats(e)], target_cfg, 64, tok.pad_id) for e in (layout, ex))
    for k in ("input_ids", "positions", "lengths", "assistant", "visual"):
        np.testing.assert_array_equal(offline[k], online[k])

    it = iter(data.loader(records, tok, target_cfg, dcfg, local_batch=3, seed=5))
    first = [next(it) for _ in range(2)]
    state = it.get_state()
    rest = [next(it) for _ in range(3)]  # crosses an epoch boundary (10 records, 3 per batch)
    assert first[0]["input_ids"].shape == (3, 64) and first[0]["video"].shape == (3, 2, 14, 14, 3)
    it2 = iter(data.loader(records, tok, target_cfg, dcfg, local_batch=3, seed=5))
    it2.set_state(state)
    for a, b in zip(rest, [next(it2) for _ in range(3)]):
        for k in ("input_ids", "assistant", "visual", "lengths"):
            np.testing.assert_array_equal(a[k], b[k])
        np.testing.assert_array_equal(a["video"], b["video"])


def test_records_may_set_their_own_frame_count(tmp_path):
    from train import data

    tok, target_cfg, records = _tiny_video_data(tmp_path)
    records[1]["num_frames"] = records[4]["num_frames"] = 1
    assert data.load_frames(records[1], 3, target_cfg).shape[0] == 1
    assert data.load_frames(records[0], 3, target_cfg).shape[0] == 3
    ids = data.encode(records[1], tok, target_cfg, 64, 3, layout_only=True)["ids"]
    assert int(np.sum(ids == tok.video_token_id)) == target_cfg.num_video_tokens(1)
    # Batches of one frame count each (shortest first), in manifest order within a count.
    assert data.frame_batches(records, 3, 3) == [[1, 4], [0, 2, 3], [5, 6, 7], [8, 9]]
    dcfg = train_config.DataConfig(manifest="m", seq_len=64, num_frames=3)
    with pytest.raises(ValueError, match="need offline features"):
        data.loader(records, tok, target_cfg, dcfg, local_batch=2, seed=0)


def test_load_frames_picks_what_inference_picks(tmp_path):
    """A video file is sampled and resized as `sparrow_jax.video` does for inference; a video shorter than
    num_frames has its frames repeated in order; a frames array is sampled by the same rule."""
    from sparrow_jax.video import Sampling, read_video, write_video
    from train import data

    _, target_cfg, _ = _tiny_video_data(tmp_path)  # 14 x 14 frames
    rng = np.random.default_rng(1)
    clip = rng.integers(0, 255, (5, 4, 4, 3), dtype=np.uint8).repeat(8, axis=1).repeat(8, axis=2)  # 32 x 32
    write_video(tmp_path / "clip.mp4", clip, fps=5)
    np.save(tmp_path / "clip.npy", clip)
    rec = {"video": "clip.mp4", "_base": str(tmp_path)}
    three = data.load_frames(rec, 3, target_cfg)
    want = read_video(tmp_path / "clip.mp4", Sampling(num_frames=3), (14, 14))
    assert want.indices.tolist() == [0, 1, 3]
    np.testing.assert_array_equal(three, want.frames)
    every = read_video(tmp_path / "clip.mp4", Sampling(num_frames=5), (14, 14)).frames
    np.testing.assert_array_equal(data.load_frames(rec, 8, target_cfg), every[[0, 0, 1, 1, 2, 3, 3, 4]])
    arr = data.load_frames({"frames": "clip.npy", "_base": str(tmp_path)}, 3, target_cfg)
    np.testing.assert_array_equal(arr, clip[[0, 1, 3]])  # resized later, by video_prompt
    assert data.load_frames({"_base": str(tmp_path)}, 3, target_cfg) is None


def test_loader_mixes_video_lengths_and_stretches_positions(tmp_path):
    from train import data

    tok, target_cfg, records = _tiny_video_data(tmp_path)  # 1 token per frame (+ 1 newline)
    dcfg = train_config.DataConfig(manifest="m", num_frames=[1, 4], seq_len=[48, 64], stretch_frames=40)
    it = iter(data.loader(records, tok, target_cfg, dcfg, local_batch=3, seed=5))
    batches = [next(it) for _ in range(8)]
    shapes = {(b["input_ids"].shape[1], b["video"].shape[1]) for b in batches}
    assert shapes == {(48, 1), (64, 4)}  # both settings drawn, each with its own row length
    stretches = []
    for b in batches:
        frames = b["video"].shape[1]
        for pos, vis, n in zip(b["positions"], b["visual"], b["lengths"]):
            steps = np.diff(pos[:n])
            at = np.flatnonzero(vis[:n])  # frame tokens, then the newline
            gaps = steps[at[:frames - 1]]  # from each frame to the next
            assert len(set(gaps.tolist())) <= 1  # frames evenly spread
            stretch = int(gaps[0]) if frames > 1 else 1
            assert 1 <= stretch <= 40 // frames
            assert np.all(np.delete(steps, at[:frames - 1]) == 1)  # everything else stays contiguous
            stretches.append(stretch)
    assert max(stretches) > 1
    state = it.get_state()
    again = iter(data.loader(records, tok, target_cfg, dcfg, local_batch=3, seed=5))
    again.set_state(state)
    np.testing.assert_array_equal(next(it)["positions"], next(again)["positions"])

    # Two processes: disjoint records, but the same (frames, seq_len) at every step (one global shape).
    procs = [iter(data.loader(records, tok, target_cfg, dcfg, local_batch=2, seed=5, shard=(i, 2))) for i in (0, 1)]
    rows = set()
    for step in range(6):
        a, b = (next(p) for p in procs)
        assert a["input_ids"].shape == b["input_ids"].shape and a["video"].shape == b["video"].shape
        if step < 2:  # 8 of the 10 records, all within the first epoch; each record's question differs
            rows |= {tuple(r[:n]) for x in (a, b) for r, n in zip(x["input_ids"], x["lengths"])}
    assert len(rows) == 8

    with pytest.raises(ValueError, match="lists, of equal length"):
        train_config.TrainConfig(target=train_config.TargetConfig(path="t"),
                                 data=train_config.DataConfig(manifest="m", num_frames=[1, 4], seq_len=[48]))
    with pytest.raises(ValueError, match="offline features"):
        train_config.TrainConfig(target=train_config.TargetConfig(path="t"),
                                 data=train_config.DataConfig(manifest="m", num_frames=[1, 4], seq_len=[48, 64],
                                                              features_dir="f"))


def test_hf_tokenizer_chat_template_assistant_mask(tmp_path):
    """The same assistant-mask rule through a Hugging Face tokenizer and its own (ChatML) chat template; the
    video is placed by the template, and a training row starts with exactly the prompt inference builds."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from sparrow_jax.prompting import load_tokenizer
    from train.data import messages
    from train.tokenizer import HFChatTokenizer

    words = ["<unk>", "<|im_start|>", "<|im_end|>", "<video>", "user", "assistant", "hi", "ok", "fine"]
    core = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    template = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{% for p in m['content'] %}"
                "{% if p['type'] == 'video' %}<video> {% else %}{{ p['text'] }}{% endif %}{% endfor %}<|im_end|>\n"
                "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    fast = PreTrainedTokenizerFast(tokenizer_object=core, unk_token="<unk>", eos_token="<|im_end|>",
                                   additional_special_tokens=["<|im_start|>", "<|im_end|>", "<video>"],
                                   chat_template=template)
    fast.save_pretrained(tmp_path)
    tok = HFChatTokenizer(str(tmp_path))
    rec = {"conversations": [{"from": "human", "value": "<video>\nhi"}, {"from": "gpt", "value": "ok fine"}]}
    ids, mask = tokenize_conversation(tok, messages(rec, video=True))
    assert [words[i] for i in ids[mask]] == ["ok", "fine", "<|im_end|>"]
    assert ids.tolist().count(3) == 1 and tok.eos_ids == [2]  # the data's own "<video>" was dropped
    prompt = load_tokenizer(tmp_path).prompt_ids(["hi"])
    assert ids[: len(prompt)].tolist() == prompt and not mask[: len(prompt)].any() and mask[len(prompt)]
    with pytest.raises(ValueError, match="holds a video placeholder, but the record has no 'video'"):
        messages(rec)
    qwen = {"conversations": [{"role": "user", "content": "<|vision_start|><|video_pad|><|vision_end|>hi"}]}
    assert messages(qwen, video=True)[0]["content"] == [{"type": "video"}, {"type": "text", "text": "hi"}]
    from train.tokenizer import load

    with pytest.raises(FileNotFoundError, match="data.tokenizer .* neither 'byte' nor a directory"):
        load(str(tmp_path / "absent"))
