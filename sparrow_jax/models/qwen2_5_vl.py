"""Qwen2.5-VL target: the vision tower (window attention, merger) + a Qwen2 decoder with M-RoPE."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from sparrow_jax.config import Qwen25VLConfig
from sparrow_jax.models.multimodal import scatter_features
from sparrow_jax.models.qwen2 import DecoderLM, LMOutput, sequential_positions
from sparrow_jax.models.qwen2_5_vl_vision import Qwen25Vision, VisionPlan, vision_plan


class VideoInput(NamedTuple):
    """The videos of a batch, in row order: flattened patches of all of them plus their host-built plan."""

    pixel_values: jax.Array | np.ndarray  # [sum of patches, C*tp*p*p]
    plan: VisionPlan
    # [videos, 3] (t, h, w) the plan was built from: what joining the inputs of several hosts' rows needs
    grid_thw: np.ndarray | None = None

    @classmethod
    def build(cls, pixel_values, grid_thw, config: Qwen25VLConfig) -> "VideoInput":
        grid = np.asarray(grid_thw, np.int32).reshape(-1, 3)
        return cls(np.asarray(pixel_values, np.float32), vision_plan(grid, config.vision), grid)


class Qwen25VL(nnx.Module):
    def __init__(self, cfg: Qwen25VLConfig, *, dtype=jnp.float32, rngs: nnx.Rngs):
        self.config = cfg
        self.visual = Qwen25Vision(cfg.vision, dtype=dtype, rngs=rngs)
        self.language_model = DecoderLM(cfg.text, dtype=dtype, rngs=rngs)

    @property
    def lm(self) -> DecoderLM:
        return self.language_model

    def embed(self, input_ids, video: VideoInput | None = None):
        embeds = self.language_model.embed(input_ids)
        if video is None:
            return embeds
        feats = self.visual.forward(video.pixel_values, video.plan)
        return scatter_features(embeds, input_ids == self.config.video_token_id, feats)

    def logits(self, hidden):
        return self.language_model.logits(hidden)

    def decode(self, embeds, positions, **kw) -> LMOutput:
        return self.language_model.decode(embeds, positions, **kw)

    def __call__(self, input_ids, video: VideoInput | None = None, positions=None, **kw):
        """Full forward without a cache; positions [3, B, N] (see `sparrow_jax.inputs`). Returns logits."""
        if positions is None:
            positions = sequential_positions(input_ids)
        return self.logits(self.decode(self.embed(input_ids, video), positions, **kw).hidden)
