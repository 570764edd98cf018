"""Float32 parity with HF Qwen2_5_VisionTransformerPretrainedModel: per component and whole tower."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx

from sparrow_jax.config import ConfigError
from sparrow_jax.models.qwen2_5_vl_vision import Qwen25Vision, Qwen25VisionConfig, vision_plan

TOL = 1e-4
# Non-square grids whose merged grids (5x6, 3x4) do not divide into 2x2-merged-token windows: ragged windows.
VIDEO = [[2, 10, 12]]  # 4 frames of 140x168 pixels
TWO_VIDEOS = [[2, 10, 12], [1, 6, 8]]


def maxdiff(a, b):
    return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))


def hf_config():
    from transformers import Qwen2_5_VLVisionConfig

    return Qwen2_5_VLVisionConfig(
        depth=4, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=48, patch_size=14,
        temporal_patch_size=2, spatial_merge_size=2, window_size=56, fullatt_block_indexes=[1, 3],
        initializer_range=0.1,
    )


def hf_to_ours(state_dict, cfg: Qwen25VisionConfig) -> dict:
    """The key map: HF state dict -> our nested param dict (every HF key must be used)."""
    sd = {k: v.numpy() for k, v in state_dict.items()}

    def dense(key):  # torch Linear [out, in] -> kernel [in, out]
        out = {"kernel": sd.pop(f"{key}.weight").T}
        if f"{key}.bias" in sd:
            out["bias"] = sd.pop(f"{key}.bias")
        return out

    def block(i):
        b = f"blocks.{i}"
        return {
            "norm1": {"scale": sd.pop(f"{b}.norm1.weight")},
            "norm2": {"scale": sd.pop(f"{b}.norm2.weight")},
            "attn": {"qkv": dense(f"{b}.attn.qkv"), "proj": dense(f"{b}.attn.proj")},
            "mlp": {n: dense(f"{b}.mlp.{n}") for n in ("gate_proj", "up_proj", "down_proj")},
        }

    params = {
        # Conv3d [D, C, tp, p, p] -> [C*tp*p*p, D], matching the flattened patch rows.
        "patch_embed": {"proj": {"kernel": sd.pop("patch_embed.proj.weight").transpose(1, 2, 3, 4, 0)}},
        "blocks": jax.tree.map(lambda *a: np.stack(a), *[block(i) for i in range(cfg.depth)]),
        "merger": {
            "ln_q": {"scale": sd.pop("merger.ln_q.weight")},
            "mlp_0": dense("merger.mlp.0"),
            "mlp_2": dense("merger.mlp.2"),
        },
    }
    assert not sd, f"unused HF keys: {sorted(sd)}"
    return params


@pytest.fixture(scope="module")
def towers():
    from transformers import Qwen2_5_VisionTransformerPretrainedModel

    torch.manual_seed(0)
    cfg = hf_config()
    hf = Qwen2_5_VisionTransformerPretrainedModel._from_config(cfg, attn_implementation="eager").eval()
    with torch.no_grad():  # every parameter matters: random norms and biases too
        for name, p in hf.named_parameters():
            p.copy_(1 + 0.1 * torch.randn_like(p) if "norm" in name or "ln_q" in name else 0.1 * torch.randn_like(p))
    ours_cfg = Qwen25VisionConfig.from_hf(cfg.to_dict())
    ours = nnx.eval_shape(lambda: Qwen25Vision(ours_cfg, rngs=nnx.Rngs(0)))  # shapes only: no random init
    params = hf_to_ours(hf.state_dict(), ours_cfg)
    state = nnx.state(ours, nnx.Param)
    want = jax.tree.map(lambda a: a.shape, nnx.to_pure_dict(state))
    assert jax.tree.map(lambda a: a.shape, params) == want
    nnx.replace_by_pure_dict(state, params)
    nnx.update(ours, state)
    return hf, ours


def pixels(grid, seed):
    n = int(np.prod(grid, axis=1).sum())
    x = np.random.default_rng(seed).standard_normal((n, 3 * 2 * 14 * 14)).astype(np.float32)
    return torch.from_numpy(x), jnp.asarray(x)


def hf_plan(hf, grid):
    """HF's own host-side index data: (position_ids, window_index, cu_window_seqlens, cu_seqlens)."""
    from transformers.vision_utils import get_vision_cu_seqlens, get_vision_position_ids, get_vision_window_index

    g = torch.tensor(grid)
    c = hf.config
    window_index, cu_window = get_vision_window_index(g, c.spatial_merge_size, c.window_size, c.patch_size)
    return get_vision_position_ids(g, c.spatial_merge_size), window_index, cu_window, get_vision_cu_seqlens(g)


def segments(cu):
    cu = np.asarray(cu)
    return np.repeat(np.arange(len(cu) - 1), np.diff(cu))


