"""The Sparrow draft (EAGLE-1/2 shape): fc over [norm(embed(token t+1)), h_t], then decoder layers.

It owns no embedding and, by default, no lm_head: callers pass the target's token embeddings in and read
logits through the target's lm_head, so the two are shared, never copied. It has no final norm. A draft
with a reduced vocabulary (`DraftConfig.vocab`, EAGLE-3's) has its own head over those K tokens instead.
"""

from __future__ import annotations

import jax.numpy as jnp
from flax import nnx

from sparrow_jax import rope
from sparrow_jax.config import DraftConfig
from sparrow_jax.layers import Dense, RMSNorm, checkpointed, scan_layers, stacked
from sparrow_jax.models.qwen2 import DecoderLayer


class SparrowDraft(nnx.Module):
    def __init__(self, cfg: DraftConfig, *, dtype=jnp.float32, rngs: nnx.Rngs):
        t = cfg.layers
        self.config = cfg
        self.dtype = dtype
        self.input_layernorm = RMSNorm(t.hidden_size, t.rms_norm_eps, dtype=dtype) if cfg.embed_norm else None
        self.fc = Dense(2 * t.hidden_size, t.hidden_size, ("mlp", "embed"), bias=True, dtype=dtype, rngs=rngs)
        self.first = DecoderLayer(t, dtype=dtype, rngs=rngs, input_norm=False)  # layer 0 has no input norm
        self.rest = stacked(lambda r: DecoderLayer(t, dtype=dtype, rngs=r), t.num_layers - 1, rngs) if t.num_layers > 1 else None
        # Its own output head over the vocabulary's K tokens ([H, K], as the target's lm_head kernel).
        self.head = None if cfg.vocab is None else Dense(t.hidden_size, len(cfg.vocab), ("embed", "vocab"), bias=False,
                                                         dtype=dtype, rngs=rngs)

    def logits(self, out, target):
        """The draft's logits at its outputs `out` [..., H] over the target's whole vocabulary [..., V]:
        through the target's lm_head, or with a reduced vocabulary through `head`, placed at the vocabulary's
        token ids and -inf elsewhere, so that every consumer (top-k, the sampled chain's q) is unchanged and
        never picks a token outside it. The placing writes V floats per output: 0.6 MB per drafted level of
        8 nodes at 152k, against the 1.09 GB the target's lm_head would read."""
        if self.head is None:
            return target.logits(out)
        small = self.head(out.astype(self.dtype))
        full = jnp.full((*small.shape[:-1], self.config.layers.vocab_size), -jnp.inf, small.dtype)
        return full.at[..., jnp.asarray(self.config.vocab, jnp.int32)].set(small)

    def __call__(self, token_embeds, hidden, positions, mask, cache=None):
        """token_embeds: the target's embedding of token t+1 [B,N,H]; hidden: h_t [B,N,H] (the target's
        final normed state, or the draft's own output when drafting ahead); positions [B,N];
        mask [B,N,N] among the N entries. `cache`: None or a `CacheView` with a `mask` [B,N,C] of
        visible cache slots. Returns (out [B,N,H], (k, v) of the N entries
        [layers, B, N, Hkv, D]) for the caller to store."""
        return self.run_layers(self.fuse(token_embeds, hidden), positions, mask, cache)

    def fuse(self, token_embeds, hidden):
        """The draft's input entry for a text position: fc(concat(norm(embed(t+1)), h_t)) [B,N,H]."""
        e = token_embeds.astype(self.dtype)
        if self.input_layernorm is not None:
            e = self.input_layernorm(e)
        return self.fc(jnp.concatenate([e, hidden.astype(self.dtype)], axis=-1))

    def run_layers(self, x, positions, mask, cache=None, remat: bool = False):
        """The decoder layers over input entries x [B,N,H] (from `fuse`, or any other states: training
        feeds the target's mid-layer states at visual positions, IVSB). Arguments and result as `__call__`.
        `remat` (training): each layer recomputed in the backward pass, only its input kept."""
        t = self.config.layers
        x = x.astype(self.dtype)
        cos, sin = rope.cos_sin(rope.inv_freq(t.rope, t.head_dim), positions, self.dtype)
        view = lambda i: None if cache is None else cache.at(i)  # noqa: E731  (see `CacheView`)
        if remat:
            x, (k0, v0) = checkpointed(self.first, lambda layer, h: layer(h, cos, sin, mask, view(0)), x)
        else:
            x, (k0, v0) = self.first(x, cos, sin, mask, view(0))
        ks, vs = [k0[None]], [v0[None]]
        if self.rest is not None:
            xs = None if cache is None else jnp.arange(1, t.num_layers)

            def body(layer, h, i):
                return layer(h, cos, sin, mask, None if i is None else view(i))

            x, (k_rest, v_rest) = scan_layers(self.rest, body, x, xs, 0, t.num_layers - 1, remat)
            ks.append(k_rest)
            vs.append(v_rest)
        return x, (jnp.concatenate(ks), jnp.concatenate(vs))
