"""Reading video files with PyAV: uniform frame sampling (by count or by fps), the paper's presets, and
resizing each kept frame as it is decoded, so a long high-resolution video never sits in memory at full size.

    video = read_video("clip.mp4", Sampling(fps=2.0, max_frames=160), size=(252, 448))
    video.frames      # uint8 [T, 252, 448, 3]
    video.timestamps  # seconds of each kept frame; video.fps is the sampled frame rate
    write_video("out.mp4", frames, fps=8)  # uint8 [T, H, W, 3] -> H.264 (or any codec PyAV encodes)

Sampling follows Hugging Face's video processors: `num_frames` frames at indices `i * total // num_frames`
(uniform over the duration, starting at the first frame); with `fps`, `total / native_fps * fps` frames,
clamped to [min_frames, max_frames] and to the frame count, rounded down to `multiple` (Qwen2.5-VL's
temporal patch). A request for more frames than the video has takes every frame.
"""

from __future__ import annotations

import dataclasses
import math
import sys
from collections.abc import Callable

import numpy as np
from PIL import Image


class VideoError(ValueError):
    """A video file that cannot be used: unreadable, corrupt, or without decodable frames."""


@dataclasses.dataclass(frozen=True)
class Sampling:
    """Which frames to keep: exactly one of `num_frames` or `fps` (frames per second of video)."""

    num_frames: int | None = None
    fps: float | None = None
    min_frames: int = 1
    max_frames: int | None = None
    multiple: int = 1  # the kept frame count is rounded down to a multiple of this (never below it)

    def __post_init__(self):
        if (self.num_frames is None) == (self.fps is None):
            raise ValueError(f"give exactly one of num_frames or fps, got num_frames={self.num_frames}, fps={self.fps}")
        if self.num_frames is not None and self.num_frames < 1:
            raise ValueError(f"num_frames must be >= 1, got {self.num_frames}")
        if self.fps is not None and not (math.isfinite(self.fps) and self.fps > 0):
            raise ValueError(f"fps must be a positive number, got {self.fps}")
        if self.min_frames < 1 or self.multiple < 1 or (self.max_frames is not None and self.max_frames < 1):
            raise ValueError(f"min_frames, max_frames and multiple must be >= 1, got {self}")


@dataclasses.dataclass(frozen=True)
class Preset:
    """The paper's settings per target family: frame sampling and, for Qwen2.5-VL, the pixel budget."""

    sampling: Sampling
    max_pixels: int | None = None  # Qwen2.5-VL frames are resized to at most this many pixels


PRESETS = {
    # Qwen2.5-VL: 2 frames per second (HF's default), at most 160 frames of at most 448x448 pixels.
    "qwen2_5_vl": Preset(Sampling(fps=2.0, min_frames=4, max_frames=160, multiple=2), max_pixels=448 * 448),
    "llava_onevision_32": Preset(Sampling(num_frames=32)),
    "llava_onevision_64": Preset(Sampling(num_frames=64)),
    "llava_onevision_128": Preset(Sampling(num_frames=128)),
}
DEFAULT_PRESET = {"qwen2_5_vl": "qwen2_5_vl", "llava_onevision": "llava_onevision_32"}


@dataclasses.dataclass
class Video:
    frames: np.ndarray  # uint8 [T, h, w, 3] RGB, resized while decoding
    indices: np.ndarray  # [T] frame index of each kept frame in the file
    timestamps: np.ndarray  # [T] float64 seconds
    fps: float | None  # frame rate of the kept frames (None when the file gives no rate and one frame is kept)
    total_frames: int  # frames in the file
    native_fps: float | None  # the file's average frame rate
    source_size: tuple[int, int]  # (height, width) in the file


def sample_indices(total_frames: int, native_fps: float | None, sampling: Sampling) -> np.ndarray:
    """Indices of the frames to keep out of `total_frames`, uniform over the duration."""
    if total_frames < 1:
        raise VideoError("the video has no frames")
    if sampling.num_frames is not None:
        n = sampling.num_frames
    else:
        if not native_fps:
            raise VideoError("the video does not state its frame rate, so it cannot be sampled by fps; "
                             "sample a number of frames instead (--frames N)")
        n = total_frames / native_fps * sampling.fps
    n = max(n, sampling.min_frames)
    if sampling.max_frames is not None:
        n = min(n, sampling.max_frames)
    n = min(n, total_frames)
    n = max(math.floor(n / sampling.multiple) * sampling.multiple, min(sampling.multiple, total_frames))
    return np.arange(n, dtype=np.int64) * total_frames // n


