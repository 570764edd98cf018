"""Video preprocessing per target family, and one entry point that picks the family from the config.

    ids, video = video_prompt(target.config, prompt_ids, frames)   # any supported target
    infer.generate(target, [ids], [video])
"""

from __future__ import annotations

from sparrow_jax.config import LlavaOnevisionConfig, Qwen25VLConfig
from sparrow_jax.processing import llava_onevision, qwen2_5_vl
from sparrow_jax.processing.common import expand_video_placeholder


def video_prompt(config, prompt_ids, frames, *, fps: float | None = None, min_pixels: int | None = None,
                 max_pixels: int | None = None):
    """A prompt with one video placeholder token plus that video's uint8 frames [T, H, W, 3] ->
    (prompt ids with the placeholder expanded, the row's video input for `infer.generate`).

    `fps` is the frame rate of the given (already sampled) frames; Qwen2.5-VL uses it for M-RoPE time.
    `min_pixels` / `max_pixels` bound Qwen2.5-VL's frame size (default: HF's video processor's).
    """
    if isinstance(config, LlavaOnevisionConfig):
        pixels = llava_onevision.preprocess_video(frames, config.vision.image_size)
        n = config.num_video_tokens(len(pixels))
        return expand_video_placeholder(prompt_ids, config.video_token_id, n), pixels
    if isinstance(config, Qwen25VLConfig):
        v = config.vision
        video = qwen2_5_vl.preprocess_video(
            frames, patch_size=v.patch_size, temporal_patch_size=v.temporal_patch_size,
            merge_size=v.spatial_merge_size, fps=fps, **_pixel_bounds(min_pixels, max_pixels),
        )
        return expand_video_placeholder(prompt_ids, config.video_token_id, config.num_video_tokens(video[1])), video
    raise ValueError(f"target {type(config).__name__} does not take video")


def frame_size(config, height: int, width: int, *, min_pixels: int | None = None,
               max_pixels: int | None = None) -> tuple[int, int]:
    """(height, width) that `video_prompt` resizes a `height x width` frame to, for this target.

    Frames already at this size pass through preprocessing unchanged, so decoding can resize early."""
    if isinstance(config, LlavaOnevisionConfig):
        return config.vision.image_size, config.vision.image_size
    if isinstance(config, Qwen25VLConfig):
        factor = config.vision.patch_size * config.vision.spatial_merge_size
        return qwen2_5_vl.smart_resize(height, width, factor, **_pixel_bounds(min_pixels, max_pixels))
    raise ValueError(f"target {type(config).__name__} does not take video")


def _pixel_bounds(min_pixels, max_pixels) -> dict:
    return {
        "min_pixels": qwen2_5_vl.VIDEO_MIN_PIXELS if min_pixels is None else min_pixels,
        "max_pixels": qwen2_5_vl.VIDEO_MAX_PIXELS if max_pixels is None else max_pixels,
    }


__all__ = ["video_prompt", "frame_size", "expand_video_placeholder"]
