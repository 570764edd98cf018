"""Decoder-only text backbone covering Qwen2 (q/k/v bias) and Llama (no bias).

`DecoderLM.decode` is the one hidden-state capture function: it returns the final hidden state after
the last norm (the lm_head input) and, for each requested index k, the output of the first k decoder
layers (k=0: the input embeddings), i.e. HF `hidden_states[k]` for k < num_layers.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx, struct

from sparrow_jax import kv_cache, mrope, rope
from sparrow_jax.attention import Attention, CausalMask
from sparrow_jax.config import TextConfig
from sparrow_jax.kv_cache import KVCache
from sparrow_jax.layers import Dense, Embed, RMSNorm, SwiGLU, scan_layers, stacked


@struct.dataclass
class LMOutput:
    hidden: jax.Array  # [B, N, H] after the final norm
    captured: dict  # {k: [B, N, H]} outputs of the first k layers
    cache: KVCache | None  # k/v written at each row's length; lengths NOT advanced


def sequential_positions(input_ids):
    """Positions 0..N-1 for every row of input_ids [B, N] (a full forward without a cache)."""
    return jnp.broadcast_to(jnp.arange(input_ids.shape[1]), input_ids.shape)


class DecoderLayer(nnx.Module):
    def __init__(self, cfg: TextConfig, *, dtype, rngs: nnx.Rngs, input_norm: bool = True):
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps, dtype=dtype) if input_norm else None
        self.self_attn = Attention(cfg, dtype=dtype, rngs=rngs)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps, dtype=dtype)
        self.mlp = SwiGLU(cfg.hidden_size, cfg.intermediate_size, bias=cfg.mlp_bias, dtype=dtype, rngs=rngs)

    def __call__(self, x, cos, sin, mask, cache=None):
        h = self.input_layernorm(x) if self.input_layernorm is not None else x
        a, kv = self.self_attn(h, cos, sin, mask, cache)
        x = x + a
        return x + self.mlp(self.post_attention_layernorm(x)), kv


class DecoderLM(nnx.Module):
    def __init__(self, cfg: TextConfig, *, dtype=jnp.float32, rngs: nnx.Rngs):
        self.config = cfg
        self.dtype = dtype
        self.embed_tokens = Embed(cfg.vocab_size, cfg.hidden_size, dtype=dtype, rngs=rngs)
        self.layers = stacked(lambda r: DecoderLayer(cfg, dtype=dtype, rngs=r), cfg.num_layers, rngs)
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps, dtype=dtype)
        self.lm_head = (
            None
            if cfg.tie_word_embeddings
            else Dense(cfg.hidden_size, cfg.vocab_size, ("embed", "vocab"), bias=False, dtype=dtype, rngs=rngs)
        )

    @property
    def lm(self) -> "DecoderLM":
        return self

    def embed(self, input_ids, video=None):
        if video is not None:
            raise ValueError("a text-only model cannot take a video")
        return self.embed_tokens(input_ids)

    def logits(self, hidden):
        return self.embed_tokens.attend(hidden) if self.lm_head is None else self.lm_head(hidden)

    def head_kernel(self):
        """The output head as a [H, V] matrix: the lm_head's kernel, or the tied embedding transposed."""
        return self.embed_tokens.embedding[...].T if self.lm_head is None else self.lm_head.kernel[...]

    def cos_sin(self, positions):
        """positions [B,N] (1-D RoPE), or for M-RoPE models [3,B,N]; [B,N] there means text (all axes equal)."""
        cfg = self.config
        freq = rope.inv_freq(cfg.rope, cfg.head_dim)
        if cfg.mrope_section is None:
            return rope.cos_sin(freq, positions, self.dtype)
        if positions.ndim == 2:
            positions = jnp.broadcast_to(positions, (3, *positions.shape))
        return mrope.mrope_cos_sin(freq, positions, cfg.mrope_section, self.dtype)

    def decode(self, embeds, positions, *, cache: KVCache | None = None, mask=None, capture=()) -> LMOutput:
        """Run the decoder over N new tokens.

        embeds [B,N,H]; positions [B,N] int ([3,B,N] for M-RoPE). `mask` [B,N,N] (or, without a cache, an
        `attention.CausalMask`) says which new tokens see which (default causal). With `cache`, new keys/values
        are written at each row's length and the committed cache is visible to every new token; the caller
        commits with `cache.advance(n)`.
        """
        b, n, _ = embeds.shape
        if positions.shape[-2:] != (b, n):
            raise ValueError(f"positions {tuple(positions.shape)} do not match embeds {tuple(embeds.shape)}")
        cfg = self.config
        capture = sorted({int(k) for k in capture})
        if any(not 0 <= k <= cfg.num_layers for k in capture):
            raise ValueError(f"capture indices {capture} out of range [0, {cfg.num_layers}]")
        if mask is None:  # without a cache (training, features): described, never a dense [N, N] array
            mask = kv_cache.causal_mask(b, n) if cache is not None else CausalMask()
        cos, sin = self.cos_sin(positions)
        view = None if cache is None else cache.view()

        def body(layer, x, i):
            # The whole stacked cache seen from layer i, not the layer's slice (see `CacheView`).
            return layer(x, cos, sin, mask, None if cache is None else view.at(i))

        x = embeds.astype(self.dtype)
        captured, ks, vs = {}, [], []
        bounds = sorted(set(capture) | {0, cfg.num_layers})
        for start, stop in zip(bounds[:-1], bounds[1:]):
            if start in capture:
                captured[start] = x
            xs = jnp.arange(start, stop) if cache is not None else None
            x, (k_new, v_new) = scan_layers(self.layers, body, x, xs, start, stop)
            ks.append(k_new)
            vs.append(v_new)
        if cfg.num_layers in capture:
            captured[cfg.num_layers] = x
        if cache is not None:
            cache = cache.write(jnp.concatenate(ks), jnp.concatenate(vs))
        return LMOutput(hidden=self.norm(x), captured=captured, cache=cache)

    def __call__(self, input_ids, positions=None, **kw):
        """Full causal forward over `input_ids` [B,N] without a cache; returns logits [B,N,V]."""
        if positions is None:
            positions = sequential_positions(input_ids)
        return self.logits(self.decode(self.embed(input_ids), positions, **kw).hidden)
