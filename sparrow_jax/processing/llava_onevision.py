"""LLaVA-OneVision video preprocessing in numpy, matching Hugging Face's PIL backend bit for bit.

HF reference (transformers 5.23): `LlavaOnevisionVideoProcessor` sets BICUBIC resize to a fixed square
size, rescale 1/255 and OpenAI-CLIP normalization; the PIL backend (`image_processing_backends.PilBackend`
-> `image_transforms.resize/rescale/normalize`) defines the exact arithmetic reproduced here. Token counts
follow `LlavaOnevisionProcessor.replace_video_token`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from PIL import Image

# transformers.image_utils.OPENAI_CLIP_MEAN / OPENAI_CLIP_STD
OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def preprocess_video(frames: np.ndarray, image_size: int = 384) -> np.ndarray:
    """uint8 `[T, H, W, 3]` RGB frames -> float32 `[T, image_size, image_size, 3]` (channels last).

    Each frame is resized straight to the square size (videos get no pad-to-square and no anyres patches).
    """
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must have shape [T, H, W, 3], got shape {frames.shape}")
    if frames.dtype != np.uint8:
        raise ValueError(f"frames must be uint8, got dtype {frames.dtype} (shape {frames.shape})")
    if frames.shape[0] < 1:
        raise ValueError(f"frames must hold at least one frame, got shape {frames.shape}")
    if not isinstance(image_size, (int, np.integer)) or image_size < 1:
        raise ValueError(f"image_size must be a positive int, got {image_size!r}")

    # HF hands uint8 straight to PIL (no rescale round trip), resizes there, and gets uint8 back.
    size = (int(image_size), int(image_size))  # PIL takes (width, height)
    resized = np.stack([np.asarray(Image.fromarray(f).resize(size, Image.Resampling.BICUBIC)) for f in frames])
    # image_transforms.rescale: upcast to float64, multiply by 1/255, then downcast to float32.
    x = (resized.astype(np.float64) * (1 / 255)).astype(np.float32)
    # image_transforms.normalize: float32 mean/std arrays, (x - mean) / std computed in float32.
    mean = np.array(OPENAI_CLIP_MEAN, dtype=np.float32)
    std = np.array(OPENAI_CLIP_STD, dtype=np.float32)
    return (x - mean) / std


def num_video_tokens(num_frames: int, image_size: int, patch_size: int) -> int:
    """Placeholder tokens for one video: per frame the patch grid is 2x2-pooled (ceil), plus one newline token."""
    if num_frames < 1 or patch_size < 1 or image_size < patch_size:
        raise ValueError(
            f"need num_frames >= 1 and image_size >= patch_size >= 1, got num_frames={num_frames}, "
            f"image_size={image_size}, patch_size={patch_size}"
        )
    # HF: sqrt(num_image_tokens) with num_image_tokens = (image_size // patch_size)**2.
    pooled = math.ceil((image_size // patch_size) / 2)
    return num_frames * pooled * pooled + 1


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
