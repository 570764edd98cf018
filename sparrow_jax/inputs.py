"""Host-side (numpy) preparation of a batch of prompts for a target, before anything is jitted.

Prompts are right-padded to a bucketed length so that few shapes are compiled; each row keeps its
true length. Video inputs are validated against the placeholder tokens here, with a clear error,
never deep inside XLA.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

from sparrow_jax.config import LlavaOnevisionConfig, Qwen25VLConfig, TextConfig
from sparrow_jax.models.qwen2_5_vl import VideoInput
from sparrow_jax.mrope import batch_mrope_positions


@dataclasses.dataclass(frozen=True)
class PromptBatch:
    input_ids: np.ndarray  # [B, L] int32, right-padded
    lengths: np.ndarray  # [B] int32
    positions: np.ndarray  # [B, L] int32 rotary positions of the prompt tokens
    rope_delta: np.ndarray  # [B] int32: position of a token at cache slot s is s + rope_delta
    # LLaVA-OneVision: [B, T, S, S, 3] float32 pixels (channels-last); Qwen2.5-VL: a VideoInput
    video: object | None = None

    @property
    def batch(self) -> int:
        return self.input_ids.shape[0]


def bucket(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


def visual_token_ids(config) -> tuple[int, ...]:
    """Placeholder tokens whose positions the draft never sees (VATA)."""
    if isinstance(config, (LlavaOnevisionConfig, Qwen25VLConfig)):
        return (config.video_token_id, config.image_token_id)
    return ()


def text_positions(batch: PromptBatch, config, multiple: int, include_visual: bool = False):
    """Per row, the prompt positions that are not visual placeholders (all positions with
    `include_visual`: the EAGLE/MSD baseline), left-aligned and padded (with the last one) to a multiple
    of `multiple`: (index [B, T] int32, count [B] int32)."""
    visual = np.isin(batch.input_ids, () if include_visual else visual_token_ids(config))
    keep = [np.flatnonzero(~visual[b, : batch.lengths[b]]) for b in range(batch.batch)]
    if any(len(k) == 0 for k in keep):
        raise ValueError("a prompt has no text tokens; the draft needs at least one")
    width = bucket(max(len(k) for k in keep), multiple)
    index = np.stack([np.pad(k, (0, width - len(k)), mode="edge") for k in keep]).astype(np.int32)
    return index, np.array([len(k) for k in keep], np.int32)


def pad_to(batch: PromptBatch, width: int, pad_id: int = 0) -> PromptBatch:
    """The same batch right-padded to `width` tokens; padded positions continue each row's positions."""
    extra = width - batch.input_ids.shape[1]
    if extra < 0:
        raise ValueError(f"cannot pad a batch of width {batch.input_ids.shape[1]} to {width}")
    ids = np.pad(batch.input_ids, ((0, 0), (0, extra)), constant_values=pad_id)
    tail = batch.positions[..., -1:] + np.arange(1, extra + 1, dtype=batch.positions.dtype)
    return dataclasses.replace(batch, input_ids=ids, positions=np.concatenate([batch.positions, tail], axis=-1))


def prepare(config, prompts: Sequence[Sequence[int]], video=None, *, pad_id: int = 0, multiple: int = 64) -> PromptBatch:
    """Pad `prompts` (one token list per row, video placeholders already expanded) into a PromptBatch."""
    rows = [np.asarray(p, dtype=np.int64).reshape(-1) for p in prompts]
    if not rows or any(len(r) == 0 for r in rows):
        raise ValueError("every prompt needs at least one token")
    lengths = np.array([len(r) for r in rows], np.int32)
    width = bucket(int(lengths.max()), multiple)
    ids = np.full((len(rows), width), pad_id, np.int32)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = r
    positions = np.broadcast_to(np.arange(width, dtype=np.int32), ids.shape).copy()
    deltas = np.zeros(len(rows), np.int32)
    if isinstance(config, Qwen25VLConfig):
        video, positions, deltas = _qwen_video(config, rows, video, width)
    elif isinstance(config, LlavaOnevisionConfig):
        video = _check_video(config, rows, video)
    elif not isinstance(config, TextConfig):
        raise TypeError(f"unsupported target config {type(config).__name__}")
    elif video is not None:
        raise ValueError("this target is text-only; it cannot take a video")
    return PromptBatch(ids, lengths, positions, deltas, video)


def _qwen_video(config: Qwen25VLConfig, rows, video, width):
    """Qwen2.5-VL: `video` is one (pixel_values, grid_thw, second_per_grid_t) per row (or None per row),
    as `sparrow_jax.processing.qwen2_5_vl.preprocess_video` returns. M-RoPE positions by the original rule."""
    videos = [None] * len(rows) if video is None else list(video)
    if len(videos) != len(rows):
        raise ValueError(f"got {len(videos)} videos for {len(rows)} prompts (use None for a row without video)")
    grids = [None if v is None else [np.asarray(v[1], np.int64).reshape(3)] for v in videos]
    secs = [None if v is None else [float(v[2])] for v in videos]
    positions, deltas = batch_mrope_positions(
        rows, None, grids, secs, pad_to=width, image_token_id=config.image_token_id,
        video_token_id=config.video_token_id, vision_start_token_id=config.vision_start_token_id,
        spatial_merge_size=config.vision.spatial_merge_size, tokens_per_second=config.tokens_per_second,
    )
    present = [v for v in videos if v is not None]
    for i, v in enumerate(videos):
        if v is not None and np.shape(v[0])[0] != int(np.prod(grids[i][0])):
            raise ValueError(f"row {i}: pixel_values has {np.shape(v[0])[0]} patches but grid_thw "
                             f"{grids[i][0].tolist()} needs {int(np.prod(grids[i][0]))}")
    vinput = None
    if present:
        vinput = VideoInput.build(
            np.concatenate([v[0] for v in present]), np.stack([g[0] for g in grids if g is not None]), config
        )
    return vinput, positions.astype(np.int32), deltas.astype(np.int32)


def _check_video(config: LlavaOnevisionConfig, rows, video):
    counts = [int(np.sum(r == config.video_token_id)) for r in rows]
    if any(int(np.sum(r == config.image_token_id)) for r in rows):
        raise ValueError("image inputs are not supported yet; pass the image as a one-frame video")
    if video is None:
        if any(counts):
            raise ValueError(f"prompts hold video tokens ({counts} per row) but no video was given")
        return None
    if isinstance(video, (list, tuple)) and len({np.shape(v) for v in video}) > 1:
        shapes = [tuple(np.shape(v)) for v in video]
        raise ValueError(f"the rows' videos have different shapes {shapes}: the rows of a batch share one frame "
                         "count; sample the same number of frames for each, or generate them separately")
    video = np.asarray(video, np.float32)  # also stacks a list of per-row [T, S, S, 3] videos
    size = config.vision.image_size
    if video.ndim != 5 or video.shape[0] != len(rows) or video.shape[2:] != (size, size, 3):
        raise ValueError(
            f"video must be preprocessed pixels [batch={len(rows)}, frames, {size}, {size}, 3], got {video.shape}"
        )
    need = config.num_video_tokens(video.shape[1])
    for i, c in enumerate(counts):
        if c != need:
            raise ValueError(
                f"row {i}: the prompt has {c} video tokens but a {video.shape[1]}-frame video needs {need} "
                f"({video.shape[1]} x {config.pooled_grid ** 2} + 1 newline); expand the placeholder with "
                "sparrow_jax.processing.llava_onevision.expand_video_placeholder"
            )
    return video
