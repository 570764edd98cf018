"""LLaVA-OneVision target: SigLIP tower + projector + 2x2 bilinear pooling + Qwen2 LM (video path)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from sparrow_jax.attention import items_per_chunk, scores_held
from sparrow_jax.config import LlavaOnevisionConfig
from sparrow_jax.layers import Dense, param
from sparrow_jax.models.multimodal import scatter_features
from sparrow_jax.models.qwen2 import DecoderLM, LMOutput, sequential_positions
from sparrow_jax.models.siglip import SiglipVision


def bilinear_matrix(size_in: int, size_out: int) -> np.ndarray:
    """[out, in] weights of torch `interpolate(mode='bilinear', align_corners=False)` along one axis."""
    scale = size_in / size_out
    src = np.maximum((np.arange(size_out) + 0.5) * scale - 0.5, 0.0)
    i0 = np.floor(src).astype(np.int64)
    i1 = np.minimum(i0 + 1, size_in - 1)
    frac = (src - i0).astype(np.float32)
    m = np.zeros((size_out, size_in), np.float32)
    np.add.at(m, (np.arange(size_out), i0), 1.0 - frac)
    np.add.at(m, (np.arange(size_out), i1), frac)
    return m


class Projector(nnx.Module):
    def __init__(self, cfg: LlavaOnevisionConfig, *, dtype, rngs: nnx.Rngs):
        dv, dt = cfg.vision.hidden_size, cfg.text.hidden_size
        self.linear_1 = Dense(dv, dt, ("embed", "mlp"), bias=cfg.projector_bias, dtype=dtype, rngs=rngs)
        self.linear_2 = Dense(dt, dt, ("mlp", "embed"), bias=cfg.projector_bias, dtype=dtype, rngs=rngs)

    def __call__(self, x):
        return self.linear_2(jax.nn.gelu(self.linear_1(x), approximate=False))


class LlavaOnevision(nnx.Module):
    def __init__(self, cfg: LlavaOnevisionConfig, *, dtype=jnp.float32, rngs: nnx.Rngs):
        self.config = cfg
        self.vision_tower = SiglipVision(cfg.vision, dtype=dtype, rngs=rngs)
        self.multi_modal_projector = Projector(cfg, dtype=dtype, rngs=rngs)
        self.image_newline = param(rngs, (cfg.text.hidden_size,), ("embed",), dtype, std=cfg.text.hidden_size**-0.5)
        self.language_model = DecoderLM(cfg.text, dtype=dtype, rngs=rngs)

    @property
    def lm(self) -> DecoderLM:
        return self.language_model

    def video_features(self, pixel_values_videos, frame_chunk: int | None = None):
        """[B, T, S, S, 3] channels-last pixels -> [B, T * pooled^2 + 1, H] (frames, then one newline).

        Frames go through the tower, projector and pooling `frame_chunk` at a time (`lax.map`; default
        `attention.items_per_chunk`: 7 frames of SigLIP-so400m at 384 px), so a 128-frame video never holds
        every frame's activations at once; each frame's result is the same as in one batch."""
        cfg = self.config
        b, t = pixel_values_videos.shape[:2]
        g, pg = cfg.vision.grid, cfg.pooled_grid

        def frame(pixels):  # [S, S, 3] -> [pooled^2, H]
            x = self.vision_tower(pixels[None], cfg.vision_layers_used)[0]
            x = self.multi_modal_projector(x).reshape(g, g, -1)
            pool = jnp.asarray(bilinear_matrix(g, pg), x.dtype)
            x = jnp.einsum("yi,xj,ijd->yxd", pool, pool, x, precision=jax.lax.Precision.HIGHEST)
            return x.reshape(pg * pg, -1)

        chunk = frame_chunk or items_per_chunk(g * g, scores_held(cfg.vision.num_heads, 1, g * g))
        x = jax.lax.map(frame, pixel_values_videos.reshape(b * t, *pixel_values_videos.shape[2:]), batch_size=chunk)
        x = x.reshape(b, t * pg * pg, -1)
        newline = jnp.broadcast_to(self.image_newline[...].astype(x.dtype), (b, 1, x.shape[-1]))
        return jnp.concatenate([x, newline], axis=1)

    def embed(self, input_ids, video=None):
        """Token embeddings with each row's video tokens replaced, in order, by that row's video features.

        The caller guarantees (see `sparrow_jax.inputs`) that every row holds exactly as many video
        tokens as its video has features.
        """
        embeds = self.language_model.embed(input_ids)
        if video is None:
            return embeds
        feats = self.video_features(video)
        return scatter_features(embeds, input_ids == self.config.video_token_id, feats.reshape(-1, feats.shape[-1]))

    def logits(self, hidden):
        return self.language_model.logits(hidden)

    def decode(self, embeds, positions, **kw) -> LMOutput:
        return self.language_model.decode(embeds, positions, **kw)

    def __call__(self, input_ids, pixel_values_videos=None, positions=None, **kw):
        """Full forward without a cache; returns logits [B, N, V]."""
        if positions is None:
            positions = sequential_positions(input_ids)
        out = self.decode(self.embed(input_ids, pixel_values_videos), positions, **kw)
        return self.logits(out.hidden)
