"""Qwen2.5-VL multimodal rotary positions (M-RoPE).

Position ids are data-dependent index math, so they are computed on the host in numpy before jit
(`mrope_positions`, `batch_mrope_positions`); cos/sin are computed inside jit (`mrope_cos_sin`).

We follow the ORIGINAL Qwen2.5-VL rule (transformers 4.57.x `get_rope_index`, vLLM): text after
a vision block starts at max(all positions so far) + 1. transformers 5.23 instead advances by
max(h, w) / merge after a block, ignoring the temporal axis; the two differ after a video whose
largest temporal index (t-1) * second_per_grid_t * tokens_per_second is >= max(h, w) / merge.
Temporal indices are floor(t_idx * second_per_grid_t * tokens_per_second) in float, as vLLM and 5.23
do (4.57.1 casts second_per_grid_t to int first, so e.g. 0.5 s would give all-zero indices there).
"""

from __future__ import annotations

from collections.abc import Sequence

import jax.numpy as jnp
import numpy as np


def _blocks(ids: np.ndarray, token_ids: tuple[int, int]):
    """Maximal runs of image/video placeholder tokens: [(token, start, end)] in prompt order."""
    edges = np.flatnonzero(np.diff(ids)) + 1  # starts of runs of equal tokens
    starts, ends = np.concatenate([[0], edges]), np.concatenate([edges, [len(ids)]])
    return [(int(ids[s]), int(s), int(e)) for s, e in zip(starts, ends) if ids[s] in token_ids]


def _as_grids(grid, name) -> np.ndarray:
    if grid is None:
        return np.zeros((0, 3), np.int64)
    grid = np.asarray(grid, np.int64).reshape(-1, 3) if np.size(grid) else np.zeros((0, 3), np.int64)
    if (grid <= 0).any():
        raise ValueError(f"{name} must be positive, got {grid.tolist()}")
    return grid


def mrope_positions(
    input_ids: np.ndarray,
    image_grid_thw: np.ndarray | None,
    video_grid_thw: np.ndarray | None,
    second_per_grid_ts: Sequence[float] | None,
    *,
    image_token_id: int,
    video_token_id: int,
    vision_start_token_id: int,
    spatial_merge_size: int = 2,
    tokens_per_second: float = 2,
) -> tuple[np.ndarray, int]:
    """M-RoPE position ids [3, L] (int64) of one unpadded row, and rope_delta.

    Grids are in vision-patch units (t, h, w) as the processor emits them; a block holds
    t * h * w / merge**2 placeholder tokens. Images and videos may appear in any order; grids are
    consumed in prompt order per kind. Decode slot s (>= L) has position s + rope_delta on all axes.
    """
    ids = np.asarray(input_ids)
    if ids.ndim != 1 or ids.size == 0:
        raise ValueError(f"input_ids must be one non-empty row [L], got shape {ids.shape}")
    grids = {image_token_id: _as_grids(image_grid_thw, "image_grid_thw"),
             video_token_id: _as_grids(video_grid_thw, "video_grid_thw")}
    n_vid = len(grids[video_token_id])
    secs = [1.0] * n_vid if second_per_grid_ts is None else [float(s) for s in np.ravel(second_per_grid_ts)]
    if len(secs) != n_vid:
        raise ValueError(f"second_per_grid_ts has {len(secs)} entries for {n_vid} videos")

    blocks = _blocks(ids, (image_token_id, video_token_id))
    for tok, name in ((image_token_id, "image"), (video_token_id, "video")):
        n_blocks = sum(b[0] == tok for b in blocks)
        if n_blocks != len(grids[tok]):
            raise ValueError(f"prompt has {n_blocks} {name} placeholder blocks but {len(grids[tok])} "
                             f"{name} grids were given")

    merge = spatial_merge_size
    pieces, used, cursor, nxt = [], {image_token_id: 0, video_token_id: 0}, 0, 0
    for tok, s, e in blocks:
        kind = "image" if tok == image_token_id else "video"
        k = used[tok]
        used[tok] += 1
        t, h, w = (int(x) for x in grids[tok][k])
        if h % merge or w % merge:
            raise ValueError(f"{kind} {k} grid {(t, h, w)} is not divisible by spatial_merge_size={merge}")
        gh, gw = h // merge, w // merge
        if e - s != t * gh * gw:
            raise ValueError(f"{kind} {k}: {e - s} placeholder tokens but grid {(t, h, w)} needs "
                             f"t*h*w/merge^2 = {t * gh * gw}")
        if s == 0 or ids[s - 1] != vision_start_token_id:
            raise ValueError(f"{kind} {k} placeholder block at {s} is not preceded by vision_start_token_id")
        # Text before the block: all three axes advance together.
        pieces.append(np.broadcast_to(np.arange(nxt, nxt + s - cursor), (3, s - cursor)))
        nxt += s - cursor
        # Images have no time axis (second_per_grid_t = 0 in the original); videos are scaled to
        # absolute time, floor(t_idx * seconds_per_grid * tokens_per_second), computed in float.
        sec = secs[k] if tok == video_token_id else 0.0
        ti = (np.arange(t, dtype=np.float64) * sec * tokens_per_second).astype(np.int64)
        tt, hh, ww = np.meshgrid(ti, np.arange(gh), np.arange(gw), indexing="ij")
        vis = np.stack([tt.ravel(), hh.ravel(), ww.ravel()]) + nxt
        pieces.append(vis)
        nxt = int(vis.max()) + 1  # original rule: text after a block starts at max + 1
        cursor = e
    pieces.append(np.broadcast_to(np.arange(nxt, nxt + len(ids) - cursor), (3, len(ids) - cursor)))
    pos = np.concatenate(pieces, axis=1).astype(np.int64)
    return pos, int(pos.max()) + 1 - len(ids)


