"""A config's `head_dim` means what transformers makes of it: Qwen2 and Llama (and LLaVA-OneVision, whose
text model is Qwen2) size their attention heads by it; Qwen2.5-VL's text attention ignores it and uses
hidden_size // num_attention_heads."""

import json

import jax.numpy as jnp
import numpy as np
import pytest
import torch
from helpers import convert_dir

from convert.target import read_hf_config
from sparrow_jax import checkpoint
from sparrow_jax.config import config_from_hf
from sparrow_jax.inputs import prepare

# hidden 32 over 4 heads is 8 per head; the configs say 16.
TEXT = dict(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=1, num_attention_heads=4,
            num_key_value_heads=2, head_dim=16)


def family_config(family):
    import transformers as tf

    if family == "qwen2":
        return tf.Qwen2Config(**TEXT), tf.Qwen2ForCausalLM
    if family == "llama":
        return tf.LlamaConfig(**TEXT), tf.LlamaForCausalLM
    if family == "llava_onevision":
        vision = dict(model_type="siglip_vision_model", hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                      num_attention_heads=2, image_size=14, patch_size=7, vision_use_head=False)
        cfg = tf.LlavaOnevisionConfig(text_config=dict(model_type="qwen2", **TEXT), vision_config=vision,
                                      vision_feature_select_strategy="full", vision_feature_layer=-1)
        return cfg, tf.LlavaOnevisionForConditionalGeneration
    rope = {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [1, 1, 2]}  # 8 / 2 frequencies
    vision = dict(depth=1, hidden_size=16, intermediate_size=32, num_heads=2, out_hidden_size=32, window_size=56,
                  fullatt_block_indexes=[0])
    cfg = tf.Qwen2_5_VLConfig(text_config=dict(**TEXT, rope_parameters=rope), vision_config=vision)
    return cfg, tf.Qwen2_5_VLForConditionalGeneration


@pytest.mark.parametrize("family,expected", [("qwen2", 16), ("llama", 16), ("llava_onevision", 16),
                                             ("qwen2_5_vl", 8)])
def test_head_dim_is_what_transformers_builds(tmp_path, family, expected):
    """The head size transformers' text attention has (its k_proj rows per KV head) for a config.json
    with head_dim 16 and hidden_size / heads 8, against the head_dim our config reads from that file."""
    cfg, model_class = family_config(family)
    cfg.save_pretrained(tmp_path)
    k_proj = [m for name, m in model_class(cfg).named_modules()
              if name.endswith("layers.0.self_attn.k_proj") and "vision" not in name]
    assert len(k_proj) == 1
    assert k_proj[0].out_features // TEXT["num_key_value_heads"] == expected
    ours = config_from_hf(read_hf_config(tmp_path))
    assert getattr(ours, "text", ours).head_dim == expected


def test_qwen2_5_vl_config_with_another_head_dim_converts_and_matches_hf(tmp_path):
    """A Qwen2.5-VL checkpoint whose config.json carries head_dim 8 (heads are 64 / 4 = 16 wide): the
    weights transformers builds and loads for it are those of the config without head_dim, so conversion
    follows them, and the converted model's logits (text, video, text) equal the HF model's. (The HF
    forward runs the config without the field: transformers' rotary embedding reads head_dim and
    cannot run with one that differs from the attention's.)"""
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    vs, vid = 62, 61
    cfg = Qwen2_5_VLConfig(
        text_config=dict(vocab_size=64, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, initializer_range=0.1,
                         rope_parameters={"rope_type": "default", "mrope_section": [2, 3, 3], "rope_theta": 1e4}),
        vision_config=dict(depth=1, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=64,
                           window_size=56, fullatt_block_indexes=[0], tokens_per_second=2, initializer_range=0.1),
        image_token_id=60, video_token_id=vid, vision_start_token_id=vs, vision_end_token_id=63,
    )
    torch.manual_seed(0)
    hf = Qwen2_5_VLForConditionalGeneration(cfg).eval()
    with torch.no_grad():  # HF inits biases to 0: perturb so that a mis-shaped or mis-mapped one shows
        for name, p in hf.named_parameters():
            if name.endswith("bias"):
                p.add_(0.1 * torch.randn_like(p))
    hf.save_pretrained(tmp_path / "hf")
    path = tmp_path / "hf" / "config.json"
    written = json.loads(path.read_text())
    written["text_config"]["head_dim"] = 8
    path.write_text(json.dumps(written))

    ours = checkpoint.load(convert_dir(tmp_path / "hf", tmp_path / "ours"))
    assert ours.config.text.head_dim == 16
    grid = (2, 4, 4)
    rng = np.random.default_rng(0)
    ids = np.array([*rng.integers(0, 60, 4), vs, *[vid] * 8, 63, *rng.integers(0, 60, 5)], np.int64)
    pix = rng.standard_normal((32, 3 * 2 * 14 * 14)).astype(np.float32)
    batch = prepare(ours.config, [ids], [(pix, grid, 1.0)], multiple=1)
    with torch.no_grad():
        ref = hf(input_ids=torch.from_numpy(ids[None]), pixel_values_videos=torch.from_numpy(pix),
                 video_grid_thw=torch.tensor([grid]),
                 position_ids=torch.from_numpy(batch.positions.astype(np.int64))).logits.numpy()
    got = np.asarray(ours(jnp.asarray(batch.input_ids), batch.video, jnp.asarray(batch.positions)))
    assert np.abs(got - ref).max() < 1e-4
