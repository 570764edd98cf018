"""LLaVA-OneVision video preprocessing vs Hugging Face (PIL image processor, processor token expansion)."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pytest
import transformers.processing_utils as hf_processing_utils
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import LlavaOnevisionImageProcessorPil, LlavaOnevisionProcessor, PreTrainedTokenizerFast
from transformers.feature_extraction_utils import BatchFeature
from transformers.image_utils import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, PILImageResampling, SizeDict
from transformers.video_processing_utils import BaseVideoProcessor, VideoProcessorMixin

from sparrow_jax.processing import llava_onevision as lo


def _frames(t, h, w, seed=0):
    return np.random.default_rng(seed).integers(0, 256, size=(t, h, w, 3), dtype=np.uint8)


def _hf_frame(proc, frame, size):
    # The PIL backend's per-patch steps, in `_preprocess` order, on a channels-first frame.
    x = np.moveaxis(frame, -1, 0)
    x = proc.resize(image=x, size=SizeDict(height=size, width=size), resample=PILImageResampling.BICUBIC)
    x = proc.rescale(image=x, scale=1 / 255)
    return proc.normalize(image=x, mean=OPENAI_CLIP_MEAN, std=OPENAI_CLIP_STD)


def test_constants_match_hf():
    assert lo.OPENAI_CLIP_MEAN == tuple(OPENAI_CLIP_MEAN)
    assert lo.OPENAI_CLIP_STD == tuple(OPENAI_CLIP_STD)


@pytest.mark.parametrize("shape,size", [((3, 50, 70), 28), ((2, 40, 40), 56), ((2, 90, 31), 56)])
def test_preprocess_matches_hf_pil_methods(shape, size):
    frames = _frames(*shape)
    ours = lo.preprocess_video(frames, image_size=size)
    assert ours.shape == (shape[0], size, size, 3) and ours.dtype == np.float32
    proc = LlavaOnevisionImageProcessorPil(size={"height": size, "width": size})
    for t in range(shape[0]):
        ref = _hf_frame(proc, frames[t], size)
        assert ref.dtype == np.float32
        assert np.abs(ours[t] - np.moveaxis(ref, 0, -1)).max() <= 1e-6


def test_preprocess_matches_hf_image_processor_end_to_end():
    # Frames given as one multi-image sample skip anyres patching; pad_to_square is a no-op on square frames.
    size, frames = 56, _frames(4, 64, 64, seed=1)
    proc = LlavaOnevisionImageProcessorPil(size={"height": size, "width": size})
    out = proc(images=[list(frames)], return_tensors="np")
    assert list(out["batch_num_images"]) == [4]
    ref = np.asarray(out["pixel_values"])  # one entry per image, each [num_patches=1, 3, S, S]
    assert ref.shape == (4, 1, 3, size, size)
    ref = ref[:, 0]
    ours = lo.preprocess_video(frames, image_size=size)
    assert np.abs(ours - np.moveaxis(ref, 1, -1)).max() <= 1e-6


def test_preprocess_errors():
    with pytest.raises(ValueError, match=r"uint8.*\(3, 8, 8, 3\)"):
        lo.preprocess_video(np.zeros((3, 8, 8, 3), np.float32))
    with pytest.raises(ValueError, match=r"\[T, H, W, 3\].*\(8, 8, 3\)"):
        lo.preprocess_video(np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(ValueError, match=r"\[T, H, W, 3\].*\(2, 8, 8, 4\)"):
        lo.preprocess_video(np.zeros((2, 8, 8, 4), np.uint8))
    with pytest.raises(ValueError, match=r"at least one frame.*\(0, 8, 8, 3\)"):
        lo.preprocess_video(np.zeros((0, 8, 8, 3), np.uint8))


class _FrameCountVideoProcessor(BaseVideoProcessor):
    """Stand-in for LlavaOnevisionVideoProcessor (needs torchvision); the processor reads only frame counts."""

    def __call__(self, videos, **kwargs):
        pixel_values = [np.moveaxis(lo.preprocess_video(v, 28), -1, 1) for v in videos]  # HF layout [T, 3, S, S]
        return BatchFeature({"pixel_values_videos": pixel_values})


@pytest.fixture
def hf_processor(monkeypatch):
    # Without torchvision, transformers does not export VideoProcessorMixin, which the processor's class check needs.
    hf_module = hf_processing_utils.transformers_module
    monkeypatch.setattr(hf_module, "VideoProcessorMixin", VideoProcessorMixin, raising=False)
    tk = Tokenizer(models.WordLevel({"<unk>": 0, "hello": 1, "world": 2}, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok = PreTrainedTokenizerFast(
        tokenizer_object=tk,
        unk_token="<unk>",
        extra_special_tokens={"image_token": "<image>", "video_token": "<video>"},
    )
    # SigLIP 384 / patch 14 -> 27x27 = 729 image tokens, as in the released processor configs.
    return LlavaOnevisionProcessor(
        image_processor=LlavaOnevisionImageProcessorPil(),
        tokenizer=tok,
        video_processor=_FrameCountVideoProcessor(),
        num_image_tokens=(384 // 14) ** 2,
        vision_feature_select_strategy="full",
    )


def test_num_video_tokens_and_expansion_match_hf_processor(hf_processor):
    vid_id = hf_processor.video_token_id
    frame_counts = [8, 3]
    videos = [_frames(t, 20, 24) for t in frame_counts]
    text = "hello <video> world <video> hello"
    ref = np.asarray(hf_processor(text=text, videos=videos)["input_ids"][0])

    counts = [lo.num_video_tokens(t, 384, 14) for t in frame_counts]
    assert counts == [1569, 589]  # 27 patches -> 14 pooled -> 196 per frame, +1 newline
    assert counts == hf_processor._get_num_multimodal_tokens(video_sizes=[(t, 20, 24) for t in frame_counts])[
        "num_video_tokens"
    ]
    prompt = np.asarray(hf_processor.tokenizer(text)["input_ids"])
    ours = lo.expand_video_placeholder(prompt, vid_id, counts)
    assert ours.dtype == np.int32 and ours.ndim == 1
    np.testing.assert_array_equal(ours, ref)

    # Single video, int count.
    ref1 = np.asarray(hf_processor(text="hello <video>", videos=videos[:1])["input_ids"][0])
    np.testing.assert_array_equal(
        lo.expand_video_placeholder(hf_processor.tokenizer("hello <video>")["input_ids"], vid_id, counts[0]), ref1
    )


def test_expand_errors():
    ids = np.array([5, 9, 6, 9, 7])
    with pytest.raises(ValueError, match="found 2 video placeholder tokens.*but 1 videos"):
        lo.expand_video_placeholder(ids, 9, 10)
    with pytest.raises(ValueError, match="found 2 .* but 3 videos"):
        lo.expand_video_placeholder(ids, 9, [1, 2, 3])
    expanded = lo.expand_video_placeholder([5, 9, 6], 9, 4)
    np.testing.assert_array_equal(expanded, [5, 9, 9, 9, 9, 6])
    with pytest.raises(ValueError, match="already expanded"):
        lo.expand_video_placeholder(expanded, 9, 4)
    with pytest.raises(ValueError, match=">= 1"):
        lo.expand_video_placeholder(ids, 9, [0, 2])
