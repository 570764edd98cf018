"""Qwen2.5-VL vision tower (HF `Qwen2_5_VisionTransformerPretrainedModel`): 3-D patch embedding,
2-D rotary embedding, window/full attention blocks, spatial patch merger.

All data-dependent index math (window permutation, attention segments, rotary positions) is done on
the host in numpy from `grid_thw` by `vision_plan`; the device graph only gathers and masks.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from sparrow_jax import rope
from sparrow_jax.attention import attend
from sparrow_jax.config import Qwen25VisionConfig, RopeConfig
from sparrow_jax.layers import Dense, RMSNorm, SwiGLU, param, scan_layers, stacked


class VisionPlan(NamedTuple):
    """Host-computed index data for one `grid_thw` (a pytree: may be passed through jit as arrays).

    Tokens run in "window order" through the blocks: merged groups of spatial_merge_size^2 patches
    are permuted so that each attention window is contiguous (HF `get_window_index`)."""

    index: np.ndarray  # [N] int32: window-order position -> input patch row
    reverse: np.ndarray  # [N / m^2] int32: input merged-token order -> window-order merged token
    position_ids: np.ndarray  # [N, 2] int32: (h, w) patch coordinates, in window order
    window_mask: np.ndarray  # [N, N] bool: same window
    full_mask: np.ndarray  # [N, N] bool: same frame chunk (temporal patch) of the same image/video


def vision_plan(grid_thw, config: Qwen25VisionConfig) -> VisionPlan:
    grid = np.asarray(grid_thw, np.int64).reshape(-1, 3)
    m, vw = config.spatial_merge_size, config.window_merged
    if len(grid) == 0 or (grid <= 0).any() or (grid[:, 1:] % m).any():
        raise ValueError(f"grid_thw rows must be positive (t, h, w) with h, w multiples of {m}; got {grid.tolist()}")
    positions, window_index, window_lens, full_lens, offset = [], [], [], [], 0
    for t, h, w in grid.tolist():
        # Patch rows come block-major over m x m merge blocks (the processor's order).
        hh, ww = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
        blockwise = lambda a: a.reshape(h // m, m, w // m, m).transpose(0, 2, 1, 3).reshape(-1)
        positions.append(np.tile(np.stack([blockwise(hh), blockwise(ww)], -1), (t, 1)))
        # Windows of vw x vw merged tokens per frame, edge windows cut short (HF pads with -100 and drops).
        gh, gw = h // m, w // m
        nh, nw = -(-gh // vw), -(-gw // vw)
        idx = np.full((t, nh * vw, nw * vw), -1)
        idx[:, :gh, :gw] = np.arange(t * gh * gw).reshape(t, gh, gw)
        idx = idx.reshape(t, nh, vw, nw, vw).transpose(0, 1, 3, 2, 4).reshape(t * nh * nw, vw * vw)
        window_lens.append((idx >= 0).sum(1) * m * m)
        window_index.append(idx[idx >= 0] + offset)
        full_lens.append(np.full(t, h * w))
        offset += t * gh * gw
    window_index = np.concatenate(window_index)
    index = (window_index[:, None] * m * m + np.arange(m * m)).reshape(-1)
    segments = lambda lens: np.repeat(np.arange(len(lens)), lens)
    # Windows never cross frames, so per-frame segments in window order equal HF's cu_seqlens split.
    win, full = segments(np.concatenate(window_lens)), segments(np.concatenate(full_lens))
    return VisionPlan(
        index=index.astype(np.int32),
        reverse=np.argsort(window_index).astype(np.int32),
        position_ids=np.concatenate(positions)[index].astype(np.int32),
        window_mask=win[:, None] == win[None, :],
        full_mask=full[:, None] == full[None, :],
    )


class Conv3dKernel(nnx.Module):
    """Conv3d weight kept as [C, tp, p, p, D] (torch's [D, C, tp, p, p] with D moved last)."""

    def __init__(self, cfg: Qwen25VisionConfig, *, dtype, rngs: nnx.Rngs):
        shape = (cfg.in_channels, cfg.temporal_patch_size, cfg.patch_size, cfg.patch_size, cfg.hidden_size)
        self.kernel = param(rngs, shape, (None, None, None, None, "embed"), dtype)


class PatchEmbed(nnx.Module):
    """Conv3d with kernel = stride = (tp, p, p), no bias, as a matmul over HF's flattened patch rows."""

    def __init__(self, cfg: Qwen25VisionConfig, *, dtype, rngs: nnx.Rngs):
        self.proj = Conv3dKernel(cfg, dtype=dtype, rngs=rngs)

    def __call__(self, pixel_values):
        k = self.proj.kernel[...]
        return pixel_values.astype(k.dtype) @ k.reshape(-1, k.shape[-1])


class VisionAttention(nnx.Module):
    def __init__(self, cfg: Qwen25VisionConfig, *, dtype, rngs: nnx.Rngs):
        d = cfg.hidden_size
        self.heads, self.scale = cfg.num_heads, cfg.head_dim**-0.5
        self.qkv = Dense(d, 3 * d, ("embed", "q_heads"), bias=True, dtype=dtype, rngs=rngs)  # fused as in HF
        self.proj = Dense(d, d, ("q_heads", "embed"), bias=True, dtype=dtype, rngs=rngs)

    def __call__(self, x, cos, sin, mask):
        """x [N, D], cos/sin [N, head_dim] float32, mask [N, N] -> [N, D]."""
        n = x.shape[0]
        q, k, v = jnp.moveaxis(self.qkv(x).reshape(n, 3, self.heads, -1), 1, 0)
        # HF rotates in float32 and casts back.
        q, k = (rope.apply(a.astype(jnp.float32), cos, sin).astype(x.dtype) for a in (q, k))
        out = attend(q[None], k[None], v[None], mask[None], self.scale)[0]
        return self.proj(out.reshape(n, -1))


class VisionBlock(nnx.Module):
    def __init__(self, cfg: Qwen25VisionConfig, *, dtype, rngs: nnx.Rngs):
        self.norm1 = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps, dtype=dtype)
        self.norm2 = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps, dtype=dtype)
        self.attn = VisionAttention(cfg, dtype=dtype, rngs=rngs)
        self.mlp = SwiGLU(cfg.hidden_size, cfg.intermediate_size, bias=True, dtype=dtype, rngs=rngs)

    def __call__(self, x, cos, sin, mask):
        x = x + self.attn(self.norm1(x), cos, sin, mask)
        return x + self.mlp(self.norm2(x))


