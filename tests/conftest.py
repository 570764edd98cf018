"""Shared fixtures: tiny random HF models, saved with save_pretrained and converted through the CLI."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import jax
import numpy as np
import pytest
import torch

jax.config.update("jax_default_matmul_precision", "highest")
torch.set_grad_enabled(False)

VIDEO_TOKEN, IMAGE_TOKEN = 120, 121


def llava_hf_config(**text_overrides):
    from transformers import LlavaOnevisionConfig

    text = dict(
        model_type="qwen2", vocab_size=128, hidden_size=64, intermediate_size=128, num_hidden_layers=3,
        num_attention_heads=4, num_key_value_heads=2, initializer_range=0.1, rope_theta=10000.0,
        tie_word_embeddings=False,
    )
    text.update(text_overrides)
    vision = dict(
        model_type="siglip_vision_model", hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=2, image_size=35, patch_size=7, vision_use_head=False,
    )
    return LlavaOnevisionConfig(
        text_config=text, vision_config=vision, video_token_index=VIDEO_TOKEN, image_token_index=IMAGE_TOKEN,
        vision_feature_layer=-1, vision_feature_select_strategy="full", initializer_range=0.1,
    )


def save_hf(model, path):
    model.save_pretrained(path)
    return path


def convert_dir(src, dst, dtype="float32"):
    from convert.__main__ import main

    assert main(["target", "--src", str(src), "--dst", str(dst), "--dtype", dtype]) == 0
    return dst


@pytest.fixture(scope="session")
def llava(tmp_path_factory):
    """(hf_model, hf_dir, converted_dir, our_model) for a tiny LLaVA-OneVision with an odd patch grid."""
    from transformers import LlavaOnevisionForConditionalGeneration

    from sparrow_jax import checkpoint

    torch.manual_seed(0)
    hf = LlavaOnevisionForConditionalGeneration(llava_hf_config()).eval()
    with torch.no_grad():  # random init leaves the newline small; make it matter
        hf.model.image_newline.normal_()
    root = tmp_path_factory.mktemp("llava")
    src = save_hf(hf, root / "hf")
    dst = convert_dir(src, root / "ours")
    return hf, src, dst, checkpoint.load(dst)


def random_video(rng, batch, frames, size=35):
    """Model-ready video pixels: HF layout [B,T,C,S,S] (torch) and ours [B,T,S,S,C] (numpy)."""
    ours = rng.standard_normal((batch, frames, size, size, 3)).astype(np.float32)
    return torch.from_numpy(ours.transpose(0, 1, 4, 2, 3).copy()), ours
