"""Qwen2.5-VL video preprocessing vs Hugging Face (Qwen2-VL PIL image processor, Qwen2-VL video processor with its
torchvision-only pixel steps swapped for the PIL backend's, Qwen2.5-VL processor token expansion)."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import importlib.util
import sys
import types

import numpy as np
import pytest
import torch
import transformers.processing_utils as hf_processing_utils
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast, Qwen2_5_VLProcessor
from transformers.image_utils import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD
from transformers.models.qwen2_vl import image_processing_pil_qwen2_vl as hf_pil
from transformers.video_processing_utils import VideoProcessorMixin

from sparrow_jax.processing import llava_onevision as lo
from sparrow_jax.processing import qwen2_5_vl as qv

_TV = ("torchvision", "torchvision.transforms", "torchvision.transforms.v2", "torchvision.transforms.v2.functional")


def _load_hf_video_module():
    """Load HF's `video_processing_qwen2_vl` without torchvision (never installed here).

    The module imports `torchvision.transforms.v2.functional as tvF` at the top but uses it only in the torchvision
    backend's resize/normalize, which the subclass below replaces. Empty stand-in modules are placed in
    `sys.modules` just for the import and removed afterwards, as is the module's own private-name entry (which
    `auto_docstring` needs while the classes are defined).
    """
    name = "transformers.models.qwen2_vl.video_processing_qwen2_vl"
    spec = importlib.util.spec_from_file_location(
        name + "_sparrow_test", os.path.join(os.path.dirname(hf_pil.__file__), "video_processing_qwen2_vl.py")
    )
    module = importlib.util.module_from_spec(spec)
    module.__package__ = "transformers.models.qwen2_vl"
    saved = {n: sys.modules.get(n) for n in (*_TV, spec.name)}
    sys.modules.update({n: types.ModuleType(n) for n in _TV})
    sys.modules[spec.name] = module
    try:
        spec.loader.exec_module(module)
    finally:
        for n, m in saved.items():
            if m is None:
                sys.modules.pop(n, None)
            else:
                sys.modules[n] = m
    return module


hf_video = _load_hf_video_module()


class _PilQwen2VLVideoProcessor(hf_video.Qwen2VLVideoProcessor):
    """HF's Qwen2-VL video processor (frame grouping, smart_resize sizing, last-frame padding, patchify, grid_thw)
    with its two torchvision pixel steps replaced by the Qwen2-VL PIL image processor's own methods."""

    cap_pixels_per_frame = False  # the HF default behaviour (None) minus its deprecation warning

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self._pil = hf_pil.Qwen2VLImageProcessorPil()

    def resize(self, videos, size, resample, factor, **kwargs):
        # [B, T, C, H, W] uint8 -> per frame Qwen2VLImageProcessorPil.resize (which calls HF smart_resize).
        out = [[self._pil.resize(f, size=size, resample=resample, factor=factor) for f in v] for v in videos.numpy()]
        return torch.from_numpy(np.array(out))

    def rescale_and_normalize(self, videos, do_rescale, rescale_factor, do_normalize, image_mean, image_std):
        assert do_rescale and do_normalize
        out = [
            [self._pil.normalize(self._pil.rescale(f, rescale_factor), image_mean, image_std) for f in v]
            for v in videos.numpy()
        ]
        return torch.from_numpy(np.array(out, dtype=np.float32))


def _frames(t, h, w, seed=0):
    return np.random.default_rng(seed).integers(0, 256, size=(t, h, w, 3), dtype=np.uint8)


def _max_diff(a, b):
    return float(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)).max())


# --------------------------------------------------------------------------------------------- constants


def test_constants_match_hf():
    img = hf_pil.Qwen2VLImageProcessorPil()
    assert (img.size["shortest_edge"], img.size["longest_edge"]) == (qv.IMAGE_MIN_PIXELS, qv.IMAGE_MAX_PIXELS)
    vid = _PilQwen2VLVideoProcessor()
    assert (vid.size["shortest_edge"], vid.size["longest_edge"]) == (qv.VIDEO_MIN_PIXELS, qv.VIDEO_MAX_PIXELS)
    for p in (img, vid):
        assert (p.patch_size, p.temporal_patch_size, p.merge_size) == (14, 2, 2)
        assert tuple(p.image_mean) == qv.OPENAI_CLIP_MEAN == tuple(OPENAI_CLIP_MEAN)
        assert tuple(p.image_std) == qv.OPENAI_CLIP_STD == tuple(OPENAI_CLIP_STD)
        assert p.resample == hf_pil.PILImageResampling.BICUBIC
    assert qv.expand_video_placeholder is lo.expand_video_placeholder


# ------------------------------------------------------------------------------------------ smart_resize

