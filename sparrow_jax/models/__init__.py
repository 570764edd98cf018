"""Model families: one file each. `build_model` picks the class for a config."""

from __future__ import annotations

import jax.numpy as jnp
from flax import nnx

from sparrow_jax.config import DraftConfig, LlavaOnevisionConfig, Qwen25VLConfig, TextConfig


def build_model(config, *, dtype=jnp.float32, rngs: nnx.Rngs | None = None):
    """A randomly initialised model of the family `config` describes."""
    from sparrow_jax.models.draft import SparrowDraft
    from sparrow_jax.models.llava_onevision import LlavaOnevision
    from sparrow_jax.models.qwen2 import DecoderLM
    from sparrow_jax.models.qwen2_5_vl import Qwen25VL

    rngs = rngs if rngs is not None else nnx.Rngs(0)
    if isinstance(config, LlavaOnevisionConfig):
        return LlavaOnevision(config, dtype=dtype, rngs=rngs)
    if isinstance(config, DraftConfig):
        return SparrowDraft(config, dtype=dtype, rngs=rngs)
    if isinstance(config, Qwen25VLConfig):
        return Qwen25VL(config, dtype=dtype, rngs=rngs)
    if isinstance(config, TextConfig):
        return DecoderLM(config, dtype=dtype, rngs=rngs)
    raise TypeError(f"no model for config type {type(config).__name__}")


def abstract_model(config, *, dtype=jnp.float32):
    """The model's structure with shape-only parameters (no memory, no random init)."""
    return nnx.eval_shape(lambda: build_model(config, dtype=dtype))