def read_video(
    path,
    sampling: Sampling,
    size: tuple[int, int] | Callable[[int, int], tuple[int, int]] | None = None,
    progress: bool = False,
) -> Video:
    """Decode the frames `sampling` picks from the video file at `path`.

    `size` is the (height, width) kept frames are resized to (bicubic, Pillow), or a function of the file's
    (height, width) that returns it; None keeps the file's size. Raises VideoError for a file that cannot be
    read or holds no decodable video frame."""
    import av  # imported here: loading a checkpoint does not need PyAV

    try:
        with av.open(str(path)) as container:
            stream = _video_stream(container, path)
            total = stream.frames or _count_packets(container, stream)
            native = float(stream.average_rate or stream.guessed_rate or 0) or None
            source = (stream.codec_context.height, stream.codec_context.width)
    except FileNotFoundError:
        raise VideoError(f"{path}: no such file; check the --video path") from None
    except (av.FFmpegError, OSError, UnicodeDecodeError) as e:
        raise VideoError(f"{path}: cannot read it as a video ({e}); give an mp4, webm, mkv or avi file") from None
    if total < 1 or min(source) < 1:
        raise VideoError(f"{path}: the file holds no decodable video frames; give a video with at least one frame")
    wanted = sample_indices(total, native, sampling)
    target = size(*source) if callable(size) else size
    frames, kept, times = _decode(path, wanted, target, progress)
    if not frames:
        raise VideoError(f"{path}: none of its video frames could be decoded (corrupt file?); re-encode it, "
                         "e.g. ffmpeg -i IN -c:v libx264 OUT.mp4")
    kept, times = np.asarray(kept, np.int64), np.asarray(times, np.float64)
    return Video(np.stack(frames), kept, times, _sampled_fps(len(kept), total, native, times), total, native, source)


def _video_stream(container, path):
    if not container.streams.video:
        raise VideoError(f"{path}: the file has no video stream; give a video file (mp4, webm, mkv, avi)")
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"
    return stream


def _count_packets(container, stream) -> int:
    """Frame count of a container that does not state it (webm, mkv): its video packets, demuxed, not decoded."""
    return sum(1 for packet in container.demux(stream) if packet.size)


def _decode(path, wanted: np.ndarray, size, progress: bool):
    """Decode frames in order up to the last wanted one; convert and resize only the wanted ones."""
    import av
    from tqdm import tqdm

    keep = set(wanted.tolist())
    frames, kept, times = [], [], []
    bar = tqdm(total=int(wanted[-1]) + 1, desc="decoding video", unit="frame", delay=1.0, leave=False,
               disable=not progress, file=sys.stderr)
    try:
        with av.open(str(path)) as container:
            stream = _video_stream(container, path)
            for i, frame in enumerate(container.decode(stream)):
                bar.update(1)
                if i in keep:
                    image = frame.to_image()  # RGB24 at the file's size: one frame at a time
                    if size is not None and image.size != (size[1], size[0]):
                        image = image.resize((size[1], size[0]), Image.Resampling.BICUBIC)
                    frames.append(np.asarray(image, np.uint8))
                    kept.append(i)
                    times.append(frame.time if frame.time is not None else math.nan)
                if i >= wanted[-1]:
                    break
    except av.FFmpegError as e:  # a corrupt stretch: keep what was decoded before it
        if not frames:
            raise VideoError(f"{path}: decoding failed ({e}); the file looks corrupt, re-encode it") from None
        print(f"warning: {path}: decoding stopped early ({e}); using {len(frames)} frames", file=sys.stderr)
    finally:
        bar.close()
    if frames and len(kept) < len(wanted):
        print(f"warning: {path}: only {i + 1} frames decoded; using {len(kept)} of the {len(wanted)} sampled",
              file=sys.stderr)
    return frames, kept, times


def _sampled_fps(n: int, total: int, native: float | None, times: np.ndarray) -> float | None:
    """Frame rate of the kept frames: HF's `n / total * native_fps`, else measured from the timestamps."""
    if native:
        return n / total * native
    span = times[-1] - times[0] if n > 1 else math.nan
    return (n - 1) / span if math.isfinite(span) and span > 0 else None


def write_video(path, frames: np.ndarray, fps: int, codec: str = "libx264", options: dict | None = None) -> None:
    """Encode uint8 RGB frames [T, H, W, 3] (H, W even for 4:2:0) with PyAV; `options` are the codec's
    (e.g. {"crf": "12"} for H.264 that keeps colours)."""
    import av

    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(codec, rate=int(fps))
        stream.height, stream.width = frames.shape[1:3]
        stream.pix_fmt = "yuv420p"
        stream.options = dict(options or {})
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")))
        container.mux(stream.encode())
