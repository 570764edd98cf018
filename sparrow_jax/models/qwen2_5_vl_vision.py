"""Qwen2.5-VL vision tower (HF `Qwen2_5_VisionTransformerPretrainedModel`): 3-D patch embedding,
2-D rotary embedding, window/full attention blocks, spatial patch merger.

All data-dependent index math (window permutation, attention segments, rotary positions) is done on
the host in numpy from `grid_thw` by `vision_plan`; the device graph only gathers.

Attention never crosses a frame (a temporal patch group): window blocks attend within windows of a
frame, full blocks within the frame. So the tower runs frame by frame: frames of one size form a
group [frames, patches, D], run through every block in chunks of a few frames (`lax.map`), and each
block's attention gathers its segments (the frame's windows, or the whole frame) into a batch axis.
Nothing is [N, N]: the plan is O(N) integers and attention scores are [frames in a chunk, windows,
window, window] or [frames in a chunk, patches, patches].
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from sparrow_jax import rope
from sparrow_jax.attention import attend, items_per_chunk, scores_held
from sparrow_jax.config import Qwen25VisionConfig, RopeConfig
from sparrow_jax.layers import Dense, RMSNorm, SwiGLU, param, scan_layers, stacked


class Segments(NamedTuple):
    """One attention pattern over the P tokens of a frame: S segments, each attending within itself."""

    gather: np.ndarray  # [S, L] int32: the frame's tokens of each segment, padded with token 0
    valid: np.ndarray | None  # [S, L] bool: real entries (None: no segment is padded)
    inverse: np.ndarray  # [P] int32: where each token sits in the flattened [S * L]


class FrameGroup(NamedTuple):
    """The frames (temporal patch groups) of one size (h, w): they share their layout."""

    frames: np.ndarray  # [F, P] int32: window-order positions of each frame's P = h * w patches
    position_ids: np.ndarray  # [P, 2] int32: (h, w) patch coordinates, in window order
    window: Segments  # window attention: windows of window_merged^2 merged tokens, edge ones shorter
    full: Segments  # full attention: the whole frame, one segment


class VisionPlan(NamedTuple):
    """Host-computed index data for one `grid_thw` (a pytree: may be passed through jit as arrays).
    Every array is O(N) or smaller; the group count and shapes are static.

    Tokens run in "window order" through the blocks: merged groups of spatial_merge_size^2 patches
    are permuted so that each attention window is contiguous (HF `get_window_index`)."""

    index: np.ndarray  # [N] int32: window-order position -> input patch row
    reverse: np.ndarray  # [N / m^2] int32: input merged-token order -> window-order merged token
    ungroup: np.ndarray  # [N] int32: window-order position -> row of the groups' frames concatenated
    groups: tuple[FrameGroup, ...]  # one per distinct frame size, in order of first appearance


def _segments(lens: np.ndarray) -> Segments:
    """Consecutive segments of the given lengths covering a frame's tokens in order."""
    width, starts = int(lens.max()), np.concatenate([[0], np.cumsum(lens)[:-1]])
    valid = np.arange(width)[None] < lens[:, None]
    gather = np.where(valid, starts[:, None] + np.arange(width), 0)
    inverse = np.repeat(np.arange(len(lens)) * width - starts, lens) + np.arange(lens.sum())
    return Segments(gather.astype(np.int32), None if valid.all() else valid, inverse.astype(np.int32))