def test_config_from_hf_and_validation():
    cfg = Qwen25VisionConfig.from_hf(hf_config().to_dict())
    assert (cfg.depth, cfg.head_dim, cfg.window_merged, cfg.fullatt_block_indexes) == (4, 16, 2, (1, 3))
    # The original Qwen2.5-VL config.json spelling.
    orig = dict(depth=32, hidden_size=1280, intermediate_size=3420, num_heads=16, in_chans=3, out_hidden_size=3584,
                patch_size=14, spatial_merge_size=2, window_size=112, fullatt_block_indexes=[7, 15, 23, 31],
                temporal_patch_size=2, hidden_act="silu")
    assert Qwen25VisionConfig.from_hf(orig).patch_dim == 1176
    for bad, msg in [(dict(fullatt_block_indexes=[32]), "outside"), (dict(window_size=20), "window_size"),
                     (dict(num_heads=3), "multiple of num_heads"), (dict(hidden_act="gelu"), "hidden_act")]:
        with pytest.raises(ConfigError, match=msg):
            Qwen25VisionConfig.from_hf({**orig, **bad})
    with pytest.raises(ValueError, match="multiples of 2"):
        vision_plan([[1, 5, 6]], cfg)


@pytest.mark.parametrize("grid", [VIDEO, TWO_VIDEOS])
def test_plan_matches_hf(towers, grid):
    hf, ours = towers
    pos, window_index, cu_window, cu = hf_plan(hf, grid)
    plan = vision_plan(np.array(grid), ours.config)
    unit = 4
    np.testing.assert_array_equal(plan.index // unit, np.repeat(window_index.numpy(), unit))
    np.testing.assert_array_equal(plan.reverse, torch.argsort(window_index).numpy())
    np.testing.assert_array_equal(plan.position_ids, pos.numpy()[plan.index])
    win, full = segments(cu_window), segments(cu)
    np.testing.assert_array_equal(plan.window_mask, win[:, None] == win[None])
    np.testing.assert_array_equal(plan.full_mask, full[:, None] == full[None])
    assert len(np.unique(win)) > len(np.unique(full)) > 1  # windows really split the frames


def test_patch_embed(towers):
    hf, ours = towers
    pix_t, pix = pixels(VIDEO, 1)
    diff = maxdiff(ours.patch_embed(pix), hf.patch_embed(pix_t))
    print(f"qwen2.5-vl patch embed max abs diff: {diff:.2e}")
    assert diff < TOL


@pytest.mark.parametrize("layer", [0, 1])  # block 0 uses window attention, block 1 full attention
def test_one_block(towers, layer):
    hf, ours = towers
    pos, window_index, cu_window, cu = hf_plan(hf, TWO_VIDEOS)
    n = pos.shape[0]
    x = np.random.default_rng(2).standard_normal((n, 32)).astype(np.float32)
    cos, sin = (hf.permute_input_for_window_attn(f, window_index, n) for f in hf.rotary_pos_emb(torch.zeros(1), pos))
    ref = hf.blocks[layer](torch.from_numpy(x), cu_seqlens=cu if layer == 1 else cu_window,
                           position_embeddings=(cos, sin))
    plan = vision_plan(np.array(TWO_VIDEOS), ours.config)
    diff = maxdiff(ours.encode(jnp.asarray(x), plan, layer, layer + 1), ref)
    print(f"qwen2.5-vl block {layer} max abs diff: {diff:.2e}")
    assert diff < TOL
    # The mask choice matters: the other mask gives another result.
    wrong = plan._replace(window_mask=plan.full_mask, full_mask=plan.window_mask)
    assert maxdiff(ours.encode(jnp.asarray(x), wrong, layer, layer + 1), ref) > 1e-3


def test_merger(towers):
    hf, ours = towers
    x = np.random.default_rng(3).standard_normal((96, 32)).astype(np.float32)
    diff = maxdiff(ours.merger(jnp.asarray(x)), hf.merger(torch.from_numpy(x)))
    print(f"qwen2.5-vl merger max abs diff: {diff:.2e}")
    assert diff < TOL


@pytest.mark.parametrize("grid", [VIDEO, TWO_VIDEOS])
def test_whole_tower(towers, grid):
    hf, ours = towers
    pix_t, pix = pixels(grid, 4)
    ref = hf(pix_t, grid_thw=torch.tensor(grid)).pooler_output
    got = ours(pix, np.array(grid))
    assert got.shape == tuple(ref.shape) == (int(np.prod(grid, axis=1).sum()) // 4, 48)
    diff = maxdiff(got, ref)
    print(f"qwen2.5-vl vision tower {grid} max abs diff: {diff:.2e}")
    assert diff < TOL
    # Jitted with the plan as an argument (one compile per grid, masks not baked in as constants).
    jitted = nnx.jit(lambda m, p, plan: m.forward(p, plan))
    assert maxdiff(jitted(ours, pix, jax.tree.map(jnp.asarray, vision_plan(np.array(grid), ours.config))), ref) < TOL
