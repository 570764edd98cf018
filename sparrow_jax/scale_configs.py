"""The paper's real model shapes, for shape-only checks (`abstract_model` + AOT compiles): never allocate these.

Values are those of the released Hugging Face `config.json` files of llava-hf/llava-onevision-qwen2-7b-ov-hf
(Qwen2-7B text, SigLIP-so400m-patch14-384 vision) and Qwen/Qwen2.5-VL-7B-Instruct, and a 7B-sized one-layer
Sparrow draft laid out as `train.trainer.draft_config` builds it (the target's layer shape, plain 1-D RoPE).
`layers=` keeps only the first n target layers (for compiles that scale a partial stack linearly).
"""

from __future__ import annotations

import dataclasses

from sparrow_jax.config import (DraftConfig, LlavaOnevisionConfig, Qwen25VisionConfig, Qwen25VLConfig, RopeConfig,
                                SiglipConfig, TextConfig)

# The paper's video settings: LLaVA-OV 128 frames at 384 px (196 pooled tokens each: 25,089 video tokens);
# Qwen2.5-VL 160 frames at 448x448 (grid 80 x 32 x 32: 20,480 video tokens). Prompts run to ~25.6k tokens.
LLAVA_FRAMES, LLAVA_SIDE = 128, 384
QWEN_FRAMES, QWEN_SIDE = 160, 448
PROMPT_TOKENS = 25_600

_QWEN2_7B = dict(hidden_size=3584, intermediate_size=18944, num_layers=28, num_heads=28, num_kv_heads=4,
                 head_dim=128, rms_norm_eps=1e-6, rope=RopeConfig(theta=1_000_000.0), qkv_bias=True,
                 tie_word_embeddings=False)


def llava_onevision_7b(layers: int | None = None) -> LlavaOnevisionConfig:
    """LLaVA-OneVision-7B. The llava-hf conversion padded Qwen2-7B's 152,064 embedding rows to 152,128 when it
    added <image> and <video> (resized to a multiple of 64)."""
    text = TextConfig(vocab_size=152128, model_type="qwen2", max_position_embeddings=32768,
                      **{**_QWEN2_7B, "num_layers": layers or _QWEN2_7B["num_layers"]})
    # so400m has 27 layers; LLaVA-OV's config keeps 26 (it reads the last one's output, feature layer -1)
    vision = SiglipConfig(hidden_size=1152, intermediate_size=4304, num_layers=26, num_heads=16, image_size=384,
                          patch_size=14, layer_norm_eps=1e-6, hidden_act="gelu_pytorch_tanh")
    return LlavaOnevisionConfig(text=text, vision=vision, video_token_id=151647, image_token_id=151646,
                                vision_feature_layer=-1, vision_feature_select_strategy="full")


QWEN25_VISION_7B = Qwen25VisionConfig(depth=32, hidden_size=1280, intermediate_size=3420, num_heads=16,
                                      out_hidden_size=3584, patch_size=14, temporal_patch_size=2,
                                      spatial_merge_size=2, window_size=112, fullatt_block_indexes=(7, 15, 23, 31))


def qwen2_5_vl_7b(layers: int | None = None) -> Qwen25VLConfig:
    """Qwen2.5-VL-7B-Instruct (M-RoPE sections 16/24/24 over t, h, w)."""
    text = TextConfig(vocab_size=152064, model_type="qwen2_5_vl_text", max_position_embeddings=128000,
                      mrope_section=(16, 24, 24), **{**_QWEN2_7B, "num_layers": layers or _QWEN2_7B["num_layers"]})
    return Qwen25VLConfig(text=text, vision=QWEN25_VISION_7B, video_token_id=151656, image_token_id=151655,
                          vision_start_token_id=151652, vision_end_token_id=151653, tokens_per_second=2.0)


def sparrow_draft_7b(target, *, window: int = 1024, pinned: int = 0, vocab: int = 0) -> DraftConfig:
    """A one-layer Sparrow draft for `target` (a config above): the target's layer shape, 1-D RoPE over text;
    `vocab` > 0: over that many tokens (a reduced vocabulary; which ids does not matter to shapes)."""
    lm = target.text
    layers = dataclasses.replace(lm, num_layers=1, mrope_section=None, model_type="qwen2")
    return DraftConfig(layers, window=window, pinned=pinned, vocab=tuple(range(vocab)) if vocab else None)


TARGETS = {"llava_onevision": llava_onevision_7b, "qwen2_5_vl": qwen2_5_vl_7b}
