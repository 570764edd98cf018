"""Frozen, validated model configs built from Hugging Face `config.json` dictionaries.

Each config has `from_hf(dict)` (reads both the transformers 4.x layout, `rope_theta` +
`rope_scaling`, and the 5.x layout, `rope_parameters`) and `to_dict()`/`from_dict()` for the JSON
file that sits beside a converted checkpoint.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

ROPE_TYPES = ("default", "linear", "llama3")
TEXT_TYPES = ("qwen2", "llama", "qwen2_5_vl_text")  # the last: Qwen2 layers with M-RoPE


class ConfigError(ValueError):
    """A config value is missing, inconsistent or unsupported."""


def _require(cond: bool, msg: str) -> None:
    if not cond:
        raise ConfigError(msg)


@dataclasses.dataclass(frozen=True)
class RopeConfig:
    theta: float = 10000.0
    type: str = "default"
    factor: float = 1.0
    # llama3 only
    low_freq_factor: float = 1.0
    high_freq_factor: float = 4.0
    original_max_position_embeddings: int = 8192

    def __post_init__(self):
        _require(self.type in ROPE_TYPES, f"rope type {self.type!r} is not supported (supported: {ROPE_TYPES})")
        _require(self.theta > 0, f"rope theta must be positive, got {self.theta}")

    @classmethod
    def from_hf(cls, hf: dict) -> "RopeConfig":
        params = dict(hf.get("rope_parameters") or {})
        if not params:  # transformers 4.x layout
            params = dict(hf.get("rope_scaling") or {})
            params.setdefault("rope_theta", hf.get("rope_theta", 10000.0))
        rope_type = params.get("rope_type", params.get("type", "default"))
        if rope_type == "mrope":  # Qwen2-VL style configs label M-RoPE this way; frequencies are default
            rope_type = "default"
        kw: dict[str, Any] = {"theta": float(params.get("rope_theta", 10000.0)), "type": rope_type}
        if rope_type in ("linear", "llama3"):
            kw["factor"] = float(params["factor"])
        if rope_type == "llama3":
            kw["low_freq_factor"] = float(params["low_freq_factor"])
            kw["high_freq_factor"] = float(params["high_freq_factor"])
            kw["original_max_position_embeddings"] = int(params["original_max_position_embeddings"])
        return cls(**kw)


@dataclasses.dataclass(frozen=True)
class TextConfig:
    """Decoder-only LM: Qwen2 (q/k/v bias) or Llama (no bias)."""

    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    rms_norm_eps: float = 1e-6
    rope: RopeConfig = RopeConfig()
    qkv_bias: bool = True
    o_bias: bool = False
    mlp_bias: bool = False
    tie_word_embeddings: bool = False
    hidden_act: str = "silu"
    model_type: str = "qwen2"
    max_position_embeddings: int | None = None  # informational; kept so export round-trips it
    mrope_section: tuple[int, ...] | None = None  # Qwen2.5-VL multimodal RoPE: frequencies per (t, h, w)

    def __post_init__(self):
        for name in ("vocab_size", "hidden_size", "intermediate_size", "num_layers", "num_heads", "num_kv_heads", "head_dim"):
            _require(getattr(self, name) > 0, f"{name} must be positive, got {getattr(self, name)}")
        _require(
            self.num_heads % self.num_kv_heads == 0,
            f"num_heads ({self.num_heads}) must be a multiple of num_kv_heads ({self.num_kv_heads})",
        )
        _require(self.head_dim % 2 == 0, f"head_dim must be even for RoPE, got {self.head_dim}")
        _require(self.hidden_act == "silu", f"hidden_act {self.hidden_act!r} is not supported (only 'silu')")
        _require(self.model_type in TEXT_TYPES, f"text model_type {self.model_type!r} is not supported")
        if self.mrope_section is not None:
            _require(
                sum(self.mrope_section) == self.head_dim // 2,
                f"mrope_section {self.mrope_section} must sum to head_dim/2 = {self.head_dim // 2}",
            )

    @classmethod
    def from_hf(cls, hf: dict) -> "TextConfig":
        model_type = hf.get("model_type", "qwen2")
        _require(model_type in TEXT_TYPES, f"text model_type {model_type!r} is not supported {TEXT_TYPES}")
        if hf.get("use_sliding_window"):
            raise ConfigError("use_sliding_window=True is not supported; the Qwen2 checkpoints used here have it off")
        try:
            heads = int(hf["num_attention_heads"])
            hidden = int(hf["hidden_size"])
            is_qwen2 = model_type != "llama"
            mrope = (hf.get("rope_parameters") or hf.get("rope_scaling") or {}).get("mrope_section")
            return cls(
                vocab_size=int(hf["vocab_size"]),
                hidden_size=hidden,
                intermediate_size=int(hf["intermediate_size"]),
                num_layers=int(hf["num_hidden_layers"]),
                num_heads=heads,
                num_kv_heads=int(hf.get("num_key_value_heads") or heads),
                head_dim=int(hf.get("head_dim") or hidden // heads),
                rms_norm_eps=float(hf.get("rms_norm_eps", 1e-6)),
                rope=RopeConfig.from_hf(hf),
                qkv_bias=True if is_qwen2 else bool(hf.get("attention_bias", False)),
                o_bias=False if is_qwen2 else bool(hf.get("attention_bias", False)),
                mlp_bias=False if is_qwen2 else bool(hf.get("mlp_bias", False)),
                tie_word_embeddings=bool(hf.get("tie_word_embeddings", False)),
                hidden_act=hf.get("hidden_act", "silu"),
                model_type=model_type,
                max_position_embeddings=hf.get("max_position_embeddings"),
                mrope_section=tuple(int(x) for x in mrope) if mrope else None,
            )
        except KeyError as e:
            raise ConfigError(f"text config is missing required key {e.args[0]!r}") from None


@dataclasses.dataclass(frozen=True)
class SiglipConfig:
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    image_size: int
    patch_size: int
    num_channels: int = 3
    layer_norm_eps: float = 1e-6
    hidden_act: str = "gelu_pytorch_tanh"

    def __post_init__(self):
        _require(self.hidden_size % self.num_heads == 0, "siglip hidden_size must be a multiple of num_heads")
        _require(
            self.hidden_act in ("gelu_pytorch_tanh", "gelu"),
            f"siglip hidden_act {self.hidden_act!r} is not supported",
        )

    @property
    def grid(self) -> int:
        """Patches per side."""
        return self.image_size // self.patch_size

    @classmethod
    def from_hf(cls, hf: dict) -> "SiglipConfig":
        if hf.get("vision_use_head", False):
            raise ConfigError("siglip vision_use_head=True is not supported (LLaVA-OneVision does not use the head)")
        return cls(
            hidden_size=int(hf.get("hidden_size", 768)),
            intermediate_size=int(hf.get("intermediate_size", 3072)),
            num_layers=int(hf.get("num_hidden_layers", 12)),
            num_heads=int(hf.get("num_attention_heads", 12)),
            image_size=int(hf.get("image_size", 224)),
            patch_size=int(hf.get("patch_size", 16)),
            num_channels=int(hf.get("num_channels", 3)),
            layer_norm_eps=float(hf.get("layer_norm_eps", 1e-6)),
            hidden_act=hf.get("hidden_act", "gelu_pytorch_tanh"),
        )


@dataclasses.dataclass(frozen=True)
class LlavaOnevisionConfig:
    text: TextConfig
    vision: SiglipConfig
    video_token_id: int
    image_token_id: int
    vision_feature_layer: int = -1
    vision_feature_select_strategy: str = "full"
    projector_bias: bool = True
    projector_act: str = "gelu"
    model_type: str = "llava_onevision"

    def __post_init__(self):
        _require(
            self.vision_feature_select_strategy in ("full", "default"),
            f"vision_feature_select_strategy {self.vision_feature_select_strategy!r} must be 'full' or 'default'",
        )
        n = self.vision.num_layers
        _require(
            -(n + 1) <= self.vision_feature_layer <= n,
            f"vision_feature_layer {self.vision_feature_layer} out of range for {n} vision layers",
        )
        _require(self.projector_act == "gelu", f"projector_hidden_act {self.projector_act!r} is not supported")
        _require(
            self.vision_feature_select_strategy == "full",
            "vision_feature_select_strategy 'default' drops a CLS token SigLIP does not have; only 'full' is supported",
        )

    @property
    def vision_layers_used(self) -> int:
        """Vision encoder layers to run: HF selects hidden_states[vision_feature_layer] of L+1 states."""
        return self.vision_feature_layer % (self.vision.num_layers + 1)

    @property
    def pooled_grid(self) -> int:
        return -(-self.vision.grid // 2)

    def num_video_tokens(self, num_frames: int) -> int:
        """Tokens one video of `num_frames` frames occupies: pooled patches per frame, plus one newline."""
        return num_frames * self.pooled_grid**2 + 1

    @classmethod
    def from_hf(cls, hf: dict) -> "LlavaOnevisionConfig":
        layer = hf.get("vision_feature_layer", -1)
        if not isinstance(layer, int):
            raise ConfigError(f"vision_feature_layer must be one int, got {layer!r} (multi-layer features unsupported)")
        text_hf = dict(hf["text_config"])
        text_hf.setdefault("model_type", "qwen2")
        if hf.get("tie_word_embeddings") is not None:
            text_hf.setdefault("tie_word_embeddings", hf["tie_word_embeddings"])
        return cls(
            text=TextConfig.from_hf(text_hf),
            vision=SiglipConfig.from_hf(hf["vision_config"]),
            video_token_id=int(hf.get("video_token_index", hf.get("video_token_id", 151647))),
            image_token_id=int(hf.get("image_token_index", hf.get("image_token_id", 151646))),
            vision_feature_layer=layer,
            vision_feature_select_strategy=hf.get("vision_feature_select_strategy", "full"),
            projector_bias=bool(hf.get("multimodal_projector_bias", True)),
            projector_act=hf.get("projector_hidden_act", "gelu"),
        )


TARGET_CONFIGS = {"qwen2": TextConfig, "llama": TextConfig, "llava_onevision": LlavaOnevisionConfig}


def config_from_hf(hf: dict):
    """Model config for an HF `config.json` dictionary, dispatched on its `model_type`."""
    model_type = hf.get("model_type")
    if model_type not in TARGET_CONFIGS:
        raise ConfigError(f"model_type {model_type!r} is not supported (supported: {sorted(TARGET_CONFIGS)})")
    return TARGET_CONFIGS[model_type].from_hf(hf)


def _to_tree(obj):
    if dataclasses.is_dataclass(obj):
        return {f.name: _to_tree(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    return obj


def _from_tree(cls, tree: dict):
    kw = {}
    for f in dataclasses.fields(cls):
        if f.name not in tree:
            continue
        sub = {"rope": RopeConfig, "text": TextConfig, "vision": SiglipConfig}.get(f.name)
        value = tree[f.name]
        # JSON has no tuples; configs must stay hashable (they are static under jit).
        kw[f.name] = _from_tree(sub, value) if sub else tuple(value) if isinstance(value, list) else value
    return cls(**kw)


def save_config(config, path: Path) -> None:
    Path(path).write_text(json.dumps({"model_type": config.model_type, **_to_tree(config)}, indent=2))


def load_config(path: Path):
    tree = json.loads(Path(path).read_text())
    model_type = tree.get("model_type")
    if model_type not in TARGET_CONFIGS:
        raise ConfigError(f"{path}: model_type {model_type!r} is not supported")
    return _from_tree(TARGET_CONFIGS[model_type], tree)
