"""Float32 parity with HF Qwen2_5_VisionTransformerPretrainedModel: per component and whole tower."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx

from sparrow_jax.config import ConfigError
from sparrow_jax.models.qwen2_5_vl_vision import Qwen25Vision, Qwen25VisionConfig, frames_per_chunk, vision_plan
from sparrow_jax.scale_configs import QWEN25_VISION_7B

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


def dense_layout(plan):
    """The compact plan spelled out (tiny grids only): position_ids [N, 2] and window and full
    segment ids [N], in window order; each segment's inverse checked on the way."""
    n = plan.index.shape[0]
    pos, win, full = np.zeros((n, 2), np.int64), np.full(n, -1), np.full(n, -1)
    for g in plan.groups:
        pos[g.frames] = g.position_ids
        for ids, seg in ((win, g.window), (full, g.full)):
            valid = np.ones(seg.gather.shape, bool) if seg.valid is None else seg.valid
            tokens = g.frames.shape[1]
            np.testing.assert_array_equal(seg.gather.reshape(-1)[seg.inverse], np.arange(tokens))
            assert valid.reshape(-1)[seg.inverse].all() and valid.sum() == tokens
            for frame in g.frames:
                for gather, real in zip(seg.gather, valid):
                    ids[frame[gather[real]]] = ids.max() + 1
    assert (win >= 0).all() and (full >= 0).all()
    return pos, win, full


def same_partition(a, b):
    return np.array_equal(a[:, None] == a[None], b[:, None] == b[None])


@pytest.mark.parametrize("grid", [VIDEO, TWO_VIDEOS])
def test_plan_matches_hf(towers, grid):
    hf, ours = towers
    pos, window_index, cu_window, cu = hf_plan(hf, grid)
    plan = vision_plan(np.array(grid), ours.config)
    unit = 4
    np.testing.assert_array_equal(plan.index // unit, np.repeat(window_index.numpy(), unit))
    np.testing.assert_array_equal(plan.reverse, torch.argsort(window_index).numpy())
    ours_pos, ours_win, ours_full = dense_layout(plan)
    np.testing.assert_array_equal(ours_pos, pos.numpy()[plan.index])
    win, full = segments(cu_window), segments(cu)
    assert same_partition(ours_win, win) and same_partition(ours_full, full)
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
    # The attention pattern matters: the other one gives another result.
    wrong = plan._replace(groups=tuple(g._replace(window=g.full, full=g.window) for g in plan.groups))
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


def dense_encode(model, x, grid, hf):
    """The previous formulation: every block attends over all N window-ordered patches with a dense
    [N, N] mask (same window / same frame), built from HF's own host-side index data."""
    from sparrow_jax import rope
    from sparrow_jax.attention import attend
    from sparrow_jax.layers import scan_layers

    pos, window_index, cu_window, cu = hf_plan(hf, grid)
    index = (window_index.numpy()[:, None] * 4 + np.arange(4)).reshape(-1)
    cos, sin = model.cos_sin(jnp.asarray(pos.numpy()[index]))
    win, full = segments(cu_window), segments(cu)
    masks = jnp.asarray(np.stack([win[:, None] == win[None], full[:, None] == full[None]]))
    flags = np.isin(np.arange(model.config.depth), model.config.fullatt_block_indexes)

    def body(block, h, is_full):
        n, attn = h.shape[0], block.attn
        q, k, v = jnp.moveaxis(attn.qkv(block.norm1(h)).reshape(n, 3, attn.heads, -1), 1, 0)
        q, k = rope.apply(q, cos, sin), rope.apply(k, cos, sin)
        h = h + attn.proj(attend(q[None], k[None], v[None], masks[is_full.astype(int)][None], attn.scale).reshape(n, -1))
        return h + block.mlp(block.norm2(h)), None

    return scan_layers(model.blocks, body, x, jnp.asarray(flags), 0, model.config.depth)[0]


# Three videos, the first and last of one size (one frame group, not contiguous in window order), edge
# windows in both sizes, several frames per video.
THREE_VIDEOS = [[3, 10, 12], [1, 6, 8], [2, 10, 12]]


def test_per_frame_attention_equals_dense_masks(towers):
    hf, ours = towers
    plan = vision_plan(np.array(THREE_VIDEOS), ours.config)
    assert [g.frames.shape for g in plan.groups] == [(5, 120), (1, 48)]
    assert all(g.window.valid is not None and g.full.valid is None for g in plan.groups)  # edge windows
    n = plan.index.shape[0]
    x = jnp.asarray(np.random.default_rng(5).standard_normal((n, 32)).astype(np.float32))
    ref = dense_encode(ours, x, THREE_VIDEOS, hf)
    for chunk in (None, 2):  # 2: five frames run as two chunks and a remainder
        diff = maxdiff(ours.encode(x, plan, frame_chunk=chunk), ref)
        print(f"per-frame vs dense-mask tower (frame_chunk={chunk}) max abs diff: {diff:.2e}")
        assert diff < 1e-5


# Qwen2.5-VL-7B's tower, and the paper's 160 frames at 448x448: grid 80 x 32 x 32, 81,920 patches.
REAL = QWEN25_VISION_7B
REAL_GRID = [[80, 32, 32]]


def test_plan_for_160_frames_at_448_is_small():
    """The dense masks were 2 x 6.7 GB here."""
    cfg, n = REAL, int(np.prod(REAL_GRID))
    plan = vision_plan(REAL_GRID, cfg)
    leaves = jax.tree.leaves(plan)
    total = sum(a.nbytes for a in leaves)
    print(f"vision plan for {n} patches: {total / 1e6:.2f} MB in {len(leaves)} arrays")
    assert total < 4e6 and max(a.size for a in leaves) <= n
    (group,) = plan.groups
    assert group.frames.shape == (80, 1024) and group.window.gather.shape == (16, 64) and group.window.valid is None
    assert frames_per_chunk(group, cfg.num_heads) == 4  # the frames run through each block 4 at a time


def test_real_tower_at_160_frames_compiles_within_memory():
    """Shapes only: the 7B tower over 160 frames at 448x448 in float32 compiles to 1.2 GiB of temporary
    memory (the dense-mask formulation: 18.7 GiB, besides its 12.5 GiB of masks)."""
    model = nnx.eval_shape(lambda: Qwen25Vision(REAL, rngs=nnx.Rngs(0)))
    graphdef, state = nnx.split(model)
    shape = lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype)  # noqa: E731
    plan = jax.tree.map(shape, vision_plan(REAL_GRID, REAL))
    pixels = jax.ShapeDtypeStruct((int(np.prod(REAL_GRID)), REAL.patch_dim), jnp.float32)
    forward = jax.jit(lambda s, p, pl: nnx.merge(graphdef, s).forward(p, pl))
    memory = forward.lower(state, pixels, plan).compile().memory_analysis()
    print(f"7B tower, 160 frames at 448x448, float32: temp {memory.temp_size_in_bytes / 2**30:.2f} GiB")
    assert memory.temp_size_in_bytes < 2 * 2**30