class PatchMerger(nnx.Module):
    """RMSNorm, then concatenate each m x m group of patches and project with a GELU MLP."""

    def __init__(self, cfg: Qwen25VisionConfig, *, dtype, rngs: nnx.Rngs):
        d = cfg.hidden_size * cfg.spatial_merge_size**2
        self.ln_q = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps, dtype=dtype)
        self.mlp_0 = Dense(d, d, ("embed", "mlp"), bias=True, dtype=dtype, rngs=rngs)
        self.mlp_2 = Dense(d, cfg.out_hidden_size, ("mlp", "embed"), bias=True, dtype=dtype, rngs=rngs)

    def __call__(self, x):
        x = self.ln_q(x).reshape(-1, self.mlp_0.kernel.shape[0])
        return self.mlp_2(jax.nn.gelu(self.mlp_0(x), approximate=False))  # nn.GELU() is exact erf


class Qwen25Vision(nnx.Module):
    def __init__(self, cfg: Qwen25VisionConfig, *, dtype=jnp.float32, rngs: nnx.Rngs):
        self.config = cfg
        self.patch_embed = PatchEmbed(cfg, dtype=dtype, rngs=rngs)
        self.blocks = stacked(lambda r: VisionBlock(cfg, dtype=dtype, rngs=r), cfg.depth, rngs)
        self.merger = PatchMerger(cfg, dtype=dtype, rngs=rngs)

    def cos_sin(self, position_ids):
        """[N, 2] (h, w) -> cos, sin [N, head_dim] float32, laid out (h freqs, w freqs) twice as HF."""
        freq = rope.inv_freq(RopeConfig(theta=self.config.rope_theta), self.config.head_dim // 2)
        angles = (position_ids.astype(jnp.float32)[..., None] * jnp.asarray(freq)).reshape(position_ids.shape[0], -1)
        angles = jnp.concatenate([angles, angles], axis=-1)
        return jnp.cos(angles), jnp.sin(angles)

    def embed(self, pixel_values, plan: VisionPlan):
        """Flattened patches [N, C*tp*p*p] -> patch embeddings [N, D] in window order."""
        cfg = self.config
        if pixel_values.ndim != 2 or pixel_values.shape[1] != cfg.patch_dim:
            raise ValueError(
                f"pixel_values must be [num_patches, {cfg.patch_dim}] (flattened C*tp*p*p patches as the HF "
                f"Qwen2.5-VL processor emits), got {tuple(pixel_values.shape)}"
            )
        if pixel_values.shape[0] != plan.index.shape[0]:
            raise ValueError(f"pixel_values has {pixel_values.shape[0]} patches, grid_thw implies {plan.index.shape[0]}")
        return self.patch_embed(pixel_values)[plan.index]

    def encode(self, x, plan: VisionPlan, start: int = 0, stop: int | None = None):
        """Run blocks[start:stop] on window-ordered hidden states x [N, D]."""
        stop = self.config.depth if stop is None else stop
        cos, sin = self.cos_sin(plan.position_ids)
        full = np.isin(np.arange(self.config.depth), self.config.fullatt_block_indexes)[start:stop]

        def body(block, h, is_full):  # all blocks stay one scan: the mask is picked by a scanned flag
            return block(h, cos, sin, jnp.where(is_full, plan.full_mask, plan.window_mask)), None

        x, _ = scan_layers(self.blocks, body, x, jnp.asarray(full), start, stop)
        return x

    def forward(self, pixel_values, plan: VisionPlan):
        """As `__call__` with a precomputed plan (pass the plan as a jit argument to avoid constant folding)."""
        x = self.encode(self.embed(pixel_values, plan), plan)
        return self.merger(x)[plan.reverse]

    def __call__(self, pixel_values, grid_thw):
        """pixel_values [N, C*tp*p*p], grid_thw host int array [n, 3] -> merged features
        [N / m^2, out_hidden_size] in input order (HF `pooler_output`, which `get_video_features` splits)."""
        return self.forward(pixel_values, vision_plan(grid_thw, self.config))
