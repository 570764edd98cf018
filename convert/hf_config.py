"""Our model configs -> HF `config.json` dictionaries (for `convert export`)."""

from __future__ import annotations

import dataclasses

from sparrow_jax.config import (
    DraftConfig,
    LlavaOnevisionConfig,
    Qwen25VisionConfig,
    Qwen25VLConfig,
    SiglipConfig,
    TextConfig,
)


def _rope(cfg: TextConfig) -> dict:
    r = cfg.rope
    params = {"rope_type": r.type, "rope_theta": r.theta}
    if r.type in ("linear", "llama3"):
        params["factor"] = r.factor
    if cfg.mrope_section is not None:
        params["mrope_section"] = list(cfg.mrope_section)
    if r.type == "llama3":
        params.update(
            low_freq_factor=r.low_freq_factor,
            high_freq_factor=r.high_freq_factor,
            original_max_position_embeddings=r.original_max_position_embeddings,
        )
    return params


def text_config(cfg: TextConfig) -> dict:
    out = {
        "model_type": cfg.model_type,
        "architectures": ["LlamaForCausalLM" if cfg.model_type == "llama" else "Qwen2ForCausalLM"],
        "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.hidden_size,
        "intermediate_size": cfg.intermediate_size,
        "num_hidden_layers": cfg.num_layers,
        "num_attention_heads": cfg.num_heads,
        "num_key_value_heads": cfg.num_kv_heads,
        "head_dim": cfg.head_dim,
        "rms_norm_eps": cfg.rms_norm_eps,
        "hidden_act": cfg.hidden_act,
        "tie_word_embeddings": cfg.tie_word_embeddings,
        "rope_parameters": _rope(cfg),
        "max_position_embeddings": cfg.max_position_embeddings
        or max(32768, cfg.rope.original_max_position_embeddings + 1),
    }
    if cfg.model_type == "llama":
        if cfg.qkv_bias != cfg.o_bias:
            raise ValueError("Llama has one attention_bias flag for q/k/v and o; this config differs")
        out.update(attention_bias=cfg.qkv_bias, mlp_bias=cfg.mlp_bias)
    return out


def siglip_config(cfg: SiglipConfig) -> dict:
    return {
        "model_type": "siglip_vision_model",
        "hidden_size": cfg.hidden_size,
        "intermediate_size": cfg.intermediate_size,
        "num_hidden_layers": cfg.num_layers,
        "num_attention_heads": cfg.num_heads,
        "image_size": cfg.image_size,
        "patch_size": cfg.patch_size,
        "num_channels": cfg.num_channels,
        "layer_norm_eps": cfg.layer_norm_eps,
        "hidden_act": cfg.hidden_act,
        "vision_use_head": False,
    }


def qwen_vision_config(cfg: Qwen25VisionConfig, tokens_per_second: float) -> dict:
    return {
        "model_type": "qwen2_5_vl_vision",
        "depth": cfg.depth,
        "hidden_size": cfg.hidden_size,
        "intermediate_size": cfg.intermediate_size,
        "num_heads": cfg.num_heads,
        "out_hidden_size": cfg.out_hidden_size,
        "in_channels": cfg.in_channels,
        "patch_size": cfg.patch_size,
        "temporal_patch_size": cfg.temporal_patch_size,
        "spatial_merge_size": cfg.spatial_merge_size,
        "window_size": cfg.window_size,
        "fullatt_block_indexes": list(cfg.fullatt_block_indexes),
        "hidden_act": cfg.hidden_act,
        "tokens_per_second": int(tokens_per_second) if float(tokens_per_second).is_integer() else tokens_per_second,
        "rope_parameters": {"rope_type": "axial", "rope_theta": cfg.rope_theta},
    }


def draft_config(cfg: DraftConfig) -> dict:
    """The released drafts' Llama/Qwen2-style config.json. q/k/v bias without o/mlp bias is Qwen2's
    layout, so such drafts get model_type "qwen2"; the rest "llama" with its attention_bias flag.
    "architectures" stays LlamaForCausalLM, as in EAGLE's releases (the draft is no causal LM of
    its own: it has no embedding or lm_head)."""
    t = cfg.layers
    qwen2_style = t.qkv_bias and not t.o_bias and not t.mlp_bias
    out = text_config(dataclasses.replace(t, model_type="qwen2" if qwen2_style else "llama"))
    out["architectures"] = ["LlamaForCausalLM"]
    if cfg.vocab is not None:  # EAGLE-3's key; the ids themselves are the checkpoint's d2t
        out["draft_vocab_size"] = len(cfg.vocab)
    return out


def hf_config(cfg) -> dict:
    if isinstance(cfg, DraftConfig):
        return draft_config(cfg)
    if isinstance(cfg, TextConfig):
        return text_config(cfg)
    if isinstance(cfg, LlavaOnevisionConfig):
        return {
            "model_type": "llava_onevision",
            "architectures": ["LlavaOnevisionForConditionalGeneration"],
            "text_config": text_config(cfg.text),
            "vision_config": siglip_config(cfg.vision),
            "video_token_index": cfg.video_token_id,
            "image_token_index": cfg.image_token_id,
            "vision_feature_layer": cfg.vision_feature_layer,
            "vision_feature_select_strategy": cfg.vision_feature_select_strategy,
            "multimodal_projector_bias": cfg.projector_bias,
            "projector_hidden_act": cfg.projector_act,
            "tie_word_embeddings": cfg.text.tie_word_embeddings,
        }
    if isinstance(cfg, Qwen25VLConfig):
        text = text_config(cfg.text)
        text.pop("architectures")
        return {
            "model_type": "qwen2_5_vl",
            "architectures": ["Qwen2_5_VLForConditionalGeneration"],
            "text_config": text,
            "vision_config": qwen_vision_config(cfg.vision, cfg.tokens_per_second),
            "video_token_id": cfg.video_token_id,
            "image_token_id": cfg.image_token_id,
            "vision_start_token_id": cfg.vision_start_token_id,
            "vision_end_token_id": cfg.vision_end_token_id,
            "tie_word_embeddings": cfg.text.tie_word_embeddings,
        }
    raise TypeError(f"cannot export config type {type(cfg).__name__}")
