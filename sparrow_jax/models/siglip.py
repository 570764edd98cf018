"""SigLIP vision encoder (no pooling head), as used by LLaVA-OneVision."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from sparrow_jax.attention import attend
from sparrow_jax.config import SiglipConfig
from sparrow_jax.layers import Dense, Embed, LayerNorm, param, scan_layers, stacked


class PatchEmbedding(nnx.Module):
    """Non-overlapping patch convolution as a matmul; kernel [p, p, C, D] over channels-last pixels."""

    def __init__(self, cfg: SiglipConfig, *, dtype, rngs: nnx.Rngs):
        p, c, d = cfg.patch_size, cfg.num_channels, cfg.hidden_size
        self.patch = p
        self.kernel = param(rngs, (p, p, c, d), (None, None, None, "embed"), dtype)
        self.bias = param(None, (d,), ("embed",), dtype, init="zeros")

    def __call__(self, pixels):
        n, h, w, c = pixels.shape
        p = self.patch
        x = pixels[:, : h // p * p, : w // p * p]  # a VALID conv drops the remainder
        x = x.reshape(n, h // p, p, w // p, p, c)
        x = jnp.einsum("nypxqc,pqcd->nyxd", x, self.kernel[...])
        return x.reshape(n, -1, x.shape[-1]) + self.bias[...]


class Embeddings(nnx.Module):
    def __init__(self, cfg: SiglipConfig, *, dtype, rngs: nnx.Rngs):
        self.patch_embedding = PatchEmbedding(cfg, dtype=dtype, rngs=rngs)
        self.position_embedding = Embed(cfg.grid**2, cfg.hidden_size, dtype=dtype, rngs=rngs)

    def __call__(self, pixels):
        x = self.patch_embedding(pixels.astype(self.patch_embedding.kernel.dtype))
        return x + self.position_embedding.embedding[...]


class SelfAttention(nnx.Module):
    def __init__(self, cfg: SiglipConfig, *, dtype, rngs: nnx.Rngs):
        d = cfg.hidden_size
        self.heads, self.scale = cfg.num_heads, (d // cfg.num_heads) ** -0.5
        for name in ("q_proj", "k_proj", "v_proj"):
            setattr(self, name, Dense(d, d, ("embed", "q_heads"), bias=True, dtype=dtype, rngs=rngs))
        self.out_proj = Dense(d, d, ("q_heads", "embed"), bias=True, dtype=dtype, rngs=rngs)

    def __call__(self, x):
        heads = lambda y: y.reshape(*y.shape[:-1], self.heads, -1)
        out = attend(heads(self.q_proj(x)), heads(self.k_proj(x)), heads(self.v_proj(x)), None, self.scale)
        return self.out_proj(out.reshape(x.shape))


class MLP(nnx.Module):
    def __init__(self, cfg: SiglipConfig, *, dtype, rngs: nnx.Rngs):
        self.fc1 = Dense(cfg.hidden_size, cfg.intermediate_size, ("embed", "mlp"), bias=True, dtype=dtype, rngs=rngs)
        self.fc2 = Dense(cfg.intermediate_size, cfg.hidden_size, ("mlp", "embed"), bias=True, dtype=dtype, rngs=rngs)
        self.approximate = cfg.hidden_act == "gelu_pytorch_tanh"

    def __call__(self, x):
        return self.fc2(jax.nn.gelu(self.fc1(x), approximate=self.approximate))


class EncoderLayer(nnx.Module):
    def __init__(self, cfg: SiglipConfig, *, dtype, rngs: nnx.Rngs):
        self.layer_norm1 = LayerNorm(cfg.hidden_size, cfg.layer_norm_eps, dtype=dtype)
        self.self_attn = SelfAttention(cfg, dtype=dtype, rngs=rngs)
        self.layer_norm2 = LayerNorm(cfg.hidden_size, cfg.layer_norm_eps, dtype=dtype)
        self.mlp = MLP(cfg, dtype=dtype, rngs=rngs)

    def __call__(self, x):
        x = x + self.self_attn(self.layer_norm1(x))
        return x + self.mlp(self.layer_norm2(x))


class SiglipVision(nnx.Module):
    def __init__(self, cfg: SiglipConfig, *, dtype=jnp.float32, rngs: nnx.Rngs):
        self.config = cfg
        self.embeddings = Embeddings(cfg, dtype=dtype, rngs=rngs)
        self.layers = stacked(lambda r: EncoderLayer(cfg, dtype=dtype, rngs=r), cfg.num_layers, rngs)
        # Kept so checkpoints round-trip; LLaVA-OneVision reads features before it.
        self.post_layernorm = LayerNorm(cfg.hidden_size, cfg.layer_norm_eps, dtype=dtype)

    def __call__(self, pixels, num_layers: int | None = None):
        """pixels [N, S, S, C] channels-last -> hidden states after `num_layers` layers [N, patches, D]."""
        cfg = self.config
        if pixels.shape[1:] != (cfg.image_size, cfg.image_size, cfg.num_channels):
            raise ValueError(
                f"vision input must be [frames, {cfg.image_size}, {cfg.image_size}, {cfg.num_channels}] "
                f"channels-last, got {tuple(pixels.shape)}"
            )
        n = cfg.num_layers if num_layers is None else num_layers
        x = self.embeddings(pixels)
        x, _ = scan_layers(self.layers, lambda layer, h, _: (layer(h), None), x, None, 0, n)
        return x
