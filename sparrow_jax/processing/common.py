"""Preprocessing shared by the families: frame checks, HF PIL-backend resize/rescale/normalize,
placeholder expansion."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image

# transformers.image_utils.OPENAI_CLIP_MEAN / OPENAI_CLIP_STD
OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def check_frames(frames) -> np.ndarray:
    """uint8 [T, H, W, 3] with T, H, W >= 1, else a ValueError that names the problem."""
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must have shape [T, H, W, 3], got shape {frames.shape}")
    if frames.dtype != np.uint8:
        raise ValueError(f"frames must be uint8, got dtype {frames.dtype} (shape {frames.shape})")
    if frames.shape[0] < 1:
        raise ValueError(f"frames must hold at least one frame, got shape {frames.shape}")
    if frames.shape[1] < 1 or frames.shape[2] < 1:
        raise ValueError(f"frames must have non-empty height and width, got shape {frames.shape}")
    return frames


def resize_rescale_normalize(frames: np.ndarray, height: int, width: int) -> np.ndarray:
    """uint8 `[T, H, W, 3]` -> float32 `[T, height, width, 3]`, with HF PIL-backend arithmetic."""
    # HF hands uint8 straight to PIL (no rescale round trip), resizes there, and gets uint8 back.
    size = (int(width), int(height))  # PIL takes (width, height)
    resized = np.stack([np.asarray(Image.fromarray(f).resize(size, Image.Resampling.BICUBIC)) for f in frames])
    # image_transforms.rescale: upcast to float64, multiply by 1/255, then downcast to float32.
    x = (resized.astype(np.float64) * (1 / 255)).astype(np.float32)
    # image_transforms.normalize: float32 mean/std arrays, (x - mean) / std computed in float32.
    mean = np.array(OPENAI_CLIP_MEAN, dtype=np.float32)
    std = np.array(OPENAI_CLIP_STD, dtype=np.float32)
    return (x - mean) / std


def expand_video_placeholder(input_ids, video_token_id: int, num_tokens: int | Sequence[int]) -> np.ndarray:
    """Replace each single `video_token_id` placeholder by its video's `num_tokens` copies (int32 1-D).

    `num_tokens` is an int (one video) or one count per placeholder, in prompt order.
    """
    ids = np.asarray(input_ids)
    if ids.ndim != 1:
        raise ValueError(f"input_ids must be 1-D, got shape {ids.shape}")
    counts = [int(num_tokens)] if np.ndim(num_tokens) == 0 else [int(n) for n in num_tokens]
    if any(n < 1 for n in counts):
        raise ValueError(f"num_tokens must all be >= 1, got {counts}")
    pos = np.flatnonzero(ids == video_token_id)
    if len(pos) != len(counts):
        # A prompt that was already expanded holds runs of placeholders rather than single ones.
        hint = ""
        if len(pos) == sum(counts) or np.any(np.diff(pos) == 1):
            hint = " (consecutive placeholders: the prompt looks already expanded)"
        raise ValueError(
            f"found {len(pos)} video placeholder tokens (id {video_token_id}) but {len(counts)} videos{hint}"
        )
    reps = np.ones(len(ids), dtype=np.int64)
    reps[pos] = counts
    return np.repeat(ids, reps).astype(np.int32)