_SIDES = [1, 2, 3, 7, 13, 14, 27, 28, 29, 41, 42, 55, 56, 70, 98, 111, 224, 333, 480, 719, 720, 1080, 1919, 4000]
_EXTRA = [(1, 200), (200, 1), (3, 600), (600, 3), (5, 999), (10000, 50), (50, 10000), (28, 5600), (7000, 7000)]
_PIXEL_LIMITS = [
    {},
    {"min_pixels": qv.VIDEO_MIN_PIXELS, "max_pixels": qv.VIDEO_MAX_PIXELS},
    {"min_pixels": 3136, "max_pixels": 12845056},  # Qwen2.5-VL checkpoints' preprocessor_config.json values
    {"min_pixels": 4 * 28 * 28, "max_pixels": 16 * 28 * 28},
]


@pytest.mark.parametrize("limits", _PIXEL_LIMITS)
@pytest.mark.parametrize("factor", [28, 32, 14])
def test_smart_resize_matches_hf(factor, limits):
    sizes = [(h, w) for h in _SIDES for w in _SIDES] + _EXTRA
    checked = 0
    for h, w in sizes:
        try:
            ref = hf_pil.smart_resize(h, w, factor, **limits)
        except ValueError as e:
            with pytest.raises(ValueError, match="absolute aspect ratio must be smaller than 200"):
                qv.smart_resize(h, w, factor, **limits)
            assert "aspect ratio" in str(e)
            continue
        assert hf_video.smart_resize(h, w, factor, **limits) == ref  # the video module's copy agrees
        assert qv.smart_resize(h, w, factor, **limits) == ref, (h, w)
        checked += 1
    assert checked > 500


def test_smart_resize_defaults_and_errors():
    assert qv.smart_resize(480, 640) == hf_pil.smart_resize(480, 640)
    assert qv.smart_resize(1, 1) == hf_pil.smart_resize(1, 1) == (56, 56)
    assert qv.smart_resize(np.int64(70), np.int32(42)) == hf_pil.smart_resize(70, 42)
    for h, w in [(1, 201), (201, 1), (10, 2001)]:
        with pytest.raises(ValueError, match="aspect ratio"):
            hf_pil.smart_resize(h, w)
        with pytest.raises(ValueError, match=rf"aspect ratio.*height={h}, width={w}"):
            qv.smart_resize(h, w)
    # HF divides by zero here; we raise ValueError naming the bad side.
    with pytest.raises(ZeroDivisionError):
        hf_pil.smart_resize(0, 10)
    with pytest.raises(ValueError, match="height must be a positive int, got 0"):
        qv.smart_resize(0, 10)
    with pytest.raises(ValueError, match="width must be a positive int, got -3"):
        qv.smart_resize(10, -3)
    with pytest.raises(ValueError, match="factor"):
        qv.smart_resize(10, 10, factor=0)


# ------------------------------------------------------------------------- pixels vs HF image processor


@pytest.mark.parametrize("hw", [(50, 70), (28, 28), (90, 31), (200, 120), (5, 300)])
def test_static_video_matches_hf_image_processor(hw):
    # HF's image processor tiles each image temporal_patch_size times: one image == a 2-frame video of that image,
    # and == a 1-frame video (padded with a copy of its last frame).
    limits = {"min_pixels": 8 * 28 * 28, "max_pixels": 40 * 28 * 28}
    frame = _frames(1, *hw, seed=sum(hw))
    proc = hf_pil.Qwen2VLImageProcessorPil(**limits)
    ref = proc(images=[frame[0]], return_tensors="np")
    ref_pv, ref_grid = np.asarray(ref["pixel_values"]), np.asarray(ref["image_grid_thw"])
    assert ref_pv.dtype == np.float32
    for video in (np.concatenate([frame, frame]), frame):
        pv, grid, _ = qv.preprocess_video(video, **limits)
        assert pv.dtype == np.float32 and grid.dtype == np.int64 and grid.shape == (3,)
        np.testing.assert_array_equal(grid, ref_grid[0])
        assert pv.shape == ref_pv.shape
        assert _max_diff(pv, ref_pv) == 0.0


def test_multiple_images_match_per_frame():
    # A list of images gives one [1, h, w] grid per image; frame k of a static 2-frame video is image k's patches.
    frames = _frames(3, 60, 45, seed=7)
    proc = hf_pil.Qwen2VLImageProcessorPil()
    ref = proc(images=list(frames), return_tensors="np")
    grids = np.asarray(ref["image_grid_thw"])
    chunks = np.split(np.asarray(ref["pixel_values"]), np.cumsum(grids.prod(-1))[:-1])
    for k in range(3):
        pv, grid, _ = qv.preprocess_video(
            np.stack([frames[k]] * 2), min_pixels=qv.IMAGE_MIN_PIXELS, max_pixels=qv.IMAGE_MAX_PIXELS
        )
        np.testing.assert_array_equal(grid, grids[k])
        assert _max_diff(pv, chunks[k]) == 0.0


