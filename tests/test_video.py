"""Reading videos with PyAV: frame contents through two codecs, sampled indices and timestamps, presets,
resizing while decoding equals preprocessing the full-size frames, and the errors for bad files."""

import dataclasses

import numpy as np
import pytest
from helpers import CLIP_FRAMES as N, CLIP_H as H, CLIP_RATE as RATE, CLIP_W as W, write_clip
from transformers.video_utils import VideoMetadata, default_sample_indices_fn

from sparrow_jax.config import LlavaOnevisionConfig, Qwen25VisionConfig, Qwen25VLConfig, SiglipConfig, TextConfig
from sparrow_jax.processing import frame_size, video_prompt
from sparrow_jax.video import PRESETS, Sampling, VideoError, read_video, sample_indices



@pytest.fixture(scope="module", params=[("mp4", "libx264"), ("webm", "libvpx-vp9")], ids=["mp4-h264", "webm-vp9"])
def video_file(request, tmp_path_factory):
    ext, codec = request.param
    return write_clip(tmp_path_factory.mktemp("video") / f"clip.{ext}", codec)


def test_every_frame_decodes_to_its_contents(video_file):
    v = read_video(video_file, Sampling(num_frames=N))
    assert v.frames.shape == (N, H, W, 3) and v.frames.dtype == np.uint8
    assert (v.total_frames, v.native_fps, v.source_size) == (N, RATE, (H, W))
    np.testing.assert_array_equal(v.indices, np.arange(N))
    np.testing.assert_allclose(v.timestamps, np.arange(N) / RATE, atol=1e-3)
    red = v.frames[:, :, W // 2 + 4 :, 0].astype(float).mean(axis=(1, 2))
    np.testing.assert_allclose(red, 20 * np.arange(N), atol=6)  # lossy codecs, flat colours
    assert np.all(v.frames[:, :, : W // 2 - 4, 1] > 180) and np.all(v.frames[:, :, W // 2 + 4 :, 1] < 30)


def test_sampling_by_count_and_by_fps(video_file):
    v = read_video(video_file, Sampling(num_frames=5))
    np.testing.assert_array_equal(v.indices, [0, 2, 4, 7, 9])
    np.testing.assert_allclose(v.timestamps, v.indices / RATE, atol=1e-3)
    red = v.frames[:, :, W // 2 + 4 :, 0].astype(float).mean(axis=(1, 2))
    np.testing.assert_allclose(red, 20 * v.indices, atol=6)
    assert v.fps == pytest.approx(5 / N * RATE)
    v = read_video(video_file, PRESETS["qwen2_5_vl"].sampling)  # 2 fps over 2 s: 4 frames
    np.testing.assert_array_equal(v.indices, [0, 3, 6, 9])
    assert v.fps == pytest.approx(2.0)  # second_per_grid_t = 2 / 2.0 = 1 s


def test_sample_indices_rules():
    for total, n in [(12, 5), (300, 32), (7, 7), (1000, 128)]:
        meta = VideoMetadata(total_num_frames=total, fps=30.0)
        np.testing.assert_array_equal(sample_indices(total, 30.0, Sampling(num_frames=n)),
                                      default_sample_indices_fn(meta, num_frames=n))
    assert sample_indices(10, 30.0, Sampling(num_frames=32)).tolist() == list(range(10))  # all there is
    qwen = PRESETS["qwen2_5_vl"].sampling
    assert len(sample_indices(30 * 600, 30.0, qwen)) == 160  # a 10-minute video: capped at 160 frames
    assert len(sample_indices(45, 30.0, qwen)) == 4  # 1.5 s at 2 fps = 3, raised to min 4 frames
    assert len(sample_indices(75, 30.0, qwen)) == 4  # 2.5 s -> 5 frames, rounded down to the temporal patch
    assert sample_indices(1, 30.0, qwen).tolist() == [0]
    with pytest.raises(VideoError, match="frame rate"):
        sample_indices(10, None, qwen)
    with pytest.raises(ValueError, match="exactly one"):
        Sampling(num_frames=4, fps=2.0)


def tiny_configs():
    text = TextConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_layers=1, num_heads=2,
                      num_kv_heads=1, head_dim=16)
    llava = LlavaOnevisionConfig(text, SiglipConfig(32, 64, 1, 2, image_size=35, patch_size=7), 60, 61)
    qwen = Qwen25VLConfig(dataclasses.replace(text, mrope_section=(2, 3, 3)), Qwen25VisionConfig(depth=1, hidden_size=32, intermediate_size=64, num_heads=2,
                                                   out_hidden_size=32, fullatt_block_indexes=(0,)), 60, 61, 62)
    return llava, qwen


@pytest.mark.parametrize("family", ["llava_onevision", "qwen2_5_vl"])
def test_resizing_while_decoding_equals_preprocessing_full_frames(video_file, family):
    config = dict(zip(["llava_onevision", "qwen2_5_vl"], tiny_configs()))[family]
    max_pixels = 28 * 28 * 2  # small, so that Qwen2.5-VL frames shrink too
    kw = dict(min_pixels=28 * 28, max_pixels=max_pixels)
    full = read_video(video_file, Sampling(num_frames=4))
    small = read_video(video_file, Sampling(num_frames=4), lambda h, w: frame_size(config, h, w, **kw))
    assert small.frames.shape[1:3] == frame_size(config, H, W, **kw) != (H, W)
    ids = [1, 2, config.video_token_id, 3]
    ref_ids, ref = video_prompt(config, ids, full.frames, fps=full.fps, **kw)
    got_ids, got = video_prompt(config, ids, small.frames, fps=small.fps, **kw)
    np.testing.assert_array_equal(got_ids, ref_ids)
    as_tuple = lambda x: x if isinstance(x, tuple) else (x,)  # noqa: E731  (Qwen: pixels, grid, seconds per grid)
    for a, b in zip(as_tuple(got), as_tuple(ref), strict=True):
        np.testing.assert_array_equal(a, b)  # bit for bit


def test_bad_files(tmp_path):
    with pytest.raises(VideoError, match="no such file"):
        read_video(tmp_path / "missing.mp4", Sampling(num_frames=4))
    (tmp_path / "notes.mp4").write_text("not a video\n" * 20)
    with pytest.raises(VideoError, match="cannot read it as a video"):
        read_video(tmp_path / "notes.mp4", Sampling(num_frames=4))
    data = write_clip(tmp_path / "clip.mp4", "libx264").read_bytes()
    (tmp_path / "cut.mp4").write_bytes(data[: len(data) // 2])  # mp4 index at the end: unreadable
    with pytest.raises(VideoError, match="cannot read it as a video"):
        read_video(tmp_path / "cut.mp4", Sampling(num_frames=4))
    data = write_clip(tmp_path / "clip.webm", "libvpx-vp9").read_bytes()
    (tmp_path / "cut.webm").write_bytes(data[: len(data) // 2])  # header only: no frame left
    with pytest.raises(VideoError, match="no decodable video frames"):
        read_video(tmp_path / "cut.webm", Sampling(num_frames=4))
