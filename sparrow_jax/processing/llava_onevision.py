"""LLaVA-OneVision video preprocessing in numpy, matching Hugging Face's PIL backend bit for bit.

HF reference (transformers 5.23): `LlavaOnevisionVideoProcessor` sets BICUBIC resize to a fixed square
size, rescale 1/255 and OpenAI-CLIP normalization; the PIL backend (`image_processing_backends.PilBackend`
-> `image_transforms.resize/rescale/normalize`) defines the exact arithmetic reproduced here. Token counts
follow `LlavaOnevisionProcessor.replace_video_token`.
"""

from __future__ import annotations

import math

import numpy as np

from sparrow_jax.processing.common import (  # noqa: F401  (re-exported for callers of this family)
    OPENAI_CLIP_MEAN,
    OPENAI_CLIP_STD,
    check_frames,
    expand_video_placeholder,
    resize_rescale_normalize,
)


def preprocess_video(frames: np.ndarray, image_size: int = 384) -> np.ndarray:
    """uint8 `[T, H, W, 3]` RGB frames -> float32 `[T, image_size, image_size, 3]` (channels last).

    Each frame is resized straight to the square size (videos get no pad-to-square and no anyres patches).
    """
    frames = check_frames(frames)
    if not isinstance(image_size, (int, np.integer)) or image_size < 1:
        raise ValueError(f"image_size must be a positive int, got {image_size!r}")
    return resize_rescale_normalize(frames, image_size, image_size)


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