def batch_mrope_positions(
    rows: Sequence[np.ndarray],
    image_grid_thw: Sequence[np.ndarray | None] | None,
    video_grid_thw: Sequence[np.ndarray | None] | None,
    second_per_grid_ts: Sequence[Sequence[float] | None] | None,
    *,
    pad_to: int | None = None,
    **kw,
) -> tuple[np.ndarray, np.ndarray]:
    """Right-padded positions [3, B, L_pad] and rope deltas [B] for rows of different lengths.

    Grid arguments are per row (a list with one entry, possibly None, per row). Padding slot s of a
    row gets s + delta on all axes, i.e. it continues exactly as decoding would.
    """
    b = len(rows)
    per_row = lambda x: [None] * b if x is None else list(x)  # noqa: E731
    imgs, vids, secs = per_row(image_grid_thw), per_row(video_grid_thw), per_row(second_per_grid_ts)
    if not (len(imgs) == len(vids) == len(secs) == b):
        raise ValueError(f"per-row grid lists must have {b} entries, got {len(imgs)}, {len(vids)}, {len(secs)}")
    lengths = [len(r) for r in rows]
    length = max(lengths, default=0) if pad_to is None else pad_to
    if lengths and max(lengths) > length:
        raise ValueError(f"pad_to={pad_to} is shorter than the longest row ({max(lengths)})")
    out = np.broadcast_to(np.arange(length, dtype=np.int64), (3, b, length)).copy()
    deltas = np.zeros(b, np.int64)
    for i, row in enumerate(rows):
        pos, deltas[i] = mrope_positions(row, imgs[i], vids[i], secs[i], **kw)
        out[:, i, : len(row)] = pos
        out[:, i, len(row):] += deltas[i]
    return out, deltas


def mrope_cos_sin(inv_freq: np.ndarray, positions, mrope_section: Sequence[int], dtype,
                  attention_scaling: float = 1.0):
    """cos, sin [B, N, D] for M-RoPE positions [3, B, N] (HF rotate_half layout).

    Frequency chunk i (sizes `mrope_section`, in units of the D/2 frequencies) takes its angle from
    axis i % 3 (temporal, height, width); the selected half is then repeated, as in HF.
    """
    inv_freq = np.asarray(inv_freq, np.float32)
    if sum(mrope_section) != inv_freq.shape[0]:
        raise ValueError(f"sum(mrope_section)={sum(mrope_section)} must equal head_dim/2={inv_freq.shape[0]}")
    angles = jnp.asarray(positions).astype(jnp.float32)[..., None] * jnp.asarray(inv_freq)  # [3,B,N,D/2]
    bounds = np.cumsum([0, *mrope_section])  # static chunk boundaries
    angles = jnp.concatenate([angles[i % 3, ..., bounds[i]:bounds[i + 1]] for i in range(len(mrope_section))],
                             axis=-1)
    angles = jnp.concatenate([angles, angles], axis=-1)
    return ((jnp.cos(angles) * attention_scaling).astype(dtype),
            (jnp.sin(angles) * attention_scaling).astype(dtype))
