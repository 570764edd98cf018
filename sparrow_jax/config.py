"""Frozen, validated model configs built from Hugging Face `config.json` dictionaries.

Each config has `from_hf(dict)` (reads both the transformers 4.x layout, `rope_theta` +
`rope_scaling`, and the 5.x layout, `rope_parameters`) and `to_dict()`/`from_dict()` for the JSON
file that sits beside a converted checkpoint.
"""

from __future__ import annotations

import dataclasses
import json
import typing
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
            if model_type == "qwen2_5_vl_text":
                # transformers' Qwen2.5-VL attention sizes its heads hidden_size // num_heads whatever
                # the config's head_dim says (Qwen2 and Llama honour head_dim).
                _require(hidden % heads == 0,
                         f"qwen2_5_vl hidden_size {hidden} must be a multiple of num_attention_heads {heads}")
                head_dim = hidden // heads
            else:
                head_dim = int(hf.get("head_dim") or hidden // heads)
            return cls(
                vocab_size=int(hf["vocab_size"]),
                hidden_size=hidden,
                intermediate_size=int(hf["intermediate_size"]),
                num_layers=int(hf["num_hidden_layers"]),
                num_heads=heads,
                num_kv_heads=int(hf.get("num_key_value_heads") or heads),
                head_dim=head_dim,
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
class Qwen25VisionConfig:
    depth: int
    hidden_size: int
    intermediate_size: int
    num_heads: int
    out_hidden_size: int
    in_channels: int = 3
    patch_size: int = 14
    temporal_patch_size: int = 2
    spatial_merge_size: int = 2
    window_size: int = 112
    fullatt_block_indexes: tuple[int, ...] = (7, 15, 23, 31)
    hidden_act: str = "silu"
    rope_theta: float = 10000.0
    rms_norm_eps: float = 1e-6  # HF hard-codes 1e-6 in every vision RMSNorm; not read from config.json

    def __post_init__(self):
        object.__setattr__(self, "fullatt_block_indexes", tuple(int(i) for i in self.fullatt_block_indexes))
        for name in ("depth", "hidden_size", "intermediate_size", "num_heads", "out_hidden_size", "in_channels",
                     "patch_size", "temporal_patch_size", "spatial_merge_size", "window_size"):
            _require(getattr(self, name) > 0, f"qwen2.5-vl vision {name} must be positive, got {getattr(self, name)}")
        _require(self.hidden_size % self.num_heads == 0,
                 f"vision hidden_size {self.hidden_size} must be a multiple of num_heads {self.num_heads}")
        # h and w each rotate a quarter-head of frequencies, repeated twice over the head.
        _require(self.head_dim % 4 == 0, f"vision head_dim must be a multiple of 4 for 2-D RoPE, got {self.head_dim}")
        _require(self.window_merged >= 1,
                 f"window_size {self.window_size} must be at least spatial_merge_size * patch_size "
                 f"= {self.spatial_merge_size * self.patch_size}")
        bad = [i for i in self.fullatt_block_indexes if not 0 <= i < self.depth]
        _require(not bad, f"fullatt_block_indexes {bad} are outside [0, depth={self.depth})")
        _require(self.hidden_act == "silu", f"vision hidden_act {self.hidden_act!r} is not supported (only 'silu')")

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def window_merged(self) -> int:
        """Window side in merged tokens (HF `vit_merger_window_size`)."""
        return self.window_size // self.spatial_merge_size // self.patch_size

    @property
    def patch_dim(self) -> int:
        """Length of one flattened patch row of `pixel_values`: C * tp * p * p."""
        return self.in_channels * self.temporal_patch_size * self.patch_size**2

    @classmethod
    def from_hf(cls, hf: dict) -> "Qwen25VisionConfig":
        """From a `vision_config` dict: transformers 5.x names or the original release's (in_chans, ...)."""

        def side(name, default):
            v = hf.get(name, default)
            if isinstance(v, (list, tuple)):
                if len(set(v)) != 1:
                    raise ConfigError(f"vision {name} {v} must be a single int (non-uniform sizes are not supported)")
                v = v[0]
            return int(v)

        def pick(*names, default=None):
            for n in names:
                if n in hf:
                    return hf[n]
            if default is None:
                raise ConfigError(f"vision config is missing {names[0]!r}")
            return default

        rope_params = hf.get("rope_parameters") or {}
        _require(rope_params.get("rope_type", "axial") == "axial",
                 f"vision rope_type {rope_params.get('rope_type')!r} is not supported (only 'axial')")
        return cls(
            depth=int(pick("depth", "num_hidden_layers")),
            hidden_size=int(pick("hidden_size")),
            intermediate_size=int(pick("intermediate_size")),
            num_heads=int(pick("num_heads", "num_attention_heads")),
            out_hidden_size=int(pick("out_hidden_size")),
            in_channels=int(pick("in_channels", "in_chans", default=3)),
            patch_size=side("patch_size", 14),
            temporal_patch_size=side("temporal_patch_size", 2),
            spatial_merge_size=int(hf.get("spatial_merge_size", 2)),
            window_size=int(hf.get("window_size", 112)),
            fullatt_block_indexes=tuple(hf.get("fullatt_block_indexes", (7, 15, 23, 31))),
            hidden_act=hf.get("hidden_act", "silu"),
            rope_theta=float(rope_params.get("rope_theta", hf.get("rope_theta", 10000.0))),
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


@dataclasses.dataclass(frozen=True)
class Qwen25VLConfig:
    text: TextConfig
    vision: Qwen25VisionConfig
    video_token_id: int
    image_token_id: int
    vision_start_token_id: int
    vision_end_token_id: int = 151653  # closes each vision block (default: for configs converted without it)
    tokens_per_second: float = 2.0
    model_type: str = "qwen2_5_vl"

    def __post_init__(self):
        _require(self.text.mrope_section is not None, "qwen2_5_vl text config needs rope mrope_section")
        _require(
            self.vision.out_hidden_size == self.text.hidden_size,
            f"vision out_hidden_size {self.vision.out_hidden_size} != text hidden_size {self.text.hidden_size}",
        )

    def num_video_tokens(self, grid_thw) -> int:
        t, h, w = (int(x) for x in grid_thw)
        return t * h * w // self.vision.spatial_merge_size**2

    @classmethod
    def from_hf(cls, hf: dict) -> "Qwen25VLConfig":
        text_hf = dict(hf.get("text_config") or hf)  # 4.x configs keep text fields at the top level
        text_hf["model_type"] = "qwen2_5_vl_text"
        if hf.get("tie_word_embeddings") is not None:
            text_hf.setdefault("tie_word_embeddings", hf["tie_word_embeddings"])
        vision_hf = hf["vision_config"]
        return cls(
            text=TextConfig.from_hf(text_hf),
            vision=Qwen25VisionConfig.from_hf(vision_hf),
            video_token_id=int(hf.get("video_token_id", 151656)),
            image_token_id=int(hf.get("image_token_id", 151655)),
            vision_start_token_id=int(hf.get("vision_start_token_id", 151652)),
            vision_end_token_id=int(hf.get("vision_end_token_id", 151653)),
            tokens_per_second=float(vision_hf.get("tokens_per_second", 2)),
        )


class TokenIds(tuple):
    """A tuple of token ids whose hash is computed once: a draft's vocabulary (32k ids) sits in its config,
    which is part of a static jit argument, hashed at every call (a plain 32k tuple: ~1 ms per hash)."""

    def __hash__(self):
        if "_hash" not in self.__dict__:
            self.__dict__["_hash"] = tuple.__hash__(self)
        return self.__dict__["_hash"]


@dataclasses.dataclass(frozen=True)
class DraftConfig:
    """A Sparrow / EAGLE-1/2 draft: fc over [norm(embed(t+1)), h_t], then decoder layers (layer 0 without
    input norm). The target's embedding and lm_head are shared, never copied.

    `window` W: text slots of the VATA ring-buffer cache; `pinned` S: leading prompt slots always kept.
    With W + S >= the text length, attention is exactly the released (all-text) Sparrow behaviour.

    `vocab` (EAGLE-3's reduced draft vocabulary, its `d2t`): the K target token ids the draft scores, most
    frequent first in its training data. The draft then has its own head of K rows (`SparrowDraft.head`,
    started from the target's lm_head rows) instead of the target's V: each drafted level reads K x H head
    bytes, not V x H (152k rows, 1.09 GB on a 7B target). None: the target's whole vocabulary and lm_head.
    Verification always uses the target's full distribution, so decoding stays lossless either way."""

    layers: TextConfig  # the draft's decoder layers; vocab_size and hidden_size are the target's
    window: int = 1024
    pinned: int = 0
    embed_norm: bool = True  # Sparrow normalises the token embedding before the fc; EAGLE-1/2 does not
    target_layers: int | None = None  # layers of the target it was converted for (`convert draft` records it)
    vocab: tuple[int, ...] | None = None  # the target token ids the draft scores (None: all of them)
    model_type: str = "sparrow_draft"

    def __post_init__(self):
        _require(self.window >= 1, f"draft window must be >= 1, got {self.window}")
        _require(self.pinned >= 0, f"draft pinned slots must be >= 0, got {self.pinned}")
        if self.vocab is not None:
            ids = TokenIds(int(i) for i in self.vocab)
            _require(len(ids) >= 1 and len(set(ids)) == len(ids) and min(ids) >= 0
                     and max(ids) < self.layers.vocab_size,
                     f"draft vocab must be distinct token ids in [0, {self.layers.vocab_size}), got {len(ids)} ids "
                     f"from {min(ids, default=None)} to {max(ids, default=None)}")
            object.__setattr__(self, "vocab", ids)

    @classmethod
    def from_hf(cls, hf: dict, *, window: int = 1024, pinned: int = 0, embed_norm: bool = True,
                qkv_bias: bool | None = None) -> "DraftConfig":
        """From a released draft's Llama/Qwen2-style config.json. q/k/v bias is decided by the weights
        when known (`qkv_bias`); the config's own flags are not reliable across releases."""
        hf = dict(hf)
        if hf.get("model_type") not in TEXT_TYPES:
            hf["model_type"] = "qwen2" if qkv_bias else "llama"
        layers = TextConfig.from_hf(hf)
        if qkv_bias is not None:
            layers = dataclasses.replace(layers, qkv_bias=qkv_bias)
        return cls(layers=layers, window=window, pinned=pinned, embed_norm=embed_norm)


def draft_mismatch(draft: DraftConfig, target: TextConfig) -> str | None:
    """Why `draft` cannot draft for a target with text config `target`, or None when it can."""
    for name in ("hidden_size", "vocab_size"):
        ours, theirs = getattr(draft.layers, name), getattr(target, name)
        if ours != theirs:
            return f"draft built for another target: draft {name} {ours} != target {name} {theirs}"
    if draft.target_layers is not None and draft.target_layers != target.num_layers:
        return (f"draft built for another target: it was converted for a {draft.target_layers}-layer target, "
                f"this target has {target.num_layers} layers")
    return None


CONFIGS = {
    "qwen2": TextConfig,
    "llama": TextConfig,
    "llava_onevision": LlavaOnevisionConfig,
    "qwen2_5_vl": Qwen25VLConfig,
    "sparrow_draft": DraftConfig,
}


def config_from_hf(hf: dict):
    """Model config for an HF `config.json` dictionary, dispatched on its `model_type`."""
    model_type = hf.get("model_type")
    if model_type not in CONFIGS:
        raise ConfigError(f"model_type {model_type!r} is not supported (supported: {sorted(CONFIGS)})")
    return CONFIGS[model_type].from_hf(hf)


def _to_tree(obj):
    if dataclasses.is_dataclass(obj):
        return {f.name: _to_tree(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    return obj


def _from_tree(cls, tree: dict):
    kw = {}
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.name not in tree:
            continue
        sub = hints[f.name] if dataclasses.is_dataclass(hints[f.name]) else None
        value = tree[f.name]
        # JSON has no tuples; configs must stay hashable (they are static under jit).
        kw[f.name] = _from_tree(sub, value) if sub else tuple(value) if isinstance(value, list) else value
    return cls(**kw)


def save_config(config, path: Path) -> None:
    Path(path).write_text(json.dumps({"model_type": config.model_type, **_to_tree(config)}, indent=2))


def read_json(path) -> dict:
    """The JSON object in file `path`; invalid JSON is a ConfigError naming the file."""
    try:
        tree = json.loads(Path(path).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path} is not valid JSON ({e}); fix or replace the file") from None
    if not isinstance(tree, dict):
        raise ConfigError(f"{path} must hold a JSON object, got {type(tree).__name__}")
    return tree


def load_config(path: Path):
    """Our config.json beside a converted checkpoint (not an HF one: that is an error saying so)."""
    tree = read_json(path)
    model_type = tree.get("model_type")
    if "architectures" in tree or "transformers_version" in tree:
        raise ConfigError(f"{path} is a Hugging Face config.json ({model_type}), not a converted checkpoint's: "
                          f"convert the model first (python -m convert target --src {Path(path).parent} --dst OUT; "
                          "convert draft for a draft)")
    if model_type not in CONFIGS:
        raise ConfigError(f"{path}: model_type {model_type!r} is not supported")
    try:
        return _from_tree(CONFIGS[model_type], tree)
    except TypeError as e:  # a field missing or unknown: not a file convert wrote
        raise ConfigError(f"{path} is not the config.json of a converted checkpoint ({e}); convert the model "
                          "with python -m convert") from None