def _frame_layout(h: int, w: int, m: int, vw: int):
    """One frame of h x w patches: (window-order merged tokens [h*w/m^2], position ids [h*w, 2] in
    window order, window lengths in patches)."""
    # Windows of vw x vw merged tokens, edge windows cut short (HF pads with -100 and drops).
    gh, gw = h // m, w // m
    nh, nw = -(-gh // vw), -(-gw // vw)
    idx = np.full((nh * vw, nw * vw), -1)
    idx[:gh, :gw] = np.arange(gh * gw).reshape(gh, gw)
    idx = idx.reshape(nh, vw, nw, vw).transpose(0, 2, 1, 3).reshape(nh * nw, vw * vw)
    order = idx[idx >= 0]
    # Patch rows come block-major over m x m merge blocks (the processor's order).
    hh, ww = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    blockwise = lambda a: a.reshape(gh, m, gw, m).transpose(0, 2, 1, 3).reshape(-1)  # noqa: E731
    patches = (order[:, None] * m * m + np.arange(m * m)).reshape(-1)
    positions = np.stack([blockwise(hh), blockwise(ww)], -1)[patches]
    return order, positions, (idx >= 0).sum(1) * m * m


def vision_plan(grid_thw, config: Qwen25VisionConfig) -> VisionPlan:
    grid = np.asarray(grid_thw, np.int64).reshape(-1, 3)
    m, vw = config.spatial_merge_size, config.window_merged
    if len(grid) == 0 or (grid <= 0).any() or (grid[:, 1:] % m).any():
        raise ValueError(f"grid_thw rows must be positive (t, h, w) with h, w multiples of {m}; got {grid.tolist()}")
    layouts, starts, window_index, offset = {}, {}, [], 0  # offset: merged tokens before this video
    for t, h, w in grid.tolist():
        if (h, w) not in layouts:
            layouts[(h, w)] = _frame_layout(h, w, m, vw)
        order, per = layouts[(h, w)][0], h * w // (m * m)
        # Windows never cross frames: a video's window order is its frames' window orders in turn.
        window_index.append((np.arange(t)[:, None] * per + order + offset).reshape(-1))
        starts.setdefault((h, w), []).append(offset * m * m + np.arange(t) * h * w)
        offset += t * per
    window_index = np.concatenate(window_index)
    groups = []
    for (h, w), (_, positions, window_lens) in layouts.items():
        frames = np.concatenate(starts[(h, w)])[:, None] + np.arange(h * w)
        groups.append(FrameGroup(frames.astype(np.int32), positions.astype(np.int32), _segments(window_lens),
                                 _segments(np.array([h * w]))))
    return VisionPlan(
        index=(window_index[:, None] * m * m + np.arange(m * m)).reshape(-1).astype(np.int32),
        reverse=np.argsort(window_index).astype(np.int32),
        ungroup=np.argsort(np.concatenate([g.frames.reshape(-1) for g in groups])).astype(np.int32),
        groups=tuple(groups),
    )


def frames_per_chunk(group: FrameGroup, heads: int) -> int:
    """Frames of `group` that run through a block at once (`attention.items_per_chunk`): 4 frames of
    448x448 pixels (1024 patches) for the real tower."""
    p = group.frames.shape[1]
    return items_per_chunk(p, max(scores_held(heads, *s.gather.shape) for s in (group.window, group.full)))


def attend_segments(q, k, v, segments: Segments, scale: float):
    """q/k/v [P, H, D] of one frame -> [P, H, D], each token attending within its segment only."""
    g = segments.gather
    mask = None if segments.valid is None else jnp.broadcast_to(segments.valid[:, None, :], (*g.shape, g.shape[1]))
    out = attend(q[g], k[g], v[g], mask, scale)  # [S, L, H, D]; padded queries' rows are dropped next
    return out.reshape(-1, *out.shape[2:])[segments.inverse]


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

    def __call__(self, x, cos, sin, group: FrameGroup, is_full):
        """One frame: x [P, D], cos/sin [P, head_dim] float32 -> [P, D]; full attention over the frame
        where `is_full` (a bool, or a traced flag: then `lax.cond`), else the group's windows."""
        n = x.shape[0]
        q, k, v = jnp.moveaxis(self.qkv(x).reshape(n, 3, self.heads, -1), 1, 0)
        # HF rotates in float32 and casts back.
        q, k = (rope.apply(a.astype(jnp.float32), cos, sin).astype(x.dtype) for a in (q, k))
        full = lambda q, k, v: attend_segments(q, k, v, group.full, self.scale)  # noqa: E731
        window = lambda q, k, v: attend_segments(q, k, v, group.window, self.scale)  # noqa: E731
        if isinstance(is_full, bool):
            out = (full if is_full else window)(q, k, v)
        else:
            out = jax.lax.cond(is_full, full, window, q, k, v)
        return self.proj(out.reshape(n, -1))


class VisionBlock(nnx.Module):
    def __init__(self, cfg: Qwen25VisionConfig, *, dtype, rngs: nnx.Rngs):
        self.norm1 = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps, dtype=dtype)
        self.norm2 = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps, dtype=dtype)
        self.attn = VisionAttention(cfg, dtype=dtype, rngs=rngs)
        self.mlp = SwiGLU(cfg.hidden_size, cfg.intermediate_size, bias=True, dtype=dtype, rngs=rngs)

    def __call__(self, x, cos, sin, group: FrameGroup, is_full):
        x = x + self.attn(self.norm1(x), cos, sin, group, is_full)
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

    def encode(self, x, plan: VisionPlan, start: int = 0, stop: int | None = None, frame_chunk: int | None = None):
        """Run blocks[start:stop] on window-ordered hidden states x [N, D], frame group by frame group,
        `frame_chunk` frames at a time (default: `frames_per_chunk`)."""
        stop = self.config.depth if stop is None else stop
        full = np.isin(np.arange(self.config.depth), self.config.fullatt_block_indexes)[start:stop]
        rot = [self.cos_sin(g.position_ids) for g in plan.groups]
        chunks = [frame_chunk or frames_per_chunk(g, self.config.num_heads) for g in plan.groups]

        def body(block, hs, is_full):  # all blocks stay one scan: the attention is picked by a scanned flag
            out = []
            for h, g, (cos, sin), chunk in zip(hs, plan.groups, rot, chunks):
                one = lambda f, g=g, cos=cos, sin=sin: block(f, cos, sin, g, is_full)  # noqa: E731
                out.append(jax.lax.map(one, h, batch_size=chunk))
            return tuple(out), None

        hs, _ = scan_layers(self.blocks, body, tuple(x[g.frames] for g in plan.groups), jnp.asarray(full), start, stop)
        return jnp.concatenate([h.reshape(-1, h.shape[-1]) for h in hs])[plan.ungroup]

    def forward(self, pixel_values, plan: VisionPlan, frame_chunk: int | None = None):
        """As `__call__` with a precomputed plan (pass the plan as a jit argument to avoid constant folding)."""
        x = self.encode(self.embed(pixel_values, plan), plan, frame_chunk=frame_chunk)
        return self.merger(x)[plan.reverse]

    def __call__(self, pixel_values, grid_thw):
        """pixel_values [N, C*tp*p*p], grid_thw host int array [n, 3] -> merged features
        [N / m^2, out_hidden_size] in input order (HF `pooler_output`, which `get_video_features` splits)."""
        return self.forward(pixel_values, vision_plan(grid_thw, self.config))
