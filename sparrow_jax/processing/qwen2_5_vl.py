"""Qwen2.5-VL video preprocessing in numpy, matching Hugging Face's PIL backend bit for bit.

HF reference (transformers 5.23; Qwen2.5-VL reuses Qwen2-VL's processors):
- `models/qwen2_vl/image_processing_pil_qwen2_vl.py`: `smart_resize`, and the PIL backend's per-frame arithmetic
  (BICUBIC resize through Pillow, rescale 1/255, OpenAI-CLIP normalization) reproduced here.
- `models/qwen2_vl/video_processing_qwen2_vl.py` (`Qwen2VLVideoProcessor`, torchvision only): default min/max
  pixels, padding the frame count to a multiple of `temporal_patch_size` with copies of the last frame, and the
  patch flattening order of `patchify`. Its own resize (torchvision) and fused rescale+normalize (torch) are not
  reproduced; the PIL backend's arithmetic is used instead, as in the image processor.
- `models/qwen2_5_vl/processing_qwen2_5_vl.py`: placeholder count `t*h*w // merge_size**2` and
  `second_per_grid_ts = temporal_patch_size / fps`, where fps falls back to 24 when the video has no known frame
  rate (`video_utils.VideoMetadata.sampled_fps`).

Note: HF's video processor loads `preprocessor_config.json` when a checkpoint has no
`video_preprocessor_config.json`, so a checkpoint's image `min_pixels`/`max_pixels` can end up applying to videos;
pass them explicitly to `preprocess_video` to match such a setup.
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

# Qwen2VLImageProcessorPil.size = {"shortest_edge": 56 * 56, "longest_edge": 28 * 28 * 1280}
IMAGE_MIN_PIXELS = 56 * 56
IMAGE_MAX_PIXELS = 28 * 28 * 1280
# Qwen2VLVideoProcessor.size = {"shortest_edge": 128 * 28 * 28, "longest_edge": 28 * 28 * 768}
VIDEO_MIN_PIXELS = 128 * 28 * 28
VIDEO_MAX_PIXELS = 28 * 28 * 768
# VideoMetadata.sampled_fps falls back to 24 when the frame rate is unknown.
DEFAULT_VIDEO_FPS = 24.0
MAX_ASPECT_RATIO = 200

__all__ = [
    "DEFAULT_VIDEO_FPS",
    "IMAGE_MAX_PIXELS",
    "IMAGE_MIN_PIXELS",
    "OPENAI_CLIP_MEAN",
    "OPENAI_CLIP_STD",
    "VIDEO_MAX_PIXELS",
    "VIDEO_MIN_PIXELS",
    "expand_video_placeholder",
    "num_video_tokens",
    "preprocess_video",
    "smart_resize",
]


def _positive_int(name: str, value) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return int(value)


def smart_resize(
    height: int,
    width: int,
    factor: int = 28,
    min_pixels: int = IMAGE_MIN_PIXELS,
    max_pixels: int = IMAGE_MAX_PIXELS,
) -> tuple[int, int]:
    """Target `(height, width)`: both multiples of `factor`, area within [min_pixels, max_pixels] where possible,
    aspect ratio kept as closely as possible. Same arithmetic as HF's `smart_resize` (Python `round`, i.e. halves to
    even). Defaults are the image processor's; videos use `VIDEO_MIN_PIXELS`/`VIDEO_MAX_PIXELS`.

    HF raises ZeroDivisionError on a zero side and silently accepts negative ones; this raises ValueError for both.
    """
    height = _positive_int("height", height)
    width = _positive_int("width", width)
    factor = _positive_int("factor", factor)
    if max(height, width) / min(height, width) > MAX_ASPECT_RATIO:
        raise ValueError(
            f"absolute aspect ratio must be smaller than {MAX_ASPECT_RATIO}, got "
            f"{max(height, width) / min(height, width)} (height={height}, width={width})"
        )
    h_bar = round(height / factor) * factor
    w_bar = round(width / factor) * factor
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt((height * width) / max_pixels)
        h_bar = max(factor, math.floor(height / beta / factor) * factor)
        w_bar = max(factor, math.floor(width / beta / factor) * factor)
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


def preprocess_video(
    frames: np.ndarray,
    *,
    patch_size: int = 14,
    temporal_patch_size: int = 2,
    merge_size: int = 2,
    min_pixels: int = VIDEO_MIN_PIXELS,
    max_pixels: int = VIDEO_MAX_PIXELS,
    fps: float | None = None,
) -> tuple[np.ndarray, np.ndarray, float]:
    """uint8 `[T, H, W, 3]` RGB frames -> `(pixel_values, grid_thw, second_per_grid_t)`.

    - `pixel_values`: float32 `[grid_t * grid_h * grid_w, 3 * temporal_patch_size * patch_size**2]`, rows in HF's
      order (time, then merge windows row-major, then the `merge_size x merge_size` patches inside each window),
      each row laid out as `[C, temporal, patch_h, patch_w]`.
    - `grid_thw`: int64 `[3]` = (grid_t, grid_h, grid_w) in patches; grid_t = ceil(T / temporal_patch_size), the
      last frame being repeated to fill the final temporal patch.
    - `second_per_grid_t`: `temporal_patch_size / fps`; `fps` is the frame rate of the frames given (after any
      sampling) and defaults, as in HF, to 24 when unknown.
    """
    frames = check_frames(frames)
    patch_size = _positive_int("patch_size", patch_size)
    temporal_patch_size = _positive_int("temporal_patch_size", temporal_patch_size)
    merge_size = _positive_int("merge_size", merge_size)
    numeric = isinstance(fps, (int, float, np.integer, np.floating)) and not isinstance(fps, bool)
    if fps is not None and not (numeric and math.isfinite(fps) and fps > 0):
        raise ValueError(f"fps must be a positive finite number or None, got {fps!r}")

    num_frames, height, width = frames.shape[:3]
    h, w = smart_resize(height, width, patch_size * merge_size, min_pixels=min_pixels, max_pixels=max_pixels)
    x = resize_rescale_normalize(frames, h, w)  # [T, h, w, C]

    # Qwen2VLVideoProcessor.patchify: pad with copies of the last frame, then flatten in merge-window order.
    if pad := -num_frames % temporal_patch_size:
        x = np.concatenate([x, np.repeat(x[-1:], pad, axis=0)], axis=0)
    grid_t = x.shape[0] // temporal_patch_size
    grid_h, grid_w = h // patch_size, w // patch_size
    channel = x.shape[-1]
    x = x.reshape(
        grid_t,
        temporal_patch_size,
        grid_h // merge_size,
        merge_size,
        patch_size,
        grid_w // merge_size,
        merge_size,
        patch_size,
        channel,
    )
    # -> (t, gh/m, gw/m, mh, mw, C, tp, ph, pw), HF's permute(0, 1, 4, 7, 5, 8, 3, 2, 6, 9) on [B, T, C, H, W].
    x = x.transpose(0, 2, 5, 3, 6, 8, 1, 4, 7)
    pixel_values = np.ascontiguousarray(
        x.reshape(grid_t * grid_h * grid_w, channel * temporal_patch_size * patch_size * patch_size)
    )
    grid_thw = np.array([grid_t, grid_h, grid_w], dtype=np.int64)
    second_per_grid_t = temporal_patch_size / (DEFAULT_VIDEO_FPS if fps is None else float(fps))
    return pixel_values, grid_thw, second_per_grid_t


def num_video_tokens(grid_thw, merge_size: int = 2) -> int:
    """Placeholder tokens for one video: `t * h * w // merge_size**2` (HF `replace_video_token`)."""
    g = np.asarray(grid_thw)
    if g.shape != (3,) or not np.issubdtype(g.dtype, np.integer) or np.any(g < 1):
        raise ValueError(f"grid_thw must be 3 positive ints (t, h, w), got {grid_thw!r} (shape {g.shape})")
    merge_size = _positive_int("merge_size", merge_size)
    t, h, w = (int(v) for v in g)
    if h % merge_size or w % merge_size:
        raise ValueError(f"grid h and w must be multiples of merge_size={merge_size}, got grid_thw={(t, h, w)}")
    return t * h * w // (merge_size * merge_size)
