"""Qwen2.5-VL target: float32 parity with HF end to end, greedy generate, conversion round trip, errors."""

import jax.numpy as jnp
import numpy as np
import pytest
import torch
from helpers import convert_dir

import infer
from sparrow_jax import checkpoint
from sparrow_jax.inputs import prepare

VS, VE, VID, IMG = 152, 153, 151, 150
PATCH_DIM = 3 * 2 * 14 * 14


def hf_config():
    from transformers import Qwen2_5_VLConfig

    return Qwen2_5_VLConfig(
        text_config=dict(
            vocab_size=160, hidden_size=64, intermediate_size=128, num_hidden_layers=3, num_attention_heads=4,
            num_key_value_heads=2, initializer_range=0.1,
            rope_parameters={"rope_type": "default", "mrope_section": [2, 3, 3], "rope_theta": 10000.0},
        ),
        vision_config=dict(
            depth=2, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=64, window_size=56,
            fullatt_block_indexes=[1], tokens_per_second=2, initializer_range=0.1,
        ),
        image_token_id=IMG, video_token_id=VID, vision_start_token_id=VS, vision_end_token_id=VE,
    )


@pytest.fixture(scope="module")
def qwen(tmp_path_factory):
    from transformers import Qwen2_5_VLForConditionalGeneration

    torch.manual_seed(0)
    hf = Qwen2_5_VLForConditionalGeneration(hf_config()).eval()
    with torch.no_grad():  # HF inits norms to 1 and biases to 0: perturb so a mis-mapped tensor shows
        for name, p in hf.named_parameters():
            if "norm" in name or "ln_q" in name or name.endswith("bias"):
                p.add_(0.1 * torch.randn_like(p))
    root = tmp_path_factory.mktemp("qwen")
    hf.save_pretrained(root / "hf")
    dst = convert_dir(root / "hf", root / "ours")
    return hf, root / "hf", dst, checkpoint.load(dst)


def video(grid, seed):
    t, h, w = grid
    return np.random.default_rng(seed).standard_normal((t * h * w, PATCH_DIM)).astype(np.float32)


def prompt(rng, before, grid, after):
    n = grid[0] * grid[1] * grid[2] // 4
    ids = [*rng.integers(0, 140, before), VS, *[VID] * n, VE, *rng.integers(0, 140, after)]
    return np.array(ids, np.int64)


def test_end_to_end_logits_with_video(qwen):
    """4 frames (t=2) of 84x112 px, text before and after; HF gets our positions (original rule)."""
    hf, _, _, ours = qwen
    rng = np.random.default_rng(0)
    grid = (2, 6, 8)
    ids = prompt(rng, 5, grid, 7)
    pix = video(grid, 1)
    batch = prepare(ours.config, [ids], [(pix, grid, 4.0)], multiple=1)  # 4 s per grid: t index 0 and 8
    with torch.no_grad():
        ref = hf(
            input_ids=torch.from_numpy(ids[None]), pixel_values_videos=torch.from_numpy(pix),
            video_grid_thw=torch.tensor([grid]), position_ids=torch.from_numpy(batch.positions.astype(np.int64)),
        ).logits.numpy()
    got = np.asarray(ours(jnp.asarray(batch.input_ids), batch.video, jnp.asarray(batch.positions)))
    diff = np.abs(got - ref).max()
    print(f"Qwen2.5-VL end-to-end max abs logit diff: {diff:.2e}")
    assert diff < 1e-4
    # The video starts at 6 with temporal indices 6 and 6 + 8; the vision-end token after it comes at
    # max + 1 = 15 on all axes (the original rule; transformers 5.23 would say 6 + max(6, 8) / 2 = 10).
    assert batch.positions[:, 0, 6 + 24].tolist() == [15, 15, 15]