# ------------------------------------------------------------------------- pixels vs HF video processor


@pytest.mark.parametrize(
    "t,h,w", [(1, 40, 40), (2, 50, 70), (3, 50, 70), (4, 90, 31), (5, 33, 120), (7, 64, 48), (6, 120, 30)]
)
def test_video_matches_hf_video_processor(t, h, w):
    limits = {"min_pixels": 8 * 28 * 28, "max_pixels": 24 * 28 * 28}
    frames = _frames(t, h, w, seed=t * 1000 + h)
    hf = _PilQwen2VLVideoProcessor(**limits)
    ref = hf(videos=[frames], return_tensors="np", do_convert_rgb=False)
    ref_pv, ref_grid = np.asarray(ref["pixel_values_videos"]), np.asarray(ref["video_grid_thw"])
    pv, grid, spg = qv.preprocess_video(frames, **limits)
    np.testing.assert_array_equal(grid, ref_grid[0])
    assert grid[0] == -(-t // 2)
    assert pv.shape == ref_pv.shape and pv.dtype == np.float32
    assert _max_diff(pv, ref_pv) == 0.0
    assert spg == 2 / 24


def test_padding_repeats_last_frame():
    frames = _frames(3, 56, 84, seed=3)
    pv3, grid3, _ = qv.preprocess_video(frames, min_pixels=1, max_pixels=10**9)
    pv4, grid4, _ = qv.preprocess_video(np.concatenate([frames, frames[-1:]]), min_pixels=1, max_pixels=10**9)
    np.testing.assert_array_equal(grid3, [2, 4, 6])
    np.testing.assert_array_equal(grid3, grid4)
    np.testing.assert_array_equal(pv3, pv4)
    # temporal_patch_size 3 pads 4 frames with two copies of the last one.
    pv, grid, spg = qv.preprocess_video(
        np.concatenate([frames, frames[:1]]), temporal_patch_size=3, min_pixels=1, max_pixels=10**9, fps=6
    )
    np.testing.assert_array_equal(grid, [2, 4, 6])
    assert pv.shape == (48, 3 * 3 * 14 * 14) and spg == 0.5
    ref = _PilQwen2VLVideoProcessor(temporal_patch_size=3, min_pixels=1, max_pixels=10**9)(
        videos=[np.concatenate([frames, frames[:1]])], return_tensors="np", do_convert_rgb=False
    )
    assert _max_diff(pv, ref["pixel_values_videos"]) == 0.0


def test_video_defaults_match_hf_video_processor_batch():
    # Default (video) pixel limits, two videos of different shapes in one HF call.
    videos = [_frames(3, 100, 150, seed=1), _frames(2, 64, 36, seed=2)]
    ref = _PilQwen2VLVideoProcessor()(videos=videos, return_tensors="np", do_convert_rgb=False)
    ours = [qv.preprocess_video(v) for v in videos]
    np.testing.assert_array_equal(np.stack([o[1] for o in ours]), ref["video_grid_thw"])
    assert _max_diff(np.concatenate([o[0] for o in ours]), ref["pixel_values_videos"]) == 0.0


def test_preprocess_errors():
    with pytest.raises(ValueError, match=r"uint8.*\(3, 8, 8, 3\)"):
        qv.preprocess_video(np.zeros((3, 8, 8, 3), np.float32))
    with pytest.raises(ValueError, match=r"\[T, H, W, 3\].*\(8, 8, 3\)"):
        qv.preprocess_video(np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(ValueError, match=r"\[T, H, W, 3\].*\(1, 2, 8, 8, 3\)"):
        qv.preprocess_video(np.zeros((1, 2, 8, 8, 3), np.uint8))
    with pytest.raises(ValueError, match=r"\[T, H, W, 3\].*\(2, 8, 8, 4\)"):
        qv.preprocess_video(np.zeros((2, 8, 8, 4), np.uint8))
    with pytest.raises(ValueError, match=r"at least one frame.*\(0, 8, 8, 3\)"):
        qv.preprocess_video(np.zeros((0, 8, 8, 3), np.uint8))
    with pytest.raises(ValueError, match=r"non-empty height and width.*\(2, 0, 8, 3\)"):
        qv.preprocess_video(np.zeros((2, 0, 8, 3), np.uint8))
    with pytest.raises(ValueError, match="aspect ratio"):
        qv.preprocess_video(np.zeros((2, 1, 300, 3), np.uint8))
    for bad in ({"patch_size": 0}, {"temporal_patch_size": 1.5}, {"merge_size": -1}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            qv.preprocess_video(np.zeros((2, 8, 8, 3), np.uint8), **bad)
    for fps in (0, -1.0, float("nan"), "30"):
        with pytest.raises(ValueError, match="fps"):
            qv.preprocess_video(np.zeros((2, 8, 8, 3), np.uint8), fps=fps)


# ------------------------------------------------------------------- tokens, expansion, second_per_grid_ts


@pytest.fixture
def hf_processor(monkeypatch):
    # Without torchvision, transformers does not export VideoProcessorMixin, which the processor's class check needs.
    hf_module = hf_processing_utils.transformers_module
    monkeypatch.setattr(hf_module, "VideoProcessorMixin", VideoProcessorMixin, raising=False)
    vocab = {"<unk>": 0, "hello": 1, "world": 2, "<|image_pad|>": 3, "<|video_pad|>": 4}
    tk = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok = PreTrainedTokenizerFast(
        tokenizer_object=tk,
        unk_token="<unk>",
        extra_special_tokens={"image_token": "<|image_pad|>", "video_token": "<|video_pad|>"},
    )
    limits = {"min_pixels": 4 * 28 * 28, "max_pixels": 12 * 28 * 28}
    return Qwen2_5_VLProcessor(
        image_processor=hf_pil.Qwen2VLImageProcessorPil(),
        tokenizer=tok,
        video_processor=_PilQwen2VLVideoProcessor(**limits),
    ), limits


def test_tokens_expansion_and_seconds_match_hf_processor(hf_processor):
    proc, limits = hf_processor
    vid_id = proc.video_token_id
    assert vid_id == 4
    videos = [_frames(5, 60, 90, seed=11), _frames(2, 40, 40, seed=12)]
    text = "hello <|video_pad|> world <|video_pad|> hello"
    kw = dict(return_tensors="np", videos_kwargs={"do_convert_rgb": False})
    ref = proc(text=text, videos=videos, **kw)

    ours = [qv.preprocess_video(v, **limits) for v in videos]
    counts = [qv.num_video_tokens(g) for _, g, _ in ours]
    assert counts == proc._get_num_multimodal_tokens(video_sizes=[v.shape[:3] for v in videos])["num_video_tokens"]
    prompt = np.asarray(proc.tokenizer(text)["input_ids"])
    expanded = qv.expand_video_placeholder(prompt, vid_id, counts)
    np.testing.assert_array_equal(expanded, ref["input_ids"][0])
    assert int((expanded == vid_id).sum()) == sum(counts)
    np.testing.assert_array_equal(np.stack([g for _, g, _ in ours]), ref["video_grid_thw"])
    assert _max_diff(np.concatenate([p for p, _, _ in ours]), ref["pixel_values_videos"]) == 0.0
    # No metadata: HF assumes 24 fps.
    np.testing.assert_allclose(ref["second_per_grid_ts"], [s for _, _, s in ours], rtol=0, atol=0)

    # Known frame rates (metadata of the frames as given, no sampling).
    meta = [{"total_num_frames": 5, "fps": 30.0}, {"total_num_frames": 2, "fps": 2.5}]
    ref = proc(text=text, videos=videos, videos_kwargs={"do_convert_rgb": False, "video_metadata": meta})
    ours_s = [qv.preprocess_video(v, fps=m["fps"], **limits)[2] for v, m in zip(videos, meta)]
    assert ours_s == [2 / 30.0, 0.8]
    assert list(ref["second_per_grid_ts"]) == ours_s


def test_num_video_tokens():
    assert qv.num_video_tokens(np.array([2, 4, 6])) == 12
    assert qv.num_video_tokens([3, 36, 52], merge_size=2) == 3 * 36 * 52 // 4
    assert qv.num_video_tokens((1, 3, 3), merge_size=1) == 9
    with pytest.raises(ValueError, match=r"grid_thw must be 3 positive ints.*shape \(2,\)"):
        qv.num_video_tokens([4, 6])
    with pytest.raises(ValueError, match="grid_thw must be 3 positive ints"):
        qv.num_video_tokens([0, 4, 6])
    with pytest.raises(ValueError, match="grid_thw must be 3 positive ints"):
        qv.num_video_tokens([1.0, 4.0, 6.0])
    with pytest.raises(ValueError, match="multiples of merge_size=2"):
        qv.num_video_tokens([1, 3, 4])


def test_hf_video_module_load_leaves_no_stubs():
    from transformers.utils import is_torchvision_available

    assert not any(n in sys.modules for n in _TV)
    assert not is_torchvision_available()
    assert not any(n.endswith("_sparrow_test") for n in sys.modules)
    assert hf_video.Qwen2VLVideoProcessor.patchify.__module__.endswith("_sparrow_test")