def test_greedy_generate_matches_hf_with_two_video_sizes(qwen):
    """Batch of 2 with different video grids; 0.5 s per grid keeps HF 5.23's position rule equal to ours."""
    hf, _, _, ours = qwen
    rng = np.random.default_rng(3)
    grids = [(2, 6, 8), (2, 4, 4)]
    prompts = [prompt(rng, 4, grids[0], 6), prompt(rng, 9, grids[1], 3)]
    pix = [video(g, 10 + i) for i, g in enumerate(grids)]
    out = infer.generate(ours, prompts, [(p, g, 0.5) for p, g in zip(pix, grids)], max_new_tokens=16)

    width = max(len(p) for p in prompts)
    ids = torch.zeros((2, width), dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, p in enumerate(prompts):
        ids[i, width - len(p):] = torch.from_numpy(p)
        mask[i, width - len(p):] = 1
    with torch.no_grad():
        ref = hf.generate(
            input_ids=ids, attention_mask=mask, pixel_values_videos=torch.from_numpy(np.concatenate(pix)),
            video_grid_thw=torch.tensor(grids), second_per_grid_ts=torch.tensor([0.5, 0.5]),
            mm_token_type_ids=(ids == VID).long() * 2, max_new_tokens=16, do_sample=False, pad_token_id=0,
        )[:, width:].tolist()
    assert out.token_ids() == ref


def test_conversion_round_trip(qwen, tmp_path):
    from transformers import Qwen2_5_VLForConditionalGeneration

    from convert.__main__ import main

    hf, _, dst, _ = qwen
    assert main(["export", "--src", str(dst), "--dst", str(tmp_path / "back")]) == 0
    back, info = Qwen2_5_VLForConditionalGeneration.from_pretrained(tmp_path / "back", output_loading_info=True)
    assert not any(info.values()), info
    ids = torch.from_numpy(prompt(np.random.default_rng(5), 3, (2, 4, 4), 2)[None])
    kw = dict(input_ids=ids, pixel_values_videos=torch.from_numpy(video((2, 4, 4), 6)),
              video_grid_thw=torch.tensor([[2, 4, 4]]), mm_token_type_ids=(ids == VID).long() * 2)
    with torch.no_grad():
        assert torch.equal(back.eval()(**kw).logits, hf(**kw).logits)


def test_grid_that_does_not_match_placeholders_is_a_clear_error(qwen):
    ours = qwen[3]
    ids = prompt(np.random.default_rng(0), 3, (2, 4, 4), 2)  # 8 video tokens
    with pytest.raises(ValueError, match=r"video 0: 8 placeholder tokens but grid \(2, 6, 8\) needs"):
        infer.generate(ours, [ids], [(video((2, 6, 8), 0), (2, 6, 8), 1.0)], max_new_tokens=2)
    with pytest.raises(ValueError, match=r"row 0: pixel_values has 20 patches but grid_thw \[2, 4, 4\] needs 32"):
        infer.generate(ours, [ids], [(video((2, 4, 4), 0)[:20], (2, 4, 4), 1.0)], max_new_tokens=2)


def test_frames_to_logits_through_video_prompt_matches_hf(qwen):
    """uint8 frames -> our preprocessing -> both models: the same logits (pixels are checked against
    HF's processor in test_processing_qwen2_5_vl)."""
    from sparrow_jax.processing import video_prompt

    hf, _, _, ours = qwen
    frames = np.random.default_rng(9).integers(0, 256, (5, 60, 90, 3), dtype=np.uint8)  # odd count, non-square
    ids, (pix, grid, sec) = video_prompt(ours.config, [3, 4, VS, VID, VE, 5], frames, fps=2.0)
    assert grid.tolist()[0] == 3 and sec == 1.0  # 5 frames padded to 6: t = 3
    batch = prepare(ours.config, [ids], [(pix, grid, sec)], multiple=1)
    with torch.no_grad():
        ref = hf(
            input_ids=torch.from_numpy(ids[None].astype(np.int64)), pixel_values_videos=torch.from_numpy(pix),
            video_grid_thw=torch.from_numpy(grid[None]), position_ids=torch.from_numpy(batch.positions.astype(np.int64)),
        ).logits.numpy()
    got = np.asarray(ours(jnp.asarray(batch.input_ids), batch.video, jnp.asarray(batch.positions)))
    assert np.abs(got - ref).max() < 1e-4


def test_speculative_greedy_is_lossless_on_qwen(qwen):
    """Tree verification on M-RoPE: node positions are slot + depth + rope delta on all three axes."""
    from flax import nnx

    from sparrow_jax.config import DraftConfig, TextConfig
    from sparrow_jax.models import build_model
    from sparrow_jax.generation.speculative.tree import TreeShape

    ours = qwen[3]
    rng = np.random.default_rng(21)
    grids = [(2, 6, 8), (2, 4, 4)]
    prompts = [prompt(rng, 4, grids[0], 6), prompt(rng, 9, grids[1], 3)]
    videos = [(video(g, 30 + i), g, 4.0) for i, g in enumerate(grids)]  # 4 s per grid: deltas matter
    ref = infer.generate(ours, prompts, videos, max_new_tokens=16).token_ids()
    layers = TextConfig(vocab_size=160, hidden_size=64, intermediate_size=96, num_layers=1, num_heads=4,
                        num_kv_heads=2, head_dim=16)
    draft = build_model(DraftConfig(layers, window=8), rngs=nnx.Rngs(1))
    # A tree (a chain is its top_k = 1 case, tested so in test_speculative.py): positions at each depth.
    assert infer.generate(ours, prompts, videos, max_new_tokens=16, draft=draft, tree=TreeShape(4, 2, 10)).token_ids() == ref
    # The oracle's paths are accepted, so accepted tokens' k/v (computed at tree positions) are reused.
    from sparrow_jax.generation.speculative.oracle import OracleProposer

    reference = jnp.asarray(np.array([r[1:] + [0] * 8 for r in ref], np.int32))
    orc = OracleProposer(reference, jnp.zeros(reference.shape, bool), 160, TreeShape(2, 3, 7))
    out = infer.generate(ours, prompts, videos, max_new_tokens=16, draft=orc)
    assert out.token_ids() == ref and out.stats["tau"] > 3
